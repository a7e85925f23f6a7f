"""CosineDPMSolverMultistepScheduler (Stable Audio): DPM-Solver++(2M) SDE on EDM-preconditioned VE sigmas.

Sigmas are exponential or Karras between ``sigma_min`` and ``sigma_max`` (diffusers' float32 torch arithmetic),
the model sees ``x / sqrt(sigma^2 + sigma_data^2)`` and the x0 estimate is EDM's ``c_skip x + c_out F``; each
step is one fused pass (the previous x0 estimate as a history tensor). Noise (the rule, as for
DPMSolverSDEScheduler): diffusers' Brownian path over ``[sigma_min, sigma_max]`` seeded from the generator's
``initial_seed()`` (the generator itself is never drawn from), or from one global ``torch.randint`` draw without a
generator; with torchsde installed it is that same path, queried at the same sigmas. Without a generator under
``set_noise_seed`` (and without torchsde, or with ``use_brownian_noise = False``) it is the kernel's Philox noise
(``_base``'s rule): the path's law, not torchsde's numbers -- each step queries the path over its own interval
[sigma_next, sigma], and these do not overlap, so the tree's normalised increments are independent standard
normals, as the per-step Philox streams are. That is the noise a ``torch.compile``-d loop can trace.
``solver_order=3`` is refused at the first step: diffusers' class has no third-order update (its step fails
there too).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..solvers import dpmpp_multistep_weights
from ._base import FusedSchedulerBase, rows
from ._compat import make_output, register_to_config
from ._multistep import check_solver_types
from ._sde import HAS_TORCHSDE, BrownianPathMixin

__all__ = ["CosineDPMSolverMultistepScheduler"]


class CosineDPMSolverMultistepScheduler(BrownianPathMixin, FusedSchedulerBase):
    """DPM-Solver++(2M) SDE (Lu et al. 2022) with EDM preconditioning (Karras et al. 2022), as Stable Audio uses it.

    Same config keys, defaults and numbers as ``diffusers.CosineDPMSolverMultistepScheduler`` (its Brownian noise
    with torchsde installed); ``step`` is one fused pass. Under ``set_noise_seed`` (steps without a generator)
    the noise is in-kernel Philox with the Brownian tree's law (independent standard normals per step: the
    steps' intervals do not overlap), not torchsde's numbers; that is the noise a
    ``torch.compile(fullgraph=True)`` loop draws as its eager run does.

    Example:
        >>> s = CosineDPMSolverMultistepScheduler()
        >>> s.set_timesteps(6)
        >>> x = torch.randn(1, 2, 16) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    """

    order = 1
    _compatibles: list = []
    #: draw diffusers' Brownian noise when torchsde is installed, unless a step without a generator runs under
    #: ``set_noise_seed`` (False: the in-kernel Philox noise)
    use_brownian_noise: bool = True

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.3,
        sigma_max: float = 500,
        sigma_data: float = 1.0,
        sigma_schedule: str = "exponential",
        num_train_timesteps: int = 1000,
        solver_order: int = 2,
        prediction_type: str = "v_prediction",
        rho: float = 7.0,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        final_sigmas_type: str = "zero",
    ) -> None:
        check_solver_types(self, None, solver_type)
        if sigma_schedule not in ("exponential", "karras"):
            raise ValueError(f"sigma_schedule must be 'exponential' or 'karras', got {sigma_schedule!r}")
        self._reset_run()
        sig = self._sigmas(num_train_timesteps)
        self.sigmas = torch.cat([sig, torch.zeros(1)])
        self.timesteps = self.precondition_noise(sig)
        self.num_inference_steps = None
        self.model_outputs = [None] * solver_order
        self.lower_order_nums = 0

    # ------------------------------------------------------------------ schedule
    def _sigmas(self, n: int) -> torch.Tensor:
        """``n`` float32 sigmas from sigma_max down to sigma_min, as diffusers computes them."""
        cfg = self.config
        ramp = torch.linspace(0, 1, n)
        if cfg.sigma_schedule == "karras":
            lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
            return (hi + ramp * (lo - hi)) ** cfg.rho
        return torch.linspace(math.log(cfg.sigma_min), math.log(cfg.sigma_max), n).exp().flip(0)

    @property
    def init_noise_sigma(self) -> float:
        """``sqrt(sigma_max^2 + 1)``."""
        return (self.config.sigma_max**2 + 1) ** 0.5

    def precondition_inputs(self, sample: torch.Tensor, sigma) -> torch.Tensor:
        """``sample / sqrt(sigma^2 + sigma_data^2)`` (EDM's c_in)."""
        return sample * (1 / ((sigma**2 + self.config.sigma_data**2) ** 0.5))

    def precondition_noise(self, sigma) -> torch.Tensor:
        """The model's time input ``atan(sigma) * 2 / pi``."""
        if not isinstance(sigma, torch.Tensor):
            sigma = torch.tensor([sigma])
        return sigma.atan() / math.pi * 2

    def precondition_outputs(self, sample: torch.Tensor, model_output: torch.Tensor, sigma) -> torch.Tensor:
        """EDM's x0 estimate ``c_skip sample + c_out model_output`` (plain PyTorch; ``step`` fuses it)."""
        in_x, in_m = self._x0_coefs(float(sigma))
        return in_x * sample + in_m * model_output

    def _x0_coefs(self, sigma):
        sd = self.config.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
        if self.config.prediction_type == "epsilon":
            return c_skip, c_out
        if self.config.prediction_type == "v_prediction":
            return c_skip, -c_out
        raise ValueError(f"Prediction type {self.config.prediction_type} is not supported.")

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None) -> None:
        """The run's sigmas (and ``timesteps = atan(sigma) 2 / pi``); the final sigma 0 or sigma_min."""
        cfg = self.config
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        if cfg.final_sigmas_type == "sigma_min":
            last = cfg.sigma_min
        elif cfg.final_sigmas_type == "zero":
            last = 0
        else:
            raise ValueError(f"`final_sigmas_type` must be one of 'zero', or 'sigma_min', but got "
                             f"{cfg.final_sigmas_type}")
        self.num_inference_steps = num_inference_steps
        sig = self._sigmas(num_inference_steps).to(dtype=torch.float32, device=device)
        # the sigmas first: setting the timesteps keys the run (its traced tables) by both
        self.sigmas = torch.cat([sig, torch.tensor([last], dtype=torch.float32, device=device)]).to("cpu")
        self.timesteps = self.precondition_noise(sig)
        self._sig = self.sigmas.to(torch.float64).numpy()
        s32 = self.sigmas
        self._c_in = [float(v) for v in 1 / ((s32**2 + cfg.sigma_data**2) ** 0.5)]
        self._sig_host = [float(v) for v in s32]
        self.model_outputs = [None] * cfg.solver_order
        self.lower_order_nums = 0
        self._tables.clear()
        self._host_tables.clear()
        self._step_index = None
        self._begin_index = None
        self._start: Optional[int] = None
        self._hist = []
        self.noise_sampler = None
        self._tree_args = None
        self._start_run()

    def _missing_timestep_index(self, value: float) -> int:
        return len(self.timesteps) - 1  # diffusers: an unknown timestep maps to the last step

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """``sample / sqrt(sigma^2 + sigma_data^2)`` at the current step's sigma."""
        if self._step_index is None:
            self._init_step_index(timestep)
        self.is_scale_input_called = True
        return sample * self._c_in[self._step_index]

    # ------------------------------------------------------------------ rows
    def _orders(self, start: int):
        cfg = self.config
        n = len(self._sig) - 1
        out, lon = [], 0
        for i in range(n):
            if i < start:
                out.append(1)
                continue
            lof = i == n - 1 and (cfg.euler_at_final or (cfg.lower_order_final and n < 15)
                                  or cfg.final_sigmas_type == "zero")
            los = i == n - 2 and cfg.lower_order_final and n < 15
            if cfg.solver_order == 1 or lon < 1 or lof:
                k = 1
            elif cfg.solver_order == 2 or lon < 2 or los:
                k = 2
            else:
                k = 3  # no update in diffusers' class
            out.append(k)
            lon = min(lon + 1, cfg.solver_order)
        return out

    def _build_table(self, key) -> torch.Tensor:
        start = key[1]
        s = self._sig
        n = len(s) - 1
        orders = self._orders(start)
        cols = {k: np.zeros(n) for k in ("in_x", "in_m", "x", "d", "h0", "noise")}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # SDE-DPM-Solver++ on the VE process (alpha = 1, lambda = -log sigma): the shared multistep weights
            alpha, lam = np.ones(n + 1), -np.log(np.asarray(s, dtype=np.float64))
            for i in range(n):
                in_x, in_m = self._x0_coefs(s[i])
                x, w, noise = dpmpp_multistep_weights(alpha, s, lam, i, orders[i], self.config.solver_type, sde=True)
                vals = {"in_x": in_x, "in_m": in_m, "x": x, "d": w[0], "h0": w[1], "noise": noise}
                for k, v in vals.items():
                    cols[k][i] = v if np.isfinite(v) else 0.0
        return rows(in_x=cols["in_x"], in_m=cols["in_m"], out_x=cols["x"], out_d=cols["d"], out_h=[cols["h0"]],
                    out_noise=cols["noise"])

    def _noise(self, shape, dtype, device, generator, i: int) -> dict:
        seeded = generator is None and self._noise_seed is not None
        if self.use_brownian_noise and HAS_TORCHSDE and not seeded:
            if self.noise_sampler is None:
                seed = None
                if generator is not None:
                    seed = ([g.initial_seed() for g in generator] if isinstance(generator, list)
                            else generator.initial_seed())
                self._brownian_path(torch.zeros(shape, dtype=dtype, device=device), float(self.config.sigma_min),
                                    float(self.config.sigma_max), seed)
            return {"noise": self.noise_sampler.at_host_times(self._sig_host[i], self._sig_host[i + 1])}
        gen = generator[0] if isinstance(generator, list) else generator
        if gen is not None and self._seed is None:
            self._seed = int(gen.initial_seed()) % 2**63  # the generator is never drawn from, as in diffusers
        return self._noise_kwargs(shape, device, dtype, None, i)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True):
        """One DPM-Solver++(2M) SDE step (a single fused pass)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        i = self._current_index(timestep)
        if self._start is None:
            self._start = i
        orders = self._table_orders(self._start)
        if orders[i] == 3:
            raise NotImplementedError("solver_order=3: diffusers' CosineDPMSolverMultistepScheduler has no "
                                      "third-order update")
        table = self._table(("rows", self._start), sample.device)
        # the noise is shaped like diffusers' x0 estimate (the sample and model output's promoted dtype)
        dtype = torch.promote_types(sample.dtype, model_output.dtype)
        kw = self._noise(sample.shape, dtype, sample.device, generator, i)
        if orders[i] == 2:
            kw["history"] = (self._hist[0],)
        prev, x0 = self._launch(sample, model_output, table, i, out_dtype=dtype, aux_dtype=dtype, **kw)
        self._hist = [x0]
        self.lower_order_nums = min(self.lower_order_nums + 1, self.config.solver_order)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return make_output("SchedulerOutput", prev)

    def _table_orders(self, start: int):
        return self._host_cached(("orders", start), "_orders", start)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x0 + sigma * noise`` at the timesteps' step indices (one fused pass)."""
        idx = self._indices_for_add_noise(timesteps)
        s = self.sigmas.to(torch.float64).numpy()
        return self._encode(original_samples, noise, np.ones_like(s), s, idx)
