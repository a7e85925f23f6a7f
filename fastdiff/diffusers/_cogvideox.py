"""CogVideoX's schedulers: CogVideoXDDIMScheduler and CogVideoXDPMScheduler, thin variants of the DDIM set-up.

Both build the training schedule with every SNR divided by ``snr_shift_scale`` (``solvers.snr_shifted_abar``),
then optionally rescale ``alphas_cumprod`` to zero terminal SNR; in the "diffusers" table arithmetic the
cumulative product is taken in diffusers' dtype (float64 for ``scaled_linear``, whose betas diffusers builds in
float64 here, float32 otherwise). CogVideoXDDIM steps like DDIM with ``eta = 0`` and no clipping (its ``eta``,
``use_clipped_model_output``, ``generator`` and ``variance_noise`` are accepted and unused, as in diffusers).
CogVideoXDPM is a stateless DPM-Solver++(2M) SDE step: the caller passes the previous x0 estimate and the
previous timestep; one fused pass, with the previous estimate as a history tensor. Its noise: with a
``generator``, diffusers' draws (two on a second-order step, the first unused, as diffusers draws them);
without one, the kernel's Philox (``_base``'s rule).
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np
import torch

from ..schedules import make_betas
from ..solvers import snr_shifted_abar
from ._base import (_TABLE_ARITHMETIC, _element_position, _read_timestep, check_timestep_value,
                    rescale_abar_zero_terminal_snr, result_dtype, rows)
from ._compat import make_output, randn_tensor, register_to_config
from ._ddim import DDIMScheduler

__all__ = ["CogVideoXDDIMScheduler", "CogVideoXDPMScheduler"]


class _CogVideoXBase(DDIMScheduler):
    """The SNR-shifted schedule and the stateless bookkeeping shared by the two CogVideoX schedulers."""

    def _cog_init(self, cfg) -> None:
        if cfg.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"prediction_type given as {cfg.prediction_type} must be one of `epsilon`, `sample`, "
                             f"or `v_prediction`")
        # validates the config and gives the float32 betas diffusers builds for linear / cosine / trained betas
        self._make_schedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule,
                            cfg.trained_betas, False, allowed=self._beta_schedules)
        T = cfg.num_train_timesteps
        if _TABLE_ARITHMETIC[0] == "float64":
            betas = (torch.as_tensor(np.asarray(cfg.trained_betas, dtype=np.float64)) if cfg.trained_betas
                     is not None else make_betas(cfg.beta_schedule, T, cfg.beta_start, cfg.beta_end))
        elif cfg.trained_betas is None and cfg.beta_schedule == "scaled_linear":
            betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, T, dtype=torch.float64) ** 2
        else:
            betas = self.betas
        self.betas, self.alphas = betas, 1.0 - betas
        abar = snr_shifted_abar(torch.cumprod(self.alphas, dim=0), cfg.snr_shift_scale)
        if cfg.rescale_betas_zero_snr:
            abar = rescale_abar_zero_terminal_snr(abar)
        self.alphas_cumprod = abar
        self._abar64 = abar.to(torch.float64).numpy().copy()
        self._schedule = None  # the shifted schedule is not a beta schedule: add_noise reads _abar64
        self.one = torch.tensor(1.0)
        self.num_inference_steps = None
        self._reset_run()
        self._set_host_timesteps(np.arange(T)[::-1].copy())
        self._final_abar = 1.0 if cfg.set_alpha_to_one else float(self._abar64[0])
        self.final_alpha_cumprod = torch.tensor(1.0) if cfg.set_alpha_to_one else abar[0]

    def _clip(self) -> Optional[float]:
        return None  # diffusers' CogVideoX steps never clip (clip_sample is a config key only)

    def _timestep_value(self, timestep) -> int:
        """A timestep's value without a device read when it is a host value or an element of ``timesteps``."""
        value = self._host_value(timestep)
        if value is None:
            pos = _element_position(timestep, self.timesteps)
            value = float(self._ts[pos]) if pos is not None else _read_timestep(timestep)
        check_timestep_value(value)
        if not 0 <= value < self.config.num_train_timesteps:
            raise ValueError(f"timestep {value} is not in [0, {self.config.num_train_timesteps}) (num_train_timesteps)")
        return int(value)


class CogVideoXDDIMScheduler(_CogVideoXBase):
    """CogVideoX's DDIM (Song et al. 2021, ``eta = 0``) on the SNR-shifted schedule; ``step`` is one fused pass.

    Same config keys, defaults and numbers as ``diffusers.CogVideoXDDIMScheduler``.

    Example:
        >>> s = CogVideoXDDIMScheduler(timestep_spacing="trailing")
        >>> s.set_timesteps(10)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> x = s.step(torch.zeros_like(x), s.timesteps[0], x).prev_sample
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.0120,
        beta_schedule: str = "scaled_linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        snr_shift_scale: float = 3.0,
    ):
        self._cog_init(self.config)

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             eta: float = 0.0, use_clipped_model_output: bool = False, generator: Optional[torch.Generator] = None,
             variance_noise: Optional[torch.Tensor] = None, return_dict: bool = True):
        """One DDIM step with ``eta = 0`` (a single fused pass; the other options are unused, as in diffusers)."""
        return super().step(model_output, timestep, sample, eta=0.0, use_clipped_model_output=False,
                            return_dict=return_dict)


class CogVideoXDPMScheduler(_CogVideoXBase):
    """CogVideoX's DPM-Solver++(2M) SDE step (Lu et al. 2022) on the SNR-shifted schedule, stateless: the caller
    passes the previous x0 estimate and timestep. One fused pass per ``step``.

    Same config keys, defaults, numbers and ``step`` signature as ``diffusers.CogVideoXDPMScheduler`` (returns
    a tuple by default, as diffusers does).

    Example:
        >>> s = CogVideoXDPMScheduler()
        >>> s.set_timesteps(6)
        >>> x, old, back = torch.randn(1, 4, 8, 8), None, None
        >>> for t in s.timesteps:
        ...     x, old = s.step(torch.zeros_like(x), old, t, back, x, generator=torch.Generator().manual_seed(0))
        ...     back = t
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.0120,
        beta_schedule: str = "scaled_linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        snr_shift_scale: float = 3.0,
    ):
        self._cog_init(self.config)

    def _build_table(self, key) -> torch.Tensor:
        _, t, t_back = key
        T = self.config.num_train_timesteps
        abar = self._abar64
        prev = t - T // self.num_inference_steps
        a_t = abar[t]
        a_p = abar[prev] if prev >= 0 else np.float64(self._final_abar)
        in_x, in_m = self._x0_rows(np.asarray([t]))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            lam, lam_next = np.log(np.sqrt(a_t / (1 - a_t))), np.log(np.sqrt(a_p / (1 - a_p)))
            h = lam_next - lam
            m0 = np.sqrt((1 - a_p) / (1 - a_t)) * np.exp(-h)
            m1 = np.expm1(-2 * h) * np.sqrt(a_p)
            noise = np.sqrt(1 - a_p) * np.sqrt(1 - np.exp(-2 * h))
            if t_back is None:
                return rows(in_x=in_x, in_m=in_m, out_x=m0, out_d=-m1, out_noise=noise)
            a_b = abar[t_back]
            r = (lam - np.log(np.sqrt(a_b / (1 - a_b)))) / h
            return rows(in_x=in_x, in_m=in_m, out_x=m0, out_d=-m1 * (1 + 1 / (2 * r)), out_h=[m1 / (2 * r)],
                        out_noise=noise)

    def step(self, model_output: torch.Tensor, old_pred_original_sample: Optional[torch.Tensor],
             timestep: Union[int, torch.Tensor], timestep_back: Union[int, torch.Tensor, None], sample: torch.Tensor,
             eta: float = 0.0, use_clipped_model_output: bool = False, generator: Optional[torch.Generator] = None,
             variance_noise: Optional[torch.Tensor] = None, return_dict: bool = False):
        """One DPM-Solver++(2M) SDE step: second order when ``old_pred_original_sample`` is given and the step
        does not end the schedule (a single fused pass, no host-device sync for schedule timesteps)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        traced = torch.compiler.is_compiling()
        if traced and isinstance(timestep, torch.Tensor):
            # traced, a tensor timestep has no host value: the step counter (a traced loop iterates
            # self.timesteps from the begin index, else from its start), as CogVideoX's pipelines step
            i = self._step_index if self._step_index is not None else (self._begin_index or 0)
            t = self._ts[i]
        else:
            t = self._timestep_value(timestep)
            i = self._ts_pos.get(t)
        prev = t - self.config.num_train_timesteps // self.num_inference_steps
        second = old_pred_original_sample is not None and prev >= 0
        if timestep_back is None:
            t_back = None
        elif traced and isinstance(timestep_back, torch.Tensor):  # the pipelines' timesteps[i - 1]
            t_back = self._traced_schedule_timestep(timestep_back, self._ts, None if not i else i - 1, "timestep_back")
        else:
            t_back = self._timestep_value(timestep_back)
        if t_back is None and second:
            raise ValueError("old_pred_original_sample needs timestep_back (the timestep it was predicted at)")
        table = self._table(("dpm", t, t_back if second else None), sample.device)
        if generator is not None:
            draw = lambda: randn_tensor(sample.shape, generator=generator, device=sample.device,  # noqa: E731
                                        dtype=sample.dtype)
            noise = draw()
            if second:  # diffusers draws the first-order step's noise first and discards it
                noise = draw()
            kw = {"noise": noise}
        else:
            kw = self._noise_kwargs(sample.shape, sample.device, sample.dtype, None, t)
        if second:
            kw["history"] = (old_pred_original_sample,)
        dtype = result_dtype(sample, model_output)
        prev_sample, x0 = self._launch(sample, model_output, table, 0, out_dtype=dtype, aux_dtype=dtype, **kw)
        if i is not None:
            self._step_index = i + 1
        if not return_dict:
            return (prev_sample, x0)
        return make_output("DDIMSchedulerOutput", prev_sample, x0)
