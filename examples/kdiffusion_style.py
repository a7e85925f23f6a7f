"""k-diffusion-style sampling: a denoiser, Karras sigmas and any sampler, on an exact Gaussian mixture.

``denoiser(x, sigma)`` returns the x0 estimate for ``x = x0 + sigma * eps`` (k-diffusion's
convention); ``GaussianMixture.denoiser`` is exact, so the samples can be checked against the
true law. Run: python examples/kdiffusion_style.py
"""
import torch

import fastdiff
from fastdiff.sampling import initial_noise, list_samplers, sample
from fastdiff.toy import GaussianMixture, sliced_wasserstein

device = "cuda" if torch.cuda.is_available() else "cpu"
gmm = GaussianMixture.ring(k=8, radius=4.0, std=0.3)
truth = gmm.sample(2000, seed=1, dtype=torch.float32)

sigmas = fastdiff.karras_sigmas(20, sigma_min=0.01, sigma_max=40.0)  # 20 steps, float64, ends in 0
x = initial_noise((2000, 2), seed=0, device=device) * sigmas[0].item()

for name in ("euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"):
    out = sample(gmm.denoiser, x, sigmas, sampler=name, seed=0)  # one fused pass per model call
    print(f"{name:>14}: sliced Wasserstein to exact samples {sliced_wasserstein(out.cpu(), truth):.3f}")

print(f"all samplers: {', '.join(list_samplers())}")
print(f"reference (exact vs exact): {sliced_wasserstein(gmm.sample(2000, seed=2, dtype=torch.float32), truth):.3f}")
