"""SASolverScheduler beyond the parity cases: a custom ``tau_func``, the Philox option, what is not provided."""
import pickle

import pytest
import torch

import fastdiff.diffusers as fdd

diffusers = pytest.importorskip("diffusers", reason="diffusers parity needs the 'compat' extra")


def _run(s, n=7, seed=0, shape=(2, 3, 5, 3), generator=True):
    s.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    for t in s.timesteps:
        kw = {"generator": g} if generator else {}
        x = s.step(torch.sin(x * 1.1 + float(t) / 250), t, x, **kw).prev_sample
    return x


@pytest.mark.parametrize("cfg", [{"corrector_order": 3}, {"algorithm_type": "noise_prediction", "predictor_order": 3}])
def test_custom_tau_func_matches_diffusers(cfg):
    def tau(t):
        return 0.7 if t > 300 else 0.2

    ours = _run(fdd.SASolverScheduler(tau_func=tau, **cfg))
    ref = _run(diffusers.SASolverScheduler(tau_func=tau, **cfg))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_without_a_generator_the_noise_is_diffusers_global_draw():
    outs = []
    for cls in (fdd.SASolverScheduler, diffusers.SASolverScheduler):
        torch.manual_seed(3)
        outs.append(_run(cls(), generator=False))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4 * float(outs[1].abs().max()))


def test_philox_option_repeats_under_manual_seed_and_differs_from_the_global_draw():
    runs = []
    for philox in (True, True, False):
        torch.manual_seed(5)
        s = fdd.SASolverScheduler()
        s.philox_noise = philox
        runs.append(_run(s, generator=False))
    assert torch.equal(runs[0], runs[1]) and torch.isfinite(runs[0]).all()
    assert not torch.allclose(runs[0], runs[2])


def test_default_tau_pickles():
    s = fdd.SASolverScheduler()
    s.set_timesteps(5)
    back = pickle.loads(pickle.dumps(s))
    assert back.tau_func(500) == 1 and back.tau_func(100) == 0


@pytest.mark.parametrize("cfg,exc", [({"predictor_order": 4}, NotImplementedError),
                                     ({"thresholding": True}, NotImplementedError),
                                     ({"corrector_order": 0}, ValueError),
                                     ({"algorithm_type": "dpmsolver++"}, NotImplementedError),
                                     ({"tau_func": 1.0}, TypeError)])
def test_unsupported_or_bad_config_raises(cfg, exc):
    with pytest.raises(exc):
        fdd.SASolverScheduler(**cfg)
