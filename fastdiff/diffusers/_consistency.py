"""CMStochasticIterativeScheduler: multistep sampling of consistency models, each step one fused pass.

A consistency model maps a noisy sample at level ``sigma`` straight to an x0 estimate through the boundary
scalings ``x0 = c_skip(sigma) x + c_out(sigma) F(x)`` (Song et al. 2023, "Consistency Models", App. C;
:func:`fastdiff.solvers.consistency_scalings`), and multistep sampling re-noises that estimate to the next
Karras level: ``x_next = clip(x0) + s_noise sqrt(sigma_hat**2 - sigma_min**2) z`` with ``sigma_hat`` the next
sigma clamped to ``[sigma_min, sigma_max]``. Both are coefficients of one ``fused_step`` row.
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np
import torch

from ..schedules import karras_ramp
from ..solvers import consistency_scalings
from ._base import FusedSchedulerBase, _TABLE_ARITHMETIC, result_dtype, rows
from ._compat import make_output, register_to_config

__all__ = ["CMStochasticIterativeScheduler"]


class CMStochasticIterativeScheduler(FusedSchedulerBase):
    """Multistep (and one-step) consistency-model sampling, Song et al. (2023) Algorithm 1.

    Same config keys, defaults, timesteps (``1000 * 0.25 * log(sigma)``, float64) and numbers as
    ``diffusers.CMStochasticIterativeScheduler``; ``step`` is one fused pass (the noise drawn as diffusers draws
    it when a generator is given, else in-kernel). ``timesteps`` given to ``set_timesteps`` are integer training
    indices in descending order, placed on the Karras ramp as diffusers places them.

    Example:
        >>> s = CMStochasticIterativeScheduler(num_train_timesteps=40)
        >>> s.set_timesteps(4)
        >>> x = torch.randn(1, 3, 8, 8) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     model_input = s.scale_model_input(x, t)  # what the consistency model would see
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _output_name = "CMStochasticIterativeSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 40,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        s_noise: float = 1.0,
        rho: float = 7.0,
        clip_denoised: bool = True,
    ) -> None:
        self.init_noise_sigma = sigma_max
        self.num_inference_steps = None
        self.custom_timesteps = False
        self.is_scale_input_called = False
        self._reset_run()
        sigmas = self._convert_to_karras(np.linspace(0, 1, num_train_timesteps))
        # before set_timesteps diffusers keeps the float64 training sigmas (no final sigma_min)
        self._set_run(torch.from_numpy(sigmas), torch.from_numpy(self.sigma_to_t(sigmas)))

    def _set_run(self, sigmas: torch.Tensor, timesteps: torch.Tensor) -> None:
        self.sigmas = sigmas
        self.timesteps = timesteps
        self._sig = sigmas.to(torch.float64).numpy()
        cfg = self.config
        # the input scaling 1 / sqrt(sigma**2 + sigma_data**2), in the sigmas' dtype as diffusers computes it
        self._scale = [float(v) for v in (sigmas**2 + cfg.sigma_data**2) ** 0.5]
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._seed = None

    def sigma_to_t(self, sigmas: Union[float, np.ndarray]) -> np.ndarray:
        """The model's timestep of each Karras sigma, ``1000 * 0.25 * log(sigma + 1e-44)`` (float64)."""
        if not isinstance(sigmas, np.ndarray):
            sigmas = np.array(sigmas, dtype=np.float64)
        return 1000 * 0.25 * np.log(sigmas + 1e-44)

    def _convert_to_karras(self, ramp: np.ndarray) -> np.ndarray:
        cfg = self.config
        return karras_ramp(ramp, cfg.sigma_min, cfg.sigma_max, cfg.rho)

    def get_scalings(self, sigma):
        """EDM ``(c_skip, c_out)`` at ``sigma``: ``sigma_data**2 / (sigma**2 + sigma_data**2)`` and
        ``sigma sigma_data / sqrt(sigma**2 + sigma_data**2)``."""
        return consistency_scalings(sigma, self.config.sigma_data)

    def get_scalings_for_boundary_condition(self, sigma):
        """The consistency-model ``(c_skip, c_out)`` at ``sigma``: the EDM scalings with ``sigma - sigma_min`` in
        place of ``sigma`` in the skip denominator and the output numerator, so ``x0 = x`` at ``sigma_min``."""
        return consistency_scalings(sigma, self.config.sigma_data, self.config.sigma_min)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      timesteps: Optional[List[int]] = None) -> None:
        """Karras sigmas at the (equally spaced or given) training indices, then ``sigma_min`` appended."""
        cfg = self.config
        T = cfg.num_train_timesteps
        if num_inference_steps is None and timesteps is None:
            raise ValueError("Exactly one of `num_inference_steps` or `timesteps` must be supplied.")
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `timesteps`.")
        if timesteps is not None:
            ts = np.asarray(timesteps)
            if ts.ndim != 1 or len(ts) == 0:
                raise ValueError(f"timesteps must be a non-empty 1-D sequence, got {timesteps!r}")
            if np.any(np.diff(ts) >= 0):
                raise ValueError("`timesteps` must be in descending order.")
            if ts[0] >= T:
                raise ValueError(f"`timesteps` must start before `self.config.train_timesteps`: {T}.")
            ts = ts.astype(np.int64)
            self.custom_timesteps = True
        else:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                    or num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
            if num_inference_steps > T:
                raise ValueError(f"`num_inference_steps`: {num_inference_steps} cannot be larger than "
                                 f"`self.config.train_timesteps`: {T} as the unet model trained with this "
                                 f"scheduler can only handle maximal {T} timesteps.")
            self.num_inference_steps = num_inference_steps
            ratio = T // num_inference_steps
            ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].copy().astype(np.int64)
            self.custom_timesteps = False
        sigmas = self._convert_to_karras(ts[::-1].copy() / (T - 1))
        model_ts = self.sigma_to_t(sigmas)
        sig32 = np.concatenate([sigmas, [cfg.sigma_min]]).astype(np.float32)
        dtype = torch.float32 if str(device).startswith("mps") else None
        self._set_run(torch.from_numpy(sig32), torch.from_numpy(model_ts).to(device=device, dtype=dtype))
        self._start_run()

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """``sample / sqrt(sigma**2 + sigma_data**2)``: the input the consistency model expects."""
        if self._step_index is None:
            self._init_step_index(timestep)
        self.is_scale_input_called = True
        return sample / self._scale[self._step_index]

    def _build_table(self, key) -> torch.Tensor:
        cfg = self.config
        n = len(self._timesteps_host)
        s = self._sig
        sigma = s[:n]
        nxt = s[np.minimum(np.arange(n) + 1, len(s) - 1)]  # the last step of an unset schedule: sigmas[-1]
        # diffusers forms the scalings from the float32 sigmas in float32 (its "diffusers" table arithmetic)
        wide = torch.float32 if _TABLE_ARITHMETIC[0] == "diffusers" and self.sigmas.dtype == torch.float32 \
            else torch.float64
        c_skip, c_out = consistency_scalings(torch.from_numpy(sigma).to(wide), cfg.sigma_data, cfg.sigma_min)
        sigma_hat = np.clip(nxt, cfg.sigma_min, cfg.sigma_max)
        amp = np.sqrt(np.maximum(sigma_hat**2 - cfg.sigma_min**2, 0.0)) if n > 1 else np.zeros(n)
        return rows(in_x=c_skip.to(torch.float64).numpy(), in_m=c_out.to(torch.float64).numpy(), out_d=1.0,
                    out_noise=cfg.s_noise * amp)

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One consistency step: the boundary-scaled x0 (clipped to [-1, 1] with ``clip_denoised``), re-noised to
        the next sigma (a single fused pass; no host-device sync)."""
        if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and timestep.dtype in (torch.int32,
                                                                                                  torch.int64)):
            raise ValueError(f"Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to "
                             f"`{type(self)}.step()` is not supported. Make sure to pass one of the "
                             f"`scheduler.timesteps` as a timestep.")
        i = self._current_index(timestep)
        table = self._table("rows", sample.device)
        kw = {}
        if len(self._timesteps_host) > 1:  # diffusers adds no noise to a one-step run
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, i)
        clip = 1.0 if self.config.clip_denoised else None
        prev, _ = self._launch(sample, model_output, table, i, out_dtype=result_dtype(sample, model_output),
                               clip=clip, **kw)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("CMStochasticIterativeSchedulerOutput", prev)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x0 + sigma * noise`` at the given schedule timesteps (one fused pass)."""
        idx = self._indices_for_add_noise(timesteps)
        return self._encode(original_samples, noise, np.ones_like(self._sig), self._sig, idx)
