"""A peer's own code run in float64: the reference that the parity tests derive their bounds from.

diffusers builds its schedule tables and takes its steps in float32 by explicit ``dtype=torch.float32`` and
``np.float32``, so a float64 sample alone does not give a float64 run of its formulas. Here a scheduler (or
pipeline) module's source is executed a second time, under a private name, with ``torch.float32`` and
``np.float32`` read as float64 inside that copy only; the real modules, torch and numpy are left untouched.
Noise is still drawn in float32 from the caller's generator and then widened, so the float64 run sees the very
numbers the float32 runs see (a float64 ``torch.randn`` consumes the generator differently).

A parity test then asks of fastdiff what it can ask of the peer itself (``assert_parity``, the scheme of
``tolerance.assert_close_to_reference``): ``|ours - ref64| <= FACTOR * |peer - ref64| + 2 ulp * scale * steps``.
Both sides compute the same formula in float32 with different operation orders (and fastdiff with float64
tables), so neither should be more than a small factor further from the exact value than the other.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import torch

from tolerance import EPS

__all__ = ["FACTOR", "assert_parity", "float64_copy", "float64_pipeline", "float64_scheduler", "widened_randn"]

# torch factories that give the default dtype (float32) when no dtype is named: widened too
_FACTORIES = ("linspace", "logspace", "arange", "tensor", "zeros", "ones", "full", "empty")


def _widened_factory(factory):
    def make(*args, **kwargs):
        out = factory(*args, **kwargs)
        if kwargs.get("dtype") is None and out.dtype == torch.float32:
            out = factory(*args, **{**kwargs, "dtype": torch.float64})
        return out

    return make


class _Widened:
    """A read-only view of a module whose ``float32`` is its ``float64`` (and whose factories default to it)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name == "float32":
            return self._module.float64
        value = getattr(self._module, name)
        return _widened_factory(value) if self._module is torch and name in _FACTORIES else value


def widened_randn(randn, default=torch.float32):
    """``randn`` (diffusers' ``randn_tensor`` signature) drawing float32 and widening to the asked dtype.

    ``default`` is the dtype given where the caller names none (a float64 pipeline's latents).
    """

    def draw(shape, generator=None, device=None, dtype=None, layout=None):
        narrow = torch.float32 if dtype in (None, torch.float64) else dtype
        return randn(shape, generator=generator, device=device, dtype=narrow, layout=layout).to(dtype or default)

    return draw


def float64_copy(module: types.ModuleType) -> types.ModuleType:
    """A second execution of ``module``'s source with float32 read as float64 (kept in ``sys.modules``)."""
    name = f"{module.__name__}__float64"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, module.__file__)
    copy = importlib.util.module_from_spec(spec)
    copy.__package__ = module.__package__  # relative imports resolve against the real package
    sys.modules[name] = copy  # dataclasses look their module up here
    try:
        spec.loader.exec_module(copy)
    except BaseException:
        del sys.modules[name]
        raise
    # functions read their globals at call time: rebinding after exec widens every use in the module
    copy.torch, copy.np = _Widened(torch), _Widened(np)
    if hasattr(copy, "randn_tensor"):
        copy.randn_tensor = widened_randn(copy.randn_tensor)
    return copy


def float64_scheduler(diffusers, name: str, config: dict):
    """diffusers' scheduler class ``name`` built and stepped in float64 (its tables too)."""
    cls = getattr(diffusers, name)
    return getattr(float64_copy(sys.modules[cls.__module__]), name)(**config)


def float64_pipeline(monkeypatch, pipe):
    """Make ``pipe`` (a diffusers pipeline with a float64 scheduler put in) run in float64 for this test.

    Its models are cast to float64 and its initial noise is drawn in float32 and widened, so it starts from the
    same numbers as the float32 pipelines given the same generator.
    """
    module = sys.modules[type(pipe).__module__]
    monkeypatch.setattr(module, "randn_tensor", widened_randn(module.randn_tensor, torch.float64))
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.double()
    return pipe


# fastdiff may be at most this many times further from diffusers' float64 run than diffusers' float32 run is: both
# round the same formulas in float32, with different operation orders (fused coefficients against one tensor op
# per term); 3 is the factor the core kernels are held to (tests/tolerance.py).
FACTOR = 3.0


def assert_parity(what, ours, peer, ref64, n_steps):
    """``|ours - ref64| <= FACTOR * |peer - ref64| + 2 ulp * scale * n_steps``, max over elements.

    ``ref64`` is diffusers' own code run in float64, ``peer`` its float32 run, ``n_steps`` the number of steps whose
    rounding the compared value carries: each step may round a couple of ulp differently on each side, and a
    free-running trajectory carries those differences on (the one-step comparisons have n_steps=1).

    Where diffusers' float32 value is not finite but its float64 value is (DDIM with eta=1 at zero terminal SNR
    takes sqrt(1 - abar_prev - std^2) of an exact 0 that float32 rounding can push below 0: NaN on some CPUs, a
    spurious ~3e-4 on others), the peer's error there is unknown; it is taken as float32's own rounding,
    2 ulp * scale * n_steps, so fastdiff (which clamps that radicand at 0) must be within float32 rounding of exact.
    """
    assert ours.dtype == peer.dtype and ours.shape == ref64.shape, what
    assert torch.isfinite(ref64).all(), f"{what}: diffusers' float64 run is not finite"
    assert torch.isfinite(ours).all(), f"{what}: fastdiff is not finite"
    scale = max(1.0, ref64.abs().max().item())
    rounding = 2 * EPS[ours.dtype] * scale * n_steps
    finite = torch.isfinite(peer)
    peer_err = (peer.double() - ref64)[finite].abs().max().item() if finite.any() else 0.0
    if not finite.all():
        peer_err = max(peer_err, rounding)
    err = (ours.double() - ref64).abs().max().item()
    bound = FACTOR * peer_err + rounding
    assert err <= bound, (f"{what}: error {err:.3e} against diffusers' float64 run > bound {bound:.3e} "
                          f"(diffusers' float32 error {peer_err:.3e})")
