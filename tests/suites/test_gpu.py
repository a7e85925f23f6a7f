"""The kernels on a real GPU (compiled, not interpreted): every op against its float64 reference, the Philox
stream against the CPU twin, > 2**31-element offsets, samplers, torch.compile and no host sync.

Run on a CUDA machine with ``FASTDIFF_GPU_TESTS=1 python -m pytest -m gpu`` (benchmarks/gpu_check.py does).
"""
import pytest
import torch

import fastdiff
from fastdiff.ops.step import NUM_COEFS, fused_step, step_coefs
from tolerance import assert_close_to_reference, poisoned_like

pytestmark = pytest.mark.gpu
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CUDA = torch.device("cuda")


def _case(shape, dtype, seed, guidance=False, n_hist=2):
    g = torch.Generator().manual_seed(seed)
    batch = shape[0]
    x = torch.randn(shape, generator=g).to(dtype)
    m = torch.randn(((2 * batch,) + shape[1:]) if guidance else shape, generator=g).to(dtype)
    hist = [torch.randn(shape, generator=g).to(dtype) for _ in range(n_hist)]
    coefs = torch.rand(6, NUM_COEFS, generator=g) * 2 - 1
    idx = torch.randint(0, 6, (batch,), generator=g)
    return x, m, hist, coefs, idx


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 1024), (2, 4, 33, 31)], ids=str)
@pytest.mark.parametrize("per_row", [False, True])
def test_step_on_cuda_matches_float64_reference(shape, dtype, per_row):
    x, m, hist, coefs, idx = _case(shape, dtype, seed=1, guidance=True)
    kw = dict(guidance=True, clip=1.5, seed=3, stream=2, coef_index=idx if per_row else None, coef_row=2)
    out = poisoned_like(x.cuda())
    aux = poisoned_like(out)
    fused_step(x.cuda(), m.cuda(), coefs.cuda(), history=[h.cuda() for h in hist], out=out, aux_out=aux,
               **dict(kw, coef_index=idx.cuda() if per_row else None))
    ref = fused_step(x, m, coefs, history=hist, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), coefs.double(), history=[h.double() for h in hist], write_aux=True,
                       backend="reference", **kw)
    assert_close_to_reference("out", out.cpu(), ref[0], ref64[0])
    assert_close_to_reference("aux", aux.cpu(), ref[1], ref64[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("target", ["epsilon", "v_prediction", "sample"])
def test_encode_on_cuda_matches_reference(dtype, target):
    sched = fastdiff.DiscreteVPSchedule(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 3, 17, generator=g).to(dtype)
    t = torch.randint(0, 1000, (5,), generator=g)
    xt, tg = fastdiff.add_noise_with_target(x0.cuda(), t.cuda(), sched, seed=4, target=target)
    rx, rt = fastdiff.add_noise_with_target(x0, t, sched, seed=4, target=target, backend="reference")
    ex, et = fastdiff.add_noise_with_target(x0.double(), t, sched, seed=4, target=target, backend="reference")
    assert_close_to_reference("x_t", xt.cpu(), rx, ex)
    assert_close_to_reference("target", tg.cpu(), rt, et)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_langevin_on_cuda_matches_reference(dtype):
    g = torch.Generator().manual_seed(3)
    x, grad = torch.randn(64, 9, generator=g).to(dtype), torch.randn(64, 9, generator=g).to(dtype)
    h = torch.rand(64, generator=g) * 0.1 + 1e-3
    out = fastdiff.langevin_step(x.cuda(), grad.cuda(), h.cuda(), seed=5, stream=1)
    ref = fastdiff.langevin_step(x, grad, h, seed=5, stream=1, backend="reference")
    ref64 = fastdiff.langevin_step(x.double(), grad.double(), h.double(), seed=5, stream=1, backend="reference")
    assert_close_to_reference("langevin", out.cpu(), ref, ref64)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_underdamped_on_cuda_matches_reference(dtype):
    g = torch.Generator().manual_seed(4)
    x, v, grad = (torch.randn(64, 9, generator=g).to(dtype) for _ in range(3))
    h = torch.rand(64, generator=g) * 0.1 + 1e-3
    mass = torch.rand(9, generator=g) + 0.5
    kw = dict(kick=0.5, friction=0.8, temperature=1.2, seed=5, stream=1)
    out = fastdiff.underdamped_step(x.cuda(), v.cuda(), grad.cuda(), h.cuda(), mass=mass.cuda(), **kw)
    ref = fastdiff.underdamped_step(x, v, grad, h, mass=mass, backend="reference", **kw)
    ref64 = fastdiff.underdamped_step(x.double(), v.double(), grad.double(), h.double(), mass=mass.double(),
                                      backend="reference", **kw)
    for name, o, r, r64 in zip("xv", out, ref, ref64):
        assert_close_to_reference(f"underdamped {name}", o.cpu(), r, r64)


@pytest.mark.parametrize("cols", [37, 64], ids=["per-element", "grouped-by-4"])
def test_cuda_noise_is_the_cpu_stream(cols):
    x = torch.zeros(9, cols, device=CUDA)
    rows = torch.tensor([0, 1, 2, 3, 2**33 + 1, 5, 6, 7, 8])
    z = fused_step(x, x, step_coefs(out_noise=1.0, device=CUDA), seed=2**40 + 7, stream=11, row_ids=rows.cuda())
    ref = fastdiff.philox_normal((9, cols), seed=2**40 + 7, stream=11, row_ids=rows)
    torch.testing.assert_close(z.cpu(), ref, rtol=1e-5, atol=1e-5)
    # and the torch twin on CUDA (backend="torch" builds the noise on the device)
    zt = fused_step(x, x, step_coefs(out_noise=1.0, device=CUDA), seed=2**40 + 7, stream=11, row_ids=rows.cuda(),
                    backend="torch")
    torch.testing.assert_close(zt.cpu(), ref, rtol=1e-5, atol=1e-5)


def _philox_tail(seed, stream, row, first_group, n_groups):
    """The documented stream for groups [first_group, first_group + n_groups) of one row, from the Philox words."""
    import math

    from fastdiff.random import philox4x32_10

    c0 = torch.arange(first_group, first_group + n_groups, dtype=torch.int64)
    c1, c2, c3 = torch.full_like(c0, row), torch.full_like(c0, stream), torch.zeros_like(c0)
    words = philox4x32_10(c0, c1, c2, c3, seed & 0xFFFFFFFF, seed >> 32)
    unit = [((w >> 8).double() + 0.5) / 2**24 for w in words]
    r01, r23 = torch.sqrt(-2 * torch.log(unit[0])), torch.sqrt(-2 * torch.log(unit[2]))
    z = torch.stack([r01 * torch.cos(2 * math.pi * unit[1]), r01 * torch.sin(2 * math.pi * unit[1]),
                     r23 * torch.cos(2 * math.pi * unit[3]), r23 * torch.sin(2 * math.pi * unit[3])], 1)
    return z.reshape(-1)


def test_int64_offsets_past_2_31_elements():
    """A bf16 step on 2**31 + 4096 elements (4 GiB a tensor): elements beyond int32 offsets are right."""
    n_rows, n_cols = 2, 2**30 + 2048
    try:
        x = torch.ones(n_rows, n_cols, device=CUDA, dtype=torch.bfloat16)
        out = torch.full_like(x, float("nan"))
    except torch.cuda.OutOfMemoryError:
        pytest.skip("not enough GPU memory for a 2**31-element test")
    fused_step(x, x, step_coefs(in_m=1.0, out_x=0.5, out_d=0.25, out_noise=1.0, device=CUDA), seed=9, stream=1,
               out=out)
    assert torch.isfinite(out.view(-1)[-2**20:]).all()
    tail = out[1, -4096:].float().cpu()
    z = _philox_tail(seed=9, stream=1, row=1, first_group=(n_cols - 4096) // 4, n_groups=1024)
    torch.testing.assert_close(tail, (0.75 + z).to(torch.bfloat16).float(), rtol=0, atol=2e-2)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "heun", "unipc"])
def test_samplers_on_cuda_match_the_cpu_path(sampler):
    gmm = fastdiff.toy.GaussianMixture.ring(k=4, radius=3.0, std=0.5)
    sigmas = fastdiff.karras_sigmas(12, 0.02, 20.0)
    x = fastdiff.initial_noise((256, 2), seed=1) * float(sigmas[0])

    def den(v, sigma):
        return gmm.denoiser(v.double(), sigma).to(v.dtype)

    on_gpu = fastdiff.sample(den, x.cuda(), sigmas, sampler=sampler, seed=3)
    on_cpu = fastdiff.sample(den, x, sigmas, sampler=sampler, seed=3, backend="torch")
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


def test_sampling_loop_has_no_host_sync():
    """The loop of a multistep sampler with in-kernel noise, under CUDA's sync debug mode set to error."""
    sigmas = fastdiff.karras_sigmas(10, 0.02, 20.0)
    x = torch.randn(64, 2, device=CUDA) * 20.0
    means = torch.tensor([[2.0, 0.0], [-2.0, 0.0]], device=CUDA)

    def den(v, sigma):  # a device-only denoiser (no host reads)
        w = torch.softmax(-((v[:, None] - means) ** 2).sum(-1) / (2 * (1 + sigma.reshape(-1, 1) ** 2)), -1)
        return (w[..., None] * means).sum(1)

    fastdiff.sample(den, x, sigmas, sampler="dpmpp_2m_sde", seed=0)  # warm-up: compile, tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fastdiff.sample(den, x, sigmas, sampler="dpmpp_2m_sde", seed=0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_inductor_compiles_a_step_loop_through_the_triton_op():
    x = torch.randn(8, 4, 16, 16, device=CUDA)
    m = torch.randn_like(x)
    c = step_coefs(in_x=1.0, in_m=-0.3, out_x=0.6, out_d=0.4, out_noise=0.05, device=CUDA)

    def loop(x, m):
        for i in range(4):
            x = fused_step(x, m, c, seed=1, stream=i)
        return x

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loop)(x, m)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(loop, fullgraph=True)
    torch.testing.assert_close(compiled(x, m), loop(x, m), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kw", [{}, {"seed": 5, "stream": 1}, {"guidance": True, "clip": 1.5}], ids=str)
def test_cheap_check_kernel_calls_on_cuda_match_the_reference(dtype, kw):
    """A sampler's call (no out=, contiguous, one dtype, float32 table) takes fused_step's cheap checks and the
    direct launch; it must give what the float64 reference gives."""
    guidance = kw.get("guidance", False)
    x, m, hist, coefs, _ = _case((3, 4, 33), dtype, seed=7, guidance=guidance, n_hist=1)
    got = fused_step(x.cuda(), m.cuda(), coefs.cuda(), history=[hist[0].cuda()], coef_row=3, write_aux=True, **kw)
    ref = fused_step(x, m, coefs, history=hist, coef_row=3, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), coefs.double(), history=[hist[0].double()], coef_row=3,
                       write_aux=True, backend="reference", **kw)
    assert_close_to_reference("out", got[0].cpu(), ref[0], ref64[0])
    assert_close_to_reference("aux", got[1].cpu(), ref[1], ref64[1])


def test_direct_and_op_launches_agree_bit_for_bit_on_cuda():
    from fastdiff.ops.dispatch import launcher
    from fastdiff.ops.records import StepArgs

    x, m, hist, coefs, _ = _case((4, 3, 40), torch.bfloat16, seed=9, n_hist=1)
    x, m, h, coefs = x.cuda(), m.cuda(), hist[0].cuda(), coefs.cuda().contiguous()
    step = launcher("fused_step")
    outs = []
    for direct in (True, False):
        out, aux = poisoned_like(x), poisoned_like(x)
        args = StepArgs(x, m, coefs, None, h, None, None, None, None, None, None, out, aux, 1, 1, False, None, 1, 17, 0, 3)
        if direct:
            step.direct(args)
        else:
            step.op(*args)
        outs.append((out, aux))
    torch.cuda.synchronize()
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert not outs[0][0].isnan().any()


def test_cuda_graph_captures_the_direct_launch():
    x = torch.randn(2, 4, 32, device=CUDA)
    m = torch.randn_like(x)
    c = step_coefs(in_x=[1.0, 0.9], in_m=-0.3, out_x=0.6, out_d=0.4, out_noise=0.05, device=CUDA)

    def body(v):
        for i in range(2):
            v = fused_step(v, m, c, coef_row=i, seed=1, stream=i)
        return v

    eager = body(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        body(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    static_x = x.clone()
    with torch.cuda.graph(graph):
        static_out = body(static_x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, eager)
