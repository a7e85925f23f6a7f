"""The PyTorch twin of the in-kernel Philox noise (``fastdiff.kernels.philox``).

A row's noise is a function of ``(seed, row id, stream, column)`` only, so
sampling rows 0-7 at once or as 0-3 and 4-7 gives the same numbers, on CPU and
GPU alike (up to the rounding of ``log``/``cos``/``sin``).

Example:
    >>> import torch, fastdiff
    >>> z = fastdiff.philox_normal((2, 5), seed=0, stream=3)
    >>> z2 = fastdiff.philox_normal((1, 5), seed=0, stream=3, row_ids=torch.tensor([1]))
    >>> torch.equal(z[1:], z2)
    True
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["philox_normal", "philox4x32_10", "split_seed", "MAX_SEED"]

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
MAX_SEED = 2**63 - 1


def split_seed(seed: int) -> tuple[int, int]:
    """Validate ``seed`` and return its (low, high) 32-bit words."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int in [0, 2**63), got {type(seed).__name__}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed & _MASK32, (seed >> 32) & _MASK32


def _mulhilo(m: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # m*b overflows int64, so split b into 16-bit halves: both partial products < 2**48.
    b_hi, b_lo = b >> 16, b & 0xFFFF
    p_hi, p_lo = m * b_hi, m * b_lo
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK32
    return hi, lo


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors holding uint32 values (bit-exact with the kernel)."""
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


_NP_M0, _NP_M1, _NP_MASK, _NP_32 = np.uint64(_M0), np.uint64(_M1), np.uint64(_MASK32), np.uint64(32)


def _philox_numpy(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on uint64 arrays: the 32x32->64 products are exact, so mulhilo is one multiply.

    On CPU this is ~100x faster than the int64 torch emulation (14.7 ms vs 2.2 s for 65k counters).
    """
    for _ in range(10):
        p0 = _NP_M0 * c0
        p1 = _NP_M1 * c2
        c0, c1, c2, c3 = ((p1 >> _NP_32) ^ c1 ^ np.uint64(k0), p1 & _NP_MASK,
                          (p0 >> _NP_32) ^ c3 ^ np.uint64(k1), p0 & _NP_MASK)
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def _normals_numpy(rows: int, groups: int, row_ids: torch.Tensor, stream: int, k0: int, k1: int) -> torch.Tensor:
    rid = row_ids.cpu().numpy().astype(np.uint64)[:, None]
    c0 = np.broadcast_to(np.arange(groups, dtype=np.uint64)[None, :], (rows, groups))
    c1 = np.broadcast_to(rid & _NP_MASK, (rows, groups))
    c2 = np.full((rows, groups), stream, dtype=np.uint64)
    c3 = np.broadcast_to(rid >> _NP_32, (rows, groups))
    words = _philox_numpy(c0, c1, c2, c3, k0, k1)
    out = np.empty((rows, groups, 4), dtype=np.float32)
    for pair in range(2):
        ua = ((words[2 * pair] >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / 16777216.0)
        ub = ((words[2 * pair + 1] >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / 16777216.0)
        radius = np.sqrt(np.float32(-2.0) * np.log(ua))
        theta = np.float32(2.0 * math.pi) * ub
        out[:, :, 2 * pair] = radius * np.cos(theta)
        out[:, :, 2 * pair + 1] = radius * np.sin(theta)
    return torch.from_numpy(out)


def _unit(u: torch.Tensor) -> torch.Tensor:
    return ((u >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def philox_normal(
    shape: Union[Sequence[int], torch.Size],
    seed: int,
    stream: int = 0,
    *,
    row_ids: Optional[torch.Tensor] = None,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normals of ``shape`` from the fastdiff Philox stream.

    Dimension 0 is the row (batch) axis; the rest are flattened into columns.
    ``row_ids`` (int64, one per row; default ``arange(shape[0])``) are the rows'
    global ids. The result matches the Triton kernels' noise element for element.

    Example:
        >>> fastdiff.philox_normal((4, 3, 8, 8), seed=7).shape
        torch.Size([4, 3, 8, 8])
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("shape must have at least one (row) dimension, got ()")
    k0, k1 = split_seed(seed)
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream <= _MASK32:
        raise ValueError(f"stream must be an int in [0, 2**32), got {stream!r}")
    if row_ids is not None and device is None:
        device = row_ids.device
    rows = shape[0]
    cols = math.prod(shape[1:])
    if row_ids is None:
        row_ids = torch.arange(rows, dtype=torch.int64, device=device)
    else:
        if row_ids.dtype != torch.int64 or row_ids.shape != (rows,):
            raise ValueError(f"row_ids must be an int64 tensor of shape ({rows},), got {tuple(row_ids.shape)} {row_ids.dtype}")
        row_ids = row_ids.to(device)
    groups = (cols + 3) // 4
    if torch.device(device if device is not None else "cpu").type == "cpu":
        out = _normals_numpy(rows, groups, row_ids, stream, k0, k1)
        return out.reshape(rows, groups * 4)[:, :cols].reshape(shape).to(dtype)
    c0 = torch.arange(groups, dtype=torch.int64, device=device).expand(rows, groups)
    c1 = (row_ids & _MASK32)[:, None].expand(rows, groups)
    c2 = torch.full((rows, groups), stream, dtype=torch.int64, device=device)
    c3 = (row_ids >> 32)[:, None].expand(rows, groups) & _MASK32
    o0, o1, o2, o3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    out = torch.empty(rows, groups, 4, dtype=torch.float32, device=device)
    for pair, (ua, ub) in enumerate(((o0, o1), (o2, o3))):
        radius = torch.sqrt(-2.0 * torch.log(_unit(ua)))
        theta = (2.0 * math.pi) * _unit(ub)
        out[:, :, 2 * pair] = radius * torch.cos(theta)
        out[:, :, 2 * pair + 1] = radius * torch.sin(theta)
    out = out.reshape(rows, groups * 4)[:, :cols]
    return out.reshape(shape).to(dtype)
