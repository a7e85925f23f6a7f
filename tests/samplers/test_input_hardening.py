"""Sampler inputs a newcomer gets wrong: repeated sigmas, sampler spellings, generators, denoiser sigma shapes."""
import pytest
import torch

import fastdiff
from fastdiff import k_diffusion as K
from fastdiff.sampling import list_samplers, sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")

X = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
REPEATED = [20.0, 5.0, 5.0, 1.0, 0.0]


def den(x, s):
    return x / (1 + s[:, None] ** 2)


# --- repeated sigmas ---------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", list_samplers())
def test_sample_rejects_repeated_sigmas(sampler):
    sig = [0.9, 0.5, 0.5, 0.2, 0.0] if sampler == "flow_euler" else REPEATED
    for s in (sig, torch.tensor(sig), torch.tensor(sig, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"sigmas.*sigmas\[2\].*repeats sigmas\[1\]"):
            sample(den, X, s, sampler=sampler, seed=0)


@pytest.mark.parametrize("name", list(K.SAMPLERS))
def test_k_diffusion_face_rejects_repeated_sigmas(name):
    with pytest.raises(ValueError, match=r"sigmas.*sigmas\[2\].*repeats sigmas\[1\]"):
        K.SAMPLERS[name](den, X, torch.tensor(REPEATED), disable=True)


@pytest.mark.parametrize("sampler", [s for s in list_samplers() if s != "flow_euler"])
def test_strictly_decreasing_schedules_still_accepted(sampler):
    for sig in (fastdiff.karras_sigmas(6, 0.03, 10.0), fastdiff.exponential_sigmas(6, 0.03, 10.0),
                torch.tensor([10.0, 1.0, 0.0])):
        out = sample(den, X, sig, sampler=sampler, seed=0)
        assert out.shape == X.shape and torch.isfinite(out).all()
