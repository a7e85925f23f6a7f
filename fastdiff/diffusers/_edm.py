"""EDMEulerScheduler: Euler steps on the EDM probability-flow ODE (Karras et al. 2022), with EDM's
preconditioning.

The schedule is EDM's own (Karras ``rho`` or exponential sigmas between ``sigma_min`` and ``sigma_max``, no
training betas); the model sees ``c_in * x`` and the timestep ``c_noise = log(sigma) / 4``, and its output is
turned into the x0 estimate ``c_skip * x + c_out * F`` (``fastdiff.solvers.edm_c_in`` / ``edm_x0_coefs``) inside
the step's one fused pass. Optional EDM churn (``s_churn``) is added to the sample before the pass, as in
``EulerDiscreteScheduler``.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Union

import numpy as np
import torch

from ..schedules import exponential_sigmas, karras_ramp
from ..solvers import churn_gamma, edm_c_in, edm_x0_coefs
from ._base import check_steps, rows
from ._compat import make_output, register_to_config
from ._euler import _SigmaBase

__all__ = ["EDMEulerScheduler"]

logger = logging.getLogger(__name__)


class _EDMBase(_SigmaBase):
    """EDM's sigma schedule, preconditioning and bookkeeping (no training betas)."""

    def _init_edm(self) -> None:
        cfg = self.config
        if cfg.sigma_schedule not in ("karras", "exponential"):
            raise ValueError(f"Wrong value for provided for `sigma_schedule={cfg.sigma_schedule!r}`.`")
        self.num_inference_steps = None
        self.is_scale_input_called = False
        self._reset_run()
        T = cfg.num_train_timesteps
        self._set_schedule(torch.arange(T + 1, dtype=torch.float64) / T, None)

    def _edm_sigmas(self, ramp: torch.Tensor) -> torch.Tensor:
        """float32 sigmas at the ramp positions (0: ``sigma_max``, 1: ``sigma_min``), as diffusers rounds them."""
        cfg = self.config
        if cfg.sigma_schedule == "karras":
            return karras_ramp(ramp, cfg.sigma_min, cfg.sigma_max, cfg.rho).to(torch.float32)
        n = len(ramp)  # the exponential schedule reads only the ramp's length, as diffusers'
        if n == 1:
            return torch.tensor([cfg.sigma_min], dtype=torch.float32)
        return exponential_sigmas(n, cfg.sigma_min, cfg.sigma_max)[:-1].to(torch.float32)

    def _set_schedule(self, ramp: torch.Tensor, device) -> None:
        cfg = self.config
        if cfg.final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"`final_sigmas_type` must be one of 'zero', or 'sigma_min', but got "
                             f"{cfg.final_sigmas_type}")
        sig = self._edm_sigmas(ramp)
        last = float(sig[-1]) if cfg.final_sigmas_type == "sigma_min" else 0.0
        sigmas = torch.cat([sig, torch.full((1,), last, dtype=torch.float32)])
        self._set_run(np.zeros(len(sig)), sigmas.numpy(), None)
        self.timesteps = self.precondition_noise(sig).to(device=device)
        # the input scaling c_in in float32, as diffusers computes it from its float32 sigmas
        self._c_in = [float(v) for v in edm_c_in(sigmas, cfg.sigma_data)]
        self._start_run()

    @property
    def init_noise_sigma(self) -> float:
        """``sqrt(sigma_max**2 + 1)``, as diffusers."""
        return (self.config.sigma_max**2 + 1) ** 0.5

    def _get_conditioning_c_in(self, sigma):
        return edm_c_in(sigma, self.config.sigma_data)

    def precondition_inputs(self, sample: torch.Tensor, sigma) -> torch.Tensor:
        """``c_in * sample``: the network input at ``sigma``."""
        return sample * self._get_conditioning_c_in(sigma)

    def precondition_noise(self, sigma) -> torch.Tensor:
        """EDM's noise conditioning ``c_noise = log(sigma) / 4`` (the model's timestep)."""
        if not isinstance(sigma, torch.Tensor):
            sigma = torch.tensor([sigma])
        return 0.25 * torch.log(sigma)

    def precondition_outputs(self, sample: torch.Tensor, model_output: torch.Tensor, sigma) -> torch.Tensor:
        """The x0 estimate ``c_skip * sample + c_out * model_output`` at ``sigma``."""
        c_skip, c_out = edm_x0_coefs(self.config.prediction_type, sigma, self.config.sigma_data)
        return c_skip * sample + c_out * model_output

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """``c_in * sample`` at the step's sigma."""
        if self._step_index is None:
            self._init_step_index(timestep)
        self.is_scale_input_called = True
        return sample * self._c_in[self._step_index]

    def _ramp(self, num_inference_steps, sigmas) -> torch.Tensor:
        if sigmas is None:
            check_steps(num_inference_steps, self.config.num_train_timesteps, cap=False)
            return torch.linspace(0, 1, num_inference_steps, dtype=torch.float64)
        ramp = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        if ramp.numel() == 0:
            raise ValueError("sigmas must hold at least one ramp position")
        return ramp

    def _warn_unscaled(self) -> None:
        if not self.is_scale_input_called:
            logger.warning("The `scale_model_input` function should be called before `step` to ensure correct "
                           "denoising. See `StableDiffusionPipeline` for a usage example.")


class EDMEulerScheduler(_EDMBase):
    """Euler steps on the EDM probability-flow ODE (Karras et al. 2022, Alg. 2 with its preconditioning).

    Same config keys, defaults and numbers as ``diffusers.EDMEulerScheduler``: ``set_timesteps`` takes a step
    count or custom ramp positions (``sigmas=``, 0 to 1 along the schedule), ``precondition_inputs`` /
    ``precondition_noise`` / ``precondition_outputs`` are EDM's ``c_in`` / ``c_noise`` / ``c_skip, c_out``; ``step``
    is one fused pass (with ``s_churn > 0`` the churn noise is added to the sample first).

    Example:
        >>> s = EDMEulerScheduler()
        >>> s.set_timesteps(6)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     out = torch.zeros_like(s.scale_model_input(x, t))
        ...     x = s.step(out, t, x).prev_sample
    """

    order = 1
    _compatibles: list = []
    _output_name = "EDMEulerSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        sigma_schedule: str = "karras",
        num_train_timesteps: int = 1000,
        prediction_type: str = "epsilon",
        rho: float = 7.0,
        final_sigmas_type: str = "zero",
    ):
        self._init_edm()

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      sigmas: Optional[Union[torch.Tensor, List[float]]] = None) -> None:
        """EDM sigmas for ``num_inference_steps`` (or at the ramp positions ``sigmas``) and their timesteps."""
        self.num_inference_steps = num_inference_steps
        self._set_schedule(self._ramp(num_inference_steps, sigmas), device)

    def _build_table(self, key) -> torch.Tensor:
        s_churn, s_tmin, s_tmax, x0_given = key
        s, s_next = self._sig[:-1], self._sig[1:]
        gamma = churn_gamma(s, s_churn, len(self._sig) - 1, s_tmin, s_tmax)
        sh = s * (gamma + 1.0)
        if x0_given:  # the caller's x0 estimate is passed as the model output
            in_x, in_m = np.zeros_like(s), np.ones_like(s)
        else:
            in_x, in_m = edm_x0_coefs(self.config.prediction_type, sh, self.config.sigma_data)
        ratio = (s_next - sh) / sh  # x + (x - x0) * dt / sigma_hat, folded onto x and the model output
        return rows(in_x=in_x, in_m=in_m, out_x=1.0 + ratio * (1.0 - in_x), out_m=-ratio * in_m)

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: Optional[torch.Generator] = None, return_dict: bool = True,
             pred_original_sample: Optional[torch.Tensor] = None):
        """One Euler step (a single fused pass; no host-device sync); ``pred_original_sample`` replaces the
        model's x0 estimate when given."""
        self._check_timestep(timestep)
        self._warn_unscaled()
        i = self._current_index(timestep)
        churn = (float(s_churn), float(s_tmin), float(s_tmax))
        given = pred_original_sample is not None
        table = self._table((*churn, given), sample.device)
        x = self._churned(sample, model_output, generator, i, churn, s_noise)
        prev, x0 = self._launch(x, pred_original_sample if given else model_output, table, i,
                                out_dtype=model_output.dtype, aux_dtype=self._aux_dtype(model_output, sample))
        if given:
            x0 = pred_original_sample
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("EDMEulerSchedulerOutput", prev, x0)
