"""torch.library registration, torch.compile tracing and the profiler."""
import pytest
import torch

import fastdiff
from fastdiff.ops.step import fused_step, step_coefs


def test_ops_are_registered_with_torch_library():
    for name in ("fused_step_", "fused_encode_", "langevin_step_", "langevin_select_", "underdamped_step_"):
        assert hasattr(torch.ops.fastdiff, name), name


def test_triton_path_traces_without_graph_breaks():
    x, m = torch.randn(3, 4), torch.randn(3, 4)
    c = step_coefs(out_x=0.5, out_d=0.5)

    def f(x, m):
        return fused_step(x, m, c, seed=1, stream=2, backend="triton")

    explanation = torch._dynamo.explain(f)(x, m)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, m), f(x, m), rtol=0, atol=0)


def test_torch_path_compiles_fullgraph_with_inductor():
    x, m = torch.randn(3, 4), torch.randn(3, 4)
    c = step_coefs(out_x=0.5, out_d=0.5, out_noise=0.1)

    def f(x, m):
        return fused_step(x, m, c, noise=m, backend="torch")

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x, m), f(x, m), rtol=1e-6, atol=1e-6)


def test_profiler_names_the_triton_ops():
    x, m = torch.randn(3, 4), torch.randn(3, 4)
    c = step_coefs(out_x=1.0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fused_step(x, m, c, backend="triton")
        fastdiff.langevin_step(x, m, 0.1, seed=0, backend="triton")
    names = {e.name for e in prof.events()}
    assert "fastdiff::fused_step_" in names
    assert "fastdiff::langevin_step_" in names


@pytest.mark.gpu
def test_cuda_graph_capture_of_a_step():
    x = torch.randn(4, 64, device="cuda")
    m = torch.randn(4, 64, device="cuda")
    c = step_coefs(out_x=0.9, out_d=0.1, out_noise=0.01, device="cuda")
    out = torch.empty_like(x)
    fused_step(x, m, c, seed=1, out=out)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fused_step(x, m, c, seed=1, out=out)
    expected = out.clone()
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, expected)
