"""Which implementation runs an op: the Triton kernels, the PyTorch path, or the reference.

``backend="auto"`` picks Triton for CUDA tensors and the few-pass PyTorch path on
CPU. ``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before Triton
is imported (the numpy interpreter the test-suite uses). ``"reference"`` is the
literal plain-PyTorch formula, computed in the inputs' own dtype (pass float64
tensors for the float64 reference).
"""
from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "resolve_backend", "triton_available", "interpret_mode"]

BACKENDS = ("auto", "triton", "torch", "reference")


def _probe_triton() -> bool:
    try:
        import triton  # noqa: F401

        from ..kernels import step  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


# Probed once at import so that torch.compile traces backend selection without imports or caches.
_TRITON_OK = _probe_triton()

# Read once: Triton reads it when the kernels are decorated, at fastdiff's import (``_probe_triton``), so a
# later change of the variable cannot switch the kernels anyway; re-reading os.environ cost ~1 us per launch.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """True when Triton and the fastdiff kernels import."""
    return _TRITON_OK


def interpret_mode() -> bool:
    """True when Triton runs kernels on CPU through its interpreter."""
    return _INTERPRET


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``backend`` (one of BACKENDS) to the implementation that will run on ``device``."""
    try:
        found = _RESOLVED.get((backend, device))
    except TypeError:  # an unhashable backend: _resolve names it
        found = None
    if found is None:
        found = _resolve(backend, device)
        if not torch.compiler.is_compiling():
            _RESOLVED[(backend, device)] = found
    return found


# The answer per (backend, device) seen, kept: it depends on nothing else once the import-time probes above are
# made, and reading ``device.type`` alone costs ~0.2 us. Calls that raise keep nothing.
_RESOLVED: dict = {}


def _resolve(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and _TRITON_OK else "torch"
    if backend == "triton":
        if not _TRITON_OK:
            raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
        if device.type == "cpu" and not _INTERPRET:
            raise ValueError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported; "
                "use backend='torch' for the fast CPU path"
            )
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend='triton' supports cuda (and cpu under the interpreter), got {device.type}")
    return backend
