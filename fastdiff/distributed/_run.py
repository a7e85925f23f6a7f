"""The engine shared by ``sample`` and ``langevin``: agree on the setup, compute the planned micro-batches in
lock-step with the other ranks, then return the shard paths or the gathered samples."""
from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist

from ..ops._common import check_int
from ..random import check_device, split_seed
from ._comm import DistributedRunError, _Comm, _fail, _log, _ParentWatch, _talk, _Timeout
from ._plan import _missing, _plan
from ._shards import (_FORMAT, _acquire_lock, _atomic_write, _Device, _digest, _lock_token, _prepare_out_dir,
                      _release_lock, _shard_name)

Rows = Tuple[int, int]


def _check_common(sample_shape: Any, num: Any, num_name: str, seed: Any, batch_size: Any, dtype: Any,
                  on_error: str, callback: Any, progress: Any) -> Tuple[Tuple[int, ...], int, Optional[int]]:
    """The arguments ``sample`` and ``langevin`` share, checked: ``(sample_shape, num, batch_size)`` as ints."""
    if isinstance(sample_shape, int) and not isinstance(sample_shape, bool):
        sample_shape = (sample_shape,)
    if not isinstance(sample_shape, (tuple, list, torch.Size)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sample_shape):
        raise ValueError(f"sample_shape must be a tuple of positive ints (one sample's shape), got {sample_shape!r}")
    num = check_int(num_name, num, minimum=1)
    split_seed(seed)  # TypeError/ValueError naming the seed
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if on_error not in ("abort", "raise"):
        raise ValueError(f"on_error must be 'abort' or 'raise', got {on_error!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    return tuple(int(s) for s in sample_shape), num, batch_size


def _default_device(device: _Device) -> torch.device:
    if device is not None:
        return check_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclasses.dataclass
class _Job:
    """One run's fixed inputs on this rank."""

    comm: _Comm
    kind: str
    config: Dict[str, Any]
    sample_shape: Tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    compute: Callable[[torch.Tensor], torch.Tensor]
    batch_size: Optional[int]
    out_dir: Optional[str]
    callback: Optional[Callable]
    on_error: str

    def __post_init__(self) -> None:
        self.digest = _digest(self.config)
        self.watch: Optional[_ParentWatch] = None
        self.lock: Optional[Tuple[str, str]] = None  # rank 0 with out_dir: (lock file, run token)
        self.token: Optional[str] = None  # the run token every rank checks before writing a shard

    def check_alive(self) -> None:
        """Stop this rank if its launcher is gone or another run took over ``out_dir``: no further shards."""
        why = None if self.watch is None else self.watch.lost()
        if why is None and self.out_dir is not None and self.token is not None:
            now = _lock_token(self.out_dir)
            if now is not None and now != self.token:
                why = (f"another run has claimed {self.out_dir} (its lock file changed); stopping without writing "
                       "further shards")
        if why is None:
            return
        if self.on_error == "abort" and self.comm.active:  # at world size 1 errors are raised, as any other
            _log(self.comm.rank, f"aborting: {why}")
            os._exit(1)
        raise DistributedRunError(why)

    def talk(self, what: str, fn: Callable, *args: Any, own: Optional[BaseException] = None, **kwargs: Any) -> Any:
        return _talk(self.comm, self.on_error, what, fn, *args, own=own, **kwargs)


def _run(kind: str, config: Dict[str, Any], sample_shape: Tuple[int, ...], dtype: torch.dtype,
         device: torch.device, compute: Callable[[torch.Tensor], torch.Tensor], *, batch_size: Optional[int],
         out_dir: Optional[str], progress: bool, timeout: _Timeout, callback: Optional[Callable],
         on_error: str) -> Union[torch.Tensor, List[str]]:
    comm = _Comm(timeout, device)
    job = _Job(comm, kind, config, sample_shape, dtype, device, compute, batch_size, out_dir, callback, on_error)
    # under a launcher: exit (status 1) within about a second of losing it, even from inside a collective
    job.watch = _ParentWatch(comm.rank, exit_on_loss=True)
    try:
        return _run_job(job, progress)
    finally:
        job.watch.close()
        if job.lock is not None:
            _release_lock(*job.lock)
        comm.close()


def _run_job(job: _Job, progress: bool) -> Union[torch.Tensor, List[str]]:
    comm, n = job.comm, job.config["num_samples"]
    done = _agree_on_setup(job)
    plans = _plan(_missing(n, done), comm.world, job.batch_size)
    mine = plans[comm.rank]
    bar = None
    if progress and comm.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=sum(e - s for s, e in done), desc=f"fastdiff.distributed.{job.kind}", unit="row")
    local: List[torch.Tensor] = []
    try:
        for r in range(max(len(p) for p in plans)):
            failed, rows_done, err = 0, 0, None
            job.check_alive()
            if r < len(mine):
                try:
                    rows_done = _micro_batch(job, mine[r], local)
                except Exception as e:  # reported to every rank below, so no rank waits forever
                    if not comm.active:
                        raise
                    failed, err = 1, e
            rows_total = _exchange_status(job, failed, rows_done, err) if comm.active else rows_done
            if bar is not None:
                bar.update(rows_total)
    finally:
        if bar is not None:
            bar.close()

    if job.out_dir is not None:
        all_ranges = sorted(done + [tuple(c) for p in plans for c in p])
        return [os.path.join(job.out_dir, _shard_name(s, e)) for s, e in all_ranges]
    return _gather(job, local, plans)


def _agree_on_setup(job: _Job) -> List[Rows]:
    """The row ranges already on disk. The setup is decided on rank 0 and shared, so every rank raises the same
    error at the same point (no hang); ranks called with different configurations are refused."""
    comm = job.comm
    setup: Dict[str, Any] = {"error": None, "done": [], "token": None}
    if comm.rank == 0:
        try:
            if job.out_dir is not None:
                info = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                        "torch_version": torch.__version__, "world_size": comm.world, "batch_size": job.batch_size}
                os.makedirs(job.out_dir, exist_ok=True)
                job.lock = _acquire_lock(job.out_dir)  # refused while another live run holds out_dir
                setup["token"] = job.lock[1]
                setup["done"] = _prepare_out_dir(job.out_dir, job.config, info)
        except Exception as err:  # shared below: raising on rank 0 alone would leave the others waiting
            if job.lock is not None:
                _release_lock(*job.lock)
                job.lock = None
            if not comm.active:
                raise
            setup["error"] = (type(err).__name__, str(err))
    setup = job.talk("sharing the run's setup", comm.broadcast_obj, setup)
    job.token = setup.get("token")
    if setup["error"] is not None:
        name, msg = setup["error"]
        raise {"ValueError": ValueError, "TypeError": TypeError, "OSError": OSError}.get(name, RuntimeError)(msg)
    digests = job.talk("comparing the ranks' configurations", comm.all_gather_obj, job.digest)
    if any(d != job.digest for d in digests):
        raise ValueError(f"ranks called fastdiff.distributed.{job.kind} with different configurations "
                         f"(config digests {digests}); every rank must pass the same arguments")
    return [tuple(r) for r in setup["done"]]


def _micro_batch(job: _Job, rows_range: Rows, local: List[torch.Tensor]) -> int:
    """Compute rows ``[start, end)``; write their shard (with ``out_dir``) or keep them in ``local``."""
    start, end = rows_range
    rows = torch.arange(start, end, dtype=torch.int64, device=job.device)
    x = job.compute(rows)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != (end - start, *job.sample_shape):
        raise ValueError(f"the sampler returned {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}, expected shape "
                         f"{(end - start, *job.sample_shape)}")
    x = x.detach().to(job.dtype)
    path = None
    if job.out_dir is not None:
        job.check_alive()  # the micro-batch may have taken long: is this run still the out_dir's writer?
        path = os.path.join(job.out_dir, _shard_name(start, end))
        payload = {"format": _FORMAT, "start": start, "end": end, "config_sha256": job.digest,
                   "samples": x.to("cpu").contiguous()}
        _atomic_write(path, lambda f: torch.save(payload, f))
    else:
        local.append(x)
    if job.callback is not None:
        job.callback({"rank": job.comm.rank, "rows": (start, end), "x": x, "path": path})
    return end - start


def _exchange_status(job: _Job, failed: int, rows_done: int, err: Optional[BaseException]) -> int:
    """After a micro-batch: the rows done over all ranks; if any rank failed, end the run on every rank."""
    # a peer that died, or hung past the timeout, makes this raise: abort then too
    failed_total, rows_total = job.talk("exchanging status", job.comm.all_sum, [failed, rows_done], own=err)
    if failed_total:
        mine_msg = None if err is None else f"{type(err).__name__}: {err}"
        reports = job.talk("collecting the failures", job.comm.all_gather_obj, mine_msg, own=err)
        who = "; ".join(f"rank {k}: {m}" for k, m in enumerate(reports) if m is not None)
        _fail(job.comm, job.on_error, err if err is not None else RuntimeError(who), err is not None,
              f"{failed_total} rank(s) failed: {who}")
    return rows_total


def _gather(job: _Job, local: List[torch.Tensor], plans: List[List[Rows]]) -> torch.Tensor:
    """This rank's samples, then (with several ranks) everyone's, in row order, on every rank."""
    comm, shape, dtype = job.comm, job.sample_shape, job.dtype
    ours = torch.cat(local) if local else torch.empty((0, *shape), dtype=dtype, device=job.device)
    if not comm.active:
        return ours
    # Padded all_gather: shares may differ by a row; every rank knows every share from the plan.
    counts = [sum(e - s for s, e in p) for p in plans]
    width = max(counts)
    send = torch.zeros((width, *shape), dtype=dtype, device=comm.data_device)
    send[: counts[comm.rank]] = ours.to(comm.data_device)
    bufs = [torch.empty_like(send) for _ in range(comm.world)]
    job.talk("gathering the samples", dist.all_gather, bufs, send, group=comm.data)
    return torch.cat([b[:c] for b, c in zip(bufs, counts)]).to(job.device)
