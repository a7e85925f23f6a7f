"""IPNDMScheduler: improved pseudo numerical methods (Zhang & Chen 2023), fourth-order Adams-Bashforth on the
noise-direction estimate along a trigonometric schedule (diffusers' IPNDM, as in the v-diffusion samplers).

Each step combines the current estimate ``e = beta_t x + alpha_t m`` with up to three earlier ones (the history
tensors of the fused step; the current one is its aux output) using ``fastdiff.solvers.IPNDM_WEIGHTS``, and moves
the sample with the schedule's transfer. The weights depend only on how many estimates are kept, so a run's table
holds one row per (step, order), built once per ``set_timesteps`` with every product folded in float64.
"""
from __future__ import annotations

import math
from typing import List, Optional, Union

import numpy as np
import torch

from ..solvers import IPNDM_WEIGHTS
from . import _base
from ._base import FusedSchedulerBase, check_steps, result_dtype, rows
from ._compat import make_output, register_to_config

__all__ = ["IPNDMScheduler"]


class IPNDMScheduler(FusedSchedulerBase):
    """Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (iPNDM).

    Same config keys, defaults and numbers as ``diffusers.IPNDMScheduler``; ``step`` is one fused pass. The
    earlier estimates are kept in ``ets`` (oldest first, as diffusers keeps them; diffusers' tests set it
    directly), and their number decides the order, as in diffusers.

    Example:
        >>> s = IPNDMScheduler()
        >>> s.set_timesteps(10)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 1
    _output_name = "SchedulerOutput"

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, trained_betas: Optional[Union[np.ndarray, List[float]]] = None):
        self._reset_run()
        self.init_noise_sigma = 1.0
        self.pndm_order = 4
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """The trigonometric schedule: ``beta = sin(s pi / 2)^2``, ``alpha = sqrt(1 - beta^2)`` at ``s`` from 1
        down to 0, timesteps ``atan2(beta, alpha) 2 / pi`` (float32 as diffusers, or float64 per
        ``set_table_arithmetic``)."""
        check_steps(num_inference_steps, self.config.num_train_timesteps, cap=False)
        n = num_inference_steps
        dt = torch.float32 if _base._TABLE_ARITHMETIC[0] == "diffusers" else torch.float64
        steps = torch.cat([torch.linspace(1, 0, n + 1, dtype=dt)[:-1], torch.zeros(1, dtype=dt)])
        if self.config.trained_betas is not None:
            # the schedule itself, as diffusers takes it (its length, less one, is the number of timesteps)
            betas = torch.as_tensor(np.asarray(self.config.trained_betas, dtype=np.float64)).to(dt)
        else:
            betas = torch.sin(steps * math.pi / 2) ** 2
        alphas = (1.0 - betas**2) ** 0.5
        self._b64 = betas.to(torch.float64).numpy().copy()
        self._a64 = alphas.to(torch.float64).numpy().copy()
        self.betas, self.alphas = betas.to(torch.float32), alphas.to(torch.float32)
        self.timesteps = (torch.atan2(betas, alphas) / math.pi * 2)[:-1].to(torch.float32).to(device)
        self.num_inference_steps = n
        self.ets: List[torch.Tensor] = []
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._start_run()

    def _build_table(self, key) -> torch.Tensor:
        """Row ``4 i + k - 1``: step ``i`` at order ``k``. ``x' = (alpha'/alpha) x + (beta' - alpha' beta/alpha) E``
        with ``E = sum_j w_j e_{i-j}``; ``alpha`` is floored at 1e-8 (the first step's alpha is 0) as diffusers
        floors it, and the current estimate's part is folded onto ``x`` and ``m`` here, in float64."""
        a, b = self._a64, self._b64
        cols = {k: [] for k in ("in_x", "in_m", "out_x", "out_m", "h0", "h1", "h2")}
        for i in range(len(a) - 1):
            floor = max(a[i], 1e-8)
            on_e = b[i + 1] - a[i + 1] * b[i] / floor
            for k in range(1, 5):
                w = list(IPNDM_WEIGHTS[k - 1]) + [0.0] * (4 - k)
                cols["in_x"].append(b[i])
                cols["in_m"].append(a[i])
                cols["out_x"].append(a[i + 1] / floor + on_e * w[0] * b[i])
                cols["out_m"].append(on_e * w[0] * a[i])
                for j in range(3):
                    cols[f"h{j}"].append(on_e * w[j + 1])
        c = {k: np.array(v, dtype=np.float64) for k, v in cols.items()}
        return rows(in_x=c["in_x"], in_m=c["in_m"], out_x=c["out_x"], out_m=c["out_m"],
                    out_h=[c["h0"], c["h1"], c["h2"]])

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Identity (the model sees the sample unscaled)."""
        return sample

    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True):
        """One iPNDM update (a single fused pass; no host-device sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        i = self._current_index(timestep)
        k = min(4, len(self.ets) + 1)
        table = self._table("run", sample.device)
        dtype = result_dtype(sample, model_output)
        history = tuple(self.ets[-1:-k:-1]) if k > 1 else ()
        prev, e = self._launch(sample, model_output, table, 4 * i + k - 1, out_dtype=dtype, aux_dtype=dtype,
                               history=history)
        self.ets = (self.ets + [e])[-4:]  # four are all the order reads
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
