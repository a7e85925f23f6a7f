"""The noise-level schedules of ComfyUI's scheduler list, as plain float64 functions (``steps`` sigmas, then 0).

``simple``, ``ddim_uniform`` and ``beta`` pick entries of a model's table of training sigmas (``sigmas[t]`` for
training timestep ``t``, smallest first, e.g. :attr:`DiscreteVPSchedule.sigmas` or ComfyUI's
``model_sampling.sigmas``); ``normal`` / ``sgm_uniform`` space timesteps uniformly and map them through the
model's ``t -> sigma``; ``linear_quadratic`` and ``kl_optimal`` are closed forms. The arithmetic (which table
entries, how the steps are rounded, the lengths) is ComfyUI's, so a schedule here equals ComfyUI's up to its
float32 rounding; where ComfyUI's result has a quirk it is kept and said (``ddim_uniform``'s length, ``beta``'s
merged duplicates) except where it is a NaN (``kl_optimal`` with one step).

Example:
    >>> from fastdiff.schedules import DiscreteVPSchedule, simple_sigmas
    >>> sd = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
    >>> s = simple_sigmas(sd.sigmas, 4)
    >>> len(s), s[0].item() == sd.sigmas[999].item(), s[-1].item()
    (5, True, 0.0)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from ..ops._common import check_int
from ._beta_dist import beta_ppf
from ._checks import DeviceLike, TensorLike, _check_float, _check_positive, _check_sigma_range, _finish, _linspace
from ._checks import _to_f64

__all__ = [
    "simple_sigmas",
    "ddim_uniform_sigmas",
    "normal_sigmas",
    "sgm_uniform_sigmas",
    "beta_sigmas",
    "linear_quadratic_sigmas",
    "kl_optimal_sigmas",
]

_F64 = torch.float64
# ComfyUI treats a sigma within this of 0 as 0 (math.isclose(..., abs_tol=1e-5) in its ddim / normal schedulers)
_ZERO_SIGMA_TOL = 1e-5


def _check_table(sigmas: Any) -> torch.Tensor:
    """The training sigma table as a float64 CPU vector: 1-D, >= 2 finite values >= 0, non-decreasing."""
    table = _to_f64("sigmas", sigmas).detach().to("cpu")
    if table.dim() != 1 or table.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D table of at least 2 training sigmas, got shape {tuple(table.shape)}")
    if not bool(torch.isfinite(table).all()):
        raise ValueError("sigmas must be finite (a zero-terminal-SNR table has an infinite last sigma: drop it)")
    if bool((table < 0).any()):
        raise ValueError("sigmas must be >= 0")
    if bool((table[1:] < table[:-1]).any()):
        raise ValueError("sigmas must be non-decreasing: the sigma of training timestep 0 first")
    return table


def _with_zero(sigmas: torch.Tensor, device: DeviceLike) -> torch.Tensor:
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)


def simple_sigmas(sigmas: TensorLike, steps: int, device: DeviceLike = None) -> torch.Tensor:
    """ComfyUI's ``simple`` schedule: ``steps`` training sigmas evenly strided down from the largest, then 0.

    With ``T = len(sigmas)`` the ``i``-th value is ``sigmas[T - 1 - floor(i * T / steps)]`` (``T / steps`` a
    float, as ComfyUI computes it): the trailing timesteps ``T - 1, T - 1 - T/steps, ...``. ``steps`` larger
    than ``T`` repeats entries. Float64, ``steps + 1`` values.

    Example:
        >>> simple_sigmas(torch.arange(1.0, 11.0), 4).tolist()  # T = 10: timesteps 9, 7, 4, 2
        [10.0, 8.0, 5.0, 3.0, 0.0]
    """
    table = _check_table(sigmas)
    steps = check_int("steps", steps, minimum=1)
    T = table.numel()
    stride = T / steps
    index = torch.tensor([T - 1 - int(i * stride) for i in range(steps)], dtype=torch.long)
    return _with_zero(table[index], device)


def ddim_uniform_sigmas(sigmas: TensorLike, steps: int, device: DeviceLike = None) -> torch.Tensor:
    """ComfyUI's ``ddim_uniform``: DDIM's "uniform" timestep skip (Song et al. 2021, *Denoising Diffusion
    Implicit Models*): the training sigmas at timesteps ``1, 1 + k, 1 + 2k, ... < T`` with ``k = max(T // steps,
    1)``, largest first, then 0.

    The count is ComfyUI's, ``ceil((T - 1) / k)`` sigmas, which is ``steps`` when ``T // steps`` divides evenly
    enough and more otherwise (``T = 1000``, ``steps = 7``: ``k = 142``, 8 sigmas). When ``sigmas[1]`` is 0 (to
    1e-5) that entry is the last value and no 0 is appended, with ``k`` computed for ``steps + 1``. Float64.

    Example:
        >>> ddim_uniform_sigmas(torch.arange(1.0, 11.0), 3).tolist()  # T = 10, k = 3: timesteps 7, 4, 1
        [8.0, 5.0, 2.0, 0.0]
    """
    table = _check_table(sigmas)
    steps = check_int("steps", steps, minimum=1)
    T = table.numel()
    ends_at_zero = abs(float(table[1])) <= _ZERO_SIGMA_TOL
    stride = max(T // (steps + 1 if ends_at_zero else steps), 1)
    picked = table[1::stride].flip(0)
    return _finish(picked.clone(), device) if ends_at_zero else _with_zero(picked, device)


def _sigmas_at(t_to_sigma: Callable[[torch.Tensor], Any], t: torch.Tensor) -> torch.Tensor:
    out = _to_f64("t_to_sigma(t)", t_to_sigma(t)).detach().to("cpu").reshape(-1)
    if out.numel() != t.numel():
        raise ValueError(f"t_to_sigma must return one sigma per timestep: {t.numel()} timesteps, {out.numel()} values")
    if not bool(torch.isfinite(out).all()) or bool((out < 0).any()):
        raise ValueError("t_to_sigma must return finite sigmas >= 0")
    return out


def normal_sigmas(
    steps: int,
    t_start: float,
    t_end: float,
    t_to_sigma: Callable[[torch.Tensor], Any],
    sgm: bool = False,
    device: DeviceLike = None,
) -> torch.Tensor:
    """ComfyUI's ``normal`` (and, with ``sgm=True``, ``sgm_uniform``) schedule: timesteps spaced uniformly from
    ``t_start`` (the timestep of ``sigma_max``) towards ``t_end`` (that of ``sigma_min``), mapped to sigmas.

    * ``sgm=False``: ``steps`` timesteps from ``t_start`` to ``t_end`` inclusive, then 0; if
      ``t_to_sigma(t_end)`` is 0 (to 1e-5) ``steps + 1`` timesteps instead and no 0 appended.
    * ``sgm=True``: the first ``steps`` of ``steps + 1`` timesteps from ``t_start`` to ``t_end`` (the last,
      ``t_end``, left out: the spacing of Stability's SGM samplers), then 0.

    ``t_to_sigma`` takes a float64 vector of timesteps and returns their sigmas (any tensor-like), e.g.
    :meth:`DiscreteVPSchedule.t_to_sigma` (log-linear interpolation of the table, as ComfyUI's
    ``ModelSamplingDiscrete.sigma``) or a flow model's ``t / T -> shifted sigma``. Float64, ``steps + 1`` values.

    Example:
        >>> from fastdiff.schedules import DiscreteVPSchedule
        >>> sd = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
        >>> s = normal_sigmas(10, 999.0, 0.0, sd.t_to_sigma)
        >>> len(s), s[0].item() == sd.sigmas[999].item(), s[-2].item() == sd.sigmas[0].item()
        (11, True, True)
        >>> [round(v, 4) for v in normal_sigmas(2, 1.0, 0.0, lambda t: 2 * t, sgm=True).tolist()]
        [2.0, 1.0, 0.0]
    """
    steps = check_int("steps", steps, minimum=1)
    t_start = _check_float("t_start", t_start)
    t_end = _check_float("t_end", t_end)
    if not callable(t_to_sigma):
        raise TypeError(f"t_to_sigma must be callable (timesteps -> sigmas), got {type(t_to_sigma).__name__}")
    if not isinstance(sgm, bool):
        raise TypeError(f"sgm must be a bool, got {type(sgm).__name__} {sgm!r}")
    if sgm:
        timesteps = _linspace(t_start, t_end, steps + 1)[:-1]
        return _with_zero(_sigmas_at(t_to_sigma, timesteps), device)
    ends_at_zero = abs(float(_sigmas_at(t_to_sigma, torch.tensor([t_end], dtype=_F64))[0])) <= _ZERO_SIGMA_TOL
    timesteps = _linspace(t_start, t_end, steps + 1 if ends_at_zero else steps)
    picked = _sigmas_at(t_to_sigma, timesteps)
    return _finish(picked, device) if ends_at_zero else _with_zero(picked, device)


def sgm_uniform_sigmas(
    steps: int, t_start: float, t_end: float, t_to_sigma: Callable[[torch.Tensor], Any], device: DeviceLike = None
) -> torch.Tensor:
    """ComfyUI's ``sgm_uniform``: :func:`normal_sigmas` with ``sgm=True`` (``steps`` of ``steps + 1`` uniform
    timesteps from ``t_start``, the last one left out), then 0.

    Example:
        >>> [round(v, 4) for v in sgm_uniform_sigmas(4, 1.0, 0.0, lambda t: t).tolist()]
        [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    return normal_sigmas(steps, t_start, t_end, t_to_sigma, sgm=True, device=device)


def beta_sigmas(
    sigmas: TensorLike, steps: int, alpha: float = 0.6, beta: float = 0.6, device: DeviceLike = None
) -> torch.Tensor:
    """Beta-distributed timesteps (Lee et al. 2024, *Beta Sampling is All You Need: Efficient Image Generation
    Strategy for Diffusion Models using Stepwise Spectral Analysis*, arXiv:2407.12173), as ComfyUI's ``beta``.

    Timesteps ``t_i = round(F^-1(1 - i / steps) * (T - 1))`` for ``i = 0 .. steps - 1``, ``F^-1`` the quantile of
    Beta(``alpha``, ``beta``) (``T = len(sigmas)``; round half to even): with ``alpha, beta < 1`` they crowd at
    both ends of the trajectory, where the paper finds the image's low and high frequencies settle. Consecutive
    equal timesteps are merged (ComfyUI's rule), so with many steps there can be fewer than ``steps`` sigmas;
    then 0. The quantile is :func:`fastdiff.schedules._beta_dist.beta_ppf` (float64, no SciPy). Float64.

    Example:
        >>> from fastdiff.schedules import DiscreteVPSchedule
        >>> sd = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
        >>> s = beta_sigmas(sd.sigmas, 10)
        >>> len(s), s[0].item() == sd.sigmas[999].item(), s[5].item() == sd.sigmas[500].item()  # 999 * 0.5 -> 500
        (11, True, True)
    """
    table = _check_table(sigmas)
    steps = check_int("steps", steps, minimum=1)
    alpha = _check_positive("alpha", alpha)
    beta = _check_positive("beta", beta)
    last = table.numel() - 1
    # numpy.linspace(0, 1, steps, endpoint=False) is arange(steps) * (1 / steps), bit for bit
    quantiles = 1.0 - torch.arange(steps, dtype=_F64) * (1.0 / steps)
    timesteps = torch.round(beta_ppf(quantiles, alpha, beta) * last).long()
    keep = torch.ones(steps, dtype=torch.bool)
    keep[1:] = timesteps[1:] != timesteps[:-1]
    return _with_zero(table[timesteps[keep]], device)


def linear_quadratic_sigmas(
    steps: int,
    sigma_max: float = 1.0,
    threshold_noise: float = 0.025,
    linear_steps: Optional[int] = None,
    device: DeviceLike = None,
) -> torch.Tensor:
    """The linear-quadratic schedule of Genmo's Mochi 1 (2024), as ComfyUI's ``linear_quadratic``, times
    ``sigma_max``.

    In units of ``sigma_max`` the noise level falls linearly from 1 to ``1 - threshold_noise`` over the first
    ``linear_steps`` steps (default ``steps // 2``), then along the quadratic in the step index that continues
    it with matching value and slope and reaches 0 at step ``steps``: fine steps at high noise, where a flow
    model's sample takes shape, and large ones at the end. ``steps == 1`` gives ``[sigma_max, 0]``. Float64,
    ``steps + 1`` values ending in 0.

    Example:
        >>> [round(v, 6) for v in linear_quadratic_sigmas(4).tolist()]
        [1.0, 0.9875, 0.975, 0.725, 0.0]
    """
    steps = check_int("steps", steps, minimum=1)
    sigma_max = _check_positive("sigma_max", sigma_max)
    threshold_noise = _check_float("threshold_noise", threshold_noise)
    if not 0.0 < threshold_noise < 1.0:
        raise ValueError(f"threshold_noise must be in (0, 1), got {threshold_noise}")
    if steps == 1:
        return _finish(torch.tensor([sigma_max, 0.0], dtype=_F64), device)
    if linear_steps is None:
        linear_steps = steps // 2
    linear_steps = check_int("linear_steps", linear_steps, minimum=1)
    if linear_steps >= steps:
        raise ValueError(f"linear_steps must be < steps ({steps}), got {linear_steps}")
    # Python-float arithmetic in ComfyUI's order, so the values agree with it to the last float64 bit
    quadratic_steps = steps - linear_steps
    step_diff = linear_steps - threshold_noise * steps
    quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
    linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
    const = quadratic_coef * (linear_steps**2)
    noise = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    noise += [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
    noise.append(1.0)
    return _finish(torch.tensor([1.0 - v for v in noise], dtype=_F64) * sigma_max, device)


def kl_optimal_sigmas(n: int, sigma_min: float, sigma_max: float, device: DeviceLike = None) -> torch.Tensor:
    """The KL-optimal schedule of Sabour et al. (2024), *Align Your Steps: Optimizing Sampling Schedules in
    Diffusion Models* (ICML 2024, arXiv:2404.14507): ``n`` sigmas uniform in ``atan(sigma)``, then 0.

    ``sigma_i = tan((1 - i/(n-1)) atan(sigma_max) + i/(n-1) atan(sigma_min))`` (ComfyUI's ``kl_optimal``, from
    A1111's). ``n == 1`` gives ``[sigma_max, 0]``, where ComfyUI divides 0 by 0 and returns NaN. Float64,
    ``n + 1`` values.

    Example:
        >>> [round(v, 6) for v in kl_optimal_sigmas(3, 0.1, 10.0).tolist()]  # atan 10 + atan 0.1 = pi/2
        [10.0, 1.0, 0.1, 0.0]
    """
    n = check_int("n", n, minimum=1)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    if n == 1:
        return _finish(torch.tensor([smax, 0.0], dtype=_F64), device)
    ramp = torch.arange(n, dtype=_F64) / (n - 1)
    sigmas = torch.tan(ramp * math.atan(smin) + (1.0 - ramp) * math.atan(smax))
    sigmas[0], sigmas[-1] = smax, smin  # the ends exactly (tan(atan(s)) is off by an ulp or so)
    return _with_zero(sigmas, device)
