"""The linear SDEs of score-based models (Song et al. 2021): VP, sub-VP and VE."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from ..random import philox_normal
from ..schedules import ContinuousVPSchedule
from ._util import _MAX_STREAM, _check_pos_float

__all__ = ["VPSDE", "SubVPSDE", "VESDE"]

Times = Union[float, torch.Tensor, Sequence[float]]


class _SDE:
    """A linear-drift SDE ``dx = f(t) x dt + g(t) dw`` on t in [0, 1]; host float64 math on python floats."""

    prior_std: float = 1.0
    default_eps: float = 1e-3

    def drift_diffusion(self, t: float) -> Tuple[float, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def marginal(self, t: Times) -> Tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def discretize(self, t: float, n: int) -> Tuple[float, float]:
        """Reverse-diffusion discretisation ``(f_i, G_i)``: ``x_{i+1} = (1 + f_i) x_i + G_i z``."""
        f, g = self.drift_diffusion(t)
        dt = 1.0 / n
        return f * dt, g * math.sqrt(dt)

    def corrector_alpha(self, t: float, n: int) -> float:
        """The ``alpha_i`` factor of the SNR step rule (1 except for the VP SDE)."""
        return 1.0

    def prior_sample(self, shape: Sequence[int], seed: int, *, row_ids: Optional[torch.Tensor] = None,
                     device: Union[str, torch.device, None] = None, dtype: torch.dtype = torch.float32,
                     stream: int = _MAX_STREAM - 1) -> torch.Tensor:
        """Draw x_T from the prior N(0, prior_std**2 I) from Philox (stream 2**32-1 by default)."""
        z = philox_normal(shape, seed, stream, row_ids=row_ids, device=device, dtype=torch.float64)
        return (self.prior_std * z).to(dtype)


class VPSDE(_SDE):
    """Variance-preserving SDE (Song et al. 2021): ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dw``, linear beta.

    ``x_t = alpha(t) x0 + sigma(t) eps`` with ``log alpha = -t**2 (b1 - b0)/4 - t b0/2`` and
    ``sigma = sqrt(1 - alpha**2)``: the marginals are those of ``schedule``, a
    :class:`fastdiff.schedules.ContinuousVPSchedule` with the same betas (the formulas live there).

    Example:
        >>> sde = fastdiff.VPSDE()
        >>> alpha, sigma = sde.marginal(0.5)
        >>> sde.schedule
        ContinuousVPSchedule(beta_min=0.1, beta_max=20.0)
    """

    default_eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if isinstance(beta_min, bool) or not isinstance(beta_min, (int, float)) or not 0 <= beta_min < math.inf:
            raise ValueError(f"beta_min must be a float >= 0, got {beta_min!r}")
        if isinstance(beta_max, bool) or not isinstance(beta_max, (int, float)) or not beta_min <= beta_max < math.inf \
                or beta_max <= 0:
            raise ValueError(f"beta_max must be a finite float >= beta_min and > 0, got {beta_max!r}")
        self.schedule = ContinuousVPSchedule(float(beta_min), float(beta_max))

    @property
    def beta_min(self) -> float:
        """``beta(0)`` (the schedule's)."""
        return self.schedule.beta_min

    @property
    def beta_max(self) -> float:
        """``beta(1)`` (the schedule's)."""
        return self.schedule.beta_max

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def beta(self, t: float) -> float:
        """The noise rate ``beta(t) = beta_min + t (beta_max - beta_min)`` (a host float)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal(self, t: Times) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t), sigma(t))`` of ``x_t = alpha x0 + sigma eps`` (float64): ``schedule.alpha_sigma(t)``."""
        return self.schedule.alpha_sigma(t)

    def drift_diffusion(self, t: float) -> Tuple[float, float]:
        b = self.beta(t)
        return -0.5 * b, math.sqrt(b)

    def _discrete_beta(self, t: float, n: int) -> float:
        # DDPM's discrete betas linspace(b0/N, b1/N, N), indexed like the reference code.
        i = int(math.floor(t * (n - 1)))
        return (self.beta_min + (self.beta_max - self.beta_min) * (i / (n - 1) if n > 1 else 0.0)) / n

    def discretize(self, t: float, n: int) -> Tuple[float, float]:
        b = self._discrete_beta(t, n)
        if not b < 1.0:
            raise ValueError(f"n_steps={n} is too small for the discrete VP chain: beta_max / n_steps must be < 1")
        return math.sqrt(1.0 - b) - 1.0, math.sqrt(b)

    def corrector_alpha(self, t: float, n: int) -> float:
        return 1.0 - self._discrete_beta(t, n)


class SubVPSDE(VPSDE):
    """Sub-VP SDE (Song et al. 2021): ``dx = -beta/2 x dt + sqrt(beta (1 - exp(-2 int_0^t beta))) dw``.

    ``x_t = alpha(t) x0 + sigma(t) eps`` with the VP ``alpha`` and ``sigma = 1 - alpha**2``.

    Example:
        >>> alpha, sigma = fastdiff.SubVPSDE().marginal(0.5)
    """

    def marginal(self, t: Times) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t), 1 - alpha(t)**2)`` (float64), from the schedule's ``log alpha``."""
        la = self.schedule.log_alpha(t)
        return la.exp(), -torch.expm1(2.0 * la)

    def drift_diffusion(self, t: float) -> Tuple[float, float]:
        b = self.beta(t)
        discount = -math.expm1(-2.0 * self.beta_min * t - (self.beta_max - self.beta_min) * t * t)
        return -0.5 * b, math.sqrt(b * discount)

    # the generic Euler discretisation (as in the reference implementation)
    discretize = _SDE.discretize

    def corrector_alpha(self, t: float, n: int) -> float:
        return 1.0


class VESDE(_SDE):
    """Variance-exploding SDE (Song et al. 2021): ``dx = sigma(t) sqrt(2 log(smax/smin)) dw``.

    ``x_t = x0 + sigma(t) eps`` with ``sigma(t) = smin (smax/smin)**t``; prior N(0, smax**2 I).

    ``sigma(t)`` is evaluated as written (as in the reference implementation), not through
    :class:`fastdiff.schedules.VESchedule`, whose ``exp(log smin + t log(smax/smin))`` with pinned end
    points rounds differently for most ``t``: the sampler's numbers stay those of the reference code.

    Example:
        >>> alpha, sigma = fastdiff.VESDE(0.01, 50.0).marginal(1.0)
    """

    default_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        smin = _check_pos_float("sigma_min", sigma_min)
        smax = _check_pos_float("sigma_max", sigma_max)
        if not smax > smin:
            raise ValueError(f"sigma_max must exceed sigma_min, got sigma_min={smin}, sigma_max={smax}")
        self.sigma_min, self.sigma_max = smin, smax
        self.prior_std = smax

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def sigma(self, t: Times) -> torch.Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)**t`` (float64)."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** torch.as_tensor(t, dtype=torch.float64)

    def marginal(self, t: Times) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(1, sigma(t))`` (float64)."""
        s = self.sigma(t)
        return torch.ones_like(s), s

    def drift_diffusion(self, t: float) -> Tuple[float, float]:
        s = float(self.sigma(t))
        return 0.0, s * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def _discrete_sigma(self, i: int, n: int) -> float:
        if i < 0:
            return 0.0
        frac = i / (n - 1) if n > 1 else 1.0
        return math.exp(math.log(self.sigma_min) + frac * math.log(self.sigma_max / self.sigma_min))

    def discretize(self, t: float, n: int) -> Tuple[float, float]:
        # SMLD's discrete chain: G_i = sqrt(sigma_i^2 - sigma_{i-1}^2) (sigma_{-1} = 0).
        i = int(math.floor(t * (n - 1)))
        s, s_prev = self._discrete_sigma(i, n), self._discrete_sigma(i - 1, n)
        return 0.0, math.sqrt(s * s - s_prev * s_prev)


_SDES = {"vp": VPSDE, "subvp": SubVPSDE, "sub-vp": SubVPSDE, "ve": VESDE}
