"""Argument checks and float64 helpers shared by the schedule modules (all host math is float64 on the CPU)."""
from __future__ import annotations

import math
from typing import Any, Sequence, Tuple, Union

import torch

from ..random import check_device

_F64 = torch.float64
_CPU = torch.device("cpu")

TensorLike = Union[torch.Tensor, float, int, Sequence[float]]
DeviceLike = Union[torch.device, str, int, None]


def _check_float(name: str, value: Any) -> float:
    """Return ``value`` as a finite Python float or raise TypeError/ValueError."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        fvalue = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}") from None
    if not math.isfinite(fvalue):
        raise ValueError(f"{name} must be finite, got {fvalue}")
    return fvalue


def _check_positive(name: str, value: Any) -> float:
    fvalue = _check_float(name, value)
    if fvalue <= 0.0:
        raise ValueError(f"{name} must be > 0, got {fvalue}")
    return fvalue


def _check_sigma_range(sigma_min: Any, sigma_max: Any) -> Tuple[float, float]:
    smin = _check_positive("sigma_min", sigma_min)
    smax = _check_float("sigma_max", sigma_max)
    if smin >= smax:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={smin}, sigma_max={smax}")
    return smin, smax


def _check_str_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {tuple(choices)}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")
    return value


def _to_f64(name: str, value: Any) -> torch.Tensor:
    """Convert a tensor / number / sequence to a float64 tensor (tensors keep their device)."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        return value.to(_F64)
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a tensor or a real number, got {type(value).__name__}")
    try:
        return torch.as_tensor(value, dtype=_F64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor or a real number, got {type(value).__name__}") from None


def _finish(x: torch.Tensor, device: DeviceLike) -> torch.Tensor:
    return x if device is None else x.to(check_device(device))


def _linspace(start: float, stop: float, n: int) -> torch.Tensor:
    """``numpy.linspace(start, stop, n)`` in float64, bit for bit.

    numpy computes ``arange(n) * step + start`` and then pins the last value
    to ``stop``; torch.linspace uses a different (symmetric) formula, which
    changes the rounding of half-integers in :func:`inference_timesteps`.
    """
    if n == 1:
        return torch.tensor([start], dtype=_F64)
    step = (stop - start) / (n - 1)
    y = torch.arange(n, dtype=_F64) * step + start
    y[-1] = stop
    return y
