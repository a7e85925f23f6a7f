"""Benchmark and profiling harness for the fastdiff ops.

Every benchmark is a *case* (one op in one representative configuration) with a
byte model -- each input read once, each output written once -- and a set of
*providers* that compute the same thing:

* ``fastdiff``  -- the op itself, ``backend="auto"`` (Triton on CUDA, the PyTorch path on CPU),
* ``eager``     -- the op's plain-PyTorch reference formula as eager code (what a pipeline writes by hand),
* ``compile``   -- ``torch.compile`` of the eager expression, timed after its compile,
* ``diffusers`` -- the equivalent ``diffusers`` call, when the package imports and the case has one.

Timing: on CUDA ``triton.testing.do_bench`` medians; on CPU medians of repeats,
all providers of a case interleaved in one process so drift hits them alike.
Each timed call rotates among several input sets whose total is twice the last-level
cache where memory allows (at most 64 sets and 1 GiB on CPU, so large CPU sizes can stay
cache-resident; :func:`floor_call` measures a copy under the same rotation), and the
"peak" is a device-to-device ``Tensor.copy_`` measured in the same run. A case and its providers
take a few lines::

    from fastdiff import bench
    bench.register_case(bench.Case("my_axpy", "2x + y", inputs={"x": 1, "y": 1}, writes={"out": 1}))

    @bench.provider("my_axpy", "eager")
    def _(spec):
        return lambda inp: (2 * inp["x"] + inp["y"],)   # the factory's set-up is not timed

Profiling: :func:`instrument_ops` names every public op call ``fastdiff::<op>``
in ``torch.profiler`` traces (and as NVTX ranges on CUDA); the Triton launchers
already appear as their ``torch.library`` names (``fastdiff::fused_step_``).
:func:`profile_sampling` runs a callable under both and summarises the time per op.

Modules: ``registry`` (Spec, Case, providers), ``sizes`` (size and dtype names), ``common`` (the
configuration the cases share), ``cases_encode`` / ``cases_step`` / ``cases_langevin`` / ``cases_dropin``
/ ``cases_underdamped`` / ``cases_hmc`` (the cases, registered on import in that order), ``timing`` (timers),
``runner`` (:func:`run_suite`), ``report`` (rows, tables, plot), ``loop`` (:func:`step_loop_overhead`), ``profiling``.

Example:
    >>> from fastdiff import bench
    >>> rep = bench.run_suite(device="cpu", sizes=["1x4x8x8"], dtypes=["fp32"],
    ...                       providers=["fastdiff", "eager"], ops=["step_ddim"], quick=True)
    >>> print(bench.format_table(rep))  # doctest: +SKIP
"""
from __future__ import annotations

# register the cases, in order
from . import cases_encode, cases_step, cases_langevin, cases_dropin, cases_underdamped, cases_hmc  # noqa: F401
from .loop import step_loop_overhead
from .profiling import ProfileResult, instrument_ops, op_range, profile_sampling, register_profiled
from .registry import (BASELINES, CASES, PROVIDERS, Case, Spec, Unavailable, provider, providers_for,
                       register_case, register_provider)
from .report import COLUMN_NOTES, Report, Row, format_markdown, format_table, geomean, geomean_speedups, plot_report
from .runner import build_call, floor_call, run_suite
from .sizes import DTYPES, default_sizes, parse_dtype, parse_size
from .timing import measure_copy_bandwidth, rotating, time_cuda, time_interleaved

__all__ = [
    "PROVIDERS", "BASELINES", "COLUMN_NOTES", "DTYPES", "Spec", "Case", "Row", "Report", "Unavailable", "CASES",
    "register_case", "provider", "register_provider", "providers_for", "parse_size", "parse_dtype",
    "default_sizes", "run_suite", "build_call", "floor_call", "format_table", "format_markdown", "plot_report",
    "geomean", "geomean_speedups", "measure_copy_bandwidth", "time_cuda", "time_interleaved", "rotating",
    "step_loop_overhead", "instrument_ops", "register_profiled", "profile_sampling", "ProfileResult", "op_range",
]
