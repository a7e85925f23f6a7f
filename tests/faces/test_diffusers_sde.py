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
