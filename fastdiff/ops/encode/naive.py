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
