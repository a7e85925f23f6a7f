"""torch.compile and CUDA graphs around the sampling loops.

On CPU, ``torch._dynamo.explain`` traces the loops with the Triton backend (the kernels
run under the interpreter; this is the code path a GPU takes) and must find no graph
break; ``torch.compile(fullgraph=True)`` of a step must run and match eager. The
denoisers here are plain tensor functions, so every break found would come from fastdiff.

On a CUDA machine the ``gpu`` tests capture a whole ``sample(..., cuda_graph=True)`` loop
and a diffusers-compatible scheduler step as CUDA graphs and check replays against eager.
"""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

import fastdiff
import fastdiff.sampling as S

pytest.importorskip("triton", reason="the loops are traced on the Triton backend")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._logging.set_logs(dynamo=logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch._logging.set_logs(dynamo=logging.WARNING)
    torch._dynamo.reset()


SIGMAS = fastdiff.karras_sigmas(4, 0.1, 10.0).tolist()


def denoiser(x, sigma):
    return x / (1 + sigma[:, None] ** 2)


def breaks(fn, *args):
    """Graph breaks found by dynamo, as (first line of the reason, innermost fastdiff frame)."""
    explanation = torch._dynamo.explain(fn)(*args)
    out = []
    for r in explanation.break_reasons:
        frames = [f"{fs.filename.rsplit('/', 1)[-1]}:{fs.lineno}" for fs in r.user_stack if "fastdiff" in fs.filename]
        out.append((r.reason.splitlines()[0], frames[-1:]))
    return explanation.graph_break_count, out


def sampler_loop(name, backend="triton", **options):
    """The sampling loop of ``fastdiff.sample`` past its entry-point argument checks."""
    def run(x):
        ctx = S.SamplerContext(denoiser, x, SIGMAS, seed=1, row_ids=None, guidance_scale=None, backend=backend,
                               callback=None, progress=False, clip=None, model_kwargs={})
        return S.SAMPLERS[name](ctx, x, **options)
    return run


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_sde", "dpmpp_2m_sde"])
def test_sampling_loop_traces_without_graph_breaks(name):
    count, reasons = breaks(sampler_loop(name), torch.randn(4, 8))
    assert count == 0, reasons


def test_sampling_loop_compiles_fullgraph_and_matches_eager():
    x = torch.randn(4, 8)
    loop = sampler_loop("dpmpp_2m_sde")
    compiled = torch.compile(loop, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), loop(x), rtol=0, atol=0)


def test_lms_loop_traces_without_graph_breaks():
    count, reasons = breaks(sampler_loop("lms"), torch.randn(4, 8))
    assert count == 0, reasons


def test_sample_entry_point_traces_without_graph_breaks():
    count, reasons = breaks(lambda x: S.sample(denoiser, x, SIGMAS, sampler="dpmpp_2m", seed=1, backend="triton"),
                            torch.randn(4, 8))
    assert count == 0, reasons


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_sampling_loop_on_the_cpu_torch_path_traces_without_graph_breaks(name):
    x = torch.randn(4, 8)
    loop = sampler_loop(name, backend="torch")
    count, reasons = breaks(loop, x)
    assert count == 0, reasons
    # the traced graph may order the float32 additions differently from the eager fast path
    torch.testing.assert_close(torch.compile(loop, backend="eager", fullgraph=True)(x), loop(x), rtol=1e-6, atol=1e-6)


def test_stochastic_sampling_loop_on_the_cpu_torch_path_traces():
    count, reasons = breaks(sampler_loop("euler_ancestral", backend="torch"), torch.randn(4, 8))
    assert count == 0, reasons


def test_one_step_compiles_fullgraph_with_inductor_and_matches_eager():
    x = torch.randn(4, 8)
    ctx = S.SamplerContext(denoiser, x, SIGMAS, seed=1, row_ids=None, guidance_scale=None, backend="torch",
                           callback=None, progress=False, clip=None, model_kwargs={})
    for i in range(4):
        ctx.row(SIGMAS[i], out_x=SIGMAS[i + 1] / SIGMAS[i], out_d=1 - SIGMAS[i + 1] / SIGMAS[i])
    ctx.plan()

    def step(x):
        return ctx.step(x, ctx.eval(x, 1), 1)

    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(x), step(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["seed", "noise"])
def test_langevin_step_traces_without_graph_breaks(kind):
    x = torch.randn(4, 8)
    kw = {"seed": 3, "stream": 1} if kind == "seed" else {"noise": None}

    def f(x):
        extra = dict(kw)
        if kind == "noise":
            extra["noise"] = 0.5 * x
        return fastdiff.langevin_step(x, -x, 0.01, backend="triton", **extra)

    count, reasons = breaks(f, x)
    assert count == 0, reasons
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x), rtol=0, atol=0)


def test_underdamped_step_traces_without_graph_breaks():
    x, v = torch.randn(4, 8), torch.randn(4, 8)

    def f(x, v):
        return fastdiff.underdamped_step(x, v, -x, 0.1, kick=0.5, mass=torch.full((8,), 2.0), seed=3, stream=1,
                                         backend="triton")

    count, reasons = breaks(f, x, v)
    assert count == 0, reasons
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    for a, b in zip(compiled(x, v), f(x, v)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _ddim_loop(return_dict: bool, tensor_timesteps: bool):
    from fastdiff.diffusers import DDIMScheduler

    sched = DDIMScheduler()
    sched.backend = "triton"
    sched.set_timesteps(4)
    steps = list(sched.timesteps) if tensor_timesteps else [int(t) for t in sched.timesteps]

    def loop(x):
        sched.set_begin_index(0)
        sched._step_index = None
        for t in steps:
            eps = 0.1 * sched.scale_model_input(x, t)
            out = sched.step(eps, t, x, return_dict=return_dict)
            x = out.prev_sample if return_dict else out[0]
        return x

    return loop


def test_diffusers_scheduler_loop_traces_without_graph_breaks():
    pytest.importorskip("diffusers")
    loop = _ddim_loop(return_dict=False, tensor_timesteps=False)
    x = torch.randn(4, 8)
    count, reasons = breaks(loop, x)
    assert count == 0, reasons
    compiled = torch.compile(loop, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), loop(x), rtol=0, atol=0)


def test_diffusers_scheduler_loop_with_tensor_timesteps_and_output_objects():
    pytest.importorskip("diffusers")
    count, reasons = breaks(_ddim_loop(return_dict=True, tensor_timesteps=True), torch.randn(4, 8))
    assert count == 0, reasons


@pytest.mark.parametrize("name", ["DEISMultistepScheduler", "DPMSolverSinglestepScheduler", "IPNDMScheduler"])
def test_diffusers_history_scheduler_loop_traces_without_graph_breaks(name):
    """Schedulers whose step reads earlier estimates (and, singlestep, the block's first sample) as history."""
    pytest.importorskip("diffusers")
    import fastdiff.diffusers as fdd

    sched = getattr(fdd, name)(solver_order=3) if name != "IPNDMScheduler" else fdd.IPNDMScheduler()
    sched.backend = "triton"
    sched.set_timesteps(4)
    steps = [float(t) for t in sched.timesteps]

    def loop(x):
        sched.set_begin_index(0)
        sched._step_index = None
        for t in steps:
            x = sched.step(0.1 * x, t, x, return_dict=False)[0]
        return x

    loop(torch.randn(4, 8))  # the run's table is built once, on the host, outside the traced loop
    count, reasons = breaks(loop, torch.randn(4, 8))
    assert count == 0, reasons


def test_diffusers_ancestral_scheduler_loop_traces_without_graph_breaks():
    pytest.importorskip("diffusers")
    from fastdiff.diffusers import EulerAncestralDiscreteScheduler

    sched = EulerAncestralDiscreteScheduler()
    sched.backend = "triton"
    sched.set_timesteps(4)
    steps = [float(t) for t in sched.timesteps]

    def loop(x):
        sched.set_begin_index(0)
        sched._step_index = None
        for t in steps:
            x = sched.step(0.1 * x, t, x, return_dict=False)[0]
        return x

    count, reasons = breaks(loop, torch.randn(4, 8))
    assert count == 0, reasons


# ------------------------------------------------------------------------------------------------
# CUDA graphs
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dpmpp_2m", "euler_ancestral", "heun", "dpmpp_3m_sde"])
def test_cuda_graph_of_the_whole_sampling_loop_matches_eager(name):
    x = fastdiff.sampling.initial_noise((8, 3, 16, 16), seed=0, device="cuda") * SIGMAS[0]

    def den(x, sigma):
        return x / (1 + sigma[:, None, None, None] ** 2)

    eager = S.sample(den, x, SIGMAS, sampler=name, seed=7)
    first = S.sample(den, x, SIGMAS, sampler=name, seed=7, cuda_graph=True)   # warm-up + capture + replay
    x2 = x.flip(0).contiguous()
    replay = S.sample(den, x2, SIGMAS, sampler=name, seed=7, cuda_graph=True)  # replays the captured graph
    torch.cuda.synchronize()
    torch.testing.assert_close(first, eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(replay, S.sample(den, x2, SIGMAS, sampler=name, seed=7), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_cuda_graph_of_a_diffusers_scheduler_step_matches_eager():
    pytest.importorskip("diffusers")
    from fastdiff.diffusers import DDIMScheduler

    def fresh():
        sched = DDIMScheduler()
        sched.set_timesteps(6)
        sched.set_begin_index(0)
        return sched

    x = torch.randn(4, 4, 16, 16, device="cuda")
    eps = 0.1 * torch.randn_like(x)
    t = fresh().timesteps[0]
    expected = fresh().step(eps, t, x, return_dict=False)[0]
    expected_2x = fresh().step(eps, t, 2 * x, return_dict=False)[0]

    sched = fresh()
    static_x, static_eps = x.clone(), eps.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        sched.step(static_eps, t, static_x, return_dict=False)  # warm-up: kernels compiled, table on the device
    torch.cuda.current_stream().wait_stream(side)
    sched.set_begin_index(0)
    sched._step_index = None  # capture the first step again
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = sched.step(static_eps, t, static_x, return_dict=False)[0]
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out, expected, rtol=1e-6, atol=1e-6)
    static_x.copy_(2 * x)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out, expected_2x, rtol=1e-6, atol=1e-6)
