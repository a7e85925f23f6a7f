"""The underdamped (kinetic) Langevin op: one BAOAB step of many chains in one pass over ``(x, v, grad)``.

BAOAB (Leimkuhler & Matthews 2013) splits kinetic Langevin ``dx = M^-1 p dt``,
``dp = grad log p(x) dt - gamma p dt + sqrt(2 gamma T M) dW`` into a kick B (``p += h/2*g``), a drift A
(``x += h/2 * M^-1 p``), the exact Ornstein-Uhlenbeck refresh O (``p = c*p + sqrt((1 - c^2) T M) z``,
``c = exp(-gamma*h)``), A, B. The closing B of step n and the opening B of step n+1 use the same gradient, so
a run merges them: each pass is ``B(kick*h) A O A`` with ``kick = 1/2`` on the first step and 1 after, and a
last ``drift=False`` pass with ``kick = 1/2`` closes the run. ``v`` is the momentum ``p`` (velocity times
mass): its stationary law is ``N(0, T*M)``.

Example:
    >>> x, v = torch.randn(4096, 2), torch.randn(4096, 2)
    >>> x, v = fastdiff.underdamped_step(x, v, -x, 0.1, kick=0.5, seed=0, stream=0)   # N(0, I) target
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from .._common import (KERNEL_DTYPES, as_seed_args, check_float, check_noise_source, check_out, check_stream, contig,
                       maybe_rows, rows_of)
from ..backend import resolve_backend
from ..dispatch import launcher
from ..langevin import _check_step
from ..profiling import profiled
from ..records import UnderdampedArgs
from .naive import underdamped_cpu, underdamped_reference

__all__ = ["underdamped_step", "underdamped_reference", "check_mass", "check_friction"]


def _finite_float(name: str, value, *, minimum: Optional[float] = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be a finite float >= {minimum}, got {value!r}")
    return float(value)


def check_friction(friction) -> float:
    """``friction`` as a float: finite and >= 0 (0: no refresh, plain leapfrog)."""
    return _finite_float("friction", friction, minimum=0.0)


def check_mass(mass, x: torch.Tensor, *, check_values_on_device: bool = False) -> Union[float, torch.Tensor]:
    """The diagonal mass: ``None`` -> 1.0, a positive float, or a float tensor shaped like one event
    (``x.shape[1:]``) with positive finite values, returned as float32 contiguous on x's device.

    Values are checked on CPU, and on a GPU only when ``check_values_on_device`` (a host sync, paid once by a
    sampler before its loop, never by a single step); never inside ``torch.compile``.
    """
    if mass is None:
        return 1.0
    if not isinstance(mass, torch.Tensor):
        return _finite_float("mass", mass, positive=True)
    if not mass.dtype.is_floating_point:
        raise TypeError(f"mass must be a float or a float tensor, got {mass.dtype}")
    event = tuple(x.shape[1:])
    if tuple(mass.shape) != event:
        raise ValueError(f"mass must be a float or a tensor of shape {event} (one value per element of an "
                         f"event, x.shape[1:]), got {tuple(mass.shape)}")
    if mass.device != x.device:
        raise ValueError(f"mass is on {mass.device} but x is on {x.device}")
    # a traced call cannot read values (the check would break the graph); eager calls check them
    if ((x.device.type == "cpu" or check_values_on_device) and mass.numel() and not torch.compiler.is_compiling()
            and not bool(((mass > 0) & torch.isfinite(mass)).all())):
        raise ValueError("mass must be positive and finite everywhere")
    return mass.to(torch.float32).contiguous()


@profiled("fastdiff::underdamped_step")
def underdamped_step(
    x: torch.Tensor,
    v: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    kick: float = 1.0,
    friction: float = 1.0,
    mass: Union[None, float, torch.Tensor] = None,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    drift: bool = True,
    x_out: Optional[torch.Tensor] = None,
    v_out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused BAOAB pass per chain (row): ``p += kick*h*g``, ``x += h/2*p/m``, ``p = c*p + sqrt((1-c^2)*T*m)*z``,
    ``x += h/2*p/m`` with ``c = exp(-friction*h)``; returns ``(x_new, v_new)``.

    Args:
        x: chains, shape (n_chains, ...).
        v: momenta (velocity times mass), shape and dtype of x.
        grad: gradient of the log-density at x (shape of x).
        step_size: h, a positive float or a (n_chains,) tensor of per-chain steps.
        kick: the size of the opening kick in units of h: 1/2 on a run's first step, 1 when the previous step's
            closing half-kick is merged into this one.
        friction: gamma >= 0 (0: no refresh, leapfrog).
        mass: diagonal mass: None (1), a positive float, or a tensor shaped like one event (``x.shape[1:]``).
        temperature: T > 0; the stationary law is ``p(x)**(1/T)`` times ``N(v; 0, T*M)``.
        seed, stream, row_ids: in-kernel Philox noise keyed by (seed, chain id, stream, element).
        noise: explicit standard-normal noise instead of ``seed``.
        drift: False runs only the kick ``v + kick*h*grad`` (a run's closing half-kick): x is returned as is,
            no noise is drawn, and x_out must be None.
        x_out, v_out: destinations (``x_out=x, v_out=v`` update in place).

    Example:
        >>> x, v = torch.randn(8, 3), torch.zeros(8, 3)
        >>> x2, v2 = fastdiff.underdamped_step(x, v, -x, torch.full((8,), 0.2), mass=torch.tensor([1., 2., 4.]),
        ...                                    friction=0.5, seed=1, stream=3)
        >>> _, v3 = fastdiff.underdamped_step(x2, v2, -x2, 0.2, kick=0.5, drift=False)   # the closing half-kick
    """
    check_float("x", x)
    batch, _ = rows_of(x)
    dev = x.device
    check_float("v", v, like=x, shape=x.shape)
    if v.dtype != x.dtype:
        raise TypeError(f"v must have x's dtype {x.dtype}, got {v.dtype}")
    check_float("grad", grad, like=x, shape=x.shape)
    step = _check_step(step_size, batch, dev)
    kick = _finite_float("kick", kick)
    friction = check_friction(friction)
    temperature = _finite_float("temperature", temperature, positive=True)
    m = check_mass(mass, x)
    if not isinstance(drift, bool):
        raise TypeError(f"drift must be a bool, got {type(drift).__name__}")
    if drift:
        check_noise_source("underdamped_step", x, noise, seed)
    elif x_out is not None:
        raise ValueError("x_out must be None when drift=False (the kick does not move x)")
    seed_lo, seed_hi = as_seed_args(seed)
    check_stream(stream)
    row_ids = maybe_rows(row_ids, batch, dev)
    check_out("x_out", x_out, x)
    check_out("v_out", v_out, x)
    impl = resolve_backend(backend, dev)
    mass_t = m if isinstance(m, torch.Tensor) else None
    mass_scalar = 1.0 if mass_t is not None else m
    if impl == "triton":
        if x.dtype not in KERNEL_DTYPES:
            raise TypeError(f"backend='triton' supports float32/float16/bfloat16 storage, got x.dtype={x.dtype}")
        xc = contig(x)
        if drift:
            x_out = torch.empty_like(x, memory_format=torch.contiguous_format) if x_out is None else x_out
        v_out = torch.empty_like(x, memory_format=torch.contiguous_format) if v_out is None else v_out
        per_row = isinstance(step, torch.Tensor)
        launcher("underdamped_step")(UnderdampedArgs(
            xc, contig(v), contig(grad), step if per_row else None, None if mass_t is None else mass_t.reshape(-1),
            contig(noise) if drift else None, row_ids, x_out if drift else xc, v_out, 0.0 if per_row else step,
            kick, friction, temperature, mass_scalar, drift, seed_lo, seed_hi, stream))
        return (x_out if drift else x), v_out
    if impl == "torch":
        return underdamped_cpu(x, v, grad, step, kick=kick, friction=friction, mass=mass_t, mass_scalar=mass_scalar,
                               temperature=temperature, noise=noise if drift else None, seed=seed, stream=stream,
                               row_ids=row_ids, drift=drift, x_out=x_out, v_out=v_out)
    compute = None if impl == "reference" else (torch.float64 if x.dtype == torch.float64 else torch.float32)
    ref_mass = mass if isinstance(mass, torch.Tensor) else m  # the reference computes in the caller's precision
    xn, vn = underdamped_reference(x, v, grad, step, kick=kick, friction=friction, mass=ref_mass,
                                   temperature=temperature, noise=noise if drift else None, seed=seed, stream=stream,
                                   row_ids=row_ids, drift=drift, compute_dtype=compute)
    if drift:
        xn = xn.to(x.dtype) if x_out is None else x_out.copy_(xn)
    else:
        xn = x
    return xn, (vn.to(x.dtype) if v_out is None else v_out.copy_(vn))
