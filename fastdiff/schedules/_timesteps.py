"""Inference timestep spacings of ``diffusers``' ``DDIMScheduler`` / ``DDPMScheduler``."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..ops._common import check_int
from ._checks import _check_str_choice

__all__ = ["TIMESTEP_SPACINGS", "inference_timesteps", "spaced_timesteps"]

#: Spacings accepted by :func:`inference_timesteps`.
TIMESTEP_SPACINGS: Tuple[str, ...] = ("leading", "trailing", "linspace")


def inference_timesteps(
    num_inference_steps: int,
    num_train_timesteps: int = 1000,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> torch.Tensor:
    """Descending int64 training timesteps for sampling, as ``diffusers`` DDIM/DDPM ``set_timesteps``.

    With ``n = num_inference_steps`` and ``T = num_train_timesteps``:

    * ``"linspace"``: ``round(np.linspace(0, T - 1, n))[::-1]``;
    * ``"leading"``: ``(arange(n) * (T // n))[::-1] + steps_offset``;
    * ``"trailing"``: ``round(np.arange(T, 0, -T / n)) - 1``.

    ``steps_offset`` is only used by ``"leading"`` (as in diffusers'
    DDIMScheduler). Rounding is half-to-even, like numpy. For ``"trailing"``
    numpy's float ``arange`` sometimes yields ``n + 1`` values (the extra one
    being ``-1``, e.g. ``T=1000, n=61``); only its first ``n`` are returned.

    Raises:
        ValueError: ``n < 1``, ``T < 1``, ``n > T``, unknown ``spacing``,
        negative ``steps_offset`` or one that pushes a timestep past ``T - 1``.

    Example:
        >>> inference_timesteps(4, 1000, "leading", 1).tolist()
        [751, 501, 251, 1]
        >>> inference_timesteps(4, 1000, "trailing").tolist()
        [999, 749, 499, 249]
        >>> inference_timesteps(4, 1000, "linspace").tolist()
        [999, 666, 333, 0]
    """
    n = check_int("num_inference_steps", num_inference_steps, minimum=1)
    T = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
    spacing = _check_str_choice("spacing", spacing, TIMESTEP_SPACINGS)
    offset = check_int("steps_offset", steps_offset, minimum=0)
    if n > T:
        raise ValueError(
            f"num_inference_steps must be <= num_train_timesteps, got num_inference_steps={n} "
            f"and num_train_timesteps={T}"
        )
    ts = np.round(spaced_timesteps(n, T, spacing, offset))[:n]  # trailing: numpy's arange can give n + 1
    out = torch.from_numpy(ts.astype(np.int64))
    if int(out[0]) > T - 1:
        raise ValueError(
            f"steps_offset={offset} pushes the first timestep to {int(out[0])}, past num_train_timesteps - 1 = {T - 1}"
        )
    return out


def spaced_timesteps(n: int, T: int, spacing: str, steps_offset: int = 0, extra: int = 0,
                     last: Optional[int] = None) -> np.ndarray:
    """diffusers' timestep spacings as float64 numpy values (not yet rounded or cast): the one implementation
    behind :func:`inference_timesteps` (DDPM/DDIM), the sigma schedulers' float32 timesteps and the multistep
    solvers' (``extra=1``: ``n + 1`` points, the last dropped; ``last``: the end of the range, default ``T``).

    Example:
        >>> spaced_timesteps(4, 1000, "linspace").tolist()
        [999.0, 666.0, 333.0, 0.0]
    """
    last = T if last is None else last
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, n + extra)
        ts = ts[::-1][: n] if extra else ts[::-1]
        return ts.copy()
    if spacing == "leading":
        ratio = last // (n + extra)
        ts = (np.arange(0, n + extra) * ratio).round()[::-1][: n].astype(np.float64)
        return ts + steps_offset
    if spacing == "trailing":
        ratio = T / n
        return np.arange(last, 0, -ratio).round() - 1
    raise ValueError(f"timestep_spacing must be one of 'linspace', 'leading', 'trailing', got {spacing!r}")
