"""ComfyUI's scheduler functions (``simple_scheduler(model_sampling, steps)``, ...) on fastdiff's schedules.

Each function has the name, signature and result of its namesake in ComfyUI's ``comfy/samplers.py`` -- a CPU
float32 tensor of sigmas ending in 0 -- and is a thin adapter over the float64 schedule of
:mod:`fastdiff.schedules` that does the math, rounded to float32 once at the end. ``model_sampling`` is
ComfyUI's model-sampling object (``model.get_model_object("model_sampling")``) or anything with the same
attributes: the functions read ``.sigmas`` (the training sigma table, smallest first), ``.sigma_min``,
``.sigma_max``, ``.timestep(sigma)`` and ``.sigma(timestep)`` exactly where ComfyUI's read them. This module
never imports ComfyUI.

:data:`SCHEDULER_HANDLERS` maps each name of ComfyUI's scheduler list to ``(handler, use_ms)`` with ComfyUI's
meaning (``use_ms``: called as ``handler(model_sampling, steps)``, otherwise as ``handler(n=steps,
sigma_min=..., sigma_max=...)``) and :func:`calculate_sigmas` dispatches on it as ComfyUI's does.
:func:`align_your_steps_scheduler` is ComfyUI's ``AlignYourStepsScheduler`` node.

Example:
    >>> import types
    >>> from fastdiff.schedules import DiscreteVPSchedule
    >>> sd = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
    >>> ms = types.SimpleNamespace(sigmas=sd.sigmas.float(), sigma_min=sd.sigmas[0].float(),
    ...                            sigma_max=sd.sigmas[-1].float())
    >>> s = calculate_sigmas(ms, "karras", 10)
    >>> s.dtype, len(s), round(s[0].item(), 4), s[-1].item()
    (torch.float32, 11, 14.6146, 0.0)
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import torch

from ..k_diffusion.schedules import get_sigmas_exponential, get_sigmas_karras
from ..ops._common import check_int
from ..schedules import (
    align_your_steps_sigmas,
    beta_sigmas,
    ddim_uniform_sigmas,
    kl_optimal_sigmas,
    linear_quadratic_sigmas,
    normal_sigmas,
    simple_sigmas,
)

__all__ = [
    "simple_scheduler",
    "sgm_uniform_scheduler",
    "normal_scheduler",
    "ddim_scheduler",
    "beta_scheduler",
    "linear_quadratic_schedule",
    "kl_optimal_scheduler",
    "align_your_steps_scheduler",
    "SchedulerHandler",
    "SCHEDULER_HANDLERS",
    "SCHEDULER_NAMES",
    "calculate_sigmas",
]


def _comfy(sigmas: torch.Tensor) -> torch.Tensor:
    # ComfyUI returns torch.FloatTensor (float32 on the CPU); the float64 schedule is rounded once, here
    return sigmas.to(dtype=torch.float32, device="cpu")


def _scalar(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number or a one-element tensor, got {type(value).__name__}") from None


def _attr(model_sampling: Any, name: str) -> Any:
    try:
        return getattr(model_sampling, name)
    except AttributeError:
        raise TypeError(f"model_sampling must be a ComfyUI model-sampling object with .{name}, got "
                        f"{type(model_sampling).__name__}") from None


def simple_scheduler(model_sampling: Any, steps: int) -> torch.Tensor:
    """ComfyUI's ``simple``: ``steps`` of ``model_sampling.sigmas`` evenly strided down from the largest, then 0.

    :func:`fastdiff.schedules.simple_sigmas`. Float32 on the CPU, ``steps + 1`` values.

    Example:
        >>> import types
        >>> simple_scheduler(types.SimpleNamespace(sigmas=torch.arange(1.0, 11.0)), 4).tolist()
        [10.0, 8.0, 5.0, 3.0, 0.0]
    """
    return _comfy(simple_sigmas(_attr(model_sampling, "sigmas"), steps))


def ddim_scheduler(model_sampling: Any, steps: int) -> torch.Tensor:
    """ComfyUI's ``ddim_uniform``: every ``len(sigmas) // steps``-th training sigma from timestep 1, then 0.

    :func:`fastdiff.schedules.ddim_uniform_sigmas` (with its length rule: more than ``steps`` sigmas when the
    stride does not divide the table evenly). Float32 on the CPU.

    Example:
        >>> import types
        >>> ddim_scheduler(types.SimpleNamespace(sigmas=torch.arange(1.0, 11.0)), 3).tolist()
        [8.0, 5.0, 2.0, 0.0]
    """
    return _comfy(ddim_uniform_sigmas(_attr(model_sampling, "sigmas"), steps))


def normal_scheduler(model_sampling: Any, steps: int, sgm: bool = False, floor: bool = False) -> torch.Tensor:
    """ComfyUI's ``normal`` (``sgm=True``: ``sgm_uniform``): uniform timesteps from ``timestep(sigma_max)`` to
    ``timestep(sigma_min)`` mapped back by ``model_sampling.sigma``, then 0.

    :func:`fastdiff.schedules.normal_sigmas` with the timesteps in float64 and ``model_sampling.sigma`` as the
    map (ComfyUI's discrete models evaluate it in float32). ``floor`` is accepted and ignored, as ComfyUI does.
    Float32 on the CPU, ``steps + 1`` values.

    Example:
        >>> import types
        >>> ms = types.SimpleNamespace(sigma_min=torch.tensor(0.1), sigma_max=torch.tensor(1.0),
        ...                            timestep=lambda s: s * 1000, sigma=lambda t: t / 1000)
        >>> [round(v, 4) for v in normal_scheduler(ms, 2).tolist()]
        [1.0, 0.1, 0.0]
        >>> [round(v, 4) for v in normal_scheduler(ms, 2, sgm=True).tolist()]
        [1.0, 0.55, 0.0]
    """
    if not isinstance(floor, bool):
        raise TypeError(f"floor must be a bool, got {type(floor).__name__} {floor!r}")
    timestep = _attr(model_sampling, "timestep")
    t_start = _scalar("model_sampling.timestep(sigma_max)", timestep(_attr(model_sampling, "sigma_max")))
    t_end = _scalar("model_sampling.timestep(sigma_min)", timestep(_attr(model_sampling, "sigma_min")))
    return _comfy(normal_sigmas(steps, t_start, t_end, _attr(model_sampling, "sigma"), sgm=sgm))


def sgm_uniform_scheduler(model_sampling: Any, steps: int) -> torch.Tensor:
    """ComfyUI's ``sgm_uniform`` (its ``partial(normal_scheduler, sgm=True)``): :func:`normal_scheduler` with
    ``steps`` of ``steps + 1`` uniform timesteps, the one at ``sigma_min`` left out.

    Example:
        >>> import types
        >>> ms = types.SimpleNamespace(sigma_min=torch.tensor(0.1), sigma_max=torch.tensor(1.0),
        ...                            timestep=lambda s: s * 1000, sigma=lambda t: t / 1000)
        >>> [round(v, 4) for v in sgm_uniform_scheduler(ms, 3).tolist()]
        [1.0, 0.7, 0.4, 0.0]
    """
    return normal_scheduler(model_sampling, steps, sgm=True)


def beta_scheduler(model_sampling: Any, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """ComfyUI's ``beta`` (Lee et al. 2024, *Beta Sampling is All You Need*, arXiv:2407.12173): training sigmas at
    Beta(``alpha``, ``beta``)-quantile timesteps, consecutive repeats merged, then 0.

    :func:`fastdiff.schedules.beta_sigmas` (its float64 Beta quantile stands in for ComfyUI's
    ``scipy.stats.beta.ppf``). Float32 on the CPU.

    Example:
        >>> import types
        >>> from fastdiff.schedules import DiscreteVPSchedule
        >>> sd = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
        >>> len(beta_scheduler(types.SimpleNamespace(sigmas=sd.sigmas.float()), 10))
        11
    """
    return _comfy(beta_sigmas(_attr(model_sampling, "sigmas"), steps, alpha, beta))


def linear_quadratic_schedule(
    model_sampling: Any, steps: int, threshold_noise: float = 0.025, linear_steps: Optional[int] = None
) -> torch.Tensor:
    """ComfyUI's ``linear_quadratic`` (Genmo's Mochi 1 schedule) times ``model_sampling.sigma_max``.

    :func:`fastdiff.schedules.linear_quadratic_sigmas`. Float32 on the CPU, ``steps + 1`` values.

    Example:
        >>> import types
        >>> ms = types.SimpleNamespace(sigma_max=torch.tensor(1.0))
        >>> [round(v, 4) for v in linear_quadratic_schedule(ms, 4).tolist()]
        [1.0, 0.9875, 0.975, 0.725, 0.0]
    """
    sigma_max = _scalar("model_sampling.sigma_max", _attr(model_sampling, "sigma_max"))
    return _comfy(linear_quadratic_sigmas(steps, sigma_max, threshold_noise, linear_steps))


def kl_optimal_scheduler(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """ComfyUI's ``kl_optimal`` (Sabour et al. 2024, *Align Your Steps*): ``n`` sigmas uniform in ``atan sigma``
    from ``sigma_max`` to ``sigma_min``, then 0.

    :func:`fastdiff.schedules.kl_optimal_sigmas`; ``n == 1`` gives ``[sigma_max, 0]`` where ComfyUI's gives
    ``[nan, 0]``. Float32 on the CPU, ``n + 1`` values.

    Example:
        >>> [round(v, 4) for v in kl_optimal_scheduler(3, 0.1, 10.0).tolist()]
        [10.0, 1.0, 0.1, 0.0]
    """
    return _comfy(kl_optimal_sigmas(n, sigma_min, sigma_max))


def align_your_steps_scheduler(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """ComfyUI's ``AlignYourStepsScheduler`` node (Sabour et al. 2024): the published schedule of ``model_type``
    ("SD1", "SDXL", "SVD") resampled to ``steps`` steps, its last ``round(steps * denoise)`` steps when
    ``denoise < 1`` (an empty tensor for ``denoise <= 0``), ending in 0.

    :func:`fastdiff.schedules.align_your_steps_sigmas`. Float32 on the CPU.

    Example:
        >>> len(align_your_steps_scheduler("SDXL", 20)), len(align_your_steps_scheduler("SDXL", 20, denoise=0.5))
        (21, 11)
    """
    steps = check_int("steps", steps, minimum=1)
    try:
        denoise = float(denoise)
    except (TypeError, ValueError):
        raise TypeError(f"denoise must be a real number, got {type(denoise).__name__} {denoise!r}") from None
    if denoise != denoise:
        raise ValueError("denoise must not be NaN")
    sigmas = align_your_steps_sigmas(steps, model_type)
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0, dtype=torch.float32)
        kept = round(steps * denoise)
        sigmas = sigmas[-(kept + 1):].clone()
        sigmas[-1] = 0.0  # already 0: the tail of the full schedule
    return _comfy(sigmas)


class SchedulerHandler(NamedTuple):
    """A scheduler function and how ComfyUI calls it: ``handler(model_sampling, steps)`` when ``use_ms``, else
    ``handler(n=steps, sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))``.

    Example:
        >>> SCHEDULER_HANDLERS["kl_optimal"].use_ms
        False
    """

    handler: Callable[..., torch.Tensor]
    use_ms: bool = True


# ComfyUI's SCHEDULER_HANDLERS, in its order
SCHEDULER_HANDLERS: Dict[str, SchedulerHandler] = {
    "simple": SchedulerHandler(simple_scheduler),
    "sgm_uniform": SchedulerHandler(sgm_uniform_scheduler),
    "karras": SchedulerHandler(get_sigmas_karras, use_ms=False),
    "exponential": SchedulerHandler(get_sigmas_exponential, use_ms=False),
    "ddim_uniform": SchedulerHandler(ddim_scheduler),
    "beta": SchedulerHandler(beta_scheduler),
    "normal": SchedulerHandler(normal_scheduler),
    "linear_quadratic": SchedulerHandler(linear_quadratic_schedule),
    "kl_optimal": SchedulerHandler(kl_optimal_scheduler, use_ms=False),
}
SCHEDULER_NAMES: Tuple[str, ...] = tuple(SCHEDULER_HANDLERS)


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    """ComfyUI's ``calculate_sigmas``: the sigmas of scheduler ``scheduler_name`` (a name in
    :data:`SCHEDULER_NAMES`) for ``steps`` steps of the model described by ``model_sampling``.

    Example:
        >>> import types
        >>> ms = types.SimpleNamespace(sigma_min=0.1, sigma_max=10.0)
        >>> [round(v, 4) for v in calculate_sigmas(ms, "exponential", 3).tolist()]
        [10.0, 1.0, 0.1, 0.0]
    """
    if not isinstance(scheduler_name, str):
        raise TypeError(f"scheduler_name must be a str, one of {SCHEDULER_NAMES}, got "
                        f"{type(scheduler_name).__name__} {scheduler_name!r}")
    handler = SCHEDULER_HANDLERS.get(scheduler_name)
    if handler is None:
        raise ValueError(f"unknown scheduler_name {scheduler_name!r}; expected one of {SCHEDULER_NAMES}")
    if handler.use_ms:
        return handler.handler(model_sampling, steps)
    sigma_min = _scalar("model_sampling.sigma_min", _attr(model_sampling, "sigma_min"))
    sigma_max = _scalar("model_sampling.sigma_max", _attr(model_sampling, "sigma_max"))
    return handler.handler(n=steps, sigma_min=sigma_min, sigma_max=sigma_max)
