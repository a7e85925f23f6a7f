"""``record_every``: every k-th state of many chains, kept in one preallocated buffer in arviz's layout."""
from __future__ import annotations

from typing import Optional

import torch

from ..ops._common import check_int

__all__ = ["DrawRecorder", "check_record_every"]


def check_record_every(record_every, n_steps: int) -> Optional[int]:
    """``None`` (keep no draws) or a positive int; the error names the argument."""
    if record_every is None:
        return None
    return check_int("record_every", record_every, minimum=1)


class DrawRecorder:
    """The state after steps ``k, 2k, ...`` (``k = record_every``), written in place into one buffer.

    The buffer is shaped ``(chains, n_draws, *event)`` (arviz's ``(chain, draw, ...)``), with
    ``n_draws = n_steps // k``, allocated once before the loop in x's dtype and device; a record is one
    strided device copy, no host sync and no allocation.

    Example:
        >>> rec = DrawRecorder(torch.zeros(4, 2), n_steps=10, record_every=5)
        >>> for i in range(10):
        ...     rec.after_step(i, torch.full((4, 2), float(i)))
        >>> rec.draws[:, :, 0][0].tolist()
        [4.0, 9.0]
    """

    def __init__(self, x: torch.Tensor, n_steps: int, record_every: int):
        self.every = int(record_every)
        n_draws = int(n_steps) // self.every
        self.draws = torch.empty((x.shape[0], n_draws) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)

    def after_step(self, i: int, x: torch.Tensor) -> None:
        """Record ``x`` if step ``i`` (0-based) is the last of a block of ``record_every`` steps."""
        j, r = divmod(i + 1, self.every)
        if r == 0 and j <= self.draws.shape[1]:
            self.draws[:, j - 1].copy_(x)
