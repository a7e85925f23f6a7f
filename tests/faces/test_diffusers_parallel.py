"""``batch_step_no_noise`` of DDIMParallelScheduler / DDPMParallelScheduler: a batch whose samples sit at different
timesteps, advanced in one fused launch (a per-sample row of a per-timestep table), against diffusers bounded by
its own float64 run (``peer_float64``)."""
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers parity tests need the 'compat' extra")

import fastdiff.diffusers as fdd  # noqa: E402
from fastdiff.diffusers import _base  # noqa: E402
from peer_float64 import assert_parity, float64_scheduler  # noqa: E402

_THR = {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}


def _model(x, t):
    wide = x if x.dtype == torch.float64 else x.float()
    tt = t.to(wide.dtype).reshape(-1, *(1,) * (x.dim() - 1))
    return (torch.sin(wide * 1.2 + tt / 200.0) * 0.9 + 0.05 * wide).to(x.dtype)


def _batch(sched, n, picks, kw, dtype=torch.float32, steps_set=True):
    if steps_set:
        sched.set_timesteps(n)
        ts = sched.timesteps[picks]
    else:
        ts = torch.tensor(picks)
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(len(picks), 3, 5, 7, generator=g) * 1.3).to(dtype)
    return sched.batch_step_no_noise(_model(x, ts), ts, x, **kw)


CASES = [
    ("DDIMParallelScheduler", {}, {}),
    ("DDIMParallelScheduler", {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}, {}),
    ("DDIMParallelScheduler", {"prediction_type": "v_prediction", "beta_schedule": "scaled_linear",
                               "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing"}, {}),
    ("DDIMParallelScheduler", {"prediction_type": "sample"}, {"use_clipped_model_output": True}),
    ("DDIMParallelScheduler", _THR, {}),
    ("DDPMParallelScheduler", {}, {}),
    ("DDPMParallelScheduler", {"prediction_type": "v_prediction", "clip_sample": False,
                               "beta_schedule": "squaredcos_cap_v2"}, {}),
    ("DDPMParallelScheduler", {"prediction_type": "sample", "variance_type": "fixed_large"}, {}),
    ("DDPMParallelScheduler", {**_THR, "prediction_type": "v_prediction"}, {}),
]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name,cfg,kw", CASES)
def test_batch_step_no_noise_matches_diffusers(name, cfg, kw):
    picks = [0, 3, 3, 8, 9]  # repeated and last timesteps (prev below 0) in one batch
    ours = _batch(getattr(fdd, name)(**cfg), 10, picks, kw)
    peer = _batch(getattr(diffusers, name)(**cfg), 10, picks, kw)
    exact = _batch(float64_scheduler(diffusers, name, cfg), 10, picks, kw, dtype=torch.float64)
    assert_parity(f"{name} batch_step_no_noise", ours, peer, exact, 1)


def test_ddpm_batch_before_set_timesteps_and_learned_variance():
    """Before set_timesteps diffusers' DDPM batch step goes one training timestep back; a learned-variance model
    output (twice the channels) is split as in step."""
    for cfg, channels in (({}, 3), ({"variance_type": "learned_range"}, 6)):
        outs = []
        for mod in (fdd, diffusers):
            s = mod.DDPMParallelScheduler(**cfg)
            x = torch.linspace(-2, 2, 4 * 3 * 15).reshape(4, 3, 15)
            t = torch.tensor([999, 500, 1, 0])
            m = torch.cat([_model(x, t), torch.tanh(x)], dim=1)[:, :channels]
            outs.append(s.batch_step_no_noise(m, t, x))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["DDIMParallelScheduler", "DDPMParallelScheduler"])
def test_batch_is_one_fused_launch_with_per_sample_rows(name, monkeypatch):
    calls = []
    real = _base.fused_step

    def counting(*args, **kwargs):
        calls.append(kwargs.get("coef_index"))
        return real(*args, **kwargs)

    monkeypatch.setattr(_base, "fused_step", counting)
    s = getattr(fdd, name)(**_THR) if name.startswith("DDIM") else getattr(fdd, name)()
    s.set_timesteps(10)
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    ts = s.timesteps[[9, 0, 5, 5]]
    prev = s.batch_step_no_noise(torch.sin(x), ts, x)
    assert len(calls) == 1 and torch.equal(calls[0], ts.to(torch.int64))
    # each sample as the single-step batch of its timestep: the same numbers
    for k in range(4):
        one = s.batch_step_no_noise(torch.sin(x[k:k + 1]), ts[k:k + 1], x[k:k + 1])
        torch.testing.assert_close(prev[k:k + 1], one, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["DDIMParallelScheduler", "DDPMParallelScheduler"])
def test_batch_triton_matches_torch(name):
    """The per-sample row index through the Triton kernel (interpreter on CPU) against the PyTorch path."""
    res = []
    for backend in ("torch", "triton"):
        s = getattr(fdd, name)()
        s.backend = backend
        res.append(_batch(s, 10, [0, 4, 9], {}))
    torch.testing.assert_close(res[1], res[0], rtol=1e-5, atol=1e-5)


def test_batch_bad_arguments_are_named():
    s = fdd.DDIMParallelScheduler()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.batch_step_no_noise(x, torch.tensor([1, 2]), x)
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="eta"):
        s.batch_step_no_noise(x, torch.tensor([1, 2]), x, eta=0.5)
    with pytest.raises(ValueError, match="timesteps"):
        s.batch_step_no_noise(x, torch.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="timesteps"):
        s.batch_step_no_noise(x, torch.tensor([1, 1000]), x)
    with pytest.raises(TypeError, match="timesteps"):
        s.batch_step_no_noise(x, torch.tensor([1.0, 2.0]), x)
