"""The case registry: what is benchmarked (:class:`Case`), for what (:class:`Spec`), and by whom (providers).

A provider is a factory ``factory(spec) -> fn(inputs) -> outputs`` registered per (case, provider name).
The factory does the untimed set-up (coefficient tables, schedulers) and may raise :class:`Unavailable`
to skip cleanly; ``compile`` needs no factory of its own: it is ``torch.compile`` of the ``eager`` one.
A function that keeps state per input set (a drop-in scheduler's history) may carry ``fn.prepare(sets)``,
which the runner calls, untimed, with the input sets it will rotate through before the first call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

__all__ = [
    "PROVIDERS", "BASELINES", "Unavailable", "Spec", "Case", "Fn", "Factory", "CASES", "register_case",
    "register_provider", "provider", "providers_for", "registered", "build_provider", "as_tuple",
]

PROVIDERS = ("fastdiff", "eager", "compile", "diffusers")
BASELINES = ("eager", "compile", "diffusers")


class Unavailable(RuntimeError):
    """Raised by a provider factory that cannot run here (missing package, unsupported dtype)."""


@dataclass(frozen=True)
class Spec:
    """What a provider is built for: the shape of ``x`` (the sample), its dtype and device."""

    shape: Tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def batch(self) -> int:
        return self.shape[0]

    def tensor_shape(self, mult: int = 1) -> Tuple[int, ...]:
        """Shape of a tensor holding ``mult`` copies of the batch (e.g. 2 for a CFG model output)."""
        return (mult * self.shape[0],) + tuple(self.shape[1:])


#: A provider's function: one input set in, its outputs out (a tensor or a tuple of tensors).
Fn = Callable[[Dict[str, torch.Tensor]], Any]
#: A provider's factory: the untimed set-up for a :class:`Spec`, returning the timed :data:`Fn`.
Factory = Callable[[Spec], Fn]


@dataclass
class Case:
    """One benchmarked op configuration.

    ``inputs`` and ``writes`` map tensor names to their size in multiples of
    ``numel(x)``; their sum times the item size is the byte count. Float inputs
    are made from ``inputs`` (N(0,1) values); ``extra_inputs`` adds index tensors
    and the like, which are too small to count. ``check`` names the providers
    whose outputs must match ``reference`` (default ``eager``) run on float32 copies of
    the inputs (omit noise-drawing cases: their RNGs differ).
    """

    name: str
    description: str
    inputs: Dict[str, int]
    writes: Dict[str, int]
    group: str = "other"
    extra_inputs: Optional[Callable[[Spec, torch.Generator], Dict[str, torch.Tensor]]] = None
    check: Tuple[str, ...] = ()
    op: str = ""  # the fastdiff call benchmarked, for reports
    reference: str = "eager"  # the provider whose fp32 output the ``check`` providers must match

    def bytes_moved(self, numel: int, dtype: torch.dtype) -> int:
        """Bytes a single pass must move: every input read once, every output written once."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return (sum(self.inputs.values()) + sum(self.writes.values())) * numel * itemsize

    def formula(self) -> str:
        """The byte count spelled out, e.g. ``(x + eps) read + (out) written = 3 x N x itemsize``."""
        reads = " + ".join(f"{k}*{n}" if k != 1 else n for n, k in self.inputs.items())
        writes = " + ".join(f"{k}*{n}" if k != 1 else n for n, k in self.writes.items())
        total = sum(self.inputs.values()) + sum(self.writes.values())
        return f"({reads}) read + ({writes}) written = {total} x N x itemsize"

    def make_inputs(self, spec: Spec, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        """One input set: N(0,1) float inputs in ``spec.dtype``, plus ``extra_inputs``."""
        inp = {n: torch.randn(spec.tensor_shape(k), generator=gen, device=spec.device, dtype=torch.float32)
               .to(spec.dtype) for n, k in self.inputs.items()}
        if self.extra_inputs is not None:
            inp.update(self.extra_inputs(spec, gen))
        return inp

    def input_bytes(self, spec: Spec) -> int:
        """Bytes of one input set's float inputs (what the rotation must keep out of cache)."""
        return sum(self.inputs.values()) * spec.numel * torch.empty((), dtype=spec.dtype).element_size()


CASES: Dict[str, Case] = {}
_FACTORIES: Dict[Tuple[str, str], Factory] = {}


def register_case(case: Case) -> Case:
    """Add (or replace) a case; providers are registered separately with :func:`provider`."""
    if not isinstance(case, Case):
        raise TypeError(f"case must be a fastdiff.bench.Case, got {type(case).__name__}")
    CASES[case.name] = case
    return case


def register_provider(case: str, name: str, factory: Factory) -> Factory:
    """Register ``factory(spec) -> fn(inputs) -> tuple of outputs`` for ``case``.

    The factory does the untimed setup (coefficient tables, schedulers) and may
    raise :class:`Unavailable` to skip cleanly. ``compile`` needs no factory: it
    is ``torch.compile`` of the ``eager`` one.
    """
    if name not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {name!r}")
    if name == "compile":
        raise ValueError("the compile provider is derived from eager; register an eager provider instead")
    _FACTORIES[(case, name)] = factory
    return factory


def provider(case: str, name: str) -> Callable[[Factory], Factory]:
    """Decorator form of :func:`register_provider`."""
    return lambda factory: register_provider(case, name, factory)


def providers_for(case: str) -> List[str]:
    """Providers that apply to ``case`` (``compile`` whenever there is an ``eager``)."""
    names = [p for p in PROVIDERS if (case, p) in _FACTORIES]
    if "eager" in names:
        names.insert(names.index("eager") + 1, "compile")
    return names


def registered(case: str, name: str) -> bool:
    """Whether ``name`` has a factory of its own for ``case`` (``compile`` never has)."""
    return (case, name) in _FACTORIES


def build_provider(case: Case, name: str, spec: Spec) -> Fn:
    """Run ``name``'s factory for ``case`` at ``spec``; ``compile`` wraps a fresh eager function."""
    if name == "compile":
        eager = _FACTORIES[(case.name, "eager")](spec)
        torch._dynamo.reset()  # a fresh cache per (case, size, dtype): no silent fallback at the recompile limit
        return torch.compile(eager, dynamic=False)
    return _FACTORIES[(case.name, name)](spec)


def as_tuple(out: Any) -> Tuple[torch.Tensor, ...]:
    """A provider's result as a tuple of tensors (a lone tensor becomes a 1-tuple)."""
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)
