"""The denoising-step op: one fused memory pass per sampler step.

Layers: ``fastdiff.kernels.step`` (Triton) -> ``fused.py`` (the launcher: torch.library
op and direct launch) -> this module's ``fused_step`` (``parse.py`` checks the arguments
and picks the path; the kernel, ``cpu.py`` or the reference runs) -> samplers.
``naive.py`` holds the plain-PyTorch reference.

Example (one DDIM step, eta=0, epsilon prediction, written as coefficients):
    >>> import math, torch
    >>> from fastdiff.ops.step import fused_step, step_coefs
    >>> a_t, s_t, a_prev, s_prev = 0.5, math.sqrt(0.75), 0.8, 0.6
    >>> coefs = step_coefs(in_x=1 / a_t, in_m=-s_t / a_t, out_d=a_prev, out_m=s_prev)
    >>> x, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    >>> x_prev = fused_step(x, eps, coefs)
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ...random import check_device
from .._common import host_row, host_rows
from ..dispatch import launcher
from ..profiling import named_range, names_itself
from .cpu import step_cpu
from .naive import COEF_NAMES, MAX_HISTORY, NUM_COEFS, step_reference
from .parse import StepArgs, parse_step

__all__ = ["fused_step", "step_coefs", "coef_table", "COEF_NAMES", "COEF_DEFAULTS", "NUM_COEFS", "MAX_HISTORY",
           "step_reference"]

_Coef = Union[float, Sequence[float], torch.Tensor]


def step_coefs(
    *,
    in_x: _Coef = 0.0,
    in_m: _Coef = 1.0,
    guidance: _Coef = 0.0,
    out_x: _Coef = 0.0,
    out_e: _Coef = 0.0,
    out_m: _Coef = 0.0,
    out_d: _Coef = 0.0,
    out_h: Sequence[_Coef] = (),
    out_noise: _Coef = 0.0,
    aux_x: _Coef = 0.0,
    aux_d: _Coef = 1.0,
    out_u: _Coef = 0.0,
    aux_u: _Coef = 0.0,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Build a ``(R, NUM_COEFS)`` coefficient table for ``fused_step`` (float32; float64 for float64 torch paths).

    Each argument is a number (R=1) or a length-R sequence (one row per step or
    per sample); values are assembled in float64 and cast once. The defaults make
    ``d`` the model output (x0 prediction) and ``aux`` = d. ``out_u`` / ``aux_u`` weigh the unconditional x0
    estimate ``u`` (CFG++), used only by calls that pass ``fused_step(..., uncond=...)``.

    Example:
        >>> step_coefs(out_x=[0.9, 0.8], out_d=[0.1, 0.2]).shape
        torch.Size([2, 15])
    """
    out_h = tuple(out_h)
    if len(out_h) > MAX_HISTORY:
        raise ValueError(f"out_h takes at most {MAX_HISTORY} history coefficients, got {len(out_h)}")
    out_h = out_h + (0.0,) * (MAX_HISTORY - len(out_h))
    values = [in_x, in_m, guidance, out_x, out_e, out_m, out_d, *out_h, out_noise, aux_x, aux_d, out_u, aux_u]
    cols = []
    for name, v in zip(COEF_NAMES, values):
        try:
            cols.append(torch.as_tensor(v, dtype=torch.float64).reshape(-1))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"coefficient {name} must be a number or a 1-D sequence of numbers, got {v!r}") from None
    rows = max(c.numel() for c in cols)
    for name, c in zip(COEF_NAMES, cols):
        if c.numel() not in (1, rows):
            raise ValueError(f"coefficient {name} has {c.numel()} values; expected 1 or {rows}")
    table = torch.stack([c.expand(rows) for c in cols], dim=1)
    return table.to(device=check_device(device), dtype=dtype)


def _coef_defaults() -> Dict[str, float]:
    params = inspect.signature(step_coefs).parameters
    return {name: (0.0 if name.startswith("out_h") else float(params[name].default)) for name in COEF_NAMES}


# Each column's value when a row does not set it: step_coefs' defaults, keyed by COEF_NAMES (out_h0..2 = 0).
COEF_DEFAULTS: Dict[str, float] = _coef_defaults()
_DEFAULT_LIST = [(name, COEF_DEFAULTS[name]) for name in COEF_NAMES]


def coef_table(rows: Sequence[Mapping[str, Any]], *, device: Union[str, torch.device, None] = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A ``(len(rows), NUM_COEFS)`` table from one mapping per row keyed by ``COEF_NAMES``, through ``step_coefs``.

    Names a row leaves out take ``COEF_DEFAULTS``; other keys are ignored (samplers keep e.g. a row's
    sigma beside its coefficients). Example:
        >>> coef_table([{"out_x": 0.9, "out_d": 0.1}, {"out_x": 0.8, "out_d": 0.2, "out_h0": 0.05}])[:, 7]
        tensor([0.0000, 0.0500])
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows must hold at least one row of coefficients")
    # float64 numpy rows, cast once: the values step_coefs would give, without its tensor per column (a 20-step
    # run's table took ~150 us that way, ~25 us this way, on the CI CPU)
    table = np.empty((len(rows), NUM_COEFS), dtype=np.float64)
    defaults = _DEFAULT_LIST
    for i, r in enumerate(rows):
        try:
            table[i] = [r.get(name, d) for name, d in defaults]
        except (TypeError, ValueError, RuntimeError):
            bad = next((name for name, _ in defaults if not _is_number(r.get(name, 0.0))), "?")
            raise TypeError(f"coefficient {bad} of row {i} must be a number, got {r.get(bad)!r}") from None
    return torch.from_numpy(table).to(device=check_device(device), dtype=dtype)


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


@names_itself
def fused_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    coefs: torch.Tensor,
    *,
    x_eval: Optional[torch.Tensor] = None,
    history: Sequence[torch.Tensor] = (),
    coef_index: Optional[torch.Tensor] = None,
    coef_row: int = 0,
    guidance: bool = False,
    clip: Optional[float] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    uncond: Union[None, str, torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    aux_out: Optional[torch.Tensor] = None,
    write_aux: bool = False,
    backend: str = "auto",
) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One fused denoising step (see ``fastdiff.kernels.step`` for the formula).

    Example (one Euler step from sigma=2 to sigma=1 with an x0-predicting model):
        >>> x, x0_hat = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
        >>> x_next = fused_step(x, x0_hat, step_coefs(out_x=0.5, out_d=0.5))   # x + (1 - 2) * (x - d) / 2

    Args:
        x: the sample being advanced, shape (batch, ...).
        model_output: the network's output for ``x_eval`` (or x); shape of x, or
            (2*batch, ...) as [uncond; cond] halves when ``guidance``.
        coefs: (R, NUM_COEFS) float32 table on x's device (see ``step_coefs``).
        x_eval: the sample the model saw, when it differs from x (Heun's corrector).
        history: up to 3 tensors shaped like x (previous denoised estimates or derivatives).
        coef_index: int64 (batch,) rows of ``coefs`` per sample; else row ``coef_row`` for all.
        guidance: classifier-free guidance with scale in the ``guidance`` column.
        clip: clamp the denoised estimate to [-clip, clip].
        seed, stream, row_ids: in-kernel Philox noise keyed by (seed, row id, stream, element).
        noise: explicit noise instead of ``seed`` (shape of x).
        uncond: the unconditional x0 estimate ``u`` weighed by the ``out_u`` / ``aux_u`` columns (CFG++):
            ``"halves"`` forms it in the pass from the uncond half of a guided ``model_output`` with the row's
            ``in_x`` / ``in_m`` (needs ``guidance``); a tensor shaped like x is ``u`` itself (an x0 estimate,
            not converted); None (default) leaves the u columns unread.
        out, aux_out: destination buffers (may alias inputs for in-place work).
        write_aux: also return the ``aux`` tensor (a new history entry).
        backend: "auto" | "triton" | "torch" | "reference".

    Returns:
        ``out``, or ``(out, aux)`` when ``write_aux`` or ``aux_out`` is given.
    """
    with named_range("fastdiff::fused_step"):
        path, want_aux, plain, a = parse_step(x, model_output, coefs, x_eval, history, coef_index, coef_row, guidance,
                                       clip, seed, stream, row_ids, noise, out, aux_out, write_aux, backend, uncond)
        if path == "triton":
            launcher("fused_step")(a, plain)
            return (a.out, a.aux_out) if want_aux else a.out
        if path == "cpu":
            row = host_row(a.coefs, a.coef_row) if a.coef_index is None else host_rows(a.coefs, a.coef_index)
            res, aux = step_cpu(a, row, want_aux)
            return (res, aux) if want_aux else res
        return _reference(a, want_aux, None if path == "reference" else torch.float64 if a.x.dtype == torch.float64
                          else torch.float32)


def _reference(a: StepArgs, want_aux: bool, compute_dtype: Optional[torch.dtype]):
    """``fused_step``'s result from ``step_reference`` in ``compute_dtype`` (None: x's dtype)."""
    x = a.x
    res, aux = step_reference(
        x, a.model_output, a.coefs, x_eval=a.x_eval, history=a.history, coef_index=a.coef_index,
        coef_row=a.coef_row, guidance=a.guidance, clip=a.clip, seed=a.seed, stream=a.stream, row_ids=a.row_ids,
        noise=a.noise, uncond="halves" if a.uncond_mode == 1 else a.uncond, compute_dtype=compute_dtype,
    )
    out = res.to(x.dtype) if a.out is None else a.out.copy_(res)
    if want_aux:
        return out, (aux.to(x.dtype) if a.aux_out is None else a.aux_out.copy_(aux))
    return out
