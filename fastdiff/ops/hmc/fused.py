"""Launcher of the HMC leapfrog kernel: ``dispatch.launcher("hmc_leapfrog")``, op
``torch.ops.fastdiff.hmc_leapfrog_``."""
from __future__ import annotations

import triton

from ...kernels.hmc import hmc_leapfrog_kernel
from ..dispatch import define_launcher
from ..launch import block_size, idx64, num_warps_for
from .record import LeapfrogArgs


@define_launcher("hmc_leapfrog", LeapfrogArgs, mutates=("x_out", "p_out", "noise_out"))
def hmc_leapfrog_launch(jit, a: LeapfrogArgs) -> None:
    """Launch ``hmc_leapfrog_kernel`` over the flat elements of ``a.x`` (``jit``: ``wrap_triton`` or as is)."""
    x, p_out = a.x, a.p_out
    total = x.numel()
    if total == 0:
        return
    n_cols = total // x.shape[0]
    block = block_size(total, x.device)
    jit(hmc_leapfrog_kernel)[(triton.cdiv(total, block),)](
        x, p_out if a.p is None else a.p, a.grad, x if a.step is None else a.step,
        x if a.inv_mass is None else a.inv_mass, x if a.noise is None else a.noise,
        p_out if a.x_out is None else a.x_out, p_out, p_out if a.noise_out is None else a.noise_out,
        x if a.row_ids is None else a.row_ids,
        n_cols, total, a.step_scalar, a.kick, a.seed_lo, a.seed_hi, a.stream,
        MOMENTUM=a.momentum, DRIFT=a.drift, PER_ROW=a.step is not None, HAS_MASS=a.inv_mass is not None,
        WRITE_NOISE=a.noise_out is not None, HAS_ROW_IDS=a.row_ids is not None, GROUPED_NOISE=n_cols % 4 == 0,
        IDX64=idx64(total), BLOCK=block, num_warps=num_warps_for(block),
    )
