"""Naming the ops in profiler traces at no cost to unprofiled calls."""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, TypeVar

import torch

__all__ = ["profiled", "named_range", "names_itself"]

_F = TypeVar("_F", bound=Callable)
_profiler = torch.autograd.profiler
# torch sets this flag while a profiler runs; a torch without it gets every call named
_HAS_FLAG = hasattr(_profiler, "_is_profiler_enabled")


_NO_RANGE = contextlib.nullcontext()  # one shared object: entering it costs ~0.3 us, nothing allocated


def named_range(name: str):
    """``record_function(name)`` while a profiler runs, else a shared no-op context.

    For the hottest ops (a sampler's ``fused_step``), written inside the op's body: ``profiled``'s wrapper
    re-packs every argument (``*args, **kwargs``) on each call, 1.5 us for ``fused_step``'s 18 keywords on the
    CI CPU, where ``with named_range(...)`` costs 0.3 us.
    """
    if _HAS_FLAG and not _profiler._is_profiler_enabled:
        return _NO_RANGE
    return torch.profiler.record_function(name)


def names_itself(fn: _F) -> _F:
    """Mark ``fn`` as naming its own profiler range (``named_range`` in its body), so
    ``fastdiff.bench.instrument_ops`` does not wrap it a second time."""
    fn.__fastdiff_wrapped__ = fn  # type: ignore[attr-defined]
    return fn


def profiled(name: str) -> Callable[[_F], _F]:
    """Name an op in ``torch.profiler`` traces (and NVTX on CUDA) without slowing unprofiled calls.

    A bare ``record_function`` costs ~8 us per call even with no profiler running; checking
    whether one is running first costs ~1 us.
    """

    def deco(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if _HAS_FLAG and not _profiler._is_profiler_enabled:
                return fn(*args, **kwargs)
            with torch.profiler.record_function(name):
                return fn(*args, **kwargs)

        wrapper.__fastdiff_wrapped__ = fn  # lets fastdiff.bench.instrument_ops skip already-named ops
        return wrapper  # type: ignore[return-value]

    return deco
