"""Sampling noise levels in the k-diffusion convention: ``n`` decreasing VE sigmas, then a final 0 (float64)."""
from __future__ import annotations

import math

import torch

from ..ops._common import check_int
from ._checks import DeviceLike, _check_float, _check_positive, _check_sigma_range, _finish, _linspace

__all__ = ["karras_sigmas", "karras_ramp", "exponential_sigmas", "polyexponential_sigmas", "vp_sigmas"]


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: DeviceLike = None
) -> torch.Tensor:
    """Karras et al. (2022) eq. (5) noise levels: ``n`` sigmas from ``sigma_max`` to ``sigma_min``, then 0.

    ``sigma_i = (sigma_max**(1/rho) + i/(n-1) (sigma_min**(1/rho) - sigma_max**(1/rho)))**rho``
    (k-diffusion ``get_sigmas_karras``); float64, ``n + 1`` values.

    Example:
        >>> s = karras_sigmas(5, 0.002, 80.0)
        >>> len(s), round(s[0].item(), 9), round(s[-2].item(), 9), s[-1].item()
        (6, 80.0, 0.002, 0.0)
    """
    n = check_int("n", n, minimum=1)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    rho = _check_positive("rho", rho)
    sigmas = karras_ramp(_linspace(0.0, 1.0, n), smin, smax, rho)
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)


def karras_ramp(ramp: torch.Tensor, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. (5) at the given ramp positions (0 -> ``sigma_max``, 1 -> ``sigma_min``), in the
    ramp's dtype and without a final 0: :func:`karras_sigmas` on an arbitrary ramp (diffusers' EDM schedulers
    take custom ramps).

    Example:
        >>> [round(v, 6) for v in karras_ramp(torch.tensor([0.0, 1.0], dtype=torch.float64), 0.002, 80.0).tolist()]
        [80.0, 0.002]
    """
    min_inv_rho = sigma_min ** (1.0 / rho)
    max_inv_rho = sigma_max ** (1.0 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float, device: DeviceLike = None) -> torch.Tensor:
    """Log-uniformly spaced sigmas ``exp(linspace(log sigma_max, log sigma_min, n))``, then 0 (float64).

    Example:
        >>> [round(v, 9) for v in exponential_sigmas(3, 0.1, 10.0).tolist()]
        [10.0, 1.0, 0.1, 0.0]
    """
    n = check_int("n", n, minimum=1)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    sigmas = torch.exp(_linspace(math.log(smax), math.log(smin), n))
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)


def polyexponential_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: DeviceLike = None
) -> torch.Tensor:
    """k-diffusion ``get_sigmas_polyexponential``: ``log sigma`` is polynomial (degree ``rho``) in the ramp.

    ``sigma_i = exp(r_i**rho (log sigma_max - log sigma_min) + log sigma_min)``
    with ``r = linspace(1, 0, n)``, then 0 (float64). ``rho = 1`` equals
    :func:`exponential_sigmas`.

    Example:
        >>> [round(v, 9) for v in polyexponential_sigmas(3, 0.1, 10.0, rho=2.0).tolist()]
        [10.0, 0.316227766, 0.1, 0.0]
    """
    n = check_int("n", n, minimum=1)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    rho = _check_positive("rho", rho)
    ramp = _linspace(1.0, 0.0, n) ** rho
    sigmas = torch.exp(ramp * (math.log(smax) - math.log(smin)) + math.log(smin))
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)


def vp_sigmas(
    n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3, device: DeviceLike = None
) -> torch.Tensor:
    """k-diffusion ``get_sigmas_vp``: VE sigmas of the continuous VP SDE at ``t = linspace(1, eps_s, n)``.

    ``sigma(t) = sqrt(exp(beta_d t**2 / 2 + beta_min t) - 1)``, then 0
    (float64). The defaults are those of Song et al. (``beta_d = beta_max -
    beta_min = 19.9``), i.e. ``ContinuousVPSchedule(0.1, 20).t_to_sigma``.

    Example:
        >>> round(vp_sigmas(2)[0].item(), 2)
        152.17
    """
    n = check_int("n", n, minimum=1)
    beta_d = _check_float("beta_d", beta_d)
    beta_min = _check_float("beta_min", beta_min)
    eps_s = _check_float("eps_s", eps_s)
    if beta_d < 0:
        raise ValueError(f"beta_d must be >= 0, got {beta_d}")
    if beta_min < 0:
        raise ValueError(f"beta_min must be >= 0, got {beta_min}")
    if beta_d == 0 and beta_min == 0:
        raise ValueError("beta_d and beta_min must not both be 0")
    if not 0.0 < eps_s <= 1.0:
        raise ValueError(f"eps_s must be in (0, 1], got {eps_s}")
    t = _linspace(1.0, eps_s, n)
    sigmas = torch.sqrt(torch.expm1(beta_d * t**2 / 2 + beta_min * t))
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)
