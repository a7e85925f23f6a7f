"""Plain-PyTorch forward noising: x_t = a*x0 + s*z, target = ta*x0 + tn*z."""
from __future__ import annotations

from typing import Optional

import torch

from ...random import philox_normal
from .._common import bcast


def encode_reference(
    x0: torch.Tensor,
    coefs: torch.Tensor,
    index: Optional[torch.Tensor],
    *,
    noise: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    compute_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x_t, target, noise)`` in ``compute_dtype`` (default: x0's dtype)."""
    dt = compute_dtype or x0.dtype
    c = (coefs[index] if index is not None else coefs).to(dt)
    a, s, ta, tn = (bcast(c[:, k], x0.dim()) for k in range(4))
    if noise is None:
        noise = philox_normal(x0.shape, seed, stream, row_ids=row_ids, device=x0.device, dtype=torch.float32)
    z = noise.to(dt)
    x = x0.to(dt)
    return a * x + s * z, ta * x + tn * z, z


def _shares(buf: torch.Tensor, *tensors: torch.Tensor) -> bool:
    p = buf.untyped_storage().data_ptr()
    return any(t.untyped_storage().data_ptr() == p for t in tensors)


def encode_cpu(
    x0: torch.Tensor,
    coefs: torch.Tensor,
    index: Optional[torch.Tensor],
    *,
    noise: Optional[torch.Tensor],
    seed: Optional[int],
    stream: int,
    row_ids: Optional[torch.Tensor],
    write_target: bool,
    out: Optional[torch.Tensor],
) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """The fast CPU path: ``(x_t, target or None, noise)`` with x_t (and target) in x0's dtype or ``out``.

    Same formula as :func:`encode_reference` in float32 (float64 for float64 storage), but the target is
    computed only when asked for, and each output is two passes (``x*a`` then ``addcmul_(z, s)``) written
    straight into ``out`` when it has the compute dtype and shares no memory with an input.
    """
    dt = torch.float64 if x0.dtype is torch.float64 else torch.float32
    c = (coefs[index] if index is not None else coefs).to(dt)
    nd = x0.dim()
    if noise is None:
        noise = philox_normal(x0.shape, seed, stream, row_ids=row_ids, device=x0.device, dtype=torch.float32)
    z = noise if noise.dtype is dt else noise.to(dt)
    x = x0 if x0.dtype is dt else x0.to(dt)
    direct = out is not None and out.dtype is dt and not _shares(out, x0, noise)
    a, s = bcast(c[:, 0], nd), bcast(c[:, 1], nd)
    xt = torch.mul(x, a, out=out) if direct else torch.mul(x, a)
    xt.addcmul_(z, s)
    if out is None:
        xt = xt if xt.dtype is x0.dtype else xt.to(x0.dtype)
    elif not direct:
        xt = out.copy_(xt)
    tgt = None
    if write_target:
        tgt = torch.mul(x, bcast(c[:, 2], nd)).addcmul_(z, bcast(c[:, 3], nd))
        tgt = tgt if tgt.dtype is x0.dtype else tgt.to(x0.dtype)
    return xt, tgt, z
