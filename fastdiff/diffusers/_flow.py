"""FlowMatchEulerDiscreteScheduler: Euler steps on a rectified-flow ODE, one fused pass each."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ..random import philox_normal
from ..schedules import FlowMatchingSchedule
from ..ops.step import fused_step
from ..solvers import churn_gamma
from . import _base
from ._base import DiscreteBetaMixin, FusedSchedulerBase, _element_position, check_one_of, check_steps, rows
from ._compat import make_output, register_to_config
from ._euler import HeunStages

__all__ = ["FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler", "FlowMapEulerDiscreteScheduler"]



def static_shift(shift: float, t: np.ndarray) -> np.ndarray:
    """The resolution shift of flow-matching times, ``shift t / (1 + (shift - 1) t)`` (Esser et al. 2024, SD3)."""
    return shift * t / (1 + (shift - 1) * t)


def time_shift(kind: str, mu: float, sigma: float, t: np.ndarray) -> np.ndarray:
    """Dynamic shift of flow-matching times: ``"exponential"`` ``e^mu / (e^mu + (1/t - 1)^sigma)`` or ``"linear"``
    ``mu / (mu + (1/t - 1)^sigma)``."""
    if kind == "exponential":
        return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)
    return mu / (mu + (1 / t - 1) ** sigma)


def stretch_to_terminal(t: np.ndarray, terminal: float) -> np.ndarray:
    """Stretch descending flow times so that the last equals ``terminal``."""
    one_minus_z = 1 - t
    scale = one_minus_z[-1] / (1 - terminal)
    return 1 - one_minus_z / scale

class FlowMatchEulerDiscreteScheduler(DiscreteBetaMixin, FusedSchedulerBase):
    """Euler sampling of rectified flow, Esser et al. (2024) "Scaling Rectified Flow Transformers..." (SD3).

    Same config keys, defaults and numbers as ``diffusers.FlowMatchEulerDiscreteScheduler``
    (static ``shift``, dynamic shifting with ``mu``, ``shift_terminal``, Karras/exponential
    sigmas, ``invert_sigmas``, ``stochastic_sampling``); ``step`` is one fused pass.

    Example:
        >>> s = FlowMatchEulerDiscreteScheduler(shift=3.0)
        >>> s.set_timesteps(10)
        >>> x = torch.randn(1, 16, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _output_name = "FlowMatchEulerDiscreteSchedulerOutput"
    _compatibles: list = []
    init_noise_sigma = 1.0

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: Optional[float] = 0.5,
        max_shift: Optional[float] = 1.15,
        base_image_seq_len: Optional[int] = 256,
        max_image_seq_len: Optional[int] = 4096,
        invert_sigmas: bool = False,
        shift_terminal: Optional[float] = None,
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        time_shift_type: str = "exponential",
        stochastic_sampling: bool = False,
    ):
        check_one_of(self.config)
        if time_shift_type not in ("exponential", "linear"):
            raise ValueError("`time_shift_type` must either be 'exponential' or 'linear'.")
        self._shift = shift
        # training sigmas: shifted unless the shift is dynamic (fastdiff.schedules, float64)
        self._flow = FlowMatchingSchedule(num_train_timesteps, shift=1.0 if use_dynamic_shifting else shift)
        sig = self._flow.train_sigmas.to(torch.float32)
        self.sigmas = sig
        self.timesteps = sig * num_train_timesteps
        self.sigma_min = float(sig[-1])
        self.sigma_max = float(sig[0])
        self.num_inference_steps = None
        self._reset_run()
        self._set_run(self.sigmas.to(torch.float64).numpy(), self.timesteps)

    @property
    def shift(self) -> float:
        """The static timestep shift (``set_shift`` changes it)."""
        return self._shift

    def set_shift(self, shift: float) -> None:
        self._shift = shift

    def _set_run(self, sig64: np.ndarray, timesteps: torch.Tensor) -> None:
        self._sig = sig64
        self.timesteps = timesteps
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._seed = None

    def time_shift(self, mu: float, sigma: float, t: np.ndarray) -> np.ndarray:
        """Dynamic (resolution-dependent) shift: exponential ``e^mu / (e^mu + (1/t - 1)^sigma)`` or linear."""
        return time_shift(self.config.time_shift_type, mu, sigma, t)

    def stretch_shift_to_terminal(self, t: np.ndarray) -> np.ndarray:
        """Stretch so that the last sigma equals ``shift_terminal``."""
        return stretch_to_terminal(t, self.config.shift_terminal)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      sigmas: Optional[List[float]] = None, mu: Optional[float] = None,
                      timesteps: Optional[List[float]] = None) -> None:
        """Sampling sigmas (shifted, then 0 appended) and timesteps ``sigma * num_train_timesteps``."""
        cfg = self.config
        T = cfg.num_train_timesteps
        if num_inference_steps is not None:
            check_steps(num_inference_steps, T, cap=False)  # continuous sigmas: any count, as diffusers
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("`mu` must be passed when `use_dynamic_shifting` is set to be `True`")
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise ValueError("`sigmas` and `timesteps` should have the same length")
        if num_inference_steps is None:
            num_inference_steps = len(sigmas) if sigmas is not None else len(timesteps)
        self.num_inference_steps = num_inference_steps
        given_ts = timesteps is not None
        if given_ts:
            timesteps = np.asarray(timesteps).astype(np.float32)
        if sigmas is None:
            if timesteps is None:
                timesteps = np.linspace(self.sigma_max * T, self.sigma_min * T, num_inference_steps)
            sig = np.asarray(timesteps, dtype=np.float64) / T
        else:
            sig = np.asarray(sigmas).astype(np.float32).astype(np.float64)
            num_inference_steps = len(sig)
        if cfg.use_dynamic_shifting:
            sig = self.time_shift(mu, 1.0, sig)
        else:
            sig = static_shift(self.shift, sig)
        if cfg.shift_terminal:
            sig = self.stretch_shift_to_terminal(sig)
        conv = self._convert_sigmas(np.asarray(sig, dtype=np.float64), num_inference_steps)
        if conv is not None:
            sig = conv
        sig32 = torch.from_numpy(np.asarray(sig).astype(np.float32)).to(device=device)
        ts = torch.from_numpy(timesteps).to(dtype=torch.float32, device=device) if given_ts else sig32 * T
        if cfg.invert_sigmas:
            sig32 = 1.0 - sig32
            ts = sig32 * T
            sig32 = torch.cat([sig32, torch.ones(1, device=sig32.device)])
        else:
            sig32 = torch.cat([sig32, torch.zeros(1, device=sig32.device)])
        self.sigmas = sig32
        self._set_run(sig32.detach().cpu().to(torch.float64).numpy(), ts)
        self._start_run()

    def _build_table(self, key) -> torch.Tensor:
        s, s_next = self._sig[:-1], self._sig[1:]
        if self.config.stochastic_sampling:
            # x0 = x - sigma * v; x_next = (1 - next) * x0 + next * noise
            return rows(in_x=1.0, in_m=-s, out_d=1.0 - s_next, out_noise=s_next)
        return rows(in_x=1.0, in_m=0.0, out_x=1.0, out_m=s_next - s)  # x + dt * v

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Identity (rectified flow needs no input scaling)."""
        return sample

    def scale_noise(self, sample: torch.Tensor, timestep, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Forward process ``sigma * noise + (1 - sigma) * sample`` at the timesteps (one fused pass)."""
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.as_tensor(timestep, dtype=torch.float32)
        idx = self._indices_for_add_noise(timestep)
        s = self.sigmas.detach().cpu().to(torch.float64).numpy()
        return self._encode(sample, noise, 1.0 - s, s, idx)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`scale_noise` (diffusers' training-loop name)."""
        return self.scale_noise(original_samples, timesteps, noise)

    def _sigma_to_t(self, sigma):
        return sigma * self.config.num_train_timesteps

    def _per_token_step(self, model_output: torch.Tensor, sample: torch.Tensor, per_token_timesteps: torch.Tensor,
                        generator: Optional[torch.Generator], i: int) -> torch.Tensor:
        """The step with a timestep per token (LTX-Video conditioning), diffusers' arithmetic in float32.

        Each token moves from its own sigma ``t / num_train_timesteps`` to the largest schedule sigma below it
        (``prev = x + (sigma - sigma_next) * v``, diffusers' sign; the result stays float32, as diffusers leaves
        it). The coefficients differ per token, so this is not a table row: one small pass over the tokens finds
        ``sigma_next`` on the device (no host read), then one ``addcmul`` pass over the sample (deterministic) or
        three (stochastic: x0, then the noise mix).
        """
        if not isinstance(per_token_timesteps, torch.Tensor):
            raise TypeError(f"per_token_timesteps must be a tensor, got {type(per_token_timesteps).__name__}")
        if tuple(per_token_timesteps.shape) != tuple(sample.shape[:per_token_timesteps.dim()]) or \
                per_token_timesteps.dim() != sample.dim() - 1:
            raise ValueError(f"per_token_timesteps must have the sample's shape without its last dimension, "
                             f"{tuple(sample.shape[:-1])}; got {tuple(per_token_timesteps.shape)}")
        sample = sample.to(torch.float32)
        sigma = per_token_timesteps / self.config.num_train_timesteps
        schedule = self._sigmas_on(sigma.device).reshape((-1,) + (1,) * sigma.dim())
        below = (schedule < sigma[None] - 1e-6) * schedule
        sigma_next = below.max(dim=0).values.unsqueeze(-1)
        sigma = sigma.unsqueeze(-1)
        if not self.config.stochastic_sampling:
            return torch.addcmul(sample, sigma - sigma_next, model_output)
        kw = self._noise_kwargs(sample.shape, sample.device, sample.dtype, generator, i)
        noise = kw["noise"] if "noise" in kw else philox_normal(sample.shape, kw["seed"], kw["stream"],
                                                                device=sample.device, dtype=sample.dtype)
        x0 = sample - sigma * model_output
        return (1.0 - sigma_next) * x0 + sigma_next * noise

    def _sigmas_on(self, device: torch.device) -> torch.Tensor:
        """``self.sigmas`` on ``device``, moved once per run (the per-token step reads the whole schedule)."""
        key = ("sigmas", device)
        tab = self._tables.get(key)
        if tab is None:
            tab = self._tables[key] = self.sigmas.to(device)
        return tab

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: Optional[torch.Generator] = None, per_token_timesteps: Optional[torch.Tensor] = None,
             return_dict: bool = True):
        """One Euler step of the flow ODE (a single fused pass; no host-device sync)."""
        # (IntTensor / LongTensor: the CPU int32 / int64 tensors; a dtype test is cheaper than the legacy types')
        if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and timestep.is_cpu
                                         and timestep.dtype in (torch.int32, torch.int64)):
            raise ValueError("Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to "
                             "`FlowMatchEulerDiscreteScheduler.step()` is not supported. Make sure to pass one of "
                             "the `scheduler.timesteps` as a timestep.")
        i = self._current_index(timestep)
        if per_token_timesteps is not None:
            prev = self._per_token_step(model_output, sample, per_token_timesteps, generator, i)
            self._step_index = i + 1
            return (prev,) if not return_dict else make_output("FlowMatchEulerDiscreteSchedulerOutput", prev)
        table = self._table("rows", sample.device)
        kw = {}
        if self.config.stochastic_sampling:
            kw = self._noise_kwargs(sample.shape, sample.device, sample.dtype, generator, i)
        prev, _ = self._launch(sample, model_output, table, i, out_dtype=model_output.dtype, **kw)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("FlowMatchEulerDiscreteSchedulerOutput", prev)


class FlowMatchHeunDiscreteScheduler(HeunStages, FusedSchedulerBase):
    """Heun's 2nd-order method on a rectified-flow ODE (Karras et al. 2022 Algorithm 2 on flow sigmas).

    Same config keys, defaults and numbers as ``diffusers.FlowMatchHeunDiscreteScheduler``: the flow sigmas of
    :class:`FlowMatchEulerDiscreteScheduler` (static ``shift``), every timestep after the first repeated, and
    ``step`` alternating a predictor and a corrector call, each one fused pass (:class:`HeunStages`; the flow
    velocity ``v`` converts as ``x0 = x - sigma v``). With ``s_churn > 0`` the predictor's churn noise is added
    to the sample first (one more elementwise pass); a corrector inside the churn range draws its noise as
    diffusers does (its effect there is only rounding) so a generator advances alike.

    Example:
        >>> s = FlowMatchHeunDiscreteScheduler(shift=3.0)
        >>> s.set_timesteps(4)
        >>> x = torch.randn(1, 16, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 2
    _output_name = "FlowMatchHeunDiscreteSchedulerOutput"
    _compatibles: list = []

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0):
        check_steps(num_train_timesteps, num_train_timesteps, cap=False)
        sig = FlowMatchingSchedule(num_train_timesteps, shift=shift).train_sigmas.to(torch.float32)
        self.sigmas = sig
        self.sigma_min = float(sig[-1])
        self.sigma_max = float(sig[0])
        self.num_inference_steps = None
        self._reset_run()
        self._set_run(sig.to(torch.float64).numpy(), sig * num_train_timesteps)

    def _set_run(self, sig64: np.ndarray, timesteps: torch.Tensor) -> None:
        FlowMatchEulerDiscreteScheduler._set_run(self, sig64, timesteps)
        self._sig_host = sig64.tolist()  # Python floats: cheap per-step scalar reads
        self._prev = None

    def _sigma_to_t(self, sigma):
        return sigma * self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """Shifted flow sigmas from ``sigma_max`` to ``sigma_min``, then 0; each after the first repeated."""
        cfg = self.config
        T = cfg.num_train_timesteps
        check_steps(num_inference_steps, T, cap=False)
        self.num_inference_steps = num_inference_steps
        ts = np.linspace(self._sigma_to_t(self.sigma_max), self._sigma_to_t(self.sigma_min), num_inference_steps)
        sig32 = torch.from_numpy(static_shift(cfg.shift, ts / T)).to(dtype=torch.float32, device=device)
        timesteps = sig32 * T
        timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        sig32 = torch.cat([sig32, torch.zeros(1, device=sig32.device)])
        self.sigmas = torch.cat([sig32[:1], sig32[1:-1].repeat_interleave(2), sig32[-1:]]).to("cpu")
        self._set_run(self.sigmas.to(torch.float64).numpy(), timesteps)
        self._start_run()

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor) -> torch.Tensor:
        """Forward process ``sigma * noise + (1 - sigma) * sample`` at the current step's sigma (one fused pass)."""
        if self._step_index is None:
            self._init_step_index(timestep)
        s = self._sig
        return self._encode(sample, noise, 1.0 - s, s, [self._step_index])

    def _build_table(self, key) -> torch.Tensor:
        return self._heun_rows(key, lambda sigma, sigma_hat: (np.ones_like(sigma), -sigma))  # x0 = x - sigma v

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One predictor or corrector call (a single fused pass; no host-device sync)."""
        if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and timestep.dtype in (torch.int32,
                                                                                                  torch.int64)):
            raise ValueError("Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to "
                             "`FlowMatchHeunDiscreteScheduler.step()` is not supported. Make sure to pass one of "
                             "the `scheduler.timesteps` as a timestep.")
        i = self._current_index(timestep)
        churn = (float(s_churn), float(s_tmin), float(s_tmax))
        sig = self._sig_host
        first = self._prev is None
        sigma = sig[i] if first else sig[i - 1]
        gamma = churn_gamma(sigma, churn[0], len(sig) - 1, churn[1], churn[2]) if churn[0] != 0.0 else 0.0
        x_first = None
        if gamma > 0:
            kw = self._noise_kwargs(model_output.shape, model_output.device, model_output.dtype, generator, i)
            if first:  # the corrector's draw only keeps a generator in step with diffusers'
                noise = kw.get("noise")
                if noise is None:
                    noise = philox_normal(sample.shape, kw["seed"], kw["stream"], device=sample.device)
                amp = s_noise * math.sqrt((sigma * (gamma + 1)) ** 2 - sigma**2)
                x_first = sample.to(torch.float32) + noise * amp
        # diffusers steps in float32 and returns the model output's dtype; the x0 kept for the corrector is float32
        prev, _ = self._heun_launch(model_output, sample, i, ("first", *churn), ("second", *churn),
                                    model_output.dtype, x_first=x_first,
                                    aux_dtype=torch.promote_types(torch.float32, model_output.dtype),
                                    corrector_x0=False)  # the output has no x0: the corrector writes one tensor
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("FlowMatchHeunDiscreteSchedulerOutput", prev)


class FlowMapEulerDiscreteScheduler(FusedSchedulerBase):
    """Any-step sampling with a flow-map model (one that predicts the average velocity between two times):
    ``x_r = x_t - (sigma_t - sigma_r) u(x_t, t, r)``, Euler's step of the rectified flow with a jump of any size.

    Same config keys, defaults, float64 ``sigmas`` / ``timesteps`` and numbers as
    ``diffusers.FlowMapEulerDiscreteScheduler``: ``step`` goes from ``timestep`` to ``r_timestep`` (default:
    the next timestep of the schedule); a timestep within 1e-3 of a scheduled one takes that one's sigma, any
    other ``t / num_train_timesteps``. Each ``step`` is one fused pass (an off-schedule pair gets a one-row table
    on first use). Traced (``torch.compile``), a tensor timestep has no host value: the step takes the step
    counter's scheduled timestep (what iterating ``timesteps`` gives), and ``r_timestep`` must be a number or None.

    Example:
        >>> s = FlowMapEulerDiscreteScheduler(shift=3.0)
        >>> s.set_timesteps(2)
        >>> x = torch.randn(1, 16, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _output_name = "FlowMapEulerDiscreteSchedulerOutput"
    _compatibles: list = []

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0):
        self._reset_run()
        self.sigmas = None
        self.set_timesteps(num_train_timesteps, device="cpu")

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Identity (the flow-map model sees the sample unscaled)."""
        return sample

    def scale_noise(self, sample: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process ``s * noise + (1 - s) * sample`` with ``s = timestep / num_train_timesteps`` (one
        ``s`` per sample for a batch of timesteps)."""
        if not isinstance(timestep, torch.Tensor):
            raise TypeError(f"timestep must be a tensor, got {type(timestep).__name__}")
        s = timestep.to(device=sample.device, dtype=sample.dtype) / self.config.num_train_timesteps
        s = s.view(*s.shape, *([1] * (noise.ndim - s.ndim)))
        return s * noise + (1.0 - s) * sample

    def apply_shift(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The static resolution shift ``shift s / (1 + (shift - 1) s)`` (identity at ``shift = 1``)."""
        if self.config.shift == 1.0:
            return sigmas
        return static_shift(self.config.shift, sigmas)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      sigmas: Optional[List[float]] = None, timesteps: Optional[List[float]] = None) -> None:
        """Shifted sigmas from 1 (or the given ``sigmas`` / ``timesteps / num_train_timesteps``), then 0;
        ``timesteps = sigmas * num_train_timesteps`` (float64, float32 on MPS / NPU as diffusers)."""
        T = self.config.num_train_timesteps
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise ValueError("`sigmas` and `timesteps` should have the same length")
        if num_inference_steps is not None:
            if (sigmas is not None and len(sigmas) != num_inference_steps) or (
                    timesteps is not None and len(timesteps) != num_inference_steps):
                raise ValueError("`sigmas` and `timesteps` should have the same length as `num_inference_steps` "
                                 "when both are provided")
            check_steps(num_inference_steps, T, cap=False)
        elif sigmas is not None:
            num_inference_steps = len(sigmas)
        elif timesteps is not None:
            num_inference_steps = len(timesteps)
        else:
            raise ValueError("`num_inference_steps` must be provided when both `sigmas` and `timesteps` are `None`")
        dev = torch.device(device) if device is not None and not isinstance(device, torch.device) else device
        out_dtype = torch.float32 if dev is not None and dev.type in ("mps", "npu") else torch.float64
        if sigmas is not None:
            work = torch.tensor(sigmas, dtype=torch.float64)
        elif timesteps is not None:
            work = torch.tensor(timesteps, dtype=torch.float64) / T
        else:
            work = torch.linspace(1.0, 0.0, num_inference_steps + 1, dtype=torch.float64)[:-1]
        full = torch.cat([self.apply_shift(work), work.new_zeros(1)])
        self.num_inference_steps = num_inference_steps
        self.sigmas = full.to(device=device, dtype=out_dtype)
        self.timesteps = (self.sigmas[:-1] * T).to(device=device, dtype=out_dtype)
        self._sig = self.sigmas.detach().cpu().to(torch.float64).numpy()
        # the lookup compares in float32, as diffusers' (timesteps.float() - t).abs()
        self._ts32 = self._timesteps_host.astype(np.float32)
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._start_run()

    def _timestep_values(self, timestep) -> np.ndarray:
        """The timestep's value(s) on the host: an element of ``timesteps`` from the host copy, numbers and CPU
        tensors directly, another device tensor read back (one sync)."""
        if isinstance(timestep, torch.Tensor):
            pos = _element_position(timestep, self._timesteps)
            if pos is not None:
                return self._timesteps_host[pos:pos + 1]
            if timestep.numel() == 1:
                values = np.asarray([_base._read_timestep(timestep)])  # (looked up at call time: instrumentable)
            else:
                values = timestep.detach().reshape(-1).cpu().to(torch.float64).numpy()
        elif isinstance(timestep, (int, float, np.integer, np.floating)) and not isinstance(timestep, bool):
            values = np.asarray([float(timestep)])
        else:
            raise TypeError(f"timestep must be a number or a tensor, got {type(timestep).__name__}")
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"timestep must hold finite numbers, got {timestep}")
        return values

    def _nearest(self, value: float) -> Optional[int]:
        diffs = np.abs(self._ts32 - np.float32(value))
        idx = int(diffs.argmin())
        return None if diffs[idx] > 1e-3 else idx

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> Optional[int]:
        """The scheduled timestep nearest ``timestep`` (its first value), or None when none is within 1e-3."""
        if self._timesteps is None:
            return None
        return self._nearest(float(self._timestep_values(timestep)[0]))

    def _init_step_index(self, timestep) -> None:
        if self._begin_index is not None:
            self._step_index = self._begin_index
            return
        if torch.compiler.is_compiling() and isinstance(timestep, torch.Tensor):
            # traced, a tensor timestep has no host value: the loop starts where iterating self.timesteps does,
            # at index 0 (what eager's nearest-timestep lookup finds for timesteps[0])
            self._step_index = 0
            return
        idx = self.index_for_timestep(timestep)
        self._step_index = idx if idx is not None else 0

    def _sigma_at(self, timestep) -> Tuple[Optional[int], np.ndarray]:
        values = self._timestep_values(timestep)
        idx = self._nearest(float(values[0]))
        if idx is not None:
            return idx, self._sig[idx:idx + 1]
        # off the schedule: t / num_train_timesteps, in the sigmas' dtype
        return None, values.astype(self._sig_dtype()) / self.config.num_train_timesteps

    def _sig_dtype(self):
        return np.float32 if self.sigmas.dtype == torch.float32 else np.float64

    def _build_table(self, key) -> torch.Tensor:
        if key == "rows":  # scheduled steps: sigma_i -> sigma_{i+1}
            s = self._sig
            return rows(in_x=1.0, in_m=0.0, out_x=1.0, out_m=s[1:] - s[:-1])
        return rows(in_x=1.0, in_m=0.0, out_x=1.0, out_m=np.asarray(key[2]) - np.asarray(key[1]))  # sigma_r - sigma_t

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             r_timestep: Optional[Union[float, torch.Tensor]] = None, return_dict: bool = True):
        """One jump ``timestep -> r_timestep`` (a single fused pass; no host-device sync for timesteps taken
        from ``self.timesteps`` or given as numbers)."""
        if self.sigmas is None or self._timesteps is None:
            raise ValueError("`set_timesteps` has not been called.")
        if self._step_index is None:
            self._init_step_index(timestep)
        if torch.compiler.is_compiling() and isinstance(timestep, torch.Tensor):
            # traced, a tensor timestep has no host value: the step counter's scheduled timestep (eager finds the
            # sigma from the value: for a loop over self.timesteps, the same one)
            t_idx = self._step_index
            if not 0 <= t_idx < len(self._timesteps_host):
                raise ValueError(f"step called {t_idx + 1} times but there are only {len(self._timesteps_host)} "
                                 f"timesteps; call set_timesteps again")
            sigma_t = self._sig[t_idx:t_idx + 1]
            if isinstance(r_timestep, torch.Tensor):
                raise TypeError("a traced step takes r_timestep as a number or None (a tensor's value is not on "
                                "the host: an off-schedule jump needs it)")
        else:
            t_idx, sigma_t = self._sigma_at(timestep)
        if r_timestep is None:
            if t_idx is None:
                raise ValueError("`r_timestep` is None but `timestep` is not on the current schedule, so `r` cannot "
                                 "be inferred. Please pass an explicit `r_timestep` for any-step sampling outside "
                                 "the schedule.")
            r_idx, sigma_r = t_idx + 1, self._sig[t_idx + 1:t_idx + 2]
        else:
            r_idx, sigma_r = self._sigma_at(r_timestep)
        batch = sample.shape[0]
        if t_idx is not None and r_idx == t_idx + 1:
            table, row, index = self._table("rows", sample.device), t_idx, None
        else:
            if max(sigma_t.size, sigma_r.size) not in (1, batch):
                raise ValueError(f"timestep and r_timestep must hold 1 or {batch} values (one per sample)")
            key = ("pair", tuple(sigma_t.tolist()), tuple(sigma_r.tolist()))
            if sigma_t.size != sigma_r.size:
                size = max(sigma_t.size, sigma_r.size)
                key = ("pair", tuple(np.broadcast_to(sigma_t, size).tolist()),
                       tuple(np.broadcast_to(sigma_r, size).tolist()))
            table, row = self._table(key, sample.device), 0
            index = None if len(key[1]) == 1 else torch.arange(batch, device=sample.device)
        if index is None:
            prev, _ = self._launch(sample, model_output, table, row, out_dtype=model_output.dtype)
        else:
            out = torch.empty(sample.shape, dtype=model_output.dtype, device=sample.device)
            prev = fused_step(sample, model_output, table, coef_index=index, out=out, backend=self.backend)
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return make_output("FlowMapEulerDiscreteSchedulerOutput", prev)
