"""LCMScheduler and TCDScheduler: few-step samplers for consistency-distilled models, each step one fused pass.

Both walk a coarse "origin" grid of the training timesteps (the distillation schedule), and both step as

    e = skip_x * x_t + skip_d * x0          (the step's second output)
    x_prev = renoise * e + noise_std * z    (z standard normal; no noise on the run's last step)

(``fastdiff.solvers.consistency_step_coefs``). Latent Consistency Models (Luo et al. 2023): ``e`` is the
consistency function's boundary-conditioned output ``c_skip x + c_out x0`` (``solvers.consistency_boundary``),
re-noised to the next timestep. Trajectory Consistency Distillation (Zheng et al. 2024): ``e`` is the estimate
noised to the intermediate timestep ``s = floor((1 - gamma) * t_prev)`` (``eta`` of ``step``), then moved to
``t_prev`` by the forward process; ``gamma = 0`` is deterministic, ``gamma = 1`` is LCM-like.

Each step's row is built once per ``set_timesteps`` (and, for TCD, per value of ``eta``) in diffusers' float32
arithmetic; ``step`` picks it by the step counter and never reads a device tensor back.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Union

import numpy as np
import torch

from ..solvers import consistency_boundary, consistency_step_coefs
from ._base import check_steps, f32_like_diffusers, result_dtype, rows
from ._compat import make_output, register_to_config
from ._ddim import DDPMScheduler, _DiscreteVPBase

__all__ = ["LCMScheduler", "TCDScheduler", "origin_timesteps"]

logger = logging.getLogger(__name__)


def origin_timesteps(num_train_timesteps: int, original_steps: int, strength: float = 1.0,
                     every_timestep: bool = False) -> np.ndarray:
    """The distillation grid (ascending int64): ``k, 2k, ..., (original_steps * strength) k`` minus 1, with
    ``k = num_train_timesteps // original_steps``; with ``every_timestep`` all training timesteps below
    ``num_train_timesteps * strength`` (what diffusers' TCDScheduler uses when ``original_inference_steps`` is
    passed to ``set_timesteps``).

    Example:
        >>> origin_timesteps(1000, 4).tolist()
        [249, 499, 749, 999]
    """
    if every_timestep:
        return np.arange(0, int(num_train_timesteps * strength), dtype=np.int64)
    k = num_train_timesteps // original_steps
    return np.arange(1, int(original_steps * strength) + 1, dtype=np.int64) * k - 1


class _ConsistencyBase(_DiscreteVPBase):
    """LCM / TCD: the origin-grid timesteps, custom timesteps, ``strength``; a stateful step counter."""

    _beta_schedules = ("linear", "scaled_linear", "squaredcos_cap_v2")
    #: TCD: an explicit ``original_inference_steps`` selects every training timestep as the origin grid
    _explicit_original_is_every_timestep = False

    # LCM's and TCD's config keys and defaults are the same: one __init__ (diffusers reads each class's
    # inherited signature for its config)
    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        original_inference_steps: int = 50,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        timestep_scaling: float = 10.0,
        rescale_betas_zero_snr: bool = False,
    ):
        self._consistency_init()

    def _consistency_init(self) -> None:
        self._common_init(self.config)
        cfg = self.config
        self._final_abar = 1.0 if cfg.set_alpha_to_one else float(self._abar64[0])
        self.final_alpha_cumprod = torch.tensor(1.0) if cfg.set_alpha_to_one else self.alphas_cumprod[0]
        self.custom_timesteps = False

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      original_inference_steps: Optional[int] = None, timesteps: Optional[List[int]] = None,
                      strength: float = 1.0) -> None:
        """Timesteps evenly spaced (by index) on the origin grid of ``original_inference_steps`` (default: the
        config's), or custom descending ``timesteps``; ``strength < 1`` keeps the tail (img2img)."""
        cfg = self.config
        T = cfg.num_train_timesteps
        if num_inference_steps is None and timesteps is None:
            raise ValueError("Must pass exactly one of `num_inference_steps` or `custom_timesteps`.")
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")
        original_steps = original_inference_steps if original_inference_steps is not None \
            else cfg.original_inference_steps
        every = self._explicit_original_is_every_timestep and original_inference_steps is not None
        if not every:
            if isinstance(original_steps, bool) or not isinstance(original_steps, (int, np.integer)) \
                    or original_steps < 1:
                raise ValueError(f"original_inference_steps must be a positive int, got {original_steps!r}")
            if original_steps > T:
                raise ValueError(f"`original_steps`: {original_steps} cannot be larger than "
                                 f"`self.config.train_timesteps`: {T} as the unet model trained with this scheduler "
                                 f"can only handle maximal {T} timesteps.")
        origin = origin_timesteps(T, original_steps, strength, every_timestep=every)
        if timesteps is not None:
            ts = [int(t) for t in timesteps]
            if not ts:
                raise ValueError("timesteps must hold at least one timestep")
            if any(b >= a for a, b in zip(ts, ts[1:])):
                raise ValueError("`custom_timesteps` must be in descending order.")
            if ts[0] >= T:
                raise ValueError(f"`timesteps` must start before `self.config.train_timesteps`: {T}.")
            if ts[-1] < 0:
                raise ValueError(f"timesteps must be >= 0, got {ts[-1]}")
            on_grid = set(origin.tolist())
            off = [t for t in ts[1:] if t not in on_grid]
            if strength == 1.0 and ts[0] != T - 1:
                logger.warning(f"The first timestep on the custom timestep schedule is {ts[0]}, not "
                               f"`self.config.num_train_timesteps - 1`: {T - 1}. You may get unexpected results.")
            if off:
                logger.warning(f"The custom timestep schedule contains timesteps not on the original "
                               f"training/distillation timestep schedule: {off}. You may get unexpected results.")
            if len(ts) > original_steps:
                logger.warning(f"The custom timestep schedule has {len(ts)} timesteps, more than the "
                               f"{original_steps} of the training schedule. You may get unexpected results.")
            n = len(ts)
            start = max(n - min(int(n * strength), n), 0)
            arr = np.asarray(ts[start * self.order:], dtype=np.int64)
            self.custom_timesteps = True
        else:
            check_steps(num_inference_steps, T, cap=True)
            if len(origin) // num_inference_steps < 1:
                raise ValueError(f"The combination of `original_steps x strength`: {original_steps} x {strength} is "
                                 f"smaller than `num_inference_steps`: {num_inference_steps}. Make sure to either "
                                 f"reduce `num_inference_steps` to a value smaller than "
                                 f"{int(original_steps * strength)} or increase `strength` to a value higher than "
                                 f"{float(num_inference_steps / original_steps)}.")
            if num_inference_steps > original_steps:
                raise ValueError(f"`num_inference_steps`: {num_inference_steps} cannot be larger than "
                                 f"`original_inference_steps`: {original_steps} because the final timestep schedule "
                                 f"will be a subset of the `original_inference_steps`-sized initial timestep "
                                 f"schedule.")
            desc = origin[::-1]
            picks = np.floor(np.linspace(0, len(desc), num=num_inference_steps, endpoint=False)).astype(np.int64)
            arr = desc[picks].copy()
            n = num_inference_steps
            self.custom_timesteps = False
        self._set_host_timesteps(arr, device)
        self.num_inference_steps = n
        self._start_run()

    previous_timestep = DDPMScheduler.previous_timestep

    # ------------------------------------------------------------------ the step
    def _row_index(self, timestep):
        """``(table key suffix, row, step index)``: the counter's row, or a one-row table when a host timestep
        differs from the schedule's timestep at the counter (diffusers reads alpha_bar at the value passed)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        i = self._current_index(timestep)
        value = self._host_value(timestep)
        if value is not None and int(value) != self._ts[i]:
            t_val = int(value)
            if not 0 <= t_val < self.config.num_train_timesteps:
                raise ValueError(f"timestep {timestep} is not in [0, {self.config.num_train_timesteps}) "
                                 f"(num_train_timesteps)")
            return ("one", t_val, i), 0, i
        return ("rows",), i, i

    def _step_pair(self, model_output, timestep, sample, generator, key, stochastic: bool):
        """The fused step: ``(prev_sample, second output)``; noise drawn (as diffusers draws it) unless this
        is the run's last step or ``stochastic`` is False."""
        suffix, row, i = self._row_index(timestep)
        table = self._table((*key, *suffix), sample.device)
        dtype = result_dtype(sample, model_output)
        kw = {}
        if stochastic and i != self.num_inference_steps - 1:
            kw = self._noise_kwargs(model_output.shape, model_output.device, dtype, generator, i)
        prev, second = self._launch(sample, model_output, table, row, out_dtype=dtype, aux_dtype=dtype,
                                    clip=self._clip(), **kw)
        self._step_index = i + 1
        return prev, second

    def _grid(self, key):
        """``(t, idx)``: the timesteps and step indices of the table ``key`` (every step, or the one step of a
        ``(..., "one", t, i)`` key)."""
        if "one" in key:
            pos = key.index("one")
            return np.array([key[pos + 1]], dtype=np.int64), np.array([key[pos + 2]])
        return np.asarray(self._ts, dtype=np.int64), np.arange(len(self._ts))


class LCMScheduler(_ConsistencyBase):
    """Multistep consistency sampling of Luo et al. (2023), "Latent Consistency Models".

    Same config keys, defaults and numbers as ``diffusers.LCMScheduler``; ``step`` is one fused pass that writes
    both ``prev_sample`` and ``denoised``. With a ``generator`` the re-noising draw is diffusers' own; without
    one it is in-kernel Philox noise.

    Example:
        >>> s = LCMScheduler()
        >>> s.set_timesteps(4)
        >>> s.timesteps.tolist()
        [999, 759, 499, 259]
        >>> x = torch.randn(1, 4, 8, 8)
        >>> out = s.step(torch.zeros_like(x), s.timesteps[0], x, generator=torch.Generator().manual_seed(0))
        >>> out.prev_sample.shape, out.denoised.shape
        (torch.Size([1, 4, 8, 8]), torch.Size([1, 4, 8, 8]))
    """

    order = 1
    _output_name = "LCMSchedulerOutput"


    def get_scalings_for_boundary_condition_discrete(self, timestep):
        """``(c_skip, c_out)`` at ``timestep`` (``fastdiff.solvers.consistency_boundary``, sigma_data = 0.5)."""
        self.sigma_data = 0.5
        return consistency_boundary(timestep, self.config.timestep_scaling, self.sigma_data)

    def _build_table(self, key) -> torch.Tensor:
        t, idx = self._grid(key)
        r = f32_like_diffusers
        ts = self._ts
        n_ts = len(ts)
        prev = np.array([ts[i + 1] if i + 1 < n_ts else t[k] for k, i in enumerate(idx)], dtype=np.int64)
        abar = self._abar64
        a_p = np.where(prev >= 0, abar[np.maximum(prev, 0)], self._final_abar)
        # diffusers' pipelines pass tensor timesteps: the boundary scalings are float32 there
        c_skip, c_out = (r(c) for c in consistency_boundary(t.astype(np.float64), self.config.timestep_scaling))
        last = idx == self.num_inference_steps - 1
        renoise = np.where(last, 1.0, r(np.sqrt(a_p)))
        std = np.where(last, 0.0, r(np.sqrt(r(1.0 - a_p))))
        in_x, in_m = self._x0_rows(t)
        return rows(in_x=in_x, in_m=in_m, **consistency_step_coefs(c_skip, c_out, renoise, std))

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One LCM step: the denoised estimate, re-noised to the next timestep (a single fused pass)."""
        prev, denoised = self._step_pair(model_output, timestep, sample, generator, ("lcm",), stochastic=True)
        if not return_dict:
            return (prev, denoised)
        return make_output("LCMSchedulerOutput", prev, denoised)


class TCDScheduler(_ConsistencyBase):
    """Strategic stochastic sampling of Zheng et al. (2024), "Trajectory Consistency Distillation".

    Same config keys, defaults and numbers as ``diffusers.TCDScheduler`` (which, like it, takes but does not
    apply ``clip_sample`` / ``thresholding``); ``step(..., eta=gamma)`` is one fused pass writing ``prev_sample``
    and ``pred_noised_sample``.

    Example:
        >>> s = TCDScheduler()
        >>> s.set_timesteps(4)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> out = s.step(torch.zeros_like(x), s.timesteps[0], x, eta=0.3, generator=torch.Generator().manual_seed(0))
        >>> out.pred_noised_sample.shape
        torch.Size([1, 4, 8, 8])
    """

    order = 1
    _output_name = "TCDSchedulerOutput"
    _thresholds = False
    _explicit_original_is_every_timestep = True


    def _clip(self) -> Optional[float]:
        return None  # diffusers' TCD step neither clips nor thresholds x0

    def _build_table(self, key) -> torch.Tensor:
        eta = key[1]
        t, idx = self._grid(key)
        r = f32_like_diffusers
        ts = self._ts
        n_ts = len(ts)
        prev = np.array([ts[i + 1] if i + 1 < n_ts else 0 for i in idx], dtype=np.int64)
        # s = floor((1 - gamma) * t_prev), formed in float32 as diffusers' tensor arithmetic does
        s = np.floor(np.float32(1.0 - eta) * prev.astype(np.float32)).astype(np.int64)
        abar = self._abar64
        a_p = np.where(prev >= 0, abar[np.maximum(prev, 0)], self._final_abar)
        a_s = abar[s]
        in_x, in_m = self._x0_rows(t)
        # the model's epsilon from x and x0 (exact for every prediction type; at zero terminal SNR with the
        # same clamped alpha_bar that the x0 row uses, so it is the model output itself for epsilon prediction)
        a_t = abar[t]
        if self.config.prediction_type == "epsilon":
            a_t = np.maximum(a_t, 2.0**-24)
        sig_t = np.sqrt(1.0 - a_t)
        skip_x = r(np.sqrt(r(1.0 - a_s))) / sig_t
        skip_d = r(np.sqrt(a_s)) - r(np.sqrt(r(1.0 - a_s))) * np.sqrt(a_t) / sig_t
        noisy = (eta > 0) & (idx != self.num_inference_steps - 1)
        ratio = r(a_p / a_s)
        renoise = np.where(noisy, r(np.sqrt(ratio)), 1.0)
        std = np.where(noisy, r(np.sqrt(np.maximum(r(1.0 - ratio), 0.0))), 0.0)
        return rows(in_x=in_x, in_m=in_m, **consistency_step_coefs(skip_x, skip_d, renoise, std))

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             eta: float = 0.3, generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One TCD step with stochasticity ``eta`` (gamma in [0, 1]; a single fused pass)."""
        if isinstance(eta, bool) or not isinstance(eta, (int, float, np.integer, np.floating)):
            raise TypeError(f"eta (gamma) must be a float in [0, 1], got {type(eta).__name__}")
        eta = float(eta)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta (gamma) must be in [0, 1], got {eta}")
        prev, noised = self._step_pair(model_output, timestep, sample, generator, ("tcd", eta),
                                       stochastic=eta > 0)
        if not return_dict:
            return (prev, noised)
        return make_output("TCDSchedulerOutput", prev, noised)
