"""A ComfyUI custom-node package that adds fastdiff's samplers and schedulers to ComfyUI's lists.

Put this folder in ``ComfyUI/custom_nodes/`` (see README.md). When ComfyUI loads it, every sampler of
``fastdiff.comfyui`` appears in the KSampler / KSamplerSelect lists as ``fastdiff_<name>`` and every scheduler
as ``fastdiff_<name>`` in the KSampler / BasicScheduler lists, next to ComfyUI's own; nothing of ComfyUI is
replaced. The package adds no nodes (``NODE_CLASS_MAPPINGS`` is empty).

ComfyUI finds a sampler ``name`` as the attribute ``sample_<name>`` of ``comfy.k_diffusion.sampling`` (called
``(model, x, sigmas, extra_args=..., callback=..., disable=..., **options)``) and a scheduler in
``comfy.samplers.SCHEDULER_HANDLERS``; :func:`register` puts fastdiff's functions there and appends the names to
``KSAMPLER_NAMES``, ``SAMPLER_NAMES``, ``SCHEDULER_NAMES`` (the lists ``KSampler.SAMPLERS`` / ``SCHEDULERS``
are) and, for the samplers ComfyUI gives one extra step and then drops the penultimate sigma (``dpm_2``,
``dpm_2_ancestral``), ``KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS``.

This file imports nothing of ComfyUI: at import it registers only if ComfyUI has already imported
``comfy.samplers`` and ``comfy.k_diffusion.sampling`` (it always has when it loads custom nodes), and
:func:`register` takes those two modules as arguments, so it can be called with stand-ins (the project's tests
do).
"""
from __future__ import annotations

import inspect
import logging
import sys
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional

__all__ = ["PREFIX", "register", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

PREFIX = "fastdiff_"
NODE_CLASS_MAPPINGS: Dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: Dict[str, str] = {}

# ComfyUI samples these with one more step and drops the penultimate sigma (KSampler.calculate_sigmas)
_DISCARD_PENULTIMATE = ("dpm_2", "dpm_2_ancestral")
_log = logging.getLogger(__name__)


def _append_once(names: Any, name: str) -> None:
    if names is not None and name not in names:
        names.append(name)


def _sigma_range_sampler(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``dpm_fast`` / ``dpm_adaptive`` take ``(model, x, sigma_min, sigma_max[, n], ...)`` in k-diffusion's form;
    ComfyUI calls every registered sampler with a sigma schedule, and for its own two it derives the range
    itself (``sigma_min`` the last nonzero sigma, ``sigma_max`` the first, ``n`` the number of steps): the same
    adaptation for fastdiff's, unless fastdiff's already takes ``sigmas``."""
    if "sigmas" in inspect.signature(function).parameters:
        return function

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        if len(sigmas) <= 1:
            return x
        sigma_min = sigmas[-1] if float(sigmas[-1]) != 0 else sigmas[-2]
        if name == "dpm_fast":
            return function(model, x, sigma_min, sigmas[0], len(sigmas) - 1, extra_args=extra_args,
                            callback=callback, disable=disable)
        return function(model, x, sigma_min, sigmas[0], extra_args=extra_args, callback=callback,
                        disable=disable, **options)

    sample.__name__ = f"sample_{PREFIX}{name}"
    sample.__doc__ = function.__doc__
    return sample


def register(samplers_module: ModuleType, k_sampling_module: ModuleType, face: Optional[Any] = None) -> Dict[str, List[str]]:
    """Add fastdiff's samplers and schedulers to ComfyUI's lists as ``fastdiff_<name>``.

    ``samplers_module`` is ``comfy.samplers``, ``k_sampling_module`` ``comfy.k_diffusion.sampling``; ``face``
    is where the functions come from (default :mod:`fastdiff.comfyui`: its ``KSAMPLER_NAMES`` and
    ``sample_<name>`` functions, its ``SCHEDULER_HANDLERS``). Calling it again changes nothing more. Returns
    ``{"samplers": [...], "schedulers": [...]}``, the names now registered.

    Example (with stand-ins for ComfyUI's modules)::

        >>> import types
        >>> samplers = types.SimpleNamespace(KSAMPLER_NAMES=["euler"], SAMPLER_NAMES=["euler", "ddim"],
        ...                                  SCHEDULER_HANDLERS={}, SCHEDULER_NAMES=[])
        >>> added = register(samplers, types.ModuleType("k_sampling"))
        >>> "fastdiff_karras" in samplers.SCHEDULER_NAMES
        True
    """
    if face is None:
        import fastdiff.comfyui as face
    handler_type = getattr(samplers_module, "SchedulerHandler", None)
    ksampler = getattr(samplers_module, "KSampler", None)
    added: Dict[str, List[str]] = {"samplers": [], "schedulers": []}

    for name in getattr(face, "KSAMPLER_NAMES", ()):
        function = getattr(face, f"sample_{name}", None)
        if function is None:
            continue
        if name in ("dpm_fast", "dpm_adaptive"):
            function = _sigma_range_sampler(name, function)
        comfy_name = PREFIX + name
        setattr(k_sampling_module, f"sample_{comfy_name}", function)
        _append_once(getattr(samplers_module, "KSAMPLER_NAMES", None), comfy_name)
        _append_once(getattr(samplers_module, "SAMPLER_NAMES", None), comfy_name)
        if ksampler is not None:
            _append_once(getattr(ksampler, "SAMPLERS", None), comfy_name)  # already there if it is SAMPLER_NAMES
            discard = getattr(ksampler, "DISCARD_PENULTIMATE_SIGMA_SAMPLERS", None)
            if name in _DISCARD_PENULTIMATE and discard is not None:
                discard.add(comfy_name)
        added["samplers"].append(comfy_name)

    for name, (function, use_ms) in getattr(face, "SCHEDULER_HANDLERS", {}).items():
        comfy_name = PREFIX + name
        handler = handler_type(function, use_ms=use_ms) if handler_type is not None else (function, use_ms)
        samplers_module.SCHEDULER_HANDLERS[comfy_name] = handler
        _append_once(getattr(samplers_module, "SCHEDULER_NAMES", None), comfy_name)
        if ksampler is not None:
            _append_once(getattr(ksampler, "SCHEDULERS", None), comfy_name)
        added["schedulers"].append(comfy_name)
    return added


def _inside_comfyui() -> Optional[tuple]:
    """ComfyUI's ``(comfy.samplers, comfy.k_diffusion.sampling)`` if it has imported them, else None: looked up
    in ``sys.modules``, so that importing this package elsewhere imports nothing of ComfyUI."""
    samplers_module = sys.modules.get("comfy.samplers")
    k_sampling_module = sys.modules.get("comfy.k_diffusion.sampling")
    if samplers_module is None or k_sampling_module is None:
        return None
    return samplers_module, k_sampling_module


_comfy = _inside_comfyui()
if _comfy is not None:
    _added = register(*_comfy)
    _log.info("fastdiff: added %d samplers and %d schedulers to ComfyUI", len(_added["samplers"]),
              len(_added["schedulers"]))
