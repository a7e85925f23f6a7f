"""Which rows each rank computes: contiguous shares of the rows still missing, cut into micro-batches."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

__all__ = ["row_shares"]


def row_shares(num_rows: int, world_size: int) -> List[Tuple[int, int]]:
    """Contiguous ``[start, end)`` shares of ``num_rows`` rows for each rank; sizes differ by at most one.

    Example:
        >>> row_shares(10, 3)
        [(0, 3), (3, 6), (6, 10)]
    """
    return [(num_rows * r // world_size, num_rows * (r + 1) // world_size) for r in range(world_size)]


def _missing(n: int, done: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out, pos = [], 0
    for s, e in done:
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < n:
        out.append((pos, n))
    return out


def _plan(todo: List[Tuple[int, int]], world: int, batch_size: Optional[int]) -> List[List[Tuple[int, int]]]:
    """Split the rows still to do into contiguous per-rank shares, then into micro-batches of <= batch_size."""
    total = sum(e - s for s, e in todo)
    plans: List[List[Tuple[int, int]]] = []
    for lo, hi in row_shares(total, world):  # positions in the flattened list of missing rows
        chunks, pos = [], 0
        for s, e in todo:
            a, b = max(s, s + lo - pos), min(e, s + hi - pos)
            pos += e - s
            while a < b:
                step = b - a if batch_size is None else min(batch_size, b - a)
                chunks.append((a, a + step))
                a += step
        plans.append(chunks)
    return plans
