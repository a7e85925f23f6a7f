"""The encoding op (the fixed encoder): forward noising and training targets in one pass.

Example:
    >>> import torch, fastdiff
    >>> sched = fastdiff.DiscreteVPSchedule(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    >>> x0 = torch.randn(8, 4, 16, 16)
    >>> t = torch.randint(0, 1000, (8,))
    >>> x_t, eps = fastdiff.add_noise_with_target(x0, t, sched, seed=0, target="epsilon")
"""
from __future__ import annotations

import threading
import weakref
from typing import Optional, Union

import torch

from ...random import draw_seed
from .._common import KERNEL_DTYPES, as_seed_args, check_float, check_out, check_stream, contig, maybe_rows, rows_of
from ..backend import resolve_backend
from ..dispatch import launcher
from ..profiling import profiled
from ..records import EncodeArgs
from .naive import encode_cpu, encode_reference

__all__ = ["add_noise", "add_noise_with_target", "encoder_transition", "fused_encode", "encode_reference",
           "TARGETS"]

TARGETS = ("epsilon", "v_prediction", "sample", "flow")
_TARGET_ALIASES = {"eps": "epsilon", "noise": "epsilon", "v": "v_prediction", "x0": "sample",
                   "velocity": "flow"}
_cache: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _target_name(target: str) -> str:
    name = _TARGET_ALIASES.get(target, target)
    if name not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} (or aliases {sorted(_TARGET_ALIASES)}), got {target!r}")
    return name


def _columns(a: torch.Tensor, s: torch.Tensor, target: str) -> torch.Tensor:
    """float64 (a, s, ta, tn) columns: target = ta*x0 + tn*noise."""
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    ta, tn = {
        "epsilon": (zero, one),
        "sample": (one, zero),
        "v_prediction": (-s, a),  # v = alpha*eps - sigma*x0 (Salimans & Ho 2022)
        "flow": (-one, one),  # d x_t / dt for x_t = (1-t) x0 + t eps
    }[target]
    return torch.stack([a, s, ta, tn], dim=1)


def _discrete_table(schedule, kind: str, device: torch.device) -> torch.Tensor:
    """Per-timestep coefficient table, built in float64 once per (schedule, kind, device)."""
    with _cache_lock:
        per_sched = _cache.setdefault(schedule, {})
        table = per_sched.get((kind, device))
        if table is None:
            if kind == "transition":
                betas = schedule.betas.to(torch.float64)
                cols = _columns(torch.sqrt(1.0 - betas), torch.sqrt(betas), "epsilon")
            else:
                steps = torch.arange(schedule.num_train_timesteps)
                a, s = schedule.alpha_sigma(steps)
                cols = _columns(a.to(torch.float64), s.to(torch.float64), kind)
            table = cols.to(device=device, dtype=torch.float32)
            per_sched[(kind, device)] = table
    return table


def _is_discrete(schedule) -> bool:
    return hasattr(schedule, "num_train_timesteps") and hasattr(schedule, "alphas_cumprod")


def _coefs_for(schedule, timesteps, target: str, batch: int, device: torch.device, transition: bool = False):
    if not hasattr(schedule, "alpha_sigma"):
        raise TypeError(f"schedule must be a fastdiff schedule (DiscreteVPSchedule, ContinuousVPSchedule, "
                        f"VESchedule, FlowMatchingSchedule), got {type(schedule).__name__}")
    discrete = _is_discrete(schedule)
    if isinstance(timesteps, (int, float)) and not isinstance(timesteps, bool):
        if not discrete and not 0.0 <= timesteps <= 1.0:  # NaN fails too
            raise ValueError(f"timesteps for a continuous schedule must be times in [0, 1], got {timesteps!r}")
        timesteps = torch.full((batch,), timesteps, device=device,
                               dtype=torch.int64 if isinstance(timesteps, int) and _is_discrete(schedule)
                               else torch.float64)
    if not isinstance(timesteps, torch.Tensor):
        raise TypeError(f"timesteps must be a tensor of shape ({batch},) or a number, got {type(timesteps).__name__}")
    if timesteps.dim() == 0:
        timesteps = timesteps.expand(batch)
    if timesteps.shape != (batch,):
        raise ValueError(f"timesteps must have shape ({batch},) (one per sample), got {tuple(timesteps.shape)}")
    if timesteps.device != device:
        raise ValueError(f"timesteps is on {timesteps.device} but x0 is on {device}")
    if discrete:
        if timesteps.dtype.is_floating_point or timesteps.dtype == torch.bool:
            raise TypeError(f"timesteps for a discrete schedule must be integer indices, got {timesteps.dtype}")
        if device.type == "cpu" and timesteps.numel():  # free on CPU; on GPU this would sync
            lo, hi = (int(v) for v in torch.aminmax(timesteps))  # one reduction, not two
            if lo < 0 or hi >= schedule.num_train_timesteps:
                raise ValueError(f"timesteps must lie in [0, {schedule.num_train_timesteps}), got [{lo}, {hi}]")
        table = _discrete_table(schedule, "transition" if transition else target, device)
        return table, timesteps.to(torch.int64).contiguous()
    if transition:
        raise TypeError("encoder_transition needs a discrete schedule (it uses its betas)")
    if timesteps.dtype == torch.bool or timesteps.dtype.is_complex:
        raise TypeError(f"timesteps for a continuous schedule must be real times in [0, 1], got {timesteps.dtype}")
    if device.type == "cpu" and timesteps.numel():  # free on CPU; on GPU this would sync, so not checked there
        lo, hi = (float(v) for v in torch.aminmax(timesteps.to(torch.float64)))  # NaN gives NaN: fails below
        if not (lo >= 0.0 and hi <= 1.0):
            bad = "NaN" if lo != lo or hi != hi else f"[{lo}, {hi}]"
            raise ValueError(f"timesteps for a continuous schedule must be times in [0, 1], got {bad}")
    a, s = schedule.alpha_sigma(timesteps.to(torch.float64))
    return _columns(a, s, target).to(torch.float32).contiguous(), None


@profiled("fastdiff::fused_encode")
def fused_encode(
    x0: torch.Tensor,
    coefs: torch.Tensor,
    index: Optional[torch.Tensor] = None,
    *,
    noise: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    write_target: bool = False,
    write_noise: bool = False,
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
):
    """Low-level encode: ``(x_t[, target][, noise])`` from a ``(R, 4)`` table of (a, s, ta, tn).

    Row ``index[b]`` of ``coefs`` is used for sample ``b`` (row ``b`` when ``index`` is None).

    Example (a per-sample table: x_t = 0.6*x0 + 0.8*z, target = z):
        >>> coefs = torch.tensor([[0.6, 0.8, 0.0, 1.0]]).expand(4, 4).contiguous()
        >>> x_t, eps = fused_encode(torch.randn(4, 16), coefs, seed=0, write_target=True)
    """
    check_float("x0", x0)
    batch, _ = rows_of(x0)
    dev = x0.device
    if noise is not None:
        check_float("noise", noise, like=x0, shape=x0.shape)
        if seed is not None:
            raise ValueError("pass either seed (in-kernel noise) or noise, not both")
    elif seed is None:
        # No noise and no seed: draw a seed from torch's global CPU generator (reproducible with manual_seed).
        seed = draw_seed()
    seed_lo, seed_hi = as_seed_args(seed if noise is None else None)
    check_stream(stream)
    row_ids = maybe_rows(row_ids, batch, dev)
    check_out("out", out, x0)
    impl = resolve_backend(backend, dev)
    if impl == "triton":
        if x0.dtype not in KERNEL_DTYPES:
            raise TypeError(f"backend='triton' supports float32/float16/bfloat16 storage, got x0.dtype={x0.dtype}")
        out = torch.empty_like(x0, memory_format=torch.contiguous_format) if out is None else out
        target = torch.empty_like(out) if write_target else None
        noise_out = torch.empty_like(out) if write_noise else None
        launcher("fused_encode")(EncodeArgs(contig(x0), coefs.contiguous(), index, contig(noise), row_ids, out, target,
                                            noise_out, seed_lo, seed_hi, stream))
    elif impl == "torch":
        out, target, z = encode_cpu(x0, coefs, index, noise=noise, seed=seed if noise is None else None,
                                    stream=stream, row_ids=row_ids, write_target=write_target, out=out)
        noise_out = (z if z.dtype is x0.dtype else z.to(x0.dtype)) if write_noise else None
    else:
        compute = None if impl == "reference" else (torch.float64 if x0.dtype == torch.float64 else torch.float32)
        xt, tgt, z = encode_reference(x0, coefs, index, noise=noise, seed=seed if noise is None else None,
                                      stream=stream, row_ids=row_ids, compute_dtype=compute)
        out = xt.to(x0.dtype) if out is None else out.copy_(xt)
        target = tgt.to(x0.dtype) if write_target else None
        noise_out = z.to(x0.dtype) if write_noise else None
    res = (out,) + ((target,) if write_target else ()) + ((noise_out,) if write_noise else ())
    return res if len(res) > 1 else out


@profiled("fastdiff::add_noise")
def add_noise(
    x0: torch.Tensor,
    timesteps: Union[torch.Tensor, int, float],
    schedule,
    noise: Optional[torch.Tensor] = None,
    *,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Sample the encoder q(x_t | x0): ``x_t = alpha_t*x0 + sigma_t*noise`` in one pass.

    ``timesteps``: integer indices (batch,) for a discrete schedule, or times in
    [0, 1] for a continuous/flow schedule; gathered per sample in-kernel. Values
    outside the domain (NaN included) raise a ValueError for Python numbers and
    CPU tensors; CUDA tensors are not read on the host (no sync): pass valid values.
    ``noise`` given, or generated in-kernel from ``seed`` (Philox; a fresh seed
    from torch's global generator when both are None).

    Example:
        >>> sched = fastdiff.DiscreteVPSchedule()
        >>> x_t = fastdiff.add_noise(torch.randn(4, 2), torch.tensor([0, 10, 500, 999]), sched, seed=1)
    """
    check_float("x0", x0)
    coefs, index = _coefs_for(schedule, timesteps, "epsilon", rows_of(x0)[0], x0.device)
    return fused_encode(x0, coefs, index, noise=noise, seed=seed, stream=stream, row_ids=row_ids, out=out,
                        backend=backend)


@profiled("fastdiff::add_noise_with_target")
def add_noise_with_target(
    x0: torch.Tensor,
    timesteps: Union[torch.Tensor, int, float],
    schedule,
    noise: Optional[torch.Tensor] = None,
    *,
    target: str = "epsilon",
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    return_noise: bool = False,
    backend: str = "auto",
):
    """Noised sample and training target in one pass: ``(x_t, target[, noise])``.

    ``target``: "epsilon" (the noise), "v_prediction" (alpha*eps - sigma*x0),
    "sample" (x0) or "flow" (eps - x0, for rectified-flow schedules).

    Example:
        >>> sched, x0, t = fastdiff.DiscreteVPSchedule(), torch.randn(4, 2), torch.tensor([0, 10, 500, 999])
        >>> x_t, v = fastdiff.add_noise_with_target(x0, t, sched, seed=0, target="v_prediction")
    """
    check_float("x0", x0)
    name = _target_name(target)
    coefs, index = _coefs_for(schedule, timesteps, name, rows_of(x0)[0], x0.device)
    return fused_encode(x0, coefs, index, noise=noise, seed=seed, stream=stream, row_ids=row_ids,
                        write_target=True, write_noise=return_noise, backend=backend)


@profiled("fastdiff::encoder_transition")
def encoder_transition(
    z_prev: torch.Tensor,
    timesteps: Union[torch.Tensor, int],
    schedule,
    noise: Optional[torch.Tensor] = None,
    *,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One Markov step of the encoder: ``z_t = sqrt(1-beta_t)*z_{t-1} + sqrt(beta_t)*noise``.

    Example:
        >>> z1 = fastdiff.encoder_transition(torch.randn(4, 2), 1, fastdiff.DiscreteVPSchedule(), seed=0)
    """
    check_float("z_prev", z_prev)
    coefs, index = _coefs_for(schedule, timesteps, "epsilon", rows_of(z_prev)[0], z_prev.device, transition=True)
    return fused_encode(z_prev, coefs, index, noise=noise, seed=seed, stream=stream, row_ids=row_ids, out=out,
                        backend=backend)
