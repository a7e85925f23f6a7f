"""The fused denoising-step op: Triton kernel vs same-dtype PyTorch vs float64 reference."""
import pytest
import torch

import fastdiff
from fastdiff.ops.step import COEF_NAMES, NUM_COEFS, fused_step, step_coefs
from tolerance import assert_close_to_reference, poisoned_like

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(3, 5, 7), (1, 1), (4, 33), (2, 3, 17, 19)]

# name -> options; each exercises a different constexpr branch of the kernel.
CONFIGS = {
    "plain": dict(),
    "multistep_per_row": dict(n_hist=2, per_row=True, aux=True),
    "full": dict(x_eval=True, n_hist=3, guidance=True, clip=1.0, seed=11, per_row=True, row_ids=True, aux=True),
    "given_noise": dict(noise=True, n_hist=1),
    # CFG++: the unconditional x0 estimate u from the guided halves (converted in the pass), or given as a tensor
    "cfgpp_halves": dict(x_eval=True, guidance=True, uncond="halves", per_row=True, aux=True),
    "cfgpp_halves_clip": dict(guidance=True, uncond="halves", clip=0.8, seed=3, n_hist=1, aux=True),
    "cfgpp_tensor": dict(uncond="tensor", n_hist=2, per_row=True, aux=True),
    "cfgpp_tensor_clip": dict(uncond="tensor", x_eval=True, clip=0.9, noise=True, aux=True),
}


def make_case(shape, dtype, cfg, gen_seed=0):
    g = torch.Generator().manual_seed(gen_seed)
    batch = shape[0]

    def rnd(*s):
        return torch.randn(*s, generator=g).to(dtype)

    x = rnd(*shape)
    mshape = (2 * batch,) + shape[1:] if cfg.get("guidance") else shape
    case = dict(
        x=x,
        model_output=rnd(*mshape),
        coefs=(torch.rand(5, NUM_COEFS, generator=g) * 3 - 1.5),
        kw=dict(
            x_eval=rnd(*shape) if cfg.get("x_eval") else None,
            history=[rnd(*shape) for _ in range(cfg.get("n_hist", 0))],
            coef_index=torch.randint(0, 5, (batch,), generator=g) if cfg.get("per_row") else None,
            coef_row=3,
            guidance=cfg.get("guidance", False),
            clip=cfg.get("clip"),
            seed=cfg.get("seed"),
            stream=5,
            row_ids=(torch.randint(0, 2**40, (batch,), generator=g) if cfg.get("row_ids") else None),
            noise=rnd(*shape) if cfg.get("noise") else None,
            **({} if "uncond" not in cfg else {"uncond": "halves" if cfg["uncond"] == "halves" else rnd(*shape)}),
        ),
        aux=cfg.get("aux", False),
    )
    return case


def to64(kw):
    out = dict(kw)
    for k in ("x_eval", "noise", "uncond"):
        if isinstance(out.get(k), torch.Tensor):
            out[k] = out[k].double()
    out["history"] = [h.double() for h in out["history"]]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cfg", list(CONFIGS), ids=str)
def test_kernel_matches_reference(shape, dtype, cfg):
    case = make_case(shape, dtype, CONFIGS[cfg])
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    out = poisoned_like(x)
    aux = poisoned_like(x) if case["aux"] else None
    res = fused_step(x, m, c, out=out, aux_out=aux, backend="triton", **kw)
    ref_same = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    if case["aux"]:
        assert res[0] is out and res[1] is aux
        assert_close_to_reference(f"{cfg} out", out, ref_same[0], ref64[0])
        assert_close_to_reference(f"{cfg} aux", aux, ref_same[1], ref64[1])
    else:
        assert res is out
        assert_close_to_reference(f"{cfg} out", out, ref_same[0], ref64[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_path_matches_reference(dtype):
    case = make_case((4, 3, 5), dtype, CONFIGS["full"], gen_seed=1)
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    out, aux = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    ref_same = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    assert out.dtype == dtype and aux.dtype == dtype
    assert_close_to_reference("torch out", out, ref_same[0], ref64[0])
    assert_close_to_reference("torch aux", aux, ref_same[1], ref64[1])


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_in_place_aliasing_matches_out_of_place(backend):
    case = make_case((3, 4, 9), torch.float32, CONFIGS["multistep_per_row"], gen_seed=2)
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    expected, expected_aux = fused_step(x, m, c, write_aux=True, backend=backend, **kw)
    x_buf = x.clone()
    hist0 = kw["history"][0].clone()
    kw2 = dict(kw, history=[hist0, kw["history"][1]])
    # out aliases x, aux aliases the history entry it replaces (the multistep ring-buffer pattern).
    res, aux = fused_step(x_buf, m, c, out=x_buf, aux_out=hist0, backend=backend, **kw2)
    assert res.data_ptr() == x_buf.data_ptr() and aux.data_ptr() == hist0.data_ptr()
    torch.testing.assert_close(res, expected, rtol=0, atol=0)
    torch.testing.assert_close(aux, expected_aux, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_inputs_are_not_modified(backend):
    case = make_case((2, 6), torch.float32, CONFIGS["full"], gen_seed=3)
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    snapshot = [t.clone() for t in (x, m, c, kw["x_eval"], *kw["history"])]
    fused_step(x, m, c, write_aux=True, backend=backend, **kw)
    for before, after in zip(snapshot, (x, m, c, kw["x_eval"], *kw["history"])):
        assert torch.equal(before, after)


def test_non_contiguous_inputs_give_the_same_result():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, generator=g).t()  # (5, 6) non-contiguous view
    m = torch.randn(6, 5, generator=g).t()
    c = step_coefs(out_x=0.7, out_d=0.3)
    a = fused_step(x, m, c, backend="triton")
    b = fused_step(x.contiguous(), m.contiguous(), c, backend="triton")
    assert not x.is_contiguous()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
def test_empty_tensors(shape):
    x = torch.randn(shape)
    out = fused_step(x, torch.randn(shape), step_coefs(out_x=1.0), backend="triton")
    assert out.shape == x.shape


def test_step_coefs_layout_and_broadcast():
    table = step_coefs(in_x=2.0, out_x=[1.0, 2.0, 3.0], out_h=[0.5, 0.25], out_noise=0.1)
    assert table.shape == (3, NUM_COEFS) and table.dtype == torch.float32
    assert torch.equal(table[:, COEF_NAMES.index("out_x")], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.all(table[:, COEF_NAMES.index("in_x")] == 2.0)
    assert torch.all(table[:, COEF_NAMES.index("out_h1")] == 0.25)
    assert torch.all(table[:, COEF_NAMES.index("out_h2")] == 0.0)
    assert torch.all(table[:, COEF_NAMES.index("aux_d")] == 1.0)


def test_ddim_step_written_as_coefficients_matches_the_ddim_formula():
    """Song et al. 2021 eq. (12), eta=0: x_prev = a_prev*x0 + s_prev*eps, x0 = (x - s*eps)/a."""
    g = torch.Generator().manual_seed(5)
    x, eps = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    a, s, ap, sp = 0.3, (1 - 0.09) ** 0.5, 0.6, 0.8
    c = step_coefs(in_x=1 / a, in_m=-s / a, out_d=ap, out_m=sp).double()
    x0 = (x - s * eps) / a
    expected = ap * x0 + sp * eps
    torch.testing.assert_close(fused_step(x, eps, c, backend="reference"), expected)
    torch.testing.assert_close(fused_step(x.float(), eps.float(), c.float(), backend="triton"), expected.float(),
                               rtol=1e-5, atol=1e-5)


def test_guidance_combines_halves():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, generator=g)
    mu, mc = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    c = step_coefs(guidance=7.5, out_d=1.0)
    out = fused_step(x, torch.cat([mu, mc]), c, guidance=True, backend="triton")
    torch.testing.assert_close(out, mu + 7.5 * (mc - mu), rtol=1e-5, atol=1e-5)


def test_clip_bounds_the_denoised_estimate():
    x = torch.randn(3, 50) * 10
    out, aux = fused_step(x, x, step_coefs(out_d=1.0), clip=1.0, write_aux=True, backend="triton")
    assert out.abs().max() <= 1.0 and aux.abs().max() <= 1.0
    assert (out.abs() == 1.0).any()


def test_backends_agree_float32():
    case = make_case((5, 13), torch.float32, CONFIGS["full"], gen_seed=7)
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    outs = [fused_step(x, m, c, backend=b, **kw) for b in ("triton", "torch", "reference")]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1], outs[2], rtol=1e-5, atol=1e-5)


def test_auto_backend_on_cpu_is_the_torch_path():
    from fastdiff.ops.backend import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", torch.device("cpu"))


def test_float64_storage_is_rejected_by_the_kernel_but_runs_on_torch():
    x = torch.randn(2, 3, dtype=torch.float64)
    c = step_coefs(out_x=1.0)
    with pytest.raises(TypeError, match="float32/float16/bfloat16"):
        fused_step(x, x, c, backend="triton")
    assert fused_step(x, x, c, backend="torch").dtype == torch.float64


BAD_INPUTS = [
    ("x not a tensor", lambda x, m, c: fused_step([1.0], m, c), TypeError, "x must be a torch.Tensor"),
    ("integer x", lambda x, m, c: fused_step(x.long(), m, c), TypeError, "x must be a float"),
    ("model_output shape", lambda x, m, c: fused_step(x, m[:, :2], c), ValueError, "model_output must have shape"),
    ("guidance needs doubled batch", lambda x, m, c: fused_step(x, m, c, guidance=True), ValueError, "uncond; cond"),
    ("coefs wrong width", lambda x, m, c: fused_step(x, m, c[:, :5]), ValueError, "coefs must be a"),
    ("coef_row out of range", lambda x, m, c: fused_step(x, m, c, coef_row=9), ValueError, "coef_row"),
    ("coef_index float", lambda x, m, c: fused_step(x, m, c, coef_index=torch.zeros(3)), TypeError, "coef_index"),
    ("coef_index shape", lambda x, m, c: fused_step(x, m, c, coef_index=torch.zeros(2, dtype=torch.long)),
     ValueError, "coef_index must have shape"),
    ("history too long", lambda x, m, c: fused_step(x, m, c, history=[x] * 4), ValueError, "at most 3"),
    ("history shape", lambda x, m, c: fused_step(x, m, c, history=[x[:1]]), ValueError, r"history\[0\]"),
    ("history as tensor", lambda x, m, c: fused_step(x, m, c, history=x), TypeError, "history must be a list"),
    ("seed and noise", lambda x, m, c: fused_step(x, m, c, seed=1, noise=x), ValueError, "either seed"),
    ("negative seed", lambda x, m, c: fused_step(x, m, c, seed=-1), ValueError, "seed must be in"),
    ("bad stream", lambda x, m, c: fused_step(x, m, c, seed=1, stream=-2), ValueError, "stream"),
    ("row_ids dtype", lambda x, m, c: fused_step(x, m, c, seed=1, row_ids=torch.zeros(3)), ValueError, "row_ids"),
    ("clip not positive", lambda x, m, c: fused_step(x, m, c, clip=0.0), ValueError, "clip"),
    ("out shape", lambda x, m, c: fused_step(x, m, c, out=torch.empty(2, 4)), ValueError, "out must have shape"),
    ("out non-contiguous", lambda x, m, c: fused_step(x, m, c, out=torch.empty(4, 3).t()), ValueError, "contiguous"),
    ("unknown backend", lambda x, m, c: fused_step(x, m, c, backend="cuda"), ValueError, "backend must be one of"),
    ("x_eval shape", lambda x, m, c: fused_step(x, m, c, x_eval=x[:2]), ValueError, "x_eval"),
    ("0-d x", lambda x, m, c: fused_step(torch.tensor(1.0), m, c), ValueError, "batch dimension"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_rejected_clearly(name, call, exc, match):
    x, m = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(exc, match=match):
        call(x, m, step_coefs(out_x=1.0))


def test_step_coefs_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="out_d has 2 values"):
        step_coefs(out_x=[1.0, 2.0, 3.0], out_d=[1.0, 2.0])
    with pytest.raises(ValueError, match="at most 3"):
        step_coefs(out_h=[1.0] * 4)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_cpu_per_sample_rows_match_reference(dtype, cfg):
    """The CPU path with ``coef_index`` (one coefficient row per sample), into fresh and NaN-poisoned buffers:
    columns the samples share are host floats, the others per-sample multipliers, all-zero ones skipped
    (here: ``out_m`` zero in every row, ``out_x`` shared by every row, rows repeated across the batch)."""
    case = make_case((6, 3, 5), dtype, dict(CONFIGS[cfg], per_row=True), gen_seed=31)
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    c[:, COEF_NAMES.index("out_m")] = 0.0
    c[:, COEF_NAMES.index("out_x")] = 0.75
    kw["coef_index"] = torch.tensor([4, 0, 4, 2, 1, 0])
    ref = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    got = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    out, aux = poisoned_like(x), poisoned_like(x)
    got_buf = fused_step(x, m, c, out=out, aux_out=aux, backend="torch", **kw)
    assert got_buf[0] is out and got_buf[1] is aux and got[0].dtype == dtype
    for name, res in (("fresh", got), ("buffers", got_buf)):
        assert_close_to_reference(f"{cfg} {name} out", res[0], ref[0], ref64[0])
        assert_close_to_reference(f"{cfg} {name} aux", res[1], ref[1], ref64[1])


def test_cpu_per_sample_rows_equal_to_one_row_per_sample():
    """Independent of the reference: a per-sample step is, sample by sample, the one-row step of that sample's
    row (float64, so both paths round alike up to the order of additions)."""
    g = torch.Generator().manual_seed(12)
    x, m = torch.randn(4, 3, 6, generator=g, dtype=torch.float64), torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    c = torch.rand(3, NUM_COEFS, generator=g, dtype=torch.float64)
    index = torch.tensor([2, 0, 1, 2])
    out, aux = fused_step(x, m, c, coef_index=index, clip=0.9, write_aux=True, backend="torch")
    for k in range(4):
        o, a = fused_step(x[k:k + 1], m[k:k + 1], c, coef_row=int(index[k]), clip=0.9, write_aux=True,
                          backend="torch")
        torch.testing.assert_close(out[k:k + 1], o, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(aux[k:k + 1], a, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("cfg", ["plain", "full_shared_coefs", "given_noise"])
def test_cpu_fast_path_matches_reference(dtype, cfg):
    """The CPU path with one shared coefficient row (zero terms skipped) against the references."""
    opts = dict(CONFIGS["full"], per_row=False) if cfg == "full_shared_coefs" else CONFIGS[cfg]
    case = make_case((3, 4, 5), dtype, opts, gen_seed=8)
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    c[3, COEF_NAMES.index("out_m")] = 0.0  # a zero coefficient: the fast path skips that term
    out, aux = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    ref = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    assert out.dtype == dtype
    assert_close_to_reference("cpu out", out, ref[0], ref64[0])
    assert_close_to_reference("cpu aux", aux, ref[1], ref64[1])


# ---------------------------------------------------------------------------------------------- CFG++ (u term)
CFGPP = [c for c in CONFIGS if c.startswith("cfgpp")]


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("cfg", CFGPP, ids=str)
def test_cpu_fast_path_with_uncond_matches_reference(cfg, dtype):
    """The host-coefficient CPU path (one row for all samples: coef_index None) with the u term, folded or
    clipped, from the halves or a tensor, into fresh and NaN-poisoned buffers."""
    opts = dict(CONFIGS[cfg], per_row=False)
    case = make_case((3, 2, 7), dtype, opts, gen_seed=21)
    x, m, c, kw = case["x"], case["model_output"], case["coefs"], case["kw"]
    c = c.to(torch.float64 if dtype == torch.float64 else torch.float32)
    ref_same = fused_step(x, m, c, write_aux=True, backend="reference", **kw)
    ref64 = fused_step(x.double(), m.double(), c.double(), write_aux=True, backend="reference", **to64(kw))
    got = fused_step(x, m, c, write_aux=True, backend="torch", **kw)
    out, aux = poisoned_like(x), poisoned_like(x)
    got_buf = fused_step(x, m, c, out=out, aux_out=aux, backend="torch", **kw)
    assert got_buf[0] is out and got_buf[1] is aux
    for name, res in (("fresh", got), ("buffers", got_buf)):
        assert_close_to_reference(f"{cfg} {name} out", res[0], ref_same[0], ref64[0])
        assert_close_to_reference(f"{cfg} {name} aux", res[1], ref_same[1], ref64[1])


def test_uncond_term_is_the_cfgpp_formula():
    """Independent of the reference: with u from the halves, out = out_x*x + out_d*d + out_u*u and
    aux = aux_u*u, where d and u are the guided and unguided x0 estimates of an epsilon model (float64)."""
    g = torch.Generator().manual_seed(5)
    x, m = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(6, 6, generator=g, dtype=torch.float64)
    sigma, scale = 1.7, 2.5
    eps_u, eps_c = m[:3], m[3:]
    d = x - sigma * (eps_u + scale * (eps_c - eps_u))
    u = x - sigma * eps_u
    c = step_coefs(in_x=1.0, in_m=-sigma, guidance=scale, out_x=0.3, out_d=0.9, out_u=-0.4, aux_d=0.0, aux_u=1.0,
                   dtype=torch.float64)
    for backend in ("torch", "reference"):
        out, aux = fused_step(x, m, c, guidance=True, uncond="halves", write_aux=True, backend=backend)
        torch.testing.assert_close(out, 0.3 * x + 0.9 * d - 0.4 * u, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(aux, u, rtol=1e-13, atol=1e-13)
    x32, m32, c32 = x.float(), m.float(), c.float()
    out, aux = fused_step(x32, m32, c32, guidance=True, uncond="halves", write_aux=True, backend="triton")
    torch.testing.assert_close(out.double(), 0.3 * x + 0.9 * d - 0.4 * u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux.double(), u, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_uncond_columns_are_ignored_without_uncond(backend):
    """Without ``uncond`` the out_u / aux_u columns are not read (a NaN there changes nothing)."""
    g = torch.Generator().manual_seed(6)
    x, m = torch.randn(2, 9, generator=g), torch.randn(4, 9, generator=g)
    c = step_coefs(in_x=1.0, in_m=-0.5, guidance=1.5, out_x=0.6, out_d=0.4)
    c_nan = c.clone()
    c_nan[:, COEF_NAMES.index("out_u")] = float("nan")
    c_nan[:, COEF_NAMES.index("aux_u")] = float("nan")
    a = fused_step(x, m, c, guidance=True, write_aux=True, backend=backend)
    b = fused_step(x, m, c_nan, guidance=True, write_aux=True, backend=backend)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_uncond_arguments():
    x, m = torch.randn(2, 4), torch.randn(2, 4)
    c = step_coefs(out_u=1.0)
    with pytest.raises(ValueError, match="uncond='halves' needs guidance=True"):
        fused_step(x, m, c, uncond="halves")
    with pytest.raises(ValueError, match="uncond must be None, 'halves' or a tensor"):
        fused_step(x, m, c, uncond="cond")
    with pytest.raises(ValueError, match="uncond"):
        fused_step(x, m, c, uncond=torch.randn(2, 5))
    with pytest.raises(TypeError, match="uncond"):
        fused_step(x, m, c, uncond=torch.ones(2, 4, dtype=torch.int64))
