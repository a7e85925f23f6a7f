"""Shared helpers of the reliability tests: input snapshots, tiny models, scheduler runs."""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, List

import pytest
import torch

from fastdiff import diffusers as fd

#: every drop-in scheduler, with the config keys they accept for a discrete beta schedule
COMPAT_SCHEDULERS = [
    fd.DDPMScheduler, fd.DDIMScheduler, fd.EulerDiscreteScheduler, fd.EulerAncestralDiscreteScheduler,
    fd.HeunDiscreteScheduler, fd.DPMSolverMultistepScheduler, fd.UniPCMultistepScheduler,
    fd.FlowMatchEulerDiscreteScheduler,
]
BETA_SCHEDULERS = [c for c in COMPAT_SCHEDULERS if c is not fd.FlowMatchEulerDiscreteScheduler]
#: those with ``rescale_betas_zero_snr`` in their config (as in diffusers)
ZTSNR_SCHEDULERS = [fd.DDPMScheduler, fd.DDIMScheduler, fd.EulerDiscreteScheduler,
                    fd.EulerAncestralDiscreteScheduler, fd.DPMSolverMultistepScheduler, fd.UniPCMultistepScheduler]


def sid(c) -> str:
    return c.__name__


def raises(exc, *names: str, fn: Callable[[], Any]) -> None:
    """``fn()`` raises ``exc`` and the message names every string in ``names`` (case-insensitive)."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for n in names:
        assert re.search(re.escape(n), msg, re.IGNORECASE), f"message {msg!r} does not name {n!r}"


def det_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=det_gen(seed)).to(dtype)


def eps_model(x_in: torch.Tensor, t: Any, **kw) -> torch.Tensor:
    """A deterministic 'network': a smooth function of its input and timestep (no randomness)."""
    tt = torch.as_tensor(t, dtype=x_in.dtype, device=x_in.device).reshape(-1, *([1] * (x_in.dim() - 1)))
    return torch.tanh(0.5 * x_in + 1e-3 * tt)


def run_scheduler(cls, n: int, x: torch.Tensor, model: Callable = eps_model, *, generator=None, **config):
    """A diffusers-style loop: set_timesteps(n), scale the input, step; returns the final sample."""
    s = cls(**config)
    s.set_timesteps(n)
    x = x * float(getattr(s, "init_noise_sigma", 1.0))
    for t in s.timesteps:
        out = model(s.scale_model_input(x, t), t)
        kw = {} if generator is None else {"generator": generator}
        x = s.step(out, t, x, **kw).prev_sample
    return x


# ----------------------------------------------------------------------------------- input snapshots
def _tensors(obj: Any, path: str = "arg") -> Iterable:
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, (list, tuple)):
        for i, o in enumerate(obj):
            yield from _tensors(o, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, o in obj.items():
            yield from _tensors(o, f"{path}[{k!r}]")


def snapshot(*objs: Any) -> List:
    """Copies of every tensor reachable from ``objs`` (with their version counters)."""
    return [(p, t, t.detach().clone(), t._version) for i, o in enumerate(objs) for p, t in _tensors(o, f"arg{i}")]


def assert_unchanged(snap: List) -> None:
    for path, t, copy, version in snap:
        assert t._version == version, f"{path} was written in place (version {version} -> {t._version})"
        assert torch.equal(t, copy) or (torch.isnan(t) == torch.isnan(copy)).all() and torch.equal(
            t.nan_to_num(), copy.nan_to_num()), f"{path} was modified"


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a float tensor (so NaN == NaN and -0.0 != 0.0): for bit-identity checks."""
    view = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
            torch.bfloat16: torch.int16}[t.dtype]
    return t.detach().contiguous().view(view)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(bits(a), bits(b))


def mk_dict(**kw) -> Dict[str, Any]:
    return kw
