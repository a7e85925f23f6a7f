"""The underdamped Langevin case: one BAOAB step (kick, drift, exact OU refresh, drift) of many chains."""
from __future__ import annotations

import math
from typing import List

import torch

from . import common
from .registry import Case, Fn, Spec, provider, register_case

__all__: List[str] = []  # importing the module registers its case

FRICTION = 1.0

# underdamped: reads x, v, grad once and writes x and v once (the in-place sampler call moves the same bytes).
register_case(Case(
    "underdamped", "underdamped Langevin BAOAB step, in-kernel noise", inputs={"x": 1, "v": 1, "grad": 1},
    writes={"x_out": 1, "v_out": 1}, group="langevin",
    op="fastdiff.underdamped_step(x, v, grad, h, friction=1.0, seed=0)"))


@provider("underdamped", "fastdiff")
def _ud_fd(spec: Spec) -> Fn:
    import fastdiff

    h = common.LANGEVIN_H
    return lambda inp: fastdiff.underdamped_step(inp["x"], inp["v"], inp["grad"], h, friction=FRICTION, seed=0,
                                                 stream=1)


@provider("underdamped", "eager")
def _ud_eager(spec: Spec) -> Fn:
    # One BAOAB step (unit mass, the merged kick) as eager PyTorch in the style of pyro / torchebm: one op per
    # line in the storage dtype, noise from randn_like; the O coefficients are host floats, as a user computes them.
    h = common.LANGEVIN_H
    c = math.exp(-FRICTION * h)
    s = math.sqrt(-math.expm1(-2 * FRICTION * h))

    def step(inp):
        x, v, g = inp["x"], inp["v"], inp["grad"]
        v = v + h * g
        x = x + 0.5 * h * v
        v = c * v + s * torch.randn_like(v)
        x = x + 0.5 * h * v
        return x, v

    return step
