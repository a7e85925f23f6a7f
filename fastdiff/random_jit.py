"""The compiled CPU Philox (numba), the fast path of ``fastdiff.random.philox_normal`` where numba imports.

One loop per group of four columns runs Philox4x32-10 and the Box-Muller angle (``sincos_turns``) in registers,
with the kernels' float32 operations in their order (numba, like LLVM without fast-math, never contracts a
multiply and an add into an FMA), so the words and the sines and cosines are bit-identical to the kernels'
interpreter run. The ``log`` stays numpy's (``np.log`` on float32, the function the interpreter calls), because
numba's ``log`` is the C library's, which may round differently from numpy's SIMD ``log``.

Work is split in cache-sized chunks (``CHUNK_GROUPS`` groups: the chunk's words, radii and normals stay in L2),
and the chunks over ``torch.get_num_threads()`` threads (the compiled loop and numpy's ufuncs release the GIL).

Example:
    >>> import torch
    >>> from fastdiff.random_jit import available, normals_jit
    >>> out = normals_jit(2, 3, torch.arange(2), 0, 7, 0) if available() else None
    >>> out is None or tuple(out.shape) == (2, 3, 4)
    True
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch

from ._numba import DISABLE_ENV, compiled_once

__all__ = ["available", "normals_jit", "CHUNK_GROUPS", "DISABLE_ENV"]

# DISABLE_ENV (``FASTDIFF_NO_NUMBA=1``) uses the numpy Philox even where numba imports
#: groups of four normals per chunk: 4096 groups are 64 KiB of normals and 32 KiB of radii, in L2 with room to spare
CHUNK_GROUPS = 4096
#: below this many groups one thread does the whole draw (a thread hand-off costs ~20-50 us)
_THREAD_MIN_GROUPS = 16384

_lock = threading.Lock()
_state: dict = {}


def _build():
    """Compile the loops (or load them from numba's cache): ``(philox_parts, finish)``."""
    import numba  # noqa: F401  (ImportError handled by the caller)
    from numba import njit, uint32, uint64, float32, int32

    M0, M1 = uint64(0xD2511F53), uint64(0xCD9E8D57)
    W0, W1 = uint32(0x9E3779B9), uint32(0xBB67AE85)
    S3, S5, S7, S9 = (float32(v) for v in (-1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362880.0))
    C2, C4, C6, C8, C10 = (float32(v) for v in (-0.5, 1.0 / 24.0, -1.0 / 720.0, 1.0 / 40320.0, -1.0 / 3628800.0))
    F4, F1, FH, HALF_PI, INV24 = (float32(v) for v in (4.0, 1.0, 0.5, 1.5707963267948966, 1.0 / 16777216.0))
    SH32, SH8 = uint64(32), uint32(8)
    M2 = float32(-2.0)

    @njit(inline="always")
    def round1(c0, c1, c2, c3, a0, a1):
        p0 = M0 * uint64(c0)
        p1 = M1 * uint64(c2)
        return (uint32(p1 >> SH32) ^ c1 ^ a0, uint32(p1), uint32(p0 >> SH32) ^ c3 ^ a1, uint32(p0),
                uint32(a0 + W0), uint32(a1 + W1))

    @njit(inline="always")
    def rounds10(c0, c1, c2, c3, a0, a1):
        """Philox4x32-10, the rounds written out (a counted inner loop keeps LLVM from vectorising the outer one)."""
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        c0, c1, c2, c3, a0, a1 = round1(c0, c1, c2, c3, a0, a1)
        return c0, c1, c2, c3

    @njit(inline="always")
    def unit(w):
        return (float32(int32(w >> SH8)) + FH) * INV24

    @njit(inline="always")
    def sincos(u):
        """(sin, cos) of 2*pi*u: selects, no branches (the loop vectorises)."""
        t = u * F4
        k = float32(int32(t + FH))  # t + 0.5 > 0: truncation is floor
        b = (t - k) * HALF_PI
        b2 = b * b
        ps = S9 * b2
        ps = (ps + S7) * b2
        ps = (ps + S5) * b2
        ps = ps + S3
        s = b + (b * b2) * ps
        pc = C10 * b2
        pc = (pc + C8) * b2
        pc = (pc + C6) * b2
        pc = (pc + C4) * b2
        pc = (pc + C2) * b2
        c = pc + F1
        q = int32(k) & 3
        odd = (q & 1) == 1  # odd quadrants: (cos b, sin b)
        sin = c if odd else s
        cos = s if odd else c
        sin = -sin if q >= 2 else sin  # quadrants 2, 3: sin < 0
        cos = -cos if (q == 1) | (q == 2) else cos  # quadrants 1, 2: cos < 0
        return sin, cos

    @njit(nogil=True, cache=True, boundscheck=False)
    def philox_parts(row_ids, groups, stream, k0, k1, start, stop, radius, angles):
        """Flat groups [start, stop): ``radius[2j:2j+2]`` <- the pair's radius units,
        ``angles[4j:4j+4]`` <- (cos, sin, cos, sin) of their angles, j = i - start."""
        r = start // groups
        i = start
        while i < stop:
            rid = uint64(row_ids[r])
            c1r = uint32(rid & uint64(0xFFFFFFFF))
            c3r = uint32(rid >> SH32)
            g_lo = i - r * groups
            g_hi = min(groups, stop - r * groups)
            base = i - g_lo - start
            for g in range(g_lo, g_hi):
                c0 = uint32(g)
                c1 = c1r
                c2 = uint32(stream)
                c3 = c3r
                c0, c1, c2, c3 = rounds10(c0, c1, c2, c3, uint32(k0), uint32(k1))
                j = uint64(base + g)  # unsigned: no negative-index wraparound in the stores (the loop vectorises)
                radius[uint64(2) * j] = unit(c0)
                radius[uint64(2) * j + uint64(1)] = unit(c2)
                s01, co01 = sincos(unit(c1))
                s23, co23 = sincos(unit(c3))
                angles[uint64(4) * j] = co01
                angles[uint64(4) * j + uint64(1)] = s01
                angles[uint64(4) * j + uint64(2)] = co23
                angles[uint64(4) * j + uint64(3)] = s23
            i += g_hi - g_lo
            r += 1

    @njit(nogil=True, cache=True, boundscheck=False)
    def finish(log_radius, angles):
        """``angles[4j + k] *= sqrt(-2 * log_radius[2j + k // 2])``: the kernels' ``radius * cos``, ``radius * sin``."""
        for j in range(uint64(log_radius.shape[0]) // uint64(2)):
            r01 = np.sqrt(M2 * log_radius[uint64(2) * j])
            r23 = np.sqrt(M2 * log_radius[uint64(2) * j + uint64(1)])
            angles[uint64(4) * j] *= r01
            angles[uint64(4) * j + uint64(1)] *= r01
            angles[uint64(4) * j + uint64(2)] *= r23
            angles[uint64(4) * j + uint64(3)] *= r23

    return philox_parts, finish


def _build_and_run():
    fn = _build()
    radius, angles = np.empty(2, np.float32), np.empty(4, np.float32)
    fn[0](np.zeros(1, np.int64), 1, 0, 0, 0, 0, 1, radius, angles)
    fn[1](radius, angles)
    return fn


def _kernel():
    """The compiled loop, built once per process; None when numba is missing, disabled or fails to compile."""
    return compiled_once(_state, "fn", _build_and_run, "the numba Philox")


def available() -> bool:
    """Whether the compiled Philox is usable in this process (numba imports, compiles, and is not disabled).

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return _kernel() is not None


def _chunk(fn, rid: np.ndarray, groups: int, stream: int, k0: int, k1: int, out: np.ndarray,
           start: int, stop: int) -> None:
    """Normals of the flat groups [start, stop) into ``out[start:stop]`` ((n, 4) float32 rows)."""
    parts, finish = fn
    for lo in range(start, stop, CHUNK_GROUPS):
        hi = min(lo + CHUNK_GROUPS, stop)
        angles = out[lo:hi]
        radius = np.empty(2 * (hi - lo), np.float32)
        parts(rid, groups, stream, k0, k1, lo, hi, radius, angles.reshape(-1))
        np.log(radius, out=radius)  # numpy's float32 log, as the interpreter's tl.log
        finish(radius, angles.reshape(-1))


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's worker threads (a fresh pool after a fork: a forked child inherits none of the threads)."""
    pool = _state.get("pool")
    if pool is None or _state.get("workers", 0) < workers or _state.get("pid") != os.getpid():
        with _lock:
            pool = _state.get("pool")
            if pool is None or _state.get("workers", 0) < workers or _state.get("pid") != os.getpid():
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastdiff-philox")
                _state["pool"], _state["workers"], _state["pid"] = pool, workers, os.getpid()
    return pool


def normals_jit(rows: int, groups: int, row_ids: torch.Tensor, stream: int, k0: int, k1: int,
                threads: Optional[int] = None) -> Optional[torch.Tensor]:
    """(rows, groups, 4) float32 Philox normals, or None when the compiled path is unavailable.

    ``threads`` defaults to ``torch.get_num_threads()``; draws under ``_THREAD_MIN_GROUPS`` groups use one.
    """
    fn = _state.get("fn", False)
    if fn is False:
        fn = _kernel()
    if fn is None:
        return None
    rid = row_ids.numpy() if row_ids.device.type == "cpu" else row_ids.cpu().numpy()
    if rid.dtype != np.int64:
        rid = rid.astype(np.int64)
    total = rows * groups
    out = np.empty((total, 4), np.float32)
    if total < _THREAD_MIN_GROUPS:  # one thread: a hand-off would cost more than it saves
        _chunk(fn, rid, groups, stream, k0, k1, out, 0, total)
        return torch.from_numpy(out).reshape(rows, groups, 4)
    threads = torch.get_num_threads() if threads is None else threads
    workers = max(1, min(threads, total // (_THREAD_MIN_GROUPS // 2)))
    if workers == 1:
        _chunk(fn, rid, groups, stream, k0, k1, out, 0, total)
    else:
        step = -(-total // (workers * CHUNK_GROUPS)) * CHUNK_GROUPS
        futs = [_pool(workers).submit(_chunk, fn, rid, groups, stream, k0, k1, out, lo, min(lo + step, total))
                for lo in range(step, total, step)]
        _chunk(fn, rid, groups, stream, k0, k1, out, 0, min(step, total))
        for f in futs:
            f.result()
    return torch.from_numpy(out).reshape(rows, groups, 4)
