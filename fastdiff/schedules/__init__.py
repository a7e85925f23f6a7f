"""Noise schedules of the fixed encoder (the forward noising process).

Every schedule here describes the marginal ``q(z_t | x0)`` of a Gaussian
encoder in the common ``(alpha_t, sigma_t)`` form::

    z_t = alpha_t * x0 + sigma_t * eps,        eps ~ N(0, I)

from which the other usual parametrisations follow:

* variance-preserving (VP): ``alpha_t**2 + sigma_t**2 == 1``;
* the VE / k-diffusion noise level ``sigma_VE = sigma_t / alpha_t``
  (``z_t / alpha_t = x0 + sigma_VE * eps``);
* the log signal-to-noise ratio ``lambda_t = log(alpha_t**2 / sigma_t**2)
  = -2 * log(sigma_VE)``.

Contents (one private module per job, everything imported from here):

* ``_discrete`` -- :func:`make_betas` / :func:`rescale_zero_terminal_snr`:
  the discrete beta schedules of DDPM-style models, with the semantics of
  ``diffusers`` (``linear``, ``scaled_linear``, ``squaredcos_cap_v2`` (alias
  ``cosine``), ``sigmoid``) and the zero-terminal-SNR rescaling of Lin et al.
  (2023); :class:`DiscreteVPSchedule`: all per-timestep tables of a discrete
  VP model, k-diffusion style ``sigma <-> t`` conversion and a cached device
  table of ``(alpha_t, sigma_t)`` for the kernels.
* ``_continuous`` -- :class:`ContinuousVPSchedule` (VP SDE of Song et al.
  2021) and :class:`VESchedule` (geometric VE SDE); ``_flow`` --
  :class:`FlowMatchingSchedule` (rectified flow with the static timestep
  shift of SD3).
* ``_timesteps`` -- :func:`spaced_timesteps`: the ``leading`` /
  ``trailing`` / ``linspace`` timestep spacings of ``diffusers`` (one
  implementation for every drop-in), and :func:`inference_timesteps`, its
  checked int64 form of ``DDIMScheduler`` / ``DDPMScheduler``.
* ``_sigmas`` -- :func:`karras_sigmas`, :func:`exponential_sigmas`,
  :func:`polyexponential_sigmas`, :func:`vp_sigmas`: sampling noise levels
  in the k-diffusion convention (``n`` decreasing VE sigmas then a final 0).
* ``_scheduler_sigmas`` -- the schedules of ComfyUI's scheduler list on plain
  arguments (a training sigma table, ``t -> sigma``, sigma range):
  :func:`simple_sigmas`, :func:`sgm_uniform_sigmas` / :func:`normal_sigmas`,
  :func:`ddim_uniform_sigmas`, :func:`beta_sigmas` (Lee et al. 2024),
  :func:`linear_quadratic_sigmas` (Mochi 1), :func:`kl_optimal_sigmas`
  (Sabour et al. 2024), with ComfyUI's step arithmetic; ``_beta_dist``: the
  Beta law's CDF and quantile in float64 for :func:`beta_sigmas`.
* ``_ays`` -- Align Your Steps (Sabour et al. 2024): the published 10-step
  SD 1.5 / SDXL / SVD noise levels (:func:`ays_noise_levels`) and
  :func:`align_your_steps_sigmas`, their log-linear resampling
  (:func:`loglinear_interpolate`) to any step count.

All schedule math is done in ``torch.float64`` on the CPU; tables are only
cast (and moved to an accelerator) at the very end, see
:meth:`DiscreteVPSchedule.table`.

Example:
    >>> import torch
    >>> from fastdiff.schedules import DiscreteVPSchedule, karras_sigmas
    >>> sched = DiscreteVPSchedule(beta_schedule="scaled_linear",
    ...                            beta_start=0.00085, beta_end=0.012)
    >>> sigmas = karras_sigmas(10, sched.sigma_min, sched.sigma_max)
    >>> sigmas.shape, sigmas.dtype
    (torch.Size([11]), torch.float64)
"""
from ._checks import DeviceLike, TensorLike  # noqa: F401 (the types of the signatures, importable)
from ._continuous import ContinuousVPSchedule, VESchedule
from ._discrete import BETA_SCHEDULES, DiscreteVPSchedule, make_betas, rescale_zero_terminal_snr
from ._flow import FlowMatchingSchedule
from ._ays import AYS_MODELS, align_your_steps_sigmas, ays_noise_levels, loglinear_interpolate
from ._scheduler_sigmas import (
    beta_sigmas,
    ddim_uniform_sigmas,
    kl_optimal_sigmas,
    linear_quadratic_sigmas,
    normal_sigmas,
    sgm_uniform_sigmas,
    simple_sigmas,
)
from ._sigmas import exponential_sigmas, karras_ramp, karras_sigmas, polyexponential_sigmas, vp_sigmas
from ._timesteps import TIMESTEP_SPACINGS, inference_timesteps, spaced_timesteps

__all__ = [
    "BETA_SCHEDULES",
    "TIMESTEP_SPACINGS",
    "make_betas",
    "rescale_zero_terminal_snr",
    "DiscreteVPSchedule",
    "ContinuousVPSchedule",
    "VESchedule",
    "FlowMatchingSchedule",
    "inference_timesteps",
    "spaced_timesteps",
    "karras_sigmas",
    "karras_ramp",
    "exponential_sigmas",
    "polyexponential_sigmas",
    "vp_sigmas",
    "simple_sigmas",
    "sgm_uniform_sigmas",
    "normal_sigmas",
    "ddim_uniform_sigmas",
    "beta_sigmas",
    "linear_quadratic_sigmas",
    "kl_optimal_sigmas",
    "AYS_MODELS",
    "ays_noise_levels",
    "loglinear_interpolate",
    "align_your_steps_sigmas",
]
