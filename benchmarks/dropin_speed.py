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


def step_traffic(module, name: str, config: dict, size: str, warm_steps: int = 3) -> Dict[str, float]:
    """Memory traffic of one ``scale_model_input`` + ``step`` of ``module.name`` at ``size`` (after ``warm_steps``
    steps, so multistep histories are full), counted op by op under a dispatch mode.

    ``passes``: the tensor ops over sample-sized tensors; ``mib``: what they read and write (each such tensor
    argument read once, each result written once; an in-place op reads and writes its tensor); ``floor_mib``:
    what a single fused pass must move -- the sample-sized tensors the step reads that it did not make, plus the
    ones it makes that outlive it (the returned sample, ``pred_original_sample``, a kept history entry). At sizes
    that stream through memory or cache, a step cannot take less time than its ``floor_mib`` at the machine's
    bandwidth, so diffusers' ``mib`` over fastdiff's ``floor_mib`` bounds the speedup there.
    """
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    shape = tuple(int(v) for v in size.split("x"))
    numel = 1
    for v in shape:
        numel *= v
    big = max(1, numel // 4)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    sched = getattr(module, name)(**config)
    sched.set_timesteps(STEPS)
    scales = hasattr(sched, "scale_model_input")
    for t in sched.timesteps[:warm_steps]:
        if scales:
            sched.scale_model_input(x, t)
        x = sched.step(eps, t, x).prev_sample

    class Traffic(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.passes, self.nbytes, self.made, self.read = 0, 0, [], {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            # detach / view / alias (e.g. Tensor.numpy's detach) and torch.empty move nothing
            if getattr(func, "is_view", False) or func.__name__.startswith("empty"):
                return out
            self.count(tree_flatten((args, {k: v for k, v in kwargs.items() if k != "out"}))[0],
                       tree_flatten(out)[0])
            return out

        def count(self, ins, outs):
            """One pass over the sample-sized tensors among ``ins`` -> ``outs`` (each read or written once; an
            in-place op reads and writes its tensor)."""
            ins = [t for t in ins if isinstance(t, torch.Tensor) and t.numel() >= big]
            outs = [t for t in outs if isinstance(t, torch.Tensor) and t.numel() >= big]
            if ins or outs:
                self.passes += 1
                self.nbytes += sum(t.numel() * t.element_size() for t in {id(t): t for t in ins}.values())
                self.nbytes += sum(t.numel() * t.element_size() for t in {id(t): t for t in outs}.values())
                made = {r().data_ptr() for r in self.made if r() is not None}
                for t in ins:
                    if t.data_ptr() not in made:
                        self.read.setdefault(t.data_ptr(), t.numel() * t.element_size())
                self.made += [weakref.ref(t) for t in outs]

    # the CPU step's compiled pass (fastdiff.ops.step.cpu_jit) runs outside torch's dispatcher: count its calls
    from fastdiff.ops.step import cpu_jit

    combine, clipped = cpu_jit.combine_jit, cpu_jit.clipped_jit

    def combine_counted(inputs, *args):
        res = combine(inputs, *args)
        if res is not None:
            tr.count(inputs, res)
        return res

    def clipped_counted(x_, m_, *args):
        res = clipped(x_, m_, *args)
        if res is not None:
            tr.count((x_, m_), res)
        return res

    t = sched.timesteps[warm_steps]
    cpu_jit.combine_jit, cpu_jit.clipped_jit = combine_counted, clipped_counted
    try:
        with Traffic() as tr:
            inp = sched.scale_model_input(x, t) if scales else x
            result = sched.step(eps, t, x)
    finally:
        cpu_jit.combine_jit, cpu_jit.clipped_jit = combine, clipped
    del inp
    alive = {r().data_ptr(): r().numel() * r().element_size() for r in tr.made if r() is not None}
    del result
    floor = sum(tr.read.values()) + sum(alive.values())
    return {"passes": tr.passes, "mib": tr.nbytes / 2**20, "floor_mib": floor / 2**20}


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
