"""Launcher of the BAOAB kernel: ``dispatch.launcher("underdamped_step")``, op
``torch.ops.fastdiff.underdamped_step_``."""
from __future__ import annotations

import triton

from ...kernels.underdamped import underdamped_kernel
from ..dispatch import define_launcher
from ..launch import block_size, idx64, num_warps_for
from ..records import UnderdampedArgs


@define_launcher("underdamped_step", UnderdampedArgs, mutates=("x_out", "v_out"))
def underdamped_step_launch(jit, a: UnderdampedArgs) -> None:
    """Launch ``underdamped_kernel`` over the flat elements of ``a.v`` (``jit``: ``wrap_triton`` or as is)."""
    v = a.v
    total = v.numel()
    if total == 0:
        return
    n_cols = total // v.shape[0]
    block = block_size(total, v.device)
    jit(underdamped_kernel)[(triton.cdiv(total, block),)](
        a.x, v, a.grad, v if a.step is None else a.step, v if a.mass is None else a.mass,
        v if a.noise is None else a.noise, v if a.row_ids is None else a.row_ids, a.x_out, a.v_out,
        n_cols, total, a.step_scalar, a.kick, a.friction, a.temperature, a.mass_scalar, a.seed_lo, a.seed_hi,
        a.stream,
        PER_ROW=a.step is not None, PER_COL_MASS=a.mass is not None,
        NOISE_MODE=2 if a.noise is not None else 1, DRIFT=a.drift, HAS_ROW_IDS=a.row_ids is not None,
        GROUPED_NOISE=n_cols % 4 == 0, IDX64=idx64(total), BLOCK=block, num_warps=num_warps_for(block),
    )
