"""The fast CPU path of the step: coefficients read as host floats, zero terms skipped, in-place accumulation.

On CPU a coefficient table is host memory, so reading one row costs nothing and lets the step skip every
term whose coefficient is zero (a DDIM step touches 3 of the 13). Same formula as ``naive.step_reference``
in float32 (float64 for float64 storage); only the order of the additions differs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .naive import COEF_NAMES


def _combine(terms, like: torch.Tensor) -> torch.Tensor:
    acc = None
    for coef, t in terms:
        if coef == 0.0:
            continue
        if acc is None:
            acc = torch.mul(t, coef)
        else:
            acc.add_(t, alpha=coef)
    return torch.zeros_like(like) if acc is None else acc


def step_cpu(
    x: torch.Tensor,
    model_output: torch.Tensor,
    row: Sequence[float],
    *,
    x_eval: Optional[torch.Tensor],
    history: Sequence[torch.Tensor],
    guidance: bool,
    clip: Optional[float],
    noise: Optional[torch.Tensor],
    want_aux: bool,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Return ``(out, aux)`` in the compute dtype for one row of coefficients ``row`` (host floats)."""
    c = dict(zip(COEF_NAMES, row))
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xs = x.to(dt)
    xe = xs if x_eval is None else x_eval.to(dt)
    m = model_output.to(dt)
    if guidance:
        batch = x.shape[0]
        m = torch.lerp(m[:batch], m[batch:], c["guidance"])
    d = _combine([(c["in_x"], xe), (c["in_m"], m)], xs)
    if clip is not None:
        d = d.clamp_(-clip, clip)
    terms = [(c["out_x"], xs), (c["out_m"], m), (c["out_d"], d)]
    if x_eval is not None:
        terms.append((c["out_e"], xe))
    terms += [(c[f"out_h{k}"], h.to(dt)) for k, h in enumerate(history)]
    if noise is not None:
        terms.append((c["out_noise"], noise.to(dt)))
    out = _combine(terms, xs)
    aux = _combine([(c["aux_x"], xe), (c["aux_d"], d)], xs) if want_aux else None
    return out, aux
