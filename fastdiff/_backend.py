"""Which implementation runs an op: the Triton kernels, the PyTorch path, or the reference.

``backend="auto"`` picks Triton for CUDA tensors and the few-pass PyTorch path on
CPU. ``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before Triton
is imported (the numpy interpreter the test-suite uses). ``"reference"`` is the
literal plain-PyTorch formula, computed in the inputs' own dtype (pass float64
tensors for the float64 reference).
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Callable, Optional, TypeVar

import torch

__all__ = ["profiled", "interpreter_guard", "launch", "BACKENDS", "resolve_backend", "triton_available",
           "interpret_mode", "block_size"]

BACKENDS = ("auto", "triton", "torch", "reference")


def _probe_triton() -> bool:
    try:
        import triton  # noqa: F401

        from .kernels import step  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


# Probed once at import so that torch.compile traces backend selection without imports or caches.
_TRITON_OK = _probe_triton()


def triton_available() -> bool:
    """True when Triton and the fastdiff kernels import."""
    return _TRITON_OK


# Read once: Triton reads it when the kernels are decorated, at fastdiff's import (``_probe_triton``), so a
# later change of the variable cannot switch the kernels anyway; re-reading os.environ cost ~1 us per launch.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpret_mode() -> bool:
    """True when Triton runs kernels on CPU through its interpreter."""
    return _INTERPRET


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``backend`` (one of BACKENDS) to the implementation that will run on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
        if device.type == "cpu" and not interpret_mode():
            raise ValueError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported; "
                "use backend='torch' for the fast CPU path"
            )
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend='triton' supports cuda (and cpu under the interpreter), got {device.type}")
    return backend


def block_size(total: int, device: torch.device) -> int:
    """Elements per program: 1024 on GPU; large blocks under the interpreter (each program costs ~ms)."""
    if device.type == "cpu":
        return max(16, min(1 << max(total - 1, 1).bit_length(), 1 << 16))
    return 1024


def num_warps_for(block: int) -> int:
    return 4 if block <= 1024 else 8


def idx64(total: int, extra: int = 0) -> bool:
    """Whether flat offsets (plus ``extra``, e.g. the cond half of a CFG batch) can pass 2**31."""
    return total + extra >= 2**31 - 1


def maybe_rows(row_ids: Optional[torch.Tensor], batch: int, device: torch.device) -> Optional[torch.Tensor]:
    """Validate per-row global ids (int64, shape (batch,)) and move them next to the data."""
    if row_ids is None:
        return None
    if not isinstance(row_ids, torch.Tensor):
        raise TypeError(f"row_ids must be an int64 tensor, got {type(row_ids).__name__}")
    if row_ids.dtype != torch.int64 or row_ids.shape != (batch,):
        raise ValueError(
            f"row_ids must be an int64 tensor of shape ({batch},), got {tuple(row_ids.shape)} {row_ids.dtype}"
        )
    return row_ids.to(device).contiguous()


_F = TypeVar("_F", bound=Callable)


def profiled(name: str) -> Callable[[_F], _F]:
    """Name an op in ``torch.profiler`` traces (and NVTX on CUDA) without slowing unprofiled calls.

    A bare ``record_function`` costs ~8 us per call even with no profiler running; checking
    whether one is running first costs ~1 us.
    """

    def deco(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not getattr(torch.autograd.profiler, "_is_profiler_enabled", True):
                return fn(*args, **kwargs)
            with torch.profiler.record_function(name):
                return fn(*args, **kwargs)

        wrapper.__fastdiff_wrapped__ = fn  # lets fastdiff.bench.instrument_ops skip already-named ops
        return wrapper  # type: ignore[return-value]

    return deco


_TENSOR = torch.Tensor
_dispatch_depth = getattr(torch._C, "_len_torch_dispatch_stack", None)
_SCALARS = frozenset((type(None), int, float, bool))


def _plain_eager(args: tuple) -> bool:
    """True when a launch needs nothing from the dispatcher: no tracing, no profiler, plain tensors, no grad.

    ``args[0]`` is the launch's first tensor (every launcher's ``x``). The check costs ~2.7 us for 20
    arguments on the CI CPU.
    """
    if torch.compiler.is_compiling() or getattr(torch.autograd.profiler, "_is_profiler_enabled", True):
        return False
    if _dispatch_depth is None or _dispatch_depth():  # fake / functional tensors, export, debug modes
        return False
    grad = torch.is_grad_enabled()
    for a in args:
        cls = a.__class__
        if cls is _TENSOR:
            if grad and a.requires_grad:
                return False
        elif cls not in _SCALARS and isinstance(a, _TENSOR):  # a subclass (DTensor, FakeTensor) keeps its dispatch
            return False
    # the op runs under the tensors' device guard; a direct Triton launch uses the current device
    dev = args[0].device
    return dev.type != "cuda" or dev.index == torch.cuda.current_device()


def as_kernel(kernel):
    """The ``jit`` argument of a direct launch body (where the op passes ``wrap_triton``): the kernel as is."""
    return kernel


def launch(op: Callable[..., None], direct: Callable[..., None], *args) -> None:
    """Run a Triton launcher, through its ``torch.library`` op only when someone needs to see the op.

    ``op`` is the ``triton_op`` (what torch.compile, export, fake-tensor tracing and profiler traces see);
    ``direct`` is the same launch body calling the kernel as is. A plain eager call takes ``direct``: the
    dispatcher round trip of a ``triton_op`` costs ~25 us per call even with an empty body (measured on the
    2-core CI CPU), more than a whole step's kernel at small batch on a GPU. Either way the launch holds the
    interpreter lock (``interpreter_guard``) when kernels run under the CPU interpreter.
    """
    with interpreter_guard():
        if _plain_eager(args):
            direct(*args)
        else:
            op(*args)


# Triton's CPU interpreter patches triton.language module state for the duration of each launch, so two
# threads launching at once crash inside it; compiled launches on a GPU need no lock.
_INTERPRETER_LOCK = threading.RLock()


def interpreter_guard():
    """A lock around kernel launches under the CPU interpreter; a no-op context on GPUs and under torch.compile."""
    if interpret_mode() and not torch.compiler.is_compiling():
        return _INTERPRETER_LOCK
    return contextlib.nullcontext()
