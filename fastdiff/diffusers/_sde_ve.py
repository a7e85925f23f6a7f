"""ScoreSdeVeScheduler: the predictor-corrector sampler of the variance-exploding SDE (Song et al. 2021).

The predictor (``step_pred``) is the reverse-diffusion step of the discretised VE SDE with a score model:
``mean = x + g**2 score``, ``x_next = mean + g z`` with ``g = sqrt(sigma_k**2 - sigma_{k-1}**2)`` on the
geometric discrete sigmas. Both outputs come from one ``fused_step`` pass (``prev_sample`` and, as its aux
output, ``prev_sample_mean``), its row picked by the timestep (traced, where the timestep has no host value,
the per-sample row is formed on the device as diffusers forms it, ``int(t * (len(timesteps) - 1))``).

The corrector (``step_correct``) is a Langevin step whose step size is set from the norms of the score and of
the noise: ``e = 2 (snr |z| / |score|)**2`` with ``|.|`` the per-sample L2 norm averaged over the batch. That is
a reduction over the whole sample, so the corrector is two passes: the norms (and ``e``, on the device), then
one ``fused_step`` whose coefficient row is formed on the device from ``e`` -- nothing is read on the host.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

from ..ops.step import COEF_NAMES, fused_step
from ..random import philox_normal
from ..schedules import VESchedule, exponential_sigmas
from ._base import (_CPU_PATH_BACKENDS, _TABLE_ARITHMETIC, FusedSchedulerBase, _element_position, _folded_step,
                    result_dtype, rows)
from ._compat import make_output, randn_tensor, register_to_config, resolve_output

__all__ = ["ScoreSdeVeScheduler"]

_FUSED_STEP = fused_step  # a replaced module-level fused_step (instrumentation, a counting test) sees every call

_IN_M, _OUT_NOISE = COEF_NAMES.index("in_m"), COEF_NAMES.index("out_noise")


class ScoreSdeVeScheduler(FusedSchedulerBase):
    """Predictor-corrector sampling of the VE SDE, Song et al. (2021) "Score-Based Generative Modeling through
    Stochastic Differential Equations" (Algorithm 2).

    Same config keys, defaults, attributes (``timesteps``, ``sigmas``, ``discrete_sigmas``), output types
    (``SdeVeOutput`` from ``step_pred``, ``SchedulerOutput`` from ``step_correct``) and numbers as
    ``diffusers.ScoreSdeVeScheduler``. ``step_pred`` is one fused pass; ``step_correct`` is two (module
    docstring: its step size needs the norms of the whole sample first). Noise is drawn as diffusers draws it
    when a generator is given, else from the in-kernel Philox stream (a fresh stream per call).

    Example:
        >>> s = ScoreSdeVeScheduler(sigma_max=50.0)
        >>> s.set_timesteps(4)
        >>> s.set_sigmas(4)
        >>> x = torch.randn(2, 3, 8, 8) * s.init_noise_sigma
        >>> for i, t in enumerate(s.timesteps):
        ...     x = s.step_correct(-x / s.sigmas[i] ** 2, x).prev_sample
        ...     x = s.step_pred(-x / s.sigmas[i] ** 2, t, x).prev_sample
    """

    order = 1
    _output_name = "SdeVeOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 2000,
        snr: float = 0.15,
        sigma_min: float = 0.01,
        sigma_max: float = 1348.0,
        sampling_eps: float = 1e-5,
        correct_steps: int = 1,
    ):
        self.init_noise_sigma = sigma_max
        self._reset_run()
        resolve_output("SchedulerOutput")  # step_correct's output type (a traced step cannot resolve it)
        self._timesteps = None
        self._calls = 0
        self.set_sigmas(num_train_timesteps, sigma_min, sigma_max, sampling_eps)

    # ------------------------------------------------------------------ schedule
    @property
    def timesteps(self) -> Optional[torch.Tensor]:
        """The continuous sampling times, from 1 down to ``sampling_eps`` (None until set)."""
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value: Optional[torch.Tensor]) -> None:
        if value is None:
            self._timesteps = None
            self._timesteps_host = np.zeros(0)
        else:
            FusedSchedulerBase.timesteps.fset(self, value)

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        """Identity (the VE score model sees the sample unscaled)."""
        return sample

    def set_timesteps(self, num_inference_steps: int, sampling_eps: Optional[float] = None, device=None) -> None:
        """``num_inference_steps`` times equally spaced from 1 down to ``sampling_eps`` (float32, as diffusers)."""
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        eps = sampling_eps if sampling_eps is not None else self.config.sampling_eps
        self.timesteps = torch.linspace(1, eps, num_inference_steps, device=device)
        self._calls = 0
        self._start_run()

    def set_sigmas(self, num_inference_steps: int, sigma_min: Optional[float] = None,
                   sigma_max: Optional[float] = None, sampling_eps: Optional[float] = None) -> None:
        """``sigmas``: the VE noise level ``sigma_min (sigma_max / sigma_min)**t`` at each timestep (setting the
        timesteps first if there are none); ``discrete_sigmas``: ``num_inference_steps`` geometrically spaced
        levels from ``sigma_min`` to ``sigma_max``, the grid the predictor steps on."""
        cfg = self.config
        smin = sigma_min if sigma_min is not None else cfg.sigma_min
        smax = sigma_max if sigma_max is not None else cfg.sigma_max
        eps = sampling_eps if sampling_eps is not None else cfg.sampling_eps
        if self._timesteps is None:
            self.set_timesteps(num_inference_steps, eps)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        self.sigmas = VESchedule(smin, smax).t_to_sigma(self._timesteps.detach().cpu()).to(torch.float32)
        if _TABLE_ARITHMETIC[0] == "diffusers":  # diffusers' float32 linspace of the log levels
            ds = torch.exp(torch.linspace(math.log(smin), math.log(smax), num_inference_steps))
            self._ds = ds.to(torch.float64).numpy()
        else:
            self._ds = exponential_sigmas(num_inference_steps, smin, smax)[:-1].flip(0).numpy()
            ds = torch.from_numpy(self._ds).to(torch.float32)
        self.discrete_sigmas = ds
        self._tables.clear()
        self._host_tables.clear()
        # the predictor's table follows the discrete sigmas, set after the timesteps: the run's key covers them
        # (and the sigmas just set), so a run's traced tables are guarded by what they are built from
        self._set_run_key(self._ds)

    def get_adjacent_sigma(self, timesteps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The discrete sigma one index below each of ``timesteps`` (indices; 0 below the first)."""
        return torch.where(timesteps == 0, torch.zeros_like(t.to(timesteps.device)),
                           self.discrete_sigmas[timesteps - 1].to(timesteps.device))

    # ------------------------------------------------------------------ the predictor
    def _build_table(self, key) -> torch.Tensor:
        if key == "correct":
            return rows(in_x=1.0, in_m=0.0, out_d=1.0, out_noise=0.0)
        # row k: g = sqrt(sigma_k**2 - sigma_{k-1}**2) (sigma_{-1} = 0); d = x + g**2 score is the mean
        if _TABLE_ARITHMETIC[0] == "diffusers":  # diffusers' float32 operations
            ds = self.discrete_sigmas.to(torch.float32)
            adj = torch.cat([torch.zeros(1), ds[:-1]])
            g = (ds**2 - adj**2) ** 0.5
            g2 = (g**2).to(torch.float64).numpy()
            g = g.to(torch.float64).numpy()
        else:
            ds = self._ds
            g = np.sqrt(ds**2 - np.concatenate([[0.0], ds[:-1]]) ** 2)
            g2 = g**2
        return rows(in_x=1.0, in_m=g2, out_d=1.0, out_noise=g, aux_x=0.0, aux_d=1.0)

    def _level_indices(self, timestep, batch: int):
        """The discrete-sigma row of each sample: ``int(float32(t) * (len(timesteps) - 1))``, as diffusers forms
        it. A timestep that is an element of ``timesteps``, a number or a CPU tensor is read without a device sync;
        another device tensor is read back (one sync)."""
        if isinstance(timestep, torch.Tensor):
            pos = _element_position(timestep, self._timesteps) if timestep.dim() <= 1 else None
            if pos is not None:
                values = np.full(batch, self._timesteps_host[pos])
            else:
                values = timestep.detach().cpu().to(torch.float64).numpy().reshape(-1)
                if values.size == 1:
                    values = np.full(batch, values[0])
                elif values.size != batch:
                    raise ValueError(f"timestep must be a number or hold one value per sample ({batch}), got "
                                     f"{values.size} values")
        elif isinstance(timestep, (int, float, np.integer, np.floating)) and not isinstance(timestep, bool):
            values = np.full(batch, float(timestep))
        else:
            raise TypeError(f"timestep must be a number or a tensor, got {type(timestep).__name__}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"timestep must be finite, got {timestep}")
        scaled = values.astype(np.float32) * np.float32(len(self._timesteps_host) - 1)
        idx = np.trunc(scaled).astype(np.int64)
        n = len(self._ds)
        if np.any(idx < 0) or np.any(idx >= n):
            raise ValueError(f"timestep {timestep} maps to discrete sigma index {idx.tolist()}, outside the "
                             f"{n} discrete_sigmas (call set_sigmas with as many steps as set_timesteps)")
        return idx.tolist()

    def _traced_level_indices(self, timestep: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        """``_level_indices`` of a traced tensor timestep, which has no host value: formed on the device as
        diffusers forms them (float32 ``t * (len(timesteps) - 1)``, truncated), one per sample, and checked there
        (``_assert_async``, no sync) to lie in the discrete sigmas, where eager raises."""
        flat = timestep.reshape(-1).to(device=device, dtype=torch.float32)
        if flat.numel() not in (1, batch):
            raise ValueError(f"timestep must be a number or hold one value per sample ({batch}), got "
                             f"{flat.numel()} values")
        idx = (flat * (len(self._timesteps_host) - 1)).to(torch.int64).expand(batch)
        torch._assert_async(((idx >= 0) & (idx < len(self._ds))).all(),
                            "timestep maps outside the discrete sigmas (call set_sigmas with as many steps as "
                            "set_timesteps)")
        return idx

    def _noise(self, sample: torch.Tensor, generator, cpu_draw: bool = False) -> dict:
        """This call's noise: diffusers' draw with a generator (``cpu_draw``: on the CPU in float32, then moved,
        as its corrector draws), else a fresh Philox stream of the run's seed."""
        i = self._calls
        self._calls += 1
        if generator is not None and cpu_draw:
            return {"noise": randn_tensor(sample.shape, layout=sample.layout, generator=generator).to(sample.device)}
        return self._noise_kwargs(sample.shape, sample.device, sample.dtype, generator, i)

    def _check_set(self) -> None:
        if self._timesteps is None:
            raise ValueError("`self.timesteps` is not set, you need to run 'set_timesteps' after creating the "
                             "scheduler")

    def step_pred(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
                  generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One reverse-diffusion predictor step at ``timestep`` (a single fused pass; no host-device sync).

        Returns ``SdeVeOutput(prev_sample, prev_sample_mean)`` (or the tuple of both)."""
        self._check_set()
        if torch.compiler.is_compiling() and isinstance(timestep, torch.Tensor):
            idx = self._traced_level_indices(timestep, sample.shape[0], sample.device)
        else:
            idx = self._level_indices(timestep, sample.shape[0])
        table = self._table("pred", sample.device)
        kw = self._noise(sample, generator)
        # diffusers' per-sample float32 coefficients promote a half-precision sample to float32
        dtype = torch.promote_types(torch.float32, result_dtype(sample, model_output))
        if isinstance(idx, list) and all(k == idx[0] for k in idx):
            prev, mean = self._launch(sample, model_output, table, idx[0], out_dtype=dtype, aux_dtype=dtype, **kw)
        else:
            index = idx if isinstance(idx, torch.Tensor) else torch.tensor(idx, dtype=torch.int64).to(sample.device)
            out = torch.empty(sample.shape, dtype=dtype, device=sample.device)
            aux = torch.empty(sample.shape, dtype=dtype, device=sample.device)
            if "seed" in kw:
                kw["noise"] = philox_normal(sample.shape, kw.pop("seed"), kw.pop("stream"), device=sample.device)
            prev, mean = fused_step(sample, model_output, table, coef_index=index, out=out, aux_out=aux,
                                    backend=self.backend, **kw)
        if not return_dict:
            return (prev, mean)
        return make_output("SdeVeOutput", prev, mean)

    # ------------------------------------------------------------------ the corrector
    def _corrector_base(self, device: torch.device) -> torch.Tensor:
        """The corrector's coefficient row without its step size: ``x + e score + sqrt(2 e) z`` with ``e`` (the
        ``in_m`` column) and ``sqrt(2 e)`` (``out_noise``) written on the device per call. A table as the
        predictor's (``_table``: cached per device, a graph constant when traced)."""
        return self._table("correct", device)

    def step_correct(self, model_output: torch.Tensor, sample: torch.Tensor,
                     generator: Optional[torch.Generator] = None, return_dict: bool = True):
        """One Langevin corrector step, ``x + e score + sqrt(2 e) z`` with ``e = 2 (snr |z| / |score|)**2``.

        Two passes, nothing read on the host: the per-sample L2 norms of ``model_output`` and of the noise
        (averaged over the batch) give ``e`` on the device, then one ``fused_step`` with a row built from it.
        On plain CPU tensors (no torch.compile, no profiler) ``e`` is read as a host float -- no device to sync
        with -- and the step is the CPU path's own two tensor ops on it (same bits, without building and
        parsing a coefficient row: 125 -> 78 us a call at 1x4x8x8, one thread). Returns ``SchedulerOutput(prev_sample)``
        (or the 1-tuple)."""
        self._check_set()
        kw = self._noise(sample, generator, cpu_draw=True)
        noise = kw.get("noise")
        if noise is None:  # the step size needs the noise's norm: the Philox noise is drawn out of the kernel
            noise = philox_normal(sample.shape, kw["seed"], kw["stream"], device=sample.device)
        batch = sample.shape[0]
        grad_norm = torch.norm(model_output.reshape(batch, -1), dim=-1).mean()
        noise_norm = torch.norm(noise.reshape(batch, -1), dim=-1).mean()
        step_size = (self.config.snr * noise_norm / grad_norm) ** 2 * 2
        base = self._corrector_base(sample.device)
        size = step_size.to(device=base.device, dtype=base.dtype)
        sd = sample.dtype
        if (sd in (torch.float32, torch.float64) and model_output.dtype is sd and noise.dtype is sd
                and sample.__class__ is model_output.__class__ is noise.__class__ is torch.Tensor
                and sample.is_cpu and model_output.is_cpu and noise.is_cpu and self.backend in _CPU_PATH_BACKENDS
                and fused_step is _FUSED_STEP and not torch.compiler.is_compiling()
                and not torch.autograd.profiler._is_profiler_enabled):
            # the row's in_m (e) and out_noise (sqrt(2 e), in the table's dtype) folded as the CPU step folds
            # in_x = out_d = 1: out = x + e m + sqrt(2 e) z
            e, root = float(size), float((size * 2) ** 0.5)
            prev = _folded_step(sample, model_output, (1.0, e, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, root), (),
                                False, None, noise)[0]
            return (prev,) if not return_dict else make_output("SchedulerOutput", prev)
        coefs = base.index_copy(1, torch.tensor([_IN_M, _OUT_NOISE], device=base.device),
                                torch.stack([size, (size * 2) ** 0.5]).reshape(1, 2))
        dtype = result_dtype(sample, model_output)
        out = None if dtype == sample.dtype else torch.empty(sample.shape, dtype=dtype, device=sample.device)
        prev = fused_step(sample, model_output, coefs, noise=noise, out=out, backend=self.backend)
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)

    def add_noise(self, original_samples: torch.Tensor, noise: Optional[torch.Tensor],
                  timesteps: torch.Tensor) -> torch.Tensor:
        """``x0 + discrete_sigmas[timesteps] * noise`` (``timesteps`` are indices; one fused pass); without
        ``noise`` it is drawn with ``torch.randn_like``, as diffusers draws it."""
        idx = torch.as_tensor(timesteps).reshape(-1).cpu().tolist()
        if noise is None:
            noise = torch.randn_like(original_samples)
        return self._encode(original_samples, noise, np.ones_like(self._ds), self._ds, idx)
