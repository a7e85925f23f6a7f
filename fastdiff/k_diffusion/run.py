"""The k-diffusion face's run: k-diffusion's model call, scalar arithmetic, noise draws and callback dicts.

The samplers of :mod:`fastdiff.samplers` run on it unchanged. What it supplies:

* the schedule as 0-d tensors of the caller's ``sigmas`` (one host copy, read before the loop), so every scalar
  of a step is computed in k-diffusion's dtype and order of operations;
* ``model(x, sigma * s_in, **extra_args)``, the model returning the x0 estimate;
* noise from k-diffusion's sources, in k-diffusion's order: EDM churn ``torch.randn_like(x)`` at the start of
  every step of euler / heun / dpm_2 (drawn even without churn, so the global RNG advances as k-diffusion's),
  a pass of its own when churn is active; the ancestral and SDE noise from the ``noise_sampler`` at the times
  k-diffusion asks it for, passed to the fused step as ``noise=``;
* k-diffusion's callback dict, before each step;
* for the CFG++ samplers (rows with ``out_u``/``aux_u``, see :mod:`fastdiff.sampler_run`), the unconditional x0
  estimate as the tensor :attr:`KDiffusionRun.uncond`, passed to the fused step as ``uncond=``. A k-diffusion
  model has none (``provides_uncond = False``: planning such a sampler raises ValueError); a subclass whose
  model call reports one (the ComfyUI face's post-CFG hook) sets ``provides_uncond = True`` and assigns
  ``run.uncond`` during each model call. :meth:`KDiffusionRun.eval` clears it before the call, so a call that
  did not report it raises instead of reusing the previous step's.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch

from ..ops._common import check_batch
from ..ops.step import fused_step
from ..sampler_run import Run, check_no_repeats
from ..solvers import sigma_of, t_of
from .noise import NoiseSampler

__all__ = ["KDiffusionRun"]


def _backend_for(x: torch.Tensor) -> str:
    # the Triton kernels store float32/16/bf16; float64 runs on the PyTorch path
    return "torch" if x.dtype == torch.float64 else "auto"


class KDiffusionRun(Run):
    """One k-diffusion-style sampling run (see the module docstring)."""

    fuses_churn = False
    heun_keeps_derivative = False
    #: whether the model call reports the unconditional x0 estimate in ``self.uncond`` (CFG++ samplers)
    provides_uncond = False

    def __init__(self, model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]],
                 callback: Optional[Callable], disable: Optional[bool]) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
        check_batch("x", x)
        if not isinstance(sigmas, torch.Tensor) or not sigmas.dtype.is_floating_point:
            raise TypeError(f"sigmas must be a floating-point torch.Tensor, got "
                            f"{sigmas.dtype if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__}")
        if sigmas.is_meta:
            raise ValueError("sigmas is on the meta device; pass real values")
        if sigmas.dim() != 1 or sigmas.numel() < 2:
            raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
        if extra_args is not None and not isinstance(extra_args, dict):
            raise TypeError(f"extra_args must be a dict or None, got {type(extra_args).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        # the one host read of the run, before the loop; the samplers' scalar math runs on these 0-d tensors
        self.host = sigmas.detach().to("cpu")
        # a repeated sigma is a zero-length step that k-diffusion's multistep samplers divide by
        check_no_repeats(self.host.tolist())
        super().__init__(x, list(self.host), _backend_for(x))
        self.model, self.device_sigmas = model, sigmas
        self.extra = {} if extra_args is None else extra_args
        self.callback, self.disable = callback, disable
        self.s_in = x.new_ones([x.shape[0]])
        self.noise_sampler: Optional[NoiseSampler] = None
        self._sde_times: Optional[tuple] = None  # (i, t_i, t_{i+1}) of the step dpmpp_sde is in
        #: the unconditional x0 estimate of the latest model call (set during the call when provides_uncond)
        self.uncond: Optional[torch.Tensor] = None

    # --- planning ----------------------------------------------------------------------------
    def _finish_plan(self, model_sigmas: List[Any]) -> None:
        ms = [torch.as_tensor(s, dtype=self.host.dtype).reshape(()) for s in model_sigmas]
        self.msig = (torch.stack(ms) if ms else self.host.new_zeros(1)).to(self.device)

    # --- the loop ------------------------------------------------------------------------------
    def steps(self):
        from tqdm.auto import trange

        return trange(self.n, disable=self.disable)

    def churn(self, x: torch.Tensor, i: int, pre: Optional[int]) -> torch.Tensor:
        if not self._churn:  # only euler / heun / dpm_2 plan churn, and only they draw its noise
            return x
        eps = torch.randn_like(x)  # every step, churn or not: the global RNG advances as k-diffusion's
        if pre is None:
            return x
        return fused_step(x, x, self.table, coef_row=self.pass_index(pre), noise=eps, backend=self.backend)

    def eval(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``model(x, sigma * s_in, **extra_args)`` exactly as k-diffusion calls it (``self.uncond`` cleared first)."""
        self.uncond = None
        return self.model(x, self.msig[k] * self.s_in, **self.extra)

    def check_uncond(self) -> None:
        if not self.provides_uncond:
            super().check_uncond()

    def uncond_arg(self, k: int) -> Optional[torch.Tensor]:
        """The model call's unconditional x0 estimate on CFG++ rows (ValueError when the call left none)."""
        if not self.uses_uncond[k]:
            return None
        if self.uncond is None:
            raise ValueError("this sampler (CFG++) needs classifier-free guidance: the model call did not report "
                             "the unconditional x0 estimate (run.uncond is None)")
        return self.uncond

    def _noise(self, draw: Any) -> torch.Tensor:
        """The noise sampler's draw for ``draw``: step ``i``'s interval, or a stage of dpmpp_sde's step."""
        s = self.device_sigmas
        if isinstance(draw, tuple):
            # dpmpp_sde: the noise-sampler arguments with k-diffusion's exact scalar ops on sigmas' device
            # (a Brownian tree is a function of these times); elementwise, so no host sync
            i, r, stage = draw
            if self._sde_times is None or self._sde_times[0] != i:  # once per step, for both stages
                self._sde_times = (i, t_of(s[i]), t_of(s[i + 1]))
            _, t, t_next = self._sde_times
            end = t + (t_next - t) * r if stage == "mid" else t_next
            return self.noise_sampler(sigma_of(t), sigma_of(end))
        return self.noise_sampler(s[draw], s[draw + 1])

    def _launch(self, x, raw, k, x_eval, history, aux, draw):
        noise = None if draw is None else self._noise(draw)
        if noise is not None and self.coefs[k]["out_noise"] == 0.0:
            noise = None
        return fused_step(x, raw, self.table, x_eval=x_eval, history=history, coef_row=k, noise=noise, write_aux=aux,
                          backend=self.backend, uncond=self.uncond_arg(k))

    def report(self, i: int, x: torch.Tensor, raw: torch.Tensor, k: int, sigma_hat: Any = None) -> None:
        if self.callback is not None:
            sigma = self.device_sigmas[i]
            self.callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else self.msig[k],
                           "denoised": raw})
