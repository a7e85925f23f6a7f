"""``fused_step``'s arguments, validated and normalised once per call into one ``StepArgs`` record.

``parse_step`` is one pass over the arguments in a fixed order (the order decides which error a call with
several bad arguments raises), each argument checked in one place: a quick test that accepts the common case --
a plain tensor of a float dtype on x's device with the expected shape, an int row in range -- and, only when that
test fails, the argument's full check (``ops._common``), which raises the documented error or accepts what the
quick test leaves out (a tensor subclass, an int subclass, a generator of history tensors). A sampler's call
(contiguous tensors of one dtype, a float32 table) therefore runs only the quick tests.

The record is normalised for the implementation that will run: for the kernel, contiguous tensors, a float32
table, allocated outputs and a float ``clip``; for the PyTorch paths, the arguments as given.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ...random import split_seed
from .._common import (FLOAT_DTYPES, KERNEL_DTYPES, check_float, check_index, check_out, check_stream, maybe_rows,
                       plain_float, rows_of, seq)
from ..backend import resolve_backend
from ..records import StepArgs
from .naive import MAX_HISTORY, NUM_COEFS

__all__ = ["parse_step", "StepArgs"]

_Tensor = torch.Tensor
_FLOATS = frozenset(FLOAT_DTYPES)
_KERNEL_SET = frozenset(KERNEL_DTYPES)
_F32 = torch.float32
_CPU = torch.device("cpu")
_STREAMS = 2**32
_new = tuple.__new__  # _new(StepArgs, fields) costs ~0.2 us less than StepArgs(*fields) for 20 fields


def check_coefs(coefs, device: torch.device) -> torch.Tensor:
    """Require a ``(R, NUM_COEFS)`` float table on ``device`` (the full check; see ``step_coefs``)."""
    if not isinstance(coefs, torch.Tensor) or coefs.dim() != 2 or coefs.shape[1] != NUM_COEFS:
        raise ValueError(f"coefs must be a (R, {NUM_COEFS}) tensor from step_coefs, got "
                         f"{tuple(coefs.shape) if isinstance(coefs, torch.Tensor) else type(coefs).__name__}")
    if not coefs.dtype.is_floating_point:
        raise TypeError(f"coefs must be a float table from step_coefs, got {coefs.dtype}")
    if coefs.device != device:
        raise ValueError(f"coefs is on {coefs.device} but x is on {device}; build the table on x's device once")
    return coefs


def parse_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    coefs: torch.Tensor,
    x_eval: Optional[torch.Tensor],
    history: Sequence[torch.Tensor],
    coef_index: Optional[torch.Tensor],
    coef_row: int,
    guidance: bool,
    clip: Optional[float],
    seed: Optional[int],
    stream: int,
    row_ids: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    out: Optional[torch.Tensor],
    aux_out: Optional[torch.Tensor],
    write_aux: bool,
    backend: str,
    uncond=None,
) -> tuple[str, bool, bool, StepArgs]:
    """``(path, want_aux, plain, args)`` for a ``fused_step`` call (same arguments), or the error it raises.

    ``path`` is what runs: "triton" (the kernel), "cpu" (the host-coefficient CPU path, ``step_cpu``), "torch"
    (the reference formula in float32, or float64 for float64 storage) or "reference" (in the inputs' dtype);
    ``want_aux`` whether the call returns ``(out, aux)``; ``plain`` whether every tensor argument passed its quick
    test (so is a plain ``torch.Tensor``: the launcher need not look at the classes again); ``args`` the launch
    record (see the module docstring).
    """
    plain = True  # every full check below (the only ones that accept a tensor subclass) clears it
    if x.__class__ is not _Tensor or x.dtype not in _FLOATS:
        check_float("x", x)
        plain = False
    shape = x.shape
    if not shape:
        rows_of(x)  # raises: a 0-d x has no batch dimension
    batch = shape[0]
    dev = x.device

    if model_output.__class__ is not _Tensor or model_output.dtype not in _FLOATS or model_output.device != dev:
        check_float("model_output", model_output, like=x)
        plain = False
    mshape = (2 * batch, *shape[1:]) if guidance else shape
    if model_output.shape != mshape:
        hint = " ([uncond; cond] halves for guidance)" if guidance else ""
        raise ValueError(f"model_output must have shape {tuple(mshape)}{hint}, got {tuple(model_output.shape)}")

    if coefs.__class__ is _Tensor and coefs.dtype in _FLOATS and coefs.device == dev:
        cshape = coefs.shape
        if len(cshape) != 2 or cshape[1] != NUM_COEFS:
            check_coefs(coefs, dev)  # raises
    else:
        check_coefs(coefs, dev)
        cshape = coefs.shape
        plain = False
    n_rows = cshape[0]
    if x_eval is not None and not plain_float(x_eval, dev, shape):
        check_float("x_eval", x_eval, like=x, shape=shape)
        plain = False

    if history.__class__ is not tuple and history.__class__ is not list:
        history = seq("history", history)
    n_hist = len(history)
    h0 = h1 = h2 = None
    if n_hist:
        if n_hist > MAX_HISTORY:
            raise ValueError(f"history takes at most {MAX_HISTORY} tensors, got {n_hist}")
        for k, h in enumerate(history):
            if not plain_float(h, dev, shape):
                check_float(f"history[{k}]", h, like=x, shape=shape)
                plain = False
        h0, h1, h2 = (*history, None, None)[:MAX_HISTORY]

    if coef_row.__class__ is not int and (isinstance(coef_row, bool) or not isinstance(coef_row, int)):
        raise TypeError(f"coef_row must be an int, got {type(coef_row).__name__}")
    if coef_index is not None:
        coef_index = check_index("coef_index", coef_index, batch, dev, rows=n_rows)
        plain = plain and coef_index.__class__ is _Tensor
    elif not 0 <= coef_row < n_rows:
        raise ValueError(f"coef_row must be in [0, {n_rows}), got {coef_row}")
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)):
            raise TypeError(f"clip must be a positive float or None, got {type(clip).__name__}")
        if not clip > 0:
            raise ValueError(f"clip must be a positive float or None, got {clip}")

    noise_mode = 0
    if noise is not None:
        if not plain_float(noise, dev, shape):
            check_float("noise", noise, like=x, shape=shape)
            plain = False
        if seed is not None:
            raise ValueError("pass either seed (in-kernel noise) or noise, not both")
        noise_mode = 2
    seed_lo = seed_hi = 0
    if seed is not None:
        seed_lo, seed_hi = split_seed(seed)
        noise_mode = 1
    if stream.__class__ is not int or not 0 <= stream < _STREAMS:
        check_stream(stream)
    if row_ids is not None:
        row_ids = maybe_rows(row_ids, batch, dev)
        plain = plain and row_ids.__class__ is _Tensor
    uncond_mode = 0
    if uncond is not None:
        if uncond.__class__ is str or isinstance(uncond, str):
            if uncond != "halves":
                raise ValueError(f"uncond must be None, 'halves' or a tensor shaped like x, got {uncond!r}")
            if not guidance:
                raise ValueError("uncond='halves' needs guidance=True (model_output as [uncond; cond] halves)")
            uncond, uncond_mode = None, 1
        else:
            if not plain_float(uncond, dev, shape):
                check_float("uncond", uncond, like=x, shape=shape)
                plain = False
            uncond_mode = 2
    if out is not None and not (plain_float(out, dev, shape) and out.is_contiguous()):
        check_out("out", out, x)
        plain = False
    if aux_out is not None and not (plain_float(aux_out, dev, shape) and aux_out.is_contiguous()):
        check_out("aux_out", aux_out, x)
        plain = False
    want_aux = write_aux or aux_out is not None

    path = resolve_backend(backend, dev)
    if path == "triton":
        if x.dtype not in _KERNEL_SET:
            raise TypeError(f"backend='triton' supports float32/float16/bfloat16 storage, got x.dtype={x.dtype}")
        x = x.contiguous()
        model_output = model_output.contiguous()
        if coefs.dtype is not _F32 or not coefs.is_contiguous():
            coefs = coefs.to(_F32).contiguous()
        if x_eval is not None:
            x_eval = x_eval.contiguous()
        if n_hist:
            h0, h1, h2 = [None if h is None else h.contiguous() for h in (h0, h1, h2)]
        if noise is not None:
            noise = noise.contiguous()
        if uncond is not None:
            uncond = uncond.contiguous()
        if out is None:
            out = torch.empty_like(x)
        if want_aux and aux_out is None:
            aux_out = torch.empty_like(out)
        if clip is not None:
            clip = float(clip)
    elif path == "torch" and dev == _CPU and not torch.compiler.is_compiling():
        # host-float coefficients need a concrete table: under torch.compile the generic path traces instead
        path = "cpu"
    return path, want_aux, plain, _new(StepArgs, (x, model_output, coefs, x_eval, h0, h1, h2, noise, uncond, coef_index,
                                           row_ids, out, aux_out, coef_row, n_hist, guidance, clip, noise_mode,
                                           seed_lo, seed_hi, stream, uncond_mode))
