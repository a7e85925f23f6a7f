"""Bad input across the public API: a clear ValueError/TypeError naming the argument, never a crash,
a hang or a silent wrong result.

Each case is (call, expected exception type, strings the message must contain). The list IS the
specification of what is rejected; cases marked ``xfail(strict=True, reason="BUG: ...")`` are known bugs
(the exact fix is in the reason) and turn into failures as soon as the library is fixed.
"""
import math

import pytest
import torch

import fastdiff
from fastdiff import diffusers as fd
from fastdiff.ops.step import step_coefs
from reliability_cases import BETA_SCHEDULERS, COMPAT_SCHEDULERS, eps_model, raises, sid

X = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
C1 = step_coefs(out_x=0.5, out_d=0.5)
SIG = fastdiff.karras_sigmas(4, 0.1, 10.0)
DEN = lambda x, s: torch.zeros_like(x)  # noqa: E731
LP = lambda v: -0.5 * (v ** 2).sum(1)  # noqa: E731
GLP = lambda v: -v  # noqa: E731
SCHED = fastdiff.DiscreteVPSchedule()
META = torch.device("meta")


def bug(reason):
    return pytest.mark.xfail(strict=True, reason="BUG: " + reason)


def case(id_, fn, exc, *names, marks=()):
    return pytest.param(fn, exc, names, id=id_, marks=marks)


OPS_CASES = [
    # ---- fused_step: shapes, devices, dtypes between sample and model output
    case("step-model_output-shape", lambda: fastdiff.fused_step(X, torch.zeros(2, 4), C1), ValueError, "model_output", "(2, 3)"),
    case("step-model_output-batch", lambda: fastdiff.fused_step(X, torch.zeros(3, 3), C1), ValueError, "model_output"),
    case("step-guidance-halves", lambda: fastdiff.fused_step(X, X, C1, guidance=True), ValueError, "model_output", "(4, 3)"),
    case("step-model_output-device", lambda: fastdiff.fused_step(X, torch.zeros(2, 3, device=META), C1), ValueError, "model_output", "device"),
    case("step-x-int", lambda: fastdiff.fused_step(X.long(), X, C1), TypeError, "x", "int64"),
    case("step-model_output-int", lambda: fastdiff.fused_step(X, X.int(), C1), TypeError, "model_output", "int32"),
    case("step-model_output-bool", lambda: fastdiff.fused_step(X, X > 0, C1), TypeError, "model_output"),
    case("step-model_output-list", lambda: fastdiff.fused_step(X, [[0.0] * 3] * 2, C1), TypeError, "model_output"),
    case("step-x-0d", lambda: fastdiff.fused_step(torch.tensor(1.0), torch.tensor(1.0), C1), ValueError, "x", "batch"),
    case("step-x_eval-shape", lambda: fastdiff.fused_step(X, X, C1, x_eval=X[:1]), ValueError, "x_eval"),
    case("step-noise-shape", lambda: fastdiff.fused_step(X, X, C1, noise=X[:, :1]), ValueError, "noise"),
    case("step-noise-and-seed", lambda: fastdiff.fused_step(X, X, C1, noise=X, seed=0), ValueError, "seed", "noise"),
    case("step-history-tensor", lambda: fastdiff.fused_step(X, X, C1, history=X), TypeError, "history"),
    case("step-history-too-many", lambda: fastdiff.fused_step(X, X, C1, history=[X] * 4), ValueError, "history", "3"),
    case("step-history-shape", lambda: fastdiff.fused_step(X, X, C1, history=[X[:1]]), ValueError, "history[0]"),
    case("step-history-int", lambda: fastdiff.fused_step(X, X, C1, history=[X.long()]), TypeError, "history[0]"),
    # ---- coefficient tables and rows
    case("step-coefs-list", lambda: fastdiff.fused_step(X, X, [[0.0] * 15]), ValueError, "coefs", "15"),
    case("step-coefs-width", lambda: fastdiff.fused_step(X, X, torch.zeros(1, 12)), ValueError, "coefs", "15"),
    case("step-coefs-device", lambda: fastdiff.fused_step(X, X, C1.to(META)), ValueError, "coefs"),
    case("step-coefs-int", lambda: fastdiff.fused_step(X, X, torch.zeros(1, 15, dtype=torch.int64)), TypeError, "coefs"),
    case("step-coef_row-range", lambda: fastdiff.fused_step(X, X, C1, coef_row=5), ValueError, "coef_row"),
    case("step-coef_row-negative", lambda: fastdiff.fused_step(X, X, C1, coef_row=-1), ValueError, "coef_row"),
    case("step-coef_row-float", lambda: fastdiff.fused_step(X, X, C1, coef_row=0.5), TypeError, "coef_row"),
    case("step-coef_index-float", lambda: fastdiff.fused_step(X, X, C1, coef_index=torch.zeros(2)), TypeError, "coef_index"),
    case("step-coef_index-shape", lambda: fastdiff.fused_step(X, X, C1, coef_index=torch.zeros(3, dtype=torch.long)), ValueError, "coef_index"),
    case("step-coef_index-out-of-range-torch",
         lambda: fastdiff.fused_step(X, X, C1, coef_index=torch.tensor([0, 7]), backend="torch"), ValueError, "coef_index"),
    case("step-coef_index-out-of-range-triton",
         lambda: fastdiff.fused_step(X, X, C1, coef_index=torch.tensor([0, 7]), backend="triton"), ValueError, "coef_index"),
    # ---- clip, seeds, streams, backends, out=
    case("step-clip-zero", lambda: fastdiff.fused_step(X, X, C1, clip=0.0), ValueError, "clip"),
    case("step-clip-nan", lambda: fastdiff.fused_step(X, X, C1, clip=math.nan), ValueError, "clip"),
    case("step-clip-str", lambda: fastdiff.fused_step(X, X, C1, clip="1"), TypeError, "clip"),
    case("step-seed-negative", lambda: fastdiff.fused_step(X, X, C1, seed=-1), ValueError, "seed"),
    case("step-seed-too-big", lambda: fastdiff.fused_step(X, X, C1, seed=2 ** 63), ValueError, "seed"),
    case("step-seed-float", lambda: fastdiff.fused_step(X, X, C1, seed=1.0), TypeError, "seed"),
    case("step-seed-bool", lambda: fastdiff.fused_step(X, X, C1, seed=True), TypeError, "seed"),
    case("step-seed-str", lambda: fastdiff.fused_step(X, X, C1, seed="1"), TypeError, "seed"),
    case("step-stream-negative", lambda: fastdiff.fused_step(X, X, C1, seed=1, stream=-1), ValueError, "stream"),
    case("step-stream-too-big", lambda: fastdiff.fused_step(X, X, C1, seed=1, stream=2 ** 32), ValueError, "stream"),
    case("step-row_ids-int32", lambda: fastdiff.fused_step(X, X, C1, seed=1, row_ids=torch.arange(2, dtype=torch.int32)), ValueError, "row_ids"),
    case("step-row_ids-shape", lambda: fastdiff.fused_step(X, X, C1, seed=1, row_ids=torch.arange(3)), ValueError, "row_ids"),
    case("step-backend", lambda: fastdiff.fused_step(X, X, C1, backend="cuda"), ValueError, "backend"),
    case("step-out-shape", lambda: fastdiff.fused_step(X, X, C1, out=torch.empty(2, 4)), ValueError, "out"),
    case("step-out-noncontiguous", lambda: fastdiff.fused_step(X, X, C1, out=torch.empty(3, 2).t()), ValueError, "out", "contiguous"),
    case("step-out-int", lambda: fastdiff.fused_step(X, X, C1, out=torch.empty(2, 3, dtype=torch.int32)), TypeError, "out"),
    case("step-triton-float64", lambda: fastdiff.fused_step(X.double(), X.double(), C1, backend="triton"), TypeError, "float64"),
    case("step_coefs-too-many-history", lambda: step_coefs(out_h=[1.0] * 4), ValueError, "out_h"),
    case("step_coefs-length", lambda: step_coefs(out_x=[1.0, 2.0], out_d=[1.0, 2.0, 3.0]), ValueError, "out_x"),
    case("step_coefs-str", lambda: step_coefs(out_x="a"), TypeError, "out_x"),
    # ---- encode
    case("encode-target", lambda: fastdiff.add_noise_with_target(X, torch.tensor([1, 2]), SCHED, target="bogus", seed=0), ValueError, "target", "bogus"),
    case("encode-timesteps-range", lambda: fastdiff.add_noise(X, torch.tensor([1, 2000]), SCHED, seed=0), ValueError, "timesteps"),
    case("encode-timesteps-negative", lambda: fastdiff.add_noise(X, torch.tensor([-1, 2]), SCHED, seed=0), ValueError, "timesteps"),
    case("encode-timesteps-float", lambda: fastdiff.add_noise(X, torch.tensor([1.0, 2.0]), SCHED, seed=0), TypeError, "timesteps"),
    case("encode-timesteps-shape", lambda: fastdiff.add_noise(X, torch.tensor([1, 2, 3]), SCHED, seed=0), ValueError, "timesteps"),
    case("encode-schedule", lambda: fastdiff.add_noise(X, torch.tensor([1, 2]), "linear", seed=0), TypeError, "schedule"),
    case("encode-noise-shape", lambda: fastdiff.add_noise(X, torch.tensor([1, 2]), SCHED, torch.zeros(2, 4)), ValueError, "noise"),
    case("encode-x0-int", lambda: fastdiff.add_noise(X.long(), torch.tensor([1, 2]), SCHED, seed=0), TypeError, "x0"),
    case("encode-seed", lambda: fastdiff.add_noise(X, torch.tensor([1, 2]), SCHED, seed=-3), ValueError, "seed"),
    # ---- langevin_step / langevin_select
    case("langevin_step-step-zero", lambda: fastdiff.langevin_step(X, X, 0.0, seed=0), ValueError, "step_size"),
    case("langevin_step-step-negative", lambda: fastdiff.langevin_step(X, X, -1.0, seed=0), ValueError, "step_size"),
    case("langevin_step-step-nan", lambda: fastdiff.langevin_step(X, X, math.nan, seed=0), ValueError, "step_size"),
    case("langevin_step-step-inf", lambda: fastdiff.langevin_step(X, X, math.inf, seed=0), ValueError, "step_size"),
    case("langevin_step-step-tensor-negative", lambda: fastdiff.langevin_step(X, X, torch.tensor([0.1, -0.1]), seed=0), ValueError, "step_size"),
    case("langevin_step-step-tensor-zero", lambda: fastdiff.langevin_step(X, X, torch.tensor([0.1, 0.0]), seed=0), ValueError, "step_size"),
    case("langevin_step-step-tensor-nan", lambda: fastdiff.langevin_step(X, X, torch.tensor([0.1, math.nan]), seed=0), ValueError, "step_size"),
    case("langevin_step-step-tensor-inf", lambda: fastdiff.langevin_step(X, X, torch.tensor([0.1, math.inf]), seed=0), ValueError, "step_size"),
    case("langevin_step-step-tensor-int", lambda: fastdiff.langevin_step(X, X, torch.tensor([1, 1]), seed=0), TypeError, "step_size"),
    case("langevin_step-step-tensor-shape", lambda: fastdiff.langevin_step(X, X, torch.ones(3), seed=0), ValueError, "step_size"),
    case("langevin_step-step-str", lambda: fastdiff.langevin_step(X, X, "0.1", seed=0), TypeError, "step_size"),
    case("langevin_step-grad-shape", lambda: fastdiff.langevin_step(X, X[:, :2], 0.1, seed=0), ValueError, "grad"),
    case("langevin_step-grad-int", lambda: fastdiff.langevin_step(X, X.int(), 0.1, seed=0), TypeError, "grad"),
    case("langevin_step-grad-device", lambda: fastdiff.langevin_step(X, torch.zeros(2, 3, device=META), 0.1, seed=0), ValueError, "grad"),
    case("langevin_step-no-noise", lambda: fastdiff.langevin_step(X, X, 0.1), ValueError, "seed"),
    case("langevin_step-temperature-zero", lambda: fastdiff.langevin_step(X, X, 0.1, seed=0, temperature=0.0), ValueError, "temperature"),
    case("langevin_step-temperature-nan", lambda: fastdiff.langevin_step(X, X, 0.1, seed=0, temperature=math.nan), ValueError, "temperature"),
    case("langevin_step-temperature-inf", lambda: fastdiff.langevin_step(X, X, 0.1, seed=0, temperature=math.inf), ValueError, "temperature"),
    case("langevin_select-accept-int", lambda: fastdiff.langevin_select(X, X, torch.tensor([1, 0])), ValueError, "accept"),
    case("langevin_select-proposal-dtype", lambda: fastdiff.langevin_select(X, X.double(), torch.tensor([True, False])), TypeError, "proposal"),
    case("langevin_select-proposal-shape", lambda: fastdiff.langevin_select(X, X[:1], torch.tensor([True, False])), ValueError, "proposal"),
    # ---- RNG
    case("philox-seed-negative", lambda: fastdiff.philox_normal((2, 3), -1), ValueError, "seed"),
    case("philox-seed-float", lambda: fastdiff.philox_normal((2, 3), 1.0), TypeError, "seed"),
    case("philox-seed-too-big", lambda: fastdiff.philox_normal((2, 3), 2 ** 63), ValueError, "seed"),
    case("philox-stream", lambda: fastdiff.philox_normal((2, 3), 0, -1), ValueError, "stream"),
    case("philox-shape-empty", lambda: fastdiff.philox_normal((), 0), ValueError, "shape"),
    case("initial_noise-seed", lambda: fastdiff.initial_noise((2, 3), seed=-1), ValueError, "seed"),
    # --- ops, noise, schedules and MCMC inputs
    # continuous timesteps outside the schedule's domain [0, 1] (Python numbers and CPU tensors)
    *[case(f"encode-{sname}-timesteps-{tname}", (lambda s, t, f: lambda: f(X, t, s))(sch, t, f), ValueError, "timesteps")
      for sname, sch in (("cvp", fastdiff.ContinuousVPSchedule()), ("ve", fastdiff.VESchedule()),
                         ("flow", fastdiff.FlowMatchingSchedule()))
      for tname, t in (("nan", math.nan), ("above-1", 1.5), ("negative", -0.5), ("tensor-nan", torch.tensor([0.5, math.nan])),
                       ("tensor-above-1", torch.tensor([0.2, 1.5])), ("tensor-negative", torch.tensor(-0.1)),
                       ("int-tensor", torch.tensor([0, 2])))
      for f in (lambda x, t, s: fastdiff.add_noise(x, t, s, seed=0),
                lambda x, t, s: fastdiff.add_noise_with_target(x, t, s, seed=0, target="flow"))],
    case("encode-continuous-timesteps-bool", lambda: fastdiff.add_noise(X, torch.tensor([True, False]), fastdiff.VESchedule(), seed=0), TypeError, "timesteps"),
    # shapes: negative sizes and sizes no tensor can hold, refused before anything is allocated
    case("philox-shape-negative", lambda: fastdiff.philox_normal((-1, 3), 0), ValueError, "shape"),
    case("philox-shape-2**64-elements", lambda: fastdiff.philox_normal((2 ** 32, 2 ** 32, 4), 0), ValueError, "shape"),
    case("philox-shape-too-many-columns", lambda: fastdiff.philox_normal((1, 4 * 2 ** 32 + 1), 0), ValueError, "shape", "column"),
    case("philox-shape-state-too-big", lambda: fastdiff.philox_normal((2 ** 58, 4), 0), ValueError, "shape"),
    case("philox-shape-float", lambda: fastdiff.philox_normal((2, 1.5), 0), TypeError, "shape"),
    case("philox-shape-int", lambda: fastdiff.philox_normal(3, 0), TypeError, "shape"),
    case("philox-shape-dim-above-int64", lambda: fastdiff.philox_normal((2 ** 64, 0), 0), ValueError, "shape"),
    case("philox-dtype-int", lambda: fastdiff.philox_normal((2, 3), 0, dtype=torch.int64), TypeError, "dtype"),
    case("initial_noise-dtype-str", lambda: fastdiff.initial_noise((2, 3), seed=0, dtype="float32"), TypeError, "dtype"),
    case("philox-row_ids-list", lambda: fastdiff.philox_normal((2, 3), 0, row_ids=[0, 1]), TypeError, "row_ids"),
    case("initial_noise-shape-negative", lambda: fastdiff.initial_noise((2, -3), seed=0), ValueError, "shape"),
    case("initial_noise-shape-2**64-elements", lambda: fastdiff.initial_noise((2 ** 40, 2 ** 30), seed=0), ValueError, "shape"),
    case("prior_sample-shape-2**64-elements", lambda: fastdiff.VPSDE().prior_sample((2 ** 40, 2 ** 30), seed=0), ValueError, "shape"),
    # devices: unknown names, CUDA on a torch without CUDA
    case("philox-device-bogus", lambda: fastdiff.philox_normal((2, 3), 0, device="bogus"), ValueError, "device"),
    case("philox-device-float", lambda: fastdiff.philox_normal((2, 3), 0, device=1.5), TypeError, "device"),
    *[case(f"{n}-device-cuda-without-cuda", f, ValueError, "device", "CUDA", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks a torch without CUDA")) for n, f in (
        ("initial_noise", lambda: fastdiff.initial_noise((2, 3), seed=0, device="cuda")),
        ("philox", lambda: fastdiff.philox_normal((2, 3), 0, device="cuda:0")),
        ("prior_sample", lambda: fastdiff.VPSDE().prior_sample((2, 3), seed=0, device="cuda")),
        ("step_coefs", lambda: step_coefs(out_x=0.5, device="cuda")),
        ("karras", lambda: fastdiff.karras_sigmas(4, 0.1, 10.0, device="cuda")),
        ("flow-sigmas", lambda: fastdiff.FlowMatchingSchedule().sigmas(4, device="cuda")),
        ("flow-timesteps", lambda: fastdiff.FlowMatchingSchedule().timesteps(4, device="cuda")),
        ("discrete-table", lambda: fastdiff.DiscreteVPSchedule().table("cuda")),
    )],
]

SCHEDULE_CASES = [
    case("make_betas-unknown", lambda: fastdiff.make_betas("bogus", 10), ValueError, "beta_schedule", "bogus"),
    case("DiscreteVPSchedule-unknown", lambda: fastdiff.DiscreteVPSchedule(beta_schedule="bogus"), ValueError, "beta_schedule"),
    case("DiscreteVPSchedule-negative-beta_start", lambda: fastdiff.DiscreteVPSchedule(beta_start=-1e-3), ValueError, "beta_start"),
    case("DiscreteVPSchedule-beta_end-ge-1", lambda: fastdiff.DiscreteVPSchedule(beta_end=1.5), ValueError, "beta_end"),
    case("DiscreteVPSchedule-negative-trained_betas", lambda: fastdiff.DiscreteVPSchedule.from_betas([0.1, -0.1]), ValueError, "betas"),
    case("DiscreteVPSchedule-nan-trained_betas", lambda: fastdiff.DiscreteVPSchedule.from_betas([0.1, math.nan]), ValueError, "betas"),
    case("DiscreteVPSchedule-num_train_timesteps-zero", lambda: fastdiff.DiscreteVPSchedule(num_train_timesteps=0), ValueError, "num_train_timesteps"),
    case("ContinuousVPSchedule-negative-beta_min", lambda: fastdiff.ContinuousVPSchedule(beta_min=-1.0), ValueError, "beta_min"),
    case("VESchedule-min-ge-max", lambda: fastdiff.VESchedule(sigma_min=5.0, sigma_max=1.0), ValueError, "sigma_min"),
    case("karras-n-zero", lambda: fastdiff.karras_sigmas(0, 0.1, 10.0), ValueError, "n"),
    case("karras-min-gt-max", lambda: fastdiff.karras_sigmas(5, 10.0, 0.1), ValueError, "sigma_min"),
    case("karras-negative", lambda: fastdiff.karras_sigmas(5, -0.1, 10.0), ValueError, "sigma_min"),
    case("karras-nan", lambda: fastdiff.karras_sigmas(5, math.nan, 10.0), ValueError, "sigma_min"),
    case("exponential-nan-max", lambda: fastdiff.exponential_sigmas(5, 0.1, math.nan), ValueError, "sigma_max"),
    case("inference_timesteps-zero", lambda: fastdiff.inference_timesteps(0, 1000, "leading"), ValueError, "num_inference_steps"),
    case("inference_timesteps-too-many", lambda: fastdiff.inference_timesteps(1001, 1000, "leading"), ValueError, "num_inference_steps"),
    case("inference_timesteps-spacing", lambda: fastdiff.inference_timesteps(10, 1000, "bogus"), ValueError, "spacing", "bogus"),
]

SAMPLE_CASES = [
    case("sample-unknown-sampler", lambda: fastdiff.sample(DEN, X, SIG, sampler="nope"), ValueError, "sampler", "nope"),
    case("sample-unknown-option", lambda: fastdiff.sample(DEN, X, SIG, sampler="euler", eta=1.0), TypeError, "eta"),
    case("sample-sigmas-increasing", lambda: fastdiff.sample(DEN, X, torch.tensor([1.0, 2.0, 0.0])), ValueError, "sigmas", "non-increasing"),
    case("sample-sigmas-negative", lambda: fastdiff.sample(DEN, X, torch.tensor([1.0, -0.5, 0.0])), ValueError, "sigmas", "non-negative"),
    case("sample-sigmas-nan", lambda: fastdiff.sample(DEN, X, torch.tensor([1.0, math.nan, 0.0])), ValueError, "sigmas", "finite"),
    case("sample-sigmas-inf", lambda: fastdiff.sample(DEN, X, torch.tensor([math.inf, 1.0, 0.0])), ValueError, "sigmas", "finite"),
    case("sample-sigmas-not-ending-in-0", lambda: fastdiff.sample(DEN, X, torch.tensor([1.0, 0.5])), ValueError, "sigmas", "0"),
    case("sample-sigmas-inner-0", lambda: fastdiff.sample(DEN, X, torch.tensor([1.0, 0.0, 0.0])), ValueError, "sigmas"),
    case("sample-sigmas-one-entry", lambda: fastdiff.sample(DEN, X, torch.tensor([0.0])), ValueError, "sigmas"),
    case("sample-sigmas-2d", lambda: fastdiff.sample(DEN, X, SIG[None]), ValueError, "sigmas"),
    case("sample-sigmas-str", lambda: fastdiff.sample(DEN, X, "abc"), TypeError, "sigmas"),
    case("sample-flow-sigmas-above-1", lambda: fastdiff.sample(DEN, X, torch.tensor([2.0, 0.5, 0.0]), sampler="flow_euler"), ValueError, "sigmas"),
    case("sample-x-int", lambda: fastdiff.sample(DEN, X.long(), SIG), TypeError, "x", "int64"),
    case("sample-x-0-d", lambda: fastdiff.sample(DEN, X[0, 0], SIG), ValueError, "x", "batch dimension"),
    case("sample-x-list", lambda: fastdiff.sample(DEN, [[1.0]], SIG), TypeError, "x"),
    case("sample-denoiser-not-callable", lambda: fastdiff.sample(3, X, SIG), TypeError, "denoiser"),
    case("sample-denoiser-shape", lambda: fastdiff.sample(lambda x, s: x[:, :2], X, SIG), ValueError, "denoiser", "(2, 3)"),
    case("sample-denoiser-batch", lambda: fastdiff.sample(lambda x, s: x[:1], X, SIG), ValueError, "denoiser"),
    case("sample-denoiser-int", lambda: fastdiff.sample(lambda x, s: x.long(), X, SIG), TypeError, "denoiser"),
    case("sample-denoiser-list", lambda: fastdiff.sample(lambda x, s: [1], X, SIG), TypeError, "denoiser"),
    case("sample-denoiser-device", lambda: fastdiff.sample(lambda x, s: torch.zeros_like(x, device=META), X, SIG), TypeError, "denoiser", "meta"),
    case("sample-wrapper-shape", lambda: fastdiff.sample(fastdiff.EpsDenoiser(lambda x, t: x[:, :1], SCHED), X, SIG), ValueError, "denoiser"),
    case("sample-cfg-shape", lambda: fastdiff.sample(fastdiff.CFGDenoiser(fastdiff.EpsDenoiser(lambda x, t, **k: x[:2], SCHED), X[:, :1], X[:, :1], 2.0), X, SIG),
         ValueError, "denoiser", "uncond"),
    case("sample-seed-negative", lambda: fastdiff.sample(DEN, X, SIG, seed=-1), ValueError, "seed"),
    case("sample-seed-float", lambda: fastdiff.sample(DEN, X, SIG, seed=1.5), ValueError, "seed"),
    case("sample-seed-too-big", lambda: fastdiff.sample(DEN, X, SIG, seed=2 ** 63), ValueError, "seed"),
    case("sample-row_ids-shape", lambda: fastdiff.sample(DEN, X, SIG, row_ids=torch.arange(3)), ValueError, "row_ids"),
    case("sample-row_ids-int32", lambda: fastdiff.sample(DEN, X, SIG, row_ids=torch.arange(2, dtype=torch.int32)), ValueError, "row_ids"),
    case("sample-backend", lambda: fastdiff.sample(DEN, X, SIG, backend="gpu"), ValueError, "backend"),
    case("sample-clip", lambda: fastdiff.sample(DEN, X, SIG, clip=-1.0), ValueError, "clip"),
    case("sample-guidance-without-cfg", lambda: fastdiff.sample(DEN, X, SIG, guidance_scale=2.0), ValueError, "guidance_scale"),
    case("sample-cuda_graph-on-cpu", lambda: fastdiff.sample(DEN, X, SIG, cuda_graph=True), ValueError, "cuda_graph"),
    case("sample-lms-order", lambda: fastdiff.sample(DEN, X, SIG, sampler="lms", order=0), ValueError, "order"),
    case("sample-unipc-variant", lambda: fastdiff.sample(DEN, X, SIG, sampler="unipc", variant="bh9"), ValueError, "variant"),
    # --- sampler inputs
    case("sample-sigmas-repeated", lambda: fastdiff.sample(DEN, X, torch.tensor([20.0, 5.0, 5.0, 1.0, 0.0]), sampler="lms"), ValueError, "sigmas", "sigmas[2]"),
    case("k_diffusion-sigmas-repeated", lambda: fastdiff.k_diffusion.sample_dpmpp_2m(DEN, X, torch.tensor([20.0, 5.0, 5.0, 1.0, 0.0]), disable=True), ValueError, "sigmas", "sigmas[2]"),
    case("sample-sampler-misspelt", lambda: fastdiff.sample(DEN, X, SIG, sampler="dpmpp2m"), ValueError, "sampler", "did you mean 'dpmpp_2m'"),
    case("sample-sampler-with-schedule", lambda: fastdiff.sample(DEN, X, SIG, sampler="DPM++ 2M Karras"), ValueError, "sampler", "karras_sigmas"),
    case("sample-seed-and-generator", lambda: fastdiff.sample(DEN, X, SIG, seed=1, generator=torch.Generator()), ValueError, "seed", "generator"),
    case("sample-generator-not-a-generator", lambda: fastdiff.sample(DEN, X, SIG, generator=1), TypeError, "generator"),
    case("sample-sigmas-meta", lambda: fastdiff.sample(DEN, X, SIG.to(META)), ValueError, "sigmas", "meta"),
    case("sample-row_ids-meta", lambda: fastdiff.sample(DEN, X, SIG, row_ids=torch.arange(2, device=META)), ValueError, "row_ids", "meta"),
    case("k_diffusion-sigmas-meta", lambda: fastdiff.k_diffusion.sample_euler(DEN, X, SIG.to(META), disable=True), ValueError, "sigmas", "meta"),
    case("DDIMScheduler-step-nan-timestep", lambda: (lambda sc: (sc.set_timesteps(4), sc.step(torch.zeros_like(X), math.nan, X)))(fd.DDIMScheduler()), ValueError, "timestep"),
    case("DDPMScheduler-step-inf-timestep", lambda: (lambda sc: (sc.set_timesteps(4), sc.step(torch.zeros_like(X), math.inf, X)))(fd.DDPMScheduler()), ValueError, "timestep"),
    case("EulerDiscreteScheduler-step-nan-timestep", lambda: (lambda sc: (sc.set_timesteps(4), sc.step(torch.zeros_like(X), torch.tensor(math.nan), X)))(fd.EulerDiscreteScheduler()), ValueError, "timestep"),
    # --- end sampler inputs
    case("EpsDenoiser-model", lambda: fastdiff.EpsDenoiser(3), TypeError, "model"),
    case("EpsDenoiser-schedule", lambda: fastdiff.EpsDenoiser(eps_model, "linear"), TypeError, "schedule"),
    case("CFGDenoiser-scale-nan", lambda: fastdiff.CFGDenoiser(DEN, X, X, math.nan), ValueError, "scale"),
    case("CFGDenoiser-cond-shapes", lambda: fastdiff.CFGDenoiser(DEN, X, X[:, :1], 1.0), ValueError, "cond"),
]

MCMC_CASES = [
    case("langevin-step-zero", lambda: fastdiff.langevin(GLP, X, 0.0, 5, seed=0), ValueError, "step_size"),
    case("langevin-step-negative", lambda: fastdiff.langevin(GLP, X, -0.1, 5, seed=0), ValueError, "step_size"),
    case("langevin-step-tensor-inf", lambda: fastdiff.langevin(GLP, X, torch.tensor([0.1, math.inf]), 5, seed=0), ValueError, "step_size"),
    case("langevin-n_steps-negative", lambda: fastdiff.langevin(GLP, X, 0.1, -1, seed=0), ValueError, "n_steps"),
    case("langevin-n_steps-float", lambda: fastdiff.langevin(GLP, X, 0.1, 2.0, seed=0), (TypeError, ValueError), "n_steps"),
    case("langevin-grad-shape", lambda: fastdiff.langevin(lambda v: v[:, :1], X, 0.1, 5, seed=0), ValueError, "grad_log_prob", "(2, 3)"),
    case("langevin-grad-list", lambda: fastdiff.langevin(lambda v: [0], X, 0.1, 5, seed=0), TypeError, "grad_log_prob"),
    case("langevin-grad-int", lambda: fastdiff.langevin(lambda v: v.long(), X, 0.1, 5, seed=0), TypeError, "grad"),
    case("langevin-grad-not-callable", lambda: fastdiff.langevin(3, X, 0.1, 5, seed=0), TypeError, "grad_log_prob"),
    case("langevin-seed-negative", lambda: fastdiff.langevin(GLP, X, 0.1, 5, seed=-1), ValueError, "seed"),
    case("langevin-seed-float", lambda: fastdiff.langevin(GLP, X, 0.1, 5, seed=1.5), TypeError, "seed"),
    case("langevin-x-int", lambda: fastdiff.langevin(GLP, X.long(), 0.1, 5, seed=0), TypeError, "x"),
    case("langevin-temperature-zero", lambda: fastdiff.langevin(GLP, X, 0.1, 5, seed=0, temperature=0), ValueError, "temperature"),
    case("mala-step-zero", lambda: fastdiff.mala(LP, X, 0.0, 5, seed=0), ValueError, "step_size"),
    case("mala-step-negative", lambda: fastdiff.mala(LP, X, -0.1, 5, seed=0), ValueError, "step_size"),
    case("mala-step-tensor-negative", lambda: fastdiff.mala(LP, X, torch.tensor([0.1, -0.1]), 5, seed=0), ValueError, "step_size"),
    case("mala-log_prob-shape", lambda: fastdiff.mala(lambda v: -0.5 * v ** 2, X, 0.1, 5, seed=0), ValueError, "log_prob", "(2,)"),
    case("mala-log_prob-shape-with-grad", lambda: fastdiff.mala(lambda v: -0.5 * v ** 2, X, 0.1, 5, seed=0, grad_log_prob=GLP), ValueError, "log_prob"),
    case("mala-log_prob-scalar", lambda: fastdiff.mala(lambda v: (v ** 2).sum(), X, 0.1, 5, seed=0), ValueError, "log_prob"),
    case("mala-log_prob-list", lambda: fastdiff.mala(lambda v: [0, 0], X, 0.1, 5, seed=0, grad_log_prob=GLP), (TypeError, ValueError), "log_prob"),
    case("mala-grad-shape", lambda: fastdiff.mala(LP, X, 0.1, 5, seed=0, grad_log_prob=lambda v: -v[:, :1]), ValueError, "grad_log_prob"),
    case("mala-seed-negative", lambda: fastdiff.mala(LP, X, 0.1, 5, seed=-1), ValueError, "seed"),
    case("mala-x-int", lambda: fastdiff.mala(LP, X.long(), 0.1, 5, seed=0), TypeError, "x"),
    case("mala-target_accept", lambda: fastdiff.mala(LP, X, 0.1, 5, seed=0, target_accept=1.0), ValueError, "target_accept"),
    case("mala-adapt_steps", lambda: fastdiff.mala(LP, X, 0.1, 5, seed=0, adapt_steps=6), ValueError, "adapt_steps"),
    case("annealed-sigmas-negative", lambda: fastdiff.annealed_langevin(lambda v, s: -v, X, torch.tensor([1.0, -1.0]), n_steps_each=2, seed=0),
         ValueError, "sigmas"),
    case("annealed-sigmas-increasing", lambda: fastdiff.annealed_langevin(lambda v, s: -v, X, torch.tensor([1.0, 2.0]), n_steps_each=2, seed=0),
         ValueError, "sigmas"),
    case("annealed-step_lr-zero", lambda: fastdiff.annealed_langevin(lambda v, s: -v, X, torch.tensor([2.0, 1.0]), n_steps_each=2, step_lr=0.0, seed=0),
         ValueError, "step_lr"),
    case("energy_grad-kind", lambda: fastdiff.energy_grad(lambda v: v.sum(1), kind="score"), ValueError, "kind"),
    case("energy_grad-output-shape", lambda: fastdiff.energy_grad(lambda v: v)(X), ValueError, "module_or_fn"),
    # --- distributed and tools
    case("distributed-device-cuda-without-cuda",
         lambda: _fdist().sample(_GMM.denoiser, (2,), [1.0, 0.0], num_samples=2, seed=0, device="cuda"),
         ValueError, "device", "CUDA", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")),
    case("distributed-device-unknown",
         lambda: _fdist().sample(_GMM.denoiser, (2,), [1.0, 0.0], num_samples=2, seed=0, device="gpu0"),
         ValueError, "device"),
    case("distributed-metadata-uncomparable",
         lambda: _fdist().sample(_GMM.denoiser, (2,), [1.0, 0.0], num_samples=2, seed=0, metadata={"m": object()}),
         TypeError, "metadata", "'m'", "object"),
    case("distributed-sampler-misspelt",
         lambda: _fdist().sample(_GMM.denoiser, (2,), [1.0, 0.0], num_samples=2, seed=0, sampler="dpmpp2m"),
         ValueError, "sampler", "did you mean 'dpmpp_2m'"),
    case("distributed-langevin-metadata-uncomparable",
         lambda: _fdist().langevin(_GMM.grad_log_prob, (2,), num_chains=2, step_size=0.1, n_steps=1, seed=0,
                                   metadata={"run": {"cfg": lambda: 0}}),
         TypeError, "metadata", "'cfg'", "function"),
]


def _fdist():
    import fastdiff.distributed

    return fastdiff.distributed


_GMM = fastdiff.toy.GaussianMixture.ring(k=4)


@pytest.mark.parametrize("fn, exc, names", OPS_CASES + SCHEDULE_CASES + SAMPLE_CASES + MCMC_CASES)
def test_bad_input_raises(fn, exc, names):
    raises(exc, *names, fn=fn)


# ---------------------------------------------------------------------------------- drop-in schedulers
def _step_once(cls, model_output, sample, **cfg):
    s = cls(**cfg)
    s.set_timesteps(4)
    return s.step(model_output, s.timesteps[0], sample)


@pytest.mark.parametrize("cls", COMPAT_SCHEDULERS, ids=sid)
@pytest.mark.parametrize("what", ["shape", "int-model_output", "int-sample", "device"])
def test_compat_step_rejects_mismatched_inputs(cls, what):
    m, x = torch.zeros(2, 3), X
    if what == "shape":
        raises(ValueError, "model_output", "(2, 3)", fn=lambda: _step_once(cls, torch.zeros(2, 4), x))
    elif what == "int-model_output":
        raises(TypeError, "model_output", fn=lambda: _step_once(cls, m.long(), x))
    elif what == "int-sample":
        raises(TypeError, "int32", fn=lambda: _step_once(cls, m, x.int()))
    else:
        raises(ValueError, "device", fn=lambda: _step_once(cls, torch.zeros(2, 3, device=META), x))




@pytest.mark.parametrize("n", [0, -1])
@pytest.mark.parametrize("cls", COMPAT_SCHEDULERS, ids=sid)
def test_compat_set_timesteps_rejects_non_positive(cls, n):
    raises(ValueError, "num_inference_steps", fn=lambda: cls().set_timesteps(n))


@pytest.mark.parametrize("cls", COMPAT_SCHEDULERS, ids=sid)
def test_compat_set_timesteps_rejects_float_count(cls):
    raises(TypeError, fn=lambda: cls().set_timesteps(2.5))


@pytest.mark.parametrize("cls", [fd.DDPMScheduler, fd.DDIMScheduler, fd.DPMSolverMultistepScheduler,
                                 fd.UniPCMultistepScheduler], ids=sid)
def test_compat_integer_timestep_schedulers_reject_too_many_steps(cls):
    """Schedulers on integer training timesteps cannot take more steps than there are timesteps."""
    raises(ValueError, "num_inference_steps", fn=lambda: cls(num_train_timesteps=20).set_timesteps(21))


@pytest.mark.parametrize("cls", [fd.EulerDiscreteScheduler, fd.FlowMatchEulerDiscreteScheduler], ids=sid)
def test_compat_continuous_timestep_schedulers_allow_many_steps(cls):
    """Sigma-based schedulers interpolate timesteps (as diffusers): more steps than training timesteps is a valid,
    finite run with strictly decreasing timesteps."""
    s = cls(num_train_timesteps=20)
    s.set_timesteps(25)
    ts = s.timesteps.double()
    assert len(ts) == 25 and bool((ts[1:] < ts[:-1]).all())
    from reliability_cases import run_scheduler
    out = run_scheduler(cls, 25, X, num_train_timesteps=20)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", [fd.DDIMScheduler, fd.DPMSolverMultistepScheduler, fd.UniPCMultistepScheduler], ids=sid)
def test_compat_step_before_set_timesteps(cls):
    """Schedulers without default timesteps (as in diffusers) refuse to step before set_timesteps."""
    raises(ValueError, "set_timesteps", fn=lambda: cls().step(torch.zeros(2, 3), 999, X))


@pytest.mark.parametrize("cls", [fd.DDPMScheduler, fd.EulerDiscreteScheduler, fd.HeunDiscreteScheduler], ids=sid)
def test_compat_default_timesteps_step_before_set_timesteps(cls):
    """diffusers gives these schedulers a full default schedule at construction: stepping works and is finite."""
    s = cls()
    out = s.step(torch.zeros(2, 3), s.timesteps[0], X).prev_sample
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", [fd.EulerDiscreteScheduler, fd.EulerAncestralDiscreteScheduler, fd.HeunDiscreteScheduler,
                                 fd.DPMSolverMultistepScheduler, fd.UniPCMultistepScheduler,
                                 fd.FlowMatchEulerDiscreteScheduler], ids=sid)
def test_compat_too_many_step_calls(cls):
    s = cls()
    s.set_timesteps(3)
    x = X
    for t in s.timesteps:
        x = s.step(torch.zeros_like(x), t, x).prev_sample
    raises(ValueError, "set_timesteps", fn=lambda: s.step(torch.zeros_like(x), s.timesteps[-1], x))


@pytest.mark.parametrize("cls", [fd.DDPMScheduler, fd.EulerDiscreteScheduler, fd.FlowMatchEulerDiscreteScheduler,
                                 fd.DDIMScheduler], ids=sid)
def test_compat_unknown_timestep(cls):
    s = cls()
    s.set_timesteps(10)
    raises(ValueError, "timestep", fn=lambda: s.step(torch.zeros(2, 3), 12345.5, X))


@pytest.mark.parametrize("cls", BETA_SCHEDULERS, ids=sid)
def test_compat_unknown_prediction_type(cls):
    """Rejected at construction or, as in diffusers, at the first step -- never a silent result."""
    def go():
        s = cls(prediction_type="bogus")
        s.set_timesteps(4)
        s.step(torch.zeros(2, 3), s.timesteps[0], X)
    # NotImplementedError: what diffusers raises for unsupported configurations (kept for drop-in compatibility)
    raises((ValueError, NotImplementedError), "prediction_type", fn=go)


@pytest.mark.parametrize("cls", BETA_SCHEDULERS, ids=sid)
def test_compat_unknown_beta_schedule(cls):
    # diffusers raises NotImplementedError naming the value and the scheduler; fastdiff also lists the choices
    raises((ValueError, NotImplementedError), "bogus", "linear", fn=lambda: cls(beta_schedule="bogus"))


@pytest.mark.parametrize("cls", BETA_SCHEDULERS, ids=sid)
@pytest.mark.parametrize("cfg, name", [(dict(beta_start=-0.1), "beta_start"), (dict(beta_end=-0.1), "beta_end"),
                                       (dict(trained_betas=[-0.1] * 10, num_train_timesteps=10), "betas"),
                                       (dict(num_train_timesteps=0), "num_train_timesteps")])
def test_compat_negative_betas(cls, cfg, name):
    raises(ValueError, name, fn=lambda: cls(**cfg))


def test_compat_ddim_variance_noise_and_generator():
    s = fd.DDIMScheduler()
    s.set_timesteps(4)
    raises(ValueError, "generator", "variance_noise",
           fn=lambda: s.step(torch.zeros(2, 3), s.timesteps[0], X, eta=1.0, generator=torch.Generator(),
                             variance_noise=torch.zeros(2, 3)))
