"""Sampler inputs a newcomer gets wrong: repeated sigmas, sampler spellings, generators, denoiser sigma shapes."""
import sys

import pytest
import torch

import fastdiff
from fastdiff import k_diffusion as K
from fastdiff.samplers import NEEDS_UNCOND
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


def guided_if_needed(sampler, fn, batch):
    """``fn`` as it is, or inside a CFGDenoiser for the CFG++ samplers (they need guidance)."""
    if sampler not in NEEDS_UNCOND:
        return fn
    return fastdiff.CFGDenoiser(lambda x, s, cond: fn(x, s), cond=torch.ones(batch, 1),
                                uncond=torch.zeros(batch, 1), scale=1.5)


@pytest.mark.parametrize("sampler", [s for s in list_samplers() if s != "flow_euler"])
def test_strictly_decreasing_schedules_still_accepted(sampler):
    for sig in (fastdiff.karras_sigmas(6, 0.03, 10.0), fastdiff.exponential_sigmas(6, 0.03, 10.0),
                torch.tensor([10.0, 1.0, 0.0])):
        out = sample(guided_if_needed(sampler, den, X.shape[0]), X, sig, sampler=sampler, seed=0)
        assert out.shape == X.shape and torch.isfinite(out).all()


# --- sampler names ----------------------------------------------------------------------------

@pytest.mark.parametrize("spelling,name", [
    ("euler_a", "euler_ancestral"), ("Euler a", "euler_ancestral"), ("Euler", "euler"), ("DPM++ 2M", "dpmpp_2m"),
    ("DPM++ 2M SDE", "dpmpp_2m_sde"), ("DPM++ 3M SDE", "dpmpp_3m_sde"), ("DPM++ SDE", "dpmpp_sde"),
    ("DPM++ 2S a", "dpmpp_2s_ancestral"), ("DPM2", "dpm_2"), ("DPM2 a", "dpm_2_ancestral"), ("LMS", "lms"),
    ("UniPC", "unipc"), ("uni_pc", "unipc"), ("DDIM", "ddim"), ("dpmpp_2m_sde_gpu", "dpmpp_2m_sde"),
    ("dpmpp_sde_gpu", "dpmpp_sde"), ("dpmpp_3m_sde_gpu", "dpmpp_3m_sde"),
])
def test_common_sampler_spellings_are_accepted(spelling, name):
    assert fastdiff.sampling.resolve_sampler(spelling) == name
    sig = fastdiff.karras_sigmas(4, 0.1, 10.0)
    assert torch.equal(sample(den, X, sig, sampler=spelling, seed=3), sample(den, X, sig, sampler=name, seed=3))


@pytest.mark.parametrize("spelling,suggestion", [("dpmpp2m", "dpmpp_2m"), ("eulr", "euler"),
                                                 ("dpmpp_2m_sd", "dpmpp_2m_sde"), ("uni_pc_bh2", "unipc")])
def test_misspelt_sampler_suggests_the_closest(spelling, suggestion):
    with pytest.raises(ValueError, match=f"did you mean '{suggestion}'") as info:
        sample(den, X, fastdiff.karras_sigmas(4, 0.1, 10.0), sampler=spelling)
    assert all(repr(n) in str(info.value) for n in list_samplers())  # the valid names are still listed


@pytest.mark.parametrize("spelling,name,fn", [("DPM++ 2M Karras", "dpmpp_2m", "karras_sigmas"),
                                              ("DPM++ SDE Karras", "dpmpp_sde", "karras_sigmas"),
                                              ("Euler a Karras", "euler_ancestral", "karras_sigmas"),
                                              ("DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential_sigmas")])
def test_schedule_in_the_sampler_name_is_explained(spelling, name, fn):
    with pytest.raises(ValueError, match="schedule, not a sampler") as info:
        sample(den, X, fastdiff.karras_sigmas(4, 0.1, 10.0), sampler=spelling)
    assert f"{spelling!r} is sampler {name!r} with {fn}(...)" in str(info.value)
    assert "dpmpp_3m_sde" in str(info.value)


def test_unknown_sampler_without_a_close_name():
    with pytest.raises(ValueError, match="sampler must be one of") as info:
        sample(den, X, fastdiff.karras_sigmas(4, 0.1, 10.0), sampler="zzzzzz")
    assert "did you mean" not in str(info.value)
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample(den, X, fastdiff.karras_sigmas(4, 0.1, 10.0), sampler=None)


# --- generator --------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde"])
def test_generator_gives_the_seed(sampler):
    sig = fastdiff.karras_sigmas(5, 0.1, 10.0)
    g = torch.Generator().manual_seed(123)
    state = torch.random.get_rng_state()
    a = sample(den, X, sig, sampler=sampler, generator=g)
    b = sample(den, X, sig, sampler=sampler, generator=torch.Generator().manual_seed(123))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(a, b)
    c = sample(den, X, sig, sampler=sampler, generator=g)  # g advanced: a new seed
    assert not torch.equal(a, c)
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=torch.Generator().manual_seed(123)).item())
    assert torch.equal(a, sample(den, X, sig, sampler=sampler, seed=seed))


def test_generator_bad_uses():
    sig = fastdiff.karras_sigmas(4, 0.1, 10.0)
    with pytest.raises(ValueError, match="seed or generator"):
        sample(den, X, sig, seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        sample(den, X, sig, generator=5)


# --- the denoiser's sigma is a (batch,) tensor -------------------------------------------------

def test_wrong_denoiser_output_shape_explains_sigma():
    sig = fastdiff.karras_sigmas(4, 0.1, 10.0)
    with pytest.raises(ValueError, match=r"returned shape \(2,\).*sigma a \(batch,\) tensor.*sigma\.view\(-1, 1\)"):
        sample(lambda x, s: x[:, 0] / (1 + s ** 2), X, sig)  # drops the feature dim


def test_broadcast_failure_in_the_denoiser_gets_a_note():
    x = torch.randn(2, 3, 4, 4)
    sig = fastdiff.karras_sigmas(4, 0.1, 10.0)
    with pytest.raises(RuntimeError, match="size of tensor") as info:
        sample(lambda x, s: x / (1 + s ** 2), x, sig)  # sigma (2,) against the last dim (4)
    notes = getattr(info.value, "__notes__", [])
    if sys.version_info >= (3, 11):
        assert any("(batch,) tensor" in n and "sigma.view(-1, 1, 1, 1)" in n for n in notes)
    else:
        assert not notes


def test_other_denoiser_errors_are_untouched():
    def broken(x, s):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory") as info:
        sample(broken, X, fastdiff.karras_sigmas(4, 0.1, 10.0))
    assert not getattr(info.value, "__notes__", [])
    with pytest.raises(KeyError):
        sample(lambda x, s: {}["k"], X, fastdiff.karras_sigmas(4, 0.1, 10.0))


# --- drop-in schedulers: a non-finite timestep ----------------------------------------------------

@pytest.mark.parametrize("name", ["DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler",
                                  "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                                  "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                                  "FlowMatchEulerDiscreteScheduler"])
@pytest.mark.parametrize("timestep", [float("nan"), float("inf"), torch.tensor(float("nan")),
                                      torch.tensor([float("nan")])], ids=["nan", "inf", "nan-0d", "nan-1d"])
def test_scheduler_step_rejects_a_non_finite_timestep(name, timestep):
    from fastdiff import diffusers as fd

    s = getattr(fd, name)()
    s.set_timesteps(10)
    x = torch.randn(1, 2)
    with pytest.raises(ValueError, match="timestep must be a finite number"):
        s.step(torch.zeros_like(x), timestep, x)


@pytest.mark.parametrize("name", ["DDPMScheduler", "EulerDiscreteScheduler"])
def test_scheduler_step_unknown_timestep_names_it(name):
    from fastdiff import diffusers as fd

    s = getattr(fd, name)()
    s.set_timesteps(10)
    x = torch.randn(1, 2)
    with pytest.raises(ValueError, match="timestep 12345.5 is not one of the scheduler's timesteps"):
        s.step(torch.zeros_like(x), 12345.5, x)


# --- meta tensors ------------------------------------------------------------------------------

def test_meta_sigmas_and_row_ids_are_named():
    meta = torch.device("meta")
    sig = fastdiff.karras_sigmas(4, 0.1, 10.0)
    with pytest.raises(ValueError, match="sigmas is on the meta device"):
        sample(den, X, sig.to(meta))
    with pytest.raises(ValueError, match="row_ids is on the meta device"):
        sample(den, X, sig, row_ids=torch.arange(2, device=meta))
    with pytest.raises(ValueError, match="sigmas is on the meta device"):
        K.sample_euler(den, X, sig.to(meta), disable=True)


# --- empty batches: valid everywhere (ops, MCMC, both sampler faces)
@pytest.mark.parametrize("name", sorted(fastdiff.SAMPLERS))
def test_sample_on_an_empty_batch_returns_an_empty_sample(name):
    """0 rows is a valid batch: the sampler runs (the denoiser sees 0 rows) and returns x's shape."""
    seen = []

    def den(x, sigma):
        seen.append(x.shape)
        return x * 0.5

    x = torch.zeros(0, 3)
    sig = fastdiff.FlowMatchingSchedule().sigmas(4) if name == "flow_euler" else fastdiff.karras_sigmas(4, 0.1, 5.0)
    out = fastdiff.sample(guided_if_needed(name, den, 0), x, sig, sampler=name, seed=0)
    assert out.shape == (0, 3) and out.dtype == x.dtype
    assert seen and all(s == (0, 3) for s in seen)


@pytest.mark.parametrize("name", sorted(K.SAMPLERS))
def test_k_diffusion_face_on_an_empty_batch(name):
    x = torch.zeros(0, 3)
    kw = {"noise_sampler": lambda a, b: torch.zeros(0, 3)} if name in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde") \
        else {}
    out = K.SAMPLERS[name](lambda v, s: v * 0.5, x, K.get_sigmas_karras(4, 0.1, 5.0), disable=True, **kw)
    assert out.shape == (0, 3)
