#!/usr/bin/env python3
"""``fastdiff.sample`` on CPU with the compiled step pass against the torch passes, interleaved in one process.

Each sampler runs a whole 20-step sampling at ``--size`` (default 16x4x64x64 fp32) with a cheap one-pass
denoiser, on one torch thread (where ``fastdiff.ops.step.cpu_jit`` takes the step), alternately with the
compiled pass and with it switched off (the torch passes, what runs without numba). The figure is the median of
this thread's CPU time over ``--rounds`` rounds of each; ratio = torch passes / compiled pass (> 1: the pass
is faster). Run::

    python benchmarks/cpu_step_pass.py
    python benchmarks/cpu_step_pass.py --size 2x4x64x64 --samplers euler,dpmpp_2m --rounds 21
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

SAMPLERS = "euler,euler_ancestral,heun,dpmpp_2m,lms,unipc"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="16x4x64x64")
    p.add_argument("--samplers", default=SAMPLERS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=11)
    args = p.parse_args(argv)

    import fastdiff
    from fastdiff.ops.step import cpu_jit

    if not cpu_jit.available():
        print("numba is not importable here (or FASTDIFF_NO_NUMBA=1): there is no compiled pass to compare")
        return 1
    torch.set_num_threads(1)
    shape = tuple(int(v) for v in args.size.split("x"))
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    view = (-1,) + (1,) * (len(shape) - 1)

    def denoiser(x, sigma):
        return x * (1.0 / (1.0 + sigma * sigma)).view(view)

    sigmas = fastdiff.karras_sigmas(args.steps, 0.03, 14.6)
    fns = cpu_jit._kernels()

    def run(name: str, compiled: bool) -> float:
        cpu_jit._state["fns"] = fns if compiled else None
        t0 = time.thread_time_ns()
        fastdiff.sample(denoiser, x0 * 14.6, sigmas, sampler=name, seed=1)
        return (time.thread_time_ns() - t0) / 1e6

    print(f"{args.size} fp32, {args.steps} steps, one torch thread; ms per sampling run (thread CPU time), "
          f"medians of {args.rounds} interleaved rounds")
    try:
        for name in args.samplers.split(","):
            run(name, True), run(name, False)  # warm-up: plans, tables, first-touch of the buffers
            on, off = [], []
            for r in range(args.rounds):
                for compiled in ((True, False) if r % 2 == 0 else (False, True)):
                    (on if compiled else off).append(run(name, compiled))
            a, b = statistics.median(on), statistics.median(off)
            print(f"  {name:16s} compiled pass {a:7.2f}  torch passes {b:7.2f}  ratio {b / a:5.2f}x")
    finally:
        cpu_jit._state["fns"] = fns
    return 0


if __name__ == "__main__":
    sys.exit(main())
