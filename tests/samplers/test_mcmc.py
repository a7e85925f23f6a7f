"""Langevin / MALA samplers (fastdiff.mcmc): stationary laws, the MALA acceptance rule, robustness.

Statistical tests use fixed seeds and thousands of independent chains in low
dimension (cheap on the torch path); each says in a comment what it can detect.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from fastdiff import mcmc
from fastdiff.random import philox_normal
from fastdiff.toy import GaussianMixture, sliced_wasserstein



pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------------------
# targets and helpers

MU = torch.tensor([1.0, -2.0, 0.5])
SD = torch.tensor([0.5, 1.0, 1.5])


def gauss_lp(x):
    return -0.5 * (((x - MU.to(x.dtype)) / SD.to(x.dtype)) ** 2).sum(1)


def gauss_grad(x):
    return -(x - MU.to(x.dtype)) / SD.to(x.dtype) ** 2


def ks_min_p(x, mu, sd):
    """Smallest per-dimension KS p-value of x's columns against N(mu_j, sd_j^2)."""
    x = x.double().numpy()
    return min(stats.kstest(x[:, j], "norm", args=(float(mu[j]), float(sd[j]))).pvalue for j in range(x.shape[1]))


def miscalibrated_langevin(grad, y, dt, n_steps, seed):
    """The seed notes' update, transcribed literally: y(t + dt) = y(t) + 2 g dt + eps sqrt(dt)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        g = grad(y)
        eps = torch.randn(y.shape, generator=gen, dtype=y.dtype)
        y = y + 2 * g * dt + eps * math.sqrt(dt)
    return y


# An overlapping 2-D mixture: local samplers mix between its components, so the exact law is reachable.
OVERLAP = GaussianMixture(torch.tensor([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.5]]), torch.tensor([1.0, 0.8, 0.6]),
                          torch.tensor([0.5, 0.3, 0.2]))


def overlap_lp(x):
    return OVERLAP.log_prob(x.double()).to(x.dtype)


def overlap_grad(x):
    return OVERLAP.grad_log_prob(x.double()).to(x.dtype)


def sw_threshold(gmm, n, reps=6):
    """1.5x the largest sliced-Wasserstein distance between independent exact sample sets of size n."""
    null = [sliced_wasserstein(gmm.sample(n, seed=1000 + 2 * k), gmm.sample(n, seed=1001 + 2 * k)) for k in range(reps)]
    return 1.5 * max(null)


# ---------------------------------------------------------------------------------------------------------
# ULA


def test_ula_gaussian_reaches_target_and_notes_update_is_detected():
    # KS per dimension with 4000 chains detects a std error of ~4% (O(h) ULA bias here is < 2% in std);
    # the notes' update has stationary variance s^2/4, i.e. a 50% std error.
    n, h, steps = 4000, 0.02, 1000
    x0 = 6.0 * torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    x = mcmc.langevin(gauss_grad, x0, h, steps, seed=1)
    assert ks_min_p(x, MU, SD) > 1e-3
    y = miscalibrated_langevin(gauss_grad, x0, h, steps, seed=2)
    assert ks_min_p(y, MU, SD) < 1e-10
    # the notes' chain is stationary for exp(4 log p): N(mu, s^2 / 4)
    assert ks_min_p(y, MU, SD / 2) > 1e-3
    assert torch.equal(x0, 6.0 * torch.randn(n, 3, generator=torch.Generator().manual_seed(0)))  # input untouched


def test_ula_gmm_small_step_reaches_mixture_and_notes_update_is_detected():
    # Sliced Wasserstein vs exact samples, threshold from exact-vs-exact noise; detects errors of a few % in
    # scale or component weights; the notes' update samples exp(4 log p) (far narrower).
    n = 3000
    x0 = 3.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(3))
    x = mcmc.langevin(overlap_grad, x0, 0.02, 600, seed=4)
    exact = OVERLAP.sample(n, seed=5, dtype=torch.float32)
    thr = sw_threshold(OVERLAP, n)
    assert sliced_wasserstein(x, exact) < thr
    y = miscalibrated_langevin(overlap_grad, x0, 0.02, 600, seed=6)
    assert sliced_wasserstein(y, exact) > 3 * thr


def test_ula_temperature_samples_tempered_law():
    # p^(1/T) for N(0, 1) at T = 2 is N(0, 2): KS detects the ~1.4x std difference easily, and the test
    # would fail if the temperature were ignored (N(0, 1)) or applied to the drift instead.
    n = 4000
    x0 = 5.0 * torch.randn(n, 1, generator=torch.Generator().manual_seed(7))
    x = mcmc.langevin(lambda v: -v, x0, 0.02, 600, temperature=2.0, seed=8)
    assert stats.kstest(x[:, 0].double().numpy(), "norm", args=(0.0, math.sqrt(2.0))).pvalue > 1e-3
    assert stats.kstest(x[:, 0].double().numpy(), "norm", args=(0.0, 1.0)).pvalue < 1e-10


def test_ula_per_chain_step_sizes():
    # For N(0, 1) the ULA chain x' = (1 - h) x + sqrt(2h) z has exact stationary variance 1 / (1 - h/2):
    # 1.026 at h = 0.05 and 2.0 at h = 1. Each group's variance must match its own formula (+-10%,
    # ~5 standard errors), which fails if the step sizes were shared or swapped between chains.
    n = 4000
    h = torch.where(torch.arange(n) % 2 == 0, torch.tensor(0.05), torch.tensor(1.0))
    x0 = 3.0 * torch.randn(n, 1, generator=torch.Generator().manual_seed(9))
    x = mcmc.langevin(lambda v: -v, x0, h, 400, seed=10)
    for hv in (0.05, 1.0):
        var = x[h == hv].double().var().item()
        assert abs(var / (1.0 / (1.0 - hv / 2.0)) - 1.0) < 0.1, (hv, var)


# ---------------------------------------------------------------------------------------------------------
# MALA: stationary law


def test_mala_large_step_gaussian_exact_where_ula_is_biased():
    # h = 0.4 is a large step for the s = 0.5 coordinate (ULA variance factor 1/(1 - h/(2 s^2)) = 5);
    # MALA must still pass KS per dimension, and ULA at the same step must fail it.
    n, h = 4000, 0.4
    x0 = 6.0 * torch.randn(n, 3, generator=torch.Generator().manual_seed(11))
    x, acc = mcmc.mala(gauss_lp, x0, h, 400, seed=12)
    assert ks_min_p(x, MU, SD) > 1e-3
    assert acc.shape == (n,) and bool(((acc > 0) & (acc < 1)).all())
    x_ula = mcmc.langevin(gauss_grad, x0, h, 400, seed=12)
    assert ks_min_p(x_ula, MU, SD) < 1e-10


def test_mala_large_step_gmm():
    # Sliced Wasserstein against exact mixture samples (threshold from exact-vs-exact noise): MALA with a
    # step where ULA is visibly biased must match; ULA at the same step must not.
    n, h = 3000, 0.8
    x0 = 3.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(13))
    x, acc = mcmc.mala(overlap_lp, x0, h, 400, grad_log_prob=overlap_grad, seed=14)
    exact = OVERLAP.sample(n, seed=15, dtype=torch.float32)
    thr = sw_threshold(OVERLAP, n)
    assert sliced_wasserstein(x, exact) < thr
    assert 0.2 < acc.mean().item() < 0.95
    x_ula = mcmc.langevin(overlap_grad, x0, h, 300, seed=14)
    assert sliced_wasserstein(x_ula, exact) > 1.8 * thr


def test_mala_autograd_matches_given_gradient():
    # The autograd gradient (default) and an explicit exact gradient drive identical chains.
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    a, acc_a = mcmc.mala(gauss_lp, x0, 0.3, 20, seed=17)
    b, acc_b = mcmc.mala(gauss_lp, x0, 0.3, 20, grad_log_prob=gauss_grad, seed=17)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.equal(acc_a, acc_b)


# ---------------------------------------------------------------------------------------------------------
# MALA: the acceptance rule


def test_mala_acceptance_matches_literal_float64_implementation():
    # Step by step against the textbook formula with q(b|a) = N(b; a + h grad(a), 2h I), computed from the
    # positions (not the noise) in float64: any error in the proposal-density terms, the sign of a term,
    # the noise/uniform streams or the select shows up as a different log ratio or decision.
    gmm = GaussianMixture(torch.tensor([[-1.0, 0.5, 0.0], [1.5, -0.5, 1.0]]), torch.tensor([0.7, 1.2]),
                          torch.tensor([0.4, 0.6]))
    n, h, steps, seed = 256, 0.5, 15, 21
    x0 = 2.0 * torch.randn(n, 3, generator=torch.Generator().manual_seed(20), dtype=torch.float64)
    rec = []
    x_out, acc = mcmc.mala(gmm.log_prob, x0, h, steps, seed=seed, backend="reference",
                           callback=lambda d: rec.append((d["x"].clone(), d["accept"].clone(),
                                                          d["log_accept_ratio"].clone())))
    rid = torch.arange(n)
    x = x0.clone()
    n_acc = torch.zeros(n, dtype=torch.float64)
    for i in range(steps):
        z = philox_normal(x.shape, seed, 2 * i, row_ids=rid).double()
        y = x + h * gmm.grad_log_prob(x) + math.sqrt(2 * h) * z
        log_q_fwd = -((y - x - h * gmm.grad_log_prob(x)) ** 2).sum(1) / (4 * h)
        log_q_rev = -((x - y - h * gmm.grad_log_prob(y)) ** 2).sum(1) / (4 * h)
        log_alpha = gmm.log_prob(y) - gmm.log_prob(x) + log_q_rev - log_q_fwd
        u = mcmc.philox_uniform(seed, 2 * i + 1, rid)
        accept = torch.log(u) < log_alpha
        x = torch.where(accept[:, None], y, x)
        n_acc += accept
        x_lib, acc_lib, la_lib = rec[i]
        torch.testing.assert_close(la_lib, log_alpha, rtol=1e-9, atol=1e-9)
        assert torch.equal(acc_lib, accept), f"step {i}: decisions differ"
        torch.testing.assert_close(x_lib, x, rtol=1e-12, atol=1e-12)
    assert 0.1 < n_acc.mean().item() / steps < 0.95  # both branches exercised
    torch.testing.assert_close(acc, n_acc / steps)
    torch.testing.assert_close(x_out, x, rtol=1e-12, atol=1e-12)


def test_mala_detailed_balance_pairwise():
    # pi(x) q(y|x) a(x,y) = pi(y) q(x|y) a(y,x) for arbitrary pairs on an asymmetric 1-D target, with the
    # library's acceptance function; the same identity fails (by O(1)) for the unadjusted kernel (a = 1).
    gmm = GaussianMixture(torch.tensor([[-1.0], [2.0]]), torch.tensor([0.5, 1.0]), torch.tensor([0.3, 0.7]))
    g = torch.Generator().manual_seed(22)
    x, y = 3 * torch.randn(500, 1, generator=g, dtype=torch.float64), 3 * torch.randn(500, 1, generator=g,
                                                                                       dtype=torch.float64)
    h = torch.full((500,), 0.5, dtype=torch.float64)
    lpx, lpy, gx, gy = gmm.log_prob(x), gmm.log_prob(y), gmm.grad_log_prob(x), gmm.grad_log_prob(y)
    z_fwd = (y - x - 0.5 * gx) / math.sqrt(1.0)
    z_rev = (x - y - 0.5 * gy) / math.sqrt(1.0)
    log_q_fwd = -0.5 * (z_fwd ** 2).sum(1) - 0.5 * math.log(4 * math.pi * 0.5)
    log_q_rev = -0.5 * (z_rev ** 2).sum(1) - 0.5 * math.log(4 * math.pi * 0.5)
    la_fwd = mcmc.mala_log_accept(lpx, lpy, gx, gy, z_fwd, h).clamp(max=0.0)
    la_rev = mcmc.mala_log_accept(lpy, lpx, gy, gx, z_rev, h).clamp(max=0.0)
    flow_fwd = lpx + log_q_fwd + la_fwd
    flow_rev = lpy + log_q_rev + la_rev
    torch.testing.assert_close(flow_fwd, flow_rev, rtol=1e-9, atol=1e-9)
    assert (lpx + log_q_fwd - lpy - log_q_rev).abs().max() > 1.0  # the unadjusted kernel is not reversible


def test_mala_detailed_balance_histogram_1d():
    # Chi-square of 4000 independent chains (h = 1.5, a large step) over 30 bins against the exact bin
    # probabilities of an asymmetric 1-D mixture: detects bin-probability errors of ~1%-of-mass; ULA at the
    # same step fails.
    gmm = GaussianMixture(torch.tensor([[-1.0], [2.0]]), torch.tensor([0.5, 1.0]), torch.tensor([0.3, 0.7]))
    n, h = 4000, 1.5
    x0 = 3.0 * torch.randn(n, 1, generator=torch.Generator().manual_seed(23))
    lp = lambda v: gmm.log_prob(v.double()).float()  # noqa: E731
    gr = lambda v: gmm.grad_log_prob(v.double()).float()  # noqa: E731
    x, _ = mcmc.mala(lp, x0, h, 300, grad_log_prob=gr, seed=24)
    edges = np.concatenate([[-np.inf], np.linspace(-2.5, 4.5, 29), [np.inf]])
    cdf = sum(w * stats.norm.cdf(edges, m, s) for w, m, s in
              zip(gmm.weights.tolist(), gmm.means[:, 0].tolist(), gmm.stds.tolist()))
    expected = n * np.diff(cdf)

    def chi2_p(v):
        counts = np.histogram(v[:, 0].double().numpy(), bins=edges)[0]
        return stats.chisquare(counts, expected).pvalue

    assert chi2_p(x) > 1e-3
    assert chi2_p(mcmc.langevin(gr, x0, h, 300, seed=24)) < 1e-6


# ---------------------------------------------------------------------------------------------------------
# MALA: robustness, step sizes, adaptation


def test_mala_nan_and_inf_log_densities_reject():
    # log p is NaN for x >= 1 and +inf for x < -2.5 (both invalid): no chain may ever enter those regions
    # or become non-finite; a chain started in the NaN region must move into the support; the chains
    # inside must still sample N(0,1) truncated to [-2.5, 1) (KS).
    def lp(x):
        v = -0.5 * x[:, 0] ** 2
        v = torch.where(x[:, 0] >= 1.0, torch.full_like(v, math.nan), v)
        return torch.where(x[:, 0] < -2.5, torch.full_like(v, math.inf), v)

    n = 3000
    x0 = torch.rand(n, 1, generator=torch.Generator().manual_seed(25)) - 0.5
    x0[0, 0] = 2.0  # starts where log p is NaN
    lo = torch.full((n,), math.inf)
    hi = torch.full((n,), -math.inf)

    def track(d):
        lo.copy_(torch.minimum(lo, d["x"][:, 0]))
        hi.copy_(torch.maximum(hi, d["x"][:, 0]))

    x, acc = mcmc.mala(lp, x0, 0.8, 300, seed=26, callback=track)
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(acc).all())
    assert hi[1:].max().item() < 1.0 and lo.min().item() >= -2.5
    assert -2.5 <= x[0, 0].item() < 1.0
    trunc = stats.truncnorm(-2.5, 1.0)
    assert stats.kstest(x[:, 0].double().numpy(), trunc.cdf).pvalue > 1e-3

    # a NaN gradient at some proposals also rejects instead of poisoning the chain
    def bad_grad(v):
        return torch.where(v > 0.8, torch.full_like(v, math.nan), -v)

    x2, acc2 = mcmc.mala(lambda v: -0.5 * (v ** 2).sum(1), x0[1:], 0.8, 100, grad_log_prob=bad_grad, seed=27)
    assert bool(torch.isfinite(x2).all()) and bool((x2 <= 0.8).all())


def test_mala_per_chain_step_sizes():
    # Two groups of chains with h = 0.05 and h = 3 on N(0, I_5): acceptance must be ~1 for the small step
    # and much lower for the large one (fails if one step size were used for all), both exact in law.
    n = 2000
    h = torch.where(torch.arange(n) < n // 2, torch.tensor(0.05), torch.tensor(3.0))
    lp = lambda v: -0.5 * (v ** 2).sum(1)  # noqa: E731
    x0 = torch.randn(n, 5, generator=torch.Generator().manual_seed(28))
    x, acc = mcmc.mala(lp, x0, h, 150, seed=29)
    small, large = acc[: n // 2].mean().item(), acc[n // 2:].mean().item()
    assert small > 0.95 and large < 0.6
    for part in (x[: n // 2], x[n // 2:]):
        assert abs(part.var().item() - 1.0) < 0.1


def test_mala_adaptation_reaches_target_and_freezes():
    # Per-chain adaptation during 250 warm-up steps of 500. Checks: after warm-up the step sizes never change
    # (exact MALA); the post-warm-up acceptance is within 0.03 of the target (~5 standard errors of the mean
    # over 250 chains) for two different targets; and it is per chain: chains whose target is 4x wider get
    # ~16x larger steps (one shared step size would fail the ratio and one group's acceptance).
    n = 500
    sd = torch.linspace(0.3, 2.0, 8)
    wide = torch.arange(n) % 2 == 1
    scale = torch.where(wide, 4.0, 1.0)[:, None] * sd
    lp = lambda v: -0.5 * ((v / scale) ** 2).sum(1)  # noqa: E731
    x0 = scale * torch.randn(n, 8, generator=torch.Generator().manual_seed(30))
    seen = {}

    def cb(d):
        if d["i"] in (249, 400, 499):
            seen[d["i"]] = d["step_size"].clone()

    for target in (0.574, 0.3):
        seen.clear()
        x, acc, h = mcmc.mala(lp, x0, 1.0, 500, seed=31, adapt_steps=250, target_accept=target,
                              return_step_size=True, callback=cb)
        assert torch.equal(seen[249], seen[400]) and torch.equal(seen[400], seen[499]) and torch.equal(h, seen[499])
        for group in (wide, ~wide):
            assert abs(acc[group].mean().item() - target) < 0.03, (target, acc[group].mean().item())
        ratio = (h[wide].median() / h[~wide].median()).item()
        assert 10 < ratio < 25, ratio
        assert bool(torch.isfinite(x).all())


# ---------------------------------------------------------------------------------------------------------
# philox uniforms


def test_philox_uniform_properties():
    # Range (0, 1), uniform (KS on 20000 draws detects a ~1.5% CDF error), keyed by (seed, row id, stream)
    # only: a sub-batch with its global row ids reproduces the same numbers.
    rid = torch.arange(20000)
    u = mcmc.philox_uniform(3, 5, rid)
    assert u.dtype == torch.float64 and bool(((u > 0) & (u < 1)).all())
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    assert torch.equal(mcmc.philox_uniform(3, 5, rid[123:456]), u[123:456])
    assert not torch.equal(mcmc.philox_uniform(3, 6, rid), u)
    assert not torch.equal(mcmc.philox_uniform(4, 5, rid), u)
    with pytest.raises(ValueError, match="stream"):
        mcmc.philox_uniform(0, -1, rid)
