"""k-diffusion's noise sources: the global-RNG default and the Brownian tree of its SDE samplers.

Example:
    >>> ns = default_noise_sampler(torch.zeros(2, 3))
    >>> ns(1.0, 0.5).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["default_noise_sampler", "BrownianTreeNoiseSampler", "NoiseSampler", "resolve_noise", "brownian_default"]

NoiseSampler = Callable[[Any, Any], torch.Tensor]


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

    def at_host_times(self, t0: float, t1: float) -> torch.Tensor:
        """``self(sigma, sigma_next)`` for path times already transformed and held as host floats (float32
        values): the same increment and float32 normalization, without reading a tensor back on the host.

        Example:
            >>> ns = BrownianTreeNoiseSampler(torch.zeros(2), 0.1, 10.0, seed=0)  # doctest: +SKIP
            >>> torch.equal(ns.at_host_times(5.0, 2.0), ns(torch.tensor(5.0), torch.tensor(2.0)))  # doctest: +SKIP
            True
        """
        sign = 1 if t0 < t1 else -1
        lo, hi = (t0, t1) if sign > 0 else (t1, t0)
        w = torch.stack([tree(lo, hi) for tree in self._trees]) * (self._flip * sign)
        if not self._per_row:
            w = w[0]
        # |t1 - t0| ** 0.5 rounded as the float32 0-d tensors of __call__ round it
        scale = np.sqrt(np.abs(np.float32(t1) - np.float32(t0)))
        return w / float(scale)


def resolve_noise(x: torch.Tensor, noise_sampler: Optional[NoiseSampler]) -> NoiseSampler:
    """The caller's ``noise_sampler`` (checked), or :func:`default_noise_sampler` when it is None."""
    if noise_sampler is None:
        return default_noise_sampler(x)
    if not callable(noise_sampler):
        raise TypeError(f"noise_sampler must be callable as noise_sampler(sigma, sigma_next), "
                        f"got {type(noise_sampler).__name__}")
    return noise_sampler


def brownian_default(x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: Optional[NoiseSampler],
                     used: bool) -> Optional[NoiseSampler]:
    """k-diffusion's default for the SDE samplers: a Brownian tree over [min positive sigma, max sigma].

    When the sampler never draws (``eta == 0``) only the tree's seed is drawn, so the global
    RNG advances as k-diffusion's does without needing torchsde.
    """
    if noise_sampler is not None:
        return resolve_noise(x, noise_sampler)
    if not used:
        torch.randint(0, 2**63 - 1, [])
        return None
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max)
