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
