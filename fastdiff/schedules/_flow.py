"""Rectified-flow (flow matching) schedule with the static timestep shift of SD3."""
from __future__ import annotations

from typing import Tuple

import torch

from ..ops._common import check_int
from ._checks import DeviceLike, TensorLike, _check_positive, _finish, _linspace, _to_f64

__all__ = ["FlowMatchingSchedule"]


class FlowMatchingSchedule:
    """Rectified flow ``x_t = (1 - s) x0 + s eps`` with the static timestep shift.

    ``s = shift * t / (1 + (shift - 1) * t)`` for ``t`` in [0, 1]
    (``shift = 3`` for SD3). Matches ``diffusers``'
    ``FlowMatchEulerDiscreteScheduler`` with ``use_dynamic_shifting=False``
    (and no karras/exponential/beta sigmas, no ``shift_terminal``), in
    float64 instead of float32:

    * training: ``train_sigmas = shift_sigmas(linspace(1, T, T)[::-1] / T)``
      and ``train_timesteps = train_sigmas * T``; ``sigma_max`` /
      ``sigma_min`` are the first / last *shifted* training sigmas;
    * :meth:`sigmas` ``(n)``: ``shift_sigmas(linspace(sigma_max * T,
      sigma_min * T, n) / T)`` followed by a 0. As in diffusers the end point
      ``sigma_min`` has already been shifted once, so for ``shift != 1`` the
      last non-zero sigma is ``shift(shift(1 / T))``.

    Example:
        >>> fm = FlowMatchingSchedule(1000, shift=1.0)
        >>> fm.sigmas(4).tolist()
        [1.0, 0.667, 0.334, 0.001, 0.0]
        >>> a, s = fm.alpha_sigma(torch.tensor(0.25))
        >>> a.item(), s.item()
        (0.75, 0.25)
    """

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0) -> None:
        self.num_train_timesteps = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
        self.shift = _check_positive("shift", shift)
        T = self.num_train_timesteps
        self.train_sigmas = self.shift_sigmas(_linspace(1.0, float(T), T).flip(0) / T)
        self.train_timesteps = self.train_sigmas * T

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_train_timesteps={self.num_train_timesteps}, shift={self.shift})"

    @property
    def sigma_max(self) -> float:
        """First (largest) shifted training sigma, always 1.0.

        Example:
            >>> FlowMatchingSchedule(shift=3.0).sigma_max
            1.0
        """
        return float(self.train_sigmas[0])

    @property
    def sigma_min(self) -> float:
        """Last (smallest) shifted training sigma, ``shift(1 / T)``.

        Example:
            >>> round(FlowMatchingSchedule(1000, shift=3.0).sigma_min, 9)
            0.002994012
        """
        return float(self.train_sigmas[-1])

    def shift_sigmas(self, s: TensorLike) -> torch.Tensor:
        """Apply the static shift ``shift * s / (1 + (shift - 1) * s)`` (float64).

        Example:
            >>> FlowMatchingSchedule(shift=3.0).shift_sigmas(0.5).item()
            0.75
        """
        ss = _to_f64("s", s)
        return self.shift * ss / (1.0 + (self.shift - 1.0) * ss)

    def alpha_sigma(self, t: TensorLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(1 - s, s)`` with ``s = shift_sigmas(t)``, ``t`` in [0, 1] (float64).

        Example:
            >>> a, s = FlowMatchingSchedule(shift=3.0).alpha_sigma(0.5)
            >>> a.item(), s.item()
            (0.25, 0.75)
        """
        s = self.shift_sigmas(t)
        return 1.0 - s, s

    def sigmas(self, n: int, device: DeviceLike = None) -> torch.Tensor:
        """``n + 1`` decreasing flow sigmas for ``n`` sampling steps, ending in 0.

        ``shift_sigmas(linspace(sigma_max * T, sigma_min * T, n) / T)`` then
        ``0`` appended (diffusers' ``set_timesteps``); float64, moved to
        ``device`` when given.

        Example:
            >>> FlowMatchingSchedule(1000).sigmas(2).tolist()
            [1.0, 0.001, 0.0]
        """
        n = check_int("n", n, minimum=1)
        T = self.num_train_timesteps
        ts = _linspace(self.sigma_max * T, self.sigma_min * T, n)
        s = self.shift_sigmas(ts / T)
        return _finish(torch.cat([s, s.new_zeros(1)]), device)

    def timesteps(self, n: int, device: DeviceLike = None) -> torch.Tensor:
        """The ``n`` model timesteps ``sigmas(n)[:-1] * T`` (float64), as diffusers passes to the model.

        Example:
            >>> FlowMatchingSchedule(1000).timesteps(2).tolist()
            [1000.0, 1.0]
        """
        return _finish(self.sigmas(n)[:-1] * self.num_train_timesteps, device)
