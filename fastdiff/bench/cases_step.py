"""Denoising-step cases: the fused step as DDIM, DDIM with CFG, DPM-Solver++(2M) and Euler ancestral.

Each case builds one ``step_coefs`` row from the shared schedule; the ``fastdiff`` provider runs it with
``fused_step`` and the ``eager`` provider evaluates the same row with :func:`eager_step` (the reference
formula, one torch op per term that counts).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Tuple, Union

import torch

from ..ops.step import COEF_NAMES, step_coefs
from ..sampling import ancestral_split
from . import common
from .registry import Case, Fn, Spec, provider, register_case

__all__ = ["eager_step", "guided", "ddim_coefs"]


def guided(eps2: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance of a ``[uncond; cond]`` model output: ``u + scale (c - u)`` (3 passes)."""
    uncond, cond = eps2.chunk(2)
    return uncond + scale * (cond - uncond)


def _sum(*terms: Tuple[float, torch.Tensor]) -> torch.Tensor:
    """``sum(c * t)`` over the terms with ``c != 0``, a term with ``c == 1`` added without a multiply."""
    acc = None
    for c, t in terms:
        if c == 0.0:
            continue
        v = t if c == 1.0 else c * t
        acc = v if acc is None else acc + v
    return acc


def eager_step(coefs: torch.Tensor, *, guidance: bool = False,
               aux: bool = False) -> Callable[..., Tuple[torch.Tensor, ...]]:
    """The formula of ``fastdiff.ops.step.naive.step_reference`` written as eager PyTorch, for one table row.

    ``coefs`` is the one-row table the fused provider runs; its values are read once here, as Python floats.
    The returned ``step(x, m, history=())`` computes, in the storage dtype: ``m = u + g (c - u)`` (with
    ``guidance``), ``d = in_x x + in_m m``, ``out = out_x x + out_m m + out_d d + sum_k out_h[k] h_k +
    out_noise * randn_like(x)`` and, with ``aux``, ``aux_x x + aux_d d`` -- leaving out each term whose
    coefficient is 0 and each multiplication by 1, as one writes it by hand (``step_reference`` itself
    evaluates all 13 terms, twice the passes of a hand-written DDIM step).
    """
    c = dict(zip(COEF_NAMES, coefs[0].tolist()))
    need_d = c["out_d"] != 0.0 or (aux and c["aux_d"] != 0.0)

    def step(x: torch.Tensor, m: torch.Tensor, history: Sequence[torch.Tensor] = ()) -> Tuple[torch.Tensor, ...]:
        if guidance:
            m = guided(m, c["guidance"])
        d = _sum((c["in_x"], x), (c["in_m"], m)) if need_d else None
        terms = [(c["out_x"], x), (c["out_m"], m), (c["out_d"], d)]
        terms += [(c[f"out_h{k}"], h) for k, h in enumerate(history)]
        if c["out_noise"] != 0.0:
            terms.append((c["out_noise"], torch.randn_like(x)))
        out = _sum(*terms)
        return (out, _sum((c["aux_x"], x), (c["aux_d"], d))) if aux else (out,)

    return step


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
        torch.Size([2, 13])
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
    step = eager_step(_ddim_coefs(spec.device))  # d = in_x x + in_m eps; out = out_m eps + out_d d: 6 passes
    return lambda inp: step(inp["x"], inp["eps"])


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
    step = eager_step(_ddim_coefs(spec.device), guidance=True)  # the guidance (3 passes), then the DDIM step
    return lambda inp: step(inp["x"], inp["eps2"])


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
    # d = in_x x + in_m eps (the x0 estimate, also the aux output); out = out_x x + out_d d + out_h0 hist:
    # 8 passes (diffusers' midpoint form of the same update takes 10).
    step = eager_step(_dpm_coefs(spec.device), aux=True)
    return lambda inp: step(inp["x"], inp["eps"], (inp["hist"],))


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
    # x0 = x - s eps; out = r x + (1 - r) x0 + up * randn_like(x): one draw and 7 passes (diffusers' to-derivative
    # form of the same step takes 8).
    step = eager_step(_ancestral_coefs(spec.device))
    return lambda inp: step(inp["x"], inp["eps"])


@provider("step_ancestral", "diffusers")
def _anc_diffusers(spec: Spec) -> Fn:
    sched = common.import_diffusers().EulerAncestralDiscreteScheduler(**common.diffusers_kwargs())
    t = common.at_step(sched, spec)

    def fn(inp):
        common.rewind(sched, common.MID_STEP)
        return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

    return fn
