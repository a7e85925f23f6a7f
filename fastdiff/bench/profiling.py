"""Profiling: name every fastdiff op call in ``torch.profiler`` traces (and NVTX on CUDA), and summarise them.

:func:`instrument_ops` names every public op call ``fastdiff::<op>`` (the Triton launchers already
appear as their ``torch.library`` names, ``fastdiff::fused_step_``); :func:`profile_sampling` runs a
callable under both and reports the time per op; :func:`op_range` opens a range of your own.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch

__all__ = ["register_profiled", "op_range", "instrument_ops", "ProfileResult", "profile_sampling"]

# (module, attribute) of every public op; instrument_ops names each call "fastdiff::<attribute>".
_PROFILED: List[Tuple[str, str]] = [
    ("fastdiff.ops.encode", "add_noise"), ("fastdiff.ops.encode", "add_noise_with_target"),
    ("fastdiff.ops.encode", "encoder_transition"), ("fastdiff.ops.encode", "fused_encode"),
    ("fastdiff.ops.step", "fused_step"), ("fastdiff.ops.langevin", "langevin_step"),
    ("fastdiff.ops.langevin", "langevin_select"), ("fastdiff.random", "philox_normal"),
]


def register_profiled(module: str, attr: str) -> None:
    """Have :func:`instrument_ops` also name calls of ``module.attr`` (e.g. a sampler's ``sample``)."""
    if (module, attr) not in _PROFILED:
        _PROFILED.append((module, attr))


@contextlib.contextmanager
def op_range(name: str, nvtx: Optional[bool] = None) -> Iterator[None]:
    """A ``torch.profiler`` range named ``name``, plus an NVTX range on CUDA.

    Example:
        >>> with op_range("my_pipeline::denoise"):
        ...     pass
    """
    use_nvtx = torch.cuda.is_available() if nvtx is None else nvtx
    with torch.profiler.record_function(name):
        if use_nvtx:
            torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            if use_nvtx:
                torch.cuda.nvtx.range_pop()


def _named(fn: Callable, name: str, nvtx: bool) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with op_range(name, nvtx=nvtx):
            return fn(*args, **kwargs)

    wrapper.__fastdiff_wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def instrument_ops(nvtx: Optional[bool] = None,
                   modules: Optional[Iterable[Any]] = None) -> Iterator[Dict[str, Callable]]:
    """Name every fastdiff op call ``fastdiff::<op>`` in profiler traces (and NVTX on CUDA) inside the block.

    Replaces each public op function, wherever a loaded module holds it (so
    ``from fastdiff import fused_step`` bindings are covered too), by a wrapper
    that opens the range, and restores the originals on exit. Not thread-safe:
    use it around a profiling run, not in production code. The Triton launchers
    need no help: ``torch.library`` ops appear as ``fastdiff::fused_step_`` etc.

    Example:
        >>> import torch, fastdiff
        >>> from fastdiff.bench import instrument_ops
        >>> with instrument_ops(), torch.profiler.profile() as prof:
        ...     _ = fastdiff.langevin_step(torch.zeros(4, 2), torch.zeros(4, 2), 0.1, seed=0)
        >>> any(e.name == "fastdiff::langevin_step" for e in prof.events())
        True
    """
    use_nvtx = torch.cuda.is_available() if nvtx is None else nvtx
    originals: Dict[int, Tuple[Callable, Callable]] = {}
    for mod_name, attr in _PROFILED:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        fn = getattr(mod, attr, None)
        if fn is None or hasattr(fn, "__fastdiff_wrapped__"):
            continue
        originals[id(fn)] = (fn, _named(fn, f"fastdiff::{attr}", use_nvtx))
    patched: List[Tuple[dict, str, Callable]] = []
    targets = list(sys.modules.values()) + list(modules or ())
    for mod in targets:
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for key, val in list(d.items()):
            hit = originals.get(id(val))
            if hit is not None and hit[0] is val:
                d[key] = hit[1]
                patched.append((d, key, val))
    try:
        yield {fn.__name__: wrapped for fn, wrapped in originals.values()}
    finally:
        for d, key, val in reversed(patched):
            d[key] = val


@dataclass
class ProfileResult:
    """What :func:`profile_sampling` saw: per-op totals, the raw profiler, and the callable's result."""

    ops: Dict[str, Dict[str, float]]
    table: str
    profiler: Any
    result: Any
    trace_path: Optional[str] = None

    def op_names(self) -> List[str]:
        """The ``fastdiff::<op>`` names seen, sorted."""
        return sorted(self.ops)


def profile_sampling(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 1,
    trace_path: Optional[str] = None,
    nvtx: Optional[bool] = None,
    instrument: bool = True,
    row_limit: int = 15,
    **kwargs: Any,
) -> ProfileResult:
    """Run ``fn(*args, **kwargs)`` under ``torch.profiler`` and report where the time goes, per fastdiff op.

    ``warmup`` unprofiled calls first keep Triton/compile work out of the trace.
    With ``instrument`` every public op call is a ``fastdiff::<op>`` range (see
    :func:`instrument_ops`); on CUDA these are NVTX ranges too, so an Nsight
    Systems timeline shows them. ``trace_path`` writes a Chrome/Perfetto trace.

    Example:
        >>> import torch, fastdiff
        >>> from fastdiff.bench import profile_sampling
        >>> x, g = torch.randn(64, 2), torch.randn(64, 2)
        >>> res = profile_sampling(lambda: fastdiff.langevin_step(x, g, 0.1, seed=0))
        >>> "fastdiff::langevin_step" in res.ops
        True
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn(*args, **kwargs)
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    ctx = instrument_ops(nvtx=nvtx) if instrument else contextlib.nullcontext()
    with ctx, profile(activities=activities) as prof:
        result = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
    if trace_path:
        os.makedirs(os.path.dirname(os.path.abspath(trace_path)), exist_ok=True)
        prof.export_chrome_trace(trace_path)
    ops: Dict[str, Dict[str, float]] = {}
    for ev in prof.key_averages():
        if not ev.key.startswith("fastdiff::"):
            continue
        dev_total = getattr(ev, "device_time_total", None)
        if dev_total is None:
            dev_total = getattr(ev, "cuda_time_total", 0.0)
        ops[ev.key] = {"count": float(ev.count), "cpu_total_us": float(ev.cpu_time_total),
                       "device_total_us": float(dev_total or 0.0)}
    sort = "device_time_total" if cuda else "cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort, row_limit=row_limit)
    except Exception:  # older torch: cuda_time_total
        table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=row_limit)
    return ProfileResult(ops=ops, table=table, profiler=prof, result=result, trace_path=trace_path)
