"""Shared machinery of the drop-in schedulers: schedule set-up, step bookkeeping, coefficient tables, noise.

Every scheduler here turns diffusers' per-step arithmetic into rows of the
``fastdiff.ops.step`` coefficient table: the rows are computed in float64 on
the host once per ``set_timesteps`` (and per value of a step-time option such as
DDIM's ``eta``), cast to float32 and moved to the sample's device once, and
``step`` is a single ``fused_step`` launch that picks its row with
``coef_row=``. The step counter lives on the host (diffusers' ``_step_index``),
so ``step`` never reads a device tensor back: the timestep is looked up only on
the first call (from the host copy of the timesteps) and, for the stateless
DDPM/DDIM, whenever it is a host value (a Python number or a CPU tensor).

Noise: with a ``generator`` the noise is drawn exactly as diffusers draws it
(``randn_tensor`` with the same shape, dtype, device and generator, in the same
order) and passed to the kernel as ``noise=``; without one, the kernel's Philox
noise is used, keyed by a seed drawn once per run from torch's global CPU
generator and a distinct stream per step. The seed is drawn at the first step that
adds noise without a generator -- where diffusers itself draws from the global
generator -- never in ``set_timesteps`` and never when a generator is given, so the
global generator's state after any call is what it would be after diffusers' call
in kind (one draw where diffusers draws, none where it draws none). ``set_noise_seed``
fixes the seed on the host instead (kept across runs, no global draw). Inside a
``torch.compile`` region that has no seed yet, a generator-less step draws its noise
as diffusers does (``torch.randn`` on the global generator, traced), since a host
seed draw there would break the graph; with ``set_noise_seed`` the compiled loop
draws the eager loop's Philox noise.

The first step finds its index without reading a device timestep: ``set_timesteps``
keeps a host copy of the timesteps, and a timestep that is an element of
``self.timesteps`` (what iterating it yields) is located from its storage offset and
looked up in that copy. Only a device timestep from elsewhere is read back (one
sync, as diffusers' own lookup). Under ``torch.compile`` a tensor timestep is never
read on the host: the traced loop follows the step counter, and a traced first step
without ``set_begin_index`` takes the index eager finds for ``timesteps[0]`` (a loop
that starts elsewhere sets its begin index, as diffusers' img2img pipelines do).

torch.compile(fullgraph=True) of a whole loop: the host-side set-up a step needs
(coefficient tables, multistep plans) is computed at trace time outside the graph and
enters it as constants, guarded by a digest of the run's timesteps and sigmas, so a
later run of the same timesteps reuses the graph and a run on others compiles anew.

Example:
    >>> from fastdiff.diffusers import EulerDiscreteScheduler
    >>> s = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    >>> s.set_timesteps(10)
    >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
"""
from __future__ import annotations

import hashlib
import math
import warnings
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..ops import fused_encode
from ..ops.step import COEF_DEFAULTS, COEF_NAMES, MAX_HISTORY, fused_step
# the CPU step's own term arithmetic: a folded drop-in step runs exactly its tensor ops, bit for bit
from ..ops.step.cpu import combine_pair, lin2_pair
from ..random import draw_seed, split_seed
from ..schedules import DiscreteVPSchedule, make_betas, spaced_timesteps
from ..schedules._beta_dist import beta_ppf
from ._compat import HAS_DIFFUSERS, ConfigMixin, SchedulerMixin, randn_tensor, resolve_output

__all__ = ["FusedSchedulerBase", "DiscreteBetaMixin", "ZTSNR_ALPHA_BAR", "KARRAS_COMPATIBLES", "sigma_to_t",
           "spaced_timesteps", "interp", "check_steps", "result_dtype"]

#: The terminal alpha_bar used instead of 0 where a zero-terminal-SNR schedule would divide by it
#: (the value diffusers' sigma-based schedulers substitute: fp16's smallest subnormal).
ZTSNR_ALPHA_BAR = 2.0**-24

#: The scheduler names diffusers lists as interchangeable (its ``KarrasDiffusionSchedulers``): the ``_compatibles``
#: of every class diffusers gives that list (a pipeline's ``scheduler.compatibles`` offers these for swapping).
KARRAS_COMPATIBLES = (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler", "UniPCMultistepScheduler", "DPMSolverSDEScheduler", "EDMEulerScheduler",
)

_KARRAS_KEYS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")

_Tensor = torch.Tensor
_F32, _F64 = torch.float32, torch.float64
_FOLDED_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))
#: backends that run ``fused_step``'s host-coefficient CPU path on CPU tensors
_CPU_PATH_BACKENDS = frozenset(("auto", "torch"))
_profiler = torch.autograd.profiler
_FUSED_STEP = fused_step  # a replaced module-level fused_step (instrumentation, a counting test) sees every call
_FOLDED_TABLES_MAX = 8  # tables with folded rows kept per scheduler (a run uses one or two)


def check_steps(n, num_train_timesteps: int, cap: bool) -> None:
    """Validate ``num_inference_steps``: a positive int (numpy integers too), at most ``num_train_timesteps``
    when ``cap`` (schedulers on integer training timesteps would repeat a timestep, a zero-length step).

    Example:
        >>> check_steps(10, 1000, cap=True)
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"num_inference_steps must be a positive int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {n}")
    if cap and n > num_train_timesteps:
        raise ValueError(f"`num_inference_steps`: {n} cannot be larger than `self.config.train_timesteps`: "
                         f"{num_train_timesteps}")


def check_timestep_value(value: float) -> None:
    """A host-read timestep must be a finite number (a NaN or inf one would otherwise fail far from the call)."""
    if not math.isfinite(value):
        raise ValueError(f"timestep must be a finite number (one of the scheduler's timesteps), got {value}")


def interp(t: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.interp(t, arange(len(table)), table)`` in float64."""
    return np.interp(np.asarray(t, dtype=np.float64), np.arange(len(table)), table)


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Continuous timestep of each sigma: linear in log sigma between the two nearest training sigmas.

    diffusers' ``_sigma_to_t`` semantics (``log(max(sigma, 1e-10))``, clamped to the table).
    """
    ls = np.log(np.maximum(np.asarray(sigmas, dtype=np.float64), 1e-10))
    low = np.clip(np.searchsorted(log_sigmas, ls, side="right") - 1, 0, len(log_sigmas) - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo - ls) / (lo - hi), 0.0, 1.0)
    return (1 - w) * low + w * (low + 1)


class FusedSchedulerBase(SchedulerMixin, ConfigMixin):
    """Base of the drop-in schedulers: step counter, per-device coefficient tables, noise, the fused launch.

    Subclasses set ``_host_timesteps`` (float64 numpy) in ``set_timesteps`` and implement
    ``_build_table(key) -> torch.Tensor`` (CPU float32 rows, as ``step_coefs`` builds them: ``rows``).

    ``backend`` ("auto", "triton", "torch", "reference") is passed to every fused op;
    set it on an instance (``sched.backend = "triton"``) to force the kernels.
    """

    order = 1
    backend: str = "auto"
    #: whether ``thresholding=True`` in the config applies dynamic thresholding to the step's x0 estimate
    #: (diffusers' TCDScheduler takes the key but never thresholds)
    _thresholds: bool = True
    #: the name of the step output type (``_compat.output_class``), resolved at construction
    _output_name: str = "SchedulerOutput"

    @classmethod
    def _get_compatibles(cls) -> list:
        """The classes ``compatibles`` offers: this class and its ``_compatibles``, each fastdiff's drop-in where
        there is one (a pipeline that switches schedulers through ``compatibles`` stays on fastdiff), else
        diffusers' class (when installed), in diffusers' order of names."""
        from .. import diffusers as face  # this package: its public classes

        names = [cls.__name__] + [n for n in cls._compatibles if n != cls.__name__]
        found = []
        for name in names:
            c = getattr(face, name, None) if name in face.__all__ else None
            if c is None and HAS_DIFFUSERS:
                import diffusers

                c = getattr(diffusers, name, None)
            if c is not None:
                found.append(c)
        return found

    # ------------------------------------------------------------------ state
    def _reset_run(self) -> None:
        # resolve the output type now: its lookup (an import) is a call a traced step cannot make
        resolve_output(self._output_name)
        self._step_index: Optional[int] = None
        self._begin_index: Optional[int] = None
        self._tables: Dict[Tuple[Hashable, torch.device], torch.Tensor] = {}
        self._host_tables: Dict[Hashable, torch.Tensor] = {}
        # id(table) -> (table, per-row folded host coefficients): the CPU step without fused_step's general path
        self._folded: Dict[int, Tuple[torch.Tensor, List[tuple]]] = {}
        # id(table) -> (table, its thresholded twin, host (in_x, in_m) per row, raw output moved): thresholding=True
        self._thresholded: Dict[int, tuple] = {}
        self._seed: Optional[int] = None
        self._noise_seed: Optional[int] = None  # set_noise_seed: every run's Philox seed, kept across runs

    @property
    def timesteps(self) -> torch.Tensor:
        """The sampling timesteps (set by ``set_timesteps``); a host float64 copy is kept beside them."""
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value: torch.Tensor) -> None:
        self._timesteps = value
        # the host copy lets the first step find its index without a device read; a device tensor is copied
        # back here, once per set_timesteps, outside the step loop
        host = value.detach()
        self._timesteps_host = (host if host.is_cpu else host.cpu()).to(torch.float64).numpy().reshape(-1)
        # the index eager finds for timesteps[0] (the second match when its value appears twice): a traced first
        # step's index (see _init_step_index), a host int so that the trace runs no lookup
        first = np.nonzero(self._timesteps_host == self._timesteps_host[0])[0] if self._timesteps_host.size else ()
        self._first_index = int(first[1] if len(first) > 1 else 0)
        self._set_run_key()

    def _set_run_key(self, *extra: np.ndarray) -> None:
        """``_run_key``: what a run's tables are built from (the timesteps, the sigmas, which every class sets
        first, and ``extra``: arrays a class sets later), as a str: a traced step's tables are constants of its
        graph, and dynamo guards a str attribute by value, so a later run with other timesteps or sigmas
        compiles anew instead of reusing stale tables."""
        digest = hashlib.blake2b(self._timesteps_host.tobytes(), digest_size=16)
        sigmas = self.__dict__.get("sigmas")
        if isinstance(sigmas, torch.Tensor):
            digest.update(sigmas.detach().cpu().to(torch.float64).numpy().tobytes())
        for array in extra:
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        self._run_key = digest.hexdigest()

    @property
    def step_index(self) -> Optional[int]:
        """The index of the next step into ``timesteps`` (None before the first step)."""
        return self._step_index

    @property
    def begin_index(self) -> Optional[int]:
        """The first step index, set by pipelines with ``set_begin_index`` (img2img)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start stepping at ``timesteps[begin_index]`` (called by pipelines before the loop)."""
        self._begin_index = begin_index

    def set_noise_seed(self, seed: Optional[int]) -> None:
        """Key the in-kernel (Philox) noise of every later run by ``seed`` (an int in [0, 2**63)) instead of a
        seed drawn from torch's global generator at the run's first noisy step; ``None`` restores the draw.

        Steps given a ``generator`` (or ``variance_noise``) are unaffected. Each run (``set_timesteps``) gets
        the same noise for the same seed, step for step, on any device. This is how a ``torch.compile``-d
        loop of a stochastic scheduler reproduces its eager run: the seed is a host int, a constant of the
        traced graph (a new seed compiles a new graph), where an unseeded traced step can only draw
        ``torch.randn`` from the global generator, inside the graph.
        """
        if seed is not None:
            split_seed(seed)  # TypeError / ValueError naming seed
        self._noise_seed = seed

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ timestep lookup
    @staticmethod
    def _host_value(timestep) -> Optional[float]:
        """The timestep as a float when reading it costs no device sync (nor, traced, a graph break), else None."""
        if isinstance(timestep, torch.Tensor):
            if not timestep.is_cpu or timestep.numel() != 1 or torch.compiler.is_compiling():
                return None
            # a CPU tensor: reading it is no device sync (and a 0-d one needs no reshape)
            return float((timestep if timestep.dim() == 0 else timestep.reshape(())).tolist())
        if isinstance(timestep, (int, float, np.integer, np.floating)) and not isinstance(timestep, bool):
            return float(timestep)
        return None

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """Index of ``timestep`` in the timesteps (the second match when it appears twice, as diffusers).

        The value is found without a device read when ``timestep`` is an element of ``self.timesteps``
        (the host copy is read at its position); any other device tensor is read back (one sync).
        """
        if schedule_timesteps is None or schedule_timesteps is self._timesteps:
            host = self._timesteps_host
            pos = _element_position(timestep, self._timesteps)
            value = float(host[pos]) if pos is not None else _read_timestep(timestep)
        else:
            host = schedule_timesteps.detach().cpu().to(torch.float64).numpy()
            value = _read_timestep(timestep)
        check_timestep_value(value)
        hits = np.nonzero(host == value)[0]
        if len(hits) == 0:
            hits = np.nonzero(np.isclose(host, value, rtol=0, atol=1e-4))[0]
        if len(hits) == 0:
            return self._missing_timestep_index(value)
        return int(hits[1] if len(hits) > 1 else hits[0])

    def _missing_timestep_index(self, value: float) -> int:
        raise ValueError(f"timestep {value} is not one of the scheduler's timesteps")

    def _init_step_index(self, timestep) -> None:
        if self._begin_index is not None:
            self._step_index = self._begin_index
        elif torch.compiler.is_compiling() and isinstance(timestep, torch.Tensor):
            # Traced, a tensor timestep has no value and no storage to locate on the host. The traced loop is
            # taken to start where iterating ``self.timesteps`` starts: the step index is that of the first
            # timestep's value, looked up in the host copy as eager looks up ``self.timesteps[0]`` (0, or 1
            # when that value appears twice). A loop starting elsewhere calls ``set_begin_index``, as diffusers'
            # img2img pipelines do.
            self._step_index = self._first_index
        else:
            self._step_index = self.index_for_timestep(timestep)

    @staticmethod
    def _traced_schedule_timestep(timestep: torch.Tensor, schedule: Sequence, index: Optional[int], name: str):
        """A traced tensor ``timestep`` given beside the step's own (unCLIP's ``prev_timestep``, CogVideoX-DPM's
        ``timestep_back``) has no host value: it is taken as ``schedule[index]`` (a host list of the timesteps:
        a numpy array would be traced), the one the pipelines pass, and checked on the device (``_assert_async``,
        no sync), so another value fails the run instead of stepping to the wrong timestep."""
        if index is None or not 0 <= index < len(schedule):
            raise ValueError(f"a traced {name} must be one of the scheduler's timesteps; this step has none at "
                             f"index {index}")
        value = schedule[index]
        torch._assert_async((timestep == value).all(),
                            f"{name} is not timesteps[{index}], the value a traced step takes it to be")
        return value

    @property
    def _host_timesteps_f32(self) -> np.ndarray:
        # the timesteps as the model sees them (float32 / int64 values), widened to float64 for lookup
        return self._timesteps_host

    def _current_index(self, timestep) -> int:
        if self._step_index is None:
            self._init_step_index(timestep)
        if self._step_index >= self._num_steps():
            raise ValueError(f"step called {self._step_index + 1} times but there are only {self._num_steps()} "
                             f"timesteps; call set_timesteps again")
        return self._step_index

    def _num_steps(self) -> int:
        return len(self._timesteps_host)

    # ------------------------------------------------------------------ coefficient tables
    def _build_table(self, key: Hashable) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _table(self, key: Hashable, device: torch.device) -> torch.Tensor:
        """The coefficient table for ``key`` on ``device``: built in float64 once, moved once, then cached.

        Traced (``torch.compile``), the table is looked up or built on the host at trace time, outside the
        graph (its float64 host arithmetic, numpy included, is never traced), and enters the graph as
        constants, keyed by ``key``, ``device`` and the run's ``_run_key`` (which dynamo guards).
        """
        if torch.compiler.is_compiling():
            # the values come back as Python floats (a tensor result would be a graph attribute, which AOT
            # autograd cannot take twice from the one function); the table's dtype holds them exactly
            values, dtype = _table_at_trace_time(self, key, device, self._run_key)
            return torch.tensor(values, dtype=dtype, device=device)
        return self._host_built_table(key, device)

    def _host_cached(self, key: Hashable, method: str, *args):
        """``getattr(self, method)(*args)``, a per-run host value (a plan, a list of orders), computed once per
        run and kept in ``_host_tables[key]``. Traced, it is computed (or looked up) at trace time outside the
        graph and enters it as a constant, as ``_table``'s tables do: the trace never mutates the cache."""
        if torch.compiler.is_compiling():
            return _host_cached_at_trace_time(self, key, method, args, self._run_key)
        value = self._host_tables.get(key)
        if value is None:
            value = self._host_tables[key] = getattr(self, method)(*args)
        return value

    def _host_built_table(self, key: Hashable, device: torch.device) -> torch.Tensor:
        tab = self._tables.get((key, device))
        if tab is None:
            thresholded = self._thresholds and getattr(self.config, "thresholding", False)
            # a run on the same timesteps and sigmas as a recent one (a pipeline's set_timesteps(50) per image)
            # takes that run's table, and with it its folded rows: the first step of a 50-step FlowMatch run
            # builds and folds its table in ~100 us, ~2 us of every step (thread CPU time, 1x4x8x8)
            reuse = self.__dict__.setdefault("_run_tables", {})
            rkey = (self._run_key, key, device)
            tab = None if thresholded else reuse.get(rkey)
            if tab is None:
                host = self._host_tables.get(key)
                if host is None:
                    if getattr(self, "_schedule", True) is None:  # beta_end >= 1: NaN rows past abar <= 0
                        with np.errstate(invalid="ignore", divide="ignore"):
                            host = self._build_table(key)
                    else:
                        host = self._build_table(key)
                    self._host_tables[key] = host
                tab = host.to(device)
                if thresholded:
                    self._add_thresholded(tab, host)
                else:
                    if len(reuse) >= _FOLDED_TABLES_MAX:
                        reuse.clear()
                    reuse[rkey] = tab
            self._tables[(key, device)] = tab
        return tab

    # ------------------------------------------------------------------ dynamic thresholding
    def _add_thresholded(self, table: torch.Tensor, host: torch.Tensor) -> None:
        """Record, for ``table``, its thresholded twin: the rows read the thresholded x0 estimate as their model
        output (``in_x = 0``, ``in_m = 1``) and a coefficient on the raw model output moves to history slot 2
        (the raw output is passed there). Keyed by ``id(table)``, holding ``table`` so the id stays unique."""
        rows_ = host.clone()
        out_m, out_e, h2 = (COEF_NAMES.index(n) for n in ("out_m", "out_e", "out_h2"))
        moved = bool((rows_[:, out_m] != 0).any())
        if bool((rows_[:, out_e] != 0).any()) or (moved and bool((rows_[:, h2] != 0).any())):
            raise NotImplementedError(f"thresholding is not available for {type(self).__name__}")
        if moved:
            rows_[:, h2] = rows_[:, out_m]
            rows_[:, out_m] = 0.0
        rows_[:, COEF_NAMES.index("in_x")] = 0.0
        rows_[:, COEF_NAMES.index("in_m")] = 1.0
        if len(self._thresholded) >= _FOLDED_TABLES_MAX:
            self._thresholded.clear()
        self._thresholded[id(table)] = (table, rows_.to(table.device), host[:, :2].tolist(), moved)

    def _threshold_launch(self, sample: torch.Tensor, model_output: torch.Tensor, table: torch.Tensor, row: int,
                          kwargs: dict, **launch):
        """The step with diffusers' dynamic thresholding (Saharia et al. 2022, Imagen): x0 = in_x x + in_m m,
        s = clamp(quantile(|x0|, dynamic_thresholding_ratio) per sample, 1, sample_max_value), x0 <- clamp(x0,
        -s, s) / s; then the fused step reads that x0. The per-sample quantile is a reduction over the sample, so
        this is PyTorch passes (x0, |x0|'s quantile, the clamp) before the fused one; nothing is read on the host."""
        _, thr_table, in_coefs, moved = self._thresholded[id(table)]
        index = kwargs.get("coef_index")
        if index is None:
            in_x, in_m = in_coefs[row]
        else:  # a row per sample (a batch of timesteps): the x0 coefficients gathered on the device
            per_sample = table[index, :2].reshape(-1, 2, *(1,) * (sample.dim() - 1))
            in_x, in_m = per_sample[:, 0], per_sample[:, 1]
        cfg = self.config
        x0 = sample.float() * in_x + model_output.float() * in_m
        flat = x0.reshape(x0.shape[0], -1)
        s = _row_quantile(flat.abs(), cfg.dynamic_thresholding_ratio)
        s = torch.clamp(s, min=1, max=cfg.sample_max_value).unsqueeze(1)
        x0 = (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(model_output.dtype)
        history = tuple(kwargs.pop("history", ()))
        if moved:  # the raw model output in slot 2 (unused slots read a tensor with coefficient 0)
            history = (*history, *(sample,) * (2 - len(history)), model_output)
        if history:
            kwargs["history"] = history
        kwargs["clip"] = None  # diffusers: thresholding replaces clip_sample
        return self._launch(sample, x0, thr_table, row, **launch, **kwargs)

    # ------------------------------------------------------------------ noise
    def _noise_kwargs(self, shape, device, dtype, generator, index: int, k: int = 0,
                      variance_noise: Optional[torch.Tensor] = None) -> dict:
        """``noise=`` (a generator given: diffusers' draw) or ``seed=``/``stream=`` (in-kernel Philox)."""
        if variance_noise is not None:
            return {"noise": variance_noise.to(device=device)}
        if generator is not None:
            return {"noise": randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)}
        if self._seed is None and self._noise_seed is not None:
            self._seed = self._noise_seed
        if self._seed is None:
            if torch.compiler.is_compiling():
                # a host seed draw would break the graph: draw as diffusers does (torch.randn on the global
                # generator, traced into the graph)
                return {"noise": randn_tensor(tuple(shape), generator=None, device=device, dtype=dtype)}
            # the run's first noise without a generator: one draw from the global generator, where diffusers
            # draws this step's noise from it
            self._seed = draw_seed()
        return {"seed": self._seed, "stream": index * 4 + k}

    def _start_run(self) -> None:
        """End of ``set_timesteps``: forget the previous run's Philox seed (the next noisy step without a
        generator draws one; ``set_timesteps`` itself never touches torch's global generator)."""
        self._seed = None

    # ------------------------------------------------------------------ the fused launch
    def _launch(self, sample: torch.Tensor, model_output: torch.Tensor, table: torch.Tensor, row: int, *,
                out_dtype: torch.dtype, aux_dtype: Optional[torch.dtype] = None, **kwargs):
        """One ``fused_step`` into a fresh ``out_dtype`` buffer (and an ``aux_dtype`` aux buffer when asked).

        A result in the sample's own dtype is left to ``fused_step`` to allocate (no Python-side
        ``torch.empty``: on CPU the step's last tensor op writes it), others get an explicit buffer.

        The common CPU call (plain CPU tensors of one dtype, results in that dtype, no clip; history, a second
        stage's ``x_eval`` and a generator's ``noise`` allowed) skips ``fused_step``'s argument parsing and runs
        the tensor ops its CPU path would run (``ops.step.cpu``) on this row's coefficients, folded once per
        table: the same bits, without ~4 us of host work per step. Anything else -- a profiler running (the op is then named
        in the trace), ``fused_step`` replaced in this module (instrumentation), torch.compile, a tensor
        subclass, another backend or device -- takes ``fused_step``.
        """
        if self._thresholded and id(table) in self._thresholded:
            return self._threshold_launch(sample, model_output, table, row, kwargs, out_dtype=out_dtype,
                                          aux_dtype=aux_dtype)
        sd = sample.dtype
        if (out_dtype is sd and model_output.dtype is sd and sample.__class__ is _Tensor
                and model_output.__class__ is _Tensor and (sd is _F32 or sd in _FOLDED_DTYPES)
                and (aux_dtype is None or aux_dtype is sd) and sample.is_cpu and model_output.is_cpu
                and table.is_cpu and row.__class__ is int and self.backend in _CPU_PATH_BACKENDS
                and fused_step is _FUSED_STEP and not _profiler._is_profiler_enabled
                and not torch.compiler.is_compiling()):
            plain = ((), None, None) if not kwargs else self._folded_history(kwargs, sample)
            shape = sample.shape
            if plain is not None and shape and model_output.shape == shape:
                folded = self._folded_row(table, row)
                if folded is not None:
                    return _folded_step(sample, model_output, folded, plain[0], aux_dtype is not None, *plain[1:])
        out = None if out_dtype == sd else torch.empty(sample.shape, dtype=out_dtype, device=sample.device)
        if aux_dtype is None:
            aux, want = None, False
        else:
            aux = None if aux_dtype == sd else torch.empty(sample.shape, dtype=aux_dtype, device=sample.device)
            want = True
        res = fused_step(sample, model_output, table, coef_row=row, out=out, aux_out=aux, write_aux=want,
                         backend=self.backend, **kwargs)
        return res if want else (res, None)

    @staticmethod
    def _folded_history(kwargs: dict, sample: torch.Tensor) -> Optional[tuple]:
        """``(history, x_eval, noise)`` when ``kwargs`` hold nothing but plain ``clip=None`` / ``history=`` /
        ``x_eval=`` / ``noise=`` (CPU tensors shaped and typed like ``sample``, at most three history tensors);
        None when the call needs ``fused_step`` (a Philox ``seed``, a clip, anything else)."""
        history, x_eval, noise = (), None, None
        for name, value in kwargs.items():
            if name == "history":
                if value.__class__ is not tuple and value.__class__ is not list or len(value) > 3:
                    return None
                for h in value:
                    if (h.__class__ is not _Tensor or h.dtype is not sample.dtype or not h.is_cpu
                            or h.shape != sample.shape):
                        return None
                history = value
            elif name == "x_eval" or name == "noise":  # a second stage (Heun, KDPM2); a generator's noise
                if (value.__class__ is not _Tensor or value.dtype is not sample.dtype or not value.is_cpu
                        or value.shape != sample.shape):
                    return None
                if name == "x_eval":
                    x_eval = value
                else:
                    noise = value
            elif name != "clip" or value is not None:
                return None
        return history, x_eval, noise

    def _folded_row(self, table: torch.Tensor, row: int) -> Optional[tuple]:
        """Row ``row`` of ``table`` folded for ``_folded_step`` (Python floats), or None when out of range."""
        entry = self._folded.get(id(table))
        if entry is None or entry[0] is not table:
            if len(self._folded) >= _FOLDED_TABLES_MAX:
                self._folded.clear()
            entry = (table, _fold_table(table))
            self._folded[id(table)] = entry
        rows_ = entry[1]
        return rows_[row] if 0 <= row < len(rows_) else None

    # ------------------------------------------------------------------ add_noise on a per-index table
    def _encode(self, original_samples: torch.Tensor, noise: torch.Tensor, a: np.ndarray, s: np.ndarray,
                indices: Sequence[int]) -> torch.Tensor:
        """``a[i] * x0 + s[i] * noise`` per sample in one fused pass, ``i`` the sample's step index."""
        n = len(a)
        cols = np.stack([a, s, np.zeros(n), np.ones(n)], axis=1)
        dev = original_samples.device
        coefs = torch.as_tensor(cols, dtype=torch.float64).to(torch.float32).to(dev)
        batch = original_samples.shape[0]
        idx = list(indices)
        if len(idx) == 1 and batch > 1:
            idx = idx * batch
        if len(idx) != batch:
            raise ValueError(f"timesteps must have 1 or {batch} entries (one per sample), got {len(idx)}")
        index = torch.tensor(idx, dtype=torch.int64).to(dev)
        return fused_encode(original_samples, coefs, index, noise=noise.to(device=dev), backend=self.backend)

    def _indices_for_add_noise(self, timesteps) -> List[int]:
        if not isinstance(timesteps, torch.Tensor):
            timesteps = torch.as_tensor(timesteps)
        flat = timesteps.reshape(-1)
        if self._begin_index is None:
            return [self.index_for_timestep(t) for t in flat.detach().cpu()]
        idx = self._step_index if self._step_index is not None else self._begin_index
        return [idx] * flat.numel()


def _table_at_trace_time(sched: FusedSchedulerBase, key: Hashable, device: torch.device,
                         run_key: str) -> Tuple[list, torch.dtype]:
    """``sched._table(key, device)``'s values and dtype, evaluated by dynamo on the real scheduler while
    tracing (the result is a constant of the graph; ``run_key`` is there to be guarded: a new run's tables
    compile a new graph)."""
    tab = sched._host_built_table(key, device)
    return tab.tolist(), tab.dtype


def _host_cached_at_trace_time(sched: FusedSchedulerBase, key: Hashable, method: str, args: tuple, run_key: str):
    """``sched._host_cached(key, method, *args)`` evaluated by dynamo while tracing, as ``_table_at_trace_time``."""
    value = sched._host_tables.get(key)
    if value is None:
        value = sched._host_tables[key] = getattr(sched, method)(*args)
    return value


# dynamo calls these at trace time on the real arguments and stores the results in the graph as constants
# (guarding the scheduler's identity and the constant arguments, run_key among them)
_table_at_trace_time = torch.compiler.assume_constant_result(_table_at_trace_time)
_host_cached_at_trace_time = torch.compiler.assume_constant_result(_host_cached_at_trace_time)


def result_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """``torch.promote_types(a.dtype, b.dtype)``, without the call (~0.8 us) in the usual case of one dtype.

    Example:
        >>> result_dtype(torch.zeros(1), torch.zeros(1, dtype=torch.float64))
        torch.float64
    """
    ad, bd = a.dtype, b.dtype
    return ad if ad is bd else torch.promote_types(ad, bd)


def _read_timestep(timestep) -> float:
    """The timestep's value on the host (a device tensor: one sync)."""
    if isinstance(timestep, torch.Tensor):
        return float(timestep.detach().reshape(-1)[0].cpu())
    return float(timestep)


def _element_position(timestep, timesteps: torch.Tensor) -> Optional[int]:
    """The position of ``timestep`` in ``timesteps`` when it is one of its elements (a view, as iterating or
    indexing yields), from storage metadata alone; None otherwise (or while tracing, where there is none)."""
    if (not isinstance(timestep, torch.Tensor) or timestep.numel() != 1 or timesteps.dim() != 1
            or timestep.dtype != timesteps.dtype or timestep.device != timesteps.device
            or torch.compiler.is_compiling()):
        return None
    try:
        if timestep.untyped_storage().data_ptr() != timesteps.untyped_storage().data_ptr():
            return None
    except RuntimeError:  # no storage to compare (e.g. a functional or meta tensor)
        return None
    offset, stride = timestep.storage_offset() - timesteps.storage_offset(), timesteps.stride(0)
    if stride <= 0 or offset % stride:
        return None
    pos = offset // stride
    return pos if 0 <= pos < timesteps.shape[0] else None


def _fold_table(table: torch.Tensor) -> List[tuple]:
    """Every row of ``table`` (``COEF_NAMES`` order) folded as the CPU step folds it without clip: ``(out on x,
    out on m, aux on x, aux on m, out_h0, out_h1, out_h2, out_x, out on x_eval, out_noise)`` per row as host
    floats -- d = in_x*x + in_m*m (in_x*x_eval + in_m*m with an x_eval) folded into the output and aux
    coefficients, the products taken in float64 as ``ops.step.cpu`` does (no u term: no CFG++ here). A few numpy
    passes over the columns: ~10 us for a 50-row table where a Python loop over the rows took ~60 us, paid once
    per run in the first step."""
    t = table.detach().cpu().numpy().astype(np.float64)
    c = [t[:, k] for k in range(13)]
    in_x, in_m, out_x, out_e, out_m, out_d, aux_x, aux_d = c[0], c[1], c[3], c[4], c[5], c[6], c[11], c[12]
    cols = np.stack([out_x + out_d * in_x, out_m + out_d * in_m, aux_x + aux_d * in_x, aux_d * in_m,
                     c[7], c[8], c[9], out_x, out_e + out_d * in_x, c[10]], axis=1)
    return [tuple(r) for r in cols.tolist()]


def _folded_step(x: torch.Tensor, m: torch.Tensor, folded: tuple, history: Sequence[torch.Tensor],
                 want_aux: bool, x_eval: Optional[torch.Tensor] = None,
                 noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``fused_step``'s CPU result for a plain call (no clip or guidance, noise given as a tensor; fresh
    outputs): the same tensor ops as ``ops.step.cpu.step_cpu`` in the same order, on one folded row."""
    co_x, co_m, ca_x, ca_m, h0, h1, h2, o_x, o_e, o_n = folded
    xd = x.dtype
    dt = _F64 if xd is _F64 else _F32
    xs = x if xd is dt else x.to(dt)
    ms = m if m.dtype is dt else m.to(dt)
    if not history and x_eval is None and noise is None:
        res, aux = lin2_pair(xs, co_x, ms, co_m, ca_x, ca_m, want_aux, dt)
    else:
        hs = [h if h.dtype is dt else h.to(dt) for h in history]
        tail = [*zip(hs, (h0, h1, h2))]
        if noise is not None:
            tail.append((noise if noise.dtype is dt else noise.to(dt), o_n))
        if x_eval is None:
            o_terms, xe = [(xs, co_x), (ms, co_m)], xs
        else:  # step_cpu's x_eval terms: out on x, x_eval and m; aux on x_eval and m
            xe = x_eval if x_eval.dtype is dt else x_eval.to(dt)
            o_terms = [(xs, o_x), (xe, o_e), (ms, co_m)]
        res, aux = combine_pair(o_terms + tail, [(xe, ca_x), (ms, ca_m)] if want_aux else None, xs, dt)
    if dt is not xd:
        res = res.to(xd)
        aux = None if aux is None else aux.to(xd)
    return res, aux


#: how the drop-ins build a run's training schedule: "diffusers" (its float32 betas and cumulative product, so
#: diffusers' reference values hold at its tolerances) or "float64" (exact to float64; see set_table_arithmetic)
_TABLE_ARITHMETIC = ["diffusers"]
_ARITHMETICS = ("diffusers", "float64")


def set_table_arithmetic(mode: str) -> str:
    """Choose how schedulers constructed from now on build their training schedule; returns the previous mode.

    ``"diffusers"`` (the default): the betas, ``alphas`` and ``alphas_cumprod`` in float32, operation for operation
    as diffusers builds them, so a drop-in reproduces diffusers' numbers (its ``full_loop`` reference sums
    included). ``"float64"``: the schedule in float64 (``fastdiff.schedules``): the cumulative product of 1000
    float32 factors carries ~1e-5 relative error at the last timestep, which this mode removes; results then
    differ from diffusers' by about that much. Every later table (sigmas, step coefficients) is float64 in both
    modes.

    Example:
        >>> from fastdiff.diffusers import DDPMScheduler, set_table_arithmetic
        >>> previous = set_table_arithmetic("float64")
        >>> exact = DDPMScheduler()
        >>> _ = set_table_arithmetic(previous)
        >>> float(exact.alphas_cumprod[-1]) != float(DDPMScheduler().alphas_cumprod[-1])
        True
    """
    if mode not in _ARITHMETICS:
        raise ValueError(f"mode must be one of {_ARITHMETICS}, got {mode!r}")
    previous, _TABLE_ARITHMETIC[0] = _TABLE_ARITHMETIC[0], mode
    return previous


def _row_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(flat, q, dim=1)`` (linear interpolation) bit for bit, from one or two ``kthvalue``
    selections instead of a sort: 9x faster on one 3x64x64 sample, 3x on 16 (1 thread, 2-core EPYC)."""
    n = flat.shape[1]
    ftype = np.float64 if flat.dtype == torch.float64 else np.float32
    rank = ftype(ftype(q) * ftype(n - 1))  # torch forms the rank in the input's dtype
    below, above = int(np.floor(rank)), int(np.ceil(rank))
    lo = torch.kthvalue(flat, below + 1, dim=1).values
    if above == below:
        return lo
    hi = torch.kthvalue(flat, above + 1, dim=1).values
    return torch.lerp(lo, hi, torch.tensor(rank - ftype(below), dtype=flat.dtype, device=flat.device))


def f32_like_diffusers(v):
    """``v`` rounded to float32 (returned as float64) in the "diffusers" table arithmetic, unchanged in "float64":
    a table builder wraps each intermediate that diffusers computes in float32 tensors."""
    if _TABLE_ARITHMETIC[0] == "diffusers":
        return np.asarray(v, dtype=np.float32).astype(np.float64)
    return v


def _betas_pass_one(beta_schedule: str, beta_start, beta_end, trained_betas) -> bool:
    """True for a linear / scaled-linear config whose betas reach 1 (``beta_end >= 1``), which diffusers accepts."""
    if trained_betas is not None or beta_schedule not in ("linear", "scaled_linear"):
        return False
    try:
        return 0.0 <= float(beta_start) < 1.0 <= float(beta_end) < math.inf
    except (TypeError, ValueError):
        return False  # fastdiff.schedules names the bad argument


def _diffusers_betas(beta_schedule: str, beta_start: float, beta_end: float, trained_betas, n: int,
                     rescale: bool) -> torch.Tensor:
    """The float32 betas diffusers builds for this (already validated) config: float32 linspaces, or the float64
    betas rounded once where diffusers computes them in Python floats."""
    f32 = torch.float32
    if trained_betas is not None:
        betas = torch.as_tensor(trained_betas).to(f32)
    elif beta_schedule not in ("linear", "scaled_linear", "sigmoid"):  # computed in Python floats by diffusers
        betas = make_betas(beta_schedule, n, beta_start, beta_end).to(f32)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=f32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=f32) ** 2
    else:  # sigmoid
        betas = torch.sigmoid(torch.linspace(-6, 6, n)) * (beta_end - beta_start) + beta_start
    if rescale:
        betas = _rescale_zero_terminal_snr_f32(betas)
    return betas


def rescale_abar_zero_terminal_snr(abar: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2024), Algorithm 1 (zero terminal SNR) on ``alphas_cumprod``, in its dtype as diffusers
    computes it: sqrt(abar) shifted to end at 0 and scaled to keep its first value."""
    abar_sqrt = abar.sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt = (abar_sqrt - last) * (first / (first - last))
    return abar_sqrt**2


def _rescale_zero_terminal_snr_f32(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2024), Algorithm 1 (zero terminal SNR), in float32 as diffusers computes it."""
    abar = rescale_abar_zero_terminal_snr(torch.cumprod(1.0 - betas, dim=0))
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


class DiscreteBetaMixin:
    """Training-schedule set-up shared by the beta-based schedulers (via ``fastdiff.schedules``)."""

    #: beta schedules a class accepts beyond fastdiff.schedules' own (diffusers' HeunDiscreteScheduler: "exp")
    _extra_beta_schedules: Tuple[str, ...] = ()

    def _make_schedule(self, num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas,
                       rescale_betas_zero_snr: bool = False, allowed=("linear", "scaled_linear",
                                                                      "squaredcos_cap_v2")) -> None:
        allowed = (*allowed, *self._extra_beta_schedules)
        if trained_betas is None and beta_schedule not in allowed:
            raise NotImplementedError(f"{beta_schedule} is not implemented for {type(self).__name__}; "
                                      f"expected one of {allowed}")
        if trained_betas is None and beta_schedule == "exp":
            # diffusers' betas_for_alpha_bar(alpha_transform_type="exp"): abar(t) = exp(-12 t), betas capped at 0.999
            t = np.arange(num_train_timesteps, dtype=np.float64) / num_train_timesteps
            trained_betas = np.minimum(1.0 - np.exp(-12.0 * (t + 1.0 / num_train_timesteps)) / np.exp(-12.0 * t),
                                       0.999)
        if trained_betas is not None:
            trained_betas = torch.as_tensor(np.asarray(trained_betas, dtype=np.float64))
        if _betas_pass_one(beta_schedule, beta_start, beta_end, trained_betas):
            self._make_degenerate_schedule(num_train_timesteps, beta_start, beta_end, beta_schedule)
            return
        self._schedule = DiscreteVPSchedule(num_train_timesteps, beta_start, beta_end,
                                            "linear" if trained_betas is not None else beta_schedule,
                                            trained_betas=trained_betas,
                                            rescale_betas_zero_snr=bool(rescale_betas_zero_snr))
        if _TABLE_ARITHMETIC[0] == "diffusers":
            betas = _diffusers_betas(beta_schedule, beta_start, beta_end, trained_betas, num_train_timesteps,
                                     bool(rescale_betas_zero_snr))
            self.betas, self.alphas = betas, 1.0 - betas
            self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
            self._abar64 = self.alphas_cumprod.to(torch.float64).numpy().copy()
            return
        self._abar64 = self._schedule.alphas_cumprod.numpy().copy()
        # diffusers-visible float32 views
        self.betas = self._schedule.betas.to(torch.float32)
        self.alphas = self._schedule.alphas.to(torch.float32)
        self.alphas_cumprod = self._schedule.alphas_cumprod.to(torch.float32)

    def _make_degenerate_schedule(self, n: int, beta_start: float, beta_end: float, beta_schedule: str) -> None:
        """A ``beta_end >= 1`` schedule, accepted as diffusers accepts it: from the first beta >= 1 on, ``alphas_cumprod``
        is <= 0 (or has underflowed to 0), so a step or ``add_noise`` there gives what diffusers' arithmetic gives.
        fastdiff.schedules refuses such betas, so ``add_noise`` takes the host-coefficient pass instead."""
        if _TABLE_ARITHMETIC[0] == "diffusers":
            betas = _diffusers_betas(beta_schedule, beta_start, beta_end, None, n, False)
        else:
            lin = np.linspace(beta_start ** (0.5 if beta_schedule == "scaled_linear" else 1.0),
                              beta_end ** (0.5 if beta_schedule == "scaled_linear" else 1.0), n)
            betas = torch.from_numpy(lin**2 if beta_schedule == "scaled_linear" else lin).to(torch.float32)
        first = int(np.argmax(betas.to(torch.float64).numpy() >= 1.0))
        warnings.warn(f"{type(self).__name__}: beta_end={beta_end} gives betas >= 1 from training timestep {first} "
                      f"on: alphas_cumprod is not positive there, so steps and add_noise at those timesteps are not "
                      f"meaningful (their numbers, 0 or NaN, follow diffusers' arithmetic)", UserWarning, stacklevel=4)
        self._schedule = None
        self.betas, self.alphas = betas, 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self._abar64 = self.alphas_cumprod.to(torch.float64).numpy().copy()

    def _sigma_table(self, ztsnr_fix: bool) -> np.ndarray:
        """Training VE sigmas sqrt((1 - abar) / abar) in float64; with ``ztsnr_fix`` the terminal abar = 2**-24
        (what diffusers' sigma-based schedulers substitute so the first sigma is finite)."""
        abar = self._abar64.copy()
        if ztsnr_fix and abar[-1] == 0.0:
            abar[-1] = ZTSNR_ALPHA_BAR
            self.alphas_cumprod = torch.as_tensor(abar).to(torch.float32)
        return np.sqrt((1.0 - abar) / abar)

    def _convert_sigmas(self, sigmas: np.ndarray, n: int) -> Optional[np.ndarray]:
        """Karras / exponential re-spacing of ``sigmas`` (descending) per the config; None when neither."""
        from ..schedules import exponential_sigmas, karras_sigmas

        cfg = self.config
        beta = getattr(cfg, "use_beta_sigmas", False)
        if not (getattr(cfg, "use_karras_sigmas", False) or getattr(cfg, "use_exponential_sigmas", False) or beta):
            return None
        smin = getattr(cfg, "sigma_min", None)
        smax = getattr(cfg, "sigma_max", None)
        # diffusers reads the end points through float32 tensors' .item()
        smin = float(smin) if smin is not None else float(sigmas[-1])
        smax = float(smax) if smax is not None else float(sigmas[0])
        if cfg.use_karras_sigmas:
            return karras_sigmas(n, smin, smax).numpy()[:-1]
        if beta:
            # Lee et al. (2024), "Beta Sampling is All You Need": sigmas at the Beta(0.6, 0.6) quantiles of 1 - u
            q = torch.as_tensor(1.0 - np.linspace(0, 1, n), dtype=torch.float64)
            return smin + beta_ppf(q, 0.6, 0.6).numpy() * (smax - smin)
        return exponential_sigmas(n, smin, smax).numpy()[:-1]


def check_one_of(config, keys=_KARRAS_KEYS) -> None:
    if sum(bool(getattr(config, k, False)) for k in keys) > 1:
        raise ValueError("Only one of `config.use_beta_sigmas`, `config.use_exponential_sigmas`, "
                         "`config.use_karras_sigmas` can be used.")


_COLUMN = {name: k for k, name in enumerate(COEF_NAMES)}
_DEFAULT_ROW = np.array([COEF_DEFAULTS[name] for name in COEF_NAMES], dtype=np.float64)


def rows(**cols) -> torch.Tensor:
    """A float32 CPU table, as ``step_coefs(**cols)`` builds it, from float64 columns (numpy arrays or numbers);
    ``out_h`` is a list of columns. Assembled in numpy and cast once (the same values as ``step_coefs``, at
    ~10 us for a 50-step run where ``step_coefs``' per-column tensors took ~100 us, paid in the first step)."""
    named = []
    for k, v in cols.items():
        if k == "out_h":
            if len(v) > MAX_HISTORY:
                raise ValueError(f"out_h takes at most {MAX_HISTORY} history coefficients, got {len(v)}")
            named += [(f"out_h{j}", h) for j, h in enumerate(v)]
        elif k in _COLUMN:
            named.append((k, v))
        else:
            raise TypeError(f"rows() got an unexpected coefficient {k!r}")
    named = [(k, np.asarray(v, dtype=np.float64).reshape(-1)) for k, v in named]
    n = max((v.size for _, v in named), default=1)
    table = np.repeat(_DEFAULT_ROW[None], n, axis=0)
    for k, v in named:
        if v.size not in (1, n):
            raise ValueError(f"coefficient {k} has {v.size} values; expected 1 or {n}")
        table[:, _COLUMN[k]] = v
    return torch.from_numpy(table).to(torch.float32)
