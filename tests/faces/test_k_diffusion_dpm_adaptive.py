"""Parity of ``fastdiff.k_diffusion.sample_dpm_fast`` / ``sample_dpm_adaptive`` with the installed k-diffusion.

The same noise (a seeded noise sampler, or the global RNG) on both sides. float64 runs agree to rounding; in
float32 the adaptive controller reads an error norm that is itself near float32 rounding on the first steps
(``x_low - x_high`` ~ 1e-7 relative), so the two runs take the same steps (same counters) but step sizes that
differ in the 4th digit: the float32 check is the counters plus a 1e-3 tolerance.
"""
from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff import k_diffusion as K
from test_k_diffusion_compat import KD

GMM = fastdiff.toy.GaussianMixture.ring(k=4, radius=2.0, std=0.6)
# k-diffusion itself calls torch.tensor(sigma) on tensor bounds
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")


class SeededNoise:
    def __init__(self, x: torch.Tensor, seed: int = 3) -> None:
        self.g, self.x = torch.Generator().manual_seed(seed), x

    def __call__(self, sigma, sigma_next):
        return torch.randn(self.x.shape, generator=self.g, dtype=self.x.dtype)


def start(dtype=torch.float32):
    return (torch.randn(16, 2, generator=torch.Generator().manual_seed(1)) * 10).to(dtype)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("n,eta", [(1, 0.0), (2, 0.0), (7, 0.0), (9, 0.0), (10, 0.0), (10, 0.5)])
def test_dpm_fast_matches_k_diffusion(n, eta):
    x = start()
    seen_ref, seen = [], []
    ref = KD.sample_dpm_fast(GMM.denoiser, x, 0.05, 10.0, n, eta=eta, noise_sampler=SeededNoise(x), disable=True,
                             callback=seen_ref.append)
    out = K.sample_dpm_fast(GMM.denoiser, x, 0.05, 10.0, n, eta=eta, noise_sampler=SeededNoise(x), disable=True,
                            callback=seen.append)
    assert rel(out, ref) < 1e-5
    assert [d["i"] for d in seen] == [d["i"] for d in seen_ref] and set(seen[0]) == set(seen_ref[0])
    for a, b in zip(seen, seen_ref):
        torch.testing.assert_close(a["sigma"], b["sigma"])


def test_dpm_fast_global_rng_advances_as_k_diffusion():
    """k-diffusion draws randn_like once a step even with eta = 0: the next draw after the run agrees."""
    x = start()
    torch.manual_seed(5)
    ref = KD.sample_dpm_fast(GMM.denoiser, x, 0.05, 10.0, 8, disable=True)
    after_ref = torch.randn(3)
    torch.manual_seed(5)
    out = K.sample_dpm_fast(GMM.denoiser, x, 0.05, 10.0, 8, disable=True)
    assert torch.equal(torch.randn(3), after_ref)
    assert rel(out, ref) < 1e-5


ADAPTIVE = [dict(), dict(order=2), dict(eta=0.5), dict(rtol=0.01, atol=0.001), dict(pcoeff=0.2, dcoeff=0.1)]


@pytest.mark.parametrize("options", ADAPTIVE, ids=[str(o) for o in ADAPTIVE])
def test_dpm_adaptive_matches_k_diffusion_float64(options):
    """float64 sigma bounds make every scalar of both runs float64 (k-diffusion takes ``torch.tensor(sigma)``)."""
    x = start(torch.float64)
    lo, hi = torch.tensor(0.05, dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64)
    ref, info_ref = KD.sample_dpm_adaptive(GMM.denoiser, x, lo, hi, noise_sampler=SeededNoise(x), disable=True,
                                           return_info=True, **options)
    out, info = K.sample_dpm_adaptive(GMM.denoiser, x, lo, hi, noise_sampler=SeededNoise(x), disable=True,
                                      return_info=True, **options)
    assert info == info_ref
    assert rel(out, ref) < 1e-9


@pytest.mark.parametrize("options", ADAPTIVE, ids=[str(o) for o in ADAPTIVE])
def test_dpm_adaptive_matches_k_diffusion_float32(options):
    x = start()
    seen_ref, seen = [], []
    ref, info_ref = KD.sample_dpm_adaptive(GMM.denoiser, x, 0.05, 10.0, noise_sampler=SeededNoise(x), disable=True,
                                           return_info=True, callback=seen_ref.append, **options)
    out, info = K.sample_dpm_adaptive(GMM.denoiser, x, 0.05, 10.0, noise_sampler=SeededNoise(x), disable=True,
                                      return_info=True, callback=seen.append, **options)
    assert info == info_ref
    assert rel(out, ref) < 1e-3
    assert set(seen[0]) == set(seen_ref[0]) and len(seen) == len(seen_ref)


def test_bad_arguments():
    x = start()
    with pytest.raises(ValueError, match="must not be 0"):
        K.sample_dpm_fast(GMM.denoiser, x, 0.0, 10.0, 5)
    with pytest.raises(ValueError, match="n must be a positive int"):
        K.sample_dpm_fast(GMM.denoiser, x, 0.05, 10.0, 0)
    with pytest.raises(ValueError, match="order should be 2 or 3"):
        K.sample_dpm_adaptive(GMM.denoiser, x, 0.05, 10.0, order=4)
    with pytest.raises(ValueError, match="eta must be 0 for reverse sampling"):
        K.sample_dpm_adaptive(GMM.denoiser, x, 10.0, 0.05, eta=0.5)
