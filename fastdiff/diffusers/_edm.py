"""EDMEulerScheduler and EDMDPMSolverMultistepScheduler: Euler and multistep DPM-Solver++ steps on the EDM
probability-flow ODE (Karras et al. 2022), with EDM's preconditioning.

The schedule is EDM's own (Karras ``rho`` or exponential sigmas between ``sigma_min`` and ``sigma_max``, no
training betas); the model sees ``c_in * x`` and the timestep ``c_noise = log(sigma) / 4``, and its output is
turned into the x0 estimate ``c_skip * x + c_out * F`` (``fastdiff.solvers.edm_c_in`` / ``edm_x0_coefs``) inside
the step's one fused pass. Optional EDM churn (``s_churn``) is added to the sample before the pass, as in
``EulerDiscreteScheduler``. The DPM-Solver++ variant takes its weights from
``fastdiff.solvers.dpmpp_multistep_weights`` with ``alpha = 1`` (the VE process) and keeps the previous x0
estimates as the pass's history tensors.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Union

import numpy as np
import torch

from ..schedules import exponential_sigmas, karras_ramp
from ..solvers import churn_gamma, dpmpp_multistep_weights, edm_c_in, edm_x0_coefs
from ._base import _TABLE_ARITHMETIC, check_steps, result_dtype, rows
from ._compat import make_output, register_to_config
from ._euler import _SigmaBase
from ._multistep import check_solver_types, multistep_orders

__all__ = ["EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"]

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

    def _set_schedule(self, ramp: torch.Tensor, device, last: Optional[float] = None) -> None:
        """The run's sigmas at the ramp positions, then ``last`` (default: 0, or the smallest sigma with
        ``final_sigmas_type="sigma_min"``); timesteps ``c_noise``; the input scalings."""
        cfg = self.config
        if cfg.final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"`final_sigmas_type` must be one of 'zero', or 'sigma_min', but got "
                             f"{cfg.final_sigmas_type}")
        sig = self._edm_sigmas(ramp)
        if last is None:
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


_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")


class EDMDPMSolverMultistepScheduler(_EDMBase):
    """Multistep DPM-Solver++ (Lu et al. 2022b) on EDM's sigmas and preconditioning (and its SDE variant).

    Same config keys, defaults and numbers as ``diffusers.EDMDPMSolverMultistepScheduler`` (``solver_order``
    1-3, midpoint/heun, ``lower_order_final``, ``euler_at_final``, ``final_sigmas_type``, thresholding);
    ``step`` is one fused pass reading up to two previous x0 estimates.

    Example:
        >>> s = EDMDPMSolverMultistepScheduler(solver_order=3)
        >>> s.set_timesteps(8)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(s.scale_model_input(x, t)), t, x).prev_sample
    """

    order = 1
    _compatibles: list = []
    _output_name = "SchedulerOutput"

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
        solver_order: int = 2,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        final_sigmas_type: str = "zero",
    ):
        check_solver_types(self, algorithm_type, solver_type, _ALGORITHMS, final_sigmas_type)
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        cfg = self.config
        if cfg.sigma_schedule not in ("karras", "exponential"):
            raise ValueError(f"Wrong value for provided for `sigma_schedule={cfg.sigma_schedule!r}`.`")
        self.is_scale_input_called = False
        self._reset_run()
        self._set_schedule(self._ramp_of(cfg.num_train_timesteps), None, last=0.0)
        self._reset_multistep()
        self.num_inference_steps = None

    @staticmethod
    def _ramp_of(n: int) -> torch.Tensor:
        # diffusers' ramp is a float32 linspace (the default dtype); float64 in the "float64" table arithmetic
        dtype = torch.float32 if _TABLE_ARITHMETIC[0] == "diffusers" else torch.float64
        return torch.linspace(0, 1, n, dtype=dtype)

    def _reset_multistep(self) -> None:
        self.model_outputs = [None] * self.config.solver_order
        self.lower_order_nums = 0
        self._start: Optional[int] = None
        self._hist: List[torch.Tensor] = []  # previous x0 estimates, most recent first

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None) -> None:
        """EDM sigmas for ``num_inference_steps`` and their timesteps; the final sigma is 0 or ``sigma_min``."""
        cfg = self.config
        check_steps(num_inference_steps, cfg.num_train_timesteps, cap=False)
        last = float(cfg.sigma_min) if cfg.final_sigmas_type == "sigma_min" else 0.0
        self._set_schedule(self._ramp_of(num_inference_steps), device, last=last)
        self.num_inference_steps = num_inference_steps
        self._reset_multistep()

    def _missing_timestep_index(self, value: float) -> int:
        return len(self.timesteps) - 1  # diffusers: an unknown timestep maps to the last step

    def _orders(self, start: int) -> List[int]:
        """The solver order of each step of a run started at step ``start`` (``multistep_orders``)."""
        cfg = self.config
        return multistep_orders(len(self.timesteps), start, cfg.solver_order, cfg.lower_order_final,
                                cfg.euler_at_final, cfg.final_sigmas_type)

    def _build_table(self, key) -> torch.Tensor:
        cfg = self.config
        sig = self._sig
        in_x, in_m = edm_x0_coefs(cfg.prediction_type, sig[:-1], cfg.sigma_data)
        sde = cfg.algorithm_type == "sde-dpmsolver++"
        alpha = np.ones_like(sig)  # the VE process: the sample is x0 + sigma * noise
        cols = {"x": [], "d": [], "h0": [], "h1": [], "noise": []}
        orders = self._orders(key)
        if sde and 3 in orders:
            raise NotImplementedError("algorithm_type='sde-dpmsolver++' has no third-order update in "
                                      f"{type(self).__name__} (as in diffusers); use solver_order <= 2")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            lam = -np.log(sig)
            for i, k in enumerate(orders):
                cx, w, noise = dpmpp_multistep_weights(alpha, sig, lam, i, k, cfg.solver_type, sde)
                for name, v in zip(cols, (cx, w[0], w[1], w[2], noise)):
                    cols[name].append(v)
        return rows(in_x=in_x, in_m=in_m, out_x=cols["x"], out_d=cols["d"], out_h=[cols["h0"], cols["h1"]],
                    out_noise=cols["noise"])

    def convert_model_output(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The x0 estimate at the current step (plain PyTorch, not thresholded; not used by ``step``)."""
        return self.precondition_outputs(sample, model_output, self.sigmas[self._step_index])

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One multistep update (a single fused pass; no host-device sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        i = self._current_index(timestep)
        if self._start is None:
            self._start = i
        table = self._table(self._start, sample.device)
        # once per run, in the run's host cache (traced: a constant, computed outside the graph; a dict of this
        # scheduler's own filled by the trace was guarded by key, so every new run's empty one recompiled)
        k = self._host_cached(("orders", self._start), "_orders", self._start)[i]
        kw = {}
        if self.config.algorithm_type == "sde-dpmsolver++":
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, i)
        keep = self.config.solver_order - 1
        dtype = result_dtype(sample, model_output)
        prev, x0 = self._launch(sample, model_output, table, i, out_dtype=dtype,
                                aux_dtype=dtype if keep > 0 else None, history=tuple(self._hist[:k - 1]), **kw)
        if keep > 0:
            self._hist = ([x0] + self._hist)[:keep]
        self.lower_order_nums = min(self.lower_order_nums + 1, self.config.solver_order)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)
