"""The HMC leapfrog kernel's launch record (``torch.ops.fastdiff.hmc_leapfrog_``), beside the op family that uses it."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = ["LeapfrogArgs"]


class LeapfrogArgs(NamedTuple):
    """``hmc_leapfrog_kernel``'s launch: writes ``p_out``, ``x_out`` when ``drift`` and ``noise_out`` when given."""

    x: torch.Tensor
    p: Optional[torch.Tensor]  # None: a fresh momentum from ``noise`` or Philox (the refresh pass)
    grad: torch.Tensor
    step: Optional[torch.Tensor]  # float32 (n_chains,) step sizes; None: every chain takes step_scalar
    inv_mass: Optional[torch.Tensor]  # float32 (n_cols,) diagonal of M^-1 shared by all chains; None: identity
    noise: Optional[torch.Tensor]  # z given for the refresh; else Philox noise of (seed, chain id, stream)
    row_ids: Optional[torch.Tensor]
    x_out: Optional[torch.Tensor]  # None when the pass does not drift (a trajectory's last half-kick)
    p_out: torch.Tensor
    noise_out: Optional[torch.Tensor]  # also write z (the refresh pass)
    step_scalar: float
    kick: float  # the kick's fraction of a step: 0.5 at a trajectory's ends, 1.0 between
    momentum: int  # 0: load p, 1: Philox z from (seed_lo, seed_hi), 2: the ``noise`` tensor
    drift: bool
    seed_lo: int
    seed_hi: int
    stream: int
