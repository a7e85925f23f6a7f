"""Property-based tests: every fused op against its reference on random shapes, strides, dtypes and aliasing.

Examples per test: FASTDIFF_FUZZ_EXAMPLES (default 25, sized for CI); `--runslow` style larger runs:
FASTDIFF_FUZZ_EXAMPLES=500 python -m pytest tests/ops/test_fuzz_ops.py
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastdiff
from fastdiff.ops.step import NUM_COEFS, fused_step
from tolerance import assert_close_to_reference, poisoned_like

EXAMPLES = int(os.environ.get("FASTDIFF_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])


@st.composite
def shapes(draw):
    """Batch 0-6, trailing dims with sizes 0-23 (empty, 1-element, odd, non-power-of-two)."""
    batch = draw(st.integers(0, 6))
    rest = draw(st.lists(st.integers(0, 23), min_size=0, max_size=3))
    return (batch, *rest)


def make(shape, dtype, seed, layout):
    """A tensor with the given logical shape: contiguous, a transposed view or a strided slice."""
    g = torch.Generator().manual_seed(seed)
    if layout == "transposed" and len(shape) >= 2:
        base = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=g).to(dtype)
        return base.transpose(-1, -2)
    if layout == "sliced" and len(shape) >= 1:
        base = torch.randn(*shape[:-1], 2 * shape[-1], generator=g).to(dtype) if shape else None
        return base[..., ::2]
    return torch.randn(*shape, generator=g).to(dtype)


@given(shape=shapes(), dtype=DTYPES, layout=st.sampled_from(["contiguous", "transposed", "sliced"]),
       n_hist=st.integers(0, 3), guidance=st.booleans(), per_row=st.booleans(), noise=st.booleans(),
       scale=st.sampled_from([1e-3, 1.0, 30.0]), seed=st.integers(0, 2**20))
@FUZZ
def test_step_matches_reference(shape, dtype, layout, n_hist, guidance, per_row, noise, scale, seed):
    batch = shape[0]
    x = make(shape, dtype, seed, layout)
    m = make(((2 * batch,) + shape[1:]) if guidance else shape, dtype, seed + 1, layout)
    hist = [make(shape, dtype, seed + 2 + k, layout) for k in range(n_hist)]
    g = torch.Generator().manual_seed(seed)
    coefs = (torch.rand(4, NUM_COEFS, generator=g) * 2 - 1) * scale
    kw = dict(history=hist, guidance=guidance, seed=seed if noise else None, stream=seed % 7,
              coef_index=torch.randint(0, 4, (batch,), generator=g) if per_row else None, coef_row=1)
    out = poisoned_like(torch.empty(shape, dtype=dtype))
    aux = poisoned_like(out)
    fused_step(x, m, coefs, out=out, aux_out=aux, backend="triton", **kw)
    ref = fused_step(x, m, coefs, write_aux=True, backend="reference", **kw)
    kw64 = dict(kw, history=[h.double() for h in hist])
    ref64 = fused_step(x.double(), m.double(), coefs.double(), write_aux=True, backend="reference", **kw64)
    assert_close_to_reference("out", out, ref[0], ref64[0])
    assert_close_to_reference("aux", aux, ref[1], ref64[1])


@given(shape=shapes(), dtype=DTYPES, layout=st.sampled_from(["contiguous", "transposed", "sliced"]),
       target=st.sampled_from(["epsilon", "v_prediction", "sample"]), noise=st.booleans(),
       seed=st.integers(0, 2**20))
@FUZZ
def test_encode_matches_reference(shape, dtype, layout, target, noise, seed):
    sched = fastdiff.DiscreteVPSchedule(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0 = make(shape, dtype, seed, layout)
    z = make(shape, dtype, seed + 1, layout) if noise else None
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 1000, (shape[0],), generator=g)
    kw = dict(target=target, seed=None if noise else seed)
    xt, tg = fastdiff.add_noise_with_target(x0, t, sched, z, backend="triton", **kw)
    rx, rt = fastdiff.add_noise_with_target(x0, t, sched, z, backend="reference", **kw)
    z64 = None if z is None else z.double()
    ex, et = fastdiff.add_noise_with_target(x0.double(), t, sched, z64, backend="reference", **kw)
    assert_close_to_reference("x_t", xt, rx, ex)
    assert_close_to_reference("target", tg, rt, et)


@given(shape=shapes(), dtype=DTYPES, layout=st.sampled_from(["contiguous", "transposed"]),
       per_chain=st.booleans(), in_place=st.booleans(), seed=st.integers(0, 2**20))
@FUZZ
def test_langevin_matches_reference(shape, dtype, layout, per_chain, in_place, seed):
    x = make(shape, dtype, seed, layout)
    grad = make(shape, dtype, seed + 1, layout)
    g = torch.Generator().manual_seed(seed)
    step = torch.rand(shape[0], generator=g) + 1e-3 if per_chain else 0.01
    ref = fastdiff.langevin_step(x, grad, step, seed=seed, backend="reference")
    ref64 = fastdiff.langevin_step(x.double(), grad.double(), step.double() if per_chain else step, seed=seed,
                                   backend="reference")
    if in_place:
        buf = x.contiguous().clone()
        out = fastdiff.langevin_step(buf, grad, step, seed=seed, out=buf, backend="triton")
        assert out.data_ptr() == buf.data_ptr()
    else:
        out = fastdiff.langevin_step(x, grad, step, seed=seed, out=poisoned_like(torch.empty(shape, dtype=dtype)),
                                     backend="triton")
    assert_close_to_reference("langevin", out, ref, ref64)
