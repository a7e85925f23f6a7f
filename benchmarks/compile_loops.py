"""torch.compile(fullgraph=True) around a whole diffusers-style denoising loop, fastdiff's drop-ins beside diffusers'.

For each scheduler class of ``tests/compile_cases.py`` (the table ``tests/suites/test_compile_dropins.py``
checks) and each mode (``begin``: ``set_begin_index(0)`` before the loop; ``lookup``: no begin
index, so the first step finds its index from the timestep), the loop iterates ``scheduler.timesteps``, calls
``scale_model_input`` and ``step(..., return_dict=False)`` around a small two-layer conv net, and is compiled
with ``torch.compile(fullgraph=True)`` (inductor unless ``--backend``). The OWN_LOOPS classes run their
pipeline's loop instead (unCLIP's prior with ``prev_timestep``, ScoreSdeVe's predictor-corrector, CogVideoX's
DPM loop, Wuerstchen's prior), in the lookup mode only. Printed per row: whether it compiled,
the compile time (first call), and the largest difference between the compiled and the eager run.

Noise: fastdiff's stochastic classes draw in-kernel Philox noise keyed by ``set_noise_seed(SEED)`` (a host int, a
constant of the graph), so both runs use the same noise. diffusers' classes draw ``torch.randn`` from the global
generator, reseeded before each run; under inductor that is inductor's own random stream unless
``torch._inductor.config.fallback_random`` is set (``--fallback-random``), so their difference is reported as is.

Compile times are cold (a fresh inductor cache directory per invocation, unless ``--warm-cache``); "cpu s" adds
the CPU time of the compiler processes, a steadier number than the wall time on a shared machine.

Usage: python benchmarks/compile_loops.py [--steps 6] [--backend inductor] [--only ddpm,euler] [--side fastdiff]
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

if "--warm-cache" not in sys.argv:  # cold compiles: inductor's on-disk caches start empty (set before torch loads)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile_loops_")
# C++ builds in this process's children (not a persistent worker pool), so "cpu s" counts them
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch
import torch._dynamo.testing

# the class table (short name -> (class name, config overrides), and which ones draw noise) is the one
# tests/suites/test_compile_dropins.py checks: tests/compile_cases.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from compile_cases import CLASSES, STOCHASTIC  # noqa: E402

SEED = 1234

#: short name -> (class name, config overrides): classes run through their pipeline's own loop (the loop
#: builders of tests/suites/test_compile_dropins.py's OWN_LOOPS, of the same ids), in the lookup mode only
OWN_LOOPS = {
    "unclip_prior": ("UnCLIPScheduler", {}),
    "score_sde_ve": ("ScoreSdeVeScheduler", {"sigma_max": 50.0}),
    "cogvideox_dpm": ("CogVideoXDPMScheduler", {}),
    "wuerstchen_prior": ("DDPMWuerstchenScheduler", {}),
}
NOISY = STOCHASTIC | set(OWN_LOOPS)  # every OWN_LOOPS loop adds noise
MODES = ("begin", "lookup")


def make_net(channels: int = 4, hidden: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(channels, hidden, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(hidden, channels, 3, padding=1))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def make_scheduler(side: str, short: str):
    name, cfg = OWN_LOOPS[short] if short in OWN_LOOPS else CLASSES[short]
    if side == "fastdiff":
        import fastdiff.diffusers as mod
    else:
        import diffusers as mod
    return getattr(mod, name)(**cfg)


def make_loop(sched, net, begin: bool):
    """The pipeline's loop; ``set_timesteps`` stays outside (a host computation run once per run)."""
    scale = getattr(sched, "scale_model_input", None)  # (diffusers' FlowMatchEuler has none: the identity)

    def loop(x):
        if begin and hasattr(sched, "set_begin_index"):  # (diffusers' DDPM and DDIM have none: stateless)
            sched.set_begin_index(0)
        for t in sched.timesteps:
            eps = net(x if scale is None else scale(x, t))
            x = sched.step(eps, t, x, return_dict=False)[0]
        return x
    return loop


def loop_builder(short: str):
    """``make_loop``, or the pipeline's own loop of an OWN_LOOPS class (the test's builder, one definition)."""
    if short not in OWN_LOOPS:
        return make_loop
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "suites"))
    import test_compile_dropins

    return test_compile_dropins.OWN_LOOPS[short][2]


def prepare(sched, side: str, short: str, steps: int) -> None:
    sched.set_timesteps(steps)
    if hasattr(sched, "set_sigmas"):  # ScoreSdeVe: its pipeline sets the sigmas after the timesteps
        sched.set_sigmas(steps)
    if side == "fastdiff" and short in NOISY and hasattr(sched, "set_noise_seed"):
        sched.set_noise_seed(SEED)
    torch.manual_seed(SEED)  # diffusers' (and fastdiff's generator-less unseeded) draws


def run_case(side: str, short: str, mode: str, steps: int, backend: str, shape=(1, 4, 8, 8)) -> dict:
    torch._dynamo.reset()
    net = make_net(shape[1])
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    sched = make_scheduler(side, short)
    builder = loop_builder(short)
    eager_sched = copy.deepcopy(sched)
    prepare(eager_sched, side, short, steps)
    with torch.no_grad():
        eager = builder(eager_sched, net, mode == "begin")(x0 * _init_sigma(eager_sched))
    prepare(sched, side, short, steps)
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)  # graphs compiled (a rerun: none more)
    compiled = torch.compile(builder(sched, net, mode == "begin"), backend=counter, fullgraph=True)
    row = {"side": side, "class": short, "mode": mode}
    t0, c0 = time.perf_counter(), _cpu_seconds()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = compiled(x0 * _init_sigma(sched))
    except Exception as e:  # noqa: BLE001 - a failed compile is a result here
        row.update(ok=False, seconds=time.perf_counter() - t0,
                   error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:110]}")
        row["trace"] = traceback.format_exc()
        return row
    row.update(ok=True, seconds=time.perf_counter() - t0, cpu=_cpu_seconds() - c0,
               max_diff=float((got - eager).abs().max()),
               rel_diff=float((got - eager).abs().max() / eager.abs().max()))
    # a second run through the same compiled loop (fresh set_timesteps): no recompile, same numbers
    prepare(sched, side, short, steps)
    t1 = time.perf_counter()
    with torch.no_grad():
        again = compiled(x0 * _init_sigma(sched))
    row.update(rerun_seconds=time.perf_counter() - t1, rerun_diff=float((again - eager).abs().max()),
               graphs=counter.frame_count)
    return row


def _init_sigma(sched) -> float:
    return getattr(sched, "init_noise_sigma", 1.0)  # (diffusers' FlowMatchEuler has none: 1)


def _print_row(r: dict, trace: bool) -> None:
    short, mode, side = r["class"], r["mode"], r["side"]
    if r["ok"]:
        note = "" if r["rerun_diff"] == r["max_diff"] else f"rerun diff {r['rerun_diff']:.2e}"
        if r["graphs"] > 1:
            note = f"{note}; " * bool(note) + f"the rerun recompiled ({r['graphs']} graphs)"
        print(f"{short:17s} {mode:7s} {side:9s} {'yes':9s} {r['seconds']:9.1f} {r['cpu']:6.1f} "
              f"{r['max_diff']:10.2e} {r['rel_diff']:9.1e} {r['rerun_seconds']:8.3f}  {note}", flush=True)
    else:
        print(f"{short:17s} {mode:7s} {side:9s} {'NO':9s} {r['seconds']:9.1f} {'-':>6s} {'-':>10s} {'-':>9s} "
              f"{'-':>8s}  {r['error']}", flush=True)
        if trace:
            print(r["trace"])


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (inductor's compiler processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--only", default="")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--side", default="fastdiff,diffusers")
    p.add_argument("--fallback-random", action="store_true")
    p.add_argument("--trace", action="store_true", help="print the traceback of each failure")
    p.add_argument("--in-process", action="store_true", help="run the cases here (default: one process each)")
    p.add_argument("--no-header", action="store_true")
    p.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk caches (default: a fresh one)")
    a = p.parse_args()
    if a.fallback_random:
        import torch._inductor.config as ic
        ic.fallback_random = True
    torch.set_num_threads(1)
    shorts = [s for s in a.only.split(",") if s] or [*CLASSES, *OWN_LOOPS]
    if not a.no_header:
        print(f"torch {torch.__version__}; backend={a.backend}; steps={a.steps}; shape (1, 4, 8, 8); seed {SEED}")
        print(f"{'class':17s} {'mode':7s} {'side':9s} {'fullgraph':9s} {'compile s':>9s} {'cpu s':>6s} "
              f"{'max |c-e|':>10s} "
              f"{'rel':>9s} {'rerun s':>8s}  note")
    for short in shorts:
        for mode in a.modes.split(","):
            if short in OWN_LOOPS and mode != "lookup":  # their pipelines set no begin index
                continue
            for side in a.side.split(","):
                if a.in_process:
                    _print_row(run_case(side, short, mode, a.steps, a.backend), a.trace)
                    continue
                # each case in a fresh process with a fresh cache: a cold compile, nothing shared between rows
                cmd = [sys.executable, __file__, "--in-process", "--only", short, "--modes", mode, "--side", side,
                       "--steps", str(a.steps), "--backend", a.backend, "--no-header"]
                cmd += ["--fallback-random"] * a.fallback_random + ["--trace"] * a.trace
                cmd += ["--warm-cache"] * a.warm_cache
                out = subprocess.run(cmd, capture_output=True, text=True)
                print(out.stdout.rstrip() or f"{short:17s} {mode:7s} {side:9s} crashed: {out.stderr[-300:]}",
                      flush=True)


if __name__ == "__main__":
    main()
