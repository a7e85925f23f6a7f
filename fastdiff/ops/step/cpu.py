"""The fast CPU path of the step: coefficients read as host floats, zero terms skipped, in-place accumulation.

On CPU a coefficient table is host memory, so reading one row costs nothing and lets the step skip every
term whose coefficient is zero (a DDIM step touches 3 of the 13). Same formula as ``naive.step_reference``
in float32 (float64 for float64 storage); only the order of the additions differs, and:

* without ``clip`` the denoised estimate ``d = in_x*xe + in_m*m`` is folded into the output coefficients
  (``out = (out_x + out_d*in_x)*x + (out_m + out_d*in_m)*m + ...``, the products taken in float64 on the
  host), so ``d`` is never materialised: a DDIM/Euler/flow output is one or two tensor passes;
* a leading coefficient that rounds to 1 in the compute dtype starts the sum with ``torch.add(t0, t1, alpha=)``
  (one pass for ``x + dt*v``);
* float32/float64 storage writes straight into the ``out=``/``aux_out=`` buffers when they share no memory
  with an input (no temporary, no copy); otherwise the result is computed aside and copied.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["step_cpu"]

# float32 rounds c to 1.0 exactly when 1 - 2**-25 <= c <= 1 + 2**-24 (ties go to the even 1.0).
_ONE_F32 = (1.0 - 2.0**-25, 1.0 + 2.0**-24)


def _is_one(c: float, dt: torch.dtype) -> bool:
    if dt is torch.float64:
        return c == 1.0
    return _ONE_F32[0] <= c <= _ONE_F32[1]


def _combine(terms: List[Tuple[torch.Tensor, float]], like: torch.Tensor, dt: torch.dtype,
             dst: Optional[torch.Tensor]) -> torch.Tensor:
    """sum(c * t) over the non-zero terms, into ``dst`` when given (it must not alias any term but the first)."""
    terms = [(t, c) for t, c in terms if c != 0.0]
    if not terms:
        if dst is not None:
            return dst.zero_()
        return torch.zeros(like.shape, dtype=dt, device=like.device)
    t0, c0 = terms[0]
    if len(terms) > 1 and _is_one(c0, dt):
        t1, c1 = terms[1]
        acc = torch.add(t0, t1, alpha=c1) if dst is None else torch.add(t0, t1, alpha=c1, out=dst)
        rest = terms[2:]
    else:
        acc = torch.mul(t0, c0) if dst is None else torch.mul(t0, c0, out=dst)
        rest = terms[1:]
    for t, c in rest:
        acc.add_(t, alpha=c)
    return acc


def _shares(buf: torch.Tensor, tensors) -> bool:
    p = buf.untyped_storage().data_ptr()
    return any(t is not None and t.untyped_storage().data_ptr() == p for t in tensors)


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
    out: Optional[torch.Tensor] = None,
    aux_out: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Return ``(out, aux)`` for one row of coefficients ``row`` (host floats, ``COEF_NAMES`` order).

    The results have x's dtype, or are the ``out``/``aux_out`` buffers (filled) when given; ``aux`` is None
    unless ``want_aux``.
    """
    in_x, in_m, g, out_x, out_e, out_m, out_d, h0, h1, h2, out_n, aux_x, aux_d = row
    dt = torch.float64 if x.dtype is torch.float64 else torch.float32
    xs = x.to(dt)
    xe = xs if x_eval is None else x_eval.to(dt)
    m = model_output.to(dt)
    if guidance:
        batch = x.shape[0]
        m = torch.lerp(m[:batch], m[batch:], g)
    hs = [h.to(dt) for h in history]
    nz = None if noise is None else noise.to(dt)

    # Direct writes: the buffer has the compute dtype and shares no memory with anything read after it.
    inputs = (x, x_eval, model_output, noise, *history)
    o_dst = out if out is not None and out.dtype is dt and not _shares(out, inputs) else None
    a_dst = None
    if want_aux and aux_out is not None and aux_out.dtype is dt and not _shares(aux_out, inputs):
        if out is None or aux_out.untyped_storage().data_ptr() != out.untyped_storage().data_ptr():
            a_dst = aux_out

    tail = [(h, c) for h, c in zip(hs, (h0, h1, h2))]
    if nz is not None:
        tail.append((nz, out_n))
    if clip is None:
        # d folded into the output (and aux) coefficients: d is never materialised
        if x_eval is None:
            o_terms = [(xs, out_x + out_d * in_x), (m, out_m + out_d * in_m)]
        else:
            o_terms = [(xs, out_x), (xe, out_e + out_d * in_x), (m, out_m + out_d * in_m)]
        aux = _combine([(xe, aux_x + aux_d * in_x), (m, aux_d * in_m)], xs, dt, a_dst) if want_aux else None
    else:
        d = _combine([(xe, in_x), (m, in_m)], xs, dt, None).clamp_(-clip, clip)
        o_terms = [(xs, out_x), (m, out_m), (d, out_d)]
        if x_eval is not None:
            o_terms.append((xe, out_e))
        aux = _combine([(xe, aux_x), (d, aux_d)], xs, dt, a_dst) if want_aux else None
    res = _combine(o_terms + tail, xs, dt, o_dst)

    if out is None:
        res = res.to(x.dtype)
    elif res is not out:
        res = out.copy_(res)
    if want_aux:
        if aux_out is None:
            aux = aux.to(x.dtype)
        elif aux is not aux_out:
            aux = aux_out.copy_(aux)
    return res, aux
