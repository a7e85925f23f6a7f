"""HMC warm-up on the device: dual averaging of the step size, ChEES trajectory lengths, diagonal mass windows.

Every update is a few elementwise ops on (n_chains,) or (n_cols,) tensors with host-float coefficients, so a
warm-up iteration never reads device memory on the host. The one exception is ChEES's number of leapfrog steps,
a host loop count: :class:`ChEES` reads it at ``checkpoints`` (about 20 reads over a whole warm-up).
"""
from __future__ import annotations

import math
import torch

__all__ = ["DualAveraging", "ChEES", "MassWindow", "jitter_factor", "mass_windows"]

# log step-size bounds during adaptation: keeps h a positive, finite float32.
_LOG_H_MIN, _LOG_H_MAX = -30.0, 15.0
_TINY = 1e-20


class DualAveraging:
    """Dual averaging of log step size (Hoffman & Gelman 2014, Algorithm 5, Stan's constants), on the device.

    One value per chain (``h0`` of shape (n,)), or one for all chains when ``h0`` has shape (1,) and the update is
    given the chains' mean acceptance probability. ``restart(h, n_iter)`` begins a phase of ``n_iter`` iterations
    from ``mu = log(10 h)`` (after the mass changes, as Stan does). ``final()`` is ``exp`` of the mean of
    ``log h`` over the phase's second half, not the paper's ``m**-kappa`` weighted average: that average keeps the
    small steps of the first iterations after a restart (each overshoot halves h for a while), which left the
    acceptance at 0.84-0.86 for a 0.8 target on the 8-d test Gaussian; the second-half mean lands within 0.02.

    Example:
        >>> da = DualAveraging(torch.full((2,), 0.5), target=0.8, n_iter=10)
        >>> h = da.update(torch.tensor([0.9, 0.2]))   # the second chain's step shrinks
        >>> bool(h[1] < h[0])
        True
    """

    def __init__(self, h0: torch.Tensor, target: float, n_iter: int, gamma: float = 0.05, t0: float = 10.0,
                 kappa: float = 0.75):
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(h0, n_iter)

    def restart(self, h: torch.Tensor, n_iter: int, shrink_to: float = 10.0) -> None:
        """Start a phase of ``n_iter`` iterations from step sizes ``h`` (the shrinkage point is ``log(10 h)``)."""
        self.log_h = torch.log(h.double()).clamp(_LOG_H_MIN, _LOG_H_MAX)
        self.mu = self.log_h + math.log(shrink_to)
        self.stat = torch.zeros_like(self.log_h)
        self.log_h_sum = torch.zeros_like(self.log_h)
        self.m, self.counted, self.avg_from = 0, 0, n_iter // 2

    def update(self, accept_prob: torch.Tensor) -> torch.Tensor:
        """One iteration with acceptance probabilities in [0, 1] -> the next step sizes (float32)."""
        self.m += 1
        m = self.m
        w = 1.0 / (m + self.t0)  # host floats: no sync
        self.stat.mul_(1.0 - w).add_(accept_prob.double(), alpha=-w).add_(w * self.target)
        torch.add(self.mu, self.stat, alpha=-math.sqrt(m) / self.gamma, out=self.log_h)
        self.log_h.clamp_(_LOG_H_MIN, _LOG_H_MAX)
        if m > self.avg_from:
            self.log_h_sum += self.log_h
            self.counted += 1
        return self.log_h.exp().float()

    def final(self) -> torch.Tensor:
        """The step sizes to freeze after warm-up (float32)."""
        log_h = self.log_h_sum / self.counted if self.counted else self.log_h
        return log_h.exp().float()


class ChEES:
    """ChEES trajectory-length adaptation across chains (Hoffman, Radul & Sountsov 2021), on the device.

    The criterion is ``E[(|x' - E x'|^2 - |x - E x|^2)^2] / 4`` over chains (x the trajectory's start, x' its end);
    its per-chain gradient in ``log T`` is ``t (|x' - m'|^2 - |x - m|^2) <x' - m', v'>`` with ``t`` the jittered
    trajectory time, ``v' = M^-1 p'`` the final velocity and ``m'`` the acceptance-weighted mean of the proposals,
    averaged with acceptance weights (as BlackJAX's ``chees_adaptation``). ``log T`` ascends it by Adam
    (``beta1 = 0``, ``beta2 = 0.95``, learning rate 0.025, updates clipped to +-0.35); the trajectory length used
    is the moving average of ``log T`` with weight ``m**-0.5``, kept within ``[h, max_leapfrog * h]``.

    Example:
        >>> ch = ChEES(torch.tensor(1.0), max_leapfrog=100)
        >>> x0, x1, v = torch.randn(64, 2), torch.randn(64, 2), torch.randn(64, 2)
        >>> ch.update(x0, x1, v, torch.ones(64), time=torch.tensor(1.0), step=torch.tensor(0.1))
        >>> ch.n_leapfrog(torch.tensor(0.1)) >= 1
        True
    """

    def __init__(self, trajectory_length: torch.Tensor, max_leapfrog: int, lr: float = 0.025, beta2: float = 0.95,
                 clip: float = 0.35, decay: float = 0.5):
        self.log_t = torch.log(trajectory_length.double().reshape(()))
        self.log_t_avg = self.log_t.clone()
        self.second = torch.zeros_like(self.log_t)
        self.max_leapfrog = max_leapfrog
        self.lr, self.beta2, self.clip, self.decay = lr, beta2, clip, decay
        self.m = 0

    def update(self, x0: torch.Tensor, x1: torch.Tensor, v1: torch.Tensor, accept_prob: torch.Tensor, *,
               time: torch.Tensor, step: torch.Tensor) -> None:
        """One iteration: starts ``x0``, proposals ``x1`` and their velocities ``v1`` (n_chains, n_cols)."""
        self.m += 1
        m = self.m
        b = x0.shape[0]
        x0, x1, v1 = x0.reshape(b, -1).double(), x1.reshape(b, -1).double(), v1.reshape(b, -1).double()
        ok = torch.isfinite(x1).all(1) & torch.isfinite(v1).all(1)
        w = torch.where(ok, accept_prob.double(), torch.zeros_like(accept_prob, dtype=torch.float64))
        x1 = torch.where(ok[:, None], x1, torch.zeros_like(x1))
        v1 = torch.where(ok[:, None], v1, torch.zeros_like(v1))
        w_sum = w.sum() + _TINY
        c1 = x1 - (w[:, None] * x1).sum(0) / w_sum
        c0 = x0 - x0.mean(0)
        per_chain = (c1.square().sum(1) - c0.square().sum(1)) * (c1 * v1).sum(1)
        grad = time.double() * (w * per_chain).sum() / w_sum
        grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
        self.second.mul_(self.beta2).add_((1.0 - self.beta2) * grad.square())
        v_hat = self.second / (1.0 - self.beta2 ** m)
        upd = (self.lr * grad / (v_hat.sqrt() + 1e-8)).clamp(-self.clip, self.clip)
        # the iterate and its average stay within [h, max_leapfrog * h] (BlackJAX clips the average the same way)
        lo = torch.log(step.double().reshape(()))
        hi = lo + math.log(self.max_leapfrog)
        self.log_t.copy_(torch.minimum(torch.maximum(self.log_t + upd, lo), hi))
        weight = m ** (-self.decay)
        self.log_t_avg.mul_(1.0 - weight).add_(self.log_t, alpha=weight)
        self.log_t_avg.copy_(torch.minimum(torch.maximum(self.log_t_avg, lo), hi))

    def trajectory_length(self) -> torch.Tensor:
        """The current trajectory length T (a 0-d float64 device tensor)."""
        return self.log_t_avg.exp()

    def n_leapfrog(self, step: torch.Tensor) -> int:
        """``ceil(T / h)`` within ``[1, max_leapfrog]``: a host int, so one device read (a sync on GPUs)."""
        ratio = float((self.log_t_avg - torch.log(step.double())).exp())
        return int(min(max(math.ceil(ratio - 1e-9), 1), self.max_leapfrog))


class MassWindow:
    """Pooled mean and variance over chains and iterations (Chan et al.'s merge), per column, on the device.

    ``inv_mass()`` is the variance regularised towards 1e-3 as Stan does, ``n/(n+5) var + 1e-3 * 5/(n+5)``:
    the diagonal of ``M^-1`` that makes every coordinate's scale about one.

    Example:
        >>> w = MassWindow(3, torch.device("cpu"))
        >>> for _ in range(10):
        ...     w.add(torch.randn(500, 3) * torch.tensor([1.0, 2.0, 3.0]))
        >>> [round(v, 0) for v in w.inv_mass().tolist()]
        [1.0, 4.0, 9.0]
    """

    def __init__(self, n_cols: int, device: torch.device):
        self.n = 0
        self.mean = torch.zeros(n_cols, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)

    def add(self, x: torch.Tensor) -> None:
        """Merge one iteration's chains (n_chains, ...)."""
        b = x.shape[0]
        if b == 0:
            return
        xs = x.reshape(b, -1).double()
        mean_b = xs.mean(0)
        m2_b = (xs - mean_b).square().sum(0)
        n_new = self.n + b
        delta = mean_b - self.mean
        self.mean.add_(delta, alpha=b / n_new)
        self.m2.add_(m2_b).add_(delta.square(), alpha=self.n * b / n_new)
        self.n = n_new

    def inv_mass(self) -> torch.Tensor:
        """The regularised variance (float32), the new ``M^-1``."""
        n = self.n
        var = self.m2 / max(n - 1, 1)
        return (var * (n / (n + 5.0)) + 1e-3 * (5.0 / (n + 5.0))).float()


def mass_windows(adapt_steps: int) -> list:
    """The mass windows ``[(start, end), ...]`` of a warm-up: 10%-30% and 30%-50%; the last half tunes h alone.

    Example:
        >>> mass_windows(1000)
        [(100, 300), (300, 500)]
    """
    bounds = [int(adapt_steps * f) for f in (0.1, 0.3, 0.5)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def jitter_factor(i: int, jitter: float, offset: float) -> float:
    """The trajectory-length factor of iteration ``i``: ``1 - jitter * u_i`` with ``u_i`` in [0, 1) the base-2
    van der Corput (Halton) sequence of ``i + 1`` rotated by ``offset``. Depends only on ``(i, seed)``: shared by
    all chains, the same however they are batched, and independent of the state (detailed balance holds).

    Example:
        >>> [jitter_factor(i, 1.0, 0.0) for i in range(3)]
        [0.5, 0.75, 0.25]
    """
    n, u, base = i + 1, 0.0, 0.5
    while n:
        n, bit = divmod(n, 2)
        u += bit * base
        base *= 0.5
    return 1.0 - jitter * ((u + offset) % 1.0)


