"""Plain-PyTorch step: the literal formula of ``fastdiff.kernels.step``.

``compute_dtype=None`` runs in the inputs' own dtype (the same-dtype reference;
float64 inputs give the float64 reference); ``torch.float32`` is the fast CPU
path used for float16/bfloat16/float32 storage.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ...random import philox_normal
from .._common import bcast

COEF_NAMES = (
    "in_x", "in_m", "guidance", "out_x", "out_e", "out_m", "out_d",
    "out_h0", "out_h1", "out_h2", "out_noise", "aux_x", "aux_d", "out_u", "aux_u",
)
NUM_COEFS = len(COEF_NAMES)
MAX_HISTORY = 3


def step_reference(
    x: torch.Tensor,
    model_output: torch.Tensor,
    coefs: torch.Tensor,
    *,
    x_eval: Optional[torch.Tensor] = None,
    history: Sequence[torch.Tensor] = (),
    coef_index: Optional[torch.Tensor] = None,
    coef_row: int = 0,
    guidance: bool = False,
    clip: Optional[float] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    uncond: Union[None, str, torch.Tensor] = None,
    compute_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(out, aux)`` in ``compute_dtype`` (default: x's dtype).

    ``uncond``: None (no ``u`` term), ``"halves"`` (``u`` from the uncond half of a guided ``model_output``) or
    the unconditional x0 estimate as a tensor shaped like x.
    """
    dt = compute_dtype or x.dtype
    batch = x.shape[0]
    c = coefs[coef_index] if coef_index is not None else coefs[coef_row].expand(batch, NUM_COEFS)
    c = c.to(dt)

    def col(name: str) -> torch.Tensor:
        return bcast(c[:, COEF_NAMES.index(name)], x.dim())

    xs = x.to(dt)
    xe = xs if x_eval is None else x_eval.to(dt)
    m = model_output.to(dt)
    m_uncond = None
    if guidance:
        m_uncond, m_cond = m[:batch], m[batch:]
        m = m_uncond + col("guidance") * (m_cond - m_uncond)
    d = col("in_x") * xe + col("in_m") * m
    if clip is not None:
        d = d.clamp(-clip, clip)
    out = col("out_x") * xs + col("out_m") * m + col("out_d") * d
    u = None
    if isinstance(uncond, str):
        u = col("in_x") * xe + col("in_m") * m_uncond
    elif uncond is not None:
        u = uncond.to(dt)
    if u is not None:
        if clip is not None:
            u = u.clamp(-clip, clip)
        out = out + col("out_u") * u
    if x_eval is not None:
        out = out + col("out_e") * xe
    for k, h in enumerate(history):
        out = out + col(f"out_h{k}") * h.to(dt)
    if noise is None and seed is not None:
        noise = philox_normal(x.shape, seed, stream, row_ids=row_ids, device=x.device, dtype=torch.float32)
    if noise is not None:
        out = out + col("out_noise") * noise.to(dt)
    aux = col("aux_x") * xe + col("aux_d") * d
    if u is not None:
        aux = aux + col("aux_u") * u
    return out, aux
