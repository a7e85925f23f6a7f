#!/usr/bin/env python3
"""Every drop-in scheduler's denoising loop captured in one CUDA graph, replayed, and compared with its eager run.

The loop is a diffusers pipeline's (iterate ``scheduler.timesteps``, ``scale_model_input``, a small conv net,
``step(..., return_dict=False)``), after ``set_timesteps`` and ``set_begin_index(0)``; stochastic classes draw
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
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch

__all__ = ["LOOPS", "graph_loop_check", "format_lines"]

SEED = 20261204

#: id -> (class name, config): every drop-in class with a ``step(model_output, timestep, sample)`` loop
#: (DPMSolverMultistep twice, ODE and SDE); the classes with diffusers' own loop shapes are listed in OWN_LOOPS
LOOPS: Dict[str, Tuple[str, Dict[str, Any]]] = {}
#: exported classes whose pipeline loop is not a ``step()`` loop, and so not captured here
OWN_LOOPS = {"ScoreSdeVeScheduler": "step_pred / step_correct", "CogVideoXDPMScheduler": "old x0 and timestep_back",
             "DDPMWuerstchenScheduler": "a per-sample float timestep"}


def _default_loops() -> Dict[str, Tuple[str, Dict[str, Any]]]:
    import fastdiff.diffusers as fd

    loops = {name: (name, {}) for name in fd.__all__ if name.endswith("Scheduler") and name not in OWN_LOOPS}
    loops["DPMSolverMultistepScheduler/sde-dpmsolver++"] = ("DPMSolverMultistepScheduler",
                                                           {"algorithm_type": "sde-dpmsolver++"})
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


def _prepare(sched, steps: int, device: torch.device) -> None:
    """A fresh run: its tables built and uploaded now, outside any capture."""
    sched.set_timesteps(steps, device=device)
    sched.set_begin_index(0)
    if hasattr(sched, "set_noise_seed"):
        sched.set_noise_seed(SEED)


def _loop(sched, net) -> Callable[[torch.Tensor], torch.Tensor]:
    scales = hasattr(sched, "scale_model_input")  # diffusers' flow Heun / flow-map classes have none

    def loop(x: torch.Tensor) -> torch.Tensor:
        for t in sched.timesteps:
            eps = net(sched.scale_model_input(x, t) if scales else x)
            x = sched.step(eps, t, x, return_dict=False)[0]
        return x

    return loop


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


def _one(name: str, config: Dict[str, Any], device: torch.device, steps: int, shape: Sequence[int],
         reps: int) -> Dict[str, Any]:
    import fastdiff.diffusers as fd

    sched = getattr(fd, name)(**config)
    net = _net(shape[1], device)
    x0 = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(1)).to(device)
    x0 = x0 * float(getattr(sched, "init_noise_sigma", 1.0))
    loop = _loop(sched, net)
    res: Dict[str, Any] = {"class": name, "config": config, "steps": steps}
    with torch.no_grad():
        _prepare(sched, steps, device)
        eager = loop(x0)
        n_steps = len(sched.timesteps)

        res["eager_us_per_step"] = _time(lambda: loop(x0), device, reps,
                                         setup=lambda: _prepare(sched, steps, device)) * 1e6 / n_steps
        if device.type != "cuda":
            res["status"] = "eager only (no CUDA device: nothing captured)"
            return res
        static = x0.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs requires
            for _ in range(2):
                _prepare(sched, steps, device)
                loop(static)
        torch.cuda.current_stream(device).wait_stream(side)
        _prepare(sched, steps, device)
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
        # the same kernels on the same inputs: only reduction order may differ (none here), so bit-near equal
        res["status"] = "ok" if diff <= 1e-5 * max(scale, 1.0) else "mismatch"
    return res


def graph_loop_check(device: "str | torch.device" = "cuda", *, steps: int = 10,
                     shape: Sequence[int] = (1, 4, 64, 64), reps: int = 5,
                     loops: Optional[Dict[str, Tuple[str, Dict[str, Any]]]] = None,
                     deadline: Optional[float] = None) -> Dict[str, Any]:
    """Capture and replay every drop-in loop on ``device``; ``{"classes": {id: result}, "captured", "total"}``.

    ``deadline`` (a ``time.monotonic()`` value): classes past it are reported as skipped. Example (CPU: the
    eager loops only)::

        >>> r = graph_loop_check("cpu", steps=2, shape=(1, 2, 4, 4), reps=1,
        ...                      loops={"ddim": ("DDIMScheduler", {})})
        >>> r["classes"]["ddim"]["status"].startswith("eager only")
        True
    """
    device = torch.device(device)
    table = loops if loops is not None else (LOOPS or _default_loops())
    results: Dict[str, Any] = {}
    for key, (name, config) in table.items():
        if deadline is not None and time.monotonic() > deadline:
            results[key] = {"class": name, "status": "skipped: past the time budget"}
            continue
        try:
            results[key] = _one(name, config, device, steps, shape, reps)
        except Exception as exc:  # reported per class, never fatal to the check
            results[key] = {"class": name, "status": f"error: {type(exc).__name__}: {str(exc)[:160]}"}
    captured = sum(r["status"] == "ok" for r in results.values())
    return {"classes": results, "captured": captured, "total": len(results), "own_loops": dict(OWN_LOOPS),
            "steps": steps, "shape": list(shape), "device": str(device)}


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
    for name, why in check["own_loops"].items():
        yield f"  {name}: not a step() loop ({why}); not captured here"


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
