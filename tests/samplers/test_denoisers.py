"""Model wrappers: eps / v / x0 / flow networks as k-diffusion denoisers, fused conversion, CFG on the doubled batch."""
import math

import pytest
import torch

import fastdiff
from fastdiff.denoisers import CFGDenoiser, EpsDenoiser, FlowDenoiser, VDenoiser, X0Denoiser
from fastdiff.sampling import initial_noise, sample
from fastdiff.toy import GaussianMixture

GMM = GaussianMixture.ring(k=4, radius=3.0, std=0.4, dim=3)
SCHED = fastdiff.DiscreteVPSchedule(1000, 0.00085, 0.012, "scaled_linear")
CONT = fastdiff.ContinuousVPSchedule()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def exact_network(kind, schedule, shift=0.0):
    """A 'trained' network of the given parametrisation built from the mixture's exact denoiser.

    It sees what a VP network sees (x_in = x / sqrt(sigma^2 + 1), timestep t) and recovers sigma
    from t through the schedule; ``shift`` offsets the x0 estimate (a stand-in for conditioning).
    """
    def net(x_in, t, cond=None):
        sigma = schedule.t_to_sigma(t.double().cpu()).to(x_in)
        sb = sigma.reshape(-1, *([1] * (x_in.dim() - 1)))
        x = x_in * torch.sqrt(sb * sb + 1)
        d = GMM.denoiser(x, sigma)
        if cond is not None:
            d = d + cond
        d = d + shift
        eps = (x - d) / sb
        if kind == "eps":
            return eps
        if kind == "v":
            alpha, sig_vp = 1 / torch.sqrt(sb * sb + 1), sb / torch.sqrt(sb * sb + 1)
            return alpha * eps - sig_vp * d
        return d
    return net


def flow_network(x_s, t, cond=None):
    """Exact velocity v = eps - x0 of the flow sample x_s at flow time s = t / 1000."""
    s = (t.double().cpu() / 1000).to(x_s).reshape(-1, *([1] * (x_s.dim() - 1)))
    sigma = s / (1 - s)
    x_ve = x_s / (1 - s)
    d = GMM.denoiser(x_ve, sigma.reshape(-1))
    if cond is not None:
        d = d + cond
    return (x_ve - d) / sigma - d


WRAPPERS = {"eps": EpsDenoiser, "v": VDenoiser, "x0": X0Denoiser}


@pytest.mark.parametrize("kind", ["eps", "v", "x0"])
@pytest.mark.parametrize("schedule", [SCHED, CONT], ids=["discrete", "continuous"])
def test_wrapper_recovers_x0(kind, schedule):
    den = WRAPPERS[kind](exact_network(kind, schedule), schedule)
    x = torch.randn(5, 2, 3, dtype=torch.float64) * 3
    sigma = torch.tensor([0.05, 0.5, 1.0, 4.0, 9.0], dtype=torch.float64)
    torch.testing.assert_close(den(x, sigma), GMM.denoiser(x, sigma), rtol=1e-8, atol=1e-8)


def test_flow_wrapper_recovers_x0():
    den = FlowDenoiser(flow_network, fastdiff.FlowMatchingSchedule(1000))
    x = torch.randn(4, 3, dtype=torch.float64) * 2
    sigma = torch.tensor([0.1, 0.7, 2.0, 6.0], dtype=torch.float64)
    torch.testing.assert_close(den(x, sigma), GMM.denoiser(x, sigma), rtol=1e-8, atol=1e-8)


def test_input_scaling_and_timesteps():
    seen = {}

    def net(x_in, t):
        seen.update(x_in=x_in, t=t)
        return torch.zeros_like(x_in)

    x = torch.ones(2, 3, dtype=torch.float64)
    sigma = torch.tensor([1.0, 3.0], dtype=torch.float64)
    EpsDenoiser(net, CONT)(x, sigma)
    torch.testing.assert_close(seen["x_in"][:, 0], 1 / torch.sqrt(sigma**2 + 1))
    torch.testing.assert_close(seen["t"], CONT.sigma_to_t(sigma))
    EpsDenoiser(net, SCHED, quantize=True)(x, sigma)
    assert torch.equal(seen["t"], SCHED.sigma_to_t(sigma).round())


@pytest.mark.parametrize("kind", ["eps", "v"])
@pytest.mark.parametrize("sampler", ["dpmpp_2m", "heun", "euler_ancestral", "unipc"])
def test_fused_conversion_matches_plain_denoiser(kind, sampler):
    """Sampling a wrapper (raw output + fused conversion) == sampling the exact x0 denoiser."""
    den = WRAPPERS[kind](exact_network(kind, SCHED), SCHED)
    sig = fastdiff.karras_sigmas(8, SCHED.sigma_min, 10.0)
    x = initial_noise((4, 3), 1, dtype=torch.float64) * sig[0].item()
    got = sample(den, x, sig, sampler=sampler, seed=2)
    want = sample(GMM.denoiser, x, sig, sampler=sampler, seed=2)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


def test_fused_conversion_triton():
    den = EpsDenoiser(exact_network("eps", SCHED), SCHED)
    sig = fastdiff.karras_sigmas(6, SCHED.sigma_min, 10.0)
    x = initial_noise((3, 3), 1) * sig[0].item()
    got = sample(den, x, sig, sampler="dpmpp_2m_sde", seed=2, backend="triton")
    want = sample(GMM.denoiser, x.double(), sig, sampler="dpmpp_2m_sde", seed=2)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_flow_euler_native_with_flow_wrapper():
    fm = fastdiff.FlowMatchingSchedule(1000, shift=3.0)
    sig = fm.sigmas(8)[1:]  # start below s = 1, where the exact test network's sigma is finite
    x = initial_noise((4, 3), 0, dtype=torch.float64) * sig[0].item()

    def flow_x0(x, s):
        s0 = s.reshape(-1)[0].item()
        return GMM.denoiser(x / (1 - s0), s0 / (1 - s0))

    got = sample(FlowDenoiser(flow_network, fm), x, sig, sampler="flow_euler")
    want = sample(flow_x0, x, sig, sampler="flow_euler")
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def _cfg_case(inner_kind):
    cond = torch.full((4, 3), 0.3, dtype=torch.float64)
    uncond = torch.zeros(4, 3, dtype=torch.float64)
    if inner_kind == "plain":
        inner = lambda x, s, cond: GMM.denoiser(x, s) + cond  # noqa: E731
    else:
        inner = EpsDenoiser(exact_network("eps", SCHED), SCHED)
    return inner, cond, uncond


@pytest.mark.parametrize("inner_kind", ["plain", "eps"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cfg_one_call_on_doubled_batch(inner_kind, backend):
    """CFGDenoiser: one network call per evaluation on [x; x] with [uncond; cond]; guidance fused in the step."""
    inner, cond, uncond = _cfg_case(inner_kind)
    calls = []

    def spy(*args, **kw):
        calls.append(args[0].shape[0])
        return inner(*args, **kw) if inner_kind == "plain" else None

    if inner_kind == "plain":
        den = CFGDenoiser(spy, cond=cond, uncond=uncond, scale=5.0)
    else:
        real = inner.model
        inner.model = lambda x_in, t, cond: (calls.append(x_in.shape[0]), real(x_in, t, cond=cond))[1]
        den = CFGDenoiser(inner, cond=cond, uncond=uncond, scale=5.0)
    sig = fastdiff.karras_sigmas(6, SCHED.sigma_min, 10.0)
    dtype = torch.float32 if backend == "triton" else torch.float64
    x = initial_noise((4, 3), 3, dtype=dtype) * sig[0].item()
    got = sample(den, x, sig, sampler="dpmpp_2m", guidance_scale=3.0, backend=backend)
    assert calls == [8] * 6

    def guided(x, s):  # the guided x0 estimate written out: D_u + g (D_c - D_u)
        d_u, d_c = GMM.denoiser(x, s), GMM.denoiser(x, s) + 0.3
        return d_u + 3.0 * (d_c - d_u)

    want = sample(guided, x.double(), sig, sampler="dpmpp_2m")
    tol = 1e-4 if backend == "triton" else 1e-7
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_cfg_scale_default_and_call():
    inner, cond, uncond = _cfg_case("plain")
    den = CFGDenoiser(inner, cond=cond, uncond=uncond, scale=2.0)
    x = torch.randn(4, 3, dtype=torch.float64)
    sigma = torch.full((4,), 1.5, dtype=torch.float64)
    torch.testing.assert_close(den(x, sigma), GMM.denoiser(x, sigma) + 0.6)
    sig = fastdiff.karras_sigmas(4, 0.1, 5.0)
    a = sample(den, x, sig, sampler="euler")
    b = sample(den, x, sig, sampler="euler", guidance_scale=2.0)
    assert torch.equal(a, b)


def test_conversions_closed_form():
    s = 2.0
    assert EpsDenoiser(lambda a, t: a).conversion(s) == (1.0, -2.0)
    cx, cm = VDenoiser(lambda a, t: a).conversion(s)
    assert math.isclose(cx, 1 / 5) and math.isclose(cm, -2 / math.sqrt(5))
    assert X0Denoiser(lambda a, t: a).conversion(s) == (0.0, 1.0)
    fx, fm = FlowDenoiser(lambda a, t: a).conversion(s)
    assert math.isclose(fx, 1 / 3) and math.isclose(fm, -2 / 3)


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        EpsDenoiser(3, SCHED)
    with pytest.raises(TypeError, match="sigma_to_t"):
        EpsDenoiser(lambda a, t: a, schedule=object())
    with pytest.raises(ValueError, match="same shape"):
        CFGDenoiser(lambda x, s, cond: x, cond=torch.zeros(2, 3), uncond=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="scale"):
        CFGDenoiser(lambda x, s, cond: x, cond=torch.zeros(2, 3), uncond=torch.zeros(2, 3), scale=float("nan"))
    with pytest.raises(ValueError, match="timestep_scale"):
        FlowDenoiser(lambda a, t: a, timestep_scale=-1.0)
