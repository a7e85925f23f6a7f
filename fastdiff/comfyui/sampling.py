"""ComfyUI's ``sample_<name>`` functions on fastdiff's samplers: the names, signatures and defaults of ComfyUI's
``comfy/k_diffusion/sampling.py`` for every name in ComfyUI's ``KSAMPLER_NAMES`` that fastdiff implements.

Each function is an adapter of a few lines: it builds a :class:`~fastdiff.comfyui.run.ComfyUIRun` (ComfyUI's
model call, callback, CFG++ post-CFG hook, model-sampling reads and noise) and runs the one sampler of
:mod:`fastdiff.samplers`. ``model`` is what ComfyUI's ``KSAMPLER`` passes (its ``KSamplerX0Inpaint`` wrapper:
``model(x, sigma * s_in, **extra_args)`` returns the guided x0 estimate) or any callable of that form.

Differences from ComfyUI (see docs/comfyui.md):

* noise: a ``noise_sampler`` you pass is called exactly where ComfyUI calls it; without one fastdiff draws its
  counter-based Philox noise inside the fused step, keyed by ``extra_args["seed"]``, where ComfyUI uses
  ``torch.randn`` with a generator seeded by it (most samplers) or a Brownian tree (the SDE ones);
* the ``_gpu`` names are aliases of the plain ones: in ComfyUI they differ only in where the default Brownian
  tree lives (on the model's device instead of the CPU), which fastdiff's Philox default does not have;
* a sigma schedule of fewer than two entries returns ``x`` unchanged, as ComfyUI's samplers do.

Example:
    >>> import torch
    >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
    >>> sample_dpmpp_2m(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from .. import samplers as core
from ..k_diffusion.noise import NoiseSampler
from .run import ComfyUIRun, cfg_model, is_flow_model_sampling, model_sampling_of  # noqa: F401 (cfg_model: examples)

#: ComfyUI's KSAMPLER_NAMES (comfy/samplers.py, 2025-10), in its order
_COMFY_ORDER = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral",
    "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
    "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece")

_Extra = Optional[Dict[str, Any]]

#: samplers that move the first sigma off 1 on a flow model (ComfyUI's offset_first_sigma_for_snr: at s = 1 the
#: half-log-SNR is -inf), to the model sampling's ``percent_to_sigma(1e-4)``
OFFSET_FIRST_SIGMA = ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "er_sde", "seeds_2", "seeds_3", "sa_solver",
                      "sa_solver_pece")
#: core samplers that take the model's kind as ``flow=`` (the others read ``Run.flow_sigmas``)
_FLOW_OPTION = ("er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece")


def _sample(name: str, model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra,
            callback: Optional[Callable], disable: Optional[bool], noise_sampler: Optional[NoiseSampler] = None,
            draws_noise: bool = True, core_name: Optional[str] = None, churn_every_step: bool = False,
            **options: Any) -> torch.Tensor:
    """Build the run for ComfyUI's ``sample_<name>`` and run the core sampler ``core_name`` (default ``name``)."""
    if isinstance(sigmas, torch.Tensor) and sigmas.dim() == 1 and sigmas.numel() <= 1:
        return x  # ComfyUI's samplers do no step
    core_name = name if core_name is None else core_name
    if core_name in OFFSET_FIRST_SIGMA:
        sigmas = _offset_first_sigma(model, sigmas)
    run = ComfyUIRun(model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                     uses_uncond=core_name in core.NEEDS_UNCOND, draws_noise=draws_noise,
                     churn_every_step=churn_every_step)
    if core_name in _FLOW_OPTION:
        options["flow"] = run.flow_sigmas
    if core_name == "lcm":  # the model sampling's noise_scaling: x0 + s z, or (1 - s) x0 + s z on CONST models
        options["noise_scaling"] = "flow" if run.flow_sigmas else "ve"
    if core_name in ("sa_solver", "sa_solver_pece") and options.get("tau_func") is None \
            and run.model_sampling is not None:
        # ComfyUI's default noise window: stochastic between the model's 20% and 80% noise levels
        options.update(start_sigma=float(run.model_sampling.percent_to_sigma(0.2)),
                       end_sigma=float(run.model_sampling.percent_to_sigma(0.8)))
    return core.SAMPLERS[core_name](run, x, **options)


def _offset_first_sigma(model: Callable, sigmas: torch.Tensor) -> torch.Tensor:
    """ComfyUI's offset_first_sigma_for_snr: on a flow model a first sigma >= 1 becomes ``percent_to_sigma(1e-4)``
    (a new tensor; the caller's is not modified)."""
    ms = model_sampling_of(model)
    if not is_flow_model_sampling(ms) or not isinstance(sigmas, torch.Tensor) or sigmas.numel() < 2:
        return sigmas
    if float(sigmas[0]) < 1:
        return sigmas
    sigmas = sigmas.clone()
    sigmas[0] = float(ms.percent_to_sigma(1e-4))
    return sigmas


def _draws(eta: float, s_noise: float) -> bool:
    """ComfyUI's SDE samplers call the noise sampler only when ``eta > 0 and s_noise > 0``."""
    return eta > 0 and s_noise > 0


@torch.no_grad()
def sample_euler(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                 callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Euler steps of Karras et al. (2022), Algorithm 2, with optional EDM churn (its noise from the global
    RNG, drawn only on the steps where churn is active, as ComfyUI does).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_euler(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("euler", model, x, sigmas, extra_args, callback, disable, s_churn=s_churn, s_tmin=s_tmin,
                   s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
def sample_euler_cfg_pp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                        callback: Optional[Callable] = None, disable: Optional[bool] = None) -> torch.Tensor:
    """Euler with CFG++ (Chung et al. 2024): the step re-noises along the unconditional estimate; needs CFG.

    Example:
        >>> model = cfg_model(lambda x, s: x / (1 + s[:, None] ** 2), lambda x, s: x / (2 + s[:, None] ** 2), 3.0)
        >>> sample_euler_cfg_pp(model, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("euler_cfg_pp", model, x, sigmas, extra_args, callback, disable)


@torch.no_grad()
def sample_euler_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                           callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                           s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral Euler (Ho et al. 2020 ancestral split; ComfyUI's euler_ancestral).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_euler_ancestral(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("euler_ancestral", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                                  callback: Optional[Callable] = None, disable: Optional[bool] = None,
                                  eta: float = 1.0, s_noise: float = 1.0,
                                  noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral Euler with CFG++ (Chung et al. 2024); ComfyUI's flow branch on CONST models; needs CFG.

    Example:
        >>> model = cfg_model(lambda x, s: x / (1 + s[:, None] ** 2), lambda x, s: x / (2 + s[:, None] ** 2), 3.0)
        >>> sample_euler_ancestral_cfg_pp(model, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("euler_ancestral_cfg_pp", model, x, sigmas, extra_args, callback, disable,
                   noise_sampler=noise_sampler, eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_heun(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Heun steps of Karras et al. (2022), Algorithm 2.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_heun(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("heun", model, x, sigmas, extra_args, callback, disable, s_churn=s_churn, s_tmin=s_tmin,
                   s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
def sample_dpm_2(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                 callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 (Lu et al. 2022) in the Algorithm-2 frame of Karras et al. (2022).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_2(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("dpm_2", model, x, sigmas, extra_args, callback, disable, s_churn=s_churn, s_tmin=s_tmin,
                   s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
def sample_dpm_2_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                           callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                           s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral DPM-Solver-2 (Lu et al. 2022).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_2_ancestral(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("dpm_2_ancestral", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_lms(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
               callback: Optional[Callable] = None, disable: Optional[bool] = None, order: int = 4) -> torch.Tensor:
    """Linear multistep in sigma (cf. Liu et al. 2022, PNDM); the last step, to sigma = 0, is ``x = denoised``
    as in ComfyUI (k-diffusion takes an LMS step to 0).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_lms(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("lms", model, x, sigmas, extra_args, callback, disable, order=order, final_denoise=True)


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                              callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                              s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022, DPM-Solver++).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2s_ancestral(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2s_ancestral", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                                     callback: Optional[Callable] = None, disable: Optional[bool] = None,
                                     eta: float = 1.0, s_noise: float = 1.0,
                                     noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) with CFG++ (Lu et al. 2022; Chung et al. 2024); needs CFG. ComfyUI's arithmetic:
    the corrector re-bases with its own evaluation's unconditional estimate (``corrector_uncond="corrector"`` of
    the core sampler, whose default is the consistent ``"predictor"``).

    Example:
        >>> model = cfg_model(lambda x, s: x / (1 + s[:, None] ** 2), lambda x, s: x / (2 + s[:, None] ** 2), 3.0)
        >>> sample_dpmpp_2s_ancestral_cfg_pp(model, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2s_ancestral_cfg_pp", model, x, sigmas, extra_args, callback, disable,
                   noise_sampler=noise_sampler, eta=eta, s_noise=s_noise,
                   corrector_uncond="corrector")


@torch.no_grad()
def sample_dpmpp_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                     callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                     s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                     r: float = 1 / 2) -> torch.Tensor:
    """DPM-Solver++ stochastic, two stages (Lu et al. 2022, DPM-Solver++); ComfyUI's default noise is a Brownian tree.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_sde(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   draws_noise=_draws(eta, s_noise), eta=eta, s_noise=s_noise, r=r)


@torch.no_grad()
def sample_dpmpp_sde_gpu(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                         callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                         s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                         r: float = 1 / 2) -> torch.Tensor:
    """Alias of :func:`sample_dpmpp_sde` (ComfyUI's _gpu variant differs only in its default noise's device).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_sde_gpu(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_sde_gpu", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   draws_noise=_draws(eta, s_noise), core_name="dpmpp_sde", eta=eta, s_noise=s_noise, r=r)


@torch.no_grad()
def sample_dpmpp_2m(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                    callback: Optional[Callable] = None, disable: Optional[bool] = None) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order (Lu et al. 2022, DPM-Solver++ Algorithm 2).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2m", model, x, sigmas, extra_args, callback, disable)


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                           callback: Optional[Callable] = None, disable: Optional[bool] = None) -> torch.Tensor:
    """DPM-Solver++(2M) with CFG++ (Lu et al. 2022; Chung et al. 2024); needs CFG.

    Example:
        >>> model = cfg_model(lambda x, s: x / (1 + s[:, None] ** 2), lambda x, s: x / (2 + s[:, None] ** 2), 3.0)
        >>> sample_dpmpp_2m_cfg_pp(model, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2m_cfg_pp", model, x, sigmas, extra_args, callback, disable)


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                        callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                        s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                        solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, DPM-Solver++); ComfyUI's default noise is a Brownian tree.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m_sde(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2m_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   draws_noise=_draws(eta, s_noise), eta=eta, s_noise=s_noise, solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_2m_sde_gpu(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                            callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                            s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                            solver_type: str = "midpoint") -> torch.Tensor:
    """Alias of :func:`sample_dpmpp_2m_sde` (ComfyUI's _gpu variant differs only in its default noise's device).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m_sde_gpu(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2m_sde_gpu", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   draws_noise=_draws(eta, s_noise), core_name="dpmpp_2m_sde", eta=eta, s_noise=s_noise,
                   solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                             callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                             s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                             solver_type: str = "heun") -> torch.Tensor:
    """DPM-Solver++(2M) SDE with the Heun-type second-order term (Lu et al. 2022, DPM-Solver++).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m_sde_heun(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2m_sde_heun", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   draws_noise=_draws(eta, s_noise), core_name="dpmpp_2m_sde", eta=eta, s_noise=s_noise,
                   solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_2m_sde_heun_gpu(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                                 callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                                 s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                                 solver_type: str = "heun") -> torch.Tensor:
    """Alias of :func:`sample_dpmpp_2m_sde_heun` (ComfyUI's _gpu variant differs only in its default noise's device).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m_sde_heun_gpu(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_2m_sde_heun_gpu", model, x, sigmas, extra_args, callback, disable,
                   noise_sampler=noise_sampler, draws_noise=_draws(eta, s_noise), core_name="dpmpp_2m_sde", eta=eta,
                   s_noise=s_noise, solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                        callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                        s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (Lu et al. 2022, DPM-Solver++); ComfyUI's default noise is a Brownian tree.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_3m_sde(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_3m_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   draws_noise=_draws(eta, s_noise), eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_dpmpp_3m_sde_gpu(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                            callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                            s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Alias of :func:`sample_dpmpp_3m_sde` (ComfyUI's _gpu variant differs only in its default noise's device).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_3m_sde_gpu(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0]), eta=0.0).shape
        torch.Size([2, 3])
    """
    return _sample("dpmpp_3m_sde_gpu", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   draws_noise=_draws(eta, s_noise), core_name="dpmpp_3m_sde", eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_ddpm(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                callback: Optional[Callable] = None, disable: Optional[bool] = None,
                noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """DDPM ancestral sampling from the posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, Algorithm 2).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_ddpm(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("ddpm", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler)


@torch.no_grad()
def sample_res_multistep(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                         callback: Optional[Callable] = None, disable: Optional[bool] = None, s_noise: float = 1.0,
                         noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """RES second-order exponential multistep (Zhang et al. 2023), deterministic.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_res_multistep(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("res_multistep", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   s_noise=s_noise)


@torch.no_grad()
def sample_res_multistep_cfg_pp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                                callback: Optional[Callable] = None, disable: Optional[bool] = None,
                                s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024); needs CFG.

    Example:
        >>> model = cfg_model(lambda x, s: x / (1 + s[:, None] ** 2), lambda x, s: x / (2 + s[:, None] ** 2), 3.0)
        >>> sample_res_multistep_cfg_pp(model, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("res_multistep_cfg_pp", model, x, sigmas, extra_args, callback, disable,
                   noise_sampler=noise_sampler, s_noise=s_noise)


@torch.no_grad()
def sample_res_multistep_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                                   callback: Optional[Callable] = None, disable: Optional[bool] = None,
                                   eta: float = 1.0, s_noise: float = 1.0,
                                   noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral RES multistep (Zhang et al. 2023; Ho et al. 2020 ancestral split).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_res_multistep_ancestral(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("res_multistep_ancestral", model, x, sigmas, extra_args, callback, disable,
                   noise_sampler=noise_sampler, eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                                          extra_args: _Extra = None, callback: Optional[Callable] = None,
                                          disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                                          noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024); needs CFG.

    Example:
        >>> model = cfg_model(lambda x, s: x / (1 + s[:, None] ** 2), lambda x, s: x / (2 + s[:, None] ** 2), 3.0)
        >>> sample_res_multistep_ancestral_cfg_pp(model, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("res_multistep_ancestral_cfg_pp", model, x, sigmas, extra_args, callback, disable,
                   noise_sampler=noise_sampler, eta=eta, s_noise=s_noise)


@torch.no_grad()
def sample_gradient_estimation(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                               callback: Optional[Callable] = None, disable: Optional[bool] = None,
                               ge_gamma: float = 2.0, cfg_pp: bool = False) -> torch.Tensor:
    """Gradient-estimation sampler (Permenter & Yuan 2024, Algorithm 2); ``cfg_pp=True`` is
    :func:`sample_gradient_estimation_cfg_pp` (ComfyUI's flag).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_gradient_estimation(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    if cfg_pp:
        return sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args, callback, disable, ge_gamma=ge_gamma)
    return _sample("gradient_estimation", model, x, sigmas, extra_args, callback, disable, ge_gamma=ge_gamma)


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                                      extra_args: _Extra = None, callback: Optional[Callable] = None,
                                      disable: Optional[bool] = None, ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient estimation with CFG++ (Permenter & Yuan 2024; Chung et al. 2024); needs CFG.

    Example:
        >>> model = cfg_model(lambda x, s: x / (1 + s[:, None] ** 2), lambda x, s: x / (2 + s[:, None] ** 2), 3.0)
        >>> sample_gradient_estimation_cfg_pp(model, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("gradient_estimation_cfg_pp", model, x, sigmas, extra_args, callback, disable, ge_gamma=ge_gamma)


@torch.no_grad()
def sample_heunpp2(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                   callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                   s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Heun++ (Karras et al. 2022 Algorithm 2 with a third derivative point; ComfyUI's heunpp2). As ComfyUI's, it
    draws ``torch.randn_like(x)`` from the global RNG at every step, churned or not.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_heunpp2(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("heunpp2", model, x, sigmas, extra_args, callback, disable, churn_every_step=True,
                   s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
def sample_lcm(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
               callback: Optional[Callable] = None, disable: Optional[bool] = None,
               noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Latent-consistency sampling (Luo et al. 2023): x = denoised, renoised to the next sigma by the model's noise
    scaling (flow models: ``(1 - s) x0 + s z``).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_lcm(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("lcm", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler)


@torch.no_grad()
def sample_ipndm(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                 callback: Optional[Callable] = None, disable: Optional[bool] = None,
                 max_order: int = 4) -> torch.Tensor:
    """Improved PNDM, Adams-Bashforth on the derivatives (Zhang & Chen 2023, DEIS paper's iPNDM).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_ipndm(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("ipndm", model, x, sigmas, extra_args, callback, disable, max_order=max_order)


@torch.no_grad()
def sample_ipndm_v(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                   callback: Optional[Callable] = None, disable: Optional[bool] = None,
                   max_order: int = 4) -> torch.Tensor:
    """iPNDM with variable-step Adams-Bashforth weights (Zhang & Chen 2023).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_ipndm_v(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("ipndm_v", model, x, sigmas, extra_args, callback, disable, max_order=max_order)


@torch.no_grad()
def sample_deis(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                callback: Optional[Callable] = None, disable: Optional[bool] = None, max_order: int = 3,
                deis_mode: str = "tab") -> torch.Tensor:
    """DEIS, the diffusion exponential integrator sampler (Zhang & Chen 2023).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_deis(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("deis", model, x, sigmas, extra_args, callback, disable, max_order=max_order, deis_mode=deis_mode)


@torch.no_grad()
def sample_er_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                  callback: Optional[Callable] = None, disable: Optional[bool] = None, s_noise: float = 1.0,
                  noise_sampler: Optional[NoiseSampler] = None, noise_scaler: Optional[Callable] = None,
                  max_stage: int = 3) -> torch.Tensor:
    """ER-SDE-Solver-3 (Cui et al. 2025, extended reverse-time SDE); ``noise_scaler`` is applied to host floats
    (NumPy arrays), ComfyUI applies it to tensors.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_er_sde(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("er_sde", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   s_noise=s_noise, noise_scaler=noise_scaler, max_stage=max_stage)


@torch.no_grad()
def sample_seeds_2(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                   callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                   s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                   r: float = 0.5) -> torch.Tensor:
    """SEEDS-2, stochastic exponential derivative-free solver (Gonzalez et al. 2023).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_seeds_2(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("seeds_2", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler, eta=eta,
                   s_noise=s_noise, r=r)


@torch.no_grad()
def sample_seeds_3(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                   callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                   s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None, r_1: float = 1.0 / 3,
                   r_2: float = 2.0 / 3) -> torch.Tensor:
    """SEEDS-3 (Gonzalez et al. 2023).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_seeds_3(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("seeds_3", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler, eta=eta,
                   s_noise=s_noise, r_1=r_1, r_2=r_2)


@torch.no_grad()
def sample_sa_solver(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                     callback: Optional[Callable] = None, disable: Optional[bool] = False,
                     tau_func: Optional[Callable] = None, s_noise: float = 1.0,
                     noise_sampler: Optional[NoiseSampler] = None, predictor_order: int = 3,
                     corrector_order: int = 4, use_pece: bool = False, simple_order_2: bool = False) -> torch.Tensor:
    """SA-Solver, stochastic Adams predictor-corrector (Xue et al. 2023); without ``tau_func`` the noise window is
    the model sampling's 20%..80% levels, as in ComfyUI.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_sa_solver(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("sa_solver", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   tau_func=tau_func, s_noise=s_noise, predictor_order=predictor_order,
                   corrector_order=corrector_order, use_pece=use_pece, simple_order_2=simple_order_2)


@torch.no_grad()
def sample_sa_solver_pece(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: _Extra = None,
                          callback: Optional[Callable] = None, disable: Optional[bool] = False,
                          tau_func: Optional[Callable] = None, s_noise: float = 1.0,
                          noise_sampler: Optional[NoiseSampler] = None, predictor_order: int = 3,
                          corrector_order: int = 4, simple_order_2: bool = False) -> torch.Tensor:
    """SA-Solver in PECE mode (Xue et al. 2023).

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_sa_solver_pece(den, torch.ones(2, 3), torch.tensor([10.0, 2.0, 0.5, 0.0])).shape
        torch.Size([2, 3])
    """
    return _sample("sa_solver_pece", model, x, sigmas, extra_args, callback, disable, noise_sampler=noise_sampler,
                   tau_func=tau_func, s_noise=s_noise, predictor_order=predictor_order,
                   corrector_order=corrector_order, simple_order_2=simple_order_2)



@torch.no_grad()
def sample_dpm_fast(model: Callable, x: torch.Tensor, sigma_min: Any, sigma_max: Any, n: int,
                    extra_args: _Extra = None, callback: Optional[Callable] = None, disable: Optional[bool] = None,
                    eta: float = 0.0, s_noise: float = 1.0,
                    noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """DPM-Solver-fast, ``n`` evaluations from ``sigma_max`` to ``sigma_min`` (Lu et al. 2022, "DPM-Solver");
    ComfyUI's (k-diffusion's) signature: ComfyUI's KSAMPLER calls it with ``sigma_min`` = the last positive sigma,
    ``sigma_max = sigmas[0]`` and ``n = len(sigmas) - 1``. The run is :func:`fastdiff.k_diffusion.sample_dpm_fast`'s
    (the same DPMSolver arithmetic); without a noise sampler it draws from ``torch.randn`` as ComfyUI does only
    when ``extra_args`` has no seed -- with a seed ComfyUI seeds a generator, fastdiff keeps the global-RNG draw.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_fast(den, torch.ones(2, 3), 0.1, 10.0, 6).shape
        torch.Size([2, 3])
    """
    from ..k_diffusion import sampling as k_sampling

    return k_sampling.sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=extra_args, callback=callback,
                                      disable=disable, eta=eta, s_noise=s_noise, noise_sampler=noise_sampler)



@torch.no_grad()
def sample_dpm_adaptive(model: Callable, x: torch.Tensor, sigma_min: Any, sigma_max: Any, extra_args: _Extra = None,
                        callback: Optional[Callable] = None, disable: Optional[bool] = None, order: int = 3,
                        rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, pcoeff: float = 0.0,
                        icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 0.0,
                        s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                        return_info: bool = False) -> Any:
    """DPM-Solver-12 / 23 with adaptive step size (Lu et al. 2022, "DPM-Solver", Sec. 4 and Alg. 5), from
    ``sigma_max`` to ``sigma_min``; ComfyUI's (k-diffusion's) signature (its KSAMPLER passes the last positive sigma
    and ``sigmas[0]``). The run is :func:`fastdiff.k_diffusion.sample_dpm_adaptive`'s; its default noise is the
    global RNG's, as in ComfyUI without a seed.

    Example:
        >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_adaptive(den, torch.ones(2, 3), 0.1, 10.0).shape
        torch.Size([2, 3])
    """
    from ..k_diffusion import sampling as k_sampling

    return k_sampling.sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=extra_args, callback=callback,
                                          disable=disable, order=order, rtol=rtol, atol=atol, h_init=h_init,
                                          pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety,
                                          eta=eta, s_noise=s_noise, noise_sampler=noise_sampler,
                                          return_info=return_info)


#: ComfyUI's KSAMPLER_NAMES that fastdiff implements, in ComfyUI's order
KSAMPLER_NAMES = tuple(n for n in _COMFY_ORDER if f"sample_{n}" in globals())

#: name -> ComfyUI-signature function
SAMPLERS: Dict[str, Callable[..., torch.Tensor]] = {n: globals()[f"sample_{n}"] for n in KSAMPLER_NAMES}

__all__ = ["KSAMPLER_NAMES", "SAMPLERS"] + [f"sample_{n}" for n in KSAMPLER_NAMES]
