"""Inputs are never modified unless in-place work is asked for (out= aliasing an input), and long loops do not
grow memory (live tensors or process RSS)."""
import gc
import math
import resource
import warnings

import pytest
import torch

import fastdiff
from fastdiff import diffusers as fd
from fastdiff.ops.step import step_coefs
from fastdiff.toy import GaussianMixture
from reliability_cases import COMPAT_SCHEDULERS, assert_unchanged, eps_model, randn, sid, snapshot

GMM = GaussianMixture.ring(k=4, radius=2.0, std=0.3)
SIG = fastdiff.karras_sigmas(4, 0.05, 10.0)
BACKENDS = ["torch", "triton", "reference"]


def _call_unchanged(fn, *args, **kwargs):
    snap = snapshot(args, kwargs)
    out = fn(*args, **kwargs)
    assert_unchanged(snap)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_ops_leave_inputs_alone(backend, layout):
    def t(seed, rows=3):
        a = randn(5, rows, seed=seed)
        return a.t() if layout == "transposed" else a.t().contiguous()

    x, xe, h0, h1, nz = t(0), t(1), t(2), t(3), t(4)
    m = torch.cat([t(5), t(6)])
    c = step_coefs(in_x=[1.0, 0.5], in_m=[-0.5, 0.3], out_x=0.4, out_d=0.6, out_m=0.1, out_e=0.05,
                   out_h=[0.1, 0.2], out_noise=0.3, aux_x=0.1)
    ci, rid = torch.tensor([1, 0, 1]), torch.tensor([4, 9, 2])
    _call_unchanged(fastdiff.fused_step, x, m, c, x_eval=xe, history=[h0, h1], coef_index=ci, guidance=True,
                    clip=1.5, noise=nz, row_ids=rid, write_aux=True, backend=backend)
    _call_unchanged(fastdiff.fused_step, x, m[:3], c, seed=3, stream=2, row_ids=rid, coef_row=1, backend=backend)
    step = torch.tensor([0.1, 0.2, 0.3])
    _call_unchanged(fastdiff.langevin_step, x, xe, step, seed=1, row_ids=rid, backend=backend)
    _call_unchanged(fastdiff.langevin_step, x, xe, 0.1, noise=nz, backend=backend)
    _call_unchanged(fastdiff.langevin_select, x, xe, torch.tensor([True, False, True]), backend=backend)
    sched = fastdiff.DiscreteVPSchedule()
    tt = torch.tensor([0, 500, 999])
    _call_unchanged(fastdiff.add_noise, x, tt, sched, nz, backend=backend)
    _call_unchanged(fastdiff.add_noise_with_target, x, tt, sched, nz, target="v", return_noise=True, backend=backend)
    _call_unchanged(fastdiff.add_noise, x, tt, sched, seed=1, row_ids=rid, backend=backend)
    _call_unchanged(fastdiff.encoder_transition, x, tt, sched, nz, backend=backend)
    cont = fastdiff.FlowMatchingSchedule()
    _call_unchanged(fastdiff.add_noise_with_target, x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), cont, nz,
                    target="flow", backend=backend)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_in_place_only_when_asked(backend):
    """out=x is the documented in-place form: x changes, nothing else does."""
    x, m = randn(3, 6, seed=0), randn(3, 6, seed=1)
    c = step_coefs(out_x=0.5, out_d=0.5)
    snap = snapshot(m, c)
    before = x.clone()
    res = fastdiff.fused_step(x, m, c, out=x, backend=backend)
    assert res.data_ptr() == x.data_ptr() and not torch.equal(x, before)
    assert_unchanged(snap)
    g = randn(3, 6, seed=2)
    snap = snapshot(g)
    res = fastdiff.langevin_step(x, g, 0.1, seed=0, out=x, backend=backend)
    assert res.data_ptr() == x.data_ptr()
    assert_unchanged(snap)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_sde", "dpmpp_3m_sde",
                                     "unipc", "lms", "ddim"])
def test_sample_leaves_inputs_alone(sampler):
    x = fastdiff.initial_noise((4, 2), seed=0) * 10.0
    sig = SIG.clone()
    rid = torch.arange(4) + 10
    seen = []

    def den(v, s):
        seen.append(v)  # the tensor the model sees may be the sampler's own buffer -- never the user's x
        return GMM.denoiser(v, s)

    _call_unchanged(fastdiff.sample, den, x, sig, sampler=sampler, seed=0, row_ids=rid)
    assert all(v.data_ptr() != x.data_ptr() or torch.equal(v, x) for v in seen)


def test_sample_wrappers_leave_cond_alone():
    sched = fastdiff.DiscreteVPSchedule()
    cond, uncond = randn(4, 2, seed=1), randn(4, 2, seed=2)

    def net(x_in, t, context=None):
        return torch.tanh(x_in + context)

    den = fastdiff.CFGDenoiser(fastdiff.EpsDenoiser(net, sched), {"context": cond}, {"context": uncond}, 3.0)
    x = fastdiff.initial_noise((4, 2), seed=0) * float(SIG[0])
    _call_unchanged(fastdiff.sample, den, x, SIG, sampler="dpmpp_2m", seed=0)
    _call_unchanged(den, x, SIG[:1].float())


def test_mcmc_leave_inputs_alone():
    x = fastdiff.initial_noise((5, 2), seed=0) * 2.0
    step = torch.full((5,), 0.05)
    rid = torch.arange(5)
    _call_unchanged(fastdiff.langevin, GMM.grad_log_prob, x, step, 10, seed=0, row_ids=rid)
    _call_unchanged(fastdiff.mala, GMM.log_prob, x, step, 10, seed=0, row_ids=rid, adapt_steps=5)
    _call_unchanged(fastdiff.mala, GMM.log_prob, x, 0.05, 10, seed=0, grad_log_prob=GMM.grad_log_prob)
    sig = torch.tensor([2.0, 1.0, 0.5])
    _call_unchanged(fastdiff.annealed_langevin, lambda v, s: GMM.grad_log_prob(v, s), x, sig, n_steps_each=3, seed=0)


@pytest.mark.parametrize("cls", COMPAT_SCHEDULERS, ids=sid)
def test_compat_step_leaves_inputs_alone(cls):
    s = cls()
    s.set_timesteps(4)
    x = randn(2, 3, 4, seed=0)
    for t in s.timesteps:
        m = eps_model(x, t)
        ts = t.clone()
        snap = snapshot(m, x, ts)
        x = s.step(m, ts, x).prev_sample
        assert_unchanged(snap)


def test_compat_add_noise_and_variance_noise_leave_inputs_alone():
    s = fd.DDIMScheduler()
    s.set_timesteps(4)
    x0, nz, t = randn(2, 3, seed=0), randn(2, 3, seed=1), torch.tensor([10, 500])
    _call_unchanged(s.add_noise, x0, nz, t)
    vn, m, x = randn(2, 3, seed=2), randn(2, 3, seed=3), randn(2, 3, seed=4)
    _call_unchanged(s.step, m, s.timesteps[0], x, eta=1.0, variance_noise=vn)


# ------------------------------------------------------------------------------------------ memory
def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20
    except OSError:  # pragma: no cover - non-Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns about deprecations
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_no_memory_growth_over_10000_steps():
    """10,000 fused steps and 10,000 Langevin steps (torch path, in-kernel noise, a distinct stream per step, as the
    samplers do): no live tensor accumulates and RSS grows by less than 16 MB (a leak of even one 32-element tensor
    per step would be 10,000 live tensors; the RSS bound catches leaks outside Python objects, e.g. caches keyed by
    stream)."""
    x, m = randn(4, 8, seed=0), randn(4, 8, seed=1)
    c = step_coefs(in_x=[1.0, 0.9], in_m=[-0.1, -0.2], out_x=0.99, out_d=0.01, out_noise=1e-3, aux_d=1.0)
    hist = randn(4, 8, seed=2)

    def loop(n, start):
        nonlocal x, hist
        for i in range(start, start + n):
            x, hist = fastdiff.fused_step(x, m, c, history=[hist], coef_row=i % 2, seed=1, stream=i, write_aux=True)
            x = fastdiff.langevin_step(x, -x, 1e-3, seed=2, stream=i, out=x)

    loop(200, 0)      # warm-up: lazy imports, allocator pools
    gc.collect()
    n0, r0 = _live_tensors(), _rss_mb()
    loop(10_000, 200)
    gc.collect()
    n1, r1 = _live_tensors(), _rss_mb()
    assert torch.isfinite(x).all()
    assert n1 - n0 <= 5, f"live tensors grew from {n0} to {n1}"
    assert r1 - r0 < 16.0, f"RSS grew by {r1 - r0:.1f} MB over 10,000 steps"


def test_no_memory_growth_mcmc_and_sampler_runs():
    """Repeated langevin/mala/sample runs: per-run objects (tables, contexts, adapters) are freed."""
    x = fastdiff.initial_noise((8, 2), seed=0)

    def runs(k):
        for i in range(k):
            fastdiff.langevin(GMM.grad_log_prob, x, 0.05, 20, seed=i)
            fastdiff.mala(GMM.log_prob, x, 0.05, 20, seed=i, adapt_steps=10)
            fastdiff.sample(GMM.denoiser, x * 10.0, SIG, sampler="dpmpp_2m_sde", seed=i)

    runs(3)
    gc.collect()
    n0, r0 = _live_tensors(), _rss_mb()
    runs(15)
    gc.collect()
    n1, r1 = _live_tensors(), _rss_mb()
    assert n1 - n0 <= 5, f"live tensors grew from {n0} to {n1}"
    assert r1 - r0 < 16.0, f"RSS grew by {r1 - r0:.1f} MB"
    assert math.isfinite(r1)
