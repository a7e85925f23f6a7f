"""Launch settings shared by the kernel launchers: block size, warps, and when offsets need 64 bits."""
from __future__ import annotations

import torch

__all__ = ["block_size", "num_warps_for", "idx64"]


def block_size(total: int, device: torch.device) -> int:
    """Elements per program: 1024 on GPU; large blocks under the interpreter (each program costs ~ms)."""
    if device.type == "cpu":
        return max(16, min(1 << max(total - 1, 1).bit_length(), 1 << 16))
    return 1024


def num_warps_for(block: int) -> int:
    return 4 if block <= 1024 else 8


def idx64(total: int, extra: int = 0) -> bool:
    """Whether flat offsets (plus ``extra``, e.g. the cond half of a CFG batch) can pass 2**31."""
    return total + extra >= 2**31 - 1
