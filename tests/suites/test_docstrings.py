"""The examples in the public docstrings run (doctest), with ``torch`` and ``fastdiff`` in scope."""
import doctest
import importlib

import pytest
import torch

import fastdiff

MODULES = [
    "fastdiff.schedules", "fastdiff.schedules._discrete", "fastdiff.schedules._continuous", "fastdiff.schedules._flow",
    "fastdiff.schedules._timesteps", "fastdiff.schedules._sigmas", "fastdiff.random", "fastdiff.toy",
    "fastdiff.sampling", "fastdiff.samplers", "fastdiff.solvers", "fastdiff.denoisers",
    "fastdiff.mcmc", "fastdiff.mcmc._langevin", "fastdiff.mcmc._mala", "fastdiff.mcmc._sde", "fastdiff.mcmc._pc",
    "fastdiff.mcmc._underdamped", "fastdiff.ops.underdamped", "fastdiff.mcmc._diagnostics", "fastdiff.demo_mcmc",
    "fastdiff.ops.step", "fastdiff.ops.encode", "fastdiff.ops.langevin", "fastdiff.k_diffusion",
    "fastdiff.k_diffusion.sampling", "fastdiff.k_diffusion.schedules", "fastdiff.k_diffusion.noise", "fastdiff.demo_run",
    "fastdiff.diffusers._ddim", "fastdiff.diffusers._euler", "fastdiff.diffusers._multistep",
    "fastdiff.diffusers._flow", "fastdiff.diffusers._lcm", "fastdiff.diffusers._parallel", "fastdiff.bench",
    "fastdiff.diffusers._consistency", "fastdiff.diffusers._sde_ve", "fastdiff.diffusers._unclip",
    "fastdiff.bench.sizes", "fastdiff.bench.timing",
    "fastdiff.diffusers._lms", "fastdiff.diffusers._kdpm2", "fastdiff.diffusers._edm",
    "fastdiff.bench.cases_step", "fastdiff.bench.runner", "fastdiff.bench.report", "fastdiff.bench.profiling",
    "fastdiff.ops.hmc", "fastdiff.mcmc._hmc", "fastdiff.mcmc._adapt",
    "fastdiff.schedules._scheduler_sigmas", "fastdiff.schedules._beta_dist", "fastdiff.schedules._ays",
    "fastdiff.comfyui.schedulers", "fastdiff.comfyui.sampling", "fastdiff.comfyui.run",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name, extraglobs={"torch": torch, "fastdiff": fastdiff})
    assert tests, f"{name} has no docstring examples"
    examples = 0
    for test in tests:
        examples += len(test.examples)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {examples} docstring examples failed in {name}"
