"""Which Triton launch path a call takes: direct in plain eager calls, the torch.library op otherwise.

The op (``torch.ops.fastdiff.*_``) is what torch.compile, export / fake-tensor tracing, autograd and profiler
traces need to see; a plain eager call skips its dispatcher (~25 us a call). Both paths run the same launch
body, so they must agree bit for bit.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastdiff
from fastdiff.ops import dispatch
from fastdiff.ops.backend import triton_available
from fastdiff.ops.records import StepArgs
from fastdiff.ops.step import parse as step_parse

pytestmark = pytest.mark.skipif(not triton_available(), reason="triton not importable")

LAUNCHERS = ("fused_step", "fused_encode", "langevin_step", "langevin_select")


class _PassThrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _spy(monkeypatch):
    """Record which path each launch takes, still running the real launch."""
    taken = []
    for name in LAUNCHERS:
        found = dispatch.launcher(name)
        for kind in ("direct", "op"):
            real = getattr(found, kind)

            def wrapped(*args, _real=real, _tag=f"{name}:{kind}"):
                taken.append(_tag)
                return _real(*args)

            monkeypatch.setattr(found, kind, wrapped)
    return taken


def _calls(x):
    m = torch.randn_like(x)
    coefs = fastdiff.step_coefs(out_x=0.9, out_d=0.1)
    sched = fastdiff.DiscreteVPSchedule()
    fastdiff.fused_step(x, m, coefs, backend="triton")
    fastdiff.add_noise(x, torch.tensor([10, 500]), sched, noise=m, backend="triton")
    fastdiff.langevin_step(x, m, 0.01, seed=3, backend="triton")
    fastdiff.langevin_select(x, m, torch.tensor([True, False]), backend="triton")


def test_plain_eager_calls_launch_directly(monkeypatch):
    taken = _spy(monkeypatch)
    _calls(torch.randn(2, 3, 5))
    assert taken == ["fused_step:direct", "fused_encode:direct", "langevin_step:direct", "langevin_select:direct"]


@pytest.mark.parametrize("context", ["profiler", "dispatch_mode", "requires_grad"])
def test_calls_someone_must_see_go_through_the_op(monkeypatch, context):
    taken = _spy(monkeypatch)
    x = torch.randn(2, 3, 5)
    if context == "profiler":
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            _calls(x)
        assert "fastdiff::fused_step_" in {e.name for e in prof.events()}
    elif context == "dispatch_mode":
        with _PassThrough():
            _calls(x)
    else:
        x.requires_grad_(True)
        _calls(x)
    assert taken == ["fused_step:op", "fused_encode:op", "langevin_step:op", "langevin_select:op"]


def test_tensor_subclass_goes_through_the_op():
    class Marked(torch.Tensor):
        pass

    x = torch.randn(2, 3, 5)
    assert dispatch.plain_eager((x, None, x))
    assert not dispatch.plain_eager((x, x.as_subclass(Marked)))
    with torch.enable_grad():
        assert not dispatch.plain_eager((x.clone().requires_grad_(True),))
    with torch.no_grad():
        assert dispatch.plain_eager((x.clone().requires_grad_(True),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_direct_and_op_launches_agree_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, 7, generator=g).to(dtype)
    m = torch.randn(3, 4, 7, generator=g).to(dtype)
    h = torch.randn(3, 4, 7, generator=g).to(dtype)
    coefs = fastdiff.step_coefs(in_x=0.3, in_m=0.8, out_x=0.9, out_d=0.1, out_h=[0.05], out_noise=0.2, aux_x=0.1)
    step = dispatch.launcher("fused_step")
    outs = []
    for direct in (True, False):
        out, aux = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
        args = StepArgs(x, m, coefs, None, h, None, None, None, None, None, None, out, aux, 0, 1, False, None, 1, 11, 0, 2)
        with dispatch.interpreter_guard():
            if direct:
                step.direct(args)
            else:
                step.op(*args)
        outs.append((out, aux))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert not outs[0][0].isnan().any() and not outs[0][1].isnan().any()


# ---- the step op's cheap-check path for kernel calls ---------------------------------------------

_CASES = {
    "plain": {},
    "history+aux": {"history": "h", "write_aux": True},
    "guidance": {"guidance": True},
    "x_eval+clip": {"x_eval": "xe", "clip": 1.5},
    "seeded": {"seed": 123, "stream": 4},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(_CASES))
def test_kernel_fast_path_matches_the_fully_checked_call(monkeypatch, case, dtype):
    """Common kernel calls skip the full argument checks; their results equal the checked path's bit for bit."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 2, 5, generator=g).to(dtype)
    kw = dict(_CASES[case])
    guidance = kw.get("guidance", False)
    m = torch.randn((6 if guidance else 3), 2, 5, generator=g).to(dtype)
    tensors = {"h": torch.randn(3, 2, 5, generator=g).to(dtype), "xe": torch.randn(3, 2, 5, generator=g).to(dtype)}
    if "history" in kw:
        kw["history"] = [tensors["h"]]
    if "x_eval" in kw:
        kw["x_eval"] = tensors["xe"]
    coefs = fastdiff.step_coefs(in_x=[0.2, 0.3], in_m=0.9, guidance=2.0, out_x=0.8, out_d=0.15, out_h=[0.05],
                                out_noise=0.1 if "seed" in kw else 0.0, aux_x=0.3)
    # the checked path: a preallocated out= (poisoned) is not taken by the cheap path
    out = torch.full_like(x, float("nan"))
    aux = torch.full_like(x, float("nan")) if kw.get("write_aux") else None
    want = fastdiff.fused_step(x, m, coefs, coef_row=1, out=out, aux_out=aux, backend="triton",
                               **{k: v for k, v in kw.items() if k != "write_aux"})

    def no_full_checks(*a, **k):
        raise AssertionError("took the fully checked path")

    for name in ("check_float", "check_coefs", "check_out", "check_stream", "seq", "rows_of"):
        monkeypatch.setattr(step_parse, name, no_full_checks)
    got = fastdiff.fused_step(x, m, coefs, coef_row=1, backend="triton", **kw)
    want, got = (want, got) if isinstance(got, tuple) else ((want,), (got,))
    assert len(want) == len(got)
    for w, o in zip(want, got):
        assert o.dtype == x.dtype and o.shape == x.shape and not o.isnan().any()
        assert torch.equal(w, o)


@pytest.mark.parametrize("bad", ["noncontig", "mixed_dtype", "float64_table", "row_out_of_range", "list_coefs"])
def test_kernel_calls_the_cheap_checks_reject_take_the_full_checks(bad):
    x = torch.randn(2, 3, 4)
    m = torch.randn(2, 3, 4)
    coefs = fastdiff.step_coefs(out_x=0.5, out_d=0.5)
    kw = {}
    if bad == "noncontig":
        x = torch.randn(2, 4, 3).transpose(1, 2)
    elif bad == "mixed_dtype":
        m = m.to(torch.bfloat16)
    elif bad == "float64_table":
        coefs = coefs.double()
    elif bad == "row_out_of_range":
        kw["coef_row"] = 1
    else:
        coefs = [[0.5] * 13]
    if bad in ("row_out_of_range", "list_coefs"):
        with pytest.raises(ValueError, match="coef_row|coefs"):
            fastdiff.fused_step(x, m, coefs, backend="triton", **kw)
        return
    ref = fastdiff.fused_step(x.double(), m.double(), coefs.double(), backend="reference")
    out = fastdiff.fused_step(x, m, coefs, backend="triton")
    assert torch.allclose(out.double(), ref, rtol=1e-2, atol=1e-2)


# ---- memory: a kernel-path call allocates its outputs and nothing else ----------------------------

class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case, outputs", [
    ("step", 1), ("step_history_aux", 2), ("step_seeded", 1), ("step_guided", 1),
    ("encode_target", 2), ("langevin", 1), ("select", 1),
])
def test_kernel_path_allocates_only_its_outputs(case, outputs):
    """The peak-memory goal ("at most one output-sized tensor per output") on the host side: on the kernel path
    the only tensor ops besides the launch are the outputs' allocations -- no casts, copies or temporaries.
    (The kernels allocate nothing; the GPU check measures the device peak.)"""
    g = torch.Generator().manual_seed(5)
    x, m, h = (torch.randn(2, 3, 8, generator=g) for _ in range(3))
    coefs = fastdiff.step_coefs(out_x=0.9, out_d=0.1, out_h=[0.05], out_noise=0.1)
    sched = fastdiff.DiscreteVPSchedule()
    t, accept = torch.tensor([10, 500]), torch.tensor([True, False])
    calls = {
        "step": lambda: fastdiff.fused_step(x, m, coefs, backend="triton"),
        "step_history_aux": lambda: fastdiff.fused_step(x, m, coefs, history=[h], write_aux=True, backend="triton"),
        "step_seeded": lambda: fastdiff.fused_step(x, m, coefs, seed=9, backend="triton"),
        "encode_target": lambda: fastdiff.add_noise_with_target(x, t, sched, seed=2, backend="triton"),
        "langevin": lambda: fastdiff.langevin_step(x, m, 0.01, seed=3, backend="triton"),
        "select": lambda: fastdiff.langevin_select(x, m, accept, backend="triton"),
    }
    mm = torch.cat([m, h])
    calls["step_guided"] = lambda: fastdiff.fused_step(x, mm, coefs, guidance=True, backend="triton")
    fn = calls[case]
    fn()  # first call: imports, table caches
    with _OpLog() as log:
        fn()
    launches = [op for op in log.ops if op.startswith("fastdiff.")]
    # on CPU the encode op range-checks the integer timesteps (two scalars; skipped on GPU, where it would sync)
    host_checks = {"aten.aminmax", "aten._local_scalar_dense"}
    allocs = [op for op in log.ops if not op.startswith("fastdiff.") and op not in host_checks]
    assert len(launches) == 1, log.ops
    assert allocs == ["aten.empty_like"] * outputs, log.ops
