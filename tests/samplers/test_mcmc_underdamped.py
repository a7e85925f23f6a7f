"""Underdamped Langevin (``fastdiff.mcmc.underdamped_langevin``) and ``record_every`` on langevin / mala.

Statistical tests use fixed seeds and 4096 independent chains on the torch path (the kernel's arithmetic is
checked against the same references in ``tests/ops/test_underdamped_op.py``, and one short kernel run here
against the torch path); each says what it can detect.
"""
import math

import numpy as np
import pytest
import torch
from scipy import linalg

import fastdiff
from fastdiff import mcmc
from fastdiff.mcmc import _underdamped
from fastdiff.random import philox_normal

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 8-d diagonal Gaussian, variances 1 .. 36 (condition number 36), non-zero mean
SD = torch.logspace(0.0, math.log10(6.0), 8, dtype=torch.float64)
MU = torch.linspace(-2.0, 3.0, 8, dtype=torch.float64)
H, FRICTION = 0.5, 1.0 / 3.0  # friction 2/sd_max: critical damping of the slowest mode
N_STEPS, BURN, EVERY = 300, 100, 5


def gauss_grad(x):
    return -(x - MU.to(x.dtype)) / SD.to(x.dtype) ** 2


def law_errors(draws):
    """(max |mean - mu| / sd, max |var / sd^2 - 1|) over the 8 dimensions, pooling chains and post-burn-in draws."""
    d = draws[:, BURN // EVERY:].reshape(-1, 8).double()
    return (((d.mean(0) - MU) / SD).abs().max().item(), (d.var(0) / SD ** 2 - 1).abs().max().item())


def run_8d(mass=None, backend="torch"):
    _, draws = mcmc.underdamped_langevin(gauss_grad, torch.zeros(4096, 8), H, N_STEPS, friction=FRICTION, mass=mass,
                                         seed=11, record_every=EVERY, backend=backend)
    return law_errors(draws)


def baoab_stationary_x_var(var, h, gamma, noise_factor=1.0):
    """The exact stationary variance of x under BAOAB on N(0, var) with unit mass (the linear recursion's
    discrete Lyapunov equation); ``noise_factor`` scales the O step's noise."""
    k = 1.0 / var
    b = np.array([[1.0, 0.0], [-h / 2 * k, 1.0]])
    a = np.array([[1.0, h / 2], [0.0, 1.0]])
    c = math.exp(-gamma * h)
    o = np.diag([1.0, c])
    noise = b @ a @ np.array([[0.0], [noise_factor * math.sqrt(1 - c * c)]])
    return linalg.solve_discrete_lyapunov(b @ a @ o @ a @ b, noise @ noise.T)[0, 0]


def test_baoab_is_exact_in_x_on_gaussians_at_the_test_step():
    """Why the stationary tests' step is H = 0.5: BAOAB's O(h^2) error in the law of x vanishes on Gaussian
    targets for any stable step (h < 2*sd_min; Leimkuhler & Matthews 2013), so the 5% / 0.05 sd tolerances
    below are statistical only. The wrong update (O step noise without its sqrt(1 - exp(-2 gamma h)) factor)
    has stationary variances 3.53x the target's at this step."""
    for sd in SD.tolist():
        assert baoab_stationary_x_var(sd * sd, H, FRICTION) == pytest.approx(sd * sd, rel=1e-9)
        wrong = baoab_stationary_x_var(sd * sd, H, FRICTION, noise_factor=1 / math.sqrt(-math.expm1(-2 * FRICTION * H)))
        assert wrong / (sd * sd) > 3.5


@pytest.mark.parametrize("mass", [None, "precision"])
def test_stationary_law_on_an_ill_conditioned_gaussian(mass):
    """Means within 0.05 sd and variances within 5% after 100 burn-in steps from x = 0 (3 sd from the mean in
    the last dimension). Detects a wrong drift, kick or mass placement (biased means or variances), a missing
    or mis-scaled refresh, and non-convergence. Statistical error: the slowest dimension's integrated
    autocorrelation time is 2*friction*sd^2 = 24 time units (48 steps), so 4096 chains x 200 post-burn-in steps
    hold ~17k independent draws: ~0.008 sd for a mean, ~1.1% for a variance (measured: 0.020 sd, 0.97%).
    With mass = 1/variance (preconditioned) every mode has frequency 1 (measured: 0.003 sd, 0.78%)."""
    m = None if mass is None else (1.0 / SD ** 2).float()
    mean_err, var_err = run_8d(mass=m)
    assert mean_err < 0.05, mean_err
    assert var_err < 0.05, var_err


def test_a_wrong_noise_scale_fails_the_same_check(monkeypatch):
    """The same run and check with the O step's noise lacking its sqrt(1 - exp(-2 gamma h)) factor must fail:
    the check can tell a correct BAOAB from this plausible bug (stationary variances 3.53x the target's; after
    these 300 steps the worst variance error measured is 2.54, 51x the 5% bound)."""
    real = _underdamped.underdamped_step

    def wrong_step(x, v, g, h, *, seed=None, stream=0, row_ids=None, drift=True, friction=1.0, **kw):
        if not drift:
            return real(x, v, g, h, drift=False, friction=friction, **kw)
        z = philox_normal(x.shape, seed, stream, row_ids=row_ids) / math.sqrt(-math.expm1(-2 * friction * h))
        return real(x, v, g, h, noise=z, row_ids=row_ids, friction=friction, **kw)

    monkeypatch.setattr(_underdamped, "underdamped_step", wrong_step)
    mean_err, var_err = run_8d()
    assert var_err > 0.05 * 10, var_err  # fails the 5% bound by a factor of more than 10


def literal_baoab(x, v, grad, h, n, gamma, m, temperature, seed, row_ids):
    """BAOAB as the paper writes it -- B, A, O, A, B, each step on its own gradient evaluations -- in float64."""
    hh = h[:, None]
    for i in range(n):
        v = v + hh / 2 * grad(x)
        x = x + hh / 2 * v / m
        c = torch.exp(-gamma * hh)
        z = philox_normal(x.shape, seed, i, row_ids=row_ids, dtype=torch.float64)
        v = c * v + torch.sqrt((1 - c * c) * temperature * m) * z
        x = x + hh / 2 * v / m
        v = v + hh / 2 * grad(x)
    return x, v


def test_merged_kicks_equal_the_literal_splitting():
    """The fused run (one pass per step, half-kicks merged, closing half-kick at the end) equals textbook
    BAOAB step for step in float64, with per-chain steps, a per-dimension mass, temperature and row ids;
    ``v=None`` is ``sqrt(T*M) * z`` on ``VELOCITY_STREAM``. Detects a wrong kick size on the first, middle or
    last step and any noise-stream mix-up."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 8, generator=g, dtype=torch.float64)
    h = torch.rand(5, generator=g, dtype=torch.float64) * 0.5 + 0.1
    h = h.float().double()  # the sampler keeps per-chain steps in float32
    m = (torch.rand(8, generator=g) + 0.5).double()
    rid = torch.arange(3, 8)
    kw = dict(friction=0.6, temperature=1.5, seed=5, row_ids=rid)
    x, v = mcmc.underdamped_langevin(gauss_grad, x0, h, 6, mass=m, return_velocity=True, backend="reference", **kw)
    v0 = math.sqrt(1.5) * m.sqrt() * philox_normal((5, 8), 5, _underdamped.VELOCITY_STREAM, row_ids=rid,
                                                   dtype=torch.float64)
    xe, ve = literal_baoab(x0, v0, gauss_grad, h, 6, 0.6, m, 1.5, 5, rid)
    torch.testing.assert_close(x, xe, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v, ve, rtol=1e-12, atol=1e-12)


def test_kernel_run_matches_the_torch_path():
    """A short run on the Triton kernel (interpreted on CPU) against the torch path: same Philox noise bit for
    bit, so the trajectories agree to float32 rounding."""
    x0 = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    kw = dict(friction=0.5, mass=torch.linspace(0.5, 2.0, 8), seed=3, return_velocity=True, record_every=2)
    xt, vt, dt = mcmc.underdamped_langevin(gauss_grad, x0, 0.3, 4, backend="triton", **kw)
    xc, vc, dc = mcmc.underdamped_langevin(gauss_grad, x0, 0.3, 4, backend="torch", **kw)
    for a, b in ((xt, xc), (vt, vc), (dt, dc)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_record_every_draws_are_the_states_a_callback_sees():
    """draws[:, j] is the state after step (j + 1) * k, shaped (chains, n_steps // k, *event), in x's dtype;
    steps past the last full block are not recorded."""
    seen = []
    x0 = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(2))
    x, draws = mcmc.underdamped_langevin(lambda x: -x, x0, 0.2, 11, seed=1, record_every=3,
                                         callback=lambda s: seen.append(s["x"].clone()))
    assert draws.shape == (6, 3, 2, 3) and draws.dtype == x0.dtype
    for j in range(3):
        assert torch.equal(draws[:, j], seen[3 * j + 2])
    assert torch.equal(x, seen[-1])


def test_return_conventions():
    x0 = torch.randn(4, 3)
    f = lambda x: -x  # noqa: E731
    assert isinstance(mcmc.underdamped_langevin(f, x0, 0.1, 4, seed=0), torch.Tensor)
    x, v = mcmc.underdamped_langevin(f, x0, 0.1, 4, seed=0, return_velocity=True)
    x2, d = mcmc.underdamped_langevin(f, x0, 0.1, 4, seed=0, record_every=2)
    x3, v3, d3 = mcmc.underdamped_langevin(f, x0, 0.1, 4, seed=0, record_every=2, return_velocity=True)
    assert v.shape == x.shape and d.shape == (4, 2, 3)
    assert torch.equal(x, x2) and torch.equal(x, x3) and torch.equal(v, v3) and torch.equal(d, d3)
    x4, v4 = mcmc.underdamped_langevin(f, x0, 0.1, 0, seed=0, return_velocity=True)
    assert torch.equal(x4, x0) and torch.equal(v4, philox_normal((4, 3), 0, _underdamped.VELOCITY_STREAM))


def test_batch_split_invariance_and_rerun_identity():
    """Chains split over two calls with row_ids give the whole batch's states, draws and velocities bit for
    bit (the initial velocity too: it is keyed by row id), and a rerun from the same seed is identical."""
    x0 = torch.randn(10, 8, generator=torch.Generator().manual_seed(3))
    h = torch.linspace(0.1, 0.5, 10)
    kw = dict(friction=0.5, seed=7, return_velocity=True, record_every=2)
    whole = mcmc.underdamped_langevin(gauss_grad, x0, h, 6, **kw)
    again = mcmc.underdamped_langevin(gauss_grad, x0, h, 6, **kw)
    parts = [mcmc.underdamped_langevin(gauss_grad, x0[s], h[s], 6, row_ids=torch.arange(10)[s], **kw)
             for s in (slice(0, 4), slice(4, 10))]
    for k in range(3):
        assert torch.equal(whole[k], again[k])
        assert torch.equal(torch.cat([p[k] for p in parts]), whole[k])


def test_caller_tensors_and_global_rng_untouched():
    x0, v0 = torch.randn(4, 3), torch.randn(4, 3)
    xs, vs = x0.clone(), v0.clone()
    state = torch.get_rng_state()
    x, v = mcmc.underdamped_langevin(lambda x: -x, x0, 0.1, 3, v=v0, seed=1, return_velocity=True)
    assert torch.equal(x0, xs) and torch.equal(v0, vs)
    assert x.data_ptr() != x0.data_ptr() and v.data_ptr() != v0.data_ptr()
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_empty_batch(backend):
    """0 chains is a valid batch for the op (every backend) and the sampler: results of x's shape."""
    x = torch.zeros(0, 3)
    out = fastdiff.underdamped_step(x, x, x, torch.zeros(0), seed=0, backend=backend)
    assert [t.shape for t in out] == [x.shape] * 2
    x1, v1, d1 = mcmc.underdamped_langevin(lambda x: -x, x, 0.1, 3, seed=0, return_velocity=True, record_every=1,
                                           backend=backend)
    assert x1.shape == v1.shape == x.shape and d1.shape == (0, 3, 3)


def test_top_level_export():
    assert fastdiff.underdamped_langevin is mcmc.underdamped_langevin
    assert fastdiff.underdamped_step is fastdiff.ops.underdamped_step


BAD = [
    ("friction", dict(friction=-0.1), ValueError, "friction"),
    ("mass shape", dict(mass=torch.ones(4)), ValueError, "mass"),
    ("v shape", dict(v=torch.zeros(4, 2)), ValueError, "v must have shape"),
    ("n_steps", dict(n_steps=-1), ValueError, "n_steps"),
    ("step", dict(step_size=0.0), ValueError, "step_size"),
    ("temperature", dict(temperature=math.inf), ValueError, "temperature"),
    ("return_velocity", dict(return_velocity=1), TypeError, "return_velocity"),
    ("record_every zero", dict(record_every=0), ValueError, "record_every"),
    ("record_every float", dict(record_every=1.5), TypeError, "record_every"),
    ("grad shape", dict(grad_log_prob=lambda x: x[:, :1]), ValueError, "grad_log_prob"),
]


@pytest.mark.parametrize("over,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(over, exc, match):
    kw = dict(grad_log_prob=lambda x: -x, x=torch.zeros(4, 3), step_size=0.1, n_steps=2, seed=0)
    kw.update(over)
    with pytest.raises(exc, match=match):
        mcmc.underdamped_langevin(kw.pop("grad_log_prob"), kw.pop("x"), kw.pop("step_size"), kw.pop("n_steps"), **kw)


# ---------------------------------------------------------------------------------------------------------
# record_every on langevin and mala


def test_langevin_record_every():
    seen = []
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(4))
    x, draws = mcmc.langevin(lambda x: -x, x0, 0.1, 7, seed=2, record_every=2,
                             callback=lambda s: seen.append(s["x"].clone()))
    assert draws.shape == (5, 3, 2)
    for j in range(3):
        assert torch.equal(draws[:, j], seen[2 * j + 1])
    assert torch.equal(x, mcmc.langevin(lambda x: -x, x0, 0.1, 7, seed=2))  # recording changes nothing


def test_mala_record_every_and_return_order():
    seen = []
    lp = lambda x: -0.5 * (x ** 2).sum(1)  # noqa: E731
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(5))
    x, acc, draws = mcmc.mala(lp, x0, 0.5, 8, seed=3, record_every=4, callback=lambda s: seen.append(s["x"].clone()))
    assert draws.shape == (6, 2, 3)
    assert torch.equal(draws[:, 0], seen[3]) and torch.equal(draws[:, 1], seen[7])
    x2, acc2, h2, draws2 = mcmc.mala(lp, x0, 0.5, 8, seed=3, record_every=4, adapt_steps=4, return_step_size=True)
    assert h2.shape == (6,) and draws2.shape == (6, 2, 3) and torch.equal(draws2[:, 1], x2)
    x3, acc3 = mcmc.mala(lp, x0, 0.5, 8, seed=3)
    assert torch.equal(x, x3) and torch.equal(acc, acc3)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (True, TypeError), ("2", TypeError)])
def test_record_every_is_checked(bad, exc):
    with pytest.raises(exc, match="record_every"):
        mcmc.langevin(lambda x: -x, torch.zeros(2, 2), 0.1, 3, seed=0, record_every=bad)
    with pytest.raises(exc, match="record_every"):
        mcmc.mala(lambda x: -(x ** 2).sum(1), torch.zeros(2, 2), 0.1, 3, seed=0, record_every=bad)
