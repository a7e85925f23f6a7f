#!/usr/bin/env python3
"""Every drop-in scheduler's denoising loop captured in one CUDA graph, replayed, and compared with its eager run.

The loops are the ones ``tests/suites/test_compile_dropins.py`` compiles: a diffusers pipeline's (iterate
``scheduler.timesteps``, ``scale_model_input``, a small conv net, ``step(..., return_dict=False)``), or for the
classes with a signature of their own their pipeline's loop, after ``set_timesteps`` and with
``set_begin_index(0)``; stochastic classes draw
their in-kernel Philox noise keyed by ``set_noise_seed``, so the replay draws what the eager run drew. A capture
fails on any host-device sync inside the loop (a ``.item()``, a pageable host-to-device copy, a device read in
``index_for_timestep``), so "captured" is the GPU half of "no host sync in the loop"; the CPU half is
``tests/faces/test_diffusers_host.py``. Per class it reports the capture's status, the replay's largest
difference from the eager result, and the time per step eager and replayed.

Run on a CUDA machine (``benchmarks/gpu_check.py`` runs it)::

    python benchmarks/dropin_graphs.py [--steps 10] [--shape 1x4x64x64]

On CPU only the eager loops run (the graph columns say why they are empty): a check that the script works.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch

__all__ = ["graph_loop_check", "format_lines", "default_loops"]

SEED = 20261204
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_loops() -> Dict[str, Tuple[str, Dict[str, Any], Callable, bool]]:
    """id -> (class name, config, loop builder, stochastic) for every drop-in: the classes and pipeline loops
    ``tests/suites/test_compile_dropins.py`` compiles (``tests/compile_cases.py`` and its OWN_LOOPS), so the
    CUDA-graph check and the compile check run the same loops."""
    for sub in ("tests", os.path.join("tests", "suites")):
        path = os.path.join(_ROOT, sub)
        if path not in sys.path:
            sys.path.insert(0, path)
    import test_compile_dropins as t
    from compile_cases import CLASSES, STOCHASTIC

    loops = {short: (name, cfg, t.make_loop, short in STOCHASTIC) for short, (name, cfg) in CLASSES.items()}
    loops.update({short: (name, cfg, builder, short in t.OWN_STOCHASTIC)
                  for short, (name, cfg, builder) in t.OWN_LOOPS.items()})
    return loops


def _net(channels: int, device: torch.device) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(channels, 16, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(16, channels, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
            p.requires_grad_(False)
    return net.to(device).eval()


def _prepare(sched, steps: int, device: torch.device, stochastic: bool) -> None:
    """A fresh run: its tables built and uploaded now, outside any capture."""
    sched.set_timesteps(steps, device=device)
    if hasattr(sched, "set_sigmas"):  # ScoreSdeVe: its pipeline sets the sigmas after the timesteps
        sched.set_sigmas(steps)
    if stochastic:
        sched.set_noise_seed(SEED)


def _time(fn: Callable[[], Any], device: torch.device, reps: int,
          setup: Callable[[], Any] = lambda: None) -> float:
    """Median seconds of ``fn`` (synchronised on CUDA), over ``reps`` calls after one warm-up; ``setup`` runs
    untimed before each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(reps + 2):  # two warm-ups: a new net's first convolutions set up their kernels
        setup()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times = sorted(times[2:])
    return times[len(times) // 2]


def _one(name: str, config: Dict[str, Any], builder: Callable, stochastic: bool, device: torch.device, steps: int,
         shape: Sequence[int], reps: int) -> Dict[str, Any]:
    import fastdiff.diffusers as fd

    sched = getattr(fd, name)(**config)
    net = _net(shape[1], device)
    x0 = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(1)).to(device)
    x0 = x0 * float(getattr(sched, "init_noise_sigma", 1.0))
    loop = builder(sched, net, True)  # set_begin_index(0) inside, as a pipeline that sets one
    res: Dict[str, Any] = {"class": name, "config": config, "steps": steps}
    with torch.no_grad():
        _prepare(sched, steps, device, stochastic)
        eager = loop(x0)
        n_steps = max(len(sched.timesteps), 1)
        res["eager_us_per_step"] = _time(lambda: loop(x0), device, reps,
                                         setup=lambda: _prepare(sched, steps, device, stochastic)) * 1e6 / n_steps
        if device.type != "cuda":
            res["status"] = "eager only (no CUDA device: nothing captured)"
            return res
        static = x0.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs requires
            for _ in range(2):
                _prepare(sched, steps, device, stochastic)
                loop(static)
        torch.cuda.current_stream(device).wait_stream(side)
        _prepare(sched, steps, device, stochastic)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = loop(static)
        except Exception as exc:  # a sync or a host read inside the loop: the capture names it
            res["status"] = f"capture failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            return res
        graph.replay()
        torch.cuda.synchronize(device)
        diff = float((out.double() - eager.double()).abs().max())
        scale = float(eager.double().abs().max())
        res["max_abs_diff"], res["scale"] = diff, scale
        res["graph_us_per_step"] = _time(graph.replay, device, reps) * 1e6 / n_steps
        # the same kernels on the same inputs, noise keyed alike: the replay must give the eager bits (a loose
        # bound, so that a reduction order chosen per launch could not fail it, a wrong step always does)
        res["status"] = "ok" if diff <= 1e-5 * max(scale, 1.0) else "mismatch"
    return res


def graph_loop_check(device: "str | torch.device" = "cuda", *, steps: int = 10,
                     shape: Sequence[int] = (1, 4, 64, 64), reps: int = 5,
                     loops: Optional[Dict[str, Tuple[str, Dict[str, Any]]]] = None,
                     deadline: Optional[float] = None) -> Dict[str, Any]:
    """Capture and replay every drop-in loop on ``device``; ``{"classes": {id: result}, "captured", "total"}``.

    ``deadline`` (a ``time.monotonic()`` value): classes past it are reported as skipped. Example (CPU: the
    eager loops only)::

        >>> ddim = default_loops()["ddim"]
        >>> r = graph_loop_check("cpu", steps=2, shape=(1, 2, 4, 4), reps=1, loops={"ddim": ddim})
        >>> r["classes"]["ddim"]["status"].startswith("eager only")
        True
    """
    device = torch.device(device)
    table = loops if loops is not None else default_loops()
    results: Dict[str, Any] = {}
    for key, (name, config, builder, stochastic) in table.items():
        if deadline is not None and time.monotonic() > deadline:
            results[key] = {"class": name, "status": "skipped: past the time budget"}
            continue
        try:
            results[key] = _one(name, config, builder, stochastic, device, steps, shape, reps)
        except Exception as exc:  # reported per class, never fatal to the check
            results[key] = {"class": name, "status": f"error: {type(exc).__name__}: {str(exc)[:160]}"}
    captured = sum(r["status"] == "ok" for r in results.values())
    return {"classes": results, "captured": captured, "total": len(results), "steps": steps, "shape": list(shape),
            "device": str(device)}


def format_lines(check: Dict[str, Any]) -> Iterable[str]:
    """One line per class: status, replay difference, us per step eager and replayed."""
    yield (f"drop-in loops captured in one CUDA graph: {check['captured']} of {check['total']} "
           f"({check['steps']} steps, {tuple(check['shape'])}, {check['device']})")
    for key, r in check["classes"].items():
        cols = [f"{r['status']}"]
        if "max_abs_diff" in r:
            cols.append(f"replay - eager {r['max_abs_diff']:.1e}")
        if "eager_us_per_step" in r:
            cols.append(f"eager {r['eager_us_per_step']:.1f} us/step")
        if "graph_us_per_step" in r:
            cols.append(f"graph {r['graph_us_per_step']:.1f} us/step")
        yield f"  {key}: " + ", ".join(cols)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--shape", default="1x4x64x64")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split("x"))
    check = graph_loop_check(args.device, steps=args.steps, shape=shape, reps=args.reps)
    for line in format_lines(check):
        print(line)
    return 0 if not check["device"].startswith("cuda") or check["captured"] == check["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
