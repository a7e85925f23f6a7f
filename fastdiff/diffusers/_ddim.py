"""DDPMScheduler and DDIMScheduler: the discrete VP samplers, each step one fused pass.

Zero terminal SNR: with ``rescale_betas_zero_snr=True`` the last ``alpha_bar`` is
exactly 0, and diffusers' epsilon -> x0 conversion ``(x - sqrt(1 - abar) eps) /
sqrt(abar)`` divides by zero (inf/NaN samples). Here that conversion uses
``abar = max(abar, 2**-24)`` -- the value diffusers' own sigma-based schedulers
substitute for the same reason -- so the step stays finite; the other
coefficients (and v/sample prediction, which need no division) are unchanged.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Union

import numpy as np
import torch

from ..random import philox_normal
from ..schedules import inference_timesteps
from ..solvers import vp_x0_coefs
from ._base import (KARRAS_COMPATIBLES, ZTSNR_ALPHA_BAR, DiscreteBetaMixin, FusedSchedulerBase, check_steps,
                    check_timestep_value, f32_like_diffusers, result_dtype, rows)
from ._compat import make_output, register_to_config

_LEARNED = ("learned", "learned_range")

__all__ = ["DDPMScheduler", "DDIMScheduler", "DDIMInverseScheduler", "x0_coefs", "ddim_rows", "learned_range_std"]

_PREDICTIONS = ("epsilon", "sample", "v_prediction")


def x0_coefs(prediction_type: str, abar: np.ndarray):
    """float64 ``(in_x, in_m)`` with ``x0 = in_x * x_t + in_m * model_output`` on a VP schedule."""
    abar = np.asarray(abar, dtype=np.float64)
    if prediction_type == "epsilon":
        abar = np.maximum(abar, ZTSNR_ALPHA_BAR)  # finite at zero terminal SNR (module docstring)
    elif prediction_type not in _PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {_PREDICTIONS}, got {prediction_type!r}")
    return vp_x0_coefs(prediction_type, np.sqrt(abar), np.sqrt(1.0 - abar))


def ddim_rows(prediction_type: str, a_t: np.ndarray, a_p: np.ndarray, eta: float = 0.0,
              clipped_eps: bool = False) -> torch.Tensor:
    """Coefficient rows of the DDIM update (Song et al. 2021, eq. 12) from ``alpha_bar`` at the model's timestep
    (``a_t``) to ``alpha_bar`` at the target (``a_p``): ``sqrt(a_p) x0 + sqrt(1 - a_p - std^2) eps + std z`` with
    ``std = eta * sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))``. ``eps`` is the model's (from x and the model
    output, as diffusers forms it before any clipping of x0), or with ``clipped_eps`` the one implied by the
    (clipped) x0. The target may be noisier than the source (DDIM inversion, eta = 0).

    Example:
        >>> ddim_rows("epsilon", np.array([0.5]), np.array([0.8])).shape
        torch.Size([1, 15])
    """
    a_t = np.asarray(a_t, dtype=np.float64)
    a_p = np.asarray(a_p, dtype=np.float64)
    alpha_t, sig_t = np.sqrt(a_t), np.sqrt(1.0 - a_t)
    if eta == 0:  # no variance term (its formula divides by 1 - a_t, 0 for an inversion step from alpha_bar = 1)
        std = np.zeros_like(a_t)
    else:
        std = eta * np.sqrt((1.0 - a_p) / (1.0 - a_t) * (1.0 - a_t / a_p))
    c_dir = np.sqrt(np.maximum(1.0 - a_p - std**2, 0.0))
    zero, one = np.zeros_like(a_t), np.ones_like(a_t)
    # the epsilon estimate as ex * x + em * model_output + ed * x0 (diffusers' pred_epsilon)
    if clipped_eps or prediction_type == "sample":
        with np.errstate(divide="ignore"):  # sig_t = 0: inf, as diffusers' division gives
            inv_sig = 1.0 / sig_t
    if clipped_eps:
        ex, em, ed = inv_sig, zero, -alpha_t * inv_sig
    elif prediction_type == "epsilon":
        ex, em, ed = zero, one, zero
    elif prediction_type == "sample":
        ex, em, ed = inv_sig, -alpha_t * inv_sig, zero
    else:  # v_prediction
        ex, em, ed = sig_t, alpha_t, zero
    in_x, in_m = x0_coefs(prediction_type, a_t)
    return rows(in_x=in_x, in_m=in_m, out_x=c_dir * ex, out_m=c_dir * em, out_d=np.sqrt(a_p) + c_dir * ed,
                out_noise=std)


def learned_range_std(predicted_variance: torch.Tensor, min_log: float, max_log: float) -> torch.Tensor:
    """The per-element noise std of a ``learned_range`` model (Nichol & Dhariwal 2021, eq. 15): the model's
    ``v`` in [-1, 1] mixes the log variances, ``exp(0.5 ((v + 1) / 2 max_log + (1 - v) / 2 min_log))``, with
    ``max_log = log(beta_t)`` and ``min_log`` the log posterior variance."""
    frac = (predicted_variance + 1) / 2
    return torch.exp(0.5 * (frac * max_log + (1 - frac) * min_log))


class _DiscreteVPBase(DiscreteBetaMixin, FusedSchedulerBase):
    """Shared by DDPM/DDIM: integer timesteps, stateless ``step`` (the row follows the timestep)."""

    init_noise_sigma = 1.0

    def _common_init(self, cfg) -> None:
        if cfg.prediction_type not in _PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {_PREDICTIONS}, got {cfg.prediction_type!r}")
        self._make_schedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule,
                            cfg.trained_betas, cfg.rescale_betas_zero_snr,
                            allowed=self._beta_schedules)
        self.one = torch.tensor(1.0)
        self.num_inference_steps = None
        self._reset_run()
        self._set_host_timesteps(np.arange(cfg.num_train_timesteps)[::-1].copy())

    def _set_host_timesteps(self, ts: np.ndarray, device=None) -> None:
        self._ts = [int(t) for t in ts]
        self._ts_pos = {t: i for i, t in reversed(list(enumerate(self._ts)))}
        self.timesteps = torch.as_tensor(np.asarray(ts, dtype=np.int64)).to(device)
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._seed = None

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        """Identity (VP samplers see x_t unscaled)."""
        return sample

    def _index(self, timestep) -> Optional[int]:
        """Row index for ``timestep``: from its value when on the host, else the step counter (no sync)."""
        value = self._host_value(timestep)
        if value is not None:
            check_timestep_value(value)
            return self._ts_pos.get(int(value))
        if self._step_index is None:
            self._init_step_index(timestep)
        return self._step_index

    def _missing_timestep_index(self, value: float) -> int:
        raise ValueError(f"timestep {value} is not one of the scheduler's timesteps")

    def _x0_rows(self, t: np.ndarray):
        return x0_coefs(self.config.prediction_type, self._abar64[t])

    def _clip(self) -> Optional[float]:
        return float(self.config.clip_sample_range) if self.config.clip_sample else None

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.IntTensor) -> torch.Tensor:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` in one pass (``fastdiff.add_noise``)."""
        from ..ops import add_noise

        if not isinstance(timesteps, torch.Tensor):
            timesteps = torch.as_tensor(timesteps)
        t = timesteps.reshape(-1).to(original_samples.device)
        if t.numel() == 1 and original_samples.shape[0] > 1:
            t = t.expand(original_samples.shape[0])
        if self._schedule is None:  # a beta_end >= 1 schedule (NaN where abar <= 0, as diffusers gives)
            with np.errstate(invalid="ignore"):
                a, s = np.sqrt(self._abar64), np.sqrt(1.0 - self._abar64)
            return self._encode(original_samples, noise, a, s, t.cpu().tolist())
        return add_noise(original_samples, t.to(torch.int64), self._schedule, noise=noise.to(original_samples.device),
                         backend=self.backend)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """The v target ``sqrt(abar) noise - sqrt(1 - abar) x0`` (diffusers' ``get_velocity``)."""
        abar = self.alphas_cumprod.to(device=sample.device, dtype=sample.dtype)[timesteps.to(sample.device)]
        shape = (-1,) + (1,) * (sample.dim() - 1)
        return abar.sqrt().reshape(shape) * noise - (1 - abar).sqrt().reshape(shape) * sample


class DDPMScheduler(_DiscreteVPBase):
    """Ancestral sampling of Ho et al. (2020), "Denoising Diffusion Probabilistic Models".

    Same config keys, defaults and numbers as ``diffusers.DDPMScheduler``; ``step``
    is one fused pass.

    Example:
        >>> s = DDPMScheduler()
        >>> s.set_timesteps(50)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> x = s.step(torch.zeros_like(x), s.timesteps[0], x).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "DDPMSchedulerOutput"
    _beta_schedules = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        # as in diffusers, a variance_type it does not name steps with the posterior variance (fixed_small)
        self.variance_type = variance_type
        self.custom_timesteps = False
        self._common_init(self.config)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      timesteps: Optional[List[int]] = None) -> None:
        """Sampling timesteps (diffusers' spacings, or custom descending ``timesteps``)."""
        cfg = self.config
        if num_inference_steps is not None:
            check_steps(num_inference_steps, cfg.num_train_timesteps, cap=True)
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")
        if timesteps is not None:
            ts = np.asarray(timesteps, dtype=np.int64)
            if np.any(np.diff(ts) >= 0):
                raise ValueError("`custom_timesteps` must be in descending order.")
            if ts[0] >= cfg.num_train_timesteps:
                raise ValueError(f"`timesteps` must start before `self.config.train_timesteps`: "
                                 f"{cfg.num_train_timesteps}.")
            self.custom_timesteps = True
            self.num_inference_steps = len(ts)
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps or timesteps")
            self.custom_timesteps = False
            self.num_inference_steps = num_inference_steps
            ts = inference_timesteps(num_inference_steps, cfg.num_train_timesteps, cfg.timestep_spacing,
                                     cfg.steps_offset).numpy()
        self._set_host_timesteps(ts, device)
        self._start_run()

    def previous_timestep(self, timestep):
        """The next timestep of the schedule (-1 after the last), as diffusers returns it: a 0-d int64 tensor
        once ``set_timesteps`` has run, else ``timestep - 1`` of the type passed in."""
        if not (self.custom_timesteps or self.num_inference_steps):
            return timestep - 1
        v = self._host_value(timestep)
        v = int(v if v is not None else float(timestep))  # outside step: a device read is acceptable here
        i = self._ts_pos[v]
        return torch.tensor(self._ts[i + 1] if i + 1 < len(self._ts) else -1)

    def _get_variance(self, t, predicted_variance: Optional[torch.Tensor] = None,
                      variance_type: Optional[str] = None) -> torch.Tensor:
        """diffusers' (private) variance of the step from ``t``, as a float32 tensor: the posterior variance
        ``(1 - abar_prev) / (1 - abar_t) * beta_t`` (clamped at 1e-20) in the form ``variance_type`` (default: the
        config's) names. Not used by ``step`` (its rows hold the same numbers); kept for code that calls it.

        Example:
            >>> round(float(DDPMScheduler()._get_variance(487)), 5)
            0.00979
        """
        prev_t = int(self.previous_timestep(t))
        abar_t = self.alphas_cumprod[int(t)]
        abar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_t = 1 - abar_t / abar_prev
        variance = torch.clamp((1 - abar_prev) / (1 - abar_t) * beta_t, min=1e-20)
        kind = self.config.variance_type if variance_type is None else variance_type
        if kind == "fixed_small":
            return variance
        if kind == "fixed_small_log":
            return torch.exp(0.5 * torch.log(variance))
        if kind == "fixed_large":
            return beta_t
        if kind == "fixed_large_log":
            return torch.log(beta_t)
        if kind == "learned":
            return predicted_variance
        if kind == "learned_range":
            frac = (predicted_variance + 1) / 2
            return frac * torch.log(beta_t) + (1 - frac) * torch.log(variance)
        raise ValueError("variance_type must be one of fixed_small, fixed_small_log, fixed_large, fixed_large_log, "
                         f"learned, learned_range; got {kind!r}")

    def _learned_noise(self, kw: dict, i: int, predicted_variance: torch.Tensor,
                       model_output: torch.Tensor) -> torch.Tensor:
        """The step's noise scaled by the model's standard deviation (a second pass: the scale is per element).

        ``learned``: the model predicts the variance; ``learned_range``: it predicts v in [-1, 1] and the log
        variance is the mix (v + 1) / 2 * log(beta_t) + (1 - v) / 2 * log(posterior variance) (Nichol & Dhariwal
        2021, eq. 15)."""
        noise = kw.get("noise")
        if noise is None:
            noise = philox_normal(model_output.shape, kw["seed"], kw["stream"], device=model_output.device,
                                  dtype=model_output.dtype)
        if self.variance_type == "learned":
            return noise * predicted_variance**0.5
        self._table("rows", model_output.device)  # builds the log-variance range with the rows
        min_log, max_log = (float(v[i]) for v in self._log_var_range)
        return noise * learned_range_std(predicted_variance, min_log, max_log)

    def _build_table(self, key) -> torch.Tensor:
        t = np.asarray(self._ts, dtype=np.int64)
        prev = np.append(t[1:], -1) if (self.custom_timesteps or self.num_inference_steps) else t - 1
        return self._rows_between(t, prev, learned_range=True)

    def _rows_between(self, t: np.ndarray, prev: np.ndarray, learned_range: bool = False) -> torch.Tensor:
        """The posterior-mean rows from each ``t`` to its ``prev`` (alpha_bar 1 below 0) and the step's noise
        scale; ``learned_range`` records the log-variance range the learned variance types mix."""
        abar = self._abar64
        r = f32_like_diffusers  # each quantity rounded where diffusers computes it in float32 (the default)
        a_t = abar[t]
        a_p = np.where(prev >= 0, abar[np.maximum(prev, 0)], 1.0)
        beta_prod, beta_prod_prev = r(1.0 - a_t), r(1.0 - a_p)
        beta_t = r(1.0 - r(a_t / a_p))
        var = np.maximum(r(r(beta_prod_prev / beta_prod) * beta_t), 1e-20)
        std = r(np.sqrt(beta_t)) if self.variance_type.startswith("fixed_large") else r(np.sqrt(var))
        if self.variance_type in _LEARNED:
            # the model's variance scales the noise per element: the step gets noise * std as its noise input
            if learned_range:
                self._log_var_range = (np.log(var), np.log(beta_t))
            std = np.ones_like(std)
        in_x, in_m = self._x0_rows(t)
        return rows(in_x=in_x, in_m=in_m, out_d=r(r(r(np.sqrt(a_p)) * beta_t) / beta_prod),
                    out_x=r(r(r(np.sqrt(r(a_t / a_p))) * beta_prod_prev) / beta_prod), out_noise=np.where(t > 0, std, 0.0))

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One reverse step x_t -> x_{t-1} (a single fused pass; no host-device sync)."""
        i = self._index(timestep)
        if i is None:
            raise ValueError(f"timestep {timestep} is not one of the scheduler's timesteps")
        t = self._ts[i]
        predicted_variance = None
        if self.variance_type in _LEARNED and model_output.shape[1] == sample.shape[1] * 2:
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        table = self._table("rows", sample.device)
        kw = {}
        if t > 0:  # diffusers draws noise only before the last step
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, i)
            if predicted_variance is not None:
                kw = {"noise": self._learned_noise(kw, i, predicted_variance, model_output)}
        dtype = result_dtype(sample, model_output)
        prev, x0 = self._launch(sample, model_output, table, i, out_dtype=dtype, aux_dtype=dtype,
                                clip=self._clip(), **kw)
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output(self._output_name, prev, x0)


class DDIMScheduler(_DiscreteVPBase):
    """Song et al. (2021), "Denoising Diffusion Implicit Models" (``eta`` interpolates to DDPM).

    Same config keys, defaults and numbers as ``diffusers.DDIMScheduler``; ``step``
    is one fused pass.

    Example:
        >>> s = DDIMScheduler(timestep_spacing="trailing")
        >>> s.set_timesteps(10)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> x = s.step(torch.zeros_like(x), s.timesteps[0], x, eta=0.0).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "DDIMSchedulerOutput"
    _beta_schedules = ("linear", "scaled_linear", "squaredcos_cap_v2")

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
    ):
        self._common_init(self.config)
        self._final_abar = 1.0 if set_alpha_to_one else float(self._abar64[0])
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """Sampling timesteps with diffusers' ``timestep_spacing``."""
        cfg = self.config
        check_steps(num_inference_steps, cfg.num_train_timesteps, cap=True)
        self.num_inference_steps = num_inference_steps
        ts = inference_timesteps(num_inference_steps, cfg.num_train_timesteps, cfg.timestep_spacing,
                                 cfg.steps_offset).numpy()
        self._set_host_timesteps(ts, device)
        self._start_run()  # (eta is a step option: DDIM's seed is drawn at the first noisy step)

    def _rows_for(self, t: np.ndarray, eta: float, clipped_eps: bool) -> torch.Tensor:
        T = self.config.num_train_timesteps
        prev = t - T // self.num_inference_steps
        abar = self._abar64
        a_p = np.where(prev >= 0, abar[np.clip(prev, 0, T - 1)], self._final_abar)
        return ddim_rows(self.config.prediction_type, abar[t], a_p, eta, clipped_eps)

    def _get_variance(self, timestep, prev_timestep) -> torch.Tensor:
        """diffusers' (private) DDIM variance between two training timesteps, a float32 tensor:
        ``(1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)``, ``abar_prev`` the final alpha_bar below 0.
        Not used by ``step`` (its rows hold the same numbers); kept for code that calls it.

        Example:
            >>> round(float(DDIMScheduler()._get_variance(420, 400)), 4)
            0.1477
        """
        abar_t = self.alphas_cumprod[int(timestep)]
        prev = int(prev_timestep)
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        return (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)

    def _build_table(self, key) -> torch.Tensor:
        kind, eta, clipped = key[0], key[1], key[2]
        t = np.asarray(self._ts if kind == "rows" else [key[3]], dtype=np.int64)
        return self._rows_for(t, eta, clipped)

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             eta: float = 0.0, use_clipped_model_output: bool = False, generator: Optional[torch.Generator] = None,
             variance_noise: Optional[torch.Tensor] = None, return_dict: bool = True):
        """One DDIM step (a single fused pass; no host-device sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        if variance_noise is not None and generator is not None:
            raise ValueError("Cannot pass both generator and variance_noise. Please make sure that either "
                             "`generator` or `variance_noise` stays `None`.")
        eta = float(eta)
        clipped = bool(use_clipped_model_output)
        i = self._index(timestep)
        if i is None:  # a host timestep outside the schedule: DDIM is stateless, build its row
            value = self._host_value(timestep)
            if not 0 <= value < self.config.num_train_timesteps:
                raise ValueError(f"timestep {timestep} is not in [0, {self.config.num_train_timesteps}) "
                                 f"(num_train_timesteps)")
            t_val = int(value)
            table, row, stream_i = self._table(("one", eta, clipped, t_val), sample.device), 0, t_val
        else:
            table, row, stream_i = self._table(("rows", eta, clipped), sample.device), i, i
        kw = {}
        if eta > 0:
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator,
                                    stream_i, variance_noise=variance_noise)
        dtype = result_dtype(sample, model_output)
        prev, x0 = self._launch(sample, model_output, table, row, out_dtype=dtype, aux_dtype=dtype,
                                clip=self._clip(), **kw)
        if i is not None:
            self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output(self._output_name, prev, x0)


class DDIMInverseScheduler(_DiscreteVPBase):
    """DDIM inversion (Song et al. 2021, sec. 4.3; used by null-text inversion, Mokady et al. 2023): the
    deterministic DDIM update run from clean to noisy, image -> latent noise.

    Same config keys, defaults and numbers as ``diffusers.DDIMInverseScheduler`` (ascending timesteps; the step
    at timestep t evaluates the model at ``t - num_train_timesteps // num_inference_steps`` and lands at t);
    ``step`` is one fused pass.

    Example:
        >>> s = DDIMInverseScheduler(timestep_spacing="trailing")
        >>> s.set_timesteps(4)
        >>> s.timesteps.tolist()
        [249, 499, 749, 999]
        >>> x = torch.randn(2, 3, 8, 8)
        >>> x = s.step(torch.zeros_like(x), s.timesteps[0], x).prev_sample
    """

    order = 1
    ignore_for_config = ["kwargs"]
    _deprecated_kwargs = ["set_alpha_to_zero"]
    _output_name = "DDIMSchedulerOutput"
    _beta_schedules = ("linear", "scaled_linear", "squaredcos_cap_v2")

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        **kwargs,
    ):
        if kwargs.get("set_alpha_to_zero", None) is not None:
            warnings.warn("The `set_alpha_to_zero` argument is deprecated. Please use `set_alpha_to_one` instead.",
                          FutureWarning, stacklevel=3)
            set_alpha_to_one = kwargs["set_alpha_to_zero"]
        self._common_init(self.config)
        self._initial_abar = 1.0 if set_alpha_to_one else float(self._abar64[0])
        self.initial_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self._set_host_timesteps(np.arange(num_train_timesteps, dtype=np.int64))

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """Ascending timesteps: ``leading`` (``k * T // n + steps_offset``) or ``trailing``."""
        cfg = self.config
        T = cfg.num_train_timesteps
        check_steps(num_inference_steps, T, cap=True)
        if cfg.timestep_spacing == "leading":
            ts = np.arange(0, num_inference_steps, dtype=np.int64) * (T // num_inference_steps) + cfg.steps_offset
        elif cfg.timestep_spacing == "trailing":
            ts = np.round(np.arange(T, 0, -T / num_inference_steps)[::-1]).astype(np.int64) - 1
        else:
            raise ValueError(f"{cfg.timestep_spacing} is not supported. Please make sure to choose one of 'leading' "
                             f"or 'trailing'.")
        self.num_inference_steps = num_inference_steps
        self._set_host_timesteps(ts, device)
        self._start_run()

    def _build_table(self, key) -> torch.Tensor:
        T = self.config.num_train_timesteps
        target = np.asarray(self._ts if key[0] == "rows" else [key[1]], dtype=np.int64)
        source = np.minimum(target - T // self.num_inference_steps, T - 1)
        abar = self._abar64
        a_t = np.where(source >= 0, abar[np.clip(source, 0, T - 1)], self._initial_abar)
        return ddim_rows(self.config.prediction_type, a_t, abar[target])

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True):
        """One inversion step to the (noisier) ``timestep`` (a single fused pass; no host-device sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        i = self._index(timestep)
        if i is None:  # a host timestep outside the schedule: the step is stateless, build its row
            value = self._host_value(timestep)
            if not 0 <= value < self.config.num_train_timesteps:
                raise ValueError(f"timestep {timestep} is not in [0, {self.config.num_train_timesteps}) "
                                 f"(num_train_timesteps)")
            table, row = self._table(("one", int(value)), sample.device), 0
        else:
            table, row = self._table(("rows",), sample.device), i
        dtype = result_dtype(sample, model_output)
        prev, x0 = self._launch(sample, model_output, table, row, out_dtype=dtype, aux_dtype=dtype, clip=self._clip())
        if i is not None:
            self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("DDIMSchedulerOutput", prev, x0)
