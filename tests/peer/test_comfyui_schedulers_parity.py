"""Scheduler parity with ComfyUI: every scheduler of ``fastdiff.comfyui.SCHEDULER_HANDLERS`` against ComfyUI's
own ``comfy.samplers.calculate_sigmas`` on ComfyUI's own model-sampling objects, within 1e-5 relative.

Runs against a ComfyUI checkout named by ``COMFYUI_DIR`` (skipped where it is unset; no ComfyUI code is in this
repository)::

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -q -s tests/peer/test_comfyui_schedulers_parity.py

ComfyUI computes its schedules in float32 (``torch.linspace``, ``torch.FloatTensor``, float32 ``tan``) and
fastdiff in float64 rounded once, so the two differ by float32 rounding: the bound 1e-5 is about 100 float32
ulps, and what the schedules amplify it by is at most ~15 (``kl_optimal``'s ``tan`` near ``atan(sigma_max)`` for
SD's ``sigma_max = 14.6``), except ``kl_optimal`` on the zero-terminal-SNR table (``sigma_max = 4518``), where
ComfyUI's float32 angle costs its own result ~1e-4: there the bound is that float32 error
(:func:`_kl_optimal_float32_bound`). Lengths must be equal and zeros exact. ``-s`` prints the largest error per case.

Models (all ComfyUI's classes, built as ComfyUI's model configs build them): SD 1.5's ``ModelSamplingDiscrete``
(eps; ``linear`` betas 0.00085 .. 0.012), the same with zero terminal SNR, a flow model (``ModelSamplingDiscreteFlow``
with ``CONST``, shift 3.0, as SD3) and a continuous EDM model (``ModelSamplingContinuousEDM``, sigmas 0.002 .. 120).
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _comfy_loader import StubModule, comfy_dir_or_skip, load_comfy  # noqa: E402

import fastdiff.comfyui as fc  # noqa: E402

STEPS = (1, 2, 3, 10, 25, 50)
REL_TOL = 1e-5
MODELS = ("sd15_eps", "sd15_zsnr", "flow_shift3", "edm")


@pytest.fixture(scope="module")
def comfy():
    return load_comfy(comfy_dir_or_skip())


def _model_sampling(comfy, which: str):
    _, _, model_sampling = comfy
    if which == "sd15_eps":
        cls = type("ModelSampling", (model_sampling.ModelSamplingDiscrete, model_sampling.EPS), {})
        return cls()
    if which == "sd15_zsnr":
        cls = type("ModelSampling", (model_sampling.ModelSamplingDiscrete, model_sampling.V_PREDICTION), {})
        return cls(zsnr=True)
    if which == "flow_shift3":
        cls = type("ModelSampling", (model_sampling.ModelSamplingDiscreteFlow, model_sampling.CONST), {})
        ms = cls()
        ms.set_parameters(shift=3.0)
        return ms
    if which == "edm":
        cls = type("ModelSampling", (model_sampling.ModelSamplingContinuousEDM, model_sampling.EDM), {})
        ms = cls()
        ms.set_parameters(sigma_min=0.002, sigma_max=120.0, sigma_data=1.0)
        return ms
    raise AssertionError(which)


def _relative_errors(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """``|ours - theirs| / |theirs|`` per element (0 where ComfyUI's is 0, which must be an exact zero of ours)."""
    zero = theirs == 0
    assert bool((ours[zero] == 0).all()), f"ComfyUI's zeros at {zero.nonzero().flatten().tolist()}, ours {ours}"
    err = (ours.double() - theirs.double()).abs() / theirs.double().abs().clamp_min(1e-300)
    return torch.where(zero, torch.zeros_like(err), err)


def _kl_optimal_float32_bound(theirs: torch.Tensor) -> torch.Tensor:
    """Per-element relative bound for ``kl_optimal``: ComfyUI takes ``tan`` of a float32 angle, whose rounding
    (a few float32 epsilons of ``atan(sigma)``) ``tan`` amplifies by ``d(log tan)/d(theta) = (1 + sigma**2) /
    sigma``: ~15 for SD's sigma_max 14.6 (inside 1e-5), ~4500 for the zero-SNR table's 4500 (ComfyUI's own
    value is then off by ~1e-4)."""
    sigma = theirs.double().clamp_min(1e-300)
    rounding = 4 * torch.finfo(torch.float32).eps * torch.atan(sigma)
    return torch.clamp(rounding * (1 + sigma**2) / sigma, min=REL_TOL)


def test_the_scheduler_names_are_comfyuis(comfy):
    samplers, _, _ = comfy
    assert list(fc.SCHEDULER_NAMES) == list(samplers.SCHEDULER_NAMES)
    for name in fc.SCHEDULER_NAMES:
        assert fc.SCHEDULER_HANDLERS[name].use_ms == samplers.SCHEDULER_HANDLERS[name].use_ms, name


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", list(fc.SCHEDULER_NAMES))
def test_scheduler_matches_comfyui(comfy, model, name):
    samplers, _, _ = comfy
    ms = _model_sampling(comfy, model)
    worst = 0.0
    for steps in STEPS:
        theirs = samplers.calculate_sigmas(ms, name, steps)
        ours = fc.calculate_sigmas(ms, name, steps)
        assert ours.dtype == torch.float32 and ours.device.type == "cpu"
        if name == "kl_optimal" and steps == 1:
            # ComfyUI divides 0 by 0 for one step; fastdiff gives the one sigma the formula tends to
            assert math.isnan(float(theirs[0])), "ComfyUI's kl_optimal(1) is no longer NaN: compare it"
            assert ours.tolist() == [pytest.approx(float(ms.sigma_max), rel=1e-7), 0.0]
            continue
        assert ours.shape == theirs.shape, f"{name} steps={steps}: {ours.shape} vs ComfyUI's {theirs.shape}"
        theirs = theirs.cpu()
        err = _relative_errors(ours, theirs)
        bound = _kl_optimal_float32_bound(theirs) if name == "kl_optimal" else torch.full_like(err, REL_TOL)
        assert bool((err <= bound).all()), (
            f"{name} on {model}, steps={steps}: relative errors {err.tolist()} over the bounds {bound.tolist()}")
        worst = max(worst, float(err.max()))
    print(f"\n[comfyui parity] {name:16s} {model:12s} steps {STEPS}: max relative error {worst:.2e}")


def _load_align_your_steps_node(comfy_dir: Path):
    """ComfyUI's ``comfy_extras/nodes_align_your_steps.py`` with its node API (``comfy_api.latest``) stubbed."""
    path = comfy_dir / "comfy_extras" / "nodes_align_your_steps.py"
    if not path.is_file():
        pytest.skip(f"{path} not in this ComfyUI checkout")
    api = types.ModuleType("comfy_api")
    latest = types.ModuleType("comfy_api.latest")

    class NodeOutput:
        def __init__(self, *result):
            self.result = result

    latest.io = StubModule("comfy_api.latest.io")  # io.Schema, io.Combo, ...: placeholders (only named)
    latest.io.ComfyNode = object
    latest.io.NodeOutput = NodeOutput
    latest.ComfyExtension = object
    api.latest = latest
    saved = {name: sys.modules.get(name) for name in ("comfy_api", "comfy_api.latest")}
    sys.modules.update({"comfy_api": api, "comfy_api.latest": latest})
    try:
        spec = importlib.util.spec_from_file_location("_comfy_nodes_align_your_steps", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return module


@pytest.mark.parametrize("model_type", ["SD1", "SDXL", "SVD"])
def test_align_your_steps_matches_comfyui(model_type):
    node = _load_align_your_steps_node(comfy_dir_or_skip())
    worst = 0.0
    for steps in STEPS:
        for denoise in (1.0, 0.6):
            theirs = node.AlignYourStepsScheduler.execute(model_type, steps, denoise).result[0]
            ours = fc.align_your_steps_scheduler(model_type, steps, denoise)
            assert ours.shape == theirs.shape, f"{model_type} steps={steps} denoise={denoise}"
            worst = max(worst, float(_relative_errors(ours, theirs).max()))
    assert worst <= REL_TOL
    print(f"\n[comfyui parity] align_your_steps {model_type:5s} steps {STEPS}: max relative error {worst:.2e}")


@pytest.mark.parametrize("model", ["sd15_eps", "flow_shift3"])
@pytest.mark.parametrize("name", ["simple", "ddim_uniform", "beta"])
def test_table_schedulers_pick_comfyuis_entries_for_every_step_count(comfy, model, name):
    """The schedulers that pick training sigmas pick the same ones for every step count 1..120 (bit-equal): the
    rounding of ``beta``'s quantiles, ``ddim_uniform``'s length and ``simple``'s stride all agree."""
    samplers, _, _ = comfy
    ms = _model_sampling(comfy, model)
    for steps in range(1, 121):
        theirs = samplers.calculate_sigmas(ms, name, steps)
        ours = fc.calculate_sigmas(ms, name, steps)
        assert torch.equal(ours, theirs.cpu()), f"{name} on {model}, steps={steps}"


def test_the_custom_node_example_registers_into_comfyuis_own_modules():
    """examples/comfyui_fastdiff registered into a fresh import of ComfyUI's modules: ComfyUI's own
    ``calculate_sigmas`` runs fastdiff's schedulers by their ``fastdiff_`` names, and its ``ksampler`` finds
    fastdiff's samplers."""
    from _comfy_loader import comfy_imported

    example = Path(__file__).resolve().parents[2] / "examples" / "comfyui_fastdiff" / "__init__.py"
    spec = importlib.util.spec_from_file_location("_comfyui_fastdiff_example", example)
    node_package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node_package)
    with comfy_imported(comfy_dir_or_skip()) as (samplers, k_sampling, model_sampling):
        added = node_package.register(samplers, k_sampling)
        assert samplers.SCHEDULER_NAMES[:9] == list(fc.SCHEDULER_NAMES)
        assert samplers.KSampler.SCHEDULERS is samplers.SCHEDULER_NAMES
        ms = type("ModelSampling", (model_sampling.ModelSamplingDiscrete, model_sampling.EPS), {})()
        for name in fc.SCHEDULER_NAMES:
            ours = samplers.calculate_sigmas(ms, "fastdiff_" + name, 10)
            assert torch.equal(ours, fc.calculate_sigmas(ms, name, 10)), name
        for comfy_name in added["samplers"]:
            assert comfy_name in samplers.KSampler.SAMPLERS
            assert samplers.sampler_object(comfy_name).sampler_function is getattr(k_sampling, f"sample_{comfy_name}")
    print(f"\n[comfyui parity] example registered {len(added['samplers'])} samplers, "
          f"{len(added['schedulers'])} schedulers into ComfyUI")
