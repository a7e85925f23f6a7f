"""The MCMC panel of ``fastdiff demo``: ULA, MALA, underdamped Langevin and HMC on two hard 2-D targets.

Each sampler runs many chains from the same start for a budget of gradient evaluations (MALA and HMC
adapt their step size during the first third of the run), and the panel plots the sliced 2-Wasserstein
distance between the chains after ``k`` gradient evaluations and exact samples against ``k`` (the
evaluations are counted by wrapping ``grad_log_prob``, so HMC's start-up gradient is included). The targets:

* an ill-conditioned Gaussian: standard deviations 3 and 0.3 (condition number 100), rotated by 45 degrees;
* a banana (Haario et al.'s twisted Gaussian): ``x1 ~ N(0, 2^2)``, ``x2 = y + 0.3 (x1^2 - 4)``, ``y ~ N(0, 1)``.

Both have exact samplers, so the sampling-noise floor (exact vs exact) is drawn too. The table gives each
run's bulk ESS (per 1000 gradient evaluations) and largest R-hat over the coordinates, from the draws after
warm-up (:func:`fastdiff.mcmc.ess`, :func:`fastdiff.mcmc.rhat`). A sampler this build lacks is skipped with
a note in the figure.

Example:
    >>> t = banana()
    >>> x = t.sample(1000, 0)
    >>> tuple(x.shape), tuple(t.grad_log_prob(x).shape)
    ((1000, 2), (1000, 2))
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import torch

__all__ = ["McmcTarget", "ill_conditioned_gaussian", "banana", "METHODS", "run_mcmc_panel"]


@dataclass(frozen=True)
class McmcTarget:
    """A 2-D density with its exact log-density, gradient and sampler (``sample(n, seed)``, float64)."""

    name: str
    title: str
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    grad_log_prob: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[int, int], torch.Tensor]
    # per sampler: the step size (the initial one where it adapts) and its other keyword arguments
    settings: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def ill_conditioned_gaussian(sd: Tuple[float, float] = (3.0, 0.3), angle: float = math.pi / 4) -> McmcTarget:
    """``N(0, R diag(sd^2) R^T)`` with R the rotation by ``angle``.

    Example:
        >>> t = ill_conditioned_gaussian()
        >>> bool(torch.allclose(t.grad_log_prob(torch.zeros(3, 2)), torch.zeros(3, 2)))
        True
    """
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    prec = rot @ torch.diag(torch.tensor(sd, dtype=torch.float64) ** -2) @ rot.T
    scale = rot @ torch.diag(torch.tensor(sd, dtype=torch.float64))

    def grad(x: torch.Tensor) -> torch.Tensor:
        return -x @ prec.to(x.dtype)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x * grad(x)).sum(1)

    def sample(n: int, seed: int) -> torch.Tensor:
        z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return z @ scale.T

    # steps: ULA's bias is O(h / sd_min^2); BAOAB is exact in law on Gaussians for h < 2 sd_min, and the
    # friction ~ 1 / sd_max mixes the slow direction; HMC's trajectory 10 x 0.2 ~ 2/3 of sd_max
    return McmcTarget("gaussian", f"ill-conditioned Gaussian (sd {sd[0]:g}, {sd[1]:g}; rotated)", log_prob, grad,
                      sample, {"ULA": dict(step_size=0.02), "MALA": dict(step_size=0.05),
                               "underdamped": dict(step_size=0.25, friction=0.5),
                               "HMC": dict(step_size=0.2, n_leapfrog=10)})


def banana(a: float = 2.0, b: float = 0.3) -> McmcTarget:
    """The twisted Gaussian ``x1 ~ N(0, a^2)``, ``x2 | x1 ~ N(b (x1^2 - a^2), 1)``.

    Example:
        >>> t = banana()
        >>> float(t.log_prob(torch.tensor([[0.0, -1.2]]))) == 0.0    # the mode, a = 2, b = 0.3
        True
    """

    def resid(x: torch.Tensor) -> torch.Tensor:
        return x[:, 1] - b * (x[:, 0] ** 2 - a * a)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x[:, 0] / a) ** 2 - 0.5 * resid(x) ** 2

    def grad(x: torch.Tensor) -> torch.Tensor:
        r = resid(x)
        return torch.stack([-x[:, 0] / (a * a) + 2.0 * b * x[:, 0] * r, -r], dim=1)

    def sample(n: int, seed: int) -> torch.Tensor:
        z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x1 = a * z[:, 0]
        return torch.stack([x1, z[:, 1] + b * (x1 * x1 - a * a)], dim=1)

    return McmcTarget("banana", f"banana (twisted Gaussian, a={a:g}, b={b:g})", log_prob, grad, sample,
                      {"ULA": dict(step_size=0.02), "MALA": dict(step_size=0.05),
                       "underdamped": dict(step_size=0.2, friction=1.0),
                       "HMC": dict(step_size=0.15, n_leapfrog=10)})


# ----------------------------------------------------------------------------------------------------------
# the samplers, one calling convention: (mc, target, x0, n_steps, seed, grad, record_every) -> (x, acc, draws)


class _Counted:
    """Counts calls of a gradient (host counter: no device sync)."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn(x)


def _warm_up(n_steps: int) -> int:
    """MALA's and HMC's step-size adaptation: the first third of the run."""
    return n_steps // 3


# Each runner: (mc, target, x0, n_steps, seed, grad, callback) -> (x, acceptance or None, draws after warm-up).
# ULA, MALA and underdamped Langevin record from the first step (warm-up included); HMC from the end of warm-up.


def _run_ula(mc, t, x0, n_steps, seed, grad, cb):
    x, draws = mc.langevin(grad, x0, t.settings["ULA"]["step_size"], n_steps, seed=seed, record_every=1,
                           callback=cb)
    return x, None, draws[:, _warm_up(n_steps):]


def _run_mala(mc, t, x0, n_steps, seed, grad, cb):
    x, acc, draws = mc.mala(t.log_prob, x0, t.settings["MALA"]["step_size"], n_steps, grad_log_prob=grad,
                            seed=seed, adapt_steps=_warm_up(n_steps), record_every=1, callback=cb)
    return x, acc, draws[:, _warm_up(n_steps):]


def _run_underdamped(mc, t, x0, n_steps, seed, grad, cb):
    s = dict(t.settings["underdamped"])
    x, draws = mc.underdamped_langevin(grad, x0, s.pop("step_size"), n_steps, seed=seed, record_every=1,
                                       callback=cb, **s)
    return x, None, draws[:, _warm_up(n_steps):]


def _run_hmc(mc, t, x0, n_steps, seed, grad, cb):
    s = dict(t.settings["HMC"])
    x, acc, draws = mc.hmc(t.log_prob, x0, s.pop("step_size"), n_steps, grad_log_prob=grad, seed=seed,
                           adapt_steps=_warm_up(n_steps), record_every=1, callback=cb, **s)
    return x, acc, draws


# name -> (the fastdiff.mcmc function it needs, runner, gradient evaluations per sampler step)
METHODS: Dict[str, Tuple[str, Callable, Callable[[McmcTarget], int]]] = {
    "ULA": ("langevin", _run_ula, lambda t: 1),
    "MALA": ("mala", _run_mala, lambda t: 1),
    "underdamped": ("underdamped_langevin", _run_underdamped, lambda t: 1),
    "HMC": ("hmc", _run_hmc, lambda t: t.settings["HMC"]["n_leapfrog"]),
}


# ----------------------------------------------------------------------------------------------------------
# the panel


def _budgets(quick: bool) -> Tuple[int, ...]:
    """Checkpoints in gradient evaluations (multiples of every sampler's evaluations per step)."""
    # one CPU core, idle machine: the quick panel (1000 chains) takes ~7 s, the full one (2000 chains) 14 s (27 s
    # with a 1000-evaluation budget). MALA's steps dominate (its Philox uniform on the torch path: ~3 of its
    # ~4 ms per step for 1000 chains)
    return (20, 60, 200, 400) if quick else (20, 60, 200, 600)


def _missing(mc: Any) -> Dict[str, str]:
    """The methods this build cannot run, with why."""
    out = {}
    for name, (fn_name, _, _) in METHODS.items():
        fn = getattr(mc, fn_name, None)
        if fn is None:
            out[name] = f"fastdiff.mcmc.{fn_name} is not in this build"
        elif "record_every" not in inspect.signature(fn).parameters:
            out[name] = f"fastdiff.mcmc.{fn_name} has no record_every in this build"
    return out


def run_mcmc_panel(demo: Any) -> Dict[str, Any]:
    """Run the panel for a ``fastdiff.demo_run._Demo``: adds its table rows and notes, saves ``mcmc.png``.

    Each sampler makes one run of the largest budget; a callback keeps the chains at each checkpoint (with
    the gradient evaluations spent by then) and ``record_every=1`` keeps the draws after warm-up for ESS and
    R-hat. Returns ``{"curves": {target: {method: [(grad evals, sliced-W), ...]}}, "floors", "skipped"}``.
    """
    from . import mcmc as mc
    from .demo_run import _Floor, _Row, _sw

    n = demo.cfg.langevin_chains
    budgets = _budgets(n <= 1000)
    skipped = _missing(mc)
    curves: Dict[str, Dict[str, List[Tuple[int, float]]]] = {}
    floors: Dict[str, Any] = {}
    targets = (ill_conditioned_gaussian(), banana())
    for ti, t in enumerate(targets):
        truth = t.sample(n, demo._seed(300 + ti)).float()
        floors[t.name] = _Floor([_sw(t.sample(n, demo._seed(310 + 2 * j)), t.sample(n, demo._seed(311 + 2 * j)))
                                 for j in range(6)])
        # N(0, I): too narrow along the Gaussian's wide axis, too wide along its narrow one
        x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(demo._seed(320 + ti))).to(demo.device)
        curves[t.name] = {}
        for mi, (name, (_, runner, per_step)) in enumerate(METHODS.items()):
            if name in skipped:
                continue
            grad = _Counted(t.grad_log_prob)
            n_steps = budgets[-1] // per_step(t)
            at_step = {b // per_step(t) - 1: b for b in budgets}  # the step after which a checkpoint falls
            states: List[Tuple[int, torch.Tensor]] = []

            def keep(info: Dict[str, Any]) -> None:
                if info["i"] in at_step:
                    # a copy (x is updated in place), with the evaluations spent so far
                    states.append((grad.calls, info["x"].detach().to("cpu", torch.float32, copy=True)))

            demo._sync()
            t0 = time.perf_counter()
            x, acc, draws = runner(mc, t, x0, n_steps, demo._seed(330 + 10 * ti + mi), grad, keep)
            demo._sync()
            ms = 1e3 * (time.perf_counter() - t0)
            pts = [(evals, _sw(state, truth)) for evals, state in states]
            curves[t.name][name] = pts
            note = "" if acc is None else f"acceptance {float(acc.float().mean()):.2f}; "
            note += _diagnostics_note(mc, draws, n_steps, grad.calls)
            demo.rows.append(_Row(t.name, name.lower(), n_steps, grad.calls, pts[-1][1], ms, note))
    for m, why in skipped.items():
        demo.notes.append(f"the MCMC panel skips {m}: {why}")
    demo.notes.append("MCMC panel: sliced-W of the last state; ESS and R-hat over the draws after warm-up (MALA "
                      "and HMC adapt in the first third); floors (exact vs exact): "
                      + "; ".join(f"{k} {v}" for k, v in floors.items()))
    _figure(demo, targets, curves, floors, skipped)
    return dict(curves=curves, floors=floors, skipped=skipped)


def _diagnostics_note(mc: Any, draws: torch.Tensor, n_steps: int, n_grad: int) -> str:
    """Bulk ESS (smallest coordinate) per 1000 gradient evaluations of the whole run, and the largest R-hat,
    both over the draws after warm-up."""
    kept = draws.cpu()
    if kept.shape[1] < 4:
        return ""
    ess, r = mc.ess(kept), mc.rhat(kept)
    return f"bulk ESS {float(ess.min()):.0f} ({1e3 * float(ess.min()) / n_grad:.0f}/1000 grads), " \
           f"max R-hat {float(r.max()):.3f}"


def _figure(demo: Any, targets: Tuple[McmcTarget, ...], curves: Dict[str, Any], floors: Dict[str, Any],
            skipped: Dict[str, str]) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from .demo_run import _log_y_ticks

    fig = Figure(figsize=(12, 4.6))
    for j, t in enumerate(targets):
        ax = fig.add_subplot(1, 2, j + 1)
        for c, name in enumerate(METHODS):
            pts = curves[t.name].get(name)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="os^D"[c], ms=4, color=f"C{c}", label=name)
        fl = floors[t.name]
        ax.axhspan(fl.lo, fl.hi, color="0.85", zorder=0, label="exact vs exact (min-max)")
        ax.axhline(fl.mean, color="k", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="gradient evaluations per chain",
               ylabel="sliced Wasserstein to exact samples", title=t.title)
        ax.title.set_fontsize(9)
        budgets = _budgets(demo.cfg.langevin_chains <= 1000)
        ax.set_xticks(list(budgets), [str(b) for b in budgets])
        ax.xaxis.set_minor_formatter(NullFormatter())
        _log_y_ticks(ax)
        ax.legend(fontsize=8)
    fig.suptitle(f"MCMC: {demo.cfg.langevin_chains} chains from N(0, I); MALA and HMC adapt their step size "
                 "during the first third of the run", fontsize=10)
    bottom = 0.0
    if skipped:
        fig.text(0.01, 0.01, "not shown: " + "; ".join(f"{m} ({why})" for m, why in skipped.items()),
                 fontsize=9, color="C3", style="italic")
        bottom = 0.05
    fig.tight_layout(rect=(0, bottom, 1, 1))
    demo._save(fig, "mcmc.png")
