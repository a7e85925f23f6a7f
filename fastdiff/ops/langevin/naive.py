"""Plain-PyTorch Langevin update: x + h*g + sqrt(2*h*T)*z (the overdamped Langevin SDE's
Euler-Maruyama step, whose stationary law is exp(log_prob / T))."""
from __future__ import annotations

from typing import Optional, Union

import torch

from ...random import philox_normal
from .._common import bcast


def langevin_reference(
    x: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    temperature: float = 1.0,
    noise: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    compute_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x_new, noise)`` in ``compute_dtype`` (default: x's dtype)."""
    dt = compute_dtype or x.dtype
    h = bcast(step_size.to(dt), x.dim()) if isinstance(step_size, torch.Tensor) else step_size
    if noise is None:
        noise = philox_normal(x.shape, seed, stream, row_ids=row_ids, device=x.device, dtype=torch.float32)
    z = noise.to(dt)
    scale = torch.sqrt(2.0 * h * temperature) if isinstance(h, torch.Tensor) else (2.0 * h * temperature) ** 0.5
    return x.to(dt) + h * grad.to(dt) + scale * z, z


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def langevin_cpu(
    x: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    temperature: float,
    noise: Optional[torch.Tensor],
    seed: Optional[int],
    stream: int,
    row_ids: Optional[torch.Tensor],
    out: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast CPU path: ``(x_new, noise)``, x_new in x's dtype (or ``out``), noise in the compute dtype.

    Same formula as :func:`langevin_reference` in float32 (float64 for float64 storage) in two passes
    (``torch.add(x, grad, alpha=h).add_(z, alpha=scale)``, or ``addcmul`` with per-chain steps) instead
    of four, written straight into ``out`` when it has the compute dtype and is x itself or shares no
    memory with the inputs.
    """
    dt = torch.float64 if x.dtype is torch.float64 else torch.float32
    if noise is None:
        noise = philox_normal(x.shape, seed, stream, row_ids=row_ids, device=x.device, dtype=torch.float32)
    z = noise if noise.dtype is dt else noise.to(dt)
    xs = x if x.dtype is dt else x.to(dt)
    g = grad if grad.dtype is dt else grad.to(dt)
    direct = (out is not None and out.dtype is dt and not _same_storage(out, grad) and not _same_storage(out, noise)
              and (not _same_storage(out, x) or (out.data_ptr() == x.data_ptr() and out.stride() == x.stride())))
    kw = {"out": out} if direct else {}
    if isinstance(step_size, torch.Tensor):
        h = bcast(step_size.to(dt), x.dim())
        res = torch.addcmul(xs, h, g, **kw).addcmul_(torch.sqrt(2.0 * h * temperature), z)
    else:
        res = torch.add(xs, g, alpha=step_size, **kw).add_(z, alpha=(2.0 * step_size * temperature) ** 0.5)
    if out is None:
        res = res if res.dtype is x.dtype else res.to(x.dtype)
    elif not direct:
        res = out.copy_(res)
    return res, z
