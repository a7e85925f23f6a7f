"""DDPMWuerstchenScheduler: DDPM ancestral steps on Wuerstchen's continuous cosine schedule, one fused pass each.

The timesteps are continuous ratios in [0, 1] (``linspace(1, 0, n + 1)`` by default) and ``alpha_cumprod(t)`` is
the shifted cosine of Nichol & Dhariwal (2021), optionally warped by ``scaler``, clamped to [1e-4, 0.9999]; the
per-step rows are built from it in diffusers' float32 arithmetic, then the coefficients in float64. A step's row
follows the timestep's value when it is on the host (a number or a CPU tensor, as diffusers matches it: the
nearest timestep) and the step counter for a device tensor (the first step reads it once, as diffusers reads
every step; traced, the first step too takes the counter's start, the begin index or 0). The whole batch steps
at one timestep (diffusers takes the previous timestep from ``timestep[0]``).
Noise: with a ``generator``, diffusers' draw (every step, the last one's masked to 0); without one, the kernel's
Philox (``_base``'s rule).
"""
from __future__ import annotations

import math
from typing import List, Optional, Union

import numpy as np
import torch

from ._base import FusedSchedulerBase, _read_timestep, check_timestep_value, rows
from ._compat import make_output, register_to_config

__all__ = ["DDPMWuerstchenScheduler"]


class DDPMWuerstchenScheduler(FusedSchedulerBase):
    """Wuerstchen's DDPM sampler (Pernias et al. 2023) on a continuous cosine schedule.

    Same config keys, defaults and numbers as ``diffusers.DDPMWuerstchenScheduler``; ``step`` is one fused pass.

    Example:
        >>> s = DDPMWuerstchenScheduler()
        >>> s.set_timesteps(4)
        >>> x = torch.randn(2, 4, 6, 6)
        >>> for t in s.timesteps[:-1]:
        ...     x = s.step(torch.zeros_like(x), t.expand(2), x, generator=torch.Generator().manual_seed(0)).prev_sample
    """

    _compatibles: List[str] = []
    _output_name = "DDPMWuerstchenSchedulerOutput"

    @register_to_config
    def __init__(self, scaler: float = 1.0, s: float = 0.008) -> None:
        for name, v in (("scaler", scaler), ("s", s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
        self.scaler = scaler
        self.s = torch.tensor([s])
        self._init_alpha_cumprod = torch.cos(self.s / (1 + self.s) * torch.pi * 0.5) ** 2
        self.init_noise_sigma = 1.0
        self._reset_run()

    def _alpha_cumprod(self, t: torch.Tensor, device) -> torch.Tensor:
        """``alpha_cumprod`` at continuous times ``t`` (float32 torch arithmetic, as diffusers computes it)."""
        if self.scaler > 1:
            t = 1 - (1 - t) ** self.scaler
        elif self.scaler < 1:
            t = t**self.scaler
        s = self.s.to(device)
        abar = torch.cos((t + s) / (1 + s) * torch.pi * 0.5) ** 2 / self._init_alpha_cumprod.to(device)
        return abar.clamp(0.0001, 0.9999)

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Identity."""
        return sample

    def set_timesteps(self, num_inference_steps: Optional[int] = None,
                      timesteps: Optional[Union[List[float], torch.Tensor]] = None, device=None) -> None:
        """``linspace(1, 0, n + 1)`` (float32), or the given continuous timesteps."""
        if timesteps is None:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                    or num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
            timesteps = torch.linspace(1.0, 0.0, num_inference_steps + 1, device=device)
        if not isinstance(timesteps, torch.Tensor):
            timesteps = torch.Tensor(timesteps).to(device)
        self.timesteps = timesteps
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._start_run()

    def _build_table(self, key) -> torch.Tensor:
        ts = torch.from_numpy(self._timesteps_host.astype(np.float32))
        abar = self._alpha_cumprod(ts, "cpu").to(torch.float64).numpy()
        a_t, a_p = abar[:-1], abar[1:]
        alpha = a_t / a_p
        std = np.sqrt((1 - alpha) * (1.0 - a_p) / (1.0 - a_t)) * (self._timesteps_host[1:] != 0)
        out_x = 1.0 / np.sqrt(alpha)
        return rows(in_x=0.0, in_m=1.0, out_x=out_x, out_m=-out_x * (1 - alpha) / np.sqrt(1 - a_t), out_d=0.0,
                    out_noise=std)

    def _row(self, timestep) -> int:
        """The row for ``timestep`` (a number or a tensor of the batch's timestep): diffusers' nearest timestep
        from a host value, the step counter for a device tensor once it is known."""
        if isinstance(timestep, torch.Tensor) and timestep.numel() > 1:
            first = timestep.reshape(-1)[0]
        else:
            first = timestep
        value = self._host_value(first)
        if value is None:
            if self._step_index is not None:
                i = self._step_index
                if i + 1 >= len(self._timesteps_host):
                    raise IndexError(f"step called {i + 1} times but the {len(self._timesteps_host)} timesteps "
                                     f"hold {len(self._timesteps_host) - 1} steps; call set_timesteps again")
                return i
            if torch.compiler.is_compiling():
                # traced, the first step has no host value either: a traced loop iterates timesteps[:-1] from
                # the begin index, else from its start (index 0: the nearest timestep eager finds for
                # timesteps[0])
                return self._begin_index or 0
            value = _read_timestep(first)  # the first step only (diffusers reads every step)
        check_timestep_value(value)
        i = int(np.abs(self._timesteps_host - value).argmin())
        if i + 1 >= len(self._timesteps_host):
            raise IndexError(f"timestep {value} is the last of the scheduler's timesteps: there is no step from it")
        return i

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One DDPM step from ``timestep`` to the next timestep (a single fused pass)."""
        i = self._row(timestep)
        table = self._table("rows", sample.device)
        kw = self._noise_kwargs(sample.shape, model_output.device, model_output.dtype, generator, i)
        prev, _ = self._launch(sample, model_output, table, i, out_dtype=model_output.dtype, **kw)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("DDPMWuerstchenSchedulerOutput", prev)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar(t)) x0 + sqrt(1 - abar(t)) noise`` (plain PyTorch, diffusers' arithmetic)."""
        device, dtype = original_samples.device, original_samples.dtype
        abar = self._alpha_cumprod(timesteps, device=device).view(timesteps.size(0),
                                                                  *[1] * (original_samples.dim() - 1))
        return (abar.sqrt() * original_samples + (1 - abar).sqrt() * noise).to(dtype=dtype)

    def previous_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """The timestep after ``timestep[0]`` in ``timesteps``, for the whole batch."""
        i = self._row(timestep)
        return self.timesteps[i + 1][None].expand(timestep.shape[0])
