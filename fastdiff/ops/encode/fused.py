"""Launcher for ``fused_encode_kernel`` (``torch.ops.fastdiff.fused_encode_``)."""
from __future__ import annotations

from typing import Optional

import torch
import triton
from torch.library import triton_op, wrap_triton

from ...kernels.encode import fused_encode_kernel
from ..._backend import as_kernel, block_size, interpret_mode, idx64, num_warps_for


def _fused_encode(jit, x0, coefs, index, noise, row_ids, out, target_out, noise_out, seed_lo, seed_hi,
                  stream) -> None:
    """The launch body shared by the op (``jit=wrap_triton``) and the direct path (``jit=as_kernel``)."""
    total = x0.numel()
    if total == 0:
        return
    n_cols = total // x0.shape[0]
    block = block_size(total, x0.device)
    jit(fused_encode_kernel)[(triton.cdiv(total, block),)](
        x0, x0 if noise is None else noise, out,
        out if target_out is None else target_out, out if noise_out is None else noise_out,
        coefs, coefs if index is None else index, coefs if row_ids is None else row_ids,
        n_cols, total, seed_lo, seed_hi, stream,
        HAS_IDX=index is not None, NOISE_MODE=2 if noise is not None else 1,
        WRITE_TARGET=target_out is not None, WRITE_NOISE=noise_out is not None,
        HAS_ROW_IDS=row_ids is not None, GROUPED_NOISE=n_cols % 4 == 0, IDX64=idx64(total), BLOCK=block, num_warps=num_warps_for(block),
    )


@triton_op("fastdiff::fused_encode_", mutates_args={"out", "target_out", "noise_out"})
def fused_encode_triton(
    x0: torch.Tensor,
    coefs: torch.Tensor,
    index: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    row_ids: Optional[torch.Tensor],
    out: torch.Tensor,
    target_out: Optional[torch.Tensor],
    noise_out: Optional[torch.Tensor],
    seed_lo: int,
    seed_hi: int,
    stream: int,
) -> None:
    _fused_encode(wrap_triton, x0, coefs, index, noise, row_ids, out, target_out, noise_out, seed_lo, seed_hi, stream)


def fused_encode_direct(*args) -> None:
    """``fused_encode_triton``'s launch without the torch.library dispatcher (same arguments)."""
    _fused_encode(as_kernel, *args)


if interpret_mode():
    # Under the CPU interpreter the kernel cannot run on fake tensors; the ops only mutate
    # their out= arguments, so tracing needs no shape logic. On CUDA, triton_op traces the kernel itself.
    fused_encode_triton.register_fake(lambda *args, **kwargs: None)
