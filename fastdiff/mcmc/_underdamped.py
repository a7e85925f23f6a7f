"""Underdamped (kinetic) Langevin dynamics by BAOAB, one fused pass per step."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch

from .._backend import maybe_rows
from ..ops._common import check_float, check_int
from ..ops.underdamped import check_friction, check_mass, underdamped_step
from ..random import philox_normal, resolve_seed
from ._draws import DrawRecorder, check_record_every
from ._util import (_MAX_STREAM, Callback, StepSize, _check_callable, _check_grad, _check_pos_float, _check_x,
                    _compute_dtype, _iter, _step_vector)

__all__ = ["underdamped_langevin", "VELOCITY_STREAM"]

#: The Philox stream of the initial velocity draw (``v=None``); step ``i`` uses stream ``i``.
VELOCITY_STREAM = _MAX_STREAM - 1

Result = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _initial_velocity(x: torch.Tensor, v: Optional[torch.Tensor], mass, temperature: float, seed: int,
                      row_ids: Optional[torch.Tensor]) -> torch.Tensor:
    """A private contiguous copy of ``v`` in x's dtype, or a draw from ``N(0, T*M)`` on ``VELOCITY_STREAM``."""
    if v is not None:
        check_float("v", v, like=x, shape=x.shape)
        return v.detach().to(dtype=x.dtype, memory_format=torch.contiguous_format, copy=True)
    cd = _compute_dtype(x)
    z = philox_normal(x.shape, seed, VELOCITY_STREAM, row_ids=row_ids, device=x.device, dtype=cd)
    scale = (temperature * mass.to(cd)).sqrt() if isinstance(mass, torch.Tensor) else math.sqrt(temperature * mass)
    return (z * scale).to(x.dtype)


def underdamped_langevin(
    grad_log_prob: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step_size: StepSize,
    n_steps: int,
    *,
    friction: float = 1.0,
    mass: Union[None, float, torch.Tensor] = None,
    v: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    row_ids: Optional[torch.Tensor] = None,
    callback: Callback = None,
    progress: bool = False,
    return_velocity: bool = False,
    record_every: Optional[int] = None,
    backend: str = "auto",
) -> Result:
    """Underdamped (kinetic) Langevin dynamics by BAOAB (Leimkuhler & Matthews 2013), many chains at once.

    Simulates ``dx = M^-1 v dt``, ``dv = grad log p(x) dt - friction * v dt + sqrt(2 friction T M) dW`` (``v`` is
    the momentum, velocity times mass), whose stationary law is ``p(x)**(1/T) * N(v; 0, T*M)``. Each step is
    one fused pass (``fastdiff.ops.underdamped_step``: kick, drift, exact Ornstein-Uhlenbeck refresh, drift;
    the closing half-kick of a step is merged with the opening one of the next) plus one gradient call, so a
    run of ``n_steps`` costs ``n_steps`` gradient evaluations (one more with ``return_velocity``, for the
    closing half-kick). BAOAB's error in the law of x is O(h^2) and vanishes on Gaussian targets (any
    ``h < 2*sd_min``); see ``docs/samplers.md`` for when it beats ULA and how to pick ``friction``.

    Noise: step ``i`` draws the O step's normals from Philox stream ``i``; the initial velocity (``v=None``)
    from stream ``2**32 - 1`` (``VELOCITY_STREAM``), all keyed by ``(seed, chain id)``: a chain's trajectory
    depends only on its id (``row_ids``), never on how the chains are batched.

    Args:
        grad_log_prob: ``x -> grad log p(x)``, a tensor shaped like x.
        x: initial chains, shape (n_chains, ...); not modified.
        step_size: h > 0, a float or one per chain ((n_chains,) tensor).
        n_steps: number of BAOAB steps (at most 2**32 - 1).
        friction: gamma >= 0. About twice the slowest mode's frequency (``2 / sd_max`` for a Gaussian) mixes
            fastest; when ``friction * h`` is large each step forgets its momentum and BAOAB becomes ULA with
            step ``h**2 / 2``.
        mass: diagonal mass M: None (1), a float, or a tensor shaped like one event (``x.shape[1:]``);
            ``M = 1 / variance`` per coordinate preconditions an ill-conditioned target.
        v: initial momenta (shape of x; not modified); None draws them from ``N(0, T*M)``.
        temperature: T > 0.
        seed: Philox key (None: drawn from torch's global generator).
        row_ids: int64 (n_chains,) global chain ids (default 0..n-1).
        callback: called after each step with ``{"i": step, "x": chains}`` (x is updated in place afterwards:
            clone what you keep).
        progress: tqdm progress bar.
        return_velocity: also return the final momenta (after the closing half-kick).
        record_every: keep the chains after every ``record_every``-th step in one preallocated buffer.
        backend: "auto" | "triton" | "torch" | "reference" (see ``fastdiff.ops.underdamped_step``).

    Returns:
        ``x`` (a new tensor, x's dtype); ``(x, v)`` with ``return_velocity``; ``(x, draws)`` with
        ``record_every``; ``(x, v, draws)`` with both. ``draws`` is shaped ``(n_chains, n_steps //
        record_every, *event)`` (arviz's ``(chain, draw, ...)`` layout), x's dtype.

    Example:
        >>> sd = torch.tensor([1.0, 6.0])                       # condition number 36
        >>> x, draws = fastdiff.underdamped_langevin(lambda x: -x / sd ** 2, torch.zeros(4096, 2), 0.3, 400,
        ...                                          friction=1 / 3, seed=0, record_every=10)
        >>> draws.shape
        torch.Size([4096, 40, 2])
    """
    _check_callable("grad_log_prob", grad_log_prob)
    batch, _ = _check_x(x)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    if n_steps > VELOCITY_STREAM:
        raise ValueError(f"n_steps must be at most 2**32 - 1 (one noise stream per step, one for the initial "
                         f"velocity), got {n_steps}")
    friction = check_friction(friction)
    temperature = _check_pos_float("temperature", temperature)
    if isinstance(step_size, torch.Tensor):
        h: StepSize = _step_vector(step_size, batch, x.device)
    else:
        h = _check_pos_float("step_size", step_size)
    m = check_mass(mass, x, check_values_on_device=True)
    if not isinstance(return_velocity, bool):
        raise TypeError(f"return_velocity must be a bool, got {type(return_velocity).__name__}")
    every = check_record_every(record_every, n_steps)
    seed = resolve_seed(seed)
    row_ids = maybe_rows(row_ids, batch, x.device)
    v = _initial_velocity(x, v, m, temperature, seed, row_ids)
    x = x.detach().clone(memory_format=torch.contiguous_format)
    rec = DrawRecorder(x, n_steps, every) if every is not None else None
    kw = dict(friction=friction, mass=m, temperature=temperature, backend=backend)
    with torch.no_grad():
        if n_steps:
            g = _check_grad(grad_log_prob(x), x, "grad_log_prob")
        for i in _iter(n_steps, progress, "underdamped_langevin"):
            underdamped_step(x, v, g, h, kick=0.5 if i == 0 else 1.0, seed=seed, stream=i, row_ids=row_ids,
                             x_out=x, v_out=v, **kw)
            if i + 1 < n_steps or return_velocity:  # the last gradient only serves the closing half-kick
                g = _check_grad(grad_log_prob(x), x, "grad_log_prob")
            if rec is not None:
                rec.after_step(i, x)
            if callback is not None:
                callback({"i": i, "x": x})
        if n_steps and return_velocity:
            underdamped_step(x, v, g, h, kick=0.5, drift=False, v_out=v, **kw)
    out: tuple = (x, v) if return_velocity else (x,)
    if rec is not None:
        out += (rec.draws,)
    return out if len(out) > 1 else x
