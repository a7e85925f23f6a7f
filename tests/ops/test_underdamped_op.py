"""The fused BAOAB op (``underdamped_step``) against its same-dtype and float64 references, and its argument checks."""
import math

import pytest
import torch

import fastdiff
from tolerance import assert_close_to_reference, poisoned_like

KERNEL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
KW = dict(friction=0.7, temperature=1.3, seed=4, stream=3)


def _inputs(shape, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype) for _ in range(3)], g


def _mass(kind, event, g):
    if kind == "tensor":
        return torch.rand(event, generator=g) * 2 + 0.25
    return {"none": None, "float": 2.5}[kind]


def _double(m):
    return m.double() if isinstance(m, torch.Tensor) else m


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("shape,mass", [((7, 3), "none"), ((1, 1), "float"), ((5, 2, 9), "tensor"), ((7, 3), "tensor")],
                         ids=str)
@pytest.mark.parametrize("per_chain", [False, True])
def test_kernel_matches_reference(dtype, shape, mass, per_chain):
    """Kernel vs the same-dtype reference vs float64: x and v both, every written element checked (NaN poison)."""
    (x, v, grad), g = _inputs(shape, dtype)
    step = (torch.rand(shape[0], generator=g) * 0.5 + 0.01) if per_chain else 0.05
    m = _mass(mass, shape[1:], g)
    kw = dict(KW, kick=0.5 if per_chain else 1.0, mass=m, row_ids=torch.arange(10, 10 + shape[0]))
    x_out, v_out = poisoned_like(x), poisoned_like(v)
    res = fastdiff.underdamped_step(x, v, grad, step, x_out=x_out, v_out=v_out, backend="triton", **kw)
    ref = fastdiff.underdamped_step(x, v, grad, step, backend="reference", **kw)
    ref64 = fastdiff.underdamped_step(x.double(), v.double(), grad.double(), step.double() if per_chain else step,
                                      backend="reference", **dict(kw, mass=_double(m)))
    assert res[0] is x_out and res[1] is v_out
    assert_close_to_reference("underdamped x", x_out, ref[0], ref64[0])
    assert_close_to_reference("underdamped v", v_out, ref[1], ref64[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("per_chain", [False, True])
def test_cpu_path_matches_reference(dtype, per_chain):
    """The few-pass CPU path (backend="torch"), float64 storage included, within the same bound."""
    shape = (9, 5)
    (x, v, grad), g = _inputs(shape, dtype, seed=2)
    step = (torch.rand(shape[0], generator=g) * 0.5 + 0.01) if per_chain else 0.3
    m = _mass("tensor", shape[1:], g)
    kw = dict(KW, kick=0.5, mass=m)
    res = fastdiff.underdamped_step(x, v, grad, step, backend="torch", **kw)
    ref = fastdiff.underdamped_step(x, v, grad, step, backend="reference", **kw)
    ref64 = fastdiff.underdamped_step(x.double(), v.double(), grad.double(), step.double() if per_chain else step,
                                      backend="reference", **dict(kw, mass=m.double()))
    for name, out, r, r64 in zip("xv", res, ref, ref64):
        assert out.dtype == dtype
        assert_close_to_reference(f"underdamped {name} (torch path)", out, r, r64)


def test_update_formula_with_given_noise():
    """The four sub-steps written out by hand in float64 (detects a wrong OU factor, order or mass placement)."""
    g = torch.Generator().manual_seed(3)
    x, v, gr, z = (torch.randn(4, 3, generator=g) for _ in range(4))
    h = torch.tensor([0.1, 0.2, 0.3, 0.4])
    m = torch.tensor([0.5, 1.0, 3.0])
    gamma, temp, kick = 0.8, 2.0, 0.5
    xo, vo = fastdiff.underdamped_step(x, v, gr, h, kick=kick, friction=gamma, temperature=temp, mass=m, noise=z,
                                       backend="triton")
    hh, md = h.double()[:, None], m.double()
    p = v.double() + kick * hh * gr.double()
    xe = x.double() + hh / 2 * p / md
    c = torch.exp(-gamma * hh)
    p = c * p + torch.sqrt((1 - c ** 2) * temp * md) * z.double()
    xe = xe + hh / 2 * p / md
    torch.testing.assert_close(xo.double(), xe, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(vo.double(), p, rtol=2e-6, atol=2e-6)


def test_small_friction_step_keeps_the_noise_scale_accurate():
    """gamma*h = 1e-4: ``1 - exp(-2 gamma h)`` would lose 13 of float32's 24 bits; the kernel's stays at ~1e-7."""
    x, v = torch.zeros(2, 8), torch.zeros(2, 8)
    z = torch.ones(2, 8)
    _, vo = fastdiff.underdamped_step(x, v, x, 1e-4, friction=1.0, noise=z, backend="triton")
    exact = math.sqrt(-math.expm1(-2e-4))
    assert abs(vo[0, 0].item() / exact - 1) < 1e-6


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_in_place_update(backend):
    (x, v, g), _ = _inputs((3, 5), torch.float32, seed=4)
    expected = fastdiff.underdamped_step(x, v, g, 0.1, seed=1, backend=backend)
    xb, vb = x.clone(), v.clone()
    res = fastdiff.underdamped_step(xb, vb, g, 0.1, seed=1, x_out=xb, v_out=vb, backend=backend)
    assert res[0] is xb and res[1] is vb
    torch.testing.assert_close(xb, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(vb, expected[1], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_kick_only(backend):
    """drift=False: ``v + kick*h*g``, x returned untouched, no noise needed."""
    (x, v, g), _ = _inputs((4, 6), torch.float32, seed=5)
    h = torch.tensor([0.1, 0.2, 0.3, 0.4])
    xo, vo = fastdiff.underdamped_step(x, v, g, h, kick=0.5, drift=False, backend=backend)
    assert xo is x
    torch.testing.assert_close(vo, v + 0.5 * h[:, None] * g, rtol=1e-6, atol=1e-6)


def test_inputs_not_modified():
    (x, v, g), _ = _inputs((3, 5), torch.float32, seed=6)
    saved = [t.clone() for t in (x, v, g)]
    for backend in ("triton", "torch"):
        fastdiff.underdamped_step(x, v, g, 0.1, seed=1, mass=torch.ones(5), backend=backend)
    assert all(torch.equal(a, b) for a, b in zip((x, v, g), saved))


def test_noise_is_the_philox_stream_and_batch_split_invariant():
    """The kernel's z equals ``philox_normal`` of (seed, row id, stream) (checked through friction -> the pure
    O step), and a split batch with row_ids gives the whole batch's result bit for bit."""
    x, v = torch.zeros(8, 6), torch.zeros(8, 6)
    _, vo = fastdiff.underdamped_step(x, v, x, 1.0, friction=50.0, seed=2, stream=7, backend="triton")
    z = fastdiff.philox_normal((8, 6), seed=2, stream=7)
    torch.testing.assert_close(vo, z, rtol=1e-5, atol=1e-5)
    (x, v, g), _ = _inputs((8, 6), torch.float32, seed=7)
    whole = fastdiff.underdamped_step(x, v, g, 0.05, seed=2, stream=7, backend="triton")
    parts = [fastdiff.underdamped_step(x[i:i + 4], v[i:i + 4], g[i:i + 4], 0.05, seed=2, stream=7,
                                       row_ids=torch.arange(i, i + 4), backend="triton") for i in (0, 4)]
    for k in range(2):
        assert torch.equal(torch.cat([p[k] for p in parts]), whole[k])


def _call(**over):
    x = torch.randn(2, 3)
    kw = dict(x=x, v=torch.zeros(2, 3), grad=x, step_size=0.1, seed=0)
    kw.update(over)
    return fastdiff.underdamped_step(kw.pop("x"), kw.pop("v"), kw.pop("grad"), kw.pop("step_size"), **kw)


BAD = [
    ("zero step", dict(step_size=0.0), ValueError, "step_size must be a positive"),
    ("per-chain step shape", dict(step_size=torch.ones(3)), ValueError, "one per chain"),
    ("negative per-chain step", dict(step_size=torch.tensor([0.1, -0.1])), ValueError, "positive"),
    ("v shape", dict(v=torch.zeros(2, 4)), ValueError, "v must have shape"),
    ("v dtype", dict(v=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "v must have x's dtype"),
    ("grad shape", dict(grad=torch.zeros(2, 1)), ValueError, "grad must have shape"),
    ("negative friction", dict(friction=-1.0), ValueError, "friction"),
    ("infinite friction", dict(friction=math.inf), ValueError, "friction"),
    ("temperature", dict(temperature=0.0), ValueError, "temperature"),
    ("kick", dict(kick=math.nan), ValueError, "kick"),
    ("mass shape", dict(mass=torch.ones(2, 3)), ValueError, r"mass must be a float or a tensor of shape \(3,\)"),
    ("mass value", dict(mass=torch.tensor([1.0, 0.0, 1.0])), ValueError, "mass must be positive"),
    ("mass float", dict(mass=-2.0), ValueError, "mass"),
    ("mass dtype", dict(mass=torch.ones(3, dtype=torch.int64)), TypeError, "mass"),
    ("no noise source", dict(seed=None), ValueError, "seed"),
    ("seed and noise", dict(noise=torch.zeros(2, 3)), ValueError, "either seed"),
    ("x_out with kick only", dict(drift=False, x_out=torch.zeros(2, 3)), ValueError, "x_out must be None"),
    ("v_out shape", dict(v_out=torch.zeros(3, 3)), ValueError, "v_out"),
    ("drift type", dict(drift=1), TypeError, "drift"),
    ("float64 on the kernel", dict(x=torch.zeros(2, 3, dtype=torch.float64), v=torch.zeros(2, 3, dtype=torch.float64),
                                   grad=torch.zeros(2, 3, dtype=torch.float64), backend="triton"),
     TypeError, "backend='triton' supports"),
]


@pytest.mark.parametrize("over,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(over, exc, match):
    with pytest.raises(exc, match=match):
        _call(**over)
