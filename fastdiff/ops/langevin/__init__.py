"""The Langevin update op: ``x + h*grad + sqrt(2*h*T)*noise`` for many chains in one pass.

Note the factor: the seed notes write y + 2*g*dt + eps*sqrt(dt), which is
stationary for exp(4*score), not exp(score). With step h, drift h*grad and noise
variance 2*h*T the stationary law is exp(log_prob / T) (as h -> 0).

Example:
    >>> import torch, fastdiff
    >>> x = torch.randn(4096, 2)
    >>> x = fastdiff.langevin_step(x, -x, 0.01, seed=0, stream=0)   # one ULA step for N(0, I)
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from .._common import (KERNEL_DTYPES, as_seed_args, check_float, check_noise_source, check_out, check_stream, contig,
                       maybe_rows, rows_of)
from ..backend import resolve_backend
from ..dispatch import launcher
from ..profiling import profiled
from ..records import LangevinArgs, SelectArgs
from .naive import langevin_cpu, langevin_reference

__all__ = ["langevin_step", "langevin_select", "langevin_reference", "check_step_tensor"]


def check_step_tensor(step_size: torch.Tensor, batch: int, device: torch.device, *,
                      check_values_on_device: bool = False) -> torch.Tensor:
    """Per-chain step sizes as a contiguous float32 ``(batch,)`` tensor on ``device`` (a 0-d tensor is broadcast).

    Values must be positive and finite: checked on CPU, and on a GPU only when ``check_values_on_device``
    (a host sync, which a sampler pays once before its loop and a single step never pays).
    """
    if not step_size.dtype.is_floating_point:
        raise TypeError(f"step_size must be a float or a float tensor, got {step_size.dtype}")
    if step_size.dim() == 0:
        step_size = step_size.reshape(1).expand(batch)
    if step_size.shape != (batch,):
        raise ValueError(f"step_size must be a float or a tensor of shape ({batch},) (one per chain), "
                         f"got {tuple(step_size.shape)}")
    if step_size.device != device:
        raise ValueError(f"step_size is on {step_size.device} but x is on {device}")
    if ((device.type == "cpu" or check_values_on_device) and step_size.numel()
            and not bool(((step_size > 0) & torch.isfinite(step_size)).all())):
        raise ValueError("step_size must be positive and finite for every chain")
    return step_size.to(torch.float32).contiguous()


def _check_step(step_size, batch: int, device: torch.device):
    if isinstance(step_size, torch.Tensor):
        return check_step_tensor(step_size, batch, device)
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)):
        raise TypeError(f"step_size must be a float or a float tensor, got {type(step_size).__name__}")
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive finite float, got {step_size}")
    return float(step_size)


@profiled("fastdiff::langevin_step")
def langevin_step(
    x: torch.Tensor,
    grad: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    stream: int = 0,
    row_ids: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    noise_out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One Langevin update per chain (row): ``x + h*grad + sqrt(2*h*T)*z``.

    Args:
        x: chains, shape (n_chains, ...).
        grad: gradient of the log-density at x (shape of x) -- the modern "score", not log p.
        step_size: h, a positive float or a (n_chains,) tensor of per-chain steps.
        temperature: T > 0; the update samples p(x)**(1/T).
        seed, stream, row_ids: in-kernel Philox noise keyed by (seed, chain id, stream, element).
        noise: explicit standard-normal noise instead of ``seed``.
        out: destination (``out=x`` updates in place).
        noise_out: also store the noise used (MALA needs it for the proposal density).

    Example:
        >>> x = torch.randn(4096, 2)
        >>> x = fastdiff.langevin_step(x, -x, torch.full((4096,), 0.01), seed=0, stream=1)
    """
    check_float("x", x)
    batch, _ = rows_of(x)
    dev = x.device
    check_float("grad", grad, like=x, shape=x.shape)
    step = _check_step(step_size, batch, dev)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite float, got {temperature!r}")
    check_noise_source("langevin_step", x, noise, seed)
    seed_lo, seed_hi = as_seed_args(seed)
    check_stream(stream)
    row_ids = maybe_rows(row_ids, batch, dev)
    check_out("out", out, x)
    check_out("noise_out", noise_out, x, dtype=None)
    impl = resolve_backend(backend, dev)
    if impl == "triton":
        if x.dtype not in KERNEL_DTYPES:
            raise TypeError(f"backend='triton' supports float32/float16/bfloat16 storage, got x.dtype={x.dtype}")
        out = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
        per_row = isinstance(step, torch.Tensor)
        launcher("langevin_step")(LangevinArgs(contig(x), contig(grad), step if per_row else None, contig(noise),
                                               row_ids, out, noise_out, 0.0 if per_row else step, float(temperature),
                                               seed_lo, seed_hi, stream))
        return out
    if impl == "torch":
        # noise_out sharing out's memory: keep the reference's order (noise stored first, then the result)
        late = (noise_out is not None and out is not None
                and noise_out.untyped_storage().data_ptr() == out.untyped_storage().data_ptr())
        res, z = langevin_cpu(x, grad, step, temperature=float(temperature), noise=noise, seed=seed, stream=stream,
                              row_ids=row_ids, out=None if late else out)
        if noise_out is not None:
            noise_out.copy_(z)
        return out.copy_(res) if late else res
    compute = None if impl == "reference" else (torch.float64 if x.dtype == torch.float64 else torch.float32)
    res, z = langevin_reference(x, grad, step, temperature=float(temperature), noise=noise, seed=seed,
                                stream=stream, row_ids=row_ids, compute_dtype=compute)
    if noise_out is not None:
        noise_out.copy_(z)
    return res.to(x.dtype) if out is None else out.copy_(res)


@profiled("fastdiff::langevin_select")
def langevin_select(
    x: torch.Tensor,
    proposal: torch.Tensor,
    accept: torch.Tensor,
    *,
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Metropolis decision per chain: row b of the result is ``proposal[b]`` if ``accept[b]`` else ``x[b]``.

    Example:
        >>> x, proposal = torch.randn(8, 2), torch.randn(8, 2)
        >>> x = fastdiff.langevin_select(x, proposal, torch.rand(len(x)) < 0.5, out=x)  # in place
    """
    check_float("x", x)
    batch, _ = rows_of(x)
    check_float("proposal", proposal, like=x, shape=x.shape)
    if proposal.dtype != x.dtype:
        raise TypeError(f"proposal must have x's dtype {x.dtype}, got {proposal.dtype}")
    if not isinstance(accept, torch.Tensor) or accept.dtype != torch.bool or accept.shape != (batch,):
        raise ValueError(f"accept must be a bool tensor of shape ({batch},)")
    if accept.device != x.device:
        raise ValueError(f"accept is on {accept.device} but x is on {x.device}")
    check_out("out", out, x)
    impl = resolve_backend(backend, x.device)
    if impl == "triton":
        out = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
        launcher("langevin_select")(SelectArgs(contig(x), contig(proposal), accept.contiguous(), out))
        return out
    res = torch.where(accept.reshape(batch, *([1] * (x.dim() - 1))), proposal, x)
    return res if out is None else out.copy_(res)
