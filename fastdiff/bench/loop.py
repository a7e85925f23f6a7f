"""Sampling-loop overhead: the per-step cost a denoising loop pays on top of its network."""
from __future__ import annotations

import functools
from typing import Any, Dict, Sequence, Union

import torch

from ..ops.step import fused_step
from .cases_step import ddim_coefs
from .sizes import shape_str
from .timing import time_cuda, time_interleaved

__all__ = ["step_loop_overhead"]


def step_loop_overhead(
    device: Union[str, torch.device],
    *,
    steps: int = 50,
    shape: Sequence[int] = (1, 4, 64, 64),
    dtype: torch.dtype = torch.float32,
    cuda_graph: bool = False,
    quick: bool = False,
) -> Dict[str, Any]:
    """Per-step time of a ``steps``-step DDIM loop with a trivial denoiser, and that minus the denoiser.

    Coefficients are one table built once (one row per step, ``coef_row=i``), so
    the loop has no host-device sync. With ``cuda_graph`` the whole loop is
    captured once and replayed. Returns microseconds:
    ``{"per_step_us", "denoiser_us", "overhead_us"}`` (and the loop's ``steps``, ``shape``, ``cuda_graph``).
    """
    dev = torch.device(device)
    if cuda_graph and dev.type != "cuda":
        raise ValueError("cuda_graph=True needs device='cuda'")
    ts = torch.linspace(999, 0, steps + 1).round().long().tolist()
    coefs = ddim_coefs(ts[:-1], ts[1:], device=dev)
    x_init = torch.randn(tuple(shape), device=dev, dtype=torch.float32).to(dtype)

    def model(x):  # trivial denoiser: one elementwise kernel
        return x * 0.5

    def loop(x):
        for i in range(steps):
            x = fused_step(x, model(x), coefs, coef_row=i)
        return x

    def model_loop(x):
        for _ in range(steps):
            x = model(x)
        return x

    if cuda_graph:
        static = x_init.clone()
        timings = {}
        for name, body in (("loop", loop), ("model", model_loop)):
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    body(static)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body(static)
            timings[name] = time_cuda(graph.replay, quick=quick) * 1e-3
    else:
        fns = {"loop": functools.partial(loop, x_init), "model": functools.partial(model_loop, x_init)}
        if dev.type == "cuda":
            timings = {n: time_cuda(f, quick=quick) * 1e-3 for n, f in fns.items()}
        else:
            res = time_interleaved(fns, rounds=3 if quick else 7, target_s=0.01 if quick else 0.05)
            timings = {n: r["median"] for n, r in res.items()}
    per = timings["loop"] / steps * 1e6
    den = timings["model"] / steps * 1e6
    return {"per_step_us": per, "denoiser_us": den, "overhead_us": per - den, "steps": steps,
            "shape": shape_str(shape), "cuda_graph": cuda_graph}
