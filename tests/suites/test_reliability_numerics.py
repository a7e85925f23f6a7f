"""Numerical edge cases: the final step at sigma = 0, zero terminal SNR, fp16/bf16 storage with float32
arithmetic, int64 flat offsets in the kernels, and NaN propagation from the model."""
import math

import pytest
import torch

import fastdiff
from fastdiff import diffusers as fd
from fastdiff.ops.step import step_coefs
from fastdiff.samplers import NEEDS_UNCOND
from fastdiff.sampling import list_samplers
from fastdiff.toy import GaussianMixture
from reliability_cases import ZTSNR_SCHEDULERS, eps_model, randn, run_scheduler, same_bits, sid

GMM = GaussianMixture.ring(k=4, radius=2.0, std=0.3)
# the CFG++ samplers need guidance: test_sampler_accuracy_cfgpp.py runs these checks on them with a CFGDenoiser
VE_SAMPLERS = [s for s in list_samplers() if s != "flow_euler" and s not in NEEDS_UNCOND]
# k-diffusion's samplers take a plain first-order step into sigma = 0 (x_next = the x0 estimate);
# LMS and UniPC instead integrate over [sigma_i, 0] with their multistep weights; SA-Solver's PECE mode returns
# the x0 estimate of its second (corrected-state) evaluation, which the callback does not see (as in ComfyUI).
ENDS_ON_DENOISED = [s for s in VE_SAMPLERS if s not in ("lms", "unipc", "sa_solver_pece")]


# ------------------------------------------------------------------------------ sigma -> 0, final step
@pytest.mark.parametrize("sampler", VE_SAMPLERS)
def test_tiny_sigma_min_stays_finite(sampler):
    """Karras sigmas down to 1e-6 (step ratios ~1e-6 in the last coefficients): the run stays finite."""
    sig = fastdiff.karras_sigmas(6, 1e-6, 20.0)
    x = fastdiff.initial_noise((8, 2), seed=0) * 20.0
    out = fastdiff.sample(GMM.denoiser, x, sig, sampler=sampler, seed=1)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ENDS_ON_DENOISED)
def test_final_step_returns_the_x0_estimate(sampler):
    """The step into sigma = 0 returns the last x0 estimate (the sampler's definition), computed in the kernel."""
    seen = []
    sig = fastdiff.karras_sigmas(5, 0.05, 10.0)
    x = fastdiff.initial_noise((6, 2), seed=3) * 10.0
    out = fastdiff.sample(GMM.denoiser, x, sig, sampler=sampler, seed=2,
                          callback=lambda d: seen.append(d["denoised"].clone()))
    torch.testing.assert_close(out, seen[-1], rtol=1e-6, atol=1e-6)


def test_flow_euler_final_step_returns_the_x0_estimate():
    seen = []
    den = fastdiff.FlowDenoiser(lambda xs, t: torch.tanh(xs) + 1e-3 * t.reshape(-1, 1))
    s = fastdiff.FlowMatchingSchedule().sigmas(5)
    x = fastdiff.initial_noise((4, 3), seed=0)
    out = fastdiff.sample(den, x, s, sampler="flow_euler", callback=lambda d: seen.append(d["denoised"].clone()))
    torch.testing.assert_close(out, seen[-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton", "reference"])
def test_step_at_sigma_zero_is_exactly_the_estimate(backend):
    """An Euler row into sigma = 0 has out_x = 0, out_d = 1: the output is d bit for bit on every backend."""
    x, eps = randn(3, 5, seed=0), randn(3, 5, seed=1)
    sh = 0.02
    c = step_coefs(in_x=1.0, in_m=-sh, out_x=0.0, out_d=1.0)
    out = fastdiff.fused_step(x, eps, c, backend=backend)
    d = fastdiff.fused_step(x, eps, step_coefs(in_x=1.0, in_m=-sh, out_d=1.0), backend=backend)
    assert same_bits(out, d)
    torch.testing.assert_close(out.double(), x.double() - sh * eps.double(), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------ zero terminal SNR
@pytest.mark.parametrize("spacing", ["trailing", "linspace", "leading"])
@pytest.mark.parametrize("cls", ZTSNR_SCHEDULERS, ids=sid)
def test_ztsnr_epsilon_compat_schedulers_finite(cls, spacing):
    """alpha_bar_T = 0 with an epsilon network: x0 = (x - sqrt(1-a) eps) / sqrt(a) would divide by zero at the first
    (trailing) timestep; the schedulers must stay finite (the terminal alpha_bar is replaced as in diffusers)."""
    cfg = dict(rescale_betas_zero_snr=True, timestep_spacing=spacing, beta_schedule="scaled_linear",
               beta_start=0.00085, beta_end=0.012, prediction_type="epsilon")
    out = run_scheduler(cls, 6, randn(2, 3, seed=4), **cfg)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc", "ddim"])
def test_ztsnr_epsilon_wrapper_samplers_finite(sampler):
    """EpsDenoiser on a zero-terminal-SNR schedule, sampled from its (finite) sigma_max down to 0: finite."""
    sched = fastdiff.DiscreteVPSchedule(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        rescale_betas_zero_snr=True)
    assert math.isfinite(sched.sigma_max)
    den = fastdiff.EpsDenoiser(eps_model, sched)
    sig = fastdiff.karras_sigmas(6, sched.sigma_min, sched.sigma_max)
    x = fastdiff.initial_noise((3, 4), seed=0) * sig[0].item()
    out = fastdiff.sample(den, x, sig, sampler=sampler, seed=0)
    assert torch.isfinite(out).all()


def test_ztsnr_encode_at_terminal_timestep():
    """At alpha = 0 the encoder returns pure noise and an epsilon target equal to it (no 0/0)."""
    sched = fastdiff.DiscreteVPSchedule(rescale_betas_zero_snr=True)
    x0 = randn(2, 3, seed=0)
    t = torch.full((2,), sched.num_train_timesteps - 1)
    for target in ("epsilon", "v_prediction", "sample"):
        xt, tg, z = fastdiff.add_noise_with_target(x0, t, sched, seed=0, target=target, return_noise=True)
        assert torch.isfinite(xt).all() and torch.isfinite(tg).all()
        torch.testing.assert_close(xt, z)


# ------------------------------------------------------------------------------ fp16 / bf16 storage
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fp16_intermediate_overflow_is_computed_in_fp32(backend):
    """d = x + m = 120000 exceeds fp16 (max 65504) but out = 0.25 d + 0.5 x fits: float32 math gives it exactly."""
    x = torch.full((2, 8), 60000.0, dtype=torch.float16)
    m = torch.full((2, 8), 60000.0, dtype=torch.float16)
    c = step_coefs(in_x=1.0, in_m=1.0, out_d=0.25, out_x=-0.25, aux_x=0.0, aux_d=0.5)
    out, aux = fastdiff.fused_step(x, m, c, write_aux=True, backend=backend)
    assert out.dtype == torch.float16
    assert torch.equal(out, torch.full_like(out, 15000.0)), out
    assert torch.equal(aux, torch.full_like(aux, 60000.0)), aux  # 0.5 * 120000


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fp16_large_sigma_euler_step(backend):
    """An Euler step at sigma = 2000 on fp16 storage: sigma*eps (~2e3 * 40 = 8e4) overflows fp16 as an
    intermediate, the result (x at the next sigma, ~|x| * 0.5) fits. Compared with the float64 formula."""
    sh, s1 = 2000.0, 1000.0
    x = (randn(4, 16, seed=0) * 30.0).to(torch.float16)   # |x| < 65504 / 2
    eps = torch.full((4, 16), 40.0, dtype=torch.float16)
    r = s1 / sh
    c = step_coefs(in_x=1.0, in_m=-sh, out_x=r, out_d=1.0 - r)
    out = fastdiff.fused_step(x, eps, c, backend=backend)
    exact = r * x.double() + (1 - r) * (x.double() - sh * eps.double())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), exact, rtol=2 ** -10, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_half_storage_rounds_once(dtype, backend):
    """Every output element is the float32 result rounded once to the storage dtype (no half-precision math):
    equal to the float64 formula rounded to the storage dtype, up to one ulp of it."""
    x, m, h = randn(3, 40, seed=0, dtype=dtype), randn(3, 40, seed=1, dtype=dtype), randn(3, 40, seed=2, dtype=dtype)
    c = step_coefs(in_x=0.7, in_m=-1.3, out_x=0.91, out_m=0.2, out_d=0.35, out_h=[0.125], out_noise=0.0)
    out = fastdiff.fused_step(x, m, c, history=[h], backend=backend)
    x64, m64, h64 = x.double(), m.double(), h.double()
    d = 0.7 * x64 - 1.3 * m64
    exact = 0.91 * x64 + 0.2 * m64 + 0.35 * d + 0.125 * h64
    ulp = torch.finfo(dtype).eps * exact.abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((out.double() - exact).abs() <= ulp + 1e-30).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_storage_encode_and_langevin_finite(dtype):
    x0 = torch.full((2, 8), 60000.0 if dtype == torch.float16 else 1e30, dtype=dtype)
    sched = fastdiff.DiscreteVPSchedule()
    xt = fastdiff.add_noise(x0, torch.tensor([0, 999]), sched, seed=0, backend="triton")
    assert torch.isfinite(xt).all()
    # x + h*grad: h*grad overflows nothing, x - grad cancels: float32 math keeps the small result
    big = float(x0[0, 0])
    out = fastdiff.langevin_step(x0, -x0, 1.0, noise=torch.zeros_like(x0), backend="triton")
    assert torch.equal(out, torch.zeros_like(out)), (big, out)


# ------------------------------------------------------------------------------ int64 offsets
def test_idx64_threshold():
    from fastdiff.ops.launch import idx64
    assert not idx64(2 ** 31 - 2)
    assert idx64(2 ** 31 - 1) and idx64(2 ** 31 + 5)
    assert idx64(2 ** 30, 2 ** 30)   # CFG: the cond half starts at offset total
    assert not idx64(2 ** 30 - 1, 2 ** 30 - 1)


def _force_idx64(monkeypatch, module):
    calls = []

    def always(total, extra=0):
        calls.append((total, extra))
        return True

    monkeypatch.setattr(module, "idx64", always)
    return calls


def test_step_idx64_path_matches_int32_path(monkeypatch):
    """By construction on CPU: the kernel compiled with IDX64=True (int64 offsets, int64 row/col arithmetic) gives
    bit-identical results to the int32 path, for every feature that computes an offset (guidance's second half,
    per-row coefficients, row ids, Philox columns, history, x_eval)."""
    import fastdiff.ops.step.fused as step_fused
    x, xe = randn(3, 37, seed=0), randn(3, 37, seed=1)
    m = randn(6, 37, seed=2)
    hist = [randn(3, 37, seed=3), randn(3, 37, seed=4)]
    c = (torch.rand(4, 15, generator=torch.Generator().manual_seed(5)) - 0.5)
    kw = dict(x_eval=xe, history=hist, coef_index=torch.tensor([3, 0, 2]), guidance=True, seed=77, stream=9,
              row_ids=torch.tensor([5, 2 ** 33 + 1, 11]), write_aux=True, backend="triton")
    ref = fastdiff.fused_step(x, m, c, **kw)
    calls = _force_idx64(monkeypatch, step_fused)
    got = fastdiff.fused_step(x, m, c, **kw)
    assert calls, "the launcher did not consult idx64"
    assert same_bits(got[0], ref[0]) and same_bits(got[1], ref[1])


def test_encode_and_langevin_idx64_paths_match_int32_paths(monkeypatch):
    import fastdiff.ops.encode.fused as enc_fused
    import fastdiff.ops.langevin.fused as lan_fused
    sched = fastdiff.DiscreteVPSchedule()
    x = randn(5, 21, seed=0)
    t = torch.tensor([0, 10, 500, 999, 3])
    rid = torch.tensor([0, 1, 2 ** 40, 3, 4])
    step = torch.rand(5, generator=torch.Generator().manual_seed(1)) + 0.01
    acc = torch.tensor([True, False, True, False, True])

    def run():
        e = fastdiff.add_noise_with_target(x, t, sched, seed=3, stream=2, row_ids=rid, target="v", return_noise=True,
                                           backend="triton")
        z = torch.empty_like(x)
        lang = fastdiff.langevin_step(x, -x, step, seed=4, stream=1, row_ids=rid, noise_out=z, backend="triton")
        sel = fastdiff.langevin_select(x, lang, acc, backend="triton")
        return (*e, lang, z, sel)

    ref = run()
    calls_e = _force_idx64(monkeypatch, enc_fused)
    calls_l = _force_idx64(monkeypatch, lan_fused)
    got = run()
    assert calls_e and len(calls_l) >= 2
    for a, b in zip(got, ref):
        assert same_bits(a, b)


@pytest.mark.gpu
def test_step_past_2_31_elements_on_cuda():
    """A real > 2**31-element step (fp16, ~4.3 GB per tensor): the values past offset 2**31 are right."""
    n = 2 ** 30 + 64                      # 2 rows -> 2**31 + 128 elements
    x = torch.ones(2, n, dtype=torch.float16, device="cuda")
    m = torch.full((2, n), 2.0, dtype=torch.float16, device="cuda")
    x[1, -100:] = 3.0                     # past 2**31: a wrapped int32 offset would miss these
    c = step_coefs(in_x=0.0, in_m=1.0, out_x=0.5, out_d=2.0, device="cuda")
    out = fastdiff.fused_step(x, m, c, backend="triton")
    torch.cuda.synchronize()
    assert float(out[0, 0]) == 4.5 and float(out[1, 0]) == 4.5
    assert bool((out[1, -100:] == 5.5).all()) and bool((out[1, -164:-100] == 4.5).all())
    assert bool((out[0, -10:] == 4.5).all())
    del x, m, out
    torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ NaN propagation
def _nan_at(t, idx=(1, 2)):
    t = t.clone()
    t[idx] = math.nan
    return t


@pytest.mark.parametrize("backend", ["torch", "triton", "reference"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_fused_step_propagates_model_nan(backend, clip):
    """A NaN in the model output reaches the output (and the aux/x0 estimate), including through clip."""
    x, m = randn(3, 5, seed=0), _nan_at(randn(3, 5, seed=1))
    c = step_coefs(in_x=1.0, in_m=-0.5, out_x=0.5, out_d=0.5)
    out, aux = fastdiff.fused_step(x, m, c, clip=clip, write_aux=True, seed=0, backend=backend)
    assert torch.isnan(out[1, 2]) and torch.isnan(aux[1, 2])
    assert torch.isfinite(out).sum() == out.numel() - 1


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "heun", "unipc"])
def test_sample_propagates_model_nan(sampler):
    def den(x, sigma):
        return _nan_at(GMM.denoiser(x, sigma), (2, 0))

    x = fastdiff.initial_noise((4, 2), seed=0) * 10.0
    out = fastdiff.sample(den, x, fastdiff.karras_sigmas(4, 0.1, 10.0), sampler=sampler, seed=0)
    assert torch.isnan(out[2]).any()
    assert torch.isfinite(out[[0, 1, 3]]).all()   # rows never mix


@pytest.mark.parametrize("cls", [fd.DDPMScheduler, fd.DDIMScheduler, fd.EulerDiscreteScheduler,
                                 fd.DPMSolverMultistepScheduler, fd.FlowMatchEulerDiscreteScheduler], ids=sid)
def test_compat_step_propagates_model_nan(cls):
    """Also through DDPM/DDIM's default clip_sample=True (a clamp must not turn NaN into +-1)."""
    s = cls()
    s.set_timesteps(4)
    x = randn(2, 3, seed=0)
    res = s.step(_nan_at(torch.zeros(2, 3)), s.timesteps[0], x)
    assert torch.isnan(res.prev_sample[1, 2])


@pytest.mark.parametrize("cls", [fd.DDPMScheduler, fd.DDIMScheduler], ids=sid)
def test_compat_clip_sample_propagates_nan_on_the_kernel(cls):
    """The kernel path (what CUDA runs) of clip_sample=True: the x0 estimate and the sample keep the NaN."""
    s = cls()
    s.backend = "triton"
    s.set_timesteps(4)
    res = s.step(_nan_at(torch.zeros(2, 3)), s.timesteps[0], randn(2, 3, seed=0))
    assert torch.isnan(res.prev_sample[1, 2]) and torch.isnan(res.pred_original_sample[1, 2])


def test_langevin_propagates_grad_nan():
    calls = []

    def grad(v):
        calls.append(1)
        return _nan_at(-v, (0, 1)) if len(calls) == 2 else -v

    out = fastdiff.langevin(grad, randn(3, 4, seed=0), 0.1, 4, seed=0)
    assert torch.isnan(out[0, 1])
    assert torch.isfinite(out[1:]).all()


def test_mala_rejects_nan_proposals_by_design():
    """MALA differs on purpose: a NaN log-density or gradient at a proposal is a rejection (the chain stays where
    it was), so chains stay finite; a chain whose start has log p = NaN is outside the support and moves on its first
    valid proposal."""
    def lp(v):
        out = -0.5 * (v ** 2).sum(1)
        return torch.where(v[:, 0] > 0.5, torch.full_like(out, math.nan), out)

    x0 = torch.tensor([[0.0, 0.0], [2.0, 0.0], [-1.0, 1.0]])
    x, acc = fastdiff.mala(lp, x0, 0.3, 50, seed=0)
    assert torch.isfinite(x).all()
    assert bool((x[:, 0] <= 0.5).all()), "a NaN-density proposal was accepted"
