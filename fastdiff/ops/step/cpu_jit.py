"""One compiled pass (numba) for the CPU step's linear combinations, where torch would make several.

``step_cpu`` writes each output as ``sum(c_k * t_k)`` over two to eight sample-sized tensors; with torch ops that
is one pass per term (``add(-0.0, t0, alpha=c0)`` then ``add_(t1, alpha=c1)`` ...), each reading the accumulator
back, and the aux output (the x0 estimate) is a second such chain over the same inputs. At sizes that stream
through cache the step is bound by that traffic: a DDIM step moves 10 MiB at 16x4x64x64 float32 where one pass
reading ``x`` and ``m`` and writing both outputs moves 4 MiB. This module is that one pass: one loop for one
output and one for two, over any number of inputs up to ``MAX_INPUTS``, plus the clipped step with its clamp
inside; in the compute dtype, the terms added in ``step_cpu``'s order (numba, like LLVM without fast-math, never
contracts a multiply and an add into an FMA).

It runs on one thread and is taken with one torch thread (``MAX_THREADS``): in the drop-in loops at 16x4x64x64
float32 it took a DDIM step from 105 to 63 us and a DPM++ 2M step from 130 to 72 us, but with two torch threads
torch's own passes were as fast or faster (Euler 57 us against 84), and handing half the loop to a second Python
thread made it slower (74 us against 43 for the bare loop: the hand-off costs more than the half saves). Below
``MIN_NUMEL`` elements the call's ~5 us of Python (the numpy views, the dispatch) outweighs the passes it saves
(the bare loop takes 0.8 us at 4096 elements), so the torch path is kept.

Example:
    >>> import torch
    >>> from fastdiff.ops.step.cpu_jit import combine_jit
    >>> x, m = torch.ones(4), torch.full((4,), 2.0)
    >>> res = combine_jit([x, m], [0.5, 0.25], [1.0, -1.0])
    >>> res is None or res[0].tolist() == [1.0] * 4
    True
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..._numba import DISABLE_ENV, compiled_once

__all__ = ["available", "combine_jit", "clipped_jit", "eligible", "MIN_NUMEL", "MAX_THREADS", "MAX_INPUTS",
           "DISABLE_ENV"]

# DISABLE_ENV (``FASTDIFF_NO_NUMBA=1``) keeps the torch passes even where numba imports
#: below this many elements the torch passes stay in cache and the call overhead decides (see the module docstring)
MIN_NUMEL = 1 << 15
#: above this many torch threads the torch passes are used (at two they were as fast or faster; module docstring)
MAX_THREADS = 1
#: the most tensors one combination reads (a step reads at most x, x_eval, m, three history entries, noise, u)
MAX_INPUTS = 8

_state: dict = {}


def _build():
    """Compile (or load from numba's cache) the loops: ``{1: one output, 2: two outputs, "clip1", "clip2"}``.

    The combination loops take the inputs and the coefficients as tuples, so one loop serves every arity (numba
    compiles one specialisation per tuple length, the inner loop unrolled: 40.0 us at 16x4x64x64 for two inputs
    and two outputs, against 40.3 for the loop written out for that arity)."""
    from numba import njit

    opts = dict(nogil=True, cache=True, boundscheck=False)

    @njit(**opts)
    def combine1(ts, a, o):
        for i in range(o.shape[0]):
            s = a[0] * ts[0][i]
            for k in range(1, len(ts)):
                s = s + a[k] * ts[k][i]
            o[i] = s

    @njit(**opts)
    def combine2(ts, a, b, o, p):
        for i in range(o.shape[0]):
            u = ts[0][i]
            s = a[0] * u
            q = b[0] * u
            for k in range(1, len(ts)):
                u = ts[k][i]
                s = s + a[k] * u
                q = q + b[k] * u
            o[i] = s
            p[i] = q

    @njit(inline="always")
    def clipped(u, v, ix, im, lo, hi):
        d = ix * u + im * v
        return lo if d < lo else (hi if d > hi else d)  # NaN stays NaN, as torch.clamp

    @njit(**opts)
    def clip1(x, m, ix, im, lo, hi, ox, om, od, o):
        for i in range(o.shape[0]):
            u = x[i]
            v = m[i]
            o[i] = ox * u + om * v + od * clipped(u, v, ix, im, lo, hi)

    @njit(**opts)
    def clip2(x, m, ix, im, lo, hi, ox, om, od, ax, ad, o, p):
        for i in range(o.shape[0]):
            u = x[i]
            v = m[i]
            d = clipped(u, v, ix, im, lo, hi)
            o[i] = ox * u + om * v + od * d
            p[i] = ax * u + ad * d

    return {1: combine1, 2: combine2, "clip1": clip1, "clip2": clip2}


def _warm(fns) -> None:
    """Compile the common loops for float32 and float64 now (a first step should not pay a compile): two to four
    inputs and the clipped step; a longer combination compiles at its first use (then comes from the cache)."""
    for np_dt in (np.float32, np.float64):
        c = np_dt(1.0)
        fns["clip1"](np.ones(2, np_dt), np.ones(2, np_dt), *([c] * 7), np.empty(2, np_dt))
        fns["clip2"](np.ones(2, np_dt), np.ones(2, np_dt), *([c] * 9), np.empty(2, np_dt), np.empty(2, np_dt))
        for n_in in (2, 3, 4):
            ins = tuple(np.ones(2, np_dt) for _ in range(n_in))
            cs = (c,) * n_in
            fns[1](ins, cs, np.empty(2, np_dt))
            fns[2](ins, cs, cs, np.empty(2, np_dt), np.empty(2, np_dt))


def _build_and_warm() -> dict:
    fns = _build()
    _warm(fns)
    return fns


def _kernels() -> Optional[dict]:
    """The compiled loops, built once per process; None when numba is missing, disabled or fails to compile."""
    return compiled_once(_state, "fns", _build_and_warm, "the numba step loop")


def available() -> bool:
    """Whether the compiled pass is usable in this process (numba imports, compiles, and is not disabled).

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return _kernels() is not None


def eligible(like: torch.Tensor) -> bool:
    """Whether a step on tensors like ``like`` should take the compiled pass (size, threads, autograd, tracing).

    Example:
        >>> eligible(torch.zeros(8))
        False
    """
    # traced, the step is torch ops in the graph (a numba call, and torch.get_num_threads, cannot be traced): the
    # tracing test comes before the thread count
    return (like.numel() >= MIN_NUMEL and not torch.compiler.is_compiling()
            and torch.get_num_threads() <= MAX_THREADS and not (torch.is_grad_enabled() and like.requires_grad))


def _flat(t: torch.Tensor, dt: torch.dtype) -> Optional[np.ndarray]:
    """``t``'s memory as a flat numpy view, or None unless it is a plain contiguous CPU tensor of ``dt``
    (``numpy().ravel()``: 0.6 us where ``view(-1).numpy()`` took 1.3)."""
    if t.dtype is not dt or not t.is_cpu or t.requires_grad or not t.is_contiguous():
        return None
    return t.numpy().ravel()


def _arrays(tensors, dt: torch.dtype, n: int) -> Optional[List[np.ndarray]]:
    """Flat numpy views of ``tensors`` (each as ``_flat`` requires, ``n`` elements), or None if any is not."""
    arrays: List[np.ndarray] = []
    for t in tensors:
        arr = _flat(t, dt)
        if arr is None or arr.shape[0] != n:
            return None
        arrays.append(arr)
    return arrays


def _outputs(dt: torch.dtype, like: torch.Tensor, n: int, out: Optional[torch.Tensor], want_aux: bool,
             aux: Optional[torch.Tensor]):
    """``(out, aux, their flat views)``: the buffers given, else fresh contiguous ones shaped like ``like`` (made
    only once the inputs are known to be usable); None if a given buffer is not as ``_flat`` requires."""
    out = torch.empty(like.shape, dtype=dt) if out is None else out
    aux = (torch.empty(like.shape, dtype=dt) if aux is None else aux) if want_aux else None
    views = _arrays((out,) if aux is None else (out, aux), dt, n)
    return None if views is None else (out, aux, views)


def combine_jit(inputs: Sequence[torch.Tensor], out_coefs: Sequence[float],
                aux_coefs: Optional[Sequence[float]] = None, out: Optional[torch.Tensor] = None,
                aux: Optional[torch.Tensor] = None) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``out = sum(out_coefs[k] * inputs[k])``, and ``aux`` likewise when ``aux_coefs`` is given, in one pass;
    None where it cannot run.

    Every tensor must be contiguous CPU memory of one dtype (float32 or float64) and size; ``out`` / ``aux``
    (fresh tensors when not given) must not overlap an input (the caller checks that). The coefficients are host
    floats, rounded to the dtype as torch rounds a scalar ``alpha``. Returns ``(out, aux)`` (aux None without
    ``aux_coefs``), or None (nothing written) when numba is unavailable, there are more than ``MAX_INPUTS``
    inputs or a tensor is not as required.
    """
    fns = _kernels()
    dt = inputs[0].dtype if out is None else out.dtype
    if fns is None or not 1 <= len(inputs) <= MAX_INPUTS or dt not in (torch.float32, torch.float64):
        return None
    n = inputs[0].numel()
    ins = _arrays(inputs, dt, n)
    bufs = None if ins is None else _outputs(dt, inputs[0], n, out, aux_coefs is not None, aux)
    if bufs is None:
        return None
    out, aux, views = bufs
    np_dt = np.float32 if dt is torch.float32 else np.float64
    if aux is None:
        fns[1](tuple(ins), tuple(np_dt(c) for c in out_coefs), views[0])
    else:
        fns[2](tuple(ins), tuple(np_dt(c) for c in out_coefs), tuple(np_dt(c) for c in aux_coefs), *views)
    return out, aux


def clipped_jit(x: torch.Tensor, m: torch.Tensor, in_x: float, in_m: float, clip: float, out_coefs: Sequence[float],
                aux_coefs: Optional[Sequence[float]] = None, out: Optional[torch.Tensor] = None,
                aux: Optional[torch.Tensor] = None) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """The clipped step in one pass: ``d = clamp(in_x*x + in_m*m, -clip, clip)``, ``out = o_x*x + o_m*m + o_d*d``
    (``out_coefs = (o_x, o_m, o_d)``) and, with ``aux_coefs = (a_x, a_d)``, ``aux = a_x*x + a_d*d``; buffers and
    None as ``combine_jit``."""
    fns = _kernels()
    dt = x.dtype if out is None else out.dtype
    if fns is None or dt not in (torch.float32, torch.float64):
        return None
    n = x.numel()
    ins = _arrays((x, m), dt, n)
    bufs = None if ins is None else _outputs(dt, x, n, out, aux_coefs is not None, aux)
    if bufs is None:
        return None
    out, aux, views = bufs
    np_dt = np.float32 if dt is torch.float32 else np.float64
    c = [np_dt(v) for v in (in_x, in_m, -clip, clip, *out_coefs)]
    if aux is None:
        fns["clip1"](*ins, *c, views[0])
    else:
        fns["clip2"](*ins, *c, *(np_dt(v) for v in aux_coefs), *views)
    return out, aux
