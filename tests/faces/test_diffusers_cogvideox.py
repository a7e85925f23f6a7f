"""CogVideoXDPMScheduler against diffusers' class: its stateless step (the caller passes the previous x0 estimate
and timestep) has its own signature, so the parity run is written out here, bounded like
test_diffusers_compat's runs against diffusers' own code in float64."""
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers parity tests need the 'compat' extra")

import fastdiff.diffusers as fdd  # noqa: E402
from peer_float64 import assert_parity, float64_scheduler  # noqa: E402

CFGS = [{}, {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
        {"beta_schedule": "linear", "set_alpha_to_one": False, "snr_shift_scale": 1.5},
        {"prediction_type": "sample", "timestep_spacing": "linspace"}]


def _model(x, t):
    wide = x if x.dtype == torch.float64 else x.float()
    return (torch.sin(wide * 1.3 + float(t) / 300.0) * 0.9 + 0.05 * wide).to(x.dtype)


def _steps(s, n, ref_ts, dtype=torch.float32, forced=None, seed=0, shape=(2, 3, 5, 3)):
    s.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    old, back, out = None, None, []
    for i, t in enumerate(s.timesteps):
        if forced is not None:
            x, old = forced[i]["x"].to(dtype), forced[i]["old"]
            old = None if old is None else old.to(dtype)
            g = torch.Generator().manual_seed(seed + 1 + i)
        prev, x0 = s.step(_model(x, ref_ts[i]), old, t, back, x, generator=g)
        out.append({"x": x, "old": old, "prev": prev, "x0": x0})
        x, old, back = prev, x0, t
    return out


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("cfg", CFGS, ids=str)
def test_cogvideox_dpm_parity_with_diffusers(cfg):
    name, n = "CogVideoXDPMScheduler", 9
    ours, ref = fdd.CogVideoXDPMScheduler(**cfg), diffusers.CogVideoXDPMScheduler(**cfg)
    assert ours.alphas_cumprod.dtype == ref.alphas_cumprod.dtype
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=1e-6, atol=0)
    ref.set_timesteps(n)
    ours.set_timesteps(n)
    assert torch.equal(ours.timesteps, ref.timesteps)
    ref_ts = ref.timesteps.clone()
    exact = float64_scheduler(diffusers, name, cfg)
    exact_steps = _steps(exact, n, ref_ts, torch.float64)
    exact_forced = _steps(exact, n, ref_ts, torch.float64, forced=exact_steps)
    a_f, b_f = _steps(ours, n, ref_ts, forced=exact_forced), _steps(ref, n, ref_ts, forced=exact_forced)
    for i, (a, b, c) in enumerate(zip(a_f, b_f, exact_forced)):
        assert_parity(f"{name} step {i} prev_sample", a["prev"], b["prev"], c["prev"], 1)
        assert_parity(f"{name} step {i} pred_original_sample", a["x0"], b["x0"], c["x0"], 1)
    a, b = _steps(ours, n, ref_ts), _steps(ref, n, ref_ts)
    assert_parity(f"{name} prev_sample", a[-1]["prev"], b[-1]["prev"], exact_steps[-1]["prev"], n)


def test_one_fused_step_and_return_types():
    from fastdiff.diffusers import _base

    calls = []
    real = _base.fused_step
    s = fdd.CogVideoXDPMScheduler()
    s.set_timesteps(4)
    x = torch.randn(1, 2, 3, 3)
    old, back = None, None
    try:
        _base.fused_step = lambda *a, **k: calls.append(1) or real(*a, **k)
        s.backend = "reference"  # through fused_step, not the folded CPU step
        for t in s.timesteps:
            out = s.step(torch.sin(x), old, t, back, x, return_dict=True)
            x, old, back = out.prev_sample, out.pred_original_sample, t
    finally:
        _base.fused_step = real
    assert len(calls) == 4 and torch.isfinite(x).all()


def test_second_order_needs_the_previous_timestep():
    s = fdd.CogVideoXDPMScheduler()
    s.set_timesteps(4)
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="timestep_back"):
        s.step(x, x, s.timesteps[1], None, x)


def test_philox_noise_without_a_generator_repeats_under_manual_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(4)
        s = fdd.CogVideoXDPMScheduler()
        s.set_timesteps(5)
        x, old, back = torch.ones(1, 2, 3, 3), None, None
        for t in s.timesteps:
            x, old = s.step(torch.sin(x), old, t, back, x)
            back = t
        outs.append(x)
    assert torch.equal(outs[0], outs[1]) and torch.isfinite(outs[0]).all()


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_cogvideox_dpm_copies_step_as_the_original(how):
    import copy
    import pickle

    s = fdd.CogVideoXDPMScheduler()
    s.set_timesteps(5)
    g = torch.Generator().manual_seed(1)
    x, old, back = torch.randn(1, 2, 3, 3, generator=g), None, None
    ts = list(s.timesteps)
    for t in ts[:2]:
        x, old = s.step(torch.sin(x), old, t, back, x, generator=g)
        back = t
    c = copy.deepcopy(s) if how == "deepcopy" else pickle.loads(pickle.dumps(s))
    a = s.step(torch.sin(x), old, ts[2], back, x, generator=torch.Generator().manual_seed(2))[0]
    b = c.step(torch.sin(x), old, ts[2], back, x, generator=torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b)
