"""Philox noise: known-answer vectors, the kernel/PyTorch twin, distribution and layout invariance."""
import math

import pytest
import torch
from scipy import stats

import fastdiff
from fastdiff.ops.step import fused_step, step_coefs
from fastdiff.random import philox4x32_10, philox_normal, split_seed

# Random123's published known-answer vectors for philox4x32-10: (counter, key) -> output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    words = [torch.tensor([c], dtype=torch.int64) for c in ctr]
    out = philox4x32_10(*words, *key)
    assert tuple(int(w) for w in out) == expected


def noise_via_kernel(shape, seed, stream, row_ids=None, backend="triton"):
    """Pure noise through the step kernel: out = 1.0 * z."""
    x = torch.zeros(shape)
    return fused_step(x, x, step_coefs(out_noise=1.0), seed=seed, stream=stream, row_ids=row_ids, backend=backend)


@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 5), (1, 1), (5, 64), (2, 4), (3, 1, 12)])
def test_kernel_noise_equals_the_pytorch_stream(shape):
    z_kernel = noise_via_kernel(shape, seed=2**40 + 3, stream=9)
    z_torch = philox_normal(shape, seed=2**40 + 3, stream=9)
    # the interpreter runs the kernel's float32 operations in numpy, as the CPU twin does: the same bits
    # (on a GPU, fused multiply-adds and libdevice's log round differently: tests/suites/test_gpu.py allows 1e-5)
    assert torch.equal(z_kernel, z_torch)


def test_noise_is_invariant_to_block_size(monkeypatch):
    import fastdiff.ops.step.fused as launcher

    results = []
    for block in (16, 64, 4096):
        monkeypatch.setattr(launcher, "block_size", lambda total, device, b=block: b)
        results.append(noise_via_kernel((7, 37), seed=1, stream=0))
    assert torch.equal(results[0], results[1]) and torch.equal(results[1], results[2])


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("cols", [21, 24], ids=["per-element", "grouped-by-4"])
def test_noise_is_invariant_to_batch_split(backend, cols):
    whole = noise_via_kernel((8, cols), seed=5, stream=2, backend=backend)
    first = noise_via_kernel((4, cols), seed=5, stream=2, row_ids=torch.arange(4), backend=backend)
    second = noise_via_kernel((4, cols), seed=5, stream=2, row_ids=torch.arange(4, 8), backend=backend)
    assert torch.equal(torch.cat([first, second]), whole)
    # A permuted batch carries its rows' noise with it.
    perm = torch.tensor([3, 1, 7])
    assert torch.equal(noise_via_kernel((3, cols), seed=5, stream=2, row_ids=perm, backend=backend), whole[perm])
    torch.testing.assert_close(whole, philox_normal((8, cols), seed=5, stream=2), rtol=1e-5, atol=1e-5)


def test_rows_seeds_streams_and_columns_are_distinct():
    base = philox_normal((2, 16), seed=1, stream=0)
    assert not torch.equal(base[0], base[1])
    assert not torch.equal(base, philox_normal((2, 16), seed=2, stream=0))
    assert not torch.equal(base, philox_normal((2, 16), seed=1, stream=1))
    hi = philox_normal((1, 16), seed=1, stream=0, row_ids=torch.tensor([2**32]))
    assert not torch.equal(hi[0], base[0])  # the high word of the row id matters
    # float32 normals coincide by chance: ~0.25 pairs expected among 4096 (sum over values of
    # (density * ulp)^2); a counter collision would repeat whole groups of 4, hundreds of values here
    assert philox_normal((1, 4096), seed=0).unique().numel() >= 4096 - 3


def test_distribution_is_standard_normal():
    """200k draws: detects a mean shift of ~0.01, a variance error of ~1.6% and KS deviations of ~0.004."""
    z = philox_normal((200, 1000), seed=123, stream=4).double().flatten()
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    # fourth moment (Box-Muller tails): E z^4 = 3
    assert abs((z**4).mean().item() - 3) < 5 * math.sqrt(96 / n)


def test_noise_is_uncorrelated_across_neighbours():
    """Lag-1 correlations along columns, rows, streams and lanes of one Philox call: |rho| < 5/sqrt(n)."""
    z = philox_normal((400, 500), seed=9, stream=0).double()
    z2 = philox_normal((400, 500), seed=9, stream=1).double()
    bound = 5 / math.sqrt(z.numel())

    def corr(a, b):
        a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
        return (a @ b / (a.norm() * b.norm())).item()

    assert abs(corr(z[:, :-1], z[:, 1:])) < bound * 1.05
    assert abs(corr(z[:-1], z[1:])) < bound * 1.05
    assert abs(corr(z, z2)) < bound
    assert abs(corr(z[:, 0::4], z[:, 2::4])) < 2 * bound  # different Box-Muller pairs of one call
    # The two halves of one Box-Muller pair are uncorrelated but also independent: check |z|.
    assert abs(corr(z[:, 0::2].abs(), z[:, 1::2].abs())) < 2 * bound


def test_kernel_noise_distribution():
    """The interpreter-run kernel's noise passes the same KS test (n=20k, detects D > ~0.015)."""
    z = noise_via_kernel((20, 1000), seed=77, stream=3).double().flatten()
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3


def test_seed_validation():
    assert split_seed(2**33 + 5) == (5, 2)
    for bad in (-1, 2**63, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="seed"):
            split_seed(bad)
    with pytest.raises(ValueError, match="row_ids"):
        philox_normal((2, 3), seed=0, row_ids=torch.arange(3))
    with pytest.raises(ValueError, match="stream"):
        philox_normal((2, 3), seed=0, stream=2**32)


def test_philox_normal_dtype_device_and_shape():
    z = fastdiff.philox_normal((3, 2, 5), seed=1, dtype=torch.bfloat16)
    assert z.shape == (3, 2, 5) and z.dtype == torch.bfloat16
    torch.testing.assert_close(z.float(), philox_normal((3, 10), seed=1).reshape(3, 2, 5), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("ctr,key,expected", KAT)
@pytest.mark.parametrize("width", ["uint32", "uint64"])  # the CPU path's two state widths
def test_numpy_philox_known_answers(ctr, key, expected, width):
    import numpy as np

    from fastdiff.random import _philox_words

    c0, c1, c2, c3 = ctr
    words = np.array([[c0], [c2], [c1], [c3]], dtype=width)  # rows (c0, c2, c1, c3), as _normals_numpy lays them
    out = _philox_words(words, *key)
    assert (int(out[0, 0]), int(out[2, 0]), int(out[1, 0]), int(out[3, 0])) == expected
