"""Drop-in replacements for k-diffusion's samplers and schedules, each step one fused pass.

``import fastdiff.k_diffusion as K`` and ``K.sampling.sample_*`` code keeps working with
``K.sample_*``: the same signatures (``model, x, sigmas, extra_args, callback, disable``
plus each sampler's options), the same ``model(x, sigma * s_in, **extra_args)`` calls, the
same callback dicts, and the same outputs to float32 rounding given the same noise.

Noise is drawn exactly as k-diffusion draws it -- same calls, same order, same shapes:
``torch.randn_like(x)`` from the global RNG when no ``noise_sampler`` is passed (so
``torch.manual_seed`` workflows reproduce), ``noise_sampler(sigma, sigma_next)`` otherwise,
and a Brownian tree (:class:`BrownianTreeNoiseSampler`, needs ``torchsde``) for the SDE
samplers. The drawn noise goes into the fused step through ``noise=``. The Euler / Heun /
DPM-2 samplers draw their churn noise at every step even when churn is off, as k-diffusion
does, so the global RNG is left in the same state.

How a sampler runs: the step's scalar quantities (``sigma_hat``, ``sigma_mid``,
``sigma_down``, log-sigma steps, ...) are computed before the loop on a host copy of
``sigmas`` with the same scalar operations k-diffusion uses, the update of each model
evaluation is folded into one row of ``fastdiff.step_coefs``-style coefficients (float64
on the host, one table moved to the device once), and the loop alternates one model call
and one ``fastdiff.fused_step(..., coef_row=k)``. Nothing in the loop reads device memory
on the host (except what a user ``noise_sampler`` or a Brownian tree does itself).

Example:
    >>> import torch, fastdiff
    >>> from fastdiff import k_diffusion as K
    >>> gmm = fastdiff.toy.GaussianMixture.ring(k=4)
    >>> sigmas = K.get_sigmas_karras(10, 0.01, 20.0)
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(16, 2) * sigmas[0]
    >>> out = K.sample_dpmpp_2m(gmm.denoiser, x, sigmas)
    >>> out.shape
    torch.Size([16, 2])
"""
from __future__ import annotations

from . import noise, run, sampling, schedules
from .noise import BrownianTreeNoiseSampler, default_noise_sampler
from .sampling import (SAMPLERS, sample_dpm_2, sample_dpm_2_ancestral, sample_dpm_adaptive, sample_dpm_fast, sample_dpmpp_2m, sample_dpmpp_2m_sde,
                       sample_dpmpp_2s_ancestral, sample_dpmpp_3m_sde, sample_dpmpp_sde, sample_euler,
                       sample_euler_ancestral, sample_heun, sample_lms)
from .schedules import (append_zero, get_ancestral_step, get_sigmas_exponential, get_sigmas_karras,
                        get_sigmas_polyexponential, get_sigmas_vp, to_d)

__all__ = [
    "get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential", "get_sigmas_vp",
    "append_zero", "to_d", "get_ancestral_step", "default_noise_sampler", "BrownianTreeNoiseSampler",
    "sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral",
    "sample_lms", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde", "sample_dpm_fast", "sample_dpm_adaptive", "SAMPLERS", "sampling", "schedules", "noise", "run",
]
