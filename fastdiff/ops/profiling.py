"""Naming the ops in profiler traces at no cost to unprofiled calls."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

__all__ = ["profiled"]

_F = TypeVar("_F", bound=Callable)
_profiler = torch.autograd.profiler
# torch sets this flag while a profiler runs; a torch without it gets every call named
_HAS_FLAG = hasattr(_profiler, "_is_profiler_enabled")


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
