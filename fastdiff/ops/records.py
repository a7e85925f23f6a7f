"""The argument list of each kernel launch, written once: one NamedTuple per ``torch.library`` op.

A record's fields are its op's parameters, in order, annotated with the op's types (``dispatch.define_launcher``
infers the schema from them); the launch body in ``fused.py`` reads the fields by name. The step op's parse
(``ops/step/parse.py``) builds a ``StepArgs`` for every backend: its CPU path and reference read the same record.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = ["StepArgs", "EncodeArgs", "LangevinArgs", "SelectArgs", "UnderdampedArgs"]


class StepArgs(NamedTuple):
    """``fused_step_kernel``'s launch (``torch.ops.fastdiff.fused_step_``): writes ``out`` and ``aux_out``."""

    x: torch.Tensor
    model_output: torch.Tensor
    coefs: torch.Tensor
    x_eval: Optional[torch.Tensor]
    h0: Optional[torch.Tensor]
    h1: Optional[torch.Tensor]
    h2: Optional[torch.Tensor]
    noise: Optional[torch.Tensor]
    uncond: Optional[torch.Tensor]  # the unconditional x0 estimate given as a tensor (uncond_mode 2)
    coef_index: Optional[torch.Tensor]
    row_ids: Optional[torch.Tensor]
    out: torch.Tensor  # None before the kernel path allocates it (the CPU path and reference write their own)
    aux_out: Optional[torch.Tensor]
    coef_row: int
    n_hist: int
    guidance: bool
    clip: Optional[float]
    noise_mode: int  # 0: none, 1: Philox from (seed_lo, seed_hi), 2: the ``noise`` tensor
    seed_lo: int
    seed_hi: int
    stream: int
    uncond_mode: int = 0  # 0: no u term, 1: u from the guided halves, 2: u is the ``uncond`` tensor

    @property
    def history(self) -> tuple:
        """The history tensors given (``h0..h{n_hist-1}``)."""
        return (self.h0, self.h1, self.h2)[: self.n_hist]

    @property
    def seed(self) -> Optional[int]:
        """The Philox seed (None unless ``noise_mode == 1``)."""
        return self.seed_lo | (self.seed_hi << 32) if self.noise_mode == 1 else None


class EncodeArgs(NamedTuple):
    """``fused_encode_kernel``'s launch (``torch.ops.fastdiff.fused_encode_``): noise from ``noise`` or Philox."""

    x0: torch.Tensor
    coefs: torch.Tensor  # (R, 4) rows of (a, s, ta, tn): x_t = a*x0 + s*z, target = ta*x0 + tn*z
    index: Optional[torch.Tensor]  # int64 (batch,): the row of each sample (row b for sample b when None)
    noise: Optional[torch.Tensor]  # z given; else Philox noise of (seed_lo, seed_hi, row id, stream)
    row_ids: Optional[torch.Tensor]
    out: torch.Tensor
    target_out: Optional[torch.Tensor]  # also write the training target
    noise_out: Optional[torch.Tensor]  # also write z
    seed_lo: int
    seed_hi: int
    stream: int


class LangevinArgs(NamedTuple):
    """``langevin_kernel``'s launch (``torch.ops.fastdiff.langevin_step_``): per-chain ``step`` or ``step_scalar``."""

    x: torch.Tensor
    grad: torch.Tensor
    step: Optional[torch.Tensor]  # float32 (n_chains,) step sizes; None: every chain takes step_scalar
    noise: Optional[torch.Tensor]  # z given; else Philox noise of (seed_lo, seed_hi, chain id, stream)
    row_ids: Optional[torch.Tensor]
    out: torch.Tensor
    noise_out: Optional[torch.Tensor]  # also write z (MALA's proposal density needs it)
    step_scalar: float
    temperature: float
    seed_lo: int
    seed_hi: int
    stream: int


class SelectArgs(NamedTuple):
    """``langevin_select_kernel``'s launch (``torch.ops.fastdiff.langevin_select_``)."""

    x: torch.Tensor
    proposal: torch.Tensor
    accept: torch.Tensor
    out: torch.Tensor


class UnderdampedArgs(NamedTuple):
    """``underdamped_kernel``'s launch (``torch.ops.fastdiff.underdamped_step_``): one BAOAB pass, or only its
    kick when ``drift`` is False (then ``x`` and ``x_out`` are not touched)."""

    x: torch.Tensor
    v: torch.Tensor
    grad: torch.Tensor
    step: Optional[torch.Tensor]  # float32 (n_chains,) step sizes; None: every chain takes step_scalar
    mass: Optional[torch.Tensor]  # float32 (n_cols,) diagonal mass; None: mass_scalar for every element
    noise: Optional[torch.Tensor]  # z given; else Philox noise of (seed_lo, seed_hi, chain id, stream)
    row_ids: Optional[torch.Tensor]
    x_out: torch.Tensor
    v_out: torch.Tensor
    step_scalar: float
    kick: float
    friction: float
    temperature: float
    mass_scalar: float
    drift: bool
    seed_lo: int
    seed_hi: int
    stream: int
