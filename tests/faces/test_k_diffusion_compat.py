"""Parity of ``fastdiff.k_diffusion`` with the real k-diffusion samplers.

k-diffusion's package ``__init__`` imports training-only dependencies, so only its
``sampling.py`` is loaded: a stub ``k_diffusion`` package provides the one helper it
uses from ``k_diffusion.utils`` (``append_dims``) and the installed file is executed
as ``k_diffusion.sampling``.

"Same output to float32 rounding" is checked on well-conditioned problems: the toy
mixture's components are wide enough (std 0.6, sigma_min 0.05) that no trajectory sits
on a decision boundary at small sigma, where any 1-ulp difference is amplified ~1000x
(that amplification is k-diffusion's own: it shows between two float32 runs of it that
differ only in operation order).
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
import types
import warnings

import pytest
import torch

import fastdiff
import fastdiff.toy
from fastdiff import k_diffusion as K


def _load_k_diffusion_sampling():
    """Exec the installed ``k_diffusion/sampling.py`` under a stub package (without its heavy ``__init__``)."""
    if "k_diffusion.sampling" in sys.modules and getattr(sys.modules["k_diffusion"], "_fastdiff_stub", False):
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "sampling.py")
    if not os.path.exists(path):
        return None
    pytest.importorskip("torchsde", reason="k-diffusion's sampling.py imports torchsde (a test dependency)")
    pytest.importorskip("torchdiffeq", reason="k-diffusion's sampling.py imports torchdiffeq (a test dependency)")

    def append_dims(x, target_dims):
        missing = target_dims - x.ndim
        if missing < 0:
            raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
        return x[(...,) + (None,) * missing]

    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = []
    pkg._fastdiff_stub = True
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = append_dims
    pkg.utils = utils
    saved = {name: sys.modules.get(name) for name in ("k_diffusion", "k_diffusion.utils")}
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    try:
        mspec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
        module = importlib.util.module_from_spec(mspec)
        sys.modules["k_diffusion.sampling"] = module
        mspec.loader.exec_module(module)
    except Exception:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
        sys.modules.pop("k_diffusion.sampling", None)
        raise
    pkg.sampling = module
    return module


KD = _load_k_diffusion_sampling()
if KD is None:
    pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1.post1)",
                allow_module_level=True)

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral",
            "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde"]
NOISY = ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"]
# options exercising every branch of the coefficient builders
OPTIONS = {
    "euler": [{}, {"s_churn": 2.0, "s_tmin": 0.1, "s_tmax": 8.0, "s_noise": 1.01}],
    "heun": [{}, {"s_churn": 2.0}],
    "dpm_2": [{}, {"s_churn": 1.0, "s_noise": 0.9}],
    "euler_ancestral": [{}, {"eta": 0.5, "s_noise": 0.9}, {"eta": 0.0}],
    "dpm_2_ancestral": [{}, {"eta": 0.7}],
    "lms": [{}, {"order": 2}, {"order": 6}],
    "dpmpp_2s_ancestral": [{}, {"eta": 0.3}],
    "dpmpp_sde": [{}, {"eta": 0.5, "r": 0.3}],
    "dpmpp_2m": [{}],
    "dpmpp_2m_sde": [{}, {"solver_type": "heun", "eta": 0.6}, {"eta": 0.0}],
    "dpmpp_3m_sde": [{}, {"eta": 0.5, "s_noise": 1.1}, {"eta": 0.0}],
}
CASES = [(name, opts) for name in SAMPLERS for opts in OPTIONS[name]]

# max |ours - k-diffusion| over outputs of magnitude ~5: float32 ulp there is 4.8e-7; the runs take
# 6-24 rounding steps, each of which may differ by an ulp or two (fused vs separate operations)
ATOL, RTOL = 2e-5, 2e-6


@pytest.fixture(autouse=True)
def _quiet_brownian():
    # torchsde warns when a query time is one float32 ulp outside the tree's interval (k-diffusion does this too)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
        yield


GMM = fastdiff.toy.GaussianMixture.ring(k=4, radius=4.0, std=1.0)


def gmm_model(x, sigma):
    return GMM.denoiser(x, sigma)


class TinyNet(torch.nn.Module):
    """A small EDM-preconditioned conv denoiser (random weights) taking a class-embedding extra argument."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(2, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 2, 3, padding=1)
        self.emb = torch.nn.Embedding(3, 8)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x, sigma, class_labels=None):
        s = sigma.reshape(-1, 1, 1, 1)
        c_in, c_skip, c_out = 1 / (s**2 + 1).sqrt(), 1 / (s**2 + 1), s / (s**2 + 1).sqrt()
        h = torch.tanh(self.conv1(x * c_in) + 0.25 * sigma.log().reshape(-1, 1, 1, 1))
        if class_labels is not None:
            h = h + self.emb(class_labels)[:, :, None, None]
        return c_skip * x + c_out * self.conv2(h)


NET = TinyNet().eval()
NET_ARGS = {"class_labels": torch.tensor([0, 2, 1])}


def problem(kind: str):
    """(model, x, sigmas, extra_args) of a parity run."""
    sigmas = KD.get_sigmas_karras(8, 0.05, 20.0)
    g = torch.Generator().manual_seed(11)
    if kind == "gmm":
        return gmm_model, torch.randn(48, 2, generator=g) * sigmas[0], sigmas, None
    return NET, torch.randn(3, 2, 4, 4, generator=g) * sigmas[0], sigmas, NET_ARGS


def run_both(name, opts, kind, *, seed=1, noise=False, callback=False):
    """Run k-diffusion and fastdiff with the same global seed (or the same explicit noise sampler)."""
    model, x, sigmas, extra = problem(kind)
    out, logs, rng_after = [], [], []
    for impl in (KD, K):
        log = {"cb": [], "ns": []}
        kw = dict(opts)
        if noise:
            g = torch.Generator().manual_seed(5)

            def ns(sigma, sigma_next, g=g, log=log):
                log["ns"].append((float(sigma), float(sigma_next)))
                return torch.randn(x.shape, generator=g)

            kw["noise_sampler"] = ns
        if callback:
            kw["callback"] = lambda d, log=log: log["cb"].append({k: (v.clone() if torch.is_tensor(v) else v)
                                                                   for k, v in d.items()})
        x_in = x.clone()
        torch.manual_seed(seed)
        out.append(getattr(impl, "sample_" + name)(model, x_in, sigmas, extra_args=extra, disable=True, **kw))
        rng_after.append(torch.rand(4))
        assert torch.equal(x_in, x), "the input sample was modified"
        logs.append(log)
    return out, logs, rng_after


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{i}" for n in SAMPLERS for i in range(len(OPTIONS[n]))])
@pytest.mark.parametrize("kind", ["gmm", "net"])
def test_same_output_as_k_diffusion_with_the_global_rng(name, opts, kind):
    (ref, ours), _, (rng_ref, rng_ours) = run_both(name, opts, kind)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    # the global RNG advanced exactly as k-diffusion's (same draws), so following draws agree too
    assert torch.equal(rng_ours, rng_ref)


@pytest.mark.parametrize("name", NOISY)
@pytest.mark.parametrize("kind", ["gmm", "net"])
def test_same_output_and_noise_calls_with_an_explicit_noise_sampler(name, kind):
    (ref, ours), (log_ref, log_ours), (rng_ref, rng_ours) = run_both(name, OPTIONS[name][0], kind, noise=True)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    assert log_ours["ns"] == log_ref["ns"]  # same calls, same (sigma, sigma_next) values, same order
    assert len(log_ref["ns"]) > 0
    assert torch.equal(rng_ours, rng_ref)  # with an explicit sampler neither touches the global RNG


@pytest.mark.parametrize("name", SAMPLERS)
def test_as_close_to_the_float64_trajectory_as_k_diffusion_itself(name):
    # "to float32 rounding", stated without a hand-picked tolerance: with the same noise, fastdiff's
    # float32 result is about as far from k-diffusion's float64 result as k-diffusion's float32 one is
    model, x, sigmas, _ = problem("gmm")
    draws = torch.randn((16,) + tuple(x.shape), generator=torch.Generator().manual_seed(9))

    def sampler(dtype):
        it = iter(draws)
        return lambda a, b: next(it).to(dtype)

    kw = {"noise_sampler": sampler(torch.float32)} if name in NOISY else {}
    kw64 = {"noise_sampler": sampler(torch.float64)} if name in NOISY else {}
    ref32 = getattr(KD, "sample_" + name)(model, x, sigmas, disable=True, **kw)
    kw = {"noise_sampler": sampler(torch.float32)} if name in NOISY else {}
    ours = getattr(K, "sample_" + name)(model, x, sigmas, disable=True, **kw)
    ref64 = getattr(KD, "sample_" + name)(model, x.double(), sigmas.double(), disable=True, **kw64)
    err_kd = (ref32.double() - ref64).abs().max().item()
    err_ours = (ours.double() - ref64).abs().max().item()
    assert err_kd < 5e-5  # the problem is well conditioned
    assert err_ours <= 3 * err_kd + 1e-6, (err_ours, err_kd)


def test_noise_actually_matters():
    # guards the parity tests: two different seeds must give clearly different stochastic samples
    model, x, sigmas, _ = problem("gmm")
    torch.manual_seed(1)
    a = K.sample_euler_ancestral(model, x, sigmas, disable=True)
    torch.manual_seed(2)
    b = K.sample_euler_ancestral(model, x, sigmas, disable=True)
    assert (a - b).abs().max() > 0.1


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2_ancestral", "lms", "dpmpp_sde", "dpmpp_3m_sde"])
def test_callback_dicts_match(name):
    opts = {"s_churn": 1.0} if name in ("euler", "heun") else {}
    _, (log_ref, log_ours), _ = run_both(name, opts, "gmm", callback=True)
    assert len(log_ours["cb"]) == len(log_ref["cb"]) == 8
    for a, b in zip(log_ref["cb"], log_ours["cb"]):
        assert set(a) == set(b) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert a["i"] == b["i"]
        assert torch.equal(a["sigma"], b["sigma"]) and torch.equal(a["sigma_hat"], b["sigma_hat"])
        torch.testing.assert_close(b["x"], a["x"], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(b["denoised"], a["denoised"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ["euler", "dpm_2", "dpmpp_2s_ancestral", "dpmpp_sde"])
def test_model_sees_the_same_sigmas(name):
    seen = {KD: [], K: []}
    _, x, sigmas, _ = problem("gmm")
    for impl in (KD, K):
        def model(x, sigma, impl=impl):
            seen[impl].append((sigma.dtype, sigma.shape, sigma.tolist()))
            return gmm_model(x, sigma)
        torch.manual_seed(0)
        getattr(impl, "sample_" + name)(model, x, sigmas, disable=True, **({"s_churn": 1.0} if name == "euler" else {}))
    assert seen[K] == seen[KD]  # bit-identical sigma * s_in, call for call


@pytest.mark.parametrize("disable", [True, False])
def test_disable_controls_the_progress_bar(disable, capsys):
    model, x, sigmas, _ = problem("gmm")
    K.sample_dpmpp_2m(model, x, sigmas, disable=disable)
    err = capsys.readouterr().err
    assert ("8/8" in err) is (not disable)


def test_brownian_tree_noise_sampler_matches():
    _, x, sigmas, _ = problem("gmm")
    for seed in (7, [1, 2] + list(range(3, 49))):
        a = KD.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=seed)
        b = K.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=seed)
        for i in (0, 3, 1, 6):
            torch.testing.assert_close(b(sigmas[i], sigmas[i + 1]), a(sigmas[i], sigmas[i + 1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="seed"):
        K.BrownianTreeNoiseSampler(x, 0.1, 1.0, seed=[1, 2])


def test_float64_runs_in_float64():
    model, x, sigmas, _ = problem("gmm")
    torch.manual_seed(3)
    ref = KD.sample_dpmpp_2m_sde(model, x.double(), sigmas.double(), disable=True, noise_sampler=lambda a, b: torch.ones_like(x, dtype=torch.float64))
    torch.manual_seed(3)
    ours = K.sample_dpmpp_2m_sde(model, x.double(), sigmas.double(), disable=True, noise_sampler=lambda a, b: torch.ones_like(x, dtype=torch.float64))
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["dpmpp_2m", "euler_ancestral"])
def test_half_precision_samples_stay_in_their_dtype(name, dtype):
    # storage in half precision, float32 math inside the step: the result is the float32 run rounded
    # at each step, so it stays within a few half-precision ulps (2**-7 relative for bfloat16) of it
    model, x, sigmas, _ = problem("net")
    half_model = lambda x, s, **kw: NET(x.float(), s.float(), **kw).to(x.dtype)
    torch.manual_seed(4)
    ref = K.sample_dpmpp_2m(NET, x, sigmas, extra_args=NET_ARGS, disable=True) if name == "dpmpp_2m" else \
        K.sample_euler_ancestral(NET, x, sigmas, extra_args=NET_ARGS, disable=True)
    torch.manual_seed(4)
    fn = getattr(K, "sample_" + name)
    ours = fn(half_model, x.to(dtype), sigmas, extra_args=NET_ARGS, disable=True,
              **({"noise_sampler": lambda a, b: torch.randn(x.shape).to(dtype)} if name != "dpmpp_2m" else {}))
    assert ours.dtype == dtype
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    torch.testing.assert_close(ours.float(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m_sde", "lms"])
def test_triton_kernel_path_matches(name, monkeypatch):
    # the interpreter runs the same Triton kernel the GPU runs
    monkeypatch.setattr(K.run, "_backend_for", lambda x: "triton")
    (ref, ours), _, _ = run_both(name, {}, "gmm")
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)


def _kd_f64(fn, *args, **kwargs):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("name,args", [
    ("karras", (10, 0.002, 80.0)), ("karras", (7, 0.03, 14.6, 5.0)), ("exponential", (10, 0.002, 80.0)),
    ("polyexponential", (10, 0.002, 80.0)), ("polyexponential", (9, 0.1, 10.0, 2.5)), ("vp", (10,)),
    ("vp", (6, 10.0, 0.2, 1e-2)),
])
def test_sigma_schedules(name, args):
    fn = "get_sigmas_" + name
    ours = getattr(K, fn)(*args)
    ref = getattr(KD, fn)(*args)
    assert ours.dtype == ref.dtype == torch.float32 and ours.shape == ref.shape and ours[-1] == 0
    # k-diffusion's own formula evaluated in float64 then rounded once: equal to an ulp
    exact = _kd_f64(getattr(KD, fn), *args).float()
    torch.testing.assert_close(ours, exact, rtol=1.2e-7, atol=0)
    # k-diffusion's float32 evaluation: within its own rounding (get_sigmas_vp's sqrt(exp(u) - 1) loses
    # ~1e-3 relative at the small end in float32; fastdiff uses expm1)
    torch.testing.assert_close(ours, ref, rtol=2e-3 if name == "vp" else 4e-6, atol=0)


def test_sigmas_on_device_argument():
    s = K.get_sigmas_karras(4, 0.1, 10.0, device="cpu")
    assert s.device.type == "cpu" and s.dtype == torch.float32


def test_helpers_match():
    x, den = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    sig = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(K.to_d(x, sig, den), KD.to_d(x, sig, den), rtol=0, atol=0)
    for a, b, eta in [(2.0, 1.0, 1.0), (torch.tensor(3.0), torch.tensor(0.5), 0.7), (1.0, 0.9, 0.0), (1.0, 0.5, 5.0)]:
        assert K.get_ancestral_step(a, b, eta) == KD.get_ancestral_step(a, b, eta)
    torch.manual_seed(0)
    a = K.default_noise_sampler(x)(1.0, 0.5)
    torch.manual_seed(0)
    b = KD.default_noise_sampler(x)(1.0, 0.5)
    assert torch.equal(a, b)


def test_bad_arguments():
    model, x, sigmas, _ = problem("gmm")
    with pytest.raises(TypeError, match="model"):
        K.sample_euler(None, x, sigmas)
    with pytest.raises(TypeError, match="sigmas"):
        K.sample_euler(model, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="sigmas"):
        K.sample_euler(model, x, sigmas[:1])
    with pytest.raises(TypeError, match="x must be"):
        K.sample_euler(model, x.long(), sigmas)
    with pytest.raises(ValueError, match="solver_type"):
        K.sample_dpmpp_2m_sde(model, x, sigmas, solver_type="rk4")
    with pytest.raises(ValueError, match="order"):
        K.sample_lms(model, x, sigmas, order=0)
    with pytest.raises(TypeError, match="noise_sampler"):
        K.sample_euler_ancestral(model, x, sigmas, noise_sampler=3)


def test_public_api():
    assert set(K.SAMPLERS) == set(SAMPLERS)
    for name in SAMPLERS:
        assert K.SAMPLERS[name] is getattr(K, "sample_" + name)
        assert getattr(K, "sample_" + name).__doc__
    assert math.isfinite(K.get_sigmas_vp(3)[0].item())
