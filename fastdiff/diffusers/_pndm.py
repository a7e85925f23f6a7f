"""PNDMScheduler: pseudo numerical methods (Liu et al. 2022), Stable Diffusion 1.x's default scheduler.

The method works on the noise estimate: a Runge-Kutta warm-up (PRK, four evaluations per step, skipped with
``skip_prk_steps``) and then the linear multistep PLMS, each step moved along the "transfer" of the VP process.
Every update is linear in the step's start sample, the current model output and up to three earlier model outputs,
so each ``step`` is one fused pass: the earlier outputs are the step's history tensors and the weights of a run are
one table, built once per run from the step counter (the state diffusers' class keeps), in float64.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ._base import KARRAS_COMPATIBLES, f32_like_diffusers, rows
from ._compat import make_output, register_to_config
from ._ddim import _DiscreteVPBase

__all__ = ["PNDMScheduler"]

#: PLMS weights on (current, 1, 2, 3 outputs back) by the number of outputs kept (Adams-Bashforth 1-4)
_PLMS = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
#: PRK: the fourth stage combines the group's four outputs with the classical RK4 weights
_RK4 = (1 / 6, 1 / 3, 1 / 3, 1 / 6)


class PNDMScheduler(_DiscreteVPBase):
    """Liu et al. (2022), "Pseudo Numerical Methods for Diffusion Models on Manifolds" (PNDM / PLMS).

    Same config keys, defaults and numbers as ``diffusers.PNDMScheduler``; ``step`` is one fused pass. Like
    diffusers' class it is stateful: steps must be taken in ``timesteps`` order (the step counter, not the
    ``timestep`` argument, decides the update; the timestep values used are the schedule's own, so no step reads
    a device tensor on the host).

    Example:
        >>> s = PNDMScheduler(skip_prk_steps=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        >>> s.set_timesteps(10)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "SchedulerOutput"
    _beta_schedules = ("linear", "scaled_linear", "squaredcos_cap_v2")

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        skip_prk_steps: bool = False,
        set_alpha_to_one: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        self._make_schedule(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas,
                            allowed=self._beta_schedules)
        self._final_abar = 1.0 if set_alpha_to_one else float(self._abar64[0])
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.pndm_order = 4
        self.num_inference_steps = None
        self._reset_run()
        self._ts: List[int] = []
        self.prk_timesteps = None
        self.plms_timesteps = None
        self._timesteps = None  # diffusers: None until set_timesteps
        self._reset_state()

    def _reset_state(self) -> None:
        self.counter = 0
        self.ets: List[torch.Tensor] = []  # diffusers' name: earlier model outputs, oldest first
        self.cur_sample: Optional[torch.Tensor] = None
        self._group: List[torch.Tensor] = []  # the current PRK group's outputs

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """PRK then PLMS timesteps (or PLMS only with ``skip_prk_steps``), as diffusers lays them out."""
        cfg = self.config
        n, T = int(num_inference_steps), cfg.num_train_timesteps
        if n < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps}")
        self.num_inference_steps = n
        if cfg.timestep_spacing == "linspace":
            base = np.linspace(0, T - 1, n).round().astype(np.int64)
        elif cfg.timestep_spacing == "leading":
            base = (np.arange(0, n) * (T // n)).round().astype(np.int64) + cfg.steps_offset
        elif cfg.timestep_spacing == "trailing":
            base = np.round(np.arange(T, 0, -T / n))[::-1].astype(np.int64) - 1
        else:
            raise ValueError(f"{cfg.timestep_spacing} is not supported. Please make sure to choose one of "
                             f"'linspace', 'leading' or 'trailing'.")
        if cfg.skip_prk_steps:
            prk = np.array([], dtype=np.int64)
            plms = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].copy()
        else:
            order = self.pndm_order
            if n < order:  # the PRK warm-up takes `order` timesteps (diffusers fails here on numpy broadcasting)
                raise ValueError(f"num_inference_steps must be at least {order} for PNDM's Runge-Kutta warm-up "
                                 f"(skip_prk_steps=False), got {n}; pass more steps or skip_prk_steps=True")
            prk = np.array(base[-order:]).repeat(2) + np.tile(np.array([0, T // n // 2]), order)
            prk = prk[:-1].repeat(2)[1:-1][::-1].copy()
            plms = base[:-3][::-1].copy()
        self.prk_timesteps, self.plms_timesteps = prk, plms
        self._prk_host = [int(t) for t in prk]
        ts = np.concatenate([prk, plms]).astype(np.int64)
        self._ts = [int(t) for t in ts]
        self.timesteps = torch.from_numpy(ts).to(device)
        self._tables.clear()
        self._host_tables.clear()
        self._reset_state()

    # ------------------------------------------------------------------ the update
    def _plan(self, prk: bool, c: int, n_ets: int, t: int) -> Tuple[int, int, Tuple[float, ...], bool]:
        """Step ``c`` of diffusers' state machine with ``n_ets`` outputs kept and passed timestep ``t``:
        ``(t used, previous t, weights on (current, 1, 2, 3 outputs back), starts from the stored sample)``."""
        ratio = self.config.num_train_timesteps // self.num_inference_steps
        if prk:
            prev = t - (0 if c % 2 else ratio // 2)
            t_used = self._prk_host[c // 4 * 4]  # (a host list: a traced step reads no numpy array)
            return t_used, prev, (tuple(reversed(_RK4)) if c % 4 == 3 else (1.0,)), c % 4 != 0
        kept = min(n_ets, 4) if c == 1 else min(n_ets, 3) + 1
        if c == 1 and kept == 1:  # the second PLMS step re-takes the first from the stored sample, outputs averaged
            return t + ratio, t, (0.5, 0.5), True
        if c == 1:
            return t + ratio, t, _PLMS[kept], False
        return t, t - ratio, _PLMS[kept], False

    def _standard_plans(self) -> List[tuple]:
        """The plan of every step of a run taken in order (the run's table has one row per step)."""
        return self._host_cached(("plans",), "_run_plans")

    def _run_plans(self) -> List[tuple]:
        plans, n_ets = [], 0
        n_prk = 0 if self.config.skip_prk_steps else len(self.prk_timesteps)
        for c, t in enumerate(self._ts):
            prk = c < n_prk
            plans.append(self._plan(prk, c, n_ets, t))
            if (prk and c % 4 == 0) or (not prk and c != 1):
                n_ets = n_ets + 1 if prk else min(n_ets, 3) + 1
        return plans

    def _rows(self, plans) -> torch.Tensor:
        r = f32_like_diffusers  # each quantity rounded where diffusers computes it in float32 (the default)
        abar, v_pred = self._abar64, self.config.prediction_type == "v_prediction"
        cols: Dict[str, list] = {k: [] for k in ("out_x", "out_m", "h0", "h1", "h2")}
        for t, prev, weights, _ in plans:
            a_t = abar[t]
            a_p = abar[prev] if prev >= 0 else self._final_abar
            b_t, b_p = r(1.0 - a_t), r(1.0 - a_p)
            sample_coef = r(np.sqrt(r(a_p / a_t)))
            denom = r(r(a_t * r(np.sqrt(b_p))) + r(np.sqrt(r(r(a_t * b_t) * a_p))))
            eps_coef = -r(a_p - a_t) / denom
            # v prediction: the combined output v becomes eps = sqrt(a_t) v + sqrt(1 - a_t) x
            on_out = eps_coef * (np.sqrt(a_t) if v_pred else 1.0)
            cols["out_x"].append(sample_coef + (eps_coef * np.sqrt(b_t) if v_pred else 0.0))
            w = list(weights) + [0.0] * (4 - len(weights))
            cols["out_m"].append(on_out * w[0])
            for k in range(3):
                cols[f"h{k}"].append(on_out * w[k + 1])
        zeros = np.zeros(len(plans))
        return rows(in_x=zeros, in_m=np.ones_like(zeros), out_x=np.array(cols["out_x"]),
                    out_m=np.array(cols["out_m"]), out_h=[np.array(cols[f"h{k}"]) for k in range(3)])

    def _build_table(self, key) -> torch.Tensor:
        return self._rows(self._standard_plans() if key == "run" else [key[1]])

    def _timestep_value(self, timestep, c: int) -> int:
        """The passed timestep's value when it is on the host; the schedule's own for a device tensor (no read)."""
        value = self._host_value(timestep)
        if value is not None:
            return int(value)
        if c >= len(self._ts):
            raise ValueError(f"all {len(self._ts)} steps of the run were taken; call set_timesteps again")
        return self._ts[c]

    def _take(self, prk: bool, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool):
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        if self.config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type given as {self.config.prediction_type} must be one of `epsilon` or "
                             f"`v_prediction`")
        c = self.counter
        plan = self._plan(prk, c, len(self.ets), self._timestep_value(timestep, c))
        weights, from_stored = plan[2], plan[3]
        if prk:
            if c % 4 == 0:
                self._group = []
                self.cur_sample = sample
            history = tuple(reversed(self._group)) if c % 4 == 3 else ()
            x = self.cur_sample if self.cur_sample is not None else sample
        else:
            if c != 1:
                self.ets = self.ets[-3:] + [model_output]
            # the outputs the weights apply to, newest first: diffusers' second step (c == 1) appends nothing, so
            # past its averaging case it combines earlier outputs only (the newest then takes the output's slot)
            newest = [model_output, *self.ets[::-1]] if c == 1 and from_stored else self.ets[::-1]
            outputs = newest[: len(weights)]
            model_output, history = outputs[0], tuple(outputs[1:])
            x = self.cur_sample if from_stored else sample
        standard = self._standard_plans()
        if c < len(standard) and standard[c] == plan:
            table, row = self._table("run", sample.device), c
        else:  # a step outside the run's order (diffusers' tests set ets by hand): a one-row table of its own
            table, row = self._table(("one", plan), sample.device), 0
        prev, _ = self._launch(x, model_output, table, row, out_dtype=model_output.dtype, history=history)
        if prk:
            self._group.append(model_output)
            if c % 4 == 0:
                self.ets.append(model_output)
        elif len(self.ets) == 1 and c == 0:
            self.cur_sample = sample
        elif len(self.ets) == 1 and c == 1:
            self.cur_sample = None
        self.counter = c + 1
        self._step_index = self.counter
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True):
        """One PRK stage or PLMS step (a single fused pass; no host-device sync)."""
        prk = self.prk_timesteps is not None and self.counter < len(self.prk_timesteps) \
            and not self.config.skip_prk_steps
        return self._take(prk, model_output, timestep, sample, return_dict)

    def step_prk(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
                 return_dict: bool = True):
        """A Runge-Kutta warm-up stage (diffusers' ``step_prk``)."""
        return self._take(True, model_output, timestep, sample, return_dict)

    def step_plms(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
                  return_dict: bool = True):
        """A linear multistep step (diffusers' ``step_plms``)."""
        if not self.config.skip_prk_steps and len(self.ets) < 3:
            raise ValueError(f"{self.__class__} can only be run AFTER scheduler has been run in 'prk' mode for at "
                             f"least 12 iterations. See: https://github.com/huggingface/diffusers/blob/main/src/"
                             f"diffusers/pipelines/ddpm/pipeline_ddpm.py for more information.")
        return self._take(False, model_output, timestep, sample, return_dict)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
