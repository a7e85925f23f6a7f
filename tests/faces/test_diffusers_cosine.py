"""CosineDPMSolverMultistepScheduler against diffusers' class (no diffusers test file covers it): the Brownian
noise from the generator's seed on both sides, trajectories bounded like test_diffusers_compat's against
diffusers' own code in float64; the Philox option; copies; config round trip."""
import copy
import pickle
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers parity tests need the 'compat' extra")
pytest.importorskip("torchsde", reason="diffusers' class needs torchsde")

import fastdiff.diffusers as fdd  # noqa: E402
from peer_float64 import assert_parity, float64_scheduler  # noqa: E402

NAME = "CosineDPMSolverMultistepScheduler"
# (final_sigmas_type="sigma_min" is left out: diffusers' own step then queries its Brownian path at an empty
# interval at the edge of its range and recurses without end; the same happens here, as in diffusers)
CFGS = [{}, {"sigma_schedule": "karras", "prediction_type": "epsilon"}, {"solver_type": "heun"},
        {"solver_order": 1}, {"lower_order_final": False, "euler_at_final": True, "sigma_data": 0.5}]


def _model(x, t):
    wide = x if x.dtype == torch.float64 else x.float()
    return (torch.sin(wide * 1.3 + float(t) * 3.0) * 0.9 + 0.05 * wide).to(x.dtype)


def _steps(s, n, ref_ts, dtype=torch.float32, forced=None, seed=0, shape=(2, 3, 17)):
    s.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * float(s.init_noise_sigma)).to(dtype)
    out = []
    for i, t in enumerate(s.timesteps):
        if forced is not None:
            x = forced[i]["x"].to(dtype)
        inp = s.scale_model_input(x, t)
        out.append({"x": x, "prev": s.step(_model(inp, ref_ts[i]), t, x, generator=g).prev_sample})
        x = out[-1]["prev"]
    return out


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("cfg", CFGS, ids=str)
def test_cosine_dpm_parity_with_diffusers(cfg):
    n = 9
    ours, ref = fdd.CosineDPMSolverMultistepScheduler(**cfg), diffusers.CosineDPMSolverMultistepScheduler(**cfg)
    ref.set_timesteps(n)
    ours.set_timesteps(n)
    assert torch.equal(ours.timesteps, ref.timesteps) and torch.equal(ours.sigmas, ref.sigmas)
    ref_ts = ref.timesteps.clone()
    exact = float64_scheduler(diffusers, NAME, cfg)
    exact_steps = _steps(exact, n, ref_ts, torch.float64)
    exact_forced = _steps(exact, n, ref_ts, torch.float64, forced=exact_steps)
    a_f, b_f = _steps(ours, n, ref_ts, forced=exact_forced), _steps(ref, n, ref_ts, forced=exact_forced)
    for i, (a, b, c) in enumerate(zip(a_f, b_f, exact_forced)):
        assert_parity(f"{NAME} step {i} prev_sample", a["prev"], b["prev"], c["prev"], 1)
    a, b = _steps(ours, n, ref_ts), _steps(ref, n, ref_ts)
    assert_parity(f"{NAME} prev_sample", a[-1]["prev"], b[-1]["prev"], exact_steps[-1]["prev"], n)
    x0, noise = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    torch.testing.assert_close(ours.add_noise(x0, noise, ours.timesteps[[1, 4]]),
                               ref.add_noise(x0, noise, ref.timesteps[[1, 4]]))


def test_generator_is_never_drawn_from_and_no_generator_draws_the_seed_globally():
    s = fdd.CosineDPMSolverMultistepScheduler()
    torch.manual_seed(3)
    glob = torch.get_rng_state()
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    s.set_timesteps(4)
    x = torch.ones(1, 2, 9) * s.init_noise_sigma
    for t in s.timesteps:  # the path is seeded from g.initial_seed(): neither generator moves
        x = s.step(torch.sin(s.scale_model_input(x, t)), t, x, generator=g).prev_sample
    assert torch.equal(g.get_state(), state) and torch.equal(torch.get_rng_state(), glob)
    s.set_timesteps(4)
    for t in s.timesteps:  # without a generator: one global randint draw at the first step, as diffusers
        x = s.step(torch.sin(s.scale_model_input(x, t)), t, x).prev_sample
    after = torch.get_rng_state()
    torch.set_rng_state(glob)
    torch.randint(0, 2**63 - 1, [])
    assert torch.equal(after, torch.get_rng_state()) and torch.isfinite(x).all()


def test_philox_option_repeats_and_differs_from_the_brownian_path():
    runs = []
    for philox in (True, True, False):
        s = fdd.CosineDPMSolverMultistepScheduler()
        s.use_brownian_noise = not philox
        s.set_timesteps(5)
        x = torch.ones(1, 2, 9) * s.init_noise_sigma
        g = torch.Generator().manual_seed(11)
        for t in s.timesteps:
            x = s.step(torch.sin(s.scale_model_input(x, t)), t, x, generator=g).prev_sample
        runs.append(x)
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


def test_set_noise_seed_keys_philox_noise_without_a_generator_and_leaves_generator_steps_alone():
    """Without a generator, ``set_noise_seed`` gives the Philox noise (no tree, no global draw; the same run twice,
    another seed another run); steps given a generator keep diffusers' Brownian path from its seed."""

    def run(s, seed=None, g_seed=None):
        s.set_timesteps(5)
        x = torch.ones(1, 2, 9) * s.init_noise_sigma
        g = None if g_seed is None else torch.Generator().manual_seed(g_seed)
        for t in s.timesteps:
            x = s.step(torch.sin(s.scale_model_input(x, t)), t, x, generator=g).prev_sample
        return x

    s = fdd.CosineDPMSolverMultistepScheduler()
    s.set_noise_seed(4)
    glob = torch.get_rng_state()
    a, b = run(s), run(s)
    assert s.noise_sampler is None and torch.equal(a, b) and torch.equal(torch.get_rng_state(), glob)
    s.set_noise_seed(5)
    assert not torch.allclose(run(s), a)
    with_gen = run(s, g_seed=11)
    assert s.noise_sampler is not None
    assert torch.equal(with_gen, run(fdd.CosineDPMSolverMultistepScheduler(), g_seed=11))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_taken_mid_run_continues_the_same_path(how):
    s = fdd.CosineDPMSolverMultistepScheduler()
    s.set_timesteps(6)
    x = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(1)) * s.init_noise_sigma
    ts = list(s.timesteps)
    g = torch.Generator().manual_seed(5)
    for t in ts[:2]:
        x = s.step(torch.sin(s.scale_model_input(x, t)), t, x, generator=g).prev_sample
    c = copy.deepcopy(s) if how == "deepcopy" else pickle.loads(pickle.dumps(s))
    a, b = x, x
    for t in ts[2:]:
        a = s.step(torch.sin(s.scale_model_input(a, t)), t, a, generator=g).prev_sample
        b = c.step(torch.sin(c.scale_model_input(b, t)), t, b, generator=g).prev_sample
    assert torch.equal(a, b)


def test_config_round_trip_and_third_order_refused(tmp_path):
    ours = fdd.CosineDPMSolverMultistepScheduler(sigma_max=80.0, solver_type="bh2")
    assert ours.config.solver_type == "midpoint"
    ours.save_pretrained(tmp_path)
    theirs = diffusers.CosineDPMSolverMultistepScheduler.from_pretrained(tmp_path)
    assert fdd.CosineDPMSolverMultistepScheduler.from_config(theirs.config).config.sigma_max == 80.0
    s = fdd.CosineDPMSolverMultistepScheduler(solver_order=3, lower_order_final=False)
    s.set_timesteps(20)
    x = torch.randn(1, 2, 3)
    with pytest.raises(NotImplementedError, match="third-order"):
        for t in s.timesteps:
            x = s.step(torch.sin(x), t, x).prev_sample
