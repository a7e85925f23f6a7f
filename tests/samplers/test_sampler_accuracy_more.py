"""Accuracy of the ComfyUI solver set (ipndm, ipndm_v, deis, heunpp2, er_sde, seeds_2/3, sa_solver(_pece), lcm,
dpmpp_2m_sde_heun, dpm_fast, dpm_adaptive) on the exact Gaussian mixture of test_sampler_accuracy.py.

* Deterministic samplers (and the stochastic ones with their noise off, which are then ODE solvers): pathwise
  against the float64 RK4 solution of the probability-flow ODE from the same start; the error must fall at the
  method's measured order when the steps double (bounds around the rate the Karras grid allows, as there).
* Stochastic samplers: the law of the output against exact samples, with the statistics of test_sampler_accuracy.
"""
import math

import pytest
import torch

import fastdiff
from fastdiff import k_diffusion as K
from fastdiff.sampling import initial_noise, list_samplers, sample
from fastdiff.toy import GaussianMixture
from test_sampler_accuracy import (CHI2_5DOF_P001, GMM, N_LAW, SMAX, SMIN, STEPS_LAW, VAR_TOL, exact_law,  # noqa: F401
                                   assert_exact_law, law_run, mode_stats, ode_case, rel_errors)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW = ("ipndm", "ipndm_v", "deis", "heunpp2", "lcm", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
       "dpmpp_2m_sde_heun", "dpm_fast")


def identity_scaler(v):
    return v


# name, options, (low, high) bounds of the per-doubling error ratio (16 -> 64 steps), max relative error at 32
ORDER_CASES = [
    ("ipndm", {}, (4.5, 10.0), 0.01),              # 4th-order Adams-Bashforth weights (measured ~6.6)
    ("ipndm", dict(max_order=2), (2.4, 4.5), 0.02),
    ("ipndm_v", {}, (4.5, 10.0), 0.01),            # variable-step weights (~7.5)
    ("deis", {}, (3.0, 6.0), 0.01),                # tab, order 3 (~4.1 on this grid)
    ("deis", dict(deis_mode="rhoab"), (3.0, 6.0), 0.01),
    ("heunpp2", {}, (1.7, 2.5), 0.05),             # weights sigma_j / (3 sigma_0): first order (~2.0)
    ("dpmpp_2m_sde_heun", dict(eta=0.0), (3.0, 6.0), 0.02),
    ("er_sde", dict(noise_scaler=identity_scaler), (2.5, 6.0), 0.02),  # scaler f(v) = v: ER-SDE is the ODE
    ("seeds_2", dict(eta=0.0), (2.5, 6.0), 0.01),  # second order (~3.3)
    ("seeds_3", dict(eta=0.0), (4.5, 12.0), 0.002),  # third order (~5.6)
    ("sa_solver", dict(eta=0.0), (6.0, 20.0), 0.005),  # tau = 0: Adams predictor-corrector (~12, pre-asymptotic)
    ("sa_solver_pece", dict(eta=0.0), (6.0, 20.0), 0.005),
    ("dpm_fast", {}, (4.5, 12.0), 0.002),          # DPM-Solver-3 between the given sigmas (~7.1)
]


@pytest.mark.parametrize("name,options,ratio,max32", ORDER_CASES,
                         ids=[f"{c[0]}{'-' + '-'.join(map(str, c[1].values())) if c[1] else ''}" for c in ORDER_CASES])
def test_convergence_order(ode_case, name, options, ratio, max32):
    """A wrong weight in any step of a multistep / multistage rule drops the rate to first order or adds an O(1)
    error; the bounds are tight enough to tell first, second and third order apart."""
    x, ref = ode_case
    e16, e32, e64 = rel_errors(name, x, ref, (16, 32, 64), **options)
    rate = math.sqrt(e16 / e64)
    assert ratio[0] <= rate <= ratio[1], f"{name}: errors {e16:.2e} {e32:.2e} {e64:.2e}, ratio {rate:.2f}"
    assert e32 < max32, f"{name}: relative error {e32:.3%} at 32 steps"


def test_dpm_adaptive_reaches_its_tolerance(ode_case):
    """k-diffusion's dpm_adaptive (the face over fastdiff.samplers.dpm_adaptive) from SMAX to 1e-4 in float64:
    the error against the ODE solution stays below rtol and falls about tenfold with a tenfold tighter tolerance
    (a wrong embedded solution would either stall the controller or leave the error at the low order's)."""
    x, ref = ode_case
    lo, hi = torch.tensor(1e-4, dtype=torch.float64), torch.tensor(SMAX, dtype=torch.float64)
    errors = []
    for rtol, atol in ((1e-2, 1e-3), (1e-3, 1e-4)):
        out, info = K.sample_dpm_adaptive(GMM.denoiser, x, lo, hi, rtol=rtol, atol=atol, return_info=True,
                                          disable=True)
        errors.append(((out - ref).norm() / ref.norm()).item())
        assert errors[-1] < rtol, (rtol, errors[-1], info)
        assert info["nfe"] == 3 * info["steps"] and info["n_accept"] + info["n_reject"] == info["steps"]
    assert errors[1] < errors[0] / 4, errors


def test_heun_variant_is_dpmpp_2m_sde_with_heun():
    x = initial_noise((16, 2), 3) * SMAX
    sig = fastdiff.karras_sigmas(8, SMIN, SMAX)
    a = sample(GMM.denoiser, x, sig, sampler="dpmpp_2m_sde_heun", seed=4)
    b = sample(GMM.denoiser, x, sig, sampler="dpmpp_2m_sde", solver_type="heun", seed=4)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- the law
# with default options er_sde, seeds_2, seeds_3, sa_solver, sa_solver_pece and dpmpp_2m_sde_heun are in
# fastdiff.STOCHASTIC, whose law test_sampler_accuracy.py checks with these statistics; here the other options
LAW_CASES = [("sa_solver", dict(start_sigma=5.0, end_sigma=0.3)),
             ("sa_solver_pece", dict(start_sigma=5.0, end_sigma=0.3)),
             ("seeds_2", dict(r=0.3)), ("er_sde", dict(max_stage=2))]


@pytest.mark.parametrize("name,options", LAW_CASES,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in LAW_CASES])
def test_stochastic_law(exact_law, name, options):
    """Mode weights (chi-square, p = 1e-3), within-mode spread (VAR_TOL: 4 standard errors + 5% discretisation
    bias at 128 steps) and sliced Wasserstein (gross errors only) vs exact samples. The spread check sees a 10%
    error in the injected noise of seeds_2 / seeds_3 / sa_solver (test below); ER-SDE's noise is a small part of
    its step with the default scaler, so there it only sees larger errors."""
    assert_exact_law(exact_law, name, law_run(name, **options))


@pytest.mark.parametrize("name", ["seeds_2", "seeds_3", "sa_solver"])
def test_law_check_detects_wrong_noise_scale(name):
    _, ratio = mode_stats(law_run(name, s_noise=0.9))
    assert abs(ratio - 1) > VAR_TOL, f"{name} s_noise=0.9: ratio {ratio:.3f} not detected"


def test_lcm_law():
    """LCM with an exact denoiser is not an exact sampler: each step replaces x by E[x0 | x] and renoises it, so
    the within-mode variance follows V' = (v / (v + s^2))^2 V + s_next^2 (v the mode variance; exact for separated
    Gaussian modes), ending near 0.48 v on this grid; the mode weights stay exact. The check (4 standard errors)
    sees a 10% error in the renoising scale (the prediction moves by ~0.1)."""
    sig = fastdiff.karras_sigmas(STEPS_LAW, SMIN, SMAX).double().tolist()
    v = float(GMM.stds[0]) ** 2
    var = sig[0] ** 2
    for s, s_next in zip(sig[:-1], sig[1:]):
        var = (v / (v + s * s)) ** 2 * var + s_next ** 2
    predicted = var / v
    chi2, ratio = mode_stats(law_run("lcm"))
    assert chi2 < CHI2_5DOF_P001, f"lcm: mode weights off (chi2 {chi2:.1f})"
    assert abs(ratio - predicted) < 4 * predicted / math.sqrt(N_LAW) + 0.01, (ratio, predicted)


def test_lcm_flow_noise_scaling():
    """noise_scaling='flow' renoises as (1 - s) x0 + s z: with a constant x0 model the output is exactly that."""
    x = torch.zeros(4, 2, dtype=torch.float64)
    sig = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    seen = []
    out = sample(lambda v, s: torch.ones_like(v), x, sig, sampler="lcm", noise_scaling="flow", seed=2,
                 callback=lambda d: seen.append(d["x"].clone()))
    z = (seen[1] - 0.5) / 0.5  # the renoised state: 0.5 * 1 + 0.5 z
    assert torch.equal(out, torch.ones_like(out)) and z.abs().max() > 0.05


# ---------------------------------------------------------------------------------------------- API
def test_every_new_name_runs():
    assert set(NEW) <= set(list_samplers())
    x = initial_noise((8, 2), 0) * 10.0
    for name in NEW:
        for sig in (fastdiff.karras_sigmas(6, 0.01, 10.0), torch.tensor([10.0, 1.0, 0.0]), torch.tensor([10.0, 0.0])):
            out = sample(GMM.denoiser, x, sig, sampler=name, seed=0)
            assert out.shape == x.shape and torch.isfinite(out).all(), (name, sig)


def test_flow_schedules_run():
    """The half-log-SNR samplers on a rectified-flow schedule (first sigma 1 moved below 1, as ComfyUI does)."""
    x = initial_noise((8, 2), 0)

    def flow_x0(v, s):
        s = float(s.reshape(-1)[0])
        return GMM.denoiser(v / (1 - s), torch.full((v.shape[0],), s / (1 - s), dtype=v.dtype))

    sig = torch.linspace(1.0, 0.0, 9)
    for name in ("er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "dpmpp_2m_sde", "dpmpp_2m_sde_heun"):
        out = sample(flow_x0, x, sig, sampler=name, seed=0, flow=True)
        assert torch.isfinite(out).all(), name


@pytest.mark.parametrize("name,options,match", [
    ("ipndm", dict(max_order=5), "max_order"),
    ("ipndm_v", dict(max_order=0), "max_order"),
    ("deis", dict(deis_mode="bogus"), "deis_mode"),
    ("deis", dict(max_order=2.0), "max_order"),
    ("lcm", dict(noise_scaling="vp"), "noise_scaling"),
    ("er_sde", dict(max_stage=4), "max_stage"),
    ("er_sde", dict(s_noise=-1.0), "s_noise"),
    ("seeds_2", dict(r=1.5), "r must"),
    ("seeds_3", dict(r_1=0.7, r_2=0.3), "r_1 must be below r_2"),
    ("seeds_2", dict(eta=-0.5), "eta"),
    ("sa_solver", dict(predictor_order=4), "predictor_order"),
    ("sa_solver_pece", dict(corrector_order=5), "corrector_order"),
    ("dpmpp_2m_sde_heun", dict(solver_type="rk4"), "solver_type"),
    ("dpm_fast", dict(orders=[3, 3]), "orders"),
    ("dpm_fast", dict(eta=-1.0), "eta"),
])
def test_bad_options(name, options, match):
    x = initial_noise((2, 2), 0) * 10.0
    with pytest.raises(ValueError, match=match):
        sample(GMM.denoiser, x, fastdiff.karras_sigmas(4, 0.01, 10.0), sampler=name, **options)


def test_bad_callables():
    x = initial_noise((2, 2), 0) * 10.0
    sig = fastdiff.karras_sigmas(4, 0.01, 10.0)
    with pytest.raises(TypeError, match="noise_scaler"):
        sample(GMM.denoiser, x, sig, sampler="er_sde", noise_scaler=3.0)
    with pytest.raises(TypeError, match="tau_func"):
        sample(GMM.denoiser, x, sig, sampler="sa_solver", tau_func="window")


@pytest.mark.parametrize("name", NEW)
def test_triton_kernel_matches_float64_torch_path(name):
    """backend='triton' (float32 storage and arithmetic, the in-kernel Philox noise) vs the float64 torch path with
    the same seed: the history / x_eval slots each row uses are read the same way by the kernel (measured
    <= 3e-6 relative over 10 steps; a slot read wrongly gives O(1))."""
    gmm3 = GaussianMixture.ring(k=4, radius=3.0, std=0.6, dim=3)
    x = initial_noise((3, 2, 3), 0, dtype=torch.float64) * 10.0
    sig = fastdiff.karras_sigmas(10, 0.05, 10.0)
    ref = sample(gmm3.denoiser, x, sig, sampler=name, seed=3, backend="torch")
    out = sample(gmm3.denoiser, x.float(), sig, sampler=name, seed=3, backend="triton")
    assert ((out.double() - ref).norm() / ref.norm()).item() < 2e-5
