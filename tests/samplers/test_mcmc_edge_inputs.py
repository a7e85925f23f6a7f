"""MCMC edge inputs: empty batches work everywhere; errors from user callables name the callable (and the chain)."""
import math

import pytest
import torch

import fastdiff

LP = lambda v: -0.5 * (v ** 2).flatten(1).sum(1)  # noqa: E731
GLP = lambda v: -v  # noqa: E731
EMPTY = torch.randn(0, 3)
META = torch.device("meta")


@pytest.mark.parametrize("backend", ("torch", "triton"))
def test_langevin_and_annealed_langevin_on_an_empty_batch(backend):
    assert fastdiff.langevin(GLP, EMPTY, 0.1, 3, seed=0, backend=backend).shape == (0, 3)
    out = fastdiff.annealed_langevin(lambda v, s: -v, EMPTY, torch.tensor([2.0, 1.0]), n_steps_each=2, seed=0,
                                     backend=backend)
    assert out.shape == (0, 3)


@pytest.mark.parametrize("kwargs", [{}, {"grad_log_prob": GLP}, {"adapt_steps": 2, "return_step_size": True},
                                    {"step_size": torch.zeros(0)}], ids=["autograd", "grad", "adapt", "tensor-step"])
def test_mala_on_an_empty_batch_returns_empty_results_and_stats(kwargs):
    kwargs = dict(kwargs)
    step = kwargs.pop("step_size", 0.1)
    res = fastdiff.mala(LP, EMPTY, step, 3, seed=0, **kwargs)
    assert res[0].shape == (0, 3)
    assert all(t.shape == (0,) for t in res[1:])  # acceptance rates (and step sizes): empty
    x, rate = fastdiff.mala(LP, torch.randn(0, 2, 2), 0.1, 0, seed=0)
    assert x.shape == (0, 2, 2) and rate.shape == (0,)


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("snr_rule", ["batch_mean", "per_sample"])
def test_predictor_corrector_on_an_empty_batch(sde, snr_rule):
    out = fastdiff.predictor_corrector(lambda v, t: -v, EMPTY, sde, 30, seed=0, snr_rule=snr_rule)
    assert out.shape == (0, 3)
    out = fastdiff.predictor_corrector(lambda v, t: -v, EMPTY, sde, 30, seed=0, predictor="none")
    assert out.shape == (0, 3)


@pytest.mark.parametrize("snr_rule", ["batch_mean", "per_sample"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_predictor_corrector_names_the_score_model_and_chain_of_a_non_finite_score(snr_rule, bad):
    def score(v, t):
        g = -v.clone()
        g[2, 1] = bad
        return g
    with pytest.raises(ValueError, match=r"score_model.*chain 2") as err:
        fastdiff.predictor_corrector(score, torch.randn(4, 3), "ve", 10, seed=0, snr_rule=snr_rule)
    assert "step_size" not in str(err.value)


CALLABLE_CASES = {
    "mala-log_prob-device": (lambda: fastdiff.mala(lambda v: LP(v).to(META), torch.randn(4, 3), 0.1, 3, seed=0),
                             ValueError, "log_prob"),
    "mala-log_prob-device-with-grad": (lambda: fastdiff.mala(lambda v: LP(v).to(META), torch.randn(4, 3), 0.1, 3,
                                                             seed=0, grad_log_prob=GLP), ValueError, "log_prob"),
    "mala-log_prob-int": (lambda: fastdiff.mala(lambda v: LP(v).long(), torch.randn(4, 3), 0.1, 3, seed=0,
                                                grad_log_prob=GLP), TypeError, "log_prob"),
    "mala-log_prob-list": (lambda: fastdiff.mala(lambda v: [0.0] * 4, torch.randn(4, 3), 0.1, 3, seed=0,
                                                 grad_log_prob=GLP), TypeError, "log_prob"),
    "mala-grad_log_prob-device": (lambda: fastdiff.mala(LP, torch.randn(4, 3), 0.1, 3, seed=0,
                                                        grad_log_prob=lambda v: (-v).to(META)),
                                  ValueError, "grad_log_prob"),
    "langevin-grad_log_prob-device": (lambda: fastdiff.langevin(lambda v: (-v).to(META), torch.randn(4, 3), 0.1, 3,
                                                                seed=0), ValueError, "grad_log_prob"),
    "annealed-score_model-device": (lambda: fastdiff.annealed_langevin(lambda v, s: (-v).to(META), torch.randn(4, 3),
                                                                       torch.tensor([2.0, 1.0]), n_steps_each=2,
                                                                       seed=0), ValueError, "score_model"),
    "pc-score_model-device": (lambda: fastdiff.predictor_corrector(lambda v, t: (-v).to(META), torch.randn(4, 3),
                                                                   "ve", 10, seed=0), ValueError, "score_model"),
    "pc-score_model-device-predictor-only": (
        lambda: fastdiff.predictor_corrector(lambda v, t: (-v).to(META), torch.randn(4, 3), "ve", 10, seed=0,
                                             corrector="none"), ValueError, "score_model"),
    "energy_grad-device": (lambda: fastdiff.energy_grad(lambda v: LP(v).to(META))(torch.randn(4, 3)),
                           ValueError, "module_or_fn"),
}


@pytest.mark.parametrize("name", sorted(CALLABLE_CASES))
def test_user_callable_outputs_are_checked_naming_the_callable(name):
    fn, exc, what = CALLABLE_CASES[name]
    with pytest.raises(exc, match=what) as err:
        fn()
    assert str(err.value).startswith(what), str(err.value)
