"""How a kernel launch runs: one ``Launcher`` per Triton kernel, registered once, looked up by name.

A launcher is defined in its op family's ``fused.py`` by decorating the launch body ``body(jit, args)``, where
``args`` is the kernel's argument record (a NamedTuple whose fields are the ``torch.library`` op's parameters, in
order) and ``jit`` wraps the kernel. Registration makes two callables of the one body:

* ``op``: the ``torch.library.triton_op`` ``torch.ops.fastdiff.<name>_`` (``jit=wrap_triton``), what
  torch.compile, export, fake-tensor tracing, autograd and profiler traces see; CUDA-graph capture sees a plain
  launch;
* ``direct``: the same body with the kernel called as is (``jit=as_kernel``), for plain eager calls. The
  dispatcher round trip of a ``triton_op`` costs ~25 us per call even with an empty body (measured on the 2-core
  CI CPU), more than a whole step's kernel at small batch on a GPU.

``launcher(name)(args)`` takes ``direct`` when nobody needs to see the op (``plain_eager``) and ``op`` otherwise,
holding the interpreter lock either way when the kernels run under the CPU interpreter. ``fastdiff.ops`` loads
the launchers at import where the kernels can run, so traced code never imports; elsewhere (CPU, no
interpreter) they load on first use: registering a ``triton_op`` pulls in ``torch._inductor`` (~1 s).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import threading
import typing
from typing import Callable, Dict, Iterable, NamedTuple, Optional, Sequence

import torch
from torch.library import triton_op, wrap_triton

from .backend import interpret_mode

_INTERPRET = interpret_mode()  # fixed at import, as Triton reads TRITON_INTERPRET

__all__ = ["Launcher", "define_launcher", "launcher", "load_launchers", "plain_eager", "interpreter_guard",
           "as_kernel"]

# the op families whose ``fused.py`` define launchers (imported by ``load_launchers``)
_FAMILIES = ("step", "encode", "langevin", "underdamped", "hmc")
_LAUNCHERS: Dict[str, "Launcher"] = {}


class Launcher:
    """A registered kernel launch: ``op`` (the ``torch.library`` op) and ``direct`` (the same body, no dispatcher).

    ``op`` takes the record's fields as arguments, ``direct`` the record itself; calling the launcher with a
    record picks one (see the module docstring).
    """

    def __init__(self, name: str, op: Callable[..., None], direct: Callable[[tuple], None], tensors: int) -> None:
        self.name = name
        self.op = op
        self.direct = direct
        self.tensors = tensors  # the record's leading tensor fields (the rest are Python scalars)

    def __call__(self, args: tuple, plain: bool = False) -> None:
        """Launch ``args``; ``plain=True`` says the caller has seen every tensor argument is a plain
        ``torch.Tensor`` (an op's argument parser knows it), so the classes are not looked at again."""
        if plain_eager(args[: self.tensors], plain):  # not compiling: under the interpreter, always the lock
            if _INTERPRET:
                with _INTERPRETER_LOCK:
                    self.direct(args)
            else:
                self.direct(args)
        else:
            with interpreter_guard():
                self.op(*args)

    def __repr__(self) -> str:
        return f"Launcher({self.name!r})"


def as_kernel(kernel):
    """The ``jit`` argument of a direct launch body (where the op passes ``wrap_triton``): the kernel as is."""
    return kernel


_TENSOR_TYPES = (torch.Tensor, Optional[torch.Tensor])


def _signature(record: type) -> tuple[inspect.Signature, int]:
    """The op's signature (the record's fields with their annotations: what ``triton_op`` infers the schema
    from) and the number of tensor fields, which must come first."""
    hints = typing.get_type_hints(record)
    params = [inspect.Parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hints[f])
              for f in record._fields]
    tensors = sum(hints[f] in _TENSOR_TYPES for f in record._fields)
    if any(hints[f] in _TENSOR_TYPES for f in record._fields[tensors:]):
        raise TypeError(f"{record.__name__}: the tensor fields must come before the scalar ones")
    return inspect.Signature(params, return_annotation=None), tensors


def define_launcher(name: str, record: type, *, mutates: Iterable[str]) -> Callable[[Callable], Launcher]:
    """Register the launch body it decorates as launcher ``name`` and op ``torch.ops.fastdiff.<name>_``.

    ``record`` is the argument NamedTuple, ``mutates`` the fields the kernel writes. Returns the ``Launcher``.
    """
    if name in _LAUNCHERS:
        raise ValueError(f"a launcher named {name!r} is already defined")

    def register(body: Callable[[Callable, NamedTuple], None]) -> Launcher:
        def impl(*args, **kwargs) -> None:
            body(wrap_triton, record(*args, **kwargs))

        impl.__signature__, tensors = _signature(record)
        impl.__name__ = impl.__qualname__ = name
        impl.__doc__ = body.__doc__
        op = triton_op(f"fastdiff::{name}_", mutates_args=set(mutates))(impl)
        if interpret_mode():
            # Under the CPU interpreter the kernel cannot run on fake tensors; the ops only mutate their
            # out= arguments, so tracing needs no shape logic. On CUDA, triton_op traces the kernel itself.
            op.register_fake(lambda *args, **kwargs: None)
        found = _LAUNCHERS[name] = Launcher(name, op, functools.partial(body, as_kernel), tensors)
        return found

    return register


def load_launchers() -> None:
    """Import every family's launchers (registering ``torch.ops.fastdiff.*``); a no-op once they are loaded."""
    for family in _FAMILIES:
        importlib.import_module(f"{__package__}.{family}.fused")


def launcher(name: str) -> Launcher:
    """The launcher registered as ``name`` (loading the launchers first if ``fastdiff.ops`` did not at import)."""
    found = _LAUNCHERS.get(name)
    if found is None:
        load_launchers()
        found = _LAUNCHERS[name]
    return found


_TENSOR = torch.Tensor
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_profiler = torch.autograd.profiler
_dispatch_depth = getattr(torch._C, "_len_torch_dispatch_stack", None)


def plain_eager(tensors: Sequence[Optional[torch.Tensor]], plain: bool = False) -> bool:
    """True when a launch needs nothing from the dispatcher: no tracing, no profiler, plain tensors, no grad.

    ``tensors`` are the launch's tensor arguments (None for an absent one; the first, every record's ``x``, is
    present); ``plain`` that the caller knows them all to be plain ``torch.Tensor`` objects. The check costs
    ~0.8 us for a step's 12 tensor arguments on the CI CPU, ~0.4 us with ``plain`` and grad off (a sampler's call).
    """
    if _is_compiling() or getattr(_profiler, "_is_profiler_enabled", True):
        return False
    if _dispatch_depth is None or _dispatch_depth():  # fake / functional tensors, export, debug modes
        return False
    # a subclass (DTensor, FakeTensor) keeps its dispatch; autograd needs the op
    if _grad_enabled():
        for t in tensors:
            if t is not None and (t.__class__ is not _TENSOR or t.requires_grad):
                return False
    elif not plain:
        for t in tensors:
            if t is not None and t.__class__ is not _TENSOR:
                return False
    # the op runs under the tensors' device guard; a direct Triton launch uses the current device
    x = tensors[0]
    return not x.is_cuda or x.device.index == torch.cuda.current_device()


# Triton's CPU interpreter patches triton.language module state for the duration of each launch, so two
# threads launching at once crash inside it; compiled launches on a GPU need no lock.
_INTERPRETER_LOCK = threading.RLock()
_NO_LOCK = contextlib.nullcontext()  # reusable: one object instead of a new one per launch


def interpreter_guard():
    """A lock around kernel launches under the CPU interpreter; a no-op context on GPUs and under torch.compile."""
    if interpret_mode() and not torch.compiler.is_compiling():
        return _INTERPRETER_LOCK
    return _NO_LOCK
