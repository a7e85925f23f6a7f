"""More multistep exponential-integrator solvers on the machinery of ``_multistep``: DEISMultistepScheduler.

DEIS keeps the previous noise estimates as history tensors of the fused step (written as its aux output), and its
weights are ``fastdiff.solvers.exp_lagrange_weights`` -- the same integrals as DPM-Solver's "heun" updates.
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np
import torch

from ..solvers import exp_lagrange_weights
from ._base import check_steps, interp, sigma_to_t
from ._compat import make_output, register_to_config
from ._flow import static_shift
from ._multistep import _MultistepBase, _x0_dtype

__all__ = ["DEISMultistepScheduler"]


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
                # eps now = (x - alpha_s d) / sigma_s, with d the x0 estimate the step forms
                ex, ed = 1.0 / s[i], -a[i] / s[i]
                per_step.append({"in_x": in_x, "in_m": in_m, "x": at / a[i] + m[0] * ex, "d": m[0] * ed,
                                 "h0": m[1], "h1": m[2], "aux_x": ex, "aux_d": ed})
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
