"""DPMSolverSDEScheduler's noise rule: diffusers' Brownian path (torchsde) from ``noise_sampler_seed``, the seed
drawn from torch's global generator at the first step only when none is configured; the in-kernel Philox noise
when the Brownian noise is switched off (or torchsde is missing)."""
import copy
import pickle

import pytest
import torch

import fastdiff.diffusers as fdd

pytest.importorskip("torchsde", reason="the Brownian noise needs torchsde")


def _run(s, n=5, shape=(3, 2, 5, 5), seed=0):
    s.set_timesteps(n)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * float(s.init_noise_sigma)
    for t in s.timesteps:
        x = s.step(torch.cos(s.scale_model_input(x, t) * 1.1), t, x).prev_sample
    return x


def test_global_generator_is_drawn_once_at_the_first_step_only_without_a_seed():
    torch.manual_seed(11)
    state = torch.get_rng_state()
    s = fdd.DPMSolverSDEScheduler(noise_sampler_seed=5)
    _run(s)
    assert torch.equal(torch.get_rng_state(), state), "a configured seed must leave the global generator alone"
    s = fdd.DPMSolverSDEScheduler()
    s.set_timesteps(5)
    assert torch.equal(torch.get_rng_state(), state), "set_timesteps drew from the global generator"
    torch.randint(0, 2**63 - 1, [])  # diffusers' one draw at the first step
    expected = torch.get_rng_state()
    torch.set_rng_state(state)
    _run(s)
    assert torch.equal(torch.get_rng_state(), expected)


@pytest.mark.parametrize("brownian", [True, False])
def test_seeded_runs_repeat_and_seeds_differ(brownian):
    outs = []
    for seed in (1, 1, 2):
        s = fdd.DPMSolverSDEScheduler(noise_sampler_seed=seed)
        s.use_brownian_noise = brownian
        outs.append(_run(s))
    assert torch.equal(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    assert torch.isfinite(outs[0]).all()


def test_philox_noise_has_the_brownian_noise_scale():
    """The fallback noise is standard normal per stage as the Brownian increments are: a run's spread agrees."""
    runs = {}
    for brownian in (True, False):
        s = fdd.DPMSolverSDEScheduler(noise_sampler_seed=3, beta_schedule="scaled_linear")
        s.use_brownian_noise = brownian
        s.set_timesteps(6)
        x = torch.zeros(1, 4, 64, 64)
        t = s.timesteps[0]
        runs[brownian] = s.step(torch.zeros_like(x), t, x).prev_sample  # x = 0, eps = 0: the noise term alone
    ratio = float(runs[False].std() / runs[True].std())
    assert 0.97 < ratio < 1.03 and not torch.allclose(runs[False], runs[True])


def test_second_stage_uses_the_first_stage_input_and_the_midpoint_scale():
    s = fdd.DPMSolverSDEScheduler(noise_sampler_seed=0)
    s.set_timesteps(4)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * float(s.init_noise_sigma)
    t0, t1 = s.timesteps[0], s.timesteps[1]
    assert s.state_in_first_order and s.sample is None and s.mid_point_sigma is None
    mid = s.step(torch.sin(x), t0, x).prev_sample
    assert not s.state_in_first_order and s.sample is x
    m = float(s.mid_point_sigma)
    assert m == pytest.approx((float(s.sigmas[0]) * float(s.sigmas[1])) ** 0.5, rel=1e-6)
    torch.testing.assert_close(s.scale_model_input(mid, t1), mid / (m * m + 1) ** 0.5, rtol=1e-6, atol=0)
    s.step(torch.sin(mid), t1, mid)
    assert s.state_in_first_order


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_between_the_stages_continues_the_same_brownian_path(how):
    s = fdd.DPMSolverSDEScheduler(noise_sampler_seed=9)
    s.set_timesteps(4)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * float(s.init_noise_sigma)
    ts = list(s.timesteps)
    x = s.step(torch.sin(x), ts[0], x).prev_sample
    c = copy.deepcopy(s) if how == "deepcopy" else pickle.loads(pickle.dumps(s))
    a, b = x, x
    for t in ts[1:]:
        a = s.step(torch.sin(a), t, a).prev_sample
        b = c.step(torch.sin(b), t, b).prev_sample
    assert torch.equal(a, b)


def test_bad_seed_is_a_type_error():
    with pytest.raises(TypeError, match="noise_sampler_seed"):
        fdd.DPMSolverSDEScheduler(noise_sampler_seed=1.5)


def _sigma_up(sigma, sigma_to):  # diffusers' ancestral split with eta = 1, float64
    return min(sigma_to, (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5)


def _stage_noises(s, x):
    """Per step, the standard-normal noise ``(z1, z2)`` of its two stages, flattened, float64: each stage run with
    ``s_noise=1`` minus the same stage from a copy with ``s_noise=0``, over the stage's sigma_up."""
    ts, sig = list(s.timesteps), s.sigmas.double()
    pairs = []
    for k in range((len(ts) - 1) // 2):
        sigma, nxt = float(sig[2 * k]), float(sig[2 * k + 1])
        mid = (sigma * nxt) ** 0.5  # the log-midpoint
        z = []
        for t, to in ((ts[2 * k], mid), (ts[2 * k + 1], nxt)):
            eps = 0.1 * torch.sin(s.scale_model_input(x, t))
            clean = copy.deepcopy(s).step(eps, t, x, s_noise=0.0).prev_sample
            x_new = s.step(eps, t, x).prev_sample
            z.append(((x_new - clean).double() / _sigma_up(sigma, to)).flatten())
            x = x_new
        pairs.append((z[0], z[1], (sigma - mid) / (sigma - nxt)))
    return pairs


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.square().mean() * b.square().mean()).sqrt())


@pytest.mark.parametrize("noise", ["philox", "torchsde"])
def test_stage_noise_has_the_brownian_tree_law(noise):
    """Each stage's noise is standard normal; a step's two stages are the tree's increments over [sigma_mid, sigma]
    and [sigma_next, sigma] (time = sigma: diffusers' tree has no transform), correlated sqrt(a / b) with
    a = sigma - sigma_mid, b = sigma - sigma_next; steps are independent. torchsde's own path is held to the same
    bounds, so they are the tree's law, not a formula checked against itself.

    N = 65536 elements per stage; the bounds are 5 standard errors: mean 5/sqrt(N) = 0.020, variance
    5 sqrt(2/N) = 0.028, correlation 5 (1 - rho^2)/sqrt(N) (0.004-0.006 at this schedule's rho = 0.84, 0.81,
    0.93). They catch independent stages (rho 0), the time variable taken as log sigma (rho = sqrt(1/2) = 0.707
    at every step), a variance off by more than ~3%, and noise shared across steps."""
    s = fdd.DPMSolverSDEScheduler(noise_sampler_seed=17)
    s.set_timesteps(4)
    if noise == "philox":
        s.set_noise_seed(20261204)
    x = torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(5)) * float(s.init_noise_sigma)
    pairs = _stage_noises(s, x)
    assert (s.noise_sampler is None) == (noise == "philox")
    n = pairs[0][0].numel()
    for z1, z2, frac in pairs:
        rho = frac**0.5
        for z in (z1, z2):
            assert abs(float(z.mean())) < 5 / n**0.5 and abs(float(z.var()) - 1) < 5 * (2 / n) ** 0.5
        assert abs(_corr(z1, z2) - rho) < 5 * (1 - rho**2) / n**0.5, (_corr(z1, z2), rho)
        assert abs(rho - 0.5**0.5) > 0.05  # the schedule tells sigma time from log-sigma time
    for (a1, a2, _), (b1, b2, _) in zip(pairs, pairs[1:]):
        for u, v in ((a1, b1), (a2, b1), (a2, b2)):
            assert abs(_corr(u, v)) < 5 / n**0.5


def test_set_noise_seed_takes_philox_noise_over_the_configured_tree():
    """``set_noise_seed`` keys the Philox noise (no tree is built, no global draw), the same for any
    ``noise_sampler_seed``; without it the configured seed's Brownian path is back."""
    state = torch.get_rng_state()
    outs = []
    for cfg_seed in (1, 2):
        s = fdd.DPMSolverSDEScheduler(noise_sampler_seed=cfg_seed)
        s.set_noise_seed(8)
        outs.append(_run(s))
        assert s.noise_sampler is None
    assert torch.equal(outs[0], outs[1]) and torch.equal(torch.get_rng_state(), state)
    s.set_noise_seed(None)
    tree = _run(s)
    assert s.noise_sampler is not None and torch.equal(tree, _run(fdd.DPMSolverSDEScheduler(noise_sampler_seed=2)))
    assert not torch.allclose(tree, outs[0])


def test_philox_second_stage_is_two_passes_and_the_triton_kernel_draws_the_same_noise(monkeypatch):
    """Under ``set_noise_seed`` a first stage is one fused pass and a second stage two (its own, then the shared
    noise regenerated from the first stage's stream); the Triton kernel (interpreter on CPU) gives the PyTorch
    path's numbers, so both draw the same Philox noise for the regenerated stream."""
    from fastdiff.diffusers import _base

    calls = []
    real = _base.fused_step
    monkeypatch.setattr(_base, "fused_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = []
    for backend in ("torch", "triton"):
        s = fdd.DPMSolverSDEScheduler()
        s.backend = backend
        s.set_timesteps(3)
        s.set_noise_seed(6)
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * float(s.init_noise_sigma)
        per_call = []
        for t in list(s.timesteps)[:4]:
            before = len(calls)
            x = s.step(torch.cos(s.scale_model_input(x, t)), t, x).prev_sample
            per_call.append(len(calls) - before)
        assert per_call == [1, 2, 1, 2]
        res.append(x)
    torch.testing.assert_close(res[1], res[0], rtol=1e-4, atol=2e-5 * max(1.0, float(res[0].abs().max())))
