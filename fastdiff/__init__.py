"""fastdiff: fused Triton kernels for sampling diffusion and score-based models.

Three kernel families behind a PyTorch API:

* encoding -- the fixed encoder (noise schedules, ``add_noise``),
* denoising steps -- every sampler is one fused pass per step (``fused_step``),
* Langevin updates -- sample exp(log_prob) with many chains at once.

Vocabulary: ``log_prob(x)`` is an unnormalised log-density (what the seed
lecture notes call ``score(y)``); ``grad_log_prob(x)`` is its gradient (what
modern code calls "the score"). fastdiff never uses the bare word "score" for
a log-density.
"""
from . import random, toy
from .ops import (add_noise, add_noise_with_target, encoder_transition, fused_encode, fused_step,
                  langevin_select, langevin_step, step_coefs, underdamped_step)
from .random import philox_normal
from .schedules import (BETA_SCHEDULES, ContinuousVPSchedule, DiscreteVPSchedule, FlowMatchingSchedule,
                        VESchedule, exponential_sigmas, inference_timesteps, karras_sigmas, make_betas,
                        polyexponential_sigmas, rescale_zero_terminal_snr, vp_sigmas)

from . import denoisers, sampling
from .denoisers import CFGDenoiser, Denoiser, EpsDenoiser, FlowDenoiser, VDenoiser, X0Denoiser
from .sampling import SAMPLERS, initial_noise, list_samplers, sample
from . import mcmc
from .mcmc import (VESDE, VPSDE, EnergyGrad, SubVPSDE, annealed_langevin, energy_grad, langevin, mala,
                   predictor_corrector, underdamped_langevin)
from . import distributed, k_diffusion

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # schedules
    "BETA_SCHEDULES", "DiscreteVPSchedule", "ContinuousVPSchedule", "VESchedule", "FlowMatchingSchedule",
    "make_betas", "rescale_zero_terminal_snr", "inference_timesteps", "karras_sigmas", "exponential_sigmas",
    "polyexponential_sigmas", "vp_sigmas",
    # ops
    "add_noise", "add_noise_with_target", "encoder_transition", "fused_encode", "fused_step", "step_coefs",
    "langevin_step", "langevin_select", "underdamped_step",
    # samplers and model wrappers
    "sample", "SAMPLERS", "list_samplers", "initial_noise", "Denoiser", "EpsDenoiser", "VDenoiser", "X0Denoiser",
    "FlowDenoiser", "CFGDenoiser",
    # Langevin dynamics and score-based MCMC
    "langevin", "mala", "underdamped_langevin", "annealed_langevin", "predictor_corrector", "energy_grad",
    "EnergyGrad", "VPSDE", "SubVPSDE", "VESDE",
    # rng, exact targets, submodules
    "philox_normal", "random", "toy", "sampling", "denoisers", "mcmc", "distributed", "k_diffusion",
]
