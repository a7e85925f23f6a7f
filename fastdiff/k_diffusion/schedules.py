"""k-diffusion's schedule helpers (``get_sigmas_*``, ``append_zero``, ``to_d``, ``get_ancestral_step``).

Example:
    >>> get_sigmas_karras(4, 0.1, 10.0).shape
    torch.Size([5])
"""
from __future__ import annotations

from typing import Any, Union

import torch

from ..schedules import exponential_sigmas, karras_sigmas, polyexponential_sigmas, vp_sigmas
from ..solvers import ancestral_split

__all__ = ["get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential", "get_sigmas_vp",
           "append_zero", "to_d", "get_ancestral_step"]

Device = Union[str, torch.device, None]


def _as_k(sigmas: torch.Tensor, device: Device) -> torch.Tensor:
    # k-diffusion returns float32; computing in float64 first rounds each value once
    return sigmas.to(dtype=torch.float32, device=device)


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                      device: Device = "cpu") -> torch.Tensor:
    """Karras et al. (2022) noise levels, ``n`` then 0, as float32 on ``device``.

    Example:
        >>> get_sigmas_karras(4, 0.1, 10.0).shape
        torch.Size([5])
    """
    return _as_k(karras_sigmas(n, sigma_min, sigma_max, rho), device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: Device = "cpu") -> torch.Tensor:
    """Log-uniform noise levels, ``n`` then 0, as float32 on ``device``.

    Example:
        >>> [round(v, 5) for v in get_sigmas_exponential(3, 0.1, 10.0).tolist()]
        [10.0, 1.0, 0.1, 0.0]
    """
    return _as_k(exponential_sigmas(n, sigma_min, sigma_max), device)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0,
                               device: Device = "cpu") -> torch.Tensor:
    """Noise levels whose log is polynomial of degree ``rho`` in the ramp, ``n`` then 0 (float32).

    Example:
        >>> get_sigmas_polyexponential(3, 0.1, 10.0, rho=2.0)[1].item() > 0.1
        True
    """
    return _as_k(polyexponential_sigmas(n, sigma_min, sigma_max, rho), device)


def get_sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3,
                  device: Device = "cpu") -> torch.Tensor:
    """Noise levels of the continuous VP SDE (Song et al. 2021), ``n`` then 0 (float32).

    Example:
        >>> round(get_sigmas_vp(2)[0].item(), 2)
        152.17
    """
    return _as_k(vp_sigmas(n, beta_d, beta_min, eps_s), device)


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """``x`` with one 0 appended (1-D).

    Example:
        >>> append_zero(torch.tensor([2.0, 1.0])).tolist()
        [2.0, 1.0, 0.0]
    """
    return torch.cat([x, x.new_zeros([1])])


def _append_dims(t: Any, ndim: int) -> Any:
    if not isinstance(t, torch.Tensor):
        return t
    if t.dim() > ndim:
        raise ValueError(f"sigma has {t.dim()} dims, more than the {ndim} of x")
    return t.reshape(t.shape + (1,) * (ndim - t.dim()))


def to_d(x: torch.Tensor, sigma: Any, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative ``(x - denoised) / sigma`` (Karras et al. 2022, eq. 4).

    Example:
        >>> to_d(torch.ones(2, 3), torch.tensor([2.0, 4.0]), torch.zeros(2, 3))[:, 0].tolist()
        [0.5, 0.25]
    """
    return (x - denoised) / _append_dims(sigma, x.dim())


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0):
    """``(sigma_down, sigma_up)`` of an ancestral step (Ho et al. 2020 posterior variance scaled by ``eta``).

    :func:`fastdiff.solvers.ancestral_split`: on 0-d tensors it has k-diffusion's arithmetic, so float32
    sigmas give the same float32 results.

    Example:
        >>> [round(v, 6) for v in get_ancestral_step(2.0, 1.0)]
        [0.5, 0.866025]
    """
    return ancestral_split(sigma_from, sigma_to, eta)
