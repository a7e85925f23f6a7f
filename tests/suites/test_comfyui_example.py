"""The ComfyUI custom-node example (examples/comfyui_fastdiff): its registration against stand-ins for ComfyUI's
``comfy.samplers`` and ``comfy.k_diffusion.sampling`` (no ComfyUI needed), and that importing it outside ComfyUI
imports and registers nothing."""
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

import fastdiff.comfyui as fc

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "comfyui_fastdiff"
COMFY_SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"]


def _import_example(module_name="comfyui_fastdiff_under_test"):
    """Import the package as ComfyUI does: by file location, under its own module name."""
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLE / "__init__.py",
                                                  submodule_search_locations=[str(EXAMPLE)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _SchedulerHandler(tuple):
    """ComfyUI's SchedulerHandler shape: ``(handler, use_ms)`` with those two attributes."""

    def __new__(cls, handler, use_ms=True):
        return super().__new__(cls, (handler, use_ms))

    handler = property(lambda self: self[0])
    use_ms = property(lambda self: self[1])


def _stub_comfy():
    """Stand-ins with the attributes ComfyUI's samplers module has (lists shared the way ComfyUI shares them)."""
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSAMPLER_NAMES = ["euler", "dpm_2", "dpmpp_2m"]
    samplers.SAMPLER_NAMES = samplers.KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]
    samplers.SCHEDULER_HANDLERS = {name: _SchedulerHandler(lambda *a, **k: None) for name in COMFY_SCHEDULERS}
    samplers.SCHEDULER_NAMES = list(samplers.SCHEDULER_HANDLERS)
    samplers.SchedulerHandler = _SchedulerHandler
    samplers.KSampler = type("KSampler", (), {"SAMPLERS": samplers.SAMPLER_NAMES,
                                              "SCHEDULERS": samplers.SCHEDULER_NAMES,
                                              "DISCARD_PENULTIMATE_SIGMA_SAMPLERS": {"dpm_2", "dpm_2_ancestral"}})
    k_sampling = types.ModuleType("comfy.k_diffusion.sampling")
    return samplers, k_sampling


def test_importing_outside_comfyui_registers_and_imports_nothing():
    before = {name for name in sys.modules if name == "comfy" or name.startswith("comfy.")}
    module = _import_example()
    after = {name for name in sys.modules if name == "comfy" or name.startswith("comfy.")}
    assert after == before
    assert module.NODE_CLASS_MAPPINGS == {} and callable(module.register)
    if "comfy.samplers" not in before:
        assert module._comfy is None


def test_register_adds_every_fastdiff_scheduler_and_sampler():
    module = _import_example()
    samplers, k_sampling = _stub_comfy()
    added = module.register(samplers, k_sampling)

    expected_schedulers = ["fastdiff_" + name for name in fc.SCHEDULER_NAMES]
    assert added["schedulers"] == expected_schedulers and len(expected_schedulers) == 9
    assert samplers.SCHEDULER_NAMES == COMFY_SCHEDULERS + expected_schedulers  # ComfyUI's own first, untouched
    assert samplers.KSampler.SCHEDULERS is samplers.SCHEDULER_NAMES
    for name in fc.SCHEDULER_NAMES:
        handler = samplers.SCHEDULER_HANDLERS["fastdiff_" + name]
        assert isinstance(handler, _SchedulerHandler)
        assert handler.handler is fc.SCHEDULER_HANDLERS[name].handler
        assert handler.use_ms == fc.SCHEDULER_HANDLERS[name].use_ms

    # the samplers: whatever fastdiff.comfyui implements (none before its sampler face lands)
    expected_samplers = ["fastdiff_" + n for n in getattr(fc, "KSAMPLER_NAMES", ()) if hasattr(fc, f"sample_{n}")]
    assert added["samplers"] == expected_samplers
    assert samplers.KSAMPLER_NAMES == ["euler", "dpm_2", "dpmpp_2m"] + expected_samplers
    assert samplers.SAMPLER_NAMES[:6] == ["euler", "dpm_2", "dpmpp_2m", "ddim", "uni_pc", "uni_pc_bh2"]
    assert samplers.SAMPLER_NAMES[6:] == expected_samplers and samplers.KSampler.SAMPLERS is samplers.SAMPLER_NAMES
    for comfy_name in expected_samplers:
        assert callable(getattr(k_sampling, f"sample_{comfy_name}"))

    # a second call (ComfyUI reloading the package) changes nothing
    module.register(samplers, k_sampling)
    assert samplers.SCHEDULER_NAMES == COMFY_SCHEDULERS + expected_schedulers
    assert samplers.KSAMPLER_NAMES == ["euler", "dpm_2", "dpmpp_2m"] + expected_samplers


def test_registered_schedulers_compute_through_comfyuis_handler_protocol():
    module = _import_example()
    samplers, k_sampling = _stub_comfy()
    module.register(samplers, k_sampling)
    ms = types.SimpleNamespace(sigmas=torch.linspace(0.03, 14.6, 1000), sigma_min=torch.tensor(0.03),
                               sigma_max=torch.tensor(14.6))
    for name in ("fastdiff_karras", "fastdiff_simple", "fastdiff_kl_optimal", "fastdiff_beta"):
        handler = samplers.SCHEDULER_HANDLERS[name]
        # ComfyUI's calculate_sigmas, in the two ways it calls a handler
        if handler.use_ms:
            sigmas = handler.handler(ms, 10)
        else:
            sigmas = handler.handler(n=10, sigma_min=float(ms.sigma_min), sigma_max=float(ms.sigma_max))
        assert sigmas.dtype == torch.float32 and sigmas[-1].item() == 0.0
        assert sigmas[0].item() == pytest.approx(14.6, rel=1e-6)


def test_register_with_a_stand_in_face_adapts_samplers_and_penultimate_discard():
    module = _import_example()
    samplers, k_sampling = _stub_comfy()
    calls = {}

    def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None):
        calls["dpm_fast"] = (float(sigma_min), float(sigma_max), n)
        return x

    face = types.SimpleNamespace(KSAMPLER_NAMES=("euler", "dpm_2", "dpm_fast", "not_implemented"),
                                 sample_euler=sample_euler, sample_dpm_2=sample_dpm_2,
                                 sample_dpm_fast=sample_dpm_fast, SCHEDULER_HANDLERS={})
    added = module.register(samplers, k_sampling, face=face)
    assert added == {"samplers": ["fastdiff_euler", "fastdiff_dpm_2", "fastdiff_dpm_fast"], "schedulers": []}
    assert k_sampling.sample_fastdiff_euler is sample_euler
    assert "fastdiff_dpm_2" in samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    assert "fastdiff_euler" not in samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    x = torch.zeros(2)
    # ComfyUI calls every sampler with the schedule; dpm_fast gets the range and the step count from it
    out = k_sampling.sample_fastdiff_dpm_fast(None, x, torch.tensor([10.0, 1.0, 0.5, 0.0]), extra_args={})
    assert out is x and calls["dpm_fast"] == (0.5, 10.0, 3)


def test_importing_inside_comfyui_registers(monkeypatch):
    samplers, k_sampling = _stub_comfy()
    monkeypatch.setitem(sys.modules, "comfy.samplers", samplers)
    monkeypatch.setitem(sys.modules, "comfy.k_diffusion.sampling", k_sampling)
    module = _import_example("comfyui_fastdiff_inside")
    assert module._comfy == (samplers, k_sampling)
    assert "fastdiff_kl_optimal" in samplers.SCHEDULER_NAMES
