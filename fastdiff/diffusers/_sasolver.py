"""SASolverScheduler: the stochastic Adams predictor-corrector (Xue et al. 2023, "SA-Solver") as diffusers runs it.

diffusers' step corrects the previous step's sample with the new model output (Adams-Moulton), then predicts the
next one from it (Adams-Bashforth), both with the same stochastic exponential integrator. The corrector starts
from the previous corrected sample with the previous predictor's own sample coefficient and noise (the same
step, the same ``tau``), so corrected = previous output - previous predictor's gradient part + corrector's
gradient part: the previous noise cancels and the whole step is one fused pass on the previous output (``x``),
the current sample (``x_eval``, for the model output's conversion) and up to three earlier converted outputs
(history). The weights are ``fastdiff.solvers``' ``sa_solver_b_coeffs`` (data prediction),
``sa_solver_noise_coeffs`` (noise prediction) and ``sa_solver_order2_shift``.

Noise: diffusers draws a noise tensor at every step (used or not: its coefficient is 0 where ``tau`` is 0), from
the ``generator`` or, without one, from torch's global generator; its reference numbers (diffusers' own tests)
come from those global draws. So here both are drawn exactly as diffusers draws them and passed as ``noise=``
(one ``randn`` launch beside the fused pass); ``philox_noise = True`` on an instance makes a generator-less
step use the kernel's Philox instead (``_base``'s rule: one seed drawn per run).
Not provided: ``predictor_order=4`` (its corrector would need a fourth history tensor) and ``thresholding``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Union

import numpy as np
import torch

from ..solvers import sa_solver_b_coeffs, sa_solver_noise_coeffs, sa_solver_order2_shift, vp_x0_coefs
from ._base import KARRAS_COMPATIBLES, check_one_of, check_steps, result_dtype, rows, sigma_to_t
from ._compat import make_output, randn_tensor, register_to_config
from ._flow import static_shift
from ._multistep import _MultistepBase

__all__ = ["SASolverScheduler"]


def default_tau(t) -> float:
    """diffusers' default ``tau_func``: stochasticity 1 for timesteps in [200, 800], else 0 (a module function,
    so a scheduler pickles)."""
    return 1 if 200 <= t <= 800 else 0


class SASolverScheduler(_MultistepBase):
    """Stochastic Adams predictor-corrector sampling (SA-Solver), one fused pass per step.

    Same config keys, defaults and numbers as ``diffusers.SASolverScheduler`` (``predictor_order`` 1-3,
    ``corrector_order`` 1-4, data or noise prediction, Karras / exponential / beta / flow sigmas).

    Example:
        >>> s = SASolverScheduler()
        >>> s.set_timesteps(8)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    #: without a generator: False draws diffusers' global-generator noise, True the in-kernel Philox noise
    philox_noise: bool = False

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        predictor_order: int = 2,
        corrector_order: int = 2,
        prediction_type: str = "epsilon",
        tau_func: Optional[Callable] = None,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "data_prediction",
        lower_order_final: bool = True,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        lambda_min_clipped: float = -float("inf"),
        variance_type: Optional[str] = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        cfg = self.config
        check_one_of(cfg)
        for name, v, hi in (("predictor_order", predictor_order, 3), ("corrector_order", corrector_order, 4)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4:
                raise ValueError(f"{name} must be an int in 1..4, got {v!r}")
            if v > hi:
                raise NotImplementedError(f"{name}={v} is not provided by fastdiff.diffusers (at most {hi}: the "
                                          f"fused step holds three history tensors)")
        if thresholding:
            raise NotImplementedError("thresholding is not provided for SASolverScheduler by fastdiff.diffusers")
        if algorithm_type not in ("data_prediction", "noise_prediction"):
            raise NotImplementedError(f"{algorithm_type} is not implemented for {type(self)}")
        if tau_func is not None and not callable(tau_func):
            raise TypeError(f"tau_func must be callable or None, got {type(tau_func).__name__}")
        self._make_schedule(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        self._train_sigmas = self._sigma_table(ztsnr_fix=False)
        self._log_sigmas = np.log(self._train_sigmas)
        abar = self.alphas_cumprod
        self.alpha_t = torch.sqrt(abar)
        self.sigma_t = torch.sqrt(1 - abar)
        self.lambda_t = torch.log(self.alpha_t) - torch.log(self.sigma_t)
        self.sigmas = ((1 - abar) / abar) ** 0.5
        self.num_inference_steps = None
        T = num_train_timesteps
        self.timesteps = torch.from_numpy(np.linspace(0, T - 1, T, dtype=np.float32)[::-1].copy())
        self.tau_func = default_tau if tau_func is None else tau_func
        self.predict_x0 = algorithm_type == "data_prediction"
        self._reset_run()
        self._k = max(predictor_order, corrector_order - 1)
        self.model_outputs = [None] * self._k
        self.timestep_list = [None] * self._k
        self.lower_order_nums = 0
        self.last_sample = None

    # ------------------------------------------------------------------ set-up
    def set_timesteps(self, num_inference_steps: int = None, device=None) -> None:
        """Sampling timesteps and sigmas as diffusers builds them (the final sigma: the smallest training one,
        or the last re-spaced one repeated)."""
        cfg = self.config
        check_steps(num_inference_steps, cfg.num_train_timesteps, cap=False)
        n = num_inference_steps
        lam = self.lambda_t.flip(0)
        clipped = int(torch.searchsorted(lam, torch.tensor(float(cfg.lambda_min_clipped))))
        last = cfg.num_train_timesteps - clipped
        if cfg.timestep_spacing not in ("linspace", "leading", "trailing"):
            raise ValueError(f"{cfg.timestep_spacing} is not supported. Please make sure to choose one of "
                             f"'linspace', 'leading' or 'trailing'.")
        ts = self._multistep_timesteps(n, last=last)
        train = (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).numpy()  # float32, as diffusers
        if cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas:
            sig = self._convert_sigmas(np.flip(train).astype(np.float64), n)
            ts = sigma_to_t(sig, np.log(train).astype(np.float64))
            if cfg.use_karras_sigmas:
                ts = np.round(ts)
            sig = np.concatenate([sig, sig[-1:]])
        elif cfg.use_flow_sigmas:
            sig = np.flip(static_shift(cfg.flow_shift, 1.0 - np.linspace(1, 1 / cfg.num_train_timesteps, n + 1)))
            sig = sig[:-1].copy()
            ts = sig * cfg.num_train_timesteps
            sig = np.concatenate([sig, sig[-1:]])
        else:
            sig = np.interp(ts, np.arange(len(train)), train.astype(np.float64))
            sig = np.concatenate([sig, [float(train[0])]])
        self.sigmas = torch.from_numpy(sig.astype(np.float32))
        self.timesteps = torch.from_numpy(np.asarray(ts, dtype=np.float64)).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(ts)
        self._sig = self.sigmas.to(torch.float64).numpy()
        self._alpha, self._sigma, self._lam = self._alpha_sigma(self._sig)
        self._ts_host = [int(v) for v in self.timesteps.cpu().tolist()]
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._start: Optional[int] = None
        self._hist: List[torch.Tensor] = []  # previous converted model outputs, most recent first
        self._last_out: Optional[torch.Tensor] = None  # the previous step's output (the corrector's start)
        self.model_outputs = [None] * self._k
        self.timestep_list = [None] * self._k
        self.lower_order_nums = 0
        self.last_sample = None
        self._start_run()

    def _tau(self, i: int) -> float:
        return float(self.tau_func(torch.tensor(self._ts_host[i])))

    def _plan(self, start: int):
        """Per step from ``start``: (predictor order, corrector order used at this step) as diffusers counts."""
        cfg = self.config
        n = len(self._ts_host)
        out, lon, prev_c = [], 0, None
        for i in range(start, n):
            p = min(cfg.predictor_order, n - i) if cfg.lower_order_final else cfg.predictor_order
            c = min(cfg.corrector_order, n - i + 1) if cfg.lower_order_final else cfg.corrector_order
            this_p, this_c = min(p, lon + 1), min(c, lon + 2)
            out.append((this_p, prev_c))
            prev_c = this_c
            if lon < self._k:
                lon += 1
        return out

    def _update(self, i_s: int, i_t: int, nodes: List[int], tau: float, corrector: bool):
        """(sample coefficient, weights on the converted outputs at ``nodes`` (newest first), noise coefficient)
        of one stochastic Adams update from step index ``i_s`` to ``i_t``."""
        a, s, lam = self._alpha, self._sigma, self._lam
        h = lam[i_t] - lam[i_s]
        lams = [float(lam[j]) for j in nodes]
        if self.predict_x0:
            w = sa_solver_b_coeffs(float(s[i_t]), lams[::-1], float(lam[i_s]), float(lam[i_t]), tau)[::-1]
            if len(nodes) == 2:
                shift = sa_solver_order2_shift(float(a[i_t]), float(lam[i_s]), float(lam[i_t]), tau,
                                               None if corrector else float(lam[i_s - 1]), corrector)
                w = [w[0] + shift, w[1] - shift]
            x = np.exp(-(tau**2) * h) * s[i_t] / s[i_s]
            noise = s[i_t] * np.sqrt(max(0.0, 1 - np.exp(-2 * tau**2 * h)))
        else:
            w = sa_solver_noise_coeffs(float(a[i_t]), lams[::-1], float(lam[i_s]), float(lam[i_t]), tau)[::-1]
            x = a[i_t] / a[i_s]
            noise = tau * s[i_t] * np.sqrt(max(0.0, np.expm1(2 * h)))
        return float(x), [float(v) for v in w], float(noise)

    def _in_coefs(self, i: int):
        pt = self.config.prediction_type
        a, s = self._alpha[i], self._sigma[i]
        if self.predict_x0:
            if pt == "flow_prediction":
                return 1.0, -float(self._sig[i])
            if pt not in ("epsilon", "sample", "v_prediction"):
                raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, `sample`, "
                                 f"`v_prediction`, or `flow_prediction` for the SASolverScheduler.")
            return vp_x0_coefs(pt, a, s)
        if pt == "epsilon":
            return 0.0, 1.0
        if pt == "sample":
            return 1.0 / s, -a / s
        if pt == "v_prediction":
            return s, a
        raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, `sample`, or `v_prediction` "
                         f"for the SASolverScheduler.")

    def _build_table(self, key) -> torch.Tensor:
        start = key
        n = len(self._ts_host)
        plan = self._plan(start)
        per = []
        prev_pred = None  # (x coef, weights newest first) of the previous predictor
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i in range(n):
                if i < start:
                    per.append({})
                    continue
                p, c = plan[i - start]
                in_x, in_m = self._in_coefs(i)
                # the predictor from i to i + 1 on d_i, d_{i-1}, ...
                A, P, N = self._update(i, i + 1, [i - j for j in range(p)], self._tau(i), False)
                D = [0.0] * 5
                for j, w in enumerate(P):
                    D[j] += w
                x_coef = A
                if c is not None:  # the corrector of the previous step, from i - 1 to i, on d_i, d_{i-1}, ...
                    _, C, _ = self._update(i - 1, i, [i - j for j in range(c)], self._tau(i - 1), True)
                    _, P_prev = prev_pred
                    corr = [0.0] * 5
                    for j, w in enumerate(C):
                        corr[j] += w
                    for j, w in enumerate(P_prev):
                        corr[j + 1] -= w
                    D = [D[j] + A * corr[j] for j in range(5)]
                if any(D[4:]):
                    raise AssertionError("SA-Solver needs at most 3 history tensors here")
                per.append({"in_x": in_x, "in_m": in_m, "x": x_coef, "d": D[0], "h0": D[1], "h1": D[2],
                            "h2": D[3], "noise": N})
                prev_pred = (A, P)
        return self._table_rows(per)

    def convert_model_output(self, model_output: torch.Tensor, *args, sample: torch.Tensor = None, **kwargs):
        """The x0 (data prediction) or noise (noise prediction) estimate the solver works with (plain PyTorch;
        not used by ``step``)."""
        in_x, in_m = self._in_coefs(self._step_index)
        return in_x * sample + in_m * model_output

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` at the given training timesteps (one fused pass)."""
        abar = self.alphas_cumprod.to(torch.float64).numpy()
        idx = [int(t) for t in torch.as_tensor(timesteps).reshape(-1).cpu().tolist()]
        return self._encode(original_samples, noise, np.sqrt(abar), np.sqrt(1 - abar), idx)

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             generator=None, return_dict: bool = True):
        """Corrector of the previous step and predictor of this one: a single fused pass, no host-device sync."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        if self.config.variance_type in ("learned", "learned_range") and self.config.prediction_type == "epsilon":
            model_output = model_output[:, :3]
        i = self._begin_run(timestep)
        table = self._table(self._start, sample.device)
        if generator is None and not self.philox_noise:  # diffusers' own draw (see the module docstring)
            kw = {"noise": randn_tensor(tuple(model_output.shape), generator=None, device=model_output.device,
                                        dtype=model_output.dtype)}
        else:
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, i)
        dtype = result_dtype(sample, model_output)
        hist = tuple(self._hist)
        if self._last_out is None or i == self._start:
            x, extra = sample, {}
        else:
            x, extra = self._last_out, {"x_eval": sample}
        if hist:
            extra["history"] = hist
        prev, d = self._launch(x, model_output, table, i, out_dtype=sample.dtype, aux_dtype=dtype, **extra, **kw)
        self._hist = ([d] + self._hist)[: self._k]
        self._last_out = prev
        self.last_sample = sample
        self.lower_order_nums = min(self.lower_order_nums + 1, self._k)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)
