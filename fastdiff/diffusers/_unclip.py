"""UnCLIPScheduler: the DDPM ancestral step of unCLIP / Karlo (Ramesh et al. 2022), one fused pass each.

diffusers' UnCLIP scheduler is a DDPM step on the ``squaredcos_cap_v2`` schedule with two differences: the step
may jump to any earlier ``prev_timestep`` (the betas of the jump are ``1 - abar_t / abar_prev``), and the noise
std is ``exp(0.5 log(max(variance, 1e-20)))`` (``fixed_small_log``) or the model's own mix of log variances
(``learned_range``, as :func:`fastdiff.diffusers._ddim.learned_range_std`, DDPM's too). Rows are built for the
consecutive step ``t -> t - 1`` of every training timestep, for each step of the set schedule to the next,
and for any other ``(t, prev_timestep)`` pair on first use.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from ._base import _TABLE_ARITHMETIC, _element_position, _read_timestep, check_timestep_value, result_dtype, rows
from ._compat import make_output, register_to_config
from ._ddim import _DiscreteVPBase, learned_range_std

__all__ = ["UnCLIPScheduler"]

_VARIANCES = ("fixed_small_log", "learned_range")


class UnCLIPScheduler(_DiscreteVPBase):
    """The DDPM step of unCLIP (a ``prev_timestep`` may skip timesteps), Ho et al. (2020) / Ramesh et al. (2022).

    Same config keys, defaults, timesteps and numbers as ``diffusers.UnCLIPScheduler`` (``variance_type``
    ``fixed_small_log`` or ``learned_range``, ``prediction_type`` ``epsilon`` or ``sample``); ``step`` is one
    fused pass (with ``learned_range`` the model's per-element std scales the noise first, as DDPM's).

    Example:
        >>> s = UnCLIPScheduler()
        >>> s.set_timesteps(5)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> ts = s.timesteps
        >>> for i, t in enumerate(ts):
        ...     prev = ts[i + 1] if i + 1 < len(ts) else None
        ...     x = s.step(torch.zeros_like(x), t, x, prev_timestep=prev).prev_sample
    """

    order = 1
    _output_name = "UnCLIPSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        variance_type: str = "fixed_small_log",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
        beta_schedule: str = "squaredcos_cap_v2",
    ) -> None:
        if beta_schedule != "squaredcos_cap_v2":
            raise ValueError("UnCLIPScheduler only supports `beta_schedule`: 'squaredcos_cap_v2'")
        self._make_schedule(num_train_timesteps, 0.0001, 0.02, beta_schedule, None, False,
                            allowed=("squaredcos_cap_v2",))
        self.one = torch.tensor(1.0)
        self.num_inference_steps = None
        self.variance_type = variance_type
        self._reset_run()
        self._set_host_timesteps(np.arange(num_train_timesteps)[::-1].copy())

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """``num_inference_steps`` timesteps from ``num_train_timesteps - 1`` down to 0, rounded evenly spaced."""
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                or num_inference_steps < 2:
            raise ValueError(f"num_inference_steps must be an int of at least 2 (the spacing divides by "
                             f"num_inference_steps - 1), got {num_inference_steps!r}")
        self.num_inference_steps = num_inference_steps
        ratio = (self.config.num_train_timesteps - 1) / (num_inference_steps - 1)
        ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].copy().astype(np.int64)
        self._set_host_timesteps(ts, device)
        self._start_run()

    def _set_host_timesteps(self, ts: np.ndarray, device=None) -> None:
        super()._set_host_timesteps(ts, device)
        # (t, the schedule's next timestep) -> its row in the "schedule" table
        self._pairs = {(t, p): i for i, (t, p) in enumerate(zip(self._ts[:-1], self._ts[1:]))}
        self._log_var = {}

    # ------------------------------------------------------------------ rows
    def _rows_for(self, t: np.ndarray, prev: np.ndarray):
        """Rows of the steps ``t -> prev`` in diffusers' float32 arithmetic (float64 in that table mode), and
        the ``(min_log, max_log)`` of each for ``learned_range``."""
        cfg = self.config
        if _TABLE_ARITHMETIC[0] == "diffusers":
            wide, betas, alphas = torch.float32, self.betas, self.alphas
        else:
            wide, betas, alphas = torch.float64, self._schedule.betas, self._schedule.alphas
        abar = torch.as_tensor(self._abar64).to(wide)
        betas, alphas = betas.to(wide), alphas.to(wide)
        t_, p_ = torch.as_tensor(t, dtype=torch.int64), torch.as_tensor(prev, dtype=torch.int64)
        a_t = abar[t_]
        a_p = torch.where(p_ >= 0, abar[p_.clamp(min=0)], torch.ones((), dtype=wide))
        bp_t, bp_p = 1 - a_t, 1 - a_p
        consecutive = p_ == t_ - 1
        beta = torch.where(consecutive, betas[t_], 1 - a_t / a_p)
        alpha = torch.where(consecutive, alphas[t_], 1 - beta)
        if cfg.prediction_type == "epsilon":
            in_x, in_m = 1 / a_t**0.5, -(bp_t**0.5) / a_t**0.5
        elif cfg.prediction_type == "sample":
            in_x, in_m = torch.zeros_like(a_t), torch.ones_like(a_t)
        else:
            raise ValueError(f"prediction_type given as {cfg.prediction_type} must be one of `epsilon` or `sample` "
                             f"for the UnCLIPScheduler.")
        c_x0 = a_p**0.5 * beta / bp_t
        c_x = alpha**0.5 * bp_p / bp_t
        var = bp_p / bp_t * beta
        if self.variance_type == "learned_range":
            std = torch.ones_like(var)  # the model's std scales the noise before the pass
        elif self.variance_type == "fixed_small_log":
            std = torch.exp(0.5 * torch.log(torch.clamp(var, min=1e-20)))
        else:
            raise ValueError(f"variance_type given as {self.variance_type} must be one of `fixed_small_log` or "
                             f"`learned_range` for the UnCLIPScheduler.")
        f64 = lambda v: v.to(torch.float64).numpy()  # noqa: E731
        with np.errstate(divide="ignore"):
            logs = (f64(var.log()), f64(beta.log()))
        table = rows(in_x=f64(in_x), in_m=f64(in_m), out_d=f64(c_x0), out_x=f64(c_x),
                     out_noise=np.where(np.asarray(t) > 0, f64(std), 0.0))
        return table, logs

    def _get_variance(self, t: int, prev_timestep: Optional[int] = None,
                      predicted_variance: Optional[torch.Tensor] = None,
                      variance_type: Optional[str] = None) -> torch.Tensor:
        """diffusers' (private) variance of the step ``t -> prev_timestep`` (default ``t - 1``) as a float32
        tensor: ``fixed_small_log`` gives the posterior std, ``learned_range`` the log variance that mixes the
        posterior's and beta's logs by the model's ``(v + 1) / 2`` (unCLIP's form: no clamp before the log). Not
        used by ``step`` (its rows hold the same numbers); kept for code that calls it.

        Example:
            >>> round(float(UnCLIPScheduler()._get_variance(487)), 4)
            0.055
        """
        t = int(t)
        prev = t - 1 if prev_timestep is None else int(prev_timestep)
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else self.one
        beta = self.betas[t] if prev == t - 1 else 1 - abar_t / abar_prev
        variance = (1 - abar_prev) / (1 - abar_t) * beta
        kind = self.config.variance_type if variance_type is None else variance_type
        if kind == "fixed_small_log":
            return torch.exp(0.5 * torch.log(torch.clamp(variance, min=1e-20)))
        if kind == "learned_range":
            frac = (predicted_variance + 1) / 2
            return frac * beta.log() + (1 - frac) * variance.log()
        return variance

    def _build_table(self, key) -> torch.Tensor:
        if key[0] == "consecutive":
            t = np.arange(self.config.num_train_timesteps)
            prev = t - 1
        elif key[0] == "schedule":
            t = np.asarray(self._ts, dtype=np.int64)
            prev = np.append(t[1:], t[-1] - 1)
        else:
            t, prev = np.asarray([key[1]]), np.asarray([key[2]])
        table, self._log_var[key] = self._rows_for(t, prev)
        return table

    # ------------------------------------------------------------------ the step
    def _host_int(self, value, name: str) -> int:
        """``value`` (a timestep) on the host: an element of ``timesteps`` from the host copy, a number or CPU
        tensor directly, another device tensor read back (one sync)."""
        pos = _element_position(value, self._timesteps)
        if pos is not None:
            return self._ts[pos]
        v = self._host_value(value)
        if v is None:
            v = _read_timestep(value)
        check_timestep_value(v)
        if not 0 <= v < self.config.num_train_timesteps and not (name == "prev_timestep" and v < 0):
            raise ValueError(f"{name} {v} is outside [0, {self.config.num_train_timesteps}) (num_train_timesteps)")
        return int(v)

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             prev_timestep: Optional[Union[int, torch.Tensor]] = None, generator: Optional[torch.Generator] = None,
             return_dict: bool = True):
        """One step ``t -> prev_timestep`` (default ``t - 1``): a single fused pass, no host-device sync for
        timesteps taken from ``self.timesteps`` (or numbers)."""
        traced = torch.compiler.is_compiling()
        if traced and isinstance(timestep, torch.Tensor):
            # traced, a tensor timestep has no host value: the step counter; a traced loop iterates
            # self.timesteps from the begin index, else from its start (index 0, what eager finds for
            # timesteps[0]: the first match, as for any host value)
            i = self._step_index if self._step_index is not None else (self._begin_index or 0)
            t = self._ts[i]
        elif isinstance(timestep, torch.Tensor) and _element_position(timestep, self._timesteps) is None \
                and not timestep.is_cpu:
            i = self._index(timestep)  # a device timestep from elsewhere: the step counter, as DDPM
            t = self._ts[i]
        else:
            t = self._host_int(timestep, "timestep")
            i = self._ts_pos.get(t)
        if prev_timestep is None:
            p = t - 1
        elif traced and isinstance(prev_timestep, torch.Tensor):  # the pipelines' timesteps[i + 1]
            p = self._traced_schedule_timestep(prev_timestep, self._ts, None if i is None else i + 1, "prev_timestep")
        else:
            p = self._host_int(prev_timestep, "prev_timestep")
        if p >= t:
            raise ValueError(f"prev_timestep ({p}) must be smaller than timestep ({t})")
        if p == t - 1:
            key, row = ("consecutive",), t
        elif (t, p) in self._pairs:
            key, row = ("schedule",), self._pairs[(t, p)]
        else:
            key, row = ("pair", t, p), 0
        predicted_variance = None
        if model_output.shape[1] == sample.shape[1] * 2 and self.variance_type == "learned_range":
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        table = self._table(key, sample.device)
        kw = {}
        if t > 0:
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, t)
            if self.variance_type == "learned_range":
                if predicted_variance is None:
                    raise TypeError("variance_type='learned_range' needs the model's predicted variance: "
                                    "model_output must have twice the sample's channels")
                noise = kw.get("noise")
                if noise is None:
                    from ..random import philox_normal

                    noise = philox_normal(model_output.shape, kw["seed"], kw["stream"], device=model_output.device,
                                          dtype=model_output.dtype)
                min_log, max_log = (float(v[row]) for v in self._log_var[key])
                kw = {"noise": noise * learned_range_std(predicted_variance, min_log, max_log)}
        dtype = result_dtype(sample, model_output)
        clip = float(self.config.clip_sample_range) if self.config.clip_sample else None
        prev, x0 = self._launch(sample, model_output, table, row, out_dtype=dtype, aux_dtype=dtype, clip=clip, **kw)
        if i is not None:
            self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("UnCLIPSchedulerOutput", prev, x0)
