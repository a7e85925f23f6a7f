"""The HMC case: one leapfrog pass (kick ``p += h g``, drift ``x += h M^-1 p``) of many chains, diagonal mass."""
from __future__ import annotations

from typing import Dict, List

import torch

from . import common
from .registry import Case, Fn, Spec, provider, register_case

__all__: List[str] = []  # importing the module registers its case


def _inv_mass(spec: Spec, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    # one positive value per element of a chain (shared by all chains): too small to count in the bytes
    n_cols = spec.numel // spec.batch
    return {"inv_mass": (torch.rand(n_cols, generator=gen, device=spec.device) + 0.5).to(torch.float32)}


# hmc_leapfrog: reads x, p, grad once and writes x and p once: 5 x N x itemsize.
register_case(Case(
    "hmc_leapfrog", "HMC leapfrog pass (kick + drift), diagonal mass", inputs={"x": 1, "p": 1, "grad": 1},
    writes={"x_out": 1, "p_out": 1}, group="hmc", extra_inputs=_inv_mass, check=("fastdiff", "compile"),
    op="fastdiff.ops.hmc_leapfrog(x, p, grad, h, inv_mass=inv_mass)"))


@provider("hmc_leapfrog", "fastdiff")
def _leapfrog_fd(spec: Spec) -> Fn:
    from ..ops import hmc_leapfrog

    h = common.LANGEVIN_H
    return lambda inp: hmc_leapfrog(inp["x"], inp["p"], inp["grad"], h, inv_mass=inp["inv_mass"])


@provider("hmc_leapfrog", "eager")
def _leapfrog_eager(spec: Spec) -> Fn:
    # What a pyro-style integrator writes, one op per line (pyro's velocity_verlet kicks r with the gradient and
    # drifts z with the kinetic energy's gradient M^-1 r): 5 passes in the storage dtype, 2 of them temporaries.
    h = common.LANGEVIN_H

    def step(inp):
        p = inp["p"] + h * inp["grad"]
        velocity = inp["inv_mass"].to(p.dtype).reshape(inp["x"].shape[1:]) * p
        x = inp["x"] + h * velocity
        return x, p

    return step
