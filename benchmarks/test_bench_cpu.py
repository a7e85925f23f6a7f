"""CPU benchmark suite (pytest-benchmark): fused ops vs eager PyTorch at 1x4x8x8 and 16x4x64x64.

Run with ``pytest benchmarks/ --benchmark-only`` (not part of the default ``pytest``
run, whose testpaths are ``tests/``). On CPU the fused op runs its PyTorch path,
so expect modest ratios; in-kernel-noise cases pay for a PyTorch Philox there.

* ``test_op`` -- one pytest-benchmark entry per (op, size, provider), grouped by (op, size);
* ``test_interleaved`` -- fastdiff / eager (/ diffusers) timed interleaved in one process; the
  ratios land in the JSON's ``extra_info`` and are printed (``-s``);
* ``test_dropin_goal`` -- the drop-in schedulers' goal (>= 3x diffusers at 1x4x8x8, >= 5x at
  16x4x64x64, geometric mean) over DDIM, Euler, DPM++ 2M and FlowMatch Euler. It also times
  the case's one-pass floor (``bench.floor_call``: a copy under the same input rotation, scaled to the
  case's bytes) and reports ``ceiling = diffusers time / floor``: the most any implementation could
  show in that run. A goal above the ceiling cannot be met by a faster kernel, only by a faster memory.

``FASTDIFF_BENCH_THREADS`` sets torch's thread count (default 1: stable numbers on a shared
2-core machine; the sizes here are per-call-overhead and cache-resident sizes).
"""
import math
import os

import pytest
import torch

from fastdiff import bench

torch.set_num_threads(int(os.environ.get("FASTDIFF_BENCH_THREADS", "1")))

SIZES = ["1x4x8x8", "16x4x64x64"]
CPU = torch.device("cpu")
CORE = [name for name, c in bench.CASES.items() if c.group != "dropin"]
DROPIN = [name for name, c in bench.CASES.items() if c.group == "dropin"]
#: the goal's four schedulers (the other drop-in rows are timed, not part of the goal's geometric mean)
GOAL_DROPIN = ("dropin_ddim", "dropin_euler", "dropin_dpmpp2m", "dropin_flow_euler")
DROPIN_GOALS = {"1x4x8x8": 3.0, "16x4x64x64": 5.0}


def _has_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401
    except Exception:
        return False
    return True


def _spec(size: str, dtype=torch.float32) -> bench.Spec:
    return bench.Spec(bench.parse_size(size), dtype, CPU)


def _call(op: str, prov: str, size: str):
    try:
        return bench.build_call(op, prov, _spec(size))
    except bench.Unavailable as exc:
        pytest.skip(str(exc))


# fused vs eager for the core ops; drop-in schedulers vs diffusers (their baseline).
PAIRS = [(op, p) for op in CORE for p in ("fastdiff", "eager")] + \
        [(op, p) for op in DROPIN for p in ("fastdiff", "diffusers")]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op, prov", PAIRS)
def test_op(benchmark, op, prov, size):
    call = _call(op, prov, size)
    benchmark.group = f"{op} {size}"
    benchmark.extra_info.update(bytes=bench.CASES[op].bytes_moved(math.prod(bench.parse_size(size)), torch.float32))
    out = benchmark(call)
    assert all(torch.isfinite(t).all() for t in bench.registry.as_tuple(out))


def _interleaved(op: str, size: str) -> dict:
    calls = {}
    if bench.CASES[op].group == "dropin" and not _has_diffusers():
        pytest.skip("diffusers is not importable: no baseline for a drop-in scheduler")
    for prov in ("fastdiff", "eager", "diffusers"):
        if prov in bench.providers_for(op):
            try:
                calls[prov] = bench.build_call(op, prov, _spec(size))
            except bench.Unavailable:
                pass
    calls["copy"], scale = bench.floor_call(op, _spec(size))
    res = bench.time_interleaved(calls, rounds=9, target_s=0.02)
    out = {f"{p}_us": r["median"] * 1e6 for p, r in res.items() if p != "copy"}
    out["floor_us"] = res["copy"]["median"] * scale * 1e6
    for base in ("eager", "diffusers"):
        if base in res:
            out[f"fastdiff_vs_{base}"] = res[base]["median"] / res["fastdiff"]["median"]
            out[f"ceiling_vs_{base}"] = out[f"{base}_us"] / out["floor_us"]
    return out


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", CORE + DROPIN)
def test_interleaved(benchmark, op, size):
    benchmark.group = "interleaved ratios"
    info = benchmark.pedantic(_interleaved, args=(op, size), rounds=1, iterations=1)
    benchmark.extra_info.update(info)
    print(f"\n{op:18s} {size:11s} " + "  ".join(f"{k}={v:.3g}" for k, v in info.items()))
    assert info["fastdiff_us"] > 0 and len(info) >= 3, info  # fastdiff and at least one baseline timed


@pytest.mark.parametrize("size", SIZES)
def test_dropin_goal(benchmark, size):
    if not _has_diffusers():
        pytest.skip("diffusers is not importable: no baseline")

    def measure():
        return {op: _interleaved(op, size) for op in GOAL_DROPIN}

    info = benchmark.pedantic(measure, rounds=1, iterations=1)
    ratios = {op: round(i["fastdiff_vs_diffusers"], 2) for op, i in info.items()}
    ceilings = {op: round(i["ceiling_vs_diffusers"], 2) for op, i in info.items()}
    geo = bench.geomean(ratios.values())
    ceiling = bench.geomean(ceilings.values())
    benchmark.extra_info.update(ratios=ratios, geomean=geo, ceilings=ceilings, ceiling_geomean=ceiling)
    print(f"\ndrop-in {size}: geomean {geo:.2f}x diffusers {ratios}; one-pass ceiling {ceiling:.2f}x {ceilings}")
    assert geo >= DROPIN_GOALS[size], (
        f"drop-in step geomean {geo:.2f}x diffusers at {size} (goal {DROPIN_GOALS[size]}x): {ratios}; "
        f"a one-pass kernel at copy speed would reach at most {ceiling:.2f}x: {ceilings}")
