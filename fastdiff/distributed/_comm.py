"""The torch.distributed side of a run: the process group, the groups a run talks on, failure handling."""
from __future__ import annotations

import datetime
import math
import os
import sys
import threading
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "DistributedRunError"]

_Timeout = Union[float, int, datetime.timedelta, None]


class DistributedRunError(RuntimeError):
    """Raised on every rank (with ``on_error="raise"``) when some rank failed during a distributed run."""


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


# ---- a lost launcher -------------------------------------------------------------------------------
# A torchrun worker's parent is its agent. When the agent is killed, the workers are re-parented (to init or a
# subreaper) and would otherwise keep computing and writing shards beside whatever runs next. Every rank
# therefore watches its parent pid: between micro-batches, and from a daemon thread (so a rank blocked in a
# collective or inside the model notices too) every ``_WATCH_INTERVAL_S`` seconds.
_getppid = os.getppid  # replaced in tests
_WATCH_INTERVAL_S = 1.0


def _launched() -> bool:
    """True under a launcher whose death should end this process: torchrun (TORCHELASTIC_RUN_ID) or a
    multi-rank process group."""
    if "TORCHELASTIC_RUN_ID" in os.environ or os.environ.get("FASTDIFF_WATCH_PARENT") == "1":
        return True
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _ParentWatch:
    """Notices that the process that launched this rank is gone (``lost()``), and with ``exit_on_loss`` ends the
    process from a background thread (status 1) even while the main thread is blocked."""

    def __init__(self, rank: int, exit_on_loss: bool, interval: Optional[float] = None):
        self.rank = rank
        self.enabled = _launched()
        self.parent = _getppid() if self.enabled else None
        self._stop = threading.Event()
        self._thread = None
        if self.enabled and exit_on_loss:
            self._thread = threading.Thread(target=self._watch, name="fastdiff-parent-watch", daemon=True,
                                            args=(_WATCH_INTERVAL_S if interval is None else interval,))
            self._thread.start()

    def lost(self) -> Optional[str]:
        """None while the parent lives, else why this rank must stop."""
        if not self.enabled:
            return None
        now = _getppid()
        if now == self.parent:
            return None
        return (f"the launcher that started this rank (pid {self.parent}, e.g. the torchrun agent) is gone "
                f"(parent pid is now {now}); stopping without writing further shards")

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            why = self.lost()
            if why is not None:
                _log(self.rank, f"aborting: {why}")
                os._exit(1)

    def close(self) -> None:
        self._stop.set()
