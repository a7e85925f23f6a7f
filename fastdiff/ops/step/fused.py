"""Launcher of ``fused_step_kernel``: ``dispatch.launcher("fused_step")``, op ``torch.ops.fastdiff.fused_step_``.

Registered with ``torch.library.triton_op`` (``dispatch.define_launcher``) so torch.compile traces into the
kernel and CUDA-graph capture sees a plain launch; plain eager calls run the same body without the dispatcher.
"""
from __future__ import annotations

import triton

from ...kernels.step import fused_step_kernel
from ..dispatch import define_launcher
from ..launch import block_size, idx64, num_warps_for
from ..records import StepArgs


@define_launcher("fused_step", StepArgs, mutates=("out", "aux_out"))
def fused_step_launch(jit, a: StepArgs) -> None:
    """Launch ``fused_step_kernel`` over the flat elements of ``a.x`` (``jit``: ``wrap_triton`` or as is)."""
    x, out, coefs = a.x, a.out, a.coefs
    total = x.numel()
    if total == 0:
        return
    n_cols = total // x.shape[0]
    block = block_size(total, x.device)
    clip = a.clip
    jit(fused_step_kernel)[(triton.cdiv(total, block),)](
        x, x if a.x_eval is None else a.x_eval, a.model_output,
        x if a.h0 is None else a.h0, x if a.h1 is None else a.h1, x if a.h2 is None else a.h2,
        x if a.noise is None else a.noise, x if a.uncond is None else a.uncond,
        out, out if a.aux_out is None else a.aux_out,
        coefs, coefs if a.coef_index is None else a.coef_index, coefs if a.row_ids is None else a.row_ids,
        a.coef_row, n_cols, total, 0.0 if clip is None else clip,
        a.seed_lo, a.seed_hi, a.stream,
        HAS_EVAL=a.x_eval is not None, GUIDANCE=a.guidance, UNCOND=a.uncond_mode, DO_CLIP=clip is not None,
        N_HIST=a.n_hist, NOISE_MODE=a.noise_mode, WRITE_AUX=a.aux_out is not None,
        PER_ROW=a.coef_index is not None, HAS_ROW_IDS=a.row_ids is not None, GROUPED_NOISE=n_cols % 4 == 0,
        IDX64=idx64(total, total if a.guidance else 0),
        BLOCK=block, num_warps=num_warps_for(block),
    )
