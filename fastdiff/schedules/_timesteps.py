"""Inference timestep spacings of ``diffusers``' ``DDIMScheduler`` / ``DDPMScheduler``."""
from __future__ import annotations

from typing import Tuple

import torch

from ..ops._common import check_int
from ._checks import _F64, _check_str_choice, _linspace

__all__ = ["TIMESTEP_SPACINGS", "inference_timesteps"]

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
    if spacing == "linspace":
        ts = torch.round(_linspace(0.0, float(T - 1), n)).flip(0)
    elif spacing == "leading":
        ts = (torch.arange(n, dtype=_F64) * (T // n)).flip(0) + offset
    else:  # trailing: numpy's arange(T, 0, -T/n) fills start + i * ((start + step) - start)
        delta = (T + (-T / n)) - T
        ts = torch.round(T + torch.arange(n, dtype=_F64) * delta) - 1
    out = ts.to(torch.int64)
    if int(out[0]) > T - 1:
        raise ValueError(
            f"steps_offset={offset} pushes the first timestep to {int(out[0])}, past num_train_timesteps - 1 = {T - 1}"
        )
    return out
