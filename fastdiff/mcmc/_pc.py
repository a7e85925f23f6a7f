"""Predictor-corrector sampling of a score-based SDE model (Song et al. 2021, Alg. 1-3)."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch

from .._backend import maybe_rows
from ..ops._common import check_int
from ..ops.langevin import langevin_step
from ..ops.step import fused_step, step_coefs
from ..random import philox_normal, resolve_seed
from ._sde import _SDE, _SDES
from ._util import _MAX_STREAM, Callback, _check_callable, _check_grad, _check_pos_float, _check_x, _compute_dtype, _iter

__all__ = ["predictor_corrector", "PREDICTORS", "CORRECTORS", "SNR_RULES"]

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "none")
CORRECTORS = ("langevin", "none")
SNR_RULES = ("per_sample", "batch_mean")


def _predictor_table(sde: _SDE, ts: Sequence[float], n: int, predictor: str, denoise: bool, device):
    """fused_step coefficients, one row per time: ``d = a x + b score`` (the mean), ``out = d + c z``."""
    a, b, c = [], [], []
    for t in ts:
        if predictor == "reverse_diffusion":
            f, gg = sde.discretize(t, n)
            # x_mean = x - (f x - G^2 score)
            a.append(1.0 - f), b.append(gg * gg), c.append(gg)
        else:  # Euler-Maruyama on the reverse SDE with dt = -1/N
            f, gg = sde.drift_diffusion(t)
            a.append(1.0 - f / n), b.append(gg * gg / n), c.append(gg / math.sqrt(n))
    if denoise:
        c[-1] = 0.0  # the last step returns the noise-free mean
    return step_coefs(in_x=a, in_m=b, out_d=1.0, out_noise=c, aux_x=0.0, aux_d=1.0, device=device)


def _check_finite_score(g_norm: torch.Tensor, step: int, t: float) -> None:
    """ValueError naming ``score_model`` and the first chain whose score has a NaN or inf (CPU norms only)."""
    bad = ~torch.isfinite(g_norm)
    if bool(bad.any()):
        chains = bad.nonzero().flatten().tolist()
        raise ValueError(f"score_model returned a non-finite score (NaN or inf) for chain {chains[0]}"
                         f"{f' (and {len(chains) - 1} more)' if len(chains) > 1 else ''} at step {step} (t={t:g}); "
                         f"the corrector's step size is computed from the score's norm")


def predictor_corrector(
    score_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sde: Union[_SDE, str],
    n_steps: int,
    *,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    snr_rule: str = "batch_mean",
    noise_norm: Optional[str] = None,
    max_step_ratio: Optional[float] = 1.0,
    eps: Optional[float] = None,
    denoise: bool = True,
    seed: Optional[int] = None,
    row_ids: Optional[torch.Tensor] = None,
    callback: Callback = None,
    progress: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Predictor-corrector sampling of a score-based SDE model (Song et al. 2021, Alg. 1-3).

    On the grid ``t_i = linspace(1, eps, n_steps)``: ``n_corrector_steps`` Langevin
    corrector steps, then one predictor step, as in the reference implementation.

    * Predictor ``"reverse_diffusion"``: ``x <- x - f_i(x) + G_i^2 score + G_i z`` with the
      SDE's discretisation (DDPM ancestral for VP, SMLD for VE); ``"euler_maruyama"``:
      the reverse SDE with ``dt = -1/N``. Both are one fused_step pass with a
      coefficient table built once on the host in float64.
    * Corrector ``"langevin"``: ``x <- x + h score + sqrt(2h) z`` with the signal-to-noise
      rule ``h = 2 alpha_i (snr |z| / |score|)**2``, norms averaged over the batch
      (``snr_rule="batch_mean"``, the reference code's choice) or per sample
      (``"per_sample"``, batch-split invariant). ``noise_norm="sampled"`` uses the
      norm of the actual draw (generated once by ``philox_normal`` and passed to the
      kernel); ``"expected"`` uses ``sqrt(dim)`` and keeps the noise in-kernel. Default
      (None): "sampled" for batch_mean, "expected" for per_sample -- a per-sample sampled
      norm makes the step grow with |z|, i.e. heavy-tailed noise in low dimension.
      Note that a state-dependent step (per_sample) shifts the corrector's stationary
      law towards ``p_t / h(x)``; batch_mean does not.
      The per-sample rule gives unbounded steps where the score vanishes (between
      modes), so its steps are capped at ``max_step_ratio * sigma_t**2``: the Hessian of
      ``log p_t`` is at least ``-I / sigma_t**2`` (``x_t`` carries Gaussian noise of
      variance sigma_t**2), so a Langevin step up to ``sigma_t**2`` stays stable. The
      cap does not bind at typical points (the rule gives ~``2 snr**2 sigma_t**2``);
      ``None`` disables it. The batch-mean rule is never capped.
    * ``denoise``: the last predictor step returns its noise-free mean.

    Args:
        score_model: ``(x, t) -> grad log p_t(x)``; ``t`` is a (n_chains,) tensor of times in (0, 1].
        x: a prior sample (e.g. ``sde.prior_sample(shape, seed)``); not modified.
        sde: a :class:`VPSDE`, :class:`SubVPSDE`, :class:`VESDE` or one of "vp", "subvp", "ve".
        n_steps: number of time steps N.
        eps: final time (default 1e-3 for VP/sub-VP, 1e-5 for VE).
        Noise streams: step i, corrector j uses ``i*(n_corrector_steps+1) + j``; the
        predictor ``i*(n_corrector_steps+1) + n_corrector_steps``.
        callback: ``{"i", "t", "x"}`` after each time step.

    Example:
        >>> gmm = fastdiff.toy.GaussianMixture.ring()
        >>> sde = fastdiff.VESDE(0.01, 10.0)
        >>> x = sde.prior_sample((2048, 2), seed=0)
        >>> score = lambda x, t: gmm.grad_log_prob(x, sde.sigma(t).to(x.dtype))
        >>> x0 = fastdiff.predictor_corrector(score, x, sde, 500, seed=1)
    """
    _check_callable("score_model", score_model)
    if isinstance(sde, str):
        if sde.lower() not in _SDES:
            raise ValueError(f"sde must be one of {sorted(_SDES)} or an SDE instance, got {sde!r}")
        sde = _SDES[sde.lower()]()
    if not isinstance(sde, _SDE):
        raise TypeError(f"sde must be a VPSDE, SubVPSDE or VESDE (or their names), got {type(sde).__name__}")
    batch, n_cols = _check_x(x)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    n_corrector_steps = check_int("n_corrector_steps", n_corrector_steps, minimum=0)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    if corrector not in CORRECTORS:
        raise ValueError(f"corrector must be one of {CORRECTORS}, got {corrector!r}")
    if predictor == "none" and (corrector == "none" or n_corrector_steps == 0):
        raise ValueError("predictor='none' needs a corrector (corrector='langevin', n_corrector_steps >= 1)")
    if snr_rule not in SNR_RULES:
        raise ValueError(f"snr_rule must be one of {SNR_RULES}, got {snr_rule!r}")
    if noise_norm is None:
        noise_norm = "sampled" if snr_rule == "batch_mean" else "expected"
    if noise_norm not in ("sampled", "expected"):
        raise ValueError(f"noise_norm must be 'sampled' or 'expected', got {noise_norm!r}")
    snr = _check_pos_float("snr", snr)
    eps = sde.default_eps if eps is None else _check_pos_float("eps", eps)
    if eps >= 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    n_corr = n_corrector_steps if corrector == "langevin" else 0
    per_step = n_corr + 1
    if n_steps * per_step > _MAX_STREAM:
        raise ValueError("n_steps * (n_corrector_steps + 1) must be at most 2**32 (one noise stream per draw)")
    seed = resolve_seed(seed)
    dev = x.device
    row_ids = maybe_rows(row_ids, batch, dev)
    cd = _compute_dtype(x)

    # Host float64 schedule math, once; one table / vector moved to the device once.
    ts = [1.0 + (eps - 1.0) * i / (n_steps - 1) for i in range(n_steps)] if n_steps > 1 else [1.0]
    t_dev = torch.tensor(ts, dtype=cd, device=dev)
    coefs = (_predictor_table(sde, ts, n_steps, predictor, denoise, dev) if predictor != "none" else None)
    corr_alpha = torch.tensor([sde.corrector_alpha(t, n_steps) for t in ts], dtype=torch.float32, device=dev)
    if max_step_ratio is not None:
        max_step_ratio = _check_pos_float("max_step_ratio", max_step_ratio)
    cap = None
    if snr_rule == "per_sample" and max_step_ratio is not None:
        sig_t = sde.marginal(torch.tensor(ts, dtype=torch.float64))[1]
        cap = (max_step_ratio * sig_t ** 2).to(device=dev, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    # the corrector's step comes from the score's norm (over the batch for batch_mean): a NaN/inf score would
    # give a NaN step (every chain's, for batch_mean). On CPU the norms are host memory, so a bad score is
    # reported by chain; on a GPU this would sync once per corrector step, so it is not checked there.
    check_scores = dev.type == "cpu" and batch > 0
    x = x.detach().clone(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for i in _iter(n_steps, progress, "predictor_corrector"):
            t_vec = t_dev[i].expand(batch)
            for j in range(n_corr):
                stream = i * per_step + j
                g = _check_grad(score_model(x, t_vec), x, "score_model")
                g_norm = g.reshape(batch, n_cols).to(torch.float32).norm(dim=1)
                if check_scores:
                    _check_finite_score(g_norm, i, ts[i])
                last_mean = denoise and predictor == "none" and i == n_steps - 1 and j == n_corr - 1
                if noise_norm == "sampled" or last_mean:
                    z = philox_normal(x.shape, seed, stream, row_ids=row_ids, device=dev, dtype=torch.float32)
                    z_norm = z.reshape(batch, n_cols).norm(dim=1)
                else:
                    z = None
                    z_norm = torch.full((batch,), math.sqrt(n_cols), dtype=torch.float32, device=dev)
                if snr_rule == "batch_mean":
                    g_norm, z_norm = g_norm.mean().expand(batch), z_norm.mean().expand(batch)
                h = 2.0 * corr_alpha[i] * (snr * z_norm / g_norm.clamp_min(tiny)) ** 2
                h = h.clamp(tiny, 1e30) if cap is None else h.clamp(tiny).minimum(cap[i])
                h = h.contiguous()
                if last_mean:  # the corrector-only sampler's noise-free final mean
                    z = torch.zeros_like(z)
                if z is None:
                    langevin_step(x, g, h, seed=seed, stream=stream, row_ids=row_ids, out=x, backend=backend)
                else:
                    langevin_step(x, g, h, noise=z, out=x, backend=backend)
            if coefs is not None:
                g = _check_grad(score_model(x, t_vec), x, "score_model")
                fused_step(x, g, coefs, coef_row=i, seed=seed, stream=i * per_step + n_corr, row_ids=row_ids,
                           out=x, backend=backend)
            if callback is not None:
                callback({"i": i, "t": ts[i], "x": x})
    return x
