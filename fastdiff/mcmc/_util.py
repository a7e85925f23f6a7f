"""Argument checks and small helpers shared by the MCMC samplers."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from .._backend import maybe_rows
from ..ops._common import check_float, rows_of
from ..ops.langevin import check_step_tensor

StepSize = Union[float, torch.Tensor]
Callback = Optional[Callable[[Dict[str, Any]], None]]

_MAX_STREAM = 2**32


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _check_pos_float(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite float, got {v!r}")
    return float(v)


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


def _check_per_chain(out, batch: int, device: torch.device, name: str) -> torch.Tensor:
    """A user callable's per-chain values (``log_prob``): a float tensor of ``batch`` values on x's device,
    reshaped to (batch,); the errors name the callable. O(1) host work, no device read."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor of one value per chain (shape ({batch},)), "
                        f"got {type(out).__name__}")
    if out.numel() != batch or (out.dim() > 1 and out.shape[0] != batch):
        raise ValueError(f"{name} must return one value per chain (shape ({batch},)), got {tuple(out.shape)}")
    if out.device != device:
        raise ValueError(f"{name} returned a tensor on {out.device} but x is on {device}; return it on x's device")
    if not out.dtype.is_floating_point:
        raise TypeError(f"{name} must return a float tensor, got {out.dtype}")
    return out.reshape(batch)


def _value_and_grad(fn: Callable, x: torch.Tensor, batch: int, name: str, sign: float = 1.0):
    """``(sign*fn(x), d(sign*fn)/dx)`` per chain by autograd; nothing of the graph outlives the call."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = _check_per_chain(fn(xr), batch, x.device, name)
        if sign != 1.0:
            out = -out
        if out.requires_grad:
            # summing is exact per chain: chain b's value depends only on row b.
            (g,) = torch.autograd.grad(out.sum(), xr, allow_unused=True)
            g = torch.zeros_like(x) if g is None else g
        else:
            g = torch.zeros_like(x)
    return out.detach(), g.detach()


def _log_prob_and_grad(log_prob: Callable, grad_log_prob: Optional[Callable], x: torch.Tensor, batch: int,
                       dtype: torch.dtype):
    """``(log_prob(x), grad log_prob(x))`` per chain in ``dtype``: autograd when ``grad_log_prob`` is None,
    else the two callables, each result checked (the errors name the callable)."""
    if grad_log_prob is None:
        lp, g = _value_and_grad(log_prob, x, batch, "log_prob")
    else:
        lp = _check_per_chain(log_prob(x), batch, x.device, "log_prob")
        g = _check_grad(grad_log_prob(x), x, "grad_log_prob")
    return lp.to(dtype), g.to(dtype)


def _check_grad(g, x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{name} must return a tensor shaped like x, got {type(g).__name__}")
    if g.shape != x.shape:
        raise ValueError(f"{name} must return a tensor of shape {tuple(x.shape)}, got {tuple(g.shape)}")
    if g.device != x.device:
        raise ValueError(f"{name} returned a tensor on {g.device} but x is on {x.device}; return it on x's device")
    if not g.dtype.is_floating_point:
        raise TypeError(f"{name} must return a float tensor (the gradient), got {g.dtype}")
    return g
