#!/usr/bin/env python3
"""Every CPU goal of issue 18 measured in one run, judged, and written as a dated record in benchmarks/results/.

Run (from the repository root, on a machine as quiet as you can get; about 10 minutes on 2 cores)::

    python benchmarks/cpu_goals.py                 # writes benchmarks/results/<date>-cpu-goals.{json,md}
    python benchmarks/cpu_goals.py --quick         # fewer rounds: a smoke run, figures not for quoting

The goals, and how each is measured:

* **drop-in** ``scale_model_input`` + ``step`` against diffusers (DDIM, Euler, DPM++ 2M, FlowMatch Euler) at
  1x4x8x8 (geomean >= 3x, none below 1.5x) and 16x4x64x64 (geomean >= 5x), one torch thread and two:
  ``benchmarks/dropin_speed.py``'s interleaved 50-step loops;
* **host work per kernel-path fused_step call** (launch stubbed) <= 5 us: ``benchmarks/host_overhead.py``;
* **fastdiff.sample per-step host work** <= 8 us for every sampler: ``benchmarks/host_per_step.py``'s step loop
  with a constant model and the launch stubbed (what one more step costs on the host); the once-per-run planning
  is reported beside it, per evaluation;
* **CPU noise ops** (Langevin update, ancestral step, noising with a v target) >= 1.0x the eager expression at
  16x4x64x64, one thread and two: the ``fastdiff bench`` cases, interleaved here (each round times a batch of
  each side back to back, in alternating order; the ratio is the median of the rounds' ratios; one thread: this
  thread's CPU time, two threads: wall time). The numpy Philox (the fallback where numba does not import) is
  timed beside them as a third column, for the record;
* **copy bandwidth** stable within 20% over five runs: the headline figure of ``fastdiff bench --quick``
  (``bench.measure_copy_bandwidth(quick=True)``), each run in a fresh process; and the largest "% copy" of the
  fused ops at 16x4x64x64 (rows above 100 are explained in the table's notes: write-allocate).

Each goal is recorded with its figures and PASS / MISS (or "not measured" and why).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from typing import Callable, Dict, List

os.environ.setdefault("TRITON_INTERPRET", "1")  # host_overhead's kernel-path calls on CPU tensors (nothing runs)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import torch  # noqa: E402

from fastdiff import bench  # noqa: E402

NOISE_OPS = ("langevin", "step_ancestral", "encode_v")
NOISE_SIZE = "16x4x64x64"
HOST_STEP_US, SAMPLE_STEP_US, COPY_SPREAD = 5.0, 8.0, 1.20


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("triton", "numpy", "numba", "diffusers"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:
            out[mod] = "not installed"
    return out


def _goal(name: str, passed, figures: dict, note: str = "") -> dict:
    verdict = "not measured" if passed is None else ("PASS" if passed else "MISS")
    return {"goal": name, "verdict": verdict, "figures": figures, "note": note}


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _numpy_philox():
    """philox_normal with the compiled loop switched off: the numpy fallback (the previous CPU path)."""
    import fastdiff.random as fd_random

    real = fd_random.normals_jit
    fd_random.normals_jit = lambda *a, **kw: None
    try:
        yield
    finally:
        fd_random.normals_jit = real


def interleaved_ratios(calls: Dict[str, Callable[[], object]], base: str, rounds: int, clock) -> Dict[str, dict]:
    """Per call: median time (us) and the median over rounds of ``base``'s time over its time (same round)."""
    names = list(calls)
    number = {}
    for n in names:
        calls[n]()
        t0 = time.perf_counter()
        calls[n]()
        number[n] = max(1, min(200, int(0.05 / max(time.perf_counter() - t0, 1e-7))))
    per: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = clock()
            for _ in range(number[n]):
                calls[n]()
            per[n].append((clock() - t0) / number[n] / 1e3)
    out = {}
    for n in names:
        ratios = sorted(b / a for a, b in zip(per[n], per[base]))
        out[n] = {"us": statistics.median(per[n]), f"{base}_over_this": statistics.median(ratios),
                  "range": [ratios[0], ratios[-1]]}
    return out


def noise_goal(threads: int, rounds: int) -> dict:
    spec = bench.Spec(bench.parse_size(NOISE_SIZE), torch.float32, torch.device("cpu"))
    clock = time.thread_time_ns if threads == 1 else time.perf_counter_ns
    figures = {}
    with _threads(threads):
        for op in NOISE_OPS:
            fd = bench.build_call(op, "fastdiff", spec)
            calls = {"fastdiff": fd, "eager": bench.build_call(op, "eager", spec)}

            def numpy_path(fd=fd):
                with _numpy_philox():
                    return fd()

            calls["fastdiff, numpy Philox"] = numpy_path
            res = interleaved_ratios(calls, "eager", rounds, clock)
            figures[op] = {name: {"us": round(r["us"], 1), "speedup_vs_eager": round(r["eager_over_this"], 3),
                                  "range": [round(v, 3) for v in r["range"]]} for name, r in res.items()}
    speedups = [figures[op]["fastdiff"]["speedup_vs_eager"] for op in NOISE_OPS]
    figures["geomean"] = round(bench.geomean(speedups), 3)
    return _goal(f"CPU noise ops >= 1.0x eager at {NOISE_SIZE}, {threads} thread(s)", min(speedups) >= 1.0, figures,
                 "clock: " + ("this thread's CPU time" if threads == 1 else "wall time"))


def dropin_goals(threads: int, rounds: int) -> List[dict]:
    try:
        dropin_speed = importlib.import_module("dropin_speed")
        import diffusers  # noqa: F401
    except Exception as exc:
        why = f"needs benchmarks/dropin_speed.py and diffusers ({type(exc).__name__}: {exc})"
        return [_goal(f"drop-in vs diffusers at {s}, {threads} thread(s)", None, {}, why)
                for s in ("1x4x8x8", "16x4x64x64")]
    out = []
    for size, goal in (("1x4x8x8", 3.0), ("16x4x64x64", 5.0)):
        rows = dropin_speed.measure(size, threads, rounds)
        ratios = {name: round(r[2], 3) for name, r in rows.items()}
        geo = bench.geomean(ratios.values())
        ok = geo >= goal and (size != "1x4x8x8" or min(ratios.values()) >= 1.5)
        figures = {"geomean": round(geo, 3), "speedup": ratios,
                   "fastdiff_us": {n: round(r[0], 1) for n, r in rows.items()},
                   "diffusers_us": {n: round(r[1], 1) for n, r in rows.items()}}
        extra = ", none below 1.5x" if size == "1x4x8x8" else ""
        note = ""
        if size == "16x4x64x64":
            import diffusers
            import fastdiff.diffusers as fdd

            ceiling = {}
            for name, config in dropin_speed.CASES:
                ours = dropin_speed.step_traffic(fdd, name, config, size)
                theirs = dropin_speed.step_traffic(diffusers, name, config, size)
                ceiling[name] = {"fastdiff_passes": ours["passes"], "fastdiff_mib": round(ours["mib"], 2),
                                 "diffusers_passes": theirs["passes"], "diffusers_mib": round(theirs["mib"], 2),
                                 "single_pass_floor_mib": round(ours["floor_mib"], 2),
                                 "traffic_over_floor": round(theirs["mib"] / ours["floor_mib"], 2)}
            figures["traffic per step (dropin_speed.step_traffic)"] = ceiling
            geo_ceiling = bench.geomean(c["traffic_over_floor"] for c in ceiling.values())
            figures["traffic over single-pass floor, geomean"] = round(geo_ceiling, 2)
            note = (f"at this size a step streams its tensors: at equal bandwidth a perfect one-pass step would be "
                    f"diffusers' traffic over its single-pass floor faster, {geo_ceiling:.2f}x geomean; a measured "
                    f"ratio above a row's figure means diffusers' small passes ran below the bandwidth ours reach")
        out.append(_goal(f"drop-in scale_model_input + step >= {goal}x diffusers at {size}{extra}, "
                         f"{threads} thread(s)", ok, figures, note))
    torch.set_num_threads(threads)
    return out


def host_goals() -> List[dict]:
    out = []
    try:
        import host_overhead

        with redirect_stdout(StringIO()), _threads(1):
            rows = host_overhead.main()
        name, us = next((r for r in rows if r[0].startswith("fused_step, a sampler")), rows[0])
        out.append(_goal(f"host work per kernel-path fused_step call <= {HOST_STEP_US} us (launch stubbed)",
                         us <= HOST_STEP_US, {n: round(v, 2) for n, v in rows}, f"judged on {name!r}"))
    except Exception as exc:
        out.append(_goal("host work per kernel-path fused_step call", None, {}, f"{type(exc).__name__}: {exc}"))
    try:
        import host_per_step

        with warnings.catch_warnings(), _threads(1):
            warnings.simplefilter("ignore")
            rows = host_per_step.measure()
        loop = {n.split(" loop")[0]: round(v, 2) for n, v in rows.items()
                if n.startswith("fastdiff.sample(") and " loop per evaluation" in n}
        plan = {n.split(" planning")[0]: round(v, 2) for n, v in rows.items()
                if n.startswith("fastdiff.sample(") and " planning per evaluation" in n}
        out.append(_goal(f"fastdiff.sample per-step host work <= {SAMPLE_STEP_US} us, every sampler",
                         bool(loop) and max(loop.values()) <= SAMPLE_STEP_US,
                         {"loop_us_per_evaluation": loop, "planning_us_per_evaluation (once per run)": plan,
                          "all rows": {n: round(v, 2) for n, v in rows.items()}},
                         "judged on the step loop with the launch stubbed (host_per_step.measure_sample_loop); "
                         "the per-run planning (every row's coefficients, the table) is reported beside it"))
    except Exception as exc:
        out.append(_goal("fastdiff.sample per-step host work", None, {}, f"{type(exc).__name__}: {exc}"))
    return out


def copy_goal(runs: int) -> dict:
    code = ("import json; from fastdiff.bench import measure_copy_bandwidth as m; "
            "print(json.dumps(m('cpu', quick=True)))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    figures = []
    method = ""
    for _ in range(runs):
        res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                        check=True).stdout.strip().splitlines()[-1])
        figures.append(round(res["gbps"], 2))
        method = res.get("method", "")
    spread = max(figures) / min(figures)
    rep = bench.run_suite(device="cpu", sizes=[NOISE_SIZE], dtypes=["fp32"], providers=["fastdiff"],
                          groups=["encode", "step", "langevin"], quick=True,
                          copy_bandwidth={"gbps": figures[-1], "bytes": 0.0, "seconds": 0.0})
    pct = {r.op: round(r.pct_copy, 1) for r in rep.rows if r.ok}
    return _goal(f"copy bandwidth within {round((COPY_SPREAD - 1) * 100)}% over {runs} runs of the "
                 "fastdiff bench --quick headline", spread <= COPY_SPREAD,
                 {"gbps": figures, "max_over_min": round(spread, 3), "method": method,
                  f"fastdiff % of the case's copy at {NOISE_SIZE}": pct},
                 "% copy above 100 is write-allocate (see the table notes of fastdiff bench), not a timing fault")


def _markdown(record: dict) -> str:
    m = record["meta"]
    lines = [f"# CPU goals (issue 18) -- {m['date']}", "",
             f"- CPU: {m['cpu']} ({m['cores']} cores), torch threads as stated per goal",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             f"- load average before / after: {m['loadavg_before']} / {m['loadavg_after']}",
             f"- command: `{m['command']}` ({m['wall_s']} s)", "", "| goal | verdict | figures |", "|---|---|---|"]
    for g in record["goals"]:
        figs = json.dumps(g["figures"], separators=(", ", ": "))
        note = f" ({g['note']})" if g["note"] else ""
        lines.append(f"| {g['goal']} | **{g['verdict']}**{note} | `{figs}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run; figures not for quoting)")
    p.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated (default: %(default)s)")
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"), help="where the record goes")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    rounds = 5 if args.quick else 11
    t0 = time.monotonic()
    load0 = [round(v, 2) for v in os.getloadavg()]
    goals: List[dict] = []
    for n in threads:
        print(f"drop-in schedulers, {n} thread(s)", file=sys.stderr, flush=True)
        goals += dropin_goals(n, rounds)
    print("host work", file=sys.stderr, flush=True)
    goals += host_goals()
    for n in threads:
        print(f"noise ops, {n} thread(s)", file=sys.stderr, flush=True)
        goals.append(noise_goal(n, rounds))
    print("copy bandwidth", file=sys.stderr, flush=True)
    goals.append(copy_goal(5))
    record = {"meta": {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": _cpu_model(),
        "cores": os.cpu_count(), "threads": threads, "versions": _versions(), "loadavg_before": load0,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()], "quick": args.quick,
        "command": "python benchmarks/cpu_goals.py" + (" --quick" if args.quick else "")
                   + ("" if args.threads == "1,2" else f" --threads {args.threads}"),
        "wall_s": round(time.monotonic() - t0, 1)}, "goals": goals}
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, f"{datetime.date.today().isoformat()}-cpu-goals{'-quick' if args.quick else ''}")
    with open(stem + ".json", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(_markdown(record))
    for g in goals:
        print(f"{g['verdict']:12s} {g['goal']}")
    print(f"wrote {os.path.relpath(stem, ROOT)}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
