"""Property-based extension of tests/ops/test_fuzz_ops.py: the kernels' int64-offset variant (IDX64=True, forced on
small tensors) must give the same bits as the int32 variant on random shapes, per-row coefficients, row ids and
guidance. Examples: FASTDIFF_FUZZ_EXAMPLES (default 10 here); the slow variant runs 20x more with --runslow."""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastdiff
import fastdiff.ops.langevin.fused as lan_fused
import fastdiff.ops.step.fused as step_fused
from reliability_cases import same_bits

EXAMPLES = int(os.environ.get("FASTDIFF_FUZZ_EXAMPLES", "10"))


def _fuzz(n):
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _check_idx64(batch, cols, guidance, per_row, big_rows, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cols, generator=g).to(dtype)
    m = torch.randn((2 * batch if guidance else batch), cols, generator=g).to(dtype)
    c = torch.rand(3, 15, generator=g) - 0.5
    rid = torch.randint(0, 2 ** 62 if big_rows else 64, (batch,), generator=g)
    kw = dict(guidance=guidance, seed=seed, stream=seed % 5, row_ids=rid, write_aux=True, backend="triton",
              coef_index=torch.randint(0, 3, (batch,), generator=g) if per_row else None, coef_row=2)
    step = torch.rand(batch, generator=g) + 0.01
    ref = (*fastdiff.fused_step(x, m[:batch] if not guidance else m, c, **kw),
           fastdiff.langevin_step(x, x, step, seed=seed, row_ids=rid, backend="triton"))
    orig_s, orig_l = step_fused.idx64, lan_fused.idx64
    step_fused.idx64 = lan_fused.idx64 = lambda total, extra=0: True
    try:
        got = (*fastdiff.fused_step(x, m[:batch] if not guidance else m, c, **kw),
               fastdiff.langevin_step(x, x, step, seed=seed, row_ids=rid, backend="triton"))
    finally:
        step_fused.idx64, lan_fused.idx64 = orig_s, orig_l
    for a, b in zip(got, ref):
        assert same_bits(a, b)


ARGS = dict(batch=st.integers(1, 5), cols=st.integers(1, 37), guidance=st.booleans(), per_row=st.booleans(),
            big_rows=st.booleans(), seed=st.integers(0, 2 ** 20),
            dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))


@given(**ARGS)
@_fuzz(EXAMPLES)
def test_idx64_variant_bit_identical(batch, cols, guidance, per_row, big_rows, seed, dtype):
    _check_idx64(batch, cols, guidance, per_row, big_rows, seed, dtype)


@pytest.mark.slow
@given(**ARGS)
@_fuzz(20 * EXAMPLES)
def test_idx64_variant_bit_identical_long(batch, cols, guidance, per_row, big_rows, seed, dtype):
    _check_idx64(batch, cols, guidance, per_row, big_rows, seed, dtype)
