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

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from .ops._common import check_batch
from .ops.step import COEF_DEFAULTS, MAX_HISTORY, coef_table, fused_step
from .sampling import churn_schedule, lms_coefficients
from .schedules import exponential_sigmas, karras_sigmas, polyexponential_sigmas, vp_sigmas

__all__ = [
    "get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential", "get_sigmas_vp",
    "append_zero", "to_d", "get_ancestral_step", "default_noise_sampler", "BrownianTreeNoiseSampler",
    "sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral",
    "sample_lms", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde", "SAMPLERS",
]

Device = Union[str, torch.device, None]
NoiseSampler = Callable[[Any, Any], torch.Tensor]


# ----------------------------------------------------------------------------------------------
# schedules and small helpers
# ----------------------------------------------------------------------------------------------
def _as_k(sigmas: torch.Tensor, device: Device) -> torch.Tensor:
    # k-diffusion returns float32; computing in float64 first rounds each value once
    return sigmas.to(dtype=torch.float32, device=device)


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                      device: Device = "cpu") -> torch.Tensor:
    """Karras et al. (2022) noise levels, ``n`` then 0, as float32 on ``device``.

    Example:
        >>> get_sigmas_karras(4, 0.1, 10.0).shape
        torch.Size([5])
    """
    return _as_k(karras_sigmas(n, sigma_min, sigma_max, rho), device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: Device = "cpu") -> torch.Tensor:
    """Log-uniform noise levels, ``n`` then 0, as float32 on ``device``.

    Example:
        >>> [round(v, 5) for v in get_sigmas_exponential(3, 0.1, 10.0).tolist()]
        [10.0, 1.0, 0.1, 0.0]
    """
    return _as_k(exponential_sigmas(n, sigma_min, sigma_max), device)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0,
                               device: Device = "cpu") -> torch.Tensor:
    """Noise levels whose log is polynomial of degree ``rho`` in the ramp, ``n`` then 0 (float32).

    Example:
        >>> get_sigmas_polyexponential(3, 0.1, 10.0, rho=2.0)[1].item() > 0.1
        True
    """
    return _as_k(polyexponential_sigmas(n, sigma_min, sigma_max, rho), device)


def get_sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3,
                  device: Device = "cpu") -> torch.Tensor:
    """Noise levels of the continuous VP SDE (Song et al. 2021), ``n`` then 0 (float32).

    Example:
        >>> round(get_sigmas_vp(2)[0].item(), 2)
        152.17
    """
    return _as_k(vp_sigmas(n, beta_d, beta_min, eps_s), device)


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """``x`` with one 0 appended (1-D).

    Example:
        >>> append_zero(torch.tensor([2.0, 1.0])).tolist()
        [2.0, 1.0, 0.0]
    """
    return torch.cat([x, x.new_zeros([1])])


def _append_dims(t: Any, ndim: int) -> Any:
    if not isinstance(t, torch.Tensor):
        return t
    if t.dim() > ndim:
        raise ValueError(f"sigma has {t.dim()} dims, more than the {ndim} of x")
    return t.reshape(t.shape + (1,) * (ndim - t.dim()))


def to_d(x: torch.Tensor, sigma: Any, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative ``(x - denoised) / sigma`` (Karras et al. 2022, eq. 4).

    Example:
        >>> to_d(torch.ones(2, 3), torch.tensor([2.0, 4.0]), torch.zeros(2, 3))[:, 0].tolist()
        [0.5, 0.25]
    """
    return (x - denoised) / _append_dims(sigma, x.dim())


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0):
    """``(sigma_down, sigma_up)`` of an ancestral step (Ho et al. 2020 posterior variance scaled by ``eta``).

    Works on floats and on 0-d tensors with the same arithmetic as k-diffusion, so
    float32 sigmas give the same float32 results.

    Example:
        >>> [round(v, 6) for v in get_ancestral_step(2.0, 1.0)]
        [0.5, 0.866025]
    """
    if not eta:
        return sigma_to, 0.0
    variance = sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2
    sigma_up = min(sigma_to, eta * variance ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x: torch.Tensor) -> NoiseSampler:
    """A noise sampler drawing ``torch.randn_like(x)`` from the global RNG (k-diffusion's default).

    Example:
        >>> ns = default_noise_sampler(torch.zeros(2, 3))
        >>> ns(1.0, 0.5).shape
        torch.Size([2, 3])
    """
    def draw(sigma: Any, sigma_next: Any) -> torch.Tensor:
        return torch.randn_like(x)

    return draw


class BrownianTreeNoiseSampler:
    """Noise from a Brownian motion W(t) queried on a tree (torchsde), as k-diffusion's SDE samplers use it.

    ``sampler(sigma, sigma_next)`` returns ``(W(t1) - W(t0)) / sqrt(|t1 - t0|)`` with
    ``t = transform(sigma)``: standard normal per call, and nested intervals get
    correlated increments of one path (Li et al. 2020, the Brownian interval).

    Args:
        x: tensor giving the noise's shape, dtype and device.
        sigma_min, sigma_max: the interval the path is defined on.
        seed: an int, a list of ints (one independent path per batch row), or None to draw
            one from torch's global CPU generator (as k-diffusion does).
        transform: maps sigma to the path's time.

    Example:
        >>> ns = BrownianTreeNoiseSampler(torch.zeros(2, 3), 0.1, 10.0, seed=0)  # doctest: +SKIP
        >>> ns(torch.tensor(10.0), torch.tensor(5.0)).shape  # doctest: +SKIP
        torch.Size([2, 3])
    """

    def __init__(self, x: torch.Tensor, sigma_min: Any, sigma_max: Any, seed: Union[int, Sequence[int], None] = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] = lambda s: s) -> None:
        try:
            import torchsde
        except ImportError as err:
            raise ImportError("BrownianTreeNoiseSampler needs the torchsde package (pip install torchsde); "
                              "or pass your own noise_sampler") from err
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        self.transform = transform
        lo, hi = transform(torch.as_tensor(sigma_min)), transform(torch.as_tensor(sigma_max))
        self._flip = 1 if lo < hi else -1
        if self._flip < 0:
            lo, hi = hi, lo
        w0 = torch.zeros_like(x)
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, []).item()
        try:
            seeds = list(seed)
        except TypeError:  # one int seed: one path for the whole tensor
            self._per_row = False
            seeds = [seed]
        else:
            if len(seeds) != x.shape[0]:
                raise ValueError(f"seed must be an int or a list of {x.shape[0]} ints (one per row), "
                                 f"got {len(seeds)}")
            self._per_row = True
            w0 = w0[0]
        self._trees = [torchsde.BrownianTree(lo, w0, hi, entropy=s) for s in seeds]

    def __call__(self, sigma: Any, sigma_next: Any) -> torch.Tensor:
        a, b = self.transform(torch.as_tensor(sigma)), self.transform(torch.as_tensor(sigma_next))
        sign = 1 if a < b else -1
        lo, hi = (a, b) if sign > 0 else (b, a)
        w = torch.stack([tree(lo, hi) for tree in self._trees]) * (self._flip * sign)
        if not self._per_row:
            w = w[0]
        return w / (b - a).abs().sqrt()


# ----------------------------------------------------------------------------------------------
# the run: host scalars -> one coefficient table -> model call + fused step per evaluation
# ----------------------------------------------------------------------------------------------
def _backend_for(x: torch.Tensor) -> str:
    # the Triton kernels store float32/16/bf16; float64 runs on the PyTorch path
    return "torch" if x.dtype == torch.float64 else "auto"


def _f(t: Any) -> float:
    return float(t)


class _Run:
    """One sampling run: host copy of sigmas, coefficient rows, model-sigma table, the loop helpers."""

    def __init__(self, model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]],
                 callback: Optional[Callable], disable: Optional[bool]) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
        check_batch("x", x)
        if not isinstance(sigmas, torch.Tensor) or not sigmas.dtype.is_floating_point:
            raise TypeError(f"sigmas must be a floating-point torch.Tensor, got "
                            f"{sigmas.dtype if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__}")
        if sigmas.dim() != 1 or sigmas.numel() < 2:
            raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
        if extra_args is not None and not isinstance(extra_args, dict):
            raise TypeError(f"extra_args must be a dict or None, got {type(extra_args).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self.model, self.x0, self.sigmas = model, x, sigmas
        self.extra = {} if extra_args is None else extra_args
        self.callback, self.disable = callback, disable
        self.n = sigmas.numel() - 1
        # the one host read of the run, before the loop; scalar math below mirrors k-diffusion's on 0-d tensors
        self.host = sigmas.detach().to("cpu")
        self.s_in = x.new_ones([x.shape[0]])
        self.backend = _backend_for(x)
        self.rows: List[Dict[str, float]] = []
        self.model_sigmas: List[torch.Tensor] = []
        self.table: Optional[torch.Tensor] = None
        self.msig: Optional[torch.Tensor] = None

    # --- planning (host) ---------------------------------------------------------------------
    def row(self, **coefs: Any) -> int:
        """Add one coefficient row (``step_coefs`` names; ``out_h`` a tuple) and return its index."""
        r = dict(COEF_DEFAULTS)
        for k, v in enumerate(coefs.pop("out_h", ())):
            r[f"out_h{k}"] = float(v)
        r.update({k: float(v) for k, v in coefs.items()})
        self.rows.append(r)
        return len(self.rows) - 1

    def at(self, sigma: torch.Tensor) -> int:
        """Register a model evaluation at (0-d) ``sigma``; returns its index in the model-sigma table."""
        self.model_sigmas.append(torch.as_tensor(sigma, dtype=self.host.dtype).reshape(()))
        return len(self.model_sigmas) - 1

    def finish(self) -> None:
        """Move the coefficient table and the model sigmas to the device, once."""
        dt = torch.float64 if self.x0.dtype == torch.float64 else torch.float32
        self.table = coef_table(self.rows or [COEF_DEFAULTS], device=self.x0.device, dtype=dt)
        ms = torch.stack(self.model_sigmas) if self.model_sigmas else self.host.new_zeros(1)
        self.msig = ms.to(self.x0.device)

    # --- the loop (device) --------------------------------------------------------------------
    def steps(self):
        from tqdm.auto import trange

        return trange(self.n, disable=self.disable)

    def eval(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``model(x, sigma * s_in, **extra_args)`` exactly as k-diffusion calls it."""
        return self.model(x, self.msig[k] * self.s_in, **self.extra)

    def step(self, x: torch.Tensor, denoised: torch.Tensor, row: int, *, x_eval: Optional[torch.Tensor] = None,
             history: Sequence[torch.Tensor] = (), noise: Optional[torch.Tensor] = None, aux: bool = False):
        """The one fused pass of a row (noise only when its coefficient is non-zero)."""
        if noise is not None and self.rows[row]["out_noise"] == 0.0:
            noise = None
        return fused_step(x, denoised, self.table, x_eval=x_eval, history=tuple(history), coef_row=row,
                          noise=noise, write_aux=aux, backend=self.backend)

    def report(self, x: torch.Tensor, i: int, denoised: torch.Tensor, sigma_hat: Any = None) -> None:
        if self.callback is not None:
            sigma = self.sigmas[i]
            self.callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                           "denoised": denoised})


def _euler_coefs(sh: float, dt: float) -> Dict[str, float]:
    # x + (x - D) / sh * dt
    return dict(out_x=1.0 + dt / sh, out_d=-dt / sh)


def _churn(run: _Run, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
    """Per step: (sigma_hat as a 0-d tensor, churn-noise scale or 0.0), in k-diffusion's arithmetic."""
    hats, scales = churn_schedule(run.host, s_churn, s_tmin, s_tmax, s_noise)
    return list(zip(hats, scales))


def _churned_loop(run: _Run, x: torch.Tensor, plan) -> torch.Tensor:
    """Loop of euler / heun / dpm_2: churn noise (drawn every step), eval A, optional eval B."""
    for i in run.steps():
        eps = torch.randn_like(x)  # drawn every step even without churn: the global RNG advances as k-diffusion's
        pre, ka, ra, kb, rb = plan[i]
        if pre is not None:
            x = run.step(x, x, pre, noise=eps)
        denoised = run.eval(x, ka)
        run.report(x, i, denoised, run.msig[ka])
        if kb is None:
            x = run.step(x, denoised, ra)
        else:
            x_2 = run.step(x, denoised, ra)
            x = run.step(x, run.eval(x_2, kb), rb, x_eval=x_2, history=(denoised,) if run.rows[rb]["out_h0"] else ())
    return x


def _churn_rows(run: _Run, churn):
    pre = []
    for sh, scale in churn:
        pre.append(run.row(in_x=0.0, in_m=0.0, out_x=1.0, out_noise=scale) if scale else None)
    return pre


# ----------------------------------------------------------------------------------------------
# samplers
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_euler(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                 callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Euler steps of Karras et al. (2022), Algorithm 2 (with optional churn).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_euler(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    churn = _churn(run, s_churn, s_tmin, s_tmax, s_noise)
    pre = _churn_rows(run, churn)
    plan = []
    for i, (sh, _) in enumerate(churn):
        plan.append((pre[i], run.at(sh), run.row(**_euler_coefs(_f(sh), _f(run.host[i + 1] - sh))), None, None))
    run.finish()
    return _churned_loop(run, x, plan)


@torch.no_grad()
def sample_heun(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Heun steps of Karras et al. (2022), Algorithm 2.

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_heun(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    churn = _churn(run, s_churn, s_tmin, s_tmax, s_noise)
    pre = _churn_rows(run, churn)
    plan = []
    for i, (sh, _) in enumerate(churn):
        s1 = run.host[i + 1]
        shf, dt = _f(sh), _f(s1 - sh)
        ka = run.at(sh)
        if _f(s1) == 0:
            plan.append((pre[i], ka, run.row(**_euler_coefs(shf, dt)), None, None))
            continue
        # x + dt/2 ((x - D1)/sh + (x_2 - D2)/s1), x_2 the Euler step; D1 enters as history
        s1f = _f(s1)
        rb = run.row(out_x=1.0 + dt / (2 * shf), out_h=(-dt / (2 * shf),), out_e=dt / (2 * s1f), out_d=-dt / (2 * s1f))
        plan.append((pre[i], ka, run.row(**_euler_coefs(shf, dt)), run.at(s1), rb))
    run.finish()
    return _churned_loop(run, x, plan)


def _dpm2_rows(run: _Run, sh: torch.Tensor, s_to: torch.Tensor, noise: float = 0.0):
    """DPM-Solver-2 in sigma: Euler to the geometric midpoint, then the full step with its derivative."""
    sm = sh.log().lerp(s_to.log(), 0.5).exp()
    shf, smf = _f(sh), _f(sm)
    ra = run.row(**_euler_coefs(shf, _f(sm - sh)))
    dt2 = _f(s_to - sh)
    rb = run.row(out_x=1.0, out_e=dt2 / smf, out_d=-dt2 / smf, out_noise=noise)
    return ra, run.at(sm), rb


@torch.no_grad()
def sample_dpm_2(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                 callback: Optional[Callable] = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 steps (Lu et al. 2022) in the Algorithm-2 frame of Karras et al. (2022).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_2(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    churn = _churn(run, s_churn, s_tmin, s_tmax, s_noise)
    pre = _churn_rows(run, churn)
    plan = []
    for i, (sh, _) in enumerate(churn):
        s1 = run.host[i + 1]
        ka = run.at(sh)
        if _f(s1) == 0:
            plan.append((pre[i], ka, run.row(**_euler_coefs(_f(sh), _f(s1 - sh))), None, None))
            continue
        ra, kb, rb = _dpm2_rows(run, sh, s1)
        plan.append((pre[i], ka, ra, kb, rb))
    run.finish()
    return _churned_loop(run, x, plan)


def _resolve_noise(x: torch.Tensor, noise_sampler: Optional[NoiseSampler]) -> NoiseSampler:
    if noise_sampler is None:
        return default_noise_sampler(x)
    if not callable(noise_sampler):
        raise TypeError(f"noise_sampler must be callable as noise_sampler(sigma, sigma_next), "
                        f"got {type(noise_sampler).__name__}")
    return noise_sampler


@torch.no_grad()
def sample_euler_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                           extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                           disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                           noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral sampling with Euler steps (Ho et al. 2020 ancestral noise; k-diffusion's euler_a).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_euler_ancestral(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    ns = _resolve_noise(x, noise_sampler)
    plan = []
    for i in range(run.n):
        s, s1 = run.host[i], run.host[i + 1]
        sd, su = get_ancestral_step(s, s1, eta=eta)
        draw = _f(s1) > 0
        plan.append((run.at(s), run.row(**_euler_coefs(_f(s), _f(sd - s)), out_noise=s_noise * _f(su) if draw else 0.0),
                     draw))
    run.finish()
    for i in run.steps():
        k, r, draw = plan[i]
        denoised = run.eval(x, k)
        run.report(x, i, denoised)
        x = run.step(x, denoised, r, noise=ns(sigmas[i], sigmas[i + 1]) if draw else None)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                           extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                           disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                           noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver-2 steps (Lu et al. 2022; k-diffusion's dpm_2_a).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpm_2_ancestral(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    ns = _resolve_noise(x, noise_sampler)
    plan = []
    for i in range(run.n):
        s, s1 = run.host[i], run.host[i + 1]
        sd, su = get_ancestral_step(s, s1, eta=eta)
        ka = run.at(s)
        if _f(sd) == 0:  # k-diffusion adds no noise on this branch
            plan.append((ka, run.row(**_euler_coefs(_f(s), _f(sd - s))), None, None))
            continue
        ra, kb, rb = _dpm2_rows(run, s, torch.as_tensor(sd, dtype=run.host.dtype), noise=s_noise * _f(su))
        plan.append((ka, ra, kb, rb))
    run.finish()
    for i in run.steps():
        ka, ra, kb, rb = plan[i]
        denoised = run.eval(x, ka)
        run.report(x, i, denoised)
        if kb is None:
            x = run.step(x, denoised, ra)
        else:
            x_2 = run.step(x, denoised, ra)
            denoised_2 = run.eval(x_2, kb)
            x = run.step(x, denoised_2, rb, x_eval=x_2, noise=ns(sigmas[i], sigmas[i + 1]))
    return x


@torch.no_grad()
def sample_lms(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
               callback: Optional[Callable] = None, disable: Optional[bool] = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth) on the probability-flow ODE in sigma (Karras et al. 2022; k-diffusion).

    Orders above 4 fold the oldest derivatives into the last history slot (one extra pass).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_lms(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    t = [_f(v) for v in run.host]
    plan = []
    for i in range(run.n):
        cur = min(i + 1, order)
        c = lms_coefficients(t, i, cur)
        # x + c0 (x - D)/s + sum_j c_j d_{i-j}; aux = this step's derivative (x - D)/s
        older = c[1:]
        fused = older if len(older) <= MAX_HISTORY else older[:MAX_HISTORY - 1] + [1.0]
        r = run.row(out_x=1.0 + c[0] / t[i], out_d=-c[0] / t[i], out_h=fused, aux_x=1.0 / t[i], aux_d=-1.0 / t[i])
        plan.append((run.at(run.host[i]), r, older))
    run.finish()
    ds: List[torch.Tensor] = []  # previous derivatives, newest first
    for i in run.steps():
        k, r, older = plan[i]
        denoised = run.eval(x, k)
        run.report(x, i, denoised)
        hist = ds[: len(older)]
        if len(hist) > MAX_HISTORY:
            tail = sum(ci * d for ci, d in zip(older[MAX_HISTORY - 1:], hist[MAX_HISTORY - 1:]))
            hist = hist[: MAX_HISTORY - 1] + [tail]
        x, d = run.step(x, denoised, r, history=hist, aux=True)
        ds = [d] + ds[: order - 2]
    return x


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                              extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                              disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                              noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral sampling with DPM-Solver++(2S) steps (Lu et al. 2022, DPM-Solver++).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2s_ancestral(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    ns = _resolve_noise(x, noise_sampler)
    plan = []
    for i in range(run.n):
        s, s1 = run.host[i], run.host[i + 1]
        sd, su = get_ancestral_step(s, s1, eta=eta)
        draw = _f(s1) > 0
        noise = s_noise * _f(su) if draw else 0.0
        ka = run.at(s)
        if _f(sd) == 0:
            plan.append((ka, run.row(**_euler_coefs(_f(s), _f(sd - s)), out_noise=noise), None, None, draw))
            continue
        t, t_next = _t(s), _t(torch.as_tensor(sd, dtype=run.host.dtype))
        h = t_next - t
        s_mid = t + 0.5 * h
        ra = run.row(out_x=_f(_sigma(s_mid) / _sigma(t)), out_d=-_f((-h * 0.5).expm1()))
        rb = run.row(out_x=_f(_sigma(t_next) / _sigma(t)), out_d=-_f((-h).expm1()), out_noise=noise)
        plan.append((ka, ra, run.at(_sigma(s_mid)), rb, draw))
    run.finish()
    for i in run.steps():
        ka, ra, kb, rb, draw = plan[i]
        denoised = run.eval(x, ka)
        run.report(x, i, denoised)
        if kb is None:
            x = run.step(x, denoised, ra, noise=ns(sigmas[i], sigmas[i + 1]) if draw else None)
        else:
            x_2 = run.step(x, denoised, ra)
            denoised_2 = run.eval(x_2, kb)
            x = run.step(x, denoised_2, rb, noise=ns(sigmas[i], sigmas[i + 1]) if draw else None)
    return x


def _brownian_default(x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: Optional[NoiseSampler],
                      used: bool) -> Optional[NoiseSampler]:
    """k-diffusion's default for the SDE samplers: a Brownian tree over [min positive sigma, max sigma].

    When the sampler never draws (``eta == 0``) only the tree's seed is drawn, so the global
    RNG advances as k-diffusion's does without needing torchsde.
    """
    if noise_sampler is not None:
        return _resolve_noise(x, noise_sampler)
    if not used:
        torch.randint(0, 2**63 - 1, [])
        return None
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max)


@torch.no_grad()
def sample_dpmpp_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                     callback: Optional[Callable] = None, disable: Optional[bool] = None, eta: float = 1.0,
                     s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None, r: float = 1 / 2) -> torch.Tensor:
    """DPM-Solver++ stochastic two-stage steps (Lu et al. 2022, DPM-Solver++; k-diffusion's dpmpp_sde).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_sde(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0),
        ...                  noise_sampler=lambda a, b: torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    ns = _brownian_default(x, sigmas, noise_sampler, used=True)
    fac = 1 / (2 * r)
    plan = []
    for i in range(run.n):
        s, s1 = run.host[i], run.host[i + 1]
        ka = run.at(s)
        if _f(s1) == 0:
            plan.append((ka, run.row(**_euler_coefs(_f(s), _f(s1 - s))), None, None))
            continue
        t, t_next = _t(s), _t(s1)
        h = t_next - t
        s_mid = t + h * r
        sd, su = get_ancestral_step(_sigma(t), _sigma(s_mid), eta)
        s_ = _t(torch.as_tensor(sd, dtype=run.host.dtype))
        ra = run.row(out_x=_f(_sigma(s_) / _sigma(t)), out_d=-_f((t - s_).expm1()), out_noise=s_noise * _f(su))
        sd2, su2 = get_ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_next_ = _t(torch.as_tensor(sd2, dtype=run.host.dtype))
        w = -_f((t - t_next_).expm1())
        rb = run.row(out_x=_f(_sigma(t_next_) / _sigma(t)), out_d=w * fac, out_h=(w * (1 - fac),),
                     out_noise=s_noise * _f(su2))
        plan.append((ka, ra, run.at(_sigma(s_mid)), rb))
    run.finish()
    for i in run.steps():
        ka, ra, kb, rb = plan[i]
        denoised = run.eval(x, ka)
        run.report(x, i, denoised)
        if kb is None:
            x = run.step(x, denoised, ra)
            continue
        # the noise-sampler arguments are computed on sigmas' device with k-diffusion's exact scalar ops
        # (a Brownian tree is a function of these times); elementwise, so no host sync
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        s_mid = t + (t_next - t) * r
        x_2 = run.step(x, denoised, ra, noise=ns(_sigma(t), _sigma(s_mid)))
        denoised_2 = run.eval(x_2, kb)
        x = run.step(x, denoised_2, rb, history=(denoised,), noise=ns(_sigma(t), _sigma(t_next)))
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[Dict[str, Any]] = None,
                    callback: Optional[Callable] = None, disable: Optional[bool] = None) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order (Lu et al. 2022, DPM-Solver++ Algorithm 2).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0)).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    plan = []
    for i in range(run.n):
        s, s1 = run.host[i], run.host[i + 1]
        t, t_next = _t(s), _t(s1)
        h = t_next - t
        ratio, a = _f(_sigma(t_next) / _sigma(t)), -_f((-h).expm1())
        if i == 0 or _f(s1) == 0:
            plan.append((run.at(s), run.row(out_x=ratio, out_d=a), False))
        else:
            rr = (t - _t(run.host[i - 1])) / h
            b = _f(1 / (2 * rr))
            plan.append((run.at(s), run.row(out_x=ratio, out_d=a * _f(1 + 1 / (2 * rr)), out_h=(-a * b,)), True))
    run.finish()
    old = None
    for i in run.steps():
        k, r, hist = plan[i]
        denoised = run.eval(x, k)
        run.report(x, i, denoised)
        x = run.step(x, denoised, r, history=(old,) if hist else ())
        old = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                        extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                        disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: Optional[NoiseSampler] = None, solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's dpmpp_2m_sde).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_2m_sde(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0), eta=0.0).shape
        torch.Size([2, 3])
    """
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    ns = _brownian_default(x, sigmas, noise_sampler, used=bool(eta))
    plan = []
    h_last = None
    for i in range(run.n):
        s, s1 = run.host[i], run.host[i + 1]
        k = run.at(s)
        if _f(s1) == 0:
            plan.append((k, run.row(out_x=0.0, out_d=1.0), False, False))
            continue
        t, t_s = _t(s), _t(s1)
        h = t_s - t
        eta_h = eta * h
        a = _f((-h - eta_h).expm1().neg())
        coefs = dict(out_x=_f(s1 / s * (-eta_h).exp()), out_d=a)
        if i > 0:  # k-diffusion's old_denoised exists from the second step on
            rinv = _f(1 / (h_last / h))
            if solver_type == "heun":
                b = _f((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * rinv
            else:
                b = 0.5 * a * rinv
            coefs.update(out_d=a + b, out_h=(-b,))
        if eta:
            coefs["out_noise"] = _f(s1 * (-2 * eta_h).expm1().neg().sqrt()) * s_noise
        plan.append((k, run.row(**coefs), i > 0, bool(eta)))
        h_last = h
    run.finish()
    old = None
    for i in run.steps():
        k, r, hist, draw = plan[i]
        denoised = run.eval(x, k)
        run.report(x, i, denoised)
        x = run.step(x, denoised, r, history=(old,) if hist else (),
                     noise=ns(sigmas[i], sigmas[i + 1]) if draw else None)
        old = denoised
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                        extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                        disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (Lu et al. 2022, DPM-Solver++; k-diffusion's dpmpp_3m_sde).

    Example:
        >>> den = lambda x, s: x / (1 + s[:, None] ** 2)
        >>> sample_dpmpp_3m_sde(den, torch.ones(2, 3), get_sigmas_karras(4, 0.1, 10.0), eta=0.0).shape
        torch.Size([2, 3])
    """
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    ns = _brownian_default(x, sigmas, noise_sampler, used=bool(eta))
    plan = []
    h = h_1 = h_2 = None
    for i in range(run.n):
        s, s1 = run.host[i], run.host[i + 1]
        k = run.at(s)
        if _f(s1) == 0:
            plan.append((k, run.row(out_x=0.0, out_d=1.0), 0, False))
        else:
            t, t_s = _t(s), _t(s1)
            h = t_s - t
            h_eta = h * (eta + 1)
            w = [_f((-h_eta).expm1().neg()), 0.0, 0.0]  # weights of (D, D_1, D_2)
            phi_2 = (-h_eta).expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = _f(h_1 / h), _f(h_2 / h)
                p2, p3 = _f(phi_2), _f(phi_2 / h_eta - 0.5)
                d1_0 = [1 / r0, -1 / r0, 0.0]
                d1_1 = [0.0, 1 / r1, -1 / r1]
                for j in range(3):
                    d1 = d1_0[j] + (d1_0[j] - d1_1[j]) * r0 / (r0 + r1)
                    d2 = (d1_0[j] - d1_1[j]) / (r0 + r1)
                    w[j] += p2 * d1 - p3 * d2
                used = 2
            elif h_1 is not None:
                rr, p2 = _f(h_1 / h), _f(phi_2)
                w[0] += p2 / rr
                w[1] -= p2 / rr
                used = 1
            else:
                used = 0
            coefs = dict(out_x=_f(torch.exp(-h_eta)), out_d=w[0], out_h=tuple(w[1:1 + used]))
            if eta:
                coefs["out_noise"] = _f(s1 * (-2 * h * eta).expm1().neg().sqrt()) * s_noise
            plan.append((k, run.row(**coefs), used, bool(eta)))
        h_1, h_2 = h, h_1
    run.finish()
    d_1 = d_2 = None
    for i in run.steps():
        k, r, used, draw = plan[i]
        denoised = run.eval(x, k)
        run.report(x, i, denoised)
        x = run.step(x, denoised, r, history=(d_1, d_2)[:used], noise=ns(sigmas[i], sigmas[i + 1]) if draw else None)
        d_1, d_2 = denoised, d_1
    return x


#: k-diffusion sampler names (without ``sample_``) -> functions.
SAMPLERS: Dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
}
