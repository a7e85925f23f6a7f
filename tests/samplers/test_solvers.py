"""The sampler math (``fastdiff.solvers``): each weight function against its definition, on every scalar kind.

The same function serves host floats (``fastdiff.sample``), 0-d tensors (``fastdiff.k_diffusion``: the tensors'
own dtype) and numpy arrays (``fastdiff.diffusers``: vectorised). The tests check each function's defining
property in float64, then that the three kinds agree: numpy arrays exactly (the same libm calls), float64 tensors
to a few ulp (torch's vectorised sqrt/exp are not always correctly rounded: sqrt(0.5) is 1 ulp off), float32
tensors to float32 rounding.
"""
import math

import numpy as np
import pytest
import torch

from fastdiff import solvers as S

RNG = np.random.default_rng(0)
SIGMA_PAIRS = [(float(a), float(a * f)) for a, f in zip(RNG.uniform(0.02, 80.0, 40), RNG.uniform(0.0, 1.0, 40))]


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ancestral_split_reaches_sigma_next_and_agrees_on_every_kind(eta):
    for s, s1 in SIGMA_PAIRS:
        down, up = S.ancestral_split(s, s1, eta)
        assert down ** 2 + up ** 2 == pytest.approx(s1 ** 2, rel=1e-12, abs=1e-300)
        assert 0.0 <= up <= s1 and 0.0 <= down <= s1
        if eta == 1.0:  # the DDPM posterior std in VE variables
            assert up == pytest.approx(s1 * math.sqrt(1 - s1 ** 2 / s ** 2), rel=1e-12)
        t_down, t_up = S.ancestral_split(torch.tensor(s, dtype=torch.float64), torch.tensor(s1, dtype=torch.float64),
                                         eta)
        assert float(t_down) == pytest.approx(down, rel=4e-16, abs=1e-300)
        assert float(t_up) == pytest.approx(up, rel=4e-16, abs=1e-300)
    arr = np.array(SIGMA_PAIRS)
    a_down, a_up = S.ancestral_split(arr[:, 0], arr[:, 1], eta)
    want = [S.ancestral_split(s, s1, eta) for s, s1 in SIGMA_PAIRS]
    np.testing.assert_array_equal(np.broadcast_to(a_down, len(want)), [w[0] for w in want])
    np.testing.assert_array_equal(np.broadcast_to(a_up, len(want)), [w[1] for w in want])


def test_brownian_overlap_weights_give_the_increments_covariance():
    """z2 = w_shared z1 + w_new z' has unit variance and Cov(z1, z2) = Cov(W(a), W(b)) / sqrt(a b) = sqrt(a / b);
    the array form agrees with the float form; a zero-length interval takes all new noise."""
    pairs = [(1.0, 4.0), (0.3, 0.3), (0.0, 2.0), (2.5, 7.0), (0.0, 0.0)]
    for a, b in pairs:
        w_shared, w_new = S.brownian_overlap_weights(a, b)
        assert w_shared**2 + w_new**2 == pytest.approx(1.0, rel=1e-15)
        assert w_shared == pytest.approx(math.sqrt(a / b) if b else 0.0, rel=1e-15)
    arr = np.array(pairs)
    got = np.stack(S.brownian_overlap_weights(arr[:, 0], arr[:, 1]), axis=1)
    np.testing.assert_allclose(got, [S.brownian_overlap_weights(a, b) for a, b in pairs], rtol=1e-15)


def test_ancestral_split_in_float32_tensors_rounds_like_float32():
    for s, s1 in SIGMA_PAIRS:
        down, up = S.ancestral_split(torch.tensor(s), torch.tensor(s1))
        assert down.dtype == torch.float32
        exact = S.ancestral_split(float(torch.tensor(s)), float(torch.tensor(s1)))
        # a handful of float32 operations on values <= s1: a few ulp of s1, and sigma_down = sqrt(s1^2 - up^2)
        # amplifies the rounding of s1^2 - up^2 by s1 / sigma_down
        assert abs(float(down) - exact[0]) <= 8 * 2**-24 * (s1 + s1 ** 2 / max(exact[0], 1e-30))
        assert abs(float(up) - exact[1]) <= 8 * 2**-24 * s1 + 1e-30


def test_churn_gamma_and_schedule():
    assert S.churn_gamma(1.0, 0.4, 4, 0.0, 10.0) == pytest.approx(0.1)
    assert S.churn_gamma(1.0, 100.0, 4, 0.0, 10.0) == S.SQRT2_MINUS_1  # capped
    assert S.churn_gamma(11.0, 0.4, 4, 0.0, 10.0) == 0.0  # outside [s_tmin, s_tmax]
    sig = np.array([0.5, 2.0, 11.0])
    np.testing.assert_array_equal(S.churn_gamma(sig, 0.4, 4, 1.0, 10.0), [0.0, 0.1, 0.0])
    hats, scales = S.churn_schedule([4.0, 2.0, 0.0], s_churn=0.5, s_tmin=0.0, s_tmax=5.0, s_noise=1.5)
    g = 0.25
    assert hats == pytest.approx([4.0 * (1 + g), 2.0 * (1 + g)])
    assert scales == pytest.approx([1.5 * math.sqrt(h ** 2 - s ** 2) for h, s in zip(hats, [4.0, 2.0])])
    t_hats, t_scales = S.churn_schedule(torch.tensor([4.0, 2.0, 0.0], dtype=torch.float64), 0.5, 0.0, 5.0, 1.5)
    assert [float(h) for h in t_hats] == hats
    assert t_scales == pytest.approx(scales, rel=4e-16)


def test_euler_coefs_define_the_euler_step():
    for s, s1 in SIGMA_PAIRS:
        c = S.euler_coefs(s, s1)
        x, d = 0.7, -1.3
        assert c["out_x"] * x + c["out_d"] * d == pytest.approx(x + (s1 - s) * (x - d) / s, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_x0_conversions_invert_the_forward_process(prediction):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    for abar in (0.999, 0.5, 1e-3):
        a, s = math.sqrt(abar), math.sqrt(1 - abar)
        x_vp = a * x0 + s * eps
        out = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[prediction]
        in_x, in_m = S.vp_x0_coefs(prediction, a, s)
        torch.testing.assert_close(in_x * x_vp + in_m * out, x0, rtol=0, atol=1e-9)
        sigma = s / a  # the same point in VE variables: x_ve = x_vp / a = x0 + sigma eps
        in_x, in_m = S.ve_x0_coefs(prediction, sigma)
        torch.testing.assert_close(in_x * (x_vp / a) + in_m * out, x0, rtol=0, atol=1e-9)
        vec = S.ve_x0_coefs(prediction, np.array([sigma, sigma]))
        assert [float(v[0]) for v in vec] == [float(v) for v in S.ve_x0_coefs(prediction, sigma)]


def test_x0_conversions_refuse_unknown_predictions():
    with pytest.raises(ValueError, match="prediction_type"):
        S.ve_x0_coefs("flow", 1.0)
    with pytest.raises(ValueError, match="prediction_type"):
        S.vp_x0_coefs("velocity", 0.5, 0.5)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_weights_integrate_polynomials_exactly(order):
    t = [5.0, 3.5, 2.2, 1.1, 0.4]
    i = order - 1
    w = S.lms_coefficients(t, i, order)
    for deg in range(order):  # the rule is exact for derivatives that are polynomials of degree < order
        approx = sum(wj * t[i - j] ** deg for j, wj in enumerate(w))
        exact = (t[i + 1] ** (deg + 1) - t[i] ** (deg + 1)) / (deg + 1)
        assert approx == pytest.approx(exact, rel=1e-11, abs=1e-11)


@pytest.mark.parametrize("rate", [-1.0, 1.0, 2.0])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_exp_lagrange_weights_integrate_the_interpolant_exactly(order, rate):
    """Against the definition: a fine composite Simpson sum of rate e^{rate (tau - h)} L_j(tau) over [0, h],
    and the weights reproduce the integral of every polynomial of degree < order through the nodes."""
    gen = np.random.default_rng(order)
    for _ in range(5):
        h = float(gen.uniform(0.05, 1.5))
        nodes = [0.0] + sorted((-gen.uniform(0.1, 2.0, order - 1)).tolist(), reverse=True)
        w = S.exp_lagrange_weights(h, nodes, rate)
        tau = np.linspace(0.0, h, 4001)
        kernel = rate * np.exp(rate * (tau - h))
        simpson = np.ones_like(tau)
        simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
        simpson *= (tau[1] - tau[0]) / 3.0
        for j in range(order):
            basis = np.ones_like(tau)
            for k in range(order):
                if k != j:
                    basis *= (tau - nodes[k]) / (nodes[j] - nodes[k])
            assert w[j] == pytest.approx(float(np.sum(simpson * kernel * basis)), rel=1e-9, abs=1e-12)
        for deg in range(order):  # exact on polynomials: sum_j w_j p(node_j) = int kernel p
            exact = float(np.sum(simpson * kernel * tau ** deg))
            assert sum(wj * nj ** deg for wj, nj in zip(w, nodes)) == pytest.approx(exact, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("form", ["x0", "x0-sde", "eps", "eps-sde"])
def test_dpm_solver_coefs_are_diffusers_formulas_and_share_the_deis_weights(form):
    """Against DPM-Solver's closed forms (diffusers' expressions), and the first-order / heun second-order
    updates equal exp_lagrange_weights for one and two nodes (the same integral)."""
    gen = np.random.default_rng(7)
    rate = {"x0": 1.0, "x0-sde": 2.0, "eps": -1.0, "eps-sde": -1.0}[form]
    for _ in range(5):
        h, back = float(gen.uniform(0.05, 1.5)), -float(gen.uniform(0.1, 1.0))
        at, as_ = float(gen.uniform(0.1, 0.9)), float(gen.uniform(0.1, 0.9))
        st, ss = math.sqrt(1 - at * at), math.sqrt(1 - as_ * as_)
        c = S.dpm_solver_coefs(form, h, at, st, as_, ss)
        eh, e2h = math.exp(-h), math.exp(-2 * h)
        if form == "x0":
            want = dict(x=st / ss, d0=-at * (eh - 1), d1=at * ((eh - 1) / h + 1), d2=-at * ((eh - 1 + h) / h ** 2 - 0.5))
        elif form == "x0-sde":
            want = dict(x=st / ss * eh, d0=at * (1 - e2h), d1=at * ((1 - e2h) / (-2 * h) + 1),
                        d2=at * ((1 - e2h - 2 * h) / (2 * h) ** 2 - 0.5), noise=st * math.sqrt(1 - e2h))
        elif form == "eps":
            em1 = math.exp(h) - 1
            want = dict(x=at / as_, d0=-st * em1, d1=-st * (em1 / h - 1), d2=-st * ((em1 - h) / h ** 2 - 0.5))
        else:
            em1 = math.exp(h) - 1
            want = dict(x=at / as_, d0=-2 * st * em1, d1=-2 * st * (em1 / h - 1), noise=st * math.sqrt(math.exp(2 * h) - 1))
        for key, v in want.items():
            assert c[key] == pytest.approx(v, rel=1e-10, abs=1e-13), key
        assert c["d1_mid"] == pytest.approx(c["d0"] / 2, rel=1e-15)
        scale = c["d0"] / S.exp_lagrange_weights(h, [0.0], rate)[0]
        w = [scale * v for v in S.exp_lagrange_weights(h, [0.0, back], rate)]
        r0 = -back / h  # heun: d0 * m0 + d1 * (m0 - m1) / r0
        assert w == pytest.approx([c["d0"] + c["d1"] / r0, -c["d1"] / r0], rel=1e-10)


def test_exp_lagrange_weights_edge_steps():
    assert S.exp_lagrange_weights(0.0, [0.0, -0.5], -1.0) == [0.0, 0.0]  # a repeated sigma: no step
    assert S.exp_lagrange_weights(math.inf, [0.0], 1.0) == [1.0]  # into sigma = 0: the x0 estimate itself
    assert all(math.isnan(v) for v in S.exp_lagrange_weights(math.inf, [0.0, -0.5], 1.0))


@pytest.mark.parametrize("order", [1, 2, 4, 6])
def test_lms_weight_table_rows_are_each_steps_weights(order):
    t = [14.6, 9.1, 5.3, 3.0, 1.7, 0.9, 0.41, 0.0]  # ends at sigma = 0, as a sampling schedule does
    table = S.lms_weight_table(t, order)
    assert table.shape == (len(t) - 1, order)
    for i in range(len(t) - 1):
        k = min(i + 1, order)  # the warm-up steps use the orders their derivatives allow
        assert table[i, :k].tolist() == S.lms_coefficients(t, i, k)
        assert not table[i, k:].any()
    if order == 1:  # Euler: each weight is the step in sigma
        assert table[:, 0].tolist() == pytest.approx([b - a for a, b in zip(t, t[1:])], rel=1e-14)


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_preconditioning_gives_unit_variance_input_and_target(sigma_data):
    """Karras et al. (2022), Appendix B.6: c_in makes the input unit-variance and c_out the training target
    ``(y - c_skip (y + n)) / c_out``; floats, numpy arrays and 0-d tensors agree."""
    sig = np.array([0.002, 0.3, 1.0, 7.5, 80.0])
    c_in = S.edm_c_in(sig, sigma_data)
    c_skip, c_out = S.edm_x0_coefs("epsilon", sig, sigma_data)
    np.testing.assert_allclose(c_in ** 2 * (sig ** 2 + sigma_data ** 2), 1.0, rtol=1e-14)
    np.testing.assert_allclose(((1 - c_skip) ** 2 * sigma_data ** 2 + c_skip ** 2 * sig ** 2) / c_out ** 2, 1.0,
                               rtol=1e-12)
    v_skip, v_out = S.edm_x0_coefs("v_prediction", sig, sigma_data)
    assert np.array_equal(v_skip, c_skip) and np.array_equal(v_out, -c_out)
    assert S.edm_x0_coefs("epsilon", 7.5, sigma_data) == (c_skip[3], c_out[3])
    t_skip, t_out = S.edm_x0_coefs("epsilon", torch.tensor(7.5, dtype=torch.float64), sigma_data)
    assert (float(t_skip), float(t_out)) == (c_skip[3], c_out[3])
    with pytest.raises(ValueError, match="Prediction type"):
        S.edm_x0_coefs("sample", 1.0, sigma_data)

@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_rhos_solve_the_order_conditions(order, variant):
    hh = -0.4
    rks = [-1.3, -0.6][: order - 1] + [1.0]
    b_h, rhos_p, rhos_c = S.unipc_rhos(hh, rks, order, variant)
    assert b_h == (hh if variant == "bh1" else math.expm1(hh))
    assert len(rhos_p) == max(order - 1, 0) and len(rhos_c) == order
    # the corrector's rhos satisfy sum_k rho_k r_k^(i-1) = b_i (Zhao et al. 2023, eq. for the B(h) variants)
    if order > 1:
        h_phi_k, fact, b = math.expm1(hh) / hh - 1.0, 1.0, []
        for i in range(1, order + 1):
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        for i in range(order):
            assert sum(r ** i * rho for r, rho in zip(rks, rhos_c)) == pytest.approx(b[i], rel=1e-10, abs=1e-12)
    # a singular system (an infinite step) drops the higher-order terms instead of raising
    if order == 3:
        assert S.unipc_rhos(hh, [1.0, 1.0, 1.0], 3, variant)[2] == [0.0, 0.0, 0.0]


def test_elementary_functions_keep_the_scalar_kind():
    t32 = torch.tensor(0.5)
    for fn in (S.log, S.exp, S.expm1, S.sqrt):
        assert fn(t32).dtype == torch.float32
        assert isinstance(fn(0.5), float)
        assert isinstance(fn(np.array([0.5])), np.ndarray)
        assert float(fn(torch.tensor(0.5, dtype=torch.float64))) == pytest.approx(fn(0.5), rel=4e-16)
    assert S.log(0.0) == -math.inf and math.isnan(S.log(-1.0))
    assert S.sqrt(-1e-300) == 0.0  # a difference of equal squares rounded below 0
    assert float(S.lerp_half(torch.tensor(1.0), torch.tensor(3.0))) == S.lerp_half(1.0, 3.0) == 2.0
    assert S.t_of(0.0) == math.inf and S.sigma_of(math.inf) == 0.0
    assert S.like(2.0, torch.tensor(1.0, dtype=torch.float64)).dtype == torch.float64
