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

from .ops.step import MAX_HISTORY
from .sampler_run import Run
from .solvers import (F, ancestral_split, churn_schedule, euler_coefs, expm1, exp, lerp_half, like, lms_coefficients,
                      log, sigma_of, sqrt, t_of, unipc_rhos)
from .solvers import euler_ancestral_cfgpp_coefs, res_multistep_weights

__all__ = ["SAMPLERS", "STOCHASTIC"] + [f"sample_{n}" for n in (
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_sde",
    "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "ddpm", "unipc", "flow_euler")]
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
    """Ancestral DPM-Solver-2: midpoint step to sigma_down, then noise sigma_up (Lu et al. 2022; k-diffusion)."""
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
    """Ancestral Euler: Euler step to sigma_down, then fresh noise of size sigma_up (Ho et al. 2020; k-diffusion)."""
    return _ancestral_euler(run, x, eta, s_noise)


def sample_ddim(run: Run, x: torch.Tensor, *, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12); in VE variables its step is exactly the ancestral split with eta."""
    return _ancestral_euler(run, x, eta, 1.0)


def sample_ddpm(run: Run, x: torch.Tensor) -> torch.Tensor:
    """DDPM ancestral sampling from the posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, Algorithm 2)."""
    return _ancestral_euler(run, x, 1.0, 1.0)


def sample_lms(run: Run, x: torch.Tensor, *, order: int = 4) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth in sigma) on the PF ODE (cf. Liu et al. 2022, PNDM; k-diffusion).

    Orders above ``MAX_HISTORY + 1`` fold the oldest derivatives into the last history slot (one extra pass).
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    t = [F(v) for v in run.sigmas]
    plan = []
    for i in range(run.n):
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
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_2s_ancestral)."""
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
    k-diffusion face draws from its noise sampler, a Brownian tree by default, at k-diffusion's times.
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
                        solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_2m_sde)."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    s = run.sigmas
    plan = []
    h_last = None
    for i in range(run.n):
        if F(s[i + 1]) == 0:
            plan.append((run.row(s[i], out_x=0.0, out_d=1.0), 0, None))
            continue
        t, t_s = t_of(s[i]), t_of(s[i + 1])
        h = t_s - t
        eta_h = eta * h
        a = F(-expm1(-h - eta_h))
        coefs = dict(out_x=F(s[i + 1] / s[i] * exp(-eta_h)), out_d=a)
        if i > 0:  # the previous x0 estimate exists from the second step on
            rinv = F(1 / (h_last / h))
            if solver_type == "heun":
                b = F(-expm1(-h - eta_h) / (-h - eta_h) + 1) * rinv
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
    """DPM-Solver++(3M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_3m_sde)."""
    s = run.sigmas
    plan = []
    h = h_1 = h_2 = None
    for i in range(run.n):
        if F(s[i + 1]) == 0:
            plan.append((run.row(s[i], out_x=0.0, out_d=1.0), 0, None))
        else:
            t, t_s = t_of(s[i]), t_of(s[i + 1])
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
            coefs = dict(out_x=F(exp(-h_eta)), out_d=w[0], out_h=tuple(w[1:1 + used]))
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
}

#: samplers that need classifier-free guidance (they weigh the unconditional x0 estimate: CFG++)
NEEDS_UNCOND = ("euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
                "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp")

#: samplers whose noise draws make the result depend on ``seed`` (with their default options).
STOCHASTIC = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_3m_sde", "ddpm",
              "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral",
              "res_multistep_ancestral_cfg_pp")
