"""The Langevin case: one unadjusted Langevin update (ULA) of many chains with fresh noise."""
from __future__ import annotations

from typing import List

import torch

from ..ops.langevin import langevin_reference
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
    # langevin_reference itself with z = torch.randn_like(x): x + h grad + sqrt(2h) z, one draw and 4 passes
    # in the storage dtype.
    def fn(inp):
        x = inp["x"]
        return (langevin_reference(x, inp["grad"], common.LANGEVIN_H, noise=torch.randn_like(x))[0],)

    return fn
