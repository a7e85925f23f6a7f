"""Model wrappers: networks of every parametrisation as k-diffusion denoisers.

A denoiser in fastdiff follows k-diffusion's convention: ``denoiser(x, sigma)``
takes the variance-exploding sample ``x = x0 + sigma * eps`` and the per-row
noise level ``sigma`` (shape ``(batch,)``) and returns the x0 estimate.

The wrappers here split that call in two so the sampler can fuse the output
conversion into its step kernel:

* ``raw(x, sigma, t=None, **model_kwargs)`` runs the network (with the input
  scaling ``c_in`` and the timestep ``t = schedule.sigma_to_t(sigma)``) and
  returns its *raw* output (epsilon, v, x0 or velocity);
* ``conversion(sigma)`` gives float64 ``(in_x, in_m)`` with
  ``x0_estimate = in_x * x + in_m * raw``.

``fastdiff.sample`` passes the raw output and these coefficients to
``fused_step`` instead of materialising the x0 estimate first. Calling a
wrapper directly (``wrapper(x, sigma)``) does the conversion in PyTorch.
Samplers precompute ``t`` on the host for every noise level of a run
(``timesteps``) so no schedule look-up (and no host-device sync) happens in the
step loop.

Flow matching (rectified flow, ``x_s = (1 - s) x0 + s eps``, velocity
``v = eps - x0``, so ``x0 = x_s - s v``) maps to the VE convention by
``sigma = s / (1 - s)`` and ``x = x_s / (1 - s)``; :class:`FlowDenoiser` works
with every VE sampler through that map, and natively (in ``s``) with
``sampler="flow_euler"`` through ``flow_raw`` / ``flow_conversion``.

Example:
    >>> import torch, fastdiff
    >>> sched = fastdiff.DiscreteVPSchedule()
    >>> net = lambda x_in, t: torch.zeros_like(x_in)      # an epsilon network
    >>> den = EpsDenoiser(net, sched)
    >>> den(torch.ones(2, 3), torch.tensor([1.0, 2.0])).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch

from .solvers import ve_x0_coefs

__all__ = [
    "Denoiser", "EpsDenoiser", "VDenoiser", "X0Denoiser", "FlowDenoiser", "CFGDenoiser",
    "DiscreteEpsDDPMDenoiser", "DiscreteVDDPMDenoiser",
]


def _check_model(model: Any) -> Callable:
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_in, t, **kwargs), got {type(model).__name__}")
    return model


def _check_schedule(schedule: Any) -> Any:
    if schedule is not None and not callable(getattr(schedule, "sigma_to_t", None)):
        raise TypeError(
            "schedule must have a sigma_to_t method (e.g. fastdiff.DiscreteVPSchedule or ContinuousVPSchedule), "
            f"got {type(schedule).__name__}"
        )
    return schedule


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


class Denoiser:
    """Base class: a network of some parametrisation behind the k-diffusion denoiser interface.

    Subclasses set ``conversion``; they share input scaling and timestep
    conditioning: the network is called as ``model(c_in * x, t, **model_kwargs)``
    with ``c_in = 1 / sqrt(sigma**2 + 1)`` (VP networks see ``x * alpha``) and
    ``t = schedule.sigma_to_t(sigma)`` (``quantize=True`` rounds ``t`` to the
    nearest training timestep, as discrete models are trained on integers).
    ``schedule=None`` passes ``sigma`` itself as ``t``.
    """

    #: whether ``raw`` returns a doubled [uncond; cond] batch (classifier-free guidance)
    doubles_batch: bool = False

    def __init__(self, model: Callable, schedule: Any = None, *, quantize: bool = False) -> None:
        self.model = _check_model(model)
        self.schedule = _check_schedule(schedule)
        if not isinstance(quantize, bool):
            raise TypeError(f"quantize must be a bool, got {type(quantize).__name__}")
        self.quantize = quantize

    # --- host-side pieces (float64, once per run) -------------------------------------------
    def conversion(self, sigma: float) -> Tuple[float, float]:
        """Float64 ``(in_x, in_m)`` with ``x0 = in_x * x + in_m * raw`` at noise level ``sigma``."""
        raise NotImplementedError

    def timesteps(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Network timesteps for VE ``sigmas`` (float64 CPU tensor in, float64 CPU tensor out)."""
        sig = torch.as_tensor(sigmas, dtype=torch.float64)
        if self.schedule is None:
            return sig.clone()
        t = torch.as_tensor(self.schedule.sigma_to_t(sig), dtype=torch.float64)
        return t.round() if self.quantize else t

    # --- device-side pieces -------------------------------------------------------------------
    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """``c_in`` per row (a device op, no sync)."""
        return torch.rsqrt(sigma * sigma + 1.0)

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, t: Optional[torch.Tensor] = None,
            **model_kwargs: Any) -> torch.Tensor:
        """The network's raw output for VE sample ``x`` at per-row ``sigma`` (``t`` precomputed or looked up)."""
        if t is None:
            t = self.timesteps(sigma.detach().double().cpu()).to(device=sigma.device, dtype=sigma.dtype)
        c_in = _bcast(self.input_scale(sigma).to(x.dtype), x)
        return self.model(x * c_in, t, **model_kwargs)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        """The x0 estimate (conversion done in PyTorch; samplers fuse it instead)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        m = self.raw(x, sigma, **model_kwargs)
        host = sigma.detach().double().cpu().tolist()
        coefs = torch.tensor([self.conversion(s) for s in host], dtype=torch.float64).to(x.device, x.dtype)
        return _bcast(coefs[:, 0], x) * x + _bcast(coefs[:, 1], x) * m


class EpsDenoiser(Denoiser):
    """Epsilon-prediction network (Ho et al. 2020): ``x0 = x - sigma * eps`` (k-diffusion's DiscreteEpsDDPMDenoiser).

    Example:
        >>> EpsDenoiser(lambda x, t: x, None).conversion(2.0)
        (1.0, -2.0)
    """

    def conversion(self, sigma: float) -> Tuple[float, float]:
        return ve_x0_coefs("epsilon", float(sigma))


class VDenoiser(Denoiser):
    """v-prediction network (Salimans & Ho 2022): ``x0 = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v``.

    Example:
        >>> VDenoiser(lambda x, t: x, None).conversion(1.0)[0]
        0.5
    """

    def conversion(self, sigma: float) -> Tuple[float, float]:
        return ve_x0_coefs("v_prediction", float(sigma))


class X0Denoiser(Denoiser):
    """x0-prediction network: the raw output is the estimate itself.

    Example:
        >>> X0Denoiser(lambda x, t: x, None).conversion(3.0)
        (0.0, 1.0)
    """

    def conversion(self, sigma: float) -> Tuple[float, float]:
        return ve_x0_coefs("sample", float(sigma))


class FlowDenoiser(Denoiser):
    """Flow-matching (velocity) network (Lipman et al. 2023; Liu et al. 2023) as a denoiser.

    The network is called as ``model(x_s, s * timestep_scale, **kw)`` on the flow
    sample ``x_s = (1 - s) x0 + s eps`` and returns ``v = eps - x0``.
    ``timestep_scale`` defaults to ``schedule.num_train_timesteps`` of a
    :class:`fastdiff.FlowMatchingSchedule` (diffusers' convention), else 1.

    * VE samplers: ``s = sigma / (1 + sigma)``, input ``x_s = x / (1 + sigma)``,
      ``x0 = x / (1 + sigma) - sigma / (1 + sigma) * v``.
    * ``flow_euler`` (native, ``sigmas`` are flow times s): ``flow_raw(x_s, s)`` and
      ``flow_conversion(s) = (1, -s)``.

    Example:
        >>> den = FlowDenoiser(lambda x, t: torch.zeros_like(x))
        >>> den.flow_conversion(0.25), den.conversion(1.0)
        ((1.0, -0.25), (0.5, -0.5))
    """

    def __init__(self, model: Callable, schedule: Any = None, *, timestep_scale: Optional[float] = None) -> None:
        super().__init__(model, None)
        if timestep_scale is None:
            timestep_scale = float(getattr(schedule, "num_train_timesteps", 1.0))
        if not (isinstance(timestep_scale, (int, float)) and timestep_scale > 0):
            raise ValueError(f"timestep_scale must be a positive number, got {timestep_scale!r}")
        self.flow_schedule = schedule
        self.timestep_scale = float(timestep_scale)

    def conversion(self, sigma: float) -> Tuple[float, float]:
        s = float(sigma)
        return 1.0 / (1.0 + s), -s / (1.0 + s)

    def flow_conversion(self, s: float) -> Tuple[float, float]:
        return 1.0, -float(s)

    def timesteps(self, sigmas: torch.Tensor) -> torch.Tensor:
        sig = torch.as_tensor(sigmas, dtype=torch.float64)
        return sig / (1.0 + sig) * self.timestep_scale

    def flow_timesteps(self, s: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(s, dtype=torch.float64) * self.timestep_scale

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 + sigma)

    def flow_raw(self, x_s: torch.Tensor, s: torch.Tensor, t: Optional[torch.Tensor] = None,
                 **model_kwargs: Any) -> torch.Tensor:
        """Velocity at flow sample ``x_s`` and per-row flow time ``s``."""
        if t is None:
            t = s * self.timestep_scale
        return self.model(x_s, t, **model_kwargs)


_Cond = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def _cat_cond(uncond: _Cond, cond: _Cond, key: str) -> Dict[str, torch.Tensor]:
    if isinstance(cond, Mapping):
        if not isinstance(uncond, Mapping) or set(uncond) != set(cond):
            raise ValueError("cond and uncond must both be tensors, or dicts with the same keys")
        return {k: torch.cat([uncond[k], cond[k]]) for k in cond}
    if not isinstance(cond, torch.Tensor) or not isinstance(uncond, torch.Tensor):
        raise TypeError("cond and uncond must be tensors (or dicts of tensors)")
    if cond.shape != uncond.shape:
        raise ValueError(f"cond and uncond must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}")
    return {key: torch.cat([uncond, cond])}


class CFGDenoiser(Denoiser):
    """Classifier-free guidance (Ho & Salimans 2022), one network call per step on the doubled batch.

    ``raw(x, sigma)`` calls the wrapped denoiser once on ``[x; x]`` with
    conditioning ``[uncond; cond]`` (passed as keyword ``cond_key``) and returns
    the ``(2 * batch, ...)`` raw output; the sampler's step kernel forms
    ``m_u + scale * (m_c - m_u)`` (``guidance=True`` mode) before the conversion.
    Because the conversion is affine with the same ``in_x`` for both halves,
    guiding the raw outputs equals guiding the x0 estimates.

    Args:
        inner: a :class:`Denoiser` (its conversion is used) or a plain
            ``denoiser(x, sigma, **kw) -> x0`` callable.
        cond, uncond: per-row conditioning tensors (batch first) or dicts of them.
        scale: guidance scale (``fastdiff.sample(guidance_scale=...)`` overrides it).

    Example:
        >>> inner = lambda x, sigma, cond: x * 0 + cond
        >>> cfg = CFGDenoiser(inner, cond=torch.ones(2, 3), uncond=torch.zeros(2, 3), scale=2.0)
        >>> cfg(torch.zeros(2, 3), torch.ones(2))[0].tolist()
        [2.0, 2.0, 2.0]
    """

    doubles_batch = True

    def __init__(self, inner: Callable, cond: _Cond, uncond: _Cond, scale: float = 1.0, *,
                 cond_key: str = "cond") -> None:
        if not callable(inner):
            raise TypeError(f"inner must be a Denoiser or a callable, got {type(inner).__name__}")
        if isinstance(inner, Denoiser) and inner.doubles_batch:
            raise ValueError("inner is already a guidance wrapper")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"scale must be a finite number, got {scale!r}")
        self.inner = inner
        self.model = inner
        self.schedule = getattr(inner, "schedule", None)
        self.quantize = False
        self.scale = float(scale)
        self._cond = _cat_cond(uncond, cond, cond_key)

    def conversion(self, sigma: float) -> Tuple[float, float]:
        return self.inner.conversion(sigma) if isinstance(self.inner, Denoiser) else (0.0, 1.0)

    def timesteps(self, sigmas: torch.Tensor) -> torch.Tensor:
        if isinstance(self.inner, Denoiser):
            return self.inner.timesteps(sigmas)
        return torch.as_tensor(sigmas, dtype=torch.float64).clone()

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, t: Optional[torch.Tensor] = None,
            **model_kwargs: Any) -> torch.Tensor:
        return self._doubled("raw", x, sigma, t, model_kwargs)

    def _doubled(self, method: str, x: torch.Tensor, sigma: torch.Tensor, t: Optional[torch.Tensor],
                 model_kwargs: Dict[str, Any]) -> torch.Tensor:
        """One call of the inner network (its ``method``, or the plain callable) on ``[x; x]``, ``[uncond; cond]``."""
        kw = dict(model_kwargs)
        kw.update(self._cond)
        x2, s2 = torch.cat([x, x]), torch.cat([sigma, sigma])
        if isinstance(self.inner, Denoiser):
            return getattr(self.inner, method)(x2, s2, None if t is None else torch.cat([t, t]), **kw)
        return self.inner(x2, s2, **kw)

    def flow_raw(self, x: torch.Tensor, s: torch.Tensor, t: Optional[torch.Tensor] = None,
                 **model_kwargs: Any) -> torch.Tensor:
        """Doubled-batch raw output in flow time (``flow_euler``): a FlowDenoiser's velocity, or a
        plain flow-space x0 callable's output."""
        if isinstance(self.inner, Denoiser) and not hasattr(self.inner, "flow_raw"):
            raise ValueError(f"{type(self.inner).__name__} has no flow-time interface; use a FlowDenoiser")
        return self._doubled("flow_raw", x, s, t, model_kwargs)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        """Guided x0 estimate, in PyTorch."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        m = self.raw(x, sigma, **model_kwargs)
        b = x.shape[0]
        m = m[:b] + self.scale * (m[b:] - m[:b])
        host = sigma.detach().double().cpu().tolist()
        coefs = torch.tensor([self.conversion(s) for s in host], dtype=torch.float64).to(x.device, x.dtype)
        return _bcast(coefs[:, 0], x) * x + _bcast(coefs[:, 1], x) * m


#: k-diffusion-style names.
DiscreteEpsDDPMDenoiser = EpsDenoiser
DiscreteVDDPMDenoiser = VDenoiser
