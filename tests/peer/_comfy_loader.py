"""Import ComfyUI's sampling math (``comfy/samplers.py``, ``comfy/k_diffusion/sampling.py``,
``comfy/model_sampling.py``) from a checkout, with stubs for the modules that math does not use.

ComfyUI is not a dependency of fastdiff and none of its code is in this repository: the parity harnesses in
``tests/peer/`` run against a checkout named by the ``COMFYUI_DIR`` environment variable and are skipped where it
is unset (see :func:`comfy_dir_or_skip`).

``comfy/samplers.py`` imports the model-management, hooks, context-window and utility modules of ComfyUI at the
top, and those pull in the GPU manager, ``psutil``, ``einops``, ... . None of them is used by the scheduler
functions, the ``k_diffusion`` samplers or ``ModelSampling*``; they are replaced by :class:`StubModule` objects
whose attributes are placeholders that raise when called, so a code path that does need one fails loudly
instead of silently using a fake. The real modules that the math uses are imported from the checkout:
``comfy.samplers``, ``comfy.k_diffusion.*``, ``comfy.model_sampling`` (and its ``make_beta_schedule``),
``comfy.patcher_extension`` and ``comfy.model_patcher`` (its ``set_model_options_post_cfg_function`` is how the
CFG++ samplers get the unconditional prediction).

:func:`load_comfy` imports everything with the stubs in ``sys.modules`` and restores ``sys.modules`` and
``sys.path`` afterwards; the returned module objects keep working because every name they use was bound at
import time (ComfyUI's sampling modules have no function-level imports).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from pathlib import Path
from typing import Iterator, Tuple

import pytest

__all__ = ["StubModule", "STUBBED_COMFY_MODULES", "load_comfy", "comfy_dir_or_skip", "comfy_imported"]

# ComfyUI modules that comfy/samplers.py, comfy/k_diffusion/sampling.py and comfy/model_patcher.py import at the
# top but whose contents the scheduler / sampler / model-sampling math never touches.
STUBBED_COMFY_MODULES = (
    "comfy.model_management",
    "comfy.sampler_helpers",
    "comfy.hooks",
    "comfy.context_windows",
    "comfy.utils",
    "comfy.lora",
    "comfy.model_base",
    "comfy.conds",
    "comfy.controlnet",
    "node_helpers",
)
# Third-party packages imported at the top of modules we load for real, only for functions we never call; stubbed
# only when they are not installed.
_OPTIONAL_THIRD_PARTY = ("einops", "psutil")

_LOADED = ("comfy.samplers", "comfy.k_diffusion.sampling", "comfy.model_sampling")


class _Placeholder:
    """An attribute of a stub module: usable as a name at import time, raises when used for real."""

    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __getattr__(self, name: str) -> "_Placeholder":
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self._qualname}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._qualname} belongs to a module the parity harness stubs out; "
                           "the code path under test should not need it")

    def __repr__(self) -> str:
        return f"<stub {self._qualname}>"


class StubModule(types.ModuleType):
    """A module whose every attribute is a :class:`_Placeholder` (raises when called)."""

    def __getattr__(self, name: str) -> _Placeholder:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}")


def comfy_dir_or_skip() -> Path:
    """The ComfyUI checkout named by ``COMFYUI_DIR``, or ``pytest.skip`` with the reason."""
    value = os.environ.get("COMFYUI_DIR")
    if not value:
        pytest.skip("ComfyUI parity: set COMFYUI_DIR to a ComfyUI checkout (the directory holding comfy/samplers.py)")
    path = Path(value).expanduser().resolve()
    if not (path / "comfy" / "samplers.py").is_file():
        pytest.skip(f"ComfyUI parity: COMFYUI_DIR={value} has no comfy/samplers.py")
    return path


def _is_ours(name: str) -> bool:
    return name in ("comfy", "node_helpers") or name.startswith("comfy.") or name in _OPTIONAL_THIRD_PARTY


@contextlib.contextmanager
def comfy_imported(comfy_dir) -> Iterator[Tuple[types.ModuleType, types.ModuleType, types.ModuleType]]:
    """Context manager: ComfyUI's ``(samplers, k_diffusion.sampling, model_sampling)`` modules imported from
    ``comfy_dir`` with the stubs installed; ``sys.modules`` and ``sys.path`` are restored on exit."""
    comfy_dir = str(Path(comfy_dir).resolve())
    saved_modules = {name: mod for name, mod in sys.modules.items() if _is_ours(name)}
    saved_path = list(sys.path)
    for name in saved_modules:
        del sys.modules[name]
    try:
        sys.path.insert(0, comfy_dir)
        stubs = list(STUBBED_COMFY_MODULES)
        for name in _OPTIONAL_THIRD_PARTY:
            try:
                importlib.import_module(name)
            except ImportError:
                stubs.append(name)
        comfy_pkg = importlib.import_module("comfy")  # the checkout's namespace package
        if not any(str(Path(p).resolve()) == str(Path(comfy_dir, "comfy")) for p in comfy_pkg.__path__):
            raise RuntimeError(f"'comfy' resolved to {list(comfy_pkg.__path__)}, not the checkout {comfy_dir}")
        for name in stubs:
            stub = StubModule(name)
            sys.modules[name] = stub
            parent, _, child = name.rpartition(".")
            if parent:
                # `import a.b` finds a.b in sys.modules and does not set the attribute on a: set it, since the
                # loaded code reads `comfy.model_management` as an attribute of the package
                setattr(sys.modules[parent], child, stub)
        yield tuple(importlib.import_module(name) for name in _LOADED)  # type: ignore[misc]
    finally:
        for name in [n for n in sys.modules if _is_ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path


def load_comfy(comfy_dir) -> Tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """ComfyUI's ``(comfy.samplers, comfy.k_diffusion.sampling, comfy.model_sampling)`` from the checkout at
    ``comfy_dir``, imported with :data:`STUBBED_COMFY_MODULES` stubbed; ``sys.modules`` / ``sys.path`` restored.

    The result is cached per directory (importing ComfyUI twice would give two copies of its classes).
    """
    key = str(Path(comfy_dir).resolve())
    if key not in _CACHE:
        with comfy_imported(key) as modules:
            _CACHE[key] = modules
    return _CACHE[key]


_CACHE: dict = {}
