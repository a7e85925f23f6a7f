"""The denoising-step op: one fused memory pass per sampler step.

Layers: ``fastdiff.kernels.step`` (Triton) -> ``fused.py`` (launcher, torch.library
op) -> this module's ``fused_step`` (validation, backend choice) -> samplers.
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

import torch

from ..._backend import (interpret_mode, launch, maybe_rows, profiled, resolve_backend,
                         triton_available)
from ...random import philox_normal
from .._common import (FLOAT_DTYPES, KERNEL_DTYPES, as_seed_args, check_float, check_index, check_out, check_stream,
                       contig, host_row, rows_of, seq)
from .cpu import step_cpu
from .naive import COEF_NAMES, MAX_HISTORY, NUM_COEFS, step_reference

__all__ = ["fused_step", "step_coefs", "coef_table", "COEF_NAMES", "COEF_DEFAULTS", "NUM_COEFS", "MAX_HISTORY",
           "step_reference"]

_Coef = Union[float, Sequence[float], torch.Tensor]
_CPU_BACKENDS = ("auto", "torch")
_Tensor = torch.Tensor
_FLOATS = frozenset(FLOAT_DTYPES)
_NO_HISTORY = ()


def _plain_cpu(t) -> bool:
    """A plain (not subclassed) float CPU tensor: what the cheap path of ``fused_step`` accepts."""
    return type(t) is _Tensor and t.is_cpu and t.dtype in _FLOATS


def _plain_history(history, x: torch.Tensor) -> bool:
    return (type(history) in (tuple, list) and len(history) <= MAX_HISTORY
            and all(_plain_cpu(h) and h.shape == x.shape for h in history))


def _halves(mshape: torch.Size, xshape: torch.Size) -> bool:
    """model_output holds [uncond; cond] halves of x's batch (guidance)."""
    return len(mshape) == len(xshape) and mshape[0] == 2 * xshape[0] and mshape[1:] == xshape[1:]


def _plain_scalars(coefs: torch.Tensor, coef_row, clip, stream) -> bool:
    """The cheap paths' checks of the table's shape, the row, clip and stream (as the full checks would pass)."""
    cs = coefs.shape
    return (len(cs) == 2 and cs[1] == NUM_COEFS and type(coef_row) is int and 0 <= coef_row < cs[0]
            and (clip is None or (type(clip) in (int, float) and clip > 0))
            and type(stream) is int and 0 <= stream < 2**32)


_KERNEL_SET = frozenset(KERNEL_DTYPES)


def _kernel_ready(x: torch.Tensor, backend: str) -> bool:
    """x would run the Triton kernel: a plain contiguous CUDA tensor (CPU under the interpreter) of a kernel dtype."""
    if type(x) is not _Tensor or x.dtype not in _KERNEL_SET or not x.dim() or not x.is_contiguous():
        return False
    if x.is_cuda:
        return backend in ("auto", "triton") and triton_available()
    return backend == "triton" and x.is_cpu and interpret_mode()


def _like(t, x: torch.Tensor) -> bool:
    """A plain contiguous tensor with x's dtype, device and shape (no copy or check needed before a launch)."""
    return (type(t) is _Tensor and t.dtype is x.dtype and t.shape == x.shape and t.device == x.device
            and t.is_contiguous())


_LAUNCHERS: tuple = ()


def _load_launchers() -> tuple:
    """(op, direct) launchers of the step kernel, imported on first use (importing registers the op)."""
    global _LAUNCHERS
    from .fused import fused_step_direct, fused_step_triton

    _LAUNCHERS = (fused_step_triton, fused_step_direct)
    return _LAUNCHERS


def _plain_out(buf, x: torch.Tensor) -> bool:
    """``out=`` buffers the cheap path accepts: contiguous float CPU tensors of x's shape (as ``check_out``)."""
    return _plain_cpu(buf) and buf.shape == x.shape and buf.is_contiguous()


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
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Build a ``(R, NUM_COEFS)`` coefficient table for ``fused_step`` (float32; float64 for float64 torch paths).

    Each argument is a number (R=1) or a length-R sequence (one row per step or
    per sample); values are assembled in float64 and cast once. The defaults make
    ``d`` the model output (x0 prediction) and ``aux`` = d.

    Example:
        >>> step_coefs(out_x=[0.9, 0.8], out_d=[0.1, 0.2]).shape
        torch.Size([2, 13])
    """
    out_h = tuple(out_h)
    if len(out_h) > MAX_HISTORY:
        raise ValueError(f"out_h takes at most {MAX_HISTORY} history coefficients, got {len(out_h)}")
    out_h = out_h + (0.0,) * (MAX_HISTORY - len(out_h))
    values = [in_x, in_m, guidance, out_x, out_e, out_m, out_d, *out_h, out_noise, aux_x, aux_d]
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
    return table.to(device=device, dtype=dtype)


def _coef_defaults() -> Dict[str, float]:
    params = inspect.signature(step_coefs).parameters
    return {name: (0.0 if name.startswith("out_h") else float(params[name].default)) for name in COEF_NAMES}


# Each column's value when a row does not set it: step_coefs' defaults, keyed by COEF_NAMES (out_h0..2 = 0).
COEF_DEFAULTS: Dict[str, float] = _coef_defaults()


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
    cols = {name: [r.get(name, d) for r in rows] for name, d in COEF_DEFAULTS.items()}
    out_h = [cols.pop(f"out_h{k}") for k in range(MAX_HISTORY)]
    return step_coefs(**cols, out_h=out_h, device=device, dtype=dtype)


@profiled("fastdiff::fused_step")
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
        out, aux_out: destination buffers (may alias inputs for in-place work).
        write_aux: also return the ``aux`` tensor (a new history entry).
        backend: "auto" | "triton" | "torch" | "reference".

    Returns:
        ``out``, or ``(out, aux)`` when ``write_aux`` or ``aux_out`` is given.
    """
    if (backend in _CPU_BACKENDS and coef_index is None and seed is None and noise is None and row_ids is None
            and x_eval is None and type(x) is _Tensor and type(model_output) is _Tensor
            and x.is_cpu and model_output.is_cpu and x.dtype in _FLOATS and model_output.dtype in _FLOATS
            and x.dim() and (model_output.shape == x.shape if not guidance else _halves(model_output.shape, x.shape))
            and type(coefs) is _Tensor and coefs.is_cpu and coefs.dtype in _FLOATS
            and _plain_scalars(coefs, coef_row, clip, stream)
            and (history is _NO_HISTORY or _plain_history(history, x))
            and (out is None or _plain_out(out, x)) and (aux_out is None or _plain_out(aux_out, x))
            and not torch.compiler.is_compiling()):
        # the common CPU call, validated by the cheap checks above: straight to the host-coefficient path
        want_aux = write_aux or aux_out is not None
        res, aux = step_cpu(x, model_output, host_row(coefs, coef_row), x_eval=None, history=history,
                            guidance=guidance, clip=clip, noise=None, want_aux=want_aux, out=out, aux_out=aux_out)
        return (res, aux) if want_aux else res

    if (not torch.compiler.is_compiling() and coef_index is None and noise is None and row_ids is None
            and out is None and aux_out is None and _kernel_ready(x, backend)
            and (_like(model_output, x) if not guidance else
                 (type(model_output) is _Tensor and model_output.dtype is x.dtype and model_output.device == x.device
                  and model_output.is_contiguous() and _halves(model_output.shape, x.shape)))
            and type(coefs) is _Tensor and coefs.dtype is torch.float32 and coefs.device == x.device
            and coefs.is_contiguous() and _plain_scalars(coefs, coef_row, clip, stream)
            and (x_eval is None or _like(x_eval, x))
            and (history is _NO_HISTORY or (type(history) in (tuple, list) and len(history) <= MAX_HISTORY
                                            and all(_like(h, x) for h in history)))):
        # the common kernel call (a sampler's step), validated by the cheap checks above: ~10 us less host
        # work per step than the full checks below, which every other call takes (same errors as before)
        launchers = _LAUNCHERS or _load_launchers()
        seed_lo, seed_hi = (0, 0) if seed is None else as_seed_args(seed)
        out = torch.empty_like(x)
        aux_out = torch.empty_like(x) if write_aux else None
        hs = (*history, None, None, None)
        launch(*launchers, x, model_output, coefs, x_eval, hs[0], hs[1], hs[2], None, None, None, out, aux_out,
               coef_row, len(history), guidance, None if clip is None else float(clip), 0 if seed is None else 1,
               seed_lo, seed_hi, stream)
        return (out, aux_out) if write_aux else out

    check_float("x", x)
    batch, _ = rows_of(x)
    dev = x.device
    mshape = ((2 * batch,) + tuple(x.shape[1:])) if guidance else tuple(x.shape)
    check_float("model_output", model_output, like=x)
    if tuple(model_output.shape) != mshape:
        hint = " ([uncond; cond] halves for guidance)" if guidance else ""
        raise ValueError(f"model_output must have shape {mshape}{hint}, got {tuple(model_output.shape)}")
    if not isinstance(coefs, torch.Tensor) or coefs.dim() != 2 or coefs.shape[1] != NUM_COEFS:
        raise ValueError(f"coefs must be a (R, {NUM_COEFS}) tensor from step_coefs, got "
                         f"{tuple(coefs.shape) if isinstance(coefs, torch.Tensor) else type(coefs).__name__}")
    if not coefs.dtype.is_floating_point:
        raise TypeError(f"coefs must be a float table from step_coefs, got {coefs.dtype}")
    if coefs.device != dev:
        raise ValueError(f"coefs is on {coefs.device} but x is on {dev}; build the table on x's device once")
    if x_eval is not None:
        check_float("x_eval", x_eval, like=x, shape=x.shape)
    history = seq("history", history)
    if len(history) > MAX_HISTORY:
        raise ValueError(f"history takes at most {MAX_HISTORY} tensors, got {len(history)}")
    for k, h in enumerate(history):
        check_float(f"history[{k}]", h, like=x, shape=x.shape)
    if isinstance(coef_row, bool) or not isinstance(coef_row, int):
        raise TypeError(f"coef_row must be an int, got {type(coef_row).__name__}")
    if coef_index is not None:
        coef_index = check_index("coef_index", coef_index, batch, dev, rows=coefs.shape[0])
    elif not 0 <= coef_row < coefs.shape[0]:
        raise ValueError(f"coef_row must be in [0, {coefs.shape[0]}), got {coef_row}")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))):
        raise TypeError(f"clip must be a positive float or None, got {type(clip).__name__}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be a positive float or None, got {clip}")
    if noise is not None:
        check_float("noise", noise, like=x, shape=x.shape)
        if seed is not None:
            raise ValueError("pass either seed (in-kernel noise) or noise, not both")
    seed_lo, seed_hi = as_seed_args(seed)
    check_stream(stream)
    row_ids = maybe_rows(row_ids, batch, dev)
    check_out("out", out, x)
    check_out("aux_out", aux_out, x, dtype=None)
    want_aux = write_aux or aux_out is not None

    impl = resolve_backend(backend, dev)
    if impl == "triton":
        if x.dtype not in KERNEL_DTYPES:
            raise TypeError(f"backend='triton' supports float32/float16/bfloat16 storage, got x.dtype={x.dtype}")
        if out is None:
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
        if want_aux and aux_out is None:
            aux_out = torch.empty_like(out)
        hs = [contig(h) for h in history] + [None] * (MAX_HISTORY - len(history))
        noise_mode = 2 if noise is not None else (1 if seed is not None else 0)
        launch(
            *(_LAUNCHERS or _load_launchers()),
            contig(x), contig(model_output), coefs.to(torch.float32).contiguous(), contig(x_eval), hs[0], hs[1],
            hs[2], contig(noise), coef_index, row_ids, out, aux_out, coef_row, len(history), guidance,
            None if clip is None else float(clip), noise_mode, seed_lo, seed_hi, stream,
        )
        return (out, aux_out) if want_aux else out

    # Host-float coefficients need a concrete table: under torch.compile the generic path traces instead.
    if impl == "torch" and dev.type == "cpu" and coef_index is None and not torch.compiler.is_compiling():
        if noise is None and seed is not None:
            noise = philox_normal(x.shape, seed, stream, row_ids=row_ids, device=dev)
        res, aux = step_cpu(x, model_output, host_row(coefs, coef_row), x_eval=x_eval, history=history,
                            guidance=guidance, clip=clip, noise=noise, want_aux=want_aux, out=out, aux_out=aux_out)
        return (res, aux) if want_aux else res

    compute = None if impl == "reference" else (torch.float64 if x.dtype == torch.float64 else torch.float32)
    res, aux = step_reference(
        x, model_output, coefs, x_eval=x_eval, history=history, coef_index=coef_index, coef_row=coef_row,
        guidance=guidance, clip=clip, seed=seed, stream=stream, row_ids=row_ids, noise=noise,
        compute_dtype=compute,
    )
    return _finish(x, res, aux, out, aux_out, want_aux)


def _finish(x, res, aux, out, aux_out, want_aux):
    out = res.to(x.dtype) if out is None else out.copy_(res)
    if want_aux:
        aux_out = aux.to(x.dtype) if aux_out is None else aux_out.copy_(aux)
        return out, aux_out
    return out
