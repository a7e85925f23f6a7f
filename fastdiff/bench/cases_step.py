"""Denoising-step cases: the fused step as DDIM, DDIM with CFG, DPM-Solver++(2M) and Euler ancestral.

Each case builds one ``step_coefs`` row from the shared schedule; the ``fastdiff`` provider runs it with
``fused_step``, and the ``eager`` provider writes the formula of ``fastdiff.ops.step.naive.step_reference``
(``d = in_x x + in_m m``, ``out = out_x x + out_m m + out_d d + out_h h + out_noise z``, ``aux = d``) with
that row's values and only the terms the case uses, in the storage dtype: what one writes by hand.
(``step_reference`` itself evaluates all 15 terms per call, twice the passes of a hand-written DDIM step.)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Tuple, Union

import torch

from ..ops.step import COEF_NAMES, step_coefs
from ..solvers import ancestral_split
from . import common
from .registry import Case, Fn, Spec, provider, register_case

__all__ = ["guided", "ddim_coefs"]


def guided(eps2: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance of a ``[uncond; cond]`` model output: ``u + scale (c - u)`` (3 passes)."""
    uncond, cond = eps2.chunk(2)
    return uncond + scale * (cond - uncond)


def _row(coefs: torch.Tensor, *names: str) -> Tuple[float, ...]:
    """The named coefficients of a one-row ``step_coefs`` table as Python floats (read once, untimed)."""
    row = dict(zip(COEF_NAMES, coefs[0].tolist()))
    return tuple(row[n] for n in names)


def _alpha_sigma(t: int) -> Tuple[float, float]:
    a, s = common.schedule().alpha_sigma(t)
    return float(a), float(s)


def ddim_coefs(t: Union[int, Sequence[int]], t_prev: Union[int, Sequence[int]], *, guidance: float = 0.0,
               device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """DDIM rows (eta = 0, eps prediction) from training timestep(s) ``t`` to ``t_prev`` on the shared schedule.

    x0 = (x - s_t eps) / a_t, out = a_prev x0 + s_prev eps: ``in_x = 1/a_t, in_m = -s_t/a_t, out_d = a_prev,
    out_m = s_prev`` (one row per timestep pair; ``guidance`` is the CFG scale a guided step reads).

    Example:
        >>> ddim_coefs([999, 500], [500, 0]).shape
        torch.Size([2, 15])
    """
    a, s = common.schedule().alpha_sigma(t)
    ap, sp = common.schedule().alpha_sigma(t_prev)
    return step_coefs(in_x=1 / a, in_m=-s / a, out_d=ap, out_m=sp, guidance=guidance, device=device)


def _ddim_coefs(device: torch.device) -> torch.Tensor:
    # The step of the DDIM cases, t -> t_prev; the CFG case reads the guidance scale from the same row.
    return ddim_coefs(common.T, common.T_PREV, guidance=common.GUIDANCE, device=device)


def _dpm_coefs(device: torch.device) -> torch.Tensor:
    # DPM-Solver++(2M) (Lu et al. 2022) from t to t_prev with the x0 estimate of t_hist as history, in
    # log-SNR lambda = log(a / s): h = lambda_prev - lambda_t, r = (lambda_t - lambda_hist) / h,
    # out = (s_prev / s_t) x - a_prev expm1(-h) ((1 + 1/(2r)) x0 - x0_hist / (2r)); the x0 estimate is aux.
    (a_p, s_p), (a_0, s_0), (a_1, s_1) = (_alpha_sigma(t) for t in (common.T_PREV, common.T, common.T_HIST))
    lam_p, lam_0, lam_1 = (math.log(a / s) for a, s in ((a_p, s_p), (a_0, s_0), (a_1, s_1)))
    h = lam_p - lam_0
    r0 = (lam_0 - lam_1) / h
    e = a_p * math.expm1(-h)
    return step_coefs(in_x=1 / a_0, in_m=-s_0 / a_0, out_x=s_p / s_0, out_d=-e * (1 + 0.5 / r0),
                      out_h=[0.5 * e / r0], aux_d=1.0, device=device)


def _ancestral_coefs(device: torch.device) -> torch.Tensor:
    # Euler ancestral (k-diffusion's sample_euler_ancestral), eps prediction, sigma(t) -> sigma(t_prev), as
    # fastdiff's euler_ancestral sampler plans it: x0 = x - s eps, an Euler step to sigma_down,
    # x + (down - s)(x - x0)/s = r x + (1 - r) x0 with r = down / s, then fresh noise of size sigma_up.
    sigmas = common.schedule().sigmas
    s = float(sigmas[common.T])
    down, up = ancestral_split(s, float(sigmas[common.T_PREV]))
    r = down / s
    return step_coefs(in_x=1.0, in_m=-s, out_x=r, out_d=1.0 - r, out_noise=up, device=device)


def _eager_ddim_step(coefs: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    # d = in_x x + in_m eps (the x0 estimate); out = out_m eps + out_d d: 6 passes.
    in_x, in_m, out_m, out_d = _row(coefs, "in_x", "in_m", "out_m", "out_d")

    def step(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        d = in_x * x + in_m * eps
        return out_m * eps + out_d * d

    return step


def _ddim_scheduler(spec: Spec) -> Any:
    sched = common.import_diffusers().DDIMScheduler(**common.diffusers_kwargs(), clip_sample=False,
                                                    set_alpha_to_one=False)
    sched.set_timesteps(common.INFERENCE_STEPS, device=spec.device)
    return sched


# step_ddim: (x, eps) -> x_prev, eta = 0.
register_case(Case(
    "step_ddim", "DDIM step (eps prediction, eta=0)", inputs={"x": 1, "eps": 1}, writes={"out": 1},
    group="step", check=("fastdiff", "compile", "diffusers"), op="fastdiff.fused_step(x, eps, coefs)"))


@provider("step_ddim", "fastdiff")
def _ddim_fd(spec: Spec) -> Fn:
    import fastdiff.ops.step as op  # looked up per call, so instrument_ops can name it

    coefs = _ddim_coefs(spec.device)
    return lambda inp: (op.fused_step(inp["x"], inp["eps"], coefs),)


@provider("step_ddim", "eager")
def _ddim_eager(spec: Spec) -> Fn:
    step = _eager_ddim_step(_ddim_coefs(spec.device))
    return lambda inp: (step(inp["x"], inp["eps"]),)


@provider("step_ddim", "diffusers")
def _ddim_diffusers(spec: Spec) -> Fn:
    sched = _ddim_scheduler(spec)
    return lambda inp: (sched.step(inp["eps"], common.T, inp["x"], eta=0.0).prev_sample,)


# step_cfg: classifier-free guidance folded into the DDIM step; model output is [uncond; cond].
register_case(Case(
    "step_cfg", "DDIM step with CFG (doubled model output)", inputs={"x": 1, "eps2": 2}, writes={"out": 1},
    group="step", check=("fastdiff", "compile", "diffusers"),
    op="fastdiff.fused_step(x, eps2, coefs, guidance=True)"))


@provider("step_cfg", "fastdiff")
def _cfg_fd(spec: Spec) -> Fn:
    import fastdiff.ops.step as op

    coefs = _ddim_coefs(spec.device)
    return lambda inp: (op.fused_step(inp["x"], inp["eps2"], coefs, guidance=True),)


@provider("step_cfg", "eager")
def _cfg_eager(spec: Spec) -> Fn:
    coefs = _ddim_coefs(spec.device)
    step, (g,) = _eager_ddim_step(coefs), _row(coefs, "guidance")
    return lambda inp: (step(inp["x"], guided(inp["eps2"], g)),)  # the guidance (3 passes), then the step


@provider("step_cfg", "diffusers")
def _cfg_diffusers(spec: Spec) -> Fn:
    sched = _ddim_scheduler(spec)  # a diffusers pipeline: guidance in torch, then scheduler.step
    return lambda inp: (sched.step(guided(inp["eps2"], common.GUIDANCE), common.T, inp["x"], eta=0.0).prev_sample,)


# step_dpmpp2m: DPM-Solver++(2M): one history tensor in, the new x0 estimate out.
register_case(Case(
    "step_dpmpp2m", "DPM-Solver++(2M) step (one history in, x0 estimate out)",
    inputs={"x": 1, "eps": 1, "hist": 1}, writes={"out": 1, "x0": 1}, group="step",
    check=("fastdiff", "compile"), op="fastdiff.fused_step(x, eps, coefs, history=[hist], write_aux=True)"))


@provider("step_dpmpp2m", "fastdiff")
def _dpm_fd(spec: Spec) -> Fn:
    import fastdiff.ops.step as op

    coefs = _dpm_coefs(spec.device)
    return lambda inp: op.fused_step(inp["x"], inp["eps"], coefs, history=[inp["hist"]], write_aux=True)


@provider("step_dpmpp2m", "eager")
def _dpm_eager(spec: Spec) -> Fn:
    # d = in_x x + in_m eps (the x0 estimate, also written); out = out_x x + out_d d + out_h0 hist: 8 passes
    # (k-diffusion's form of the same update takes 9, diffusers' midpoint form 10).
    in_x, in_m, out_x, out_d, out_h0 = _row(_dpm_coefs(spec.device), "in_x", "in_m", "out_x", "out_d", "out_h0")

    def fn(inp):
        x, eps = inp["x"], inp["eps"]
        d = in_x * x + in_m * eps
        return out_x * x + out_d * d + out_h0 * inp["hist"], d

    return fn


@provider("step_dpmpp2m", "diffusers")
def _dpm_diffusers(spec: Spec) -> Fn:
    sched = common.import_diffusers().DPMSolverMultistepScheduler(
        **common.diffusers_kwargs(), algorithm_type="dpmsolver++", solver_order=2)
    t = common.at_step(sched, spec, warm_history=True)

    def fn(inp):
        common.rewind(sched, common.MID_STEP, inp["hist"])  # the same second-order step every call
        out = sched.step(inp["eps"], t, inp["x"]).prev_sample
        return out, sched.model_outputs[-1]

    return fn


# step_ancestral: Euler ancestral: fresh noise each step.
register_case(Case(
    "step_ancestral", "Euler ancestral step, in-kernel noise", inputs={"x": 1, "eps": 1}, writes={"out": 1},
    group="step", op="fastdiff.fused_step(x, eps, coefs, seed=0, stream=1)"))


@provider("step_ancestral", "fastdiff")
def _anc_fd(spec: Spec) -> Fn:
    import fastdiff.ops.step as op

    coefs = _ancestral_coefs(spec.device)
    return lambda inp: (op.fused_step(inp["x"], inp["eps"], coefs, seed=0, stream=1),)


@provider("step_ancestral", "eager")
def _anc_eager(spec: Spec) -> Fn:
    # d = x + in_m eps (the x0 estimate, in_x = 1); out = out_x x + out_d d + out_noise randn_like(x): one draw
    # and 7 passes (the derivative form diffusers and k-diffusion write takes 8).
    in_m, out_x, out_d, up = _row(_ancestral_coefs(spec.device), "in_m", "out_x", "out_d", "out_noise")

    def fn(inp):
        x, eps = inp["x"], inp["eps"]
        d = x + in_m * eps
        return (out_x * x + out_d * d + up * torch.randn_like(x),)

    return fn


@provider("step_ancestral", "diffusers")
def _anc_diffusers(spec: Spec) -> Fn:
    sched = common.import_diffusers().EulerAncestralDiscreteScheduler(**common.diffusers_kwargs())
    t = common.at_step(sched, spec)

    def fn(inp):
        common.rewind(sched, common.MID_STEP)
        return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

    return fn
