"""Sizes and dtypes as the suite and the CLI spell them: ``16x4x64x64``, ``16M``, ``fp32``, ``bf16``."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch

__all__ = ["DTYPES", "DTYPE_NAMES", "parse_size", "parse_dtype", "shape_str", "default_sizes"]

DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}
#: The short name of each supported dtype, as reports print it.
DTYPE_NAMES: Dict[torch.dtype, str] = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def parse_size(size: Union[str, int, Sequence[int]]) -> Tuple[int, ...]:
    """``"16x4x64x64"`` -> (16, 4, 64, 64); a count (``65536``, ``"16M"``, ``"1K"``) -> (16, N/16) rows.

    Example:
        >>> parse_size("16M")
        (16, 1048576)
    """
    if isinstance(size, (tuple, list)):
        shape = tuple(int(s) for s in size)
    elif isinstance(size, int) and not isinstance(size, bool):
        shape = (size,)
    elif isinstance(size, str):
        text = size.strip().lower()
        if "x" in text:
            try:
                shape = tuple(int(p) for p in text.split("x"))
            except ValueError:
                raise ValueError(f"size must look like 16x4x64x64 or 16M, got {size!r}") from None
        else:
            mult = {"k": 2**10, "m": 2**20, "g": 2**30}.get(text[-1:], 1)
            try:
                shape = (int(float(text[:-1] if mult > 1 else text) * mult),)
            except ValueError:
                raise ValueError(f"size must look like 16x4x64x64 or 16M, got {size!r}") from None
    else:
        raise TypeError(f"size must be a string, an int or a shape, got {type(size).__name__}")
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"size must have positive dimensions, got {size!r}")
    if len(shape) == 1:
        n = shape[0]
        shape = (16, n // 16) if n % 16 == 0 and n >= 16 else (1, n)
    return shape


def parse_dtype(name: Union[str, torch.dtype]) -> torch.dtype:
    """``"bf16"`` (or any key of :data:`DTYPES`, or a supported ``torch.dtype``) -> the ``torch.dtype``.

    Example:
        >>> parse_dtype("bf16")
        torch.bfloat16
    """
    if isinstance(name, torch.dtype):
        if name not in DTYPE_NAMES:
            raise ValueError(f"dtype must be float32/bfloat16/float16, got {name}")
        return name
    key = str(name).strip().lower()
    if key not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(set(DTYPES))}, got {name!r}")
    return DTYPES[key]


def shape_str(shape: Sequence[int]) -> str:
    """(16, 4, 64, 64) -> ``"16x4x64x64"``."""
    return "x".join(str(s) for s in shape)


def default_sizes(device: Union[str, torch.device], quick: bool = False) -> List[str]:
    """CPU: per-call overhead (1x4x8x8) and a small latent batch; CUDA: 16M elements (>= L2 many times)."""
    if torch.device(device).type == "cuda":
        return ["16x4x128x128"] if quick else ["16x4x512x512"]
    return ["1x4x8x8", "2x4x16x16"] if quick else ["1x4x8x8", "16x4x64x64"]
