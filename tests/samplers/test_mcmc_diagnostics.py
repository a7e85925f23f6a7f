"""fastdiff.mcmc.ess / rhat: equal to arviz-stats on the same arrays, right on chains of known ESS, strict input checks.

The arviz comparisons need ``arviz-stats`` (in the ``test`` extra) and skip, saying so, only when it is missing;
everything else runs without it. Statistical tests use fixed seeds and say what they can detect.
"""
import math

import numpy as np
import pytest
import torch

from fastdiff import mcmc
from fastdiff.mcmc import _diagnostics

REL = 1e-6  # the agreement the issue asks for; measured: <= 4e-15 on every case below


def _arviz():
    return pytest.importorskip("arviz_stats.base", reason="arviz-stats is not installed (pip install 'fastdiff[test]')")


def _ar1(chains, n, k, phi, seed):
    """AR(1) chains x_t = phi x_(t-1) + e_t started in the stationary law (so no warm-up is needed)."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(chains, n, k))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0] / math.sqrt(1 - phi * phi)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def _cases():
    rng = np.random.default_rng(17)
    return {
        "iid": rng.normal(size=(4, 101, 3)),
        "ar1-0.9": _ar1(5, 200, 2, 0.9, 1),
        "ar1-negative": _ar1(3, 57, 2, -0.7, 2),
        "shifted-means": rng.normal(size=(4, 50, 2)) + np.arange(4.0)[:, None, None],
        "different-scales": rng.normal(size=(4, 80, 1)) * np.array([1.0, 1.0, 1.0, 4.0])[:, None, None],
        "heavy-tails": rng.standard_cauchy(size=(3, 64, 2)),
        "ties": rng.integers(0, 3, size=(4, 40, 2)).astype(float),
        "one-chain": rng.normal(size=(1, 33, 2)),
        "four-draws": rng.normal(size=(2, 4, 2)),
        "odd-seven-draws": rng.normal(size=(2, 7, 3)),
        "constant": np.full((3, 20, 1), 2.5),
        "nan-in-one-column": np.concatenate([rng.normal(size=(3, 30, 1)),
                                             np.where(np.arange(30)[None, :, None] == 7, np.nan, 1.0)
                                             * rng.normal(size=(3, 30, 1))], axis=2),
    }


CASES = _cases()
KINDS = [("bulk", None), ("tail", (0.05, 0.95)), ("tail", 0.1), ("mean", None), ("sd", None), ("median", None),
         ("mad", None), ("quantile", 0.3)]


def _arviz_columns(fn, a, **kw):
    cols = a.reshape(a.shape[0], a.shape[1], -1)
    return np.array([fn(cols[..., j], chain_axis=0, draw_axis=1, **kw) for j in range(cols.shape[2])],
                    dtype=float).reshape(a.shape[2:])


def _assert_same(ours, theirs, what):
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    assert ours.shape == theirs.shape, what
    assert (np.isnan(ours) == np.isnan(theirs)).all(), (what, ours, theirs)
    ok = ~np.isnan(theirs)
    rel = np.abs(ours[ok] - theirs[ok]) / np.abs(theirs[ok])
    assert (rel <= REL).all(), (what, ours, theirs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ess_equals_arviz(case):
    """Every kind on every case (ties, constant and NaN columns, the 4-draw minimum, odd lengths, negative
    autocorrelation, one chain) to 1e-6 relative, NaN exactly where arviz gives NaN."""
    stats = _arviz().array_stats
    a = CASES[case]
    for kind, prob in KINDS:
        kw = {} if prob is None else {"prob": prob}
        _assert_same(mcmc.ess(a, kind, **kw), _arviz_columns(stats.ess, a, method=kind, **kw), (case, kind, prob))


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c].shape[0] >= 2))
def test_rhat_equals_arviz(case):
    stats = _arviz().array_stats
    a = CASES[case]
    _assert_same(mcmc.rhat(a), _arviz_columns(stats.rhat, a, method="rank"), case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_dtype_equals_arviz_on_the_same_values(dtype):
    """A torch tensor of any float dtype is read as float64: the result is arviz's on those exact values,
    float64, on the tensor's device, shaped like the event dimensions (here (2, 3))."""
    stats = _arviz().array_stats
    x = torch.from_numpy(_ar1(6, 90, 6, 0.6, 3)).to(dtype).reshape(6, 90, 2, 3)
    a = x.double().numpy()
    for kind in ("bulk", "tail"):
        out = mcmc.ess(x, kind)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (2, 3)
        kw = {"prob": (0.05, 0.95)} if kind == "tail" else {}
        _assert_same(out.numpy(), _arviz_columns(stats.ess, a, method=kind, **kw), (dtype, kind))
    _assert_same(mcmc.rhat(x).numpy(), _arviz_columns(stats.rhat, a, method="rank"), dtype)


def test_numpy_in_numpy_out_and_inputs_untouched():
    a = _ar1(4, 60, 2, 0.5, 4)
    keep = a.copy()
    out = mcmc.ess(a)
    assert isinstance(out, np.ndarray) and out.shape == (2,) and out.dtype == np.float64
    assert isinstance(mcmc.rhat(a), np.ndarray)
    np.testing.assert_array_equal(a, keep)
    t = torch.from_numpy(a).float()
    t_keep = t.clone()
    mcmc.ess(t, "tail"), mcmc.rhat(t)
    assert torch.equal(t, t_keep)
    scalar = mcmc.ess(t[..., 0])  # (chains, draws): a 0-d result
    assert scalar.shape == () and torch.isfinite(scalar)


def test_event_dims_chunking_and_strides_do_not_change_values(monkeypatch):
    """Columns are independent: the (C, N, 2, 3) result equals the per-column results, also when the columns
    are processed in batches of one (the bounded-memory path for large events) and from a strided view."""
    x = torch.from_numpy(_ar1(5, 64, 6, 0.8, 5)).reshape(5, 64, 2, 3)
    whole = {k: mcmc.ess(x, k) for k in ("bulk", "tail", "sd")}
    whole["rhat"] = mcmc.rhat(x)
    for i in range(2):
        for j in range(3):
            # batched FFTs and reductions round differently from single ones: equal to ~1e-15, not bitwise
            torch.testing.assert_close(mcmc.ess(x[:, :, i, j], "bulk"), whole["bulk"][i, j], rtol=1e-12, atol=0)
            torch.testing.assert_close(mcmc.rhat(x[:, :, i, j]), whole["rhat"][i, j], rtol=1e-12, atol=0)
    monkeypatch.setattr(_diagnostics, "_CHUNK_VALUES", 1)
    for k in ("bulk", "tail", "sd"):
        torch.testing.assert_close(mcmc.ess(x.transpose(2, 3), k), whole[k].T, rtol=1e-12, atol=0)
    torch.testing.assert_close(mcmc.rhat(x), whole["rhat"], rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------------------
# what the numbers mean, on chains whose ESS is known


def test_iid_normal_draws_have_ess_near_their_count():
    """16 x 1000 iid normal draws: the true ESS of every kind is 16000. Over 4 seeded columns the estimates'
    spread is ~5%; the bounds (0.8n, 1.25n) catch a mis-normalised autocorrelation (e.g. no 1/N, or the
    chains' variance instead of var_plus) and a truncation that keeps noise lags (ESS several times too
    small), not percent-level bias."""
    x = torch.randn(16, 1000, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    n = 16 * 1000
    for kind in ("bulk", "mean", "tail", "sd"):
        e = mcmc.ess(x, kind)
        assert ((e > 0.8 * n) & (e < 1.25 * n)).all(), (kind, e)
    r = mcmc.rhat(x)
    assert (r < 1.01).all() and (r > 0.99).all(), r


@pytest.mark.parametrize("phi", [0.9, 0.5, -0.5])
def test_ar1_chains_have_the_theoretical_ess_of_the_mean(phi):
    """AR(1): the ESS of the mean is n (1 - phi) / (1 + phi) (3x n for phi = -0.5: antithetic chains).
    32 chains x 2000 draws, 4 seeded columns each within 15% of theory (the estimator's spread here is
    ~3-5%): detects a lag-pair rule that stops too early or late (a factor ~2 for phi = 0.9) and a sign
    error for negative autocorrelation (ESS < n instead of 3n)."""
    x = torch.from_numpy(_ar1(32, 2000, 4, phi, 20 + int(10 * phi)))
    theory = 32 * 2000 * (1 - phi) / (1 + phi)
    for kind in ("mean", "bulk"):  # rank-normalising a Gaussian AR(1) keeps its autocorrelation (to ~1%)
        e = mcmc.ess(x, kind)
        assert ((e > 0.85 * theory) & (e < 1.15 * theory)).all(), (kind, phi, e, theory)


def test_rhat_flags_chains_that_disagree_in_location_or_scale():
    """Fixed seeds, 4 chains x 500 draws. One chain shifted by 1 sd: R-hat ~1.1 (bulk); one chain with 3x
    the scale but the same mean: the bulk R-hat stays ~1, the folded part catches it. The iid control stays
    below 1.01. Detects a missing fold (scale case) and a missing split (a trend within each chain)."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 500, generator=g, dtype=torch.float64)
    assert float(mcmc.rhat(base)) < 1.01
    shifted = base + torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)[:, None]
    assert float(mcmc.rhat(shifted)) > 1.05
    scaled = base * torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=torch.float64)[:, None]
    assert float(mcmc.rhat(scaled)) > 1.05
    trend = base + torch.linspace(0, 3, 500, dtype=torch.float64)  # every chain drifts the same way
    assert float(mcmc.rhat(trend)) > 1.2  # the unsplit R-hat would see identical chains


def test_constant_and_nan_columns():
    """A constant column has ESS chains * 2 * (draws // 2) and R-hat NaN (arviz's values); a NaN poisons only
    its own column."""
    x = torch.randn(3, 21, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, :, 1] = 7.0
    x[2, 5, 2] = math.nan
    e, r = mcmc.ess(x), mcmc.rhat(x)
    assert math.isfinite(float(e[0])) and float(e[1]) == 3 * 2 * 10 and math.isnan(float(e[2]))
    assert math.isfinite(float(r[0])) and math.isnan(float(r[1])) and math.isnan(float(r[2]))


# ---------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("fn", [mcmc.ess, mcmc.rhat], ids=["ess", "rhat"])
def test_bad_shapes_name_draws(fn):
    with pytest.raises(ValueError, match=r"draws must be shaped \(chains, draws, \*event\)"):
        fn(torch.randn(100))
    with pytest.raises(ValueError, match="draws must have at least 4 draws"):
        fn(torch.randn(4, 3))
    with pytest.raises(TypeError, match="draws must hold real numbers"):
        fn(torch.randn(4, 10, dtype=torch.complex64))
    with pytest.raises(TypeError, match="draws must hold real numbers"):
        fn(np.array([["a", "b", "c", "d"]] * 2))


def test_rhat_needs_two_chains():
    with pytest.raises(ValueError, match="draws must have at least 2 chains"):
        mcmc.rhat(torch.randn(1, 100))
    assert mcmc.ess(torch.randn(1, 100, dtype=torch.float64)).shape == ()  # ESS of one (split) chain is defined


def test_bad_kind_and_prob_are_named():
    x = torch.randn(4, 50)
    with pytest.raises(ValueError, match="kind must be one of"):
        mcmc.ess(x, "bluk")
    with pytest.raises(ValueError, match="prob must be a float in \\(0, 1\\) for kind='quantile'"):
        mcmc.ess(x, "quantile")
    for bad in (1.5, (0.9, 0.1), (0.1,), True):
        with pytest.raises(ValueError, match="prob must be"):
            mcmc.ess(x, "tail", prob=bad)
    with pytest.raises(ValueError, match="prob is only used by"):
        mcmc.ess(x, "bulk", prob=0.1)
    assert set(mcmc.ESS_KINDS) == {"bulk", "tail", "mean", "sd", "median", "mad", "quantile"}
