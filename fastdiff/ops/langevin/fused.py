"""Launchers for the Langevin kernels (``torch.ops.fastdiff.langevin_step_`` / ``langevin_select_``)."""
from __future__ import annotations

from typing import Optional

import torch
import triton
from torch.library import triton_op, wrap_triton

from ...kernels.langevin import langevin_kernel, langevin_select_kernel
from ..._backend import as_kernel, block_size, interpret_mode, idx64, num_warps_for


def _langevin_step(jit, x, grad, step, noise, row_ids, out, noise_out, step_scalar, temperature, seed_lo, seed_hi,
                   stream) -> None:
    """The launch body shared by the op (``jit=wrap_triton``) and the direct path (``jit=as_kernel``)."""
    total = x.numel()
    if total == 0:
        return
    n_cols = total // x.shape[0]
    block = block_size(total, x.device)
    jit(langevin_kernel)[(triton.cdiv(total, block),)](
        x, grad, x if step is None else step, x if noise is None else noise, out,
        out if noise_out is None else noise_out, x if row_ids is None else row_ids,
        n_cols, total, step_scalar, temperature, seed_lo, seed_hi, stream,
        PER_ROW=step is not None, NOISE_MODE=2 if noise is not None else 1, WRITE_NOISE=noise_out is not None,
        HAS_ROW_IDS=row_ids is not None, GROUPED_NOISE=n_cols % 4 == 0, IDX64=idx64(total), BLOCK=block, num_warps=num_warps_for(block),
    )


def _langevin_select(jit, x, proposal, accept, out) -> None:
    total = x.numel()
    if total == 0:
        return
    block = block_size(total, x.device)
    jit(langevin_select_kernel)[(triton.cdiv(total, block),)](
        x, proposal, accept, out, total // x.shape[0], total,
        IDX64=idx64(total), BLOCK=block, num_warps=num_warps_for(block),
    )


@triton_op("fastdiff::langevin_step_", mutates_args={"out", "noise_out"})
def langevin_step_triton(
    x: torch.Tensor,
    grad: torch.Tensor,
    step: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    row_ids: Optional[torch.Tensor],
    out: torch.Tensor,
    noise_out: Optional[torch.Tensor],
    step_scalar: float,
    temperature: float,
    seed_lo: int,
    seed_hi: int,
    stream: int,
) -> None:
    _langevin_step(wrap_triton, x, grad, step, noise, row_ids, out, noise_out, step_scalar, temperature, seed_lo,
                   seed_hi, stream)


@triton_op("fastdiff::langevin_select_", mutates_args={"out"})
def langevin_select_triton(x: torch.Tensor, proposal: torch.Tensor, accept: torch.Tensor, out: torch.Tensor) -> None:
    _langevin_select(wrap_triton, x, proposal, accept, out)


def langevin_step_direct(*args) -> None:
    """``langevin_step_triton``'s launch without the torch.library dispatcher (same arguments)."""
    _langevin_step(as_kernel, *args)


def langevin_select_direct(*args) -> None:
    """``langevin_select_triton``'s launch without the torch.library dispatcher (same arguments)."""
    _langevin_select(as_kernel, *args)


if interpret_mode():
    # Under the CPU interpreter the kernel cannot run on fake tensors; the ops only mutate
    # their out= arguments, so tracing needs no shape logic. On CUDA, triton_op traces the kernel itself.
    langevin_step_triton.register_fake(lambda *args, **kwargs: None)
    langevin_select_triton.register_fake(lambda *args, **kwargs: None)
