"""Plain-PyTorch leapfrog passes of HMC: the reference formula and the fast CPU path.

    p_new = p + kick*h*g,    x_new = x + h * inv_mass * p_new   (when drifting)

with ``p = z / sqrt(inv_mass)`` (``p ~ N(0, M)``) for the refresh pass.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ...random import philox_normal
from .._common import bcast

Step = Union[float, torch.Tensor]


def _fresh_noise(x: torch.Tensor, noise: Optional[torch.Tensor], seed: Optional[int], stream: int,
                 row_ids: Optional[torch.Tensor]) -> torch.Tensor:
    if noise is not None:
        return noise
    return philox_normal(x.shape, seed, stream, row_ids=row_ids, device=x.device, dtype=torch.float32)


def hmc_leapfrog_reference(
    x: torch.Tensor,
    p: Optional[torch.Tensor],
    grad: torch.Tensor,
    step_size: Step,
    *,
    kick: float,
    drift: bool,
    inv_mass: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    compute_dtype: Optional[torch.dtype] = None,
) -> Tuple[Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """``(x_new or None, p_new, z or None)`` in ``compute_dtype`` (default: x's dtype); ``p=None`` refreshes.

    ``inv_mass`` has x's event shape (or is flat, one value per column); ``z`` is returned for a refresh.
    """
    dt = compute_dtype or x.dtype
    h = bcast(step_size.to(dt), x.dim()) if isinstance(step_size, torch.Tensor) else step_size
    im = None if inv_mass is None else inv_mass.to(dt).reshape(1, *x.shape[1:])
    z = None
    if p is None:
        z = _fresh_noise(x, noise, seed, stream, row_ids).to(dt)
        p = z if im is None else z / torch.sqrt(im)
    p_new = p.to(dt) + (kick * h) * grad.to(dt)
    if not drift:
        return None, p_new, z
    x_new = x.to(dt) + h * (p_new if im is None else im * p_new)
    return x_new, p_new, z


def hmc_leapfrog_cpu(
    x: torch.Tensor,
    p: Optional[torch.Tensor],
    grad: torch.Tensor,
    step_size: Step,
    *,
    kick: float,
    drift: bool,
    inv_mass: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    seed: Optional[int],
    stream: int,
    row_ids: Optional[torch.Tensor],
    x_out: Optional[torch.Tensor],
    p_out: torch.Tensor,
) -> Tuple[Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """The fast CPU path: the reference's formula in float32 (float64 for float64 x) in two fused torch passes.

    ``p_new`` is one ``add``/``addcmul`` straight into ``p_out`` when it has the compute dtype, ``x_new`` one
    more into ``x_out`` (the wrapper has refused outputs that alias another input). Returns
    ``(x_new or None, p_new, z or None)``, written into the outputs.
    """
    dt = torch.float64 if x.dtype is torch.float64 else torch.float32
    per_row = isinstance(step_size, torch.Tensor)
    hb = bcast(step_size.to(dt), x.dim()) if per_row else None
    im = None if inv_mass is None else inv_mass.to(dt).reshape(1, *x.shape[1:])
    z = None
    if p is None:
        z = _fresh_noise(x, noise, seed, stream, row_ids)
        z = z if z.dtype is dt else z.to(dt)
        p = z if im is None else z / torch.sqrt(im)
    elif p.dtype is not dt:
        p = p.to(dt)
    g = grad if grad.dtype is dt else grad.to(dt)
    kw = {"out": p_out} if p_out.dtype is dt else {}
    if per_row:
        p_new = torch.addcmul(p, hb * kick, g, **kw)
    else:
        p_new = torch.add(p, g, alpha=kick * step_size, **kw)
    if not kw:
        p_out.copy_(p_new)  # the drift below uses the unrounded p_new, as the kernel does
    if not drift:
        return None, p_out, z
    xs = x if x.dtype is dt else x.to(dt)
    kw = {"out": x_out} if x_out.dtype is dt else {}
    if im is None:
        x_new = torch.addcmul(xs, hb, p_new, **kw) if per_row else torch.add(xs, p_new, alpha=step_size, **kw)
    elif per_row:
        x_new = torch.addcmul(xs, hb, im * p_new, **kw)
    else:
        x_new = torch.addcmul(xs, im * step_size, p_new, **kw)
    if not kw:
        x_out.copy_(x_new)
    return x_out, p_out, z
