"""KDPM2DiscreteScheduler and KDPM2AncestralDiscreteScheduler: k-diffusion's DPM-2 (``sample_dpm_2`` and
``sample_dpm_2_ancestral``; Karras et al. 2022, after Lu et al. 2022's DPM-Solver-2).

Each sampling step is two model calls: an Euler step to the log-midpoint sigma, then the step from the
original sample with the derivative at the midpoint. As in diffusers, ``timesteps`` interleaves the
midpoint timesteps with the schedule's, and ``step`` alternates the two stages (``state_in_first_order``),
each one fused pass: the second stage reads the first stage's input sample as ``x`` and the sample the model
saw as ``x_eval``. The ancestral variant steps the second stage to ``sigma_down`` and adds ``sigma_up`` noise
(``fastdiff.solvers.ancestral_split``) in the same pass.
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np
import torch

from ..solvers import ancestral_split, lerp_half
from ._base import KARRAS_COMPATIBLES, check_steps, result_dtype, rows, sigma_to_t
from ._compat import make_output, register_to_config
from ._euler import _f32_spacing, _SigmaBase, sigma_x0_coefs

__all__ = ["KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler"]


def _interleave(v: torch.Tensor) -> torch.Tensor:
    """``[v0, v1, v1, v2, v2, ..., v_last]``: one entry per model call of the two-stage run (diffusers' layout)."""
    return torch.cat([v[:1], v[1:].repeat_interleave(2), v[-1:]])


def _nan_to_zero(v: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(v), v, 0.0)


class _KDPM2Base(_SigmaBase):
    """The two-stage set-up shared by KDPM2 and its ancestral variant."""

    order = 2
    _compatibles = list(KARRAS_COMPATIBLES)
    #: where the second stage's input scaling reads ``sigmas_interpol``: index ``step_index - offset``
    _interpol_offset = 0

    def _init_kdpm2(self) -> None:
        self._init_schedule(self.config)
        self.set_timesteps(self.config.num_train_timesteps, None, self.config.num_train_timesteps)
        self.num_inference_steps = self.config.num_train_timesteps

    def _midpoints(self, sigmas: torch.Tensor):  # pragma: no cover - abstract
        """float32 ``(sigmas_interpol, extras)`` per schedule sigma (``sigmas`` ends with 0)."""
        raise NotImplementedError

    def _interleaved_timesteps(self, ts: torch.Tensor, ts_mid: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def set_timesteps(self, num_inference_steps: int, device=None, num_train_timesteps: Optional[int] = None) -> None:
        """The interleaved sigmas and timesteps of the two-stage run (diffusers' spacings, Karras/exponential/beta
        sigmas)."""
        cfg = self.config
        check_steps(num_inference_steps, cfg.num_train_timesteps, cap=False)
        self.num_inference_steps = num_inference_steps
        T = num_train_timesteps or cfg.num_train_timesteps
        ts, sig = self._spaced(num_inference_steps,
                               _f32_spacing(num_inference_steps, T, cfg.timestep_spacing, cfg.steps_offset))
        respaced = cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas
        if cfg.use_karras_sigmas:
            ts = np.round(ts)  # diffusers rounds the Karras timesteps (only those)
        ts = np.asarray(ts, dtype=np.float64 if respaced else np.float32)  # diffusers' dtypes
        sigmas = torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))
        mid, extras = self._midpoints(sigmas)
        ts_mid = sigma_to_t(mid.to(torch.float64).numpy(), self._log_sigmas)
        t, t_mid = torch.from_numpy(ts), torch.from_numpy(ts_mid).to(torch.from_numpy(ts).dtype)
        timesteps = self._interleaved_timesteps(t, t_mid)
        self._set_run(timesteps.numpy(), _interleave(sigmas).numpy(), device)
        self.timesteps = timesteps.to(device=device)
        self.sigmas_interpol = _interleave(mid).to(device=device)
        self._extras = {}  # host float64 copies: a table is built without reading a device tensor
        for name, v in extras.items():
            setattr(self, name, _interleave(v).to(device=device))
            self._extras[name] = _interleave(v).to(torch.float64).numpy()
        self.log_sigmas = torch.from_numpy(self._log_sigmas.astype(np.float32)).to(device=device)
        self._mid = _interleave(mid).to(torch.float64).numpy()
        self._scale_mid = [float(v) for v in (_interleave(mid) ** 2 + 1) ** 0.5]
        self.sample = None
        self._start_run()

    @property
    def state_in_first_order(self) -> bool:
        """True when the next ``step`` is the first stage (the Euler step to the midpoint)."""
        return self.sample is None

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """``sample / sqrt(sigma**2 + 1)`` at the stage's sigma (the midpoint's in the second stage)."""
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        scale = self._scale[i] if self.sample is None else self._scale_mid[i - self._interpol_offset]
        return sample / scale

    def _prediction(self) -> str:
        pt = self.config.prediction_type
        if pt == "sample":
            raise NotImplementedError("prediction_type not implemented yet: sample")
        if pt not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, or `v_prediction`")
        return pt

    def _stage_rows(self, sigma: np.ndarray, s_in: np.ndarray, to: np.ndarray, up=None, second=False):
        """Rows of ``x + (to - sigma) * (x_in - x0) / s_in`` with ``x0`` from the sample at ``s_in`` (the sample
        itself in the first stage, ``x_eval`` in the second), plus ``up`` noise; folded onto x, x_eval and m."""
        with np.errstate(divide="ignore", invalid="ignore"):
            in_x, in_m = sigma_x0_coefs(self._prediction(), s_in)
            dt = to - sigma
            on_in, on_m = dt * (1.0 - in_x) / s_in, -dt * in_m / s_in
        z = _nan_to_zero
        noise = 0.0 if up is None else z(up)
        if second:
            return rows(in_x=z(in_x), in_m=z(in_m), out_x=1.0, out_e=z(on_in), out_m=z(on_m), out_noise=noise)
        return rows(in_x=z(in_x), in_m=z(in_m), out_x=z(1.0 + on_in), out_m=z(on_m), out_noise=noise)

    def _stage(self, model_output, timestep, sample, generator, name: str, noisy: bool, return_dict: bool):
        i = self._current_index(timestep)
        dtype = result_dtype(sample, model_output)
        if self.sample is None:
            table = self._table("first", sample.device)
            prev, x0 = self._launch(sample, model_output, table, i, out_dtype=dtype, aux_dtype=dtype)
            self.sample = sample
        else:
            table = self._table("second", sample.device)
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator,
                                    i) if noisy else {}
            prev, x0 = self._launch(self.sample, model_output, table, i, out_dtype=dtype, aux_dtype=dtype,
                                    x_eval=sample, **kw)
            self.sample = None
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output(name, prev, x0)


class KDPM2DiscreteScheduler(_KDPM2Base):
    """DPM-Solver-2 in sigma (k-diffusion's ``sample_dpm_2``): an Euler step to the log-midpoint sigma, then
    the full step with the midpoint's derivative.

    Same config keys, defaults and numbers as ``diffusers.KDPM2DiscreteScheduler``; each stage is one fused pass.

    Example:
        >>> s = KDPM2DiscreteScheduler()
        >>> s.set_timesteps(4)
        >>> len(s.timesteps)
        7
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(s.scale_model_input(x, t)), t, x).prev_sample
    """

    _output_name = "KDPM2DiscreteSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._init_kdpm2()

    def _midpoints(self, sigmas: torch.Tensor):
        # the geometric mean of each sigma and the one before it, in float32 as diffusers forms it
        return lerp_half(sigmas.log(), sigmas.roll(1).log()).exp(), {}

    def _interleaved_timesteps(self, ts, ts_mid):
        return torch.cat([ts[:1], torch.stack((ts_mid[1:-1, None], ts[1:, None]), dim=-1).flatten()])

    def _build_table(self, key) -> torch.Tensor:
        s, mid = self._sig, self._mid
        n = self._num_steps()
        k = np.arange(n)
        if key == "first":  # sigma_k -> the midpoint after it
            return self._stage_rows(s[k], s[k], mid[k + 1])
        # from sigma_{k-1} (the first stage's input) to sigma_k, the derivative at the midpoint
        prev = np.concatenate([[np.nan], s[k[1:] - 1]])
        return self._stage_rows(prev, mid[k], s[k], second=True)

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True):
        """One stage (a single fused pass; no host-device sync)."""
        return self._stage(model_output, timestep, sample, None, "KDPM2DiscreteSchedulerOutput", False, return_dict)


class KDPM2AncestralDiscreteScheduler(_KDPM2Base):
    """Ancestral DPM-Solver-2 in sigma (k-diffusion's ``sample_dpm_2_ancestral``): the two stages aim at
    ``sigma_down`` (their midpoint between sigma and sigma_down), then ``sigma_up`` noise is added.

    Same config keys, defaults and numbers as ``diffusers.KDPM2AncestralDiscreteScheduler``; each stage is one
    fused pass, the noise drawn as diffusers draws it (a generator given) or in-kernel.

    Example:
        >>> s = KDPM2AncestralDiscreteScheduler()
        >>> s.set_timesteps(4)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> g = torch.Generator().manual_seed(0)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(s.scale_model_input(x, t)), t, x, generator=g).prev_sample
    """

    _output_name = "KDPM2AncestralDiscreteSchedulerOutput"
    _interpol_offset = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._init_kdpm2()

    def _midpoints(self, sigmas: torch.Tensor):
        # the ancestral split of each step in float32 (elementwise IEEE operations: diffusers' tensor bits)
        s = sigmas.numpy()
        nxt = np.concatenate([s[1:], np.zeros(1, dtype=s.dtype)])
        with np.errstate(divide="ignore", invalid="ignore"):
            down, up = ancestral_split(s, nxt)
        down = torch.from_numpy(np.asarray(down, dtype=np.float32).copy())
        up = torch.from_numpy(np.asarray(up, dtype=np.float32).copy())
        down[-1] = 0.0
        mid = lerp_half(sigmas.log(), down.log()).exp()
        mid[-2:] = 0.0
        return mid, {"sigmas_up": up, "sigmas_down": down}

    def _interleaved_timesteps(self, ts, ts_mid):
        return torch.cat([ts[:1], torch.stack((ts_mid[:-2, None], ts[1:, None]), dim=-1).flatten()])

    def _build_table(self, key) -> torch.Tensor:
        s, mid = self._sig, self._mid
        n = self._num_steps()
        k = np.arange(n)
        if key == "first":  # sigma_k -> the midpoint toward sigma_down
            return self._stage_rows(s[k], s[k], mid[k])
        down, up = self._extras["sigmas_down"], self._extras["sigmas_up"]
        j = np.concatenate([[0], k[1:] - 1])
        prev = np.where(k > 0, s[j], np.nan)
        return self._stage_rows(prev, mid[j], down[j], up=up[j], second=True)

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One stage (a single fused pass; no host-device sync); the second adds the ``sigma_up`` noise."""
        return self._stage(model_output, timestep, sample, generator, "KDPM2AncestralDiscreteSchedulerOutput",
                           True, return_dict)
