"""torch.compile(fullgraph=True) around a whole diffusers-style denoising loop, for every drop-in class.

The loop is a pipeline's: iterate ``scheduler.timesteps``, ``scale_model_input``, a small two-layer conv net,
``step(..., return_dict=False)``; ``set_timesteps`` runs eagerly before it. Each class is compiled with and
without ``set_begin_index(0)`` (without it, the traced first step takes the index of ``timesteps[0]``: see
``FusedSchedulerBase._init_step_index``) and must give the eager result: the compiled and eager runs are
compared to each other, bounded by the eager run's own distance to a float64 run of the same loop.
Stochastic classes draw in-kernel Philox noise keyed by ``set_noise_seed`` (a host int, a constant of the
graph), so the compiled and eager runs use the same noise.

The classes and their configs are ``tests/compile_cases.py`` (shared with benchmarks/compile_loops.py).
In CI every class x mode compiles with the ``aot_eager`` backend (dynamo's full trace and AOT autograd's
functional graph: what fullgraph=True checks, without inductor's C++ builds, ~1-10 s each on 2 cores). The
inductor tests run every class with the default backend: in CI the classes of ``INDUCTOR_IN_CI`` (0.7-8.6 CPU s
per begin-mode build as CI runs them, the first also paying inductor's one-time start, ~15 CPU s), the others
with ``--runslow`` (1-21 CPU s each in that run's order, PNDM the longest; figures in
benchmarks/results/2026-12-04-compile-loops.md); benchmarks/compile_loops.py measures cold compiles of every class
beside diffusers'.
"""
from __future__ import annotations

import copy
import logging
import os
import time
import warnings

import pytest
import torch
import torch._dynamo.testing

import fastdiff.diffusers as fd
from compile_cases import CLASSES, NOT_COMPILED, STOCHASTIC

SEED = 20261204
SHAPE = (2, 3, 5, 6)
STEPS = 4

#: inductor builds that stay short enough for CI; the others are marked slow
INDUCTOR_IN_CI = frozenset(("ddim", "euler", "euler_ancestral", "dpm_multi", "unipc", "flow_euler", "ddim_inverse",
                            "ddim_parallel", "deis", "cogvideox_ddim", "dpm_multi_inverse"))
#: the classes whose inductor builds are tested (in CI the others are traced with aot_eager only)
INDUCTOR_CLASSES = tuple(CLASSES)
MODES = ("begin_index", "index_lookup")


def test_every_exported_scheduler_is_covered():
    exported = {n for n in fd.__all__ if n.endswith("Scheduler")}
    covered = {name for name, _ in CLASSES.values()}
    assert not covered & set(NOT_COMPILED)
    assert exported == covered | set(NOT_COMPILED), "add new drop-in classes to CLASSES (or NOT_COMPILED, why)"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._logging.set_logs(dynamo=logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch._logging.set_logs(dynamo=logging.WARNING)
    torch._dynamo.reset()


def make_net(dtype=torch.float32) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
            p.requires_grad_(False)
    return net.to(dtype).eval()


def make_loop(sched, net, begin: bool):
    def loop(x):
        if begin:
            sched.set_begin_index(0)
        scales = hasattr(sched, "scale_model_input")  # diffusers' flow Heun / flow-map classes have none
        for t in sched.timesteps:
            eps = net(sched.scale_model_input(x, t) if scales else x)
            x = sched.step(eps, t, x, return_dict=False)[0]
        return x
    return loop


def new_run(sched, short: str, **kwargs) -> None:
    sched.set_timesteps(STEPS, **kwargs)
    if short in STOCHASTIC:
        sched.set_noise_seed(SEED)


def eager_run(short: str, x: torch.Tensor, begin: bool, dtype=torch.float32) -> torch.Tensor:
    name, cfg = CLASSES[short]
    sched = getattr(fd, name)(**cfg)
    new_run(sched, short)
    with torch.no_grad():
        return make_loop(sched, make_net(dtype), begin)(x.to(dtype) * getattr(sched, "init_noise_sigma", 1.0))


def check_close(got: torch.Tensor, eager: torch.Tensor, ref64: torch.Tensor) -> None:
    """``got`` within twice the eager run's float32 error (against float64) plus a few float32 ulps."""
    own = float((eager.double() - ref64).abs().max())
    scale = float(ref64.abs().max())
    diff = float((got.double() - eager.double()).abs().max())
    assert diff <= 2.0 * own + 8 * torch.finfo(torch.float32).eps * scale, (diff, own, scale)


def compile_and_check(short: str, mode: str, backend: str) -> tuple:
    """Compile ``short``'s loop in ``mode`` with ``backend``, run it twice and check it; returns the first call's
    (wall seconds, CPU seconds of this process and its finished compiler children)."""
    begin = mode == "begin_index"
    name, cfg = CLASSES[short]
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    eager = eager_run(short, x, begin)
    ref64 = eager_run(short, x, begin, torch.float64)
    sched = getattr(fd, name)(**cfg)
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(make_loop(sched, make_net(), begin), backend=counter, fullgraph=True)
    results = []
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    for _ in range(2):  # the second run (a fresh set_timesteps) must reuse the graph
        new_run(sched, short)
        with torch.no_grad():
            results.append(compiled(x * getattr(sched, "init_noise_sigma", 1.0)))
        if not results[1:]:
            seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    assert counter.frame_count == 1, f"{counter.frame_count} compiles: a new run should reuse the graph"
    for got in results:
        check_close(got, eager, ref64)
    if short in STOCHASTIC:  # the noise is really there: another seed moves the result
        other = copy.deepcopy(sched)
        new_run(other, short)
        other.set_noise_seed(SEED + 1)
        with torch.no_grad():
            moved = make_loop(other, make_net(), begin)(x * getattr(other, "init_noise_sigma", 1.0))
        assert float((moved - eager).abs().max()) > 1e-3
    return seconds


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("short", list(CLASSES))
def test_whole_loop_compiles_fullgraph_and_matches_eager(short, mode):
    compile_and_check(short, mode, "aot_eager")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("short", [s if s in INDUCTOR_IN_CI else pytest.param(s, marks=pytest.mark.slow)
                                   for s in INDUCTOR_CLASSES])
def test_whole_loop_compiles_fullgraph_with_inductor(short, mode):
    wall, cpu = compile_and_check(short, mode, "inductor")
    print(f"{short} {mode}: compiled in {wall:.1f} s ({cpu:.1f} CPU s)")


def test_a_run_with_other_sigmas_compiles_anew_and_matches_eager():
    """The tables are graph constants: a run of the same length on other sigmas must not reuse them."""
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    sched = fd.EulerDiscreteScheduler()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(make_loop(sched, make_net(), False), backend=counter, fullgraph=True)

    def eager(sigmas, dtype):
        eager_sched = fd.EulerDiscreteScheduler()
        eager_sched.set_timesteps(sigmas=sigmas)
        with torch.no_grad():
            return make_loop(eager_sched, make_net(dtype), False)(x.to(dtype) * eager_sched.init_noise_sigma)

    outs = []
    for sigmas in ([14.0, 6.0, 2.0, 0.5], [10.0, 3.0, 1.0, 0.2]):
        sched.set_timesteps(sigmas=sigmas)
        with torch.no_grad():
            outs.append(compiled(x * getattr(sched, "init_noise_sigma", 1.0)))
        check_close(outs[-1], eager(sigmas, torch.float32), eager(sigmas, torch.float64))
    assert counter.frame_count == 2
    assert float((outs[0] - outs[1]).abs().max()) > 1e-2


def test_a_loop_started_later_compiles_with_its_begin_index():
    """A loop that does not start at timesteps[0] sets its begin index (as diffusers' img2img pipelines do)."""
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))

    def loop_from(sched, k, net):
        def loop(x):
            sched.set_begin_index(k)
            for t in sched.timesteps[k:]:
                x = sched.step(net(sched.scale_model_input(x, t)), t, x, return_dict=False)[0]
            return x
        return loop

    runs = []
    for compiled, dtype in ((True, torch.float32), (False, torch.float32), (False, torch.float64)):
        sched = fd.DPMSolverMultistepScheduler()
        sched.set_timesteps(5)
        loop = loop_from(sched, 2, make_net(dtype))
        if compiled:
            loop = torch.compile(loop, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            runs.append(loop(x.to(dtype)))
    check_close(*runs)


def test_set_noise_seed():
    sched = fd.EulerAncestralDiscreteScheduler()
    with pytest.raises(TypeError, match="seed"):
        sched.set_noise_seed(1.5)
    with pytest.raises(ValueError, match="seed"):
        sched.set_noise_seed(-1)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))

    def run(seed):
        sched.set_timesteps(STEPS)  # the seed is kept across runs
        state = torch.random.get_rng_state()
        out = x
        for t in sched.timesteps:
            out = sched.step(0.1 * out, t, out, return_dict=False)[0]
        drew = not torch.equal(state, torch.random.get_rng_state())
        return out, drew

    sched.set_noise_seed(5)
    a, drew_a = run(5)
    b, drew_b = run(5)
    assert torch.equal(a, b) and not drew_a and not drew_b  # no global-generator draw with a fixed seed
    sched.set_noise_seed(None)
    c, drew_c = run(None)
    assert drew_c and not torch.equal(a, c)  # back to one draw per run from the global generator
