"""The Langevin case: one unadjusted Langevin update (ULA) of many chains with fresh noise."""
from __future__ import annotations

import math
from typing import List

import torch

from . import common
from .registry import Case, Fn, Spec, provider, register_case

__all__: List[str] = []  # importing the module registers its case

# langevin: x + h*grad + sqrt(2h)*z for many chains, in-kernel noise.
register_case(Case(
    "langevin", "Langevin update (ULA), in-kernel noise", inputs={"x": 1, "grad": 1}, writes={"out": 1},
    group="langevin", op="fastdiff.langevin_step(x, grad, h, seed=0)"))


@provider("langevin", "fastdiff")
def _lang_fd(spec: Spec) -> Fn:
    import fastdiff

    return lambda inp: (fastdiff.langevin_step(inp["x"], inp["grad"], common.LANGEVIN_H, seed=0, stream=1),)


@provider("langevin", "eager")
def _lang_eager(spec: Spec) -> Fn:
    # The formula of fastdiff.ops.langevin.naive.langevin_reference at temperature 1, x + h grad + sqrt(2h) z
    # with z = randn_like(x): one draw and 4 passes in the storage dtype. (langevin_reference itself adds
    # three dtype conversions and its checks per call: +40% at 1x4x8x8.)
    h = common.LANGEVIN_H
    scale = math.sqrt(2 * h)
    return lambda inp: (inp["x"] + h * inp["grad"] + scale * torch.randn_like(inp["x"]),)
