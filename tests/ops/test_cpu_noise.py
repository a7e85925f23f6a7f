"""The CPU noise paths (compiled numba loop, numpy fallback) draw the kernels' Philox numbers bit for bit.

Each test compares integer bit patterns (``view(int32)``), so one differing rounding anywhere (a contracted
multiply-add, a different ``log``, a wrong quadrant, a word from the wrong counter) fails it. The kernel side is
the Triton interpreter run (``backend="triton"`` under ``TRITON_INTERPRET=1``), the CPU side ``backend="torch"``.
"""
import pytest
import torch

import fastdiff
from fastdiff import random as fd_random
from fastdiff import random_jit
from fastdiff.ops.step import fused_step, step_coefs

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
needs_numba = pytest.mark.skipif(not random_jit.available(), reason="numba is not importable: no compiled path")


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit pattern of a float tensor (NaN-safe, -0.0 distinct from 0.0)."""
    t = t.contiguous()
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(view)


@pytest.fixture
def numpy_only(monkeypatch):
    """philox_normal with the compiled loop switched off (the fallback a machine without numba takes)."""
    monkeypatch.setattr(fd_random, "normals_jit", lambda *args, **kw: None)


@needs_numba
@pytest.mark.parametrize("rows, groups", [(1, 1), (3, 7), (2, 1000), (5, 333)])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_words_equal_the_numpy_twin(monkeypatch, rows, groups, threads):
    # small chunks and thread threshold: chunk and thread boundaries fall inside rows and mid-chunk
    monkeypatch.setattr(random_jit, "CHUNK_GROUPS", 64)
    monkeypatch.setattr(random_jit, "_THREAD_MIN_GROUPS", 128)
    row_ids = torch.tensor([0, 2**32 - 1, 2**32 + 5, 2**62 + 3, 17][:rows], dtype=torch.int64)
    for seed, stream in ((0, 0), (2**63 - 1, 2**32 - 1), (12345678901234, 77)):
        k0, k1 = fd_random.split_seed(seed)
        want = fd_random._normals_numpy(rows, groups, row_ids, stream, k0, k1).reshape(rows, groups, 4)
        got = fastdiff.random_jit.normals_jit(rows, groups, row_ids, stream, k0, k1, threads=threads)
        assert torch.equal(bits(got), bits(want)), (rows, groups, seed, stream)


def _langevin_noise(shape, dtype, backend, row_ids):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    # float32 noise_out for every storage dtype: the draw itself, before any rounding to x's dtype (the
    # interpreter stores bfloat16 by truncation, not rounding to nearest, so a bfloat16 store would differ)
    noise_out = torch.full(shape, float("nan"))  # poisoned: every element must be written
    fastdiff.langevin_step(x, -x, 0.01, seed=2**40 + 9, stream=3, row_ids=row_ids, noise_out=noise_out,
                           backend=backend)
    return noise_out


@pytest.mark.parametrize("path", ["compiled", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 5), (4, 3, 8)], ids=str)  # per-element, odd, grouped
@pytest.mark.parametrize("with_rows", [False, True], ids=["arange", "row_ids"])
def test_langevin_cpu_noise_equals_the_kernel(request, path, dtype, shape, with_rows):
    if path == "compiled" and not random_jit.available():
        pytest.skip("numba is not importable: no compiled path")
    if path == "numpy":
        request.getfixturevalue("numpy_only")
    ids = torch.arange(shape[0]) * 3 + 2**33 if with_rows else None
    cpu = _langevin_noise(shape, dtype, "torch", ids)
    # the kernels take float16/bfloat16/float32 storage: float64's draw is compared with float32 storage's
    kernel = _langevin_noise(shape, torch.float32 if dtype is torch.float64 else dtype, "triton", ids)
    assert torch.equal(bits(cpu), bits(kernel))


# float16 and float32 stores round to nearest in the interpreter too (bfloat16 is covered above)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 6)], ids=str)  # per-element and grouped-by-4 kernel noise
def test_step_and_encode_cpu_noise_equal_the_kernel(dtype, shape):
    ids = torch.tensor([5, 2**32 + 1, 9][: shape[0]])
    zeros = torch.zeros(shape, dtype=dtype)
    step = [fused_step(zeros, zeros, step_coefs(out_noise=1.0), seed=11, stream=4, row_ids=ids, backend=b)
            for b in ("torch", "triton")]
    assert torch.equal(bits(step[0]), bits(step[1]))
    sched = fastdiff.DiscreteVPSchedule()
    t = torch.full((shape[0],), 500)
    enc = [fastdiff.add_noise_with_target(zeros, t, sched, seed=11, stream=4, row_ids=ids, target="v_prediction",
                                          return_noise=True, backend=b)[2] for b in ("torch", "triton")]
    assert torch.equal(bits(enc[0]), bits(enc[1]))


@needs_numba
def test_compiled_path_is_the_one_taken_and_leaves_torch_rng_alone(monkeypatch):
    calls = []
    real = fd_random.normals_jit
    monkeypatch.setattr(fd_random, "normals_jit", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    state = torch.get_rng_state()
    z = fastdiff.philox_normal((2, 9), seed=3)
    assert calls and z.shape == (2, 9) and torch.equal(torch.get_rng_state(), state)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv(random_jit.DISABLE_ENV, "1")
    monkeypatch.setattr(random_jit, "_state", {})
    assert not random_jit.available()
    assert random_jit.normals_jit(1, 1, torch.zeros(1, dtype=torch.int64), 0, 0, 0) is None


@needs_numba
def test_threaded_draw_works_in_a_forked_child(monkeypatch):
    """A forked child (a DataLoader worker) inherits the parent's pool object but none of its threads: the draw
    must make its own pool there instead of waiting forever on threads that do not exist."""
    import multiprocessing as mp

    monkeypatch.setattr(random_jit, "_THREAD_MIN_GROUPS", 128)
    monkeypatch.setattr(random_jit, "CHUNK_GROUPS", 64)
    ids = torch.arange(3)
    want = random_jit.normals_jit(3, 200, ids, 1, 2, 3, threads=2)  # creates the pool in this process
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(random_jit.normals_jit, (3, 200, ids, 1, 2, 3), {"threads": 2}).get(timeout=60)
    assert torch.equal(bits(got), bits(want))
