#!/usr/bin/env python3
"""Host time per step of every face: the drop-in schedulers, ``fastdiff.sample`` and the k-diffusion functions.

The sample is tiny (1x4x8x8) and the model trivial, so a step's time is almost all Python: argument handling,
table lookups, the launch path. Run it on one tree::

    TRITON_INTERPRET=1 python benchmarks/host_per_step.py

or side by side against another checkout, alternating the two in one run (5 rounds each, medians of
this thread's CPU time, so other processes on the machine do not count)::

    TRITON_INTERPRET=1 python benchmarks/host_per_step.py --against /path/to/other/checkout

A row's ratio is the median over rounds of this tree's time over the other's, each round timing the two back to
back (below 1: this tree is faster); the range shows the machine's noise.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict

os.environ.setdefault("TRITON_INTERPRET", "1")

SHAPE = (1, 4, 8, 8)
STEPS = 20


def _median_us(run: Callable[[], int], repeats: int) -> float:
    """Least CPU time of this thread per step over ``repeats`` runs: the run least disturbed by interrupts,
    frequency changes and cache misses (other processes do not count at all)."""
    run()  # warm-up: tables, caches
    per = []
    for _ in range(repeats):
        t0 = time.thread_time()
        n = run()
        per.append((time.thread_time() - t0) / n * 1e6)
    return min(per)


def measure(repeats: int = 15) -> Dict[str, float]:
    import torch

    import fastdiff
    import fastdiff.diffusers as fdd
    from fastdiff import k_diffusion as K

    torch.set_num_threads(1)
    rows: Dict[str, float] = {}
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))

    def model(x, t):
        return x * 0.5

    configs = {"DDPMScheduler": {}, "DDIMScheduler": {}, "EulerDiscreteScheduler": {},
               "EulerAncestralDiscreteScheduler": {}, "HeunDiscreteScheduler": {},
               "DPMSolverMultistepScheduler": {}, "UniPCMultistepScheduler": {},
               "FlowMatchEulerDiscreteScheduler": {"shift": 3.0}}
    for name, cfg in configs.items():
        sched = getattr(fdd, name)(**cfg)

        def loop(sched=sched):
            sched.set_timesteps(STEPS)
            x = x0 * float(getattr(sched, "init_noise_sigma", 1.0))
            for t in sched.timesteps:
                inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
                x = sched.step(model(inp, t), t, x).prev_sample
            return len(sched.timesteps)

        rows[f"diffusers {name}.step"] = _median_us(loop, repeats)

    gmm = fastdiff.toy.GaussianMixture.ring(k=4)
    xs = fastdiff.initial_noise((4, 2), seed=0) * 10.0
    sig = fastdiff.karras_sigmas(STEPS, 0.02, 10.0)
    for sampler in ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "lms", "unipc"):
        evals = 2 * STEPS - 1 if sampler == "heun" else STEPS

        def run(sampler=sampler, evals=evals):
            fastdiff.sample(gmm.denoiser, xs, sig, sampler=sampler, seed=1, backend="torch")
            return evals

        rows[f"fastdiff.sample({sampler}) per evaluation"] = _median_us(run, repeats)

    rows.update(measure_sample_loop(repeats))

    ksig = K.get_sigmas_karras(STEPS, 0.02, 10.0)
    for sampler in ("euler", "euler_ancestral", "heun", "dpmpp_2m", "lms"):
        fn = getattr(K, f"sample_{sampler}")
        evals = 2 * STEPS - 1 if sampler == "heun" else STEPS

        def run(fn=fn, evals=evals):
            fn(gmm.denoiser, xs, ksig, disable=True)
            return evals

        rows[f"k_diffusion.sample_{sampler} per evaluation"] = _median_us(run, repeats)
    return rows


#: samplers whose per-step host work the goal covers (first- and second-order, multistep, stochastic, corrector)
LOOP_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "lms", "unipc")


def measure_sample_loop(repeats: int = 15, samplers=LOOP_SAMPLERS) -> Dict[str, float]:
    """``fastdiff.sample``'s own host work, split into the per-run plan and the step loop, per model evaluation.

    The model returns a constant tensor and ``fused_step`` is replaced by a stub that returns its input, so what
    is timed is fastdiff's Python only: the planning (every row's coefficients, the table; once per run, before
    the first step) and the loop (per step: the model call's arguments, the launch's arguments, the history).
    A run's ``SamplerContext.plan`` marks the end of planning; ``loop`` is from there to the end of the run.
    Rows: ``... loop per evaluation`` (the per-step goal) and ``... planning per evaluation`` (once-per-run work,
    divided by the evaluations so the two add up to the whole).
    """
    import torch

    import fastdiff
    from fastdiff import sampler_run

    torch.set_num_threads(1)
    x = fastdiff.initial_noise(SHAPE, seed=0) * 10.0
    const = torch.zeros(SHAPE)
    sig = fastdiff.karras_sigmas(STEPS, 0.02, 10.0)
    marks = []
    real_plan, real_step = sampler_run.SamplerContext.plan, sampler_run.fused_step

    def plan(self):
        real_plan(self)
        marks.append(time.thread_time())

    def stub(x, model_output, coefs, *, write_aux=False, **kwargs):
        return (x, x) if write_aux else x

    out: Dict[str, float] = {}
    sampler_run.SamplerContext.plan, sampler_run.fused_step = plan, stub
    try:
        for sampler in samplers:
            evals = 2 * STEPS - 1 if sampler == "heun" else STEPS
            best_loop, best_plan = float("inf"), float("inf")
            for rep in range(repeats + 1):
                marks.clear()
                t0 = time.thread_time()
                fastdiff.sample(lambda xx, s: const, x, sig, sampler=sampler, seed=1, backend="torch")
                t1 = time.thread_time()
                if rep:  # the first run is the warm-up
                    best_plan = min(best_plan, (marks[0] - t0) / evals * 1e6)
                    best_loop = min(best_loop, (t1 - marks[0]) / evals * 1e6)
            out[f"fastdiff.sample({sampler}) loop per evaluation (launch stubbed)"] = best_loop
            out[f"fastdiff.sample({sampler}) planning per evaluation (launch stubbed)"] = best_plan
    finally:
        sampler_run.SamplerContext.plan, sampler_run.fused_step = real_plan, real_step
    return out


def _child(tree: str) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--json"], env=env, check=True,
                         capture_output=True, text=True, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", help="another checkout to time side by side (alternating rounds)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    p.add_argument("--rounds", type=int, default=5, help="alternations with --against (default: %(default)s)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.json:
        print(json.dumps(measure()))
        return 0
    if not args.against:
        rows = measure()
        width = max(map(len, rows))
        print(f"{'host time per step':{width}s}  min us")
        for name, us in rows.items():
            print(f"{name:{width}s}  {us:9.1f}")
        return 0
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs: Dict[str, list] = {"this": [], "other": []}
    for _ in range(args.rounds):
        runs["other"].append(_child(os.path.abspath(args.against)))
        runs["this"].append(_child(here))
    names = list(runs["this"][0])
    width = max(map(len, names))
    print(f"{'host time per step (min us; ratio: median over rounds of this/other)':{width}s}  {'other':>7s}  "
          f"{'this':>7s}  ratio  (range)")
    for name in names:
        a = statistics.median(r[name] for r in runs["other"])
        b = statistics.median(r[name] for r in runs["this"])
        ratios = sorted(t[name] / o[name] for t, o in zip(runs["this"], runs["other"]))
        print(f"{name:{width}s}  {a:7.1f}  {b:7.1f}  {statistics.median(ratios):5.3f}  "
              f"({ratios[0]:.2f}-{ratios[-1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
