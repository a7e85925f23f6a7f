#!/usr/bin/env python3
"""Dynamic thresholding's cost: DDPM ``step`` with and without ``thresholding=True``, fastdiff against diffusers.

A thresholded step is the x0 estimate, its per-sample quantile (a reduction, so not fusable into the step's one
pass), the clamp, then the fused step. Each pair is timed interleaved in one process, one torch thread, the least
of seven rounds of 25 steps (this thread's CPU time, so other processes do not count). Run::

    python benchmarks/thresholding_speed.py
"""
from __future__ import annotations

import time
import warnings

import torch


def _loop(module, thresholding: bool, shape):
    sched = module.DDPMScheduler(thresholding=thresholding, prediction_type="sample" if thresholding else "epsilon")
    sched.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x, m = torch.randn(shape, generator=g), torch.randn(shape, generator=g)

    def run() -> float:
        t0 = time.thread_time()
        for t in sched.timesteps[:25]:
            sched.step(m, t, x, generator=g)
        return (time.thread_time() - t0) / 25 * 1e6

    return run


def main() -> None:
    import diffusers

    import fastdiff.diffusers as fdd

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    for shape in ((1, 3, 64, 64), (16, 3, 64, 64)):
        for thresholding in (False, True):
            ours, theirs = _loop(fdd, thresholding, shape), _loop(diffusers, thresholding, shape)
            a, b = [], []
            for _ in range(7):
                a.append(ours())
                b.append(theirs())
            print(f"{'x'.join(map(str, shape)):11s} {'thresholding' if thresholding else 'plain':12s} "
                  f"fastdiff {min(a):8.0f} us  diffusers {min(b):8.0f} us  speedup {min(b) / min(a):.2f}x")


if __name__ == "__main__":
    main()
