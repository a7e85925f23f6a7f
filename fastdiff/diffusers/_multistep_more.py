"""More exponential-integrator solvers on the machinery of ``_multistep``: DEISMultistepScheduler,
DPMSolverSinglestepScheduler and DPMSolverMultistepInverseScheduler.

DEIS keeps the previous noise estimates as history tensors of the fused step (written as its aux output), and its
weights are ``fastdiff.solvers.exp_lagrange_weights`` -- the same integrals as DPM-Solver's "heun" updates.
Singlestep DPM-Solver integrates each block of one to three steps from the block's first sample, which it keeps
as a history tensor beside the block's earlier estimates; its weights are ``fastdiff.solvers.dpm_solver_coefs``,
the ones DPMSolverMultistepScheduler uses. The inverse multistep solver runs DPMSolverMultistepScheduler's rows
and step on an ascending schedule (inversion: from the data towards the noise).
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np
import torch

from ..solvers import dpm_solver_coefs, exp_lagrange_weights
from ._base import KARRAS_COMPATIBLES, check_steps, interp, sigma_to_t, spaced_timesteps
from ._compat import make_output, register_to_config
from ._flow import static_shift
from ._multistep import _FORMS, DPMSolverMultistepScheduler, _MultistepBase, _x0_dtype, check_solver_types

__all__ = ["DEISMultistepScheduler", "DPMSolverSinglestepScheduler", "DPMSolverMultistepInverseScheduler"]


class DEISMultistepScheduler(_MultistepBase):
    """DEIS multistep, Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator".

    Same config keys, defaults and numbers as ``diffusers.DEISMultistepScheduler`` (``algorithm_type`` "deis",
    ``solver_type`` "logrho", ``solver_order`` 1-3, ``lower_order_final``, Karras/exponential/beta/flow sigmas,
    dynamic thresholding). The update integrates the Lagrange polynomial through the last ``order`` noise
    estimates in ``log rho`` (``rho = sigma / alpha``) exactly; ``step`` is one fused pass reading up to two
    previous noise estimates.

    Example:
        >>> s = DEISMultistepScheduler(solver_order=3)
        >>> s.set_timesteps(10)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "SchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "deis",
        solver_type: str = "logrho",
        lower_order_final: bool = True,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
    ):
        if algorithm_type in ("dpmsolver", "dpmsolver++"):
            self.register_to_config(algorithm_type="deis")
        elif algorithm_type != "deis":
            raise NotImplementedError(f"{algorithm_type} is not implemented for {type(self).__name__}")
        if solver_type in ("midpoint", "heun", "bh1", "bh2"):
            self.register_to_config(solver_type="logrho")
        elif solver_type != "logrho":
            raise NotImplementedError(f"solver type {solver_type} is not implemented for {type(self).__name__}")
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        self._init_common(self.config)
        self.model_outputs = [None] * solver_order

    def set_timesteps(self, num_inference_steps: int = None, device=None, mu: Optional[float] = None) -> None:
        """Sampling timesteps/sigmas (diffusers' spacings, Karras/exponential/beta or flow sigmas)."""
        cfg = self.config
        check_steps(num_inference_steps, cfg.num_train_timesteps, cap=True)  # integer timesteps
        if mu is not None:
            if not (cfg.use_dynamic_shifting and cfg.time_shift_type == "exponential"):
                raise ValueError("mu needs use_dynamic_shifting=True and time_shift_type='exponential'")
            self.register_to_config(flow_shift=float(np.exp(mu)))  # diffusers: mu sets flow_shift = e^mu
            cfg = self.config
        n = num_inference_steps
        ts = self._multistep_timesteps(n)
        train = self._train_sigmas.astype(np.float32)  # diffusers works from float32 sigmas here
        repeat_last = True  # re-spaced and flow sigmas end on their last value again, as diffusers'
        if cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas:
            sig = self._convert_sigmas(np.flip(train).astype(np.float64), n)
            ts = sigma_to_t(sig, np.log(train).astype(np.float64))  # float32 logs, as diffusers
            if cfg.use_karras_sigmas:
                ts = np.round(ts)
        elif cfg.use_flow_sigmas:
            sig = np.flip(static_shift(cfg.flow_shift, 1.0 - np.linspace(1, 1 / cfg.num_train_timesteps, n + 1)))
            sig = sig[:-1].copy()
            ts = sig * cfg.num_train_timesteps
        else:
            sig = interp(ts, train.astype(np.float64))
            repeat_last = False  # the smallest training sigma
        self._finish_setup(np.trunc(ts), sig, device,
                           sigma_min=float(np.float32(sig[-1])) if repeat_last else None)
        self.model_outputs = [None] * cfg.solver_order
        self._start_run()

    def _build_table(self, key) -> torch.Tensor:
        """Rows of the log-rho update x_t = (alpha_t / alpha_s) x + sigma_t sum_j w_j eps_j: the history holds
        noise estimates eps = (x - alpha_s x0) / sigma_s, written as the step's aux output."""
        start = key
        a, s, lam = self._alpha, self._sigma, self._lam
        per_step = []
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i, k in enumerate(self._orders(start)):
                in_x, in_m = self._x0_coefs(i)
                at, st = a[i + 1], s[i + 1]
                w = exp_lagrange_weights(lam[i + 1] - lam[i], [lam[i - j] - lam[i] for j in range(k)], -1.0)
                m = np.zeros(3)  # on (eps now, eps one step back, two steps back)
                m[:k] = st * np.array(w)
                per_step.append({**self._eps_row(i, in_x, in_m, at / a[i], m[0]), "h0": m[1], "h1": m[2]})
        return self._table_rows(per_step)

    def convert_model_output(self, model_output: torch.Tensor, *args, sample: torch.Tensor = None, **kwargs):
        """The noise estimate DEIS works with (plain PyTorch; not used by ``step``)."""
        if sample is None:
            if len(args) > 1:
                sample = args[1]
            else:
                raise ValueError("missing `sample` as a required keyword argument")
        i = self._step_index
        in_x, in_m = self._x0_coefs(i)
        x0 = in_x * sample + in_m * model_output
        return (sample - float(self._alpha[i]) * x0) / float(self._sigma[i])

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True):
        """One multistep DEIS update (a single fused pass; no host-device sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        i = self._begin_run(timestep)
        table = self._table(self._start, sample.device)
        k = self._orders_cached(self._start)[i]
        keep = self.config.solver_order - 1
        aux_dtype = _x0_dtype(model_output) if keep > 0 else None
        prev, eps = self._launch(sample, model_output, table, i, out_dtype=model_output.dtype, aux_dtype=aux_dtype,
                                 history=tuple(self._hist[: k - 1]))
        self._push_history(eps, keep)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)


class DPMSolverSinglestepScheduler(_MultistepBase):
    """Singlestep DPM-Solver / DPM-Solver++, Lu et al. (2022a, 2022b): blocks of one to three model evaluations,
    each block one update of its order from the block's first sample.

    Same config keys, defaults and numbers as ``diffusers.DPMSolverSinglestepScheduler`` (``algorithm_type``
    "dpmsolver++" / "sde-dpmsolver++" / "dpmsolver", ``solver_order`` 1-3, midpoint/heun, ``lower_order_final``,
    Karras/exponential/beta/flow sigmas, ``final_sigmas_type``, ``lambda_min_clipped``, custom timesteps).
    ``step`` is one fused pass: the block's first sample and its earlier estimates are its history tensors.

    Example:
        >>> s = DPMSolverSinglestepScheduler(solver_order=3)
        >>> s.set_timesteps(9)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "SchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        final_sigmas_type: str = "zero",
        lambda_min_clipped: float = -float("inf"),
        variance_type: Optional[str] = None,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
    ):
        check_solver_types(self, algorithm_type, solver_type, ("dpmsolver", "dpmsolver++", "sde-dpmsolver++"),
                           final_sigmas_type)
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        self._init_common(self.config)
        self.model_outputs = [None] * solver_order
        self.sample = None
        self.order_list = self.get_order_list(num_train_timesteps)

    def get_order_list(self, num_inference_steps: int) -> List[int]:
        """The nominal order of each step: blocks (1, 2, 3) or (1, 2), shorter ones at the end with
        ``lower_order_final``, and a first-order last step into ``final_sigmas_type`` "zero" (diffusers' plan)."""
        steps, order = num_inference_steps, self.config.solver_order
        block = list(range(1, order + 1))
        if self.config.lower_order_final and order > 1:
            full, rest = divmod(steps, order)
            if rest == 0:  # the last full block becomes a shorter one and a first-order step
                orders = block * (full - 1) + block[:-1] + [1]
            else:
                orders = block * full + block[:rest]
        else:
            orders = block * (steps // order) if order > 1 else [1] * steps
        if self.config.final_sigmas_type == "zero" and orders:
            orders[-1] = 1
        return orders

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None, mu: Optional[float] = None,
                      timesteps: Optional[List[int]] = None) -> None:
        """Sampling timesteps/sigmas (linspace over the clipped range, Karras/exponential/beta, flow, or custom)."""
        cfg = self.config
        if mu is not None:
            if not (cfg.use_dynamic_shifting and cfg.time_shift_type == "exponential"):
                raise ValueError("mu needs use_dynamic_shifting=True and time_shift_type='exponential'")
            self.register_to_config(flow_shift=float(np.exp(mu)))  # diffusers: mu sets flow_shift = e^mu
            cfg = self.config
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Must pass exactly one of  `num_inference_steps` or `timesteps`.")
        if timesteps is not None and cfg.use_karras_sigmas:
            raise ValueError("Cannot use `timesteps` when `config.use_karras_sigmas=True`.")
        if timesteps is not None and cfg.use_exponential_sigmas:
            raise ValueError("Cannot set `timesteps` with `config.use_exponential_sigmas = True`.")
        if timesteps is not None and cfg.use_beta_sigmas:
            raise ValueError("Cannot set `timesteps` with `config.use_beta_sigmas = True`.")
        if timesteps is not None:
            ts = np.asarray(timesteps).astype(np.int64).astype(np.float64)
            n = len(ts)
        else:
            check_steps(num_inference_steps, cfg.num_train_timesteps, cap=True)  # integer timesteps
            n = num_inference_steps
            lam = self.lambda_t.flip(0)
            clipped = int(torch.searchsorted(lam, torch.tensor(float(cfg.lambda_min_clipped))))
            ts = np.round(spaced_timesteps(n, cfg.num_train_timesteps, "linspace", extra=1,
                                           last=cfg.num_train_timesteps - clipped))
        train = self._train_sigmas.astype(np.float32)  # diffusers works from float32 sigmas here
        if cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas:
            sig = self._convert_sigmas(np.flip(train).astype(np.float64), n)
            ts = sigma_to_t(sig, np.log(train).astype(np.float64))  # float32 logs, as diffusers
            if cfg.use_karras_sigmas:
                ts = np.round(ts)
        elif cfg.use_flow_sigmas:
            sig = np.flip(static_shift(cfg.flow_shift, 1.0 - np.linspace(1, 1 / cfg.num_train_timesteps, n + 1)))
            sig = sig[:-1].copy()
            ts = sig * cfg.num_train_timesteps
        else:
            sig = interp(ts, train.astype(np.float64))
        self._finish_setup(np.trunc(ts), sig, device)
        self.model_outputs = [None] * cfg.solver_order
        self.sample = None
        # diffusers' fix-ups: uneven blocks, or a final step into sigma 0, need the lowered final orders
        if not cfg.lower_order_final and (n % cfg.solver_order != 0 or cfg.final_sigmas_type == "zero"):
            self.register_to_config(lower_order_final=True)
        self.order_list = self.get_order_list(n)
        self._start_run()

    def _orders(self, start: int) -> List[int]:
        """The order each step runs at: the nominal one, lowered to the steps taken since ``start``."""
        return [1 if i < start else min(k, i - start + 1) for i, k in enumerate(self.order_list)]

    def _build_table(self, key) -> torch.Tensor:
        """Rows of the singlestep update of order k from the block's first sample x_b (b = i - k + 1):
        ``x_t = c_x x_b + d0 D_b + c1 D1 (+ d2 D2) (+ noise)``, with D the block's estimates (x0, or noise
        for "dpmsolver") and its differences. History: (D_{i-1}, x_b) at second order, (D_{i-1}, D_{i-2}, x_b)
        at third; the current estimate is the step's aux output."""
        start = key
        cfg = self.config
        form = _FORMS[cfg.algorithm_type]
        eps_form = form == "eps"
        a, s, lam = self._alpha, self._sigma, self._lam
        per_step = []
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i, k in enumerate(self._orders(start)):
                in_x, in_m = self._x0_coefs(i)
                b = i - k + 1
                h = lam[i + 1] - lam[b]
                c = dpm_solver_coefs(form, h, a[i + 1], s[i + 1], a[b], s[b])
                # coefficients on (D_i = current estimate, D_{i-1}, D_{i-2}) and on x_b
                m = np.zeros(3)
                if k == 1:
                    m[0] = c["d0"]
                elif k == 2:
                    r0 = (lam[i] - lam[b]) / h
                    c1 = c["d1_mid" if cfg.solver_type == "midpoint" else "d1"]
                    m[0], m[1] = c1 / r0, c["d0"] - c1 / r0  # D0 = D_b = D_{i-1}, D1 = (D_i - D_b) / r0
                else:
                    r0, r1 = (lam[i] - lam[b]) / h, (lam[i - 1] - lam[b]) / h
                    d1_0 = np.array([0.0, 1.0, -1.0]) / r1  # (D_{i-1} - D_b) / r1
                    d1_1 = np.array([1.0, 0.0, -1.0]) / r0  # (D_i - D_b) / r0
                    m[2] = c["d0"]
                    if cfg.solver_type == "midpoint":
                        m += c["d1"] * d1_1
                    else:
                        m += c["d1"] * (r0 * d1_0 - r1 * d1_1) / (r0 - r1) + c["d2"] * 2.0 * (d1_1 - d1_0) / (r0 - r1)
                if eps_form:
                    row = {**self._eps_row(i, in_x, in_m, 0.0, m[0]), "noise": c["noise"]}
                else:
                    row = {"in_x": in_x, "in_m": in_m, "x": 0.0, "d": m[0], "noise": c["noise"]}
                if k == 1:
                    row["x"] += c["x"]
                elif k == 2:
                    row.update(h0=m[1], h1=c["x"])
                else:
                    row.update(h0=m[1], h1=m[2], h2=c["x"])
                per_step.append(row)
        return self._table_rows(per_step)

    def convert_model_output(self, model_output: torch.Tensor, *args, sample: torch.Tensor = None, **kwargs):
        """The estimate diffusers' solver works with: x0 (DPM-Solver++) or noise ("dpmsolver"); plain PyTorch,
        not used by ``step``."""
        if sample is None:
            if len(args) > 1:
                sample = args[1]
            else:
                raise ValueError("missing `sample` as a required keyword argument")
        i = self._step_index
        in_x, in_m = self._x0_coefs(i)
        x0 = in_x * sample + in_m * model_output
        if _FORMS[self.config.algorithm_type] == "eps":
            return (sample - float(self._alpha[i]) * x0) / float(self._sigma[i])
        return x0

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One singlestep update (a single fused pass; no host-device sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        if self.config.variance_type in ("learned", "learned_range") and self.config.prediction_type == "epsilon":
            model_output = model_output[:, :3]  # [noise; variance] channels: the solver needs the noise only
        i = self._begin_run(timestep)
        table = self._table(self._start, sample.device)
        k = self._orders_cached(self._start)[i]
        if k == 1:
            self.sample = sample
        kw = {}
        if self.config.algorithm_type == "sde-dpmsolver++":
            est = model_output.dtype if self.config.prediction_type == "sample" else \
                torch.promote_types(model_output.dtype, sample.dtype)
            kw = self._noise_kwargs(model_output.shape, model_output.device, est, generator, i)
        keep = self.config.solver_order - 1
        aux_dtype = _x0_dtype(model_output) if keep > 0 else None
        history = () if k == 1 else (*self._hist[: k - 1], self.sample)
        prev, est = self._launch(sample, model_output, table, i, out_dtype=model_output.dtype, aux_dtype=aux_dtype,
                                 history=history, **kw)
        self._push_history(est, keep)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)


class DPMSolverMultistepInverseScheduler(_MultistepBase):
    """DPM-Solver(++) multistep run backwards in time, for inversion (Lu et al. 2022b; used by DiffEdit-style
    pipelines): the timesteps ascend from 0 towards the noisiest one and each step moves the sample to the next,
    noisier, level with DPMSolverMultistepScheduler's update (its rows and its fused step).

    Same config keys, defaults and numbers as ``diffusers.DPMSolverMultistepInverseScheduler`` (``algorithm_type``
    "dpmsolver++" / "sde-dpmsolver++" / "dpmsolver" / "sde-dpmsolver", ``solver_order`` 1-3, midpoint/heun,
    ``lower_order_final``, ``euler_at_final``, Karras/exponential/beta/flow sigmas, ``lambda_min_clipped``).

    One difference, on purpose: with ``algorithm_type="sde-dpmsolver++"`` each inverse step raises sigma, so the
    SDE's noise scale ``sigma_t * sqrt(1 - exp(-2h))`` has ``h < 0`` and is the square root of a negative number;
    diffusers (0.42.1) returns NaN samples there, fastdiff clamps the variance at zero and takes the
    deterministic update (no noise is drawn, so the result does not depend on the seed).

    Example:
        >>> s = DPMSolverMultistepInverseScheduler()
        >>> s.set_timesteps(10)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "SchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        use_flow_sigmas: Optional[bool] = False,
        flow_shift: Optional[float] = 1.0,
        lambda_min_clipped: float = -float("inf"),
        variance_type: Optional[str] = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        check_solver_types(self, algorithm_type, solver_type)
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        self._init_common(self.config)
        T = num_train_timesteps
        self.timesteps = torch.from_numpy(np.linspace(0, T - 1, T, dtype=np.float32))  # ascending
        self.model_outputs = [None] * solver_order
        self.use_karras_sigmas = use_karras_sigmas
        self.use_exponential_sigmas = use_exponential_sigmas
        self.use_beta_sigmas = use_beta_sigmas

    def set_timesteps(self, num_inference_steps: int = None, device=None) -> None:
        """Ascending timesteps from 0 to the noisiest one below ``lambda_min_clipped`` (diffusers' spacings,
        Karras/exponential/beta or flow sigmas); repeated timesteps are dropped, as diffusers drops them."""
        cfg = self.config
        check_steps(num_inference_steps, cfg.num_train_timesteps, cap=True)  # integer timesteps
        n = num_inference_steps
        lam = self.lambda_t.flip(0)
        clipped = int(torch.searchsorted(lam, torch.tensor(float(cfg.lambda_min_clipped))))
        top = cfg.num_train_timesteps - 1 - clipped  # the noisiest timestep
        self.noisiest_timestep = top
        if cfg.timestep_spacing == "linspace":
            ts = np.linspace(0, top, n + 1).round()[:-1]
        elif cfg.timestep_spacing == "leading":
            ts = (np.arange(0, n + 1) * ((top + 1) // (n + 1))).round()[:-1] + cfg.steps_offset
        elif cfg.timestep_spacing == "trailing":
            ts = spaced_timesteps(n, cfg.num_train_timesteps, "trailing", last=top + 1)[::-1]
        else:
            raise ValueError(f"{cfg.timestep_spacing} is not supported. Please make sure to choose one of "
                             f"'linspace', 'leading' or 'trailing'.")
        ts = np.asarray(ts, dtype=np.float64)
        train = self._train_sigmas.astype(np.float32)  # diffusers works from float32 sigmas here
        if cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas:
            # re-spaced from the smallest training sigma up to the largest (the descending spacing, reversed)
            sig = np.flip(self._convert_sigmas(np.flip(train).astype(np.float64), n)).copy()
            ts = sigma_to_t(sig, np.log(train).astype(np.float64))  # float32 logs, as diffusers
            if cfg.use_karras_sigmas:
                ts = np.round(ts)
            last = float(np.float32(sig[-1]))
        elif cfg.use_flow_sigmas:  # diffusers' flow sigmas here are the (descending) sampling ones
            sig = np.flip(static_shift(cfg.flow_shift, 1.0 - np.linspace(1, 1 / cfg.num_train_timesteps, n + 1)))
            sig = sig[:-1].copy()
            ts = sig * cfg.num_train_timesteps
            last = float(np.float32(sig[-1]))
        else:
            sig = interp(ts, train.astype(np.float64))
            last = float(self._train_sigmas[top])  # the noisiest timestep's sigma
        ts = np.trunc(ts)
        _, first = np.unique(ts, return_index=True)
        # repeated timesteps are dropped from the timesteps only (the sigmas keep every entry, as diffusers')
        self._finish_setup(ts[np.sort(first)], sig, device, sigma_min=last)
        self.model_outputs = [None] * cfg.solver_order
        self._start_run()

    # DPM-Solver multistep's rows and step, on this schedule; the x0 term folded into the rows: an inverse step
    # raises sigma, so its x coefficient sigma_t / sigma_s > 1 nearly cancels the x0 term's (``_x0_row``); formed
    # as x0 first (the kernel's and the traced CPU step's order), a 4-step run ended 5.4x further from float64
    _fold_x0 = True
    _build_table = DPMSolverMultistepScheduler._build_table
    convert_model_output = DPMSolverMultistepScheduler.convert_model_output
    step = DPMSolverMultistepScheduler.step
