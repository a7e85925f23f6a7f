"""The fused encoding op (forward noising + training target) against its references."""
import math

import pytest
import torch

import fastdiff
from fastdiff.ops.encode import TARGETS, fused_encode
from tolerance import assert_close_to_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SCHEDULES = {
    "linear": lambda: fastdiff.DiscreteVPSchedule(),
    "scaled_linear_ztsnr": lambda: fastdiff.DiscreteVPSchedule(beta_schedule="scaled_linear", beta_start=0.00085,
                                                               beta_end=0.012, rescale_betas_zero_snr=True),
    "cosine": lambda: fastdiff.DiscreteVPSchedule(beta_schedule="squaredcos_cap_v2"),
    "continuous_vp": lambda: fastdiff.ContinuousVPSchedule(),
    "ve": lambda: fastdiff.VESchedule(),
    "flow": lambda: fastdiff.FlowMatchingSchedule(shift=3.0),
}


def timesteps_for(sched, batch, g):
    if hasattr(sched, "alphas_cumprod"):
        return torch.randint(0, sched.num_train_timesteps, (batch,), generator=g)
    return torch.rand(batch, generator=g, dtype=torch.float64)


def expected64(sched, x0, t, noise, target):
    """Literal formulas in float64."""
    if hasattr(sched, "alphas_cumprod"):
        abar = sched.alphas_cumprod[t]
        a, s = abar.sqrt(), (1 - abar).sqrt()
    else:
        a, s = sched.alpha_sigma(t)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    a, s = a.reshape(shape), s.reshape(shape)
    x0, noise = x0.double(), noise.double()
    tgt = {"epsilon": noise, "sample": x0, "v_prediction": a * noise - s * x0, "flow": noise - x0}[target]
    return a * x0 + s * noise, tgt


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sched_name", list(SCHEDULES))
@pytest.mark.parametrize("target", TARGETS)
def test_kernel_matches_literal_formula(dtype, sched_name, target):
    g = torch.Generator().manual_seed(hash((sched_name, target)) % 1000)
    sched = SCHEDULES[sched_name]()
    shape = (5, 3, 7)
    x0 = torch.randn(shape, generator=g).to(dtype)
    t = timesteps_for(sched, shape[0], g)
    noise = torch.randn(shape, generator=g).to(dtype)
    x_t, tgt = fastdiff.add_noise_with_target(x0, t, sched, noise, target=target, backend="triton")
    ref_x, ref_t = fastdiff.add_noise_with_target(x0, t, sched, noise, target=target, backend="reference")
    exp_x, exp_t = expected64(sched, x0, t, noise, target)
    assert x_t.dtype == dtype and tgt.dtype == dtype
    assert_close_to_reference("x_t", x_t, ref_x, exp_x)
    assert_close_to_reference("target", tgt, ref_t, exp_t)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_in_kernel_noise_is_the_philox_stream_and_is_returned(backend):
    sched = fastdiff.DiscreteVPSchedule()
    x0 = torch.randn(4, 9)
    t = torch.tensor([0, 100, 500, 999])
    x_t, eps, z = fastdiff.add_noise_with_target(x0, t, sched, seed=3, stream=2, return_noise=True, backend=backend)
    ref = fastdiff.philox_normal(x0.shape, seed=3, stream=2)
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps, ref, rtol=1e-5, atol=1e-5)
    exp_x, _ = expected64(sched, x0, t, ref, "epsilon")
    torch.testing.assert_close(x_t.double(), exp_x, rtol=1e-5, atol=1e-5)


def test_add_noise_rows_gather_their_own_timesteps():
    sched = fastdiff.DiscreteVPSchedule()
    x0 = torch.ones(3, 4)
    noise = torch.zeros(3, 4)
    out = fastdiff.add_noise(x0, torch.tensor([0, 500, 999]), sched, noise, backend="triton")
    expected = sched.alphas_cumprod[[0, 500, 999]].sqrt().float()
    torch.testing.assert_close(out[:, 0], expected)
    assert torch.all(out == out[:, :1])


def test_scalar_timestep_broadcasts():
    sched = fastdiff.DiscreteVPSchedule()
    x0, noise = torch.randn(3, 4), torch.randn(3, 4)
    a = fastdiff.add_noise(x0, 250, sched, noise)
    b = fastdiff.add_noise(x0, torch.full((3,), 250), sched, noise)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_zero_terminal_snr_final_step_is_pure_noise():
    sched = fastdiff.DiscreteVPSchedule(rescale_betas_zero_snr=True)
    x0, noise = torch.randn(2, 6), torch.randn(2, 6)
    out, v = fastdiff.add_noise_with_target(x0, 999, sched, noise, target="v", backend="triton")
    torch.testing.assert_close(out, noise, rtol=0, atol=1e-6)
    torch.testing.assert_close(v, -x0, rtol=0, atol=1e-6)  # v = a*eps - s*x0 with a=0, s=1


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_encoder_transition_is_the_markov_step(backend):
    sched = fastdiff.DiscreteVPSchedule()
    z, noise = torch.randn(3, 5), torch.randn(3, 5)
    t = torch.tensor([1, 10, 999])
    out = fastdiff.encoder_transition(z, t, sched, noise, backend=backend)
    beta = sched.betas[t].reshape(-1, 1)
    expected = (1 - beta).sqrt() * z.double() + beta.sqrt() * noise.double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_markov_chain_composes_to_the_marginal():
    """Running q(z_t|z_{t-1}) t times from x0 has the law of q(z_t|x0): matched moments on 20k rows."""
    sched = fastdiff.DiscreteVPSchedule()
    n, t_end = 20000, 300
    x0 = torch.full((n, 1), 1.5)
    z = x0.clone()
    for t in range(t_end + 1):
        z = fastdiff.encoder_transition(z, t, sched, seed=1, stream=t)
    abar = sched.alphas_cumprod[t_end].item()
    assert abs(z.mean().item() - math.sqrt(abar) * 1.5) < 5 * math.sqrt((1 - abar) / n)
    assert abs(z.var().item() - (1 - abar)) < 5 * (1 - abar) * math.sqrt(2 / n)


def test_batch_split_invariance_of_in_kernel_noise():
    sched = fastdiff.FlowMatchingSchedule()
    x0, t = torch.randn(6, 10), torch.rand(6, dtype=torch.float64)
    whole = fastdiff.add_noise(x0, t, sched, seed=8, backend="triton")
    parts = [fastdiff.add_noise(x0[i:i + 3], t[i:i + 3], sched, seed=8, row_ids=torch.arange(i, i + 3),
                                backend="triton") for i in (0, 3)]
    assert torch.equal(torch.cat(parts), whole)


def test_without_seed_or_noise_uses_the_global_generator():
    sched = fastdiff.DiscreteVPSchedule()
    x0 = torch.randn(2, 3)
    torch.manual_seed(0)
    a = fastdiff.add_noise(x0, 10, sched)
    torch.manual_seed(0)
    b = fastdiff.add_noise(x0, 10, sched)
    c = fastdiff.add_noise(x0, 10, sched)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_out_in_place():
    sched = fastdiff.DiscreteVPSchedule()
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    expected = fastdiff.add_noise(x0, 5, sched, noise, backend="triton")
    buf = x0.clone()
    res = fastdiff.add_noise(buf, 5, sched, noise, out=buf, backend="triton")
    assert res.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(res, expected, rtol=0, atol=0)


def test_device_table_is_built_once():
    from fastdiff.ops.encode import _discrete_table

    sched = fastdiff.DiscreteVPSchedule()
    t1 = _discrete_table(sched, "epsilon", torch.device("cpu"))
    assert _discrete_table(sched, "epsilon", torch.device("cpu")) is t1
    assert t1.shape == (1000, 4) and t1.dtype == torch.float32


BAD = [
    ("unknown target", lambda s, x: fastdiff.add_noise_with_target(x, 1, s, target="score"), ValueError, "target"),
    ("float timesteps on discrete", lambda s, x: fastdiff.add_noise(x, torch.rand(2), s, seed=0), TypeError,
     "integer"),
    ("timesteps shape", lambda s, x: fastdiff.add_noise(x, torch.zeros(3, dtype=torch.long), s, seed=0), ValueError,
     "timesteps must have shape"),
    ("timestep out of range", lambda s, x: fastdiff.add_noise(x, 1000, s, seed=0), ValueError, r"\[0, 1000\)"),
    ("negative timestep", lambda s, x: fastdiff.add_noise(x, -1, s, seed=0), ValueError, r"\[0, 1000\)"),
    ("not a schedule", lambda s, x: fastdiff.add_noise(x, 1, "linear", seed=0), TypeError, "schedule must be"),
    ("noise shape", lambda s, x: fastdiff.add_noise(x, 1, s, torch.randn(2, 4)), ValueError, "noise must have"),
    ("seed and noise", lambda s, x: fastdiff.add_noise(x, 1, s, torch.randn(2, 3), seed=1), ValueError, "either"),
    ("integer x0", lambda s, x: fastdiff.add_noise(x.long(), 1, s, seed=0), TypeError, "x0 must be a float"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call(fastdiff.DiscreteVPSchedule(), torch.randn(2, 3))
