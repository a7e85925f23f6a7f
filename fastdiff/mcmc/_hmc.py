"""Hamiltonian Monte Carlo for many chains on the fused leapfrog ops, with warm-up that uses all chains at once."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch

from ..ops._common import check_int
from ..ops.hmc import check_inv_mass, hmc_leapfrog, hmc_refresh
from ..ops.langevin import langevin_select
from ..random import resolve_seed
from ._adapt import ChEES, DualAveraging, MassWindow, jitter_factor, mass_windows
from ._draws import DrawRecorder, check_record_every
from ._mala import philox_uniform
from ._util import (_MAX_STREAM, Callback, StepSize, _check_callable, _check_grad, _check_x, _compute_dtype, _iter,
                    _log_prob_and_grad, _rows, _step_vector)

__all__ = ["hmc", "hmc_log_accept", "ADAPT_METHODS"]

ADAPT_METHODS = ("dual_averaging", "chees")


def hmc_log_accept(lp_start: torch.Tensor, lp_end: torch.Tensor, noise: torch.Tensor, p_end: torch.Tensor,
                   inv_mass: Optional[torch.Tensor]) -> torch.Tensor:
    """HMC's log acceptance ratio per chain: ``(log p(x') - K(p')) - (log p(x) - K(p))``.

    ``K(p) = p^T M^-1 p / 2``; the fresh momentum's is ``|z|^2 / 2`` from the refresh noise ``z``. A per-chain
    reduction in torch (one read of ``z`` and ``p'``). NaN, a non-finite ``lp_end`` or kinetic energy reject
    (``-inf``); a start outside the support (``lp_start = -inf``) accepts any valid end.

    Example:
        >>> z, p = torch.randn(8, 2), torch.randn(8, 2)
        >>> la = hmc_log_accept(torch.zeros(8), torch.zeros(8), z, p, None)   # = (|z|^2 - |p|^2) / 2
    """
    b = lp_start.shape[0]
    dt = lp_start.dtype
    n = p_end.numel() // b if b else 0  # explicit: reshape(0, -1) is ambiguous for an empty batch
    p = p_end.to(dt).reshape(b, n)
    k_end = 0.5 * ((p * p) if inv_mass is None else (p * p) * inv_mass.to(dt)).sum(1)
    k_start = 0.5 * noise.to(dt).reshape(b, n).square().sum(1)
    la = (lp_end.to(dt) - k_end) - (lp_start - k_start)
    bad = ~torch.isfinite(lp_end) | ~torch.isfinite(k_end) | torch.isnan(la)
    return torch.where(bad, torch.full_like(la, -math.inf), la)


def _check_mass(mass, x: torch.Tensor) -> Optional[torch.Tensor]:
    if mass is None:
        return None
    im = check_inv_mass(mass, x, name="mass", check_values_on_device=True)
    return 1.0 / im


def _check_options(n_steps, n_leapfrog, adapt_steps, target_accept, adapt, jitter, max_leapfrog):
    n_steps = check_int("n_steps", n_steps, minimum=0)
    if 2 * n_steps > _MAX_STREAM:
        raise ValueError(f"n_steps must be at most 2**31 (two noise streams per step), got {n_steps}")
    n_leapfrog = check_int("n_leapfrog", n_leapfrog, minimum=1)
    max_leapfrog = check_int("max_leapfrog", max_leapfrog, minimum=1)
    adapt_steps = check_int("adapt_steps", adapt_steps, minimum=0)
    if adapt_steps > n_steps:
        raise ValueError(f"adapt_steps must be <= n_steps ({n_steps}), got {adapt_steps}")
    if isinstance(target_accept, bool) or not isinstance(target_accept, (int, float)) or not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be a float in (0, 1), got {target_accept!r}")
    if adapt not in ADAPT_METHODS:
        raise ValueError(f"adapt must be one of {ADAPT_METHODS}, got {adapt!r}")
    if jitter is None:
        jitter = 1.0 if adapt == "chees" else 0.0
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be a float in [0, 1] (or None for the method's default), got {jitter!r}")
    return n_steps, n_leapfrog, adapt_steps, float(target_accept), float(jitter), max_leapfrog


def hmc(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step_size: StepSize,
    n_steps: int,
    *,
    n_leapfrog: int = 10,
    grad_log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    mass: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    row_ids: Optional[torch.Tensor] = None,
    adapt_steps: int = 0,
    target_accept: float = 0.8,
    adapt: str = "dual_averaging",
    adapt_mass: bool = True,
    jitter: Optional[float] = None,
    max_leapfrog: int = 1000,
    return_step_size: bool = False,
    record_every: Optional[int] = None,
    callback: Callback = None,
    progress: bool = False,
    backend: str = "auto",
) -> Union[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, ...]]:
    """Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011) for many chains, with warm-up across chains.

    Each iteration draws a momentum ``p ~ N(0, M)`` (diagonal ``M``, shared by all chains), integrates
    ``L`` leapfrog steps of size ``h`` (``L + 1`` fused passes, ``L`` gradient evaluations: see
    ``fastdiff.ops.hmc``) and accepts the end per chain with probability
    ``min(1, exp(H(x, p) - H(x', p')))`` (:func:`hmc_log_accept`, a Philox uniform, the select fused in
    ``langevin_select``). Iteration ``i`` uses Philox streams ``2i`` (momentum) and ``2i + 1`` (uniform).

    Trajectory lengths are jittered with ``jitter`` in [0, 1]: iteration ``i`` takes
    ``L_i = ceil((1 - jitter * u_i) * L)`` steps, ``u_i`` a Halton sequence shared by all chains (so the
    number of gradient calls is the same for every chain and no chain's law depends on the others).

    Warm-up (the first ``adapt_steps`` iterations; the rest are an exact HMC chain with frozen parameters):

    * ``adapt="dual_averaging"``: the step size by dual averaging (Hoffman & Gelman 2014) towards
      ``target_accept``: per chain when ``step_size`` is a (n_chains,) tensor, one for all chains (on the
      chains' mean acceptance probability) when it is a float; ``L = n_leapfrog``.
    * ``adapt="chees"``: one step size (dual averaging on the mean acceptance) and the trajectory length
      ``T = L h`` by ChEES (Hoffman, Radul & Sountsov 2021), starting from ``n_leapfrog`` steps and at most
      ``max_leapfrog``; jitter defaults to 1 (``L_i`` uniform over ``1..L`` as in the paper). The host reads
      ``L`` from the device about 20 times over the warm-up (the loop count), nowhere else.
    * ``adapt_mass``: the diagonal mass ``M^-1 = Var(x)``, pooled over chains and iterations in windows at
      10-30% and 30-50% of warm-up (Stan's regularisation); the step-size adaptation restarts after each.

    The cross-chain adaptations (shared step, ChEES, mass) make chains depend on one another during warm-up
    by design; with per-chain steps and no mass adaptation, or without warm-up, a chain's trajectory depends
    only on ``(seed, row id)``.

    Args:
        log_prob: ``x -> log p(x)``, one value per chain (shape (n_chains,)).
        x: initial chains (n_chains, ...); not modified.
        step_size: h > 0, a float or a (n_chains,) tensor (the initial value when adapting).
        n_steps: number of HMC iterations, warm-up included.
        n_leapfrog: leapfrog steps per iteration (ChEES: the initial number).
        grad_log_prob: ``x -> grad log p(x)``; default: autograd through ``log_prob``.
        mass: diagonal of ``M`` (x's event shape), positive; default identity (the start of mass adaptation).
        seed, row_ids: Philox key and global chain ids (batch-split invariance).
        adapt_steps: warm-up iterations (0: no adaptation).
        target_accept: the acceptance probability the step size is tuned to, in (0, 1).
        adapt: "dual_averaging" or "chees".
        adapt_mass: adapt the diagonal mass during warm-up (when ``adapt_steps > 0``).
        jitter: trajectory-length jitter in [0, 1]; None: 1 for ChEES, 0 for dual averaging.
        max_leapfrog: the most leapfrog steps ChEES may choose.
        return_step_size: also return the (frozen) per-chain step sizes.
        record_every: keep every k-th state after warm-up; returns ``draws`` shaped
            ``(n_chains, (n_steps - adapt_steps) // k, *event)``.
        callback: called after each iteration with ``{"i", "x", "accept", "log_prob", "log_accept_ratio",
            "step_size", "n_leapfrog", "inv_mass"}`` (buffers are reused: clone what you keep).
        progress: tqdm progress bar.
        backend: "auto" | "triton" | "torch" | "reference".

    Returns:
        ``(x, acceptance_rate)`` -- the chains and each chain's acceptance rate over the iterations after
        warm-up (over all of them if none follow it; NaN if ``n_steps == 0``) -- then ``draws`` when
        ``record_every`` is set and the step sizes when ``return_step_size``.

    Example:
        >>> lp = lambda x: -0.5 * (x ** 2).sum(1)
        >>> x, acc = fastdiff.mcmc.hmc(lp, 4 * torch.randn(1024, 3), 0.3, 200, n_leapfrog=5, seed=0,
        ...                            adapt_steps=100)
    """
    _check_callable("log_prob", log_prob)
    if grad_log_prob is not None:
        _check_callable("grad_log_prob", grad_log_prob)
    batch, n_cols = _check_x(x)
    n_steps, n_leapfrog, adapt_steps, target_accept, jitter, max_leapfrog = _check_options(
        n_steps, n_leapfrog, adapt_steps, target_accept, adapt, jitter, max_leapfrog)
    per_chain_step = isinstance(step_size, torch.Tensor)
    if adapt == "chees" and per_chain_step and adapt_steps > 0:
        raise ValueError("adapt='chees' tunes one step size for all chains: pass step_size as a float")
    record_every = check_record_every(record_every, n_steps - adapt_steps)
    dev = x.device
    h = _step_vector(step_size, batch, dev)
    inv_mass = _check_mass(mass, x)
    seed = resolve_seed(seed)
    rid = _rows(row_ids, batch, dev)
    cd = _compute_dtype(x)
    offset = philox_uniform(seed, _MAX_STREAM - 1, torch.zeros(1, dtype=torch.int64)).item()  # host: no device

    def value_and_grad(v: torch.Tensor):
        lp, g = _log_prob_and_grad(log_prob, grad_log_prob, v, batch, cd)
        return lp, g.contiguous()

    def grad_only(v: torch.Tensor) -> torch.Tensor:
        if grad_log_prob is None:
            return value_and_grad(v)[1]
        return _check_grad(grad_log_prob(v), v, "grad_log_prob").to(cd).contiguous()

    x = x.detach().clone(memory_format=torch.contiguous_format)
    y = torch.empty_like(x)
    p = torch.empty(x.shape, dtype=cd, device=dev)
    z = torch.empty(x.shape, dtype=cd, device=dev)
    n_acc = torch.zeros(batch, dtype=torch.int64, device=dev)
    count_from = adapt_steps if adapt_steps < n_steps else 0
    recorder = DrawRecorder(x, n_steps - adapt_steps, record_every) if record_every is not None else None

    warm = adapt_steps > 0 and batch > 0  # an empty batch has nothing to adapt from
    shared = warm and (adapt == "chees" or not per_chain_step)
    windows = mass_windows(adapt_steps) if warm and adapt_mass else []
    da = DualAveraging(h[:1] if shared else h, target_accept, _phase(windows, 0, adapt_steps)) if warm else None
    chees = None
    n_nominal = n_leapfrog
    if warm and adapt == "chees":
        chees = ChEES(n_leapfrog * h[0], max_leapfrog)
        checkpoint = max(1, adapt_steps // 20)
    window: Optional[MassWindow] = None

    with torch.no_grad():
        lp, g = value_and_grad(x)
        # a chain started where log p is NaN is outside the support (-inf): it moves on its first valid proposal
        lp = torch.where(torch.isnan(lp), torch.full_like(lp, -math.inf), lp)
        for i in _iter(n_steps, progress, "hmc"):
            n_lf = max(1, math.ceil(jitter_factor(i, jitter, offset) * n_nominal - 1e-9))
            hmc_refresh(x, g, h, inv_mass=inv_mass, seed=seed, stream=2 * i, row_ids=rid, out=y, p_out=p,
                        noise_out=z, backend=backend)
            for step in range(1, n_lf + 1):
                if step < n_lf:
                    hmc_leapfrog(y, p, grad_only(y), h, inv_mass=inv_mass, out=y, p_out=p, backend=backend)
                else:
                    lp_y, g_y = value_and_grad(y)
                    hmc_leapfrog(y, p, g_y, h, inv_mass=inv_mass, final=True, p_out=p, backend=backend)
            log_alpha = hmc_log_accept(lp, lp_y, z, p, inv_mass)
            accept = torch.log(philox_uniform(seed, 2 * i + 1, rid)).to(cd) < log_alpha
            if warm and i < adapt_steps:
                prob = torch.exp(log_alpha.clamp(max=0.0))  # -inf -> 0
                if chees is not None:
                    v = p if inv_mass is None else p * inv_mass.to(cd)
                    chees.update(x, y, v, prob, time=n_lf * h[0], step=h[0])
            langevin_select(x, y, accept, out=x, backend=backend)
            langevin_select(g, g_y, accept, out=g, backend=backend)
            lp = torch.where(accept, lp_y, lp)
            if i >= count_from:
                n_acc += accept
            if warm and i < adapt_steps:
                h = _adapt_step(da, prob, shared, batch, i, adapt_steps)
                if windows and window is None and i + 1 > windows[0][0]:
                    window = MassWindow(n_cols, dev)
                if window is not None:
                    window.add(x)
                    if i + 1 == windows[0][1]:
                        inv_mass = _merged_mass(window.inv_mass(), inv_mass)
                        da.restart(h[:1] if shared else h, _phase(windows[1:], i + 1, adapt_steps))
                        windows, window = windows[1:], None
                if chees is not None and ((i + 1) % checkpoint == 0 or i + 1 == adapt_steps):
                    n_nominal = chees.n_leapfrog(h[0])
            if recorder is not None and i >= adapt_steps:
                recorder.after_step(i - adapt_steps, x)
            if callback is not None:
                callback({"i": i, "x": x, "accept": accept, "log_prob": lp, "log_accept_ratio": log_alpha,
                          "step_size": h, "n_leapfrog": n_lf, "inv_mass": inv_mass})
    n_counted = n_steps - count_from
    rate = n_acc.to(cd) / n_counted if n_counted > 0 else torch.full((batch,), math.nan, dtype=cd, device=dev)
    out: tuple = (x, rate)
    if recorder is not None:
        out += (recorder.draws,)
    if return_step_size:
        out += (h,)
    return out


def _merged_mass(new: torch.Tensor, old: Optional[torch.Tensor]) -> torch.Tensor:
    """The window's ``M^-1``, keeping the previous value where chains left the finite range (a diverged window)."""
    ok = torch.isfinite(new) & (new > 0)
    return torch.where(ok, new, torch.ones_like(new) if old is None else old)


def _phase(windows: list, start: int, adapt_steps: int) -> int:
    """The length of the step-size phase from ``start``: to the next mass update, or to the end of warm-up."""
    return (windows[0][1] if windows else adapt_steps) - start


def _adapt_step(da: DualAveraging, prob: torch.Tensor, shared: bool, batch: int, i: int,
                adapt_steps: int) -> torch.Tensor:
    """The step sizes after warm-up iteration ``i``: the dual-averaging iterate, its average at the end."""
    h = da.update(prob.mean().reshape(1) if shared else prob)
    if i + 1 == adapt_steps:
        h = da.final()
    return h.expand(batch).contiguous() if shared else h
