"""Benchmark and profiling harness for the fastdiff ops.

Every benchmark is a *case* (one op in one representative configuration) with a
byte model -- each input read once, each output written once -- and a set of
*providers* that compute the same thing:

* ``fastdiff``  -- the op itself, ``backend="auto"`` (Triton on CUDA, the PyTorch path on CPU),
* ``eager``     -- the obvious multi-kernel PyTorch expression (what a pipeline writes by hand),
* ``compile``   -- ``torch.compile`` of the eager expression, timed after its compile,
* ``diffusers`` -- the equivalent ``diffusers`` call, when the package imports and the case has one.

Timing: on CUDA ``triton.testing.do_bench`` medians; on CPU medians of repeats,
all providers of a case interleaved in one process so drift hits them alike.
Each timed call rotates among several input sets whose total is twice the last-level
cache where memory allows (at most 64 sets and 1 GiB on CPU, so large CPU sizes can stay
cache-resident; :func:`floor_call` measures a copy under the same rotation), and the
"peak" is a device-to-device ``Tensor.copy_`` measured in the same run. Other modules add cases and providers in a few lines::

    from fastdiff import bench
    bench.register_case(bench.Case("dropin_ddim", "drop-in DDIM step", inputs={"x": 1, "eps": 1},
                                   writes={"out": 1}, group="dropin"))

    @bench.provider("dropin_ddim", "fastdiff")
    def _(spec):
        sched = make_my_scheduler(spec.device)      # built once, not timed
        return lambda inp: (sched.step(inp["eps"], 500, inp["x"]).prev_sample,)

Profiling: :func:`instrument_ops` names every public op call ``fastdiff::<op>``
in ``torch.profiler`` traces (and as NVTX ranges on CUDA); the Triton launchers
already appear as their ``torch.library`` names (``fastdiff::fused_step_``).
:func:`profile_sampling` runs a callable under both and summarises the time per op.

Example:
    >>> from fastdiff import bench
    >>> rep = bench.run_suite(device="cpu", sizes=["1x4x8x8"], dtypes=["fp32"],
    ...                       providers=["fastdiff", "eager"], ops=["step_ddim"], quick=True)
    >>> print(bench.format_table(rep))  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "PROVIDERS", "BASELINES", "DTYPES", "Spec", "Case", "Row", "Report", "Unavailable", "CASES",
    "register_case", "provider", "register_provider", "providers_for", "parse_size", "parse_dtype",
    "default_sizes", "load_plugins", "run_suite", "build_call", "floor_call", "format_table", "format_markdown", "plot_report", "geomean", "geomean_speedups",
    "measure_copy_bandwidth", "time_cuda", "time_interleaved", "rotating", "step_loop_overhead",
    "instrument_ops", "register_profiled", "profile_sampling", "ProfileResult", "op_range",
]

PROVIDERS = ("fastdiff", "eager", "compile", "diffusers")
BASELINES = ("eager", "compile", "diffusers")
DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# Plugins that register their own cases/providers on import, when present (samplers, drop-in schedulers).
PLUGIN_MODULES: List[str] = ["fastdiff.sampling_bench", "fastdiff.diffusers.bench"]


class Unavailable(RuntimeError):
    """Raised by a provider factory that cannot run here (missing package, unsupported dtype)."""


# --------------------------------------------------------------------------------------------------
# Cases and providers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What a provider is built for: the shape of ``x`` (the sample), its dtype and device."""

    shape: Tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def batch(self) -> int:
        return self.shape[0]

    def tensor_shape(self, mult: int = 1) -> Tuple[int, ...]:
        """Shape of a tensor holding ``mult`` copies of the batch (e.g. 2 for a CFG model output)."""
        return (mult * self.shape[0],) + tuple(self.shape[1:])


Factory = Callable[[Spec], Callable[[Dict[str, torch.Tensor]], Any]]


@dataclass
class Case:
    """One benchmarked op configuration.

    ``inputs`` and ``writes`` map tensor names to their size in multiples of
    ``numel(x)``; their sum times the item size is the byte count. Float inputs
    are made from ``inputs`` (N(0,1) values); ``extra_inputs`` adds index tensors
    and the like, which are too small to count. ``check`` names the providers
    whose outputs must match ``reference`` (default ``eager``) run on float32 copies of
    the inputs (omit noise-drawing cases: their RNGs differ).
    """

    name: str
    description: str
    inputs: Dict[str, int]
    writes: Dict[str, int]
    group: str = "other"
    extra_inputs: Optional[Callable[[Spec, torch.Generator], Dict[str, torch.Tensor]]] = None
    check: Tuple[str, ...] = ()
    op: str = ""  # the fastdiff call benchmarked, for reports
    reference: str = "eager"  # the provider whose fp32 output the ``check`` providers must match

    def bytes_moved(self, numel: int, dtype: torch.dtype) -> int:
        """Bytes a single pass must move: every input read once, every output written once."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return (sum(self.inputs.values()) + sum(self.writes.values())) * numel * itemsize

    def formula(self) -> str:
        reads = " + ".join(f"{k}*{n}" if k != 1 else n for n, k in self.inputs.items())
        writes = " + ".join(f"{k}*{n}" if k != 1 else n for n, k in self.writes.items())
        total = sum(self.inputs.values()) + sum(self.writes.values())
        return f"({reads}) read + ({writes}) written = {total} x N x itemsize"

    def make_inputs(self, spec: Spec, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        inp = {n: torch.randn(spec.tensor_shape(k), generator=gen, device=spec.device, dtype=torch.float32)
               .to(spec.dtype) for n, k in self.inputs.items()}
        if self.extra_inputs is not None:
            inp.update(self.extra_inputs(spec, gen))
        return inp

    def input_bytes(self, spec: Spec) -> int:
        return sum(self.inputs.values()) * spec.numel * torch.empty((), dtype=spec.dtype).element_size()


CASES: Dict[str, Case] = {}
_FACTORIES: Dict[Tuple[str, str], Factory] = {}


def register_case(case: Case) -> Case:
    """Add (or replace) a case; providers are registered separately with :func:`provider`."""
    if not isinstance(case, Case):
        raise TypeError(f"case must be a fastdiff.bench.Case, got {type(case).__name__}")
    CASES[case.name] = case
    return case


def register_provider(case: str, name: str, factory: Factory) -> Factory:
    """Register ``factory(spec) -> fn(inputs) -> tuple of outputs`` for ``case``.

    The factory does the untimed setup (coefficient tables, schedulers) and may
    raise :class:`Unavailable` to skip cleanly. ``compile`` needs no factory: it
    is ``torch.compile`` of the ``eager`` one.
    """
    if name not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {name!r}")
    if name == "compile":
        raise ValueError("the compile provider is derived from eager; register an eager provider instead")
    _FACTORIES[(case, name)] = factory
    return factory


def provider(case: str, name: str) -> Callable[[Factory], Factory]:
    """Decorator form of :func:`register_provider`."""
    return lambda factory: register_provider(case, name, factory)


def providers_for(case: str) -> List[str]:
    """Providers that apply to ``case`` (``compile`` whenever there is an ``eager``)."""
    names = [p for p in PROVIDERS if (case, p) in _FACTORIES]
    if "eager" in names:
        names.insert(names.index("eager") + 1, "compile")
    return names


def _diffusers():
    try:
        return importlib.import_module("diffusers")
    except Exception as exc:  # any import failure means "not here"
        raise Unavailable(f"diffusers not importable ({type(exc).__name__})") from None


def _tuple(out) -> Tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _bc(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))


# ---- the representative configurations ----------------------------------------------------------
# One schedule (SD-style scaled_linear, 1000 steps) and one mid-trajectory step: t=500 -> 480
# (50 inference steps), previous step 520 for the multistep history.
_T, _T_PREV, _T_HIST = 500, 480, 520
_GUIDANCE = 7.5
_LANGEVIN_H = 0.01


@functools.lru_cache(maxsize=None)
def _sched():
    from .schedules import DiscreteVPSchedule

    return DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")


def _alpha_sigma(t: int) -> Tuple[float, float]:
    abar = float(_sched().alphas_cumprod[t])
    return math.sqrt(abar), math.sqrt(1.0 - abar)


def _diffusers_kwargs() -> Dict[str, Any]:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _timesteps(spec: Spec, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    return {"t": torch.randint(0, 1000, (spec.batch,), generator=gen, device=spec.device)}


def _ddim_coefs(device) -> torch.Tensor:
    from .ops.step import step_coefs

    a, s = _alpha_sigma(_T)
    ap, sp = _alpha_sigma(_T_PREV)
    return step_coefs(in_x=1 / a, in_m=-s / a, out_d=ap, out_m=sp, guidance=_GUIDANCE, device=device)


def _ddim_eager() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    # Constants are host floats captured here, outside the traced/timed function.
    a, s = _alpha_sigma(_T)
    ap, sp = _alpha_sigma(_T_PREV)

    def step(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        x0 = (x - s * eps) / a
        return ap * x0 + sp * eps

    return step


def _diffusers_ddim(spec: Spec):
    d = _diffusers()
    sched = d.DDIMScheduler(**_diffusers_kwargs(), clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(50, device=spec.device)
    return sched


# add_noise: x_t = a_t x0 + s_t noise, noise given (the diffusers API).
register_case(Case(
    "add_noise", "forward noising with given noise, per-sample timesteps", inputs={"x0": 1, "noise": 1},
    writes={"x_t": 1}, extra_inputs=_timesteps, group="encode", check=("fastdiff", "compile", "diffusers"),
    op="fastdiff.add_noise(x0, t, sched, noise)"))


@provider("add_noise", "fastdiff")
def _add_noise_fd(spec: Spec):
    import fastdiff

    sched = _sched()
    return lambda inp: (fastdiff.add_noise(inp["x0"], inp["t"], sched, inp["noise"]),)


def _ac_tables(device) -> Tuple[torch.Tensor, torch.Tensor]:
    s = _sched()
    return (s.sqrt_alphas_cumprod.to(device=device, dtype=torch.float32),
            s.sqrt_one_minus_alphas_cumprod.to(device=device, dtype=torch.float32))


@provider("add_noise", "eager")
def _add_noise_eager(spec: Spec):
    sa, so = _ac_tables(spec.device)

    def fn(inp):
        x0, t = inp["x0"], inp["t"]
        a = _bc(sa[t].to(x0.dtype), x0.dim())
        s = _bc(so[t].to(x0.dtype), x0.dim())
        return (a * x0 + s * inp["noise"],)

    return fn


@provider("add_noise", "diffusers")
def _add_noise_diffusers(spec: Spec):
    sched = _diffusers().DDPMScheduler(**_diffusers_kwargs())
    return lambda inp: (sched.add_noise(inp["x0"], inp["noise"], inp["t"]),)


# encode_v: x_t and the v-prediction target from in-kernel noise (training-step encoding).
register_case(Case(
    "encode_v", "noised sample + v target, in-kernel noise", inputs={"x0": 1}, writes={"x_t": 1, "v": 1},
    extra_inputs=_timesteps, group="encode",
    op="fastdiff.add_noise_with_target(x0, t, sched, seed=0, target='v_prediction')"))


@provider("encode_v", "fastdiff")
def _encode_v_fd(spec: Spec):
    import fastdiff

    sched = _sched()
    return lambda inp: fastdiff.add_noise_with_target(inp["x0"], inp["t"], sched, seed=0, target="v_prediction")


@provider("encode_v", "eager")
def _encode_v_eager(spec: Spec):
    sa, so = _ac_tables(spec.device)

    def fn(inp):
        x0, t = inp["x0"], inp["t"]
        noise = torch.randn_like(x0)
        a = _bc(sa[t].to(x0.dtype), x0.dim())
        s = _bc(so[t].to(x0.dtype), x0.dim())
        return a * x0 + s * noise, a * noise - s * x0

    return fn


@provider("encode_v", "diffusers")
def _encode_v_diffusers(spec: Spec):
    sched = _diffusers().DDPMScheduler(**_diffusers_kwargs(), prediction_type="v_prediction")

    def fn(inp):
        x0, t = inp["x0"], inp["t"]
        noise = torch.randn_like(x0)
        return sched.add_noise(x0, noise, t), sched.get_velocity(x0, noise, t)

    return fn


# step_ddim: (x, eps) -> x_prev, eta = 0.
register_case(Case(
    "step_ddim", "DDIM step (eps prediction, eta=0)", inputs={"x": 1, "eps": 1}, writes={"out": 1},
    group="step", check=("fastdiff", "compile", "diffusers"), op="fastdiff.fused_step(x, eps, coefs)"))


@provider("step_ddim", "fastdiff")
def _ddim_fd(spec: Spec):
    import fastdiff.ops.step as op  # looked up per call, so instrument_ops can name it

    coefs = _ddim_coefs(spec.device)
    return lambda inp: (op.fused_step(inp["x"], inp["eps"], coefs),)


@provider("step_ddim", "eager")
def _ddim_eager_f(spec: Spec):
    step = _ddim_eager()
    return lambda inp: (step(inp["x"], inp["eps"]),)


@provider("step_ddim", "diffusers")
def _ddim_diffusers(spec: Spec):
    sched = _diffusers_ddim(spec)
    return lambda inp: (sched.step(inp["eps"], _T, inp["x"], eta=0.0).prev_sample,)


# step_cfg: classifier-free guidance folded into the DDIM step; model output is [uncond; cond].
register_case(Case(
    "step_cfg", "DDIM step with CFG (doubled model output)", inputs={"x": 1, "eps2": 2}, writes={"out": 1},
    group="step", check=("fastdiff", "compile", "diffusers"),
    op="fastdiff.fused_step(x, eps2, coefs, guidance=True)"))


@provider("step_cfg", "fastdiff")
def _cfg_fd(spec: Spec):
    import fastdiff.ops.step as op

    coefs = _ddim_coefs(spec.device)
    return lambda inp: (op.fused_step(inp["x"], inp["eps2"], coefs, guidance=True),)


def _guided(eps2: torch.Tensor) -> torch.Tensor:
    uncond, cond = eps2.chunk(2)
    return uncond + _GUIDANCE * (cond - uncond)


@provider("step_cfg", "eager")
def _cfg_eager(spec: Spec):
    step = _ddim_eager()
    return lambda inp: (step(inp["x"], _guided(inp["eps2"])),)


@provider("step_cfg", "diffusers")
def _cfg_diffusers(spec: Spec):
    sched = _diffusers_ddim(spec)  # a diffusers pipeline: guidance in torch, then scheduler.step
    return lambda inp: (sched.step(_guided(inp["eps2"]), _T, inp["x"], eta=0.0).prev_sample,)


# step_dpmpp2m: DPM-Solver++(2M) (Lu et al. 2022): one history tensor in, the new x0 estimate out.
def _dpm_constants():
    (a_t, s_t), (a_0, s_0), (a_1, s_1) = _alpha_sigma(_T_PREV), _alpha_sigma(_T), _alpha_sigma(_T_HIST)
    lam = [math.log(a / s) for a, s in ((a_t, s_t), (a_0, s_0), (a_1, s_1))]
    h, h0 = lam[0] - lam[1], lam[1] - lam[2]
    r0 = h0 / h
    e = a_t * math.expm1(-h)
    return dict(a0=a_0, s0=s_0, ratio=s_t / s_0, e=e, r0=r0)


register_case(Case(
    "step_dpmpp2m", "DPM-Solver++(2M) step (one history in, x0 estimate out)",
    inputs={"x": 1, "eps": 1, "hist": 1}, writes={"out": 1, "x0": 1}, group="step",
    check=("fastdiff", "compile"), op="fastdiff.fused_step(x, eps, coefs, history=[hist], write_aux=True)"))


@provider("step_dpmpp2m", "fastdiff")
def _dpm_fd(spec: Spec):
    import fastdiff.ops.step as op

    c = _dpm_constants()
    coefs = op.step_coefs(in_x=1 / c["a0"], in_m=-c["s0"] / c["a0"], out_x=c["ratio"],
                       out_d=-c["e"] * (1 + 0.5 / c["r0"]), out_h=[0.5 * c["e"] / c["r0"]], aux_d=1.0,
                       device=spec.device)
    return lambda inp: op.fused_step(inp["x"], inp["eps"], coefs, history=[inp["hist"]], write_aux=True)


@provider("step_dpmpp2m", "eager")
def _dpm_eager(spec: Spec):
    c = _dpm_constants()

    def fn(inp):  # the midpoint form, written as diffusers writes it
        x, eps, m1 = inp["x"], inp["eps"], inp["hist"]
        m0 = (x - c["s0"] * eps) / c["a0"]
        d0, d1 = m0, (1.0 / c["r0"]) * (m0 - m1)
        out = c["ratio"] * x - c["e"] * d0 - 0.5 * c["e"] * d1
        return out, m0

    return fn


@provider("step_dpmpp2m", "diffusers")
def _dpm_diffusers(spec: Spec):
    sched = _diffusers().DPMSolverMultistepScheduler(**_diffusers_kwargs(), algorithm_type="dpmsolver++",
                                                     solver_order=2)
    sched.set_timesteps(50, device=spec.device)
    k = 25
    t = sched.timesteps[k]

    def fn(inp):
        # Rewind the scheduler to the same mid-trajectory second-order step every call (host-side state only).
        sched._step_index, sched.lower_order_nums = k, 1
        sched.model_outputs = [None, inp["hist"]]
        out = sched.step(inp["eps"], t, inp["x"]).prev_sample
        return out, sched.model_outputs[-1]

    return fn


# step_ancestral: Euler ancestral (k-diffusion's sample_euler_ancestral): fresh noise each step.
def _ancestral_constants():
    s = float(_sched().sigmas[_T])
    sn = float(_sched().sigmas[_T_PREV])
    up = math.sqrt(sn**2 * (s**2 - sn**2) / s**2)
    down = math.sqrt(sn**2 - up**2)
    return s, down, up


register_case(Case(
    "step_ancestral", "Euler ancestral step, in-kernel noise", inputs={"x": 1, "eps": 1}, writes={"out": 1},
    group="step", op="fastdiff.fused_step(x, eps, coefs, seed=0, stream=1)"))


@provider("step_ancestral", "fastdiff")
def _anc_fd(spec: Spec):
    import fastdiff.ops.step as op

    s, down, up = _ancestral_constants()
    coefs = op.step_coefs(in_x=1.0, in_m=-s, out_x=1.0, out_m=down - s, out_noise=up, device=spec.device)
    return lambda inp: (op.fused_step(inp["x"], inp["eps"], coefs, seed=0, stream=1),)


@provider("step_ancestral", "eager")
def _anc_eager(spec: Spec):
    s, down, up = _ancestral_constants()

    def fn(inp):
        x, eps = inp["x"], inp["eps"]
        x0 = x - s * eps
        derivative = (x - x0) / s
        out = x + derivative * (down - s)
        return (out + torch.randn_like(x) * up,)

    return fn


@provider("step_ancestral", "diffusers")
def _anc_diffusers(spec: Spec):
    sched = _diffusers().EulerAncestralDiscreteScheduler(**_diffusers_kwargs())
    sched.set_timesteps(50, device=spec.device)
    k = 25
    t = sched.timesteps[k]

    def fn(inp):
        sched._step_index, sched.is_scale_input_called = k, True
        return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

    return fn


# langevin: x + h*grad + sqrt(2h)*z for many chains, in-kernel noise.
register_case(Case(
    "langevin", "Langevin update (ULA), in-kernel noise", inputs={"x": 1, "grad": 1}, writes={"out": 1},
    group="langevin", op="fastdiff.langevin_step(x, grad, h, seed=0)"))


@provider("langevin", "fastdiff")
def _lang_fd(spec: Spec):
    import fastdiff

    return lambda inp: (fastdiff.langevin_step(inp["x"], inp["grad"], _LANGEVIN_H, seed=0, stream=1),)


@provider("langevin", "eager")
def _lang_eager(spec: Spec):
    scale = math.sqrt(2 * _LANGEVIN_H)
    return lambda inp: (inp["x"] + _LANGEVIN_H * inp["grad"] + scale * torch.randn_like(inp["x"]),)


# ---- drop-in schedulers: fastdiff.diffusers.<Name> vs diffusers.<Name>, same config and state ----------
# (case, scheduler class, extra config, history tensors read, x0 written). Both classes keep diffusers'
# host-side state (_step_index, model_outputs, lower_order_nums), so one reset serves both. DDIM and Euler
# return pred_original_sample beside prev_sample; DPM-Solver++ stores its x0 as the next step's history.
_DROPIN_STEP = 25
_DROPIN = (
    ("dropin_ddim", "DDIMScheduler", dict(_diffusers_kwargs(), clip_sample=False, set_alpha_to_one=False), 0,
     True),
    ("dropin_euler", "EulerDiscreteScheduler", _diffusers_kwargs(), 0, True),
    ("dropin_dpmpp2m", "DPMSolverMultistepScheduler",
     dict(_diffusers_kwargs(), algorithm_type="dpmsolver++", solver_order=2), 1, True),
    ("dropin_flow_euler", "FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0), 0, False),
)


def _dropin_factory(module: str, cls_name: str, config: Dict[str, Any], n_hist: int) -> Factory:
    def factory(spec: Spec):
        try:
            mod = importlib.import_module(module)
        except Exception as exc:
            raise Unavailable(f"{module} not importable ({type(exc).__name__})") from None
        sched = getattr(mod, cls_name)(**config)
        sched.set_timesteps(50, device=spec.device)
        k = _DROPIN_STEP
        t = sched.timesteps[k]

        def fn(inp):
            # Rewind to the same mid-trajectory step each call (host-side attributes only, no device work).
            sched._step_index = k
            sched.is_scale_input_called = True
            if n_hist:
                sched.lower_order_nums = n_hist
                sched.model_outputs = [None] * (len(sched.model_outputs) - 1) + [inp["hist"]]
                if hasattr(sched, "_hist"):  # fastdiff's drop-in keeps its own history, most recent first
                    sched._hist, sched._start = [inp["hist"]], 0
            return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

        return fn

    return factory


for _name, _cls, _cfg, _nh, _x0 in _DROPIN:
    register_case(Case(
        _name, f"drop-in {_cls}.step (50 steps, mid-trajectory)",
        inputs={"x": 1, "eps": 1, **({"hist": 1} if _nh else {})},
        writes={"out": 1, **({"x0": 1} if _x0 else {})}, group="dropin",
        check=("fastdiff",), reference="diffusers", op=f"fastdiff.diffusers.{_cls}().step(eps, t, x)"))
    register_provider(_name, "fastdiff", _dropin_factory("fastdiff.diffusers", _cls, _cfg, _nh))
    register_provider(_name, "diffusers", _dropin_factory("diffusers", _cls, _cfg, _nh))


# --------------------------------------------------------------------------------------------------
# Sizes, dtypes, timers
# --------------------------------------------------------------------------------------------------


def parse_size(size: Union[str, int, Sequence[int]]) -> Tuple[int, ...]:
    """``"16x4x64x64"`` -> (16, 4, 64, 64); a count (``65536``, ``"16M"``, ``"1K"``) -> (16, N/16) rows.

    Example:
        >>> parse_size("16M")
        (16, 1048576)
    """
    if isinstance(size, (tuple, list)):
        shape = tuple(int(s) for s in size)
    elif isinstance(size, int) and not isinstance(size, bool):
        shape = (size,)
    elif isinstance(size, str):
        text = size.strip().lower()
        if "x" in text:
            try:
                shape = tuple(int(p) for p in text.split("x"))
            except ValueError:
                raise ValueError(f"size must look like 16x4x64x64 or 16M, got {size!r}") from None
        else:
            mult = {"k": 2**10, "m": 2**20, "g": 2**30}.get(text[-1:], 1)
            try:
                shape = (int(float(text[:-1] if mult > 1 else text) * mult),)
            except ValueError:
                raise ValueError(f"size must look like 16x4x64x64 or 16M, got {size!r}") from None
    else:
        raise TypeError(f"size must be a string, an int or a shape, got {type(size).__name__}")
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"size must have positive dimensions, got {size!r}")
    if len(shape) == 1:
        n = shape[0]
        shape = (16, n // 16) if n % 16 == 0 and n >= 16 else (1, n)
    return shape


def parse_dtype(name: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(name, torch.dtype):
        if name not in _DTYPE_NAMES:
            raise ValueError(f"dtype must be float32/bfloat16/float16, got {name}")
        return name
    key = str(name).strip().lower()
    if key not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(set(DTYPES))}, got {name!r}")
    return DTYPES[key]


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def default_sizes(device: Union[str, torch.device], quick: bool = False) -> List[str]:
    """CPU: per-call overhead (1x4x8x8) and a small latent batch; CUDA: 16M elements (>= L2 many times)."""
    if torch.device(device).type == "cuda":
        return ["16x4x128x128"] if quick else ["16x4x512x512"]
    return ["1x4x8x8", "2x4x16x16"] if quick else ["1x4x8x8", "16x4x64x64"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotating(fn: Callable[[Dict[str, torch.Tensor]], Any],
             sets: Sequence[Dict[str, torch.Tensor]]) -> Callable[[], Any]:
    """A no-argument callable that applies ``fn`` to the next input set each call (defeats cache reuse)."""
    state = [0]
    n = len(sets)

    def call():
        i = state[0]
        state[0] = i + 1 if i + 1 < n else 0
        return fn(sets[i])

    return call


def time_cuda(fn: Callable[[], Any], *, quick: bool = False) -> float:
    """Median milliseconds of ``fn`` by ``triton.testing.do_bench`` (device events, L2 flushed per rep)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100, return_mode="median"))


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, rounds: int = 7, target_s: float = 0.02,
                     device: Union[str, torch.device] = "cpu") -> Dict[str, Dict[str, float]]:
    """Median seconds per call of each callable, measured interleaved in one process.

    Each callable is first calibrated to a batch of ``number`` calls lasting
    about ``target_s``; then every round times one batch of each, in a rotated
    order, so slow drift (clocks, other load) affects all alike. Returns
    ``{name: {"median": s, "min": s, "iqr": s, "number": n}}``.

    Example:
        >>> r = time_interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, rounds=3)
        >>> r["a"]["median"] < r["b"]["median"]  # doctest: +SKIP
        True
    """
    device = torch.device(device)
    names = list(fns)
    number = {}
    for n in names:
        fns[n]()  # warm-up (allocator, lazy init)
        _sync(device)
        t0 = time.perf_counter()
        fns[n]()
        _sync(device)
        one = max(time.perf_counter() - t0, 1e-7)
        number[n] = max(1, min(100000, int(target_s / one)))
    samples: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            f, k = fns[n], number[n]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(k):
                f()
            _sync(device)
            samples[n].append((time.perf_counter() - t0) / k)
    out = {}
    for n in names:
        s = sorted(samples[n])
        q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
        out[n] = {"median": statistics.median(s), "min": s[0], "iqr": q[2] - q[0], "number": number[n]}
    return out


def measure_copy_bandwidth(device: Union[str, torch.device], nbytes: Optional[int] = None,
                           quick: bool = False) -> Dict[str, float]:
    """Device-to-device ``Tensor.copy_`` bandwidth in GB/s (bytes read + bytes written), the "peak".

    Defaults: 1 GiB buffers on CUDA, 64 MiB on CPU (16 MiB with ``quick``).
    """
    device = torch.device(device)
    if nbytes is None:
        nbytes = (2**28 if quick else 2**30) if device.type == "cuda" else (2**24 if quick else 2**26)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    fn = functools.partial(dst.copy_, src)
    if device.type == "cuda":
        sec = time_cuda(fn, quick=quick) * 1e-3
    else:
        res = time_interleaved({"copy": fn}, rounds=3 if quick else 7, target_s=0.02 if quick else 0.05)
        sec = res["copy"]["median"]
    moved = 2 * src.numel() * 4
    del src, dst
    return {"gbps": moved / sec / 1e9, "bytes": float(moved), "seconds": sec}


def _cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
    for idx in (3, 2):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{idx}/size") as f:
                text = f.read().strip().upper()
            mult = {"K": 2**10, "M": 2**20}.get(text[-1], 1)
            return int(text.rstrip("KM")) * mult
        except (OSError, ValueError):
            continue
    return 32 * 2**20


def _n_sets(set_bytes: int, device: torch.device) -> int:
    """Enough input sets to cover twice the last-level cache, within a memory cap."""
    want = math.ceil(2 * _cache_bytes(device) / max(set_bytes, 1))
    cap_bytes = 8 * 2**30 if device.type == "cuda" else 1 * 2**30
    cap = max(1, cap_bytes // max(set_bytes, 1))
    return int(max(2 if device.type == "cuda" else 1, min(want, 64, cap)))


# --------------------------------------------------------------------------------------------------
# Rows and reports
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One (case, size, dtype, provider) measurement. ``time_ms`` is None when skipped or failed."""

    op: str
    group: str
    shape: str
    numel: int
    dtype: str
    provider: str
    status: str = "ok"
    time_ms: Optional[float] = None
    bytes: int = 0
    gbps: Optional[float] = None
    pct_copy: Optional[float] = None
    speedup: Dict[str, float] = field(default_factory=dict)
    max_rel_err: Optional[float] = None
    peak_extra_bytes: Optional[int] = None
    iqr_ms: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.time_ms is not None


@dataclass
class Report:
    meta: Dict[str, Any]
    rows: List[Row]

    def to_dict(self) -> Dict[str, Any]:
        return {"meta": self.meta, "rows": [dataclasses.asdict(r) for r in self.rows],
                "summary": geomean_speedups(self)}

    def to_json(self, path: Optional[str] = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        if path:
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def find(self, op: str, provider: str, dtype: Optional[str] = None, shape: Optional[str] = None) -> List[Row]:
        return [r for r in self.rows if r.op == op and r.provider == provider
                and (dtype is None or r.dtype == dtype) and (shape is None or r.shape == shape)]


def _versions() -> Dict[str, str]:
    v = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("triton", "diffusers"):
        try:
            v[mod] = importlib.import_module(mod).__version__
        except Exception:
            v[mod] = "not installed"
    try:
        from . import __version__ as fd_version

        v["fastdiff"] = fd_version
    except Exception:  # pragma: no cover
        pass
    return v


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def load_plugins() -> List[str]:
    """Import the plugin modules that exist (they register their cases); returns the ones loaded."""
    loaded = []
    for mod in PLUGIN_MODULES:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            importlib.import_module(mod)  # errors inside a plugin should be seen, not swallowed
            loaded.append(mod)
    return loaded


def _compare(ref: Tuple[torch.Tensor, ...], got: Tuple[torch.Tensor, ...]) -> float:
    """Largest error over the outputs both produce, relative to each reference's max magnitude."""
    err = 0.0
    for r, g in zip(ref, got):
        r32, g32 = r.detach().float(), g.detach().float()
        if r32.shape != g32.shape:
            return float("inf")
        scale = float(r32.abs().max()) if r32.numel() else 1.0
        err = max(err, float((r32 - g32).abs().max()) / max(scale, 1e-12) if r32.numel() else 0.0)
    return err


def _tolerance(dtype: torch.dtype) -> float:
    # Relative to the output's max magnitude. Half-precision eager expressions round after every op
    # (CFG's 7.5*(c - u) amplifies that); the fused path computes in fp32 and rounds once.
    return 1e-4 if dtype == torch.float32 else 5e-2


def _build(case: Case, name: str, spec: Spec):
    if name == "compile":
        eager = _FACTORIES[(case.name, "eager")](spec)
        torch._dynamo.reset()  # a fresh cache per (case, size, dtype): no silent fallback at the recompile limit
        return torch.compile(eager, dynamic=False)
    return _FACTORIES[(case.name, name)](spec)


def build_call(case: str, provider_name: str, spec: Spec, *, n_sets: Optional[int] = None,
               seed: int = 1234) -> Callable[[], Any]:
    """A ready-to-time no-argument callable: ``provider_name``'s fn over rotating input sets of ``case``.

    Raises :class:`Unavailable` when the provider cannot run here. Example:
        >>> call = build_call("step_ddim", "eager", Spec((1, 4, 8, 8), torch.float32, torch.device("cpu")))
        >>> call()[0].shape
        torch.Size([1, 4, 8, 8])
    """
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; known: {sorted(CASES)}")
    if provider_name not in providers_for(case):
        raise Unavailable(f"{provider_name} has no implementation of {case}")
    c = CASES[case]
    gen = torch.Generator(device=spec.device if spec.device.type == "cuda" else "cpu").manual_seed(seed)
    n = n_sets if n_sets is not None else _n_sets(c.input_bytes(spec), spec.device)
    sets = [c.make_inputs(spec, gen) for _ in range(n)]
    fn = _build(c, provider_name, spec)
    fn(sets[0])
    return rotating(fn, sets)


def floor_call(case: str, spec: Spec, *, n_sets: Optional[int] = None) -> Tuple[Callable[[], Any], float]:
    """The one-pass floor of ``case``, measurable beside its providers: a rotating ``clone`` and a scale.

    Returns ``(call, scale)``: ``call`` clones one sample-sized tensor, rotating over as many sets (hence the
    same cache residency) as :func:`build_call` uses for ``case``; ``scale`` (the case's bytes over the two
    tensor-sizes a clone moves) turns its time into the time of a single pass that reads each input once
    and writes each output once at copy speed. ``baseline time / (clone time * scale)`` is the largest
    speedup over that baseline that any implementation of ``case`` could show in the same run. Example:
        >>> call, scale = floor_call("step_ddim", Spec((1, 4, 8, 8), torch.float32, torch.device("cpu")))
        >>> scale, call().shape
        (1.5, torch.Size([1, 4, 8, 8]))
    """
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; known: {sorted(CASES)}")
    c = CASES[case]
    n = n_sets if n_sets is not None else _n_sets(c.input_bytes(spec), spec.device)
    per_set = sum(c.inputs.values())  # as many sample-sized tensors resident per set as the case reads
    sets = [{"x": torch.randn(per_set * spec.numel, device=spec.device).to(spec.dtype)} for _ in range(n)]
    scale = c.bytes_moved(spec.numel, spec.dtype) / (2 * spec.numel * spec.dtype.itemsize)
    return rotating(lambda s: s["x"][: spec.numel].clone().view(spec.shape), sets), scale


def _peak_extra(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Peak device memory allocated during one call beyond what was live before it (outputs included)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return int(peak)


def run_suite(
    *,
    device: Union[str, torch.device, None] = None,
    sizes: Optional[Iterable[Union[str, int, Sequence[int]]]] = None,
    dtypes: Optional[Iterable[Union[str, torch.dtype]]] = None,
    providers: Optional[Iterable[str]] = None,
    ops: Optional[Iterable[str]] = None,
    groups: Optional[Iterable[str]] = None,
    quick: bool = False,
    deadline: Optional[float] = None,
    log: Optional[Callable[[str], None]] = None,
    copy_bandwidth: Optional[Dict[str, float]] = None,
) -> Report:
    """Time every (case, size, dtype, provider) and return a :class:`Report`.

    Args:
        device: "cpu" or "cuda" (default: cuda when available).
        sizes: shapes/counts for :func:`parse_size` (default :func:`default_sizes`).
        dtypes: names like "fp32", "bf16", "fp16" (default fp32 and bf16; fp32 with ``quick``).
        providers: subset of PROVIDERS (default all; ``quick`` leaves out compile).
        ops, groups: restrict to these case names / groups.
        quick: short timing and small defaults.
        deadline: ``time.monotonic()`` value after which remaining rows are skipped.
        log: called with a progress line per case.
        copy_bandwidth: a prior :func:`measure_copy_bandwidth` result (else measured here).

    Example:
        >>> rep = run_suite(device="cpu", sizes=["1x4x8x8"], dtypes=["fp32"], providers=["fastdiff", "eager"],
        ...                 ops=["langevin"], quick=True)
        >>> [r.provider for r in rep.rows]
        ['fastdiff', 'eager']
    """
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {dev}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    plugins = load_plugins()
    shapes = [parse_size(s) for s in (sizes if sizes is not None else default_sizes(dev, quick))]
    dts = [parse_dtype(d) for d in (dtypes if dtypes is not None else (["fp32"] if quick else ["fp32", "bf16"]))]
    if providers is None:
        wanted = [p for p in PROVIDERS if not (quick and p == "compile")]
    else:
        wanted = list(providers)
        bad = [p for p in wanted if p not in PROVIDERS]
        if bad:
            raise ValueError(f"providers must be among {PROVIDERS}, got {bad}")
    if ops is not None:
        ops = list(ops)
        unknown = [o for o in ops if o not in CASES]
        if unknown:
            raise ValueError(f"unknown ops {unknown}; known: {sorted(CASES)}")
    cases = [c for c in CASES.values() if (ops is None or c.name in ops)
             and (groups is None or c.group in set(groups))]
    peak = copy_bandwidth or measure_copy_bandwidth(dev, quick=quick)
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": dev.type, "device_name": _device_name(dev), "versions": _versions(),
        "copy_gbps": peak["gbps"], "copy_bytes": peak["bytes"], "quick": quick,
        "timer": "triton.testing.do_bench median" if dev.type == "cuda" else "interleaved median of repeats",
        "cpu_threads": torch.get_num_threads(), "plugins": plugins,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cases": {c.name: {"description": c.description, "op": c.op, "group": c.group, "bytes": c.formula()}
                  for c in cases},
    }
    rows: List[Row] = []
    gen_device = dev if dev.type == "cuda" else "cpu"
    for shape in shapes:
        for dt in dts:
            spec = Spec(shape, dt, dev)
            for case in cases:
                names = [p for p in providers_for(case.name) if p in wanted]
                if not names:
                    continue
                base = dict(op=case.name, group=case.group, shape=_shape_str(shape), numel=spec.numel,
                            dtype=_DTYPE_NAMES[dt], bytes=case.bytes_moved(spec.numel, dt))
                case_rows = {n: Row(provider=n, **base) for n in names}
                rows.extend(case_rows.values())
                if deadline is not None and time.monotonic() > deadline:
                    for r in case_rows.values():
                        r.status = "skipped: time budget"
                    continue
                if log:
                    log(f"{case.name} {base['shape']} {base['dtype']}: {', '.join(names)}")
                _run_case(case, spec, case_rows, gen_device, quick)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    for r in rows:
        if r.ok:
            r.gbps = r.bytes / (r.time_ms * 1e-3) / 1e9
            r.pct_copy = 100.0 * r.gbps / peak["gbps"]
    _fill_speedups(rows)
    return Report(meta, rows)


def _run_case(case: Case, spec: Spec, rows: Dict[str, Row], gen_device, quick: bool) -> None:
    gen = torch.Generator(device=gen_device).manual_seed(1234)
    n_sets = _n_sets(case.input_bytes(spec), spec.device)
    sets = [case.make_inputs(spec, gen) for _ in range(n_sets)]
    fns: Dict[str, Callable] = {}
    for name, row in rows.items():
        try:
            fns[name] = _build(case, name, spec)
        except Unavailable as exc:
            row.status = f"skipped: {exc}"
        except Exception as exc:  # a broken provider is reported, the run goes on
            row.status = f"error: {type(exc).__name__}: {exc}"[:200]
    # Warm up (compiles) and check providers against the reference run in float32 on the first input set.
    ref = None
    if case.check and (case.name, case.reference) in _FACTORIES:
        try:
            ref_fn = _FACTORIES[(case.name, case.reference)](Spec(spec.shape, torch.float32, spec.device))
            ref = _tuple(ref_fn({k: (v.float() if v.is_floating_point() else v) for k, v in sets[0].items()}))
        except Exception:  # the reference's own row reports its error below
            ref = None
    for name in list(fns):
        try:
            out = _tuple(fns[name](sets[0]))
            out = _tuple(fns[name](sets[0]))  # torch.compile: the second call runs the compiled code
        except Exception as exc:
            rows[name].status = f"error: {type(exc).__name__}: {exc}"[:200]
            fns.pop(name)
            continue
        if ref is not None and (name in case.check or name == case.reference):
            err = _compare(ref, out)
            rows[name].max_rel_err = err
            # In half precision only the fused op is held to the tolerance: the baselines round after every
            # op in the storage dtype (CFG's 7.5*(c - u) amplifies that); their error is recorded, not judged.
            judged = spec.dtype == torch.float32 or name == "fastdiff"
            if judged and not err <= _tolerance(spec.dtype):
                rows[name].status = f"mismatch vs fp32 {case.reference} (max rel err {err:.2e})"
    _sync(spec.device)
    calls = {name: rotating(fn, sets) for name, fn in fns.items()}
    if spec.device.type == "cuda":
        for name, call in calls.items():
            rows[name].peak_extra_bytes = _peak_extra(functools.partial(fns[name], sets[0]), spec.device)
            try:
                rows[name].time_ms = time_cuda(call, quick=quick)
            except Exception as exc:
                rows[name].status = f"error: {type(exc).__name__}: {exc}"[:200]
    elif calls:
        res = time_interleaved(calls, rounds=5 if quick else 9, target_s=0.004 if quick else 0.02)
        for name, r in res.items():
            rows[name].time_ms = r["median"] * 1e3
            rows[name].iqr_ms = r["iqr"] * 1e3
    del sets


def _fill_speedups(rows: List[Row]) -> None:
    by_key: Dict[Tuple[str, str, str], Dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault((r.op, r.shape, r.dtype), {})[r.provider] = r
    for group in by_key.values():
        for r in group.values():
            if not r.ok:
                continue
            for b in BASELINES:
                base = group.get(b)
                if base is not None and base.ok and b != r.provider:
                    r.speedup[b] = base.time_ms / r.time_ms


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of positive ratios.

    Example:
        >>> geomean([2.0, 8.0])
        4.0
    """
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def geomean_speedups(report: Report, provider: str = "fastdiff") -> Dict[str, Dict[str, Any]]:
    """Geometric-mean speedup of ``provider`` over each baseline, per (group, shape, dtype).

    Returns ``{"step 16x4x64x64 fp32": {"eager": 1.3, "diffusers": 4.1, "n": 4}, ...}``.
    """
    acc: Dict[str, Dict[str, List[float]]] = {}
    for r in report.rows:
        if r.provider != provider or not r.ok:
            continue
        key = f"{r.group} {r.shape} {r.dtype}"
        for b, v in r.speedup.items():
            acc.setdefault(key, {}).setdefault(b, []).append(v)
    out: Dict[str, Dict[str, Any]] = {}
    for key, per in acc.items():
        out[key] = {b: geomean(vs) for b, vs in per.items()}
        out[key]["n"] = {b: len(vs) for b, vs in per.items()}
    return out


# --------------------------------------------------------------------------------------------------
# Output: table, markdown, plot
# --------------------------------------------------------------------------------------------------

_COLUMNS = ("op", "size", "dtype", "provider", "time", "GB/s", "% copy", "vs eager", "vs compile", "vs diffusers")


def _fmt_time(ms: Optional[float]) -> str:
    if ms is None:
        return "-"
    return f"{ms * 1e3:.1f} us" if ms < 1.0 else f"{ms:.3f} ms"


def _table_cells(report: Report) -> List[List[str]]:
    cells = []
    for r in report.rows:
        if not r.ok:
            cells.append([r.op, r.shape, r.dtype, r.provider, r.status, "", "", "", "", ""])
            continue
        sp = [f"{r.speedup[b]:.2f}x" if b in r.speedup else "-" for b in BASELINES]
        note = "" if r.status == "ok" else " !"
        cells.append([r.op, r.shape, r.dtype, r.provider + note, _fmt_time(r.time_ms), f"{r.gbps:.1f}",
                      f"{r.pct_copy:.1f}", *sp])
    return cells


def format_table(report: Report) -> str:
    """A fixed-width text table, one row per measurement, followed by the copy bandwidth line."""
    cells = _table_cells(report)
    widths = [max(len(c) for c in col) for col in zip(_COLUMNS, *cells)] if cells else [len(c) for c in _COLUMNS]
    line = lambda vals: "  ".join(v.ljust(w) if i < 4 else v.rjust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    out = [line(_COLUMNS), line(["-" * w for w in widths])]
    for c in cells:
        if c[5] == "" and c[4] not in ("-",):  # skipped/error rows: let the status run on
            out.append("  ".join(v.ljust(w) for v, w in zip(c[:4], widths[:4])) + "  " + c[4])
        else:
            out.append(line(c))
    m = report.meta
    out.append(f"copy bandwidth ({m['device_name']}): {m['copy_gbps']:.1f} GB/s  |  timer: {m['timer']}")
    flagged = [r for r in report.rows if r.ok and r.status != "ok"]
    for r in flagged:
        out.append(f"! {r.op} {r.shape} {r.dtype} {r.provider}: {r.status}")
    return "\n".join(out)


def format_markdown(report: Report, title: str = "fastdiff benchmark") -> str:
    """Markdown: a header with date, device and versions, then the table and the geomean summary."""
    m = report.meta
    v = m["versions"]
    lines = [f"# {title}", "",
             f"- date: {m['date']}", f"- device: {m['device_name']} ({m['device']})",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             f"- copy bandwidth (Tensor.copy_, read+write): {m['copy_gbps']:.1f} GB/s",
             f"- timer: {m['timer']}", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for c in _table_cells(report):
        lines.append("| " + " | ".join(x if x else "" for x in c) + " |")
    summ = geomean_speedups(report)
    if summ:
        lines += ["", "Geometric-mean speedup of fastdiff:", ""]
        for key, per in summ.items():
            parts = [f"{b} {per[b]:.2f}x (n={per['n'][b]})" for b in BASELINES if b in per]
            lines.append(f"- {key}: " + ", ".join(parts))
    lines += ["", "Byte model (each input read once, each output written once):", ""]
    for name, info in m.get("cases", {}).items():
        lines.append(f"- `{name}` -- {info['description']}: {info['bytes']}")
    extras = m.get("extras")
    if extras:
        lines += ["", "Extras:", "", "```", json.dumps(extras, indent=2), "```"]
    return "\n".join(lines) + "\n"


def plot_report(report: Report, path: str) -> str:
    """Bar chart of GB/s (log scale) per op and provider, one panel per (size, dtype), copy bandwidth dashed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = sorted({(r.shape, r.dtype) for r in report.rows}, key=lambda p: (parse_size(p[0]), p[1]))
    provs = [p for p in PROVIDERS if any(r.provider == p and r.ok for r in report.rows)]
    n = max(len(panels), 1)
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.4 * n), squeeze=False)
    width = 0.8 / max(len(provs), 1)
    for ax, (shape, dtype) in zip(axes[:, 0], panels):
        rows = [r for r in report.rows if r.shape == shape and r.dtype == dtype]
        ops = list(dict.fromkeys(r.op for r in rows))
        for j, p in enumerate(provs):
            vals = []
            for op in ops:
                hit = [r for r in rows if r.op == op and r.provider == p and r.ok]
                vals.append(hit[0].gbps if hit and hit[0].gbps > 0 else float("nan"))
            ax.bar([i + (j - (len(provs) - 1) / 2) * width for i in range(len(ops))], vals, width, label=p)
        ax.axhline(report.meta["copy_gbps"], color="k", linestyle="--", linewidth=1, label="copy_ bandwidth")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops, rotation=15)
        ax.set_yscale("log")  # small sizes are overhead-bound: orders of magnitude below the copy line
        ax.set_ylabel("GB/s (bytes of one pass, log)")
        ax.set_title(f"{report.meta['device_name']} -- {shape} {dtype}", fontsize=9)
        ax.legend(fontsize=7, ncol=len(provs) + 1)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# Sampling-loop overhead (the per-step cost a denoising loop pays on top of its network)
# --------------------------------------------------------------------------------------------------


def step_loop_overhead(
    device: Union[str, torch.device],
    *,
    steps: int = 50,
    shape: Sequence[int] = (1, 4, 64, 64),
    dtype: torch.dtype = torch.float32,
    cuda_graph: bool = False,
    quick: bool = False,
) -> Dict[str, float]:
    """Per-step time of a ``steps``-step DDIM loop with a trivial denoiser, and that minus the denoiser.

    Coefficients are one table built once (one row per step, ``coef_row=i``), so
    the loop has no host-device sync. With ``cuda_graph`` the whole loop is
    captured once and replayed. Returns microseconds:
    ``{"per_step_us", "denoiser_us", "overhead_us"}``.
    """
    from .ops.step import fused_step, step_coefs

    dev = torch.device(device)
    if cuda_graph and dev.type != "cuda":
        raise ValueError("cuda_graph=True needs device='cuda'")
    s = _sched()
    ts = torch.linspace(999, 0, steps + 1).round().long().tolist()
    a = [math.sqrt(float(s.alphas_cumprod[t])) for t in ts]
    sg = [math.sqrt(1 - float(s.alphas_cumprod[t])) for t in ts]
    coefs = step_coefs(in_x=[1 / a[i] for i in range(steps)], in_m=[-sg[i] / a[i] for i in range(steps)],
                       out_d=a[1:], out_m=sg[1:], device=dev)
    x_init = torch.randn(tuple(shape), device=dev, dtype=torch.float32).to(dtype)

    def model(x):  # trivial denoiser: one elementwise kernel
        return x * 0.5

    def loop(x):
        for i in range(steps):
            x = fused_step(x, model(x), coefs, coef_row=i)
        return x

    def model_loop(x):
        for _ in range(steps):
            x = model(x)
        return x

    if cuda_graph:
        static = x_init.clone()
        timings = {}
        for name, body in (("loop", loop), ("model", model_loop)):
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    body(static)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body(static)
            timings[name] = time_cuda(graph.replay, quick=quick) * 1e-3
    else:
        fns = {"loop": functools.partial(loop, x_init), "model": functools.partial(model_loop, x_init)}
        if dev.type == "cuda":
            timings = {n: time_cuda(f, quick=quick) * 1e-3 for n, f in fns.items()}
        else:
            res = time_interleaved(fns, rounds=3 if quick else 7, target_s=0.01 if quick else 0.05)
            timings = {n: r["median"] for n, r in res.items()}
    per = timings["loop"] / steps * 1e6
    den = timings["model"] / steps * 1e6
    return {"per_step_us": per, "denoiser_us": den, "overhead_us": per - den, "steps": steps,
            "shape": _shape_str(shape), "cuda_graph": cuda_graph}


# --------------------------------------------------------------------------------------------------
# Profiling
# --------------------------------------------------------------------------------------------------

# (module, attribute) of every public op; instrument_ops names each call "fastdiff::<attribute>".
_PROFILED: List[Tuple[str, str]] = [
    ("fastdiff.ops.encode", "add_noise"), ("fastdiff.ops.encode", "add_noise_with_target"),
    ("fastdiff.ops.encode", "encoder_transition"), ("fastdiff.ops.encode", "fused_encode"),
    ("fastdiff.ops.step", "fused_step"), ("fastdiff.ops.langevin", "langevin_step"),
    ("fastdiff.ops.langevin", "langevin_select"), ("fastdiff.random", "philox_normal"),
]


def register_profiled(module: str, attr: str) -> None:
    """Have :func:`instrument_ops` also name calls of ``module.attr`` (e.g. a sampler's ``sample``)."""
    if (module, attr) not in _PROFILED:
        _PROFILED.append((module, attr))


@contextlib.contextmanager
def op_range(name: str, nvtx: Optional[bool] = None) -> Iterator[None]:
    """A ``torch.profiler`` range named ``name``, plus an NVTX range on CUDA.

    Example:
        >>> with op_range("my_pipeline::denoise"):
        ...     pass
    """
    use_nvtx = torch.cuda.is_available() if nvtx is None else nvtx
    with torch.profiler.record_function(name):
        if use_nvtx:
            torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            if use_nvtx:
                torch.cuda.nvtx.range_pop()


def _named(fn: Callable, name: str, nvtx: bool) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with op_range(name, nvtx=nvtx):
            return fn(*args, **kwargs)

    wrapper.__fastdiff_wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def instrument_ops(nvtx: Optional[bool] = None,
                   modules: Optional[Iterable[Any]] = None) -> Iterator[Dict[str, Callable]]:
    """Name every fastdiff op call ``fastdiff::<op>`` in profiler traces (and NVTX on CUDA) inside the block.

    Replaces each public op function, wherever a loaded module holds it (so
    ``from fastdiff import fused_step`` bindings are covered too), by a wrapper
    that opens the range, and restores the originals on exit. Not thread-safe:
    use it around a profiling run, not in production code. The Triton launchers
    need no help: ``torch.library`` ops appear as ``fastdiff::fused_step_`` etc.

    Example:
        >>> import torch, fastdiff
        >>> from fastdiff.bench import instrument_ops
        >>> with instrument_ops(), torch.profiler.profile() as prof:
        ...     _ = fastdiff.langevin_step(torch.zeros(4, 2), torch.zeros(4, 2), 0.1, seed=0)
        >>> any(e.name == "fastdiff::langevin_step" for e in prof.events())
        True
    """
    use_nvtx = torch.cuda.is_available() if nvtx is None else nvtx
    originals: Dict[int, Tuple[Callable, Callable]] = {}
    for mod_name, attr in _PROFILED:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        fn = getattr(mod, attr, None)
        if fn is None or hasattr(fn, "__fastdiff_wrapped__"):
            continue
        originals[id(fn)] = (fn, _named(fn, f"fastdiff::{attr}", use_nvtx))
    patched: List[Tuple[dict, str, Callable]] = []
    targets = list(sys.modules.values()) + list(modules or ())
    for mod in targets:
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for key, val in list(d.items()):
            hit = originals.get(id(val))
            if hit is not None and hit[0] is val:
                d[key] = hit[1]
                patched.append((d, key, val))
    try:
        yield {fn.__name__: wrapped for fn, wrapped in originals.values()}
    finally:
        for d, key, val in reversed(patched):
            d[key] = val


@dataclass
class ProfileResult:
    """What :func:`profile_sampling` saw: per-op totals, the raw profiler, and the callable's result."""

    ops: Dict[str, Dict[str, float]]
    table: str
    profiler: Any
    result: Any
    trace_path: Optional[str] = None

    def op_names(self) -> List[str]:
        return sorted(self.ops)


def profile_sampling(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 1,
    trace_path: Optional[str] = None,
    nvtx: Optional[bool] = None,
    instrument: bool = True,
    row_limit: int = 15,
    **kwargs: Any,
) -> ProfileResult:
    """Run ``fn(*args, **kwargs)`` under ``torch.profiler`` and report where the time goes, per fastdiff op.

    ``warmup`` unprofiled calls first keep Triton/compile work out of the trace.
    With ``instrument`` every public op call is a ``fastdiff::<op>`` range (see
    :func:`instrument_ops`); on CUDA these are NVTX ranges too, so an Nsight
    Systems timeline shows them. ``trace_path`` writes a Chrome/Perfetto trace.

    Example:
        >>> import torch, fastdiff
        >>> from fastdiff.bench import profile_sampling
        >>> x, g = torch.randn(64, 2), torch.randn(64, 2)
        >>> res = profile_sampling(lambda: fastdiff.langevin_step(x, g, 0.1, seed=0))
        >>> "fastdiff::langevin_step" in res.ops
        True
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn(*args, **kwargs)
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    ctx = instrument_ops(nvtx=nvtx) if instrument else contextlib.nullcontext()
    with ctx, profile(activities=activities) as prof:
        result = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
    if trace_path:
        os.makedirs(os.path.dirname(os.path.abspath(trace_path)), exist_ok=True)
        prof.export_chrome_trace(trace_path)
    ops: Dict[str, Dict[str, float]] = {}
    for ev in prof.key_averages():
        if not ev.key.startswith("fastdiff::"):
            continue
        dev_total = getattr(ev, "device_time_total", None)
        if dev_total is None:
            dev_total = getattr(ev, "cuda_time_total", 0.0)
        ops[ev.key] = {"count": float(ev.count), "cpu_total_us": float(ev.cpu_time_total),
                       "device_total_us": float(dev_total or 0.0)}
    sort = "device_time_total" if cuda else "cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort, row_limit=row_limit)
    except Exception:  # older torch: cuda_time_total
        table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=row_limit)
    return ProfileResult(ops=ops, table=table, profiler=prof, result=result, trace_path=trace_path)
