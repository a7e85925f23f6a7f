"""Launcher of ``fused_encode_kernel``: ``dispatch.launcher("fused_encode")``, op
``torch.ops.fastdiff.fused_encode_``."""
from __future__ import annotations

import triton

from ...kernels.encode import fused_encode_kernel
from ..dispatch import define_launcher
from ..launch import block_size, idx64, num_warps_for
from ..records import EncodeArgs


@define_launcher("fused_encode", EncodeArgs, mutates=("out", "target_out", "noise_out"))
def fused_encode_launch(jit, a: EncodeArgs) -> None:
    """Launch ``fused_encode_kernel`` over the flat elements of ``a.x0`` (``jit``: ``wrap_triton`` or as is)."""
    x0, out, coefs = a.x0, a.out, a.coefs
    total = x0.numel()
    if total == 0:
        return
    n_cols = total // x0.shape[0]
    block = block_size(total, x0.device)
    jit(fused_encode_kernel)[(triton.cdiv(total, block),)](
        x0, x0 if a.noise is None else a.noise, out,
        out if a.target_out is None else a.target_out, out if a.noise_out is None else a.noise_out,
        coefs, coefs if a.index is None else a.index, coefs if a.row_ids is None else a.row_ids,
        n_cols, total, a.seed_lo, a.seed_hi, a.stream,
        HAS_IDX=a.index is not None, NOISE_MODE=2 if a.noise is not None else 1,
        WRITE_TARGET=a.target_out is not None, WRITE_NOISE=a.noise_out is not None,
        HAS_ROW_IDS=a.row_ids is not None, GROUPED_NOISE=n_cols % 4 == 0, IDX64=idx64(total), BLOCK=block,
        num_warps=num_warps_for(block),
    )
