"""Parity of fastdiff.diffusers with the installed diffusers schedulers (same timesteps, sigmas, trajectories).

Trajectories are driven by a fixed deterministic fake model (a function of the sample and of the timestep
diffusers' scheduler gives at that step) and the same torch.Generator, so any difference in coefficients, noise
draws or step bookkeeping shows up.

Tolerances. Trajectories (``prev_sample`` and each step's ``pred_original_sample``) are bounded against a float64
run of diffusers' own code (``peer_float64.assert_parity``):
``|ours - ref64| <= FACTOR * |diffusers - ref64| + 2 ulp * scale * steps``, one step at a time and free-running.
fastdiff and diffusers compute the same formulas in float32 with different operation orders (and fastdiff's
schedule tables are float64 where diffusers' are float32), so each is some float32 roundings away from the exact
value and neither should be more than a small factor further than the other, on any CPU. Schedule tables
(timesteps, sigmas) are compared directly: diffusers accumulates ``alphas_cumprod`` in float32 over 1000 products,
about 1000 * 2**-24 = 6e-5 relative at worst, hence 2e-4.
"""
import inspect
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers parity tests need the 'compat' extra")

import fastdiff.diffusers as fdd  # noqa: E402
from fastdiff.diffusers import _base  # noqa: E402
from peer_float64 import assert_parity, float64_pipeline, float64_scheduler  # noqa: E402

#: every drop-in scheduler class
SCHEDULERS = [n for n in fdd.__all__ if n.endswith("Scheduler") and n != "FusedSchedulerBase"]
#: classes whose ``step`` has diffusers' own different signature (tested in their own files)
OWN_STEP = {"CogVideoXDPMScheduler", "DDPMWuerstchenScheduler"}
STEPPED = [n for n in SCHEDULERS if n not in OWN_STEP]
#: classes without a beta schedule in their config (their round trips are in their own files)
NO_BETAS = {"DDPMWuerstchenScheduler", "CosineDPMSolverMultistepScheduler"}
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
ZSNR_V = {**SD, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """Computes in float32 (float64 for the float64 reference run) like a model with float32 weights."""
    wide = x if x.dtype == torch.float64 else x.float()
    return torch.sin(wide * 1.3 + float(t) / 300.0).to(x.dtype) * 0.9 + 0.05 * x


def _step_kwargs(sched, generator, extra):
    kw = dict(extra)
    if "generator" in inspect.signature(sched.step).parameters:
        kw["generator"] = generator
    return kw


def _run(sched, n, ref_ts, extra=None, dtype=torch.float32, shape=(2, 3, 4, 4), seed=0):
    """The trajectory of ``sched`` from seeded noise; the model sees the reference timesteps."""
    steps = _steps(sched, n, ref_ts, extra, dtype, shape, seed)
    return steps[-1]["prev"], [step["x0"] for step in steps]


def _steps(sched, n, ref_ts, extra=None, dtype=torch.float32, shape=(2, 3, 4, 4), seed=0, forced=None):
    """Each step's input, ``prev_sample`` and ``pred_original_sample`` along the trajectory of ``sched``.

    Free-running (``forced=None``) all noise comes from one generator. With ``forced`` (another run's steps), step
    i starts from that run's input to step i, rounded to ``dtype``, and both runs draw step i's noise from a
    generator of its own: the difference is then one step's rounding, with nothing carried from earlier steps.
    """
    sched.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype) * float(getattr(sched, "init_noise_sigma", 1.0))
    steps = []
    for i, t in enumerate(sched.timesteps):
        if forced is not None:
            x = forced[i]["x"].to(dtype)
            g = torch.Generator().manual_seed(seed + 1 + i)
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        out = sched.step(fake_model(inp, ref_ts[i]), t, x, **_step_kwargs(sched, g, extra or {}))
        steps.append({"x": x, "prev": out.prev_sample, "x0": getattr(out, "pred_original_sample", None)})
        x = out.prev_sample
    return steps


CASES = []


def _add(name, cfgs, n=10, extra=None):
    for cfg in cfgs:
        CASES.append(pytest.param(name, cfg, n, extra or {}, id=f"{name[:-9]}-{json.dumps(cfg)}-{n}-{extra}"))


_add("DDPMScheduler", [{}, {"clip_sample": False}, {**SD, "prediction_type": "v_prediction"}, {"prediction_type": "sample"},
                       {**ZSNR_V}, {"variance_type": "fixed_large", "beta_schedule": "squaredcos_cap_v2",
                                    "timestep_spacing": "linspace"}, {"beta_schedule": "sigmoid", "steps_offset": 1}])
for _extra in ({}, {"eta": 1.0}, {"eta": 0.5, "use_clipped_model_output": True}):
    _add("DDIMScheduler", [{}, {"clip_sample": False, "steps_offset": 1, "set_alpha_to_one": False},
                           {**SD, "prediction_type": "v_prediction"}, {"prediction_type": "sample"}, ZSNR_V],
         extra=_extra)
_add("EulerDiscreteScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"},
                                {"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "trailing"},
                                ZSNR_V, {**SD, "use_karras_sigmas": True}, {**SD, "use_exponential_sigmas": True},
                                {"prediction_type": "sample"}, {"final_sigmas_type": "sigma_min"},
                                {**SD, "timestep_type": "continuous", "prediction_type": "v_prediction"},
                                {**SD, "interpolation_type": "log_linear"},
                                {"interpolation_type": "log_linear", "final_sigmas_type": "sigma_min"}])
_add("EulerDiscreteScheduler", [SD], extra={"s_churn": 1.0})
_add("EulerAncestralDiscreteScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"},
                                         {"timestep_spacing": "leading", "steps_offset": 1}, ZSNR_V])
_add("HeunDiscreteScheduler", [{}, {**SD, "prediction_type": "v_prediction"}, {"timestep_spacing": "trailing"},
                               {**SD, "use_karras_sigmas": True}, {"clip_sample": True, "prediction_type": "sample"},
                               {"beta_schedule": "exp"}])
_add("DPMSolverMultistepScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                     {"solver_order": 1}, {"solver_order": 3, "lower_order_final": False},
                                     {"timestep_spacing": "leading", "steps_offset": 1},
                                     {"timestep_spacing": "trailing"}, ZSNR_V, {**SD, "use_karras_sigmas": True},
                                     {**SD, "use_exponential_sigmas": True}, {"prediction_type": "sample"},
                                     {"final_sigmas_type": "sigma_min"}, {"algorithm_type": "sde-dpmsolver++"},
                                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, **SD,
                                      "use_karras_sigmas": True},
                                     {"solver_type": "heun"}, {"algorithm_type": "sde-dpmsolver++",
                                                               "solver_type": "heun"},
                                     {"euler_at_final": True, "final_sigmas_type": "sigma_min"},
                                     *({"final_sigmas_type": "sigma_min", **c} for c in (
                                         {"algorithm_type": "dpmsolver"}, {"algorithm_type": "dpmsolver", "solver_order": 3},
                                         {"algorithm_type": "dpmsolver", "solver_type": "heun", **SD,
                                          "prediction_type": "v_prediction"},
                                         {"algorithm_type": "sde-dpmsolver"},
                                         {"algorithm_type": "sde-dpmsolver", "solver_type": "heun",
                                          "prediction_type": "sample"})),
                                     {"use_lu_lambdas": True}, {**SD, "use_lu_lambdas": True,
                                                                "prediction_type": "v_prediction"}])
_add("DPMSolverMultistepScheduler", [{"solver_order": 3}], n=20)
_add("UniPCMultistepScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                 {"solver_order": 1}, {"timestep_spacing": "leading", "steps_offset": 1}, ZSNR_V,
                                 {**SD, "use_karras_sigmas": True}, {"prediction_type": "sample"},
                                 {"final_sigmas_type": "sigma_min"}, {"disable_corrector": [0, 3]},
                                 {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}])
_add("UniPCMultistepScheduler", [{"solver_order": 3}], n=20)
_add("FlowMatchEulerDiscreteScheduler", [{}, {"shift": 3.0}, {"shift": 3.0, "use_karras_sigmas": True},
                                         {"shift": 2.0, "use_exponential_sigmas": True},
                                         {"stochastic_sampling": True, "shift": 3.0}, {"invert_sigmas": True},
                                         {"shift_terminal": 0.1, "shift": 3.0}])


# dynamic thresholding (a per-sample quantile of |x0|): ratios and maxima that make it clamp at most steps
_THR = {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}
_add("DDPMScheduler", [_THR, {**_THR, "prediction_type": "v_prediction", **SD}])
_add("DDIMScheduler", [_THR, {**_THR, "prediction_type": "sample"}], extra={"eta": 0.5})
_add("DDIMScheduler", [_THR], extra={"eta": 0.0, "use_clipped_model_output": True})
_add("DPMSolverMultistepScheduler", [_THR, {**_THR, "solver_order": 3}, {**_THR, "algorithm_type": "sde-dpmsolver++"},
                                     {**_THR, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}])
_add("UniPCMultistepScheduler", [_THR, {**_THR, "solver_order": 3, "prediction_type": "v_prediction"}])


# flow prediction on flow sigmas (the Wan / SkyReels-V2 / Cosmos UniPC configs)
_FLOW = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
_add("UniPCMultistepScheduler", [{**_FLOW, "flow_shift": 3.0}, {**_FLOW, "flow_shift": 5.0, "solver_order": 3},
                                 {**_FLOW, "flow_shift": 3.0, "final_sigmas_type": "sigma_min"},
                                 {**_FLOW, "use_karras_sigmas": True}, {**_FLOW, "shift_terminal": 0.1, "flow_shift": 2.0},
                                 {**_FLOW, "flow_shift": 3.0, "timestep_spacing": "trailing", "solver_order": 1}])


# flow prediction on flow sigmas (the Sana DPM-Solver config)
_add("DPMSolverMultistepScheduler", [{**_FLOW, "flow_shift": 3.0}, {**_FLOW, "flow_shift": 3.0, "solver_order": 3},
                                     {**_FLOW, "flow_shift": 2.0, "algorithm_type": "sde-dpmsolver++"},
                                     {**_FLOW, "flow_shift": 3.0, "final_sigmas_type": "sigma_min"}])


# beta sigmas (Lee et al. 2024): the Beta(0.6, 0.6) quantile is fastdiff's own float64 one, diffusers' is SciPy's
for _name in ("EulerDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
              "UniPCMultistepScheduler"):
    _add(_name, [{**SD, "use_beta_sigmas": True}])
_add("FlowMatchEulerDiscreteScheduler", [{"shift": 3.0, "use_beta_sigmas": True}])


_add("PNDMScheduler", [{}, {"skip_prk_steps": True}, {**SD, "skip_prk_steps": True, "steps_offset": 1},
                       {"prediction_type": "v_prediction", "set_alpha_to_one": True},
                       {"skip_prk_steps": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
                       {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace"}])


# DPMSolverSDE: diffusers' Brownian noise (torchsde) from noise_sampler_seed, the same path on both sides
_add("DPMSolverSDEScheduler", [{"noise_sampler_seed": 0}, {**SD, "prediction_type": "v_prediction", "noise_sampler_seed": 1},
                               {**SD, "use_karras_sigmas": True, "noise_sampler_seed": 2},
                               {"timestep_spacing": "trailing", "noise_sampler_seed": 3},
                               {"timestep_spacing": "leading", "steps_offset": 1, "noise_sampler_seed": 4}], n=7)


# SASolver: predictor/corrector orders, data and noise prediction, re-spaced and flow sigmas
_add("SASolverScheduler", [{}, {**SD, "prediction_type": "v_prediction"}, {**SD, "use_karras_sigmas": True},
                           {"algorithm_type": "noise_prediction"}, {"predictor_order": 3, "corrector_order": 4},
                           {"predictor_order": 1, "corrector_order": 1}, {"corrector_order": 3, "lower_order_final": False},
                           {"algorithm_type": "noise_prediction", "prediction_type": "v_prediction", "predictor_order": 3},
                           {"timestep_spacing": "trailing", "use_exponential_sigmas": True},
                           {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}], n=9)


# CogVideoX's DDIM: the SNR-shifted schedule (its eta / clipping options are accepted and unused, as in diffusers)
_add("CogVideoXDDIMScheduler", [{}, {"timestep_spacing": "trailing", "prediction_type": "v_prediction",
                                     "rescale_betas_zero_snr": True},
                                {"beta_schedule": "linear", "set_alpha_to_one": False, "snr_shift_scale": 1.5},
                                {"prediction_type": "sample", "timestep_spacing": "linspace"}], n=9)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name,cfg,n,extra", CASES)
def test_parity_with_diffusers(name, cfg, n, extra):
    """Schedule tables, then each step from the exact state, then the free-running trajectory."""
    ours, ref = getattr(fdd, name)(**cfg), getattr(diffusers, name)(**cfg)
    ref.set_timesteps(n)
    ref_ts = ref.timesteps.clone()
    ours.set_timesteps(n)
    respaced = cfg.get("use_karras_sigmas") or cfg.get("use_exponential_sigmas")
    if respaced and "Flow" not in name:
        # timesteps come from sigma_to_t of diffusers' float32-rounded sigmas; an integer timestep can land
        # one below (e.g. 998.99999 truncated to 998), a float one a few 1e-3 away
        torch.testing.assert_close(ours.timesteps.double(), ref_ts.double(), rtol=0, atol=1.0)
    else:
        assert ours.timesteps.dtype == ref_ts.dtype
        torch.testing.assert_close(ours.timesteps, ref_ts, rtol=1e-6, atol=1e-5)
    if hasattr(ref, "sigmas"):
        torch.testing.assert_close(ours.sigmas.double(), ref.sigmas.double(), rtol=2e-4, atol=1e-7)
    if hasattr(ref, "init_noise_sigma"):
        assert float(ours.init_noise_sigma) == pytest.approx(float(ref.init_noise_sigma), rel=2e-4)
    exact = float64_scheduler(diffusers, name, cfg)
    # one step at a time from diffusers' float64 trajectory: the comparison of the step formulas themselves
    exact_steps = _steps(exact, n, ref_ts, extra, torch.float64)
    exact_forced = _steps(exact, n, ref_ts, extra, torch.float64, forced=exact_steps)
    ours_forced = _steps(ours, n, ref_ts, extra, forced=exact_forced)
    peer_forced = _steps(ref, n, ref_ts, extra, forced=exact_forced)
    for i, (a, b, c) in enumerate(zip(ours_forced, peer_forced, exact_forced)):
        assert_parity(f"{name} step {i} prev_sample", a["prev"], b["prev"], c["prev"], 1)
        if b["x0"] is not None:
            assert a["x0"] is not None
            assert_parity(f"{name} step {i} pred_original_sample", a["x0"], b["x0"], c["x0"], 1)
    # the whole trajectory from the same noise, every step's rounding carried on
    a, a0 = _run(ours, n, ref_ts, extra)
    b, b0 = _run(ref, n, ref_ts, extra)
    c, c0 = exact_steps[-1]["prev"], [step["x0"] for step in exact_steps]  # diffusers' free run in float64
    assert_parity(f"{name} prev_sample", a, b, c, len(ref_ts))
    for i, (p, q, r) in enumerate(zip(a0, b0, c0)):
        if q is not None:
            assert p is not None
            assert_parity(f"{name} pred_original_sample after {i + 1} steps", p, q, r, i + 1)


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n not in NO_BETAS])
def test_config_round_trip(name, tmp_path):
    cfg = {"num_train_timesteps": 500}
    if name != "FlowMatchEulerDiscreteScheduler":
        cfg.update(SD)
    ours = getattr(fdd, name)(**cfg)
    ours.save_pretrained(tmp_path)
    with open(tmp_path / "scheduler_config.json") as f:
        saved = json.load(f)
    assert saved["_class_name"] == name and saved["num_train_timesteps"] == 500
    theirs = getattr(diffusers, name).from_pretrained(tmp_path)
    back = getattr(fdd, name).from_config(theirs.config)
    keys = set(ours.config) & set(theirs.config)
    assert keys >= {"num_train_timesteps"}
    for k in keys:
        assert ours.config[k] == theirs.config[k] == back.config[k], k
    # and from diffusers' default config of another scheduler (the documented swap)
    swapped = getattr(fdd, name).from_config(diffusers.DDIMScheduler(**SD).config)
    assert swapped.config.num_train_timesteps == 1000


@pytest.mark.parametrize("name", SCHEDULERS)
def test_compatibles_as_diffusers_lists_them(name):
    """The same ``_compatibles`` names as diffusers' class; ``compatibles`` offers fastdiff's drop-in wherever
    there is one (a pipeline switching through it stays on fastdiff), each loading this scheduler's config."""
    ours = getattr(fdd, name)
    assert list(ours._compatibles) == list(getattr(diffusers, name)._compatibles)
    offered = ours().compatibles
    assert offered[0] is ours
    names = [c.__name__ for c in offered]
    assert sorted(names) == sorted({name, *ours._compatibles})
    for c in offered:
        assert c is getattr(fdd, c.__name__, getattr(diffusers, c.__name__))
    if len(offered) > 1:
        other = next(c for c in offered if c is not ours)
        assert other.from_config(ours().config) is not None


@pytest.mark.parametrize("name", STEPPED)
def test_one_fused_step_per_call_and_no_sync(name, monkeypatch):
    calls = []
    real = _base.fused_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_base, "fused_step", counting)
    s = getattr(fdd, name)()
    s.set_timesteps(6)
    x = torch.randn(2, 3, 4, 4)
    ts = list(s.timesteps)
    for i, t in enumerate(ts):
        if i == 1:
            # from the second step on, no tensor may be read back on the host
            def boom(*a, **k):
                raise AssertionError("host-device sync in step")
            monkeypatch.setattr(torch.Tensor, "item", boom)
            monkeypatch.setattr(torch.Tensor, "__bool__", boom)
        t_arg = float(t) if (i % 2 and t.dtype.is_floating_point) else (int(t) if i % 2 else t)
        before = len(calls)
        x = s.step(torch.sin(x), t_arg, x).prev_sample
        assert len(calls) == before + 1
    monkeypatch.undo()
    assert torch.isfinite(x).all() and len(calls) == len(ts)


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_zero_terminal_snr_epsilon_is_finite(name):
    """diffusers divides by sqrt(alpha_bar_T) = 0 here (inf/NaN); fastdiff clamps alpha_bar to 2**-24."""
    cfg = {**SD, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "clip_sample": False}
    outs = []
    for mod in (fdd, diffusers):
        s = getattr(mod, name)(**cfg)
        s.set_timesteps(5)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 4, 4, generator=g)
        x = s.step(torch.randn(2, 3, 4, 4, generator=g), s.timesteps[0], x, generator=g).prev_sample
        outs.append(x)
    assert torch.isfinite(outs[0]).all()
    # the peer's breakdown is checked, not assumed: its rescaled alpha_bar_T is exactly 0 (x - x in the rescale,
    # the same on every CPU), and its step then divides by sqrt(0)
    assert s.alphas_cumprod[-1].item() == 0.0
    assert not torch.isfinite(outs[1]).all()  # the failure the clamp fixes (keeps this test meaningful)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                  "UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler", "HeunDiscreteScheduler"])
def test_half_precision_kept(name, dtype):
    ref_ts = getattr(fdd, name)()
    ref_ts.set_timesteps(8)
    hi, _ = _run(getattr(fdd, name)(), 8, ref_ts.timesteps)
    lo, _ = _run(getattr(fdd, name)(), 8, ref_ts.timesteps, dtype=dtype)
    assert lo.dtype == dtype
    tol = 0.05 if dtype == torch.float16 else 0.25  # storage rounding of 8 steps; math is fp32
    torch.testing.assert_close(lo.float(), hi, rtol=0, atol=tol * max(1.0, hi.abs().max().item()))


@pytest.mark.parametrize("name", STEPPED)
def test_triton_backend_matches_torch(name):
    """Three steps through the Triton kernel (interpreter on CPU) against the PyTorch path."""
    res = []
    for backend in ("torch", "triton"):
        torch.manual_seed(3)  # before set_timesteps: stochastic schedulers draw their Philox seed there
        s = getattr(fdd, name)(**({"algorithm_type": "sde-dpmsolver++"} if name.startswith("DPMSolverMulti") else {}))
        s.backend = backend
        s.set_timesteps(4)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 4, 4, generator=g)
        for t in list(s.timesteps)[:3]:
            kw = {"generator": None} if "generator" in inspect.signature(s.step).parameters else {}
            x = s.step(torch.cos(x), t, x, **kw).prev_sample
        res.append(x)
    # Both paths compute in float32 with different association; at sigma ~ 15 (Heun's first steps) the
    # conversion x - sigma*eps cancels, so allow float32 rounding relative to the trajectory's scale.
    scale = max(1.0, res[0].abs().max().item())
    torch.testing.assert_close(res[1], res[0], rtol=1e-4, atol=2e-5 * scale)


def test_in_kernel_noise_follows_global_seed():
    """Without a generator the noise is Philox keyed by one seed from torch's global RNG: reproducible."""
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        s = fdd.EulerAncestralDiscreteScheduler()
        s.set_timesteps(5)
        x = torch.zeros(2, 3, 4, 4)
        for t in s.timesteps:
            x = s.step(torch.zeros_like(x), t, x).prev_sample
        outs.append(x)
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    # with a zero epsilon prediction each step adds N(0, sigma_up^2): the final std is sqrt(sum sigma_up^2).
    # 96 values estimate the std to ~7% (1 sd), so +-30% detects wrong noise scales or missing noise
    sig = s.sigmas.double()
    up = (sig[1:] ** 2 * (sig[:-1] ** 2 - sig[1:] ** 2) / sig[:-1] ** 2).sqrt()
    expected = up.pow(2).sum().sqrt().item()
    assert 0.7 * expected < outs[0].std().item() < 1.3 * expected


def test_add_noise_matches_diffusers():
    x0, noise = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    for name in ("DDPMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler"):
        ours, ref = getattr(fdd, name)(), getattr(diffusers, name)()
        ours.set_timesteps(10)
        ref.set_timesteps(10)
        t = ref.timesteps[[0, 3, 7]]
        torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=2e-4, atol=1e-5)
    ours, ref = fdd.FlowMatchEulerDiscreteScheduler(shift=3.0), diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    t = ref.timesteps[[1, 4, 9]]
    torch.testing.assert_close(ours.scale_noise(x0, t, noise), ref.scale_noise(x0, t, noise), rtol=1e-5, atol=1e-6)


def test_begin_index_img2img():
    """set_begin_index starts mid-schedule; multistep orders restart from there as in diffusers."""
    res = []
    for mod in (fdd, diffusers):
        s = mod.DPMSolverMultistepScheduler(solver_order=3)
        s.set_timesteps(10)
        s.set_begin_index(4)
        x = torch.linspace(-1, 1, 24).reshape(2, 3, 4)
        for t in s.timesteps[4:]:
            x = s.step(fake_model(x, t), t, x).prev_sample
        res.append(x)
    torch.testing.assert_close(res[0], res[1], rtol=0, atol=5e-5)


def _tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@pytest.mark.parametrize("pipe_name,sched_name,kw", [
    ("DDPMPipeline", "DDPMScheduler", {}),
    ("DDIMPipeline", "DDIMScheduler", {"eta": 0.0}),
    ("DDIMPipeline", "DDIMScheduler", {"eta": 1.0}),
    ("PNDMPipeline", "PNDMScheduler", {}),
])
def test_pipeline_swap_same_images(pipe_name, sched_name, kw, monkeypatch):
    """The documented swap in diffusers' own pipelines: the images (``(x / 2 + 0.5).clamp(0, 1)``, continuous and
    1-Lipschitz in the final sample, so no rounding is amplified after the loop) bounded against the same pipeline
    run in float64 with diffusers' scheduler in float64; each of the 8 steps runs the UNet and one step."""
    steps = 8

    def images(sched, wide=False):
        pipe = getattr(diffusers, pipe_name)(unet=_tiny_unet(), scheduler=diffusers.DDIMScheduler())
        pipe.scheduler = sched  # the documented swap (DDIMPipeline converts in __init__)
        if wide:
            float64_pipeline(monkeypatch, pipe)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                       output_type="np", **kw)
        return torch.from_numpy(out.images)

    peer = images(getattr(diffusers, sched_name)())
    ours = images(getattr(fdd, sched_name)())
    exact = images(float64_scheduler(diffusers, sched_name, {}), wide=True)
    assert peer.shape == (2, 8, 8, 3) and exact.dtype == torch.float64
    assert peer.std() > 0.05  # not all clamped to one value
    assert_parity(f"{pipe_name} images", ours, peer, exact, steps)


def test_works_without_diffusers(tmp_path):
    """With diffusers absent the stand-in ConfigMixin/outputs are used (run in a fresh interpreter)."""
    code = f"""
import sys
sys.modules['diffusers'] = None  # make 'import diffusers' fail
import torch, fastdiff.diffusers as fdd
assert not fdd.HAS_DIFFUSERS
s = fdd.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012, clip_sample=False)
assert s.config.clip_sample is False and s.config['num_train_timesteps'] == 1000
s.save_pretrained({str(tmp_path)!r})
t = fdd.DDIMScheduler.from_pretrained({str(tmp_path)!r})
assert dict(t.config) == dict(s.config)
e = fdd.EulerDiscreteScheduler.from_config(t.config, use_karras_sigmas=True)
assert e.config.use_karras_sigmas and e.config.beta_schedule == 'scaled_linear'
t.set_timesteps(4)
x = torch.randn(1, 2, 3)
out = t.step(torch.zeros_like(x), t.timesteps[0], x)
assert out.prev_sample.shape == x.shape and out[0] is out.prev_sample and out.pred_original_sample is not None
print('ok')
"""
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


@pytest.mark.parametrize("algorithm_type", ["dpmsolver++", "dpmsolver"])
def test_learned_variance_model_output(algorithm_type):
    """variance_type learned / learned_range: the model returns [noise; variance] channels and the solver uses
    the first three (diffusers' convention), so a 6-channel output steps a 3-channel sample as diffusers does."""
    cfg = {"variance_type": "learned_range", "algorithm_type": algorithm_type, "final_sigmas_type": "sigma_min"}
    runs = {}
    for key, sched, dtype in (("ours", fdd.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("peer", diffusers.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "DPMSolverMultistepScheduler", cfg), torch.float64)):
        sched.set_timesteps(8)
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)).to(dtype)
        for t in sched.timesteps:
            out = torch.cat([fake_model(x, t), torch.full_like(x, float("nan"))], dim=1)  # variance: never read
            x = sched.step(out, t, x).prev_sample
        runs[key] = x
    assert_parity("learned_range prev_sample", runs["ours"], runs["peer"], runs["exact"], 8)


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_ddpm_learned_variance(variance_type):
    """DDPM with a model that predicts its variance ([noise; variance] channels): the noise of each step is
    scaled per element as diffusers scales it (generator noise, so the three runs draw the same normals)."""
    cfg = {"variance_type": variance_type}
    runs = {}
    for key, sched, dtype in (("ours", fdd.DDPMScheduler(**cfg), torch.float32),
                              ("peer", diffusers.DDPMScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "DDPMScheduler", cfg), torch.float64)):
        sched.set_timesteps(8)
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, 3, 4, 4, generator=g).to(dtype)
        for t in sched.timesteps:
            eps = fake_model(x, t)
            v = torch.tanh(eps) if variance_type == "learned_range" else 0.05 + eps.abs() * 1e-3
            x = sched.step(torch.cat([eps, v], dim=1), t, x, generator=g).prev_sample
        runs[key] = x
    assert_parity(f"{variance_type} prev_sample", runs["ours"], runs["peer"], runs["exact"], 8)


@pytest.mark.parametrize("how", ["mu", "sigmas"])
def test_unipc_flow_dynamic_shift_and_custom_sigmas(how):
    """UniPC on flow sigmas with a dynamic shift (``mu``) or custom ``sigmas``: diffusers' schedule and trajectory."""
    cfg = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "use_dynamic_shifting": how == "mu"}
    kw = {"num_inference_steps": 8, "mu": 0.8} if how == "mu" else {"sigmas": np.array([0.95, 0.8, 0.6, 0.45, 0.3, 0.1])}
    runs = {}
    for key, sched, dtype in (("ours", fdd.UniPCMultistepScheduler(**cfg), torch.float32),
                              ("peer", diffusers.UniPCMultistepScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "UniPCMultistepScheduler", cfg), torch.float64)):
        sched.set_timesteps(**kw)
        runs[key + "_ts"], runs[key + "_sig"] = sched.timesteps.clone(), sched.sigmas.clone()
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)).to(dtype)
        for t in sched.timesteps:
            x = sched.step(fake_model(x, t), t, x).prev_sample
        runs[key] = x
    assert torch.equal(runs["ours_ts"], runs["peer_ts"])
    torch.testing.assert_close(runs["ours_sig"].double(), runs["peer_sig"].double(), rtol=1e-6, atol=1e-7)
    assert_parity(f"flow UniPC ({how}) prev_sample", runs["ours"], runs["peer"], runs["exact"], len(runs["peer_ts"]))


def test_dpm_solver_flow_dynamic_shift():
    """DPM-Solver on flow sigmas with ``mu``: diffusers sets flow_shift = e^mu; the same schedule and trajectory."""
    cfg = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "use_dynamic_shifting": True}
    runs = {}
    for key, sched, dtype in (("ours", fdd.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("peer", diffusers.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "DPMSolverMultistepScheduler", cfg), torch.float64)):
        sched.set_timesteps(8, mu=0.7)
        runs[key + "_ts"], runs[key + "_shift"] = sched.timesteps.clone(), float(sched.config.flow_shift)
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
        for t in sched.timesteps:
            x = sched.step(fake_model(x, t), t, x).prev_sample
        runs[key] = x
    assert torch.equal(runs["ours_ts"], runs["peer_ts"]) and runs["ours_shift"] == pytest.approx(runs["peer_shift"])
    assert_parity("flow DPM-Solver (mu) prev_sample", runs["ours"], runs["peer"], runs["exact"], 8)


@pytest.mark.parametrize("cfg", [{}, SD, {"beta_schedule": "squaredcos_cap_v2"}, {"beta_schedule": "sigmoid"},
                                 {**SD, "rescale_betas_zero_snr": True}, {"trained_betas": [0.01 * k for k in range(1, 11)],
                                                                          "num_train_timesteps": 10}])
def test_table_arithmetic_modes(cfg):
    """Default: the training schedule is diffusers' float32 one, bit for bit; "float64": fastdiff.schedules' exact one
    (nearer to a float64 run of diffusers' own code than diffusers' float32 run is)."""
    ours, ref = fdd.DDPMScheduler(**cfg), diffusers.DDPMScheduler(**cfg)
    assert torch.equal(ours.betas, ref.betas) and torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)
    previous = fdd.set_table_arithmetic("float64")
    try:
        exact = fdd.DDPMScheduler(**cfg)
    finally:
        fdd.set_table_arithmetic(previous)
    ref64 = float64_scheduler(diffusers, "DDPMScheduler", cfg).alphas_cumprod.double()
    err64 = (exact.alphas_cumprod.double() - ref64).abs().max().item()
    err32 = (ref.alphas_cumprod.double() - ref64).abs().max().item()
    assert err64 <= max(err32, 6e-8 * ref64.abs().max().item())
    with pytest.raises(ValueError, match="mode must be one of"):
        fdd.set_table_arithmetic("float16")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 12288), (3, 7), (16, 1000), (2, 1)])
def test_row_quantile_is_torch_quantile(dtype, shape):
    """Dynamic thresholding's per-sample quantile (two selections) equals torch.quantile's sort, bit for bit."""
    flat = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(shape[1])).abs()
    for q in (0.0, 0.5, 0.9, 0.995, 0.999, 1.0):
        assert torch.equal(_base._row_quantile(flat, q), torch.quantile(flat, q, dim=1)), q


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_beta_end_above_one_accepted_like_diffusers(name):
    """diffusers accepts ``beta_end >= 1`` (its betas pass 1 part-way, ``alphas_cumprod`` turns non-positive): the
    drop-in accepts it too, says where the schedule breaks, and gives diffusers' numbers: ``add_noise`` on both sides
    of the break (NaN exactly where diffusers has NaN) and one step at an early timestep."""
    cfg = {"beta_start": 0.1, "beta_end": 2.0}
    with pytest.warns(UserWarning, match="betas >= 1 from training timestep"):
        ours = getattr(fdd, name)(**cfg)
    ref = getattr(diffusers, name)(**cfg)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0, equal_nan=True)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 3, 100, 473, 474, 999])
    a, b = ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t)
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)
    x = torch.randn(2, 3, 4, 4, generator=g)
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    t = int(ref.timesteps[-2])  # an early timestep: before the break
    out = ours.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    want = ref.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.isfinite(want).all()
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stochastic", [False, True])
def test_flow_match_per_token_timesteps(stochastic):
    """LTX-style conditioning: each token steps from its own timestep to the next schedule sigma below it, with
    diffusers' sign and float32 result; bounded by a float64 run of the same formula (deterministic case: the one
    rounding of addcmul against diffusers' two, so within 2 ulp of the float64 value)."""
    cfg = dict(shift=3.0, stochastic_sampling=stochastic)
    ours, ref = fdd.FlowMatchEulerDiscreteScheduler(**cfg), diffusers.FlowMatchEulerDiscreteScheduler(**cfg)
    ours.set_timesteps(8)
    ref.set_timesteps(8)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 8, generator=g).to(torch.bfloat16)
    v = torch.randn(2, 12, 8, generator=g).to(torch.bfloat16)
    t = ref.timesteps[2]
    # most tokens at the step's timestep, some conditioning tokens further along (a lower timestep) or at 0
    ptt = t.expand(2, 12).clone()
    ptt[:, :3] = ref.timesteps[5]
    ptt[1, 3] = 0.0
    for s in (ours, ref):
        s.set_begin_index(2)
    a = ours.step(v, t, x, per_token_timesteps=ptt, generator=torch.Generator().manual_seed(5)).prev_sample
    b = ref.step(v, t, x, per_token_timesteps=ptt, generator=torch.Generator().manual_seed(5)).prev_sample
    assert a.dtype == b.dtype == torch.float32 and ours.step_index == ref.step_index == 3
    if stochastic:  # same generator draws: the same noise, the same three float32 operations
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        return
    sig = ptt.double() / 1000
    sch = ref.sigmas.double()[:, None, None]
    nxt = ((sch < sig[None] - 1e-6) * sch).max(dim=0).values
    exact = x.double() + ((sig - nxt)[..., None]).float().double() * v.double()
    ulp = torch.finfo(torch.float32).eps * exact.abs().clamp_min(1e-30)
    assert ((a.double() - exact).abs() <= 2 * ulp + (b.double() - exact).abs()).all()
    assert (a - b).abs().max() <= 4 * torch.finfo(torch.float32).eps * b.abs().max()


def test_flow_match_per_token_timesteps_bad_shape():
    s = fdd.FlowMatchEulerDiscreteScheduler()
    s.set_timesteps(4)
    x = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="per_token_timesteps"):
        s.step(x, s.timesteps[0], x, per_token_timesteps=torch.zeros(2, 4))
