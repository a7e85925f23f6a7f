"""Reverse-process samplers, each step one fused pass (``fastdiff.fused_step``) per model evaluation.

Convention (k-diffusion): ``denoiser(x, sigma)`` returns the x0 estimate for the
variance-exploding sample ``x = x0 + sigma * eps``; ``x`` starts at noise level
``sigmas[0]`` and ``sigmas`` decreases to 0. ``flow_euler`` instead runs natively
in flow time ``s`` (``x_s = (1 - s) x0 + s eps``; its ``sigmas`` are flow times
in [0, 1], e.g. ``fastdiff.FlowMatchingSchedule.sigmas(n)``, and the denoiser
returns the x0 estimate of the flow sample; see :mod:`fastdiff.denoisers`).

How a sampler runs: it computes, in float64 on the host from the sigmas, one
coefficient row per model evaluation (plus the denoiser's output conversion
``(in_x, in_m)`` and the guidance scale), builds ONE ``(R, 15)`` table, moves it
to the device once, and then each model evaluation ``k`` is followed by exactly
one ``fused_step(..., coef_row=k)``: the raw network output goes straight into
the kernel, which forms the x0 estimate, applies classifier-free guidance,
advances the sample, adds noise and writes the next history entry in one pass.
Heun-type correctors pass ``x_eval``; multistep solvers pass ``history``.
Nothing in the step loop reads device memory on the host.

Noise: every draw is Philox noise keyed by (seed, row id, stream, element), so a
row's samples depend only on ``(seed, row id)``. Stream numbers:

* ``k + 1``: the noise added by the fused step that follows model evaluation
  ``k`` (0-based) -- equivalently, "the number of model evaluations made before
  the noise is added";
* ``0``: the EDM churn noise added before the first evaluation (an extra fused
  pass, only when churn is active at ``sigmas[0]``);
* ``INITIAL_NOISE_STREAM = 2**32 - 1``: :func:`initial_noise`.

``dpmpp_sde`` uses independent Philox noise for its two sub-steps (each with the
variance of k-diffusion's version) instead of k-diffusion's Brownian tree, whose
two increments over nested intervals are correlated; the marginal law of each
step is the same, the noise is counter-based and batch-split invariant.

Example:
    >>> import torch, fastdiff
    >>> from fastdiff.toy import GaussianMixture
    >>> gmm = GaussianMixture.ring(k=4)
    >>> sigmas = fastdiff.karras_sigmas(10, 0.01, 20.0)
    >>> x = initial_noise((16, 2), seed=0) * sigmas[0].item()
    >>> out = sample(gmm.denoiser, x, sigmas, sampler="dpmpp_2m")
    >>> out.shape
    torch.Size([16, 2])
"""
from __future__ import annotations

import collections
import inspect
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from ._backend import BACKENDS, maybe_rows
from .ops._common import check_batch
from .random import DRAWN_SEED_BOUND, MAX_SEED, draw_seed, philox_normal
from .sampler_run import History, SamplerContext, _supports_flow, check_no_repeats
from .samplers import SAMPLERS, STOCHASTIC
from .solvers import ancestral_split, churn_schedule, lms_coefficients, unipc_rhos

__all__ = ["sample", "initial_noise", "list_samplers", "resolve_sampler", "SAMPLERS", "STOCHASTIC", "SamplerContext",
           "History", "INITIAL_NOISE_STREAM", "host_sigmas", "churn_schedule", "ancestral_split", "lms_coefficients",
           "unipc_rhos"]

#: Philox stream reserved for :func:`initial_noise` (no sampler step ever uses it).
INITIAL_NOISE_STREAM = 2**32 - 1


def initial_noise(
    shape: Sequence[int],
    seed: int,
    *,
    row_ids: Optional[torch.Tensor] = None,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normals for the starting sample, from Philox stream ``INITIAL_NOISE_STREAM``.

    ``initial_noise(shape, seed, row_ids=r) * sigmas[0]`` followed by
    ``sample(..., seed=seed, row_ids=r)`` makes a whole run a function of
    ``(seed, row id)`` only.

    Example:
        >>> z = initial_noise((4, 3), seed=1)
        >>> torch.equal(z[2:], initial_noise((2, 3), seed=1, row_ids=torch.tensor([2, 3])))
        True
    """
    return philox_normal(shape, seed, INITIAL_NOISE_STREAM, row_ids=row_ids, device=device, dtype=dtype)


def list_samplers() -> List[str]:
    """Names accepted by ``sample(sampler=...)``.

    Example:
        >>> "dpmpp_2m" in list_samplers()
        True
    """
    return list(SAMPLERS)


#: A1111 / ComfyUI spellings (after :func:`_normalise_name`) of a sampler that have one meaning here.
SAMPLER_ALIASES: Dict[str, str] = {
    "euler_a": "euler_ancestral", "dpm2": "dpm_2", "dpm2_a": "dpm_2_ancestral", "dpm_2_a": "dpm_2_ancestral",
    "dpmpp_2s_a": "dpmpp_2s_ancestral", "uni_pc": "unipc",
    "dpmpp_sde_gpu": "dpmpp_sde", "dpmpp_2m_sde_gpu": "dpmpp_2m_sde", "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
}
_SCHEDULE_WORDS = {"karras": "karras_sigmas", "exponential": "exponential_sigmas"}


def _normalise_name(name: str) -> str:
    # "DPM++ 2M SDE" -> "dpmpp_2m_sde"; underscores are kept, so "dpmpp2m" stays a misspelling
    return "_".join(name.strip().lower().replace("++", "pp").replace("-", " ").split())


def resolve_sampler(name: Any) -> str:
    """The sampler name of :func:`list_samplers` that ``name`` means.

    Exact names, their case-insensitive forms and the unambiguous A1111 / ComfyUI spellings
    (``"Euler a"``, ``"euler_a"``, ``"DPM++ 2M"``, ``"dpmpp_2m_sde_gpu"``, ...) are accepted. Anything else is a
    ValueError that lists the valid names and suggests the closest one; a name with a schedule in it
    (``"DPM++ 2M Karras"``) says which sampler and which sigmas function it means.

    Example:
        >>> resolve_sampler("DPM++ 2M")
        'dpmpp_2m'
        >>> resolve_sampler("euler_a")
        'euler_ancestral'
    """
    if isinstance(name, str):
        if name in SAMPLERS:
            return name
        key = _normalise_name(name)
        key = SAMPLER_ALIASES.get(key, key)
        if key in SAMPLERS:
            return key
    valid = list_samplers()
    msg = f"sampler must be one of {valid}, got {name!r}"
    if not isinstance(name, str):
        raise ValueError(msg)
    words = key.split("_")
    if len(words) > 1 and words[-1] in _SCHEDULE_WORDS:
        base = "_".join(words[:-1])
        base = SAMPLER_ALIASES.get(base, base)
        if base in SAMPLERS:
            fn = _SCHEDULE_WORDS[words[-1]]
            raise ValueError(f"{msg}: {name!r} is sampler {base!r} with {fn}(...); {words[-1].capitalize()} is a "
                             f"schedule, not a sampler: pass sampler={base!r}, "
                             f"sigmas=fastdiff.{fn}(n, sigma_min, sigma_max)")
    import difflib

    candidates = {n: n for n in valid}
    candidates.update(SAMPLER_ALIASES)
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {candidates[close[0]]!r}?"
    raise ValueError(msg)


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def host_sigmas(sigmas: Any, flow: bool = False) -> List[float]:
    """Validate ``sigmas`` and return them as host floats: the one host read of a run, before the loop.

    Validation runs on the Python list so that torch.compile sees a single ``tolist()``.

    Example:
        >>> host_sigmas(torch.tensor([2.0, 1.0, 0.0]))
        [2.0, 1.0, 0.0]
    """
    if isinstance(sigmas, torch.Tensor):
        if sigmas.is_meta:
            raise ValueError("sigmas is on the meta device; pass real values")
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
        sig = sigmas.detach().to("cpu", torch.float64).tolist()
    else:
        try:
            sig = [float(v) for v in sigmas]
        except (TypeError, ValueError):
            raise TypeError(f"sigmas must be a 1-D tensor or sequence of floats, got {type(sigmas).__name__}") from None
    if len(sig) < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got {len(sig)}")
    if not all(math.isfinite(v) for v in sig):
        raise ValueError("sigmas must be finite")
    if any(v < 0 for v in sig):
        raise ValueError("sigmas must be non-negative")
    if any(b > a for a, b in zip(sig, sig[1:])):
        raise ValueError("sigmas must be non-increasing")
    if sig[-1] != 0:
        raise ValueError(f"sigmas must end in 0, got last value {sig[-1]}")
    if any(v == 0 for v in sig[:-1]):
        raise ValueError("only the last entry of sigmas may be 0")
    check_no_repeats(sig)
    if flow and sig[0] > 1:
        raise ValueError(f"flow_euler takes flow times s in [0, 1] as sigmas, got sigmas[0] = {sig[0]}")
    return sig


_GRAPHS: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_MAX_GRAPHS = 4


def sample(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: Union[torch.Tensor, Sequence[float]],
    *,
    sampler: str = "dpmpp_2m",
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    row_ids: Optional[torch.Tensor] = None,
    guidance_scale: Optional[float] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    progress: bool = False,
    backend: str = "auto",
    cuda_graph: bool = False,
    clip: Optional[float] = None,
    model_kwargs: Optional[Dict[str, Any]] = None,
    **options: Any,
) -> torch.Tensor:
    """Run ``sampler`` from ``x`` (at noise level ``sigmas[0]``) down the ``sigmas`` schedule.

    Args:
        denoiser: ``denoiser(x, sigma) -> x0 estimate`` (k-diffusion convention), or a
            :class:`fastdiff.denoisers.Denoiser` wrapper (its output conversion is fused into
            the step) or a :class:`~fastdiff.denoisers.CFGDenoiser` (one network call on the
            doubled batch; guidance fused into the step).
        x: the starting sample (float tensor, batch first), e.g. ``initial_noise(...) * sigmas[0]``.
            It is not modified.
        sigmas: strictly decreasing noise levels ending in 0, no value repeated (flow times in [0, 1] for
            ``flow_euler``).
        sampler: one of :func:`list_samplers` (or an unambiguous A1111 / ComfyUI spelling of one, such as
            ``"Euler a"`` or ``"DPM++ 2M"``; see :func:`resolve_sampler`).
        seed: Philox key of all noise; ``None`` draws one from torch's global CPU generator (or from ``generator``).
        generator: a ``torch.Generator`` to take the seed from instead (not with ``seed``): one draw
            ``torch.randint(0, 2**62, (1,), generator=generator)`` on the generator's device, read on the host
            (a device sync for a CUDA generator), becomes ``seed``; the global RNG is not touched. The same
            generator state gives the same samples; the noise itself is still Philox noise keyed by the seed.
        row_ids: int64 ``(batch,)`` global row ids (default ``arange(batch)``): a row's noise
            depends only on ``(seed, row id)``.
        guidance_scale: classifier-free guidance scale (only with a ``CFGDenoiser``; default its ``scale``).
        callback: called after each step with ``dict(x, i, sigma, sigma_hat, denoised)``.
        progress: show a tqdm progress bar.
        backend: ``fused_step`` backend ("auto", "triton", "torch", "reference").
        cuda_graph: capture the sampling loop in a CUDA graph (CUDA tensors only; a CPU
            ``x`` raises ValueError). The denoiser must be capturable (static shapes, no host
            syncs). The first call with a given configuration runs one eager warm-up pass and
            captures; later calls with the same denoiser object, shapes, sigmas, options and
            ``seed`` replay the graph (with ``seed=None`` every call draws a new seed and captures anew).
        clip: clamp the x0 estimate to ``[-clip, clip]`` inside the step.
        model_kwargs: extra keyword arguments for every network call.
        **options: the sampler's own options (e.g. ``eta``, ``s_churn``, ``solver_type``).

    Example:
        >>> from fastdiff.schedules import karras_sigmas
        >>> from fastdiff.toy import GaussianMixture
        >>> gmm = GaussianMixture.ring(k=4)
        >>> sig = karras_sigmas(8, 0.01, 10.0)
        >>> x0 = sample(gmm.denoiser, initial_noise((4, 2), 0) * 10.0, sig, sampler="euler_ancestral", seed=0)
        >>> x0.shape
        torch.Size([4, 2])
    """
    sampler = resolve_sampler(sampler)
    fn = SAMPLERS[sampler]
    params = inspect.signature(fn).parameters
    valid = [p for p, v in params.items() if v.kind == inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"sampler {sampler!r} got unknown option(s) {unknown}; it takes {valid}")
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    check_batch("x", x)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    flow = sampler == "flow_euler"
    host = host_sigmas(sigmas, flow)
    if flow and not _supports_flow(denoiser):
        raise ValueError("flow_euler needs a FlowDenoiser (or a plain flow-space denoiser callable), got "
                         f"{type(denoiser).__name__}")
    guided = bool(getattr(denoiser, "doubles_batch", False))
    if guidance_scale is not None:
        if not guided:
            raise ValueError("guidance_scale needs a CFGDenoiser (a denoiser that calls the network on [uncond; cond])")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if seed is not None:
            raise ValueError("pass seed or generator, not both (generator only draws a seed)")
        seed = int(torch.randint(0, DRAWN_SEED_BOUND, (1,), generator=generator, device=generator.device).item())
    if seed is None:
        seed = draw_seed()  # a CPU draw: no device sync
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63) or None, got {seed!r}")
    if isinstance(row_ids, torch.Tensor) and row_ids.is_meta:
        raise ValueError("row_ids is on the meta device; pass real values")
    row_ids = maybe_rows(row_ids, x.shape[0], x.device)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")

    def make_ctx(xx: torch.Tensor, rid: Optional[torch.Tensor]) -> SamplerContext:
        return SamplerContext(denoiser, xx, host, seed=seed, row_ids=rid, guidance_scale=guidance_scale,
                              backend=backend, callback=callback, progress=progress, clip=clip,
                              model_kwargs=dict(model_kwargs or {}), space="flow" if flow else "ve")

    if not cuda_graph:
        with torch.no_grad():
            return fn(make_ctx(x, row_ids), x, **options)

    if x.device.type != "cuda":
        raise ValueError("cuda_graph=True needs CUDA tensors; x is on "
                         f"{x.device} (use cuda_graph=False on CPU)")
    if callback is not None or progress:
        raise ValueError("cuda_graph=True cannot call back or show progress inside the captured loop")
    key = (sampler, tuple(x.shape), x.dtype, x.device, tuple(host), seed, row_ids is None, guidance_scale, backend,
           clip, tuple(sorted(options.items())), tuple(sorted((model_kwargs or {}).keys())))
    entry = _GRAPHS.get(key)
    if entry is None or entry[0] is not denoiser:
        static_x = x.clone()
        static_rows = None if row_ids is None else row_ids.clone()
        ctx = make_ctx(static_x, static_rows)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            fn(ctx, static_x, **options)  # warm-up: compiles kernels, builds the table once
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.no_grad(), torch.cuda.graph(graph):
                static_out = fn(ctx, static_x, **options)
        except Exception as err:  # pragma: no cover - needs CUDA
            raise RuntimeError("CUDA-graph capture of the sampling loop failed; the denoiser must have static "
                               f"shapes and no host syncs (use cuda_graph=False): {err}") from err
        entry = (denoiser, graph, static_x, static_rows, static_out)
        _GRAPHS[key] = entry
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(key)
    _, graph, static_x, static_rows, static_out = entry
    static_x.copy_(x)
    if static_rows is not None:
        static_rows.copy_(row_ids)
    graph.replay()
    return static_out.clone()
