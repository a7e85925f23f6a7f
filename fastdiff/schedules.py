"""Noise schedules of the fixed encoder (the forward noising process).

Every schedule here describes the marginal ``q(z_t | x0)`` of a Gaussian
encoder in the common ``(alpha_t, sigma_t)`` form::

    z_t = alpha_t * x0 + sigma_t * eps,        eps ~ N(0, I)

from which the other usual parametrisations follow:

* variance-preserving (VP): ``alpha_t**2 + sigma_t**2 == 1``;
* the VE / k-diffusion noise level ``sigma_VE = sigma_t / alpha_t``
  (``z_t / alpha_t = x0 + sigma_VE * eps``);
* the log signal-to-noise ratio ``lambda_t = log(alpha_t**2 / sigma_t**2)
  = -2 * log(sigma_VE)``.

Contents:

* :func:`make_betas` / :func:`rescale_zero_terminal_snr` - the discrete beta
  schedules of DDPM-style models, with the semantics of ``diffusers``
  (``linear``, ``scaled_linear``, ``squaredcos_cap_v2`` (alias ``cosine``),
  ``sigmoid``) and the zero-terminal-SNR rescaling of Lin et al. (2023).
* :class:`DiscreteVPSchedule` - all per-timestep tables of a discrete VP
  model, k-diffusion style ``sigma <-> t`` conversion and a cached device
  table of ``(alpha_t, sigma_t)`` for the kernels.
* :class:`ContinuousVPSchedule` (VP SDE of Song et al. 2021),
  :class:`VESchedule` (geometric VE SDE) and :class:`FlowMatchingSchedule`
  (rectified flow with the static timestep shift of SD3).
* :func:`inference_timesteps` - the ``leading`` / ``trailing`` / ``linspace``
  timestep spacings of ``diffusers``' ``DDIMScheduler`` / ``DDPMScheduler``.
* :func:`karras_sigmas`, :func:`exponential_sigmas`,
  :func:`polyexponential_sigmas`, :func:`vp_sigmas` - sampling noise levels
  in the k-diffusion convention (``n`` decreasing VE sigmas then a final 0).

All schedule math is done in ``torch.float64`` on the CPU; tables are only
cast (and moved to an accelerator) at the very end, see
:meth:`DiscreteVPSchedule.table`.

Example:
    >>> import torch
    >>> from fastdiff.schedules import DiscreteVPSchedule, karras_sigmas
    >>> sched = DiscreteVPSchedule(beta_schedule="scaled_linear",
    ...                            beta_start=0.00085, beta_end=0.012)
    >>> sigmas = karras_sigmas(10, sched.sigma_min, sched.sigma_max)
    >>> sigmas.shape, sigmas.dtype
    (torch.Size([11]), torch.float64)
"""
from __future__ import annotations

import math
import threading
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "BETA_SCHEDULES",
    "TIMESTEP_SPACINGS",
    "make_betas",
    "rescale_zero_terminal_snr",
    "DiscreteVPSchedule",
    "ContinuousVPSchedule",
    "VESchedule",
    "FlowMatchingSchedule",
    "inference_timesteps",
    "karras_sigmas",
    "exponential_sigmas",
    "polyexponential_sigmas",
    "vp_sigmas",
]

#: Names accepted by :func:`make_betas` (``"cosine"`` is an alias of
#: ``"squaredcos_cap_v2"``).
BETA_SCHEDULES: Tuple[str, ...] = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
_BETA_SCHEDULE_ALIASES = {"cosine": "squaredcos_cap_v2"}

#: Spacings accepted by :func:`inference_timesteps`.
TIMESTEP_SPACINGS: Tuple[str, ...] = ("leading", "trailing", "linspace")

_F64 = torch.float64
_CPU = torch.device("cpu")
_COSINE_S = 0.008
_COSINE_MAX_BETA = 0.999

TensorLike = Union[torch.Tensor, float, int, Sequence[float]]
DeviceLike = Union[torch.device, str, int, None]


# --------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise TypeError/ValueError."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got bool {value!r}")
    try:
        ivalue = type(value).__index__(value)
    except (AttributeError, TypeError):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}") from None
    if ivalue < minimum:
        raise ValueError(f"{name} must be {what}, got {ivalue}")
    return ivalue


def _check_float(name: str, value: Any) -> float:
    """Return ``value`` as a finite Python float or raise TypeError/ValueError."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        fvalue = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}") from None
    if not math.isfinite(fvalue):
        raise ValueError(f"{name} must be finite, got {fvalue}")
    return fvalue


def _check_positive(name: str, value: Any) -> float:
    fvalue = _check_float(name, value)
    if fvalue <= 0.0:
        raise ValueError(f"{name} must be > 0, got {fvalue}")
    return fvalue


def _check_sigma_range(sigma_min: Any, sigma_max: Any) -> Tuple[float, float]:
    smin = _check_positive("sigma_min", sigma_min)
    smax = _check_float("sigma_max", sigma_max)
    if smin >= smax:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={smin}, sigma_max={smax}")
    return smin, smax


def _check_str_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {tuple(choices)}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")
    return value


def _to_f64(name: str, value: Any) -> torch.Tensor:
    """Convert a tensor / number / sequence to a float64 tensor (tensors keep their device)."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        return value.to(_F64)
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a tensor or a real number, got {type(value).__name__}")
    try:
        return torch.as_tensor(value, dtype=_F64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor or a real number, got {type(value).__name__}") from None


def _validate_betas(name: str, betas: Any) -> torch.Tensor:
    """``betas`` as a 1-D float64 tensor with every value in [0, 1)."""
    b = _to_f64(name, betas)
    if b.dim() != 1 or b.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of betas, got shape {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError(f"{name} must be finite")
    if bool((b < 0).any()):
        raise ValueError(f"{name} must be non-negative, got min {b.min().item()}")
    if bool((b >= 1).any()):
        raise ValueError(f"{name} must all be < 1, got max {b.max().item()}")
    return b


def _check_beta_endpoint(name: str, value: Any) -> float:
    fvalue = _check_float(name, value)
    if fvalue < 0.0:
        raise ValueError(f"{name} must be non-negative (a beta in [0, 1)), got {fvalue}")
    if fvalue >= 1.0:
        raise ValueError(f"{name} must be < 1 (a beta in [0, 1)), got {fvalue}")
    return fvalue


def _finish(x: torch.Tensor, device: DeviceLike) -> torch.Tensor:
    return x if device is None else x.to(device)


def _linspace(start: float, stop: float, n: int) -> torch.Tensor:
    """``numpy.linspace(start, stop, n)`` in float64, bit for bit.

    numpy computes ``arange(n) * step + start`` and then pins the last value
    to ``stop``; torch.linspace uses a different (symmetric) formula, which
    changes the rounding of half-integers in :func:`inference_timesteps`.
    """
    if n == 1:
        return torch.tensor([start], dtype=_F64)
    step = (stop - start) / (n - 1)
    y = torch.arange(n, dtype=_F64) * step + start
    y[-1] = stop
    return y


# --------------------------------------------------------------------------
# discrete betas
# --------------------------------------------------------------------------
def _cosine_alpha_bar(t: torch.Tensor) -> torch.Tensor:
    return torch.cos((t + _COSINE_S) / (1.0 + _COSINE_S) * (math.pi / 2)) ** 2


def make_betas(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    *,
    trained_betas: Optional[TensorLike] = None,
) -> torch.Tensor:
    """Discrete beta schedule of length ``num_train_timesteps`` (float64, CPU).

    Semantics follow ``diffusers`` (computed in float64 instead of float32):

    * ``"linear"``: ``linspace(beta_start, beta_end, T)`` (DDPM);
    * ``"scaled_linear"``: ``linspace(sqrt(beta_start), sqrt(beta_end), T)**2``
      (latent / Stable Diffusion models);
    * ``"squaredcos_cap_v2"`` (alias ``"cosine"``): Nichol & Dhariwal (2021),
      ``abar(t) = cos((t + 0.008) / 1.008 * pi / 2)**2`` and
      ``beta_i = min(1 - abar((i + 1) / T) / abar(i / T), 0.999)``;
      ``beta_start`` / ``beta_end`` are ignored;
    * ``"sigmoid"``: ``sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start``.

    ``trained_betas`` (a sequence, array or tensor), when given, is returned
    (validated, as float64 on the CPU) instead; its length then defines T and
    ``num_train_timesteps`` is only type-checked.

    Raises:
        TypeError / ValueError: unknown ``beta_schedule`` (the message lists
        :data:`BETA_SCHEDULES`), ``num_train_timesteps`` not a positive int,
        ``beta_start`` / ``beta_end`` outside [0, 1), or betas that are
        negative, >= 1, non-finite or not 1-D.

    Example:
        >>> make_betas("linear", 1000, 1e-4, 0.02)[[0, -1]].tolist()
        [0.0001, 0.02]
        >>> make_betas("cosine", 1000).max().item()
        0.999
    """
    if not isinstance(beta_schedule, str):
        raise TypeError(
            f"beta_schedule must be a str, one of {BETA_SCHEDULES}, got {type(beta_schedule).__name__}"
        )
    schedule = _BETA_SCHEDULE_ALIASES.get(beta_schedule, beta_schedule)
    if schedule not in BETA_SCHEDULES:
        valid = BETA_SCHEDULES + tuple(_BETA_SCHEDULE_ALIASES)
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected one of {valid}")
    T = _check_int("num_train_timesteps", num_train_timesteps)
    if trained_betas is not None:
        return _validate_betas("trained_betas", trained_betas).to(_CPU)

    if schedule == "squaredcos_cap_v2":
        i = torch.arange(T, dtype=_F64)
        ratio = _cosine_alpha_bar((i + 1) / T) / _cosine_alpha_bar(i / T)
        betas = torch.clamp(1.0 - ratio, max=_COSINE_MAX_BETA)
    else:
        bs = _check_beta_endpoint("beta_start", beta_start)
        be = _check_beta_endpoint("beta_end", beta_end)
        if schedule == "linear":
            betas = _linspace(bs, be, T)
        elif schedule == "scaled_linear":
            betas = _linspace(math.sqrt(bs), math.sqrt(be), T) ** 2
        else:  # sigmoid
            betas = torch.sigmoid(_linspace(-6.0, 6.0, T)) * (be - bs) + bs
    return _validate_betas(f"betas of the {schedule!r} schedule", betas)


def rescale_zero_terminal_snr(betas: TensorLike) -> torch.Tensor:
    """Rescale betas to zero terminal SNR (Lin et al. 2023, Algorithm 1).

    ``sqrt(abar)`` is shifted so that its last value is 0 and scaled so that
    its first value is unchanged; the betas are then recovered from the
    ratios of consecutive ``abar``. The last returned beta is exactly 1, so
    ``cumprod(1 - betas)[-1] == 0``. Returns float64 on the input's device.

    Raises:
        ValueError: betas not 1-D in [0, 1), fewer than 2 of them, or a
        schedule whose ``abar`` never decreases (all betas 0).

    Example:
        >>> b = rescale_zero_terminal_snr(make_betas("scaled_linear", 1000, 0.00085, 0.012))
        >>> b[-1].item(), torch.cumprod(1 - b, 0)[-1].item()
        (1.0, 0.0)
    """
    b = _validate_betas("betas", betas)
    if b.numel() < 2:
        raise ValueError(f"betas must have at least 2 entries to rescale to zero terminal SNR, got {b.numel()}")
    sqrt_abar = torch.cumprod(1.0 - b, dim=0).sqrt()
    first = sqrt_abar[0].clone()
    last = sqrt_abar[-1].clone()
    if not bool(first > last):
        raise ValueError("betas must not all be 0: cannot rescale a schedule whose alphas_cumprod never decreases")
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


# --------------------------------------------------------------------------
# discrete VP schedule
# --------------------------------------------------------------------------
class DiscreteVPSchedule:
    """VP schedule over T discrete training timesteps: ``z_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps``.

    Attributes (float64 CPU tensors of length T, indexed by training timestep):
        betas, alphas (``1 - betas``), alphas_cumprod (``abar``),
        sqrt_alphas_cumprod (``alpha_t``), sqrt_one_minus_alphas_cumprod
        (``sigma_t``), sigmas (VE ``sqrt((1 - abar) / abar)``; ``inf`` where
        ``abar == 0``), log_snr (``log(abar / (1 - abar))``), and the int
        num_train_timesteps.

    The tensors are meant to be read-only: :meth:`table` caches copies of
    them per device, which would go stale if they were modified in place.

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas:
            as for :func:`make_betas` (note the different positional order,
            which follows ``diffusers``' schedulers).
        rescale_betas_zero_snr: apply :func:`rescale_zero_terminal_snr`
            (the last timestep then has ``abar == 0``, ``sigmas == inf``).

    Example:
        >>> s = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
        >>> alpha, sigma = s.alpha_sigma(torch.tensor([0, 999]))
        >>> torch.allclose(alpha**2 + sigma**2, torch.ones(2, dtype=torch.float64))
        True
        >>> s.table("cpu").shape
        torch.Size([1000, 2])
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        *,
        trained_betas: Optional[TensorLike] = None,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        if not isinstance(rescale_betas_zero_snr, bool):
            raise TypeError(
                f"rescale_betas_zero_snr must be a bool, got {type(rescale_betas_zero_snr).__name__}"
            )
        betas = make_betas(
            beta_schedule, num_train_timesteps, beta_start, beta_end, trained_betas=trained_betas
        )
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.beta_schedule = "trained" if trained_betas is not None else beta_schedule
        self.rescale_betas_zero_snr = rescale_betas_zero_snr
        self.num_train_timesteps = int(betas.numel())
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sigmas = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self.log_snr = torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)
        # Non-decreasing in t because every beta is in [0, 1].
        self._log_sigmas = torch.log(self.sigmas)
        self._tables: Dict[Tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_betas(cls, betas: TensorLike) -> "DiscreteVPSchedule":
        """Build a schedule from an explicit beta sequence (its length is T).

        Example:
            >>> [round(v, 12) for v in DiscreteVPSchedule.from_betas([0.1, 0.2, 0.3]).alphas_cumprod.tolist()]
            [0.9, 0.72, 0.504]
        """
        return cls(trained_betas=betas)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_train_timesteps={self.num_train_timesteps}, "
            f"beta_schedule={self.beta_schedule!r}, rescale_betas_zero_snr={self.rescale_betas_zero_snr})"
        )

    def __len__(self) -> int:
        return self.num_train_timesteps

    @property
    def sigma_min(self) -> float:
        """Smallest finite VE sigma of the table (a Python float).

        Example:
            >>> round(DiscreteVPSchedule().sigma_min, 6)  # sqrt(1e-4 / (1 - 1e-4))
            0.010001
        """
        finite = self.sigmas[torch.isfinite(self.sigmas)]
        return float(finite.min())

    @property
    def sigma_max(self) -> float:
        """Largest finite VE sigma of the table (a Python float); with zero
        terminal SNR this is the sigma of timestep T - 2.

        Example:
            >>> DiscreteVPSchedule().sigma_max > 150
            True
        """
        finite = self.sigmas[torch.isfinite(self.sigmas)]
        return float(finite.max())

    def _timestep_index(self, t: Any) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            if t.dtype == torch.bool or t.is_complex():
                raise TypeError(f"t must be integer timesteps, got dtype {t.dtype}")
            if t.is_floating_point():
                if not bool((t == torch.round(t)).all()):
                    raise ValueError("t must hold integer timesteps; use t_to_sigma for fractional t")
            idx = t.long()
        elif isinstance(t, bool) or isinstance(t, float):
            raise TypeError(f"t must be integer timesteps, got {type(t).__name__} {t!r}")
        else:
            try:
                idx = torch.as_tensor(t, dtype=torch.long)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"t must be integer timesteps, got {type(t).__name__}") from None
        if idx.numel() and bool(((idx < 0) | (idx >= self.num_train_timesteps)).any()):
            raise ValueError(
                f"t must be in [0, {self.num_train_timesteps - 1}], got values in "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        return idx

    def alpha_sigma(self, t: Union[torch.Tensor, int, Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t))`` at integer timesteps.

        ``t`` is an integer tensor (or int / list of ints; float tensors are
        accepted when they hold whole numbers) in ``[0, T - 1]``; the results
        are float64 with ``t``'s shape, on ``t``'s device.

        Example:
            >>> a, s = DiscreteVPSchedule().alpha_sigma(0)
            >>> round(a.item() ** 2, 6), round(s.item() ** 2, 6)
            (0.9999, 0.0001)
        """
        idx = self._timestep_index(t)
        tab = self.table(idx.device, _F64)
        return tab[idx, 0], tab[idx, 1]

    def sigma_to_t(self, sigma: TensorLike) -> torch.Tensor:
        """Continuous timestep for VE ``sigma`` (k-diffusion ``DiscreteSchedule.sigma_to_t``).

        Linear interpolation in ``log(sigma)`` between the two nearest
        training sigmas; values outside the table clamp to ``0`` / ``T - 1``.
        With zero terminal SNR the last sigma is infinite, so every finite
        sigma above ``sigmas[T - 2]`` maps to ``T - 2`` and ``inf`` to ``T - 1``.
        Returns float64 with ``sigma``'s shape and device.

        Example:
            >>> s = DiscreteVPSchedule()
            >>> s.sigma_to_t(s.sigmas[[0, 500, 999]]).tolist()
            [0.0, 500.0, 999.0]
        """
        sig = _to_f64("sigma", sigma)
        if bool((sig < 0).any()) or bool(torch.isnan(sig).any()):
            raise ValueError("sigma must be non-negative")
        T = self.num_train_timesteps
        log_sigmas = self._log_sigmas.to(sig.device)
        x = torch.log(sig)
        if T == 1:
            return torch.zeros_like(x)
        low = (torch.searchsorted(log_sigmas, x.reshape(-1), right=True) - 1).reshape(x.shape)
        low = low.clamp(0, T - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = ((x - lo) / (hi - lo)).nan_to_num(nan=0.0).clamp(0.0, 1.0)
        t = low.to(_F64) + w
        t = torch.where(x >= log_sigmas[-1], torch.full_like(t, T - 1), t)
        return torch.where(x <= log_sigmas[0], torch.zeros_like(t), t)

    def t_to_sigma(self, t: TensorLike) -> torch.Tensor:
        """VE sigma at continuous timesteps ``t`` in ``[0, T - 1]`` (inverse of :meth:`sigma_to_t`).

        Interpolates ``log(sigma)`` linearly between ``floor(t)`` and
        ``ceil(t)`` (whole-number ``t`` gives ``sigmas[t]`` exactly); returns
        float64 with ``t``'s shape and device.

        Example:
            >>> s = DiscreteVPSchedule()
            >>> torch.equal(s.t_to_sigma(torch.arange(1000)), s.sigmas)
            True
        """
        tt = _to_f64("t", t)
        T = self.num_train_timesteps
        if bool(torch.isnan(tt).any()) or bool(((tt < 0) | (tt > T - 1)).any()):
            raise ValueError(f"t must be in [0, {T - 1}]")
        log_sigmas = self._log_sigmas.to(tt.device)
        low = tt.floor().long()
        high = tt.ceil().long()
        w = tt - low.to(_F64)
        lo, hi = log_sigmas[low], log_sigmas[high]
        mid = lo + w * (hi - lo)
        # an infinite end point (zero SNR, or beta == 0) wins strictly inside the interval
        mid = torch.where(torch.isinf(hi) & (hi > 0), hi, mid)
        mid = torch.where(torch.isinf(lo) & (lo < 0), lo, mid)
        sigma = torch.where(w == 1, hi, mid).exp()
        # whole-number t returns the table entry itself, bit for bit
        return torch.where(w == 0, self.sigmas.to(tt.device)[low], sigma)

    def table(self, device: DeviceLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[T, 2]`` tensor with columns ``(alpha_t, sigma_t)`` on ``device`` in ``dtype``.

        Cast from the float64 tables on the CPU, then moved to ``device``
        once: the result is cached per ``(device, dtype)`` (thread-safe) and
        the same tensor is returned on later calls, so do not modify it.

        Example:
            >>> s = DiscreteVPSchedule()
            >>> s.table("cpu") is s.table("cpu")
            True
        """
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        dev = torch.device(device) if device is not None else _CPU
        if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        key = (dev, dtype)
        tab = self._tables.get(key)
        if tab is not None:
            return tab
        with self._lock:
            tab = self._tables.get(key)
            if tab is None:
                host = torch.stack([self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod], dim=1)
                tab = host.to(dtype).to(dev).contiguous()
                self._tables[key] = tab
            return tab


# --------------------------------------------------------------------------
# continuous-time schedules
# --------------------------------------------------------------------------
class ContinuousVPSchedule:
    """VP SDE of Song et al. (2021) with a linear beta(t), ``t`` in [0, 1].

    ``log alpha(t) = -0.25 t**2 (beta_max - beta_min) - 0.5 t beta_min`` and
    ``sigma(t) = sqrt(1 - alpha(t)**2)``. Functions accept tensors or numbers
    and return float64 (tensor inputs keep their device); ``t`` outside
    [0, 1] is evaluated by the same formula, not rejected.

    Example:
        >>> vp = ContinuousVPSchedule()
        >>> a, s = vp.alpha_sigma(torch.tensor([0.0, 1.0]))
        >>> a[0].item(), s[0].item()
        (1.0, 0.0)
        >>> round(vp.sigma_to_t(vp.t_to_sigma(0.5)).item(), 12)
        0.5
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        bmin = _check_float("beta_min", beta_min)
        bmax = _check_float("beta_max", beta_max)
        if bmin < 0:
            raise ValueError(f"beta_min must be >= 0, got {bmin}")
        if bmax < bmin:
            raise ValueError(f"beta_max must be >= beta_min, got beta_min={bmin}, beta_max={bmax}")
        if bmax <= 0:
            raise ValueError(f"beta_max must be > 0, got {bmax}")
        self.beta_min = bmin
        self.beta_max = bmax

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def _log_alpha(self, t: TensorLike) -> torch.Tensor:
        tt = _to_f64("t", t)
        return -0.25 * tt**2 * (self.beta_max - self.beta_min) - 0.5 * tt * self.beta_min

    def alpha_sigma(self, t: TensorLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t), sigma(t))`` in float64, with ``alpha**2 + sigma**2 == 1``.

        Example:
            >>> a, s = ContinuousVPSchedule().alpha_sigma(1.0)
            >>> round(a.item(), 5)
            0.00657
        """
        log_alpha = self._log_alpha(t)
        return log_alpha.exp(), torch.sqrt(-torch.expm1(2.0 * log_alpha))

    def log_snr(self, t: TensorLike) -> torch.Tensor:
        """``lambda(t) = log(alpha**2 / sigma**2)`` (float64, ``+inf`` at ``t = 0``).

        Example:
            >>> round(ContinuousVPSchedule().log_snr(0.5).item(), 4)
            -2.4551
        """
        log_alpha = self._log_alpha(t)
        return 2.0 * log_alpha - torch.log(-torch.expm1(2.0 * log_alpha))

    def t_to_sigma(self, t: TensorLike) -> torch.Tensor:
        """VE sigma ``sigma(t) / alpha(t) = sqrt(exp(-2 log alpha(t)) - 1)``.

        Example:
            >>> round(ContinuousVPSchedule().t_to_sigma(1.0).item(), 2)
            152.17
        """
        return torch.sqrt(torch.expm1(-2.0 * self._log_alpha(t)))

    def sigma_to_t(self, sigma: TensorLike) -> torch.Tensor:
        """Closed-form inverse of :meth:`t_to_sigma` for VE ``sigma >= 0``.

        With ``L = log(1 + sigma**2)`` the quadratic
        ``0.25 d t**2 + 0.5 beta_min t = 0.5 L`` (``d = beta_max - beta_min``)
        is solved as ``t = 2 L / (beta_min + sqrt(beta_min**2 + 2 d L))``.

        Example:
            >>> ContinuousVPSchedule().sigma_to_t(0.0).item()
            0.0
        """
        sig = _to_f64("sigma", sigma)
        if bool((sig < 0).any()) or bool(torch.isnan(sig).any()):
            raise ValueError("sigma must be non-negative")
        big_l = torch.log1p(sig**2)
        d = self.beta_max - self.beta_min
        t = 2.0 * big_l / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * big_l))
        return torch.where(big_l == 0, torch.zeros_like(t), t)


class VESchedule:
    """Geometric variance-exploding schedule: ``sigma(t) = sigma_min (sigma_max / sigma_min)**t``, ``alpha = 1``.

    ``t`` lives in [0, 1] (``t = 0`` -> ``sigma_min``, ``t = 1`` ->
    ``sigma_max``) but is not clamped. Returns float64; tensor inputs keep
    their device.

    Example:
        >>> ve = VESchedule(0.01, 50.0)
        >>> ve.t_to_sigma(torch.tensor([0.0, 1.0])).tolist()
        [0.01, 50.0]
        >>> round(ve.sigma_to_t(ve.t_to_sigma(0.3)).item(), 12)
        0.3
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min, self.sigma_max = _check_sigma_range(sigma_min, sigma_max)
        self._log_min = math.log(self.sigma_min)
        self._log_ratio = math.log(self.sigma_max) - self._log_min

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def t_to_sigma(self, t: TensorLike) -> torch.Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)**t`` (float64).

        Example:
            >>> round(VESchedule(1.0, 100.0).t_to_sigma(0.5).item(), 12)
            10.0
        """
        tt = _to_f64("t", t)
        sig = torch.exp(self._log_min + tt * self._log_ratio)
        # pin the end points exactly
        sig = torch.where(tt == 0, torch.full_like(sig, self.sigma_min), sig)
        return torch.where(tt == 1, torch.full_like(sig, self.sigma_max), sig)

    def alpha_sigma(self, t: TensorLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(1, sigma(t))`` in float64.

        Example:
            >>> a, s = VESchedule().alpha_sigma(1.0)
            >>> a.item(), s.item()
            (1.0, 50.0)
        """
        sig = self.t_to_sigma(t)
        return torch.ones_like(sig), sig

    def log_snr(self, t: TensorLike) -> torch.Tensor:
        """``lambda(t) = -2 log sigma(t)`` (float64).

        Example:
            >>> VESchedule(1.0, 100.0).log_snr(0.0).item()
            -0.0
        """
        tt = _to_f64("t", t)
        return -2.0 * (self._log_min + tt * self._log_ratio)

    def sigma_to_t(self, sigma: TensorLike) -> torch.Tensor:
        """``t = log(sigma / sigma_min) / log(sigma_max / sigma_min)`` (float64).

        Example:
            >>> VESchedule(0.01, 50.0).sigma_to_t(torch.tensor([0.01, 50.0], dtype=torch.float64)).tolist()
            [0.0, 1.0]
        """
        sig = _to_f64("sigma", sigma)
        if bool((sig < 0).any()) or bool(torch.isnan(sig).any()):
            raise ValueError("sigma must be non-negative")
        return (torch.log(sig) - self._log_min) / self._log_ratio


class FlowMatchingSchedule:
    """Rectified flow ``x_t = (1 - s) x0 + s eps`` with the static timestep shift.

    ``s = shift * t / (1 + (shift - 1) * t)`` for ``t`` in [0, 1]
    (``shift = 3`` for SD3). Matches ``diffusers``'
    ``FlowMatchEulerDiscreteScheduler`` with ``use_dynamic_shifting=False``
    (and no karras/exponential/beta sigmas, no ``shift_terminal``), in
    float64 instead of float32:

    * training: ``train_sigmas = shift_sigmas(linspace(1, T, T)[::-1] / T)``
      and ``train_timesteps = train_sigmas * T``; ``sigma_max`` /
      ``sigma_min`` are the first / last *shifted* training sigmas;
    * :meth:`sigmas` ``(n)``: ``shift_sigmas(linspace(sigma_max * T,
      sigma_min * T, n) / T)`` followed by a 0. As in diffusers the end point
      ``sigma_min`` has already been shifted once, so for ``shift != 1`` the
      last non-zero sigma is ``shift(shift(1 / T))``.

    Example:
        >>> fm = FlowMatchingSchedule(1000, shift=1.0)
        >>> fm.sigmas(4).tolist()
        [1.0, 0.667, 0.334, 0.001, 0.0]
        >>> a, s = fm.alpha_sigma(torch.tensor(0.25))
        >>> a.item(), s.item()
        (0.75, 0.25)
    """

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0) -> None:
        self.num_train_timesteps = _check_int("num_train_timesteps", num_train_timesteps)
        self.shift = _check_positive("shift", shift)
        T = self.num_train_timesteps
        self.train_sigmas = self.shift_sigmas(_linspace(1.0, float(T), T).flip(0) / T)
        self.train_timesteps = self.train_sigmas * T

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_train_timesteps={self.num_train_timesteps}, shift={self.shift})"

    @property
    def sigma_max(self) -> float:
        """First (largest) shifted training sigma, always 1.0.

        Example:
            >>> FlowMatchingSchedule(shift=3.0).sigma_max
            1.0
        """
        return float(self.train_sigmas[0])

    @property
    def sigma_min(self) -> float:
        """Last (smallest) shifted training sigma, ``shift(1 / T)``.

        Example:
            >>> round(FlowMatchingSchedule(1000, shift=3.0).sigma_min, 9)
            0.002994012
        """
        return float(self.train_sigmas[-1])

    def shift_sigmas(self, s: TensorLike) -> torch.Tensor:
        """Apply the static shift ``shift * s / (1 + (shift - 1) * s)`` (float64).

        Example:
            >>> FlowMatchingSchedule(shift=3.0).shift_sigmas(0.5).item()
            0.75
        """
        ss = _to_f64("s", s)
        return self.shift * ss / (1.0 + (self.shift - 1.0) * ss)

    def alpha_sigma(self, t: TensorLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(1 - s, s)`` with ``s = shift_sigmas(t)``, ``t`` in [0, 1] (float64).

        Example:
            >>> a, s = FlowMatchingSchedule(shift=3.0).alpha_sigma(0.5)
            >>> a.item(), s.item()
            (0.25, 0.75)
        """
        s = self.shift_sigmas(t)
        return 1.0 - s, s

    def sigmas(self, n: int, device: DeviceLike = None) -> torch.Tensor:
        """``n + 1`` decreasing flow sigmas for ``n`` sampling steps, ending in 0.

        ``shift_sigmas(linspace(sigma_max * T, sigma_min * T, n) / T)`` then
        ``0`` appended (diffusers' ``set_timesteps``); float64, moved to
        ``device`` when given.

        Example:
            >>> FlowMatchingSchedule(1000).sigmas(2).tolist()
            [1.0, 0.001, 0.0]
        """
        n = _check_int("n", n)
        T = self.num_train_timesteps
        ts = _linspace(self.sigma_max * T, self.sigma_min * T, n)
        s = self.shift_sigmas(ts / T)
        return _finish(torch.cat([s, s.new_zeros(1)]), device)

    def timesteps(self, n: int, device: DeviceLike = None) -> torch.Tensor:
        """The ``n`` model timesteps ``sigmas(n)[:-1] * T`` (float64), as diffusers passes to the model.

        Example:
            >>> FlowMatchingSchedule(1000).timesteps(2).tolist()
            [1000.0, 1.0]
        """
        return _finish(self.sigmas(n)[:-1] * self.num_train_timesteps, device)


# --------------------------------------------------------------------------
# inference timesteps and sampling sigmas
# --------------------------------------------------------------------------
def inference_timesteps(
    num_inference_steps: int,
    num_train_timesteps: int = 1000,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> torch.Tensor:
    """Descending int64 training timesteps for sampling, as ``diffusers`` DDIM/DDPM ``set_timesteps``.

    With ``n = num_inference_steps`` and ``T = num_train_timesteps``:

    * ``"linspace"``: ``round(np.linspace(0, T - 1, n))[::-1]``;
    * ``"leading"``: ``(arange(n) * (T // n))[::-1] + steps_offset``;
    * ``"trailing"``: ``round(np.arange(T, 0, -T / n)) - 1``.

    ``steps_offset`` is only used by ``"leading"`` (as in diffusers'
    DDIMScheduler). Rounding is half-to-even, like numpy. For ``"trailing"``
    numpy's float ``arange`` sometimes yields ``n + 1`` values (the extra one
    being ``-1``, e.g. ``T=1000, n=61``); only its first ``n`` are returned.

    Raises:
        ValueError: ``n < 1``, ``T < 1``, ``n > T``, unknown ``spacing``,
        negative ``steps_offset`` or one that pushes a timestep past ``T - 1``.

    Example:
        >>> inference_timesteps(4, 1000, "leading", 1).tolist()
        [751, 501, 251, 1]
        >>> inference_timesteps(4, 1000, "trailing").tolist()
        [999, 749, 499, 249]
        >>> inference_timesteps(4, 1000, "linspace").tolist()
        [999, 666, 333, 0]
    """
    n = _check_int("num_inference_steps", num_inference_steps)
    T = _check_int("num_train_timesteps", num_train_timesteps)
    spacing = _check_str_choice("spacing", spacing, TIMESTEP_SPACINGS)
    offset = _check_int("steps_offset", steps_offset, minimum=0)
    if n > T:
        raise ValueError(
            f"num_inference_steps must be <= num_train_timesteps, got num_inference_steps={n} "
            f"and num_train_timesteps={T}"
        )
    if spacing == "linspace":
        ts = torch.round(_linspace(0.0, float(T - 1), n)).flip(0)
    elif spacing == "leading":
        ts = (torch.arange(n, dtype=_F64) * (T // n)).flip(0) + offset
    else:  # trailing: numpy's arange(T, 0, -T/n) fills start + i * ((start + step) - start)
        delta = (T + (-T / n)) - T
        ts = torch.round(T + torch.arange(n, dtype=_F64) * delta) - 1
    out = ts.to(torch.int64)
    if int(out[0]) > T - 1:
        raise ValueError(
            f"steps_offset={offset} pushes the first timestep to {int(out[0])}, past num_train_timesteps - 1 = {T - 1}"
        )
    return out


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: DeviceLike = None
) -> torch.Tensor:
    """Karras et al. (2022) eq. (5) noise levels: ``n`` sigmas from ``sigma_max`` to ``sigma_min``, then 0.

    ``sigma_i = (sigma_max**(1/rho) + i/(n-1) (sigma_min**(1/rho) - sigma_max**(1/rho)))**rho``
    (k-diffusion ``get_sigmas_karras``); float64, ``n + 1`` values.

    Example:
        >>> s = karras_sigmas(5, 0.002, 80.0)
        >>> len(s), round(s[0].item(), 9), round(s[-2].item(), 9), s[-1].item()
        (6, 80.0, 0.002, 0.0)
    """
    n = _check_int("n", n)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    rho = _check_positive("rho", rho)
    ramp = _linspace(0.0, 1.0, n)
    min_inv_rho = smin ** (1.0 / rho)
    max_inv_rho = smax ** (1.0 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float, device: DeviceLike = None) -> torch.Tensor:
    """Log-uniformly spaced sigmas ``exp(linspace(log sigma_max, log sigma_min, n))``, then 0 (float64).

    Example:
        >>> [round(v, 9) for v in exponential_sigmas(3, 0.1, 10.0).tolist()]
        [10.0, 1.0, 0.1, 0.0]
    """
    n = _check_int("n", n)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    sigmas = torch.exp(_linspace(math.log(smax), math.log(smin), n))
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)


def polyexponential_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: DeviceLike = None
) -> torch.Tensor:
    """k-diffusion ``get_sigmas_polyexponential``: ``log sigma`` is polynomial (degree ``rho``) in the ramp.

    ``sigma_i = exp(r_i**rho (log sigma_max - log sigma_min) + log sigma_min)``
    with ``r = linspace(1, 0, n)``, then 0 (float64). ``rho = 1`` equals
    :func:`exponential_sigmas`.

    Example:
        >>> [round(v, 9) for v in polyexponential_sigmas(3, 0.1, 10.0, rho=2.0).tolist()]
        [10.0, 0.316227766, 0.1, 0.0]
    """
    n = _check_int("n", n)
    smin, smax = _check_sigma_range(sigma_min, sigma_max)
    rho = _check_positive("rho", rho)
    ramp = _linspace(1.0, 0.0, n) ** rho
    sigmas = torch.exp(ramp * (math.log(smax) - math.log(smin)) + math.log(smin))
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)


def vp_sigmas(
    n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3, device: DeviceLike = None
) -> torch.Tensor:
    """k-diffusion ``get_sigmas_vp``: VE sigmas of the continuous VP SDE at ``t = linspace(1, eps_s, n)``.

    ``sigma(t) = sqrt(exp(beta_d t**2 / 2 + beta_min t) - 1)``, then 0
    (float64). The defaults are those of Song et al. (``beta_d = beta_max -
    beta_min = 19.9``), i.e. ``ContinuousVPSchedule(0.1, 20).t_to_sigma``.

    Example:
        >>> round(vp_sigmas(2)[0].item(), 2)
        152.17
    """
    n = _check_int("n", n)
    beta_d = _check_float("beta_d", beta_d)
    beta_min = _check_float("beta_min", beta_min)
    eps_s = _check_float("eps_s", eps_s)
    if beta_d < 0:
        raise ValueError(f"beta_d must be >= 0, got {beta_d}")
    if beta_min < 0:
        raise ValueError(f"beta_min must be >= 0, got {beta_min}")
    if beta_d == 0 and beta_min == 0:
        raise ValueError("beta_d and beta_min must not both be 0")
    if not 0.0 < eps_s <= 1.0:
        raise ValueError(f"eps_s must be in (0, 1], got {eps_s}")
    t = _linspace(1.0, eps_s, n)
    sigmas = torch.sqrt(torch.expm1(beta_d * t**2 / 2 + beta_min * t))
    return _finish(torch.cat([sigmas, sigmas.new_zeros(1)]), device)
