"""Argument checks and layout helpers shared by the ops.

Layout policy: every op views its tensors as ``(batch, n_cols)`` rows, where
``batch = x.shape[0]``. Non-contiguous inputs are copied to contiguous memory
first (one extra pass, documented); ``out=`` must be contiguous and may alias an
input for in-place work. Storage dtypes float32/float16/bfloat16 run with
float32 arithmetic; float64 runs in float64 on the torch paths.
"""
from __future__ import annotations

import weakref
from typing import Optional, Sequence

import numpy as np
import torch

from ..random import split_seed

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_Tensor = torch.Tensor
_FLOATS = frozenset(FLOAT_DTYPES)


def plain_float(t, device: torch.device, shape) -> bool:
    """A plain (not subclassed) float tensor on ``device`` with ``shape``: what ``check_float(name, t, like=x,
    shape=shape)`` accepts in the common case, answered without building a message (False: run the check)."""
    return t.__class__ is _Tensor and t.dtype in _FLOATS and t.device == device and t.shape == shape


def check_float(name: str, t, *, like: Optional[torch.Tensor] = None, shape=None) -> torch.Tensor:
    """Require a floating tensor (on ``like``'s device, with ``shape`` when given)."""
    if (t.__class__ is _Tensor and t.dtype in _FLOATS and (like is None or t.device == like.device)
            and (shape is None or t.shape == shape)):
        return t  # the common case, accepted without the checks below
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32/float16/bfloat16/float64 tensor, got {t.dtype}")
    if like is not None and t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but x is on {like.device}; move it to the same device")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def check_int(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``: TypeError for a non-int (bools too), ValueError below the minimum."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got bool {value!r}")
    try:
        ivalue = type(value).__index__(value)
    except (AttributeError, TypeError):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}") from None
    if ivalue < minimum:
        raise ValueError(f"{name} must be {what}, got {ivalue}")
    return ivalue


def check_batch(name: str, t) -> torch.Tensor:
    """A floating tensor (``check_float``) with a leading batch dimension (0 rows is an empty batch, valid
    everywhere): what samplers start from."""
    check_float(name, t)
    if t.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension (rows first), got a 0-d tensor")
    return t


def check_index(name: str, t, batch: int, device: torch.device, rows: Optional[int] = None) -> torch.Tensor:
    """Require an integer index tensor of shape (batch,) on ``device`` (values in [0, rows) when given, checked
    on CPU only: on a GPU the check would sync); returns it as contiguous int64."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an integer tensor of shape ({batch},), got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the data is on {device}")
    if rows is not None and t.numel() and torch.compiler.is_compiling():
        # traced, the values are not on the host: checked on the device instead (no sync; a failure ends the run)
        torch._assert_async(((t >= 0) & (t < rows)).all(),
                            f"{name} values must lie in [0, {rows}) (rows of the table)")
    elif rows is not None and device.type == "cpu" and t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f"{name} values must lie in [0, {rows}) (rows of the table), got [{lo}, {hi}]")
    return t.to(torch.int64).contiguous()


def maybe_rows(row_ids: Optional[torch.Tensor], batch: int, device: torch.device) -> Optional[torch.Tensor]:
    """Validate per-row global ids (int64, shape (batch,)) and move them next to the data."""
    if row_ids is None:
        return None
    if not isinstance(row_ids, torch.Tensor):
        raise TypeError(f"row_ids must be an int64 tensor, got {type(row_ids).__name__}")
    if row_ids.dtype != torch.int64 or row_ids.shape != (batch,):
        raise ValueError(
            f"row_ids must be an int64 tensor of shape ({batch},), got {tuple(row_ids.shape)} {row_ids.dtype}"
        )
    return row_ids.to(device).contiguous()


def check_out(name: str, out: Optional[torch.Tensor], like: torch.Tensor, dtype=None) -> Optional[torch.Tensor]:
    """``out=`` buffers: same shape and device as x, contiguous, a float dtype (x's dtype unless ``dtype``)."""
    if out is None:
        return None
    check_float(name, out, like=like, shape=like.shape)
    if dtype is not None and out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return out


def rows_of(x: torch.Tensor) -> tuple[int, int]:
    """(batch, n_cols) of the row view."""
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension, got a 0-d tensor")
    batch = x.shape[0]
    return batch, (x.numel() // batch if batch else 0)


def contig(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


def bcast(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-row vector shaped to broadcast against a (batch, ...) tensor of ``ndim`` dims."""
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))


def as_seed_args(seed: Optional[int]) -> tuple[int, int]:
    return (0, 0) if seed is None else split_seed(seed)


def check_noise_source(op: str, x: torch.Tensor, noise: Optional[torch.Tensor], seed: Optional[int]) -> None:
    """An op's noise comes from exactly one of ``seed`` (in-kernel Philox) and ``noise`` (shaped like x)."""
    if noise is not None:
        check_float("noise", noise, like=x, shape=x.shape)
        if seed is not None:
            raise ValueError("pass either seed (in-kernel noise) or noise, not both")
    elif seed is None:
        raise ValueError(f"{op} needs seed= (in-kernel noise) or noise=")


def check_stream(stream) -> int:
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream < 2**32:
        raise ValueError(f"stream must be an int in [0, 2**32), got {stream!r}")
    return stream


def seq(name: str, values) -> Sequence:
    if isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a list or tuple of tensors, got a Tensor")
    return tuple(values)


# Host copies of small coefficient tables, keyed by the tensor's identity and version counter, so the CPU
# paths read a row as Python floats without a tensor index + .tolist() per call. An in-place torch write to
# the table (or any view of it) bumps its version and refreshes the copy; writes that bypass the version
# counter (through ``.data`` or a numpy view) are not seen -- coefficient tables are read-only inputs.
# An entry holds its table by a weak reference: the cache never keeps a run's table alive after the run.
_HOST_ROWS: dict = {}
_HOST_ROWS_MAX = 32
_HOST_ROWS_MAX_ELEMS = 1 << 14  # 1000+ steps x 13 coefficients; a host copy costs ~32 B per value


def host_row(table: torch.Tensor, r: int) -> list:
    """Row ``r`` of a CPU ``table`` as Python floats (a cached host copy while the table is unchanged)."""
    try:
        ver = table._version
    except RuntimeError:  # inference-mode tensors keep no version counter
        return table[r].tolist()
    ent = _HOST_ROWS.get(id(table))
    if ent is not None:
        held, held_ver, ptr, rows = ent
        if held() is table and held_ver == ver and ptr == table.data_ptr():
            return rows[r]
    if table.numel() > _HOST_ROWS_MAX_ELEMS:
        return table[r].tolist()
    rows = table.tolist()
    if len(_HOST_ROWS) >= _HOST_ROWS_MAX:
        try:  # evict the oldest entry (tolerant of a concurrent eviction from another thread)
            _HOST_ROWS.pop(next(iter(_HOST_ROWS)), None)
        except (StopIteration, RuntimeError):
            pass
    _HOST_ROWS[id(table)] = (weakref.ref(table), ver, table.data_ptr(), rows)
    return rows[r]


def host_rows(table: torch.Tensor, index: torch.Tensor) -> list:
    """Rows ``index`` of a CPU ``table`` column by column: a column equal over the batch as a Python float, any
    other as a float64 numpy ``(batch,)`` array (a per-sample coefficient).

    Example:
        >>> host_rows(torch.tensor([[1.0, 2.0], [1.0, 3.0]]), torch.tensor([0, 1]))
        [1.0, array([2., 3.])]
    """
    rows = table.detach().numpy()[index.numpy()].astype(np.float64)
    same = (rows == rows[:1]).all(axis=0)
    return [float(rows[0, j]) if same[j] else rows[:, j] for j in range(rows.shape[1])]

