"""torch.compile(fullgraph=True) around a whole diffusers-style denoising loop, for every drop-in class.

The loop is a pipeline's: iterate ``scheduler.timesteps``, ``scale_model_input``, a small two-layer conv net,
``step(..., return_dict=False)``; ``set_timesteps`` runs eagerly before it. Each class is compiled with and
without ``set_begin_index(0)`` (without it, the traced first step takes the index of ``timesteps[0]``: see
``FusedSchedulerBase._init_step_index``) and must give the eager result: the compiled and eager runs are
compared to each other, bounded by the eager run's own distance to a float64 run of the same loop.
Stochastic classes draw in-kernel Philox noise keyed by ``set_noise_seed`` (a host int, a constant of the
graph), so the compiled and eager runs use the same noise; the two classes whose diffusers noise is torchsde's
Brownian tree (DPMSolverSDE, CosineDPMSolverMultistep) draw Philox noise with the tree's law under it
(tests/faces/test_diffusers_sde.py tests that law). The classes whose pipelines call them otherwise
(OWN_LOOPS: unCLIP's prior with ``prev_timestep``, ScoreSdeVe's predictor-corrector, CogVideoX's DPM loop,
Wuerstchen's prior) are compiled around those pipelines' loops (which set no begin index; the drop-ins are
run with one too).

The classes and their configs are ``tests/compile_cases.py`` (shared with benchmarks/compile_loops.py).
In CI every class x mode compiles with the ``aot_eager`` backend (dynamo's full trace and AOT autograd's
functional graph: what fullgraph=True checks, without inductor's C++ builds, ~1-10 s each on 2 cores). The
inductor tests run every class with the default backend: in CI the classes of ``INDUCTOR_IN_CI`` (0.7-8.6 CPU s
per begin-mode build as CI runs them, the first also paying inductor's one-time start, ~15 CPU s), the others
-- the OWN_LOOPS loops, UnCLIP, FlowMapEuler and the two Brownian-tree classes (DPMSolverSDE 33 s,
CosineDPMSolverMultistep 20 s at load ~4.5) among them -- with ``--runslow`` (1-21 CPU s each in that run's
order, PNDM the longest; figures in benchmarks/results/2026-12-04-compile-loops.md);
benchmarks/compile_loops.py measures cold compiles of every class beside diffusers'.
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
    covered = {name for name, _ in CLASSES.values()} | {name for name, _, _ in OWN_LOOPS.values()}
    assert not covered & set(NOT_COMPILED)
    assert exported == covered | set(NOT_COMPILED), \
        "add new drop-in classes to CLASSES or OWN_LOOPS (or NOT_COMPILED, why)"


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


def make_unclip_prior_loop(sched, net, begin: bool):
    """unCLIP's (and Kandinsky's) prior loop: each step names the next timestep, the last step none."""
    def loop(x):
        if begin:
            sched.set_begin_index(0)
        timesteps = sched.timesteps
        for i, t in enumerate(timesteps):
            prev = timesteps[i + 1] if i + 1 < timesteps.shape[0] else None
            x = sched.step(net(x), timestep=t, sample=x, prev_timestep=prev).prev_sample
        return x
    return loop


def make_score_sde_ve_loop(sched, net, begin: bool):
    """ScoreSdeVePipeline's predictor-corrector loop: per timestep, ``correct_steps`` Langevin corrections, then
    the predictor; its result is the last predictor mean. The score model is the net on ``x / sigma`` (a VE
    model sees its noise level), ``score = (net(x / sigma) - x / sigma) / sigma``."""
    def score(x, sigma):
        s = sigma.reshape(-1, *(1,) * (x.dim() - 1))
        return (net(x / s) - x / s) / s

    def loop(x):
        if begin:
            sched.set_begin_index(0)
        for i, t in enumerate(sched.timesteps):
            sigma = sched.sigmas[i] * torch.ones(x.shape[0], dtype=x.dtype)
            for _ in range(sched.config.correct_steps):
                x = sched.step_correct(score(x, sigma), x).prev_sample
            out = sched.step_pred(score(x, sigma), t, x)
            x, mean = out.prev_sample, out.prev_sample_mean
        return mean
    return loop


def make_cogvideox_dpm_loop(sched, net, begin: bool):
    """CogVideoX pipelines' loop with CogVideoXDPMScheduler: each step passes the previous x0 estimate and the
    previous timestep (``timesteps[i - 1]``) and gets the new estimate back."""
    def loop(x):
        if begin:
            sched.set_begin_index(0)
        old = None
        timesteps = sched.timesteps
        for i, t in enumerate(timesteps):
            eps = net(sched.scale_model_input(x, t))
            x, old = sched.step(eps, old, t, timesteps[i - 1] if i > 0 else None, x, return_dict=False)
        return x
    return loop


def make_wuerstchen_prior_loop(sched, net, begin: bool):
    """Wuerstchen's prior loop: every timestep but the last, as a per-sample ratio (``t.expand(batch)``)."""
    def loop(x):
        if begin:
            sched.set_begin_index(0)
        for t in sched.timesteps[:-1]:
            ratio = t.expand(x.shape[0]).to(x.dtype)
            x = sched.step(model_output=net(x), timestep=ratio, sample=x).prev_sample
        return x
    return loop


#: id -> (class name, config, loop builder): the classes whose pipelines run a loop of their own (another
#: signature than step(model_output, t, sample), or other arguments); those pipelines call no set_begin_index
#: (diffusers' classes have none), the drop-ins have it and are run with and without it
OWN_LOOPS = {
    "unclip_prior": ("UnCLIPScheduler", {}, make_unclip_prior_loop),
    "score_sde_ve": ("ScoreSdeVeScheduler", {"sigma_max": 50.0}, make_score_sde_ve_loop),
    "cogvideox_dpm": ("CogVideoXDPMScheduler", {}, make_cogvideox_dpm_loop),
    "wuerstchen_prior": ("DDPMWuerstchenScheduler", {}, make_wuerstchen_prior_loop),
}
OWN_STOCHASTIC = frozenset(OWN_LOOPS)  # every one of them adds noise


def case(short: str):
    """``(class name, config, loop builder, stochastic)`` of a CLASSES or OWN_LOOPS id."""
    if short in OWN_LOOPS:
        name, cfg, builder = OWN_LOOPS[short]
        return name, cfg, builder, short in OWN_STOCHASTIC
    name, cfg = CLASSES[short]
    return name, cfg, make_loop, short in STOCHASTIC


def new_run(sched, short: str, **kwargs) -> None:
    sched.set_timesteps(STEPS, **kwargs)
    if hasattr(sched, "set_sigmas"):  # ScoreSdeVe: its pipeline sets the sigmas after the timesteps
        sched.set_sigmas(STEPS)
    if case(short)[3]:
        sched.set_noise_seed(SEED)


def eager_run(short: str, x: torch.Tensor, begin: bool, dtype=torch.float32) -> torch.Tensor:
    name, cfg, builder, _ = case(short)
    sched = getattr(fd, name)(**cfg)
    new_run(sched, short)
    with torch.no_grad():
        return builder(sched, make_net(dtype), begin)(x.to(dtype) * getattr(sched, "init_noise_sigma", 1.0))


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
    name, cfg, builder, stochastic = case(short)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    eager = eager_run(short, x, begin)
    ref64 = eager_run(short, x, begin, torch.float64)
    sched = getattr(fd, name)(**cfg)
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(builder(sched, make_net(), begin), backend=counter, fullgraph=True)
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
    if stochastic:  # the noise is really there: another seed moves the result
        other = copy.deepcopy(sched)
        new_run(other, short)
        other.set_noise_seed(SEED + 1)
        with torch.no_grad():
            moved = builder(other, make_net(), begin)(x * getattr(other, "init_noise_sigma", 1.0))
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
@pytest.mark.parametrize("short", list(OWN_LOOPS))
def test_own_pipeline_loop_compiles_fullgraph_and_matches_eager(short, mode):
    compile_and_check(short, mode, "aot_eager")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("short", [s if s in INDUCTOR_IN_CI else pytest.param(s, marks=pytest.mark.slow)
                                   for s in INDUCTOR_CLASSES])
def test_whole_loop_compiles_fullgraph_with_inductor(short, mode):
    wall, cpu = compile_and_check(short, mode, "inductor")
    print(f"{short} {mode}: compiled in {wall:.1f} s ({cpu:.1f} CPU s)")


@pytest.mark.slow
@pytest.mark.parametrize("short", list(OWN_LOOPS))
def test_own_pipeline_loop_compiles_fullgraph_with_inductor(short):
    seconds = compile_and_check(short, "index_lookup", "inductor")
    print(f"{short}: compiled in {seconds:.1f} s")


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


def test_a_traced_prev_timestep_off_the_schedule_fails_the_run():
    """Traced, a ``prev_timestep`` tensor has no host value: it is taken as the schedule's next timestep and
    checked on the device, so a loop passing another one fails instead of stepping to the wrong timestep."""
    sched = fd.UnCLIPScheduler()
    sched.set_timesteps(STEPS)
    net = make_net()

    def loop(x):
        timesteps = sched.timesteps
        for i in range(timesteps.shape[0] - 1):
            x = sched.step(net(x), timesteps[i], x, prev_timestep=timesteps[i + 1] - 1).prev_sample
        return x

    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eager = loop(x)  # eager reads the value: a valid jump off the schedule
        assert torch.isfinite(eager).all()
        sched.set_timesteps(STEPS)
        with pytest.raises(RuntimeError, match="prev_timestep"):
            torch.compile(loop, backend="aot_eager", fullgraph=True)(x)


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
