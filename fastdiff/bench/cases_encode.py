"""Encoding cases: forward noising with given noise (``add_noise``) and x_t + v target from fresh noise (``encode_v``).

The eager baselines evaluate the formula of ``fastdiff.ops.encode.naive.encode_reference`` on the same
per-timestep (alpha, sigma) values the op uses (the schedule's :meth:`~fastdiff.DiscreteVPSchedule.table`),
in the storage dtype, with ``torch.randn_like`` noise where the op draws its own.
"""
from __future__ import annotations

from typing import List

import torch

from ..ops._common import bcast
from ..ops.encode import encode_reference
from . import common
from .registry import Case, Fn, Spec, provider, register_case

__all__: List[str] = []  # importing the module registers its cases

# add_noise: x_t = a_t x0 + s_t noise, noise given (the diffusers API).
register_case(Case(
    "add_noise", "forward noising with given noise, per-sample timesteps", inputs={"x0": 1, "noise": 1},
    writes={"x_t": 1}, extra_inputs=common.timesteps, group="encode", check=("fastdiff", "compile", "diffusers"),
    op="fastdiff.add_noise(x0, t, sched, noise)"))


@provider("add_noise", "fastdiff")
def _add_noise_fd(spec: Spec) -> Fn:
    import fastdiff

    sched = common.schedule()
    return lambda inp: (fastdiff.add_noise(inp["x0"], inp["t"], sched, inp["noise"]),)


@provider("add_noise", "eager")
def _add_noise_eager(spec: Spec) -> Fn:
    # x_t = a_t x0 + s_t noise, (a_t, s_t) gathered per sample: the x_t half of encode_reference (which would
    # also compute a target this case does not write), 3 passes in the storage dtype.
    table = common.schedule().table(spec.device)

    def fn(inp):
        x0 = inp["x0"]
        a, s = (bcast(c.to(x0.dtype), x0.dim()) for c in table[inp["t"]].unbind(1))
        return (a * x0 + s * inp["noise"],)

    return fn


@provider("add_noise", "diffusers")
def _add_noise_diffusers(spec: Spec) -> Fn:
    sched = common.import_diffusers().DDPMScheduler(**common.diffusers_kwargs())
    return lambda inp: (sched.add_noise(inp["x0"], inp["noise"], inp["t"]),)


# encode_v: x_t and the v-prediction target from in-kernel noise (training-step encoding).
register_case(Case(
    "encode_v", "noised sample + v target, in-kernel noise", inputs={"x0": 1}, writes={"x_t": 1, "v": 1},
    extra_inputs=common.timesteps, group="encode",
    op="fastdiff.add_noise_with_target(x0, t, sched, seed=0, target='v_prediction')"))


@provider("encode_v", "fastdiff")
def _encode_v_fd(spec: Spec) -> Fn:
    import fastdiff

    sched = common.schedule()
    return lambda inp: fastdiff.add_noise_with_target(inp["x0"], inp["t"], sched, seed=0, target="v_prediction")


@provider("encode_v", "eager")
def _encode_v_eager(spec: Spec) -> Fn:
    # encode_reference itself, on columns (a, s, -s, a) -- x_t = a x0 + s z and v = a z - s x0 (Salimans & Ho
    # 2022) -- with z = torch.randn_like(x0): one draw, then 6 passes in the storage dtype.
    a, s = common.schedule().table(spec.device).unbind(1)
    coefs = torch.stack([a, s, -s, a], dim=1)

    def fn(inp):
        x0 = inp["x0"]
        x_t, v, _ = encode_reference(x0, coefs, inp["t"], noise=torch.randn_like(x0))
        return x_t, v

    return fn


@provider("encode_v", "diffusers")
def _encode_v_diffusers(spec: Spec) -> Fn:
    sched = common.import_diffusers().DDPMScheduler(**common.diffusers_kwargs(), prediction_type="v_prediction")

    def fn(inp):
        x0, t = inp["x0"], inp["t"]
        noise = torch.randn_like(x0)
        return sched.add_noise(x0, noise, t), sched.get_velocity(x0, noise, t)

    return fn
