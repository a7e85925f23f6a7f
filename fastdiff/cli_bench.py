"""``fastdiff bench``: time every fused op against eager PyTorch, torch.compile and diffusers.

Example:
    $ fastdiff bench --quick                               # CPU smoke run, small sizes
    $ fastdiff bench --device cuda --dtypes fp32,bf16 --json out.json --plot out.png
    $ fastdiff bench --sizes 1x4x8x8,16x4x64x64 --providers fastdiff,eager --ops step_ddim,langevin
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, Sequence

__all__ = ["add_parser", "run", "main"]


def _csv(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``bench`` sub-command on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "bench", help="benchmark the fused ops (time, GB/s, %% of copy bandwidth, speedups)",
        description="Time every fastdiff op against eager PyTorch, torch.compile and diffusers. Bytes count "
                    "each input read once and each output written once; the peak is Tensor.copy_ bandwidth "
                    "measured in the same run.")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--sizes", type=_csv, default=None,
                   help="comma-separated shapes (16x4x64x64) or element counts (16M); "
                        "default: cpu 1x4x8x8,16x4x64x64, cuda 16x4x512x512")
    p.add_argument("--dtypes", type=_csv, default=None, help="comma-separated: fp32,bf16,fp16 (default fp32,bf16)")
    p.add_argument("--providers", type=_csv, default=None,
                   help="comma-separated subset of fastdiff,eager,compile,diffusers (default: all; --quick "
                        "leaves out compile)")
    p.add_argument("--ops", type=_csv, default=None, help="comma-separated case names (default: all); see --list")
    p.add_argument("--json", dest="json_path", default=None, metavar="PATH", help="write results as JSON")
    p.add_argument("--markdown", dest="md_path", default=None, metavar="PATH", help="write a markdown report")
    p.add_argument("--plot", dest="plot_path", default=None, metavar="PATH", help="write a PNG bar chart")
    p.add_argument("--quick", action="store_true", help="small sizes, fp32 only, short timing")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    p.add_argument("--list", action="store_true", help="list the cases and their byte counts, then exit")
    p.set_defaults(func=run)
    return p


def _error(msg: str) -> None:
    """A user-facing error line, in the same form as argparse's and ``fastdiff demo``'s (exit status 2)."""
    print(f"fastdiff bench: error: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args``; prints the table and returns an exit status."""
    import torch

    from . import bench

    if args.list:
        for name, case in bench.CASES.items():
            print(f"{name:16s} [{case.group}] {case.description}: {case.formula()}")
        return 0
    if args.threads is not None:
        if args.threads < 1:
            _error("--threads must be >= 1")
            return 2
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        _error("--device cuda: no CUDA device is available to PyTorch; use --device cpu (or leave it out)")
        return 2
    t0 = time.monotonic()
    try:
        report = bench.run_suite(device=args.device, sizes=args.sizes, dtypes=args.dtypes,
                                 providers=args.providers, ops=args.ops, quick=args.quick,
                                 log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    except (ValueError, TypeError) as exc:
        _error(str(exc))
        return 2
    report.meta["wall_s"] = round(time.monotonic() - t0, 2)
    if args.json_path:
        report.to_json(args.json_path)
    if args.md_path:
        with open(args.md_path, "w") as f:
            f.write(bench.format_markdown(report))
    if args.plot_path:
        bench.plot_report(report, args.plot_path)
    print(bench.format_table(report))
    summary = bench.geomean_speedups(report)
    for key, per in summary.items():
        parts = [f"{b} {per[b]:.2f}x" for b in bench.BASELINES if b in per]
        print(f"geomean fastdiff speedup [{key}]: " + ", ".join(parts))
    for path in (args.json_path, args.md_path, args.plot_path):
        if path:
            print(f"wrote {path}")
    failed = [r for r in report.rows if r.status.startswith(("error", "mismatch"))]
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Stand-alone entry (``python -m fastdiff.cli_bench ...``), same options as ``fastdiff bench``."""
    parser = argparse.ArgumentParser(prog="fastdiff")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
