"""The CPU step's compiled single pass (``fastdiff.ops.step.cpu_jit``) against the references.

The pass is taken from ``MIN_NUMEL`` elements on with at most ``MAX_THREADS`` torch threads; the tests lower the
size bar so small odd-sized tensors take it, and count the calls so a test fails if the pass silently did not run.
"""
import os
import subprocess
import sys

import pytest
import torch

import fastdiff.diffusers as fdd
from fastdiff.ops.step import COEF_NAMES, NUM_COEFS, cpu_jit, fused_step
from tolerance import assert_close_to_reference, poisoned_like

needs_numba = pytest.mark.skipif(not cpu_jit.available(), reason="numba is not importable: no compiled pass")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SHAPE = (3, 5, 7)  # odd sizes: 105 elements (a case may name its own)

# name -> (fused_step options, whether the compiled pass takes the call: True, False or the dtypes it takes)
CASES = {
    "plain": (dict(), True),
    "plain_aux": (dict(aux=True), True),
    "clip": (dict(clip=0.7), True),
    "clip_aux": (dict(clip=0.7, aux=True), True),
    "history2_aux": (dict(n_hist=2, aux=True), True),  # x, m, h0, h1: four inputs
    "x_eval_history_aux": (dict(x_eval=True, n_hist=1, aux=True), True),  # x, x_eval, m, h0
    "seeded_noise": (dict(seed=9, n_hist=1, shape=(3, 4, 7)), True),  # x, m, h0, the drawn noise
    # 35 elements a row: the float32 draw is a view of rows padded to groups of four (not contiguous), so only a
    # float64 step (which converts it to a fresh tensor) takes the pass
    "seeded_noise_padded_rows": (dict(seed=9, n_hist=1), (torch.float64,)),
    "guided": (dict(guidance=True, n_hist=1, aux=True), True),
    "history3_noise": (dict(n_hist=3, noise=True, aux=True), True),  # x, m, h0-h2, noise: six inputs
    "x_eval_history3_noise": (dict(x_eval=True, n_hist=3, noise=True, aux=True), True),  # seven
    "clip_history": (dict(clip=0.7, n_hist=1), False),  # a clip with more terms: the torch passes
    "per_row": (dict(per_row=True, aux=True), False),  # per-sample rows: the torch passes
}


def make(dtype, opts, seed):
    g = torch.Generator().manual_seed(seed)

    def rnd(*s):
        return torch.randn(*s, generator=g).to(dtype)

    shape = opts.get("shape", SHAPE)
    batch = shape[0]
    x = rnd(*shape)
    m = rnd(2 * batch, *shape[1:]) if opts.get("guidance") else rnd(*shape)
    coefs = torch.rand(4, NUM_COEFS, generator=g) * 3 - 1.5
    kw = dict(
        x_eval=rnd(*shape) if opts.get("x_eval") else None,
        history=[rnd(*shape) for _ in range(opts.get("n_hist", 0))],
        coef_index=torch.randint(0, 4, (batch,), generator=g) if opts.get("per_row") else None,
        coef_row=2, guidance=opts.get("guidance", False), clip=opts.get("clip"), seed=opts.get("seed"), stream=3,
        noise=rnd(*shape) if opts.get("noise") else None,
    )
    return x, m, coefs, kw


def to64(kw):
    out = dict(kw)
    for k in ("x_eval", "noise"):
        if isinstance(out.get(k), torch.Tensor):
            out[k] = out[k].double()
    out["history"] = [h.double() for h in out["history"]]
    return out


@pytest.fixture
def counted(monkeypatch):
    """The compiled pass for any size on this thread count, its calls counted (those that ran)."""
    monkeypatch.setattr(cpu_jit, "MIN_NUMEL", 1)
    monkeypatch.setattr(cpu_jit, "MAX_THREADS", max(cpu_jit.MAX_THREADS, torch.get_num_threads()))
    calls = []
    for name in ("combine_jit", "clipped_jit"):
        fn = getattr(cpu_jit, name)

        def spy(*a, _fn=fn, **k):
            r = _fn(*a, **k)
            calls.append(r is not None)
            return r

        monkeypatch.setattr(cpu_jit, name, spy)
    return calls


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_pass_matches_reference(case, dtype, counted):
    """Fresh outputs and NaN-poisoned ``out=`` buffers against the same-dtype and float64 references; the
    compiled pass ran exactly where it should (the others are the torch passes, still correct)."""
    opts, takes = CASES[case]
    takes = dtype in takes if isinstance(takes, tuple) else takes
    x, m, c, kw = make(dtype, opts, seed=len(case) * 7 + DTYPES.index(dtype))
    want = opts.get("aux", False)
    ref = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    x0, m0 = x.clone(), m.clone()
    got = fused_step(x, m, c, write_aux=want, backend="torch", **kw)
    out, aux = poisoned_like(x), poisoned_like(x)
    got_buf = fused_step(x, m, c, out=out, aux_out=aux if want else None, backend="torch", **kw)
    assert counted == [True, True] if takes else not any(counted), counted
    got = got if want else (got, None)
    got_buf = got_buf if want else (got_buf, None)
    assert got_buf[0] is out and got[0].dtype == dtype
    assert torch.equal(x, x0) and torch.equal(m, m0), "inputs changed"
    for name, res in (("fresh", got), ("buffers", got_buf)):
        assert_close_to_reference(f"{case} {name} out", res[0], ref[0], ref64[0])
        if want:
            assert_close_to_reference(f"{case} {name} aux", res[1], ref[1], ref64[1])


@needs_numba
@pytest.mark.parametrize("clip", [None, 0.8])
def test_in_place_step_reads_before_it_writes(clip, counted):
    """``out=x`` (a sampler's in-place step): the pass must not overwrite x before reading it -- the call computes
    aside and copies, matching the out-of-place result exactly."""
    x, m, c, kw = make(torch.float32, dict(clip=clip), seed=5)
    expect = fused_step(x, m, c, backend="torch", **kw)
    buf = x.clone()
    got = fused_step(buf, m, c, out=buf, backend="torch", **kw)
    assert got is buf and torch.equal(got, expect)
    assert counted and all(counted)


@needs_numba
def test_clipped_pass_propagates_nan_as_torch_clamp(counted):
    """A NaN in the denoised estimate stays NaN through the clip (torch.clamp's rule), it is not clamped to a
    bound; the other elements match the reference."""
    x, m, c, kw = make(torch.float32, dict(clip=0.5), seed=6)
    x[1, 2, 3] = float("nan")
    got, aux = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    ref, ref_aux = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    assert counted == [True]
    assert torch.isnan(got[1, 2, 3]) and torch.isnan(aux[1, 2, 3])
    torch.testing.assert_close(got, ref, equal_nan=True, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux, ref_aux, equal_nan=True, rtol=1e-5, atol=1e-5)


@needs_numba
def test_zero_coefficient_on_a_used_input_is_a_product_not_a_skip(counted):
    """An input one output weighs by zero and the other does not is read once for both; the zero weight makes
    ``0 * h`` as the reference does (finite h: exactly 0)."""
    x, m, c, kw = make(torch.float64, dict(n_hist=1, aux=True), seed=8)
    c[2, COEF_NAMES.index("out_m")] = 0.0
    c[2, COEF_NAMES.index("out_d")] = 0.0
    got = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    ref = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    assert counted == [True]
    torch.testing.assert_close(got[0], ref[0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-13, atol=1e-13)


def test_eligibility_rules(monkeypatch):
    """Small tensors, more torch threads than ``MAX_THREADS`` and autograd keep the torch passes."""
    big = torch.zeros(cpu_jit.MIN_NUMEL)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert cpu_jit.eligible(big)
    assert not cpu_jit.eligible(torch.zeros(cpu_jit.MIN_NUMEL - 1))
    assert not cpu_jit.eligible(big.clone().requires_grad_())
    monkeypatch.setattr(torch, "get_num_threads", lambda: cpu_jit.MAX_THREADS + 1)
    assert not cpu_jit.eligible(big)


@needs_numba
def test_autograd_keeps_the_torch_passes(counted):
    """A step on tensors that require grad is differentiable: the compiled pass (no autograd) stands aside."""
    x, m, c, kw = make(torch.float64, dict(aux=True), seed=10)
    x.requires_grad_()
    out, aux = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    (out.sum() + aux.sum()).backward()
    assert not any(counted)
    row = c[2].double()
    col = {n: row[k].item() for k, n in enumerate(COEF_NAMES)}
    expect = col["out_x"] + col["out_d"] * col["in_x"] + col["aux_x"] + col["aux_d"] * col["in_x"]
    torch.testing.assert_close(x.grad, torch.full_like(x, expect), rtol=1e-12, atol=1e-12)


@needs_numba
def test_non_contiguous_and_unavailable_fall_back(monkeypatch, counted):
    """A non-contiguous input, or numba unavailable, gives the torch passes' result (nothing half-written)."""
    x, m, c, kw = make(torch.float32, dict(aux=True), seed=12)
    ref = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    mt = m.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    got = fused_step(x, mt, c, write_aux=True, backend="torch", **kw)
    assert counted == [False]
    monkeypatch.setattr(cpu_jit, "_state", {"fns": None})
    got2 = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    for res in (got, got2):
        assert_close_to_reference("fallback out", res[0], ref[0], ref64[0])
        assert_close_to_reference("fallback aux", res[1], ref[1], ref64[1])


def test_disable_env_turns_the_pass_off():
    """``FASTDIFF_NO_NUMBA=1`` leaves the torch passes (checked in a fresh process: the choice is made once)."""
    code = "from fastdiff.ops.step import cpu_jit; print(cpu_jit.available())"
    env = dict(os.environ, FASTDIFF_NO_NUMBA="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


@needs_numba
@pytest.mark.parametrize("name,config", [
    ("DDIMScheduler", {}),  # clip_sample=True by default: the clipped pass
    ("DDIMScheduler", {"clip_sample": False}),
    ("EulerDiscreteScheduler", {}),
    ("DPMSolverMultistepScheduler", {}),  # a history term: three inputs
    ("HeunDiscreteScheduler", {}),  # the corrector's x_eval
])
def test_dropins_agree_with_and_without_the_pass(name, config, monkeypatch):
    """A drop-in run at the default size bar (``MIN_NUMEL`` elements, one thread) with the compiled pass, against
    the same run on the torch passes and the float64 run: the pass is within the torch passes' own error."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    shape = (1, 4, cpu_jit.MIN_NUMEL // 64 + 3, 16)  # just above the bar, odd rows

    def run(dtype):
        g = torch.Generator().manual_seed(21)
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        s = getattr(fdd, name)(**config)
        s.set_timesteps(6)
        x = x * s.init_noise_sigma
        for t in s.timesteps:
            inp = s.scale_model_input(x, t)
            eps = (0.3 * inp + 0.1).to(dtype)  # a fixed, sample-dependent "model"
            x = s.step(eps, t, x).prev_sample
        return x

    calls = []
    orig = cpu_jit.combine_jit, cpu_jit.clipped_jit
    monkeypatch.setattr(cpu_jit, "combine_jit", lambda *a, **k: calls.append(1) or orig[0](*a, **k))
    monkeypatch.setattr(cpu_jit, "clipped_jit", lambda *a, **k: calls.append(1) or orig[1](*a, **k))
    with_pass = run(torch.float32)
    assert calls, "the compiled pass did not run"
    ref64 = run(torch.float64)
    monkeypatch.setattr(cpu_jit, "_state", {"fns": None})
    torch_passes = run(torch.float32)
    assert_close_to_reference(f"{name} {config}", with_pass, torch_passes, ref64)


def test_traced_step_keeps_torch_ops():
    """Under ``torch.compile(fullgraph=True)`` the size test passes but the pass stands aside before anything
    untraceable (numba, ``torch.get_num_threads``) is reached: the traced function compiles and runs."""
    x = torch.zeros(cpu_jit.MIN_NUMEL)
    f = torch.compile(lambda t: t + 1 if cpu_jit.eligible(t) else t - 1, fullgraph=True, backend="eager")
    assert f(x)[0].item() == -1.0


def test_a_compile_failure_warns_and_falls_back(monkeypatch):
    """A numba that cannot compile here: one RuntimeWarning naming the loop, then the torch passes (correct)."""
    def broken():
        raise RuntimeError("no LLVM target")

    monkeypatch.setattr(cpu_jit, "_state", {})
    monkeypatch.setattr(cpu_jit, "_build", broken)
    monkeypatch.setattr(cpu_jit, "MIN_NUMEL", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    x, m, c, kw = make(torch.float32, dict(aux=True), seed=14)
    with pytest.warns(RuntimeWarning, match="numba step loop failed to compile"):
        got = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    assert not cpu_jit.available()
    ref = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    assert_close_to_reference("after a failed compile", got[0], ref[0], ref64[0])
    assert_close_to_reference("after a failed compile, aux", got[1], ref[1], ref64[1])
