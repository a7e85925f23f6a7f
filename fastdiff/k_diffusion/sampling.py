"""k-diffusion's ``sample_*`` functions: the same signatures, calls, noise draws and callbacks, on fastdiff's samplers.

Each function is a signature adapter: it builds a :class:`~fastdiff.k_diffusion.run.KDiffusionRun` (k-diffusion's
model call, scalar arithmetic and noise sources) and runs the one implementation in :mod:`fastdiff.samplers`.

Example:
    >>> import torch
    >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
    >>> sample_dpmpp_2m(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from .. import samplers as core
from ..solvers import dpm_fast_grid
from .noise import NoiseSampler, brownian_default, resolve_noise
from .run import KDiffusionRun
from .schedules import get_sigmas_karras  # noqa: F401 - the docstring examples use it

__all__ = [
    "sample_euler", "sample_heun", "sample_dpm_2", "sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_lms",
    "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde",
    "sample_dpm_fast", "sample_dpm_adaptive", "SAMPLERS",
]


@torch.no_grad()
def sample_euler(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                 callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Euler steps of Karras et al. (2022), Algorithm 2 (with optional churn).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_euler(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    return core.sample_euler(run, x, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
def sample_heun(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Heun steps of Karras et al. (2022), Algorithm 2.

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_heun(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    return core.sample_heun(run, x, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
def sample_dpm_2(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                 callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 steps (Lu et al. 2022) in the Algorithm-2 frame of Karras et al. (2022).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_2(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    return core.sample_dpm_2(run, x, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
def sample_euler_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                           extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                           disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                           noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral sampling with Euler steps (Ho et al. 2020 ancestral noise; k-diffusion's euler_a).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_euler_ancestral(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    run.noise_sampler = resolve_noise(x, noise_sampler)
    return core.sample_euler_ancestral(run, x, eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_dpm_2_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                           extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                           disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                           noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver-2 steps (Lu et al. 2022; k-diffusion's dpm_2_a).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_2_ancestral(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    run.noise_sampler = resolve_noise(x, noise_sampler)
    return core.sample_dpm_2_ancestral(run, x, eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_lms(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
               callback: Optional[Callable] = None, disable: Optional[bool] = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth) on the probability-flow ODE in sigma (Karras et al. 2022; k-diffusion).

    Orders above 4 fold the oldest derivatives into the last history slot (one extra pass).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_lms(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    return core.sample_lms(run, x, order=order)


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                              extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                              disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                              noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver++(2S) steps (Lu et al. 2022, DPM-Solver++).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2s_ancestral(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    run.noise_sampler = resolve_noise(x, noise_sampler)
    return core.sample_dpmpp_2s_ancestral(run, x, eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_dpmpp_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                     callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                     s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None, r: float = 1 / 2) -> torch.Tensor:
    """DPM-Solver++ stochastic two-stage steps (Lu et al. 2022, DPM-Solver++; k-diffusion's dpmpp_sde).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_sde(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0),
        ...                  noise_sampler=lambda a, b: torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    run.noise_sampler = brownian_default(x, sigmas, noise_sampler, used=True)
    return core.sample_dpmpp_sde(run, x, eta=eta, s_noise=s_noise, r=r)


@torch.no_grad()
def sample_dpmpp_2m(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                    callback: Optional[Callable] = None, disable: Optional[bool] = None) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order (Lu et al. 2022, DPM-Solver++ Algorithm 2).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    return core.sample_dpmpp_2m(run, x)


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                        extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                        disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: Optional[NoiseSampler] = None, solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's dpmpp_2m_sde).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m_sde(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0), eta=0.0).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    run.noise_sampler = brownian_default(x, sigmas, noise_sampler, used=bool(eta))
    return core.sample_dpmpp_2m_sde(run, x, eta=eta, s_noise=s_noise, solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                        extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                        disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's dpmpp_3m_sde).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_3m_sde(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0), eta=0.0).shape
        torch.Size([2, 3])
    """
    run = KDiffusionRun(model, x, sigmas, extra_args, callback, disable)
    run.noise_sampler = brownian_default(x, sigmas, noise_sampler, used=bool(eta))
    return core.sample_dpmpp_3m_sde(run, x, eta=eta, s_noise=s_noise)


#: k-diffusion sampler names (without ``sample_``) -> functions.
SAMPLERS: Dict[str, Callable[..., torch.Tensor]] = {name: globals()[f"sample_{name}"] for name in (
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_sde",
    "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde")}


class _DPMSolverRun(KDiffusionRun):
    """The run of k-diffusion's DPMSolver samplers: the schedule is ``sigma(t)`` on the solver's grid of log-SNR
    times ``ts``, and the callback gets k-diffusion's DPMSolver info dict."""

    def __init__(self, model: Callable, x: torch.Tensor, ts: list, extra_args: Optional[Dict[str, Any]],
                 callback: Optional[Callable], disable: Optional[bool]) -> None:
        self.ts = ts
        super().__init__(model, x, torch.stack(ts).neg().exp().to(x.device), extra_args, callback, disable)

    def report(self, i: int, x: torch.Tensor, raw: torch.Tensor, k: int, sigma_hat: Any = None) -> None:
        if self.callback is not None:
            t = self.ts[i]
            sigma = t.neg().exp()
            self.callback({"sigma": sigma, "sigma_hat": sigma, "x": x, "i": i, "t": t, "t_up": t, "denoised": raw})


def _check_sigma_range(sigma_min: Any, sigma_max: Any) -> None:
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")


@torch.no_grad()
def sample_dpm_fast(model: Callable, x: torch.Tensor, sigma_min: Any, sigma_max: Any, n: int,
                    extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                    disable: Optional[bool] = None, eta: float = 0.0, s_noise: float = 1.0,
                    noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """DPM-Solver-fast with ``n`` model evaluations from ``sigma_max`` to ``sigma_min`` (Lu et al. 2022,
    "DPM-Solver"; k-diffusion's ``sample_dpm_fast``): the grid and orders of
    :func:`~fastdiff.solvers.dpm_fast_grid`, run by :func:`fastdiff.samplers.sample_dpm_fast`. As k-diffusion,
    it draws ``noise_sampler(sigma, sigma_next)`` once a step even when ``eta == 0`` (the global RNG advances the
    same way); the progress bar counts steps, not evaluations.

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_fast(den, torch.ones(2, 3), 0.1, 10.0, 7).shape
        torch.Size([2, 3])
    """
    _check_sigma_range(sigma_min, sigma_max)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (model evaluations), got {n!r}")
    t_start, t_end = torch.as_tensor(sigma_max).log().neg(), torch.as_tensor(sigma_min).log().neg()
    ts, orders = dpm_fast_grid(t_start, t_end, n)
    run = _DPMSolverRun(model, x, ts, extra_args, callback, disable)
    run.noise_sampler = resolve_noise(x, noise_sampler)
    return core.sample_dpm_fast(run, x, orders=orders, eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_dpm_adaptive(model: Callable, x: torch.Tensor, sigma_min: Any, sigma_max: Any,
                        extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                        disable: Optional[bool] = None, order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                        h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                        accept_safety: float = 0.81, eta: float = 0.0, s_noise: float = 1.0,
                        noise_sampler: Optional[NoiseSampler] = None, return_info: bool = False) -> Any:
    """DPM-Solver-12 / -23 with adaptive step size (Lu et al. 2022, "DPM-Solver"; k-diffusion's
    ``sample_dpm_adaptive``), run by :func:`fastdiff.samplers.dpm_adaptive`: fused stage passes, one host read
    of the error norm per step (the accept / reject decision). The progress bar is not shown.

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_adaptive(den, torch.ones(2, 3), 0.1, 10.0).shape
        torch.Size([2, 3])
    """
    _check_sigma_range(sigma_min, sigma_max)
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
    extra = {} if extra_args is None else extra_args
    if not isinstance(extra, dict):
        raise TypeError(f"extra_args must be a dict or None, got {type(extra).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    s_in = x.new_ones([x.shape[0]])
    ns = resolve_noise(x, noise_sampler)

    def evaluate(v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return model(v, sigma * s_in, **extra)

    def report(info: Dict[str, Any]) -> None:
        sigma = info["t"].neg().exp()
        callback({"sigma": sigma, "sigma_hat": sigma, **info})

    t_start, t_end = torch.as_tensor(sigma_max).log().neg(), torch.as_tensor(sigma_min).log().neg()
    x, info = core.dpm_adaptive(evaluate, x, t_start, t_end, order=order, rtol=rtol, atol=atol, h_init=h_init,
                                pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety, eta=eta,
                                s_noise=s_noise, noise=ns, report=None if callback is None else report,
                                backend="torch" if x.dtype == torch.float64 else "auto")
    return (x, info) if return_info else x
