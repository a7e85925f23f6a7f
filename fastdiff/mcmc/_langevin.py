"""Langevin dynamics without a Metropolis test: ULA and NCSN's annealed Langevin."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from .._backend import maybe_rows
from ..ops._common import check_int
from ..ops.langevin import langevin_step
from ..random import resolve_seed
from ._draws import DrawRecorder, check_record_every
from ._util import (_MAX_STREAM, Callback, StepSize, _check_callable, _check_grad, _check_pos_float, _check_x,
                    _compute_dtype, _iter, _step_vector)

__all__ = ["langevin", "annealed_langevin"]


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
    record_every: Optional[int] = None,
    backend: str = "auto",
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
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
        record_every: keep the chains after every ``record_every``-th step in one preallocated buffer.
        backend: "auto" | "triton" | "torch" | "reference" (see ``fastdiff.ops.langevin_step``).

    Returns:
        The chains after ``n_steps`` updates (a new tensor, x's dtype); with ``record_every``, ``(x, draws)``
        where ``draws`` is shaped ``(n_chains, n_steps // record_every, *event)`` (arviz's ``(chain, draw,
        ...)`` layout), x's dtype: ``draws[:, j]`` is the state after step ``(j + 1) * record_every``.

    Example:
        >>> x = fastdiff.langevin(lambda x: -x, 3 * torch.randn(8192, 2), 0.01, 1000, seed=0)
    """
    _check_callable("grad_log_prob", grad_log_prob)
    batch, _ = _check_x(x)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    if n_steps > _MAX_STREAM:
        raise ValueError(f"n_steps must be at most 2**32 (one noise stream per step), got {n_steps}")
    temperature = _check_pos_float("temperature", temperature)
    if isinstance(step_size, torch.Tensor):
        h: StepSize = _step_vector(step_size, batch, x.device)
    else:
        h = _check_pos_float("step_size", step_size)
    every = check_record_every(record_every, n_steps)
    seed = resolve_seed(seed)
    row_ids = maybe_rows(row_ids, batch, x.device)
    x = x.detach().clone(memory_format=torch.contiguous_format)
    rec = DrawRecorder(x, n_steps, every) if every is not None else None
    with torch.no_grad():
        for i in _iter(n_steps, progress, "langevin"):
            g = _check_grad(grad_log_prob(x), x, "grad_log_prob")
            langevin_step(x, g, h, temperature=temperature, seed=seed, stream=i, row_ids=row_ids, out=x,
                          backend=backend)
            if rec is not None:
                rec.after_step(i, x)
            if callback is not None:
                callback({"i": i, "x": x})
    return x if rec is None else (x, rec.draws)


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
    n_steps_each = check_int("n_steps_each", n_steps_each, minimum=1)
    if len(sig) * n_steps_each > _MAX_STREAM:
        raise ValueError("len(sigmas) * n_steps_each must be at most 2**32 (one noise stream per step)")
    step_lr = _check_pos_float("step_lr", step_lr)
    seed = resolve_seed(seed)
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
