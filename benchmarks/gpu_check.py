#!/usr/bin/env python3
"""The one GPU check: the test-suite on CUDA, then every op timed at >= 16M elements, fp32 and bf16.

One call, under 6 minutes on one H200:

    python3 benchmarks/gpu_check.py                  # tests (time-capped) + benchmarks + results files
    python3 benchmarks/gpu_check.py --quick          # on CPU: small sizes, no tests; checks the script itself

Writes ``benchmarks/results/<date>-<device>.json`` / ``.md`` / ``.png`` (date,
device name, torch/triton versions inside) and copies them to ``$OUT`` when
that is set. The short table is printed LAST. If fastdiff is not importable
(a fresh machine with only the source tree), it is installed editable first,
without dependencies or network.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_PCT_COPY = 85.0  # every fused op at >= 16M elements, fp32 and bf16
GOAL_GRAPH_US, GOAL_EAGER_US = 10.0, 40.0  # per-step overhead of a 50-step batch-1 loop
GOAL_DROPIN_X = 8.0  # drop-in step vs diffusers, geomean of four schedulers, 16x4x128x128 fp16
GOAL_DROPIN_OPS = ("dropin_ddim", "dropin_euler", "dropin_dpmpp2m", "dropin_flow_euler")  # the goal's four
GOAL_VS_COMPILE = 1.1  # fused step vs torch.compile of the eager step


def _log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ensure_fastdiff() -> None:
    try:
        import fastdiff.kernels.step  # noqa: F401
        return
    except ImportError:
        if os.environ.get("FASTDIFF_GPU_CHECK_INSTALLED"):
            raise  # installed, re-started, and still not importable: say why instead of looping
    _log("fastdiff not importable: installing the source tree editable (no deps, no network)")
    wheels = os.path.join(ROOT, "benchmarks", "wheels")
    if glob.glob(os.path.join(wheels, "*.whl")):  # optional: carried wheels (e.g. diffusers)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        *glob.glob(os.path.join(wheels, "*.whl"))], check=False)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-e", ROOT], check=True)
    # An editable install is a .pth hook that Python reads only at start-up: start this script again.
    os.environ["FASTDIFF_GPU_CHECK_INSTALLED"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]])


def _run_tests(timeout_s: float) -> dict:
    """The compiled-kernel tests (``-m gpu``) in a child process, killed (whole group) at ``timeout_s``.

    The rest of the suite checks kernel semantics under the CPU interpreter, which CI runs on every change.
    """
    cmd = [sys.executable, "-m", "pytest", "tests", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs"]
    os.environ["FASTDIFF_GPU_TESTS"] = "1"
    os.environ.pop("TRITON_INTERPRET", None)
    _log(f"running {' '.join(cmd[2:])} (cap {timeout_s:.0f}s)")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    wall = time.monotonic() - t0
    tail = out.strip().splitlines()[-15:]
    summary = next((ln for ln in reversed(tail) if re.search(r"\d+ (passed|failed|error)", ln)), "")
    res = {"returncode": None if timed_out else proc.returncode, "timed_out": timed_out, "wall_s": round(wall, 1),
           "summary": summary or ("timed out" if timed_out else "no summary line"), "tail": tail}
    _log(f"tests: {res['summary']} ({res['wall_s']}s{', TIMED OUT' if timed_out else ''})")
    return res


def _speedups_by_size(report, group: str, baseline: str) -> dict:
    """``{(shape, dtype): {op: fastdiff's speedup over baseline}}`` for the measured rows of one case group."""
    out: dict = {}
    for r in report.rows:
        if r.provider == "fastdiff" and r.group == group and r.ok and baseline in r.speedup:
            out.setdefault((r.shape, r.dtype), {})[r.op] = r.speedup[baseline]
    return out


def _goals(report, extras: dict, device_type: str) -> list:
    """Lines judging the issue's goals from this run (only where this run measured them)."""
    from fastdiff import bench

    lines = []
    if device_type == "cuda":
        for r in report.rows:
            if r.provider == "fastdiff" and r.group in ("encode", "step", "langevin") and r.numel >= 16 * 2**20:
                if r.ok:
                    mark = "PASS" if r.pct_copy >= GOAL_PCT_COPY else "MISS"
                    lines.append(f"{mark} {r.op} {r.shape} {r.dtype}: {r.pct_copy:.1f}% of copy bandwidth "
                                 f"(goal >= {GOAL_PCT_COPY:.0f}%)")
                else:
                    lines.append(f"MISS {r.op} {r.shape} {r.dtype}: {r.status}")
        # drop-in step vs diffusers (geomean over the drop-in cases of one size and dtype)
        for (shape, dtype), every in sorted(_speedups_by_size(report, "dropin", "diffusers").items()):
            per = {op: v for op, v in every.items() if op in GOAL_DROPIN_OPS}
            geo = bench.geomean(per.values()) if per else float("nan")
            mark = "PASS" if geo >= GOAL_DROPIN_X and len(per) == len(GOAL_DROPIN_OPS) else "MISS"
            lines.append(f"{mark} drop-in step vs diffusers {shape} {dtype}: {geo:.2f}x geomean over {len(per)} "
                         f"schedulers (goal >= {GOAL_DROPIN_X:.0f}x): "
                         + ", ".join(f"{op} {v:.2f}x" for op, v in sorted(per.items())))
            if len(every) > len(per):
                lines.append(f"info drop-in step vs diffusers {shape} {dtype}, every class: "
                             f"{bench.geomean(every.values()):.2f}x geomean over {len(every)} rows, slowest "
                             + ", ".join(f"{op} {v:.2f}x" for op, v in sorted(every.items(), key=lambda kv: kv[1])[:3]))
        # fused step vs torch.compile of the same eager step (after its compile)
        for (shape, dtype), per in sorted(_speedups_by_size(report, "step", "compile").items()):
            geo = bench.geomean(per.values())
            mark = "PASS" if geo >= GOAL_VS_COMPILE else "MISS"
            lines.append(f"{mark} step vs torch.compile {shape} {dtype}: {geo:.2f}x geomean over {len(per)} cases "
                         f"(goal >= {GOAL_VS_COMPILE}x)")
        # peak extra memory of a call: at most its outputs (allocator rounding: 512 B per output). Core ops only:
        # a drop-in's outputs follow diffusers' dtypes (Euler's pred_original_sample is float32 for fp16 input)
        core = [r for r in report.rows if r.group in ("encode", "step", "langevin")]
        for r in core:
            if r.provider == "fastdiff" and r.peak_extra_bytes is not None and r.op in bench.CASES:
                writes = bench.CASES[r.op].writes
                out_bytes = sum(writes.values()) * r.numel * {"fp32": 4}.get(r.dtype, 2)
                if r.peak_extra_bytes > out_bytes + 512 * len(writes):
                    lines.append(f"MISS peak memory {r.op} {r.shape} {r.dtype}: {r.peak_extra_bytes} B extra, "
                                 f"outputs are {out_bytes} B")
        if any(r.provider == "fastdiff" and r.peak_extra_bytes is not None for r in core):
            if not any(ln.startswith("MISS peak memory") for ln in lines):
                lines.append("PASS peak memory: every fastdiff call allocated at most its outputs")
    graphs = extras.get("dropin_graphs")
    if graphs:
        bad = [k for k, r in graphs["classes"].items() if r["status"] != "ok"]
        if device_type == "cuda":
            mark = "PASS" if not bad else "MISS"
            lines.append(f"{mark} drop-in loops captured in a CUDA graph, replay = eager: {graphs['captured']} of "
                         f"{graphs['total']} classes" + (f" (not: {', '.join(bad)})" if bad else ""))
        else:
            lines.append(f"info drop-in loops: eager only on {device_type} ({graphs['total']} classes run)")
    for key, goal in (("loop_graph", GOAL_GRAPH_US), ("loop_eager", GOAL_EAGER_US)):
        if key in extras and "overhead_us" in extras[key]:
            v = extras[key]["overhead_us"]
            mark = "PASS" if (device_type == "cuda" and v < goal) else ("MISS" if device_type == "cuda" else "info")
            lines.append(f"{mark} 50-step loop {key.split('_')[1]}: {v:.1f} us/step overhead "
                         f"({extras[key]['per_step_us']:.1f} us/step total; goal < {goal:.0f} us on GPU)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and short timing (works on CPU)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--tests", choices=("auto", "yes", "no"), default="auto",
                    help="run pytest tests first (auto: on CUDA only)")
    ap.add_argument("--test-timeout", type=float, default=150.0, help="cap on the test-suite, seconds")
    ap.add_argument("--budget", type=float, default=330.0, help="total seconds; benchmark rows past it are skipped")
    ap.add_argument("--sizes", default=None, help="comma-separated (default 16x4x512x512 = 16M elements on CUDA)")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--providers", default=None, help="default: all (fastdiff,eager,compile,diffusers)")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.budget
    os.chdir(ROOT)
    _ensure_fastdiff()
    import torch

    from fastdiff import bench

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        _log("--device cuda but no CUDA device")
        return 2
    tests = None
    if args.tests == "yes" or (args.tests == "auto" and dev.type == "cuda"):
        cap = min(args.test_timeout, max(10.0, deadline - time.monotonic() - 120))
        tests = _run_tests(cap)

    sizes = args.sizes.split(",") if args.sizes else bench.default_sizes(dev, quick=args.quick)
    dtypes = args.dtypes.split(",") if not args.quick or args.dtypes != "fp32,bf16" else ["fp32"]
    providers = args.providers.split(",") if args.providers else list(bench.PROVIDERS)
    _log(f"copy bandwidth on {dev} ...")
    peak = bench.measure_copy_bandwidth(dev, quick=args.quick)
    _log(f"copy bandwidth {peak['gbps']:.1f} GB/s; benchmarking {sizes} {dtypes} {providers}")
    # Cheapest and most goal-bearing first, so that a slow torch.compile in the core suite can only cost core
    # rows (skipped past the budget): the loop overheads, the drop-in schedulers at the 16x4x128x128
    # fp16, then the core ops (every other group) at the large size.
    extras: dict = {}
    _log("50-step loop overhead (batch 1, 4x64x64, trivial denoiser)")
    try:
        extras["loop_eager"] = bench.step_loop_overhead(dev, quick=args.quick)
        if dev.type == "cuda":
            extras["loop_graph"] = bench.step_loop_overhead(dev, cuda_graph=True, quick=args.quick)
    except Exception as exc:  # reported, not fatal
        extras["loop_error"] = f"{type(exc).__name__}: {exc}"
    _log("drop-in denoising loops captured in CUDA graphs")
    try:
        import dropin_graphs  # benchmarks/, beside this script

        # on CPU (a check of the script) two classes' eager loops; on CUDA every class, captured and replayed
        every = dropin_graphs.default_loops()
        few = None if dev.type == "cuda" else {k: every[k] for k in ("ddim", "euler_ancestral")}
        extras["dropin_graphs"] = dropin_graphs.graph_loop_check(
            dev, steps=10 if dev.type == "cuda" else 2, shape=(1, 4, 64, 64) if dev.type == "cuda" else (1, 4, 8, 8),
            reps=5 if dev.type == "cuda" else 1, loops=few, deadline=deadline - 200)
    except Exception as exc:  # reported, not fatal
        extras["dropin_graphs_error"] = f"{type(exc).__name__}: {exc}"
    # the goal's four drop-in rows before the core ops, every other class's row after them (past the budget, skipped)
    drop_kw = dict(device=dev, sizes=["16x4x128x128" if dev.type == "cuda" else "1x4x8x8"],
                   dtypes=["fp16" if dev.type == "cuda" else "fp32"], providers=providers, quick=args.quick,
                   log=_log, copy_bandwidth=peak)
    drop = bench.run_suite(ops=list(GOAL_DROPIN_OPS), deadline=deadline - 45, **drop_kw)
    core_groups = sorted({c.group for c in bench.CASES.values() if c.group != "dropin"})
    report = bench.run_suite(device=dev, sizes=sizes, dtypes=dtypes, providers=providers, groups=core_groups,
                             quick=args.quick, deadline=deadline - 30, log=_log, copy_bandwidth=peak)
    rest = [name for name, c in bench.CASES.items() if c.group == "dropin" and name not in GOAL_DROPIN_OPS]
    more = bench.run_suite(ops=rest, deadline=deadline - 10, **drop_kw)
    for part in (drop, more):
        report.rows.extend(part.rows)
        report.meta["cases"].update(part.meta["cases"])
    peaks = {f"{r.op} {r.dtype}": round(r.peak_extra_bytes / (r.numel * {"fp32": 4}.get(r.dtype, 2)), 3)
             for r in report.rows if r.provider == "fastdiff" and r.peak_extra_bytes is not None}
    if peaks:
        extras["peak_extra_in_output_sizes"] = peaks
    report.meta["extras"] = extras
    report.meta["tests"] = tests
    report.meta["wall_s"] = round(time.monotonic() - t_start, 1)
    goals = _goals(report, extras, dev.type)
    report.meta["goals"] = goals

    # Results files.
    name = re.sub(r"[^a-z0-9]+", "-", (report.meta["device_name"] if dev.type == "cuda" else "cpu").lower()).strip("-")
    stem = f"{datetime.date.today().isoformat()}-{name}{'-quick' if args.quick else ''}"
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, stem)
    report.to_json(base + ".json")
    md = bench.format_markdown(report, title=f"fastdiff GPU check -- {report.meta['device_name']}")
    if tests is not None:
        md += f"\n## Test-suite on {dev.type}\n\n`pytest tests -x -q`: {tests['summary']} ({tests['wall_s']} s)\n"
    if goals:
        md += "\n## Goals\n\n" + "\n".join(f"- {g}" for g in goals) + "\n"
    with open(base + ".md", "w") as f:
        f.write(md)
    files = [base + ".json", base + ".md"]
    try:
        files.append(bench.plot_report(report, base + ".png"))
    except Exception as exc:  # matplotlib missing: the JSON/markdown still stand
        _log(f"plot skipped: {type(exc).__name__}: {exc}")
    out = os.environ.get("OUT")
    if out and os.path.isdir(out):
        for f in files:
            shutil.copy(f, out)

    # The short table LAST.
    print()
    if tests is not None:
        print(f"tests ({dev.type}): {tests['summary']} in {tests['wall_s']} s"
              + (" -- TIMED OUT" if tests["timed_out"] else ""))
    print(bench.format_table(report))
    for g in goals:
        print(g)
    print("wrote " + ", ".join(os.path.relpath(f, ROOT) for f in files)
          + f"  ({report.meta['wall_s']} s total)")
    bad_tests = tests is not None and (tests["timed_out"] or tests["returncode"] not in (0,))
    bad_rows = [r for r in report.rows if r.status.startswith(("error", "mismatch"))]
    return 1 if (bad_tests or bad_rows) else 0


if __name__ == "__main__":
    sys.exit(main())
