"""ComfyUI's sampler and scheduler set on fastdiff: ``sample_<name>`` functions with the names and signatures of
ComfyUI's ``KSAMPLER_NAMES`` and scheduler functions with those of its ``SCHEDULER_HANDLERS``.

The samplers are the ones of :mod:`fastdiff.samplers` (one fused pass per model evaluation); the schedules are
:mod:`fastdiff.schedules`' float64 ones. This package never imports ComfyUI.
"""
from __future__ import annotations

from . import sampling, schedulers
from .sampling import *  # noqa: F401,F403
from .schedulers import *  # noqa: F401,F403

__all__ = [*sampling.__all__, *schedulers.__all__]
