#!/usr/bin/env python3
"""Host (Python) work of one kernel call, measured on any machine: what a GPU launch costs before the GPU.

The kernel launch itself is stubbed out (every registered launcher's ``op`` and ``direct`` do nothing), so the
figures are fastdiff's own per-call work: argument checks, output allocation and the choice of launch path;
plus, for scale, the dispatcher round trip of an empty ``torch.library.triton_op`` that a plain eager call no
longer pays. The calls run as a sampler makes them, under ``torch.no_grad()`` (``fastdiff.sample`` and diffusers'
pipelines do); one row repeats the sampler's call with grad on. The launcher takes the GPU path's branch: the lock
the CPU interpreter needs around a real launch (~0.2 us) is not taken, as nothing is launched. Run::

    TRITON_INTERPRET=1 python benchmarks/host_overhead.py

(``TRITON_INTERPRET=1`` lets ``backend="triton"`` accept CPU tensors; nothing is launched.)
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from torch.library import triton_op  # noqa: E402

import fastdiff  # noqa: E402
from fastdiff.ops import dispatch  # noqa: E402
from fastdiff.ops.records import StepArgs  # noqa: E402
from fastdiff.ops.step import fused_step, step_coefs  # noqa: E402

LAUNCHERS = ("fused_step", "fused_encode", "langevin_step", "langevin_select")


def _us(n: int, fn, rounds: int = 5) -> float:
    for _ in range(min(n, 500)):
        fn()
    per = []
    for _ in range(rounds):
        t0 = time.thread_time()  # this thread's CPU time: other processes on the machine do not count
        for _ in range(n):
            fn()
        per.append((time.thread_time() - t0) / n * 1e6)
    return statistics.median(per)


@triton_op("fastdiff_probe::empty_", mutates_args={"out"})
def _empty_op(x: torch.Tensor, out: torch.Tensor, a: int, b: float) -> None:
    return None


@contextlib.contextmanager
def stubbed_launches():
    """Every launcher's ``op`` and ``direct`` replaced by a no-op: time fastdiff's own work, not the launch."""
    found = [dispatch.launcher(name) for name in LAUNCHERS]
    saved = [(f.op, f.direct) for f in found]
    interpret = dispatch._INTERPRET
    try:
        for f in found:
            f.op = f.direct = lambda *a: None
        dispatch._INTERPRET = False  # a GPU launch's path: no interpreter lock around a launch that does not run
        yield
    finally:
        dispatch._INTERPRET = interpret
        for f, (op, direct) in zip(found, saved):
            f.op, f.direct = op, direct


def main(n: int = 20000) -> list:
    torch.set_num_threads(1)
    x = torch.randn(1, 4, 64, 64)
    m, h = torch.randn_like(x), torch.randn_like(x)
    coefs = step_coefs(out_x=[0.9, 0.8], out_d=[0.1, 0.2], out_h=[0.05])
    sched, t = fastdiff.DiscreteVPSchedule(), torch.tensor([500])
    accept = torch.tensor([True])
    args = StepArgs(x, m, coefs, None, h, None, None, None, None, None, None, x, None, 0, 1, False, None, 0, 0, 0, 0)
    tensors = args[: dispatch.launcher("fused_step").tensors]  # what a step's launch checks
    with stubbed_launches():
        with torch.enable_grad():
            grad_row = ("fused_step, a sampler's call, grad on",
                        _us(n, lambda: fused_step(x, m, coefs, coef_row=1, backend="triton")))
    with stubbed_launches(), torch.no_grad():
        rows = [
            ("fused_step, a sampler's call", _us(n, lambda: fused_step(x, m, coefs, coef_row=1, backend="triton"))),
            ("fused_step, history + aux", _us(n, lambda: fused_step(x, m, coefs, coef_row=1, history=[h],
                                                                    write_aux=True, backend="triton"))),
            ("fused_step, noise= given", _us(n, lambda: fused_step(x, m, coefs, coef_row=1, noise=h,
                                                                   backend="triton"))),
            ("add_noise_with_target, seeded", _us(n, lambda: fastdiff.add_noise_with_target(x, t, sched, seed=1,
                                                                                          backend="triton"))),
            ("fused_encode, seeded", _us(n, lambda: fastdiff.fused_encode(x, coefs[:1, :4], seed=1, backend="triton"))),
            ("langevin_step, seeded", _us(n, lambda: fastdiff.langevin_step(x, m, 0.01, seed=1, backend="triton"))),
            ("langevin_select", _us(n, lambda: fastdiff.langevin_select(x, m, accept, backend="triton"))),
            grad_row,
            ("of which choosing the launch path (plain_eager, a step)",
             _us(n, lambda: dispatch.plain_eager(tensors, True))),
        ]
    rows += [
        ("dispatcher round trip of an empty triton_op (now skipped)", _us(n, lambda: _empty_op(x, x, 1, 2.0))),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'host work per call':{width}s}  median us")
    for name, us in rows:
        print(f"{name:{width}s}  {us:8.1f}")
    return rows


if __name__ == "__main__":
    main()
