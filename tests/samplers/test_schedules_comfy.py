"""Tests for the schedules of ComfyUI's scheduler list and Align Your Steps (fastdiff.schedules) and for their
ComfyUI-signature adapters (fastdiff.comfyui.schedulers): values against float64 closed forms and references
written here, the Beta quantile against SciPy and closed forms, properties (length, order, ends), bad input, and
the adapters on a duck-typed ComfyUI model-sampling object written here (no ComfyUI)."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import fastdiff.comfyui as fc  # noqa: E402
from fastdiff.schedules import (  # noqa: E402
    AYS_MODELS,
    DiscreteVPSchedule,
    align_your_steps_sigmas,
    ays_noise_levels,
    beta_sigmas,
    ddim_uniform_sigmas,
    kl_optimal_sigmas,
    linear_quadratic_sigmas,
    loglinear_interpolate,
    normal_sigmas,
    sgm_uniform_sigmas,
    simple_sigmas,
)
from fastdiff.schedules._beta_dist import beta_cdf, beta_ppf  # noqa: E402

F64 = torch.float64
STEPS = (1, 2, 3, 7, 10, 25, 50, 999, 1000, 1500)


# --------------------------------------------------------------------------
# a ComfyUI-like model-sampling object, written here: SD's discrete VP table (float32, as ComfyUI keeps it)
# --------------------------------------------------------------------------
def _sd_float64_sigmas() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=F64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


class DiscreteModelSampling:
    """Training sigmas of SD's linear-in-sqrt betas; ``timestep``: nearest log-sigma index; ``sigma``: log-linear
    interpolation of the table (the semantics of an eps model's model sampling in ComfyUI)."""

    def __init__(self):
        self.sigmas = _sd_float64_sigmas().float()
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep):
        t = timestep.float().clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


class FlowModelSampling:
    """A rectified-flow model with SD3's timestep shift: ``sigma(t) = s u / (1 + (s - 1) u)``, ``u = t / 1000``."""

    def __init__(self, shift=3.0):
        self.shift = shift
        self.sigmas = self.sigma(torch.arange(1, 1001, dtype=torch.float32))

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * 1000

    def sigma(self, timestep):
        u = timestep / 1000
        return self.shift * u / (1 + (self.shift - 1) * u)


def _is_non_increasing(s: torch.Tensor) -> bool:
    return bool((s[1:] <= s[:-1]).all())


# --------------------------------------------------------------------------
# simple, ddim_uniform
# --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", STEPS)
def test_simple_sigmas_stride_down_from_the_largest(steps):
    table = _sd_float64_sigmas()
    s = simple_sigmas(table, steps)
    expected = [table[len(table) - 1 - math.floor(i * len(table) / steps)].item() for i in range(steps)] + [0.0]
    assert s.dtype == F64 and s.tolist() == expected
    assert s[0].item() == table[-1].item() and _is_non_increasing(s)


def _ddim_reference(table, steps):
    """DDIM's uniform skip from timestep 1, written out: a loop over the kept timesteps."""
    kept, t = [], 1
    stride = max(len(table) // steps, 1)
    while t < len(table):
        kept.append(table[t].item())
        t += stride
    return kept[::-1] + [0.0]


@pytest.mark.parametrize("steps", STEPS)
def test_ddim_uniform_sigmas_keep_every_kth_timestep_from_1(steps):
    table = _sd_float64_sigmas()
    s = ddim_uniform_sigmas(table, steps)
    assert s.tolist() == _ddim_reference(table, steps)
    assert s[-2].item() == table[1].item() and _is_non_increasing(s)


def test_ddim_uniform_length_follows_the_stride():
    table = _sd_float64_sigmas()
    assert len(ddim_uniform_sigmas(table, 10)) == 11  # stride 100: timesteps 1, 101, ..., 901
    assert len(ddim_uniform_sigmas(table, 7)) == 9  # stride 142: 1, 143, ..., 995 -- 8 sigmas, ComfyUI's count


def test_ddim_uniform_with_a_zero_second_sigma_ends_there():
    table = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=F64)
    # sigmas[1] == 0: stride = 8 // (3 + 1) = 2 over timesteps 1, 3, 5, 7, no 0 appended
    assert ddim_uniform_sigmas(table, 3).tolist() == [6.0, 4.0, 2.0, 0.0]


# --------------------------------------------------------------------------
# normal, sgm_uniform
# --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", (1, 2, 5, 10, 50))
def test_normal_sigmas_are_the_sigmas_of_uniform_timesteps(steps):
    sd = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
    s = normal_sigmas(steps, 999.0, 0.0, sd.t_to_sigma)
    t = np.linspace(999.0, 0.0, steps)
    assert len(s) == steps + 1 and s[-1].item() == 0.0
    torch.testing.assert_close(s[:-1], sd.t_to_sigma(torch.from_numpy(t)), rtol=1e-15, atol=0)
    assert s[0].item() == sd.sigmas[999].item()
    if steps > 1:
        assert s[-2].item() == sd.sigmas[0].item()


@pytest.mark.parametrize("steps", (1, 2, 5, 10, 50))
def test_sgm_uniform_leaves_out_the_last_of_steps_plus_one(steps):
    shift = 3.0
    flow = lambda t: shift * (t / 1000) / (1 + (shift - 1) * (t / 1000))  # noqa: E731
    s = sgm_uniform_sigmas(steps, 1000.0, 1.0, flow)
    u = np.linspace(1.0, 0.001, steps + 1)[:-1]
    expected = shift * u / (1 + (shift - 1) * u)
    assert len(s) == steps + 1 and s[-1].item() == 0.0
    np.testing.assert_allclose(s[:-1].numpy(), expected, rtol=1e-14, atol=0)
    assert s[0].item() == 1.0 and _is_non_increasing(s)
    torch.testing.assert_close(s, normal_sigmas(steps, 1000.0, 1.0, flow, sgm=True), rtol=0, atol=0)


def test_normal_sigmas_ending_at_sigma_zero_take_one_more_timestep_and_no_zero():
    s = normal_sigmas(4, 1.0, 0.0, lambda t: t)  # sigma(t_end) = 0: 5 timesteps, no extra 0
    assert s.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0], abs=1e-15)


# --------------------------------------------------------------------------
# beta: the quantile, then the schedule
# --------------------------------------------------------------------------
_QS = torch.cat([torch.tensor([1e-300, 1e-15, 1e-9, 1e-4, 0.5, 1 - 1e-4, 1 - 1e-12], dtype=F64),
                 torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=F64)])


@pytest.mark.parametrize("a,b", [(0.6, 0.6), (0.5, 0.5), (0.3, 2.0), (2.0, 0.3), (5.0, 7.0), (0.1, 0.1),
                                 (20.0, 30.0), (1.0, 3.0), (3.0, 1.0), (1.0, 1.0)])
def test_beta_ppf_matches_scipy_to_1e_12(a, b):
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    x = beta_ppf(_QS, a, b)
    np.testing.assert_allclose(x.numpy(), stats.beta.ppf(_QS.numpy(), a, b), rtol=0, atol=1e-12)
    grid = torch.linspace(0, 1, 2001, dtype=F64)
    np.testing.assert_allclose(beta_cdf(grid, a, b).numpy(), special.betainc(a, b, grid.numpy()), rtol=0, atol=1e-12)


def test_beta_ppf_against_closed_forms():
    # the arcsine law Beta(1/2, 1/2): F(x) = (2/pi) asin(sqrt x), so F^-1(q) = sin(pi q / 2)**2
    torch.testing.assert_close(beta_ppf(_QS, 0.5, 0.5), torch.sin(math.pi * _QS / 2) ** 2, rtol=0, atol=1e-14)
    # Beta(2, 2): F(x) = 3x^2 - 2x^3
    grid = torch.linspace(0, 1, 101, dtype=F64)
    torch.testing.assert_close(beta_cdf(grid, 2.0, 2.0), 3 * grid**2 - 2 * grid**3, rtol=0, atol=1e-15)
    # exact where the answer is a fraction: the median of a symmetric law, the ends
    assert beta_ppf(torch.tensor([0.0, 0.5, 1.0], dtype=F64), 0.6, 0.6).tolist() == [0.0, 0.5, 1.0]


def test_beta_cdf_inverts_beta_ppf():
    for a, b in [(0.6, 0.6), (0.3, 4.0), (8.0, 0.9)]:
        x = beta_ppf(_QS, a, b)
        # a quantile within half an ulp of 1 is 1.0 in float64 (Beta(0.6, 0.6) at q = 1 - 1e-12: 1 - x ~ 1e-20):
        # there the mirrored law's quantile must be that small; elsewhere the CDF must give q back
        at_one = x == 1.0
        assert bool((beta_ppf(1.0 - _QS[at_one], b, a) < 1.2e-16).all())
        torch.testing.assert_close(beta_cdf(x[~at_one], a, b), _QS[~at_one], rtol=0, atol=1e-13)


@pytest.mark.parametrize("steps", (1, 2, 3, 10, 25, 50, 200))
def test_beta_sigmas_pick_the_beta_quantile_timesteps(steps):
    stats = pytest.importorskip("scipy.stats")
    table = _sd_float64_sigmas()
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(stats.beta.ppf(quantiles, 0.6, 0.6) * 999).astype(int)
    kept = [t for i, t in enumerate(timesteps) if i == 0 or t != timesteps[i - 1]]
    assert beta_sigmas(table, steps).tolist() == table[kept].tolist() + [0.0]


def test_beta_sigmas_with_a_uniform_law_are_evenly_spaced_and_merge_repeats():
    table = torch.arange(1.0, 11.0, dtype=F64)  # T - 1 = 9
    # Beta(1, 1): timesteps round(9 (1 - i/3)) = 9, 6, 3
    assert beta_sigmas(table, 3, 1.0, 1.0).tolist() == [10.0, 7.0, 4.0, 0.0]
    s = beta_sigmas(table, 40)  # 40 quantiles onto 10 timesteps: merged to at most 10 distinct sigmas
    assert len(s) <= 11 and bool((s[1:] < s[:-1]).all()) and s[-1].item() == 0.0


# --------------------------------------------------------------------------
# linear_quadratic, kl_optimal
# --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", (2, 3, 4, 10, 25, 50, 101))
def test_linear_quadratic_sigmas_linear_then_quadratic(steps):
    threshold = 0.025
    s = linear_quadratic_sigmas(steps, sigma_max=2.0, threshold_noise=threshold)
    assert len(s) == steps + 1 and s[0].item() == 2.0 and s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all())
    noise = 1.0 - s / 2.0  # 0 at the start, 1 at the end
    linear = steps // 2
    # the linear part: threshold_noise over linear_steps, exactly proportional to the step index
    torch.testing.assert_close(noise[: linear + 1], torch.arange(linear + 1, dtype=F64) * threshold / linear,
                               rtol=0, atol=1e-15)
    # the rest is a quadratic in the step index (zero third differences) continuing the line with its slope
    tail = noise[linear:]
    if len(tail) >= 4:
        torch.testing.assert_close(torch.diff(tail, n=3), torch.zeros(len(tail) - 3, dtype=F64), rtol=0, atol=1e-13)
    if len(tail) >= 3:  # slope at i = linear from the quadratic through the first three points
        slope = (-3 * tail[0] + 4 * tail[1] - tail[2]) / 2
        assert slope.item() == pytest.approx(threshold / linear, abs=1e-13)


def test_linear_quadratic_sigmas_one_step_and_explicit_linear_steps():
    assert linear_quadratic_sigmas(1, 5.0).tolist() == [5.0, 0.0]
    s = linear_quadratic_sigmas(10, linear_steps=3)
    assert s[3].item() == pytest.approx(1.0 - 0.025, abs=1e-15) and s[-1].item() == 0.0


@pytest.mark.parametrize("n", (1, 2, 3, 10, 50))
def test_kl_optimal_sigmas_are_uniform_in_arctan(n):
    smin, smax = 0.0291675, 14.614642
    s = kl_optimal_sigmas(n, smin, smax)
    assert len(s) == n + 1 and s[0].item() == smax and s[-1].item() == 0.0
    if n > 1:
        ramp = np.arange(n) / (n - 1)
        np.testing.assert_allclose(s[:-1].numpy(), np.tan((1 - ramp) * np.arctan(smax) + ramp * np.arctan(smin)),
                                   rtol=1e-14, atol=0)
        assert s[-2].item() == smin
        np.testing.assert_allclose(torch.diff(torch.atan(s[:-1])).numpy(),
                                   (math.atan(smin) - math.atan(smax)) / (n - 1), rtol=1e-12)


# --------------------------------------------------------------------------
# Align Your Steps
# --------------------------------------------------------------------------
AYS_TIMESTEPS = {"SD1": [999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0],
                 "SDXL": [999, 845, 730, 587, 443, 310, 193, 116, 53, 13, 0]}


@pytest.mark.parametrize("model", ["SD1", "SDXL"])
def test_ays_sd_tables_are_the_sd_sigmas_at_the_published_timesteps(model):
    table = _sd_float64_sigmas()
    torch.testing.assert_close(ays_noise_levels(model), table[AYS_TIMESTEPS[model]], rtol=0, atol=6e-11)


def test_ays_svd_table_is_the_published_one():
    assert ays_noise_levels("SVD").tolist() == [700.0, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173,
                                                0.034, 0.002]
    assert AYS_MODELS == ("SD1", "SDXL", "SVD")


@pytest.mark.parametrize("model", AYS_MODELS)
@pytest.mark.parametrize("steps", (1, 2, 5, 10, 20, 37, 100))
def test_align_your_steps_is_the_log_linear_resampling_ending_in_0(model, steps):
    levels = ays_noise_levels(model).numpy()
    s = align_your_steps_sigmas(steps, model)
    if steps == 10:
        expected = levels.copy()
    else:
        expected = np.exp(np.interp(np.linspace(0, 1, steps + 1), np.linspace(0, 1, 11), np.log(levels[::-1])))[::-1]
    expected[-1] = 0.0
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-14, atol=0)
    assert len(s) == steps + 1 and s[0].item() == levels[0] and bool((s[1:] < s[:-1]).all())
    if steps == 20:  # the knots are every other value
        np.testing.assert_allclose(s[:-1:2].numpy(), levels[:-1], rtol=1e-14)


def test_loglinear_interpolate_is_geometric_between_knots():
    assert loglinear_interpolate([1000.0, 10.0, 1.0], 5).tolist() == pytest.approx(
        [1000.0, 100.0, 10.0, 10**0.5, 1.0], rel=1e-14)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
_TABLE = torch.arange(1.0, 11.0, dtype=F64)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: simple_sigmas(_TABLE, 0), ValueError, "steps"),
    (lambda: simple_sigmas(_TABLE, 2.5), TypeError, "steps"),
    (lambda: simple_sigmas(_TABLE, True), TypeError, "steps"),
    (lambda: simple_sigmas(_TABLE.flip(0), 3), ValueError, "non-decreasing"),
    (lambda: simple_sigmas(_TABLE.reshape(2, 5), 3), ValueError, "1-D"),
    (lambda: simple_sigmas(torch.tensor([1.0]), 3), ValueError, "at least 2"),
    (lambda: ddim_uniform_sigmas(torch.tensor([-1.0, 1.0]), 3), ValueError, ">= 0"),
    (lambda: ddim_uniform_sigmas(torch.tensor([1.0, float("nan")]), 3), ValueError, "finite"),
    (lambda: beta_sigmas("abc", 3), TypeError, "sigmas"),
    (lambda: beta_sigmas(_TABLE, 3, alpha=0.0), ValueError, "alpha"),
    (lambda: beta_sigmas(_TABLE, 3, beta=-1.0), ValueError, "beta"),
    (lambda: normal_sigmas(3, 1.0, 0.0, "not callable"), TypeError, "t_to_sigma"),
    (lambda: normal_sigmas(3, 1.0, 0.0, lambda t: t[:1]), ValueError, "one sigma per timestep"),
    (lambda: normal_sigmas(3, 1.0, 0.0, lambda t: -t - 1), ValueError, "finite sigmas >= 0"),
    (lambda: normal_sigmas(3, float("inf"), 0.0, lambda t: t), ValueError, "t_start"),
    (lambda: normal_sigmas(3, 1.0, 0.0, lambda t: t, sgm=1), TypeError, "sgm"),
    (lambda: linear_quadratic_sigmas(4, threshold_noise=1.5), ValueError, "threshold_noise"),
    (lambda: linear_quadratic_sigmas(4, linear_steps=4), ValueError, "linear_steps"),
    (lambda: linear_quadratic_sigmas(4, linear_steps=0), ValueError, "linear_steps"),
    (lambda: linear_quadratic_sigmas(4, sigma_max=0.0), ValueError, "sigma_max"),
    (lambda: kl_optimal_sigmas(3, 1.0, 1.0), ValueError, "sigma_min"),
    (lambda: kl_optimal_sigmas(0, 0.1, 1.0), ValueError, "n"),
    (lambda: align_your_steps_sigmas(10, "SD2"), ValueError, "model"),
    (lambda: align_your_steps_sigmas(0, "SD1"), ValueError, "steps"),
    (lambda: loglinear_interpolate([1.0, 2.0], 3), ValueError, "non-increasing"),
    (lambda: loglinear_interpolate([2.0, 0.0], 3), ValueError, "> 0"),
    (lambda: loglinear_interpolate([2.0, 1.0], 1), ValueError, "n"),
    (lambda: fc.calculate_sigmas(DiscreteModelSampling(), "karras2", 3), ValueError, "scheduler_name"),
    (lambda: fc.calculate_sigmas(DiscreteModelSampling(), None, 3), TypeError, "scheduler_name"),
    (lambda: fc.simple_scheduler(object(), 3), TypeError, "model_sampling"),
    (lambda: fc.normal_scheduler(DiscreteModelSampling(), 3, floor="yes"), TypeError, "floor"),
    (lambda: fc.align_your_steps_scheduler("SD1", 10, denoise="x"), TypeError, "denoise"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------
# the ComfyUI-signature adapters
# --------------------------------------------------------------------------
ISSUE_SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal")


def test_scheduler_names_and_handlers_are_comfyuis_list():
    assert fc.SCHEDULER_NAMES == ISSUE_SCHEDULERS
    assert list(fc.SCHEDULER_HANDLERS) == list(ISSUE_SCHEDULERS)
    called_with_sigma_range = {name for name, handler in fc.SCHEDULER_HANDLERS.items() if not handler.use_ms}
    assert called_with_sigma_range == {"karras", "exponential", "kl_optimal"}
    for name, (function, flag) in fc.SCHEDULER_HANDLERS.items():  # a plain (function, use_ms) pair
        assert callable(function) and isinstance(flag, bool)


@pytest.mark.parametrize("make", [DiscreteModelSampling, FlowModelSampling], ids=["discrete", "flow"])
@pytest.mark.parametrize("name", ISSUE_SCHEDULERS)
@pytest.mark.parametrize("steps", (1, 2, 10, 25))
def test_calculate_sigmas_properties(make, name, steps):
    ms = make()
    table_before = ms.sigmas.clone()
    rng_before = torch.get_rng_state()
    s = fc.calculate_sigmas(ms, name, steps)
    assert torch.equal(ms.sigmas, table_before) and torch.equal(torch.get_rng_state(), rng_before)
    assert s.dtype == torch.float32 and s.device.type == "cpu" and s.dim() == 1
    assert s[-1].item() == 0.0 and _is_non_increasing(s) and bool(torch.isfinite(s).all())
    if name != "beta" or steps < 25:
        assert len(s) == steps + 1, name  # ddim_uniform: 1000 // steps divides evenly for these step counts
    smax = float(ms.sigma_max)
    if name == "ddim_uniform":
        assert s[-2].item() == ms.sigmas[1].item()
    else:
        assert s[0].item() == pytest.approx(smax, rel=2e-7), name


def test_adapters_are_the_float64_schedules_rounded_once():
    ms = DiscreteModelSampling()
    table = ms.sigmas
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    cases = {
        "simple": simple_sigmas(table, 13),
        "ddim_uniform": ddim_uniform_sigmas(table, 13),
        "beta": beta_sigmas(table, 13),
        "linear_quadratic": linear_quadratic_sigmas(13, smax),
        "kl_optimal": kl_optimal_sigmas(13, smin, smax),
    }
    for name, expected in cases.items():
        assert torch.equal(fc.calculate_sigmas(ms, name, 13), expected.float()), name
    assert torch.equal(fc.beta_scheduler(ms, 13, alpha=0.4, beta=0.9), beta_sigmas(table, 13, 0.4, 0.9).float())


def test_normal_scheduler_on_the_discrete_table_matches_a_float64_interpolation():
    ms = DiscreteModelSampling()
    sd = DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")  # the same table in float64
    for steps in (3, 10, 30):
        for sgm in (False, True):
            ours = fc.normal_scheduler(ms, steps, sgm=sgm)
            reference = normal_sigmas(steps, 999.0, 0.0, sd.t_to_sigma, sgm=sgm)
            # the model sampling keeps its table in float32 (as ComfyUI does): a few float32 roundings apart
            torch.testing.assert_close(ours.double(), reference, rtol=1e-6, atol=0)
    torch.testing.assert_close(fc.sgm_uniform_scheduler(ms, 10), fc.normal_scheduler(ms, 10, sgm=True), rtol=0,
                               atol=0)


def test_flow_normal_scheduler_is_the_shifted_uniform_timesteps():
    ms = FlowModelSampling(shift=3.0)
    s = fc.normal_scheduler(ms, 10)
    smin = float(ms.sigma_min)
    u = np.linspace(1.0, smin, 10)  # timestep / 1000 from sigma_max (1) to sigma_min
    np.testing.assert_allclose(s[:-1].double().numpy(), 3 * u / (1 + 2 * u), rtol=2e-7)


def test_align_your_steps_scheduler_denoise():
    full = fc.align_your_steps_scheduler("SD1", 20)
    assert torch.equal(full, align_your_steps_sigmas(20, "SD1").float())
    part = fc.align_your_steps_scheduler("SD1", 20, denoise=0.55)  # round(11.0) = 11 steps: the last 12 values
    assert torch.equal(part, full[-12:])
    assert fc.align_your_steps_scheduler("SD1", 20, denoise=0.0).numel() == 0


def test_kl_optimal_one_step_is_sigma_max_not_nan():
    assert fc.kl_optimal_scheduler(1, 0.03, 14.6).tolist() == [pytest.approx(14.6, rel=1e-7), 0.0]
