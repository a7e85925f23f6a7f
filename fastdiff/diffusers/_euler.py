"""The k-diffusion-style sigma schedulers: EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete.

They share the set-up (VE sigmas ``sqrt((1 - abar) / abar)`` interpolated at the
spaced timesteps, optionally re-spaced as Karras/exponential sigmas), the input
scaling ``x / sqrt(sigma**2 + 1)`` and the x0 conversion; each ``step`` is one
fused pass. With ``rescale_betas_zero_snr`` the terminal ``abar`` is 2**-24 (as
in diffusers), so the first sigma is finite.
"""
from __future__ import annotations

import math
from typing import List, Optional, Union

import numpy as np
import torch

from ..random import philox_normal
from ..solvers import ancestral_split, churn_gamma, ve_x0_coefs
from ..schedules import spaced_timesteps
from ._base import (KARRAS_COMPATIBLES, DiscreteBetaMixin, FusedSchedulerBase, check_one_of, check_steps, interp,
                    result_dtype, rows, sigma_to_t)
from ._compat import make_output, register_to_config

_INT_DTYPES = (torch.int32, torch.int64)

__all__ = ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "HeunStages",
           "sigma_x0_coefs"]


def sigma_x0_coefs(prediction_type: str, sigma: np.ndarray, sigma_hat: Optional[np.ndarray] = None):
    """float64 ``(in_x, in_m)``: x0 from the unscaled VE sample and the model output.

    ``sigma_hat`` (the churned sigma) is what epsilon prediction uses; v prediction uses ``sigma``
    (diffusers' Euler does the same).
    """
    sh = None if sigma_hat is None else np.asarray(sigma_hat, dtype=np.float64)
    return ve_x0_coefs(prediction_type, np.asarray(sigma, dtype=np.float64), sh)


def _f32_spacing(n: int, T: int, spacing: str, steps_offset: int) -> np.ndarray:
    """The float32 timesteps of diffusers' sigma schedulers (linspace is not rounded here)."""
    if spacing not in ("linspace", "leading", "trailing"):
        raise ValueError(f"{spacing} is not supported. Please make sure to choose one of 'linspace', 'leading' or "
                         f"'trailing'.")
    return spaced_timesteps(n, T, spacing, steps_offset).astype(np.float32)


class _SigmaBase(DiscreteBetaMixin, FusedSchedulerBase):
    """Set-up and bookkeeping shared by the VE-sigma schedulers."""

    _ztsnr = False

    def _init_schedule(self, cfg, rescale: bool = False) -> None:
        check_one_of(cfg)
        self._make_schedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule,
                            cfg.trained_betas, rescale)
        self._train_sigmas = self._sigma_table(ztsnr_fix=rescale)
        self._log_sigmas = np.log(self._train_sigmas)
        self.num_inference_steps = None
        self.is_scale_input_called = False
        self._reset_run()

    def _spaced(self, n: int, timesteps=None):
        """(float32 timesteps, float64 sigmas without the final one) per diffusers' recipe."""
        cfg = self.config
        if timesteps is not None:
            ts = np.asarray(timesteps).astype(np.float32)
        else:
            ts = _f32_spacing(n, cfg.num_train_timesteps, cfg.timestep_spacing, cfg.steps_offset)
        if getattr(cfg, "interpolation_type", "linear") == "log_linear":
            # diffusers: n + 1 log-spaced sigmas from the largest training sigma to the smallest (with the final
            # sigma appended the run holds n + 2 for n timesteps; the last is never reached), in float32
            train = self._train_sigmas.astype(np.float32)
            sig = torch.linspace(float(np.log(train[-1])), float(np.log(train[0])), n + 1).exp().numpy()
            sig = sig.astype(np.float64)
        else:
            sig = interp(ts, self._train_sigmas)
        conv = self._convert_sigmas(sig, n)
        if conv is not None:
            sig = conv
            ts = sigma_to_t(sig, self._log_sigmas)
        return ts, sig

    def _set_run(self, ts: np.ndarray, sigmas_f32: np.ndarray, device=None) -> None:
        self.sigmas = torch.from_numpy(sigmas_f32.astype(np.float32))
        self.timesteps = torch.from_numpy(np.asarray(ts).astype(np.float32)).to(device=device)
        self._sig = self.sigmas.to(torch.float64).numpy()
        self._sig_host = self._sig.tolist()  # Python floats: cheap per-step scalar reads
        # the input scaling, computed in float32 exactly as diffusers does
        self._scale = [float(v) for v in (self.sigmas**2 + 1) ** 0.5]
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._seed = None

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        """The std of the initial noise: max sigma (linspace/trailing) or sqrt(max sigma**2 + 1)."""
        max_sigma = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return max_sigma
        return (max_sigma**2 + 1) ** 0.5

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """``sample / sqrt(sigma**2 + 1)``: the VP-scaled input the model expects."""
        if self._step_index is None:
            self._init_step_index(timestep)
        self.is_scale_input_called = True
        return sample / self._scale[self._step_index]

    def _check_timestep(self, timestep) -> None:
        # (torch.IntTensor / LongTensor instances are int32/int64 tensors: the dtype test covers them cheaply)
        if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and timestep.dtype in _INT_DTYPES):
            raise ValueError(f"Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to "
                             f"`{type(self).__name__}.step()` is not supported. Make sure to pass one of the "
                             f"`scheduler.timesteps` as a timestep.")

    def _churned(self, sample: torch.Tensor, model_output: torch.Tensor, generator, i: int, churn: tuple,
                 s_noise: float) -> torch.Tensor:
        """EDM churn before the pass (Karras et al. 2022, Alg. 2): the model saw ``sample``, the step starts from
        ``sample + s_noise * noise * sqrt(sigma_hat**2 - sigma**2)`` (float32, as diffusers); ``churn`` is
        ``(s_churn, s_tmin, s_tmax)``. The sample itself when the step has no churn."""
        s_churn, s_tmin, s_tmax = churn
        if s_churn == 0.0:
            return sample
        sigma = self._sig_host[i]
        gamma = churn_gamma(sigma, s_churn, len(self._sig_host) - 1, s_tmin, s_tmax)
        if not gamma > 0:
            return sample
        kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, i)
        noise = kw.get("noise")
        if noise is None:
            noise = philox_normal(sample.shape, kw["seed"], kw["stream"], device=sample.device)
        amp = s_noise * math.sqrt((sigma * (gamma + 1)) ** 2 - sigma**2)
        return sample.to(torch.float32) + noise * amp

    @staticmethod
    def _aux_dtype(model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        # diffusers casts the sample to float32 first, so x0 comes out in (at least) float32
        md, sd = model_output.dtype, sample.dtype
        if md is sd and (md is torch.float32 or md is torch.float64):
            return md
        return torch.promote_types(torch.float32, torch.promote_types(md, sd))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x0 + sigma * noise`` at the given schedule timesteps (one fused pass)."""
        idx = self._indices_for_add_noise(timesteps)
        s = self.sigmas.to(torch.float64).numpy()
        return self._encode(original_samples, noise, np.ones_like(s), s, idx)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v target ``sqrt(abar) noise - sqrt(1 - abar) sample`` at the timesteps' step indices."""
        idx = [self.index_for_timestep(t, self.timesteps) for t in timesteps.reshape(-1).cpu()]
        abar = self.alphas_cumprod.to(sample)[idx]
        shape = (-1,) + (1,) * (sample.dim() - 1)
        return abar.sqrt().reshape(shape) * noise - (1 - abar).sqrt().reshape(shape) * sample


class EulerDiscreteScheduler(_SigmaBase):
    """Euler steps on the probability-flow ODE, Karras et al. (2022), "Elucidating the Design Space...".

    Same config keys, defaults and numbers as ``diffusers.EulerDiscreteScheduler``
    (``interpolation_type="linear"``, no beta sigmas); ``step`` is one fused pass
    (with ``s_churn > 0`` the churn noise is added to the sample first).

    Example:
        >>> s = EulerDiscreteScheduler(use_karras_sigmas=True)
        >>> s.set_timesteps(10)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> t = s.timesteps[0]
        >>> x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "EulerDiscreteSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        prediction_type: str = "epsilon",
        interpolation_type: str = "linear",
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        sigma_min: Optional[float] = None,
        sigma_max: Optional[float] = None,
        timestep_spacing: str = "linspace",
        timestep_type: str = "discrete",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        final_sigmas_type: str = "zero",
    ):
        if interpolation_type not in ("linear", "log_linear"):
            raise ValueError(f"{interpolation_type} is not implemented. Please specify interpolation_type to either "
                             f"'linear' or 'log_linear'")
        self._init_schedule(self.config, rescale_betas_zero_snr)
        self.use_karras_sigmas = use_karras_sigmas
        self.use_exponential_sigmas = use_exponential_sigmas
        self.use_beta_sigmas = use_beta_sigmas
        T = num_train_timesteps
        sig = np.concatenate([self._train_sigmas[::-1], [0.0]]).astype(np.float32)
        ts = np.linspace(0, T - 1, T, dtype=float)[::-1].copy()
        self._set_run(ts, sig)
        if timestep_type == "continuous" and prediction_type == "v_prediction":
            self.timesteps = 0.25 * torch.log(self.sigmas[:-1])

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      timesteps: Optional[List[int]] = None, sigmas: Optional[List[float]] = None) -> None:
        """Sampling sigmas and timesteps (diffusers' spacings, Karras/exponential, or custom)."""
        cfg = self.config
        if num_inference_steps is not None:
            # continuous (interpolated) timesteps: more steps than training timesteps is valid, as in diffusers
            check_steps(num_inference_steps, cfg.num_train_timesteps, cap=False)
        if timesteps is not None and sigmas is not None:
            raise ValueError("Only one of `timesteps` or `sigmas` should be set.")
        if num_inference_steps is None and timesteps is None and sigmas is None:
            raise ValueError("Must pass exactly one of `num_inference_steps` or `timesteps` or `sigmas.")
        if num_inference_steps is not None and (timesteps is not None or sigmas is not None):
            raise ValueError("Can only pass one of `num_inference_steps` or `timesteps` or `sigmas`.")
        if timesteps is not None and (cfg.use_karras_sigmas or cfg.use_exponential_sigmas):
            raise ValueError("Cannot set `timesteps` with `config.use_karras_sigmas = True` or "
                             "`config.use_exponential_sigmas = True`.")
        if num_inference_steps is None:
            num_inference_steps = len(timesteps) if timesteps is not None else len(sigmas) - 1
        self.num_inference_steps = num_inference_steps
        if sigmas is not None:
            sig = np.asarray(sigmas).astype(np.float32)
            ts = sigma_to_t(sig[:-1].astype(np.float64), self._log_sigmas)
        else:
            ts, sig = self._spaced(num_inference_steps, timesteps)
            last = self._train_sigmas[0] if cfg.final_sigmas_type == "sigma_min" else 0.0
            if cfg.final_sigmas_type not in ("zero", "sigma_min"):
                raise ValueError(f"`final_sigmas_type` must be one of 'zero', or 'sigma_min', but got "
                                 f"{cfg.final_sigmas_type}")
            sig = np.concatenate([sig, [last]]).astype(np.float32)
        self._set_run(ts, sig, device)
        if cfg.timestep_type == "continuous" and cfg.prediction_type == "v_prediction":
            self.timesteps = (0.25 * torch.log(self.sigmas[:-1])).to(device=device)
        self._start_run()  # (s_churn is a step option: a churned run draws its seed at the first churn)

    def _build_table(self, key) -> torch.Tensor:
        s_churn, s_tmin, s_tmax = key
        s, s_next = self._sig[:-1], self._sig[1:]
        gamma = churn_gamma(s, s_churn, len(self._sig) - 1, s_tmin, s_tmax)
        sh = s * (gamma + 1.0)
        in_x, in_m = sigma_x0_coefs(self.config.prediction_type, s, sh)
        ratio = (s_next - sh) / sh  # dt / sigma_hat: x_next = x + (x - x0) * dt / sigma_hat
        # the churn noise scale sqrt(sigma_hat**2 - sigma**2) is applied before the fused pass
        return rows(in_x=in_x, in_m=in_m, out_x=1.0 + ratio, out_d=-ratio, out_noise=np.sqrt(sh**2 - s**2))

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One Euler step (a single fused pass; no host-device sync)."""
        self._check_timestep(timestep)
        i = self._current_index(timestep)
        key = (float(s_churn), float(s_tmin), float(s_tmax))
        table = self._table(key, sample.device)
        x = self._churned(sample, model_output, generator, i, key, s_noise)
        prev, x0 = self._launch(x, model_output, table, i, out_dtype=model_output.dtype,
                                aux_dtype=self._aux_dtype(model_output, sample))
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("EulerDiscreteSchedulerOutput", prev, x0)


class EulerAncestralDiscreteScheduler(_SigmaBase):
    """Ancestral Euler sampling (k-diffusion's ``sample_euler_ancestral``, after Song et al. 2021 / Karras et al. 2022).

    Same config keys, defaults and numbers as ``diffusers.EulerAncestralDiscreteScheduler``;
    ``step`` is one fused pass with the noise drawn as diffusers draws it (a generator
    given) or in-kernel.

    Example:
        >>> s = EulerAncestralDiscreteScheduler()
        >>> s.set_timesteps(10)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> x = s.step(torch.zeros_like(x), s.timesteps[0], x).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "EulerAncestralDiscreteSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        self._init_schedule(self.config, rescale_betas_zero_snr)
        T = num_train_timesteps
        sig = np.concatenate([self._train_sigmas[::-1], [0.0]]).astype(np.float32)
        self._set_run(np.linspace(0, T - 1, T, dtype=float)[::-1].copy(), sig)

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """Sampling sigmas and timesteps with diffusers' ``timestep_spacing``."""
        check_steps(num_inference_steps, self.config.num_train_timesteps, cap=False)
        self.num_inference_steps = num_inference_steps
        ts, sig = self._spaced(num_inference_steps)
        self._set_run(ts, np.concatenate([sig, [0.0]]).astype(np.float32), device)
        self._start_run()

    def _build_table(self, key) -> torch.Tensor:
        s_from, s_to = self._sig[:-1], self._sig[1:]
        down, up = ancestral_split(s_from, s_to)
        pt = self.config.prediction_type
        if pt == "sample":
            raise NotImplementedError("prediction_type not implemented yet: sample")
        in_x, in_m = sigma_x0_coefs(pt, s_from)
        ratio = (down - s_from) / s_from
        return rows(in_x=in_x, in_m=in_m, out_x=1.0 + ratio, out_d=-ratio, out_noise=up)

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One ancestral Euler step (a single fused pass; no host-device sync)."""
        self._check_timestep(timestep)
        i = self._current_index(timestep)
        table = self._table("rows", sample.device)
        kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, i)
        prev, x0 = self._launch(sample, model_output, table, i, out_dtype=model_output.dtype,
                                aux_dtype=self._aux_dtype(model_output, sample), **kw)
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("EulerAncestralDiscreteSchedulerOutput", prev, x0)


class HeunStages:
    """Heun's predictor/corrector pair (Karras et al. 2022, Algorithm 1/2) as two fused passes on a VE-form
    sigma schedule whose every sigma after the first is repeated (diffusers' layout), shared by the Heun drop-ins.

    The predictor at index ``i`` is an Euler step from ``sigma_i`` (churned to ``sigma_hat_i``) to ``sigma_{i+1}``;
    the corrector at index ``i + 1`` reads the predictor's input ``x`` and x0 estimate (a history tensor) and
    the sample it is called with (``x_eval``):
    ``x + dt/2 ((x - x0_1) / sigma_hat + (x_eval - x0_2) / sigma_next)``, ``dt = sigma_next - sigma_hat``.
    A class provides ``self._sig`` (float64 sigmas, final 0 included) and a ``_build_table`` that calls
    :meth:`_heun_rows` with its x0 conversion.
    """

    _prev = None  # (x0 of the predictor, the predictor's input sample) between the two calls

    @property
    def state_in_first_order(self) -> bool:
        """True when the next ``step`` is a predictor (Euler) call."""
        return self._prev is None

    def _heun_rows(self, key, x0_coefs) -> torch.Tensor:
        """The rows of stage ``key[0]`` ("first" / "second") with churn ``key[1:]`` = (s_churn, s_tmin, s_tmax);
        ``x0_coefs(sigma, sigma_hat) -> (in_x, in_m)`` converts the model output at level ``sigma``."""
        stage, s_churn, s_tmin, s_tmax = key
        s = self._sig
        sigma, nxt = s[:-1], s[1:]
        sigma_hat = sigma * (churn_gamma(sigma, s_churn, len(s) - 1, s_tmin, s_tmax) + 1.0)
        if stage == "first":
            in_x, in_m = x0_coefs(sigma, sigma_hat)
            ratio = (nxt - sigma_hat) / sigma_hat
            return rows(in_x=in_x, in_m=in_m, out_x=1.0 + ratio, out_d=-ratio)
        # the corrector at index i follows the predictor at i - 1: from sigma_hat[i - 1] to s[i]
        sh = np.concatenate([[np.nan], sigma_hat[:-1]])
        nxt = s[:-1]
        dt = nxt - sh
        with np.errstate(divide="ignore", invalid="ignore"):
            in_x, in_m = x0_coefs(nxt, nxt)
            a, b = dt / (2 * sh), dt / (2 * nxt)
        z = lambda v: np.where(np.isfinite(v), v, 0.0)  # noqa: E731 - row 0 / a zero sigma is never a corrector
        if getattr(self.config, "clip_sample", False):  # the clamped x0 estimate must be formed: d is read
            return rows(in_x=z(in_x), in_m=z(in_m), out_x=z(1.0 + a), out_h=[z(-a)], out_e=z(b), out_d=z(-b))
        # b (x_eval - x0_2) folded into the x_eval and model-output coefficients in float64 (x0_2 stays the aux
        # output): b = dt / (2 sigma_next) is large at a small sigma_next (-166 in a 4-step flow run), where
        # forming x0_2 in float32 first and subtracting it from x_eval (the kernel's and the traced CPU step's
        # order) left the flow run 44x further from float64 than the folded CPU step, VP Heun 3.7x
        return rows(in_x=z(in_x), in_m=z(in_m), out_x=z(1.0 + a), out_h=[z(-a)], out_e=z(b - b * in_x),
                    out_m=z(-b * in_m))

    def _heun_launch(self, model_output: torch.Tensor, sample: torch.Tensor, i: int, first_key, second_key,
                     dtype: torch.dtype, clip: Optional[float] = None, x_first: Optional[torch.Tensor] = None,
                     aux_dtype: Optional[torch.dtype] = None, corrector_x0: bool = True):
        """The predictor (from ``x_first``, default ``sample``: a churned sample) or the corrector call at
        index ``i``: one fused pass each; returns ``(prev, x0)`` (x0 in ``aux_dtype``, default ``dtype``; None
        from a corrector call with ``corrector_x0=False``, for a class whose output has no x0, so the pass
        writes one tensor, not two)."""
        aux_dtype = dtype if aux_dtype is None else aux_dtype
        if self._prev is None:
            x = sample if x_first is None else x_first
            table = self._table(first_key, sample.device)
            prev, x0 = self._launch(x, model_output, table, i, out_dtype=dtype, aux_dtype=aux_dtype, clip=clip)
            self._prev = (x0, x)
        else:
            x0_first, x_prev = self._prev
            table = self._table(second_key, sample.device)
            prev, x0 = self._launch(x_prev, model_output, table, i, out_dtype=dtype,
                                    aux_dtype=aux_dtype if corrector_x0 else None, clip=clip,
                                    x_eval=sample, history=(x0_first,))
            self._prev = None
        return prev, x0


class HeunDiscreteScheduler(HeunStages, _SigmaBase):
    """Heun's 2nd-order method on the probability-flow ODE, Karras et al. (2022) Algorithm 1.

    Same config keys, defaults and numbers as ``diffusers.HeunDiscreteScheduler``:
    ``timesteps`` repeats every timestep after the first, and ``step`` alternates a
    predictor and a corrector call, each one fused pass (the corrector reads the
    predictor's x0 estimate as a history tensor).

    Example:
        >>> s = HeunDiscreteScheduler()
        >>> s.set_timesteps(5)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    _extra_beta_schedules = ("exp",)

    order = 2
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "HeunDiscreteSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        prediction_type: str = "epsilon",
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        clip_sample: Optional[bool] = False,
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._init_schedule(self.config)
        self.use_karras_sigmas = use_karras_sigmas
        self.set_timesteps(num_train_timesteps, None)
        self.num_inference_steps = None

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      num_train_timesteps: Optional[int] = None, timesteps: Optional[List[int]] = None) -> None:
        """Sampling sigmas/timesteps, each after the first repeated (predictor + corrector)."""
        if num_inference_steps is not None:
            check_steps(num_inference_steps, self.config.num_train_timesteps, cap=False)
        if num_inference_steps is None and timesteps is None:
            raise ValueError("Must pass exactly one of `num_inference_steps` or `custom_timesteps`.")
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")
        n = num_inference_steps or len(timesteps)
        self.num_inference_steps = n
        ts, sig = self._spaced(n, timesteps)
        sig = np.concatenate([sig, [0.0]]).astype(np.float32)
        sig = np.concatenate([sig[:1], np.repeat(sig[1:-1], 2), sig[-1:]])
        ts = np.asarray(ts).astype(np.float32)
        ts = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
        self._set_run(ts, sig, device)
        self._start_run()
        self._prev = None  # (x0 of the predictor, the predictor's input sample, sigma) between the two calls

    def _build_table(self, key) -> torch.Tensor:
        pt = self.config.prediction_type
        return self._heun_rows(key, lambda sigma, sigma_hat: sigma_x0_coefs(pt, sigma, sigma_hat))

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True):
        """One predictor or corrector call (a single fused pass; no host-device sync)."""
        i = self._current_index(timestep)
        clip = float(self.config.clip_sample_range) if self.config.clip_sample else None
        prev, x0 = self._heun_launch(model_output, sample, i, ("first", 0.0, 0.0, 0.0), ("second", 0.0, 0.0, 0.0),
                                     result_dtype(sample, model_output), clip=clip)
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("HeunDiscreteSchedulerOutput", prev, x0)
