"""The ComfyUI face's run: ComfyUI's model wrapper, its CFG++ hook, its model-sampling reads and its noise.

:class:`ComfyUIRun` is :class:`~fastdiff.k_diffusion.run.KDiffusionRun` (the model call
``model(x, sigma * s_in, **extra_args)``, 0-d tensor scalars, the callback dict
``{"x", "i", "sigma", "sigma_hat", "denoised"}`` before each step) with ComfyUI's differences:

* **noise**: a caller's ``noise_sampler(sigma, sigma_next)``, called exactly where ComfyUI calls it (the SDE
  samplers skip it when ``eta`` or ``s_noise`` is 0, as ComfyUI does; ``dpmpp_sde`` passes ComfyUI's
  ``(sigma_i, sigma_mid)`` / ``(sigma_i, sigma_next)`` arguments). Without one the noise is fastdiff's
  counter-based Philox stream drawn inside the fused step, keyed by ``extra_args["seed"]`` (ComfyUI's sampler
  seed; taken modulo 2**63) -- not ComfyUI's ``torch.randn`` generator nor its Brownian tree, so the same seed
  gives different (equally distributed) noise than ComfyUI. Without a seed one is drawn from torch's global CPU
  generator at the first noisy step, as ComfyUI's Brownian tree draws its seed (samplers without noise leave the
  global RNG alone);
* **EDM churn** (``s_churn > 0`` of euler / heun / dpm_2): ``torch.randn_like(x)`` from the global RNG, only on
  the steps whose churn is active (ComfyUI draws nothing on the others, unlike k-diffusion); ComfyUI's heunpp2
  draws it at every step, churned or not (``churn_every_step``);
* **CFG++**: with ``uses_uncond`` the run registers a post-CFG function in a copy of
  ``extra_args["model_options"]`` (the list ``"sampler_post_cfg_function"``, plus
  ``"disable_cfg1_optimization": True``, as ComfyUI's ``set_model_options_post_cfg_function(...,
  disable_cfg1_optimization=True)`` does); ComfyUI's CFG function calls it with ``args["uncond_denoised"]``, which
  the run keeps as :attr:`uncond` for the fused step. The caller's ``extra_args`` and ``model_options`` dicts are
  not modified (ComfyUI replaces ``extra_args["model_options"]`` in the caller's dict);
* **model sampling**: :func:`model_sampling_of` reads ``model.inner_model.inner_model.model_sampling`` (falling
  back to ``model.inner_model.model_patcher.get_model_object("model_sampling")``); a CONST model sampling
  (rectified flow: SD3, Flux, ...) sets :attr:`~fastdiff.sampler_run.Run.flow_sigmas`. A model without ComfyUI's
  wrapper chain counts as a non-flow (VE / discrete VP) model.

Example:
    >>> import torch
    >>> den = lambda x, s, **kw: x / (1 + s[:, None] ** 2)
    >>> run = ComfyUIRun(den, torch.ones(2, 3), torch.tensor([10.0, 1.0, 0.0]), {"seed": 3}, None, True)
    >>> run.seed, run.flow_sigmas
    (3, False)
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from ..k_diffusion.noise import NoiseSampler, resolve_noise
from ..k_diffusion.run import KDiffusionRun
from ..ops.step import fused_step
from ..random import MAX_SEED
from ..solvers import sigma_of, t_of

__all__ = ["ComfyUIRun", "cfg_model", "model_sampling_of", "is_flow_model_sampling", "POST_CFG_KEY", "DISABLE_CFG1_KEY"]

#: ComfyUI's model_options key holding the list of post-CFG functions
POST_CFG_KEY = "sampler_post_cfg_function"
#: ComfyUI's model_options flag that keeps the unconditional prediction computed at cfg = 1
DISABLE_CFG1_KEY = "disable_cfg1_optimization"


def model_sampling_of(model: Any) -> Optional[Any]:
    """ComfyUI's ``model_sampling`` object behind the sampler-level ``model``, or None for a plain callable.

    Reads ``model.inner_model.inner_model.model_sampling`` (KSamplerX0Inpaint -> CFGGuider -> BaseModel), then
    ``model.inner_model.model_patcher.get_model_object("model_sampling")``, the two ways ComfyUI's samplers reach it.

    Example:
        >>> model_sampling_of(lambda x, s: x) is None
        True
    """
    inner = getattr(model, "inner_model", None)
    if inner is None:
        return None
    base = getattr(inner, "inner_model", None)
    ms = getattr(base, "model_sampling", None) if base is not None else None
    if ms is not None:
        return ms
    patcher = getattr(inner, "model_patcher", None)
    get = getattr(patcher, "get_model_object", None)
    return get("model_sampling") if callable(get) else None


def is_flow_model_sampling(model_sampling: Any) -> bool:
    """Whether ``model_sampling`` is (a subclass of) ComfyUI's ``CONST``: flow times ``s``, ``x = (1-s) x0 + s eps``.

    Checked by class name along the MRO, so ComfyUI need not be imported.

    Example:
        >>> class CONST: pass
        >>> class ModelSamplingFlux(CONST): pass
        >>> is_flow_model_sampling(ModelSamplingFlux()), is_flow_model_sampling(None)
        (True, False)
    """
    if model_sampling is None:
        return False
    return any(c.__name__ == "CONST" for c in type(model_sampling).__mro__)


class ComfyUIRun(KDiffusionRun):
    """One ComfyUI-style sampling run (see the module docstring).

    Args:
        model, x, sigmas, extra_args, callback, disable: the ComfyUI sampler's arguments.
        noise_sampler: the caller's noise sampler, or None for the Philox stream keyed by ``extra_args["seed"]``.
        uses_uncond: register the post-CFG hook that reports the unconditional x0 estimate (CFG++ samplers).
        draws_noise: False where ComfyUI skips its noise draws (``eta == 0`` or ``s_noise == 0`` of the SDE
            samplers): the noise sampler is then never called.
        churn_every_step: draw the churn noise ``torch.randn_like(x)`` at every step, churned or not (ComfyUI's
            ``heunpp2``, as k-diffusion's samplers do); otherwise only on the churned steps (ComfyUI's euler, heun,
            dpm_2).
    """

    def __init__(self, model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]],
                 callback: Optional[Callable], disable: Optional[bool], *,
                 noise_sampler: Optional[NoiseSampler] = None, uses_uncond: bool = False,
                 draws_noise: bool = True, churn_every_step: bool = False) -> None:
        super().__init__(model, x, sigmas, extra_args, callback, disable)
        self.extra = dict(self.extra)  # the caller's dict stays as it was
        seed = self.extra.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise TypeError(f"extra_args['seed'] must be a non-negative int or None, got {seed!r}")
        #: the Philox key (None: drawn from the global CPU generator at the first noisy pass, so that samplers
        #: without noise leave the global RNG alone); unused with a noise sampler
        self.seed: Optional[int] = None
        if noise_sampler is not None:
            self.noise_sampler = resolve_noise(x, noise_sampler)
        elif seed is not None:
            self.seed = seed % (MAX_SEED + 1)  # ComfyUI seeds are up to 64 bits; the Philox key takes 63
        self.draws_noise = draws_noise
        self.churn_every_step = churn_every_step
        self.model_sampling = model_sampling_of(model)
        self.flow_sigmas = is_flow_model_sampling(self.model_sampling)
        self.provides_uncond = uses_uncond
        if uses_uncond:
            self._register_post_cfg()

    def _register_post_cfg(self) -> None:
        options = self.extra.get("model_options")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"extra_args['model_options'] must be a dict, got {type(options).__name__}")
        options = dict(options or {})
        options[POST_CFG_KEY] = list(options.get(POST_CFG_KEY, [])) + [self._post_cfg]
        options[DISABLE_CFG1_KEY] = True
        self.extra["model_options"] = options

    def _post_cfg(self, args: Dict[str, Any]) -> torch.Tensor:
        """ComfyUI's post-CFG call: keep the unconditional x0 estimate, return the guided one unchanged."""
        self.uncond = args["uncond_denoised"]
        return args["denoised"]

    # --- the loop ------------------------------------------------------------------------------
    def churn(self, x: torch.Tensor, i: int, pre: Optional[int]) -> torch.Tensor:
        if self.churn_every_step:
            return super().churn(x, i, pre)
        if pre is None:  # ComfyUI draws the churn noise only where gamma > 0
            return x
        eps = torch.randn_like(x)
        return fused_step(x, x, self.table, coef_row=self.pass_index(pre), noise=eps, backend=self.backend)

    def _noise(self, draw: Any) -> torch.Tensor:
        if isinstance(draw, tuple) and draw[0] == "between":  # a draw the sampler names by its two noise levels
            _, a, b = draw
            dtype = self.device_sigmas.dtype
            return self.noise_sampler(torch.as_tensor(a, dtype=dtype), torch.as_tensor(b, dtype=dtype))
        # dpmpp_sde's stages, with ComfyUI's arguments (sigma_i, sigma_mid) and (sigma_i, sigma_next)
        if isinstance(draw, tuple):
            i, r, stage = draw
            s = self.device_sigmas
            if stage == "end":
                return self.noise_sampler(s[i], s[i + 1])
            if self.flow_sigmas:  # ComfyUI's half-log-SNR midpoint of a CONST model
                lam, lam_next = s[i].logit().neg(), s[i + 1].logit().neg()
                return self.noise_sampler(s[i], (lam + r * (lam_next - lam)).neg().sigmoid())
            if self._sde_times is None or self._sde_times[0] != i:
                self._sde_times = (i, t_of(s[i]), t_of(s[i + 1]))
            _, t, t_next = self._sde_times
            return self.noise_sampler(s[i], sigma_of(t + r * (t_next - t)))
        return super()._noise(draw)

    def _launch(self, x, raw, k, x_eval, history, aux, draw):
        if not self.draws_noise:
            draw = None
        if self.noise_sampler is not None:
            return super()._launch(x, raw, k, x_eval, history, aux, draw)
        noisy = draw is not None and self.coefs[k]["out_noise"] != 0.0
        if noisy and self.seed is None:  # a host-side draw, no device sync
            self.seed = int(torch.randint(0, MAX_SEED, [], dtype=torch.int64).item())
        return fused_step(x, raw, self.table, x_eval=x_eval, history=history, coef_row=k,
                          seed=self.seed if noisy else None, stream=k + 1, write_aux=aux, backend=self.backend,
                          uncond=self.uncond_arg(k))


def cfg_model(cond_denoiser: Callable, uncond_denoiser: Callable, cond_scale: float) -> Callable:
    """A model shaped like ComfyUI's CFG wrapper over two x0 denoisers ``den(x, sigma)``, for examples and tests.

    ``model(x, sigma, model_options={}, **extra)`` returns ``uncond + (cond - uncond) * cond_scale`` and then runs
    the ``model_options["sampler_post_cfg_function"]`` list on it the way ComfyUI's ``cfg_function`` does (each
    gets ``args`` with ``"denoised"``, ``"cond_denoised"``, ``"uncond_denoised"``, ``"sigma"``, ``"input"``,
    ``"cond_scale"``, ``"model_options"``, and returns the new denoised). It has no ``inner_model`` chain, so the
    face takes it for a non-flow model.

    Example:
        >>> import torch
        >>> model = cfg_model(lambda x, s: 0.5 * x, lambda x, s: 0.0 * x, 2.0)
        >>> model(torch.ones(1, 2), torch.ones(1))
        tensor([[1., 1.]])
    """
    def model(x: torch.Tensor, sigma: torch.Tensor, model_options: Optional[Dict[str, Any]] = None,
              **extra: Any) -> torch.Tensor:
        options = {} if model_options is None else model_options
        cond, uncond = cond_denoiser(x, sigma), uncond_denoiser(x, sigma)
        denoised = uncond + (cond - uncond) * cond_scale
        for fn in options.get(POST_CFG_KEY, []):
            denoised = fn({"denoised": denoised, "cond_denoised": cond, "uncond_denoised": uncond, "sigma": sigma,
                           "input": x, "cond_scale": cond_scale, "model_options": options})
        return denoised

    return model
