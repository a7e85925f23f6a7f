"""The runner: build every (case, size, dtype, provider), check it against the case's reference, time it.

Timing: on CUDA ``triton.testing.do_bench`` medians; on CPU medians of repeats, all providers of a case
interleaved in one process so drift hits them alike, each call rotating over input sets that cover twice
the last-level cache where memory allows. Each case also times a clone of its first input over the same sets
(interleaved with its providers on CPU): a row's "% copy" is its bandwidth over that copy's, so an op and its
copy see the same cache conditions (:func:`floor_call` builds such a copy for the goal tests).
"""
from __future__ import annotations

import datetime
import functools
import importlib
import os
import platform
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from .registry import CASES, PROVIDERS, Case, Spec, Unavailable, as_tuple, build_provider, providers_for, registered
from .report import Report, Row, fill_speedups
from .sizes import DTYPE_NAMES, default_sizes, parse_dtype, parse_size, shape_str
from .timing import measure_copy_bandwidth, peak_extra, rotating, rotation_sets, sync, time_cuda, time_interleaved

__all__ = ["run_suite", "build_call", "floor_call"]

_COPY = "\0copy"  # the key of a case's copy among its timed calls (no provider can be named so)


def _versions() -> Dict[str, str]:
    v = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("triton", "diffusers"):
        try:
            v[mod] = importlib.import_module(mod).__version__
        except Exception:
            v[mod] = "not installed"
    try:
        from .. import __version__ as fd_version

        v["fastdiff"] = fd_version
    except Exception:  # pragma: no cover
        pass
    return v


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def _compare(ref: Tuple[torch.Tensor, ...], got: Tuple[torch.Tensor, ...]) -> float:
    """Largest error over the outputs both produce, relative to each reference's max magnitude."""
    err = 0.0
    for r, g in zip(ref, got):
        r32, g32 = r.detach().float(), g.detach().float()
        if r32.shape != g32.shape:
            return float("inf")
        scale = float(r32.abs().max()) if r32.numel() else 1.0
        err = max(err, float((r32 - g32).abs().max()) / max(scale, 1e-12) if r32.numel() else 0.0)
    return err


def _tolerance(dtype: torch.dtype) -> float:
    # Relative to the output's max magnitude. Half-precision eager expressions round after every op
    # (CFG's 7.5*(c - u) amplifies that); the fused path computes in fp32 and rounds once.
    return 1e-4 if dtype == torch.float32 else 5e-2


def build_call(case: str, provider_name: str, spec: Spec, *, n_sets: Optional[int] = None,
               seed: int = 1234) -> Callable[[], Any]:
    """A ready-to-time no-argument callable: ``provider_name``'s fn over rotating input sets of ``case``.

    Raises :class:`Unavailable` when the provider cannot run here. Example:
        >>> call = build_call("step_ddim", "eager", Spec((1, 4, 8, 8), torch.float32, torch.device("cpu")))
        >>> call()[0].shape
        torch.Size([1, 4, 8, 8])
    """
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; known: {sorted(CASES)}")
    if provider_name not in providers_for(case):
        raise Unavailable(f"{provider_name} has no implementation of {case}")
    c = CASES[case]
    gen = torch.Generator(device=spec.device if spec.device.type == "cuda" else "cpu").manual_seed(seed)
    n = n_sets if n_sets is not None else rotation_sets(c.input_bytes(spec), spec.device)
    sets = [c.make_inputs(spec, gen) for _ in range(n)]
    fn = build_provider(c, provider_name, spec)
    _prepare(fn, sets)
    fn(sets[0])
    return rotating(fn, sets)


def _prepare(fn: Callable, sets: List[Dict[str, torch.Tensor]]) -> None:
    """Untimed per-input-set set-up of a provider that keeps state per set (``fn.prepare(sets)``, optional)."""
    prepare = getattr(fn, "prepare", None)
    if prepare is not None:
        prepare(sets)


def floor_call(case: str, spec: Spec, *, n_sets: Optional[int] = None) -> Tuple[Callable[[], Any], float]:
    """The one-pass floor of ``case``, measurable beside its providers: a rotating ``clone`` and a scale.

    Returns ``(call, scale)``: ``call`` clones one sample-sized tensor, rotating over as many sets (hence the
    same cache residency) as :func:`build_call` uses for ``case``; ``scale`` (the case's bytes over the two
    tensor-sizes a clone moves) turns its time into the time of a single pass that reads each input once
    and writes each output once at copy speed. ``baseline time / (clone time * scale)`` is the largest
    speedup over that baseline that any implementation of ``case`` could show in the same run. Example:
        >>> call, scale = floor_call("step_ddim", Spec((1, 4, 8, 8), torch.float32, torch.device("cpu")))
        >>> scale, call().shape
        (1.5, torch.Size([1, 4, 8, 8]))
    """
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; known: {sorted(CASES)}")
    c = CASES[case]
    n = n_sets if n_sets is not None else rotation_sets(c.input_bytes(spec), spec.device)
    per_set = sum(c.inputs.values())  # as many sample-sized tensors resident per set as the case reads
    sets = [{"x": torch.randn(per_set * spec.numel, device=spec.device).to(spec.dtype)} for _ in range(n)]
    scale = c.bytes_moved(spec.numel, spec.dtype) / (2 * spec.numel * spec.dtype.itemsize)
    return rotating(lambda s: s["x"][: spec.numel].clone().view(spec.shape), sets), scale


def run_suite(
    *,
    device: Union[str, torch.device, None] = None,
    sizes: Optional[Iterable[Union[str, int, Sequence[int]]]] = None,
    dtypes: Optional[Iterable[Union[str, torch.dtype]]] = None,
    providers: Optional[Iterable[str]] = None,
    ops: Optional[Iterable[str]] = None,
    groups: Optional[Iterable[str]] = None,
    quick: bool = False,
    deadline: Optional[float] = None,
    log: Optional[Callable[[str], None]] = None,
    copy_bandwidth: Optional[Dict[str, float]] = None,
) -> Report:
    """Time every (case, size, dtype, provider) and return a :class:`Report`.

    Args:
        device: "cpu" or "cuda" (default: cuda when available).
        sizes: shapes/counts for :func:`parse_size` (default :func:`default_sizes`).
        dtypes: names like "fp32", "bf16", "fp16" (default fp32 and bf16; fp32 with ``quick``).
        providers: subset of PROVIDERS (default all; ``quick`` leaves out compile).
        ops, groups: restrict to these case names / groups.
        quick: short timing and small defaults.
        deadline: ``time.monotonic()`` value after which remaining rows are skipped.
        log: called with a progress line per case.
        copy_bandwidth: a prior :func:`measure_copy_bandwidth` result (else measured here).

    Example:
        >>> rep = run_suite(device="cpu", sizes=["1x4x8x8"], dtypes=["fp32"], providers=["fastdiff", "eager"],
        ...                 ops=["langevin"], quick=True)
        >>> [r.provider for r in rep.rows]
        ['fastdiff', 'eager']
    """
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {dev}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    shapes = [parse_size(s) for s in (sizes if sizes is not None else default_sizes(dev, quick))]
    dts = [parse_dtype(d) for d in (dtypes if dtypes is not None else (["fp32"] if quick else ["fp32", "bf16"]))]
    if providers is None:
        wanted = [p for p in PROVIDERS if not (quick and p == "compile")]
    else:
        wanted = list(providers)
        bad = [p for p in wanted if p not in PROVIDERS]
        if bad:
            raise ValueError(f"providers must be among {PROVIDERS}, got {bad}")
    if ops is not None:
        ops = list(ops)
        unknown = [o for o in ops if o not in CASES]
        if unknown:
            raise ValueError(f"unknown ops {unknown}; known: {sorted(CASES)}")
    cases = [c for c in CASES.values() if (ops is None or c.name in ops)
             and (groups is None or c.group in set(groups))]
    peak = copy_bandwidth or measure_copy_bandwidth(dev, quick=quick)
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": dev.type, "device_name": _device_name(dev), "versions": _versions(),
        "copy_gbps": peak["gbps"], "copy_bytes": peak["bytes"], "copy_method": peak.get("method", ""),
        "quick": quick,
        "timer": "triton.testing.do_bench median" if dev.type == "cuda" else "interleaved median of repeats",
        "cpu_threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cases": {c.name: {"description": c.description, "op": c.op, "group": c.group, "bytes": c.formula()}
                  for c in cases},
    }
    rows: List[Row] = []
    gen_device = dev if dev.type == "cuda" else "cpu"
    for shape in shapes:
        for dt in dts:
            spec = Spec(shape, dt, dev)
            for case in cases:
                names = [p for p in providers_for(case.name) if p in wanted]
                if not names:
                    continue
                base = dict(op=case.name, group=case.group, shape=shape_str(shape), numel=spec.numel,
                            dtype=DTYPE_NAMES[dt], bytes=case.bytes_moved(spec.numel, dt))
                case_rows = {n: Row(provider=n, **base) for n in names}
                rows.extend(case_rows.values())
                if deadline is not None and time.monotonic() > deadline:
                    for r in case_rows.values():
                        r.status = "skipped: time budget"
                    continue
                if log:
                    log(f"{case.name} {base['shape']} {base['dtype']}: {', '.join(names)}")
                _run_case(case, spec, case_rows, gen_device, quick)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    for r in rows:
        if r.ok:
            r.gbps = r.bytes / (r.time_ms * 1e-3) / 1e9
            # against the copy timed with the case (same input sets, same rotation); the headline copy when the
            # case had none (a copy that failed to time)
            r.pct_copy = 100.0 * r.gbps / (r.copy_gbps or peak["gbps"])
    fill_speedups(rows)
    return Report(meta, rows)


def _run_case(case: Case, spec: Spec, rows: Dict[str, Row], gen_device: Union[str, torch.device],
              quick: bool) -> None:
    gen = torch.Generator(device=gen_device).manual_seed(1234)
    sets = [case.make_inputs(spec, gen) for _ in range(rotation_sets(case.input_bytes(spec), spec.device))]
    fns: Dict[str, Callable] = {}
    for name, row in rows.items():
        try:
            fns[name] = build_provider(case, name, spec)
        except Unavailable as exc:
            row.status = f"skipped: {exc}"
        except Exception as exc:  # a broken provider is reported, the run goes on
            row.status = f"error: {type(exc).__name__}: {exc}"[:200]
    # Warm up (compiles) and check providers against the reference run in float32 on the first input set.
    ref = None
    if case.check and registered(case.name, case.reference):
        try:
            ref_fn = build_provider(case, case.reference, Spec(spec.shape, torch.float32, spec.device))
            ref = as_tuple(ref_fn({k: (v.float() if v.is_floating_point() else v) for k, v in sets[0].items()}))
        except Exception:  # the reference's own row reports its error below
            ref = None
    for name in list(fns):
        try:
            _prepare(fns[name], sets)
            out = as_tuple(fns[name](sets[0]))
            out = as_tuple(fns[name](sets[0]))  # torch.compile: the second call runs the compiled code
        except Exception as exc:
            rows[name].status = f"error: {type(exc).__name__}: {exc}"[:200]
            fns.pop(name)
            continue
        if ref is not None and (name in case.check or name == case.reference):
            err = _compare(ref, out)
            rows[name].max_rel_err = err
            # In half precision only the fused op is held to the tolerance: the baselines round after every
            # op in the storage dtype (CFG's 7.5*(c - u) amplifies that); their error is recorded, not judged.
            judged = spec.dtype == torch.float32 or name == "fastdiff"
            if judged and not err <= _tolerance(spec.dtype):
                rows[name].status = f"mismatch vs fp32 {case.reference} (max rel err {err:.2e})"
    sync(spec.device)
    calls = {name: rotating(fn, sets) for name, fn in fns.items()}
    if calls:
        # the case's copy: a clone of its first (sample-sized) input over the very sets the providers rotate
        # through, timed with them, so "% copy" compares the op with a copy under the same cache conditions
        first = next(iter(case.inputs))
        calls[_COPY] = rotating(lambda s: s[first].reshape(-1)[: spec.numel].clone(), sets)
    copy_s = None
    if spec.device.type == "cuda":
        for name, call in calls.items():
            if name != _COPY:
                rows[name].peak_extra_bytes = peak_extra(functools.partial(fns[name], sets[0]), spec.device)
            try:
                sec = time_cuda(call, quick=quick) * 1e-3
            except Exception as exc:
                if name != _COPY:
                    rows[name].status = f"error: {type(exc).__name__}: {exc}"[:200]
                continue
            if name == _COPY:
                copy_s = sec
            else:
                rows[name].time_ms = sec * 1e3
    elif calls:
        res = time_interleaved(calls, rounds=5 if quick else 9, target_s=0.004 if quick else 0.02)
        copy_s = res.pop(_COPY)["median"]
        for name, r in res.items():
            rows[name].time_ms = r["median"] * 1e3
            rows[name].iqr_ms = r["iqr"] * 1e3
    if copy_s:
        copy_gbps = 2 * spec.numel * spec.dtype.itemsize / copy_s / 1e9
        for row in rows.values():
            row.copy_gbps = copy_gbps
    del sets
