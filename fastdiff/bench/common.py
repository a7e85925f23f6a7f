"""The representative configuration every case shares, and the scheduler set-up of the diffusers providers.

One schedule (SD-style ``scaled_linear``, 1000 training steps) and one mid-trajectory step: t = 500 -> 480
(50 inference steps), previous step 520 for the multistep history; CFG scale 7.5; Langevin step 0.01.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Dict, Optional

import torch

from ..schedules import DiscreteVPSchedule
from .registry import Spec, Unavailable

__all__ = [
    "T", "T_PREV", "T_HIST", "GUIDANCE", "LANGEVIN_H", "INFERENCE_STEPS", "MID_STEP", "schedule",
    "diffusers_kwargs", "import_diffusers", "import_scheduler_module", "timesteps", "at_step", "rewind", "HostState",
]

T, T_PREV, T_HIST = 500, 480, 520
GUIDANCE = 7.5
LANGEVIN_H = 0.01
INFERENCE_STEPS = 50
MID_STEP = 25  # the step of a 50-step run that the scheduler providers time


_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@functools.lru_cache(maxsize=None)
def schedule() -> DiscreteVPSchedule:
    """The training schedule of every case (built once)."""
    return DiscreteVPSchedule(**_SCHEDULE)


def diffusers_kwargs() -> Dict[str, Any]:
    """The same schedule as diffusers scheduler config keys (the names are the same)."""
    return dict(_SCHEDULE)


def import_scheduler_module(module: str) -> Any:
    """``diffusers`` or ``fastdiff.diffusers``, or :class:`Unavailable` when it does not import here."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # any import failure means "not here"
        raise Unavailable(f"{module} not importable ({type(exc).__name__})") from None


def import_diffusers() -> Any:
    """The ``diffusers`` package, or :class:`Unavailable` (the diffusers providers' first call)."""
    return import_scheduler_module("diffusers")


def timesteps(spec: Spec, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """Per-sample training timesteps, the ``extra_inputs`` of the encoding cases."""
    return {"t": torch.randint(0, 1000, (spec.batch,), generator=gen, device=spec.device)}


def at_step(sched: Any, spec: Spec, k: int = MID_STEP, *, warm_history: bool = False,
            steps: int = INFERENCE_STEPS) -> Any:
    """Bring ``sched`` to step ``k`` of a ``steps``-step run (50) through its public API; returns ``timesteps[k]``.

    As a pipeline does: ``set_timesteps``, ``set_begin_index`` where the scheduler has one (img2img) and
    ``scale_model_input`` where it has one (Euler schedulers warn without it). With ``warm_history``
    (multistep solvers) step ``k - 1`` is run once on zeros, so that step ``k`` is a second-order step.
    """
    sched.set_timesteps(steps, device=spec.device)
    zeros = torch.zeros(spec.shape, dtype=spec.dtype, device=spec.device)
    start = k - 1 if warm_history else k
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)
    if hasattr(sched, "scale_model_input"):
        sched.scale_model_input(zeros, sched.timesteps[start])
    if warm_history:
        sched.step(zeros, sched.timesteps[start], zeros)
    return sched.timesteps[k]


def rewind(sched: Any, k: int, hist: Optional[torch.Tensor] = None, *, own_history: bool = False) -> None:
    """Set ``sched`` back to step ``k`` (with ``hist`` as the previous x0 estimate): host-side state only.

    Neither diffusers nor ``fastdiff.diffusers`` has a public way to rewind a scheduler (``set_timesteps``
    rebuilds its tables, too slow inside a timed call), so a scheduler with a step counter (a
    ``step_index`` property) gets the ``_step_index`` behind it set; the history goes where each reads it:
    diffusers' ``model_outputs``, or (``own_history``) the list fastdiff's multistep drop-in keeps in
    ``_hist``, most recent first.
    """
    if hasattr(sched, "step_index"):
        sched._step_index = k
    if hist is not None:
        if own_history:
            sched._hist = [hist]
        else:
            sched.model_outputs[-1] = hist


_ABSENT = object()  # an attribute a scheduler did not have at the snapshot


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is list and type(b) is list:  # a history list the step appended to in place
        return len(a) == len(b) and all(x is y for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or a is _ABSENT or b is _ABSENT:
        return False
    try:
        return bool(a == b)
    except Exception:  # a value without a plain equality: treat as changed (restoring it is harmless)
        return False


class HostState:
    """A snapshot of a scheduler's instance attributes (its host-side state), to set it back to before a call.

    Lists are copied (a step appends to its history list in place) and restored as fresh copies; tensors are
    kept by reference (a step replaces its history tensors, it does not write into them). ``keys`` limits
    the snapshot to the attributes a step changes (:meth:`changed_by`), so a rewind costs a few dict writes.
    """

    def __init__(self, obj: Any, keys: Optional[Any] = None) -> None:
        d = vars(obj)
        names = d if keys is None else keys
        self.values = {k: (list(d[k]) if type(d[k]) is list else d[k]) if k in d else _ABSENT for k in names}

    def changed_by(self, obj: Any) -> frozenset:
        """The attributes whose value differs between this snapshot and ``obj`` now (added ones included)."""
        d = vars(obj)
        return frozenset(k for k in set(d) | set(self.values)
                         if not _same(self.values.get(k, _ABSENT), d.get(k, _ABSENT)))

    def subset(self, keys: Any) -> "HostState":
        out = HostState.__new__(HostState)
        out.values = {k: self.values.get(k, _ABSENT) for k in keys}
        return out

    def restore(self, obj: Any) -> None:
        d = vars(obj)
        for k, v in self.values.items():
            if v is _ABSENT:
                d.pop(k, None)
            else:
                d[k] = list(v) if type(v) is list else v
