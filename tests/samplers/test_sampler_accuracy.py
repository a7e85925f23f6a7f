"""Sampler accuracy against an exact target: an isotropic Gaussian mixture (closed-form denoiser).

* Deterministic samplers: pathwise against a float64 RK4 solution of the probability-flow
  ODE from the same start; the error must fall at the method's order when steps double.
* Stochastic samplers: the law of the samples against the mixture.
"""
import math

import pytest
import torch

import fastdiff
from fastdiff.samplers import NEEDS_UNCOND
from fastdiff.sampling import STOCHASTIC, initial_noise, sample
from fastdiff.toy import GaussianMixture, sliced_wasserstein

GMM = GaussianMixture.ring(k=6, radius=3.0, std=0.35)
SMAX, SMIN = 20.0, 0.002


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rk4(f, x, grid):
    for a, b in zip(grid[:-1], grid[1:]):
        h = b - a
        k1 = f(x, a)
        k2 = f(x + h / 2 * k1, a + h / 2)
        k3 = f(x + h / 2 * k2, a + h / 2)
        k4 = f(x + h * k3, b)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def pf_ode_reference(x, n):
    """RK4 on dx/dsigma = (x - D(x, sigma)) / sigma = -sigma grad log p_sigma(x), sigma: SMAX -> 0 exactly
    (the gradient form is regular at sigma = 0); grid sigma = (SMAX^(1/3) (1 - u))^3."""
    u = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    grid = ((SMAX ** (1 / 3) * (1 - u)) ** 3).tolist()
    return rk4(lambda y, s: -s * GMM.grad_log_prob(y, s), x, grid)


@pytest.fixture(scope="module")
def ode_case():
    x = initial_noise((96, 2), 0, dtype=torch.float64) * SMAX
    ref = pf_ode_reference(x, 240)
    coarse = pf_ode_reference(x, 120)
    # the reference's own error (Richardson: RK4 error(120) ~ 16 x error(240)) is far below what we measure
    assert ((ref - coarse).norm() / ref.norm()).item() < 1e-6
    return x, ref


def rel_errors(name, x, ref, steps, **options):
    out = []
    for n in steps:
        res = sample(GMM.denoiser, x, fastdiff.karras_sigmas(n, SMIN, SMAX), sampler=name, seed=0, **options)
        out.append(((res - ref).norm() / ref.norm()).item())
    return out


# name, options, (low, high) bounds of the per-doubling error ratio, max relative error at 32 steps
ORDER_CASES = [
    ("euler", {}, (1.7, 2.5), 0.05),
    ("ddim", {}, (1.7, 2.5), 0.05),
    ("heun", {}, (3.0, 6.0), 0.02),
    ("dpm_2", {}, (3.0, 6.0), 0.02),
    ("dpmpp_2m", {}, (3.0, 6.0), 0.02),
    ("unipc", {}, (3.0, 6.0), 0.02),
    ("dpmpp_2m_sde", dict(eta=0.0), (3.0, 6.0), 0.02),
    ("dpmpp_2s_ancestral", dict(eta=0.0), (3.0, 6.0), 0.02),
    ("lms", {}, (3.0, 9.0), 0.02),  # order 4 in sigma, but the Karras grid's last steps limit it
    ("unipc", dict(order=3), (5.0, 12.0), 0.02),  # third order: about 8 per doubling
]


@pytest.mark.parametrize("name,options,ratio,max32", ORDER_CASES,
                         ids=[f"{c[0]}{'-' + str(c[1]) if c[1] else ''}" for c in ORDER_CASES])
def test_convergence_order(ode_case, name, options, ratio, max32):
    """Error vs the float64 ODE solution from the same start at 16/32/64 Karras steps (float64 x, torch path)."""
    x, ref = ode_case
    e16, e32, e64 = rel_errors(name, x, ref, (16, 32, 64), **options)
    rate = math.sqrt(e16 / e64)  # mean error ratio per doubling of the steps
    assert ratio[0] <= rate <= ratio[1], f"{name}: errors {e16:.2e} {e32:.2e} {e64:.2e}, ratio {rate:.2f}"
    assert e32 < max32, f"{name}: relative error {e32:.3%} at 32 steps"


def flow_x0(x, s):
    s = float(torch.as_tensor(s).reshape(-1)[0])
    if s >= 1.0:
        return (GMM.weights[:, None] * GMM.means).sum(0).to(x.dtype).expand_as(x).clone()
    return GMM.denoiser(x / (1 - s), s / (1 - s))


def test_flow_euler_first_order():
    """flow_euler vs RK4 on the rectified-flow ODE dx/ds = (x - x0_hat(x, s)) / s, s: 1 -> 1e-6 then x0_hat."""
    x = initial_noise((96, 2), 1, dtype=torch.float64)
    grid = torch.linspace(1.0, 1e-6, 241, dtype=torch.float64).tolist()
    ref = rk4(lambda y, s: (y - flow_x0(y, s)) / s, x, grid)
    ref = flow_x0(ref, 1e-6)
    errs = []
    for n in (16, 32, 64):
        out = sample(flow_x0, x, fastdiff.FlowMatchingSchedule(1000).sigmas(n), sampler="flow_euler")
        errs.append(((out - ref).norm() / ref.norm()).item())
    rate = math.sqrt(errs[0] / errs[2])
    assert 1.6 <= rate <= 2.6, f"errors {errs}, ratio {rate:.2f}"
    assert errs[2] < 0.05


# ---------------------------------------------------------------------------------------------
# stochastic samplers: the law of the output
# ---------------------------------------------------------------------------------------------
N_LAW, STEPS_LAW = 2048, 128
CHI2_5DOF_P001 = 20.52  # 0.999 quantile of chi-square with 5 degrees of freedom


def mode_stats(pts):
    """(chi-square of the 6 mode counts vs uniform weights, within-mode variance ratio E|x - mu_k|^2 / (2 s^2)).

    The modes are 3 apart with std 0.35 (half-gap = 4.3 std), so nearest-mean assignment is
    exact up to ~1e-5 of the points. Under the exact law the variance ratio has mean 1 and
    standard error 1 / sqrt(N) (a chi-square(2)/2 average).
    """
    pts = pts.double()
    d2 = ((pts[:, None, :] - GMM.means[None]) ** 2).sum(-1)
    k = d2.argmin(1)
    counts = torch.bincount(k, minlength=6).double()
    n = pts.shape[0]
    chi2 = float(((counts - n / 6) ** 2 / (n / 6)).sum())
    ratio = float(d2.gather(1, k[:, None]).mean() / (2 * GMM.stds[0] ** 2))
    return chi2, ratio


# 4 standard errors of sampling noise (0.088), plus the discretisation bias allowed at 128 steps
# (ancestral Euler / DDPM shrink the within-mode variance by ~5% there; the others are within
# ~3%): VAR_TOL = 0.138. A 10% error in the noise scale (s_noise = 0.9 or 1.1) moves the ratio
# by ~17-20% (checked below).
VAR_TOL = 4 / math.sqrt(N_LAW) + 0.05


@pytest.fixture(scope="module")
def exact_law():
    """Exact samples and the sliced-Wasserstein noise floor between independent exact sets at the same n."""
    sets = [GMM.sample(N_LAW, seed=100 + j, dtype=torch.float32) for j in range(4)]
    null = [sliced_wasserstein(sets[0], s) for s in sets[1:]]
    return sets[0], 1.5 * max(null)


def law_run(name, seed=5, **options):
    x = initial_noise((N_LAW, 2), seed) * SMAX
    return sample(GMM.denoiser, x, fastdiff.karras_sigmas(STEPS_LAW, SMIN, SMAX), sampler=name, seed=seed, **options)


# the CFG++ ones need guidance: test_sampler_accuracy_cfgpp.py checks their law at guidance 0; lcm with an exact
# denoiser does not sample the exact law (its own law: test_sampler_accuracy_more.py)
EXACT_LAW = [n for n in STOCHASTIC if n not in NEEDS_UNCOND and n != "lcm"]


@pytest.mark.parametrize("name,options", [(n, {}) for n in EXACT_LAW] + [("heun", dict(s_churn=10.0))],
                         ids=EXACT_LAW + ["heun-churn"])
def test_stochastic_law(exact_law, name, options):
    """Mode weights (chi-square, p = 1e-3), within-mode spread (VAR_TOL) and sliced Wasserstein vs exact samples.

    The sliced-Wasserstein check (threshold 1.5x the largest exact-vs-exact distance at the same
    n) is dominated by mode-weight fluctuations at this n and only catches gross errors (e.g. a
    collapsed or missing mode); the mode statistics are the sensitive part.
    """
    assert_exact_law(exact_law, name, law_run(name, **options))


def assert_exact_law(exact_law, name, out):
    """``out`` (samples of sampler ``name``) has the exact mixture's law: mode weights by chi-square (p = 1e-3),
    within-mode variance within VAR_TOL, sliced Wasserstein under the exact-vs-exact threshold."""
    exact, sw_threshold = exact_law
    assert torch.isfinite(out).all()
    chi2, ratio = mode_stats(out)
    assert chi2 < CHI2_5DOF_P001, f"{name}: mode weights off (chi2 {chi2:.1f})"
    assert abs(ratio - 1) < VAR_TOL, f"{name}: within-mode variance ratio {ratio:.3f}"
    sw = sliced_wasserstein(out, exact)
    assert sw < sw_threshold, f"{name}: sliced W2 {sw:.3f} >= {sw_threshold:.3f}"


@pytest.mark.parametrize("name,s_noise", [("dpmpp_2m_sde", 0.9), ("dpmpp_2m_sde", 1.1), ("euler_ancestral", 0.9),
                                          ("euler_ancestral", 1.15)])
def test_law_check_detects_wrong_noise_scale(name, s_noise):
    """The variance check has the power to see a 10% error in the injected noise (15% upwards for
    ancestral Euler, whose own discretisation bias at 128 steps is downwards)."""
    _, ratio = mode_stats(law_run(name, s_noise=s_noise))
    assert abs(ratio - 1) > VAR_TOL, f"s_noise={s_noise}: ratio {ratio:.3f} not detected"


def test_sliced_wasserstein_detects_missing_mode(exact_law):
    exact, threshold = exact_law
    two_modes = GaussianMixture(GMM.means[:5], GMM.stds[:5]).sample(N_LAW, seed=3, dtype=torch.float32)
    assert sliced_wasserstein(two_modes, exact) > threshold
