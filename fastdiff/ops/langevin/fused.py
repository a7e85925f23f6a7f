"""Launchers of the Langevin kernels: ``dispatch.launcher("langevin_step")`` / ``("langevin_select")``, ops
``torch.ops.fastdiff.langevin_step_`` / ``langevin_select_``."""
from __future__ import annotations

import triton

from ...kernels.langevin import langevin_kernel, langevin_select_kernel
from ..dispatch import define_launcher
from ..launch import block_size, idx64, num_warps_for
from ..records import LangevinArgs, SelectArgs


@define_launcher("langevin_step", LangevinArgs, mutates=("out", "noise_out"))
def langevin_step_launch(jit, a: LangevinArgs) -> None:
    """Launch ``langevin_kernel`` over the flat elements of ``a.x`` (``jit``: ``wrap_triton`` or as is)."""
    x, out = a.x, a.out
    total = x.numel()
    if total == 0:
        return
    n_cols = total // x.shape[0]
    block = block_size(total, x.device)
    jit(langevin_kernel)[(triton.cdiv(total, block),)](
        x, a.grad, x if a.step is None else a.step, x if a.noise is None else a.noise, out,
        out if a.noise_out is None else a.noise_out, x if a.row_ids is None else a.row_ids,
        n_cols, total, a.step_scalar, a.temperature, a.seed_lo, a.seed_hi, a.stream,
        PER_ROW=a.step is not None, NOISE_MODE=2 if a.noise is not None else 1, WRITE_NOISE=a.noise_out is not None,
        HAS_ROW_IDS=a.row_ids is not None, GROUPED_NOISE=n_cols % 4 == 0, IDX64=idx64(total), BLOCK=block,
        num_warps=num_warps_for(block),
    )


@define_launcher("langevin_select", SelectArgs, mutates=("out",))
def langevin_select_launch(jit, a: SelectArgs) -> None:
    """Launch ``langevin_select_kernel`` over the flat elements of ``a.x``."""
    x = a.x
    total = x.numel()
    if total == 0:
        return
    block = block_size(total, x.device)
    jit(langevin_select_kernel)[(triton.cdiv(total, block),)](
        x, a.proposal, a.accept, a.out, total // x.shape[0], total,
        IDX64=idx64(total), BLOCK=block, num_warps=num_warps_for(block),
    )
