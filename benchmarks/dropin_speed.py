#!/usr/bin/env python3
"""Drop-in schedulers against diffusers: a pipeline's per-step ``scale_model_input`` + ``step``, interleaved.

Each scheduler pair (``fastdiff.diffusers.X`` and ``diffusers.X``, same config) runs the loop a pipeline runs
(``set_timesteps(50)`` untimed, then for every timestep ``scale_model_input`` where the class has one and
``step``), the model replaced by a fixed tensor. One round times each side's loop a few times (least time
kept), the two back to back in alternating order; the speedup is the median over rounds of diffusers' time
over fastdiff's, so a burst of load on a shared machine shifts both sides of a round alike. With one torch
thread the clock is this thread's CPU time (other processes do not count); with more threads it is wall
time (the intra-op threads' work is part of the latency). Run::

    python benchmarks/dropin_speed.py                       # 1x4x8x8 and 16x4x64x64, one thread and two
    python benchmarks/dropin_speed.py --threads 1 --sizes 1x4x8x8 --rounds 21

Run it with ``PYTHONPATH`` set to another checkout to time that checkout's ``fastdiff`` the same way. The goal
(issue 18): geomean >= 3x at 1x4x8x8 with no scheduler below 1.5x, geomean >= 5x at 16x4x64x64.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Tuple

import torch

STEPS = 50
_TRAIN = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
#: (scheduler class, config): the four schedulers of the goal, configured as the ``fastdiff bench`` rows
CASES: Tuple[Tuple[str, dict], ...] = (
    ("DDIMScheduler", dict(_TRAIN, clip_sample=False, set_alpha_to_one=False)),
    ("EulerDiscreteScheduler", dict(_TRAIN)),
    ("DPMSolverMultistepScheduler", dict(_TRAIN, algorithm_type="dpmsolver++", solver_order=2)),
    ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0)),
)
GOALS = {"1x4x8x8": 3.0, "16x4x64x64": 5.0}
FLOOR = 1.5  # no single scheduler below this at 1x4x8x8


def _loop(module, name: str, config: dict, x: torch.Tensor, eps: torch.Tensor,
          clock: Callable[[], int]) -> Callable[[], float]:
    """A callable running one 50-step loop of ``module.name`` and returning its time per step in us."""
    sched = getattr(module, name)(**config)
    scales = hasattr(sched, "scale_model_input")

    def run() -> float:
        sched.set_timesteps(STEPS)
        timesteps = sched.timesteps
        sample = x * getattr(sched, "init_noise_sigma", 1.0)
        t0 = clock()
        for t in timesteps:
            if scales:
                sched.scale_model_input(sample, t)
            sample = sched.step(eps, t, sample).prev_sample
        return (clock() - t0) / len(timesteps) / 1e3

    return run


def measure(size: str, threads: int, rounds: int, reps: int = 0) -> Dict[str, Tuple[float, float, float]]:
    """``{scheduler: (fastdiff us, diffusers us, speedup)}`` per step at ``size`` with ``threads`` torch threads."""
    import diffusers

    import fastdiff.diffusers as fdd

    torch.set_num_threads(threads)
    clock = time.thread_time_ns if threads == 1 else time.perf_counter_ns
    reps = reps or (3 if threads == 1 else 5)  # wall time: more tries, the least disturbed one kept
    shape = tuple(int(v) for v in size.split("x"))
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    out = {}
    for name, config in CASES:
        ours, theirs = _loop(fdd, name, config, x, eps, clock), _loop(diffusers, name, config, x, eps, clock)
        for _ in range(2):  # warm-up: tables, caches, lazy imports
            ours(), theirs()
        a: List[float] = []
        b: List[float] = []
        for r in range(rounds):
            pair = (ours, theirs) if r % 2 == 0 else (theirs, ours)
            first, second = (min(f() for _ in range(reps)) for f in pair)
            ta, tb = (first, second) if r % 2 == 0 else (second, first)
            a.append(ta)
            b.append(tb)
        ratio = statistics.median(tb_ / ta_ for ta_, tb_ in zip(a, b))
        out[name] = (statistics.median(a), statistics.median(b), ratio)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1x4x8x8,16x4x64x64")
    p.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=11, help="interleaved rounds per scheduler (default: %(default)s)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    import fastdiff
    from fastdiff.bench import geomean

    print(f"fastdiff from {fastdiff.__file__}; torch {torch.__version__}; per-step us, medians over "
          f"{args.rounds} interleaved rounds")
    for threads in (int(v) for v in args.threads.split(",")):
        for size in args.sizes.split(","):
            rows = measure(size, threads, args.rounds)
            geo = geomean(r[2] for r in rows.values())
            goal = GOALS.get(size)
            print(f"\n{size}, {threads} thread(s) ({'thread CPU' if threads == 1 else 'wall'} time)")
            for name, (ta, tb, ratio) in rows.items():
                print(f"  {name:32s} fastdiff {ta:8.1f}  diffusers {tb:8.1f}  speedup {ratio:5.2f}x")
            verdict = "" if goal is None else f"  (goal >= {goal}x: {'met' if geo >= goal else 'NOT met'})"
            print(f"  geomean {geo:.2f}x{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
