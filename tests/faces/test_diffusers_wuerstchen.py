"""DDPMWuerstchenScheduler against diffusers' class (no diffusers test file covers it): trajectories bounded like
test_diffusers_compat's against diffusers' own code in float64, per-sample timestep tensors as Wuerstchen's
pipelines pass them, copies, config round trip."""
import copy
import pickle
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers parity tests need the 'compat' extra")

import fastdiff.diffusers as fdd  # noqa: E402
from peer_float64 import assert_parity, float64_scheduler  # noqa: E402

NAME = "DDPMWuerstchenScheduler"


def _model(x, t):
    wide = x if x.dtype == torch.float64 else x.float()
    return (torch.sin(wide * 1.3 + float(t) * 3.0) * 0.9 + 0.05 * wide).to(x.dtype)


def _steps(s, n, ref_ts, dtype=torch.float32, forced=None, seed=0, shape=(3, 4, 5, 3)):
    s.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    out = []
    for i, t in enumerate(s.timesteps[:-1]):
        if forced is not None:
            x = forced[i]["x"].to(dtype)
            g = torch.Generator().manual_seed(seed + 1 + i)
        ratio = t.expand(shape[0]).to(dtype)
        out.append({"x": x, "prev": s.step(_model(x, ref_ts[i]), ratio, x, generator=g).prev_sample})
        x = out[-1]["prev"]
    return out


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("cfg", [{}, {"scaler": 1.5}, {"scaler": 0.7, "s": 0.01}], ids=str)
def test_wuerstchen_parity_with_diffusers(cfg):
    n = 8
    ours, ref = fdd.DDPMWuerstchenScheduler(**cfg), diffusers.DDPMWuerstchenScheduler(**cfg)
    ref.set_timesteps(n)
    ours.set_timesteps(n)
    assert torch.equal(ours.timesteps, ref.timesteps)
    ref_ts = ref.timesteps.clone()
    exact = float64_scheduler(diffusers, NAME, cfg)
    exact_steps = _steps(exact, n, ref_ts, torch.float64)
    exact_forced = _steps(exact, n, ref_ts, torch.float64, forced=exact_steps)
    a_f, b_f = _steps(ours, n, ref_ts, forced=exact_forced), _steps(ref, n, ref_ts, forced=exact_forced)
    for i, (a, b, c) in enumerate(zip(a_f, b_f, exact_forced)):
        assert_parity(f"{NAME} step {i} prev_sample", a["prev"], b["prev"], c["prev"], 1)
    a, b = _steps(ours, n, ref_ts), _steps(ref, n, ref_ts)
    assert_parity(f"{NAME} prev_sample", a[-1]["prev"], b[-1]["prev"], exact_steps[-1]["prev"], n)
    x0, noise = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    t = torch.tensor([0.9, 0.5, 0.1])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t))
    torch.testing.assert_close(ours.previous_timestep(ref_ts[2].expand(3)), ref.previous_timestep(ref_ts[2].expand(3)))


def test_one_fused_step_per_call():
    from fastdiff.diffusers import _base

    calls, real = [], _base.fused_step
    s = fdd.DDPMWuerstchenScheduler()
    s.backend = "reference"
    s.set_timesteps(5)
    x = torch.randn(2, 3, 4)
    try:
        _base.fused_step = lambda *a, **k: calls.append(1) or real(*a, **k)
        for t in s.timesteps[:-1]:
            x = s.step(torch.sin(x), t.expand(2), x).prev_sample
    finally:
        _base.fused_step = real
    assert len(calls) == 5 and torch.isfinite(x).all()


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_taken_mid_run_steps_as_the_original(how):
    s = fdd.DDPMWuerstchenScheduler()
    s.set_timesteps(6)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    ts = list(s.timesteps[:-1])
    for t in ts[:2]:
        x = s.step(torch.sin(x), t.expand(2), x, generator=torch.Generator().manual_seed(3)).prev_sample
    c = copy.deepcopy(s) if how == "deepcopy" else pickle.loads(pickle.dumps(s))
    a, b = x, x
    for t in ts[2:]:
        a = s.step(torch.sin(a), t.expand(2), a, generator=torch.Generator().manual_seed(4)).prev_sample
        b = c.step(torch.sin(b), t.expand(2), b, generator=torch.Generator().manual_seed(4)).prev_sample
    assert torch.equal(a, b)


def test_config_round_trip(tmp_path):
    ours = fdd.DDPMWuerstchenScheduler(scaler=1.25, s=0.01)
    ours.save_pretrained(tmp_path)
    theirs = diffusers.DDPMWuerstchenScheduler.from_pretrained(tmp_path)
    back = fdd.DDPMWuerstchenScheduler.from_config(theirs.config)
    assert theirs.config.scaler == back.config.scaler == 1.25 and back.config.s == 0.01


def test_bad_input():
    with pytest.raises(TypeError, match="scaler"):
        fdd.DDPMWuerstchenScheduler(scaler="x")
    s = fdd.DDPMWuerstchenScheduler()
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(0)
