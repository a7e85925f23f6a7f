"""The ComfyUI face without ComfyUI: signatures, callbacks, noise-sampler calls, extra_args and the post-CFG hook,
errors, and each ``fastdiff.comfyui.sample_<name>`` against the core sampler it adapts.

The numbers against ComfyUI itself are tests/peer/test_comfyui_samplers_parity.py (needs a ComfyUI checkout).
Tolerances: both sides run float32 with the same model and the same noise; they differ only in where scalars are
rounded (0-d tensors here, host floats in ``fastdiff.sample``), 1e-5 relative is ~100 float32 ulps.
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch

import fastdiff
import fastdiff.comfyui as fc
from fastdiff import k_diffusion as K
from fastdiff import samplers as core
from fastdiff.comfyui.run import DISABLE_CFG1_KEY, POST_CFG_KEY, ComfyUIRun, cfg_model, is_flow_model_sampling

COND = fastdiff.toy.GaussianMixture.ring(k=4, radius=3.0, std=0.4)
UNCOND = fastdiff.toy.GaussianMixture(torch.tensor([[1.0, 0.0], [-2.0, 1.5], [0.5, -2.5]]), 0.6)
SCALE = 3.0
SIGMAS = K.get_sigmas_karras(6, 0.03, 14.6)
CFGPP = [n for n in fc.KSAMPLER_NAMES if n.endswith("_cfg_pp")]
WITH_NOISE = [n for n in fc.KSAMPLER_NAMES if "noise_sampler" in inspect.signature(getattr(fc, f"sample_{n}")).parameters]

# ComfyUI's parameters after (model, x, sigmas, extra_args, callback, disable), with their defaults
_ETA_NOISE = {"eta": 1.0, "s_noise": 1.0, "noise_sampler": None}
_CHURN = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
COMFY_OPTIONS = {
    "euler": _CHURN, "euler_cfg_pp": {}, "euler_ancestral": _ETA_NOISE, "euler_ancestral_cfg_pp": _ETA_NOISE,
    "heun": _CHURN, "dpm_2": _CHURN, "dpm_2_ancestral": _ETA_NOISE, "lms": {"order": 4},
    "dpmpp_2s_ancestral": _ETA_NOISE, "dpmpp_2s_ancestral_cfg_pp": _ETA_NOISE,
    "dpmpp_sde": {**_ETA_NOISE, "r": 0.5}, "dpmpp_sde_gpu": {**_ETA_NOISE, "r": 0.5},
    "dpmpp_2m": {}, "dpmpp_2m_cfg_pp": {},
    "dpmpp_2m_sde": {**_ETA_NOISE, "solver_type": "midpoint"},
    "dpmpp_2m_sde_gpu": {**_ETA_NOISE, "solver_type": "midpoint"},
    "dpmpp_2m_sde_heun": {**_ETA_NOISE, "solver_type": "heun"},
    "dpmpp_2m_sde_heun_gpu": {**_ETA_NOISE, "solver_type": "heun"},
    "dpmpp_3m_sde": _ETA_NOISE, "dpmpp_3m_sde_gpu": _ETA_NOISE,
    "ddpm": {"noise_sampler": None},
    "res_multistep": {"s_noise": 1.0, "noise_sampler": None},
    "res_multistep_cfg_pp": {"s_noise": 1.0, "noise_sampler": None},
    "res_multistep_ancestral": _ETA_NOISE, "res_multistep_ancestral_cfg_pp": _ETA_NOISE,
    "gradient_estimation": {"ge_gamma": 2.0, "cfg_pp": False}, "gradient_estimation_cfg_pp": {"ge_gamma": 2.0},
    "heunpp2": _CHURN, "lcm": {"noise_sampler": None}, "ipndm": {"max_order": 4}, "ipndm_v": {"max_order": 4},
    "deis": {"max_order": 3, "deis_mode": "tab"},
    "er_sde": {"s_noise": 1.0, "noise_sampler": None, "noise_scaler": None, "max_stage": 3},
    "seeds_2": {**_ETA_NOISE, "r": 0.5}, "seeds_3": {**_ETA_NOISE, "r_1": 1.0 / 3, "r_2": 2.0 / 3},
    "sa_solver": {"tau_func": None, "s_noise": 1.0, "noise_sampler": None, "predictor_order": 3,
                  "corrector_order": 4, "use_pece": False, "simple_order_2": False},
    "sa_solver_pece": {"tau_func": None, "s_noise": 1.0, "noise_sampler": None, "predictor_order": 3,
                       "corrector_order": 4, "simple_order_2": False},
}
#: ComfyUI's sa_solver functions default disable to False, the others to None
DISABLE_DEFAULT = {"sa_solver": False, "sa_solver_pece": False}


def _x(seed: int = 0, n: int = 32) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * float(SIGMAS[0])


class CountingNoise:
    """``torch.randn`` from its own generator, recording each call's (sigma, sigma_next)."""

    def __init__(self, shape, seed: int = 11):
        self.gen, self.shape, self.calls = torch.Generator().manual_seed(seed), shape, []

    def __call__(self, sigma, sigma_next):
        self.calls.append((float(sigma), float(sigma_next)))
        return torch.randn(self.shape, generator=self.gen)


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 distance of a from b (the whole tensor: elementwise bounds are dominated by the few points a
    mixture's decision boundary amplifies)."""
    return float((a.double() - b.double()).norm() / b.double().norm())


def _model():
    return cfg_model(COND.denoiser, UNCOND.denoiser, SCALE)


# --------------------------------------------------------------------------------------------- names, signatures
def test_names_are_comfyuis_in_its_order():
    order = list(fc.sampling._COMFY_ORDER)
    assert list(fc.KSAMPLER_NAMES) == sorted(fc.KSAMPLER_NAMES, key=order.index)
    assert set(fc.KSAMPLER_NAMES) >= set(COMFY_OPTIONS)
    assert set(fc.SAMPLERS) == set(fc.KSAMPLER_NAMES)
    for n in fc.KSAMPLER_NAMES:
        assert f"sample_{n}" in fc.__all__ and f"sample_{n}" in fc.sampling.__all__


@pytest.mark.parametrize("name", sorted(COMFY_OPTIONS))
def test_signature_is_comfyuis(name):
    params = list(inspect.signature(getattr(fc, f"sample_{name}")).parameters.values())
    assert [p.name for p in params[:6]] == ["model", "x", "sigmas", "extra_args", "callback", "disable"]
    assert [p.default for p in params[3:6]] == [None, None, DISABLE_DEFAULT.get(name)]
    assert {p.name: p.default for p in params[6:]} == COMFY_OPTIONS[name]


def test_dpm_fast_and_adaptive_signatures_are_comfyuis():
    params = list(inspect.signature(fc.sample_dpm_fast).parameters)
    assert params == ["model", "x", "sigma_min", "sigma_max", "n", "extra_args", "callback", "disable", "eta",
                      "s_noise", "noise_sampler"]
    params = inspect.signature(fc.sample_dpm_adaptive).parameters
    assert list(params)[:7] == ["model", "x", "sigma_min", "sigma_max", "extra_args", "callback", "disable"]
    assert {k: p.default for k, p in list(params.items())[7:]} == {
        "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
        "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0, "noise_sampler": None, "return_info": False}


# --------------------------------------------------------------------------------------------- against the core
def _cfg_denoiser():
    def inner(x, sigma, cond):
        pick = cond.reshape(-1, 1) > 0.5
        return torch.where(pick, COND.denoiser(x, sigma), UNCOND.denoiser(x, sigma))

    n = _x().shape[0]
    return fastdiff.CFGDenoiser(inner, cond=torch.ones(n), uncond=torch.zeros(n), scale=SCALE)


DETERMINISTIC = [n for n in fc.KSAMPLER_NAMES if n in core.SAMPLERS and n not in WITH_NOISE and n != "lms"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_face_equals_core_sample(name):
    """The face on ComfyUI's CFG-shaped model == ``fastdiff.sample`` with a CFGDenoiser of the same mixtures."""
    x = _x()
    got = getattr(fc, f"sample_{name}")(_model(), x, SIGMAS, disable=True)
    want = fastdiff.sample(_cfg_denoiser(), x, SIGMAS, sampler=name)
    assert _rel_l2(got, want) <= 1e-5


@pytest.mark.parametrize("name", [n for n in WITH_NOISE if n in K.SAMPLERS or n.rsplit("_gpu")[0] in K.SAMPLERS
                                  or n.startswith("dpmpp_2m_sde")])
def test_stochastic_face_equals_k_diffusion_face(name):
    """With the same noise the ComfyUI face equals fastdiff.k_diffusion's (the same core sampler) on a VE model."""
    x = _x()
    kname = "dpmpp_2m_sde" if name.startswith("dpmpp_2m_sde") else name.replace("_gpu", "")
    kw = {"solver_type": "heun"} if "heun" in name else {}
    got = getattr(fc, f"sample_{name}")(_model(), x, SIGMAS, disable=True, noise_sampler=CountingNoise(x.shape))
    want = K.SAMPLERS[kname](_model(), x, SIGMAS, disable=True, noise_sampler=CountingNoise(x.shape), **kw)
    assert _rel_l2(got, want) <= 1e-5


def test_lms_last_step_is_denoised():
    """ComfyUI's lms ends with ``x = denoised`` (k-diffusion's takes an LMS step to 0): exactly the last x0."""
    seen = []
    out = fc.sample_lms(_model(), _x(), SIGMAS, callback=seen.append, disable=True)
    assert torch.equal(out, seen[-1]["denoised"])
    k_out = K.sample_lms(_model(), _x(), SIGMAS, disable=True)
    assert not torch.equal(out, k_out)
    torch.testing.assert_close(out, k_out, rtol=0.05, atol=0.05)  # the same run otherwise


def test_core_lms_final_denoise_option():
    run = ComfyUIRun(_model(), _x(), SIGMAS, None, None, True)
    out = core.sample_lms(run, _x(), final_denoise=True)
    torch.testing.assert_close(out, fc.sample_lms(_model(), _x(), SIGMAS, disable=True), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- callbacks
@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "dpmpp_sde", "euler_cfg_pp", "res_multistep"])
def test_callback_dicts(name):
    seen = []
    calls = []

    def model(x, sigma, **kw):
        out = _model()(x, sigma, **kw)
        calls.append((float(sigma[0]), x, out))
        return out

    # at each callback the latest model call is the step's first evaluation, at (x_i, sigma_i)
    getattr(fc, f"sample_{name}")(model, _x(), SIGMAS, callback=lambda d: seen.append((d, calls[-1])),
                                  disable=True)
    assert [d["i"] for d, _ in seen] == list(range(len(SIGMAS) - 1))
    for d, (sigma, x, out) in seen:
        assert set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(d["sigma"]) == float(SIGMAS[d["i"]]) == sigma and float(d["sigma_hat"]) == sigma
        assert torch.equal(d["denoised"], out) and torch.equal(d["x"], x)


def test_churn_callback_sigma_hat_and_global_rng():
    """With churn ComfyUI reports sigma_hat = sigma (gamma + 1) and draws randn_like only on churned steps."""
    seen = []
    sigmas = SIGMAS
    torch.manual_seed(3)
    a = fc.sample_euler(_model(), _x(), sigmas, callback=seen.append, disable=True, s_churn=2.0, s_tmin=1.0, s_tmax=5.0)
    gamma = min(2.0 / (len(sigmas) - 1), 2 ** 0.5 - 1)
    churned = [i for i in range(len(sigmas) - 1) if 1.0 <= float(sigmas[i]) <= 5.0]
    assert churned and len(churned) < len(sigmas) - 1
    for d in seen:
        want = float(sigmas[d["i"]]) * ((gamma + 1) if d["i"] in churned else 1.0)
        assert math.isclose(float(d["sigma_hat"]), want, rel_tol=1e-6)
    after = torch.randn(1)
    torch.manual_seed(3)
    b = fc.sample_euler(_model(), _x(), sigmas, disable=True, s_churn=2.0, s_tmin=1.0, s_tmax=5.0)
    torch.manual_seed(3)
    for _ in churned:
        torch.randn(_x().shape)
    assert torch.equal(a, b) and torch.equal(torch.randn(1), after)


def test_no_churn_leaves_global_rng_alone():
    torch.manual_seed(4)
    fc.sample_euler(_model(), _x(), SIGMAS, disable=True)
    fc.sample_euler_ancestral(_model(), _x(), SIGMAS, {"seed": 1}, disable=True)
    got = torch.randn(3)
    torch.manual_seed(4)
    assert torch.equal(got, torch.randn(3))


# --------------------------------------------------------------------------------------------- noise sampler calls
def _calls(name, **kw):
    x = _x()
    ns = CountingNoise(x.shape)
    getattr(fc, f"sample_{name}")(_model(), x, SIGMAS, disable=True, noise_sampler=ns, **kw)
    return [v for pair in ns.calls for v in pair]  # flat, for pytest.approx


def _pairs(upto=None):
    s = [float(v) for v in SIGMAS]
    return [v for i in range(len(s) - 1) for v in (s[i], s[i + 1])][: None if upto is None else 2 * upto]


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "ddpm",
                                  "euler_ancestral_cfg_pp", "dpmpp_2m_sde", "dpmpp_3m_sde", "res_multistep_ancestral"])
def test_noise_sampler_called_per_step_but_the_last(name):
    assert _calls(name) == pytest.approx(_pairs(-1))


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"])
@pytest.mark.parametrize("zero", ["eta", "s_noise"])
def test_sde_samplers_skip_the_noise_sampler_without_noise(name, zero):
    """ComfyUI's SDE samplers call the noise sampler only when eta > 0 and s_noise > 0."""
    assert _calls(name, **{zero: 0.0}) == []


def test_ancestral_samplers_call_the_noise_sampler_even_with_s_noise_zero():
    assert len(_calls("euler_ancestral", s_noise=0.0)) == 2 * (len(SIGMAS) - 2)


def test_dpmpp_sde_noise_arguments_are_comfyuis():
    """(sigma_i, sigma_mid) then (sigma_i, sigma_next), sigma_mid the log-sigma midpoint (r = 1/2)."""
    calls = _calls("dpmpp_sde")
    s = [float(v) for v in SIGMAS]
    want = []
    for i in range(len(s) - 2):
        want += [s[i], math.sqrt(s[i] * s[i + 1]), s[i], s[i + 1]]
    assert calls == pytest.approx(want, rel=1e-5)


def test_deterministic_samplers_never_call_a_noise_sampler():
    assert _calls("res_multistep") == pytest.approx(_pairs(-1))  # drawn by ComfyUI, weighted by sigma_up = 0
    for name in ("dpmpp_2m", "heun"):
        assert "noise_sampler" not in inspect.signature(getattr(fc, f"sample_{name}")).parameters


# --------------------------------------------------------------------------------------------- Philox default
@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "ddpm"])
def test_philox_default_is_keyed_by_the_seed(name):
    fn = getattr(fc, f"sample_{name}")
    a = fn(_model(), _x(), SIGMAS, {"seed": 5}, disable=True)
    b = fn(_model(), _x(), SIGMAS, {"seed": 5}, disable=True)
    c = fn(_model(), _x(), SIGMAS, {"seed": 6}, disable=True)
    d = fn(_model(), _x(), SIGMAS, {"seed": 5 + 2 ** 63}, disable=True)  # ComfyUI seeds are 64-bit
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(a, d)
    assert torch.isfinite(a).all()


def test_philox_without_seed_draws_one_from_the_global_rng():
    torch.manual_seed(8)
    a = fc.sample_euler_ancestral(_model(), _x(), SIGMAS, disable=True)
    torch.manual_seed(8)
    b = fc.sample_euler_ancestral(_model(), _x(), SIGMAS, disable=True)
    c = fc.sample_euler_ancestral(_model(), _x(), SIGMAS, disable=True)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_philox_noise_has_unit_variance():
    """The final step of ddpm from sigma_1 adds sigma_up z: the z it drew are standard normal (n = 20000 per
    coordinate, so a variance error above ~3% fails at 4 sigma)."""
    sig = torch.tensor([2.0, 1.0])  # one step, ending above 0: it adds sigma_up z
    zero = lambda x, s, **kw: torch.zeros_like(x)  # noqa: E731 - x0 = 0 and x = 0: the result is sigma_up z
    out = fc.sample_euler_ancestral(zero, torch.zeros(20000, 2), sig, {"seed": 2}, disable=True)
    _, up = fastdiff.solvers.ancestral_split(2.0, 1.0)
    z = (out / up).double()
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel())
    assert abs(float(z.var()) - 1.0) < 4 * math.sqrt(2 / z.numel())


# --------------------------------------------------------------------------------------------- extra_args, CFG++ hook
class RecordingModel:
    """A CFG-shaped model that records the model_options it is called with."""

    def __init__(self):
        self.inner = _model()
        self.options = []

    def __call__(self, x, sigma, model_options=None, **kw):
        self.options.append(model_options)
        return self.inner(x, sigma, model_options=model_options, **kw)


def test_extra_args_reach_the_model_and_stay_untouched():
    got = []
    mo = {"transformer_options": {"a": 1}}
    extra = {"model_options": mo, "seed": 3, "denoise_mask": None}
    snapshot = dict(extra)

    def model(x, sigma, model_options=None, seed=None, denoise_mask=None):
        got.append((model_options, seed, denoise_mask))
        return _model()(x, sigma)

    fc.sample_euler_ancestral(model, _x(), SIGMAS, extra, disable=True)
    assert got and all(o is mo and s == 3 and m is None for o, s, m in got)
    assert extra == snapshot and extra["model_options"] is mo and mo == {"transformer_options": {"a": 1}}


@pytest.mark.parametrize("name", CFGPP)
def test_cfg_pp_registers_a_post_cfg_hook(name):
    model = RecordingModel()
    existing = lambda args: args["denoised"]  # noqa: E731
    mo = {POST_CFG_KEY: [existing], "other": 1}
    getattr(fc, f"sample_{name}")(model, _x(), SIGMAS, {"model_options": mo}, disable=True)
    assert mo == {POST_CFG_KEY: [existing], "other": 1}  # the caller's dict as it was
    for options in model.options:
        assert options is not mo and options["other"] == 1 and options[DISABLE_CFG1_KEY] is True
        hooks = options[POST_CFG_KEY]
        assert len(hooks) == 2 and hooks[0] is existing


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "euler_ancestral"])
def test_other_samplers_register_no_hook(name):
    model = RecordingModel()
    mo = {"other": 1}
    getattr(fc, f"sample_{name}")(model, _x(), SIGMAS, {"model_options": mo}, disable=True)
    assert all(o is mo for o in model.options)


@pytest.mark.parametrize("name", CFGPP)
def test_cfg_pp_uses_the_unconditional_estimate(name):
    """CFG++ differs from its plain sampler because it reads the hook's uncond_denoised (zero it to see)."""
    x = _x()
    a = getattr(fc, f"sample_{name}")(_model(), x, SIGMAS, {"seed": 1}, disable=True)
    same_uncond = cfg_model(COND.denoiser, COND.denoiser, SCALE)
    b = getattr(fc, f"sample_{name}")(same_uncond, x, SIGMAS, {"seed": 1}, disable=True)
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_gradient_estimation_cfg_pp_flag():
    x = _x()
    a = fc.sample_gradient_estimation(_model(), x, SIGMAS, disable=True, cfg_pp=True)
    assert torch.equal(a, fc.sample_gradient_estimation_cfg_pp(_model(), x, SIGMAS, disable=True))
    assert not torch.equal(a, fc.sample_gradient_estimation(_model(), x, SIGMAS, disable=True))


@pytest.mark.parametrize("name", CFGPP[:2])
def test_cfg_pp_without_the_hook_call_raises(name):
    plain = lambda x, s, **kw: x / (1 + s[:, None] ** 2)  # noqa: E731 - ignores model_options
    with pytest.raises(ValueError, match="unconditional"):
        getattr(fc, f"sample_{name}")(plain, _x(), SIGMAS, disable=True)


# --------------------------------------------------------------------------------------------- model sampling
class CONST:  # the name ComfyUI's flow model sampling derives from
    def percent_to_sigma(self, p):
        return 1.0 - p


class Flux(CONST):
    pass


class _Chain:
    def __init__(self, ms, model):
        self.inner_model = type("Guider", (), {})()
        self.inner_model.inner_model = type("Base", (), {"model_sampling": ms})()
        self._model = model

    def __call__(self, x, sigma, **kw):
        return self._model(x, sigma, **kw)


def test_model_sampling_is_read_through_comfyuis_chain():
    assert is_flow_model_sampling(Flux()) and not is_flow_model_sampling(object())
    run = ComfyUIRun(_Chain(Flux(), _model()), _x(), torch.tensor([0.9, 0.5, 0.0]), None, None, True)
    assert run.flow_sigmas and isinstance(run.model_sampling, Flux)
    run = ComfyUIRun(_Chain(object(), _model()), _x(), torch.tensor([0.9, 0.5, 0.0]), None, None, True)
    assert not run.flow_sigmas
    patcher = type("P", (), {"get_model_object": lambda self, name: Flux()})()
    chained = _Chain(None, _model())
    chained.inner_model = type("Guider", (), {"model_patcher": patcher})()
    assert ComfyUIRun(chained, _x(), torch.tensor([0.9, 0.5, 0.0]), None, None, True).flow_sigmas


def test_flow_first_sigma_offset():
    """dpmpp_sde / 2m_sde / 3m_sde move a first flow sigma of 1 to percent_to_sigma(1e-4); the caller's sigmas stay."""
    seen = []
    sigmas = torch.tensor([1.0, 0.6, 0.3, 0.0])
    model = _Chain(Flux(), lambda x, s, **kw: 0.5 * x)
    fc.sample_dpmpp_2m_sde(model, torch.ones(4, 2), sigmas, {"seed": 0}, callback=seen.append, disable=True)
    assert float(seen[0]["sigma"]) == pytest.approx(1 - 1e-4) and float(sigmas[0]) == 1.0
    seen.clear()
    fc.sample_euler(model, torch.ones(4, 2), sigmas, callback=seen.append, disable=True)
    assert float(seen[0]["sigma"]) == 1.0


# --------------------------------------------------------------------------------------------- errors, edge cases
def test_single_sigma_returns_x():
    x = _x()
    for name in [n for n in fc.KSAMPLER_NAMES if not n.startswith("dpm_")]:  # those take (sigma_min, sigma_max)
        assert getattr(fc, f"sample_{name}")(_model(), x, SIGMAS[:1], disable=True) is x


@pytest.mark.parametrize("bad, kw, err, match", [
    ("model", {}, TypeError, "model must be callable"),
    ("extra", {}, TypeError, "extra_args must be a dict"),
    ("seed", {}, TypeError, "seed"),
    ("noise", {}, TypeError, "noise_sampler must be callable"),
    ("options", {}, TypeError, "model_options"),
    ("repeat", {}, ValueError, "strictly decreasing"),
])
def test_bad_input(bad, kw, err, match):
    model, extra, sigmas, fn, ns = _model(), None, SIGMAS, fc.sample_euler_ancestral, None
    if bad == "model":
        model = 3
    elif bad == "extra":
        extra = [1]
    elif bad == "seed":
        extra = {"seed": -1}
    elif bad == "noise":
        ns = "randn"
    elif bad == "options":
        extra, fn = {"model_options": [1]}, fc.sample_euler_cfg_pp
    elif bad == "repeat":
        sigmas = torch.tensor([5.0, 2.0, 2.0, 0.0])
    kwargs = {"noise_sampler": ns} if fn is fc.sample_euler_ancestral else {}
    with pytest.raises(err, match=match):
        fn(model, _x(), sigmas, extra, disable=True, **kwargs)


def test_does_not_touch_x_or_sigmas():
    x, sigmas = _x(), SIGMAS.clone()
    x0, s0 = x.clone(), sigmas.clone()
    for name in ("euler_ancestral", "dpmpp_2m_sde", "lms", "euler_cfg_pp"):
        getattr(fc, f"sample_{name}")(_model(), x, sigmas, {"seed": 1}, disable=True)
    assert torch.equal(x, x0) and torch.equal(sigmas, s0)
