"""Discrete beta schedules (``diffusers`` semantics, float64) and the per-timestep tables of a discrete VP model."""
from __future__ import annotations

import math
import threading
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..ops._common import check_int
from ..random import check_device
from ._checks import _CPU, _F64, DeviceLike, TensorLike, _check_float, _linspace, _to_f64

__all__ = ["BETA_SCHEDULES", "make_betas", "rescale_zero_terminal_snr", "DiscreteVPSchedule"]

#: Names accepted by :func:`make_betas` (``"cosine"`` is an alias of
#: ``"squaredcos_cap_v2"``).
BETA_SCHEDULES: Tuple[str, ...] = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
_BETA_SCHEDULE_ALIASES = {"cosine": "squaredcos_cap_v2"}

_COSINE_S = 0.008
_COSINE_MAX_BETA = 0.999


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
    T = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
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

    def __getstate__(self) -> Dict[str, Any]:
        # the lock cannot be pickled and the per-device table cache is rebuilt on demand (a CUDA table in a
        # pickle would tie it to a device): copy.deepcopy, pickle and multiprocessing get the schedule itself
        state = self.__dict__.copy()
        del state["_lock"]
        state["_tables"] = {}
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
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
        dev = check_device(device) if device is not None and not isinstance(device, torch.device) else (
            device if device is not None else _CPU)
        if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        key = (dev, dtype)
        tab = self._tables.get(key)
        if tab is not None:
            return tab
        check_device(dev)  # a CUDA device on a CPU-only torch: a ValueError naming device, not torch's assert
        with self._lock:
            tab = self._tables.get(key)
            if tab is None:
                host = torch.stack([self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod], dim=1)
                tab = host.to(dtype).to(dev).contiguous()
                self._tables[key] = tab
            return tab
