"""Samplers: fused path vs literal transcriptions step by step, Triton vs reference, noise invariances, API checks."""
import math

import pytest
import torch

import fastdiff
from fastdiff import sampler_run, sampling
from fastdiff.denoisers import EpsDenoiser
from fastdiff.sampling import initial_noise, list_samplers, sample
from fastdiff.toy import GaussianMixture
from cfgpp_references import CFGPP_REFERENCES
from fastdiff.samplers import NEEDS_UNCOND
from sampler_references import REFERENCES, run_reference

GMM = GaussianMixture.ring(k=4, radius=3.0, std=0.4, dim=3)
# the samplers that run on a plain denoiser; the CFG++ ones need guidance (test_sampler_accuracy_cfgpp.py)
ALL = [s for s in list_samplers() if s not in NEEDS_UNCOND]
# the samplers with a literal transcription in sampler_references.py (the ComfyUI solver set is checked against
# ComfyUI's own functions by the fastdiff.comfyui parity harness and on the exact mixture in
# test_sampler_accuracy_more.py)
TRANSCRIBED = [n for n in ALL if n in REFERENCES]


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# options that exercise each sampler's non-default branches
VARIANTS = [
    ("euler", dict(s_churn=5.0)),
    ("heun", dict(s_churn=5.0, s_tmin=0.05, s_tmax=5.0, s_noise=1.01)),
    ("dpm_2", dict(s_churn=3.0)),
    ("dpm_2_ancestral", dict(eta=0.5, s_noise=0.9)),
    ("euler_ancestral", dict(eta=0.7)),
    ("ddim", dict(eta=0.5)),
    ("ddim", dict(eta=1.0)),
    ("lms", dict(order=2)),
    ("lms", dict(order=1)),
    ("dpmpp_2s_ancestral", dict(eta=0.0)),
    ("dpmpp_sde", dict(eta=0.5, r=0.3)),
    ("dpmpp_2m_sde", dict(solver_type="heun")),
    ("dpmpp_2m_sde", dict(eta=0.0)),
    ("dpmpp_3m_sde", dict(eta=0.5)),
    ("unipc", dict(order=3)),
    ("unipc", dict(order=1)),
    ("unipc", dict(order=2, variant="bh1")),
    ("res_multistep_ancestral", dict(eta=0.5, s_noise=0.9)),
    ("res_multistep_ancestral", dict(eta=0.0)),
    ("gradient_estimation", dict(ge_gamma=3.0)),
]


def schedule_for(name, n=10):
    if name == "flow_euler":
        return fastdiff.FlowMatchingSchedule(1000, shift=3.0).sigmas(n)
    return fastdiff.karras_sigmas(n, 0.01, 10.0)


def flow_x0(x, s):
    """Exact x0 estimate of the flow sample x_s = (1 - s) x0 + s eps for the test mixture."""
    s = torch.as_tensor(s, dtype=x.dtype).reshape(-1)[0].item()
    if s >= 1.0:
        mean = (GMM.weights[:, None] * GMM.means).sum(0).to(x.dtype)
        return mean.expand_as(x).clone()
    return GMM.denoiser(x / (1 - s), s / (1 - s))


def model_for(name):
    return flow_x0 if name == "flow_euler" else GMM.denoiser


def start(name, shape, dtype=torch.float64, seed=0, row_ids=None):
    sig = schedule_for(name)
    return initial_noise(shape, seed, row_ids=row_ids, dtype=dtype) * sig[0].item(), sig


def trajectory(run):
    steps = []
    out = run(lambda d: steps.append((d["i"], d["x"].clone(), d["denoised"].clone(), d["sigma"], d["sigma_hat"])))
    return out, steps


def test_registry():
    assert set(list_samplers()) == {
        "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_2m",
        "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "ddpm", "unipc", "flow_euler",
        "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep",
        "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
        "gradient_estimation_cfg_pp",
        "ipndm", "ipndm_v", "deis", "heunpp2", "lcm", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
        "dpmpp_2m_sde_heun", "dpm_fast"}
    assert set(REFERENCES) <= set(ALL)
    assert set(CFGPP_REFERENCES) == set(NEEDS_UNCOND)
    for name, fn in sampling.SAMPLERS.items():
        assert fn.__doc__ and len(fn.__doc__.strip().splitlines()[0]) > 10, name


def _compare_step_by_step(name, options, dtype=torch.float64, backend="torch", shape=(6, 3), tol=1e-11):
    x, sig = start(name, shape, dtype=torch.float64)
    model = model_for(name)
    ref, ref_steps = trajectory(lambda cb: run_reference(name, model, x, sig, seed=3, callback=cb, **options))
    out, steps = trajectory(lambda cb: sample(model, x.to(dtype), sig, sampler=name, seed=3, callback=cb,
                                              backend=backend, **options))
    assert len(steps) == len(ref_steps) == len(sig) - 1
    scale = max(1.0, ref.abs().max().item())
    for (i, xs, ds, s, sh), (ri, rxs, rds, rs, rsh) in zip(steps, ref_steps, strict=True):
        assert i == ri and math.isclose(s, rs, rel_tol=1e-12) and math.isclose(sh, rsh, rel_tol=1e-12)
        assert (xs.double() - rxs).abs().max().item() <= tol * scale * 10, f"{name} step {i}: x differs"
        assert (ds.double() - rds).abs().max().item() <= tol * scale * 10, f"{name} step {i}: denoised differs"
    err = (out.double() - ref).abs().max().item()
    assert err <= tol * scale * 10, f"{name}: final error {err:.3e}"
    assert out.dtype == dtype


@pytest.mark.parametrize("name", TRANSCRIBED)
def test_matches_published_algorithm(name):
    """float64 torch path == literal transcription, every step (x and x0 estimate), same Philox noise."""
    _compare_step_by_step(name, {})


@pytest.mark.parametrize("name,options", VARIANTS, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in VARIANTS])
def test_matches_published_algorithm_options(name, options):
    _compare_step_by_step(name, options)


@pytest.mark.parametrize("name", TRANSCRIBED)
def test_triton_kernel_matches_reference(name):
    """backend='triton' (float32 storage, fp32 kernel arithmetic) vs the float64 transcription."""
    options = dict(s_churn=4.0) if name in ("heun", "euler", "dpm_2") else {}
    # fp32 rounding of x, the model and the coefficients, amplified over 10 steps
    _compare_step_by_step(name, options, dtype=torch.float32, backend="triton", shape=(3, 2, 3), tol=2e-6)


@pytest.mark.parametrize("name", [n for n in sampling.STOCHASTIC if n not in NEEDS_UNCOND] + ["heun"])
def test_batch_split_and_seed(name):
    """Rows 0-7 at once == rows 0-3 and 4-7 run separately (row_ids); same seed -> same samples."""
    opts = dict(s_churn=5.0) if name == "heun" else {}
    rows = torch.arange(8)
    x, sig = start(name, (8, 3), dtype=torch.float32, seed=5, row_ids=rows)
    full = sample(GMM.denoiser, x, sig, sampler=name, seed=9, row_ids=rows, **opts)
    parts = [sample(GMM.denoiser, initial_noise((4, 3), 5, row_ids=r) * sig[0].item(), sig, sampler=name, seed=9,
                    row_ids=r, **opts) for r in (rows[:4], rows[4:])]
    torch.testing.assert_close(torch.cat(parts), full, rtol=1e-6, atol=1e-6)
    again = sample(GMM.denoiser, x, sig, sampler=name, seed=9, row_ids=rows, **opts)
    assert torch.equal(again, full)
    other = sample(GMM.denoiser, x, sig, sampler=name, seed=10, row_ids=rows, **opts)
    assert (other - full).abs().max() > 1e-3, "a different seed must change a stochastic sampler's output"


def test_seed_none_uses_global_generator():
    x, sig = start("euler_ancestral", (4, 3), dtype=torch.float32)
    torch.manual_seed(123)
    a = sample(GMM.denoiser, x, sig, sampler="euler_ancestral")
    torch.manual_seed(123)
    b = sample(GMM.denoiser, x, sig, sampler="euler_ancestral")
    c = sample(GMM.denoiser, x, sig, sampler="euler_ancestral")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_initial_noise_stream_and_rows():
    z = initial_noise((5, 7), seed=4)
    assert torch.equal(z, fastdiff.philox_normal((5, 7), 4, sampling.INITIAL_NOISE_STREAM))
    assert sampling.INITIAL_NOISE_STREAM == 2**32 - 1
    part = initial_noise((2, 7), seed=4, row_ids=torch.tensor([3, 4]))
    assert torch.equal(part, z[3:])
    assert initial_noise((2, 3), 1, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("name", ALL)
def test_one_fused_step_per_model_evaluation(name, monkeypatch):
    calls = {"step": 0, "model": 0}
    real = sampler_run.fused_step

    def counting_step(*a, **k):
        calls["step"] += 1
        return real(*a, **k)

    def counting_model(x, s):
        calls["model"] += 1
        return model_for(name)(x, s)

    monkeypatch.setattr(sampler_run, "fused_step", counting_step)
    x, sig = start(name, (2, 3))
    sample(counting_model, x, sig, sampler=name, seed=0)
    assert calls["step"] == calls["model"] > 0


def test_churn_at_first_sigma_adds_one_pass(monkeypatch):
    calls = {"step": 0, "model": 0}
    real = sampler_run.fused_step
    monkeypatch.setattr(sampler_run, "fused_step", lambda *a, **k: (calls.__setitem__("step", calls["step"] + 1),
                                                                  real(*a, **k))[1])

    def model(x, s):
        calls["model"] += 1
        return GMM.denoiser(x, s)

    x, sig = start("heun", (2, 3))
    sample(model, x, sig, sampler="heun", s_churn=5.0, seed=0)
    assert calls["step"] == calls["model"] + 1


def test_callback_and_progress(capsys):
    x, sig = start("dpmpp_2m", (3, 3))
    seen = []
    out = sample(GMM.denoiser, x, sig, sampler="dpmpp_2m", callback=seen.append, progress=True)
    assert [d["i"] for d in seen] == list(range(len(sig) - 1))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    torch.testing.assert_close(seen[0]["denoised"], GMM.denoiser(x, sig[0]))
    torch.testing.assert_close(seen[-1]["denoised"], out)  # the last dpmpp_2m step lands on the x0 estimate
    assert f"{len(sig) - 1}/{len(sig) - 1}" in capsys.readouterr().err  # tqdm's final "n/n" count


def test_input_not_modified():
    x, sig = start("heun", (3, 3), dtype=torch.float32)
    keep = x.clone()
    sample(GMM.denoiser, x, sig, sampler="heun", s_churn=3.0, seed=1)
    assert torch.equal(x, keep)


def test_bad_inputs():
    x, sig = start("euler", (2, 3))
    with pytest.raises(ValueError, match="dpmpp_2m"):
        sample(GMM.denoiser, x, sig, sampler="nope")
    with pytest.raises(TypeError, match="unknown option"):
        sample(GMM.denoiser, x, sig, sampler="euler", eta=1.0)
    bad_sigmas = {
        "1-D": sig[None], "at least 2": sig[:1], "finite": torch.tensor([1.0, float("nan"), 0.0]),
        "non-negative": torch.tensor([1.0, -0.5, 0.0]), "non-increasing": torch.tensor([1.0, 2.0, 0.0]),
        "end in 0": torch.tensor([2.0, 1.0]), "only the last": torch.tensor([2.0, 0.0, 0.0]),
    }
    for what, s in bad_sigmas.items():
        with pytest.raises(ValueError, match=what):
            sample(GMM.denoiser, x, s, sampler="euler")
    with pytest.raises(TypeError, match="x must"):
        sample(GMM.denoiser, torch.zeros(2, 3, dtype=torch.int64), sig, sampler="euler")
    with pytest.raises(ValueError, match="returned shape"):
        sample(lambda x, s: x[:1], x, sig, sampler="euler")
    with pytest.raises(ValueError, match="guidance_scale needs"):
        sample(GMM.denoiser, x, sig, guidance_scale=3.0)
    with pytest.raises(ValueError, match="cuda_graph"):
        sample(GMM.denoiser, x, sig, cuda_graph=True)
    with pytest.raises(ValueError, match="seed"):
        sample(GMM.denoiser, x, sig, seed=-1)
    with pytest.raises(ValueError, match="row_ids"):
        sample(GMM.denoiser, x, sig, row_ids=torch.arange(3))
    with pytest.raises(ValueError, match="flow"):
        sample(EpsDenoiser(lambda a, t: a, None), x, fastdiff.FlowMatchingSchedule().sigmas(4), sampler="flow_euler")
    with pytest.raises(ValueError, match="flow times"):
        sample(flow_x0, x, torch.tensor([2.0, 1.0, 0.0]), sampler="flow_euler")
    with pytest.raises(ValueError, match="solver_type"):
        sample(GMM.denoiser, x, sig, sampler="dpmpp_2m_sde", solver_type="rk4")
    with pytest.raises(ValueError, match="order"):
        sample(GMM.denoiser, x, sig, sampler="unipc", order=5)


def test_shared_blocks():
    down, up = sampling.ancestral_split(2.0, 1.0, 1.0)
    assert math.isclose(down**2 + up**2, 1.0) and math.isclose(up, math.sqrt(0.75))
    assert sampling.ancestral_split(2.0, 1.0, 0.0) == (1.0, 0.0)
    hats, scales = sampling.churn_schedule([4.0, 2.0, 0.0], s_churn=0.5, s_tmin=3.0, s_tmax=5.0, s_noise=1.0)
    assert hats == [5.0, 2.0] and math.isclose(scales[0], 3.0) and scales[1] == 0.0
    # LMS weights integrate polynomials of degree < order exactly
    t = [3.0, 2.0, 1.2, 0.7]
    c = sampling.lms_coefficients(t, 2, 3)
    assert math.isclose(sum(c), t[3] - t[2], rel_tol=1e-12)
    assert math.isclose(sum(ci * t[2 - j] for j, ci in enumerate(c)), (t[3] ** 2 - t[2] ** 2) / 2, rel_tol=1e-12)


def test_short_schedules_and_half_storage():
    """One- and two-step schedules and float16/bfloat16 storage run every sampler to a finite result."""
    for name in ALL:
        for sig in (torch.tensor([5.0, 0.0]), torch.tensor([5.0, 1.0, 0.0])):
            sig = sig / 5 if name == "flow_euler" else sig
            for dtype in (torch.float16, torch.bfloat16):
                x = initial_noise((3, 3), 0, dtype=dtype) * sig[0].item()
                out = sample(model_for(name), x, sig, sampler=name, seed=0)
                assert out.dtype == dtype and torch.isfinite(out).all(), (name, sig, dtype)


def gaussian_denoiser(x, sigma):
    """Exact E[x0 | x] for x0 ~ N(0, I): pure device ops, so CUDA-graph capturable."""
    return x / (1 + sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dpmpp_2m", "euler_ancestral", "heun", "unipc"])
def test_cuda_graph_matches_eager(name):
    sig = fastdiff.karras_sigmas(12, 0.01, 10.0)
    x = initial_noise((4, 3, 8, 8), 1, device="cuda") * sig[0].item()
    opts = dict(s_churn=5.0) if name == "heun" else {}
    eager = sample(gaussian_denoiser, x, sig, sampler=name, seed=7, **opts)
    graphed = sample(gaussian_denoiser, x, sig, sampler=name, seed=7, cuda_graph=True, **opts)
    torch.testing.assert_close(graphed, eager)
    cached = len(sampling._GRAPHS)
    x2 = initial_noise((4, 3, 8, 8), 2, device="cuda") * sig[0].item()
    again = sample(gaussian_denoiser, x2, sig, sampler=name, seed=7, cuda_graph=True, **opts)
    assert len(sampling._GRAPHS) == cached  # replayed, not recaptured
    torch.testing.assert_close(again, sample(gaussian_denoiser, x2, sig, sampler=name, seed=7, **opts))
