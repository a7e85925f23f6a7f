"""Annealed Langevin, predictor-corrector, fused-vs-reference paths, batch-split invariance, memory and
energy-based models for fastdiff.mcmc."""
import gc
import math
import os
import warnings

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff import mcmc
from fastdiff.toy import GaussianMixture


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Well separated components: local MCMC cannot fix the weights, annealing / reverse SDEs must.
MEANS = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
SEP = GaussianMixture(MEANS, torch.tensor([0.5, 0.7, 0.4]), torch.tensor([0.5, 0.3, 0.2]))


def check_mixture(x, frac_tol=0.04, scale_tol=0.12):
    """Component fractions within frac_tol of the weights (n=2000: ~3.5 binomial sd), and each component's
    RMS radius within scale_tol (relative) of the exact s*sqrt(2): detects wrong weights or a 12% scale error."""
    x = x.double()
    assert bool(torch.isfinite(x).all())
    d = ((x[:, None, :] - MEANS[None].double()) ** 2).sum(-1)
    k = d.argmin(1)
    frac = torch.bincount(k, minlength=3).double() / len(x)
    assert (frac - SEP.weights).abs().max() < frac_tol, frac
    for j in range(3):
        rms = (x[k == j] - MEANS[j].double()).pow(2).sum(1).mean().sqrt()
        exact = SEP.stds[j] * math.sqrt(2.0)
        assert abs(rms / exact - 1) < scale_tol, (j, rms.item(), exact.item())


def vp_score(sde, gmm=SEP):
    """Exact score of x_t = alpha x0 + sigma eps from the VE denoiser: x_t/alpha = x0 + (sigma/alpha) eps."""
    def score(x, t):
        # float64: (alpha*D - x) / sigma^2 cancels catastrophically in float32 once sigma^2 ~ 1e-8 (sub-VP, t ~ 0)
        a, s = sde.marginal(t.double())
        a, s, xd = a[:, None], s[:, None], x.double()
        d = gmm.denoiser(xd / a, (s / a)[:, 0])
        return ((a * d - xd) / s ** 2).to(x.dtype)
    return score


def ve_score(sde, gmm=SEP):
    return lambda x, t: gmm.grad_log_prob(x.double(), sde.sigma(t)).to(x.dtype)


def test_vp_score_from_denoiser_matches_exact_marginal_score():
    # The test's VP score (via the VE denoiser) equals the exact gradient of the VP marginal
    # p_t(x) = p^VE_{sigma/alpha}(x/alpha) / alpha^d, i.e. (1/alpha) grad log p^VE(x/alpha).
    sde = mcmc.VPSDE()
    t = torch.full((50,), 0.4, dtype=torch.float64)
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a, s = sde.marginal(t)
    exact = SEP.grad_log_prob(x / a[:, None], (s / a)) / a[:, None]
    torch.testing.assert_close(vp_score(sde)(x, t), exact, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# annealed Langevin and predictor-corrector against the exact mixture


def test_annealed_langevin_lands_on_mixture():
    # Fractions and per-component scale (check_mixture); plain Langevin from the same start keeps the
    # weights of the start's basins (uniform start: ~equal thirds), which check_mixture rejects.
    n = 2000
    x0 = 16 * torch.rand(n, 2, generator=torch.Generator().manual_seed(1)) - 8
    sig = torch.logspace(1, -2, 10)
    score = lambda x, s: SEP.grad_log_prob(x.double(), s.double()).float()  # noqa: E731
    x = mcmc.annealed_langevin(score, x0, sig, n_steps_each=60, step_lr=5e-5, seed=2)
    check_mixture(x)
    x_plain = mcmc.langevin(lambda v: SEP.grad_log_prob(v.double()).float(), x0, 0.01, 300, seed=2)
    with pytest.raises(AssertionError):
        check_mixture(x_plain)


@pytest.mark.parametrize("kind,predictor,rule", [
    ("ve", "reverse_diffusion", "batch_mean"),
    ("ve", "euler_maruyama", "batch_mean"),
    ("vp", "reverse_diffusion", "batch_mean"),
    ("vp", "euler_maruyama", "per_sample"),
    ("subvp", "euler_maruyama", "batch_mean"),
])
def test_predictor_corrector_matches_mixture(kind, predictor, rule):
    # Exact scores of the separated mixture, 200 steps: weights and component scales (check_mixture).
    # The per-sample SNR rule makes the corrector step state-dependent (h ~ 1/|score|^2), whose stationary
    # law is ~p_t/h rather than p_t: it over-disperses each component by ~20-25% here (documented), so its
    # scale tolerance is wider; the weights must still be right.
    n = 2000
    sde = {"ve": mcmc.VESDE(0.01, 20.0), "vp": mcmc.VPSDE(), "subvp": mcmc.SubVPSDE()}[kind]
    score = ve_score(sde) if kind == "ve" else vp_score(sde)
    x_t = sde.prior_sample((n, 2), seed=3)
    x = mcmc.predictor_corrector(score, x_t, sde, 200, predictor=predictor, snr_rule=rule, seed=4)
    check_mixture(x, scale_tol=0.35 if rule == "per_sample" else 0.12)


def test_predictor_corrector_detects_wrong_score():
    # Same VE sampler with the score of the wrong noise level (sigma(t)*1.5): the check must fail, so the
    # check_mixture tolerance is tight enough to catch a mis-specified SDE/score pairing.
    sde = mcmc.VESDE(0.01, 20.0)
    wrong = lambda x, t: SEP.grad_log_prob(x.double(), 1.5 * sde.sigma(t)).float()  # noqa: E731
    x = mcmc.predictor_corrector(wrong, sde.prior_sample((2000, 2), seed=3), sde, 200, seed=4)
    with pytest.raises(AssertionError):
        check_mixture(x)


def test_sde_marginals_and_discretisations():
    # Closed forms (Song et al. 2021): VP alpha^2 + sigma^2 = 1; sub-VP sigma = 1 - alpha^2; VE sigma(t);
    # the VE reverse-diffusion G^2 over the grid telescopes to sigma_max^2 - 0; VP discrete betas.
    vp, sub, ve = mcmc.VPSDE(0.1, 20.0), mcmc.SubVPSDE(0.1, 20.0), mcmc.VESDE(0.01, 50.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    a, s = vp.marginal(t)
    torch.testing.assert_close(a ** 2 + s ** 2, torch.ones_like(t))
    torch.testing.assert_close(a, torch.exp(-0.25 * t ** 2 * 19.9 - 0.05 * t))
    a2, s2 = sub.marginal(t)
    torch.testing.assert_close(s2, 1 - a2 ** 2)
    torch.testing.assert_close(ve.marginal(t)[1], 0.01 * 5000.0 ** t)
    n = 100
    ts = [1.0 + (1e-5 - 1.0) * i / (n - 1) for i in range(n)]
    g2 = sum(ve.discretize(tt, n)[1] ** 2 for tt in ts)
    assert abs(g2 - 50.0 ** 2) < 1e-6 * 2500
    f, g = vp.discretize(1.0, n)
    assert abs(g ** 2 - 20.0 / n) < 1e-12 and abs(f - (math.sqrt(1 - 20.0 / n) - 1)) < 1e-12


def test_vp_sdes_take_their_marginals_from_the_schedule():
    # one formula: the VP and sub-VP SDEs read alpha (and the VP sigma) from a ContinuousVPSchedule, bit for bit
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for cls in (mcmc.VPSDE, mcmc.SubVPSDE):
        sde = cls(0.5, 7.0)
        sched = fastdiff.ContinuousVPSchedule(0.5, 7.0)
        assert (sde.schedule.beta_min, sde.schedule.beta_max) == (sde.beta_min, sde.beta_max) == (0.5, 7.0)
        alpha, sigma = sde.marginal(t)
        assert torch.equal(alpha, sched.alpha_sigma(t)[0])
        assert torch.equal(sigma, sched.alpha_sigma(t)[1] if cls is mcmc.VPSDE else -torch.expm1(2 * sched.log_alpha(t)))


# ---------------------------------------------------------------------------------------------------------
# fused (Triton interpreter) paths against the plain-PyTorch reference


def _gauss(x):
    return -0.5 * (x.float() ** 2).flatten(1).sum(1)


def test_langevin_triton_matches_reference():
    x0 = torch.randn(8, 2, 3, generator=torch.Generator().manual_seed(5))
    h = torch.linspace(0.01, 0.2, 8)
    for step in (0.05, h):
        a = mcmc.langevin(lambda v: -v, x0, step, 3, temperature=0.7, seed=6, backend="triton")
        b = mcmc.langevin(lambda v: -v, x0, step, 3, temperature=0.7, seed=6, backend="reference")
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_mala_triton_matches_reference():
    x0 = 2 * torch.randn(16, 3, generator=torch.Generator().manual_seed(7))
    runs = {}
    for backend in ("triton", "reference"):
        acc_all = []
        out = mcmc.mala(_gauss, x0, 0.9, 4, seed=8, adapt_steps=2, return_step_size=True, backend=backend,
                        callback=lambda d: acc_all.append(d["accept"].clone()))
        runs[backend] = out + (torch.stack(acc_all),)
    (a, acc_a, h_a, dec_a), (b, acc_b, h_b, dec_b) = runs["triton"], runs["reference"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(dec_a, dec_b) and torch.equal(acc_a, acc_b)
    assert 0 < dec_a.float().mean() < 1  # both branches of the select kernel ran
    torch.testing.assert_close(h_a, h_b)


def test_annealed_and_pc_triton_match_reference():
    x0 = 3 * torch.randn(8, 2, generator=torch.Generator().manual_seed(9))
    score = lambda x, s: SEP.grad_log_prob(x.double(), s.double()).float()  # noqa: E731
    kw = dict(n_steps_each=2, step_lr=1e-3, seed=10, denoise=True)
    a = mcmc.annealed_langevin(score, x0, [1.0, 0.5], backend="triton", **kw)
    b = mcmc.annealed_langevin(score, x0, [1.0, 0.5], backend="reference", **kw)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    ve = mcmc.VESDE(0.01, 10.0)
    vp = mcmc.VPSDE()
    for sde, score, kw in [(ve, ve_score(ve), dict(predictor="reverse_diffusion", snr_rule="batch_mean")),
                           (vp, vp_score(vp), dict(predictor="euler_maruyama", snr_rule="per_sample")),
                           (vp, vp_score(vp), dict(predictor="none", n_corrector_steps=2))]:
        x_t = sde.prior_sample((8, 2), seed=11)
        a = mcmc.predictor_corrector(score, x_t, sde, 3, seed=12, eps=0.5, backend="triton", **kw)
        b = mcmc.predictor_corrector(score, x_t, sde, 3, seed=12, eps=0.5, backend="reference", **kw)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# batch-split / row-id invariance


def test_batch_split_invariance():
    # A chain's trajectory depends only on (seed, row id): splitting the batch or permuting it with the
    # matching row ids gives the same chains, for ULA, MALA (adaptation included) and per-sample PC.
    g = torch.Generator().manual_seed(13)
    x0 = 2 * torch.randn(10, 3, generator=g)
    h = torch.rand(10, generator=g) + 0.1
    rid = torch.arange(10)
    parts = (slice(0, 4), slice(4, 10))

    full = mcmc.langevin(lambda v: -v, x0, h, 5, seed=14)
    split = torch.cat([mcmc.langevin(lambda v: -v, x0[p], h[p], 5, seed=14, row_ids=rid[p]) for p in parts])
    assert torch.equal(full, split)

    full_x, full_acc, full_h = mcmc.mala(_gauss, x0, h, 12, seed=15, adapt_steps=6, return_step_size=True)
    outs = [mcmc.mala(_gauss, x0[p], h[p], 12, seed=15, adapt_steps=6, return_step_size=True, row_ids=rid[p])
            for p in parts]
    torch.testing.assert_close(full_x, torch.cat([o[0] for o in outs]), rtol=1e-6, atol=1e-6)
    assert torch.equal(full_acc, torch.cat([o[1] for o in outs]))
    torch.testing.assert_close(full_h, torch.cat([o[2] for o in outs]))
    perm = torch.randperm(10, generator=g)
    px, pacc = mcmc.mala(_gauss, x0[perm], h[perm], 12, seed=15, adapt_steps=6, row_ids=perm)
    torch.testing.assert_close(px, full_x[perm], rtol=1e-6, atol=1e-6)
    assert torch.equal(pacc, full_acc[perm])

    sde = mcmc.VPSDE()
    x_t = sde.prior_sample((10, 2), seed=16)
    kw = dict(snr_rule="per_sample", seed=17)
    full = mcmc.predictor_corrector(vp_score(sde), x_t, sde, 30, **kw)
    split = torch.cat([mcmc.predictor_corrector(vp_score(sde), x_t[p], sde, 30, row_ids=rid[p], **kw)
                       for p in parts])
    torch.testing.assert_close(full, split, rtol=1e-6, atol=1e-6)
    # the prior sample itself is row-keyed too
    assert torch.equal(sde.prior_sample((4, 2), seed=16, row_ids=rid[6:10]), x_t[6:10])


# ---------------------------------------------------------------------------------------------------------
# memory and energy-based models


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns about deprecations
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


class _MLPEnergy(torch.nn.Module):
    def __init__(self, d=8, width=128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.SiLU(), torch.nn.Linear(width, width),
                                       torch.nn.SiLU(), torch.nn.Linear(width, 1))

    def forward(self, x):
        return 0.5 * (x ** 2).sum(1) + 0.1 * self.net(x)[:, 0]


def test_mala_memory_flat_over_long_run():
    # Live tensors between step 200 and step 2000 of a MALA run (autograd gradient): any per-step history
    # (a list of states, a graph kept alive through a stored tensor) would add >= 1800 tensors.
    marks = {}

    def cb(d):
        if d["i"] in (199, 1999):
            gc.collect()
            marks[d["i"]] = _live_tensors()

    mcmc.mala(_gauss, torch.randn(64, 4), 0.5, 2000, seed=18, adapt_steps=100, callback=cb)
    assert marks[1999] - marks[199] <= 2, marks
    # the measurement catches a leak of one tensor per step
    kept, marks_leak = [], {}

    def leaky(d):
        kept.append(d["x"].clone())
        if d["i"] in (49, 249):
            gc.collect()
            marks_leak[d["i"]] = _live_tensors()

    mcmc.mala(_gauss, torch.randn(64, 4), 0.5, 250, seed=18, callback=leaky)
    assert marks_leak[249] - marks_leak[49] >= 200


def test_energy_grad_memory_flat_and_no_graph_leak():
    # 2000 Langevin steps with an nn.Module energy: RSS growth between step 200 and 2000 must stay under
    # 12 MB. Control: keeping each step's graph alive (as a leaking helper would) grows RSS by more than twice
    # that bound in 200 steps (~40-60 MB, less when earlier tests left freed heap to reuse), so the bound is
    # sensitive to exactly the failure it guards against.
    torch.manual_seed(0)
    net = _MLPEnergy()
    eg = mcmc.energy_grad(net)
    x0 = torch.randn(256, 8, generator=torch.Generator().manual_seed(19))
    marks = {}

    def cb(d):
        if d["i"] in (199, 1999):
            marks[d["i"]] = _rss()

    x = mcmc.langevin(eg, x0, 0.01, 2000, seed=20, callback=cb)
    assert marks[1999] - marks[199] < 12 * 2**20, (marks[1999] - marks[199]) / 2**20
    assert bool(torch.isfinite(x).all()) and x.grad_fn is None and not x.requires_grad
    assert all(p.grad is None for p in net.parameters())  # parameters' .grad never touched

    graphs = []

    def leaking_grad(v):
        with torch.enable_grad():
            vr = v.detach().requires_grad_(True)
            out = -net(vr)
            graphs.append(out)  # the bug: an output holding its graph kept alive
            return torch.autograd.grad(out.sum(), vr, retain_graph=True)[0]

    leak_marks = {}

    def cb2(d):
        if d["i"] in (9, 209):
            leak_marks[d["i"]] = _rss()

    mcmc.langevin(leaking_grad, x0, 0.01, 210, seed=20, callback=cb2)
    grown = leak_marks[209] - leak_marks[9]
    del graphs[:]
    assert grown > 2 * 12 * 2**20, grown / 2**20


def test_energy_grad_values():
    # E(x) = |x|^2 / 2 as a Module: grad log p = -x; kind="log_prob" flips the sign; (batch, 1) outputs ok.
    class Quad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return (0.5 * self.scale * (x ** 2).sum(1)).unsqueeze(1)

    q = Quad()
    x = torch.randn(5, 3)
    g = mcmc.energy_grad(q)(x)
    torch.testing.assert_close(g, -x)
    assert g.grad_fn is None and q.scale.grad is None
    torch.testing.assert_close(mcmc.energy_grad(q, kind="log_prob")(x), x)
    lp, g2 = mcmc.energy_grad(q).value_and_grad(x)
    torch.testing.assert_close(lp, -0.5 * (x ** 2).sum(1))
    # works under an outer no_grad (the samplers' loops) and in MALA through log_prob
    with torch.no_grad():
        torch.testing.assert_close(mcmc.energy_grad(q)(x), -x)
    xm, acc = mcmc.mala(mcmc.energy_grad(q).log_prob, x, 0.5, 3, seed=1)
    assert xm.shape == x.shape and acc.shape == (5,)
    with pytest.raises(ValueError, match="one value per chain"):
        mcmc.energy_grad(lambda v: v)(x)
    with pytest.raises(ValueError, match="kind"):
        mcmc.energy_grad(q, kind="score")


# ---------------------------------------------------------------------------------------------------------
# argument checking, callbacks, progress


def test_bad_arguments_raise():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="step_size"):
        mcmc.langevin(lambda v: -v, x, -0.1, 3, seed=0)
    with pytest.raises(ValueError, match="step_size"):
        mcmc.langevin(lambda v: -v, x, torch.tensor([0.1, 0.1, 0.0, 0.1]), 3, seed=0)
    with pytest.raises(ValueError, match="step_size"):
        mcmc.mala(_gauss, x, torch.ones(3), 3, seed=0)
    with pytest.raises(ValueError, match="n_steps"):
        mcmc.langevin(lambda v: -v, x, 0.1, -1, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        mcmc.langevin(lambda v: -v, x, 0.1, 3, temperature=0.0, seed=0)
    with pytest.raises(ValueError, match="grad_log_prob"):
        mcmc.langevin(lambda v: v[:, :1], x, 0.1, 3, seed=0)
    with pytest.raises(TypeError, match="grad_log_prob"):
        mcmc.langevin("not callable", x, 0.1, 3, seed=0)
    with pytest.raises(TypeError, match="x"):
        mcmc.langevin(lambda v: -v, [1.0, 2.0], 0.1, 3, seed=0)
    with pytest.raises(ValueError, match="log_prob"):
        mcmc.mala(lambda v: v, x, 0.1, 3, seed=0)
    with pytest.raises(ValueError, match="adapt_steps"):
        mcmc.mala(_gauss, x, 0.1, 3, adapt_steps=4, seed=0)
    with pytest.raises(ValueError, match="target_accept"):
        mcmc.mala(_gauss, x, 0.1, 3, adapt_steps=2, target_accept=1.5, seed=0)
    with pytest.raises(ValueError, match="row_ids"):
        mcmc.mala(_gauss, x, 0.1, 3, seed=0, row_ids=torch.arange(3))
    with pytest.raises(ValueError, match="sigmas"):
        mcmc.annealed_langevin(lambda v, s: -v, x, [1.0, -0.5], seed=0)
    with pytest.raises(ValueError, match="sde"):
        mcmc.predictor_corrector(lambda v, t: -v, x, "vx", 3, seed=0)
    with pytest.raises(TypeError, match="sde"):
        mcmc.predictor_corrector(lambda v, t: -v, x, object(), 3, seed=0)
    with pytest.raises(ValueError, match="predictor"):
        mcmc.predictor_corrector(lambda v, t: -v, x, "ve", 3, predictor="heun", seed=0)
    with pytest.raises(ValueError, match="snr_rule"):
        mcmc.predictor_corrector(lambda v, t: -v, x, "ve", 3, snr_rule="median", seed=0)
    with pytest.raises(ValueError, match="sigma_max"):
        mcmc.VESDE(1.0, 0.5)
    with pytest.raises(ValueError, match="seed"):
        mcmc.langevin(lambda v: -v, x, 0.1, 3, seed=-1)
    # step counts: the library's int check (TypeError for a non-int, bools included; any integer type is taken)
    with pytest.raises(TypeError, match="n_steps"):
        mcmc.langevin(lambda v: -v, x, 0.1, 3.0, seed=0)
    with pytest.raises(TypeError, match="adapt_steps"):
        mcmc.mala(_gauss, x, 0.1, 3, adapt_steps=True, seed=0)
    with pytest.raises(ValueError, match="n_steps_each"):
        mcmc.annealed_langevin(lambda v, s: -v, x, [1.0], n_steps_each=0, seed=0)
    with pytest.raises(TypeError, match="n_corrector_steps"):
        mcmc.predictor_corrector(lambda v, t: -v, x, "ve", 3, n_corrector_steps=1.0, seed=0)
    assert torch.equal(mcmc.langevin(lambda v: -v, x, 0.1, np.int64(3), seed=0),
                       mcmc.langevin(lambda v: -v, x, 0.1, 3, seed=0))


def test_callback_progress_and_inputs_untouched():
    x = torch.randn(6, 2)
    x_copy = x.clone()
    seen = []
    out = mcmc.langevin(lambda v: -v, x, 0.1, 4, seed=0, progress=True, callback=lambda d: seen.append(d["i"]))
    assert seen == [0, 1, 2, 3] and torch.equal(x, x_copy) and out.data_ptr() != x.data_ptr()
    out, acc = mcmc.mala(_gauss, x, 0.1, 0, seed=0)
    assert torch.equal(out, x) and bool(torch.isnan(acc).all())
    # same seed -> same result; a different seed -> different noise
    a = mcmc.langevin(lambda v: -v, x, 0.1, 4, seed=3)
    assert torch.equal(a, mcmc.langevin(lambda v: -v, x, 0.1, 4, seed=3))
    assert not torch.equal(a, mcmc.langevin(lambda v: -v, x, 0.1, 4, seed=4))
    assert torch.equal(x, x_copy)
