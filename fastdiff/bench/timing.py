"""Timers: ``triton.testing.do_bench`` on CUDA, interleaved medians of repeats on CPU, and what they need.

Each timed call rotates among several input sets (:func:`rotating`) whose total is twice the last-level
cache where memory allows (:func:`rotation_sets`), so no provider is timed on cache-resident inputs the others
would not see; the "peak" is a device-to-device ``Tensor.copy_`` (:func:`measure_copy_bandwidth`).
"""
from __future__ import annotations

import functools
import math
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

__all__ = [
    "sync", "rotating", "time_cuda", "time_interleaved", "measure_copy_bandwidth", "rotation_sets", "peak_extra",
]


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotating(fn: Callable[[Dict[str, torch.Tensor]], Any],
             sets: Sequence[Dict[str, torch.Tensor]]) -> Callable[[], Any]:
    """A no-argument callable that applies ``fn`` to the next input set each call (defeats cache reuse).

    Example:
        >>> call = rotating(lambda s: s["i"], [{"i": 0}, {"i": 1}])
        >>> [call() for _ in range(3)]
        [0, 1, 0]
    """
    state = [0]
    n = len(sets)

    def call():
        i = state[0]
        state[0] = i + 1 if i + 1 < n else 0
        return fn(sets[i])

    return call


def time_cuda(fn: Callable[[], Any], *, quick: bool = False) -> float:
    """Median milliseconds of ``fn`` by ``triton.testing.do_bench`` (device events, L2 flushed per rep)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100, return_mode="median"))


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, rounds: int = 7, target_s: float = 0.02,
                     device: Union[str, torch.device] = "cpu") -> Dict[str, Dict[str, float]]:
    """Median seconds per call of each callable, measured interleaved in one process.

    Each callable is first calibrated to a batch of ``number`` calls lasting
    about ``target_s``; then every round times one batch of each, in a rotated
    order, so slow drift (clocks, other load) affects all alike. Returns
    ``{name: {"median": s, "min": s, "iqr": s, "number": n}}``.

    Example:
        >>> r = time_interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, rounds=3)
        >>> r["a"]["median"] < r["b"]["median"]  # doctest: +SKIP
        True
    """
    device = torch.device(device)
    names = list(fns)
    number = {}
    for n in names:
        fns[n]()  # warm-up (allocator, lazy init)
        sync(device)
        t0 = time.perf_counter()
        fns[n]()
        sync(device)
        one = max(time.perf_counter() - t0, 1e-7)
        number[n] = max(1, min(100000, int(target_s / one)))
    samples: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            f, k = fns[n], number[n]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(k):
                f()
            sync(device)
            samples[n].append((time.perf_counter() - t0) / k)
    out = {}
    for n in names:
        s = sorted(samples[n])
        q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
        out[n] = {"median": statistics.median(s), "min": s[0], "iqr": q[2] - q[0], "number": number[n]}
    return out


def measure_copy_bandwidth(device: Union[str, torch.device], nbytes: Optional[int] = None,
                           quick: bool = False) -> Dict[str, float]:
    """Device-to-device ``Tensor.copy_`` bandwidth in GB/s (bytes read + bytes written), the "peak".

    CUDA: 1 GiB buffers (256 MiB with ``quick``), ``do_bench``'s median. CPU: buffers of twice the last-level
    cache and at least 16 MiB, so every round streams from memory (16 MiB buffers beside a 32 MiB L3 were
    sometimes cache-resident: 4.2 to 102.7 GB/s in four runs), copied by one thread and timed by that thread's
    CPU time (on a shared machine the wall clock also counts the time other processes hold the core: the
    wall-clock figure varied 2x between runs); the median over 5 fresh buffer pairs (7 without ``quick``) of
    each pair's fastest of 5 copies (7). The result says how it
    was measured in ``"method"``; the bench's rows are compared with a copy timed beside each case instead
    (``Row.copy_gbps``).
    """
    device = torch.device(device)
    if nbytes is None:
        if device.type == "cuda":
            nbytes = 2**28 if quick else 2**30
        else:
            nbytes = max(2**24, 2 * _cache_bytes(device))
    numel = nbytes // 4
    moved = 2 * numel * 4
    if device.type == "cuda":
        src = torch.ones(numel, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        sec = time_cuda(functools.partial(dst.copy_, src), quick=quick) * 1e-3
        method = "do_bench median"
        del src, dst
    else:
        # One buffer pair's fastest copy depends on where its pages landed: fresh pairs in one process read 18.1
        # to 21.3 GB/s on the CI CPU. The median over several fresh pairs (each its fastest of a few copies)
        # is what a run reports, so one unlucky or lucky allocation does not set the headline.
        pairs, rounds = (5, 5) if quick else (7, 7)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        bests = []
        try:
            for _ in range(pairs):
                src = torch.ones(numel, dtype=torch.float32)
                dst = torch.empty_like(src)
                dst.copy_(src)  # first touch of dst's pages
                best = math.inf
                for _ in range(rounds):
                    t0 = time.thread_time_ns()
                    dst.copy_(src)
                    best = min(best, time.thread_time_ns() - t0)
                bests.append(max(best, 1))
                del src, dst
        finally:
            torch.set_num_threads(threads)
        sec = statistics.median(bests) * 1e-9
        method = (f"one thread, its CPU time, median over {pairs} fresh buffer pairs of each pair's fastest of "
                  f"{rounds} copies of {nbytes / 2**20:.0f} MiB")
    return {"gbps": moved / sec / 1e9, "bytes": float(moved), "seconds": sec, "method": method}


def _cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
    for idx in (3, 2):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{idx}/size") as f:
                text = f.read().strip().upper()
            mult = {"K": 2**10, "M": 2**20}.get(text[-1], 1)
            return int(text.rstrip("KM")) * mult
        except (OSError, ValueError):
            continue
    return 32 * 2**20


def rotation_sets(set_bytes: int, device: torch.device) -> int:
    """Enough input sets to cover twice the last-level cache, within a memory cap (at most 64)."""
    want = math.ceil(2 * _cache_bytes(device) / max(set_bytes, 1))
    cap_bytes = 8 * 2**30 if device.type == "cuda" else 1 * 2**30
    cap = max(1, cap_bytes // max(set_bytes, 1))
    return int(max(2 if device.type == "cuda" else 1, min(want, 64, cap)))


def peak_extra(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Peak device memory allocated during one call beyond what was live before it (outputs included)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return int(peak)
