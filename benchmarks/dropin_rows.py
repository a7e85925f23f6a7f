#!/usr/bin/env python3
"""The ``fastdiff bench`` drop-in rows timed by this thread's CPU time: fastdiff's step against diffusers'.

The same calls as ``fastdiff bench --ops dropin_...`` (each row's providers, input sets and rewinds, from
``fastdiff.bench``), with a clock that other processes on a shared machine do not move: one torch thread, each
round times ``--calls`` calls of fastdiff then of diffusers (the order alternating per round) by
``time.thread_time_ns``; a row's figure is the median over rounds of the per-call time, its ratio the median
of the rounds' diffusers / fastdiff. ``fastdiff bench`` itself times wall-clock medians, which a loaded
machine spreads widely (a 2-core machine at load 4: ratios 4.5x to 13x for one row in three runs). Run::

    python benchmarks/dropin_rows.py                      # every drop-in row at 1x4x8x8 fp32
    python benchmarks/dropin_rows.py --ops dropin_heun,dropin_kdpm2 --rounds 15
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from typing import List

import torch


def measure(ops: List[str], size: str, rounds: int, calls: int) -> List[dict]:
    from fastdiff import bench

    spec = bench.Spec(bench.parse_size(size), torch.float32, torch.device("cpu"))
    rows = []
    for op in ops:
        try:
            pair = [bench.build_call(op, p, spec) for p in ("fastdiff", "diffusers")]
        except bench.Unavailable as exc:
            rows.append({"op": op, "skipped": str(exc)})
            continue
        per = ([], [])
        for r in range(rounds):
            for j in ((0, 1) if r % 2 == 0 else (1, 0)):
                t0 = time.thread_time_ns()
                for _ in range(calls):
                    pair[j]()
                per[j].append((time.thread_time_ns() - t0) / calls / 1e3)
        rows.append({"op": op, "fastdiff_us": statistics.median(per[0]), "diffusers_us": statistics.median(per[1]),
                     "ratio": statistics.median(d / f for f, d in zip(*per))})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=None, help="comma-separated drop-in rows (default: all)")
    ap.add_argument("--size", default="1x4x8x8")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=100, help="calls per side per round")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from fastdiff import bench

    ops = args.ops.split(",") if args.ops else [n for n, c in bench.CASES.items() if c.group == "dropin"]
    rows = measure(ops, args.size, args.rounds, args.calls)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "rounds": args.rounds, "calls": args.calls, "rows": rows}, f, indent=1)
    print("| row | fastdiff us | diffusers us | diffusers / fastdiff |\n|---|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['op']} | skipped: {r['skipped']} | | |")
        else:
            print(f"| {r['op']} | {r['fastdiff_us']:.1f} | {r['diffusers_us']:.1f} | {r['ratio']:.2f}x |")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios:
        print(f"\ngeomean over {len(ratios)} rows: {math.exp(statistics.fmean(map(math.log, ratios))):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
