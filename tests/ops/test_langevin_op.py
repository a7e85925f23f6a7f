"""The fused Langevin update and Metropolis select against their references."""
import math

import pytest
import torch

import fastdiff
from tolerance import assert_close_to_reference, poisoned_like

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 3), (1, 1), (5, 2, 9)], ids=str)
@pytest.mark.parametrize("per_chain", [False, True])
def test_kernel_matches_reference(dtype, shape, per_chain):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g).to(dtype)
    grad = torch.randn(shape, generator=g).to(dtype)
    step = (torch.rand(shape[0], generator=g) * 0.5 + 0.01) if per_chain else 0.05
    kw = dict(temperature=0.7, seed=4, stream=3, row_ids=torch.arange(10, 10 + shape[0]))
    out, noise_out = poisoned_like(x), torch.full(shape, float("nan"))
    res = fastdiff.langevin_step(x, grad, step, out=out, noise_out=noise_out, backend="triton", **kw)
    ref = fastdiff.langevin_step(x, grad, step, backend="reference", **kw)
    step64 = step.double() if per_chain else step
    ref64 = fastdiff.langevin_step(x.double(), grad.double(), step64, backend="reference", **kw)
    assert res is out
    assert_close_to_reference("langevin", out, ref, ref64)
    z = fastdiff.philox_normal(shape, seed=4, stream=3, row_ids=kw["row_ids"])
    torch.testing.assert_close(noise_out, z, rtol=1e-5, atol=1e-5)


def test_update_formula_with_given_noise():
    x, g, z = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    h = torch.tensor([0.1, 0.2, 0.3, 0.4])
    out = fastdiff.langevin_step(x, g, h, temperature=2.0, noise=z, backend="triton")
    expected = x + h[:, None] * g + torch.sqrt(2 * h[:, None] * 2.0) * z
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_in_place_update(backend):
    x, g = torch.randn(3, 5), torch.randn(3, 5)
    expected = fastdiff.langevin_step(x, g, 0.1, seed=1, backend=backend)
    buf = x.clone()
    fastdiff.langevin_step(buf, g, 0.1, seed=1, out=buf, backend=backend)
    torch.testing.assert_close(buf, expected, rtol=0, atol=0)


def test_inputs_not_modified():
    x, g = torch.randn(3, 5), torch.randn(3, 5)
    x0, g0 = x.clone(), g.clone()
    fastdiff.langevin_step(x, g, 0.1, seed=1, backend="triton")
    assert torch.equal(x, x0) and torch.equal(g, g0)


def test_batch_split_invariance():
    x, g = torch.randn(8, 6), torch.randn(8, 6)
    whole = fastdiff.langevin_step(x, g, 0.05, seed=2, stream=7, backend="triton")
    parts = [fastdiff.langevin_step(x[i:i + 4], g[i:i + 4], 0.05, seed=2, stream=7, row_ids=torch.arange(i, i + 4),
                                    backend="triton") for i in (0, 4)]
    assert torch.equal(torch.cat(parts), whole)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_select_picks_rows(backend):
    x, p = torch.randn(5, 3, 2), torch.randn(5, 3, 2)
    acc = torch.tensor([True, False, True, False, False])
    out = fastdiff.langevin_select(x, p, acc, backend=backend)
    assert torch.equal(out[acc], p[acc]) and torch.equal(out[~acc], x[~acc])
    buf = x.clone()
    fastdiff.langevin_select(buf, p, acc, out=buf, backend=backend)
    assert torch.equal(buf, out)


def test_ula_on_a_gaussian_has_the_discrete_stationary_variance():
    """For N(0, 1), ULA with step h is AR(1) with stationary variance 1/(1 - h/2): detects the notes' 2g*dt drift."""
    h, n = 0.2, 20000
    x = torch.randn(n, 1) * 3
    for k in range(300):
        x = fastdiff.langevin_step(x, -x, h, seed=5, stream=k)
    var = x.var().item()
    exact = 1 / (1 - h / 2)
    assert abs(var - exact) < 5 * exact * math.sqrt(2 / n)


BAD = [
    ("zero step", lambda x: fastdiff.langevin_step(x, x, 0.0, seed=0), ValueError, "step_size must be a positive"),
    ("negative per-chain step", lambda x: fastdiff.langevin_step(x, x, torch.tensor([0.1, -0.1]), seed=0),
     ValueError, "positive"),
    ("step shape", lambda x: fastdiff.langevin_step(x, x, torch.ones(3), seed=0), ValueError, "one per chain"),
    ("step type", lambda x: fastdiff.langevin_step(x, x, "0.1", seed=0), TypeError, "step_size"),
    ("grad shape", lambda x: fastdiff.langevin_step(x, x[:, :1], 0.1, seed=0), ValueError, "grad must have shape"),
    ("no noise source", lambda x: fastdiff.langevin_step(x, x, 0.1), ValueError, "seed"),
    ("temperature", lambda x: fastdiff.langevin_step(x, x, 0.1, seed=0, temperature=0), ValueError, "temperature"),
    ("accept dtype", lambda x: fastdiff.langevin_select(x, x, torch.ones(2)), ValueError, "bool"),
    ("infinite step", lambda x: fastdiff.langevin_step(x, x, float("inf"), seed=0), ValueError, "finite"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call(torch.randn(2, 3))
