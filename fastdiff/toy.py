"""Exact targets for testing and demos: an isotropic Gaussian mixture.

For x0 ~ sum_k w_k N(mu_k, s_k^2 I) and x = x0 + sigma*eps (k-diffusion's VE
convention) everything is closed-form:

    p_sigma(x)      = sum_k w_k N(x; mu_k, (s_k^2 + sigma^2) I)
    E[x0 | x]       = sum_k r_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))
    grad log p_sigma = sum_k r_k(x) (mu_k - x) / (s_k^2 + sigma^2)

with responsibilities r_k(x) proportional to w_k N(x; mu_k, (s_k^2 + sigma^2) I).
So a sampler can be checked against the exact law, and an ODE sampler pathwise
against a high-order solution, without training anything.

Example:
    >>> import torch, fastdiff
    >>> gmm = fastdiff.toy.GaussianMixture.ring(k=8, radius=4.0, std=0.3)
    >>> x0 = gmm.sample(1000, seed=0)
    >>> d = gmm.denoiser(x0 + 2.0 * torch.randn_like(x0), torch.tensor(2.0))
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

__all__ = ["GaussianMixture", "two_d_shapes", "sliced_wasserstein"]


class GaussianMixture:
    """Isotropic Gaussian mixture with exact log-density, gradient and denoiser.

    Args:
        means: (K, D) component means.
        stds: (K,) component standard deviations (or one float).
        weights: (K,) mixture weights (normalised here; default uniform).
    """

    def __init__(self, means: torch.Tensor, stds: Union[float, torch.Tensor] = 1.0,
                 weights: Optional[torch.Tensor] = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1).expand(k).clone()
        if not bool((stds > 0).all()):
            raise ValueError("stds must be positive")
        weights = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be {k} positive numbers")
        self.means, self.stds, self.weights = means, stds, weights / weights.sum()
        self.dim = means.shape[1]

    @classmethod
    def ring(cls, k: int = 8, radius: float = 4.0, std: float = 0.3, dim: int = 2) -> "GaussianMixture":
        """K components evenly spaced on a circle in the first two coordinates."""
        ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means = torch.zeros(k, dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * torch.cos(ang), radius * torch.sin(ang)
        return cls(means, std)

    def _params(self, x: torch.Tensor):
        return (self.means.to(x.device, x.dtype), self.stds.to(x.device, x.dtype),
                self.weights.to(x.device, x.dtype))

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have trailing dimension {self.dim}, got {tuple(x.shape)}")
        return x.reshape(-1, self.dim)

    def _resp(self, x: torch.Tensor, sigma):
        """Log-joint terms (N, K) and per-component variances (N or 1, K)."""
        mu, s, w = self._params(x)
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        var = s[None, :] ** 2 + sig ** 2
        d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
        logj = torch.log(w)[None] - 0.5 * d2 / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return logj, var

    def log_prob(self, x: torch.Tensor, sigma: Union[float, torch.Tensor] = 0.0) -> torch.Tensor:
        """Exact log p_sigma(x), one value per point (shape x.shape[:-1])."""
        xf = self._flat(x)
        logj, _ = self._resp(xf, sigma)
        return torch.logsumexp(logj, dim=1).reshape(x.shape[:-1])

    def grad_log_prob(self, x: torch.Tensor, sigma: Union[float, torch.Tensor] = 0.0) -> torch.Tensor:
        """Exact gradient of log p_sigma at x (the modern "score")."""
        xf = self._flat(x)
        mu, _, _ = self._params(xf)
        logj, var = self._resp(xf, sigma)
        r = torch.softmax(logj, dim=1)
        g = ((r / var)[:, :, None] * (mu[None] - xf[:, None, :])).sum(1)
        return g.reshape(x.shape)

    def denoiser(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        """E[x0 | x0 + sigma*eps = x]; ``sigma`` a scalar or one per point (k-diffusion's denoiser)."""
        xf = self._flat(x)
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sig.dim() > 0 and sig.numel() > 1:
            sig = sig.reshape(x.shape[0], *([1] * (x.dim() - 2))).expand(x.shape[:-1]).reshape(-1)
        mu, s, _ = self._params(xf)
        logj, var = self._resp(xf, sig)
        r = torch.softmax(logj, dim=1)
        shrink = (s[None, :] ** 2) / var
        est = mu[None] + shrink[:, :, None] * (xf[:, None, :] - mu[None])
        return (r[:, :, None] * est).sum(1).reshape(x.shape)

    def sample(self, n: int, seed: int = 0, sigma: float = 0.0, device=None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Exact samples of p_sigma (n, D) from a seeded CPU generator."""
        g = torch.Generator().manual_seed(seed)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=g)
        std = torch.sqrt(self.stds[comp] ** 2 + sigma ** 2)[:, None]
        out = self.means[comp] + std * torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        return out.to(device=device, dtype=dtype)


def two_d_shapes(n: int, shape: str = "moons", seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """A built-in 2-D toy dataset (no downloads): "moons", "spiral", "checkerboard" or "rings"."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    if shape == "moons":
        upper = torch.rand(n, generator=g) < 0.5
        t = math.pi * u
        x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        pts = torch.stack([x - 0.5, y - 0.25], 1) * 2.0
    elif shape == "spiral":
        t = 3 * math.pi * torch.sqrt(u)
        pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / (1.5 * math.pi)
    elif shape == "checkerboard":
        x = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
        y = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g) * 2
        y = y + torch.floor(x) % 2
        pts = torch.stack([x, y], 1) * 1.0
    elif shape == "rings":
        r = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, 2.0).double()
        t = 2 * math.pi * u
        pts = torch.stack([r * torch.cos(t), r * torch.sin(t)], 1)
    else:
        raise ValueError(f"shape must be one of 'moons', 'spiral', 'checkerboard', 'rings', got {shape!r}")
    return pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size point clouds (N, D), in float64."""
    if a.dim() != 2 or b.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must both have shape (N, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa = torch.sort(a.double().cpu() @ dirs, dim=0).values
    pb = torch.sort(b.double().cpu() @ dirs, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())
