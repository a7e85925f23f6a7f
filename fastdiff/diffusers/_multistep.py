"""Multistep exponential-integrator solvers: DPMSolverMultistepScheduler and UniPCMultistepScheduler.

Both keep the previous x0 estimates as history tensors of the fused step. The
order used at each step depends only on the step index and the index the run
started from (``lower_order_nums`` counts steps since the start), so the
coefficient table of a run is built once per start index, in float64.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._base import KARRAS_COMPATIBLES, DiscreteBetaMixin, FusedSchedulerBase, check_one_of, check_steps, interp, rows, \
    sigma_to_t, spaced_timesteps
from ..solvers import dpm_solver_coefs, dpm_third_order_differences as _third_order_differences
from ..solvers import unipc_rhos, vp_x0_coefs
from ._compat import make_output, register_to_config
from ._flow import static_shift, stretch_to_terminal, time_shift

__all__ = ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "multistep_orders", "check_solver_types"]

#: DPM-Solver's algorithm types: "++" solves for the x0 estimate (Lu et al. 2022b), the plain ones for the noise
#: estimate (Lu et al. 2022a); "sde-" adds the SDE variant's noise
_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")
#: each algorithm's update form in ``solvers.dpm_solver_coefs``
_FORMS = {"dpmsolver++": "x0", "sde-dpmsolver++": "x0-sde", "dpmsolver": "eps", "sde-dpmsolver": "eps-sde"}


def check_solver_types(scheduler, algorithm_type: Optional[str], solver_type: str,
                       algorithms: Sequence[str] = _ALGORITHMS, final_sigmas_type: Optional[str] = None) -> None:
    """diffusers' checks of DPM-Solver's option names, in its order, for every class built on it: ``"deis"``
    runs as ``"dpmsolver++"`` and ``"logrho"`` / ``"bh1"`` / ``"bh2"`` as ``"midpoint"`` (written back into the
    config, as diffusers does); any other name outside ``algorithms`` / ``("midpoint", "heun")`` raises
    ``NotImplementedError``; then, when ``final_sigmas_type`` is given, a final sigma of zero is refused for
    every algorithm but the "++" ones (the name as passed: "deis" too). ``algorithm_type=None``: a class without
    that option (the cosine one)."""
    if algorithm_type is not None:
        if algorithm_type == "deis":
            scheduler.register_to_config(algorithm_type="dpmsolver++")
        elif algorithm_type not in algorithms:
            raise NotImplementedError(f"{algorithm_type} is not implemented for {type(scheduler).__name__}")
    if solver_type in ("logrho", "bh1", "bh2"):
        scheduler.register_to_config(solver_type="midpoint")
    elif solver_type not in ("midpoint", "heun"):
        raise NotImplementedError(f"{solver_type} is not implemented for {type(scheduler).__name__}")
    if final_sigmas_type == "zero" and algorithm_type not in ("dpmsolver++", "sde-dpmsolver++"):
        raise ValueError(f"`final_sigmas_type` {final_sigmas_type} is not supported for `algorithm_type` "
                         f"{algorithm_type}. Please choose `sigma_min` instead.")


def _x0_dtype(model_output: torch.Tensor) -> torch.dtype:
    """The x0 estimates' dtype (diffusers keeps them in at least float32), without a promote_types call when it
    is the model output's."""
    md = model_output.dtype
    return md if md is torch.float32 or md is torch.float64 else torch.promote_types(torch.float32, md)


def _vp_from_sigma(s: np.ndarray):
    """VE sigma -> (alpha_t, sigma_t, lambda_t) of the VP process (float64; lambda = +inf at sigma 0)."""
    s = np.asarray(s, dtype=np.float64)
    alpha = 1.0 / np.sqrt(s**2 + 1.0)
    sigma = s * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)
    return alpha, sigma, lam


def multistep_orders(n: int, start: int, solver_order: int, lower_order_final: bool, euler_at_final: bool,
                     final_sigmas_type: Optional[str]) -> List[int]:
    """The order DPM-Solver (and DEIS, EDM's DPM-Solver++) uses at each of ``n`` steps of a run that starts at
    index ``start``: rising from 1 after the start (diffusers' warm-up), lowered at the end of short runs
    (``lower_order_final`` under 15 steps) and before a final sigma of 0.

    Example:
        >>> multistep_orders(5, 0, 3, True, False, "zero")
        [1, 2, 3, 2, 1]
    """
    out, lon = [], 0
    for i in range(n):
        if i < start:
            out.append(1)
            continue
        lof = i == n - 1 and (euler_at_final or (lower_order_final and n < 15) or final_sigmas_type == "zero")
        los = i == n - 2 and lower_order_final and n < 15
        if solver_order == 1 or lon < 1 or lof:
            k = 1
        elif solver_order == 2 or lon < 2 or los:
            k = 2
        else:
            k = 3
        out.append(k)
        lon = min(lon + 1, solver_order)
    return out


class _MultistepBase(DiscreteBetaMixin, FusedSchedulerBase):
    """Set-up shared by DPM-Solver++ and UniPC (integer timesteps over VE sigmas)."""

    init_noise_sigma = 1.0
    #: fold the x0 term of data-form rows into their x and model-output coefficients (see ``_x0_row``)
    _fold_x0 = False

    def _init_common(self, cfg) -> None:
        check_one_of(cfg)
        if cfg.prediction_type not in ("epsilon", "sample", "v_prediction", "flow_prediction"):
            raise NotImplementedError(f"prediction_type {cfg.prediction_type!r} is not supported by "
                                      f"fastdiff.diffusers")
        if getattr(cfg, "final_sigmas_type", "zero") not in ("zero", "sigma_min"):
            raise ValueError(f"`final_sigmas_type` must be one of 'zero', or 'sigma_min', but got "
                             f"{cfg.final_sigmas_type}")
        zsnr = getattr(cfg, "rescale_betas_zero_snr", False)
        self._make_schedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule,
                            cfg.trained_betas, zsnr)
        self._train_sigmas = self._sigma_table(ztsnr_fix=zsnr)
        self._log_sigmas = np.log(self._train_sigmas)
        abar = self.alphas_cumprod.to(torch.float64)
        self.alpha_t = abar.sqrt().to(torch.float32)
        self.sigma_t = (1 - abar).sqrt().to(torch.float32)
        self.lambda_t = (torch.log(abar.sqrt()) - torch.log((1 - abar).sqrt())).to(torch.float32)
        self.sigmas = torch.from_numpy(self._train_sigmas.astype(np.float32))
        self.num_inference_steps = None
        T = cfg.num_train_timesteps
        self.timesteps = torch.from_numpy(np.linspace(0, T - 1, T, dtype=np.float32)[::-1].copy())
        self._reset_run()

    def _multistep_timesteps(self, n: int, last: Optional[int] = None) -> np.ndarray:
        cfg = self.config
        ts = spaced_timesteps(n, cfg.num_train_timesteps, cfg.timestep_spacing, cfg.steps_offset, extra=1, last=last)
        return np.round(ts) if cfg.timestep_spacing == "linspace" else ts

    def _finish_setup(self, ts: np.ndarray, sig: np.ndarray, device, sigma_min: Optional[float] = None) -> None:
        """The run's timesteps and sigmas; the final sigma is 0, or with final_sigmas_type "sigma_min" (DEIS:
        always) the smallest training sigma (``sigma_min`` overrides it: UniPC and DEIS repeat their last
        re-spaced sigma there)."""
        if getattr(self.config, "final_sigmas_type", "sigma_min") == "sigma_min":
            last = self._train_sigmas[0] if sigma_min is None else sigma_min
        else:
            last = 0.0
        self.sigmas = torch.from_numpy(np.concatenate([sig, [last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(np.asarray(ts, dtype=np.float64)).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(ts)
        self._sig = self.sigmas.to(torch.float64).numpy()
        self._alpha, self._sigma, self._lam = self._alpha_sigma(self._sig)
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._seed = None
        self._start: Optional[int] = None
        self._hist: List[torch.Tensor] = []  # previous x0 estimates, most recent first
        self.lower_order_nums = 0

    def _alpha_sigma(self, sig: np.ndarray):
        """(alpha_t, sigma_t, lambda_t) of the run's sigmas: the VP process of VE sigmas, or with flow sigmas
        the rectified-flow path x = (1 - sigma) x0 + sigma eps."""
        if not getattr(self.config, "use_flow_sigmas", False):
            return _vp_from_sigma(sig)
        sig = np.asarray(sig, dtype=np.float64)
        alpha = 1.0 - sig
        with np.errstate(divide="ignore"):
            lam = np.log(alpha) - np.log(sig)
        return alpha, sig, lam

    def _flow_timesteps(self, n: int, sigmas=None, mu: Optional[float] = None):
        """UniPC's flow sigmas (Wan, SkyReels-V2, Cosmos configs): ``n`` times from 1 to 1/T (or ``sigmas``),
        shifted statically by ``flow_shift`` or dynamically by ``mu``, optionally stretched to ``shift_terminal``;
        the timesteps are ``sigma * T``. Returns (timesteps, sigmas without the final one)."""
        cfg = self.config
        T = cfg.num_train_timesteps
        if cfg.use_karras_sigmas:
            train = self._train_sigmas.astype(np.float32)
            sig = np.asarray(self._convert_sigmas(np.flip(train).astype(np.float64), n), dtype=np.float64)
            sig = sig / (sig + 1.0)
            return sig * T, sig
        sig = np.linspace(1, 1 / T, n + 1)[:-1] if sigmas is None else np.asarray(sigmas, dtype=np.float64)
        if cfg.use_dynamic_shifting:
            sig = time_shift(cfg.time_shift_type, mu, 1.0, sig)
        else:
            sig = static_shift(cfg.flow_shift, sig)
        if getattr(cfg, "shift_terminal", None):
            sig = stretch_to_terminal(sig, cfg.shift_terminal)
        sig = np.array(sig, dtype=np.float64)
        if abs(sig[0] - 1) < 1e-6:
            sig[0] -= 1e-6  # diffusers: keeps log(alpha) finite at the first step
        return sig * T, sig

    def _missing_timestep_index(self, value: float) -> int:
        return len(self.timesteps) - 1  # diffusers: an unknown timestep maps to the last step

    def _x0_coefs(self, i: int):
        if self.config.prediction_type == "flow_prediction":
            return 1.0, -self._sig[i]  # x0 = x - sigma * velocity (diffusers reads the run's sigma itself)
        return vp_x0_coefs(self.config.prediction_type, self._alpha[i], self._sigma[i])

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Identity (the solvers see the VP sample unscaled)."""
        return sample

    def _begin_run(self, timestep) -> int:
        i = self._current_index(timestep)
        if self._start is None:
            self._start = i
        return i

    def _push_history(self, x0: torch.Tensor, keep: int) -> None:
        if keep > 0:
            self._hist = ([x0] + self._hist)[:keep]
        self.lower_order_nums = min(self.lower_order_nums + 1, self.config.solver_order)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """``alpha_t x0 + sigma_t noise`` at the timesteps' step indices (one fused pass)."""
        idx = self._indices_for_add_noise(timesteps)
        a, s, _ = self._alpha_sigma(self.sigmas.to(torch.float64).numpy())
        return self._encode(original_samples, noise, a, s, idx)

    def _orders_cached(self, start: int) -> List[int]:
        return self._host_cached(("orders", start), "_orders", start)

    def _orders(self, start: int) -> List[int]:
        """DPM-Solver's (and DEIS's) order per step (``multistep_orders``)."""
        cfg = self.config
        return multistep_orders(len(self.timesteps), start, cfg.solver_order, cfg.lower_order_final,
                                getattr(cfg, "euler_at_final", False), getattr(cfg, "final_sigmas_type", None))

    def _eps_row(self, i: int, in_x: float, in_m: float, cx: float, c_eps: float) -> dict:
        """Row entries of a noise-form update ``cx * x + c_eps * eps + ...`` at step ``i`` whose noise estimate
        ``eps = (x - alpha_s x0) / sigma_s`` is also the step's aux output (the next steps' history). The step reads
        eps directly (``d = eps``, its two coefficients folded in float64 here: for an epsilon model it is the model
        output itself, free of the cancellation of forming x0 first at small sigma); with thresholding, which
        clamps x0, ``d`` stays the x0 estimate and eps is formed from it."""
        ex, ed = 1.0 / self._sigma[i], -self._alpha[i] / self._sigma[i]
        if getattr(self.config, "thresholding", False):
            return {"in_x": in_x, "in_m": in_m, "x": cx + c_eps * ex, "d": c_eps * ed, "aux_x": ex, "aux_d": ed}
        return {"in_x": ex + ed * in_x, "in_m": ed * in_m, "x": cx, "d": c_eps}

    def _x0_row(self, in_x: float, in_m: float, cx: float, c_x0: float) -> dict:
        """Row entries of a data-form update ``cx * x + c_x0 * x0 + ...`` whose x0 estimate ``in_x * x + in_m * m``
        is also the step's aux output (the next steps' history). With ``_fold_x0`` (and no thresholding, which
        clamps x0 first) the x0 term is folded into the x and model-output coefficients in float64 here, so no
        path forms x0 before weighing it: where ``cx`` and ``c_x0 * in_x`` nearly cancel (an inverse run's first
        step is 69.2 x - 68.4 x0 at 4 steps), forming x0 in float32 first costs that factor in rounding."""
        if self._fold_x0 and not getattr(self.config, "thresholding", False):
            return {"in_x": in_x, "in_m": in_m, "x": cx + c_x0 * in_x, "m": c_x0 * in_m, "d": 0.0}
        return {"in_x": in_x, "in_m": in_m, "x": cx, "d": c_x0}

    def _table_rows(self, per_step: Sequence[Dict[str, float]]) -> torch.Tensor:
        """Stack per-step coefficient dicts into a ``step_coefs`` table (missing entries are 0)."""
        def col(name, default=0.0):
            return np.array([r.get(name, default) for r in per_step], dtype=np.float64)

        hist = [col(f"h{k}") for k in range(3)]
        return rows(in_x=col("in_x"), in_m=col("in_m", 1.0), out_x=col("x"), out_m=col("m"), out_d=col("d"),
                    out_h=hist, out_noise=col("noise"), aux_x=col("aux_x"), aux_d=col("aux_d", 1.0))


class DPMSolverMultistepScheduler(_MultistepBase):
    """DPM-Solver++ multistep, Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling..." (and its SDE variant).

    Same config keys, defaults and numbers as ``diffusers.DPMSolverMultistepScheduler`` for
    ``algorithm_type`` "dpmsolver++" / "sde-dpmsolver++" / "dpmsolver" / "sde-dpmsolver", ``solver_order`` 1-3, midpoint/heun,
    Karras/exponential sigmas, ``lower_order_final``, ``euler_at_final``, ``final_sigmas_type``;
    ``step`` is one fused pass reading up to two previous x0 estimates.

    Example:
        >>> s = DPMSolverMultistepScheduler(use_karras_sigmas=True)
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
        use_lu_lambdas: Optional[bool] = False,
        use_flow_sigmas: Optional[bool] = False,
        flow_shift: Optional[float] = 1.0,
        final_sigmas_type: Optional[str] = "zero",
        lambda_min_clipped: float = -float("inf"),
        variance_type: Optional[str] = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
    ):
        check_solver_types(self, algorithm_type, solver_type, final_sigmas_type=final_sigmas_type)
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        self._init_common(self.config)
        self.model_outputs = [None] * solver_order

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None, mu: Optional[float] = None,
                      timesteps: Optional[List[int]] = None) -> None:
        """Sampling timesteps/sigmas (diffusers' spacings, Karras/exponential, or custom)."""
        cfg = self.config
        if num_inference_steps is not None:
            # integer timesteps: more steps than training timesteps repeat one (h = 0, NaN coefficients)
            check_steps(num_inference_steps, cfg.num_train_timesteps, cap=True)
        if mu is not None:
            if not (cfg.use_dynamic_shifting and cfg.time_shift_type == "exponential"):
                raise ValueError("mu needs use_dynamic_shifting=True and time_shift_type='exponential'")
            self.register_to_config(flow_shift=float(np.exp(mu)))  # diffusers: mu sets flow_shift = e^mu
            cfg = self.config
        if num_inference_steps is None and timesteps is None:
            raise ValueError("Must pass exactly one of `num_inference_steps` or `timesteps`.")
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")
        if timesteps is not None and (cfg.use_karras_sigmas or cfg.use_exponential_sigmas):
            raise ValueError("Cannot use `timesteps` with `config.use_karras_sigmas = True` or "
                             "`config.use_exponential_sigmas = True`")
        if timesteps is not None and cfg.use_lu_lambdas:
            raise ValueError("Cannot use `timesteps` with `config.use_lu_lambdas = True`")
        if timesteps is not None and cfg.use_beta_sigmas:
            raise ValueError("Cannot set `timesteps` with `config.use_beta_sigmas = True`.")
        if timesteps is not None:
            ts = np.asarray(timesteps).astype(np.int64).astype(np.float64)
            n = len(ts)
        else:
            n = num_inference_steps
            lam = self.lambda_t.flip(0)
            clipped = int(torch.searchsorted(lam, torch.tensor(float(cfg.lambda_min_clipped))))
            ts = self._multistep_timesteps(n, last=cfg.num_train_timesteps - clipped)
        train = self._train_sigmas.astype(np.float32)  # diffusers works from float32 sigmas here
        if cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas:
            sig = self._convert_sigmas(np.flip(train).astype(np.float64), n)
            ts = sigma_to_t(sig, np.log(train).astype(np.float64))  # float32 logs, as diffusers
            if cfg.use_karras_sigmas and cfg.beta_schedule != "squaredcos_cap_v2":
                ts = np.round(ts)
        elif cfg.use_flow_sigmas and not cfg.use_lu_lambdas:
            # DPM-Solver's flow sigmas (Sana): 1 - linspace(1, 1/T, n + 1), shifted, descending, the last dropped
            sig = np.flip(static_shift(cfg.flow_shift, 1.0 - np.linspace(1, 1 / cfg.num_train_timesteps, n + 1)))
            sig = sig[:-1].copy()
            ts = sig * cfg.num_train_timesteps
        elif cfg.use_lu_lambdas:
            # Lu et al. (2022b): uniform in log-SNR between the training end points (diffusers' float32 logs)
            log_train = np.log(train)
            top, bottom = float(log_train[-1]), float(log_train[0])
            sig = np.exp(top + np.linspace(0.0, 1.0, n) * (bottom - top))
            ts = sigma_to_t(sig, log_train.astype(np.float64))
            if cfg.beta_schedule != "squaredcos_cap_v2":
                ts = np.round(ts)
        else:
            sig = interp(ts, train.astype(np.float64))
        self._finish_setup(np.trunc(ts), sig, device)
        self.model_outputs = [None] * cfg.solver_order
        self._start_run()

    def _build_table(self, key) -> torch.Tensor:
        """Rows of DPM-Solver's multistep update (``solvers.dpm_solver_coefs``). The x0 forms ("dpmsolver++",
        "sde-dpmsolver++") keep x0 estimates as history; the noise forms ("dpmsolver", "sde-dpmsolver") keep noise
        estimates eps = (x - alpha_s x0) / sigma_s, written as the step's aux output."""
        start = key
        cfg = self.config
        form = _FORMS[cfg.algorithm_type]
        eps_form = form.startswith("eps")
        a, s, lam = self._alpha, self._sigma, self._lam
        per_step = []
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i, k in enumerate(self._orders(start)):
                in_x, in_m = self._x0_coefs(i)
                h = lam[i + 1] - lam[i]
                c = dpm_solver_coefs(form, h, a[i + 1], s[i + 1], a[i], s[i])
                # x_t = c["x"] * x + (m0, m1, m2) . (current estimate, one step back, two back) (+ noise)
                m = np.array([c["d0"], 0.0, 0.0])
                if k == 2:
                    r0 = (lam[i] - lam[i - 1]) / h
                    m += c["d1_mid" if cfg.solver_type == "midpoint" else "d1"] * np.array([1.0, -1.0, 0.0]) / r0
                elif k == 3:
                    if form == "eps-sde":
                        raise NotImplementedError("algorithm_type='sde-dpmsolver' has no third-order update "
                                                  "(as in diffusers); use solver_order <= 2")
                    d1, d2 = _third_order_differences(lam, i, h)
                    m += c["d1"] * d1 + c["d2"] * d2
                if eps_form:
                    per_step.append({**self._eps_row(i, in_x, in_m, c["x"], m[0]), "h0": m[1], "h1": m[2],
                                     "noise": c["noise"]})
                else:
                    per_step.append({**self._x0_row(in_x, in_m, c["x"], m[0]), "h0": m[1], "h1": m[2],
                                     "noise": c["noise"]})
        return self._table_rows(per_step)

    def convert_model_output(self, model_output: torch.Tensor, *args, sample: torch.Tensor = None, **kwargs):
        """The x0 estimate diffusers' solver works with (plain PyTorch; not used by ``step``)."""
        in_x, in_m = self._x0_coefs(self._step_index)
        return in_x * sample + in_m * model_output

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, variance_noise: Optional[torch.Tensor] = None,
             return_dict: bool = True):
        """One multistep update (a single fused pass; no host-device sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        if self.config.variance_type in ("learned", "learned_range") and self.config.prediction_type == "epsilon":
            # a model with learned variances returns [noise; variance] channels; the solver needs the noise only
            # (diffusers keeps the first three channels)
            model_output = model_output[:, :3]
        i = self._begin_run(timestep)
        table = self._table(self._start, sample.device)
        k = self._orders_cached(self._start)[i]
        kw = {}
        if self.config.algorithm_type.startswith("sde-"):
            kw = self._noise_kwargs(model_output.shape, model_output.device, torch.float32, generator, i,
                                    variance_noise=None if variance_noise is None
                                    else variance_noise.to(torch.float32))
        keep = self.config.solver_order - 1
        aux_dtype = _x0_dtype(model_output) if keep > 0 else None
        prev, x0 = self._launch(sample, model_output, table, i, out_dtype=model_output.dtype, aux_dtype=aux_dtype,
                                history=tuple(self._hist[: k - 1]), **kw)
        self._push_history(x0, keep)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)


class UniPCMultistepScheduler(_MultistepBase):
    """UniPC predictor-corrector, Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework...".

    Same config keys, defaults and numbers as ``diffusers.UniPCMultistepScheduler`` with
    ``predict_x0=True`` (bh1/bh2, orders 1-3, ``lower_order_final``, ``disable_corrector``,
    Karras/exponential sigmas). The corrector and the next predictor run as one fused
    pass: the corrector's input (diffusers' ``last_sample``) is recovered exactly from
    the sample passed in and the stored x0 estimates instead of being kept.

    Example:
        >>> s = UniPCMultistepScheduler()
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
        predict_x0: bool = True,
        solver_type: str = "bh2",
        lower_order_final: bool = True,
        disable_corrector: List[int] = [],  # noqa: B006 - diffusers' default, never mutated
        solver_p=None,
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        use_flow_sigmas: Optional[bool] = False,
        flow_shift: Optional[float] = 1.0,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        final_sigmas_type: Optional[str] = "zero",
        rescale_betas_zero_snr: bool = False,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
        sigma_min: Optional[float] = None,
        sigma_max: Optional[float] = None,
        shift_terminal: Optional[float] = None,
    ):
        if solver_type not in ("bh1", "bh2"):
            if solver_type in ("midpoint", "heun", "logrho"):
                self.register_to_config(solver_type="bh2")
            else:
                raise NotImplementedError(f"{solver_type} is not implemented for {type(self).__name__}")
        if not predict_x0:
            raise NotImplementedError("predict_x0=False is not supported by fastdiff.diffusers")
        if solver_p is not None:
            raise NotImplementedError("solver_p is not supported by fastdiff.diffusers")
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        self.predict_x0 = predict_x0
        self.solver_p = None
        self.disable_corrector = list(disable_corrector)
        self._init_common(self.config)
        self.model_outputs = [None] * solver_order
        self.timestep_list = [None] * solver_order
        self.last_sample = None

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      sigmas: Optional[List[float]] = None, mu: Optional[float] = None) -> None:
        """Sampling timesteps/sigmas (diffusers' spacings or Karras/exponential)."""
        cfg = self.config
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("`mu` must be passed when `use_dynamic_shifting` is set to be `True`")
        if sigmas is not None:
            if not cfg.use_flow_sigmas:
                raise ValueError("Passing `sigmas` is only supported when `use_flow_sigmas=True`. "
                                 "Please set `use_flow_sigmas=True` during scheduler initialization.")
            num_inference_steps = len(sigmas)
        else:
            check_steps(num_inference_steps, cfg.num_train_timesteps, cap=True)  # integer timesteps
        n = num_inference_steps
        ts = self._multistep_timesteps(n)
        train = self._train_sigmas.astype(np.float32)
        if cfg.use_flow_sigmas and not (cfg.use_exponential_sigmas or cfg.use_beta_sigmas):
            ts, sig = self._flow_timesteps(n, sigmas, mu)
            # with final_sigmas_type "sigma_min" UniPC repeats its last re-spaced sigma (as diffusers)
            self._finish_setup(np.trunc(ts), sig, device, sigma_min=float(np.float32(sig[-1])))
        elif cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas:
            sig = self._convert_sigmas(np.flip(train).astype(np.float64), n)
            ts = sigma_to_t(sig, np.log(train).astype(np.float64))  # float32 logs, as diffusers
            if cfg.use_karras_sigmas:
                ts = np.round(ts)
            self._finish_setup(np.trunc(ts), sig, device, sigma_min=float(np.float32(sig[-1])))
        else:
            self._finish_setup(np.trunc(ts), interp(ts, train.astype(np.float64)), device)
        self.model_outputs = [None] * cfg.solver_order
        self.last_sample = None
        self._start_run()

    def _plan(self, start: int):
        """Per step: (this_order, corrector order or 0)."""
        cfg = self.config
        n = len(self.timesteps)
        plan, lon, prev_order = [], 0, 0
        for i in range(n):
            if i < start:
                plan.append((1, 0))
                continue
            use_corr = i > start and (i - 1) not in self.disable_corrector
            order = min(cfg.solver_order, n - i) if cfg.lower_order_final else cfg.solver_order
            order = min(order, lon + 1)
            plan.append((order, prev_order if use_corr else 0))
            prev_order = order
            lon = min(lon + 1, cfg.solver_order)
        return plan

    def _uni(self, i_t: int, i_s0: int, hist_idx: Sequence[int], order: int, corrector: bool):
        """Coefficients of one UniPC update (bh, x0 form) as A (on x), c0 (on m0), ck (on m_k), ct (on model_t)."""
        a, s, lam = self._alpha, self._sigma, self._lam
        h = lam[i_t] - lam[i_s0]
        rks = [(lam[j] - lam[i_s0]) / h for j in hist_idx[:order - 1]] + [1.0]
        B_h, rhos_p, rhos_c = unipc_rhos(-h, rks, order, self.config.solver_type)
        A = s[i_t] / s[i_s0]
        c0 = -a[i_t] * np.expm1(-h)
        ck = np.zeros(len(rks) - 1)
        ct = 0.0
        rhos = rhos_c if corrector else rhos_p
        if corrector:
            ct = -a[i_t] * B_h * rhos[-1]
            c0 -= ct  # D1_t = model_t - m0
        for k in range(len(rks) - 1):  # D1_k = (m_k - m0) / r_k
            w = -a[i_t] * B_h * rhos[k] / rks[k]
            ck[k] += w
            c0 -= w
        return A, c0, ck, ct

    def _build_table(self, key) -> torch.Tensor:
        start = key
        plan = self._plan(start)
        per_step = []
        prev_pred = None  # the previous predictor: (A, coef on its d, coefs on its history)
        for i, (order, corr) in enumerate(plan):
            in_x, in_m = self._x0_coefs(i)
            # symbols: x (sample passed in), d (x0 now), H[k] (x0 of step i-1-k)
            coef = {"x": 0.0, "d": 0.0, "H": np.zeros(4)}
            if corr and prev_pred is not None:
                # diffusers' last_sample, recovered: x = A_p * last + cd_p * H0 + sum_k ch_p[k] * H[k+1]
                A_p, cd_p, ch_p = prev_pred
                Ac, c0c, ckc, ctc = self._uni(i, i - 1, [i - 1 - (k + 1) for k in range(corr - 1)], corr, True)
                # corrected sample xc = Ac * last + c0c * H0 + sum ckc[k] * H[k+1] + ctc * d
                xc_x = Ac / A_p
                xc_H = np.zeros(4)
                xc_H[0] = c0c - Ac * cd_p / A_p
                for k, v in enumerate(ch_p):
                    xc_H[k + 1] -= Ac * v / A_p
                for k, v in enumerate(ckc):
                    xc_H[k + 1] += v
                xc_d = ctc
            else:
                xc_x, xc_H, xc_d = 1.0, np.zeros(4), 0.0
            # predictor from xc: x_next = Ap * xc + c0p * d + sum ckp[k] * H[k]
            Ap, c0p, ckp, _ = self._uni(i + 1, i, [i - (k + 1) for k in range(order - 1)], order, False)
            coef["x"] = Ap * xc_x
            coef["d"] = Ap * xc_d + c0p
            H = Ap * xc_H
            for k, v in enumerate(ckp):
                H[k] += v
            if np.any(H[3:] != 0):
                raise AssertionError("UniPC needs at most 3 history tensors")
            prev_pred = (Ap, c0p, ckp)
            per_step.append({"in_x": in_x, "in_m": in_m, "x": coef["x"], "d": coef["d"], "h0": H[0], "h1": H[1],
                             "h2": H[2]})
        # the predictor's A is the xc -> x_next factor; rows of steps before the start are unused
        return self._table_rows(per_step)

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True):
        """Corrector (for the previous step) + predictor, as a single fused pass; no host-device sync."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        i = self._begin_run(timestep)
        table = self._table(self._start, sample.device)
        keep = self.config.solver_order
        aux_dtype = _x0_dtype(model_output)
        order, corr = self._host_cached(("plan", self._start), "_plan", self._start)[i]
        prev, x0 = self._launch(sample, model_output, table, i, out_dtype=sample.dtype, aux_dtype=aux_dtype,
                                history=tuple(self._hist[: max(corr, order - 1)]))
        self._push_history(x0, keep)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)
