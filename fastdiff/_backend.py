"""Compatibility names: the ops layer's helpers now live in ``fastdiff.ops`` (one module a job).

``fastdiff.ops.backend`` (backend choice), ``fastdiff.ops.launch`` (launch settings), ``fastdiff.ops._common``
(argument checks, ``maybe_rows``), ``fastdiff.ops.profiling`` (``profiled``) and ``fastdiff.ops.dispatch``
(launchers, the dispatcher bypass, the interpreter lock). Import from those; this module re-exports them.
"""
from .ops._common import maybe_rows
from .ops.backend import BACKENDS, interpret_mode, resolve_backend, triton_available
from .ops.dispatch import as_kernel, interpreter_guard, plain_eager
from .ops.launch import block_size, idx64, num_warps_for
from .ops.profiling import profiled

__all__ = ["BACKENDS", "resolve_backend", "triton_available", "interpret_mode", "block_size", "num_warps_for",
           "idx64", "maybe_rows", "profiled", "interpreter_guard", "plain_eager", "as_kernel"]
