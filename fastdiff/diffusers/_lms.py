"""LMSDiscreteScheduler: the linear multistep method in sigma on the probability-flow ODE.

Each step is ``x + sum_j c_j d_{i-j}`` over the newest derivatives ``d = (x - x0) / sigma``, the weights
``c_j`` the integrals of the Lagrange basis on the previous sigmas (``fastdiff.solvers.lms_weight_table``,
computed once per ``set_timesteps`` and ``order``). The current derivative is formed in the fused pass; the
earlier ones are its history tensors:

* epsilon prediction: the derivative is the model output itself, so the earlier model outputs are the history
  and the pass writes the x0 estimate as its auxiliary output;
* sample prediction: the x0 estimate is the model output and the pass writes the derivative;
* v prediction: the pass writes the x0 estimate, and the derivative ``(x - x0) / sigma`` kept for the next
  steps is one more tensor expression, as diffusers forms it.

Orders above 4 (more earlier derivatives than the pass's three history slots) fold the oldest ones into the
last slot with one extra tensor sum.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Union

import numpy as np
import torch

from ..solvers import lms_weight_table
from ._base import KARRAS_COMPATIBLES, check_steps, result_dtype, rows
from ._compat import make_output, register_to_config
from ._euler import _SigmaBase, sigma_x0_coefs

__all__ = ["LMSDiscreteScheduler"]

_HISTORY = 3  # history tensors of one fused pass


class LMSDiscreteScheduler(_SigmaBase):
    """Linear multistep sampling in sigma (k-diffusion's ``sample_lms``; cf. Karras et al. 2022).

    Same config keys, defaults and numbers as ``diffusers.LMSDiscreteScheduler`` (its weights are SciPy
    quadratures of the same polynomials; these are exact integrals in float64); ``step`` is one fused pass.
    ``derivatives`` holds the derivatives of the run, oldest first, as diffusers' attribute does; with epsilon
    prediction they are the model outputs themselves (the derivative, exactly), so a model output must not be
    overwritten in place while the run still reads it (the next three steps).

    Example:
        >>> s = LMSDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        >>> s.set_timesteps(6)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     eps = torch.zeros_like(s.scale_model_input(x, t))
        ...     x = s.step(eps, t, x).prev_sample
        >>> len(s.derivatives)
        4
    """

    order = 1
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "LMSDiscreteSchedulerOutput"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._init_schedule(self.config)
        self.use_karras_sigmas = use_karras_sigmas
        self.set_timesteps(num_train_timesteps, None)

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """Sampling sigmas and timesteps with diffusers' ``timestep_spacing`` (or Karras/exponential/beta sigmas)."""
        check_steps(num_inference_steps, self.config.num_train_timesteps, cap=False)
        self.num_inference_steps = num_inference_steps
        ts, sig = self._spaced(num_inference_steps)
        self._set_run(ts, np.concatenate([sig, [0.0]]).astype(np.float32), device)
        self._weights = {}
        self._start_run()
        self.derivatives: List[torch.Tensor] = []

    def _lms_weights(self, order: int) -> np.ndarray:
        """Per-step weights of ``order`` (row ``i``: the ``min(i + 1, order)`` weights of step ``i``)."""
        w = self._weights.get(order)
        if w is None:
            w = self._weights[order] = lms_weight_table(self._sig, order)
        return w

    def _build_table(self, key) -> torch.Tensor:
        _, order = key
        w = self._lms_weights(order)
        s = self._sig[:-1]
        pt = self.config.prediction_type
        if pt not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, or `v_prediction`")
        in_x, in_m = sigma_x0_coefs(pt, s)
        c0 = w[:, 0]
        # x + c0 (x - x0) / sigma with x0 = in_x x + in_m m, folded onto x and m
        out_x, out_m = 1.0 + c0 * (1.0 - in_x) / s, -c0 * in_m / s
        hist = [w[:, k] for k in range(1, min(order, _HISTORY + 1))]
        if order > _HISTORY + 1:  # the last slot holds the folded sum of the oldest derivatives
            hist[-1] = np.ones_like(s)
        if pt == "sample":  # aux: the derivative (x - m) / sigma
            return rows(in_x=in_x, in_m=in_m, out_x=out_x, out_m=out_m, out_h=hist, aux_x=1.0 / s, aux_d=-1.0 / s)
        return rows(in_x=in_x, in_m=in_m, out_x=out_x, out_m=out_m, out_h=hist)

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             order: int = 4, return_dict: bool = True):
        """One linear multistep step of ``order`` (a single fused pass; no host-device sync)."""
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"order must be a positive int, got {order!r}")
        order = int(order)
        if not self.is_scale_input_called:
            warnings.warn("The `scale_model_input` function should be called before `step` to ensure correct "
                          "denoising. See `StableDiffusionPipeline` for a usage example.")
        i = self._current_index(timestep)
        prior = self.derivatives[-(order - 1):] if order > 1 else []  # what diffusers keeps beside the new one
        # diffusers pairs the step's weights with the derivatives it has: after set_begin_index fewer than the
        # order, and the pass then reads only the first history weights of the row
        used = min(i + 1, order, len(prior) + 1)
        table = self._table(("lms", order), sample.device)
        older = prior[::-1][:used - 1]  # newest first
        if order > _HISTORY + 1 and len(older) >= _HISTORY:  # the table's last history weight is 1: the sum
            w = self._lms_weights(order)[i]
            tail = sum(float(w[k + 1]) * d for k, d in enumerate(older) if k >= _HISTORY - 1)
            older = [*older[:_HISTORY - 1], tail]
        dtype = result_dtype(sample, model_output)
        kw = {"history": tuple(older)} if older else {}
        prev, aux = self._launch(sample, model_output, table, i, out_dtype=dtype, aux_dtype=dtype, **kw)
        pt = self.config.prediction_type
        if pt == "epsilon":
            x0, derivative = aux, model_output
        elif pt == "sample":
            x0, derivative = model_output, aux
        else:
            x0 = aux
            derivative = (sample - x0) / self.sigmas[i]
        self.derivatives = prior + [derivative]
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("LMSDiscreteSchedulerOutput", prev, x0)
