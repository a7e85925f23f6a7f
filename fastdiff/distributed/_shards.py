"""Shard files and the run manifest: the configuration fingerprint, atomic writes, resume and loading."""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

__all__ = ["load_shards", "MANIFEST_NAME", "LOCK_NAME"]

MANIFEST_NAME = "manifest.json"
_FORMAT = "fastdiff-distributed-v1"
_SHARD_RE = re.compile(r"^shard-(\d{12})-(\d{12})\.pt$")
_Device = Union[str, torch.device, None]


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
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return {"bytes_sha256": hashlib.sha256(b).hexdigest(), "len": len(b)}
    if isinstance(v, (set, frozenset)):  # order-free: the members' descriptions, sorted
        return {"set": sorted((_canon(u) for u in v), key=lambda c: json.dumps(c, sort_keys=True))}
    nd = _numpy_canon(v)
    if nd is not None:
        return nd
    if isinstance(v, (list, tuple)):
        return [_canon(u) for u in v]
    if isinstance(v, dict):
        return {str(k): _canon(u) for k, u in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if callable(v):
        mod = getattr(v, "__module__", None) or type(v).__module__
        name = getattr(v, "__qualname__", None) or type(v).__qualname__
        return {"callable": f"{mod}.{name}"}
    return {"object": f"{type(v).__module__}.{type(v).__qualname__}"}


def _numpy_canon(v: Any) -> Optional[Any]:
    """A numpy array by content hash, dtype and shape; a numpy scalar as its Python value; else None."""
    np = sys.modules.get("numpy")
    if np is None:
        return None
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            return {"ndarray": [_canon(u) for u in v.reshape(-1).tolist()], "shape": list(v.shape)}
        a = np.ascontiguousarray(v)
        return {"ndarray_sha256": hashlib.sha256(a.tobytes()).hexdigest(), "shape": list(a.shape),
                "dtype": a.dtype.str}
    if isinstance(v, np.generic):
        return _canon(v.item())
    return None


def _canon_metadata(metadata: Optional[Dict[str, Any]]) -> Any:
    """``metadata`` as recorded in the manifest: JSON values as they are, bytes, sets, numpy arrays and tensors
    by a content digest. Anything else could only be recorded by its type name, so a resume with other values
    would pass unnoticed: it is refused (TypeError naming the key and the type)."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON-able values or None, got {type(metadata).__name__}")

    def check(v: Any, where: str) -> None:
        if v is None or isinstance(v, (bool, int, float, str, bytes, bytearray, memoryview, torch.Tensor,
                                       torch.dtype, torch.device)):
            return
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, (np.ndarray, np.generic)):
            if isinstance(v, np.ndarray) and v.dtype.hasobject:
                for i, u in enumerate(v.reshape(-1).tolist()):
                    check(u, f"{where}[{i}]")
            return
        if isinstance(v, (list, tuple, set, frozenset)):
            for i, u in enumerate(v):
                check(u, f"{where}[{i}]")
            return
        if isinstance(v, dict):
            for k, u in v.items():
                check(u, f"{where}[{k!r}]")
            return
        raise TypeError(f"metadata {where} is a {type(v).__module__}.{type(v).__qualname__}, which fastdiff cannot "
                        "record and compare on resume; pass JSON values (str, int, float, bool, None, lists, "
                        "dicts), bytes, sets, numpy arrays or tensors (recorded by a content digest), e.g. "
                        "str(value) or a hash of it")

    for key, value in metadata.items():
        check(value, f"[{key!r}]")
    return _canon(metadata)


def _digest(config: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _library_version() -> str:
    pkg = sys.modules.get(__name__.split(".")[0])  # the top-level package (fastdiff)
    return str(getattr(pkg, "__version__", "unknown"))


def _describe_diff(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    lines = [f"  {k}: {old.get(k, '<missing>')!r} on disk, {new.get(k, '<missing>')!r} now"
             for k in keys if old.get(k) != new.get(k)]
    return "\n".join(lines)


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


LOCK_NAME = ".fastdiff-run.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped) is not a writer
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _acquire_lock(out_dir: str) -> Tuple[str, str]:
    """Rank 0: claim ``out_dir`` for this run; return ``(lock path, run token)``.

    The lock file names the writer's host, pid and a token. It is refused while that process is alive on this
    host, or when it was written on another host (that cannot be checked from here); a lock left by a dead
    process on this host is taken over."""
    import socket
    import uuid

    path = os.path.join(out_dir, LOCK_NAME)
    host, token = socket.gethostname(), uuid.uuid4().hex
    record = json.dumps({"pid": os.getpid(), "host": host, "token": token,
                         "created": datetime.datetime.now().astimezone().isoformat()})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    old = json.load(f)
                pid, old_host = int(old["pid"]), str(old["host"])
            except (OSError, ValueError, KeyError, TypeError):
                old, pid, old_host = None, -1, host  # unreadable (e.g. half written): treat as stale
            if old is not None and (old_host != host or _pid_alive(pid)):
                where = f"process {pid} on {old_host}" if old_host != host else f"process {pid}"
                raise ValueError(f"{out_dir} is in use by another run ({where}, started {old.get('created')}); "
                                 "two runs in one out_dir would mix their shards. Wait for it to finish or stop "
                                 f"it (kill the torchrun agent and its workers); if no run is active, delete "
                                 f"{path}")
            try:
                os.remove(path)  # stale: its writer is gone
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record + "\n")
        return path, token
    raise ValueError(f"could not claim {out_dir}: {path} keeps reappearing; is another run starting there?")


def _lock_token(out_dir: str) -> Optional[str]:
    """The token in ``out_dir``'s lock file, or None when there is none (e.g. a node-local out_dir)."""
    try:
        with open(os.path.join(out_dir, LOCK_NAME)) as f:
            return str(json.load(f).get("token"))
    except (OSError, ValueError, AttributeError):
        return None


def _release_lock(path: str, token: str) -> None:
    if _lock_token(os.path.dirname(path)) == token:
        try:
            os.remove(path)
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
        legacy = ""
        if '"object": ' in json.dumps(old["config"].get("metadata")):
            legacy = ("\nThe manifest records some metadata by its type name only (earlier fastdiff versions did so for "
                      "bytes, sets and arrays), so it cannot be checked against this run's values.")
        raise ValueError(f"{out_dir} holds a run with a different configuration, refusing to mix them:\n"
                         f"{_describe_diff(old['config'], config)}{legacy}\n"
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
