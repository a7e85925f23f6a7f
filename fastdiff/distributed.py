"""Large-batch sampling over many GPUs and machines on ``torch.distributed``, resumable and world-size invariant.

Every sample (or Langevin chain) has a global row id ``0 .. num_samples-1``. Its
starting noise and every later noise draw are Philox numbers keyed by
``(seed, row id, stream)``, so a row's result depends only on ``(seed, row id)``:
the same rows come out whatever the number of ranks or the per-rank batch size.
Ranks take contiguous shares of the rows (uneven shares allowed) and work through
them in micro-batches of ``batch_size`` rows. The result is either gathered to
every rank (a ``(num_samples, *sample_shape)`` tensor) or, with ``out_dir``,
written as shard files (one per micro-batch, named by row range, written to a
temporary file and renamed into place) next to a ``manifest.json`` holding the
run's configuration. A restarted run checks the manifest (a different
configuration is refused), keeps the shards already on disk and computes only
the missing rows, so no row is lost or duplicated.

Launch with ``torchrun`` and call :func:`init_distributed` first (NCCL on GPUs,
gloo on CPU); without an initialised process group everything runs as world
size 1. Ranks stay in step: after each micro-batch they exchange a small status
message, so a rank that raises stops every rank at once, and a rank that dies or
hangs is noticed within ``timeout`` seconds; by default (``on_error="abort"``)
every rank then logs the cause and exits with status 1 instead of hanging.

Example (``torchrun --nproc_per_node=8 gen.py``)::

    import fastdiff, fastdiff.distributed as fdist
    fdist.init_distributed()
    gmm = fastdiff.toy.GaussianMixture.ring(k=8)
    sigmas = fastdiff.karras_sigmas(32, 0.002, 80.0)
    paths = fdist.sample(gmm.denoiser, (2,), sigmas, num_samples=50_000, seed=0,
                         batch_size=4096, out_dir="samples/")
    x = fdist.load_shards("samples/")          # (50000, 2), identical for any world size
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import sys
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

__all__ = ["sample", "langevin", "load_shards", "init_distributed", "row_shares", "DistributedRunError",
           "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.json"
_FORMAT = "fastdiff-distributed-v1"
_SHARD_RE = re.compile(r"^shard-(\d{12})-(\d{12})\.pt$")
_Timeout = Union[float, int, datetime.timedelta, None]
_Device = Union[str, torch.device, None]


class DistributedRunError(RuntimeError):
    """Raised on every rank (with ``on_error="raise"``) when some rank failed during a distributed run."""


# ----------------------------------------------------------------------------------------------------------
# process group helpers


def init_distributed(backend: Optional[str] = None, timeout: _Timeout = None) -> Tuple[int, int]:
    """Initialise the default process group from ``torchrun``'s environment; return ``(rank, world_size)``.

    ``backend`` defaults to NCCL when CUDA is available (each rank then uses GPU
    ``LOCAL_RANK``) and gloo otherwise. Without ``torchrun`` variables (no
    ``WORLD_SIZE``) nothing is initialised and ``(0, 1)`` is returned. Calling it
    again once the group exists returns the current rank and size.

    Example:
        >>> rank, world = fastdiff.distributed.init_distributed()
    """
    if not dist.is_available():
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "nccl" in backend and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    kwargs: Dict[str, Any] = {"backend": backend}
    td = _as_timedelta(timeout)
    if td is not None:
        kwargs["timeout"] = td
    dist.init_process_group(**kwargs)
    return dist.get_rank(), dist.get_world_size()


def _as_timedelta(timeout: _Timeout) -> Optional[datetime.timedelta]:
    if timeout is None or isinstance(timeout, datetime.timedelta):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, a timedelta or None, got {timeout!r}")
    return datetime.timedelta(seconds=float(timeout))


def row_shares(num_rows: int, world_size: int) -> List[Tuple[int, int]]:
    """Contiguous ``[start, end)`` shares of ``num_rows`` rows for each rank; sizes differ by at most one.

    Example:
        >>> row_shares(10, 3)
        [(0, 3), (3, 6), (6, 10)]
    """
    return [(num_rows * r // world_size, num_rows * (r + 1) // world_size) for r in range(world_size)]


class _Comm:
    """Rank, world size and the groups a run talks on (none at world size 1)."""

    def __init__(self, timeout: _Timeout, device: torch.device):
        td = _as_timedelta(timeout)
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        self.ctrl = None
        self.data = None
        self._own_group = False
        if not self.active:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
                warnings.warn("WORLD_SIZE > 1 but no process group is initialised: every process runs the whole job "
                              "as world size 1; call fastdiff.distributed.init_distributed() first", stacklevel=3)
            return
        backend = str(dist.get_backend()).lower()
        if backend == "gloo" and td is None:
            self.ctrl = dist.group.WORLD
        else:
            # The small status messages travel on a gloo group with the run's own timeout, so a dead or hung
            # rank is noticed after ``timeout`` whatever the default group's backend and timeout are.
            self.ctrl = dist.new_group(backend="gloo", timeout=td)
            self._own_group = True
        self.data = dist.group.WORLD if ("nccl" in backend and device.type == "cuda") else self.ctrl
        self.data_device = device if self.data is not self.ctrl else torch.device("cpu")

    def close(self) -> None:
        if self._own_group and self.ctrl is not None:
            try:
                dist.destroy_process_group(self.ctrl)
            except Exception:  # pragma: no cover - best effort on the way out
                pass
            self.ctrl = None

    def broadcast_obj(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.ctrl)
        return box[0]

    def all_gather_obj(self, obj: Any) -> List[Any]:
        if not self.active:
            return [obj]
        out: List[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.ctrl)
        return out

    def all_sum(self, values: List[int]) -> List[int]:
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.ctrl)
        return t.tolist()


# ----------------------------------------------------------------------------------------------------------
# configuration fingerprints (the manifest)


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _canon(v: Any) -> Any:
    """A JSON-able, address-free description of an option value (tensors by content hash, callables by name)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, torch.Tensor):
        return {"tensor_sha256": _tensor_digest(v), "shape": list(v.shape), "dtype": str(v.dtype)}
    if isinstance(v, (torch.dtype, torch.device)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_canon(u) for u in v]
    if isinstance(v, dict):
        return {str(k): _canon(u) for k, u in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if callable(v):
        mod = getattr(v, "__module__", None) or type(v).__module__
        name = getattr(v, "__qualname__", None) or type(v).__qualname__
        return {"callable": f"{mod}.{name}"}
    return {"object": f"{type(v).__module__}.{type(v).__qualname__}"}


def _digest(config: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _library_version() -> str:
    pkg = sys.modules.get(__package__ or "fastdiff")
    return str(getattr(pkg, "__version__", "unknown"))


def _describe_diff(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    lines = [f"  {k}: {old.get(k, '<missing>')!r} on disk, {new.get(k, '<missing>')!r} now"
             for k in keys if old.get(k) != new.get(k)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# shard files


def _shard_name(start: int, end: int) -> str:
    return f"shard-{start:012d}-{end:012d}.pt"


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Write through ``write(file)`` into a temporary file in the same directory, fsync, then rename."""
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # make the rename itself durable; not every file system allows fsync on a directory
        fd = os.open(d or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _read_manifest(out_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(out_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable fastdiff manifest ({err}); use a new out_dir") from None
    if not isinstance(m, dict) or m.get("format") != _FORMAT or not isinstance(m.get("config"), dict):
        raise ValueError(f"{path} is not a {_FORMAT} manifest; use a new out_dir")
    return m


def _load_shard(path: str, start: int, end: int, config: Dict[str, Any], digest: str,
                mmap: bool) -> torch.Tensor:
    """Load one shard and check that it is what its name and the manifest promise."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise ValueError(f"shard {path} cannot be read ({err}); delete it and rerun to recompute its rows") from None
    shape = (end - start, *config["sample_shape"])
    ok = (isinstance(obj, dict) and obj.get("format") == _FORMAT and obj.get("start") == start
          and obj.get("end") == end and obj.get("config_sha256") == digest
          and isinstance(obj.get("samples"), torch.Tensor))
    samples = obj.get("samples") if isinstance(obj, dict) else None
    if not ok or tuple(samples.shape) != shape or str(samples.dtype) != config["dtype"]:
        got = (tuple(samples.shape), str(samples.dtype)) if isinstance(samples, torch.Tensor) else type(obj).__name__
        raise ValueError(f"shard {path} does not match its name and the manifest (expected rows [{start}, {end}), "
                         f"shape {shape}, dtype {config['dtype']}; got {got}); delete it and rerun to recompute "
                         "its rows")
    return samples


def _scan_shards(out_dir: str, config: Dict[str, Any], digest: str) -> List[Tuple[int, int]]:
    """Verified ``(start, end)`` row ranges on disk, sorted; overlapping shards are refused."""
    n = config["num_samples"]
    ranges = []
    for name in os.listdir(out_dir):
        m = _SHARD_RE.match(name)
        if m is None:
            continue
        start, end = int(m.group(1)), int(m.group(2))
        if not 0 <= start < end <= n:
            raise ValueError(f"shard {name} in {out_dir} covers rows [{start}, {end}) outside [0, {n})")
        _load_shard(os.path.join(out_dir, name), start, end, config, digest, mmap=True)
        ranges.append((start, end))
    ranges.sort()
    for (s0, e0), (s1, e1) in zip(ranges, ranges[1:]):
        if s1 < e0:
            raise ValueError(f"shards {_shard_name(s0, e0)} and {_shard_name(s1, e1)} in {out_dir} overlap; "
                             "were two runs writing into the same out_dir at once?")
    return ranges


def _prepare_out_dir(out_dir: str, config: Dict[str, Any], info: Dict[str, Any]) -> List[Tuple[int, int]]:
    """Rank 0: check or write the manifest, clear stale temporary files, list the shards already done."""
    os.makedirs(out_dir, exist_ok=True)
    old = _read_manifest(out_dir)
    if old is None:
        if any(_SHARD_RE.match(f) for f in os.listdir(out_dir)):
            raise ValueError(f"{out_dir} holds shard files but no {MANIFEST_NAME}; use a new out_dir")
        manifest = {"format": _FORMAT, "config": config, "config_sha256": _digest(config), "info": info}
        _atomic_write(os.path.join(out_dir, MANIFEST_NAME),
                      lambda f: f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()))
    elif old["config"] != config:
        raise ValueError(f"{out_dir} holds a run with a different configuration, refusing to mix them:\n"
                         f"{_describe_diff(old['config'], config)}\n"
                         "Restart with the original settings or use a new out_dir.")
    for f in os.listdir(out_dir):
        if f.startswith(".shard-") and ".pt.tmp." in f:  # left by a killed writer; never renamed into place
            try:
                os.remove(os.path.join(out_dir, f))
            except OSError:
                pass
    return _scan_shards(out_dir, config, _digest(config))


def load_shards(out_dir: str, *, device: _Device = None) -> torch.Tensor:
    """Assemble the shards of a finished ``out_dir`` run into one ``(num_samples, *sample_shape)`` tensor.

    Every shard is checked against its name and the manifest; a missing row range
    or overlapping shards raise ValueError.

    Example:
        >>> x = fastdiff.distributed.load_shards("samples/")
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__}")
    out_dir = os.fspath(out_dir)
    m = _read_manifest(out_dir)
    if m is None:
        raise ValueError(f"{out_dir} has no {MANIFEST_NAME}; is it the out_dir of a fastdiff.distributed run?")
    config, digest = m["config"], _digest(m["config"])
    ranges = _scan_shards(out_dir, config, digest)
    n = config["num_samples"]
    gaps, pos = [], 0
    for s, e in ranges:
        if s > pos:
            gaps.append((pos, s))
        pos = e
    if pos < n:
        gaps.append((pos, n))
    if gaps:
        raise ValueError(f"{out_dir} is incomplete: rows {gaps} are missing; rerun the job to fill them")
    out = torch.empty((n, *config["sample_shape"]), dtype=getattr(torch, config["dtype"].split(".")[-1]))
    for s, e in ranges:
        out[s:e] = _load_shard(os.path.join(out_dir, _shard_name(s, e)), s, e, config, digest, mmap=True)
    return out if device is None else out.to(device)


# ----------------------------------------------------------------------------------------------------------
# the engine shared by sample() and langevin()


def _missing(n: int, done: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out, pos = [], 0
    for s, e in done:
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < n:
        out.append((pos, n))
    return out


def _plan(todo: List[Tuple[int, int]], world: int, batch_size: Optional[int]) -> List[List[Tuple[int, int]]]:
    """Split the rows still to do into contiguous per-rank shares, then into micro-batches of <= batch_size."""
    total = sum(e - s for s, e in todo)
    plans: List[List[Tuple[int, int]]] = []
    for lo, hi in row_shares(total, world):  # positions in the flattened list of missing rows
        chunks, pos = [], 0
        for s, e in todo:
            a, b = max(s, s + lo - pos), min(e, s + hi - pos)
            pos += e - s
            while a < b:
                step = b - a if batch_size is None else min(batch_size, b - a)
                chunks.append((a, a + step))
                a += step
        plans.append(chunks)
    return plans


def _check_int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


def _check_common(sample_shape: Any, num: int, num_name: str, seed: Any, batch_size: Any, dtype: Any,
                  on_error: str, callback: Any, progress: Any) -> Tuple[int, ...]:
    if isinstance(sample_shape, int) and not isinstance(sample_shape, bool):
        sample_shape = (sample_shape,)
    if not isinstance(sample_shape, (tuple, list, torch.Size)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sample_shape):
        raise ValueError(f"sample_shape must be a tuple of positive ints (one sample's shape), got {sample_shape!r}")
    _check_int(num_name, num, 1)
    from .random import split_seed

    split_seed(seed)  # TypeError/ValueError naming the seed
    if batch_size is not None:
        _check_int("batch_size", batch_size, 1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if on_error not in ("abort", "raise"):
        raise ValueError(f"on_error must be 'abort' or 'raise', got {on_error!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    return tuple(int(s) for s in sample_shape)


def _default_device(device: _Device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _log(rank: int, msg: str) -> None:
    sys.stderr.write(f"[fastdiff.distributed rank {rank}] {msg}\n")
    sys.stderr.flush()


def _fail(comm: _Comm, on_error: str, err: BaseException, own: bool, msg: str) -> None:
    """End a failed multi-rank run on this rank: log and exit(1) ("abort"), or raise ("raise")."""
    if on_error == "abort":
        if own:
            _log(comm.rank, "failed:\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__)))
        _log(comm.rank, f"aborting the job: {msg}")
        sys.stdout.flush()
        os._exit(1)  # no interpreter shutdown: a process group with a lost peer can block it forever
    if own:
        raise err
    raise DistributedRunError(msg) from err


def _talk(comm: _Comm, on_error: str, what: str, fn: Callable, *args: Any, own: Optional[BaseException] = None,
          **kwargs: Any) -> Any:
    """Run a collective; if it fails (lost peer, timeout), end this rank like any other failure."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        if own is not None:  # this rank had failed first: report that, not the broken exchange
            _fail(comm, on_error, own, True, f"this rank failed, and {what} with the others failed too "
                                             f"({type(e).__name__}: {e})")
        _fail(comm, on_error, e, False, f"lost contact with another rank while {what} ({type(e).__name__}: {e})")


def _run(kind: str, config: Dict[str, Any], sample_shape: Tuple[int, ...], dtype: torch.dtype,
         device: torch.device, compute: Callable[[torch.Tensor], torch.Tensor], *, batch_size: Optional[int],
         out_dir: Optional[str], progress: bool, timeout: _Timeout, callback: Optional[Callable],
         on_error: str) -> Union[torch.Tensor, List[str]]:
    n = config["num_samples"]
    comm = _Comm(timeout, device)
    try:
        return _run_in(comm, kind, config, sample_shape, dtype, device, compute, batch_size=batch_size,
                       out_dir=out_dir, progress=progress, callback=callback, on_error=on_error, n=n)
    finally:
        comm.close()


def _run_in(comm: _Comm, kind: str, config: Dict[str, Any], sample_shape: Tuple[int, ...], dtype: torch.dtype,
            device: torch.device, compute: Callable[[torch.Tensor], torch.Tensor], *, batch_size: Optional[int],
            out_dir: Optional[str], progress: bool, callback: Optional[Callable], on_error: str,
            n: int) -> Union[torch.Tensor, List[str]]:
    digest = _digest(config)
    # Setup, decided on rank 0 and shared, so every rank raises the same error at the same point (no hang).
    setup: Dict[str, Any] = {"error": None, "done": []}
    if comm.rank == 0:
        try:
            if out_dir is not None:
                info = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                        "torch_version": torch.__version__, "world_size": comm.world, "batch_size": batch_size}
                setup["done"] = _prepare_out_dir(out_dir, config, info)
        except Exception as err:  # shared below: raising on rank 0 alone would leave the others waiting
            if not comm.active:
                raise
            setup["error"] = (type(err).__name__, str(err))
    setup = _talk(comm, on_error, "sharing the run's setup", comm.broadcast_obj, setup)
    if setup["error"] is not None:
        name, msg = setup["error"]
        raise {"ValueError": ValueError, "TypeError": TypeError, "OSError": OSError}.get(name, RuntimeError)(msg)
    digests = _talk(comm, on_error, "comparing the ranks' configurations", comm.all_gather_obj, digest)
    if any(d != digest for d in digests):
        raise ValueError(f"ranks called fastdiff.distributed.{kind} with different configurations "
                         f"(config digests {digests}); every rank must pass the same arguments")

    done: List[Tuple[int, int]] = [tuple(r) for r in setup["done"]]
    plans = _plan(_missing(n, done), comm.world, batch_size)
    mine = plans[comm.rank]
    rounds = max(len(p) for p in plans)
    bar = None
    if progress and comm.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=sum(e - s for s, e in done), desc=f"fastdiff.distributed.{kind}", unit="row")
    local: List[torch.Tensor] = []
    try:
        for r in range(rounds):
            failed, rows_done, err = 0, 0, None
            if r < len(mine):
                start, end = mine[r]
                try:
                    rows = torch.arange(start, end, dtype=torch.int64, device=device)
                    x = compute(rows)
                    if not isinstance(x, torch.Tensor) or tuple(x.shape) != (end - start, *sample_shape):
                        raise ValueError(f"the sampler returned {type(x).__name__} "
                                         f"{tuple(getattr(x, 'shape', ()))}, expected shape "
                                         f"{(end - start, *sample_shape)}")
                    x = x.detach().to(dtype)
                    path = None
                    if out_dir is not None:
                        path = os.path.join(out_dir, _shard_name(start, end))
                        payload = {"format": _FORMAT, "start": start, "end": end, "config_sha256": digest,
                                   "samples": x.to("cpu").contiguous()}
                        _atomic_write(path, lambda f: torch.save(payload, f))
                    else:
                        local.append(x)
                    if callback is not None:
                        callback({"rank": comm.rank, "rows": (start, end), "x": x, "path": path})
                    rows_done = end - start
                except Exception as e:  # reported to every rank below, so no rank waits forever
                    if not comm.active:
                        raise
                    failed, err = 1, e
            if comm.active:
                # a peer that died, or hung past the timeout, makes this raise: abort then too
                failed_total, rows_total = _talk(comm, on_error, "exchanging status", comm.all_sum,
                                                 [failed, rows_done], own=err)
                if failed_total:
                    mine_msg = None if err is None else f"{type(err).__name__}: {err}"
                    reports = _talk(comm, on_error, "collecting the failures", comm.all_gather_obj, mine_msg, own=err)
                    who = "; ".join(f"rank {k}: {m}" for k, m in enumerate(reports) if m is not None)
                    _fail(comm, on_error, err if err is not None else RuntimeError(who), err is not None,
                          f"{failed_total} rank(s) failed: {who}")
            else:
                rows_total = rows_done
            if bar is not None:
                bar.update(rows_total)
    finally:
        if bar is not None:
            bar.close()

    if out_dir is not None:
        all_ranges = sorted(done + [tuple(c) for p in plans for c in p])
        return [os.path.join(out_dir, _shard_name(s, e)) for s, e in all_ranges]
    ours = torch.cat(local) if local else torch.empty((0, *sample_shape), dtype=dtype, device=device)
    if not comm.active:
        return ours
    # Padded all_gather: shares may differ by a row; every rank knows every share from the plan.
    counts = [sum(e - s for s, e in p) for p in plans]
    width = max(counts)
    send = torch.zeros((width, *sample_shape), dtype=dtype, device=comm.data_device)
    send[: counts[comm.rank]] = ours.to(comm.data_device)
    bufs = [torch.empty_like(send) for _ in range(comm.world)]
    _talk(comm, on_error, "gathering the samples", dist.all_gather, bufs, send, group=comm.data)
    return torch.cat([b[:c] for b, c in zip(bufs, counts)]).to(device)


# ----------------------------------------------------------------------------------------------------------
# public entry points


def sample(
    denoiser: Callable,
    sample_shape: Union[int, Sequence[int]],
    sigmas: Union[torch.Tensor, Sequence[float]],
    *,
    num_samples: int,
    sampler: Union[str, Callable[..., torch.Tensor]] = "dpmpp_2m",
    seed: int,
    batch_size: Optional[int] = None,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    progress: bool = False,
    timeout: _Timeout = None,
    dtype: torch.dtype = torch.float32,
    device: _Device = None,
    metadata: Optional[Dict[str, Any]] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_error: str = "abort",
    **options: Any,
) -> Union[torch.Tensor, List[str]]:
    """Draw ``num_samples`` diffusion samples split over all ranks (k-diffusion convention, see ``fastdiff.sampling``).

    Row ``i`` starts from ``initial_noise(..., row_ids=[i]) * sigmas[0]`` (plain
    ``initial_noise`` for ``flow_euler``) and runs ``fastdiff.sampling.sample`` with
    ``row_ids=[i]``, so it is the same for any world size and ``batch_size`` (given
    a denoiser whose output for a row does not depend on the other rows in its batch).

    Args:
        denoiser: ``denoiser(x, sigma) -> x0 estimate`` (any denoiser ``fastdiff.sampling.sample`` takes).
        sample_shape: one sample's shape, e.g. ``(3, 64, 64)``.
        sigmas: the noise levels, decreasing to 0.
        num_samples: total number of samples over all ranks.
        sampler: a name from ``fastdiff.sampling.list_samplers()``, or a callable with the signature of
            ``fastdiff.sampling.sample`` (recorded in the manifest by qualified name).
        seed: Philox key of all noise (required: it is what makes the run reproducible and resumable).
        batch_size: rows per micro-batch on each rank (default: the rank's whole share at once).
        out_dir: write shards and a manifest there and return the shard paths (resumable); default:
            gather the samples and return them on every rank.
        progress: tqdm bar of global rows on rank 0.
        timeout: seconds a rank waits for the others at each micro-batch boundary before declaring the
            job failed (must exceed the slowest micro-batch); default: the process group's timeout.
        dtype, device: the samples' dtype (default float32) and device (default: this rank's GPU, else CPU).
        metadata: extra JSON-able facts recorded in (and checked against) the manifest, e.g. a checkpoint hash.
        callback: called on each rank after each micro-batch with ``{"rank", "rows", "x", "path"}``.
        on_error: "abort" (default): if any rank fails, every rank logs and exits with status 1;
            "raise": the failing rank re-raises, the others raise DistributedRunError.
        **options: the sampler's options (``eta``, ``guidance_scale``, ``backend``, ...), recorded in the manifest.

    Returns:
        The ``(num_samples, *sample_shape)`` samples on every rank, or with ``out_dir`` the shard paths
        sorted by row range (see :func:`load_shards`).

    Example:
        >>> gmm = fastdiff.toy.GaussianMixture.ring(k=4)
        >>> x = fastdiff.distributed.sample(gmm.denoiser, (2,), fastdiff.karras_sigmas(10, 0.01, 20.0),
        ...                                 num_samples=1000, seed=0, batch_size=256)
    """
    from . import sampling as _sampling

    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    sample_shape = _check_common(sample_shape, num_samples, "num_samples", seed, batch_size, dtype, on_error,
                                 callback, progress)
    if isinstance(sampler, str):
        if sampler not in _sampling.SAMPLERS:
            raise ValueError(f"sampler must be one of {_sampling.list_samplers()} or a callable, got {sampler!r}")
    elif not callable(sampler):
        raise TypeError(f"sampler must be a sampler name or a callable, got {type(sampler).__name__}")
    for reserved in ("x", "row_ids", "progress"):
        if reserved in options:
            raise TypeError(f"{reserved!r} is set per micro-batch by fastdiff.distributed.sample; do not pass it")
    if "callback" in options:
        raise TypeError("pass callback= for per-micro-batch reports; per-step callbacks are not supported here")
    flow = sampler == "flow_euler"
    host = _sampling.host_sigmas(sigmas, flow)  # validates; float64 list
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON-able values or None, got {type(metadata).__name__}")
    dev = _default_device(device)
    # float64 host copy: the sampler reads it once, exactly as it would read the caller's sigmas
    sig64 = torch.tensor(host, dtype=torch.float64)
    scale = 1.0 if flow else host[0]
    run = _sampling.sample if isinstance(sampler, str) else sampler
    extra = {"sampler": sampler} if isinstance(sampler, str) else {}

    def compute(rows: torch.Tensor) -> torch.Tensor:
        x = _sampling.initial_noise((rows.numel(), *sample_shape), seed, row_ids=rows, device=dev, dtype=dtype)
        x = x * scale
        with torch.no_grad():
            return run(denoiser, x, sig64, seed=seed, row_ids=rows, **extra, **options)

    config = {
        "kind": "sample", "fastdiff_version": _library_version(), "num_samples": num_samples,
        "sample_shape": list(sample_shape), "dtype": str(dtype), "seed": seed, "sampler": _canon(sampler),
        "sigmas_sha256": _tensor_digest(torch.tensor(host, dtype=torch.float64)), "num_sigmas": len(host),
        "options": _canon(options), "denoiser": _canon(denoiser), "metadata": _canon(metadata),
    }
    return _run("sample", config, sample_shape, dtype, dev, compute, batch_size=batch_size,
                out_dir=None if out_dir is None else os.fspath(out_dir), progress=progress, timeout=timeout,
                callback=callback, on_error=on_error)


def langevin(
    grad_log_prob: Callable[[torch.Tensor], torch.Tensor],
    sample_shape: Union[int, Sequence[int]],
    *,
    num_chains: int,
    step_size: Union[float, torch.Tensor],
    n_steps: int,
    seed: int,
    temperature: float = 1.0,
    init: Union[None, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: Optional[int] = None,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    progress: bool = False,
    timeout: _Timeout = None,
    dtype: torch.dtype = torch.float32,
    device: _Device = None,
    backend: str = "auto",
    metadata: Optional[Dict[str, Any]] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_error: str = "abort",
) -> Union[torch.Tensor, List[str]]:
    """Run ``num_chains`` unadjusted Langevin chains (``fastdiff.mcmc.langevin``) split over all ranks.

    Chain ``i`` starts from ``init`` (default: ``fastdiff.sampling.initial_noise`` standard normals
    for row ``i``) and draws its step noise from ``(seed, i)``, so its final state is the same
    for any world size and ``batch_size``.

    Args:
        grad_log_prob: ``x -> grad log p(x)`` for a batch of chains (each row independent).
        sample_shape: one chain's state shape.
        num_chains: total number of chains over all ranks.
        step_size: h > 0, a float or a ``(num_chains,)`` tensor (one per chain, indexed by chain id).
        n_steps, temperature: as in ``fastdiff.mcmc.langevin``.
        seed: Philox key of all noise.
        init: None, a ``(num_chains, *sample_shape)`` tensor, or ``init(row_ids) -> x`` returning the
            starting states of the given chain ids (it must depend only on the ids).
        batch_size, out_dir, progress, timeout, dtype, device, metadata, callback, on_error: as in :func:`sample`.
        backend: the Langevin op's backend.

    Returns:
        The final states ``(num_chains, *sample_shape)`` on every rank, or the shard paths with ``out_dir``.

    Example:
        >>> gmm = fastdiff.toy.GaussianMixture.ring(k=4)
        >>> x = fastdiff.distributed.langevin(gmm.grad_log_prob, (2,), num_chains=10_000, step_size=0.01,
        ...                                   n_steps=500, seed=0, batch_size=2048)
    """
    from . import mcmc as _mcmc
    from . import sampling as _sampling

    if not callable(grad_log_prob):
        raise TypeError(f"grad_log_prob must be callable, got {type(grad_log_prob).__name__}")
    sample_shape = _check_common(sample_shape, num_chains, "num_chains", seed, batch_size, dtype, on_error,
                                 callback, progress)
    _check_int("n_steps", n_steps, 0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive float, got {temperature!r}")
    dev = _default_device(device)
    if isinstance(step_size, torch.Tensor):
        if step_size.dim() != 0 and tuple(step_size.shape) != (num_chains,):
            raise ValueError(f"step_size must be a float or a tensor of shape ({num_chains},) (one per chain), "
                             f"got {tuple(step_size.shape)}")
        steps = step_size.detach().to(dev, torch.float32)
    elif isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not (
            step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive finite float or a tensor, got {step_size!r}")
    else:
        steps = float(step_size)
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (num_chains, *sample_shape):
            raise ValueError(f"init must have shape {(num_chains, *sample_shape)}, got {tuple(init.shape)}")
    elif init is not None and not callable(init):
        raise TypeError(f"init must be None, a tensor or a callable(row_ids) -> x, got {type(init).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON-able values or None, got {type(metadata).__name__}")

    def compute(rows: torch.Tensor) -> torch.Tensor:
        shape = (rows.numel(), *sample_shape)
        if init is None:
            x = _sampling.initial_noise(shape, seed, row_ids=rows, device=dev, dtype=dtype)
        elif isinstance(init, torch.Tensor):
            x = init[rows.to(init.device)].to(dev, dtype)
        else:
            x = init(rows)
            if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
                raise ValueError(f"init(row_ids) must return a tensor of shape {shape}, "
                                 f"got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
            x = x.to(dev, dtype)
        h = steps[rows] if isinstance(steps, torch.Tensor) and steps.dim() == 1 else steps
        return _mcmc.langevin(grad_log_prob, x, h, n_steps, temperature=float(temperature), seed=seed, row_ids=rows,
                              backend=backend)

    config = {
        "kind": "langevin", "fastdiff_version": _library_version(), "num_samples": num_chains,
        "sample_shape": list(sample_shape), "dtype": str(dtype), "seed": seed, "n_steps": n_steps,
        "step_size": _canon(step_size), "temperature": float(temperature), "init": _canon(init),
        "grad_log_prob": _canon(grad_log_prob), "backend": backend, "metadata": _canon(metadata),
    }
    return _run("langevin", config, sample_shape, dtype, dev, compute, batch_size=batch_size,
                out_dir=None if out_dir is None else os.fspath(out_dir), progress=progress, timeout=timeout,
                callback=callback, on_error=on_error)
