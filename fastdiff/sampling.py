"""Reverse-process samplers, each step one fused pass (``fastdiff.fused_step``) per model evaluation.

Convention (k-diffusion): ``denoiser(x, sigma)`` returns the x0 estimate for the
variance-exploding sample ``x = x0 + sigma * eps``; ``x`` starts at noise level
``sigmas[0]`` and ``sigmas`` decreases to 0. ``flow_euler`` instead runs natively
in flow time ``s`` (``x_s = (1 - s) x0 + s eps``; its ``sigmas`` are flow times
in [0, 1], e.g. ``fastdiff.FlowMatchingSchedule.sigmas(n)``, and the denoiser
returns the x0 estimate of the flow sample; see :mod:`fastdiff.denoisers`).

How a sampler runs: it computes, in float64 on the host from the sigmas, one
coefficient row per model evaluation (plus the denoiser's output conversion
``(in_x, in_m)`` and the guidance scale), builds ONE ``(R, 13)`` table, moves it
to the device once, and then each model evaluation ``k`` is followed by exactly
one ``fused_step(..., coef_row=k)``: the raw network output goes straight into
the kernel, which forms the x0 estimate, applies classifier-free guidance,
advances the sample, adds noise and writes the next history entry in one pass.
Heun-type correctors pass ``x_eval``; multistep solvers pass ``history``.
Nothing in the step loop reads device memory on the host.

Noise: every draw is Philox noise keyed by (seed, row id, stream, element), so a
row's samples depend only on ``(seed, row id)``. Stream numbers:

* ``k + 1``: the noise added by the fused step that follows model evaluation
  ``k`` (0-based) -- equivalently, "the number of model evaluations made before
  the noise is added";
* ``0``: the EDM churn noise added before the first evaluation (an extra fused
  pass, only when churn is active at ``sigmas[0]``);
* ``INITIAL_NOISE_STREAM = 2**32 - 1``: :func:`initial_noise`.

``dpmpp_sde`` uses independent Philox noise for its two sub-steps (each with the
variance of k-diffusion's version) instead of k-diffusion's Brownian tree, whose
two increments over nested intervals are correlated; the marginal law of each
step is the same, the noise is counter-based and batch-split invariant.

Example:
    >>> import torch, fastdiff
    >>> from fastdiff.toy import GaussianMixture
    >>> gmm = GaussianMixture.ring(k=4)
    >>> sigmas = fastdiff.karras_sigmas(10, 0.01, 20.0)
    >>> x = initial_noise((16, 2), seed=0) * sigmas[0].item()
    >>> out = sample(gmm.denoiser, x, sigmas, sampler="dpmpp_2m")
    >>> out.shape
    torch.Size([16, 2])
"""
from __future__ import annotations

import collections
import inspect
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._backend import BACKENDS, maybe_rows
from .denoisers import Denoiser
from .ops._common import FLOAT_DTYPES, check_batch
from .ops.step import COEF_DEFAULTS, MAX_HISTORY, coef_table, fused_step
from .random import MAX_SEED, philox_normal

__all__ = ["sample", "initial_noise", "list_samplers", "SAMPLERS", "STOCHASTIC", "SamplerContext", "History",
           "INITIAL_NOISE_STREAM", "host_sigmas", "churn_schedule", "ancestral_split", "lms_coefficients", "unipc_rhos"]

#: Philox stream reserved for :func:`initial_noise` (no sampler step ever uses it).
INITIAL_NOISE_STREAM = 2**32 - 1
_PRE_CHURN_STREAM = 0


def initial_noise(
    shape: Sequence[int],
    seed: int,
    *,
    row_ids: Optional[torch.Tensor] = None,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normals for the starting sample, from Philox stream ``INITIAL_NOISE_STREAM``.

    ``initial_noise(shape, seed, row_ids=r) * sigmas[0]`` followed by
    ``sample(..., seed=seed, row_ids=r)`` makes a whole run a function of
    ``(seed, row id)`` only.

    Example:
        >>> z = initial_noise((4, 3), seed=1)
        >>> torch.equal(z[2:], initial_noise((2, 3), seed=1, row_ids=torch.tensor([2, 3])))
        True
    """
    return philox_normal(shape, seed, INITIAL_NOISE_STREAM, row_ids=row_ids, device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# shared blocks (host, float64)
# ----------------------------------------------------------------------------------------------
def churn_schedule(sigmas: Sequence[float], s_churn: float, s_tmin: float, s_tmax: float,
                   s_noise: float) -> Tuple[List[float], List[float]]:
    """EDM stochastic churn (Karras et al. 2022, Alg. 2): per step ``sigma_hat`` and the noise scale.

    ``gamma_i = min(s_churn / n, sqrt(2) - 1)`` for ``s_tmin <= sigma_i <= s_tmax`` (else 0),
    ``sigma_hat_i = sigma_i (1 + gamma_i)`` and ``x_hat = x + s_noise sqrt(sigma_hat^2 - sigma^2) z``.
    Host floats give float64 math; 0-d tensors (``fastdiff.k_diffusion``) keep their own dtype's arithmetic,
    as k-diffusion computes it, and return ``sigma_hat`` as 0-d tensors.

    Example:
        >>> hats, scales = churn_schedule([10.0, 1.0, 0.0], s_churn=0.4, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0)
        >>> [round(h, 6) for h in hats]
        [12.0, 1.2]
    """
    n = len(sigmas) - 1
    hats, scales = [], []
    for i in range(n):
        s = sigmas[i]
        gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= s <= s_tmax else 0.0
        sh = s * (gamma + 1.0)
        hats.append(sh)
        if gamma > 0:
            root = float((sh ** 2 - s ** 2) ** 0.5) if isinstance(sh, torch.Tensor) else math.sqrt(sh * sh - s * s)
            scales.append(s_noise * root)
        else:
            scales.append(0.0)
    return hats, scales


def ancestral_split(sigma: float, sigma_next: float, eta: float = 1.0) -> Tuple[float, float]:
    """``(sigma_down, sigma_up)`` of an ancestral step (k-diffusion ``get_ancestral_step``).

    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``,
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``; with ``eta = 1`` this is the DDPM
    posterior variance and with ``eta = 0`` plain deterministic steps.

    Example:
        >>> down, up = ancestral_split(2.0, 1.0)
        >>> round(down ** 2 + up ** 2, 12)   # the total variance reaches sigma_next^2
        1.0
    """
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(max(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2, 0.0)))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


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


def unipc_rhos(hh: float, rks: Sequence[float], order: int, variant: str) -> Tuple[float, List[float], List[float]]:
    """UniPC weights (Zhao et al. 2023): ``(B_h, rhos_p, rhos_c)`` for step ``hh = -h`` and ratios ``rks``.

    ``rks`` holds ``r_k = (lambda_{s_k} - lambda_{s_0}) / h`` for the older points, then ``1.0``.

    Example:
        >>> b_h, rhos_p, rhos_c = unipc_rhos(-0.5, [-1.0, 1.0], order=2, variant="bh2")
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
    big_r, b = np.array(big_r), np.array(b)
    if order == 1:
        rhos_p = []
    elif order == 2:
        rhos_p = [0.5]
    else:
        rhos_p = list(np.linalg.solve(big_r[:-1, :-1], b[:-1]))
    rhos_c = [0.5] if order == 1 else list(np.linalg.solve(big_r, b))
    return b_h, rhos_p, rhos_c


class History:
    """The last few history tensors (x0 estimates or derivatives), newest first, for ``fused_step(history=...)``."""

    def __init__(self, maxlen: int) -> None:
        if not 0 <= maxlen <= MAX_HISTORY:
            raise ValueError(f"history length must be in [0, {MAX_HISTORY}], got {maxlen}")
        self._items: collections.deque = collections.deque(maxlen=max(maxlen, 1))
        self.maxlen = maxlen

    def push(self, t: torch.Tensor) -> None:
        if self.maxlen:
            self._items.appendleft(t)

    def take(self, n: int) -> Tuple[torch.Tensor, ...]:
        """The ``n`` newest entries (the coefficient rows were built knowing how many exist)."""
        if n > len(self._items) or (n and not self.maxlen):
            raise RuntimeError(f"sampler bug: asked for {n} history entries, {len(self._items)} exist")
        return tuple(list(self._items)[:n])


# ----------------------------------------------------------------------------------------------
# the context every sampler runs in
# ----------------------------------------------------------------------------------------------
def _supports_flow(den: Any) -> bool:
    if not isinstance(den, Denoiser):
        return True
    if hasattr(den, "flow_conversion"):
        return True
    inner = getattr(den, "inner", None)
    return den.doubles_batch and (not isinstance(inner, Denoiser) or hasattr(inner, "flow_conversion"))


class SamplerContext:
    """Everything a sampler function needs: host sigmas, the model call, the fused step, reporting.

    A sampler builds its coefficient rows with :meth:`row`, hands them to :meth:`plan`
    (one device table per run), then alternates :meth:`eval` (model evaluation ``k``)
    and :meth:`step` (the one fused pass for evaluation ``k``).
    """

    def __init__(self, denoiser: Callable, x: torch.Tensor, sigmas: List[float], *, seed: int,
                 row_ids: Optional[torch.Tensor], guidance_scale: Optional[float], backend: str,
                 callback: Optional[Callable], progress: bool, clip: Optional[float],
                 model_kwargs: Dict[str, Any], space: str = "ve") -> None:
        self.denoiser, self.sigmas, self.seed, self.row_ids = denoiser, sigmas, seed, row_ids
        self.backend, self.callback, self.progress, self.clip = backend, callback, progress, clip
        self.model_kwargs, self.space = model_kwargs, space
        self.device, self.batch, self.x_shape = x.device, x.shape[0], tuple(x.shape)
        self.sigma_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.table_dtype = self.sigma_dtype
        self.guided = bool(getattr(denoiser, "doubles_batch", False))
        self.guidance_scale = 0.0 if not self.guided else float(
            denoiser.scale if guidance_scale is None else guidance_scale)
        self._planned: Optional[tuple] = None
        self._checked = False

    # --- planning ----------------------------------------------------------------------------
    @staticmethod
    def row(sigma: float, **coefs: Any) -> Dict[str, Any]:
        """One coefficient row: the model evaluation's noise level plus ``step_coefs`` keywords."""
        return dict(sigma=float(sigma), **coefs)

    def _conversion(self, sigma: float) -> Tuple[float, float]:
        den = self.denoiser
        if not isinstance(den, Denoiser):
            return 0.0, 1.0
        if self.space == "flow":
            inner = den.inner if den.doubles_batch else den
            return inner.flow_conversion(sigma) if isinstance(inner, Denoiser) else (0.0, 1.0)
        return den.conversion(sigma)

    def _timesteps(self, sig: torch.Tensor) -> Optional[torch.Tensor]:
        den = self.denoiser
        if not isinstance(den, Denoiser):
            return None
        if self.space == "flow":
            inner = den.inner if den.doubles_batch else den
            return inner.flow_timesteps(sig) if isinstance(inner, Denoiser) else None
        return den.timesteps(sig)

    def plan(self, rows: List[Dict[str, Any]], pre_noise: float = 0.0) -> None:
        """Build the run's coefficient table (float64 on the host, one float32 copy on the device).

        ``pre_noise``: scale of noise added before the first evaluation (EDM churn at
        ``sigmas[0]``); it gets an extra table row after the evaluation rows.
        """
        if self._planned is not None:  # CUDA-graph capture re-runs the sampler: reuse the same tensors
            return
        rows = list(rows) + [self.row(0.0, in_x=0.0, in_m=0.0, out_x=1.0, out_noise=pre_noise)]
        coef_rows = []
        for r in rows:
            in_x, in_m = self._conversion(r["sigma"]) if "in_x" not in r else (r["in_x"], r["in_m"])
            c = {name: float(v) for name, v in r.items() if name in COEF_DEFAULTS}
            c.update({f"out_h{k}": float(v) for k, v in enumerate(r.get("out_h", ()))})
            c.update(in_x=float(in_x), in_m=float(in_m), guidance=self.guidance_scale)
            coef_rows.append(c)
        # float32 table for the kernels; float64 x (torch path) keeps float64 coefficients
        table = coef_table(coef_rows, device=self.device, dtype=self.table_dtype)
        sig = torch.tensor([r["sigma"] for r in rows[:-1]] or [0.0], dtype=torch.float64)
        ts = self._timesteps(sig)
        sig_dev = sig.to(self.sigma_dtype).to(self.device)
        t_dev = None if ts is None else ts.to(self.sigma_dtype).to(self.device)
        noisy = [c.get("out_noise", 0.0) != 0.0 for c in coef_rows]
        self._planned = (table, sig_dev, t_dev, noisy, [c["in_x"] for c in coef_rows], [c["in_m"] for c in coef_rows],
                         len(rows) - 1)

    # --- the loop ------------------------------------------------------------------------------
    def steps(self, n: int):
        """``range(n)``, with a tqdm bar when ``progress=True``."""
        if self.progress:
            from tqdm.auto import trange

            return trange(n)
        return range(n)

    def pre_churn(self, x: torch.Tensor) -> torch.Tensor:
        """Add the churn noise of step 0 (one fused pass) when it is active."""
        table, _, _, noisy, _, _, pre = self._planned
        if not noisy[pre]:
            return x
        return fused_step(x, x, table, coef_row=pre, seed=self.seed, stream=_PRE_CHURN_STREAM,
                          row_ids=self.row_ids, backend=self.backend)

    def eval(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Raw model output for evaluation ``k`` at the planned noise level (no host sync)."""
        _, sig_dev, t_dev, _, _, _, _ = self._planned
        sig = sig_dev[k].expand(self.batch)
        t = None if t_dev is None else t_dev[k].expand(self.batch)
        den, kw = self.denoiser, self.model_kwargs
        if isinstance(den, Denoiser):
            raw = den.flow_raw(x, sig, t, **kw) if self.space == "flow" else den.raw(x, sig, t, **kw)
        else:
            raw = den(x, sig, **kw)
        if not self._checked:
            want = ((2 * self.batch,) if self.guided else (self.batch,)) + self.x_shape[1:]
            if not isinstance(raw, torch.Tensor):
                raise TypeError(f"the denoiser must return a tensor, got {type(raw).__name__}")
            if tuple(raw.shape) != want:
                what = " ([uncond; cond] halves)" if self.guided else ""
                raise ValueError(f"the denoiser returned shape {tuple(raw.shape)}; expected {want}{what}")
            if raw.dtype not in FLOAT_DTYPES or raw.device != self.device:
                raise TypeError(f"the denoiser must return a float tensor on {self.device}, got "
                                f"{raw.dtype} on {raw.device}")
            self._checked = True
        return raw

    def step(self, x: torch.Tensor, raw: torch.Tensor, k: int, *, x_eval: Optional[torch.Tensor] = None,
             history: Sequence[torch.Tensor] = (), aux: bool = False):
        """The one fused pass of evaluation ``k``: returns the new sample (and the history entry if ``aux``)."""
        table, _, _, noisy, _, _, _ = self._planned
        return fused_step(x, raw, table, x_eval=x_eval, history=tuple(history), coef_row=k, guidance=self.guided,
                          clip=self.clip, seed=self.seed if noisy[k] else None, stream=k + 1,
                          row_ids=self.row_ids, write_aux=aux, backend=self.backend)

    def report(self, i: int, x: torch.Tensor, raw: torch.Tensor, k: int, sigma: float, sigma_hat: float) -> None:
        """Call ``callback(dict(x, i, sigma, sigma_hat, denoised))``; the x0 estimate is formed only here."""
        if self.callback is None:
            return
        _, _, _, _, in_x, in_m, _ = self._planned
        m = raw
        if self.guided:
            m = raw[: self.batch] + self.guidance_scale * (raw[self.batch:] - raw[: self.batch])
        denoised = in_x[k] * x + in_m[k] * m
        if self.clip is not None:
            denoised = denoised.clamp(-self.clip, self.clip)
        self.callback(dict(x=x, i=i, sigma=sigma, sigma_hat=sigma_hat, denoised=denoised))


# ----------------------------------------------------------------------------------------------
# samplers: one short function each, signature (ctx, x, **options) -> x
# ----------------------------------------------------------------------------------------------
def _euler_row(ctx: SamplerContext, sh: float, s1: float, **extra: Any) -> Dict[str, Any]:
    # x_next = x + (s1 - sh) (x - D) / sh  =  (s1/sh) x + (1 - s1/sh) D
    r = s1 / sh
    return ctx.row(sh, out_x=r, out_d=1.0 - r, **extra)


def _single_eval_loop(ctx: SamplerContext, x: torch.Tensor, hats: Sequence[float], aux_hist: int = 0,
                      hist_counts: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The loop of every one-evaluation-per-step sampler (history of ``aux`` entries if ``aux_hist``)."""
    s = ctx.sigmas
    hist = History(aux_hist)
    x = ctx.pre_churn(x)
    for i in ctx.steps(len(s) - 1):
        raw = ctx.eval(x, i)
        if aux_hist:
            x_next, entry = ctx.step(x, raw, i, history=hist.take(hist_counts[i]), aux=True)
            hist.push(entry)
        else:
            x_next = ctx.step(x, raw, i)
        ctx.report(i, x, raw, i, s[i], hats[i])
        x = x_next
    return x


def sample_euler(ctx: SamplerContext, x: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0) -> torch.Tensor:
    """Euler's method on the probability-flow ODE, optional EDM churn (Karras et al. 2022, Alg. 2, first order)."""
    s = ctx.sigmas
    n = len(s) - 1
    hats, churn = churn_schedule(s, s_churn, s_tmin, s_tmax, s_noise)
    ctx.plan([_euler_row(ctx, hats[i], s[i + 1], out_noise=churn[i + 1] if i + 1 < n else 0.0)
              for i in range(n)], pre_noise=churn[0])
    return _single_eval_loop(ctx, x, hats)


def _two_eval_loop(ctx: SamplerContext, x: torch.Tensor, plan: List[Tuple[int, Optional[int]]],
                   hats: Sequence[float], aux: bool) -> torch.Tensor:
    """Loop of the two-evaluation samplers: step A predicts ``x_eval``; step B advances x with its model output."""
    s = ctx.sigmas
    x = ctx.pre_churn(x)
    for i in ctx.steps(len(s) - 1):
        ka, kb = plan[i]
        raw = ctx.eval(x, ka)
        if kb is None:
            x_next = ctx.step(x, raw, ka)
        elif aux:
            x_mid, entry = ctx.step(x, raw, ka, aux=True)
            x_next = ctx.step(x, ctx.eval(x_mid, kb), kb, x_eval=x_mid, history=(entry,))
        else:
            x_mid = ctx.step(x, raw, ka)
            x_next = ctx.step(x, ctx.eval(x_mid, kb), kb, x_eval=x_mid)
        ctx.report(i, x, raw, ka, s[i], hats[i])
        x = x_next
    return x


def _add(rows: List[Dict[str, Any]], row: Dict[str, Any]) -> int:
    rows.append(row)
    return len(rows) - 1


def sample_heun(ctx: SamplerContext, x: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = math.inf, s_noise: float = 1.0) -> torch.Tensor:
    """Heun's second-order method with EDM churn (Karras et al. 2022, Algorithm 2)."""
    s = ctx.sigmas
    n = len(s) - 1
    hats, churn = churn_schedule(s, s_churn, s_tmin, s_tmax, s_noise)
    rows: List[Dict[str, Any]] = []
    plan = []
    for i in range(n):
        sh, s1, nxt = hats[i], s[i + 1], churn[i + 1] if i + 1 < n else 0.0
        if s1 == 0:
            plan.append((_add(rows, _euler_row(ctx, sh, s1, out_noise=nxt)), None))
            continue
        h = s1 - sh
        # A: x_e = Euler step; aux = d1 = (x_hat - D1) / sh.  B: x_hat + h/2 (d1 + (x_e - D2) / s1).
        ka = _add(rows, _euler_row(ctx, sh, s1, aux_x=1.0 / sh, aux_d=-1.0 / sh))
        kb = _add(rows, ctx.row(s1, out_x=1.0, out_h=(h / 2,), out_e=h / (2 * s1), out_d=-h / (2 * s1),
                                out_noise=nxt))
        plan.append((ka, kb))
    ctx.plan(rows, pre_noise=churn[0])
    return _two_eval_loop(ctx, x, plan, hats, aux=True)


def _midpoint_rows(ctx: SamplerContext, rows: List[Dict[str, Any]], sh: float, s_to: float,
                   noise: float) -> Tuple[int, Optional[int]]:
    """DPM-Solver-2 in sigma (k-diffusion's dpm_2): Euler to the geometric midpoint, then the full step."""
    if s_to == 0:
        return _add(rows, _euler_row(ctx, sh, s_to, out_noise=noise)), None
    sm = math.exp(0.5 * (math.log(sh) + math.log(s_to)))
    ka = _add(rows, _euler_row(ctx, sh, sm))
    dt = s_to - sh
    kb = _add(rows, ctx.row(sm, out_x=1.0, out_e=dt / sm, out_d=-dt / sm, out_noise=noise))
    return ka, kb


def sample_dpm_2(ctx: SamplerContext, x: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 (midpoint) in sigma with EDM churn (Lu et al. 2022; Karras et al. 2022 variant)."""
    s = ctx.sigmas
    n = len(s) - 1
    hats, churn = churn_schedule(s, s_churn, s_tmin, s_tmax, s_noise)
    rows: List[Dict[str, Any]] = []
    plan = [_midpoint_rows(ctx, rows, hats[i], s[i + 1], churn[i + 1] if i + 1 < n else 0.0) for i in range(n)]
    ctx.plan(rows, pre_noise=churn[0])
    return _two_eval_loop(ctx, x, plan, hats, aux=False)


def sample_dpm_2_ancestral(ctx: SamplerContext, x: torch.Tensor, *, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver-2: midpoint step to sigma_down, then noise sigma_up (Lu et al. 2022; k-diffusion)."""
    s = ctx.sigmas
    rows: List[Dict[str, Any]] = []
    plan = []
    for i in range(len(s) - 1):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        plan.append(_midpoint_rows(ctx, rows, s[i], sd, s_noise * su if s[i + 1] > 0 else 0.0))
    ctx.plan(rows)
    return _two_eval_loop(ctx, x, plan, s[:-1], aux=False)


def _ancestral_euler(ctx: SamplerContext, x: torch.Tensor, eta: float, s_noise: float) -> torch.Tensor:
    s = ctx.sigmas
    rows = []
    for i in range(len(s) - 1):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        rows.append(_euler_row(ctx, s[i], sd, out_noise=s_noise * su if s[i + 1] > 0 else 0.0))
    ctx.plan(rows)
    return _single_eval_loop(ctx, x, s[:-1])


def sample_euler_ancestral(ctx: SamplerContext, x: torch.Tensor, *, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral Euler: Euler step to sigma_down, then fresh noise of size sigma_up (Ho et al. 2020; k-diffusion)."""
    return _ancestral_euler(ctx, x, eta, s_noise)


def sample_ddim(ctx: SamplerContext, x: torch.Tensor, *, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12); in VE variables its step is exactly the ancestral split with eta."""
    return _ancestral_euler(ctx, x, eta, 1.0)


def sample_ddpm(ctx: SamplerContext, x: torch.Tensor) -> torch.Tensor:
    """DDPM ancestral sampling from the posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, Algorithm 2)."""
    return _ancestral_euler(ctx, x, 1.0, 1.0)


def sample_lms(ctx: SamplerContext, x: torch.Tensor, *, order: int = 4) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth in sigma) on the PF ODE (cf. Liu et al. 2022, PNDM; k-diffusion)."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_HISTORY + 1:
        raise ValueError(f"order must be an int in [1, {MAX_HISTORY + 1}], got {order!r}")
    s = ctx.sigmas
    rows, counts = [], []
    for i in range(len(s) - 1):
        cur = min(i + 1, order)
        c = lms_coefficients(s, i, cur)
        # x += c0 (x - D)/s + sum_j c_j d_{i-j}; aux is this step's derivative (x - D)/s
        rows.append(ctx.row(s[i], out_x=1.0 + c[0] / s[i], out_d=-c[0] / s[i], out_h=c[1:],
                            aux_x=1.0 / s[i], aux_d=-1.0 / s[i]))
        counts.append(cur - 1)
    ctx.plan(rows)
    return _single_eval_loop(ctx, x, s[:-1], aux_hist=order - 1, hist_counts=counts)


def sample_dpmpp_2s_ancestral(ctx: SamplerContext, x: torch.Tensor, *, eta: float = 1.0,
                              s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_2s_ancestral)."""
    s = ctx.sigmas
    rows: List[Dict[str, Any]] = []
    plan = []
    for i in range(len(s) - 1):
        sd, su = ancestral_split(s[i], s[i + 1], eta)
        noise = s_noise * su if s[i + 1] > 0 else 0.0
        if sd == 0:
            plan.append((_add(rows, _euler_row(ctx, s[i], sd, out_noise=noise)), None))
            continue
        h = math.log(s[i]) - math.log(sd)
        sm = s[i] * math.exp(-0.5 * h)
        ka = _add(rows, ctx.row(s[i], out_x=sm / s[i], out_d=-math.expm1(-0.5 * h)))
        kb = _add(rows, ctx.row(sm, out_x=sd / s[i], out_d=-math.expm1(-h), out_noise=noise))
        plan.append((ka, kb))
    ctx.plan(rows)
    return _two_eval_loop(ctx, x, plan, s[:-1], aux=False)


def sample_dpmpp_sde(ctx: SamplerContext, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ (stochastic, 2 stages) (Lu et al. 2022; k-diffusion's sample_dpmpp_sde), Philox noise per stage."""
    if not 0 < r <= 1:
        raise ValueError(f"r must be in (0, 1], got {r!r}")
    s = ctx.sigmas
    rows: List[Dict[str, Any]] = []
    plan = []
    fac = 1.0 / (2.0 * r)
    for i in range(len(s) - 1):
        if s[i + 1] == 0:
            plan.append((_add(rows, _euler_row(ctx, s[i], 0.0)), None))
            continue
        h = math.log(s[i]) - math.log(s[i + 1])
        s_mid = s[i] * math.exp(-r * h)
        sd1, su1 = ancestral_split(s[i], s_mid, eta)
        sd2, su2 = ancestral_split(s[i], s[i + 1], eta)
        # A: x2 = (sd1/s) x + (1 - sd1/s) D + su1 z;  aux = D
        ka = _add(rows, ctx.row(s[i], out_x=sd1 / s[i], out_d=1.0 - sd1 / s[i], out_noise=s_noise * su1))
        # B: x = (sd2/s) x + (1 - sd2/s) ((1 - fac) D + fac D2) + su2 z
        w = 1.0 - sd2 / s[i]
        kb = _add(rows, ctx.row(s_mid, out_x=sd2 / s[i], out_d=w * fac, out_h=(w * (1.0 - fac),),
                                out_noise=s_noise * su2))
        plan.append((ka, kb))
    ctx.plan(rows)
    return _two_eval_loop(ctx, x, plan, s[:-1], aux=True)


def sample_dpmpp_2m(ctx: SamplerContext, x: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order in log-sigma (Lu et al. 2022, Algorithm 2)."""
    s = ctx.sigmas
    rows, counts = [], []
    for i in range(len(s) - 1):
        if s[i + 1] == 0:
            rows.append(ctx.row(s[i], out_x=0.0, out_d=1.0))
            counts.append(0)
            continue
        h = math.log(s[i]) - math.log(s[i + 1])
        a = -math.expm1(-h)
        if i == 0:
            rows.append(ctx.row(s[i], out_x=s[i + 1] / s[i], out_d=a))
            counts.append(0)
        else:
            r = (math.log(s[i - 1]) - math.log(s[i])) / h
            rows.append(ctx.row(s[i], out_x=s[i + 1] / s[i], out_d=a * (1 + 1 / (2 * r)), out_h=(-a / (2 * r),)))
            counts.append(1)
    ctx.plan(rows)
    return _single_eval_loop(ctx, x, s[:-1], aux_hist=1, hist_counts=counts)


def sample_dpmpp_2m_sde(ctx: SamplerContext, x: torch.Tensor, *, eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_2m_sde)."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    s = ctx.sigmas
    rows, counts = [], []
    h_last = None
    for i in range(len(s) - 1):
        if s[i + 1] == 0:
            rows.append(ctx.row(s[i], out_x=0.0, out_d=1.0))
            counts.append(0)
            continue
        h = math.log(s[i]) - math.log(s[i + 1])
        eta_h = eta * h
        a = -math.expm1(-h - eta_h)
        noise = s[i + 1] * math.sqrt(-math.expm1(-2.0 * eta_h)) * s_noise
        out_x = s[i + 1] / s[i] * math.exp(-eta_h)
        if h_last is None:
            rows.append(ctx.row(s[i], out_x=out_x, out_d=a, out_noise=noise))
            counts.append(0)
        else:
            r = h_last / h
            b = (0.5 * a if solver_type == "midpoint" else (a / (-h - eta_h) + 1.0)) / r
            rows.append(ctx.row(s[i], out_x=out_x, out_d=a + b, out_h=(-b,), out_noise=noise))
            counts.append(1)
        h_last = h
    ctx.plan(rows)
    return _single_eval_loop(ctx, x, s[:-1], aux_hist=1, hist_counts=counts)


def sample_dpmpp_3m_sde(ctx: SamplerContext, x: torch.Tensor, *, eta: float = 1.0,
                        s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's sample_dpmpp_3m_sde)."""
    s = ctx.sigmas
    rows, counts = [], []
    h_1 = h_2 = None
    for i in range(len(s) - 1):
        if s[i + 1] == 0:
            rows.append(ctx.row(s[i], out_x=0.0, out_d=1.0))
            counts.append(0)
            h_1, h_2 = None, h_1  # k-diffusion keeps going, but nothing follows a step to 0
            continue
        h = math.log(s[i]) - math.log(s[i + 1])
        h_eta = h * (eta + 1.0)
        # weights over (D, D_prev1, D_prev2)
        w = np.array([-math.expm1(-h_eta), 0.0, 0.0])
        phi_2 = math.expm1(-h_eta) / h_eta + 1.0
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = np.array([1.0, -1.0, 0.0]) / r0
            d1_1 = np.array([0.0, 1.0, -1.0]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            w = w + phi_2 * d1 - phi_3 * d2
            counts.append(2)
        elif h_1 is not None:
            w = w + phi_2 * np.array([1.0, -1.0, 0.0]) / (h_1 / h)
            counts.append(1)
        else:
            counts.append(0)
        noise = s[i + 1] * math.sqrt(-math.expm1(-2.0 * h * eta)) * s_noise if eta else 0.0
        rows.append(ctx.row(s[i], out_x=math.exp(-h_eta), out_d=w[0], out_h=tuple(w[1:1 + counts[-1]]),
                            out_noise=noise))
        h_1, h_2 = h, h_1
    ctx.plan(rows)
    return _single_eval_loop(ctx, x, s[:-1], aux_hist=2, hist_counts=counts)


def sample_unipc(ctx: SamplerContext, x: torch.Tensor, *, order: int = 2, variant: str = "bh2") -> torch.Tensor:
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
    s = ctx.sigmas
    n = len(s) - 1
    lam = [-math.log(v) if v > 0 else math.inf for v in s]
    orders = [min(order, n - k, k + 1) for k in range(n)]

    def update(k: int, p: int):
        """Step k -> k+1 of order p; vectors over (m_k, m_{k-1}, m_{k-2}, m_{k-3}).

        Returns (B_h, predictor weights incl. the first-order part, predictor D1 part,
        corrector D1 part, corrector weight of the new model output).
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

    rows, counts = [], []
    for k in range(n):
        if s[k + 1] == 0:
            rows.append(ctx.row(s[k], out_x=0.0, out_d=1.0))
            counts.append(0)
            continue
        # basis (x_k^p, m_k, m_{k-1}, m_{k-2}, m_{k-3}); start from the predicted x_k^p
        xc = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
        if k > 0:
            # UniC: x_k^c = x_k^p + B_h sum_j (rhos_p - rhos_c)_j D1_j - B_h rho_c_last (m_k - m_{k-1}),
            # the D1_j of step k-1 being over (m_{k-1}, m_{k-2}, ...): shift by one slot.
            b_h, _, pred, corr, rho_last = update(k - 1, orders[k - 1])
            xc[2:] += (b_h * (pred - corr))[:3]
            xc[1] -= b_h * rho_last
            xc[2] += b_h * rho_last
        _, pred_w, _, _, _ = update(k, orders[k])
        out = (s[k + 1] / s[k]) * xc
        out[1:] += pred_w
        used = [j for j in range(1, 4) if out[1 + j] != 0.0]
        counts.append(max(used) if used else 0)
        rows.append(ctx.row(s[k], out_x=out[0], out_d=out[1], out_h=tuple(out[2:2 + counts[-1]])))
    ctx.plan(rows)
    return _single_eval_loop(ctx, x, s[:-1], aux_hist=3, hist_counts=counts)


def sample_flow_euler(ctx: SamplerContext, x: torch.Tensor) -> torch.Tensor:
    """Euler on the rectified-flow ODE dx/ds = v in flow time s (Lipman et al. 2023; Liu et al. 2023)."""
    s = ctx.sigmas
    # x + (s1 - s) v with v = (x - x0)/s  ==  (s1/s) x + (1 - s1/s) x0
    ctx.plan([_euler_row(ctx, s[i], s[i + 1]) for i in range(len(s) - 1)])
    return _single_eval_loop(ctx, x, s[:-1])


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
}

#: samplers whose noise draws make the result depend on ``seed`` (with their default options).
STOCHASTIC = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_3m_sde", "ddpm")


def list_samplers() -> List[str]:
    """Names accepted by ``sample(sampler=...)``.

    Example:
        >>> "dpmpp_2m" in list_samplers()
        True
    """
    return list(SAMPLERS)


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def host_sigmas(sigmas: Any, flow: bool = False) -> List[float]:
    """Validate ``sigmas`` and return them as host floats: the one host read of a run, before the loop.

    Validation runs on the Python list so that torch.compile sees a single ``tolist()``.

    Example:
        >>> host_sigmas(torch.tensor([2.0, 1.0, 0.0]))
        [2.0, 1.0, 0.0]
    """
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
        sig = sigmas.detach().to("cpu", torch.float64).tolist()
    else:
        try:
            sig = [float(v) for v in sigmas]
        except (TypeError, ValueError):
            raise TypeError(f"sigmas must be a 1-D tensor or sequence of floats, got {type(sigmas).__name__}") from None
    if len(sig) < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got {len(sig)}")
    if not all(math.isfinite(v) for v in sig):
        raise ValueError("sigmas must be finite")
    if any(v < 0 for v in sig):
        raise ValueError("sigmas must be non-negative")
    if any(b > a for a, b in zip(sig, sig[1:])):
        raise ValueError("sigmas must be non-increasing")
    if sig[-1] != 0:
        raise ValueError(f"sigmas must end in 0, got last value {sig[-1]}")
    if any(v == 0 for v in sig[:-1]):
        raise ValueError("only the last entry of sigmas may be 0")
    if flow and sig[0] > 1:
        raise ValueError(f"flow_euler takes flow times s in [0, 1] as sigmas, got sigmas[0] = {sig[0]}")
    return sig


_GRAPHS: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_MAX_GRAPHS = 4


def sample(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: Union[torch.Tensor, Sequence[float]],
    *,
    sampler: str = "dpmpp_2m",
    seed: Optional[int] = None,
    row_ids: Optional[torch.Tensor] = None,
    guidance_scale: Optional[float] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    progress: bool = False,
    backend: str = "auto",
    cuda_graph: bool = False,
    clip: Optional[float] = None,
    model_kwargs: Optional[Dict[str, Any]] = None,
    **options: Any,
) -> torch.Tensor:
    """Run ``sampler`` from ``x`` (at noise level ``sigmas[0]``) down the ``sigmas`` schedule.

    Args:
        denoiser: ``denoiser(x, sigma) -> x0 estimate`` (k-diffusion convention), or a
            :class:`fastdiff.denoisers.Denoiser` wrapper (its output conversion is fused into
            the step) or a :class:`~fastdiff.denoisers.CFGDenoiser` (one network call on the
            doubled batch; guidance fused into the step).
        x: the starting sample (float tensor, batch first), e.g. ``initial_noise(...) * sigmas[0]``.
            It is not modified.
        sigmas: non-increasing noise levels ending in 0 (flow times in [0, 1] for ``flow_euler``).
        sampler: one of :func:`list_samplers`.
        seed: Philox key of all noise; ``None`` draws one from torch's global CPU generator.
        row_ids: int64 ``(batch,)`` global row ids (default ``arange(batch)``): a row's noise
            depends only on ``(seed, row id)``.
        guidance_scale: classifier-free guidance scale (only with a ``CFGDenoiser``; default its ``scale``).
        callback: called after each step with ``dict(x, i, sigma, sigma_hat, denoised)``.
        progress: show a tqdm progress bar.
        backend: ``fused_step`` backend ("auto", "triton", "torch", "reference").
        cuda_graph: capture the sampling loop in a CUDA graph (CUDA tensors only; a CPU
            ``x`` raises ValueError). The denoiser must be capturable (static shapes, no host
            syncs). The first call with a given configuration runs one eager warm-up pass and
            captures; later calls with the same denoiser object, shapes, sigmas, options and
            ``seed`` replay the graph (with ``seed=None`` every call draws a new seed and captures anew).
        clip: clamp the x0 estimate to ``[-clip, clip]`` inside the step.
        model_kwargs: extra keyword arguments for every network call.
        **options: the sampler's own options (e.g. ``eta``, ``s_churn``, ``solver_type``).

    Example:
        >>> from fastdiff.schedules import karras_sigmas
        >>> from fastdiff.toy import GaussianMixture
        >>> gmm = GaussianMixture.ring(k=4)
        >>> sig = karras_sigmas(8, 0.01, 10.0)
        >>> x0 = sample(gmm.denoiser, initial_noise((4, 2), 0) * 10.0, sig, sampler="euler_ancestral", seed=0)
        >>> x0.shape
        torch.Size([4, 2])
    """
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list_samplers()}, got {sampler!r}")
    fn = SAMPLERS[sampler]
    params = inspect.signature(fn).parameters
    valid = [p for p, v in params.items() if v.kind == inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"sampler {sampler!r} got unknown option(s) {unknown}; it takes {valid}")
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    check_batch("x", x)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    flow = sampler == "flow_euler"
    host = host_sigmas(sigmas, flow)
    if flow and not _supports_flow(denoiser):
        raise ValueError("flow_euler needs a FlowDenoiser (or a plain flow-space denoiser callable), got "
                         f"{type(denoiser).__name__}")
    guided = bool(getattr(denoiser, "doubles_batch", False))
    if guidance_scale is not None:
        if not guided:
            raise ValueError("guidance_scale needs a CFGDenoiser (a denoiser that calls the network on [uncond; cond])")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())  # a CPU tensor: no device sync
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63) or None, got {seed!r}")
    row_ids = maybe_rows(row_ids, x.shape[0], x.device)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")

    def make_ctx(xx: torch.Tensor, rid: Optional[torch.Tensor]) -> SamplerContext:
        return SamplerContext(denoiser, xx, host, seed=seed, row_ids=rid, guidance_scale=guidance_scale,
                              backend=backend, callback=callback, progress=progress, clip=clip,
                              model_kwargs=dict(model_kwargs or {}), space="flow" if flow else "ve")

    if not cuda_graph:
        with torch.no_grad():
            return fn(make_ctx(x, row_ids), x, **options)

    if x.device.type != "cuda":
        raise ValueError("cuda_graph=True needs CUDA tensors; x is on "
                         f"{x.device} (use cuda_graph=False on CPU)")
    if callback is not None or progress:
        raise ValueError("cuda_graph=True cannot call back or show progress inside the captured loop")
    key = (sampler, tuple(x.shape), x.dtype, x.device, tuple(host), seed, row_ids is None, guidance_scale, backend,
           clip, tuple(sorted(options.items())), tuple(sorted((model_kwargs or {}).keys())))
    entry = _GRAPHS.get(key)
    if entry is None or entry[0] is not denoiser:
        static_x = x.clone()
        static_rows = None if row_ids is None else row_ids.clone()
        ctx = make_ctx(static_x, static_rows)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            fn(ctx, static_x, **options)  # warm-up: compiles kernels, builds the table once
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.no_grad(), torch.cuda.graph(graph):
                static_out = fn(ctx, static_x, **options)
        except Exception as err:  # pragma: no cover - needs CUDA
            raise RuntimeError("CUDA-graph capture of the sampling loop failed; the denoiser must have static "
                               f"shapes and no host syncs (use cuda_graph=False): {err}") from err
        entry = (denoiser, graph, static_x, static_rows, static_out)
        _GRAPHS[key] = entry
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(key)
    _, graph, static_x, static_rows, static_out = entry
    static_x.copy_(x)
    if static_rows is not None:
        static_rows.copy_(row_ids)
    graph.replay()
    return static_out.clone()
