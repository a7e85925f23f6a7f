"""The HMC leapfrog ops: one pass per gradient evaluation for many chains, with per-chain steps and a diagonal mass.

A trajectory of ``L`` leapfrog steps from ``(x, g = grad log p(x))`` is ``L + 1`` passes and ``L`` gradients:

    x, p = hmc_refresh(x, g, h, seed=s, stream=k)   # p ~ N(0, M), p += h/2 g, x += h M^-1 p
    for l in range(1, L + 1):
        g = grad_log_prob(x)
        x, p = hmc_leapfrog(x, p, g, h, final=(l == L))   # p += h g (h/2 when final); x += h M^-1 p unless final

The mass is diagonal and shared by all chains, given as ``inv_mass`` (the diagonal of ``M^-1``, x's event shape).
The kinetic energy ``p^T M^-1 p / 2`` is a per-chain reduction left to torch (``fastdiff.mcmc.hmc`` does it: one
read of ``p``); the Metropolis select of x is ``fastdiff.ops.langevin.langevin_select``.

Example:
    >>> import torch, fastdiff
    >>> x = torch.randn(4096, 2)
    >>> y, p = fastdiff.ops.hmc_refresh(x, -x, 0.1, seed=0, stream=0)
    >>> y, p = fastdiff.ops.hmc_leapfrog(y, p, -y, 0.1, final=True)    # one leapfrog step for N(0, I)
"""
from __future__ import annotations

import math
import weakref
from typing import Optional, Tuple, Union

import torch

from .._common import KERNEL_DTYPES, as_seed_args, check_float, check_out, check_stream, contig, maybe_rows, rows_of
from ..backend import resolve_backend
from ..dispatch import launcher
from ..langevin import _check_step
from ..profiling import profiled
from .naive import hmc_leapfrog_cpu, hmc_leapfrog_reference
from .record import LeapfrogArgs

__all__ = ["hmc_refresh", "hmc_leapfrog", "hmc_leapfrog_reference", "check_inv_mass"]


def check_inv_mass(inv_mass: Optional[torch.Tensor], x: torch.Tensor, *, name: str = "inv_mass",
                   check_values_on_device: bool = False) -> Optional[torch.Tensor]:
    """A diagonal mass shared by all chains as a contiguous flat float32 ``(n_cols,)`` tensor (None: identity).

    Accepts x's event shape ``x.shape[1:]`` or a flat ``(n_cols,)`` tensor on x's device. Values must be positive
    and finite: checked on CPU, on a GPU only when ``check_values_on_device`` (one host sync, paid by a sampler
    once before its loop).
    """
    if inv_mass is None:
        return None
    if not isinstance(inv_mass, torch.Tensor) or not inv_mass.dtype.is_floating_point:
        raise TypeError(f"{name} must be a float tensor (one value per element of a chain), "
                        f"got {type(inv_mass).__name__ if not isinstance(inv_mass, torch.Tensor) else inv_mass.dtype}")
    n_cols = math.prod(x.shape[1:])
    if tuple(inv_mass.shape) not in (tuple(x.shape[1:]), (n_cols,)):
        raise ValueError(f"{name} must have x's event shape {tuple(x.shape[1:])} or ({n_cols},), "
                         f"got {tuple(inv_mass.shape)}")
    if inv_mass.device != x.device:
        raise ValueError(f"{name} is on {inv_mass.device} but x is on {x.device}")
    if (x.device.type == "cpu" or check_values_on_device) and inv_mass.numel() and not _checked_before(inv_mass):
        if not bool(((inv_mass > 0) & torch.isfinite(inv_mass)).all()):
            raise ValueError(f"{name} must be positive and finite")
        _LAST_CHECKED[:] = [weakref.ref(inv_mass), inv_mass._version]
    flat = inv_mass if inv_mass.dim() == 1 else inv_mass.reshape(-1)
    return flat.to(torch.float32).contiguous()


# The mass tensor whose values were last found valid, and its version counter: a sampler passes the same mass to
# every leapfrog pass, and the value check is most of a small CPU call's cost (150 of 210 us at 1x4x8x8).
_LAST_CHECKED: list = [None, -1]


def _checked_before(t: torch.Tensor) -> bool:
    ref, version = _LAST_CHECKED
    return ref is not None and ref() is t and t._version == version


def _shares_memory(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    return (a is not None and b is not None and a.numel() > 0 and b.numel() > 0
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def _run(x, p, grad, step, inv_mass, noise, row_ids, x_out, p_out, noise_out, kick: float, momentum: int,
         drift: bool, seed: Optional[int], stream: int, backend: str):
    """Dispatch one checked pass; returns ``(x_out or None, p_out)``."""
    impl = resolve_backend(backend, x.device)
    if impl == "triton":
        if x.dtype not in KERNEL_DTYPES:
            raise TypeError(f"backend='triton' supports float32/float16/bfloat16 storage, got x.dtype={x.dtype}")
        per_row = isinstance(step, torch.Tensor)
        seed_lo, seed_hi = as_seed_args(seed)
        launcher("hmc_leapfrog")(LeapfrogArgs(
            contig(x), contig(p), contig(grad), step if per_row else None, inv_mass, contig(noise), row_ids,
            x_out, p_out, noise_out, 0.0 if per_row else step, float(kick), momentum, drift, seed_lo, seed_hi,
            stream))
        return x_out, p_out
    if impl == "torch":
        _, _, z = hmc_leapfrog_cpu(x, p, grad, step, kick=kick, drift=drift, inv_mass=inv_mass, noise=noise,
                                   seed=seed, stream=stream, row_ids=row_ids, x_out=x_out, p_out=p_out)
    else:
        xn, pn, z = hmc_leapfrog_reference(x, p, grad, step, kick=kick, drift=drift, inv_mass=inv_mass, noise=noise,
                                           seed=seed, stream=stream, row_ids=row_ids)
        p_out.copy_(pn)
        if drift:
            x_out.copy_(xn)
    if noise_out is not None:
        noise_out.copy_(z)
    return x_out, p_out


def _check_inputs(x, grad, step_size, inv_mass):
    check_float("x", x)
    batch, _ = rows_of(x)
    check_float("grad", grad, like=x, shape=x.shape)
    return batch, _check_step(step_size, batch, x.device), check_inv_mass(inv_mass, x)


def _check_aliasing(outs: dict, ins: dict) -> None:
    for o_name, o in outs.items():
        for i_name, t in ins.items():
            if _shares_memory(o, t):
                raise ValueError(f"{o_name} must not share memory with {i_name}")


@profiled("fastdiff::hmc_refresh")
def hmc_refresh(
    x: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    inv_mass: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    p_out: Optional[torch.Tensor] = None,
    noise_out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A trajectory's first pass: fresh momentum ``p = sqrt(M) z``, half-kick ``p += h/2 g``, drift ``x += h M^-1 p``.

    Args:
        x: chains, shape (n_chains, ...).
        grad: ``grad log p(x)`` (shape of x).
        step_size: h, a positive float or a (n_chains,) tensor of per-chain steps.
        inv_mass: diagonal of ``M^-1`` shared by all chains (x's event shape); None: identity.
        seed, stream, row_ids: in-kernel Philox normals ``z`` keyed by (seed, chain id, stream, element).
        noise: explicit standard-normal ``z`` instead of ``seed``.
        out: destination of the drifted x (x's dtype; ``out=x`` updates in place).
        p_out: destination of the momentum (any float dtype; default float32, float64 for float64 x).
        noise_out: also store ``z`` (the kinetic energy of the fresh momentum is ``|z|^2 / 2``).

    Returns:
        ``(x_new, p)``.

    Example:
        >>> x = torch.randn(8, 3)
        >>> y, p = fastdiff.ops.hmc_refresh(x, -x, torch.full((8,), 0.2), inv_mass=torch.ones(3), seed=1)
    """
    batch, step, im = _check_inputs(x, grad, step_size, inv_mass)
    if noise is not None:
        check_float("noise", noise, like=x, shape=x.shape)
        if seed is not None:
            raise ValueError("pass either seed (in-kernel noise) or noise, not both")
    elif seed is None:
        raise ValueError("hmc_refresh needs seed= (in-kernel noise) or noise=")
    check_stream(stream)
    row_ids = maybe_rows(row_ids, batch, x.device)
    check_out("out", out, x)
    check_out("p_out", p_out, x, dtype=None)
    check_out("noise_out", noise_out, x, dtype=None)
    _check_aliasing({"out": out, "p_out": p_out, "noise_out": noise_out}, {"grad": grad, "noise": noise})
    _check_aliasing({"p_out": p_out, "noise_out": noise_out}, {"x": x, "out": out})
    _check_aliasing({"noise_out": noise_out}, {"p_out": p_out})
    out = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
    if p_out is None:
        p_out = torch.empty(x.shape, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                            device=x.device)
    return _run(x, None, grad, step, im, noise, row_ids, out, p_out, noise_out, 0.5, 2 if noise is not None else 1,
                True, seed, stream, backend)


@profiled("fastdiff::hmc_leapfrog")
def hmc_leapfrog(
    x: torch.Tensor,
    p: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    inv_mass: Optional[torch.Tensor] = None,
    final: bool = False,
    out: Optional[torch.Tensor] = None,
    p_out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One pass after a gradient evaluation: kick ``p += h g`` then drift ``x += h M^-1 p``; ``final``: ``p += h/2 g``.

    With ``final=True`` (the trajectory's last half-kick) x is not written: the result's x is ``x`` itself and
    ``out`` must not be given.

    Args:
        x, p: positions (n_chains, ...) and momenta (shape of x, any float dtype).
        grad: ``grad log p(x)`` (shape of x).
        step_size: h, a positive float or a (n_chains,) tensor of per-chain steps.
        inv_mass: diagonal of ``M^-1`` shared by all chains (x's event shape); None: identity.
        final: the trajectory's closing half-kick, without a drift.
        out, p_out: destinations (``out=x``, ``p_out=p`` update in place); ``p_out`` defaults to p's dtype.

    Returns:
        ``(x_new, p_new)``.

    Example:
        >>> x, p = torch.randn(8, 3), torch.randn(8, 3)
        >>> x, p = fastdiff.ops.hmc_leapfrog(x, p, -x, 0.1, out=x, p_out=p)   # in place
    """
    batch, step, im = _check_inputs(x, grad, step_size, inv_mass)
    check_float("p", p, like=x, shape=x.shape)
    if not isinstance(final, bool):
        raise TypeError(f"final must be a bool, got {type(final).__name__}")
    if final and out is not None:
        raise ValueError("final=True writes no x (the last half-kick has no drift): do not pass out")
    check_out("out", out, x)
    check_out("p_out", p_out, x, dtype=None)
    _check_aliasing({"out": out}, {"p": p, "grad": grad, "p_out": p_out})
    _check_aliasing({"p_out": p_out}, {"x": x, "grad": grad})
    if p_out is None:
        p_out = torch.empty_like(p, memory_format=torch.contiguous_format)
    if not final and out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    x_new, p_new = _run(x, p, grad, step, im, None, None, out, p_out, None, 0.5 if final else 1.0, 0, not final,
                        None, 0, backend)
    return (x if final else x_new), p_new
