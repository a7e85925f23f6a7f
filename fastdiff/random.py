"""The PyTorch twin of the in-kernel Philox noise (``fastdiff.kernels.philox``).

A row's noise is a function of ``(seed, row id, stream, column)`` only, so
sampling rows 0-7 at once or as 0-3 and 4-7 gives the same numbers, on CPU and
GPU alike (up to the rounding of ``log``/``sqrt`` and, on GPU, fused multiply-adds).

Example:
    >>> import torch, fastdiff
    >>> z = fastdiff.philox_normal((2, 5), seed=0, stream=3)
    >>> z2 = fastdiff.philox_normal((1, 5), seed=0, stream=3, row_ids=torch.tensor([1]))
    >>> torch.equal(z[1:], z2)
    True
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .random_jit import normals_jit

__all__ = ["philox_normal", "philox4x32_10", "split_seed", "draw_seed", "resolve_seed", "check_device", "check_shape",
           "MAX_SEED", "DRAWN_SEED_BOUND"]

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
MAX_SEED = 2**63 - 1


#: seeds drawn for ``seed=None`` lie in ``[0, DRAWN_SEED_BOUND)``; any int in ``[0, MAX_SEED]`` is accepted.
DRAWN_SEED_BOUND = 2**62


#: the most elements a tensor may hold (int64 offsets), as torch checks for torch.empty
MAX_NUMEL = 2**63 - 1
#: the Philox column counter c0 is one uint32 group of four columns, so a row has at most 4 * 2**32 columns
MAX_COLUMNS = 4 * 2**32


def check_device(device, name: str = "device") -> Optional[torch.device]:
    """``device`` as a ``torch.device`` (``None`` stays ``None``): a ValueError naming ``name`` for a string torch
    cannot parse, a CUDA device on a torch without CUDA (instead of torch's ``AssertionError``), a CUDA index past
    the visible devices, or another backend this torch does not have.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return None
    if isinstance(device, torch.device):
        dev = device
    else:
        if isinstance(device, bool) or not isinstance(device, (str, int)):
            raise TypeError(f"{name} must be a str, int or torch.device, got {type(device).__name__}")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ValueError(f"{name}={device!r} is not a device torch knows ({err})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(device)!r} but this torch has no CUDA support "
                             f"(torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={str(device)!r} but this process sees {torch.cuda.device_count()} CUDA "
                             "device(s)")
    elif dev.type not in ("cpu", "meta"):
        is_available = getattr(getattr(torch, dev.type, None), "is_available", None)
        if callable(is_available) and not is_available():
            raise ValueError(f"{name}={str(device)!r} but the {dev.type} backend is not available to this torch")
    return dev


def check_shape(shape, name: str = "shape") -> tuple:
    """``shape`` as a tuple of ints >= 0 with a leading row dimension, checked before anything is allocated:
    negative sizes and element counts a tensor cannot hold (>= 2**63) raise a ValueError naming ``name``.

    Example:
        >>> check_shape(torch.Size([2, 3]))
        (2, 3)
    """
    if isinstance(shape, (int, str, bytes)) or isinstance(shape, torch.Tensor) and shape.dim() == 0:
        raise TypeError(f"{name} must be a sequence of ints, got {type(shape).__name__} {shape!r}")
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {type(shape).__name__}") from None
    out = []
    for d in dims:
        if isinstance(d, bool):
            raise TypeError(f"{name} must hold ints, got bool in {dims!r}")
        if type(d) is int:  # the common case (and the one torch.compile traces)
            out.append(d)
            continue
        try:
            out.append(operator.index(d))
        except TypeError:
            raise TypeError(f"{name} must hold ints, got {type(d).__name__} in {dims!r}") from None
    shape = tuple(out)
    if len(shape) == 0:
        raise ValueError(f"{name} must have at least one (row) dimension, got ()")
    if any(d < 0 for d in shape):
        raise ValueError(f"{name} must hold sizes >= 0, got {shape}")
    if any(d > MAX_NUMEL for d in shape):
        raise ValueError(f"{name}={shape} has a size above 2**63 - 1, more than a tensor dimension can hold")
    if math.prod(shape) > MAX_NUMEL:
        raise ValueError(f"{name}={shape} has {math.prod(shape)} elements, more than a tensor can hold (2**63 - 1)")
    return shape


def draw_seed() -> int:
    """One seed from torch's global CPU generator: reproducible with ``torch.manual_seed``, no device sync.

    Example:
        >>> _ = torch.manual_seed(0); a = draw_seed(); _ = torch.manual_seed(0)
        >>> a == draw_seed()
        True
    """
    return int(torch.randint(0, DRAWN_SEED_BOUND, (1,)).item())


def resolve_seed(seed: "int | None") -> int:
    """``seed`` validated (see :func:`split_seed`), or :func:`draw_seed` when it is ``None``.

    Example:
        >>> resolve_seed(7)
        7
    """
    if seed is None:
        return draw_seed()
    split_seed(seed)
    return seed


def split_seed(seed: int) -> tuple[int, int]:
    """Validate ``seed`` and return its (low, high) 32-bit words."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int in [0, 2**63), got {type(seed).__name__}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed & _MASK32, (seed >> 32) & _MASK32


def _mulhilo(m: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # m*b overflows int64, so split b into 16-bit halves: both partial products < 2**48.
    b_hi, b_lo = b >> 16, b & 0xFFFF
    p_hi, p_lo = m * b_hi, m * b_lo
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK32
    return hi, lo


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors holding uint32 values (bit-exact with the kernel)."""
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


_NP_MASK, _NP_32 = np.uint64(_MASK32), np.uint64(32)
_NP_U32 = np.uint32
_F32_HALF, _F32_2M24 = np.float32(0.5), np.float32(1.0 / 16777216.0)
_F32_M2 = np.float32(-2.0)

# sincos_turns (kernels/philox.py): the same float32 constants and operations, in the same order
_SIN = tuple(np.float32(v) for v in (-1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362880.0))  # b^3 .. b^9
_COS = tuple(np.float32(v) for v in (-0.5, 1.0 / 24.0, -1.0 / 720.0, 1.0 / 40320.0, -1.0 / 3628800.0))
_F32_4, _F32_1, _F32_HALF_PI = np.float32(4.0), np.float32(1.0), np.float32(math.pi / 2)


def _horner(b2, coefs):
    """``coefs[0] + b2*(coefs[1] + b2*(... + b2*coefs[-1]))``, innermost first, in place after one product."""
    acc = b2 * coefs[-1]
    for coef in coefs[-2:0:-1]:
        acc += coef
        acc *= b2
    acc += coefs[0]
    return acc


def _sincos_poly(u, floor):
    """The polynomial half of the kernels' ``sincos_turns`` for float32 u in (0, 1), on numpy arrays or torch
    tensors (``floor`` is the library's): ``(sin b, cos b, k)`` with 2*pi*u = k*pi/2 + b, |b| <= pi/4.

    The in-place steps are the kernel's operations in its order (``s3 + b2*(s5 + b2*(s7 + b2*s9))`` is
    ``b2*s9``, ``+ s7``, ``* b2``, ...): float32 addition and multiplication commute exactly.
    """
    t = u * _F32_4
    k = floor(t + _F32_HALF)
    b = t - k
    b *= _F32_HALF_PI
    b2 = b * b
    s = b * b2
    s *= _horner(b2, _SIN)
    s += b
    c = _horner(b2, (_F32_1,) + _COS)
    return s, c, k


def _sincos_turns_np(u: np.ndarray) -> tuple:
    """(sin, cos) of 2*pi*u: the quadrant k mod 4 swaps and signs (sin b, cos b) with bit operations (numpy's
    masked ``where`` costs ~8 ns an element on random masks; these are ~0.2 ns). Exact, like the kernel's
    selects."""
    s, c, k = _sincos_poly(u, np.floor)
    q = k.astype(np.uint32)
    q &= np.uint32(3)
    swap = q & np.uint32(1)
    np.negative(swap, out=swap)  # 0 or all ones
    sb, cb = s.view(np.uint32), c.view(np.uint32)
    diff = sb ^ cb
    diff &= swap
    sin, cos = sb ^ diff, cb ^ diff  # odd quadrants: (cos b, sin b)
    neg = q & np.uint32(2)  # quadrants 2, 3: sin < 0
    neg <<= np.uint32(30)
    sin ^= neg
    q += np.uint32(1)  # quadrants 1, 2: cos < 0
    q &= np.uint32(2)
    q <<= np.uint32(30)
    cos ^= q
    return sin.view(np.float32), cos.view(np.float32)


def _sincos_turns_torch(u: torch.Tensor) -> tuple:
    """(sin, cos) of 2*pi*u, as ``_sincos_turns_np`` (the same bits) with torch's selects."""
    s, c, k = _sincos_poly(u, torch.floor)
    q = k.to(torch.int32) & 3
    swap = (q & 1) == 1
    sin, cos = torch.where(swap, c, s), torch.where(swap, s, c)
    return torch.where(q >= 2, -sin, sin), torch.where((q == 1) | (q == 2), -cos, cos)


_NP_MULT = np.array([_M0, _M1], dtype=np.uint64).reshape(2, 1, 1)
_ROUNDS = np.arange(10, dtype=np.uint64)
_WIDE_MAX = 512


def _philox_words(words: np.ndarray, k0: int, k1: int) -> np.ndarray:
    """Philox4x32-10 in place on a (4, ...) uint32 array holding the counters as rows (c0, c2, c1, c3).

    Same words as ``philox4x32_10`` (the int64 torch emulation), with the two lanes of each round in one
    array: five numpy calls per round, uint32 state for large draws (half the memory traffic) and the
    32x32->64 products in uint64, which are exact. The high words are a shift, the low words a truncating
    copy. On CPU this is ~100x faster than the torch emulation.
    """
    even, odd = words[0:2], words[2:4]  # (c0, c2) and (c1, c3)
    wide = words.dtype == np.uint64
    # round keys (k0 + r W0, k1 + r W1) mod 2**32, one (2, 1, ...) column per round
    keys = np.stack([(np.uint64(k0) + _ROUNDS * np.uint64(_W0)) & _NP_MASK,
                     (np.uint64(k1) + _ROUNDS * np.uint64(_W1)) & _NP_MASK], axis=1).astype(words.dtype)
    bshape = (2,) + (1,) * (even.ndim - 1)
    keys = keys.reshape((10,) + bshape)
    mult = _NP_MULT.reshape(bshape)
    prod = np.empty(even.shape, np.uint64)
    rev = prod[::-1]  # (p1, p0)
    for r in range(10):
        np.multiply(even, mult, out=prod)  # (M0 c0, M1 c2)
        # (c0', c2') = (hi(p1) ^ c1 ^ k0, hi(p0) ^ c3 ^ k1); (c1', c3') = (lo(p1), lo(p0))
        if wide:
            np.right_shift(rev, _NP_32, out=even)
            even ^= odd
            even ^= keys[r]
            np.bitwise_and(rev, _NP_MASK, out=odd)
        else:
            np.right_shift(rev, _NP_32, out=even, casting="unsafe")
            even ^= odd
            even ^= keys[r]
            np.copyto(odd, rev, casting="unsafe")  # uint64 -> uint32 keeps the low word
    return words


def _host_normals(rows: int, groups: int, row_ids: torch.Tensor, stream: int, k0: int, k1: int) -> torch.Tensor:
    """(rows, groups, 4) float32 normals on the CPU: the numba loop where it imports, else numpy (same bits)."""
    out = normals_jit(rows, groups, row_ids, stream, k0, k1)
    return _normals_numpy(rows, groups, row_ids, stream, k0, k1) if out is None else out


@torch.library.custom_op("fastdiff::philox_normals_cpu", mutates_args=())
def _philox_normals_cpu(rows: int, groups: int, row_ids: torch.Tensor, stream: int, k0: int,
                        k1: int) -> torch.Tensor:
    """``_host_normals`` as a ``torch.library`` op: what a traced CPU ``philox_normal`` calls (see there)."""
    return _host_normals(rows, groups, row_ids, stream, k0, k1)


@_philox_normals_cpu.register_fake
def _(rows, groups, row_ids, stream, k0, k1):
    return row_ids.new_empty((rows, groups, 4), dtype=torch.float32)


def _normals_numpy(rows: int, groups: int, row_ids: torch.Tensor, stream: int, k0: int, k1: int) -> torch.Tensor:
    """(rows, groups, 4) float32 normals: Philox words, then Box-Muller in float32, in place.

    The float32 operations and their order are those of the kernel (and of the earlier version with a
    temporary per operation), so the values are bit-for-bit unchanged; only the memory traffic and the
    number of numpy calls are smaller.
    """
    rid = row_ids.cpu().numpy().astype(np.uint64)
    # uint32 state halves the memory traffic of large draws; uint64 state (no casting) has the cheaper
    # numpy calls, which is what counts for small ones (the crossover is near 1k counters)
    wdt = np.uint64 if rows * groups <= _WIDE_MAX else _NP_U32
    words = np.empty((4, rows, groups), wdt)
    words[0] = np.arange(groups, dtype=wdt)     # c0: the column group
    words[1] = stream                           # c2: the stream
    words[2] = (rid & _NP_MASK)[:, None]        # c1: row id, low word
    words[3] = (rid >> _NP_32)[:, None]         # c3: row id, high word
    _philox_words(words, k0, k1)
    # pair p of the 4 outputs: u_a = (c0, c2)[p] (radius), u_b = (c1, c3)[p] (angle)
    np.right_shift(words, words.dtype.type(8), out=words)
    u = words.astype(np.float32)  # < 2**24: exact
    u += _F32_HALF
    u *= _F32_2M24
    radius, turns = u[0:2], u[2:4]
    np.log(radius, out=radius)
    radius *= _F32_M2
    np.sqrt(radius, out=radius)
    sin, cos = _sincos_turns_np(turns)
    out = np.empty((rows, groups, 2, 2), dtype=np.float32)
    view = out.transpose(2, 0, 1, 3)  # view[p, ..., j] is output 2p + j
    np.multiply(radius, cos, out=view[..., 0])
    np.multiply(radius, sin, out=view[..., 1])
    return torch.from_numpy(out)


def _unit(u: torch.Tensor) -> torch.Tensor:
    return ((u >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def philox_normal(
    shape: Union[Sequence[int], torch.Size],
    seed: int,
    stream: int = 0,
    *,
    row_ids: Optional[torch.Tensor] = None,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normals of ``shape`` from the fastdiff Philox stream.

    Dimension 0 is the row (batch) axis; the rest are flattened into columns.
    ``row_ids`` (int64, one per row; default ``arange(shape[0])``) are the rows'
    global ids. The result matches the Triton kernels' noise element for element.

    Example:
        >>> fastdiff.philox_normal((4, 3, 8, 8), seed=7).shape
        torch.Size([4, 3, 8, 8])
    """
    shape = check_shape(shape)
    k0, k1 = split_seed(seed)
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream <= _MASK32:
        raise ValueError(f"stream must be an int in [0, 2**32), got {stream!r}")
    device = check_device(device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if row_ids is not None and not isinstance(row_ids, torch.Tensor):
        raise TypeError(f"row_ids must be an int64 tensor, got {type(row_ids).__name__}")
    if row_ids is not None and device is None:
        device = row_ids.device
    rows = shape[0]
    cols = math.prod(shape[1:])
    if rows and cols > MAX_COLUMNS:
        raise ValueError(f"shape={shape} has {cols} columns per row; the Philox column counter allows at most "
                         f"4 * 2**32 = {MAX_COLUMNS}")
    if rows and cols:
        # the draw holds (rows, ceil(cols/4)) counters of four words (int64 on the torch path) and the
        # (rows, 4*ceil(cols/4)) float32 result: refuse what the host could never allocate, before allocating
        need = rows * ((cols + 3) // 4) * 4 * 8
        if need > MAX_NUMEL:
            raise ValueError(f"shape={shape} needs {need} bytes of Philox state, more than can be allocated")
    if row_ids is None:
        if rows == 0 or cols == 0:
            return torch.empty(shape, dtype=dtype, device=device)
        row_ids = torch.arange(rows, dtype=torch.int64, device=device)
    else:
        if row_ids.dtype != torch.int64 or row_ids.shape != (rows,):
            raise ValueError(f"row_ids must be an int64 tensor of shape ({rows},), got {tuple(row_ids.shape)} {row_ids.dtype}")
        row_ids = row_ids.to(device)
    if rows == 0 or cols == 0:  # nothing to draw (and no (rows,) row ids to build for a (huge, 0) shape)
        return torch.empty(shape, dtype=dtype, device=device)
    groups = (cols + 3) // 4
    if torch.device(device if device is not None else "cpu").type == "cpu":
        # the compiled loop (numba) where it imports, else numpy: the same words and float32 operations. Traced
        # (torch.compile), the same host code runs as one opaque op: dynamo cannot trace numpy uint64 code, and
        # inductor takes minutes over the int64 emulation below (ten Philox rounds inlined per draw)
        if torch.compiler.is_compiling():
            out = torch.ops.fastdiff.philox_normals_cpu(rows, groups, row_ids, stream, k0, k1)
        else:
            out = _host_normals(rows, groups, row_ids, stream, k0, k1)
        return out.reshape(rows, groups * 4)[:, :cols].reshape(shape).to(dtype)
    c0 = torch.arange(groups, dtype=torch.int64, device=device).expand(rows, groups)
    c1 = (row_ids & _MASK32)[:, None].expand(rows, groups)
    c2 = torch.full((rows, groups), stream, dtype=torch.int64, device=device)
    c3 = (row_ids >> 32)[:, None].expand(rows, groups) & _MASK32
    o0, o1, o2, o3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    out = torch.empty(rows, groups, 4, dtype=torch.float32, device=device)
    for pair, (ua, ub) in enumerate(((o0, o1), (o2, o3))):
        radius = torch.sqrt(-2.0 * torch.log(_unit(ua)))
        sin, cos = _sincos_turns_torch(_unit(ub))
        out[:, :, 2 * pair] = radius * cos
        out[:, :, 2 * pair + 1] = radius * sin
    out = out.reshape(rows, groups * 4)[:, :cols]
    return out.reshape(shape).to(dtype)
