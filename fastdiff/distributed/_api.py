"""The public entry points: diffusion sampling and Langevin chains over all ranks."""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from ..ops._common import check_int
from ._comm import _Timeout
from ._run import _check_common, _default_device, _run
from ._shards import _Device, _canon, _canon_metadata, _library_version, _tensor_digest

__all__ = ["sample", "langevin"]


def sample(
    denoiser: Callable,
    sample_shape: Union[int, Sequence[int]],
    sigmas: Union[torch.Tensor, Sequence[float]],
    *,
    num_samples: int,
    sampler: Union[str, Callable[..., torch.Tensor]] = "dpmpp_2m",
    seed: int,
    batch_size: Optional[int] = None,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    progress: bool = False,
    timeout: _Timeout = None,
    dtype: torch.dtype = torch.float32,
    device: _Device = None,
    metadata: Optional[Dict[str, Any]] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_error: str = "abort",
    **options: Any,
) -> Union[torch.Tensor, List[str]]:
    """Draw ``num_samples`` diffusion samples split over all ranks (k-diffusion convention, see ``fastdiff.sampling``).

    Row ``i`` starts from ``initial_noise(..., row_ids=[i]) * sigmas[0]`` (plain
    ``initial_noise`` for ``flow_euler``) and runs ``fastdiff.sampling.sample`` with
    ``row_ids=[i]``, so it is the same for any world size and ``batch_size`` (given
    a denoiser whose output for a row does not depend on the other rows in its batch).

    Args:
        denoiser: ``denoiser(x, sigma) -> x0 estimate`` (any denoiser ``fastdiff.sampling.sample`` takes).
        sample_shape: one sample's shape, e.g. ``(3, 64, 64)``.
        sigmas: the noise levels, decreasing to 0.
        num_samples: total number of samples over all ranks.
        sampler: a name from ``fastdiff.sampling.list_samplers()``, or a callable with the signature of
            ``fastdiff.sampling.sample`` (recorded in the manifest by qualified name).
        seed: Philox key of all noise (required: it is what makes the run reproducible and resumable).
        batch_size: rows per micro-batch on each rank (default: the rank's whole share at once).
        out_dir: write shards and a manifest there and return the shard paths (resumable); default:
            gather the samples and return them on every rank.
        progress: tqdm bar of global rows on rank 0.
        timeout: seconds a rank waits for the others at each micro-batch boundary before declaring the
            job failed (must exceed the slowest micro-batch); default: the process group's timeout.
        dtype, device: the samples' dtype (default float32) and device (default: this rank's GPU, else CPU).
        metadata: extra facts recorded in (and checked against) the manifest, e.g. a checkpoint hash: JSON
            values, or bytes, sets, numpy arrays and tensors (recorded by a content digest); any other type
            raises TypeError naming its key.
        callback: called on each rank after each micro-batch with ``{"rank", "rows", "x", "path"}``.
        on_error: "abort" (default): if any rank fails, every rank logs and exits with status 1;
            "raise": the failing rank re-raises, the others raise DistributedRunError.
        **options: the sampler's options (``eta``, ``guidance_scale``, ``backend``, ...), recorded in the manifest.

    Returns:
        The ``(num_samples, *sample_shape)`` samples on every rank, or with ``out_dir`` the shard paths
        sorted by row range (see :func:`load_shards`).

    Example:
        >>> gmm = fastdiff.toy.GaussianMixture.ring(k=4)
        >>> x = fastdiff.distributed.sample(gmm.denoiser, (2,), fastdiff.karras_sigmas(10, 0.01, 20.0),
        ...                                 num_samples=1000, seed=0, batch_size=256)
    """
    from .. import sampling as _sampling

    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    sample_shape, num_samples, batch_size = _check_common(sample_shape, num_samples, "num_samples", seed,
                                                          batch_size, dtype, on_error, callback, progress)
    if isinstance(sampler, str):
        sampler = _sampling.resolve_sampler(sampler)  # the manifest records the canonical name
    elif not callable(sampler):
        raise TypeError(f"sampler must be a sampler name or a callable, got {type(sampler).__name__}")
    for reserved in ("x", "row_ids", "progress"):
        if reserved in options:
            raise TypeError(f"{reserved!r} is set per micro-batch by fastdiff.distributed.sample; do not pass it")
    if "callback" in options:
        raise TypeError("pass callback= for per-micro-batch reports; per-step callbacks are not supported here")
    flow = sampler == "flow_euler"
    host = _sampling.host_sigmas(sigmas, flow)  # validates; float64 list
    meta = _canon_metadata(metadata)  # TypeError naming a key whose value cannot be recorded and compared
    dev = _default_device(device)
    # float64 host copy: the sampler reads it once, exactly as it would read the caller's sigmas
    sig64 = torch.tensor(host, dtype=torch.float64)
    scale = 1.0 if flow else host[0]
    run = _sampling.sample if isinstance(sampler, str) else sampler
    extra = {"sampler": sampler} if isinstance(sampler, str) else {}

    def compute(rows: torch.Tensor) -> torch.Tensor:
        x = _sampling.initial_noise((rows.numel(), *sample_shape), seed, row_ids=rows, device=dev, dtype=dtype)
        x = x * scale
        with torch.no_grad():
            return run(denoiser, x, sig64, seed=seed, row_ids=rows, **extra, **options)

    config = {
        "kind": "sample", "fastdiff_version": _library_version(), "num_samples": num_samples,
        "sample_shape": list(sample_shape), "dtype": str(dtype), "seed": seed, "sampler": _canon(sampler),
        "sigmas_sha256": _tensor_digest(torch.tensor(host, dtype=torch.float64)), "num_sigmas": len(host),
        "options": _canon(options), "denoiser": _canon(denoiser), "metadata": meta,
    }
    return _run("sample", config, sample_shape, dtype, dev, compute, batch_size=batch_size,
                out_dir=None if out_dir is None else os.fspath(out_dir), progress=progress, timeout=timeout,
                callback=callback, on_error=on_error)


def langevin(
    grad_log_prob: Callable[[torch.Tensor], torch.Tensor],
    sample_shape: Union[int, Sequence[int]],
    *,
    num_chains: int,
    step_size: Union[float, torch.Tensor],
    n_steps: int,
    seed: int,
    temperature: float = 1.0,
    init: Union[None, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: Optional[int] = None,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    progress: bool = False,
    timeout: _Timeout = None,
    dtype: torch.dtype = torch.float32,
    device: _Device = None,
    backend: str = "auto",
    metadata: Optional[Dict[str, Any]] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_error: str = "abort",
) -> Union[torch.Tensor, List[str]]:
    """Run ``num_chains`` unadjusted Langevin chains (``fastdiff.mcmc.langevin``) split over all ranks.

    Chain ``i`` starts from ``init`` (default: ``fastdiff.sampling.initial_noise`` standard normals
    for row ``i``) and draws its step noise from ``(seed, i)``, so its final state is the same
    for any world size and ``batch_size``.

    Args:
        grad_log_prob: ``x -> grad log p(x)`` for a batch of chains (each row independent).
        sample_shape: one chain's state shape.
        num_chains: total number of chains over all ranks.
        step_size: h > 0, a float or a ``(num_chains,)`` tensor (one per chain, indexed by chain id).
        n_steps, temperature: as in ``fastdiff.mcmc.langevin``.
        seed: Philox key of all noise.
        init: None, a ``(num_chains, *sample_shape)`` tensor, or ``init(row_ids) -> x`` returning the
            starting states of the given chain ids (it must depend only on the ids).
        batch_size, out_dir, progress, timeout, dtype, device, metadata, callback, on_error: as in :func:`sample`.
        backend: the Langevin op's backend.

    Returns:
        The final states ``(num_chains, *sample_shape)`` on every rank, or the shard paths with ``out_dir``.

    Example:
        >>> gmm = fastdiff.toy.GaussianMixture.ring(k=4)
        >>> x = fastdiff.distributed.langevin(gmm.grad_log_prob, (2,), num_chains=10_000, step_size=0.01,
        ...                                   n_steps=500, seed=0, batch_size=2048)
    """
    from .. import mcmc as _mcmc
    from .. import sampling as _sampling

    if not callable(grad_log_prob):
        raise TypeError(f"grad_log_prob must be callable, got {type(grad_log_prob).__name__}")
    sample_shape, num_chains, batch_size = _check_common(sample_shape, num_chains, "num_chains", seed,
                                                         batch_size, dtype, on_error, callback, progress)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive float, got {temperature!r}")
    dev = _default_device(device)
    if isinstance(step_size, torch.Tensor):
        if step_size.dim() != 0 and tuple(step_size.shape) != (num_chains,):
            raise ValueError(f"step_size must be a float or a tensor of shape ({num_chains},) (one per chain), "
                             f"got {tuple(step_size.shape)}")
        steps = step_size.detach().to(dev, torch.float32)
    elif isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not (
            step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive finite float or a tensor, got {step_size!r}")
    else:
        steps = float(step_size)
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (num_chains, *sample_shape):
            raise ValueError(f"init must have shape {(num_chains, *sample_shape)}, got {tuple(init.shape)}")
    elif init is not None and not callable(init):
        raise TypeError(f"init must be None, a tensor or a callable(row_ids) -> x, got {type(init).__name__}")
    meta = _canon_metadata(metadata)  # TypeError naming a key whose value cannot be recorded and compared

    def compute(rows: torch.Tensor) -> torch.Tensor:
        shape = (rows.numel(), *sample_shape)
        if init is None:
            x = _sampling.initial_noise(shape, seed, row_ids=rows, device=dev, dtype=dtype)
        elif isinstance(init, torch.Tensor):
            x = init[rows.to(init.device)].to(dev, dtype)
        else:
            x = init(rows)
            if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
                raise ValueError(f"init(row_ids) must return a tensor of shape {shape}, "
                                 f"got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
            x = x.to(dev, dtype)
        h = steps[rows] if isinstance(steps, torch.Tensor) and steps.dim() == 1 else steps
        return _mcmc.langevin(grad_log_prob, x, h, n_steps, temperature=float(temperature), seed=seed, row_ids=rows,
                              backend=backend)

    config = {
        "kind": "langevin", "fastdiff_version": _library_version(), "num_samples": num_chains,
        "sample_shape": list(sample_shape), "dtype": str(dtype), "seed": seed, "n_steps": n_steps,
        "step_size": _canon(step_size), "temperature": float(temperature), "init": _canon(init),
        "grad_log_prob": _canon(grad_log_prob), "backend": backend, "metadata": meta,
    }
    return _run("langevin", config, sample_shape, dtype, dev, compute, batch_size=batch_size,
                out_dir=None if out_dir is None else os.fspath(out_dir), progress=progress, timeout=timeout,
                callback=callback, on_error=on_error)
