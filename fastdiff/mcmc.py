"""Langevin dynamics and score-based MCMC for many chains at once, on the fused Langevin and step ops.

Samplers of ``p(x) = exp(log_prob(x)) / Z`` (``log_prob`` is an unnormalised
log-density, what the seed notes call ``score(y)``; ``grad_log_prob`` is its
gradient, the modern "score"):

* :func:`langevin` -- unadjusted Langevin (ULA), ``x + h*grad + sqrt(2*h*T)*z``;
  stationary law ``p**(1/T)`` as ``h -> 0``. (The notes' ``y + 2*g*dt + eps*sqrt(dt)``
  is stationary for ``exp(4*log_prob)``, not ``p``.)
* :func:`mala` -- Metropolis-adjusted Langevin: exact for any step size, per-chain
  accept/reject, optional step-size adaptation during warm-up.
* :func:`annealed_langevin` -- NCSN annealed Langevin over decreasing noise levels.
* :func:`predictor_corrector` -- reverse-SDE predictor + Langevin corrector for the
  VP, sub-VP and VE SDEs (:class:`VPSDE`, :class:`SubVPSDE`, :class:`VESDE`).
* :func:`energy_grad` -- ``grad_log_prob`` of an ``nn.Module`` energy / log-density
  by autograd, with no graph kept between steps.

Every update is one fused pass (``fastdiff.ops.langevin_step`` /
``fastdiff.ops.fused_step``) with in-kernel Philox noise; acceptance statistics
and adapted step sizes live on the device, so no step loop syncs with the host.
Each random draw has its own Philox stream keyed by ``(seed, chain id, stream)``,
so a chain's trajectory depends only on its id (``row_ids``), never on how the
chains are batched.

Example:
    >>> import torch, fastdiff
    >>> x = 5 * torch.randn(4096, 2)
    >>> x = fastdiff.mcmc.langevin(lambda x: -x, x, 0.01, 2000, seed=0)     # ~ N(0, I)
    >>> x, acc = fastdiff.mcmc.mala(lambda x: -0.5 * (x ** 2).sum(1), x, 0.8, 200, seed=1)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from ._backend import maybe_rows
from .ops._common import check_float, rows_of
from .ops.langevin import check_step_tensor, langevin_select, langevin_step
from .ops.step import fused_step, step_coefs
from .random import philox4x32_10, philox_normal, split_seed

__all__ = [
    "langevin",
    "mala",
    "annealed_langevin",
    "predictor_corrector",
    "energy_grad",
    "EnergyGrad",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "mala_log_accept",
    "philox_uniform",
]

StepSize = Union[float, torch.Tensor]
Callback = Optional[Callable[[Dict[str, Any]], None]]

_MASK32 = 0xFFFFFFFF
_MAX_STREAM = 2**32
# log step-size bounds during adaptation: keeps h a positive, finite float32.
_LOG_H_MIN, _LOG_H_MAX = -30.0, 15.0


# ----------------------------------------------------------------------------------------------------------
# argument checks and small helpers


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _check_int(name: str, v, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


def _check_pos_float(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite float, got {v!r}")
    return float(v)


def _resolve_seed(seed: Optional[int]) -> int:
    """A seed for the run; ``None`` draws one from torch's global CPU generator (once, before the loop)."""
    if seed is None:
        return int(torch.randint(0, 2**62, (), dtype=torch.int64))
    split_seed(seed)  # validates
    return seed


def _check_x(x) -> Tuple[int, int]:
    check_float("x", x)
    if x.dim() == 0:
        raise ValueError("x must have a chain (batch) dimension first, got a 0-d tensor")
    return rows_of(x)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _step_vector(step_size: StepSize, batch: int, device: torch.device) -> torch.Tensor:
    """Per-chain step sizes as a float32 (batch,) tensor (the precision the kernel uses), validated once."""
    if isinstance(step_size, torch.Tensor):
        # values checked once before the loop, on any device (not a per-step sync); a private copy
        return check_step_tensor(step_size, batch, device, check_values_on_device=True).detach().clone()
    h = _check_pos_float("step_size", step_size)
    return torch.full((batch,), h, dtype=torch.float32, device=device)


def _iter(n: int, progress: bool, desc: str):
    if progress:
        from tqdm.auto import tqdm

        return tqdm(range(n), desc=desc)
    return range(n)


def _rows(row_ids: Optional[torch.Tensor], batch: int, device: torch.device) -> torch.Tensor:
    rid = maybe_rows(row_ids, batch, device)
    return torch.arange(batch, dtype=torch.int64, device=device) if rid is None else rid


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


def _value_and_grad(fn: Callable, x: torch.Tensor, batch: int, name: str, sign: float = 1.0):
    """``(sign*fn(x), d(sign*fn)/dx)`` per chain by autograd; nothing of the graph outlives the call."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = fn(xr)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
        if out.numel() != batch or (out.dim() > 1 and out.shape[0] != batch):
            raise ValueError(f"{name} must return one value per chain (shape ({batch},)), got {tuple(out.shape)}")
        out = out.reshape(batch)
        if sign != 1.0:
            out = -out
        if out.requires_grad:
            # summing is exact per chain: chain b's value depends only on row b.
            (g,) = torch.autograd.grad(out.sum(), xr, allow_unused=True)
            g = torch.zeros_like(x) if g is None else g
        else:
            g = torch.zeros_like(x)
    return out.detach(), g.detach()


def _check_grad(g, x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{name} must return a tensor shaped like x, got {type(g).__name__}")
    if g.shape != x.shape:
        raise ValueError(f"{name} must return a tensor of shape {tuple(x.shape)}, got {tuple(g.shape)}")
    return g


# ----------------------------------------------------------------------------------------------------------
# energy-based models


class EnergyGrad:
    """``grad_log_prob`` of an energy or log-density function (e.g. an ``nn.Module``) by autograd.

    Calling the object returns ``grad log p(x)`` detached; ``log_prob(x)`` gives
    ``log p(x)`` (``-E(x)`` for ``kind="energy"``) for :func:`mala`;
    ``value_and_grad(x)`` both from one forward/backward. The graph is built
    under ``torch.enable_grad()`` from a detached copy of ``x``, differentiated
    only with respect to that copy (parameter ``.grad`` fields are untouched)
    and freed before returning, so nothing accumulates over thousands of steps.
    Put modules with batch statistics (BatchNorm) in eval mode: chains must not
    interact.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))
        >>> g = fastdiff.energy_grad(net)          # log p = -net(x)
        >>> x = fastdiff.langevin(g, torch.randn(512, 2), 1e-2, 100, seed=0)
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], kind: str = "energy"):
        _check_callable("module_or_fn", fn)
        if kind not in ("energy", "log_prob"):
            raise ValueError(f"kind must be 'energy' (log p = -E) or 'log_prob', got {kind!r}")
        self.fn, self.kind = fn, kind
        self._sign = -1.0 if kind == "energy" else 1.0

    def _out(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if not isinstance(out, torch.Tensor) or out.numel() != b:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"module_or_fn must return one value per chain (shape ({b},) or ({b}, 1)), got {shape}")
        return self._sign * out.reshape(b)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` per chain, shape (batch,) (differentiable, so :func:`mala` can use autograd on it)."""
        return self._out(x, self.fn(x))

    def value_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x), grad log p(x))``, both detached."""
        check_float("x", x)
        return _value_and_grad(self.log_prob, x, x.shape[0], "module_or_fn")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(x)[1]


def energy_grad(module_or_fn: Callable[[torch.Tensor], torch.Tensor], *, kind: str = "energy") -> EnergyGrad:
    """Turn an energy ``E(x)`` (``log p = -E``) or a log-density (``kind="log_prob"``) into ``grad_log_prob``.

    The function (typically an ``nn.Module``) maps (batch, ...) to (batch,) or
    (batch, 1). See :class:`EnergyGrad` for the memory guarantees.

    Example:
        >>> g = fastdiff.energy_grad(lambda x: 0.5 * (x ** 2).sum(1))   # N(0, I)
        >>> torch.allclose(g(torch.ones(3, 2)), -torch.ones(3, 2))
        True
    """
    return EnergyGrad(module_or_fn, kind)


# ----------------------------------------------------------------------------------------------------------
# unadjusted Langevin


def langevin(
    grad_log_prob: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step_size: StepSize,
    n_steps: int,
    *,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    row_ids: Optional[torch.Tensor] = None,
    callback: Callback = None,
    progress: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Unadjusted Langevin algorithm (Roberts & Tweedie 1996): ``x <- x + h*grad log p(x) + sqrt(2*h*T)*z``.

    Its stationary law tends to ``p**(1/T)`` as ``h -> 0`` (with an O(h) bias;
    use :func:`mala` for exactness). Step ``i`` draws its noise from Philox stream
    ``i``.

    Args:
        grad_log_prob: ``x -> grad log p(x)``, a tensor shaped like x (see :func:`energy_grad`).
        x: initial chains, shape (n_chains, ...); not modified.
        step_size: h > 0, a float or one per chain ((n_chains,) tensor).
        n_steps: number of updates.
        temperature: T > 0.
        seed: Philox key (None: drawn from torch's global generator).
        row_ids: int64 (n_chains,) global chain ids (default 0..n-1) -- batch-split invariance.
        callback: called after each step with ``{"i": step, "x": chains}`` (x is updated in
            place afterwards: clone what you keep).
        progress: show a tqdm progress bar.
        backend: "auto" | "triton" | "torch" | "reference" (see ``fastdiff.ops.langevin_step``).

    Returns:
        The chains after ``n_steps`` updates (a new tensor, x's dtype).

    Example:
        >>> x = fastdiff.langevin(lambda x: -x, 3 * torch.randn(8192, 2), 0.01, 1000, seed=0)
    """
    _check_callable("grad_log_prob", grad_log_prob)
    batch, _ = _check_x(x)
    _check_int("n_steps", n_steps)
    if n_steps > _MAX_STREAM:
        raise ValueError(f"n_steps must be at most 2**32 (one noise stream per step), got {n_steps}")
    temperature = _check_pos_float("temperature", temperature)
    if isinstance(step_size, torch.Tensor):
        h: StepSize = _step_vector(step_size, batch, x.device)
    else:
        h = _check_pos_float("step_size", step_size)
    seed = _resolve_seed(seed)
    row_ids = maybe_rows(row_ids, batch, x.device)
    x = x.detach().clone(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for i in _iter(n_steps, progress, "langevin"):
            g = _check_grad(grad_log_prob(x), x, "grad_log_prob")
            langevin_step(x, g, h, temperature=temperature, seed=seed, stream=i, row_ids=row_ids, out=x,
                          backend=backend)
            if callback is not None:
                callback({"i": i, "x": x})
    return x


# ----------------------------------------------------------------------------------------------------------
# MALA


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
    s = (g_x.to(dt) + g_y.to(dt)).reshape(b, -1)
    zz = z.to(dt).reshape(b, -1)
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
    backend: str = "auto",
):
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
        backend: "auto" | "triton" | "torch" | "reference".

    Returns:
        ``(x, acceptance_rate)`` -- the chains and each chain's acceptance rate over the
        steps after warm-up (over all steps if there are none after it; NaN if
        ``n_steps == 0``) -- plus the step sizes when ``return_step_size``.

    Example:
        >>> lp = lambda x: -0.5 * (x ** 2).sum(1)
        >>> x, acc = fastdiff.mala(lp, 4 * torch.randn(4096, 3), 0.5, 500, seed=0, adapt_steps=200)
    """
    _check_callable("log_prob", log_prob)
    if grad_log_prob is not None:
        _check_callable("grad_log_prob", grad_log_prob)
    batch, _ = _check_x(x)
    _check_int("n_steps", n_steps)
    if 2 * n_steps > _MAX_STREAM:
        raise ValueError(f"n_steps must be at most 2**31 (two noise streams per step), got {n_steps}")
    _check_int("adapt_steps", adapt_steps)
    if adapt_steps > n_steps:
        raise ValueError(f"adapt_steps must be <= n_steps ({n_steps}), got {adapt_steps}")
    if isinstance(target_accept, bool) or not isinstance(target_accept, (int, float)) or not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be a float in (0, 1), got {target_accept!r}")
    dev = x.device
    h = _step_vector(step_size, batch, dev)
    seed = _resolve_seed(seed)
    rid = _rows(row_ids, batch, dev)
    cd = _compute_dtype(x)

    def value_and_grad(v: torch.Tensor):
        if grad_log_prob is None:
            lp, g = _value_and_grad(log_prob, v, batch, "log_prob")
        else:
            lp = log_prob(v)
            if not isinstance(lp, torch.Tensor) or lp.numel() != batch:
                raise ValueError(f"log_prob must return one value per chain (shape ({batch},))")
            lp = lp.reshape(batch)
            g = _check_grad(grad_log_prob(v), v, "grad_log_prob")
        return lp.to(cd), g.to(cd)

    x = x.detach().clone(memory_format=torch.contiguous_format)
    y = torch.empty_like(x)
    z = torch.empty(x.shape, dtype=cd, device=dev)
    n_acc = torch.zeros(batch, dtype=torch.int64, device=dev)
    count_from = adapt_steps if adapt_steps < n_steps else 0
    adapt = _StepAdapter(h, target_accept, adapt_steps) if adapt_steps > 0 else None
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
            if callback is not None:
                callback({"i": i, "x": x, "accept": accept, "log_prob": lp, "log_accept_ratio": log_alpha,
                          "step_size": h})
    n_counted = n_steps - count_from
    rate = n_acc.to(cd) / n_counted if n_counted > 0 else torch.full((batch,), math.nan, dtype=cd, device=dev)
    return (x, rate, h) if return_step_size else (x, rate)


# ----------------------------------------------------------------------------------------------------------
# annealed Langevin (NCSN)


def _sigma_list(sigmas) -> list:
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        vals = sigmas.detach().double().cpu().tolist()  # once, before the loop
    else:
        try:
            vals = [float(s) for s in sigmas]
        except TypeError as e:
            raise TypeError("sigmas must be a 1-D tensor or a sequence of floats") from e
    if not vals:
        raise ValueError("sigmas must not be empty")
    if not all(s > 0 and math.isfinite(s) for s in vals):
        raise ValueError("sigmas must be positive and finite")
    if any(b > a for a, b in zip(vals, vals[1:])):
        raise ValueError("sigmas must be non-increasing (annealing goes from the largest noise level down)")
    return vals


def annealed_langevin(
    score_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: Union[Sequence[float], torch.Tensor],
    *,
    n_steps_each: int = 100,
    step_lr: float = 2e-5,
    denoise: bool = False,
    seed: Optional[int] = None,
    row_ids: Optional[torch.Tensor] = None,
    callback: Callback = None,
    progress: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019, Alg. 1).

    For each noise level ``sigma_i`` (decreasing), ``n_steps_each`` Langevin
    steps with ``h_i = step_lr * (sigma_i / sigma_L)**2`` on
    ``grad log p_sigma_i``. ``denoise=True`` adds the final Tweedie step
    ``x + sigma_L**2 * score(x, sigma_L)`` of NCSNv2 (Song & Ermon 2020).
    Step ``(i, s)`` uses Philox stream ``i * n_steps_each + s``.

    Args:
        score_model: ``(x, sigma) -> grad log p_sigma(x)`` (shape of x), where ``sigma``
            is a (n_chains,) tensor of the current noise level (x's compute dtype).
        x: initial chains (e.g. uniform or wide Gaussian noise); not modified.
        sigmas: the decreasing noise levels sigma_1 > ... > sigma_L.
        n_steps_each, step_lr: steps per level and the base step size.
        seed, row_ids, callback, progress, backend: as in :func:`langevin`; the callback
            gets ``{"i", "level", "sigma", "x"}``.

    Example:
        >>> gmm = fastdiff.toy.GaussianMixture.ring()
        >>> sig = torch.logspace(1, -2, 10).tolist()
        >>> x = fastdiff.annealed_langevin(gmm.grad_log_prob, 8 * torch.rand(2048, 2) - 4, sig, seed=0)
    """
    _check_callable("score_model", score_model)
    batch, _ = _check_x(x)
    sig = _sigma_list(sigmas)
    _check_int("n_steps_each", n_steps_each, 1)
    if len(sig) * n_steps_each > _MAX_STREAM:
        raise ValueError("len(sigmas) * n_steps_each must be at most 2**32 (one noise stream per step)")
    step_lr = _check_pos_float("step_lr", step_lr)
    seed = _resolve_seed(seed)
    row_ids = maybe_rows(row_ids, batch, x.device)
    cd = _compute_dtype(x)
    sig_dev = torch.tensor(sig, dtype=cd, device=x.device)  # one host->device copy; indexed without sync
    x = x.detach().clone(memory_format=torch.contiguous_format)
    k = 0
    with torch.no_grad():
        for lvl in _iter(len(sig), progress, "annealed_langevin"):
            h = step_lr * (sig[lvl] / sig[-1]) ** 2
            s_vec = sig_dev[lvl].expand(batch)
            for _ in range(n_steps_each):
                g = _check_grad(score_model(x, s_vec), x, "score_model")
                langevin_step(x, g, h, seed=seed, stream=k, row_ids=row_ids, out=x, backend=backend)
                if callback is not None:
                    callback({"i": k, "level": lvl, "sigma": sig[lvl], "x": x})
                k += 1
        if denoise:
            g = _check_grad(score_model(x, sig_dev[-1].expand(batch)), x, "score_model")
            x = (x.to(cd) + sig[-1] ** 2 * g.to(cd)).to(x.dtype)
    return x


# ----------------------------------------------------------------------------------------------------------
# SDEs and predictor-corrector sampling


class _SDE:
    """A linear-drift SDE ``dx = f(t) x dt + g(t) dw`` on t in [0, 1]; host float64 math on python floats."""

    prior_std: float = 1.0
    default_eps: float = 1e-3

    def drift_diffusion(self, t: float) -> Tuple[float, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def marginal(self, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def discretize(self, t: float, n: int) -> Tuple[float, float]:
        """Reverse-diffusion discretisation ``(f_i, G_i)``: ``x_{i+1} = (1 + f_i) x_i + G_i z``."""
        f, g = self.drift_diffusion(t)
        dt = 1.0 / n
        return f * dt, g * math.sqrt(dt)

    def corrector_alpha(self, t: float, n: int) -> float:
        """The ``alpha_i`` factor of the SNR step rule (1 except for the VP SDE)."""
        return 1.0

    def prior_sample(self, shape, seed: int, *, row_ids: Optional[torch.Tensor] = None, device=None,
                     dtype: torch.dtype = torch.float32, stream: int = _MAX_STREAM - 1) -> torch.Tensor:
        """Draw x_T from the prior N(0, prior_std**2 I) from Philox (stream 2**32-1 by default)."""
        z = philox_normal(shape, seed, stream, row_ids=row_ids, device=device, dtype=torch.float64)
        return (self.prior_std * z).to(dtype)

    @staticmethod
    def _t(t) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float64)


class VPSDE(_SDE):
    """Variance-preserving SDE (Song et al. 2021): ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dw``, linear beta.

    ``x_t = alpha(t) x0 + sigma(t) eps`` with ``log alpha = -t**2 (b1 - b0)/4 - t b0/2`` and
    ``sigma = sqrt(1 - alpha**2)``.

    Example:
        >>> alpha, sigma = fastdiff.VPSDE().marginal(0.5)
    """

    default_eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if isinstance(beta_min, bool) or not isinstance(beta_min, (int, float)) or not 0 <= beta_min < math.inf:
            raise ValueError(f"beta_min must be a float >= 0, got {beta_min!r}")
        if isinstance(beta_max, bool) or not isinstance(beta_max, (int, float)) or not beta_min <= beta_max < math.inf \
                or beta_max <= 0:
            raise ValueError(f"beta_max must be a finite float >= beta_min and > 0, got {beta_max!r}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def beta(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t):
        t = self._t(t)
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t), sigma(t))`` of ``x_t = alpha x0 + sigma eps`` (float64)."""
        la = self._log_alpha(t)
        return la.exp(), torch.sqrt(-torch.expm1(2.0 * la))

    def drift_diffusion(self, t: float) -> Tuple[float, float]:
        b = self.beta(t)
        return -0.5 * b, math.sqrt(b)

    def _discrete_beta(self, t: float, n: int) -> float:
        # DDPM's discrete betas linspace(b0/N, b1/N, N), indexed like the reference code.
        i = int(math.floor(t * (n - 1)))
        return (self.beta_min + (self.beta_max - self.beta_min) * (i / (n - 1) if n > 1 else 0.0)) / n

    def discretize(self, t: float, n: int) -> Tuple[float, float]:
        b = self._discrete_beta(t, n)
        if not b < 1.0:
            raise ValueError(f"n_steps={n} is too small for the discrete VP chain: beta_max / n_steps must be < 1")
        return math.sqrt(1.0 - b) - 1.0, math.sqrt(b)

    def corrector_alpha(self, t: float, n: int) -> float:
        return 1.0 - self._discrete_beta(t, n)


class SubVPSDE(VPSDE):
    """Sub-VP SDE (Song et al. 2021): ``dx = -beta/2 x dt + sqrt(beta (1 - exp(-2 int_0^t beta))) dw``.

    ``x_t = alpha(t) x0 + sigma(t) eps`` with the VP ``alpha`` and ``sigma = 1 - alpha**2``.

    Example:
        >>> alpha, sigma = fastdiff.SubVPSDE().marginal(0.5)
    """

    def marginal(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        la = self._log_alpha(t)
        return la.exp(), -torch.expm1(2.0 * la)

    def drift_diffusion(self, t: float) -> Tuple[float, float]:
        b = self.beta(t)
        discount = -math.expm1(-2.0 * self.beta_min * t - (self.beta_max - self.beta_min) * t * t)
        return -0.5 * b, math.sqrt(b * discount)

    # the generic Euler discretisation (as in the reference implementation)
    discretize = _SDE.discretize

    def corrector_alpha(self, t: float, n: int) -> float:
        return 1.0


class VESDE(_SDE):
    """Variance-exploding SDE (Song et al. 2021): ``dx = sigma(t) sqrt(2 log(smax/smin)) dw``.

    ``x_t = x0 + sigma(t) eps`` with ``sigma(t) = smin (smax/smin)**t``; prior N(0, smax**2 I).

    Example:
        >>> alpha, sigma = fastdiff.VESDE(0.01, 50.0).marginal(1.0)
    """

    default_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        smin = _check_pos_float("sigma_min", sigma_min)
        smax = _check_pos_float("sigma_max", sigma_max)
        if not smax > smin:
            raise ValueError(f"sigma_max must exceed sigma_min, got sigma_min={smin}, sigma_max={smax}")
        self.sigma_min, self.sigma_max = smin, smax
        self.prior_std = smax

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** self._t(t)

    def marginal(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        s = self.sigma(t)
        return torch.ones_like(s), s

    def drift_diffusion(self, t: float) -> Tuple[float, float]:
        s = float(self.sigma(t))
        return 0.0, s * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def _discrete_sigma(self, i: int, n: int) -> float:
        if i < 0:
            return 0.0
        frac = i / (n - 1) if n > 1 else 1.0
        return math.exp(math.log(self.sigma_min) + frac * math.log(self.sigma_max / self.sigma_min))

    def discretize(self, t: float, n: int) -> Tuple[float, float]:
        # SMLD's discrete chain: G_i = sqrt(sigma_i^2 - sigma_{i-1}^2) (sigma_{-1} = 0).
        i = int(math.floor(t * (n - 1)))
        s, s_prev = self._discrete_sigma(i, n), self._discrete_sigma(i - 1, n)
        return 0.0, math.sqrt(s * s - s_prev * s_prev)


_SDES = {"vp": VPSDE, "subvp": SubVPSDE, "sub-vp": SubVPSDE, "ve": VESDE}
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
    _check_int("n_steps", n_steps, 1)
    _check_int("n_corrector_steps", n_corrector_steps, 0)
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
    seed = _resolve_seed(seed)
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
    x = x.detach().clone(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for i in _iter(n_steps, progress, "predictor_corrector"):
            t_vec = t_dev[i].expand(batch)
            for j in range(n_corr):
                stream = i * per_step + j
                g = _check_grad(score_model(x, t_vec), x, "score_model")
                g_norm = g.reshape(batch, -1).to(torch.float32).norm(dim=1)
                last_mean = denoise and predictor == "none" and i == n_steps - 1 and j == n_corr - 1
                if noise_norm == "sampled" or last_mean:
                    z = philox_normal(x.shape, seed, stream, row_ids=row_ids, device=dev, dtype=torch.float32)
                    z_norm = z.reshape(batch, -1).norm(dim=1)
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
