"""The samplers, each written once: ``sampler(run, x, **options) -> x`` on a :class:`~fastdiff.sampler_run.Run`.

A sampler registers one coefficient row per model evaluation (the weights come from :mod:`fastdiff.solvers`,
computed on the run's host copy of the schedule), plans the table, then alternates one model call and one fused
pass. ``fastdiff.sample`` and ``fastdiff.k_diffusion`` run the same functions; their runs differ in the scalar
kind of the schedule (host floats, or 0-d tensors reproducing k-diffusion's float32 roundings), the model call
and where the noise comes from (in-kernel Philox, or the global RNG / a ``noise_sampler``).

Where a new sampler goes: write ``def sample_<name>(run, x, *, options) -> x`` here, with its weights in
:mod:`fastdiff.solvers` if another sampler or face can use them, and add it to :data:`SAMPLERS`; each face then
exposes it with one line (``fastdiff.k_diffusion``'s ``sample_<name>`` adapter, a diffusers class's table
builder). Cite the paper in the docstring.

Example:
    >>> import torch, fastdiff
    >>> gmm = fastdiff.toy.GaussianMixture.ring(k=4)
    >>> x = fastdiff.initial_noise((8, 2), seed=0) * 10.0
    >>> fastdiff.sample(gmm.denoiser, x, fastdiff.karras_sigmas(6, 0.01, 10.0), sampler="heun").shape
    torch.Size([8, 2])
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .ops.step import MAX_HISTORY, coef_table, fused_step
from .sampler_run import Run
from .solvers import (IPNDM_WEIGHTS, F, ancestral_split, churn_schedule, deis_weights, er_sde_default_noise_scaler,
                      er_sde_stage_integrals, euler_coefs, expm1, exp, ipndm_v_weights, lerp_half, like,
                      lms_coefficients, log, sa_solver_b_coeffs, sigma_of, sqrt, t_of, unipc_rhos)
from .solvers import euler_ancestral_cfgpp_coefs, res_multistep_weights

__all__ = ["SAMPLERS", "STOCHASTIC", "dpm_adaptive", "PIDStepSize"] + [f"sample_{n}" for n in (
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_sde",
    "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "ddpm", "unipc", "flow_euler", "ipndm", "ipndm_v", "deis",
    "heunpp2", "lcm", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "dpmpp_2m_sde_heun", "dpm_fast")]
__all__ += ["NEEDS_UNCOND"] + [f"sample_{n}" for n in (
    "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp")]


# ----------------------------------------------------------------------------------------------
# loops shared by several samplers
# ----------------------------------------------------------------------------------------------
def _loop(run: Run, x: torch.Tensor, plan: Sequence[Tuple], hats: Optional[Sequence[Any]] = None) -> torch.Tensor:
    """The loop of the one- and two-evaluation samplers.

    ``plan[i] = (pre, ka, kb, draw, hist)``: the churn pass of step i, evaluation A (its pass advances x, or with
    ``kb`` predicts ``x_eval``), optional evaluation B (its pass advances x from x, ``x_eval`` and, with ``hist``,
    one history entry from A's pass: its x0 estimate, or with ``hist == "aux"`` the auxiliary output A's row
    defines), and the noise each pass takes (``draw = (draw_a, draw_b)``).
    """
    x = run.start(x)
    for i in run.steps():
        pre, ka, kb, (draw_a, draw_b), hist = plan[i]
        x = run.churn(x, i, pre)
        raw = run.eval(x, ka)
        run.report(i, x, raw, ka, None if hats is None else hats[i])
        if kb is None:
            x = run.step(x, raw, ka, draw=draw_a)
            continue
        if hist == "aux":  # the predictor's pass writes the history entry its row defines
            x_mid, entry = run.step(x, raw, ka, aux=True, draw=draw_a)
        elif hist:
            x_mid, entry = run.step(x, raw, ka, x0=True, draw=draw_a)
        else:
            x_mid = run.step(x, raw, ka, draw=draw_a)
        # B's model saw x_mid: its pass reads x_mid when it weighs it or forms B's x0 estimate from it
        cb = run.coefs[kb]
        x_eval = x_mid if cb["out_e"] != 0.0 or cb["in_x"] != 0.0 else None
        x = run.step(x, run.eval(x_mid, kb), kb, x_eval=x_eval, history=(entry,) if hist else (), draw=draw_b)
    return x


def _multistep_loop(run: Run, x: torch.Tensor, plan: Sequence[Tuple[int, int, Any]], keep: int) -> torch.Tensor:
    """Loop of the multistep samplers: ``plan[i] = (k, n_hist, draw)``; the history holds the last x0 estimates."""
    hist: List[torch.Tensor] = []
    for i in run.steps():
        k, used, draw = plan[i]
        raw = run.eval(x, k)
        run.report(i, x, raw, k)
        x, entry = run.step(x, raw, k, history=hist[:used], x0=True, draw=draw)
        hist = [entry] + hist[: keep - 1]
    return x


def _churned_run(run: Run, x: torch.Tensor, churn: Tuple[float, float, float, float],
                 second_order: Optional[Callable[[Any, Any, float], Tuple]] = None) -> torch.Tensor:
    """Plan and loop of the EDM-churned samplers (euler, heun, dpm_2): churn at each step's start, then an Euler
    step, or ``second_order(sigma_hat, sigma_next, next_churn) -> (ka, kb, draws, hist)`` unless sigma_next = 0."""
    s = run.sigmas
    hats, churn_noise = churn_schedule(s, *churn)
    pre = run.churn_plan(churn_noise)
    plan = []
    for i in range(run.n):
        sh, s1, nxt = hats[i], s[i + 1], run.next_churn(i)
        if second_order is None or F(s1) == 0:
            plan.append((pre[i], run.row(sh, **euler_coefs(sh, s1), out_noise=nxt), None, (None, None), False))
        else:
            plan.append((pre[i], *second_order(sh, s1, nxt)))
    run.plan()
    return _loop(run, x, plan, hats)


# ----------------------------------------------------------------------------------------------
# flow runs (Run.flow_sigmas: flow times s, x = (1 - s) x0 + s eps; ComfyUI's CONST model sampling)
# ----------------------------------------------------------------------------------------------
def _lambda_of(run: Run, sigma: Any) -> Any:
    """``lambda = log(alpha / sigma)``: ``-log(sigma)`` on a VE run, ``log((1 - s) / s)`` on a flow run."""
    if not run.flow_sigmas:
        return t_of(sigma)
    return sigma.logit().neg() if isinstance(sigma, torch.Tensor) else math.log((1 - sigma) / sigma)


def _sigma_of_lambda(run: Run, lam: Any) -> Any:
    """Inverse of :func:`_lambda_of`: ``exp(-lambda)``, or ``1 / (1 + exp(lambda))`` on a flow run."""
    if not run.flow_sigmas:
        return sigma_of(lam)
    return lam.neg().sigmoid() if isinstance(lam, torch.Tensor) else 1.0 / (1.0 + math.exp(lam))


def _flow_ancestral_split(sigma: Any, sigma_next: Any, eta: float) -> Tuple[Any, Any, Any]:
    """``(sigma_down, alpha_next / alpha_down, renoise)`` of a rectified-flow ancestral step (ComfyUI's _RF
    samplers): step to ``s_down = s' (1 + (s'/s - 1) eta)``, scale by ``(1 - s') / (1 - s_down)``, add
    ``renoise = sqrt(s'^2 - s_down^2 (1 - s')^2 / (1 - s_down)^2)`` times fresh noise (the flow marginal at s')."""
    down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    a_next, a_down = 1 - sigma_next, 1 - down
    return down, a_next / a_down, sqrt(sigma_next ** 2 - down ** 2 * a_next ** 2 / a_down ** 2)


def _flow_ancestral_euler(run: Run, x: torch.Tensor, eta: float, s_noise: float) -> torch.Tensor:
    s = run.sigmas
    plan = []
    for i in range(run.n):
        if F(s[i + 1]) == 0:
            plan.append((None, run.row(s[i], out_x=0.0, out_d=1.0), None, (None, None), False))
            continue
        sd, scale, renoise = _flow_ancestral_split(s[i], s[i + 1], eta)
        r = sd / s[i]
        c = F(scale) if eta > 0 else 1.0
        k = run.row(s[i], out_x=c * F(r), out_d=c * F(1 - r), out_noise=s_noise * F(renoise) if eta > 0 else 0.0)
        plan.append((None, k, None, (i if eta > 0 else None, None), False))
    run.plan()
    return _loop(run, x, plan)


def _flow_dpm_2_ancestral(run: Run, x: torch.Tensor, eta: float, s_noise: float) -> torch.Tensor:
    s = run.sigmas
    plan = []
    for i in range(run.n):
        sd, scale, renoise = _flow_ancestral_split(s[i], s[i + 1], eta)
        if F(sd) == 0:
            plan.append((None, run.row(s[i], **euler_coefs(s[i], sd)), None, (None, None), False))
            continue
        sm = exp(lerp_half(log(s[i]), log(sd)))
        ka = run.row(s[i], **euler_coefs(s[i], sm))
        c, dt, smf = F(scale), F(sd - s[i]), F(sm)
        kb = run.row(sm, out_x=c, out_e=c * dt / smf, out_d=-c * dt / smf, out_noise=s_noise * F(renoise))
        plan.append((None, ka, kb, (None, i), False))
    run.plan()
    return _loop(run, x, plan)


def _flow_dpmpp_2s_ancestral(run: Run, x: torch.Tensor, eta: float, s_noise: float) -> torch.Tensor:
    s = run.sigmas
    plan = []
    for i in range(run.n):
        sd, scale, renoise = _flow_ancestral_split(s[i], s[i + 1], eta)
        if F(s[i + 1]) == 0:
            plan.append((None, run.row(s[i], **euler_coefs(s[i], sd)), None, (None, None), False))
            continue
        if F(s[i]) == 1.0:  # lambda = -inf at s = 1: ComfyUI's fixed midpoint
            sm = like(0.9999, s[i])
        else:
            t, t_down = _lambda_of(run, s[i]), _lambda_of(run, sd)
            sm = _sigma_of_lambda(run, t + 0.5 * (t_down - t))
        ra, rb = sm / s[i], sd / s[i]
        c = F(scale) if eta > 0 else 1.0
        ka = run.row(s[i], out_x=F(ra), out_d=F(1 - ra))
        kb = run.row(sm, out_x=c * F(rb), out_d=c * F(1 - rb), out_noise=s_noise * F(renoise) if eta > 0 else 0.0)
        plan.append((None, ka, kb, (None, i if eta > 0 else None), False))
    run.plan()
    return _loop(run, x, plan)


# ----------------------------------------------------------------------------------------------
# samplers
# ----------------------------------------------------------------------------------------------
def sample_euler(run: Run, x: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                 s_noise: float = 1.0) -> torch.Tensor:
    """Euler's method on the probability-flow ODE, optional EDM churn (Karras et al. 2022, Alg. 2, first order)."""
    return _churned_run(run, x, (s_churn, s_tmin, s_tmax, s_noise))


def sample_heun(run: Run, x: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                s_noise: float = 1.0) -> torch.Tensor:
    """Heun's second-order method with EDM churn (Karras et al. 2022, Algorithm 2).

    The corrector ``x_hat + dt/2 (d1 + d2)`` keeps the predictor's derivative ``d1 = (x_hat - D1) / sigma_hat``
    (written by the predictor's pass) or, equivalently, its x0 estimate ``D1`` as the history entry; which one is
    the run's choice (each face's float32 roundings are pinned by its parity tests).
    """
    def second_order(sh: Any, s1: Any, nxt: float) -> Tuple:
        dt, shf, s1f = F(s1 - sh), F(sh), F(s1)
        if run.heun_keeps_derivative:
            ka = run.row(sh, **euler_coefs(sh, s1), aux_x=1.0 / shf, aux_d=-1.0 / shf)
            kb = run.row(s1, out_x=1.0, out_h=(dt / 2,), out_e=dt / (2 * s1f), out_d=-dt / (2 * s1f), out_noise=nxt)
            return ka, kb, (None, None), "aux"
        ka = run.row(sh, **euler_coefs(sh, s1))
        kb = run.row(s1, out_x=1.0 + dt / (2 * shf), out_h=(-dt / (2 * shf),), out_e=dt / (2 * s1f),
                     out_d=-dt / (2 * s1f), out_noise=nxt)
        return ka, kb, (None, None), True

    return _churned_run(run, x, (s_churn, s_tmin, s_tmax, s_noise), second_order)


def _midpoint(run: Run, sh: Any, s_to: Any, noise: float, draw: Any) -> Tuple[int, Optional[int], Tuple]:
    """DPM-Solver-2 in sigma (k-diffusion's dpm_2): Euler to the geometric midpoint, then the full step."""
    sm = exp(lerp_half(log(sh), log(s_to)))
    ka = run.row(sh, **euler_coefs(sh, sm))
    dt, smf = F(s_to - sh), F(sm)
    kb = run.row(sm, out_x=1.0, out_e=dt / smf, out_d=-dt / smf, out_noise=noise)
    return ka, kb, (None, draw)


def sample_dpm_2(run: Run, x: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                 s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 (midpoint) in sigma with EDM churn (Lu et al. 2022; Karras et al. 2022 variant)."""
    return _churned_run(run, x, (s_churn, s_tmin, s_tmax, s_noise),
                        lambda sh, s1, nxt: (*_midpoint(run, sh, s1, nxt, None), False))


def sample_dpm_2_ancestral(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver-2: midpoint step to sigma_down, then noise sigma_up (Lu et al. 2022; k-diffusion).

    On a flow run (:attr:`~fastdiff.sampler_run.Run.flow_sigmas`) the rectified-flow ancestral step of ComfyUI's
    CONST branch: the midpoint step to ``s_down``, then the flow renoising of :func:`_flow_ancestral_split`.
    """
    if run.flow_sigmas:
        return _flow_dpm_2_ancestral(run, x, eta, s_noise)
    s = run.sigmas
    plan = []
    for i in range(run.n):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        if F(sd) == 0:  # straight to 0: no noise (k-diffusion)
            plan.append((None, run.row(s[i], **euler_coefs(s[i], sd)), None, (None, None), False))
        else:
            plan.append((None, *_midpoint(run, s[i], like(sd, s[i]), s_noise * F(su), i), False))
    run.plan()
    return _loop(run, x, plan)


def _ancestral_euler(run: Run, x: torch.Tensor, eta: float, s_noise: float) -> torch.Tensor:
    s = run.sigmas
    plan = []
    for i in range(run.n):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        draw = F(s[i + 1]) > 0
        k = run.row(s[i], **euler_coefs(s[i], sd), out_noise=s_noise * F(su) if draw else 0.0)
        plan.append((None, k, None, (i if draw else None, None), False))
    run.plan()
    return _loop(run, x, plan)


def sample_euler_ancestral(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral Euler: Euler step to sigma_down, then fresh noise of size sigma_up (Ho et al. 2020; k-diffusion).

    On a flow run the rectified-flow ancestral step of ComfyUI's CONST branch (:func:`_flow_ancestral_split`).
    """
    if run.flow_sigmas:
        return _flow_ancestral_euler(run, x, eta, s_noise)
    return _ancestral_euler(run, x, eta, s_noise)


def sample_ddim(run: Run, x: torch.Tensor, *, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12); in VE variables its step is exactly the ancestral split with eta."""
    return _ancestral_euler(run, x, eta, 1.0)


def sample_ddpm(run: Run, x: torch.Tensor) -> torch.Tensor:
    """DDPM ancestral sampling from the posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, Algorithm 2)."""
    return _ancestral_euler(run, x, 1.0, 1.0)


def sample_lms(run: Run, x: torch.Tensor, *, order: int = 4, final_denoise: bool = False) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth in sigma) on the PF ODE (cf. Liu et al. 2022, PNDM; k-diffusion).

    Orders above ``MAX_HISTORY + 1`` fold the oldest derivatives into the last history slot (one extra pass).
    With ``final_denoise`` a step to sigma = 0 is ``x = D`` (ComfyUI's lms) instead of an LMS step to 0.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    t = [F(v) for v in run.sigmas]
    plan = []
    for i in range(run.n):
        if final_denoise and t[i + 1] == 0:
            plan.append((run.row(run.sigmas[i], out_x=0.0, out_d=1.0, aux_x=1.0 / t[i], aux_d=-1.0 / t[i]), []))
            continue
        c = lms_coefficients(t, i, min(i + 1, order))
        # x + c0 (x - D)/s + sum_j c_j d_{i-j}; aux = this step's derivative (x - D)/s
        older = c[1:]
        fused = older if len(older) <= MAX_HISTORY else older[:MAX_HISTORY - 1] + [1.0]
        k = run.row(run.sigmas[i], out_x=1.0 + c[0] / t[i], out_d=-c[0] / t[i], out_h=fused, aux_x=1.0 / t[i],
                    aux_d=-1.0 / t[i])
        plan.append((k, older))
    run.plan()
    ds: List[torch.Tensor] = []  # previous derivatives, newest first
    for i in run.steps():
        k, older = plan[i]
        raw = run.eval(x, k)
        run.report(i, x, raw, k)
        hist = ds[: len(older)]
        if len(hist) > MAX_HISTORY:
            tail = sum(ci * d for ci, d in zip(older[MAX_HISTORY - 1:], hist[MAX_HISTORY - 1:]))
            hist = hist[: MAX_HISTORY - 1] + [tail]
        x, d = run.step(x, raw, k, history=hist, aux=True)
        ds = [d] + ds[: order - 2]
    return x


def sample_dpmpp_2s_ancestral(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_2s_ancestral).

    On a flow run ComfyUI's CONST branch: both stages are the flow interpolation ``(s'/s) x + (1 - s'/s) D``, the
    midpoint halfway in ``log((1 - s) / s)``, then the flow renoising of :func:`_flow_ancestral_split`.
    """
    if run.flow_sigmas:
        return _flow_dpmpp_2s_ancestral(run, x, eta, s_noise)
    s = run.sigmas
    plan = []
    for i in range(run.n):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        draw = i if F(s[i + 1]) > 0 else None
        noise = s_noise * F(su) if draw is not None else 0.0
        if F(sd) == 0:
            plan.append((None, run.row(s[i], **euler_coefs(s[i], sd), out_noise=noise), None, (draw, None), False))
            continue
        t, t_next = t_of(s[i]), t_of(like(sd, s[i]))
        h = t_next - t
        s_mid = t + 0.5 * h
        ka = run.row(s[i], out_x=F(sigma_of(s_mid) / sigma_of(t)), out_d=-F(expm1(-h * 0.5)))
        kb = run.row(sigma_of(s_mid), out_x=F(sigma_of(t_next) / sigma_of(t)), out_d=-F(expm1(-h)), out_noise=noise)
        plan.append((None, ka, kb, (None, draw), False))
    run.plan()
    return _loop(run, x, plan)


def sample_dpmpp_sde(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ (stochastic, 2 stages) (Lu et al. 2022; k-diffusion's sample_dpmpp_sde).

    ``fastdiff.sample`` draws independent Philox noise per stage (each with the variance of k-diffusion's); the
    k-diffusion face draws from its noise sampler, a Brownian tree by default, at k-diffusion's times. On a flow
    run the steps are taken in ``lambda = log((1 - s) / s)`` with the signal scales ``alpha = 1 - s`` (ComfyUI's
    half-log-SNR form for CONST models).
    """
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
        raise ValueError(f"r must be in (0, 1], got {r!r}")
    s = run.sigmas
    fac = 1 / (2 * r)
    plan = []
    for i in range(run.n):
        if F(s[i + 1]) == 0:
            plan.append((None, run.row(s[i], **euler_coefs(s[i], s[i + 1])), None, (None, None), False))
            continue
        if run.flow_sigmas:
            plan.append(_flow_dpmpp_sde_step(run, i, eta, s_noise, r))
            continue
        t, t_next = t_of(s[i]), t_of(s[i + 1])
        h = t_next - t
        s_mid = t + h * r
        sd, su = ancestral_split(sigma_of(t), sigma_of(s_mid), eta)
        s_ = t_of(like(sd, s[i]))
        ka = run.row(s[i], out_x=F(sigma_of(s_) / sigma_of(t)), out_d=-F(expm1(t - s_)), out_noise=s_noise * F(su))
        sd2, su2 = ancestral_split(sigma_of(t), sigma_of(t_next), eta)
        t_next_ = t_of(like(sd2, s[i]))
        w = -F(expm1(t - t_next_))
        kb = run.row(sigma_of(s_mid), out_x=F(sigma_of(t_next_) / sigma_of(t)), out_d=w * fac,
                     out_h=(w * (1 - fac),), out_noise=s_noise * F(su2))
        plan.append((None, ka, kb, ((i, r, "mid"), (i, r, "end")), True))
    run.plan()
    return _loop(run, x, plan)


def _flow_dpmpp_sde_step(run: Run, i: int, eta: float, s_noise: float, r: float) -> Tuple:
    """One dpmpp_sde step on a flow run, in half-log-SNR ``lambda`` with ``alpha = sigma exp(lambda)``."""
    s = run.sigmas
    fac = 1 / (2 * r)
    lam_s, lam_t = _lambda_of(run, s[i]), _lambda_of(run, s[i + 1])
    lam_mid = lam_s + r * (lam_t - lam_s)
    s_mid = _sigma_of_lambda(run, lam_mid)
    a_s, a_mid, a_t = s[i] * exp(lam_s), s_mid * exp(lam_mid), s[i + 1] * exp(lam_t)
    sd, su = ancestral_split(exp(-lam_s), exp(-lam_mid), eta)
    h_ = -log(sd) - lam_s
    ka = run.row(s[i], out_x=F(a_mid / a_s * exp(-h_)), out_d=-F(a_mid * expm1(-h_)), out_noise=F(a_mid * su) * s_noise)
    sd2, su2 = ancestral_split(exp(-lam_s), exp(-lam_t), eta)
    h2 = -log(sd2) - lam_s
    w = -F(a_t * expm1(-h2))
    kb = run.row(s_mid, out_x=F(a_t / a_s * exp(-h2)), out_d=w * fac, out_h=(w * (1 - fac),),
                 out_noise=F(a_t * su2) * s_noise)
    return (None, ka, kb, ((i, r, "mid"), (i, r, "end")), True)


def sample_dpmpp_2m(run: Run, x: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order in log-sigma (Lu et al. 2022, Algorithm 2)."""
    s = run.sigmas
    plan = []
    for i in range(run.n):
        t, t_next = t_of(s[i]), t_of(s[i + 1])
        h = t_next - t
        ratio, a = F(sigma_of(t_next) / sigma_of(t)), -F(expm1(-h))
        if i == 0 or F(s[i + 1]) == 0:
            plan.append((run.row(s[i], out_x=ratio, out_d=a), 0, None))
        else:
            rr = (t - t_of(s[i - 1])) / h
            b = F(1 / (2 * rr))
            plan.append((run.row(s[i], out_x=ratio, out_d=a * F(1 + 1 / (2 * rr)), out_h=(-a * b,)), 1, None))
    run.plan()
    return _multistep_loop(run, x, plan, keep=1)


def sample_dpmpp_2m_sde(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint", flow: bool = False,
                        flow_first_sigma: float = 1.0 - 1e-4) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_2m_sde).

    ``flow=True``: ComfyUI's branch for rectified-flow models (CONST model_sampling): the same step in the
    half-log-SNR ``-logit sigma`` with the signal scale ``alpha = 1 - sigma``, a first sigma >= 1 moved to
    ``flow_first_sigma``. A flow run (:attr:`~fastdiff.sampler_run.Run.flow_sigmas`, the ComfyUI face on a CONST
    model, which moves the first sigma itself) takes the same form in the loop below.
    """
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    if flow:
        return _dpmpp_2m_sde_half_log_snr(run, x, eta, s_noise, solver_type, flow_first_sigma)
    s = run.sigmas
    plan = []
    h_last = None
    for i in range(run.n):
        if F(s[i + 1]) == 0:
            plan.append((run.row(s[i], out_x=0.0, out_d=1.0), 0, None))
            continue
        t, t_s = _lambda_of(run, s[i]), _lambda_of(run, s[i + 1])
        h = t_s - t
        eta_h = eta * h
        alpha_t = F(s[i + 1] * exp(t_s)) if run.flow_sigmas else 1.0
        a = alpha_t * F(-expm1(-h - eta_h))
        coefs = dict(out_x=F(s[i + 1] / s[i] * exp(-eta_h)), out_d=a)
        if i > 0:  # the previous x0 estimate exists from the second step on
            rinv = F(1 / (h_last / h))
            if solver_type == "heun":
                b = alpha_t * F(-expm1(-h - eta_h) / (-h - eta_h) + 1) * rinv
            else:
                b = 0.5 * a * rinv
            coefs.update(out_d=a + b, out_h=(-b,))
        if eta:
            coefs["out_noise"] = F(s[i + 1] * sqrt(-expm1(-2 * eta_h))) * s_noise
        plan.append((run.row(s[i], **coefs), 1 if i > 0 else 0, i if eta else None))
        h_last = h
    run.plan()
    return _multistep_loop(run, x, plan, keep=1)


def sample_dpmpp_3m_sde(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_3m_sde).

    On a flow run the steps are in ``lambda = log((1 - s) / s)`` and the x0 weights carry ``alpha = 1 - s'``
    (ComfyUI's half-log-SNR form for CONST models).
    """
    s = run.sigmas
    plan = []
    h = h_1 = h_2 = None
    for i in range(run.n):
        if F(s[i + 1]) == 0:
            plan.append((run.row(s[i], out_x=0.0, out_d=1.0), 0, None))
        else:
            t, t_s = _lambda_of(run, s[i]), _lambda_of(run, s[i + 1])
            h = t_s - t
            h_eta = h * (eta + 1)
            w = [F(-expm1(-h_eta)), 0.0, 0.0]  # weights of (D, D_1, D_2)
            phi_2 = expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = F(h_1 / h), F(h_2 / h)
                p2, p3 = F(phi_2), F(phi_2 / h_eta - 0.5)
                d1_0 = [1 / r0, -1 / r0, 0.0]
                d1_1 = [0.0, 1 / r1, -1 / r1]
                for j in range(3):
                    d1 = d1_0[j] + (d1_0[j] - d1_1[j]) * r0 / (r0 + r1)
                    d2 = (d1_0[j] - d1_1[j]) / (r0 + r1)
                    w[j] += p2 * d1 - p3 * d2
                used = 2
            elif h_1 is not None:
                rr, p2 = F(h_1 / h), F(phi_2)
                w[0] += p2 / rr
                w[1] -= p2 / rr
                used = 1
            else:
                used = 0
            if run.flow_sigmas:  # x' = (s'/s) e^{-eta h} x + alpha' (...)
                alpha_t = F(s[i + 1] * exp(t_s))
                w = [alpha_t * v for v in w]
                out_x = F(s[i + 1] / s[i] * exp(-h * eta))
            else:
                out_x = F(exp(-h_eta))
            coefs = dict(out_x=out_x, out_d=w[0], out_h=tuple(w[1:1 + used]))
            if eta:
                coefs["out_noise"] = F(s[i + 1] * sqrt(-expm1(-2 * h * eta))) * s_noise
            plan.append((run.row(s[i], **coefs), used, i if eta else None))
        h_1, h_2 = h, h_1
    run.plan()
    return _multistep_loop(run, x, plan, keep=2)


def _unipc_update(lam: Sequence[float], k: int, p: int, variant: str):
    """UniPC step k -> k+1 of order p; vectors over (m_k, m_{k-1}, m_{k-2}, m_{k-3}).

    Returns (B_h, predictor weights incl. the first-order part, predictor D1 part, corrector D1 part,
    corrector weight of the new model output).
    """
    h = lam[k + 1] - lam[k]
    rks = [(lam[k - j] - lam[k]) / h for j in range(1, p)] + [1.0]
    b_h, rhos_p, rhos_c = unipc_rhos(-h, rks, p, variant)
    base = np.zeros(4)
    base[0] = -math.expm1(-h)
    pred, corr = np.zeros(4), np.zeros(4)
    for j, rk in enumerate(rks[:-1]):  # D1_j = (m_{k-j-1} - m_k) / r_j
        d1 = np.zeros(4)
        d1[j + 1], d1[0] = 1.0 / rk, -1.0 / rk
        pred += rhos_p[j] * d1
        corr += rhos_c[j] * d1
    return b_h, base - b_h * pred, pred, corr, rhos_c[-1]


def sample_unipc(run: Run, x: torch.Tensor, *, order: int = 2, variant: str = "bh2") -> torch.Tensor:
    """UniPC multistep predictor-corrector, data prediction (Zhao et al. 2023, UniPC; B(h) variants bh1/bh2).

    The corrector UniC of step k reuses the model output at the predicted point; in VE
    variables it differs from the predictor only by multiples of model outputs, so
    corrector and next predictor fold into one fused pass over (x_pred, D_k, D_{k-1}, ...).
    The final step is first order (``lower_order_final``).
    """
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    s = [F(v) for v in run.sigmas]
    n = run.n
    lam = [-math.log(v) if v > 0 else math.inf for v in s]
    orders = [min(order, n - k, k + 1) for k in range(n)]
    plan = []
    for k in range(n):
        if s[k + 1] == 0:
            plan.append((run.row(s[k], out_x=0.0, out_d=1.0), 0, None))
            continue
        # basis (x_k^p, m_k, m_{k-1}, m_{k-2}, m_{k-3}); start from the predicted x_k^p
        xc = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
        if k > 0:
            # UniC: x_k^c = x_k^p + B_h sum_j (rhos_p - rhos_c)_j D1_j - B_h rho_c_last (m_k - m_{k-1}),
            # the D1_j of step k-1 being over (m_{k-1}, m_{k-2}, ...): shift by one slot.
            b_h, _, pred, corr, rho_last = _unipc_update(lam, k - 1, orders[k - 1], variant)
            xc[2:] += (b_h * (pred - corr))[:3]
            xc[1] -= b_h * rho_last
            xc[2] += b_h * rho_last
        _, pred_w, _, _, _ = _unipc_update(lam, k, orders[k], variant)
        out = (s[k + 1] / s[k]) * xc
        out[1:] += pred_w
        used = [j for j in range(1, 4) if out[1 + j] != 0.0]
        count = max(used) if used else 0
        plan.append((run.row(s[k], out_x=out[0], out_d=out[1], out_h=tuple(out[2:2 + count])), count, None))
    run.plan()
    return _multistep_loop(run, x, plan, keep=3)


def sample_flow_euler(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Euler on the rectified-flow ODE dx/ds = v in flow time s (Lipman et al. 2023; Liu et al. 2023)."""
    s = run.sigmas
    # x + (s1 - s) v with v = (x - x0)/s  ==  (1 + dt/s) x - (dt/s) x0
    plan = [(None, run.row(s[i], **euler_coefs(s[i], s[i + 1])), None, (None, None), False) for i in range(run.n)]
    run.plan()
    return _loop(run, x, plan)


# ----------------------------------------------------------------------------------------------
# CFG++, RES multistep and gradient estimation (ComfyUI's set)
# ----------------------------------------------------------------------------------------------
def _entry_loop(run: Run, x: torch.Tensor, plan: Sequence[Tuple[int, int, Any]], entry: str) -> torch.Tensor:
    """Loop of the one-evaluation samplers that keep one history entry: ``plan[i] = (k, n_hist, draw)``; the
    entry is the pass's x0 estimate (``entry="x0"``) or its auxiliary output (``"aux"``: e.g. the unconditional
    x0 estimate of a CFG++ row, or a derivative)."""
    hist: List[torch.Tensor] = []
    for i in run.steps():
        k, used, draw = plan[i]
        raw = run.eval(x, k)
        run.report(i, x, raw, k)
        if entry == "x0":
            x, new = run.step(x, raw, k, history=hist[:used], x0=True, draw=draw)
        else:
            x, new = run.step(x, raw, k, history=hist[:used], aux=True, draw=draw)
        hist = [new]
    return x


def _check_eta_noise(eta: Any, s_noise: Any) -> None:
    for name, v in (("eta", eta), ("s_noise", s_noise)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def sample_euler_ancestral_cfg_pp(run: Run, x: torch.Tensor, *, eta: float = 1.0,
                                  s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral Euler with CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for
    Diffusion Models", Algorithm 1 with eta-DDIM's ancestral split; ComfyUI's sample_euler_ancestral_cfg_pp).

    The step renoises the guided x0 estimate ``D`` along the *unconditional* noise estimate:
    ``x' = D + sigma_down (x - U) / sigma + s_noise sigma_up z``; on a flow run (:attr:`Run.flow_sigmas`) the
    same step in flow variables (ComfyUI's CONST branch). Needs classifier-free guidance.
    """
    _check_eta_noise(eta, s_noise)
    s = run.sigmas
    plan = []
    for i in range(run.n):
        c = euler_ancestral_cfgpp_coefs(s[i], s[i + 1], eta, s_noise, flow=run.flow_sigmas)
        draw = i if eta > 0 and s_noise > 0 and F(s[i + 1]) > 0 else None
        plan.append((None, run.row(s[i], **c), None, (draw, None), False))
    run.plan()
    return _loop(run, x, plan)


def sample_euler_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Euler with CFG++ (Chung et al. 2024, "CFG++", Algorithm 1: DDIM with the unconditional noise estimate):
    ``x' = D + sigma' (x - U) / sigma``; :func:`sample_euler_ancestral_cfg_pp` with ``eta = 0``."""
    return sample_euler_ancestral_cfg_pp(run, x, eta=0.0, s_noise=0.0)


def sample_dpmpp_2s_ancestral_cfg_pp(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                                     corrector_uncond: str = "predictor") -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) with CFG++ (Lu et al. 2022, DPM-Solver++; Chung et al. 2024, "CFG++";
    ComfyUI's sample_dpmpp_2s_ancestral_cfg_pp).

    Both stages move ``x + (D - U)`` (the sample re-based on the unconditional estimate) instead of ``x``,
    with the predictor's ``D``. ``corrector_uncond`` picks the ``U`` of the corrector's re-basing:
    ``"predictor"`` (default) the predictor's, so that at guidance 0 the sampler is DPM-Solver++(2S) (second
    order); ``"corrector"`` the corrector's own evaluation's, which is ComfyUI's arithmetic (its post-CFG hook
    overwrites the stored ``U`` before the corrector reads it). The latter is not a consistent discretisation:
    at guidance 0 its error *grows* as the steps are refined (tests/samplers/test_sampler_accuracy_cfgpp.py).
    """
    _check_eta_noise(eta, s_noise)
    if corrector_uncond not in ("predictor", "corrector"):
        raise ValueError(f"corrector_uncond must be 'predictor' or 'corrector', got {corrector_uncond!r}")
    second = corrector_uncond == "corrector"
    s = run.sigmas
    plan = []
    for i in range(run.n):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        draw = i if F(s[i + 1]) > 0 else None
        noise = s_noise * F(su) if draw is not None else 0.0
        if F(sd) == 0:  # x = D + (x - U) / sigma * 0
            plan.append((None, run.row(s[i], out_x=0.0, out_d=1.0, out_noise=noise), None, (draw, None), False))
            continue
        t, t_next = t_of(s[i]), t_of(like(sd, s[i]))
        h = t_next - t
        s_mid = t + 0.5 * h
        ra, rb = F(sigma_of(s_mid) / sigma_of(t)), F(sigma_of(t_next) / sigma_of(t))
        a = dict(out_x=ra, out_d=ra - F(expm1(-h * 0.5)), out_u=-ra)
        b = dict(out_x=rb, out_h=(rb,), out_d=-F(expm1(-h)), out_noise=noise)
        if second:  # history entry D (the predictor's x0 estimate), the corrector's own U
            ka, kb, hist = run.row(s[i], **a), run.row(sigma_of(s_mid), **b, out_u=-rb), True
        else:  # history entry D - U, written by the predictor's pass
            ka, kb, hist = run.row(s[i], **a, aux_d=1.0, aux_u=-1.0), run.row(sigma_of(s_mid), **b), "aux"
        plan.append((None, ka, kb, (None, draw), hist))
    run.plan()
    return _loop(run, x, plan)


def sample_dpmpp_2m_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) with CFG++ (Lu et al. 2022, Algorithm 2; Chung et al. 2024, "CFG++"; ComfyUI's
    sample_dpmpp_2m_cfg_pp): ``x' = e^{-h} (x - U) + D + (-expm1(-h)) (D - U_prev) / (2 r)``, first order on
    the first and the last step; the history entry is the unconditional estimate ``U``."""
    s = run.sigmas
    plan = []
    for i in range(run.n):
        t, t_next = t_of(s[i]), t_of(s[i + 1])
        h = t_next - t
        e = F(exp(-h))
        if i == 0 or F(s[i + 1]) == 0:
            plan.append((run.row(s[i], out_x=e, out_d=1.0, out_u=-e, aux_d=0.0, aux_u=1.0), 0, None))
        else:
            r = (t - t_of(s[i - 1])) / h
            w = F(-expm1(-h) * (1 / (2 * r)))
            plan.append((run.row(s[i], out_x=e, out_d=1.0 + w, out_u=-e, out_h=(-w,), aux_d=0.0, aux_u=1.0), 1,
                         None))
    run.plan()
    return _entry_loop(run, x, plan, "aux")


def _res_multistep(run: Run, x: torch.Tensor, eta: float, s_noise: float, cfg_pp: bool) -> torch.Tensor:
    """ComfyUI's res_multistep family: the 2-step RES exponential multistep to sigma_down (first order on the
    first step and where sigma_down = 0), ancestral noise sigma_up; with ``cfg_pp`` the CFG++ form."""
    _check_eta_noise(eta, s_noise)
    s = run.sigmas
    plan = []
    old_sd = None
    keep = dict(aux_d=0.0, aux_u=1.0) if cfg_pp else {}
    for i in range(run.n):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        sd = like(sd, s[i])
        draw = i if F(s[i + 1]) > 0 else None  # drawn even when sigma_up = 0 (the noise sampler advances)
        noise = s_noise * F(su) if draw is not None else 0.0
        if F(sd) == 0 or old_sd is None:
            if cfg_pp:  # x = D + (x - U) / sigma * sigma_down
                r = F(sd) / F(s[i])
                c = dict(out_x=r, out_d=1.0, out_u=-r)
            else:
                c = euler_coefs(s[i], sd)
            plan.append((run.row(s[i], **c, out_noise=noise, **keep), 0, draw))
        else:
            t, t_old, t_next, t_prev = t_of(s[i]), t_of(old_sd), t_of(sd), t_of(s[i - 1])
            h = t_next - t
            b1, b2 = res_multistep_weights(h, (t_prev - t_old) / h)
            e, hb1, hb2 = F(sigma_of(h)), F(h * b1), F(h * b2)
            if cfg_pp:  # x = e^{-h} (x + D - U) + h (b1 U + b2 U_prev)
                c = dict(out_x=e, out_d=e, out_u=hb1 - e)
            else:
                c = dict(out_x=e, out_d=hb1)
            plan.append((run.row(s[i], **c, out_h=(hb2,), out_noise=noise, **keep), 1, draw))
        old_sd = sd
    run.plan()
    return _entry_loop(run, x, plan, "aux" if cfg_pp else "x0")


def sample_res_multistep(run: Run, x: torch.Tensor, *, s_noise: float = 1.0) -> torch.Tensor:
    """RES second-order exponential multistep in log-sigma (Zhang et al. 2023, "Improved order analysis and design
    of exponential integrator for diffusion models"; ComfyUI's sample_res_multistep), deterministic."""
    return _res_multistep(run, x, 0.0, s_noise, False)


def sample_res_multistep_cfg_pp(run: Run, x: torch.Tensor, *, s_noise: float = 1.0) -> torch.Tensor:
    """RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024, "CFG++"; ComfyUI's
    sample_res_multistep_cfg_pp): the multistep runs on the unconditional estimates, re-based by ``D - U``."""
    return _res_multistep(run, x, 0.0, s_noise, True)


def sample_res_multistep_ancestral(run: Run, x: torch.Tensor, *, eta: float = 1.0,
                                   s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral RES multistep (Zhang et al. 2023, RES; ancestral split of Ho et al. 2020; ComfyUI's
    sample_res_multistep_ancestral): the multistep to sigma_down, then fresh noise sigma_up."""
    return _res_multistep(run, x, eta, s_noise, False)


def sample_res_multistep_ancestral_cfg_pp(run: Run, x: torch.Tensor, *, eta: float = 1.0,
                                          s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024, "CFG++"; ComfyUI's
    sample_res_multistep_ancestral_cfg_pp)."""
    return _res_multistep(run, x, eta, s_noise, True)


def _gradient_estimation(run: Run, x: torch.Tensor, ge_gamma: float, cfg_pp: bool) -> torch.Tensor:
    if isinstance(ge_gamma, bool) or not isinstance(ge_gamma, (int, float)) or not math.isfinite(ge_gamma):
        raise ValueError(f"ge_gamma must be a finite number, got {ge_gamma!r}")
    s = run.sigmas
    plan = []
    for i in range(run.n):
        sf, dt = F(s[i]), F(s[i + 1] - s[i])
        # this step's derivative d = (x - X) / sigma (X = U with CFG++, else D) is the next step's history entry
        aux = dict(aux_x=1.0 / sf, aux_d=0.0, aux_u=-1.0 / sf) if cfg_pp else dict(aux_x=1.0 / sf, aux_d=-1.0 / sf)
        if F(s[i + 1]) == 0:
            plan.append((run.row(s[i], out_x=0.0, out_d=1.0, **aux), 0, None))
            continue
        extra = (ge_gamma - 1) * dt if i >= 1 else 0.0  # x += (gamma - 1) (d - d_prev) dt
        hist = (-extra,) if i >= 1 else ()
        if cfg_pp:  # x = D + d sigma' + ...
            k = F(s[i + 1]) + extra
            c = dict(out_x=k / sf, out_d=1.0, out_u=-k / sf)
        else:  # x = x + d dt + ...
            k = dt + extra
            c = dict(out_x=1.0 + k / sf, out_d=-k / sf)
        plan.append((run.row(s[i], **c, out_h=hist, **aux), len(hist), None))
    run.plan()
    return _entry_loop(run, x, plan, "aux")


def sample_gradient_estimation(run: Run, x: torch.Tensor, *, ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient-estimation sampler (Permenter & Yuan 2024, "Interpreting and Improving Diffusion Models from an
    Optimization Perspective", Algorithm 2; ComfyUI's sample_gradient_estimation): Euler on the derivative
    extrapolated as ``d + (ge_gamma - 1) (d - d_prev)``; the last step is ``x = D``."""
    return _gradient_estimation(run, x, ge_gamma, False)


def sample_gradient_estimation_cfg_pp(run: Run, x: torch.Tensor, *, ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient estimation with CFG++ (Permenter & Yuan 2024; Chung et al. 2024, "CFG++"; ComfyUI's
    sample_gradient_estimation_cfg_pp): the derivative is the unconditional ``(x - U) / sigma`` and the Euler
    part starts from ``D``."""
    return _gradient_estimation(run, x, ge_gamma, True)


# ----------------------------------------------------------------------------------------------
# ComfyUI's solver set: iPNDM, DEIS, Heun++, LCM, ER-SDE, SEEDS, SA-Solver
# ----------------------------------------------------------------------------------------------
def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return value


def _check_nonneg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _derivative_multistep(run: Run, x: torch.Tensor, weights: Sequence[Optional[Sequence[float]]]) -> torch.Tensor:
    """Loop of the samplers that step with old derivatives: ``weights[i] = [c_0, c_1, ...]`` gives
    ``x_{i+1} = x_i + sum_j c_j d_{i-j}`` with ``d = (x - D) / sigma`` (each pass writes its own ``d`` as the aux
    output, the history entry of the next steps); ``None``: ``x_{i+1} = D`` (the step into sigma = 0)."""
    s = run.sigmas
    plan = []
    for i, c in enumerate(weights):
        sf = F(s[i])
        if c is None:
            plan.append((run.row(s[i], out_x=0.0, out_d=1.0), 0))
            continue
        plan.append((run.row(s[i], out_x=1.0 + c[0] / sf, out_d=-c[0] / sf, out_h=tuple(c[1:]), aux_x=1.0 / sf,
                             aux_d=-1.0 / sf), len(c) - 1))
    run.plan()
    ds: List[torch.Tensor] = []  # previous derivatives, newest first
    for i in run.steps():
        k, used = plan[i]
        raw = run.eval(x, k)
        run.report(i, x, raw, k)
        x, d = run.step(x, raw, k, history=ds[:used], aux=True)
        ds = [d] + ds[: MAX_HISTORY - 1]
    return x


def sample_ipndm(run: Run, x: torch.Tensor, *, max_order: int = 4) -> torch.Tensor:
    """Improved PNDM: Adams-Bashforth on the PF ODE in sigma with the fixed equal-step weights, order rising to
    ``max_order`` over the first steps (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
    Integrator", iPNDM; ComfyUI's ``ipndm``). The step into sigma = 0 returns the x0 estimate."""
    _check_int("max_order", max_order, 1, 4)
    s = [F(v) for v in run.sigmas]
    weights = [None if s[i + 1] == 0 else [(s[i + 1] - s[i]) * w for w in IPNDM_WEIGHTS[min(max_order, i + 1) - 1]]
               for i in range(run.n)]
    return _derivative_multistep(run, x, weights)


def sample_ipndm_v(run: Run, x: torch.Tensor, *, max_order: int = 4) -> torch.Tensor:
    """iPNDM with variable-step Adams-Bashforth weights (Zhang & Chen 2023, DEIS paper; ComfyUI's ``ipndm_v``)."""
    _check_int("max_order", max_order, 1, 4)
    s = [F(v) for v in run.sigmas]
    weights = [None if s[i + 1] == 0 else [(s[i + 1] - s[i]) * w for w in ipndm_v_weights(s, i, min(max_order, i + 1))]
               for i in range(run.n)]
    return _derivative_multistep(run, x, weights)


def sample_deis(run: Run, x: torch.Tensor, *, max_order: int = 3, deis_mode: str = "tab") -> torch.Tensor:
    """DEIS, the exponential-integrator multistep solver (Zhang & Chen 2023, "Fast Sampling of Diffusion Models
    with Exponential Integrator"; ComfyUI's ``deis``): weights from :func:`~fastdiff.solvers.deis_weights`, computed
    on the host once per run. The first step and the step into sigma = 0 are Euler steps.

    ``deis_mode="rhoab"`` integrates the basis in sigma through ``min(i + 1, max_order)`` points (ComfyUI's own
    rhoab table has one point more than its loop unpacks from the fourth step on).
    """
    _check_int("max_order", max_order, 1, 4)
    if deis_mode not in ("tab", "rhoab"):
        raise ValueError(f"deis_mode must be 'tab' or 'rhoab', got {deis_mode!r}")
    s = [F(v) for v in run.sigmas]
    table = deis_weights(s, max_order, deis_mode)
    weights = [list(table[i]) if table[i] and s[i + 1] > 0 else [s[i + 1] - s[i]] for i in range(run.n)]
    return _derivative_multistep(run, x, weights)


def _stages_loop(run: Run, x: torch.Tensor, plan: Sequence[Tuple], hats: Optional[Sequence[Any]] = None
                 ) -> torch.Tensor:
    """Loop of the samplers with up to three evaluations a step: ``plan[i] = (pre, rows, draws)``.

    Stage 0's pass advances x to the next evaluation point (or, alone, to the step's end); stage j > 0 is evaluated
    at the point the previous pass wrote, and its pass reads x, that point (``x_eval``) and the x0 estimates of the
    earlier stages (history, oldest first), so each stage's row may weigh all of them.
    """
    x = run.start(x)
    for i in run.steps():
        pre, rows, draws = plan[i]
        x = run.churn(x, i, pre)
        raw = run.eval(x, rows[0])
        run.report(i, x, raw, rows[0], None if hats is None else hats[i])
        if len(rows) == 1:
            x = run.step(x, raw, rows[0], draw=draws[0])
            continue
        point, d0 = run.step(x, raw, rows[0], x0=True, draw=draws[0])
        estimates = [d0]
        for j in range(1, len(rows)):
            k, last = rows[j], j == len(rows) - 1
            c = run.coefs[k]
            x_eval = point if c["out_e"] != 0.0 or c["in_x"] != 0.0 else None
            raw = run.eval(point, k)
            hist = tuple(estimates[:j]) if any(c[f"out_h{m}"] != 0.0 for m in range(j)) else ()
            if last:
                x = run.step(x, raw, k, x_eval=x_eval, history=hist, draw=draws[j])
            else:
                point, dj = run.step(x, raw, k, x_eval=x_eval, history=hist, x0=True, draw=draws[j])
                estimates.append(dj)
    return x


def sample_heunpp2(run: Run, x: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0,
                   s_tmax: float = math.inf, s_noise: float = 1.0) -> torch.Tensor:
    """Heun++ (ComfyUI's ``heunpp2``, after Carzit's sd-webui-samplers-scheduler; cf. Karras et al. 2022, Alg. 2):
    the derivative at the step's start, at the next sigma and at the one after, mixed with the weights
    ``w_j = sigma_j / (3 sigma_0)`` (two points, ``/ (2 sigma_0)``, before the last step; Euler on the last);
    EDM churn as in heun. Three evaluations a step, each followed by one fused pass."""
    s = run.sigmas
    s_end = F(s[-1])
    hats, churn_noise = churn_schedule(s, s_churn, s_tmin, s_tmax, s_noise)
    pre = run.churn_plan(churn_noise)
    s0 = F(s[0])
    plan = []
    for i in range(run.n):
        sh, s1, nxt = hats[i], s[i + 1], run.next_churn(i)
        shf, s1f = F(sh), F(s1)
        dt = F(s1 - sh)
        if s1f == s_end:
            plan.append((pre[i], [run.row(sh, **euler_coefs(sh, s1), out_noise=nxt)], (None,)))
            continue
        first = run.row(sh, **euler_coefs(sh, s1))  # x_2 = x + dt d
        if F(s[i + 2]) == s_end:
            w2 = s1f / (2 * s0)
            w1 = 1 - w2
            second = run.row(s1, out_x=1.0 + dt * w1 / shf, out_h=(-dt * w1 / shf,), out_e=dt * w2 / s1f,
                             out_d=-dt * w2 / s1f, out_noise=nxt)
            plan.append((pre[i], [first, second], (None, None)))
            continue
        s2f = F(s[i + 2])
        dt2 = s2f - s1f
        second = run.row(s1, out_x=0.0, out_e=1.0 + dt2 / s1f, out_d=-dt2 / s1f)  # x_3 = x_2 + dt_2 d_2
        w2, w3 = s1f / (3 * s0), s2f / (3 * s0)
        w1 = 1 - w2 - w3
        # x + dt (w1 d + w2 d_2 + w3 d_3), d_2 = (x_2 - D_2)/s1 with x_2 = (1 + dt/sh) x - dt/sh D_1
        third = run.row(s[i + 2], out_x=1.0 + dt * w1 / shf + dt * w2 * (1.0 + dt / shf) / s1f,
                        out_h=(-dt * w1 / shf - dt * w2 * dt / (shf * s1f), -dt * w2 / s1f),
                        out_e=dt * w3 / s2f, out_d=-dt * w3 / s2f, out_noise=nxt)
        plan.append((pre[i], [first, second, third], (None, None, None)))
    run.plan()
    return _stages_loop(run, x, plan, hats)


def sample_lcm(run: Run, x: torch.Tensor, *, noise_scaling: str = "ve") -> torch.Tensor:
    """Latent Consistency Model sampling (Luo et al. 2023, "Latent Consistency Models"): jump to the x0 estimate,
    then renoise it to the next sigma with fresh noise. ``noise_scaling`` is the model's ``noise_scaling``
    (ComfyUI's model_sampling): ``"ve"`` (``x0 + sigma z``, EPS / V / EDM models) or ``"flow"``
    (``(1 - sigma) x0 + sigma z``, CONST)."""
    if noise_scaling not in ("ve", "flow"):
        raise ValueError(f"noise_scaling must be 've' or 'flow', got {noise_scaling!r}")
    s = run.sigmas
    plan = []
    for i in range(run.n):
        s1 = F(s[i + 1])
        if s1 > 0:
            k = run.row(s[i], out_x=0.0, out_d=1.0 - s1 if noise_scaling == "flow" else 1.0, out_noise=s1)
            plan.append((None, k, None, (i, None), False))
        else:
            plan.append((None, run.row(s[i], out_x=0.0, out_d=1.0), None, (None, None), False))
    run.plan()
    return _loop(run, x, plan)


def _half_log_snr(run: Run, flow: Optional[bool], flow_first_sigma: float) -> Tuple[List[float], List[float], bool]:
    """Host sigmas (a flow schedule's first sigma >= 1 moved to ``flow_first_sigma``, as ComfyUI's
    offset_first_sigma_for_snr does) and their half-log-SNR ``lambda = log(alpha / sigma)``:
    ``-log sigma`` (VE, alpha = 1) or ``-logit sigma`` (flow, alpha = 1 - sigma)."""
    flow = getattr(run, "space", "ve") == "flow" if flow is None else bool(flow)
    sig = [F(v) for v in run.sigmas]
    if flow and len(sig) > 1 and sig[0] >= 1:
        sig[0] = float(flow_first_sigma)
    lam = []
    for v in sig:
        if v <= 0:
            lam.append(math.inf)
        elif flow:
            lam.append(math.log((1.0 - v) / v) if v < 1 else -math.inf)
        else:
            lam.append(-math.log(v))
    return sig, lam, flow


def _sigma_at(lam: float, flow: bool) -> float:
    return 1.0 / (1.0 + math.exp(lam)) if flow else math.exp(-lam)


def _lerp(a: float, b: float, w: float) -> float:
    return a + w * (b - a) if w < 0.5 else b - (b - a) * (1 - w)  # torch.lerp's two branches


def sample_er_sde(run: Run, x: torch.Tensor, *, s_noise: float = 1.0,
                  noise_scaler: Optional[Callable[[Any], Any]] = None, max_stage: int = 3,
                  flow: Optional[bool] = None, flow_first_sigma: float = 1.0 - 1e-4) -> torch.Tensor:
    """ER-SDE-Solver-3, the extended reverse-time SDE solver in VP data prediction (Cui et al. 2025, "Elucidating
    the solution space of extended reverse-time SDE for diffusion models"; ComfyUI's ``er_sde``).

    One evaluation a step; stages 2 and 3 use the last two x0 estimates (history) with the stage integrals of
    :func:`~fastdiff.solvers.er_sde_stage_integrals`. ``noise_scaler`` (a function of host floats / numpy arrays,
    default the paper's ``v (exp(v^0.3) + 10)``); ``flow``: the schedule is a rectified-flow one (ComfyUI's CONST
    model_sampling; default: the run's space), whose first sigma >= 1 becomes ``flow_first_sigma``.
    """
    _check_int("max_stage", max_stage, 1, 3)
    s_noise = _check_nonneg("s_noise", s_noise)
    f = er_sde_default_noise_scaler if noise_scaler is None else noise_scaler
    if not callable(f):
        raise TypeError(f"noise_scaler must be callable or None, got {type(f).__name__}")
    sig, lam, _ = _half_log_snr(run, flow, flow_first_sigma)
    er = [math.exp(-v) for v in lam]  # sigma / alpha
    plan = []
    for i in range(run.n):
        if sig[i + 1] == 0:
            plan.append((run.row(sig[i], out_x=0.0, out_d=1.0), 0, None))
            continue
        stage = min(max_stage, i + 1)
        ls, lt = er[i], er[i + 1]
        alpha_t = sig[i + 1] / lt
        r_alpha = alpha_t / (sig[i] / ls)
        fs, ft = float(f(ls)), float(f(lt))
        r = ft / fs
        w = [alpha_t * (1 - r), 0.0, 0.0]  # weights of (D_i, D_{i-1}, D_{i-2})
        if stage >= 2:
            dt = lt - ls
            integral, integral_u = er_sde_stage_integrals(ls, lt, f)
            c2 = alpha_t * (dt + integral * ft)
            dd = [1 / (ls - er[i - 1]), -1 / (ls - er[i - 1]), 0.0]  # (D_i - D_{i-1}) / (l_s - l_{i-1})
            w = [a + c2 * b for a, b in zip(w, dd)]
            if stage >= 3:
                c3 = alpha_t * (dt ** 2 / 2 + integral_u * ft)
                dd_old = [0.0, 1 / (er[i - 1] - er[i - 2]), -1 / (er[i - 1] - er[i - 2])]
                scale = 2 / (ls - er[i - 2])
                w = [a + c3 * scale * (b - c) for a, b, c in zip(w, dd, dd_old)]
        used = stage - 1
        coefs = dict(out_x=r_alpha * r, out_d=w[0], out_h=tuple(w[1:1 + used]))
        noise = 0.0
        if s_noise > 0:
            var = lt ** 2 - ls ** 2 * r ** 2
            noise = alpha_t * s_noise * math.sqrt(var) if var >= 0 else 0.0  # ComfyUI: nan_to_num(nan=0)
            coefs["out_noise"] = noise
        plan.append((run.row(sig[i], **coefs), used, i if noise else None))
    run.plan()
    return _multistep_loop(run, x, plan, keep=2)


def _seeds_plan(run: Run, eta: float, s_noise: float, rs: Sequence[float], flow: Optional[bool],
                flow_first_sigma: float) -> List[Tuple]:
    """Rows of SEEDS-2 (``rs = (r,)``) and SEEDS-3 (``rs = (r_1, r_2)``) for :func:`_stages_loop`.

    The SDE noise of a step is one Brownian path: the noise a stage adds is the previous stage's, decayed, plus a
    fresh draw. The previous stage's noise is ``point - (its deterministic part)``, so each pass reads it back
    from the point it evaluated at (``x_eval``) and the history instead of storing it.
    """
    eta = _check_nonneg("eta", eta)
    s_noise = _check_nonneg("s_noise", s_noise)
    inject = eta > 0 and s_noise > 0
    sig, lam, is_flow = _half_log_snr(run, flow, flow_first_sigma)
    plan = []
    for i in range(run.n):
        if sig[i + 1] == 0:
            plan.append((None, [run.row(sig[i], out_x=0.0, out_d=1.0)], (None,)))
            continue
        ls, lt = lam[i], lam[i + 1]
        h = lt - ls
        h_eta = h * (eta + 1)
        nodes = [_lerp(ls, lt, r) for r in rs]
        node_sig = [_sigma_at(v, is_flow) for v in nodes]
        node_alpha = [sv * math.exp(v) for sv, v in zip(node_sig, nodes)]
        alpha_t = sig[i + 1] * math.exp(lt)
        rows, draws = [], []
        prev = None  # (sigma, r, x coefficient, weights over the earlier estimates) of the previous stage
        ends = list(zip(rs, node_sig, node_alpha)) + [(1.0, sig[i + 1], alpha_t)]
        for j, (r, s_to, alpha_to) in enumerate(ends):
            ax = s_to / sig[i] * math.exp(-r * h * eta)
            # weights of the estimates D_0 .. D_j (D_j: this stage's own evaluation)
            if j == 0:
                w = [-alpha_to * math.expm1(-r * h_eta)]
            elif len(rs) == 1:  # SEEDS-2's final stage: D_d = lerp(D_0, D_1, 1 / (2 r))
                fac = 1 / (2 * rs[0])
                c = -alpha_to * math.expm1(-h_eta)
                w = [c * (1 - fac), c * fac]
            elif j == 1:  # SEEDS-3's second stage
                phi2 = (math.expm1(-r * h_eta) + r * h_eta) / (-r * h_eta)
                a2 = r / rs[0] * phi2
                a1 = math.expm1(-r * h_eta) - a2
                w = [-alpha_to * a1, -alpha_to * a2]
            else:  # SEEDS-3's final stage
                b3 = (math.expm1(-h_eta) + h_eta) / (-h_eta) / rs[1]
                b1 = math.expm1(-h_eta) - b3
                w = [-alpha_to * b1, 0.0, -alpha_to * b3]
            coefs: Dict[str, Any] = dict(out_x=ax)
            w_det = list(w)  # the stage's deterministic part, from which the next stage reads this noise back
            noise = 0.0
            if inject:
                if prev is None:
                    noise = s_to * s_noise * math.sqrt(-math.expm1(-2 * r * h * eta))
                else:
                    seg = (prev[1] - r) * h * eta
                    noise = s_to * s_noise * math.sqrt(-math.expm1(2 * seg))
                    # + the previous stage's noise decayed: q (x_prev - ax_prev x - sum w_prev D)
                    q = s_to * math.exp(seg) / prev[0]
                    coefs["out_e"] = q
                    coefs["out_x"] = ax - q * prev[2]
                    w = [wk - q * (prev[3][k] if k < len(prev[3]) else 0.0) for k, wk in enumerate(w)]
                coefs["out_noise"] = noise
            coefs["out_d"] = w[-1]
            coefs["out_h"] = tuple(w[:-1])
            model_sigma = sig[i] if j == 0 else node_sig[j - 1]
            rows.append(run.row(model_sigma, **coefs))
            draws.append(("between", sig[i] if j == 0 else node_sig[j - 1], s_to) if noise else None)
            prev = (s_to, r, ax, w_det)
        plan.append((None, rows, tuple(draws)))
    return plan


def sample_seeds_2(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
                   flow: Optional[bool] = None, flow_first_sigma: float = 1.0 - 1e-4) -> torch.Tensor:
    """SEEDS-2, stochastic explicit exponential derivative-free solver, two stages (Gonzalez et al. 2024, "SEEDS:
    Exponential SDE Solvers for Fast High-Quality Sampling from Diffusion Models"; ComfyUI's ``seeds_2``).

    ``flow``: a rectified-flow schedule (ComfyUI's CONST model_sampling; default: the run's space). Noise draws are
    named ``("between", sigma_from, sigma_to)`` for a face that takes them from a noise sampler.
    """
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
        raise ValueError(f"r must be in (0, 1), got {r!r}")
    plan = _seeds_plan(run, eta, s_noise, (float(r),), flow, flow_first_sigma)
    run.plan()
    return _stages_loop(run, x, plan)


def sample_seeds_3(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0, r_1: float = 1.0 / 3,
                   r_2: float = 2.0 / 3, flow: Optional[bool] = None,
                   flow_first_sigma: float = 1.0 - 1e-4) -> torch.Tensor:
    """SEEDS-3, three stages (Gonzalez et al. 2024, "SEEDS: Exponential SDE Solvers for Fast High-Quality
    Sampling from Diffusion Models"; ComfyUI's ``seeds_3``); options as :func:`sample_seeds_2`."""
    for name, v in (("r_1", r_1), ("r_2", r_2)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    if not r_1 < r_2:
        raise ValueError(f"r_1 must be below r_2, got r_1={r_1!r}, r_2={r_2!r}")
    plan = _seeds_plan(run, eta, s_noise, (float(r_1), float(r_2)), flow, flow_first_sigma)
    run.plan()
    return _stages_loop(run, x, plan)


def sample_sa_solver(run: Run, x: torch.Tensor, *, tau_func: Optional[Callable[[float], float]] = None,
                     s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
                     use_pece: bool = False, simple_order_2: bool = False, start_sigma: float = math.inf,
                     end_sigma: float = 0.0, eta: float = 1.0, flow: Optional[bool] = None,
                     flow_first_sigma: float = 1.0 - 1e-4) -> torch.Tensor:
    """SA-Solver, the stochastic Adams predictor-corrector in data prediction (Xue et al. 2023, "SA-Solver:
    Stochastic Adams Solver for Fast Sampling of Diffusion Models"; ComfyUI's ``sa_solver``).

    ``tau_func(sigma) -> tau`` sets the stochasticity; by default ``eta`` inside ``start_sigma >= sigma >=
    end_sigma`` and 0 outside (ComfyUI's window is ``model_sampling.percent_to_sigma(0.2)`` to ``(0.8)``: its face
    passes those; here the default window is the whole schedule). Weights: :func:`~fastdiff.solvers.sa_solver_b_coeffs`.

    The corrector of step i and the predictor that follows are one fused pass: both advance the same state with
    the same decay, so the corrected state is the predicted one plus (corrector - previous predictor) weights on
    the x0 estimates, and the predictor's noise cancels. With ``use_pece`` the corrected state is evaluated once
    more (two evaluations, two passes a step). When the schedule does not end at 0 the result is the last
    corrected state, as in ComfyUI.
    """
    _check_int("predictor_order", predictor_order, 1, 3)
    _check_int("corrector_order", corrector_order, 0, 4)
    s_noise = _check_nonneg("s_noise", s_noise)
    eta = _check_nonneg("eta", eta)
    if tau_func is None:
        def tau_func(sigma: float) -> float:
            return eta if eta > 0 and start_sigma >= sigma >= end_sigma else 0.0
    elif not callable(tau_func):
        raise TypeError(f"tau_func must be callable or None, got {type(tau_func).__name__}")
    sig, lam, _ = _half_log_snr(run, flow, flow_first_sigma)
    n = run.n
    lower_to_end = sig[-1] == 0
    max_used = max(predictor_order, corrector_order)
    tau = 0.0
    prev_pred: Dict[int, float] = {}  # the previous predictor's weights, by estimate index
    plan = []
    for i in range(n):
        listed = min(i + 1, max_used)
        p_used = min(predictor_order, listed)
        c_used = 0 if i == 0 or (sig[i + 1] == 0 and not use_pece) else min(corrector_order, listed)
        if lower_to_end:
            p_used = min(p_used, n - 1 - i)
            c_used = min(c_used, n - i)
        corr: Dict[int, float] = {}
        if c_used:
            nodes = list(range(i - c_used + 1, i + 1))
            b = sa_solver_b_coeffs(sig[i], [lam[j] for j in nodes], lam[i - 1], lam[i], tau, simple_order_2, True)
            corr = dict(zip(nodes, b))
            for j, v in prev_pred.items():
                corr[j] = corr.get(j, 0.0) - v
        # the step's end: D_i (denoising), the last corrected state, or the next predicted state
        pred: Dict[int, float] = {}
        ax, noise = 1.0, 0.0
        if sig[i + 1] != 0:
            tau = float(tau_func(sig[i + 1]))
            nodes = list(range(i - p_used + 1, i + 1))
            b = sa_solver_b_coeffs(sig[i + 1], [lam[j] for j in nodes], lam[i], lam[i + 1], tau, simple_order_2)
            pred = dict(zip(nodes, b))
            h = lam[i + 1] - lam[i]
            ax = sig[i + 1] / sig[i] * math.exp(-(tau ** 2) * h)
            if tau > 0 and s_noise > 0:
                noise = sig[i + 1] * math.sqrt(-math.expm1(-2 * tau ** 2 * h)) * s_noise
        final = i == n - 1 and sig[i + 1] != 0  # ComfyUI returns the corrected state there

        def row(sigma: float, weights: Dict[int, float], out_x: float, out_noise: float = 0.0) -> Tuple[int, int]:
            used = max([i - j for j in weights] + [0])
            hist = tuple(weights.get(i - m, 0.0) for m in range(1, used + 1))
            return run.row(sigma, out_x=out_x, out_d=weights.get(i, 0.0), out_h=hist, out_noise=out_noise), used

        def advance(weights_c: Dict[int, float]) -> Dict[int, float]:  # predictor after the corrected state
            out = {j: ax * v for j, v in weights_c.items()}
            for j, v in pred.items():
                out[j] = out.get(j, 0.0) + v
            return out

        if not use_pece or not c_used:
            if sig[i + 1] == 0:
                stage = [row(sig[i], {i: 1.0}, 0.0)]
            elif final:
                stage = [row(sig[i], corr, 1.0)]
            else:
                stage = [row(sig[i], advance(corr), ax, noise)]
        else:  # corrected state, its evaluation, then the predictor from it
            first = row(sig[i], corr, 1.0)
            if sig[i + 1] == 0:
                second = row(sig[i], {i: 1.0}, 0.0)
            elif final:
                second = row(sig[i], {}, 1.0)
            else:
                second = row(sig[i], pred, ax, noise)
            stage = [first, second]
        draws = [i if noise and not final and k == len(stage) - 1 else None for k in range(len(stage))]
        plan.append((stage, draws))
        prev_pred = pred
    run.plan()
    hist: List[torch.Tensor] = []  # x0 estimates, newest first
    for i in run.steps():
        stage, draws = plan[i]
        (k, used) = stage[0]
        raw = run.eval(x, k)
        run.report(i, x, raw, k)
        if len(stage) == 1:
            x, entry = run.step(x, raw, k, history=hist[:used], x0=True, draw=draws[0])
        else:
            x = run.step(x, raw, k, history=hist[:used], draw=draws[0])
            k, used = stage[1]
            raw = run.eval(x, k)
            x, entry = run.step(x, raw, k, history=hist[:used], x0=True, draw=draws[1])
        hist = [entry] + hist[: MAX_HISTORY - 1]
    return x


def sample_sa_solver_pece(run: Run, x: torch.Tensor, *, tau_func: Optional[Callable[[float], float]] = None,
                          s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
                          simple_order_2: bool = False, start_sigma: float = math.inf, end_sigma: float = 0.0,
                          eta: float = 1.0, flow: Optional[bool] = None,
                          flow_first_sigma: float = 1.0 - 1e-4) -> torch.Tensor:
    """SA-Solver in PECE mode: predict, evaluate, correct, evaluate (Xue et al. 2023, "SA-Solver: Stochastic
    Adams Solver for Fast Sampling of Diffusion Models"; ComfyUI's ``sa_solver_pece``); options as
    :func:`sample_sa_solver`."""
    return sample_sa_solver(run, x, tau_func=tau_func, s_noise=s_noise, predictor_order=predictor_order,
                            corrector_order=corrector_order, use_pece=True, simple_order_2=simple_order_2,
                            start_sigma=start_sigma, end_sigma=end_sigma, eta=eta, flow=flow,
                            flow_first_sigma=flow_first_sigma)


def sample_dpmpp_2m_sde_heun(run: Run, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                             solver_type: str = "heun", flow: bool = False,
                             flow_first_sigma: float = 1.0 - 1e-4) -> torch.Tensor:
    """DPM-Solver++(2M) SDE with the Heun-type second-order term (Lu et al. 2022, DPM-Solver++; ComfyUI's
    ``dpmpp_2m_sde_heun``): :func:`sample_dpmpp_2m_sde` with ``solver_type="heun"`` by default."""
    return sample_dpmpp_2m_sde(run, x, eta=eta, s_noise=s_noise, solver_type=solver_type, flow=flow,
                               flow_first_sigma=flow_first_sigma)


def _dpmpp_2m_sde_half_log_snr(run: Run, x: torch.Tensor, eta: float, s_noise: float, solver_type: str,
                               flow_first_sigma: float) -> torch.Tensor:
    """DPM-Solver++(2M) SDE in the flow half-log-SNR (ComfyUI's CONST branch), host float64 weights."""
    sig, lam, _ = _half_log_snr(run, True, flow_first_sigma)
    plan = []
    h_last = None
    for i in range(run.n):
        if sig[i + 1] == 0:
            plan.append((run.row(sig[i], out_x=0.0, out_d=1.0), 0, None))
            h_last = None
            continue
        h = lam[i + 1] - lam[i]
        h_eta = h * (eta + 1)
        alpha_t = sig[i + 1] * math.exp(lam[i + 1])
        a = alpha_t * -math.expm1(-h_eta)
        coefs: Dict[str, Any] = dict(out_x=sig[i + 1] / sig[i] * math.exp(-h * eta), out_d=a)
        if i > 0:
            rinv = h / h_last
            b = (alpha_t * (-math.expm1(-h_eta) / (-h_eta) + 1) if solver_type == "heun" else 0.5 * a) * rinv
            coefs.update(out_d=a + b, out_h=(-b,))
        noisy = eta > 0 and s_noise > 0
        if noisy:
            coefs["out_noise"] = sig[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        plan.append((run.row(sig[i], **coefs), 1 if i > 0 else 0, i if noisy else None))
        h_last = h
    run.plan()
    return _multistep_loop(run, x, plan, keep=1)


def _dpm_solver_rows(run: Any, t: Any, t_to: Any, order: int, noise: float, r1: Optional[float] = None) -> List[int]:
    """Rows of one DPM-Solver-1/2/3 step from ``t`` to ``t_to`` (log-SNR times, noise-prediction form; Lu et al.
    2022, Algorithms 1 and 2 with r1 = 1/2, resp. r1 = 1/3, r2 = 2/3): each stage's pass writes the next stage's
    point, the last one the step's end (plus ``noise`` times the step's draw)."""
    h = t_to - t
    st, sn, big_e, hf = F(sigma_of(t)), F(sigma_of(t_to)), F(expm1(h)), F(h)
    if order == 1:
        return [run.row(sigma_of(t), out_x=1.0 - sn * big_e / st, out_d=sn * big_e / st, out_noise=noise)]
    if r1 is None:
        r1 = 0.5 if order == 2 else 1.0 / 3
    s1 = t + r1 * h
    ss1, e1 = F(sigma_of(s1)), F(expm1(r1 * h))
    first = run.row(sigma_of(t), out_x=1.0 - ss1 * e1 / st, out_d=ss1 * e1 / st)  # u1 = x - s1 expm1(r1 h) eps
    if order == 2:
        a, b = sn * big_e * (1.0 - 1.0 / (2 * r1)), sn * big_e / (2 * r1)
        # x - sn E eps - b (eps_r1 - eps), eps = (x - D) / st, eps_r1 = (u1 - D1) / s1
        return [first, run.row(sigma_of(s1), out_x=1.0 - a / st, out_h=(a / st,), out_e=-b / ss1, out_d=b / ss1,
                               out_noise=noise)]
    r2 = 2.0 / 3
    s2 = t + r2 * h
    ss2, e2 = F(sigma_of(s2)), F(expm1(r2 * h))
    c2 = ss2 * (r2 / r1) * (e2 / (r2 * hf) - 1.0)
    p = c2 - ss2 * e2
    second = run.row(sigma_of(s1), out_x=1.0 + p / st, out_h=(-p / st,), out_e=-c2 / ss1, out_d=c2 / ss1)
    c3 = sn / r2 * (big_e / hf - 1.0)
    q = c3 - sn * big_e
    third = run.row(sigma_of(s2), out_x=1.0 + q / st, out_h=(-q / st,), out_e=-c3 / ss2, out_d=c3 / ss2,
                    out_noise=noise)
    return [first, second, third]


def sample_dpm_fast(run: Run, x: torch.Tensor, *, orders: Optional[Sequence[int]] = None, eta: float = 0.0,
                    s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-fast (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling
    in Around 10 Steps", Sec. 3.4; k-diffusion's ``sample_dpm_fast``): DPM-Solver-1/2/3 steps in the noise
    prediction form between consecutive sigmas, ``orders[i]`` evaluations in step i (default 3 each), each
    evaluation followed by one fused pass. A step into sigma = 0 returns the x0 estimate.

    k-diffusion's signature ``(sigma_min, sigma_max, n)`` (``n`` model evaluations on an equal grid in
    ``-log sigma``) is :func:`fastdiff.k_diffusion.sample_dpm_fast`, which builds that grid and its orders with
    :func:`~fastdiff.solvers.dpm_fast_grid` and runs this function. ``eta > 0``: each step goes to the ancestral
    ``sigma_down`` (capped at the last time) and adds ``sigma_up`` noise, as k-diffusion does.
    """
    s = run.sigmas
    n = run.n
    if orders is None:
        orders = [3] * n
    orders = list(orders)
    if len(orders) != n or any(isinstance(o, bool) or o not in (1, 2, 3) for o in orders):
        raise ValueError(f"orders must list one order in (1, 2, 3) per step ({n} steps), got {orders!r}")
    eta = _check_nonneg("eta", eta)
    s_noise = _check_nonneg("s_noise", s_noise)
    t_end = t_of(s[-1]) if F(s[-1]) > 0 else t_of(s[-2])
    plan = []
    for i in range(n):
        if F(s[i + 1]) == 0:
            plan.append((None, [run.row(s[i], out_x=0.0, out_d=1.0)], (None,)))
            continue
        t, t_next = t_of(s[i]), t_of(s[i + 1])
        noise = 0.0
        if eta:
            sd, _ = ancestral_split(sigma_of(t), sigma_of(t_next), eta)
            t_sd = t_of(like(sd, s[i]))
            t_next_ = t_end if F(t_sd) > F(t_end) else t_sd
            noise = F(sqrt(sigma_of(t_next) ** 2 - sigma_of(t_next_) ** 2)) * s_noise
            t_next = t_next_
        rows = _dpm_solver_rows(run, t, t_next, orders[i], noise)
        # the last pass names step i's draw even without noise: a face drawing from the global RNG advances it
        # once a step, as k-diffusion does (its noise is dropped where out_noise is 0)
        plan.append((None, rows, (None,) * (len(rows) - 1) + (i,)))
    run.plan()
    return _stages_loop(run, x, plan)


class _StepRows:
    """Collects the rows one step registers, for a sampler that plans step by step (``dpm_adaptive``)."""

    def __init__(self) -> None:
        self.rows: List[Dict[str, Any]] = []

    def row(self, sigma: Any, **coefs: Any) -> int:
        hist = coefs.pop("out_h", ())
        self.rows.append(dict(coefs, sigma=sigma, **{f"out_h{k}": float(v) for k, v in enumerate(hist)}))
        return len(self.rows) - 1


class PIDStepSize:
    """PID step-size control on the inverse error (Söderlind 2003, as k-diffusion's dpm_adaptive uses it):
    ``factor = 1 + atan(prod_k e_k^{b_k} - 1)``, accepted when ``factor >= accept_safety``; ``h *= factor``.

    Example (an error of half the tolerance grows a third-order step by ``1 + atan(2^(1/3) - 1)``):
        >>> pid = PIDStepSize(0.1, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, order=3, accept_safety=0.81)
        >>> pid.propose(0.5), round(pid.h, 4)
        (True, 0.1254)
    """

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float, eps: float = 1e-8) -> None:
        self.h = h
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety, self.eps = accept_safety, eps
        self.inv_errors: List[float] = []

    def propose(self, error: float) -> bool:
        inv = 1 / (error + self.eps)
        if not self.inv_errors:
            self.inv_errors = [inv, inv, inv]
        self.inv_errors[0] = inv
        e = self.inv_errors
        factor = 1 + math.atan(e[0] ** self.b[0] * e[1] ** self.b[1] * e[2] ** self.b[2] - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inv_errors = [e[0], e[0], e[1]]
        self.h *= factor
        return accept


def dpm_adaptive(evaluate: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, t_start: Any, t_end: Any,
                 *, order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                 pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81,
                 eta: float = 0.0, s_noise: float = 1.0,
                 noise: Optional[Callable[[Any, Any], torch.Tensor]] = None,
                 report: Optional[Callable[[Dict[str, Any]], None]] = None,
                 backend: str = "auto") -> Tuple[torch.Tensor, Dict[str, int]]:
    """DPM-Solver-12 / -23 with adaptive steps (Lu et al. 2022, "DPM-Solver", Sec. 3.3 and Alg. 4; k-diffusion's
    ``dpm_solver_adaptive``): from log-SNR time ``t_start`` to ``t_end``, a step of order ``order`` and its
    embedded lower-order solution share the evaluations; their difference, measured in ``atol`` / ``rtol`` units,
    drives the :class:`PIDStepSize` controller. Returns ``(x, info)`` with k-diffusion's counters.

    ``evaluate(x, sigma)`` returns the x0 estimate. The stage points, the step and the embedded solution are fused
    passes of the same stage rows as ``dpm_fast`` (an order-3 step: 3 evaluations, 4 passes; order 2: 2 and 3).
    Accepting or rejecting a step needs the error norm on the host: one device-to-host read per step, inherent
    to the method (the steps are not known in advance). Scalars (0-d tensors or floats) keep their kind.

    Example:
        >>> den = lambda v, sigma: v / (1 + sigma ** 2)
        >>> t0, t1 = torch.tensor(10.0).log().neg(), torch.tensor(0.1).log().neg()
        >>> x, info = dpm_adaptive(den, torch.ones(2, 3), t0, t1)
        >>> x.shape, info["nfe"] == 3 * info["steps"]
        (torch.Size([2, 3]), True)
    """
    if isinstance(order, bool) or order not in (2, 3):
        raise ValueError(f"order should be 2 or 3, got {order!r}")
    forward = bool(t_end > t_start)
    if not forward and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    h_init = abs(h_init) * (1 if forward else -1)
    s = t_start
    x_prev = x
    pid = PIDStepSize(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    table_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    atol_t, rtol_t = torch.as_tensor(atol), torch.as_tensor(rtol)

    def advance(to: Any, h: float) -> Any:
        nxt = s + h
        return (to if nxt > to else nxt) if forward else (to if nxt < to else nxt)

    while (s < t_end - 1e-5) if forward else (s > t_end + 1e-5):
        t = advance(t_end, pid.h)
        if eta:
            sd, _ = ancestral_split(sigma_of(s), sigma_of(t), eta)
            t_sd = t_of(like(sd, s))
            t_ = t_end if t_sd > t_end else t_sd
            su = sqrt(sigma_of(t) ** 2 - sigma_of(t_) ** 2)
        else:
            t_, su = t, 0.0
        rec = _StepRows()
        high = _dpm_solver_rows(rec, s, t_, order, 0.0)
        low = _dpm_solver_rows(rec, s, t_, order - 1, 0.0, r1=1.0 / 3 if order == 3 else None)[-1]
        table = coef_table(rec.rows, device=x.device, dtype=table_dtype)
        d0 = evaluate(x, rec.rows[high[0]]["sigma"])
        u1 = fused_step(x, d0, table, coef_row=high[0], backend=backend)
        if order == 2:
            x_low = fused_step(x, d0, table, coef_row=low, backend=backend)
            d1 = evaluate(u1, rec.rows[high[1]]["sigma"])
            x_high = fused_step(x, d1, table, x_eval=u1, history=(d0,), coef_row=high[1], backend=backend)
        else:
            d1 = evaluate(u1, rec.rows[high[1]]["sigma"])
            u2 = fused_step(x, d1, table, x_eval=u1, history=(d0,), coef_row=high[1], backend=backend)
            x_low = fused_step(x, d1, table, x_eval=u1, history=(d0,), coef_row=low, backend=backend)
            d2 = evaluate(u2, rec.rows[high[2]]["sigma"])
            x_high = fused_step(x, d2, table, x_eval=u2, history=(d0,), coef_row=high[2], backend=backend)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose(float(error)):  # the one host read of the step
            x_prev = x_low
            x = x_high
            if eta:  # k-diffusion draws only for accepted steps
                x = x + su * s_noise * noise(sigma_of(s), sigma_of(t))
            s = t
            info["n_accept"] += 1
        else:
            info["n_reject"] += 1
        info["nfe"] += order
        info["steps"] += 1
        if report is not None:
            report({"x": x, "i": info["steps"] - 1, "t": s, "t_up": s, "denoised": d0, "error": error,
                    "h": pid.h, **info})
    return x, info


#: sampler names -> the one implementation every face runs
SAMPLERS: Dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "unipc": sample_unipc,
    "flow_euler": sample_flow_euler,
    # CFG++, RES multistep and gradient estimation (ComfyUI's names)
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "res_multistep": sample_res_multistep,
    "res_multistep_cfg_pp": sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": sample_gradient_estimation,
    "gradient_estimation_cfg_pp": sample_gradient_estimation_cfg_pp,
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "deis": sample_deis,
    "heunpp2": sample_heunpp2,
    "lcm": sample_lcm,
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
    "sa_solver": sample_sa_solver,
    "sa_solver_pece": sample_sa_solver_pece,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpm_fast": sample_dpm_fast,
}

#: samplers that need classifier-free guidance (they weigh the unconditional x0 estimate: CFG++)
NEEDS_UNCOND = ("euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
                "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp")

#: samplers whose noise draws make the result depend on ``seed`` (with their default options).
STOCHASTIC = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_3m_sde", "ddpm", "lcm", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
              "dpmpp_2m_sde_heun",
              "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral",
              "res_multistep_ancestral_cfg_pp")
