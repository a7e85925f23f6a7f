"""DPMSolverSDEScheduler: the two-stage stochastic DPM-Solver++ (k-diffusion's ``sample_dpmpp_sde``) as diffusers
runs it, one call per stage.

Noise (the rule): diffusers draws each stage's noise from a Brownian path W over sigma itself (a torchsde
Brownian interval over ``[min positive sigma, max sigma]``, seeded from ``noise_sampler_seed``, or from one
``torch.randint`` draw on the global generator at the first step when that is None): the stage to the midpoint
adds ``z1 = (W(sigma_mid) - W(sigma)) / sqrt(sigma - sigma_mid)``, the stage to the next sigma
``z2 = (W(sigma_next) - W(sigma)) / sqrt(sigma - sigma_next)``, two intervals from the same start, so z1 and z2
are correlated (``sqrt(a / b)``, ``a = sigma - sigma_mid``, ``b = sigma - sigma_next``); the steps' intervals do
not overlap, so steps are independent. With ``torchsde`` installed the drop-in builds the same path
(``fastdiff.k_diffusion``'s Brownian tree noise sampler: the same torchsde interval, tolerance and pool) and
queries it at the same float32 times, so its numbers are diffusers' own; the query is torchsde's work (host
bookkeeping, its own draws on the sample's device) and the result enters the fused pass as ``noise=``.

Under ``set_noise_seed`` (and without torchsde, or with ``use_brownian_noise = False`` on an instance) the noise is
the kernel's counter-based Philox with the Brownian path's law, not torchsde's numbers: the first stage adds
Philox stream ``z1`` in its fused pass; the second adds ``w_new z'`` (a stream of its own) in its fused pass and
then ``w_shared z1``, ``z1`` regenerated from the first stage's key and counter, in a second pass over the result
(``solvers.brownian_overlap_weights``; the kernel takes one Philox stream per pass, so this costs one more pass per
step, a read and a write of the sample (the stages' own passes read and write 9 sample-sized tensors), for a
half-precision sample one more rounding of the second stage's result, and no stored noise: the first stage's
noise is not read back from the midpoint sample, which a pipeline may change between the stages). The Philox seed is
``set_noise_seed``'s, else ``noise_sampler_seed``, else one seed drawn from the global generator at the first
step, where diffusers draws its seed. This is the noise a ``torch.compile``-d loop can trace (torchsde's tree is
host code).
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np
import torch

from ..schedules import spaced_timesteps
from ..solvers import ancestral_split, brownian_overlap_weights, sigma_of, t_of
from ._base import _TABLE_ARITHMETIC, KARRAS_COMPATIBLES, check_steps, result_dtype, rows, sigma_to_t
from ._compat import make_output, register_to_config
from ._euler import _SigmaBase, sigma_x0_coefs

__all__ = ["DPMSolverSDEScheduler", "BrownianPathMixin", "HAS_TORCHSDE"]

try:  # diffusers' own noise needs torchsde (an optional dependency, as it is for diffusers)
    import torchsde  # noqa: F401

    HAS_TORCHSDE = True
except ImportError:  # pragma: no cover - torchsde comes with the test extra
    HAS_TORCHSDE = False


def _f32_stage_times(sig32: np.ndarray):
    """Per step index ``i``, in diffusers' float32 tensor arithmetic: the Brownian query points (sigma_fn(t),
    sigma_fn(t_next)) of a first stage (from ``sig32[i]`` to the log-midpoint) and of a second stage (from
    ``sig32[i-1]`` to ``sig32[i]``), and the midpoint sigma (the second stage's model-input sigma)."""
    s = torch.from_numpy(sig32.astype(np.float32))
    t = s.log().neg()
    n = len(s) - 1
    first, second, mid = [None] * n, [None] * n, [None] * n
    for i in range(n):
        t0, t1 = t[i], t[i + 1]
        tp = t0 + (t1 - t0) * 0.5
        first[i] = (float(t0.neg().exp()), float(tp.neg().exp()))
        if i >= 1:
            a, b = t[i - 1], t[i]
            second[i] = (float(a.neg().exp()), float(b.neg().exp()))
            mid[i] = (a + (b - a) * 0.5).neg().exp()
    return first, second, mid


class BrownianPathMixin:
    """diffusers' Brownian noise path (torchsde, through ``fastdiff.k_diffusion``'s sampler) kept as
    ``self.noise_sampler``; copies and pickles rebuild it from its arguments (the same seed, the same path)."""

    noise_sampler = None
    _tree_args = None

    def _brownian_path(self, sample: torch.Tensor, lo: float, hi: float, seed) -> None:
        """The path over ``[lo, hi]`` shaped like ``sample``; a None ``seed`` is one ``torch.randint`` draw from
        the global generator, where and as diffusers draws it."""
        from ..k_diffusion.noise import BrownianTreeNoiseSampler

        if seed is None:
            seed = torch.randint(0, 2**63 - 1, []).item()
        elif isinstance(seed, (list, tuple)):
            seed = [int(v) for v in seed]
        else:
            seed = int(seed)
        self._tree_args = (tuple(sample.shape), sample.dtype, sample.device, lo, hi, seed)
        self.noise_sampler = BrownianTreeNoiseSampler(sample, lo, hi, seed)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["noise_sampler"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        args = state.get("_tree_args")
        if args is not None and HAS_TORCHSDE:
            from ..k_diffusion.noise import BrownianTreeNoiseSampler

            shape, dtype, device, lo, hi, seed = args
            self.noise_sampler = BrownianTreeNoiseSampler(torch.zeros(shape, dtype=dtype, device=device), lo, hi,
                                                          seed)

    def __deepcopy__(self, memo):
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new


class DPMSolverSDEScheduler(BrownianPathMixin, _SigmaBase):
    """Stochastic DPM-Solver++ (Lu et al. 2022) with the ancestral split of Karras et al. (2022), two stages per step.

    Same config keys, defaults, ``order`` and numbers as ``diffusers.DPMSolverSDEScheduler`` (its Brownian noise
    with torchsde installed; see the module docstring for the rule). Under ``set_noise_seed`` the noise is
    in-kernel Philox with the Brownian tree's law (each stage standard normal, the two stages of a step
    correlated as the tree's overlapping increments are, steps independent), not torchsde's numbers; that is
    the noise a ``torch.compile(fullgraph=True)`` loop draws as its eager run does. ``timesteps`` holds each
    step's timestep followed by its log-midpoint's; ``step`` alternates the stage to the midpoint and the stage
    to the next sigma (``state_in_first_order``), each one fused pass (and, with the Philox noise, the second
    stage one more pass for its shared noise): the second reads the first stage's input sample as ``x`` and the
    midpoint sample as ``x_eval``. The last step (to sigma 0) is one Euler pass.

    Example:
        >>> s = DPMSolverSDEScheduler(noise_sampler_seed=0)
        >>> s.set_timesteps(4)
        >>> x = torch.randn(1, 4, 8, 8) * s.init_noise_sigma
        >>> for t in s.timesteps:
        ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
    """

    order = 2
    _compatibles = list(KARRAS_COMPATIBLES)
    _output_name = "DPMSolverSDESchedulerOutput"
    #: draw diffusers' Brownian noise when torchsde is installed and no ``set_noise_seed`` is given (False: the
    #: in-kernel Philox noise)
    use_brownian_noise: bool = True

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        prediction_type: str = "epsilon",
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        noise_sampler_seed: Optional[int] = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        if noise_sampler_seed is not None and (isinstance(noise_sampler_seed, bool) or not isinstance(
                noise_sampler_seed, (int, np.integer, list, tuple))):
            raise TypeError(f"noise_sampler_seed must be an int, a list of ints or None, "
                            f"got {type(noise_sampler_seed).__name__}")
        self._init_schedule(self.config)
        self.set_timesteps(num_train_timesteps, None, num_train_timesteps)
        self.use_karras_sigmas = use_karras_sigmas
        self.noise_sampler_seed = noise_sampler_seed

    # ------------------------------------------------------------------ set-up
    def set_timesteps(self, num_inference_steps: int, device=None, num_train_timesteps: Optional[int] = None) -> None:
        """Sigmas (each after the first repeated) and timesteps (each step's, then its log-midpoint's)."""
        check_steps(num_inference_steps, self.config.num_train_timesteps, cap=False)
        cfg = self.config
        self.num_inference_steps = n = num_inference_steps
        T = num_train_timesteps or cfg.num_train_timesteps
        if cfg.timestep_spacing not in ("linspace", "leading", "trailing"):
            raise ValueError(f"{cfg.timestep_spacing} is not supported. Please make sure to choose one of "
                             f"'linspace', 'leading' or 'trailing'.")
        ts = spaced_timesteps(n, T, cfg.timestep_spacing, cfg.steps_offset).astype(np.float64)
        train, log_train = self._train_sigmas, self._log_sigmas
        if _TABLE_ARITHMETIC[0] == "diffusers":  # diffusers' training sigmas and their logs are float32
            ac = self.alphas_cumprod
            train32 = (((1 - ac) / ac) ** 0.5).numpy()
            train, log_train = train32.astype(np.float64), np.log(train32).astype(np.float64)
        sig = np.interp(ts, np.arange(len(train)), train)
        conv = self._convert_sigmas(sig, n)
        if conv is not None:
            sig = conv
            ts = sigma_to_t(sig, log_train)
        t = -np.log(sig)
        mid_ts = sigma_to_t(np.exp(-(t[:-1] + np.diff(t) * 0.5)), log_train)
        s32 = np.concatenate([sig, [0.0]]).astype(np.float32)
        s32 = np.concatenate([s32[:1], np.repeat(s32[1:-1], 2), s32[-1:]])
        steps = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
        steps[1::2] = mid_ts
        self._set_run(steps, s32, device)
        self.timesteps = torch.from_numpy(steps).to(device=device)  # float64, as diffusers keeps them
        self._first_q, self._second_q, mids = _f32_stage_times(s32)
        # the second stage's input scaling, from the float32 midpoint sigma as diffusers computes it
        self._scale_mid = [None if m is None else float((m**2 + 1) ** 0.5) for m in mids]
        self._mid_sigma = [None if m is None else float(m) for m in mids]
        self._start_run()
        self._prev = None  # the first stage's input sample, between the two stages
        self.noise_sampler = None
        self._tree_args = None

    @property
    def state_in_first_order(self) -> bool:
        """True when the next ``step`` is a first stage (to the midpoint, or the final Euler step)."""
        return self._prev is None

    @property
    def mid_point_sigma(self) -> Optional[torch.Tensor]:
        """The midpoint sigma the second stage's model input is scaled with (None between steps)."""
        if self._prev is None or self._step_index is None or self._mid_sigma[self._step_index] is None:
            return None
        return torch.tensor(self._mid_sigma[self._step_index], dtype=torch.float32)

    @property
    def sample(self) -> Optional[torch.Tensor]:
        """The first stage's input sample while a second stage is due (diffusers' ``sample``), else None."""
        return None if self._prev is None else self._prev

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """``sample / sqrt(sigma**2 + 1)`` with the step's sigma, or the midpoint's in a second stage."""
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        self.is_scale_input_called = True
        if self._prev is None or self._scale_mid[i] is None:
            return sample / self._scale[i]
        return sample / self._scale_mid[i]

    def _check_timestep(self, timestep) -> None:  # diffusers' DPMSolverSDE accepts integer timesteps
        return None

    # ------------------------------------------------------------------ coefficient rows
    def _build_table(self, key) -> torch.Tensor:
        stage, s_noise, philox = key
        pt = self.config.prediction_type
        if pt == "sample":
            raise NotImplementedError("prediction_type not implemented yet: sample")
        if pt not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, or `v_prediction`")
        s = self._sig
        with np.errstate(divide="ignore", invalid="ignore"):
            if stage == "first":  # row i: from s[i] to the log-midpoint of s[i], s[i+1]; the x0 at s[i]
                sigma, nxt = s[:-1], s[1:]
                target = sigma_of(t_of(sigma) + (t_of(nxt) - t_of(sigma)) * 0.5)
                model_sigma = sigma
            else:  # row i: from s[i-1] to s[i] (x = the first stage's input); the x0 at the midpoint (x_eval)
                sigma, nxt = np.concatenate([[np.nan], s[:-2]]), s[:-1]
                target = nxt
                model_sigma = sigma_of(t_of(sigma) + (t_of(nxt) - t_of(sigma)) * 0.5)
            if philox and stage != "first":
                # the Brownian path over sigma: this stage's increment [sigma, nxt] holds the first stage's
                # [sigma, midpoint]; "second" adds the new part, "shared" (its own pass) the first stage's noise
                w_shared, w_new = brownian_overlap_weights(np.abs(sigma - model_sigma), np.abs(sigma - nxt))
                if stage == "shared":
                    _, up = ancestral_split(sigma, target)
                    noise = np.where(nxt == 0, 0.0, up * w_shared * s_noise)
                    return rows(in_x=0.0, in_m=0.0, out_x=1.0, out_noise=np.where(np.isfinite(noise), noise, 0.0))
                s_noise = s_noise * w_new
            in_x, in_m = sigma_x0_coefs(pt, model_sigma)
            down, up = ancestral_split(sigma, target)
            ratio = down / sigma  # sigma_fn(ancestral_t) / sigma_fn(t)
            out_d = -np.expm1(np.log(down) - np.log(sigma))
            final = nxt == 0  # the last step: Euler to sigma 0, x + (x - x0) (0 - sigma) / sigma = x0
            ratio = np.where(final, 0.0, ratio)
            out_d = np.where(final, 1.0, out_d)
            up = np.where(final, 0.0, up)
        z = lambda v: np.where(np.isfinite(v), v, 0.0)  # noqa: E731 - rows a run never takes (row 0 of "second")
        return rows(in_x=z(in_x), in_m=z(in_m), out_x=z(ratio), out_d=z(out_d), out_noise=z(up * s_noise))

    # ------------------------------------------------------------------ noise
    def _philox_noise(self) -> bool:
        """The in-kernel Philox noise (the module docstring's rule) rather than diffusers' torchsde path."""
        return self._noise_seed is not None or not (self.use_brownian_noise and HAS_TORCHSDE)

    def _stage_noise(self, sample: torch.Tensor, i: int, first: bool) -> dict:
        """The fused pass's noise for stage ``first`` at step index ``i`` (see the module docstring)."""
        if not self._philox_noise():
            if self.noise_sampler is None:
                self._make_tree(sample)
            a, b = (self._first_q if first else self._second_q)[i]
            return {"noise": self.noise_sampler.at_host_times(a, b)}
        if self._seed is None:
            seed = self._noise_seed if self._noise_seed is not None else self.noise_sampler_seed
            if seed is None:
                self._seed = int(torch.randint(0, 2**63 - 1, []).item())  # where diffusers draws its seed
            elif isinstance(seed, (list, tuple)):
                self._seed = hash(tuple(int(v) for v in seed)) % 2**63
            else:
                self._seed = int(seed) % 2**63
        return {"seed": self._seed, "stream": self._stage_stream(i, first)}

    @staticmethod
    def _stage_stream(i: int, first: bool) -> int:
        """The Philox stream of the stage at step index ``i`` (a second stage's first stage is at ``i - 1``)."""
        return i * 4 + (0 if first else 1)

    def _make_tree(self, sample: torch.Tensor) -> None:
        s = self.sigmas
        self._brownian_path(sample, float(s[s > 0].min()), float(s.max()), self.noise_sampler_seed)

    # ------------------------------------------------------------------ the step
    def step(self, model_output: torch.Tensor, timestep: Union[float, torch.Tensor], sample: torch.Tensor,
             return_dict: bool = True, s_noise: float = 1.0):
        """One stage (a single fused pass; the noise is the module docstring's)."""
        i = self._current_index(timestep)
        dtype = result_dtype(sample, model_output)
        first = self._prev is None
        final = self._sig_host[i + 1] == 0.0 if first else self._sig_host[i] == 0.0
        kw = {} if final else self._stage_noise(sample, i, first)
        philox = "seed" in kw and not first  # only a second stage's rows differ with the Philox noise
        table = self._table(("first" if first else "second", float(s_noise), philox), sample.device)
        if first:
            prev, x0 = self._launch(sample, model_output, table, i, out_dtype=dtype, aux_dtype=dtype, **kw)
            if not final:
                self._prev = sample
        else:
            prev, x0 = self._launch(self._prev, model_output, table, i, out_dtype=dtype, aux_dtype=dtype,
                                    x_eval=sample, **kw)
            if philox:  # + the first stage's noise, regenerated from its key and counter (module docstring)
                shared = self._table(("shared", float(s_noise), True), sample.device)
                prev, _ = self._launch(prev, prev, shared, i, out_dtype=dtype, seed=kw["seed"],
                                       stream=self._stage_stream(i - 1, True))
            self._prev = None
        self._step_index = i + 1
        if not return_dict:
            return (prev, x0)
        return make_output("DPMSolverSDESchedulerOutput", prev, x0)
