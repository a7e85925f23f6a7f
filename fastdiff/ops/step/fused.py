"""Launcher for ``fused_step_kernel``, registered as ``torch.ops.fastdiff.fused_step_``.

Registered with ``torch.library.triton_op`` so torch.compile traces into the
kernel and CUDA-graph capture sees a plain launch; ``fused_step_direct`` is the
same launch without the dispatcher, for plain eager calls (``_backend.launch``).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
from torch.library import triton_op, wrap_triton

from ...kernels.step import fused_step_kernel
from ..._backend import as_kernel, block_size, interpret_mode, idx64, num_warps_for


def _fused_step(jit, x, model_output, coefs, x_eval, h0, h1, h2, noise, coef_index, row_ids, out, aux_out,
                coef_row, n_hist, guidance, clip, noise_mode, seed_lo, seed_hi, stream) -> None:
    """The launch body shared by the op (``jit=wrap_triton``) and the direct path (``jit=as_kernel``)."""
    batch = x.shape[0]
    total = x.numel()
    if total == 0:
        return
    n_cols = total // batch
    block = block_size(total, x.device)
    grid = (triton.cdiv(total, block),)
    jit(fused_step_kernel)[grid](
        x, x if x_eval is None else x_eval, model_output,
        x if h0 is None else h0, x if h1 is None else h1, x if h2 is None else h2,
        x if noise is None else noise,
        out, out if aux_out is None else aux_out,
        coefs, coefs if coef_index is None else coef_index, coefs if row_ids is None else row_ids,
        coef_row, n_cols, total, 0.0 if clip is None else clip,
        seed_lo, seed_hi, stream,
        HAS_EVAL=x_eval is not None, GUIDANCE=guidance, DO_CLIP=clip is not None,
        N_HIST=n_hist, NOISE_MODE=noise_mode, WRITE_AUX=aux_out is not None,
        PER_ROW=coef_index is not None, HAS_ROW_IDS=row_ids is not None, GROUPED_NOISE=n_cols % 4 == 0,
        IDX64=idx64(total, total if guidance else 0),
        BLOCK=block, num_warps=num_warps_for(block),
    )


@triton_op("fastdiff::fused_step_", mutates_args={"out", "aux_out"})
def fused_step_triton(
    x: torch.Tensor,
    model_output: torch.Tensor,
    coefs: torch.Tensor,
    x_eval: Optional[torch.Tensor],
    h0: Optional[torch.Tensor],
    h1: Optional[torch.Tensor],
    h2: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    coef_index: Optional[torch.Tensor],
    row_ids: Optional[torch.Tensor],
    out: torch.Tensor,
    aux_out: Optional[torch.Tensor],
    coef_row: int,
    n_hist: int,
    guidance: bool,
    clip: Optional[float],
    noise_mode: int,
    seed_lo: int,
    seed_hi: int,
    stream: int,
) -> None:
    _fused_step(wrap_triton, x, model_output, coefs, x_eval, h0, h1, h2, noise, coef_index, row_ids, out, aux_out,
                coef_row, n_hist, guidance, clip, noise_mode, seed_lo, seed_hi, stream)


def fused_step_direct(*args) -> None:
    """``fused_step_triton``'s launch without the torch.library dispatcher (same arguments)."""
    _fused_step(as_kernel, *args)


if interpret_mode():
    # Under the CPU interpreter the kernel cannot run on fake tensors; the ops only mutate
    # their out= arguments, so tracing needs no shape logic. On CUDA, triton_op traces the kernel itself.
    fused_step_triton.register_fake(lambda *args, **kwargs: None)
