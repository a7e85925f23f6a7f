"""The fused HMC leapfrog passes (refresh + first half-kick + drift, kick + drift, closing half-kick) against
their plain-PyTorch references: kernel vs same-dtype and float64 references, NaN-poisoned outputs."""
import pytest
import torch

import fastdiff
from fastdiff.ops import hmc_leapfrog, hmc_refresh
from fastdiff.ops.hmc import hmc_leapfrog_reference
from tolerance import assert_close_to_reference, poisoned_like

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# odd sizes, each with one of the launch variants (per-chain steps, diagonal mass), to keep the interpreter runs few
CASES = [((7, 3), False, False), ((1, 1), True, True), ((5, 2, 9), False, True)]
KINDS = ["refresh", "leapfrog", "final"]


def _inputs(shape, dtype, per_chain, with_mass, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    p = torch.randn(shape, generator=g).to(dtype)
    grad = torch.randn(shape, generator=g).to(dtype)
    step = (torch.rand(shape[0], generator=g) * 0.5 + 0.01) if per_chain else 0.15
    inv_mass = (torch.rand(shape[1:], generator=g) * 2 + 0.25) if with_mass else None
    return x, p, grad, step, inv_mass


def _reference(kind, x, p, grad, step, inv_mass, rid, dtype):
    """(x_new or None, p_new) of the reference in ``dtype`` (None: the inputs' dtype), step and mass in it too."""
    dt = dtype or x.dtype
    h = step.to(dt) if isinstance(step, torch.Tensor) else step
    im = None if inv_mass is None else inv_mass.to(dt)
    kw = dict(inv_mass=im, compute_dtype=dt)
    if kind == "refresh":
        xn, pn, _ = hmc_leapfrog_reference(x, None, grad, h, kick=0.5, drift=True, seed=4, stream=3, row_ids=rid, **kw)
    else:
        xn, pn, _ = hmc_leapfrog_reference(x, p, grad, h, kick=0.5 if kind == "final" else 1.0,
                                           drift=kind != "final", **kw)
    return xn, pn


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,per_chain,with_mass", CASES, ids=["7x3", "1x1-per_chain-mass", "5x2x9-mass"])
def test_kernel_matches_reference(kind, dtype, shape, per_chain, with_mass):
    # float64 storage has no kernel (the Triton ops take 16/32-bit storage): its fast torch path is checked instead
    backend = "torch" if dtype == torch.float64 else "triton"
    x, p, grad, step, inv_mass = _inputs(shape, dtype, per_chain, with_mass)
    rid = torch.arange(10, 10 + shape[0])
    x_out, p_out = poisoned_like(x), poisoned_like(p)
    if kind == "refresh":
        noise_out = torch.full(shape, float("nan"))
        res = hmc_refresh(x, grad, step, inv_mass=inv_mass, seed=4, stream=3, row_ids=rid, out=x_out, p_out=p_out,
                          noise_out=noise_out, backend=backend)
        z = fastdiff.philox_normal(shape, seed=4, stream=3, row_ids=rid)
        torch.testing.assert_close(noise_out, z, rtol=1e-5, atol=1e-5)
    else:
        res = hmc_leapfrog(x, p, grad, step, inv_mass=inv_mass, final=kind == "final",
                           out=None if kind == "final" else x_out, p_out=p_out, backend=backend)
    x_ref, p_ref = _reference(kind, x, p, grad, step, inv_mass, rid, None)
    x64, p64 = _reference(kind, x.double(), p.double(), grad.double(), step, inv_mass, rid, torch.float64)
    assert res[1] is p_out
    assert_close_to_reference(f"hmc {kind} p", p_out, p_ref, p64)
    if kind == "final":
        assert res[0] is x and torch.isnan(x_out).all()  # the closing half-kick writes no x
    else:
        assert res[0] is x_out
        assert_close_to_reference(f"hmc {kind} x", x_out, x_ref, x64)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_formulas_with_given_noise(backend):
    # literal transcription: p = sqrt(M) z + h/2 g, x' = x + h M^-1 p; then p += h g', x'' = x' + h M^-1 p;
    # then the closing p += h/2 g''
    g = torch.Generator().manual_seed(3)
    x, z, g0, g1, g2 = (torch.randn(4, 3, generator=g) for _ in range(5))
    h = torch.tensor([0.1, 0.2, 0.3, 0.4])
    m = torch.tensor([0.5, 2.0, 4.0])  # the mass M; the ops take M^-1
    x1, p = hmc_refresh(x, g0, h, inv_mass=1 / m, noise=z, backend=backend)
    p_exp = m.sqrt() * z + 0.5 * h[:, None] * g0
    torch.testing.assert_close(p, p_exp, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x1, x + h[:, None] * p_exp / m, rtol=1e-6, atol=1e-6)
    x2, p2 = hmc_leapfrog(x1, p, g1, h, inv_mass=1 / m, backend=backend)
    torch.testing.assert_close(p2, p_exp + h[:, None] * g1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x2, x1 + h[:, None] * p2 / m, rtol=1e-6, atol=1e-6)
    x3, p3 = hmc_leapfrog(x2, p2, g2, h, inv_mass=1 / m, final=True, backend=backend)
    assert x3 is x2
    torch.testing.assert_close(p3, p2 + 0.5 * h[:, None] * g2, rtol=1e-6, atol=1e-6)


def test_leapfrog_is_reversible():
    # leapfrog is time-reversible: integrate L steps, flip the momentum, integrate L steps back -> the start
    # (to float32 rounding). A kick of the wrong size at either end breaks it (detects a missing half-kick).
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 4, generator=g, dtype=torch.float32)
    z = torch.randn(64, 4, generator=g)
    inv_m = torch.tensor([1.0, 0.5, 2.0, 0.25])
    grad = lambda v: -v * torch.tensor([1.0, 4.0, 0.5, 2.0])  # noqa: E731
    h, n = 0.1, 12

    def trajectory(x, p):
        for step in range(1, n + 1):
            x, p = hmc_leapfrog(x, p, grad(x), h, inv_mass=inv_m, final=step == n, backend="triton")
        return x, p

    x, p = hmc_refresh(x0, grad(x0), h, inv_mass=inv_m, noise=z, backend="triton")
    x, p = trajectory(x, p)
    # the way back starts with a half-kick too: p' = -p + h/2 g(x) is the refresh with "noise" -p / sqrt(M)
    xb, pb = hmc_refresh(x, grad(x), h, inv_mass=inv_m, noise=-p * inv_m.sqrt(), backend="triton")
    xb, pb = trajectory(xb, pb)
    torch.testing.assert_close(xb, x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(-pb * inv_m.sqrt(), z, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_in_place_passes(backend):
    x, p, grad, step, inv_mass = _inputs((3, 5), torch.float32, True, True)
    expected = hmc_leapfrog(x, p, grad, step, inv_mass=inv_mass, backend=backend)
    xb, pb = x.clone(), p.clone()
    res = hmc_leapfrog(xb, pb, grad, step, inv_mass=inv_mass, out=xb, p_out=pb, backend=backend)
    assert res[0] is xb and res[1] is pb
    assert torch.equal(xb, expected[0]) and torch.equal(pb, expected[1])
    exp_x, exp_p = hmc_refresh(x, grad, step, inv_mass=inv_mass, seed=2, backend=backend)
    xb = x.clone()
    hmc_refresh(xb, grad, step, inv_mass=inv_mass, seed=2, out=xb, p_out=pb, backend=backend)
    assert torch.equal(xb, exp_x) and torch.equal(pb, exp_p)


def test_inputs_not_modified():
    x, p, grad, step, inv_mass = _inputs((3, 5), torch.float32, True, True)
    saved = [t.clone() for t in (x, p, grad, step, inv_mass)]
    hmc_leapfrog(x, p, grad, step, inv_mass=inv_mass, backend="triton")
    hmc_refresh(x, grad, step, inv_mass=inv_mass, seed=0, backend="triton")
    assert all(torch.equal(a, b) for a, b in zip(saved, (x, p, grad, step, inv_mass)))


def test_refresh_batch_split_invariance():
    x, _, grad, _, inv_mass = _inputs((8, 6), torch.float32, False, True)
    whole = hmc_refresh(x, grad, 0.05, inv_mass=inv_mass, seed=2, stream=7, backend="triton")
    parts = [hmc_refresh(x[i:i + 4], grad[i:i + 4], 0.05, inv_mass=inv_mass, seed=2, stream=7,
                         row_ids=torch.arange(i, i + 4), backend="triton") for i in (0, 4)]
    assert torch.equal(torch.cat([q[0] for q in parts]), whole[0])
    assert torch.equal(torch.cat([q[1] for q in parts]), whole[1])


def test_refresh_momentum_has_the_mass_covariance():
    # p = sqrt(M) z: per-column variance M (n = 20000: 5 sd of a variance estimate is 5% relative)
    m = torch.tensor([0.25, 1.0, 9.0])
    x = torch.zeros(20000, 3)
    _, p = hmc_refresh(x, x, 1e-3, inv_mass=1 / m, seed=11, backend="triton")
    var = p.double().var(0)
    assert ((var / m - 1).abs() < 0.05).all(), var


BAD = [
    ("zero step", lambda x: hmc_leapfrog(x, x, x, 0.0), ValueError, "step_size must be a positive"),
    ("step shape", lambda x: hmc_leapfrog(x, x, x, torch.ones(3)), ValueError, "one per chain"),
    ("p shape", lambda x: hmc_leapfrog(x, x[:, :1], x, 0.1), ValueError, "p must have shape"),
    ("grad type", lambda x: hmc_leapfrog(x, x, "g", 0.1), TypeError, "grad must be a torch.Tensor"),
    ("mass shape", lambda x: hmc_leapfrog(x, x, x, 0.1, inv_mass=torch.ones(2)), ValueError, "event shape"),
    ("mass values", lambda x: hmc_leapfrog(x, x, x, 0.1, inv_mass=-torch.ones(3)), ValueError, "positive"),
    ("mass dtype", lambda x: hmc_leapfrog(x, x, x, 0.1, inv_mass=torch.ones(3, dtype=torch.int64)), TypeError,
     "inv_mass must be a float tensor"),
    ("final with out", lambda x: hmc_leapfrog(x, x, x, 0.1, final=True, out=x.clone()), ValueError, "final=True"),
    ("final type", lambda x: hmc_leapfrog(x, x, x, 0.1, final=1), TypeError, "final must be a bool"),
    ("out aliases p", lambda x: hmc_leapfrog(x, x.clone(), x, 0.1, out=x), ValueError, "out must not share"),
    ("no noise source", lambda x: hmc_refresh(x, x, 0.1), ValueError, "seed"),
    ("seed and noise", lambda x: hmc_refresh(x, x, 0.1, seed=0, noise=x), ValueError, "either seed"),
    ("p_out aliases x", lambda x: hmc_refresh(x, x.clone(), 0.1, seed=0, p_out=x), ValueError, "p_out must not"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call(torch.randn(2, 3))


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["refresh", "leapfrog", "final"])
def test_kernel_path_allocates_only_its_outputs(kind):
    # with a float step and a float32 mass already checked, a pass is one launch plus its outputs' allocations:
    # no casts, copies or temporaries on the host side (the refresh's momentum is float32: torch.empty)
    x, p, grad, _, inv_mass = _inputs((2, 3, 8), torch.float32, False, True)
    inv_mass = inv_mass.reshape(-1)
    calls = {
        "refresh": lambda: hmc_refresh(x, grad, 0.1, inv_mass=inv_mass, seed=1, backend="triton"),
        "leapfrog": lambda: hmc_leapfrog(x, p, grad, 0.1, inv_mass=inv_mass, backend="triton"),
        "final": lambda: hmc_leapfrog(x, p, grad, 0.1, inv_mass=inv_mass, final=True, backend="triton"),
    }
    calls[kind]()  # first call: imports, the mass's value check
    with _OpLog() as log:
        calls[kind]()
    launches = [op for op in log.ops if op.startswith("fastdiff.")]
    allocs = sorted(op for op in log.ops if not op.startswith("fastdiff."))
    assert launches == ["fastdiff.hmc_leapfrog_"], log.ops
    expected = {"refresh": ["aten.empty", "aten.empty_like"], "leapfrog": ["aten.empty_like"] * 2,
                "final": ["aten.empty_like"]}[kind]
    assert allocs == expected, log.ops
