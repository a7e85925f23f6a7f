"""Encoding cases: forward noising with given noise (``add_noise``) and x_t + v target from fresh noise (``encode_v``).

The eager baselines write the formula of ``fastdiff.ops.encode.naive.encode_reference`` (``x_t = a x0 + s z``,
target ``ta x0 + tn z``) for the columns each case needs, on the per-timestep (alpha, sigma) the op reads (the
schedule's :meth:`~fastdiff.DiscreteVPSchedule.table`), gathered once per call, in the storage dtype, with
``torch.randn_like`` noise where the op draws its own. (``encode_reference`` itself slices and reshapes four
coefficient columns per call: +50% at 1x4x8x8, and a target that ``add_noise`` does not write.)
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch

from . import common
from .registry import Case, Fn, Spec, provider, register_case

__all__: List[str] = []  # importing the module registers its cases


def _eager(spec: Spec, formula: Callable[..., Tuple[torch.Tensor, ...]]) -> Fn:
    """An eager provider: ``formula(x0, a, s, inputs)``, (a, s) = the schedule's ``table()[t]`` gathered once per
    call and shaped to broadcast over each sample, in x0's dtype."""
    table = common.schedule().table(spec.device)

    def fn(inp):
        x0 = inp["x0"]
        rows = table[inp["t"]].to(x0.dtype)
        a, s = rows.view(*rows.shape, *([1] * (x0.dim() - 1))).unbind(1)
        return formula(x0, a, s, inp)

    return fn


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
    return _eager(spec, lambda x0, a, s, inp: (a * x0 + s * inp["noise"],))  # x_t = a x0 + s noise: 3 passes


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


def _x_t_and_v(x0: torch.Tensor, a: torch.Tensor, s: torch.Tensor,
               inp: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    # z = randn_like(x0), x_t = a x0 + s z and v = a z - s x0 (Salimans & Ho 2022): one draw, 6 passes.
    z = torch.randn_like(x0)
    return a * x0 + s * z, a * z - s * x0


@provider("encode_v", "eager")
def _encode_v_eager(spec: Spec) -> Fn:
    return _eager(spec, _x_t_and_v)


@provider("encode_v", "diffusers")
def _encode_v_diffusers(spec: Spec) -> Fn:
    sched = common.import_diffusers().DDPMScheduler(**common.diffusers_kwargs(), prediction_type="v_prediction")

    def fn(inp):
        x0, t = inp["x0"], inp["t"]
        noise = torch.randn_like(x0)
        return sched.add_noise(x0, noise, t), sched.get_velocity(x0, noise, t)

    return fn
