"""Tests for fastdiff.schedules: values against the published formulas
(recomputed here independently in numpy / by hand), inverses, caching and
argument checking."""
import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from fastdiff.schedules import (  # noqa: E402
    BETA_SCHEDULES,
    ContinuousVPSchedule,
    DiscreteVPSchedule,
    FlowMatchingSchedule,
    VESchedule,
    exponential_sigmas,
    inference_timesteps,
    karras_sigmas,
    make_betas,
    polyexponential_sigmas,
    rescale_zero_terminal_snr,
    vp_sigmas,
)

F64 = torch.float64
SD_KW = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _np(x):
    return x.detach().cpu().numpy()


# --------------------------------------------------------------------------
# make_betas
# --------------------------------------------------------------------------
def test_linear_betas_endpoints_and_spacing():
    b = make_betas("linear", 1000, 1e-4, 0.02)
    assert b.dtype == F64 and b.shape == (1000,) and b.device.type == "cpu"
    assert b[0].item() == 1e-4 and b[-1].item() == 0.02
    np.testing.assert_allclose(_np(b), np.linspace(1e-4, 0.02, 1000), rtol=0, atol=1e-17)
    np.testing.assert_allclose(np.diff(_np(b)), (0.02 - 1e-4) / 999, rtol=1e-9)


def test_scaled_linear_is_square_of_linspace_of_roots():
    b = make_betas("scaled_linear", 1000, 0.00085, 0.012)
    ref = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    np.testing.assert_allclose(_np(b), ref, rtol=1e-14)
    assert b[0].item() == pytest.approx(0.00085, rel=1e-14)
    assert b[-1].item() == pytest.approx(0.012, rel=1e-14)


def test_cosine_schedule_matches_nichol_dhariwal():
    T, s = 1000, 0.008
    b = make_betas("squaredcos_cap_v2", T)

    def f(t):  # alpha_bar of improved DDPM, t in [0, 1]
        return np.cos((t + s) / (1 + s) * np.pi / 2) ** 2

    i = np.arange(T)
    ref = np.minimum(1 - f((i + 1) / T) / f(i / T), 0.999)
    np.testing.assert_allclose(_np(b), ref, rtol=1e-10, atol=1e-15)
    # clipping is active at the end, and only there
    assert b.max().item() == 0.999 and b[-1].item() == 0.999
    assert (b[:-1] < 0.999).all()
    # cumulative product matches the normalised alpha_bar wherever unclipped
    abar = _np(torch.cumprod(1 - b, 0))
    np.testing.assert_allclose(abar[:-1], f((i[:-1] + 1) / T) / f(0.0), rtol=1e-9)
    # "cosine" is an alias
    assert torch.equal(make_betas("cosine", T), b)


def test_sigmoid_betas():
    b = make_betas("sigmoid", 500, 1e-4, 0.02)
    x = np.linspace(-6, 6, 500)
    np.testing.assert_allclose(_np(b), 1 / (1 + np.exp(-x)) * (0.02 - 1e-4) + 1e-4, rtol=1e-13)
    assert (torch.diff(b) > 0).all()


def test_trained_betas_override_and_define_length():
    raw = [0.1, 0.2, 0.3]
    b = make_betas("linear", 1000, trained_betas=raw)
    assert b.dtype == F64 and b.tolist() == raw
    s = DiscreteVPSchedule.from_betas(np.array(raw, dtype=np.float32))
    assert s.num_train_timesteps == 3 and len(s) == 3
    np.testing.assert_allclose(_np(s.alphas_cumprod), [0.9, 0.72, 0.504], rtol=1e-7)


# --------------------------------------------------------------------------
# zero terminal SNR
# --------------------------------------------------------------------------
def test_rescale_zero_terminal_snr_algorithm1():
    b = make_betas("scaled_linear", 1000, 0.00085, 0.012)
    r = rescale_zero_terminal_snr(b)
    assert r.dtype == F64 and r.shape == b.shape
    abar_old = np.cumprod(1 - _np(b))
    abar_new = _np(torch.cumprod(1 - r, 0))
    assert abar_new[-1] == 0.0  # exactly
    assert r[-1].item() == 1.0
    assert abar_new[0] == pytest.approx(abar_old[0], rel=1e-14)
    # sqrt(abar) is the affine map sending sqrt(abar_old)[0] -> itself, [-1] -> 0
    a0, aT = np.sqrt(abar_old[0]), np.sqrt(abar_old[-1])
    ref = (np.sqrt(abar_old) - aT) * a0 / (a0 - aT)
    np.testing.assert_allclose(np.sqrt(abar_new), ref, rtol=1e-10, atol=1e-14)


def test_zero_snr_schedule_infinite_terminal_sigma():
    s = DiscreteVPSchedule(**SD_KW, rescale_betas_zero_snr=True)
    assert s.alphas_cumprod[-1].item() == 0.0
    assert s.sqrt_alphas_cumprod[-1].item() == 0.0 and s.sqrt_one_minus_alphas_cumprod[-1].item() == 1.0
    assert math.isinf(s.sigmas[-1].item()) and s.log_snr[-1].item() == -math.inf
    assert s.sigma_max == pytest.approx(s.sigmas[-2].item()) and math.isfinite(s.sigma_max)
    assert s.sigma_to_t(torch.tensor([math.inf], dtype=F64)).item() == 999.0
    assert math.isinf(s.t_to_sigma(torch.tensor([999.0, 998.5], dtype=F64))[0].item())
    assert s.t_to_sigma(torch.tensor(998.0, dtype=F64)).item() == s.sigmas[998].item()


# --------------------------------------------------------------------------
# DiscreteVPSchedule
# --------------------------------------------------------------------------
def test_discrete_tables_relations():
    s = DiscreteVPSchedule(**SD_KW)
    b = _np(s.betas)
    abar = np.cumprod(1 - b)
    for name in ("betas", "alphas", "alphas_cumprod", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "sigmas", "log_snr"):
        t = getattr(s, name)
        assert t.dtype == F64 and t.shape == (1000,) and t.device.type == "cpu", name
    np.testing.assert_allclose(_np(s.alphas), 1 - b, rtol=0, atol=0)
    np.testing.assert_allclose(_np(s.alphas_cumprod), abar, rtol=1e-14)
    np.testing.assert_allclose(_np(s.sqrt_alphas_cumprod), np.sqrt(abar), rtol=1e-14)
    np.testing.assert_allclose(_np(s.sqrt_one_minus_alphas_cumprod), np.sqrt(1 - abar), rtol=1e-12)
    np.testing.assert_allclose(_np(s.sigmas), np.sqrt((1 - abar) / abar), rtol=1e-12)
    np.testing.assert_allclose(_np(s.log_snr), np.log(abar / (1 - abar)), rtol=1e-10, atol=1e-12)
    assert (torch.diff(s.sigmas) > 0).all()
    assert s.sigma_min == pytest.approx(math.sqrt(0.00085 / (1 - 0.00085)), rel=1e-12)
    assert s.sigma_max == s.sigmas[-1].item()


def test_alpha_sigma_gathers_integer_timesteps():
    s = DiscreteVPSchedule()
    t = torch.tensor([[0, 1], [500, 999]])
    a, sg = s.alpha_sigma(t)
    assert a.shape == t.shape and a.dtype == F64 and sg.dtype == F64
    assert torch.equal(a, s.sqrt_alphas_cumprod[t]) and torch.equal(sg, s.sqrt_one_minus_alphas_cumprod[t])
    torch.testing.assert_close(a**2 + sg**2, torch.ones_like(a), rtol=0, atol=1e-14)
    # hand value: abar_0 = 1 - beta_0
    assert a[0, 0].item() ** 2 == pytest.approx(1 - 1e-4, rel=1e-14)
    a2, _ = s.alpha_sigma(torch.tensor([500.0]))
    assert a2.item() == a[1, 0].item()
    a3, _ = s.alpha_sigma(7)
    assert a3.item() == s.sqrt_alphas_cumprod[7].item()
    with pytest.raises(ValueError, match="integer"):
        s.alpha_sigma(torch.tensor([1.5]))
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        s.alpha_sigma(torch.tensor([1000]))
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        s.alpha_sigma(torch.tensor([-1]))


def test_sigma_to_t_is_log_sigma_interpolation():
    s = DiscreteVPSchedule(**SD_KW)
    log_sigmas = np.log(_np(s.sigmas))
    rng = np.random.default_rng(0)
    # inside the table and beyond both ends (clamped to 0 / T-1)
    sig = np.exp(rng.uniform(log_sigmas[0] - 1, log_sigmas[-1] + 1, size=257))
    ref = np.interp(np.log(sig), log_sigmas, np.arange(1000.0))
    got = s.sigma_to_t(torch.from_numpy(sig))
    assert got.dtype == F64 and got.shape == (257,)
    np.testing.assert_allclose(_np(got), ref, rtol=0, atol=1e-9)
    # midway in log-sigma between t=10 and t=11 -> 10.5
    mid = math.sqrt(s.sigmas[10].item() * s.sigmas[11].item())
    assert s.sigma_to_t(torch.tensor(mid, dtype=F64)).item() == pytest.approx(10.5, abs=1e-9)


def test_sigma_to_t_t_to_sigma_round_trip():
    s = DiscreteVPSchedule(**SD_KW)
    t = torch.linspace(0, 999, 1234, dtype=F64)
    torch.testing.assert_close(s.sigma_to_t(s.t_to_sigma(t)), t, rtol=0, atol=1e-8)
    ti = torch.arange(1000)
    assert torch.equal(s.t_to_sigma(ti), s.sigmas)  # whole numbers hit the table exactly
    assert torch.equal(s.sigma_to_t(s.sigmas), ti.to(F64))
    # t_to_sigma interpolates geometrically
    assert s.t_to_sigma(torch.tensor(10.5, dtype=F64)).item() == pytest.approx(
        math.sqrt(s.sigmas[10].item() * s.sigmas[11].item()), rel=1e-12)
    with pytest.raises(ValueError, match=r"t must be in \[0, 999\]"):
        s.t_to_sigma(torch.tensor([999.5]))
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        s.sigma_to_t(torch.tensor([-1.0]))


def test_table_cached_per_device_and_dtype():
    s = DiscreteVPSchedule()
    tab = s.table("cpu")
    assert tab.shape == (1000, 2) and tab.dtype == torch.float32
    assert s.table(torch.device("cpu"), torch.float32) is tab
    t64 = s.table("cpu", F64)
    assert t64 is not tab
    assert torch.equal(t64[:, 0], s.sqrt_alphas_cumprod) and torch.equal(t64[:, 1], s.sqrt_one_minus_alphas_cumprod)
    assert torch.equal(tab, t64.float())
    with pytest.raises(TypeError, match="dtype"):
        s.table("cpu", torch.int32)


def test_table_thread_safe_single_instance():
    s = DiscreteVPSchedule()
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(s.table("cpu", torch.bfloat16))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 8 and all(r is results[0] for r in results)


# --------------------------------------------------------------------------
# continuous schedules
# --------------------------------------------------------------------------
def test_continuous_vp_alpha_sigma_and_log_snr():
    vp = ContinuousVPSchedule(0.1, 20.0)
    t = np.linspace(0.0, 1.0, 101)
    a, s = vp.alpha_sigma(torch.from_numpy(t))
    assert a.dtype == F64 and s.dtype == F64
    ref_a = np.exp(-0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1)
    np.testing.assert_allclose(_np(a), ref_a, rtol=1e-14)
    np.testing.assert_allclose(_np(s), np.sqrt(1 - ref_a**2), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_np(a**2 + s**2), 1.0, rtol=0, atol=1e-14)
    assert a[0].item() == 1.0 and s[0].item() == 0.0
    lam = vp.log_snr(torch.from_numpy(t[1:]))
    np.testing.assert_allclose(_np(lam), np.log(ref_a[1:] ** 2 / (1 - ref_a[1:] ** 2)), rtol=1e-10)
    assert (torch.diff(lam) < 0).all()


def test_continuous_vp_sigma_t_round_trip_and_vp_sigmas():
    vp = ContinuousVPSchedule(0.1, 20.0)
    t = torch.linspace(0.0, 1.0, 201, dtype=F64)
    ve = vp.t_to_sigma(t)
    a, s = vp.alpha_sigma(t)
    torch.testing.assert_close(ve[1:], (s / a)[1:], rtol=1e-12, atol=0)
    torch.testing.assert_close(vp.sigma_to_t(ve), t, rtol=0, atol=1e-12)
    # k-diffusion get_sigmas_vp is the same curve at t = linspace(1, eps_s, n)
    n, eps = 7, 1e-3
    got = vp_sigmas(n, beta_d=19.9, beta_min=0.1, eps_s=eps)
    assert got.dtype == F64 and got.shape == (n + 1,) and got[-1].item() == 0.0
    tt = np.linspace(1.0, eps, n)
    np.testing.assert_allclose(_np(got[:-1]), np.sqrt(np.exp(19.9 * tt**2 / 2 + 0.1 * tt) - 1), rtol=1e-12)
    torch.testing.assert_close(got[:-1], vp.t_to_sigma(torch.from_numpy(tt)), rtol=1e-12, atol=0)
    # constant beta (beta_max == beta_min) inverts too
    c = ContinuousVPSchedule(2.0, 2.0)
    torch.testing.assert_close(c.sigma_to_t(c.t_to_sigma(t)), t, rtol=0, atol=1e-12)


def test_ve_schedule():
    ve = VESchedule(0.01, 50.0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    sig = ve.t_to_sigma(t)
    assert sig.dtype == F64
    assert sig[0].item() == 0.01 and sig[2].item() == 50.0
    assert sig[1].item() == pytest.approx(math.sqrt(0.01 * 50.0), rel=1e-14)
    a, s = ve.alpha_sigma(t)
    assert torch.equal(a, torch.ones(3, dtype=F64)) and torch.equal(s, sig)
    torch.testing.assert_close(ve.log_snr(t), -2 * torch.log(sig), rtol=1e-14, atol=1e-14)
    tt = torch.rand(50, dtype=F64)
    torch.testing.assert_close(ve.sigma_to_t(ve.t_to_sigma(tt)), tt, rtol=0, atol=1e-13)


# --------------------------------------------------------------------------
# flow matching
# --------------------------------------------------------------------------
def test_flow_matching_shift_and_alpha_sigma():
    fm = FlowMatchingSchedule(1000, shift=3.0)
    t = np.linspace(0, 1, 11)
    s_ref = 3.0 * t / (1 + 2.0 * t)
    np.testing.assert_allclose(_np(fm.shift_sigmas(torch.from_numpy(t))), s_ref, rtol=1e-15)
    assert fm.shift_sigmas(0.5).item() == 0.75  # 1.5 / 2
    a, s = fm.alpha_sigma(torch.from_numpy(t))
    assert a.dtype == F64
    np.testing.assert_allclose(_np(s), s_ref, rtol=1e-15)
    np.testing.assert_allclose(_np(a + s), 1.0, rtol=0, atol=1e-15)
    # training grid: shifted (1000, 999, ..., 1) / 1000
    assert fm.train_sigmas.shape == (1000,) and fm.train_sigmas.dtype == F64
    assert fm.sigma_max == 1.0
    assert fm.sigma_min == pytest.approx(3 * 0.001 / (1 + 2 * 0.001), rel=1e-14)
    torch.testing.assert_close(fm.train_timesteps, fm.train_sigmas * 1000)


def test_flow_matching_inference_sigmas():
    fm1 = FlowMatchingSchedule(1000, shift=1.0)
    s1 = fm1.sigmas(4)
    assert s1.dtype == F64 and s1.shape == (5,)
    np.testing.assert_allclose(_np(s1), [1.0, 0.667, 0.334, 0.001, 0.0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(_np(fm1.timesteps(4)), [1000.0, 667.0, 334.0, 1.0], rtol=1e-14)
    # shift != 1: like diffusers, the linspace ends at the already shifted sigma_min
    k = 3.0

    def shift(x):
        return k * x / (1 + (k - 1) * x)

    lo = shift(1 / 1000)
    ref = shift(np.linspace(1000.0, lo * 1000, 4) / 1000)
    got = FlowMatchingSchedule(1000, shift=k).sigmas(4)
    np.testing.assert_allclose(_np(got[:-1]), ref, rtol=1e-14)
    assert got[0].item() == 1.0 and got[-1].item() == 0.0
    assert got[-2].item() == pytest.approx(shift(lo), rel=1e-14)
    assert (torch.diff(got) < 0).all()


# --------------------------------------------------------------------------
# inference timesteps
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "T, n, spacing, offset, expected",
    [
        (1000, 10, "leading", 0, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
        (1000, 10, "leading", 1, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
        (1000, 3, "leading", 1, [667, 334, 1]),  # step ratio 1000 // 3 = 333
        (1000, 10, "trailing", 0, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
        (1000, 3, "trailing", 0, [999, 666, 332]),  # round(1000, 666.67, 333.33) - 1
        (1000, 3, "trailing", 5, [999, 666, 332]),  # offset only applies to "leading"
        (1000, 10, "linspace", 0, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
        (1000, 3, "linspace", 0, [999, 500, 0]),  # 499.5 rounds half to even
        (50, 1, "linspace", 0, [0]),
        (50, 1, "trailing", 0, [49]),
        (7, 7, "leading", 0, [6, 5, 4, 3, 2, 1, 0]),
    ],
)
def test_inference_timesteps_hand_cases(T, n, spacing, offset, expected):
    ts = inference_timesteps(n, T, spacing, offset)
    assert ts.dtype == torch.int64
    assert ts.tolist() == expected


def test_inference_timesteps_match_numpy_reference():
    for T in (1, 7, 50, 999, 1000):
        for n in sorted({1, 2, 3, 7, 20, 61, T // 2 or 1, T}):
            if n > T:
                continue
            lin = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
            lead = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + 1
            trail = (np.round(np.arange(T, 0, -T / n)) - 1).astype(np.int64)[:n]
            assert inference_timesteps(n, T, "linspace").tolist() == lin.tolist()
            if lead[0] <= T - 1:
                assert inference_timesteps(n, T, "leading", 1).tolist() == lead.tolist()
            got = inference_timesteps(n, T, "trailing")
            assert got.tolist() == trail.tolist()
            assert len(got) == n and got.min() >= 0 and (torch.diff(got) < 0).all()
    # numpy's float arange gives 62 values here (the last is -1); we return exactly 61
    assert len(np.arange(1000, 0, -1000 / 61)) == 62
    ts = inference_timesteps(61, 1000, "trailing")
    assert len(ts) == 61 and ts[0].item() == 999 and ts[-1].item() == 15


# --------------------------------------------------------------------------
# k-diffusion sigma ladders
# --------------------------------------------------------------------------
def test_karras_sigmas():
    smin, smax, rho = 0.002, 80.0, 7.0
    s = karras_sigmas(10, smin, smax, rho)
    assert s.dtype == F64 and s.shape == (11,)
    assert s[0].item() == pytest.approx(smax, rel=1e-13)
    assert s[-2].item() == pytest.approx(smin, rel=1e-12)
    assert s[-1].item() == 0.0
    assert (torch.diff(s) < 0).all()
    ramp = np.linspace(0, 1, 10)
    ref = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    np.testing.assert_allclose(_np(s[:-1]), ref, rtol=1e-13)
    # n = 3: middle value is the rho-mean of the end points
    mid = karras_sigmas(3, smin, smax, rho)[1].item()
    assert mid == pytest.approx(((smax ** (1 / 7) + smin ** (1 / 7)) / 2) ** 7, rel=1e-13)
    one = karras_sigmas(1, smin, smax)
    assert one.shape == (2,) and one[0].item() == pytest.approx(smax, rel=1e-13)
    assert karras_sigmas(4, smin, smax, device="cpu").dtype == F64


def test_exponential_and_polyexponential_sigmas():
    e = exponential_sigmas(5, 0.01, 100.0)
    assert e.dtype == F64 and e.shape == (6,) and e[-1].item() == 0.0
    np.testing.assert_allclose(_np(e[:-1]), [100.0, 10.0, 1.0, 0.1, 0.01], rtol=1e-13)
    p1 = polyexponential_sigmas(5, 0.01, 100.0, rho=1.0)
    torch.testing.assert_close(p1, e, rtol=1e-13, atol=0)
    p2 = polyexponential_sigmas(3, 0.01, 100.0, rho=2.0)
    # ramp = (1, 0.5, 0)^2 -> log sigma = log 0.01 + (1, 0.25, 0) * log(1e4)
    np.testing.assert_allclose(_np(p2), [100.0, 0.1, 0.01, 0.0], rtol=1e-13)


# --------------------------------------------------------------------------
# dtypes and errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        *[lambda name=name: make_betas(name, 100) for name in BETA_SCHEDULES],
        lambda: rescale_zero_terminal_snr(make_betas("linear", 100)),
        lambda: DiscreteVPSchedule(100).log_snr,
        lambda: DiscreteVPSchedule(100).sigmas,
        lambda: DiscreteVPSchedule(100).alpha_sigma(torch.arange(5))[1],
        lambda: DiscreteVPSchedule(100).sigma_to_t(torch.tensor([1.0])),
        lambda: DiscreteVPSchedule(100).t_to_sigma(torch.tensor([1.5])),
        lambda: ContinuousVPSchedule().alpha_sigma(0.5)[0],
        lambda: ContinuousVPSchedule().sigma_to_t(torch.tensor([1.0], dtype=torch.float32)),
        lambda: VESchedule().t_to_sigma(0.5),
        lambda: FlowMatchingSchedule(shift=3.0).sigmas(5),
        lambda: FlowMatchingSchedule(shift=3.0).train_sigmas,
        lambda: karras_sigmas(5, 0.1, 10.0),
        lambda: exponential_sigmas(5, 0.1, 10.0),
        lambda: polyexponential_sigmas(5, 0.1, 10.0),
        lambda: vp_sigmas(5),
    ],
)
def test_all_tables_are_float64(make):
    assert make().dtype == F64


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: make_betas("linear", 0), ValueError, "num_train_timesteps must be a positive int, got 0"),
        (lambda: make_betas("linear", 2.5), TypeError, "num_train_timesteps"),
        (lambda: make_betas("linear", True), TypeError, "num_train_timesteps"),
        (lambda: make_betas("quadratic"), ValueError, r"beta_schedule.*'linear'.*'scaled_linear'.*'squaredcos_cap_v2'.*'sigmoid'"),
        (lambda: make_betas(3), TypeError, "beta_schedule"),
        (lambda: make_betas("linear", 10, -0.1, 0.02), ValueError, "beta_start must be non-negative"),
        (lambda: make_betas("linear", 10, 1e-4, 1.0), ValueError, "beta_end must be < 1"),
        (lambda: make_betas(trained_betas=[0.1, -0.2]), ValueError, "trained_betas must be non-negative"),
        (lambda: make_betas(trained_betas=[0.1, 1.0]), ValueError, "trained_betas must all be < 1"),
        (lambda: make_betas(trained_betas=[[0.1, 0.2]]), ValueError, "1-D"),
        (lambda: make_betas(trained_betas="abc"), TypeError, "trained_betas"),
        (lambda: DiscreteVPSchedule.from_betas([0.5, 1.5]), ValueError, "< 1"),
        (lambda: DiscreteVPSchedule(rescale_betas_zero_snr=1), TypeError, "rescale_betas_zero_snr"),
        (lambda: rescale_zero_terminal_snr([0.1]), ValueError, "at least 2"),
        (lambda: rescale_zero_terminal_snr([0.0, 0.0]), ValueError, "betas must not all be 0"),
        (lambda: karras_sigmas(0, 0.1, 10.0), ValueError, "n must be a positive int, got 0"),
        (lambda: karras_sigmas(0.5, 0.1, 10.0), TypeError, "n must be a positive int"),
        (lambda: karras_sigmas(5, 0.0, 10.0), ValueError, "sigma_min must be > 0"),
        (lambda: karras_sigmas(5, -1.0, 10.0), ValueError, "sigma_min must be > 0"),
        (lambda: karras_sigmas(5, 10.0, 10.0), ValueError, "sigma_min must be < sigma_max"),
        (lambda: karras_sigmas(5, 0.1, 10.0, rho=0.0), ValueError, "rho must be > 0"),
        (lambda: karras_sigmas(5, 0.1, 10.0, rho=-7.0), ValueError, "rho must be > 0"),
        (lambda: karras_sigmas(5, 0.1, float("inf")), ValueError, "sigma_max must be finite"),
        (lambda: exponential_sigmas(0, 0.1, 10.0), ValueError, "n must be a positive int"),
        (lambda: exponential_sigmas(5, 20.0, 10.0), ValueError, "sigma_min must be < sigma_max"),
        (lambda: polyexponential_sigmas(5, 0.0, 10.0), ValueError, "sigma_min must be > 0"),
        (lambda: polyexponential_sigmas(5, 0.1, 10.0, rho=0), ValueError, "rho must be > 0"),
        (lambda: vp_sigmas(0), ValueError, "n must be a positive int"),
        (lambda: vp_sigmas(5, eps_s=0.0), ValueError, "eps_s"),
        (lambda: VESchedule(0.0, 1.0), ValueError, "sigma_min must be > 0"),
        (lambda: VESchedule(2.0, 1.0), ValueError, "sigma_min must be < sigma_max"),
        (lambda: ContinuousVPSchedule(-0.1, 20.0), ValueError, "beta_min"),
        (lambda: ContinuousVPSchedule(1.0, 0.5), ValueError, "beta_max must be >= beta_min"),
        (lambda: FlowMatchingSchedule(0), ValueError, "num_train_timesteps must be a positive int"),
        (lambda: FlowMatchingSchedule(shift=0.0), ValueError, "shift must be > 0"),
        (lambda: FlowMatchingSchedule().sigmas(0), ValueError, "n must be a positive int"),
        (lambda: inference_timesteps(0), ValueError, "num_inference_steps must be a positive int, got 0"),
        (lambda: inference_timesteps(10, 0), ValueError, "num_train_timesteps must be a positive int"),
        (lambda: inference_timesteps(1001, 1000), ValueError, "num_inference_steps must be <= num_train_timesteps"),
        (lambda: inference_timesteps(10, 1000, "uniform"), ValueError, r"spacing.*'leading'.*'trailing'.*'linspace'"),
        (lambda: inference_timesteps(10, 1000, "leading", -1), ValueError, "steps_offset"),
        (lambda: inference_timesteps(1000, 1000, "leading", 1), ValueError, "steps_offset=1"),
    ],
)
def test_bad_input_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
