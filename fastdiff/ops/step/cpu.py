"""The fast CPU path of the step: coefficients read as host floats, zero terms skipped, in-place accumulation.

On CPU a coefficient table is host memory, so reading one row costs nothing and lets the step skip every
term whose coefficient is zero (a DDIM step touches 3 of the 15). With ``coef_index=`` (one row per sample) the
rows are read the same way: a column the samples share stays a float, the others become per-sample
``(batch, 1, ...)`` multipliers, and a column that is zero for every sample is skipped as well. Same formula as ``naive.step_reference``
in float32 (float64 for float64 storage); only the order of the additions differs, and:

* without ``clip`` the denoised estimate ``d = in_x*xe + in_m*m`` is folded into the output coefficients
  (``out = (out_x + out_d*in_x)*x + (out_m + out_d*in_m)*m + ...``, the products taken in float64 on the
  host), so ``d`` is never materialised: a DDIM/Euler/flow output is one or two tensor passes;
* a leading coefficient that rounds to 1 in the compute dtype starts the sum with ``torch.add(t0, t1, alpha=)``
  (one pass for ``x + dt*v``);
* float32/float64 storage writes straight into the ``out=``/``aux_out=`` buffers when they share no memory
  with an input (no temporary, no copy); otherwise the result is computed aside and copied;
* from ``cpu_jit.MIN_NUMEL`` elements on up to ``cpu_jit.MAX_THREADS`` torch threads, a combination torch would
  make in more than one pass (two outputs, or a coefficient other than 0 and 1) is one compiled pass
  (``cpu_jit.combine_jit``) reading each input once and writing both outputs.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ...random import philox_normal
from ..records import StepArgs
from . import cpu_jit

__all__ = ["step_cpu", "lin2_pair", "combine_pair"]

# float32 rounds c to 1.0 exactly when 1 - 2**-25 <= c <= 1 + 2**-24 (ties go to the even 1.0).
_ONE_F32 = (1.0 - 2.0**-25, 1.0 + 2.0**-24)
_ONE_F64 = (1.0, 1.0)
_F32, _F64 = torch.float32, torch.float64

_NEG_ZERO = torch.tensor(-0.0)

#: a coefficient: a host float, or a float64 (batch,) array of per-sample values (``coef_index=``)
Coef = Union[float, np.ndarray]


def _is_one(c: float, dt: torch.dtype) -> bool:
    """Whether ``c`` rounds to 1 in the compute dtype ``dt`` (the hot paths test ``lo <= c <= hi`` inline)."""
    lo, hi = _ONE_F64 if dt is _F64 else _ONE_F32
    return lo <= c <= hi


def _nonzero(c) -> bool:
    return c.any() if isinstance(c, np.ndarray) else c != 0.0


def _per_sample(c: np.ndarray, like: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """A per-sample coefficient (float64 ``(batch,)``) as a ``(batch, 1, ...)`` tensor of ``dt`` broadcasting on
    ``like``."""
    return torch.from_numpy(c).to(dt).view((-1,) + (1,) * (like.dim() - 1))


def _combine(terms: List[Tuple[torch.Tensor, Coef]], like: torch.Tensor, dt: torch.dtype,
             dst: Optional[torch.Tensor]) -> torch.Tensor:
    """sum(c * t) over the non-zero terms, into ``dst`` when given (it must not alias any term but the first).

    A coefficient is a float, or a float64 ``(batch,)`` array (``coef_index=``: one value per sample)."""
    terms = [(t, c) for t, c in terms if _nonzero(c)]
    if not terms:
        if dst is not None:
            return dst.zero_()
        return torch.zeros(like.shape, dtype=dt, device=like.device)
    t0, c0 = terms[0]
    if isinstance(c0, np.ndarray):
        c0 = _per_sample(c0, like, dt)
        acc = torch.mul(t0, c0) if dst is None else torch.mul(t0, c0, out=dst)
        rest = terms[1:]
    else:
        lo, hi = _ONE_F64 if dt is _F64 else _ONE_F32
        if len(terms) > 1 and lo <= c0 <= hi and not isinstance(terms[1][1], np.ndarray):
            t1, c1 = terms[1]
            acc = torch.add(t0, t1, alpha=c1) if dst is None else torch.add(t0, t1, alpha=c1, out=dst)
            rest = terms[2:]
        else:
            # (-0.0) + c*t is exactly c*t (signed zeros included) and skips mul's scalar wrapping (~2 us a call)
            acc = (torch.add(_NEG_ZERO, t0, alpha=c0) if dst is None
                   else torch.add(_NEG_ZERO, t0, alpha=c0, out=dst))
            rest = terms[1:]
    for t, c in rest:
        if isinstance(c, np.ndarray):
            acc.addcmul_(t, _per_sample(c, like, dt))
        else:
            acc.add_(t, alpha=c)
    return acc


def _as(t: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    return t if t.dtype is dt else t.to(dt)


def _lin2(a: torch.Tensor, ca: Coef, b: torch.Tensor, cb: Coef, dt: torch.dtype) -> torch.Tensor:
    """``ca*a + cb*b`` in one pass when a coefficient is 0 or 1, else two (a fresh tensor)."""
    if isinstance(ca, np.ndarray) or isinstance(cb, np.ndarray):
        return _combine([(a, ca), (b, cb)], a, dt, None)
    if ca == 0.0:
        if cb == 0.0:
            return torch.zeros(a.shape, dtype=dt, device=a.device)
        return torch.add(_NEG_ZERO, b, alpha=cb)
    if cb == 0.0:
        return torch.add(_NEG_ZERO, a, alpha=ca)
    lo, hi = _ONE_F64 if dt is _F64 else _ONE_F32
    if lo <= ca <= hi:
        return torch.add(a, b, alpha=cb)
    if lo <= cb <= hi:
        return torch.add(b, a, alpha=ca)
    return torch.add(_NEG_ZERO, a, alpha=ca).add_(b, alpha=cb)


def _jit_terms(o_terms, a_terms, like: torch.Tensor, dt: torch.dtype, o_dst, a_dst):
    """``(out, aux)`` from the term lists in one compiled pass, or None where ``combine_jit`` cannot take them
    (per-sample coefficients, more than ``cpu_jit.MAX_INPUTS`` distinct inputs, a tensor not contiguous in ``dt``).

    A tensor in both lists (by identity) is read once; one that every output multiplies by zero is left out."""
    inputs: list = []
    o_c: list = []
    a_c: list = []
    for k, terms in ((0, o_terms), (1, a_terms or ())):
        for t, c in terms:
            if isinstance(c, np.ndarray):
                return None
            for j, u in enumerate(inputs):
                if u is t:
                    break
            else:
                j = len(inputs)
                inputs.append(t)
                o_c.append(0.0)
                a_c.append(0.0)
            if k == 0:
                o_c[j] += c
            else:
                a_c[j] += c
    keep = [j for j in range(len(inputs)) if o_c[j] != 0.0 or (a_terms is not None and a_c[j] != 0.0)]
    if not 2 <= len(keep) <= cpu_jit.MAX_INPUTS:
        return None
    return cpu_jit.combine_jit([inputs[j] for j in keep], [o_c[j] for j in keep],
                               None if a_terms is None else [a_c[j] for j in keep], o_dst, a_dst)


def lin2_pair(xs: torch.Tensor, co_x: float, ms: torch.Tensor, co_m: float, ca_x: float, ca_m: float,
              want_aux: bool, dt: torch.dtype) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(co_x*xs + co_m*ms, ca_x*xs + ca_m*ms)`` (aux None unless ``want_aux``), fresh tensors of ``dt``: the
    common drop-in step (DDIM / Euler / flow). One compiled pass where ``cpu_jit.eligible`` and torch would need
    more than one (two outputs, or no coefficient 0 or 1), else ``_lin2`` per output."""
    if cpu_jit.eligible(xs) and (
            want_aux or not (co_x == 0.0 or co_m == 0.0 or _is_one(co_x, dt) or _is_one(co_m, dt))):
        r = _jit_terms([(xs, co_x), (ms, co_m)], [(xs, ca_x), (ms, ca_m)] if want_aux else None, xs, dt, None, None)
        if r is not None:
            return r
    return _lin2(xs, co_x, ms, co_m, dt), (_lin2(xs, ca_x, ms, ca_m, dt) if want_aux else None)


def combine_pair(o_terms: List[Tuple[torch.Tensor, Coef]], a_terms: Optional[List[Tuple[torch.Tensor, Coef]]],
                 like: torch.Tensor, dt: torch.dtype, o_dst: Optional[torch.Tensor] = None,
                 a_dst: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(sum over o_terms, sum over a_terms)`` (aux None when ``a_terms`` is None), into the buffers when given:
    one compiled pass where ``cpu_jit.eligible`` and the terms allow it, else ``_combine`` per output."""
    if cpu_jit.eligible(like):
        r = _jit_terms(o_terms, a_terms, like, dt, o_dst, a_dst)
        if r is not None:
            return r
    aux = _combine(a_terms, like, dt, a_dst) if a_terms is not None else None
    return _combine(o_terms, like, dt, o_dst), aux


def _shares(buf: torch.Tensor, tensors) -> bool:
    p = buf.untyped_storage().data_ptr()
    return any(t is not None and t.untyped_storage().data_ptr() == p for t in tensors)


def step_cpu(a: StepArgs, row: Sequence[Coef], want_aux: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Return ``(out, aux)`` for the parsed step ``a`` (``parse_step``'s record for backend "torch") with one row
    of coefficients ``row`` (``COEF_NAMES`` order: host floats, or with ``coef_index=`` ``host_rows``' columns,
    a float where the samples agree and a float64 ``(batch,)`` array where they differ).

    The results have x's dtype, or are the ``a.out``/``a.aux_out`` buffers (filled) when given; ``aux`` is None
    unless ``want_aux``. Noise is ``a.noise``, or drawn here from ``a.seed`` (``philox_normal``).
    """
    (x, model_output, _, x_eval, hist0, hist1, hist2, noise, uncond, _, row_ids, out, aux_out, _, n_hist, guidance,
     clip, noise_mode, _, _, stream, uncond_mode) = a
    history = (hist0, hist1, hist2)[:n_hist]
    if noise_mode == 1:
        noise = philox_normal(x.shape, a.seed, stream, row_ids=row_ids, device=x.device)
    in_x, in_m, g, out_x, out_e, out_m, out_d, h0, h1, h2, out_n, aux_x, aux_d, out_u, aux_u = row
    xd = x.dtype
    dt = _F64 if xd is _F64 else _F32
    xs = x if xd is dt else x.to(dt)
    if (x_eval is None and not guidance and not uncond_mode and clip is None and noise is None and not history
            and out is None and aux_out is None):
        # the common drop-in call (DDIM / Euler / flow): out and aux are each a*x + b*m
        m = model_output if model_output.dtype is dt else model_output.to(dt)
        res, aux = lin2_pair(xs, out_x + out_d * in_x, m, out_m + out_d * in_m, aux_x + aux_d * in_x, aux_d * in_m,
                             want_aux, dt)
        if dt is not xd:
            res = res.to(xd)
            aux = None if aux is None else aux.to(xd)
        return res, aux
    xe = xs if x_eval is None else _as(x_eval, dt)
    m = _as(model_output, dt)
    m_u = None
    if guidance:
        batch = x.shape[0]
        m_u = m[:batch]
        m = torch.lerp(m_u, m[batch:], _per_sample(g, m_u, dt) if isinstance(g, np.ndarray) else g)
    hs = [_as(h, dt) for h in history] if history else ()
    nz = None if noise is None else _as(noise, dt)

    # Direct writes: the buffer has the compute dtype and shares no memory with anything read after it.
    o_dst = a_dst = None
    if out is not None or aux_out is not None:
        inputs = (x, x_eval, model_output, noise, uncond, *history)
        if out is not None and out.dtype is dt and not _shares(out, inputs):
            o_dst = out
        if want_aux and aux_out is not None and aux_out.dtype is dt and not _shares(aux_out, inputs):
            if out is None or aux_out.untyped_storage().data_ptr() != out.untyped_storage().data_ptr():
                a_dst = aux_out

    tail = list(zip(hs, (h0, h1, h2))) if hs else []
    if nz is not None:
        tail.append((nz, out_n))
    r = None
    if (clip is not None and x_eval is None and not tail and not uncond_mode and cpu_jit.eligible(xs)
            and not any(isinstance(c, np.ndarray) for c in (in_x, in_m, out_x, out_m, out_d, aux_x, aux_d))):
        # the clipped plain step (DDIM's default clip_sample): d formed and clamped inside the one pass
        r = cpu_jit.clipped_jit(xs, m, in_x, in_m, clip, (out_x, out_m, out_d), (aux_x, aux_d) if want_aux else None,
                                o_dst, a_dst)
    if r is None:
        if clip is None:
            # d folded into the output (and aux) coefficients: d is never materialised
            if x_eval is None:
                o_terms = [(xs, out_x + out_d * in_x), (m, out_m + out_d * in_m)]
            else:
                o_terms = [(xs, out_x), (xe, out_e + out_d * in_x), (m, out_m + out_d * in_m)]
            a_terms = [(xe, aux_x + aux_d * in_x), (m, aux_d * in_m)]
        else:
            d = _combine([(xe, in_x), (m, in_m)], xs, dt, None).clamp_(-clip, clip)
            o_terms = [(xs, out_x), (m, out_m), (d, out_d)]
            if x_eval is not None:
                o_terms.append((xe, out_e))
            a_terms = [(xe, aux_x), (d, aux_d)]
        if uncond_mode:
            # the unconditional x0 estimate u (CFG++): the tensor given, or in_x*xe + in_m*m_u from the uncond half
            # (as two terms; materialised only when clipped)
            if uncond_mode == 2:
                u = [(_as(uncond, dt) if clip is None else _as(uncond, dt).clamp(-clip, clip), 1.0)]
            elif clip is None:
                u = [(xe, in_x), (m_u, in_m)]
            else:
                u = [(_combine([(xe, in_x), (m_u, in_m)], xs, dt, None).clamp_(-clip, clip), 1.0)]
            o_terms += [(t, out_u * c) for t, c in u]
            a_terms += [(t, aux_u * c) for t, c in u]
        if clip is None:
            res, aux = combine_pair(o_terms + tail, a_terms if want_aux else None, xs, dt, o_dst, a_dst)
        else:
            aux = _combine(a_terms, xs, dt, a_dst) if want_aux else None
            res = _combine(o_terms + tail, xs, dt, o_dst)
    else:
        res, aux = r

    if out is None:
        if res.dtype is not x.dtype:
            res = res.to(x.dtype)
    elif res is not out:
        res = out.copy_(res)
    if want_aux:
        if aux_out is None:
            if aux.dtype is not x.dtype:
                aux = aux.to(x.dtype)
        elif aux is not aux_out:
            aux = aux_out.copy_(aux)
    return res, aux
