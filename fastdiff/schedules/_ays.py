"""Align Your Steps (Sabour, Fidler and Kreis 2024, *Align Your Steps: Optimizing Sampling Schedules in Diffusion
Models*, ICML 2024, arXiv:2404.14507): the published 10-step noise levels, and log-linear interpolation to any
number of steps as NVIDIA's how-to page and ComfyUI's ``AlignYourStepsScheduler`` node do.

The paper optimises the sampling schedule of a given model and solver to minimise a bound on the KL divergence
between the true and the discretised reverse SDE, and publishes the 10-step results for Stable Diffusion 1.5,
SDXL and Stable Video Diffusion. For SD 1.5 and SDXL they are given as training timesteps
(``999, 850, 736, 645, 545, 455, 343, 233, 124, 24`` and ``999, 845, 730, 587, 443, 310, 193, 116, 53, 13``),
followed by the smallest training sigma; the sigmas below are those of the SD ``scaled_linear`` discrete schedule
(``beta`` from 0.00085 to 0.012 over 1000 steps) at those timesteps, to 10 decimals, as ComfyUI lists them (the
rounded SDXL sigmas on NVIDIA's page differ from these in the third digit at a few entries, e.g. 6.315 against
6.318). SVD's are the published continuous-time sigmas.

Example:
    >>> s = align_your_steps_sigmas(10, "SD1")
    >>> len(s), round(s[0].item(), 4), round(s[-2].item(), 4), s[-1].item()
    (11, 14.6146, 0.1515, 0.0)
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from ..ops._common import check_int
from ._checks import DeviceLike, TensorLike, _check_str_choice, _finish, _linspace, _to_f64

__all__ = ["AYS_MODELS", "ays_noise_levels", "loglinear_interpolate", "align_your_steps_sigmas"]

_F64 = torch.float64

# the published 10-step schedules: 11 decreasing sigmas, the last one the model's smallest (the sampler's final
# step then goes to 0)
_NOISE_LEVELS: Dict[str, Tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
AYS_MODELS: Tuple[str, ...] = tuple(_NOISE_LEVELS)


def ays_noise_levels(model: str) -> torch.Tensor:
    """The published 10-step Align Your Steps noise levels of ``model`` ("SD1", "SDXL" or "SVD"): 11 decreasing
    sigmas, the last the model's smallest, as a float64 tensor.

    Example:
        >>> ays_noise_levels("SVD")[[0, -1]].tolist()
        [700.0, 0.002]
    """
    model = _check_str_choice("model", model, AYS_MODELS)
    return torch.tensor(_NOISE_LEVELS[model], dtype=_F64)


def loglinear_interpolate(sigmas: TensorLike, n: int) -> torch.Tensor:
    """``n`` values of a decreasing schedule resampled at ``n`` evenly spaced positions, linearly in ``log sigma``.

    The ``m`` given sigmas are taken at positions ``linspace(0, 1, m)`` and ``log sigma`` is interpolated
    piecewise linearly at ``linspace(0, 1, n)`` (``numpy.interp``), so both ends are kept. Float64.

    Example:
        >>> [round(v, 9) for v in loglinear_interpolate([100.0, 1.0], 3).tolist()]
        [100.0, 10.0, 1.0]
    """
    values = _to_f64("sigmas", sigmas).detach().to("cpu")
    if values.dim() != 1 or values.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D schedule of at least 2 values, got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
        raise ValueError("sigmas must be finite and > 0 (log-linear interpolation)")
    if bool((values[1:] > values[:-1]).any()):
        raise ValueError("sigmas must be non-increasing (largest first)")
    n = check_int("n", n, minimum=2)
    log_rising = torch.log(values.flip(0))
    m = values.numel()
    knots = _linspace(0.0, 1.0, m)
    where = _linspace(0.0, 1.0, n)
    low = (torch.searchsorted(knots, where, right=True) - 1).clamp(0, m - 2)
    weight = (where - knots[low]) / (knots[low + 1] - knots[low])
    out = log_rising[low] + weight * (log_rising[low + 1] - log_rising[low])
    out = torch.exp(out).flip(0)
    out[0], out[-1] = values[0], values[-1]  # both ends are the given values exactly, not exp(log(v))
    return out


def align_your_steps_sigmas(steps: int, model: str = "SD1", device: DeviceLike = None) -> torch.Tensor:
    """Align Your Steps noise levels for ``steps`` steps (Sabour et al. 2024), ending in 0.

    The published 10-step schedule of ``model`` (:func:`ays_noise_levels`) log-linearly resampled to
    ``steps + 1`` values (:func:`loglinear_interpolate`; unchanged when ``steps == 10``), whose last value, the
    smallest sigma, is then replaced by 0: ComfyUI's ``AlignYourStepsScheduler`` at ``denoise = 1``. Float64,
    ``steps + 1`` values.

    Example:
        >>> [round(v, 3) for v in align_your_steps_sigmas(2, "SVD").tolist()]
        [700.0, 1.789, 0.0]
    """
    steps = check_int("steps", steps, minimum=1)
    levels = ays_noise_levels(model)
    if steps + 1 != levels.numel():
        levels = loglinear_interpolate(levels, steps + 1)
    levels = levels.clone()
    levels[-1] = 0.0
    return _finish(levels, device)
