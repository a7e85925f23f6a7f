"""The consistency-model drop-ins (LCMScheduler, TCDScheduler) beyond the common parity cases: custom timesteps,
``original_inference_steps``, ``strength``, a timestep passed that differs from the counter's, the Philox noise
path, and a multi-step LCM loop around a small random-weight UNet.

Trajectories are bounded against diffusers' own code run in float64 (``peer_float64``), as in
test_diffusers_compat.py.
"""
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers parity tests need the 'compat' extra")

import fastdiff.diffusers as fdd  # noqa: E402
from peer_float64 import assert_parity, float64_scheduler  # noqa: E402

CONSISTENCY = ["LCMScheduler", "TCDScheduler"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _model(x, t):
    wide = x if x.dtype == torch.float64 else x.float()
    return (torch.sin(wide * 1.1 + float(t) / 250.0) * 0.8 + 0.1 * wide).to(x.dtype)


def _loop(sched, set_kw, shape=(3, 2, 5, 3), seed=0, step_kw=None, dtype=torch.float32):
    """Run the schedule from seeded noise; returns (timesteps, final sample, every step's second output)."""
    sched.set_timesteps(**set_kw)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)
    seconds = []
    for t in sched.timesteps:
        out = sched.step(_model(x, t), t, x, generator=g, **(step_kw or {}))
        x = out.prev_sample
        seconds.append(out[1])
    return sched.timesteps.clone(), x, seconds


def _parity(name, cfg, set_kw, step_kw=None):
    ours_ts, ours, ours_2 = _loop(getattr(fdd, name)(**cfg), set_kw, step_kw=step_kw)
    peer_ts, peer, peer_2 = _loop(getattr(diffusers, name)(**cfg), set_kw, step_kw=step_kw)
    _, exact, exact_2 = _loop(float64_scheduler(diffusers, name, cfg), set_kw, step_kw=step_kw, dtype=torch.float64)
    assert ours_ts.dtype == peer_ts.dtype and torch.equal(ours_ts, peer_ts)
    assert_parity(f"{name} {set_kw} prev_sample", ours, peer, exact, len(peer_ts))
    for i, (a, b, c) in enumerate(zip(ours_2, peer_2, exact_2)):
        assert_parity(f"{name} {set_kw} second output at step {i}", a, b, c, i + 1)


@pytest.mark.parametrize("name", CONSISTENCY)
@pytest.mark.parametrize("set_kw", [
    {"timesteps": [999, 759, 499, 259]},  # on the origin grid
    {"timesteps": [900, 613, 201, 37, 0]},  # off the grid (diffusers warns, and steps them all the same)
    {"num_inference_steps": 5, "original_inference_steps": 25},
    {"num_inference_steps": 4, "strength": 0.6},  # img2img: a shorter origin grid
    {"timesteps": [999, 759, 499, 259, 19], "strength": 0.5},  # the tail kept; no step is the run's last
])
def test_timestep_options_match_diffusers(name, set_kw):
    _parity(name, {}, set_kw, step_kw={"eta": 0.6} if name == "TCDScheduler" else None)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("cfg", [{}, {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"},
                                 {"prediction_type": "sample", "set_alpha_to_one": False},
                                 {"clip_sample": True, "thresholding": True, "sample_max_value": 1.1}])
def test_tcd_gamma_matches_diffusers(cfg, eta):
    """gamma (step's eta): 0 deterministic, 1 the LCM-like limit; TCD neither clips nor thresholds, as diffusers'."""
    _parity("TCDScheduler", cfg, {"num_inference_steps": 6}, step_kw={"eta": eta})


@pytest.mark.parametrize("name", CONSISTENCY)
def test_timestep_passed_off_the_counter_reads_alpha_bar_at_that_value(name):
    """diffusers takes the next timestep from its counter but alpha_bar (and LCM's c_skip, c_out) at the
    timestep passed: a host timestep that is not the counter's gets its own row."""
    outs = []
    for mod in (fdd, diffusers):
        s = getattr(mod, name)()
        s.set_timesteps(4)
        x = torch.linspace(-1.5, 1.5, 45).reshape(1, 5, 9)
        s.step(_model(x, 999), s.timesteps[0], x, generator=torch.Generator().manual_seed(1))
        outs.append(s.step(_model(x, 700), 700, x, generator=torch.Generator().manual_seed(2)))
        assert s.step_index == 2
    for a, b in zip(outs[0].to_tuple(), outs[1].to_tuple()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CONSISTENCY)
def test_in_kernel_noise_without_generator(name):
    """Without a generator the re-noising is in-kernel Philox: reproducible under torch.manual_seed, a different
    seed gives different noise, and its scale is the step's sqrt(1 - alpha_bar_prev) (a zero model output and a
    zero sample make the step's output exactly that noise)."""
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        s = getattr(fdd, name)(prediction_type="sample")
        s.set_timesteps(4)
        x = torch.zeros(4, 3, 16, 16)
        kw = {"eta": 1.0} if name == "TCDScheduler" else {}
        runs.append(s.step(torch.zeros_like(x), s.timesteps[0], x, **kw).prev_sample)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    expected = float((1 - s.alphas_cumprod[int(s.timesteps[1])]).sqrt())
    # 3072 values estimate the std to ~1.3% (1 sd)
    assert 0.93 * expected < runs[0].std().item() < 1.07 * expected
    assert abs(runs[0].mean().item()) < 0.1 * expected


def test_tcd_bad_gamma_is_named():
    s = fdd.TCDScheduler()
    s.set_timesteps(4)
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="gamma"):
        s.step(x, s.timesteps[0], x, eta=1.5)
    with pytest.raises(TypeError, match="gamma"):
        s.step(x, s.timesteps[0], x, eta="0.3")


@pytest.mark.parametrize("name", CONSISTENCY)
def test_set_timesteps_errors_like_diffusers(name):
    for kw in ({}, {"num_inference_steps": 4, "timesteps": [10, 5]}, {"timesteps": [5, 10]},
               {"timesteps": [1000, 5]}, {"num_inference_steps": 60}, {"num_inference_steps": 30, "strength": 0.5}):
        for mod in (fdd, diffusers):
            with pytest.raises(ValueError):
                getattr(mod, name)().set_timesteps(**kw)


def _tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def test_lcm_loop_with_a_unet_matches_diffusers():
    """An LCM sampling loop (what LatentConsistencyModelPipeline runs, without its text encoder): a small
    random-weight UNet, 4 steps with a generator, the final denoised sample bounded against the same loop in
    float64 with diffusers' scheduler in float64."""
    steps = 4

    def run(sched, wide=False):
        unet = _tiny_unet()
        dtype = torch.float64 if wide else torch.float32
        if wide:
            unet = unet.double()
        g = torch.Generator().manual_seed(0)
        sched.set_timesteps(steps)
        x = torch.randn(2, 3, 8, 8, generator=g).to(dtype)
        with torch.no_grad():
            for t in sched.timesteps:
                eps = unet(x, t).sample
                x, denoised = sched.step(eps, t, x, generator=g, return_dict=False)
        return denoised

    peer = run(diffusers.LCMScheduler())
    ours = run(fdd.LCMScheduler())
    exact = run(float64_scheduler(diffusers, "LCMScheduler", {}), wide=True)
    assert exact.dtype == torch.float64 and peer.shape == (2, 3, 8, 8)
    assert peer.std() > 0.05
    assert_parity("LCM loop denoised", ours, peer, exact, steps)
