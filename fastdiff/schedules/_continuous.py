"""Continuous-time schedules on ``t`` in [0, 1]: the VP SDE's linear-beta schedule and the geometric VE schedule."""
from __future__ import annotations

import math
from typing import Tuple

import torch

from ._checks import TensorLike, _check_float, _check_sigma_range, _to_f64

__all__ = ["ContinuousVPSchedule", "VESchedule"]


class ContinuousVPSchedule:
    """VP SDE of Song et al. (2021) with a linear beta(t), ``t`` in [0, 1].

    ``log alpha(t) = -0.25 t**2 (beta_max - beta_min) - 0.5 t beta_min`` and
    ``sigma(t) = sqrt(1 - alpha(t)**2)``. Functions accept tensors or numbers
    and return float64 (tensor inputs keep their device); ``t`` outside
    [0, 1] is evaluated by the same formula, not rejected.

    Example:
        >>> vp = ContinuousVPSchedule()
        >>> a, s = vp.alpha_sigma(torch.tensor([0.0, 1.0]))
        >>> a[0].item(), s[0].item()
        (1.0, 0.0)
        >>> round(vp.sigma_to_t(vp.t_to_sigma(0.5)).item(), 12)
        0.5
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        bmin = _check_float("beta_min", beta_min)
        bmax = _check_float("beta_max", beta_max)
        if bmin < 0:
            raise ValueError(f"beta_min must be >= 0, got {bmin}")
        if bmax < bmin:
            raise ValueError(f"beta_max must be >= beta_min, got beta_min={bmin}, beta_max={bmax}")
        if bmax <= 0:
            raise ValueError(f"beta_max must be > 0, got {bmax}")
        self.beta_min = bmin
        self.beta_max = bmax

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def log_alpha(self, t: TensorLike) -> torch.Tensor:
        """``log alpha(t) = -0.25 t**2 (beta_max - beta_min) - 0.5 t beta_min`` (float64), which the other
        quantities (and the VP / sub-VP SDEs of ``fastdiff.mcmc``) are computed from.

        Example:
            >>> ContinuousVPSchedule(0.0, 2.0).log_alpha(1.0).item()
            -0.5
        """
        tt = _to_f64("t", t)
        return -0.25 * tt**2 * (self.beta_max - self.beta_min) - 0.5 * tt * self.beta_min

    def alpha_sigma(self, t: TensorLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t), sigma(t))`` in float64, with ``alpha**2 + sigma**2 == 1``.

        Example:
            >>> a, s = ContinuousVPSchedule().alpha_sigma(1.0)
            >>> round(a.item(), 5)
            0.00657
        """
        log_alpha = self.log_alpha(t)
        return log_alpha.exp(), torch.sqrt(-torch.expm1(2.0 * log_alpha))

    def log_snr(self, t: TensorLike) -> torch.Tensor:
        """``lambda(t) = log(alpha**2 / sigma**2)`` (float64, ``+inf`` at ``t = 0``).

        Example:
            >>> round(ContinuousVPSchedule().log_snr(0.5).item(), 4)
            -2.4551
        """
        log_alpha = self.log_alpha(t)
        return 2.0 * log_alpha - torch.log(-torch.expm1(2.0 * log_alpha))

    def t_to_sigma(self, t: TensorLike) -> torch.Tensor:
        """VE sigma ``sigma(t) / alpha(t) = sqrt(exp(-2 log alpha(t)) - 1)``.

        Example:
            >>> round(ContinuousVPSchedule().t_to_sigma(1.0).item(), 2)
            152.17
        """
        return torch.sqrt(torch.expm1(-2.0 * self.log_alpha(t)))

    def sigma_to_t(self, sigma: TensorLike) -> torch.Tensor:
        """Closed-form inverse of :meth:`t_to_sigma` for VE ``sigma >= 0``.

        With ``L = log(1 + sigma**2)`` the quadratic
        ``0.25 d t**2 + 0.5 beta_min t = 0.5 L`` (``d = beta_max - beta_min``)
        is solved as ``t = 2 L / (beta_min + sqrt(beta_min**2 + 2 d L))``.

        Example:
            >>> ContinuousVPSchedule().sigma_to_t(0.0).item()
            0.0
        """
        sig = _to_f64("sigma", sigma)
        if bool((sig < 0).any()) or bool(torch.isnan(sig).any()):
            raise ValueError("sigma must be non-negative")
        big_l = torch.log1p(sig**2)
        d = self.beta_max - self.beta_min
        t = 2.0 * big_l / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * big_l))
        return torch.where(big_l == 0, torch.zeros_like(t), t)


class VESchedule:
    """Geometric variance-exploding schedule: ``sigma(t) = sigma_min (sigma_max / sigma_min)**t``, ``alpha = 1``.

    ``t`` lives in [0, 1] (``t = 0`` -> ``sigma_min``, ``t = 1`` ->
    ``sigma_max``) but is not clamped. Returns float64; tensor inputs keep
    their device.

    Example:
        >>> ve = VESchedule(0.01, 50.0)
        >>> ve.t_to_sigma(torch.tensor([0.0, 1.0])).tolist()
        [0.01, 50.0]
        >>> round(ve.sigma_to_t(ve.t_to_sigma(0.3)).item(), 12)
        0.3
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min, self.sigma_max = _check_sigma_range(sigma_min, sigma_max)
        self._log_min = math.log(self.sigma_min)
        self._log_ratio = math.log(self.sigma_max) - self._log_min

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def t_to_sigma(self, t: TensorLike) -> torch.Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)**t`` (float64).

        Example:
            >>> round(VESchedule(1.0, 100.0).t_to_sigma(0.5).item(), 12)
            10.0
        """
        tt = _to_f64("t", t)
        sig = torch.exp(self._log_min + tt * self._log_ratio)
        # pin the end points exactly
        sig = torch.where(tt == 0, torch.full_like(sig, self.sigma_min), sig)
        return torch.where(tt == 1, torch.full_like(sig, self.sigma_max), sig)

    def alpha_sigma(self, t: TensorLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(1, sigma(t))`` in float64.

        Example:
            >>> a, s = VESchedule().alpha_sigma(1.0)
            >>> a.item(), s.item()
            (1.0, 50.0)
        """
        sig = self.t_to_sigma(t)
        return torch.ones_like(sig), sig

    def log_snr(self, t: TensorLike) -> torch.Tensor:
        """``lambda(t) = -2 log sigma(t)`` (float64).

        Example:
            >>> VESchedule(1.0, 100.0).log_snr(0.0).item()
            -0.0
        """
        tt = _to_f64("t", t)
        return -2.0 * (self._log_min + tt * self._log_ratio)

    def sigma_to_t(self, sigma: TensorLike) -> torch.Tensor:
        """``t = log(sigma / sigma_min) / log(sigma_max / sigma_min)`` (float64).

        Example:
            >>> VESchedule(0.01, 50.0).sigma_to_t(torch.tensor([0.01, 50.0], dtype=torch.float64)).tolist()
            [0.0, 1.0]
        """
        sig = _to_f64("sigma", sigma)
        if bool((sig < 0).any()) or bool(torch.isnan(sig).any()):
            raise ValueError("sigma must be non-negative")
        return (torch.log(sig) - self._log_min) / self._log_ratio
