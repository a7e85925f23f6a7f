"""Drop-in scheduler cases: ``fastdiff.diffusers.<Name>.step`` vs ``diffusers.<Name>.step``, same config and state.

Both schedulers of a case are brought to the same mid-trajectory step of a 50-step run (:func:`common.at_step`)
and set back to it before every timed call (:func:`common.rewind`, host-side state only). DDIM and Euler
return pred_original_sample beside prev_sample; DPM-Solver++ keeps its x0 (DEIS its noise estimate) as the next
step's history; PNDM (PLMS) combines the output with three earlier ones. The stochastic ones (DDPM, Euler
ancestral, LCM) draw their noise from a generator both sides re-seed before each call: the same numbers, read by
fastdiff's fused pass (counted as an input).
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from . import common
from .registry import Case, Factory, Fn, Spec, register_case, register_provider

__all__: List[str] = []  # importing the module registers its cases

# (case, scheduler class, config, history tensors read, x0 written)
_DROPIN = (
    ("dropin_ddim", "DDIMScheduler", dict(common.diffusers_kwargs(), clip_sample=False, set_alpha_to_one=False),
     0, True),
    ("dropin_euler", "EulerDiscreteScheduler", common.diffusers_kwargs(), 0, True),
    ("dropin_dpmpp2m", "DPMSolverMultistepScheduler",
     dict(common.diffusers_kwargs(), algorithm_type="dpmsolver++", solver_order=2), 1, True),
    # DEIS keeps its noise estimate (the aux output, counted as the x0 slot) as the next step's history
    ("dropin_deis", "DEISMultistepScheduler", dict(common.diffusers_kwargs(), solver_order=2), 1, True),
    ("dropin_flow_euler", "FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0), 0, False),
    # Stable Diffusion 1.x's default: PLMS (skip_prk_steps), a fourth-order step reading three earlier outputs
    ("dropin_pndm", "PNDMScheduler", dict(common.diffusers_kwargs(), skip_prk_steps=True, set_alpha_to_one=False,
                                          steps_offset=1), 3, False),
    ("dropin_edm_euler", "EDMEulerScheduler", {}, 0, True),
)

#: stochastic steps, timed with a generator both sides draw the same noise from (re-seeded before each call, so
#: every call draws the same numbers; fastdiff reads that noise in its fused pass)
_DROPIN_NOISY = (
    ("dropin_ddpm", "DDPMScheduler", dict(common.diffusers_kwargs(), clip_sample=False)),
    ("dropin_euler_a", "EulerAncestralDiscreteScheduler", common.diffusers_kwargs()),
    ("dropin_lcm", "LCMScheduler", dict(common.diffusers_kwargs(), clip_sample=False)),
)


def _dropin_factory(module: str, cls_name: str, config: Dict[str, Any], n_hist: int, noisy: bool = False) -> Factory:
    own_history = module == "fastdiff.diffusers"  # fastdiff's multistep drop-in keeps its own history list

    def factory(spec: Spec) -> Fn:
        sched = getattr(common.import_scheduler_module(module), cls_name)(**config)
        k = common.MID_STEP
        t = common.at_step(sched, spec, k, warm_history=bool(n_hist))
        if noisy:
            gen = torch.Generator(device=spec.device)

            def fn(inp):
                common.rewind(sched, k)
                return (sched.step(inp["eps"], t, inp["x"], generator=gen.manual_seed(0)).prev_sample,)

            return fn

        if cls_name == "PNDMScheduler":  # a step counter and the earlier outputs (oldest first), in both classes
            def fn(inp):
                sched.counter, sched.ets = k, [inp["h3"], inp["h2"], inp["h1"]]
                return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

            return fn

        def fn(inp):
            common.rewind(sched, k, inp["hist"] if n_hist else None, own_history=own_history)
            return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

        return fn

    return factory


for _name, _cls, _cfg, _nh, _x0 in _DROPIN:
    register_case(Case(
        _name, f"drop-in {_cls}.step (50 steps, mid-trajectory)",
        inputs={"x": 1, "eps": 1, **({"hist": 1} if _nh == 1 else {f"h{j}": 1 for j in range(1, _nh + 1)})},
        writes={"out": 1, **({"x0": 1} if _x0 else {})}, group="dropin",
        check=("fastdiff",), reference="diffusers", op=f"fastdiff.diffusers.{_cls}().step(eps, t, x)"))
    register_provider(_name, "fastdiff", _dropin_factory("fastdiff.diffusers", _cls, _cfg, _nh))
    register_provider(_name, "diffusers", _dropin_factory("diffusers", _cls, _cfg, _nh))

for _name, _cls, _cfg in _DROPIN_NOISY:
    register_case(Case(
        _name, f"drop-in {_cls}.step with a generator (50 steps, mid-trajectory)",
        inputs={"x": 1, "eps": 1, "noise": 1}, writes={"out": 1, "x0": 1}, group="dropin",
        check=("fastdiff",), reference="diffusers", op=f"fastdiff.diffusers.{_cls}().step(eps, t, x, generator=g)"))
    register_provider(_name, "fastdiff", _dropin_factory("fastdiff.diffusers", _cls, _cfg, 0, noisy=True))
    register_provider(_name, "diffusers", _dropin_factory("diffusers", _cls, _cfg, 0, noisy=True))
