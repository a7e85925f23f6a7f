"""Metropolis-adjusted Langevin (MALA) with per-chain step-size adaptation, and its Philox uniforms."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch

from ..ops._common import check_int
from ..ops.langevin import langevin_select, langevin_step
from ..random import philox4x32_10, resolve_seed, split_seed
from ._draws import DrawRecorder, check_record_every
from ._util import (_MAX_STREAM, Callback, StepSize, _check_callable, _check_x, _compute_dtype, _iter,
                    _log_prob_and_grad, _rows, _step_vector)

__all__ = ["mala", "mala_log_accept", "philox_uniform"]

_MASK32 = 0xFFFFFFFF

# log step-size bounds during adaptation: keeps h a positive, finite float32.
_LOG_H_MIN, _LOG_H_MAX = -30.0, 15.0


def philox_uniform(seed: int, stream: int, row_ids: torch.Tensor) -> torch.Tensor:
    """One float64 uniform in (0, 1) per row id from Philox4x32-10, keyed by ``(seed, row id, stream)``.

    Counter words as in ``fastdiff.kernels.philox`` with column group 0; two
    32-bit outputs give 53 random bits. Use a ``stream`` no normal draw of the
    same run uses.

    Example:
        >>> u = philox_uniform(0, 7, torch.arange(4))
    """
    k0, k1 = split_seed(seed)
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream < _MAX_STREAM:
        raise ValueError(f"stream must be an int in [0, 2**32), got {stream!r}")
    if not isinstance(row_ids, torch.Tensor) or row_ids.dtype != torch.int64 or row_ids.dim() != 1:
        raise ValueError("row_ids must be a 1-D int64 tensor")
    c0 = torch.zeros_like(row_ids)
    c1 = row_ids & _MASK32
    c2 = torch.full_like(row_ids, stream)
    c3 = (row_ids >> 32) & _MASK32
    o0, o1, _, _ = philox4x32_10(c0, c1, c2, c3, k0, k1)
    bits = (o0 >> 5) * 67108864 + (o1 >> 6)  # 27 + 26 = 53 bits
    return (bits.to(torch.float64) + 0.5) * (1.0 / 9007199254740992.0)


def mala_log_accept(
    lp_x: torch.Tensor,
    lp_y: torch.Tensor,
    g_x: torch.Tensor,
    g_y: torch.Tensor,
    z: torch.Tensor,
    step_size: torch.Tensor,
) -> torch.Tensor:
    """MALA's log acceptance ratio for ``y = x + h*g_x + sqrt(2h)*z``, one value per chain.

    ``log p(y) - log p(x) + log q(x|y) - log q(y|x)`` with
    ``q(b|a) = N(b; a + h*grad(a), 2h I)``. Written through the noise ``z`` and
    ``s = g_x + g_y`` (``x - y - h*g_y = -(h*s + sqrt(2h)*z)``), which avoids the
    cancellation of ``x - y``:

        log_alpha = lp_y - lp_x - h/4 * |s|^2 - sqrt(h/2) * <s, z>

    Non-finite results, a non-finite ``lp_y`` (NaN or +-inf) or gradient become
    ``-inf`` (reject). A current ``lp_x = -inf`` (chain outside the support)
    gives ``+inf`` for any valid proposal.

    Example:
        >>> x, z, h = torch.randn(8, 2), torch.randn(8, 2), torch.full((8,), 0.1)
        >>> y = x - h[:, None] * x + (2 * h[:, None]) ** 0.5 * z   # a proposal for N(0, I): grad = -x
        >>> lp = lambda v: -0.5 * (v ** 2).sum(1)
        >>> la = mala_log_accept(lp(x), lp(y), -x, -y, z, h)       # (n_chains,)
    """
    b = lp_x.shape[0]
    dt = lp_x.dtype
    n = g_x.numel() // b if b else 0  # explicit: reshape(0, -1) is ambiguous for an empty batch
    s = (g_x.to(dt) + g_y.to(dt)).reshape(b, n)
    zz = z.to(dt).reshape(b, n)
    h = step_size.to(dt)
    s2 = (s * s).sum(1)
    sz = (s * zz).sum(1)
    la = (lp_y.to(dt) - lp_x) - 0.25 * h * s2 - torch.sqrt(0.5 * h) * sz
    bad = ~torch.isfinite(lp_y) | ~torch.isfinite(s2) | ~torch.isfinite(sz) | torch.isnan(la)
    return torch.where(bad, torch.full_like(la, -math.inf), la)


class _StepAdapter:
    """Per-chain Robbins-Monro on log step size with Polyak averaging, all on the device.

    ``log h <- log h + gain * m**-kappa * (a - target)`` with ``a`` the chain's acceptance
    probability at iteration ``m``; the frozen step is ``exp`` of the mean of ``log h`` over
    the second half of warm-up. (Dual averaging's aggressive early steps and noisy
    per-chain iterates overshoot badly for single-chain acceptance signals; the averaged
    Robbins-Monro iterate does not.)
    """

    def __init__(self, h0: torch.Tensor, target: float, n_warm: int, gain: float = 2.0, kappa: float = 0.6):
        self.log_h = torch.log(h0.double())
        self.sum = torch.zeros_like(self.log_h)
        self.count = 0
        self.avg_from = n_warm // 2
        self.target, self.gain, self.kappa = target, gain, kappa

    def update(self, m: int, accept_prob: torch.Tensor) -> torch.Tensor:
        """Iteration ``m`` (1-based) with acceptance probabilities -> the next step sizes (float32)."""
        rate = self.gain * m ** (-self.kappa)  # host float: no sync
        self.log_h.add_(rate * (accept_prob.double() - self.target)).clamp_(_LOG_H_MIN, _LOG_H_MAX)
        if m > self.avg_from:
            self.sum += self.log_h
            self.count += 1
        return self.log_h.exp().float()

    def final(self) -> torch.Tensor:
        log_h = self.sum / self.count if self.count else self.log_h
        return log_h.exp().float()


def mala(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step_size: StepSize,
    n_steps: int,
    *,
    grad_log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    seed: Optional[int] = None,
    row_ids: Optional[torch.Tensor] = None,
    callback: Callback = None,
    progress: bool = False,
    adapt_steps: int = 0,
    target_accept: float = 0.574,
    return_step_size: bool = False,
    record_every: Optional[int] = None,
    backend: str = "auto",
) -> Union[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
           Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996; Besag 1994), many chains at once.

    Proposal ``y = x + h*grad log p(x) + sqrt(2h)*z`` (one fused pass, Philox
    stream ``2*i``, the kernel also returns ``z``), accepted per chain with
    probability ``min(1, p(y) q(x|y) / (p(x) q(y|x)))`` (:func:`mala_log_accept`)
    against a Philox uniform from stream ``2*i + 1``; the select is a second fused
    pass. NaN / inf log-densities or gradients at a proposal reject it. Accept
    counts, log-densities and step sizes stay on the device.

    Step-size adaptation (optional): during the first ``adapt_steps`` of the
    ``n_steps`` each chain tunes its own log step size by Robbins-Monro towards
    ``target_accept`` (0.574 is optimal for MALA, Roberts & Rosenthal 1998); the
    average over the second half of warm-up is then frozen, so the remaining steps
    are an exact MALA chain.

    Args:
        log_prob: ``x -> log p(x)``, one value per chain (shape (n_chains,)).
        x: initial chains (n_chains, ...); not modified.
        step_size: h > 0, a float or a (n_chains,) tensor (the initial value when adapting).
        n_steps: total number of steps, warm-up included.
        grad_log_prob: ``x -> grad log p(x)``; default: autograd through ``log_prob``.
        seed, row_ids: Philox key and global chain ids (batch-split invariance).
        callback: called after each step with ``{"i", "x", "accept", "log_prob",
            "log_accept_ratio", "step_size"}`` (buffers are reused: clone what you keep).
        progress: tqdm progress bar.
        adapt_steps: warm-up steps with adaptation (0: none).
        target_accept: target acceptance probability of the adaptation, in (0, 1).
        return_step_size: also return the (frozen) per-chain step sizes.
        record_every: keep the chains after every ``record_every``-th step (warm-up included) in one
            preallocated buffer.
        backend: "auto" | "triton" | "torch" | "reference".

    Returns:
        ``(x, acceptance_rate)`` -- the chains and each chain's acceptance rate over the
        steps after warm-up (over all steps if there are none after it; NaN if
        ``n_steps == 0``) -- plus the step sizes when ``return_step_size``, plus ``draws`` last
        with ``record_every``: ``(x, acceptance, draws)`` or ``(x, acceptance, step_size, draws)``.
        ``draws`` is shaped ``(n_chains, n_steps // record_every, *event)`` (arviz's ``(chain, draw,
        ...)`` layout), x's dtype: ``draws[:, j]`` is the state after step ``(j + 1) * record_every``.

    Example:
        >>> lp = lambda x: -0.5 * (x ** 2).sum(1)
        >>> x, acc = fastdiff.mala(lp, 4 * torch.randn(4096, 3), 0.5, 500, seed=0, adapt_steps=200)
    """
    _check_callable("log_prob", log_prob)
    if grad_log_prob is not None:
        _check_callable("grad_log_prob", grad_log_prob)
    batch, _ = _check_x(x)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    if 2 * n_steps > _MAX_STREAM:
        raise ValueError(f"n_steps must be at most 2**31 (two noise streams per step), got {n_steps}")
    adapt_steps = check_int("adapt_steps", adapt_steps, minimum=0)
    if adapt_steps > n_steps:
        raise ValueError(f"adapt_steps must be <= n_steps ({n_steps}), got {adapt_steps}")
    if isinstance(target_accept, bool) or not isinstance(target_accept, (int, float)) or not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be a float in (0, 1), got {target_accept!r}")
    every = check_record_every(record_every, n_steps)
    dev = x.device
    h = _step_vector(step_size, batch, dev)
    seed = resolve_seed(seed)
    rid = _rows(row_ids, batch, dev)
    cd = _compute_dtype(x)

    def value_and_grad(v: torch.Tensor):
        return _log_prob_and_grad(log_prob, grad_log_prob, v, batch, cd)

    x = x.detach().clone(memory_format=torch.contiguous_format)
    y = torch.empty_like(x)
    z = torch.empty(x.shape, dtype=cd, device=dev)
    n_acc = torch.zeros(batch, dtype=torch.int64, device=dev)
    count_from = adapt_steps if adapt_steps < n_steps else 0
    adapt = _StepAdapter(h, target_accept, adapt_steps) if adapt_steps > 0 else None
    rec = DrawRecorder(x, n_steps, every) if every is not None else None
    with torch.no_grad():
        lp, g = value_and_grad(x)
        # A chain started where log p is NaN is treated as outside the support (-inf): it moves on its
        # first valid proposal instead of being stuck forever.
        lp = torch.where(torch.isnan(lp), torch.full_like(lp, -math.inf), lp)
        g = g.contiguous()
        for i in _iter(n_steps, progress, "mala"):
            langevin_step(x, g, h, seed=seed, stream=2 * i, row_ids=rid, out=y, noise_out=z, backend=backend)
            lp_y, g_y = value_and_grad(y)
            log_alpha = mala_log_accept(lp, lp_y, g, g_y, z, h)
            u = philox_uniform(seed, 2 * i + 1, rid)
            accept = torch.log(u).to(cd) < log_alpha
            langevin_select(x, y, accept, out=x, backend=backend)
            langevin_select(g, g_y.contiguous(), accept, out=g, backend=backend)
            lp = torch.where(accept, lp_y, lp)
            if i >= count_from:
                n_acc += accept
            if adapt is not None and i < adapt_steps:
                prob = torch.exp(log_alpha.clamp(max=0.0))  # -inf -> 0
                h = adapt.update(i + 1, prob)
                if i + 1 == adapt_steps:
                    h = adapt.final()
            if rec is not None:
                rec.after_step(i, x)
            if callback is not None:
                callback({"i": i, "x": x, "accept": accept, "log_prob": lp, "log_accept_ratio": log_alpha,
                          "step_size": h})
    n_counted = n_steps - count_from
    rate = n_acc.to(cd) / n_counted if n_counted > 0 else torch.full((batch,), math.nan, dtype=cd, device=dev)
    out = (x, rate, h) if return_step_size else (x, rate)
    return out if rec is None else out + (rec.draws,)
