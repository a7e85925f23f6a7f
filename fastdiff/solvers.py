"""The sampler math, written once: pure functions of noise levels from which every face builds its step tables.

Each function takes scalars of one of three kinds and keeps that kind's arithmetic:

* host floats (``fastdiff.sample``): float64 math;
* 0-d tensors (``fastdiff.k_diffusion``): the tensors' own dtype, operation for operation as k-diffusion
  computes it, so float32 sigmas give k-diffusion's float32 roundings;
* numpy float64 arrays (``fastdiff.diffusers``): vectorised over all steps of a schedule.

The elementary functions below (:func:`log`, :func:`exp`, :func:`expm1`, :func:`sqrt`) dispatch on that kind;
everything else is ordinary arithmetic, so one formula serves all three. Coefficients that go into a step table
leave as Python floats (:func:`F`), the intermediate noise levels a model is evaluated at keep their kind.

Example:
    >>> down, up = ancestral_split(2.0, 1.0)
    >>> round(down ** 2 + up ** 2, 12)
    1.0
"""
from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "F", "log", "exp", "expm1", "sqrt", "like", "lerp_half", "t_of", "sigma_of",
    "ve_x0_coefs", "vp_x0_coefs", "consistency_scalings", "consistency_boundary", "consistency_step_coefs",
    "edm_c_in", "edm_x0_coefs", "churn_gamma", "churn_schedule", "ancestral_split", "brownian_overlap_weights",
    "euler_coefs",
    "lms_coefficients", "lms_weight_table", "exp_lagrange_weights", "dpm_solver_coefs",
    "dpm_third_order_differences", "dpmpp_multistep_weights", "unipc_rhos", "SQRT2_MINUS_1",
    "IPNDM_WEIGHTS", "ipndm_v_weights", "deis_weights", "er_sde_default_noise_scaler", "er_sde_stage_integrals",
    "snr_shifted_abar", "sa_solver_b_coeffs", "sa_solver_noise_coeffs", "sa_solver_order2_shift", "dpm_fast_grid",
    "flow_alpha", "euler_ancestral_cfgpp_coefs", "res_multistep_weights", "nan_to_zero",
    "consistency_boundary", "consistency_step_coefs",
]

Scalar = Any  # float, 0-d torch.Tensor or numpy array

#: the EDM churn cap (Karras et al. 2022, Alg. 2): ``gamma <= sqrt(2) - 1`` keeps ``sigma_hat <= sqrt(2) sigma``
SQRT2_MINUS_1 = math.sqrt(2.0) - 1.0


# ------------------------------------------------------------------------------------------ elementary functions
def F(v: Scalar) -> float:
    """A coefficient as a host float (a 0-d tensor is read once, on the host copy of the schedule)."""
    return float(v)


def log(v: Scalar) -> Scalar:
    """Natural log; ``log(0) = -inf`` for floats too (a schedule's final 0 maps to lambda = +inf)."""
    if isinstance(v, torch.Tensor):
        return v.log()
    if isinstance(v, np.ndarray):
        return np.log(v)
    if v > 0:
        return math.log(v)
    return -math.inf if v == 0 else math.nan


def _elementwise(name: str, host: Any) -> Any:
    def fn(v: Scalar) -> Scalar:
        if isinstance(v, torch.Tensor):
            return getattr(v, name)()
        if isinstance(v, np.ndarray):
            return getattr(np, name)(v)
        return host(v)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}`` of a float (math), 0-d tensor (its dtype) or numpy array."
    return fn


exp = _elementwise("exp", math.exp)
expm1 = _elementwise("expm1", math.expm1)


def sqrt(v: Scalar) -> Scalar:
    """Square root; for floats of a rounding below 0 (a difference of equal squares) it is 0."""
    if isinstance(v, torch.Tensor):
        return v.sqrt()  # == v ** 0.5 bit for bit (checked), which k-diffusion writes
    if isinstance(v, np.ndarray):
        return np.sqrt(v)
    return math.sqrt(max(v, 0.0))


def like(v: Scalar, ref: Scalar) -> Scalar:
    """``v`` as the same kind of scalar as ``ref`` (k-diffusion's ``torch.as_tensor(v, dtype=sigmas.dtype)``)."""
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(v, dtype=ref.dtype)
    return v


def lerp_half(a: Scalar, b: Scalar) -> Scalar:
    """The midpoint ``a + (b - a) / 2`` the way ``torch.lerp(a, b, 0.5)`` rounds it (``b - (b - a) * 0.5``)."""
    if isinstance(a, torch.Tensor):
        return a.lerp(b, 0.5)
    return b - (b - a) * 0.5


def t_of(sigma: Scalar) -> Scalar:
    """The log-SNR time of DPM-Solver in VE variables, ``t = -log(sigma)`` (``+inf`` at sigma = 0)."""
    return -log(sigma)


def sigma_of(t: Scalar) -> Scalar:
    """Inverse of :func:`t_of`: ``sigma = exp(-t)``."""
    return exp(-t)


# ------------------------------------------------------------------------------------------ model output -> x0
def ve_x0_coefs(prediction: str, sigma: Scalar, sigma_hat: Scalar = None) -> Tuple[Scalar, Scalar]:
    """``(in_x, in_m)`` with ``x0 = in_x * x + in_m * model_output`` for the VE sample ``x = x0 + sigma * eps``.

    ``prediction``: ``"epsilon"`` (uses ``sigma_hat``, the churned level, when given), ``"v_prediction"``,
    ``"sample"`` (or ``"original_sample"``).

    Example:
        >>> ve_x0_coefs("v_prediction", 1.0)[0]
        0.5
    """
    sh = sigma if sigma_hat is None else sigma_hat
    vec = isinstance(sigma, np.ndarray)
    if prediction == "epsilon":
        return (np.ones_like(sh) if vec else 1.0), -sh
    if prediction == "v_prediction":
        return 1.0 / (sigma * sigma + 1.0), -sigma / sqrt(sigma * sigma + 1.0)
    if prediction in ("sample", "original_sample"):
        return (np.zeros_like(sigma), np.ones_like(sigma)) if vec else (0.0, 1.0)
    raise ValueError(f"prediction_type must be one of 'epsilon', 'v_prediction', 'sample', got {prediction!r}")


def vp_x0_coefs(prediction: str, alpha: Scalar, sigma: Scalar) -> Tuple[Scalar, Scalar]:
    """``(in_x, in_m)`` with ``x0 = in_x * x + in_m * model_output`` for the VP sample ``x = alpha x0 + sigma eps``.

    Example:
        >>> vp_x0_coefs("epsilon", 0.5, 0.75)
        (2.0, -1.5)
    """
    if prediction == "epsilon":
        return 1.0 / alpha, -sigma / alpha
    if prediction == "sample":
        return (np.zeros_like(alpha), np.ones_like(alpha)) if isinstance(alpha, np.ndarray) else (0.0, 1.0)
    if prediction == "v_prediction":
        return alpha, -sigma
    raise ValueError(f"prediction_type must be one of 'epsilon', 'sample', 'v_prediction', got {prediction!r}")


def consistency_scalings(sigma: Scalar, sigma_data: float, sigma_min: float = 0.0) -> Tuple[Scalar, Scalar]:
    """``(c_skip, c_out)`` of a consistency model, ``x0 = c_skip x + c_out F(x)`` (Song et al. 2023, App. C):
    ``c_skip = sigma_data**2 / ((sigma - sigma_min)**2 + sigma_data**2)``, ``c_out = (sigma - sigma_min)
    sigma_data / sqrt(sigma**2 + sigma_data**2)``. With ``sigma_min`` (the boundary ``epsilon``) the estimate is
    the sample itself at ``sigma = sigma_min``; ``sigma_min = 0`` gives the EDM scalings of Karras et al. (2022).

    Example:
        >>> consistency_scalings(0.002, 0.5, sigma_min=0.002)
        (1.0, 0.0)
    """
    shifted = sigma - sigma_min
    c_skip = sigma_data ** 2 / (shifted ** 2 + sigma_data ** 2)
    c_out = shifted * sigma_data / sqrt(sigma ** 2 + sigma_data ** 2)
    return c_skip, c_out


# ------------------------------------------------------------------------------------------ consistency models
def consistency_boundary(t: Scalar, timestep_scaling: float = 10.0, sigma_data: float = 0.5) -> Tuple[Scalar, Scalar]:
    """``(c_skip, c_out)`` of the consistency-model parameterisation ``f(x, t) = c_skip x + c_out x0`` at the
    discrete timestep ``t`` (Song et al. 2023, "Consistency Models", eq. 7; the discrete form of Luo et al. 2023,
    "Latent Consistency Models": ``s = t * timestep_scaling``, ``c_skip = sd^2 / (s^2 + sd^2)``,
    ``c_out = s / sqrt(s^2 + sd^2)``). At ``t = 0``: ``(1, 0)``, the boundary condition ``f(x, 0) = x``.

    Example:
        >>> consistency_boundary(0.0)
        (1.0, 0.0)
        >>> [round(c, 6) for c in consistency_boundary(0.05)]
        [0.5, 0.707107]
    """
    # consistency_scalings at sigma = t * timestep_scaling (sigma_min = 0), with c_out in LCM's units: without the
    # sigma_data factor of the continuous form
    c_skip, c_out = consistency_scalings(t * timestep_scaling, sigma_data)
    return c_skip, c_out / sigma_data


def consistency_step_coefs(skip_x: Scalar, skip_d: Scalar, renoise: Scalar, noise_std: Scalar) -> dict:
    """Step coefficients (``fastdiff.ops.step`` column names) of a consistency-style step: the estimate
    ``e = skip_x * x + skip_d * x0`` (written as the step's aux output), then ``x_next = renoise * e +
    noise_std * z``, z standard normal. LCM: ``e`` is the boundary-conditioned denoised sample (``skip_x, skip_d =
    c_skip, c_out``), ``renoise = sqrt(abar_prev)``, ``noise_std = sqrt(1 - abar_prev)``; TCD: ``e`` is the noised
    estimate at the intermediate timestep s and ``renoise = sqrt(abar_prev / abar_s)``. A step that ends the run
    passes ``renoise = 1``, ``noise_std = 0``.

    Example:
        >>> consistency_step_coefs(0.25, 0.75, 0.5, 0.8)["out_d"]
        0.375
    """
    return {"aux_x": skip_x, "aux_d": skip_d, "out_x": renoise * skip_x, "out_d": renoise * skip_d,
            "out_noise": noise_std}


def edm_c_in(sigma: Scalar, sigma_data: float) -> Scalar:
    """EDM's network-input scaling (Karras et al. 2022, Table 1): ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``.

    Example:
        >>> round(edm_c_in(0.5, 0.5), 6)
        1.414214
    """
    return 1 / sqrt(sigma ** 2 + sigma_data ** 2)


def edm_x0_coefs(prediction: str, sigma: Scalar, sigma_data: float) -> Tuple[Scalar, Scalar]:
    """EDM's output preconditioning (Karras et al. 2022, Table 1): ``(c_skip, c_out)`` with
    ``x0 = c_skip * x + c_out * F`` for the VE sample ``x`` at ``sigma`` and the network output ``F``.

    ``prediction``: ``"epsilon"`` (EDM's ``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``) or
    ``"v_prediction"`` (the same with the opposite sign, diffusers' EDM convention).

    Example:
        >>> [round(c, 6) for c in edm_x0_coefs("epsilon", 0.5, 0.5)]
        [0.5, 0.353553]
    """
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"Prediction type {prediction} is not supported.")
    c_skip, c_out = consistency_scalings(sigma, sigma_data)  # the consistency scalings at sigma_min = 0
    return c_skip, (c_out if prediction == "epsilon" else -c_out)


# ------------------------------------------------------------------------------------------ stochasticity
def churn_gamma(sigma: Scalar, s_churn: float, n: int, s_tmin: float, s_tmax: float) -> float:
    """EDM churn factor ``gamma = min(s_churn / n, sqrt(2) - 1)`` inside ``[s_tmin, s_tmax]``, else 0
    (elementwise for a numpy array of sigmas).

    Example:
        >>> churn_gamma(1.0, 0.4, 4, 0.0, 10.0)
        0.1
    """
    gamma = min(s_churn / n, SQRT2_MINUS_1)
    if isinstance(sigma, np.ndarray):
        return np.where((s_tmin <= sigma) & (sigma <= s_tmax), gamma, 0.0)
    return gamma if s_tmin <= sigma <= s_tmax else 0.0


def churn_schedule(sigmas: Sequence[Scalar], s_churn: float, s_tmin: float, s_tmax: float,
                   s_noise: float) -> Tuple[List[Scalar], List[float]]:
    """EDM stochastic churn (Karras et al. 2022, Alg. 2): per step ``sigma_hat`` and the noise scale.

    ``sigma_hat_i = sigma_i (1 + gamma_i)`` and ``x_hat = x + s_noise sqrt(sigma_hat^2 - sigma^2) z``.
    0-d tensors (``fastdiff.k_diffusion``) return ``sigma_hat`` as 0-d tensors.

    Example:
        >>> hats, scales = churn_schedule([10.0, 1.0, 0.0], s_churn=0.4, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0)
        >>> [round(h, 6) for h in hats]
        [12.0, 1.2]
    """
    n = len(sigmas) - 1
    hats, scales = [], []
    for i in range(n):
        s = sigmas[i]
        gamma = churn_gamma(s, s_churn, n, s_tmin, s_tmax)
        sh = s * (gamma + 1.0)
        hats.append(sh)
        scales.append(s_noise * F(sqrt(sh ** 2 - s ** 2)) if gamma > 0 else 0.0)
    return hats, scales


def ancestral_split(sigma: Scalar, sigma_next: Scalar, eta: float = 1.0) -> Tuple[Scalar, Scalar]:
    """``(sigma_down, sigma_up)`` of an ancestral step (Ho et al. 2020 posterior variance, scaled by ``eta``).

    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``,
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``: the step's total variance reaches ``sigma_next^2``.

    Example:
        >>> [round(v, 6) for v in ancestral_split(2.0, 1.0)]
        [0.5, 0.866025]
    """
    if not eta:
        return sigma_next, 0.0
    variance = sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2
    scaled = eta * sqrt(variance)
    up = np.minimum(sigma_next, scaled) if isinstance(scaled, np.ndarray) else min(sigma_next, scaled)
    return sqrt(sigma_next ** 2 - up ** 2), up


def brownian_overlap_weights(a: Scalar, b: Scalar) -> Tuple[Scalar, Scalar]:
    """``(w_shared, w_new)`` with ``z2 = w_shared z1 + w_new z'`` for the normalised increments of one Brownian path
    over two intervals from the same start, of lengths ``0 <= a <= b``: ``z1 = W(a) / sqrt(a)``,
    ``z2 = W(b) / sqrt(b)``, ``z'`` standard normal independent of ``z1``.

    ``W(b) = W(a) + (W(b) - W(a))`` with independent parts of variances ``a`` and ``b - a``, so
    ``w_shared = sqrt(a / b)`` (the correlation of ``z1`` and ``z2``) and ``w_new = sqrt((b - a) / b)``; both
    are standard normal. A zero-length second interval (``b = 0``) gives ``(0, 1)``.

    Example:
        >>> [round(w, 6) for w in brownian_overlap_weights(1.0, 4.0)]
        [0.5, 0.866025]
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(b > 0, np.clip(a / b, 0.0, 1.0), 0.0)
        return np.sqrt(frac), np.sqrt(1.0 - frac)
    frac = min(max(a / b, 0.0), 1.0) if b > 0 else 0.0
    return math.sqrt(frac), math.sqrt(1.0 - frac)


def euler_coefs(sigma: Scalar, sigma_to: Scalar) -> dict:
    """Step coefficients of the Euler step ``x + (sigma_to - sigma) (x - D) / sigma`` (k-diffusion's rounding:
    the step ``dt`` is formed in the scalars' own dtype).

    Example:
        >>> euler_coefs(2.0, 1.0)
        {'out_x': 0.5, 'out_d': 0.5}
    """
    dt, s = F(sigma_to - sigma), F(sigma)
    return dict(out_x=1.0 + dt / s, out_d=-dt / s)


# ------------------------------------------------------------------------------------------ multistep weights
def lms_coefficients(t: Sequence[float], i: int, order: int) -> List[float]:
    """Adams-type linear multistep weights: integrals over ``[t_i, t_{i+1}]`` of the Lagrange basis
    on nodes ``t_i, t_{i-1}, ..., t_{i-order+1}`` (exact polynomial integration in float64, pure Python
    so that torch.compile traces the planning without a break).

    Example (second order on times 3, 2 -> 1: weights of the derivatives at t=2 and t=3):
        >>> [round(w, 6) for w in lms_coefficients([3.0, 2.0, 1.0], 1, 2)]
        [-1.5, 0.5]
    """
    nodes = [t[i - j] for j in range(order)]
    out = []
    for j in range(order):
        poly = [1.0]  # coefficients, lowest degree first
        for k in range(order):
            if k != j:
                scale = 1.0 / (nodes[j] - nodes[k])
                shifted = [0.0] + poly  # multiply by (x - nodes[k]) / (nodes[j] - nodes[k])
                poly = [(shifted[n] - nodes[k] * (poly[n] if n < len(poly) else 0.0)) * scale
                        for n in range(len(shifted))]

        def antiderivative(x: float, c=poly) -> float:
            return sum(cn * x ** (n + 1) / (n + 1) for n, cn in enumerate(c))

        out.append(antiderivative(t[i + 1]) - antiderivative(t[i]))
    return out


def _exp_moments(a: float, n: int) -> List[float]:
    """``I_m = int_0^1 a e^{a (s - 1)} s^m ds`` for ``m < n`` (``I_0 = 1 - e^{-a}``, ``I_m = 1 - (m / a) I_{m-1}``):
    the moments of the exponential kernel on a unit step, behind :func:`exp_lagrange_weights` and
    :func:`dpm_solver_coefs` (in numpy float64: ``a = inf`` gives ones, ``a = 0`` NaN beyond ``I_0 = 0``)."""
    a = np.float64(a)
    out = [-np.expm1(-a)]
    with np.errstate(divide="ignore", invalid="ignore"):
        for m in range(1, n):
            out.append(1.0 - m / a * out[-1])
    return [float(v) for v in out]


def exp_lagrange_weights(h: float, nodes: Sequence[float], rate: float = 1.0) -> List[float]:
    """Exponential-integrator weights ``w_j = int_0^h rate e^{rate (tau - h)} L_j(tau) d tau``, ``L_j`` the Lagrange
    basis on ``nodes`` (offsets in log-SNR ``lambda`` from the current point: ``0.0`` first, then the earlier,
    negative ones), integrated exactly; ``h = lambda_t - lambda_s`` is the step. Host float64.

    This is the multistep integral of DEIS (Zhang & Chen 2023) and of DPM-Solver's "heun" updates (Lu et al.
    2022a/b), for polynomial extrapolation in ``lambda = -log rho`` of the model's estimate:

    * ``rate = -1`` (noise estimates ``eps_j``): ``x_t = (alpha_t / alpha_s) x + sigma_t sum_j w_j eps_j`` -- DEIS's
      "logrho" update, ``alpha_t int_{rho_s}^{rho_t} L_j(log rho) d rho`` with ``rho = sigma / alpha``;
    * ``rate = 1`` (x0 estimates ``D_j``): ``x_t = (sigma_t / sigma_s) x + alpha_t sum_j w_j D_j`` (DPM-Solver++);
    * ``rate = 2``: the same with ``x`` weighted by ``(sigma_t / sigma_s) e^{-h}`` (SDE-DPM-Solver++'s mean).

    One node gives the first-order (DDIM) weight ``1 - e^{-rate h}``; ``h = 0`` gives zeros; an infinite step
    (``sigma_t = 0``, ``rate > 0``) is finite only at first order (NaN otherwise).

    Example (first order, rate 1: ``1 - e^{-h}``; two nodes sum to it):
        >>> w = exp_lagrange_weights(0.5, [0.0, -0.4])
        >>> round(sum(w), 12) == round(-math.expm1(-0.5), 12)
        True
    """
    n = len(nodes)
    if h == 0:
        return [0.0] * n
    if n == 1:
        return _exp_moments(rate * h, 1)
    if not math.isfinite(rate * h):
        return [math.nan] * n
    moments = _exp_moments(rate * h, n)
    r = [float(v) / h for v in nodes]
    out = []
    for j in range(n):
        poly = [1.0]  # L_j(s), lowest degree first
        for k in range(n):
            if k != j:
                scale = 1.0 / (r[j] - r[k])
                shifted = [0.0] + poly
                poly = [(shifted[i] - r[k] * (poly[i] if i < len(poly) else 0.0)) * scale
                        for i in range(len(shifted))]
        out.append(sum(c * moments[i] for i, c in enumerate(poly)))
    return out


#: DPM-Solver's four update forms: (kernel rate, scale on the target's alpha (x0 forms) or sigma (noise forms))
_DPM_FORMS = {"x0": (1.0, "alpha", 1.0), "x0-sde": (2.0, "alpha", 1.0), "eps": (-1.0, "sigma", 1.0),
              "eps-sde": (-1.0, "sigma", 2.0)}


def dpm_solver_coefs(form: str, h: float, alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float) -> dict:
    """DPM-Solver's update coefficients for one step of log-SNR length ``h = lambda_t - lambda_s`` (Lu et al.
    2022a, "DPM-Solver"; 2022b, "DPM-Solver++"), as diffusers' multistep and singlestep schedulers write them.

    ``form``: ``"x0"`` (DPM-Solver++), ``"x0-sde"`` (SDE-DPM-Solver++), ``"eps"`` (DPM-Solver), ``"eps-sde"``
    (SDE-DPM-Solver). The update from the sample ``x_s`` is ``x * x_s + d0 * D0 + c1 * D1 (+ d2 * D2) + noise * z``
    with ``D0`` the estimate (x0 or noise) at the expansion point, ``D1`` its first difference in units of ``h``
    (weight ``d1`` for the "heun" solver type and third order, ``d1_mid`` for "midpoint") and ``D2`` the second
    (third order). The weights are the moments of the exponential kernel of :func:`exp_lagrange_weights` --
    ``d0, d1, d2 = scale * (I_0, I_1, I_2 / 2)`` -- so the first-order and "heun" second-order updates are that
    function's (DEIS's) weights for one and two nodes; ``"x0-sde"``'s ``d2`` is diffusers' ``scale * (I_2 / 2 - 1)``
    and ``"eps-sde"`` has no third order (``d2`` NaN). Host float64 (numpy semantics for numpy scalars).

    Example (first order of DPM-Solver++ is DDIM: ``alpha_t (1 - e^{-h})`` on the x0 estimate):
        >>> c = dpm_solver_coefs("x0", 0.5, 0.8, 0.6, 0.6, 0.8)
        >>> round(c["d0"], 12) == round(0.8 * -math.expm1(-0.5), 12), c["d1_mid"] == c["d0"] / 2
        (True, True)
    """
    if form not in _DPM_FORMS:
        raise ValueError(f"form must be one of {tuple(_DPM_FORMS)}, got {form!r}")
    rate, on, mult = _DPM_FORMS[form]
    scale = mult * (alpha_t if on == "alpha" else sigma_t)
    i0, i1, i2 = _exp_moments(rate * h, 3)
    d2 = scale * (0.5 * i2 - 1.0) if form == "x0-sde" else (math.nan if form == "eps-sde" else scale * 0.5 * i2)
    if form == "x0":
        x, noise = sigma_t / sigma_s, 0.0
    elif form == "x0-sde":
        # a step that rises in sigma by a rounding (a final sigma_min just above the last sigma) adds no noise
        x, noise = sigma_t / sigma_s * exp(-h), sigma_t * sqrt(max(-expm1(-2.0 * h), 0.0))
    elif form == "eps":
        x, noise = alpha_t / alpha_s, 0.0
    else:
        x, noise = alpha_t / alpha_s, sigma_t * sqrt(expm1(2.0 * h))
    return {"x": x, "d0": scale * i0, "d1_mid": 0.5 * scale * i0, "d1": scale * i1, "d2": d2, "noise": noise}


def lms_weight_table(t: Sequence[float], order: int) -> np.ndarray:
    """:func:`lms_coefficients` for every step of a schedule: an ``(len(t) - 1, order)`` float64 array whose row
    ``i`` holds the ``min(i + 1, order)`` weights of step ``i`` (the warm-up steps use the orders available),
    zero-padded on the right.

    Example:
        >>> lms_weight_table([3.0, 2.0, 1.0], 2).round(6).tolist()
        [[-1.0, 0.0], [-1.5, 0.5]]
    """
    t = [float(v) for v in t]
    table = np.zeros((len(t) - 1, order))
    for i in range(len(t) - 1):
        c = lms_coefficients(t, i, min(i + 1, order))
        table[i, :len(c)] = c
    return table


def dpm_third_order_differences(lam: Sequence[float], i: int, h: float) -> Tuple[np.ndarray, np.ndarray]:
    """DPM-Solver's third-order ``D1`` and ``D2`` at step ``i`` as weights on the (current, one back, two back)
    estimates: finite differences in ``lambda`` scaled by the step ``h`` (Lu et al. 2022, multistep solver).

    Example:
        >>> [w.round(6).tolist() for w in dpm_third_order_differences([0.0, 1.0, 2.0], 2, 1.0)]
        [[1.5, -2.0, 0.5], [0.5, -1.0, 0.5]]
    """
    r0 = (lam[i] - lam[i - 1]) / h
    r1 = (lam[i - 1] - lam[i - 2]) / h
    d10 = np.array([1.0, -1.0, 0.0]) / r0
    d11 = np.array([0.0, 1.0, -1.0]) / r1
    return d10 + r0 / (r0 + r1) * (d10 - d11), (d10 - d11) / (r0 + r1)


def dpmpp_multistep_weights(alpha: Sequence[float], sigma: Sequence[float], lam: Sequence[float], i: int,
                            order: int, solver_type: str = "midpoint", sde: bool = False
                            ) -> Tuple[float, np.ndarray, float]:
    """Multistep DPM-Solver++ (Lu et al. 2022b) from step ``i`` to ``i + 1`` of a run with the process' ``alpha``,
    ``sigma`` and log-SNR ``lam`` per step (float64; ``lam = +inf`` at a final sigma of 0): ``(c_x, w, c_noise)``
    with ``x_next = c_x x + w[0] D_i + w[1] D_{i-1} + w[2] D_{i-2} + c_noise z`` over the x0 estimates ``D``.

    :func:`dpm_solver_coefs` (form "x0" or "x0-sde") combined over the finite differences of the estimates:
    ``order`` 1-3 (3 only for the ODE), ``solver_type`` "midpoint" or "heun" for the second order, ``sde`` the
    SDE variant (its noise term included). Call under ``np.errstate`` where a step is infinite.

    Example (first order, VE sigmas 2 -> 1, alpha = 1: x_next = x / 2 + D / 2):
        >>> c_x, w, _ = dpmpp_multistep_weights([1.0, 1.0], [2.0, 1.0], [-math.log(2.0), 0.0], 0, 1)
        >>> round(c_x, 6), w.round(6).tolist()
        (0.5, [0.5, 0.0, 0.0])
    """
    h = lam[i + 1] - lam[i]
    c = dpm_solver_coefs("x0-sde" if sde else "x0", h, alpha[i + 1], sigma[i + 1], alpha[i], sigma[i])
    w = np.array([c["d0"], 0.0, 0.0])
    if order == 2:
        r0 = (lam[i] - lam[i - 1]) / h
        w += c["d1_mid" if solver_type == "midpoint" else "d1"] * np.array([1.0, -1.0, 0.0]) / r0
    elif order == 3:
        d1, d2 = dpm_third_order_differences(lam, i, h)
        w += c["d1"] * d1 + c["d2"] * d2
    return c["x"], w, c["noise"]


def _solve(m: Sequence[Sequence[float]], v: Sequence[float]) -> List[float]:
    """``m^-1 v`` for the small (at most 3x3) UniPC systems: Gaussian elimination with partial pivoting in
    Python floats (numpy's solve costs ~15 us a call in argument handling, on a 2x2 system, once per step).

    Singular only when the step is infinite (a final sigma of 0 reached with order > 1): the higher-order terms
    are dropped there (zeros), which keeps the step finite.
    """
    n = len(v)
    a = [list(map(float, row[:n])) + [float(v[i])] for i, row in enumerate(m[:n])]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        if not math.isfinite(a[p][c]) or a[p][c] == 0.0:
            return [0.0] * n
        a[c], a[p] = a[p], a[c]
        for r in range(c + 1, n):
            f = a[r][c] / a[c][c]
            a[r] = [x - f * y for x, y in zip(a[r], a[c])]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (a[r][n] - sum(a[r][k] * out[k] for k in range(r + 1, n))) / a[r][r]
    if not all(map(math.isfinite, out)):
        return [0.0] * n
    return out


def unipc_rhos(hh: float, rks: Sequence[float], order: int, variant: str) -> Tuple[float, List[float], List[float]]:
    """UniPC weights (Zhao et al. 2023): ``(B_h, rhos_p, rhos_c)`` for step ``hh = -h`` and ratios ``rks``.

    ``rks`` holds ``r_k = (lambda_{s_k} - lambda_{s_0}) / h`` for the older points, then ``1.0``;
    ``variant`` is ``"bh1"`` (``B(h) = hh``) or ``"bh2"`` (``B(h) = expm1(hh)``).

    Example:
        >>> b_h, rhos_p, rhos_c = unipc_rhos(-0.5, [-1.0, 1.0], order=2, variant="bh2")
        >>> rhos_p
        [0.5]
    """
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = hh if variant == "bh1" else math.expm1(hh)
    fact = 1.0
    big_r, b = [], []
    for i in range(1, order + 1):
        big_r.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    if order == 1:
        rhos_p = []
    elif order == 2:
        rhos_p = [0.5]
    else:
        rhos_p = _solve([row[:-1] for row in big_r[:-1]], b[:-1])
    rhos_c = [0.5] if order == 1 else _solve(big_r, b)
    return b_h, rhos_p, rhos_c


# ------------------------------------------------------------------------------------------ CFG++ and RES
def flow_alpha(sigma: Scalar) -> Scalar:
    """The signal scale ``alpha = 1 - s`` of a flow sample ``x_s = (1 - s) x0 + s eps`` at flow time ``s``
    (ComfyUI's CONST model sampling: ``sigma * exp(half_log_snr)`` with ``half_log_snr = log((1 - s) / s)``).

    Example:
        >>> flow_alpha(0.25)
        0.75
    """
    return 1.0 - sigma


def euler_ancestral_cfgpp_coefs(sigma: Scalar, sigma_next: Scalar, eta: float, s_noise: float,
                                flow: bool = False) -> dict:
    """Step coefficients of the ancestral Euler CFG++ step (Chung et al. 2024, "CFG++", Algorithm 1 with
    the ancestral split of eta-DDIM): ``x' = alpha' D + sigma_down (x - alpha U) / sigma + alpha' s_noise
    sigma_up z``, where ``D`` is the guided and ``U`` the unconditional x0 estimate.

    With ``flow`` the noise levels are flow times ``s`` (``alpha = 1 - s``) and the split is taken on the VE
    levels ``s / alpha``, as ComfyUI does for CONST models; otherwise ``alpha = 1``. A final ``sigma_next = 0``
    gives ``x' = D``. Returns ``out_x``, ``out_d``, ``out_u`` and ``out_noise`` (the noise weight, 0 without
    noise). A first flow level of 1 (``alpha = 0``) takes ComfyUI's result there: ``sigma_down = 0``,
    ``sigma_up`` = the next VE level (its ``min(sigma_next, nan)``).

    Example:
        >>> euler_ancestral_cfgpp_coefs(2.0, 1.0, eta=0.0, s_noise=1.0)
        {'out_x': 0.5, 'out_d': 1.0, 'out_u': -0.5, 'out_noise': 0.0}
    """
    if F(sigma_next) == 0:
        return dict(out_x=0.0, out_d=1.0, out_u=0.0, out_noise=0.0)
    a_s, a_t = (flow_alpha(sigma), flow_alpha(sigma_next)) if flow else (1.0, 1.0)
    ve_t = sigma_next / a_t if flow else sigma_next
    if flow and F(a_s) == 0:
        down, up = (ve_t, 0.0) if not eta else (0.0 * ve_t, ve_t)
    else:
        down, up = ancestral_split(sigma / a_s if flow else sigma, ve_t, eta)
    down = a_t * down
    sf = F(sigma)
    noise = F(a_t * up) * s_noise if eta > 0 and s_noise > 0 else 0.0
    return dict(out_x=F(down) / sf, out_d=F(a_t), out_u=-F(down) * F(a_s) / sf, out_noise=noise)


def nan_to_zero(v: Scalar) -> Scalar:
    """``v`` with NaN replaced by 0 (``torch.nan_to_num(v, nan=0.0)`` for a 0-d tensor)."""
    if isinstance(v, torch.Tensor):
        return torch.nan_to_num(v, nan=0.0)
    if isinstance(v, np.ndarray):
        return np.where(np.isnan(v), 0.0, v)
    return 0.0 if v != v else v


def res_multistep_weights(h: Scalar, c2: Scalar) -> Tuple[Scalar, Scalar]:
    """``(b1, b2)`` of the second-order RES multistep step ``x' = e^{-h} x + h (b1 D_n + b2 D_{n-1})``
    (Zhang et al. 2023, "Improved order analysis and design of exponential integrator for diffusion models",
    the 2-step RES; ComfyUI's res_multistep): ``b1 = phi1(-h) - phi2(-h) / c2``, ``b2 = phi2(-h) / c2`` with
    ``phi1(t) = (e^t - 1) / t``, ``phi2(t) = (phi1(t) - 1) / t`` and ``c2`` the previous node's offset in units
    of ``h`` (negative); a NaN weight becomes 0.

    Example (b1 + b2 = phi1(-h)):
        >>> b1, b2 = res_multistep_weights(0.5, -1.0)
        >>> round(b1 + b2, 12) == round(math.expm1(-0.5) / -0.5, 12)
        True
    """
    phi1 = expm1(-h) / -h
    phi2 = (phi1 - 1.0) / -h
    return nan_to_zero(phi1 - phi2 / c2), nan_to_zero(phi2 / c2)


# ------------------------------------------------------------------------------------------ ComfyUI's solver set
#: Adams-Bashforth weights of iPNDM (Zhang & Chen 2023) on equal steps, newest derivative first, order 1..4
IPNDM_WEIGHTS = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def ipndm_v_weights(t: Sequence[float], i: int, order: int) -> List[float]:
    """Variable-step iPNDM weights (Zhang & Chen 2023; the step-size-aware form of ComfyUI's ``ipndm_v``).

    ``x_{i+1} = x_i + (t_{i+1} - t_i) sum_j w_j d_{i-j}`` on host floats ``t`` (the sigmas), newest first.

    Example (equal steps give the fixed iPNDM weights):
        >>> [round(w, 12) for w in ipndm_v_weights([4.0, 3.0, 2.0, 1.0], 2, 3)]
        [1.916666666667, -1.333333333333, 0.416666666667]
    """
    if order == 1:
        return [1.0]
    h = t[i + 1] - t[i]
    h1 = t[i] - t[i - 1]
    if order == 2:
        return [(2 + h / h1) / 2, -(h / h1) / 2]
    h2 = t[i - 1] - t[i - 2]
    temp1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [(2 + h / h1) / 2 + temp1, -(h / h1) / 2 - (1 + h1 / h2) * temp1, temp1 * h1 / h2]
    h3 = t[i - 2] - t[i - 3]
    temp2 = (((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
             * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
    g = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [(2 + h / h1) / 2 + temp1 + temp2,
            -(h / h1) / 2 - (1 + h1 / h2) * temp1 - (1 + h1 / h2 + g) * temp2,
            temp1 * h1 / h2 + (h1 / h2 + g * (1 + h2 / h3)) * temp2,
            -temp2 * g * h1 / h2]


def _deis_vp_times(sigmas: np.ndarray, eps_s: float = 1e-3, sigma_min: float = 0.002,
                   sigma_max: float = 80.0) -> Tuple[np.ndarray, float, float]:
    # EDM sigma -> the VP time of DEIS, for the VP-SDE whose ends match sigma_min / sigma_max at (eps_s, 1)
    beta_d = 2 * (math.log(sigma_min ** 2 + 1) / eps_s - math.log(sigma_max ** 2 + 1)) / (eps_s - 1)
    beta_min = math.log(sigma_max ** 2 + 1) - 0.5 * beta_d
    t = (np.sqrt(beta_min ** 2 + 2 * beta_d * np.log(sigmas ** 2 + 1)) - beta_min) / beta_d
    return t, beta_min, beta_d


def deis_weights(sigmas: Sequence[float], max_order: int, mode: str = "tab", quadrature_points: int = 10000
                 ) -> List[List[float]]:
    """DEIS weights (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator").

    Row ``i`` holds ``c_j`` with ``x_{i+1} = x_i + sum_j c_j d_{i-j}`` (newest derivative first), ``[]`` where the
    step is a plain Euler step (the first one). ``mode="tab"``: the Lagrange basis in the VP time of DEIS,
    integrated against ``d sigma`` by the same left-point sum of ``quadrature_points`` nodes ComfyUI uses (so its
    numbers, not the exact integral); ``mode="rhoab"``: the basis in sigma, integrated exactly (Adams-Bashforth
    in sigma through ``min(i + 1, max_order)`` points). Host float64, once per run.

    Example (second order on equal sigma steps, rhoab: Adams-Bashforth 3/2, -1/2 times the step):
        >>> deis_weights([3.0, 2.0, 1.0], 2, "rhoab")[1]
        [-1.5, 0.5]
    """
    s = np.asarray([float(v) for v in sigmas], dtype=np.float64)
    if mode == "rhoab":
        host = [float(v) for v in s]
        return [[] if i == 0 else lms_coefficients(host, i, min(i + 1, max_order)) for i in range(len(s) - 1)]
    if mode != "tab":
        raise ValueError(f"deis_mode must be 'tab' or 'rhoab', got {mode!r}")
    t, b0, bd = _deis_vp_times(s)
    rows: List[List[float]] = []
    for i in range(len(s) - 1):
        order = min(i + 1, max_order)
        if order == 1 or s[i + 1] <= 0:  # Euler there (the last step into sigma = 0 too)
            rows.append([])
            continue
        taus = np.linspace(t[i], t[i + 1], quadrature_points)
        dtau = (t[i + 1] - t[i]) / quadrature_points
        alpha = np.exp(-0.5 * taus ** 2 * bd - taus * b0)
        dsigma_dtau = 0.5 * (taus * bd + b0) / np.sqrt(alpha * (1 - alpha))
        nodes = [t[i - k] for k in range(order)]
        row = []
        for j in range(order):
            poly = np.ones_like(taus)
            for k in range(order):
                if k != j:
                    poly = poly * (taus - nodes[k]) / (nodes[j] - nodes[k])
            row.append(float(np.sum(dsigma_dtau * poly) * dtau))
        rows.append(row)
    return rows


def er_sde_default_noise_scaler(v: Any) -> Any:
    """ER-SDE's default noise scaler ``v (exp(v^0.3) + 10)`` (Cui et al. 2025, the solver's default choice)."""
    return v * (np.exp(np.power(v, 0.3)) + 10.0)


def er_sde_stage_integrals(lam_s: float, lam_t: float, noise_scaler: Any = er_sde_default_noise_scaler,
                           points: int = 200) -> Tuple[float, float]:
    """``(s, s_u)``: the integrals of ER-SDE's second and third stages, ``int 1/f(l) dl`` and
    ``int (l - lam_s)/f(l) dl`` from ``lam_t`` up to ``lam_s`` (ER-SDE's lambda falls along a run), as ComfyUI
    sums them (``points`` left-point nodes from ``lam_t``). Host float64.

    Example:
        >>> s, s_u = er_sde_stage_integrals(2.0, 1.0, lambda v: np.ones_like(v))
        >>> round(s, 12), round(s_u, 3)
        (1.0, -0.502)
    """
    step = -(lam_t - lam_s) / points
    pos = lam_t + np.arange(points, dtype=np.float64) * step
    scaled = np.asarray(noise_scaler(pos), dtype=np.float64)
    return float(np.sum(1.0 / scaled) * step), float(np.sum((pos - lam_s) / scaled) * step)


def sa_solver_b_coeffs(sigma_next: float, lambdas: Sequence[float], lam_s: float, lam_t: float, tau: float,
                       simple_order_2: bool = False, corrector: bool = False) -> List[float]:
    """SA-Solver's data-prediction weights (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver", eqs. 15/18).

    The Lagrange basis on ``lambdas`` (half-log-SNR nodes, oldest first) integrated against
    ``exp((1 + tau^2) l)`` over ``[lam_s, lam_t]``, times ``alpha_t = sigma_next exp(lam_t)``; returned in the order
    of ``lambdas``. ``simple_order_2`` with two nodes: the paper's Appendix D order-2 weights. Host float64.

    Example (one node: the exponential-Euler weight ``alpha_t (1 - exp(-h))``, tau = 0):
        >>> round(sa_solver_b_coeffs(0.5, [0.0], 0.0, math.log(2.0), 0.0)[0], 12)
        0.5
    """
    tau_mul = 1 + tau ** 2
    h = lam_t - lam_s
    alpha_t = sigma_next * math.exp(lam_t)
    n = len(lambdas)
    if simple_order_2 and n == 2:
        if corrector:
            b1 = alpha_t * (0.5 * tau_mul * h)
            return [alpha_t * -math.expm1(-h * tau_mul) - b1, b1]
        b2 = alpha_t * (0.5 * tau_mul * h ** 2) / (lambdas[-2] - lam_s)
        return [b2, alpha_t * -math.expm1(-h * tau_mul) - b2]
    p = np.arange(n, dtype=np.float64)
    # int_s^t exp(tau_mul (l - t)) l^p dl * tau_mul by parts: a lower-triangular recursion on t^p - s^p e^{-tau_mul h}
    terms = lam_t ** p - lam_s ** p * math.exp(-tau_mul * h)
    depth = p[:, None] - p[None, :]
    logfact = np.array([math.lgamma(v + 1) for v in p])
    mat = logfact[:, None] - logfact[None, :] - depth * math.log(tau_mul)
    mat = np.tril(np.exp(mat) * np.where(depth % 2 == 0, 1.0, -1.0))
    integrals = mat @ terms
    vander = np.vander(np.asarray(lambdas, dtype=np.float64), n, increasing=True).T
    return [float(alpha_t * v) for v in np.linalg.solve(vander, integrals)]


def snr_shifted_abar(abar: Scalar, scale: float) -> Scalar:
    """``alphas_cumprod`` with every SNR divided by ``scale`` (CogVideoX's ``snr_shift_scale``):
    ``abar / (scale + (1 - scale) abar)``, i.e. ``SNR' = SNR / scale``; in the input's own arithmetic.

    Example:
        >>> snr_shifted_abar(0.5, 3.0)  # SNR 1 -> 1/3
        0.25
    """
    return abar / (scale + (1 - scale) * abar)


def sa_solver_noise_coeffs(alpha_t: float, lambdas: Sequence[float], lam_s: float, lam_t: float,
                           tau: float) -> List[float]:
    """SA-Solver's noise-prediction weights (Xue et al. 2023, eqs. 14/17): the Lagrange basis on ``lambdas``
    integrated against ``exp(-l)`` over ``[lam_s, lam_t]``, times ``-(1 + tau^2) alpha_t``; in the order of
    ``lambdas``. Host float64.

    Example (one node, tau = 0: ``-alpha_t (exp(-s) - exp(-t))``):
        >>> round(sa_solver_noise_coeffs(0.5, [0.0], 0.0, math.log(2.0), 0.0)[0], 12)
        -0.25
    """
    n = len(lambdas)
    # int_s^t l^p exp(-l) dl = [-exp(-l) sum_k p!/(p-k)! l^(p-k)]_s^t
    integrals = []
    for p in range(n):
        def prim(lam, p=p):
            return -math.exp(-lam) * sum(math.factorial(p) / math.factorial(p - k) * lam ** (p - k)
                                         for k in range(p + 1))
        integrals.append(prim(lam_t) - prim(lam_s))
    vander = np.vander(np.asarray(lambdas, dtype=np.float64), n, increasing=True).T
    return [float(-(1 + tau ** 2) * alpha_t * v) for v in np.linalg.solve(vander, np.asarray(integrals))]


def sa_solver_order2_shift(alpha_t: float, lam_s: float, lam_t: float, tau: float, lam_prev: float = None,
                           corrector: bool = False) -> float:
    """The weight diffusers' SA-Solver moves from the older to the newer of two data-prediction nodes (its
    UniPC-like order-2 variant for few steps; it does not change the convergence order): added to the newest
    node's :func:`sa_solver_b_coeffs` weight and subtracted from the other's. ``lam_prev``: the node before
    ``lam_s`` (the predictor's); the corrector's form needs none. Host float64.

    Example (tau = 0, h = 1, corrector: ``alpha_t (1/2 - e^-1)``):
        >>> round(sa_solver_order2_shift(1.0, 0.0, 1.0, 0.0, corrector=True), 12)
        0.132120558829
    """
    c = 1 + tau ** 2
    h = lam_t - lam_s
    core = (h * c - 1 + math.exp(-c * h)) / c ** 2
    shift = h / 2 - core / h if corrector else (h ** 2 / 2 - core) / (lam_s - lam_prev)
    return c * alpha_t * shift


def dpm_fast_grid(t_start: Scalar, t_end: Scalar, nfe: int) -> Tuple[List[Scalar], List[int]]:
    """DPM-Solver-fast's steps (Lu et al. 2022, "DPM-Solver", Sec. 3.4; k-diffusion's ``dpm_solver_fast``):
    ``floor(nfe / 3) + 1`` equal steps in ``t = -log sigma`` and their orders (3, ..., then 2, 1 or ``nfe % 3``),
    spending ``nfe`` model evaluations. ``t_start`` / ``t_end`` as 0-d tensors give ``torch.linspace``'s values in
    their dtype (k-diffusion's), host floats numpy's float64 ones.

    Example:
        >>> ts, orders = dpm_fast_grid(0.0, 3.0, 7)
        >>> [round(float(t), 6) for t in ts], orders
        ([0.0, 1.0, 2.0, 3.0], [3, 3, 1])
    """
    m = nfe // 3 + 1
    if isinstance(t_start, torch.Tensor):
        grid = torch.linspace(t_start, t_end, m + 1)
        ts = [grid[i] for i in range(m + 1)]
    else:
        ts = [float(v) for v in np.linspace(float(t_start), float(t_end), m + 1)]
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    return ts, orders
