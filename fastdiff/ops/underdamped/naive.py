"""Plain-PyTorch BAOAB step of underdamped Langevin (Leimkuhler & Matthews 2013): the reference, and the few-pass
CPU path.

    p += kick*h*g;  x += h/2 * p/m;  p = c*p + sqrt((1 - c^2)*T*m)*z;  x += h/2 * p/m      (c = exp(-gamma*h))

``p`` is the momentum (the op's ``v``), ``m`` the diagonal mass (a float, or a tensor shaped like one event).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from ...random import philox_normal
from .._common import bcast

Mass = Union[float, torch.Tensor]


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _noise(x: torch.Tensor, noise: Optional[torch.Tensor], seed: Optional[int], stream: int,
           row_ids: Optional[torch.Tensor], dt: torch.dtype) -> torch.Tensor:
    if noise is None:
        noise = philox_normal(x.shape, seed, stream, row_ids=row_ids, device=x.device, dtype=torch.float32)
    return noise if noise.dtype is dt else noise.to(dt)


def _ou_coefficients(h, friction: float, temperature: float, mass: Mass):
    """``(c, sigma)`` of the O step: ``c = exp(-gamma*h)``, ``sigma = sqrt(-expm1(-2*gamma*h) * T * m)``
    (floats for a float step and mass; tensors broadcasting against the chains otherwise)."""
    if isinstance(h, torch.Tensor):
        c = torch.exp(-friction * h)
        var = -torch.expm1(-2.0 * friction * h) * temperature
    else:
        c = math.exp(-friction * h)
        var = -math.expm1(-2.0 * friction * h) * temperature
    if isinstance(mass, torch.Tensor) or isinstance(var, torch.Tensor):
        return c, torch.sqrt(var * mass)
    return c, math.sqrt(var * mass)


def underdamped_reference(
    x: torch.Tensor,
    v: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    kick: float = 1.0,
    friction: float = 1.0,
    mass: Optional[Mass] = None,
    temperature: float = 1.0,
    noise: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    drift: bool = True,
    compute_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x_new, v_new)`` in ``compute_dtype`` (default: x's dtype), the four sub-steps as written."""
    dt = compute_dtype or x.dtype
    h = bcast(step_size.to(dt), x.dim()) if isinstance(step_size, torch.Tensor) else step_size
    m = 1.0 if mass is None else (mass.to(dt) if isinstance(mass, torch.Tensor) else mass)
    p = v.to(dt) + kick * h * grad.to(dt)
    x = x.to(dt)
    if not drift:
        return x, p
    c, sigma = _ou_coefficients(h, friction, temperature, m)
    z = _noise(x, noise, seed, stream, row_ids, dt)
    x = x + h / 2 * (p / m)
    p = c * p + sigma * z
    x = x + h / 2 * (p / m)
    return x, p


def _direct(out: Optional[torch.Tensor], src: torch.Tensor, dt: torch.dtype, others) -> bool:
    """Whether ``out`` can be updated in place as the working copy of ``src``: it is ``src`` itself (same memory
    and strides) in the compute dtype, and shares no memory with the other operands."""
    return (out is not None and out.dtype is dt and out.data_ptr() == src.data_ptr() and out.stride() == src.stride()
            and not any(o is not None and _same_storage(out, o) for o in others))


def _drift(x: torch.Tensor, coef, p: torch.Tensor) -> None:
    """The A step in place: ``x += coef * p``."""
    if isinstance(coef, torch.Tensor):
        x.addcmul_(coef, p)
    else:
        x.add_(p, alpha=coef)


def underdamped_cpu(
    x: torch.Tensor,
    v: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    kick: float,
    friction: float,
    mass: Optional[torch.Tensor],
    mass_scalar: float,
    temperature: float,
    noise: Optional[torch.Tensor],
    seed: Optional[int],
    stream: int,
    row_ids: Optional[torch.Tensor],
    drift: bool,
    x_out: Optional[torch.Tensor],
    v_out: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast CPU path: :func:`underdamped_reference`'s formula in float32 (float64 for float64 storage).

    Five passes (kick, drift, the O step's scale and add, drift) instead of the reference's ten, on working
    copies that are ``x_out`` / ``v_out`` themselves when they are ``x`` / ``v`` in the compute dtype (the
    samplers' in-place call), else new tensors copied into the outputs. ``mass`` is an event-shaped tensor or
    None (then ``mass_scalar``).
    """
    dt = torch.float64 if x.dtype is torch.float64 else torch.float32
    xs = x if x.dtype is dt else x.to(dt)
    vs = v if v.dtype is dt else v.to(dt)
    g = grad if grad.dtype is dt else grad.to(dt)
    per_row = isinstance(step_size, torch.Tensor)
    h = bcast(step_size.to(dt), x.dim()) if per_row else step_size
    m = mass_scalar if mass is None else mass.to(dt)
    v_direct = _direct(v_out, v, dt, (grad, x, x_out, noise))
    p = vs if v_direct or vs is not v else vs.clone()  # a converted copy is already private
    if per_row:
        p.addcmul_(kick * h, g)
    else:
        p.add_(g, alpha=kick * step_size)
    if drift:
        c, sigma = _ou_coefficients(h, friction, temperature, m)
        z = _noise(x, noise, seed, stream, row_ids, dt)
        drift_coef = h / 2 / m  # a float, or a tensor broadcasting against the chains
        x_direct = _direct(x_out, x, dt, (grad, v, v_out, noise))
        xn = xs if x_direct or xs is not x else xs.clone()
        _drift(xn, drift_coef, p)
        p.mul_(c)
        if isinstance(sigma, torch.Tensor):
            p.addcmul_(sigma, z)
        else:
            p.add_(z, alpha=sigma)
        _drift(xn, drift_coef, p)
        if x_out is not None and not x_direct:
            xn = x_out.copy_(xn)
        elif x_out is None and xn.dtype is not x.dtype:
            xn = xn.to(x.dtype)
    else:
        xn = x
    if v_out is not None and not v_direct:
        p = v_out.copy_(p)
    elif v_out is None and p.dtype is not v.dtype:
        p = p.to(v.dtype)
    return xn, p
