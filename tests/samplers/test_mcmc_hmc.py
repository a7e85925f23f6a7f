"""fastdiff.mcmc.hmc: stationary laws, a deliberately wrong leapfrog caught by the same check, warm-up
(acceptance on target, ChEES beating a short fixed trajectory in ESS per gradient), batch-split invariance,
rerun identity, and the caller's state left alone.

The statistical runs use backend="torch" (the CPU path of the same ops; the kernels' numbers are checked against
it in tests/ops/test_hmc_op.py) so that 4096 chains x a few thousand leapfrog passes stay fast."""
import math

import pytest
import torch

from fastdiff import mcmc
from fastdiff.mcmc import _hmc

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 8-d diagonal Gaussian, condition number 36 (standard deviations 1 .. 6), non-zero mean
D = 8
SD = torch.logspace(0, math.log10(6.0), D, dtype=torch.float64)
MU = torch.linspace(-2.0, 3.0, D, dtype=torch.float64)
N_CHAINS = 4096


def gauss_log_prob(x):
    return -0.5 * (((x.double() - MU) / SD) ** 2).sum(1)


def gauss_grad(x):
    return (-(x.double() - MU) / SD ** 2).to(x.dtype)


def start(n=N_CHAINS, d=D, seed=0):
    """Over-dispersed starts (3x the widest scale, off-centre): the chains must travel to the target."""
    return 18.0 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) - 5.0


def check_gaussian(draws, mu=MU, sd=SD, mean_tol=0.05, var_tol=0.05):
    """Pooled over chains and recorded draws: every mean within mean_tol sd, every variance within var_tol
    (relative). With 4096 chains x 10 draws (nearly independent) one coordinate's mean has sd ~0.005 sd and its
    variance ~0.7% relative: the check detects a 5% variance bias or a 0.05 sd shift in any coordinate."""
    flat = draws.double().reshape(-1, draws.shape[-1])
    assert bool(torch.isfinite(flat).all())
    mean_err = ((flat.mean(0) - mu) / sd).abs().max().item()
    var_err = (flat.var(0) / sd ** 2 - 1).abs().max().item()
    assert mean_err < mean_tol and var_err < var_tol, (mean_err, var_err)
    return mean_err, var_err


@pytest.fixture(scope="module")
def adapted_run():
    """Dual averaging (one step for all chains) + diagonal mass, jitter 1: the run several checks share."""
    x, acc, draws, h = mcmc.hmc(gauss_log_prob, start(), 0.3, 250, n_leapfrog=10, grad_log_prob=gauss_grad, seed=1,
                                adapt_steps=150, jitter=1.0, record_every=10, return_step_size=True, backend="torch")
    return x, acc, draws, h


def test_stationary_law_on_ill_conditioned_gaussian(adapted_run):
    x, acc, draws, h = adapted_run
    assert draws.shape == (N_CHAINS, 10, D)
    assert torch.equal(draws[:, -1], x)
    check_gaussian(draws)


def test_adapted_acceptance_is_on_target(adapted_run):
    # dual averaging on the chains' mean acceptance probability; the frozen step's acceptance rate after warm-up
    # must be within 0.05 of target_accept (0.8). Detects an adaptation that freezes a transient or a biased
    # average of log h (the paper's m**-kappa average gave 0.84-0.86 here).
    _, acc, _, h = adapted_run
    assert abs(acc.mean().item() - 0.8) < 0.05, acc.mean().item()
    assert h.shape == (N_CHAINS,) and bool((h == h[0]).all())  # one step size for all chains


_orig_log_accept = _hmc.hmc_log_accept
WRONG = {
    # the acceptance test's kinetic energy without the mass (|p|^2 / 2): measured variance error 0.39
    "kinetic energy without the mass": lambda lp0, lp1, z, p, im: _orig_log_accept(lp0, lp1, z, p, None),
    # the Metropolis ratio's sign flipped: accepts energy increases (chains leave for infinity)
    "acceptance sign flipped": lambda lp0, lp1, z, p, im: -_orig_log_accept(lp0, lp1, z, p, im),
}


@pytest.mark.parametrize("wrong", sorted(WRONG))
def test_wrong_update_fails_the_same_check(monkeypatch, wrong):
    # The adapted run of the stationary-law test with a deliberately wrong update: check_gaussian must reject it.
    # (A leapfrog missing its first or last half-kick is not caught by this check: its variance error, 0.023,
    # stays under the 5% tolerance; tests/ops/test_hmc_op.py's reversibility test catches that one.)
    monkeypatch.setattr(_hmc, "hmc_log_accept", WRONG[wrong])
    x, acc, draws, h = mcmc.hmc(gauss_log_prob, start(), 0.3, 250, n_leapfrog=10, grad_log_prob=gauss_grad, seed=1,
                                adapt_steps=150, jitter=1.0, record_every=10, return_step_size=True, backend="torch")
    with pytest.raises(AssertionError):
        check_gaussian(draws)


def test_correlated_gaussian_covariance():
    # 2-D Gaussian with rho = 0.95 (a diagonal mass cannot remove the correlation): the pooled covariance of
    # 4096 chains x 10 draws within 0.05 of the exact one, entry by entry (sd of an entry ~0.005).
    cov = torch.tensor([[1.0, 0.95], [0.95, 1.0]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    lp = lambda x: -0.5 * ((x.double() @ prec) * x.double()).sum(1)  # noqa: E731
    grad = lambda x: (-(x.double() @ prec)).to(x.dtype)  # noqa: E731
    x0 = 4 * torch.randn(N_CHAINS, 2, generator=torch.Generator().manual_seed(3))
    _, acc, draws = mcmc.hmc(lp, x0, 0.2, 250, n_leapfrog=10, grad_log_prob=grad, seed=4, adapt_steps=150,
                             jitter=1.0, record_every=10, backend="torch")
    flat = draws.double().reshape(-1, 2)
    err = (torch.cov(flat.T) - cov).abs().max().item()
    assert err < 0.05, err
    assert flat.mean(0).abs().max().item() < 0.05


def autocorr_ess(draws):
    """ESS per coordinate of (chains, draws, d): autocorrelation pooled over chains (centred on the pooled mean),
    summed by Geyer's initial positive sequence (a test-only estimate, no public second ESS)."""
    c, n, d = draws.shape
    xs = draws.double() - draws.double().reshape(-1, d).mean(0)
    var = xs.square().mean((0, 1))
    ess = []
    for j in range(d):
        v = xs[:, :, j]
        rho = [1.0] + [((v[:, :-k] * v[:, k:]).mean() / var[j]).item() for k in range(1, n // 2)]
        tau, k = -1.0, 0
        while k + 1 < len(rho) and rho[k] + rho[k + 1] > 0:
            tau += 2 * (rho[k] + rho[k + 1])
            k += 2
        ess.append(c * n / max(tau, 1e-3))
    return torch.tensor(ess)


def _ess_per_gradient(adapt, n_leapfrog, jitter):
    """(ESS of the slowest coordinate per gradient evaluation after warm-up, acceptance); identity mass."""
    calls = []

    def count(info):
        if info["i"] >= 100:
            calls.append(info["n_leapfrog"])

    x0 = start(n=512, seed=6)
    _, acc, draws = mcmc.hmc(gauss_log_prob, x0, 0.3, 300, n_leapfrog=n_leapfrog, grad_log_prob=gauss_grad, seed=7,
                             adapt_steps=100, adapt=adapt, jitter=jitter, adapt_mass=False, record_every=1,
                             callback=count,
                             backend="torch")
    ess = autocorr_ess(draws)
    return ess.min().item() / (512 * sum(calls)), acc.mean().item()


def test_chees_beats_a_short_fixed_trajectory_in_ess_per_gradient():
    # Both with dual-averaged steps and the identity mass (so the condition number 36 stays); the fixed run takes 2
    # leapfrog steps per iteration, ChEES starts from 1 and chooses its trajectory length across chains. The slowest
    # coordinate's ESS per gradient evaluation (512 chains x 200 draws) must be higher with ChEES (measured 0.044
    # vs 0.027): detects a ChEES update that does not lengthen the trajectory (a short trajectory random-walks
    # along the widest coordinate). With mass adaptation the target becomes isotropic and 2 steps of h ~ 1 are
    # already near its best trajectory, so that case is not a test of ChEES.
    fixed, acc_fixed = _ess_per_gradient("dual_averaging", 2, 0.0)
    chees, acc_chees = _ess_per_gradient("chees", 1, 1.0)
    assert chees > 1.3 * fixed, (chees, fixed)
    assert abs(acc_chees - 0.8) < 0.05, acc_chees


def _small(x, **kw):
    opts = dict(n_leapfrog=3, grad_log_prob=gauss_grad, seed=9, jitter=0.5)
    opts.update(kw)
    return mcmc.hmc(gauss_log_prob, x, opts.pop("step", 0.4), opts.pop("n_steps", 6), **opts)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_batch_split_invariance_and_rerun_identity(backend):
    # without cross-chain adaptation a chain's trajectory depends only on (seed, row id): halves with their row
    # ids give the whole batch's chains bit for bit (per-chain dual averaging included), and reruns are identical
    x0 = start(n=8, seed=2)
    h0 = torch.full((8,), 0.4)
    kw = dict(backend=backend, adapt_steps=3, adapt_mass=False, step=h0, return_step_size=True)
    whole = _small(x0, **kw)
    halves = [_small(x0[i:i + 4], row_ids=torch.arange(i, i + 4), **dict(kw, step=h0[i:i + 4])) for i in (0, 4)]
    for k in range(3):
        assert torch.equal(torch.cat([hv[k] for hv in halves]), whole[k])
    again = _small(x0, **kw)
    assert all(torch.equal(a, b) for a, b in zip(whole, again))


def test_kernel_and_torch_paths_agree():
    # the same chains on the Triton kernels and the torch path: float32 roundings may differ in the last bit, so
    # compare states (accept decisions of these 8 chains do not sit on a rounding boundary)
    x0 = start(n=8, seed=2)
    xt, at = _small(x0, backend="triton")
    xc, ac = _small(x0, backend="torch")
    torch.testing.assert_close(xt, xc, rtol=1e-4, atol=1e-4)
    assert torch.equal(at, ac)


def test_caller_state_untouched():
    x0 = start(n=8, seed=2)
    h0 = torch.full((8,), 0.4)
    mass = torch.ones(D) * 2
    saved = [t.clone() for t in (x0, h0, mass)]
    rng = torch.get_rng_state()
    _small(x0, step=h0, mass=mass, adapt_steps=3, backend="torch")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(saved, (x0, h0, mass)))


def test_autograd_log_prob_matches_given_gradient():
    x0 = start(n=8, seed=2)
    a = _small(x0, backend="torch")
    b = _small(x0, backend="torch", grad_log_prob=None)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)


def test_no_steps_and_outputs():
    x0 = start(n=4, seed=2)
    x, acc = mcmc.hmc(gauss_log_prob, x0, 0.1, 0, seed=0)
    assert torch.equal(x, x0) and x is not x0 and torch.isnan(acc).all()
    x, acc, draws, h = _small(x0, n_steps=6, adapt_steps=2, record_every=2, return_step_size=True, backend="torch")
    assert draws.shape == (4, 2, D) and h.shape == (4,) and acc.shape == (4,)


@pytest.mark.parametrize("kw", [{}, {"adapt_steps": 2, "return_step_size": True},
                                {"adapt_steps": 2, "adapt": "chees", "record_every": 1}], ids=["plain", "da", "chees"])
def test_empty_batch(kw):
    out = mcmc.hmc(gauss_log_prob, torch.zeros(0, D), 0.1, 4, n_leapfrog=2, seed=0, backend="torch", **kw)
    assert out[0].shape == (0, D) and out[1].shape == (0,)
    if "record_every" in kw:
        assert out[2].shape == (0, 2, D)


def test_nan_proposals_are_rejected():
    # log p is NaN beyond x0 = 1: those proposals are rejected, so no chain ever stands there
    lp = lambda x: torch.where(x[:, 0] > 1, torch.full_like(x[:, 0], float("nan")), -0.5 * (x ** 2).sum(1))  # noqa
    x, _ = mcmc.hmc(lp, torch.zeros(64, 2), 0.5, 20, n_leapfrog=3, seed=0, backend="torch")
    assert bool(torch.isfinite(x).all()) and x[:, 0].max().item() <= 1


BAD = [
    ("adapt", dict(adapt="nuts"), ValueError, "adapt must be one of"),
    ("jitter", dict(jitter=1.5), ValueError, "jitter must be a float in"),
    ("n_leapfrog", dict(n_leapfrog=0), ValueError, "n_leapfrog must be a positive int"),
    ("target", dict(target_accept=1.0, adapt_steps=2), ValueError, "target_accept"),
    ("adapt_steps", dict(adapt_steps=10), ValueError, "adapt_steps must be <="),
    ("chees per chain", dict(adapt="chees", adapt_steps=2, step=torch.full((4,), 0.1)), ValueError, "chees"),
    ("mass values", dict(mass=-torch.ones(D)), ValueError, "mass must be positive"),
    ("mass shape", dict(mass=torch.ones(3)), ValueError, "mass must have"),
    ("record_every", dict(record_every=0), ValueError, "record_every"),
    ("log_prob", dict(grad_log_prob=3), TypeError, "grad_log_prob must be callable"),
]


@pytest.mark.parametrize("name,kw,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, kw, exc, match):
    with pytest.raises(exc, match=match):
        _small(start(n=4), **kw)
