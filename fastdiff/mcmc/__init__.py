"""Langevin dynamics and score-based MCMC for many chains at once, on the fused Langevin and step ops.

Samplers of ``p(x) = exp(log_prob(x)) / Z`` (``log_prob`` is an unnormalised
log-density, what the seed notes call ``score(y)``; ``grad_log_prob`` is its
gradient, the modern "score"):

* :func:`langevin` -- unadjusted Langevin (ULA), ``x + h*grad + sqrt(2*h*T)*z``;
  stationary law ``p**(1/T)`` as ``h -> 0``. (The notes' ``y + 2*g*dt + eps*sqrt(dt)``
  is stationary for ``exp(4*log_prob)``, not ``p``.)
* :func:`mala` -- Metropolis-adjusted Langevin: exact for any step size, per-chain
  accept/reject, optional step-size adaptation during warm-up.
* :func:`underdamped_langevin` -- kinetic Langevin with momentum by BAOAB (one fused pass
  per step); beats ULA on ill-conditioned targets (friction about ``2 / sd_max``).
* :func:`annealed_langevin` -- NCSN annealed Langevin over decreasing noise levels.
* :func:`predictor_corrector` -- reverse-SDE predictor + Langevin corrector for the
  VP, sub-VP and VE SDEs (:class:`VPSDE`, :class:`SubVPSDE`, :class:`VESDE`).
* :func:`hmc` -- Hamiltonian Monte Carlo on fused leapfrog passes, with warm-up across
  chains: dual-averaged step sizes, ChEES trajectory lengths, a diagonal mass from the
  chains' variances (see "Choosing HMC" below).
* :func:`energy_grad` -- ``grad_log_prob`` of an ``nn.Module`` energy / log-density
  by autograd, with no graph kept between steps.

Diagnostics of the chains' draws, shaped (chains, draws, *event) as arviz's: :func:`ess`
(bulk, tail and other effective sample sizes) and :func:`rhat` (rank-normalised split
R-hat), both Vehtari et al. (2021), equal to arviz-stats' values.

Every update is one fused pass (``fastdiff.ops.langevin_step`` /
``fastdiff.ops.fused_step``) with in-kernel Philox noise; acceptance statistics
and adapted step sizes live on the device, so no step loop syncs with the host.
Each random draw has its own Philox stream keyed by ``(seed, chain id, stream)``,
so a chain's trajectory depends only on its id (``row_ids``), never on how the
chains are batched.

Choosing HMC: on smooth, ill-conditioned or correlated targets HMC moves much farther
per gradient evaluation than MALA (whose steps shrink with the worst-scaled direction);
with thousands of chains, ``adapt="chees"`` picks the trajectory length from all chains
at once and ``adapt_mass`` rescales each coordinate, so the only input is a rough start
step. Prefer MALA where long trajectories diverge (rough or stiff gradients, heavy tails)
or one gradient per accept/reject is wanted, ULA when a small bias is acceptable.

Everything is imported from here; the code lives in one private module per job:
``_langevin`` (ULA, annealed Langevin), ``_mala`` (MALA, step adaptation,
Philox uniforms), ``_hmc`` (HMC), ``_adapt`` (its warm-up: dual averaging, ChEES,
mass windows), ``_sde`` (the SDEs, on ``fastdiff.schedules``), ``_pc``
(predictor-corrector), ``_underdamped`` (underdamped Langevin), ``_draws``
(the ``record_every`` buffer), ``_diagnostics`` (ESS, R-hat) and ``_util`` (shared checks). :class:`EnergyGrad` is
defined in this file, so its qualified name -- which ``fastdiff.distributed``
records in run manifests -- stays ``fastdiff.mcmc.EnergyGrad``.

Example:
    >>> import torch, fastdiff
    >>> x = 5 * torch.randn(4096, 2)
    >>> x = fastdiff.mcmc.langevin(lambda x: -x, x, 0.01, 2000, seed=0)     # ~ N(0, I)
    >>> x, acc = fastdiff.mcmc.mala(lambda x: -0.5 * (x ** 2).sum(1), x, 0.8, 200, seed=1)
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from ..ops._common import check_float
from ._diagnostics import ESS_KINDS, ess, rhat
from ._langevin import annealed_langevin, langevin
from ._mala import mala, mala_log_accept, philox_uniform
from ._hmc import ADAPT_METHODS, hmc, hmc_log_accept  # noqa: F401 (ADAPT_METHODS: the choices, importable)
from ._pc import CORRECTORS, PREDICTORS, SNR_RULES, predictor_corrector  # noqa: F401 (the choices, importable)
from ._sde import VESDE, VPSDE, SubVPSDE
from ._underdamped import underdamped_langevin
from ._util import Callback, StepSize  # noqa: F401 (the types of the signatures, importable)
from ._util import _check_callable, _value_and_grad

__all__ = [
    "langevin",
    "mala",
    "underdamped_langevin",
    "annealed_langevin",
    "predictor_corrector",
    "energy_grad",
    "EnergyGrad",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "mala_log_accept",
    "philox_uniform",
    "hmc",
    "hmc_log_accept",
    "ess",
    "rhat",
    "ESS_KINDS",
]


# ----------------------------------------------------------------------------------------------------------
# energy-based models


class EnergyGrad:
    """``grad_log_prob`` of an energy or log-density function (e.g. an ``nn.Module``) by autograd.

    Calling the object returns ``grad log p(x)`` detached; ``log_prob(x)`` gives
    ``log p(x)`` (``-E(x)`` for ``kind="energy"``) for :func:`mala`;
    ``value_and_grad(x)`` both from one forward/backward. The graph is built
    under ``torch.enable_grad()`` from a detached copy of ``x``, differentiated
    only with respect to that copy (parameter ``.grad`` fields are untouched)
    and freed before returning, so nothing accumulates over thousands of steps.
    Put modules with batch statistics (BatchNorm) in eval mode: chains must not
    interact.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))
        >>> g = fastdiff.energy_grad(net)          # log p = -net(x)
        >>> x = fastdiff.langevin(g, torch.randn(512, 2), 1e-2, 100, seed=0)
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], kind: str = "energy") -> None:
        _check_callable("module_or_fn", fn)
        if kind not in ("energy", "log_prob"):
            raise ValueError(f"kind must be 'energy' (log p = -E) or 'log_prob', got {kind!r}")
        self.fn, self.kind = fn, kind
        self._sign = -1.0 if kind == "energy" else 1.0

    def _out(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if not isinstance(out, torch.Tensor) or out.numel() != b:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"module_or_fn must return one value per chain (shape ({b},) or ({b}, 1)), got {shape}")
        return self._sign * out.reshape(b)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` per chain, shape (batch,) (differentiable, so :func:`mala` can use autograd on it)."""
        return self._out(x, self.fn(x))

    def value_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x), grad log p(x))``, both detached."""
        check_float("x", x)
        return _value_and_grad(self.log_prob, x, x.shape[0], "module_or_fn")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(x)[1]


def energy_grad(module_or_fn: Callable[[torch.Tensor], torch.Tensor], *, kind: str = "energy") -> EnergyGrad:
    """Turn an energy ``E(x)`` (``log p = -E``) or a log-density (``kind="log_prob"``) into ``grad_log_prob``.

    The function (typically an ``nn.Module``) maps (batch, ...) to (batch,) or
    (batch, 1). See :class:`EnergyGrad` for the memory guarantees.

    Example:
        >>> g = fastdiff.energy_grad(lambda x: 0.5 * (x ** 2).sum(1))   # N(0, I)
        >>> torch.allclose(g(torch.ones(3, 2)), -torch.ones(3, 2))
        True
    """
    return EnergyGrad(module_or_fn, kind)
