"""The CPU fast paths (host coefficients, folded algebra, direct out= writes, cheap validation, the numpy
Philox, encode/Langevin in two passes, the drop-in output builder) give the reference's numbers."""
import pickle

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff import random as fr
from fastdiff.ops import _common
from fastdiff.ops.encode import add_noise_with_target, encode_reference, fused_encode
from fastdiff.ops.langevin import langevin_reference, langevin_step
from fastdiff.ops.step import NUM_COEFS, fused_step, step_coefs, step_reference
from fastdiff.ops.step.cpu import _is_one
from tolerance import assert_close_to_reference

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPE = (3, 4, 5, 6)


def _rnd(g, shape, dtype):
    return torch.randn(*shape, generator=g).to(dtype)


def _table(g, special=None):
    """Random coefficients; ``special`` overrides columns (zeros, ones) to hit the one-pass branches."""
    t = torch.rand(4, NUM_COEFS, generator=g, dtype=torch.float64) * 3 - 1.5
    for col, v in (special or {}).items():
        t[:, col] = v
    return t.to(torch.float32)


# (name, special columns, options); columns: 0 in_x 1 in_m 2 guidance 3 out_x 4 out_e 5 out_m 6 out_d
# 7-9 out_h 10 out_noise 11 aux_x 12 aux_d
CASES = [
    ("generic", {}, {}),
    ("ddim_like", {3: 0.0, 11: 0.0, 12: 1.0}, {"aux": True}),            # a*x + b*m twice
    ("euler_like", {0: 1.0, 3: 1.0, 6: 0.0, 11: 0.0, 12: 1.0}, {"aux": True}),  # x + dt*m: one pass
    ("flow_like", {0: 1.0, 1: 0.0, 3: 1.0, 6: 0.0}, {}),                  # torch.add(x, m, alpha=dt)
    ("m_only", {3: 0.0, 6: 0.0}, {}),                                     # one scaled term
    ("all_zero", {c: 0.0 for c in range(NUM_COEFS)}, {"aux": True}),     # zeros, no term at all
    ("clip_aux", {}, {"clip": 0.7, "aux": True}),
    ("history", {}, {"n_hist": 3, "aux": True}),
    ("x_eval_hist", {}, {"x_eval": True, "n_hist": 1, "aux": True}),
    ("guidance", {}, {"guidance": True, "aux": True}),
    ("guidance_clip_hist", {}, {"guidance": True, "clip": 0.5, "n_hist": 2}),
    ("guidance_noise", {}, {"guidance": True, "noise": True, "aux": True}),
    ("seeded", {}, {"seed": 5}),
]


def _case(dtype, special, opts, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = SHAPE[0]
    x = _rnd(g, SHAPE, dtype)
    mshape = (2 * b,) + SHAPE[1:] if opts.get("guidance") else SHAPE
    kw = dict(
        x_eval=_rnd(g, SHAPE, dtype) if opts.get("x_eval") else None,
        history=[_rnd(g, SHAPE, dtype) for _ in range(opts.get("n_hist", 0))],
        coef_row=2, guidance=opts.get("guidance", False), clip=opts.get("clip"), seed=opts.get("seed"), stream=3,
        noise=_rnd(g, SHAPE, dtype) if opts.get("noise") else None,
    )
    return x, _rnd(g, mshape, dtype), _table(g, special), kw


def _refs(x, m, coefs, kw):
    same = step_reference(x, m, coefs, **kw)
    kw64 = dict(kw, x_eval=None if kw["x_eval"] is None else kw["x_eval"].double(),
                history=[h.double() for h in kw["history"]],
                noise=None if kw["noise"] is None else kw["noise"].double())
    ref64 = step_reference(x.double(), m.double(), coefs.double(), **kw64)
    return same, ref64


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, special, opts", CASES, ids=[c[0] for c in CASES])
def test_step_fast_path_matches_reference(name, special, opts, dtype):
    x, m, coefs, kw = _case(dtype, special, opts)
    before = [t.clone() for t in (x, m, coefs)]
    want_aux = opts.get("aux", False)
    got = fused_step(x, m, coefs, write_aux=want_aux, **kw)
    out, aux = got if want_aux else (got, None)
    same, ref64 = _refs(x, m, coefs, kw)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close_to_reference(f"{name} out", out, same[0], ref64[0])
    if want_aux:
        assert aux.dtype == dtype
        assert_close_to_reference(f"{name} aux", aux, same[1], ref64[1])
    for t, b in zip((x, m, coefs), before):
        assert torch.equal(t, b), "an input was modified"
    if name == "all_zero":
        assert torch.count_nonzero(out) == 0 and torch.count_nonzero(aux) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("alias", ["fresh", "out_is_x", "out_is_m", "aux_is_x", "out_is_hist", "out_is_aux"])
def test_step_out_buffers_and_aliasing(alias, dtype):
    """Direct writes only when safe: in-place (out=x, out=model_output, aux_out=x, ...) gives the same numbers."""
    x, m, coefs, kw = _case(dtype, {}, {"n_hist": 1})
    same, ref64 = _refs(x, m, coefs, kw)
    x_in, m_in, h_in = x.clone(), m.clone(), kw["history"][0].clone()
    kw["history"] = [h_in]
    out = {"out_is_x": x_in, "out_is_m": m_in, "out_is_hist": h_in}.get(alias, torch.empty_like(x))
    aux = x_in if alias == "aux_is_x" else (out if alias == "out_is_aux" else torch.empty_like(x))
    res, aux_res = fused_step(x_in, m_in, coefs, out=out, aux_out=aux, **kw)
    assert res is out and aux_res is aux
    if alias == "out_is_aux":  # the same buffer: aux is written last, as on every other path
        assert_close_to_reference("aux", aux_res, same[1], ref64[1])
        return
    assert_close_to_reference("out", res, same[0], ref64[0])
    assert_close_to_reference("aux", aux_res, same[1], ref64[1])


def test_guidance_out_into_the_model_output_buffer():
    """out= a half of the [uncond; cond] model output (shared storage) is computed aside, then copied."""
    x, m, coefs, kw = _case(torch.float32, {}, {"guidance": True})
    same, ref64 = _refs(x, m, coefs, kw)
    m_in = m.clone()
    res = fused_step(x, m_in, coefs, out=m_in[SHAPE[0]:], **kw)
    assert_close_to_reference("out", res, same[0], ref64[0])


def test_step_aux_out_in_float32_for_half_storage():
    x, m, coefs, kw = _case(torch.bfloat16, {3: 0.0, 11: 0.0, 12: 1.0}, {})
    aux = torch.full(SHAPE, float("nan"))
    out, aux_res = fused_step(x, m, coefs, aux_out=aux, **kw)
    same = step_reference(x, m, coefs, compute_dtype=torch.float32, **kw)
    assert aux_res is aux and out.dtype == torch.bfloat16
    torch.testing.assert_close(aux, same[1], rtol=1e-6, atol=1e-6)


def test_is_one_matches_float32_rounding():
    """The one-pass branch is taken exactly when the coefficient rounds to 1.0 in the compute dtype."""
    for c in (1.0, 1.0 + 2.0**-24, 1.0 - 2.0**-25, 1.0 + 2.0**-23, 1.0 - 2.0**-24, 0.5, -1.0):
        f32_one = float(torch.tensor(c, dtype=torch.float64).to(torch.float32)) == 1.0
        assert _is_one(c, torch.float32) == f32_one, c
    assert _is_one(1.0, torch.float64) and not _is_one(1.0 + 2.0**-52, torch.float64)


def test_cheap_validation_still_rejects_bad_input():
    """The fast path's guard only admits valid calls: everything else reaches the checks (ValueError/TypeError)."""
    x, m = torch.randn(2, 3), torch.randn(2, 3)
    coefs = step_coefs(out_x=[1.0, 0.5])
    with pytest.raises(ValueError, match="model_output must have shape"):
        fused_step(x, torch.randn(2, 4), coefs)
    with pytest.raises(ValueError, match="coef_row"):
        fused_step(x, m, coefs, coef_row=2)
    with pytest.raises(ValueError, match="coefs must be"):
        fused_step(x, m, coefs[:, :5])
    with pytest.raises(ValueError, match="history"):
        fused_step(x, m, coefs, history=[torch.randn(2, 4)])
    with pytest.raises(TypeError, match="history"):
        fused_step(x, m, coefs, history=torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="clip"):
        fused_step(x, m, coefs, clip=0.0)
    with pytest.raises(ValueError, match="stream"):
        fused_step(x, m, coefs, stream=-1)
    with pytest.raises(TypeError, match="model_output"):
        fused_step(x, m.to(torch.int32), coefs)
    with pytest.raises(ValueError, match="out must have shape"):
        fused_step(x, m, coefs, out=torch.empty(3, 3))
    with pytest.raises(ValueError, match="out must be contiguous"):
        fused_step(x, m, coefs, out=torch.empty(3, 2).t())
    with pytest.raises(ValueError, match="backend"):
        fused_step(x, m, coefs, backend="nope")


def test_host_row_cache_follows_in_place_table_updates():
    x, m = torch.randn(2, 3), torch.randn(2, 3)
    coefs = step_coefs(out_x=[1.0, 2.0], out_m=0.0)
    torch.testing.assert_close(fused_step(x, m, coefs, coef_row=1), 2 * x)
    coefs[1, 3] = 3.0  # an in-place write bumps the version counter: the cached host copy is refreshed
    torch.testing.assert_close(fused_step(x, m, coefs, coef_row=1), 3 * x)
    coefs.mul_(0.5)
    torch.testing.assert_close(fused_step(x, m, coefs, coef_row=1), 1.5 * x)
    coefs[:, 3].zero_()  # through a view (views share the version counter)
    assert torch.count_nonzero(fused_step(x, m, coefs, coef_row=1)) == 0
    with torch.inference_mode():  # inference tensors have no version counter: read every call
        t = step_coefs(out_x=[4.0])
        torch.testing.assert_close(fused_step(x, m, t), 4 * x)
    for _ in range(2 * _common._HOST_ROWS_MAX):  # the cache stays bounded
        fused_step(x, m, step_coefs(out_x=1.0))
    assert len(_common._HOST_ROWS) <= _common._HOST_ROWS_MAX


# ------------------------------------------------------------------ Philox: same stream, faster numpy
def _philox_uint64(c0, c1, c2, c3, k0, k1):
    """The earlier numpy Philox: uint64 arrays, one temporary per operation (exact 32x32->64 products)."""
    m0, m1, mask, s32 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57), np.uint64(0xFFFFFFFF), np.uint64(32)
    for _ in range(10):
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> s32) ^ c1 ^ np.uint64(k0), p1 & mask, (p0 >> s32) ^ c3 ^ np.uint64(k1), p0 & mask
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _old_normals(rows, groups, row_ids, stream, k0, k1):
    """The earlier numpy formulation (uint64 state, a temporary per op): the values must not change."""
    rid = row_ids.numpy().astype(np.uint64)[:, None]
    c0 = np.broadcast_to(np.arange(groups, dtype=np.uint64)[None, :], (rows, groups))
    c1 = np.broadcast_to(rid & fr._NP_MASK, (rows, groups))
    c2 = np.full((rows, groups), stream, dtype=np.uint64)
    c3 = np.broadcast_to(rid >> fr._NP_32, (rows, groups))
    words = _philox_uint64(c0, c1, c2, c3, k0, k1)
    out = np.empty((rows, groups, 4), dtype=np.float32)
    for pair in range(2):
        ua = ((words[2 * pair] >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
        ub = ((words[2 * pair + 1] >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
        radius = np.sqrt(np.float32(-2.0) * np.log(ua))
        sin, cos = fr._sincos_turns_np(ub)  # checked on its own below
        out[:, :, 2 * pair] = radius * cos
        out[:, :, 2 * pair + 1] = radius * sin
    return torch.from_numpy(out)


def test_sincos_turns_is_accurate_and_the_same_in_numpy_and_torch():
    """sin/cos of 2*pi*u from the quarter-turn reduction and polynomials (the kernels' sincos_turns): within
    1.5e-7 of float64 sin/cos over every quadrant and at the boundaries, bit-identical in numpy and torch."""
    g = torch.Generator().manual_seed(3)
    m = torch.randint(0, 2**24, (200_000,), generator=g)
    edges = torch.tensor([0, 1, 2**22 - 1, 2**22, 2**23 - 1, 2**23, 3 * 2**22 - 1, 3 * 2**22, 2**24 - 1])
    u = ((torch.cat([m, edges]).to(torch.float32) + 0.5) * 2.0**-24)  # the kernels' uniforms, exactly
    s_t, c_t = fr._sincos_turns_torch(u)
    s_n, c_n = fr._sincos_turns_np(u.numpy())
    assert np.array_equal(s_t.numpy(), s_n) and np.array_equal(c_t.numpy(), c_n)
    angle = 2 * np.pi * u.double()
    assert (s_t.double() - torch.sin(angle)).abs().max() < 1.5e-7
    assert (c_t.double() - torch.cos(angle)).abs().max() < 1.5e-7
    assert s_t.dtype == torch.float32 and float((s_t.double() ** 2 + c_t.double() ** 2 - 1).abs().max()) < 3e-7


@pytest.mark.parametrize("rows, groups", [(1, 16), (3, 100), (2, 600), (5, 1)])  # both state widths
@pytest.mark.parametrize("seed, stream", [(0, 0), (2**63 - 1, 2**32 - 1), (12345678901234, 77)])
def test_philox_numpy_is_bit_exact(rows, groups, seed, stream):
    k0, k1 = fr.split_seed(seed)
    row_ids = torch.tensor([0, 2**33 + 5, 7, 2**62 + 3, 1][:rows], dtype=torch.int64)
    got = fr._normals_numpy(rows, groups, row_ids, stream, k0, k1)
    assert torch.equal(got.reshape(rows, groups * 4), _old_normals(rows, groups, row_ids, stream, k0, k1)
                       .reshape(rows, groups * 4))
    # and the words equal the int64 torch emulation (the device path's arithmetic)
    c = [torch.arange(groups).expand(rows, groups), (row_ids & 0xFFFFFFFF)[:, None].expand(rows, groups),
         torch.full((rows, groups), stream, dtype=torch.int64), (row_ids >> 32)[:, None].expand(rows, groups)]
    ref = fr.philox4x32_10(*c, k0, k1)
    for dt in (np.uint32, np.uint64):
        w = np.empty((4, rows, groups), dt)
        w[0], w[1] = np.arange(groups), stream
        w[2] = (row_ids.numpy().astype(np.uint64) & fr._NP_MASK)[:, None]
        w[3] = (row_ids.numpy().astype(np.uint64) >> fr._NP_32)[:, None]
        fr._philox_words(w, k0, k1)
        for lane, r in zip((w[0], w[2], w[1], w[3]), ref):
            assert np.array_equal(lane.astype(np.int64), r.numpy())


def test_philox_normal_batch_split_invariance_kept():
    z = fastdiff.philox_normal((8, 3, 5), seed=3, stream=9)
    z2 = fastdiff.philox_normal((4, 3, 5), seed=3, stream=9, row_ids=torch.arange(4, 8))
    assert torch.equal(z[4:], z2)


# ------------------------------------------------------------------ encode: no unrequested target
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["noise", "seed", "target", "out_is_x0", "index"])
def test_encode_cpu_matches_reference(mode, dtype):
    g = torch.Generator().manual_seed(1)
    x0 = _rnd(g, SHAPE, dtype)
    coefs = (torch.rand(SHAPE[0], 4, generator=g) * 2 - 0.5)
    index = torch.tensor([2, 0, 1]) if mode == "index" else None
    noise = None if mode == "seed" else _rnd(g, SHAPE, dtype)
    seed = 4 if mode == "seed" else None
    x_in = x0.clone()
    out = x_in if mode == "out_is_x0" else None
    res = fused_encode(x_in, coefs, index, noise=noise, seed=seed, stream=2, write_target=mode == "target",
                       out=out)
    xt, tgt = res if mode == "target" else (res, None)
    same = encode_reference(x0, coefs, index, noise=noise, seed=seed, stream=2)
    z64 = None if noise is None else noise.double()
    ref64 = encode_reference(x0.double(), coefs.double(), index, noise=z64, seed=seed, stream=2)
    if out is not None:
        assert xt is out
    assert xt.dtype == dtype
    assert_close_to_reference("x_t", xt, same[0], ref64[0])
    if tgt is not None:
        assert_close_to_reference("target", tgt, same[1], ref64[1])


def test_add_noise_with_target_returns_noise():
    x0 = torch.randn(2, 3, 4)
    sched = fastdiff.DiscreteVPSchedule()
    xt, v, z = add_noise_with_target(x0, torch.tensor([3, 500]), sched, seed=0, target="v_prediction",
                                     return_noise=True)
    xt_r, v_r, z_r = add_noise_with_target(x0, torch.tensor([3, 500]), sched, seed=0, target="v_prediction",
                                           return_noise=True, backend="reference")
    torch.testing.assert_close(z, z_r, rtol=0, atol=0)
    torch.testing.assert_close(xt, xt_r)
    torch.testing.assert_close(v, v_r)


# ------------------------------------------------------------------ Langevin in two passes
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["scalar", "per_chain", "in_place", "noise_out_is_out", "given_noise"])
def test_langevin_cpu_matches_reference(mode, dtype):
    g = torch.Generator().manual_seed(2)
    x, grad = _rnd(g, SHAPE, dtype), _rnd(g, SHAPE, dtype)
    step = torch.tensor([0.01, 0.2, 0.05]) if mode == "per_chain" else 0.03
    noise = _rnd(g, SHAPE, dtype) if mode == "given_noise" else None
    seed = None if noise is not None else 8
    x_in = x.clone()
    out = x_in if mode == "in_place" else (torch.empty_like(x) if mode == "noise_out_is_out" else None)
    noise_out = out if mode == "noise_out_is_out" else torch.empty(SHAPE)
    res = langevin_step(x_in, grad, step, temperature=0.7, seed=seed, noise=noise, stream=1, out=out,
                        noise_out=noise_out)
    same, _ = langevin_reference(x, grad, step, temperature=0.7, seed=seed, noise=noise, stream=1)
    step64 = step.double() if isinstance(step, torch.Tensor) else step
    ref64, _ = langevin_reference(x.double(), grad.double(), step64, temperature=0.7, seed=seed,
                                  noise=None if noise is None else noise.double(), stream=1)
    if out is not None:
        assert res is out
    assert_close_to_reference("langevin", res, same, ref64)
    if mode != "noise_out_is_out":
        z_used = noise.float() if noise is not None else fastdiff.philox_normal(SHAPE, seed, 1)
        torch.testing.assert_close(noise_out, z_used, rtol=0, atol=0)


# ------------------------------------------------------------------ drop-in schedulers
def test_output_builder_builds_the_same_object():
    from fastdiff.diffusers._compat import output_builder, output_class

    a, b = torch.randn(3), torch.randn(3)
    for name, vals in (("DDIMSchedulerOutput", (a, b)), ("DDIMSchedulerOutput", (a, None)),
                       ("SchedulerOutput", (a,)), ("FlowMatchEulerDiscreteSchedulerOutput", (a,)),
                       ("EulerDiscreteSchedulerOutput", (a, b))):
        cls = output_class(name)
        ref, got = cls(*vals), output_builder(name)(*vals)
        assert type(got) is cls
        assert vars(got).keys() == vars(ref).keys() and all(vars(got)[k] is vars(ref)[k] for k in vars(ref))
        assert got.to_tuple() == ref.to_tuple() and got[0] is a
        if isinstance(ref, dict):
            assert list(got.keys()) == list(ref.keys())
            assert list(pickle.loads(pickle.dumps(got)).keys()) == list(ref.keys())


@pytest.mark.parametrize("name", ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                  "FlowMatchEulerDiscreteScheduler", "DEISMultistepScheduler",
                                  "DPMSolverSinglestepScheduler", "DPMSolverMultistepInverseScheduler",
                                  "IPNDMScheduler"])
def test_dropin_fast_path_equals_reference_backend(name):
    """A run on the default CPU path equals the same run with backend='reference' (float32 rounding)."""
    import fastdiff.diffusers as fdd

    outs = []
    for backend in ("auto", "reference"):
        s = getattr(fdd, name)()
        s.backend = backend
        s.set_timesteps(8)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 6, 6, generator=g)
        for t in s.timesteps:
            r = s.step(torch.tanh(x) * 0.5, t, x)
            x = r.prev_sample
        outs.append((x, r))
    (x_fast, r_fast), (x_ref, r_ref) = outs
    assert type(r_fast) is type(r_ref)
    torch.testing.assert_close(x_fast, x_ref, rtol=2e-5, atol=2e-5)
