"""Counter-based Philox4x32-10 Gaussian noise (Salmon et al., SC'11).

The stream is defined by position, not by launch layout: element ``col`` of row
``row`` in noise stream ``stream`` under key ``seed`` is a fixed number. Four
consecutive columns share one Philox call (group ``col // 4``) and take its four
32-bit outputs through two Box-Muller pairs. Counter words:

    c0 = col // 4        c1 = row & 0xffffffff
    c2 = stream          c3 = row >> 32
    key = (seed & 0xffffffff, seed >> 32)

so a row's noise is independent of batch size, batch split, block size and
device. ``fastdiff.random.philox_normal`` reproduces the same stream in PyTorch.
"""
import triton
import triton.language as tl

PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)
TWO_PI = tl.constexpr(6.283185307179586)
INV_2_24 = tl.constexpr(5.9604644775390625e-08)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on uint32 counter words; returns four uint32 words."""
    for _ in tl.static_range(10):
        _c0 = c0
        _c2 = c2
        c0 = tl.math.umulhi(PHILOX_M1, _c2) ^ c1 ^ k0
        c2 = tl.math.umulhi(PHILOX_M0, _c0) ^ c3 ^ k1
        c1 = PHILOX_M1 * _c2
        c3 = PHILOX_M0 * _c0
        k0 = k0 + PHILOX_W0
        k1 = k1 + PHILOX_W1
    return c0, c1, c2, c3


@triton.jit
def uint32_to_unit(u):
    """Top 24 bits -> float32 in (0, 1), exactly representable (no 0, no 1)."""
    return ((u >> 8).to(tl.float32) + 0.5) * INV_2_24


@triton.jit
def randn_rowcol(seed_lo, seed_hi, row, stream, col):
    """Standard normal for each (row, col); row and col are int64 tensors.

    seed_lo, seed_hi, stream: host ints below 2**32.
    """
    group = col // 4
    lane = col % 4
    c0 = group.to(tl.uint32)
    c1 = (row & 0xFFFFFFFF).to(tl.uint32)
    c2 = (group * 0).to(tl.uint32) + stream.to(tl.uint32)
    c3 = (row >> 32).to(tl.uint32)
    k0 = (c0 * 0) + seed_lo.to(tl.uint32)
    k1 = (c0 * 0) + seed_hi.to(tl.uint32)
    o0, o1, o2, o3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    first_pair = lane < 2
    ua = uint32_to_unit(tl.where(first_pair, o0, o2))
    ub = uint32_to_unit(tl.where(first_pair, o1, o3))
    radius = tl.sqrt(-2.0 * tl.log(ua))
    theta = TWO_PI * ub
    return tl.where((lane % 2) == 0, radius * tl.cos(theta), radius * tl.sin(theta))


@triton.jit
def randn_block4(seed_lo, seed_hi, stream, pid, n_cols, total, row_ids_ptr,
                 HAS_ROW_IDS: tl.constexpr, IDX64: tl.constexpr, BLOCK: tl.constexpr):
    """The normals for flat elements [pid*BLOCK, (pid+1)*BLOCK) with one Philox call per 4 elements.

    Same numbers as ``randn_rowcol``, 4x fewer Philox rounds; needs ``n_cols % 4 == 0`` so that
    every aligned group of 4 flat elements is one (row, col // 4) group.
    """
    GROUPS: tl.constexpr = BLOCK // 4
    if IDX64:
        first = (pid.to(tl.int64) * GROUPS + tl.arange(0, GROUPS).to(tl.int64)) * 4
    else:
        first = (pid * GROUPS + tl.arange(0, GROUPS)) * 4
    gmask = first < total
    row = first // n_cols
    if HAS_ROW_IDS:
        rid = tl.load(row_ids_ptr + row, mask=gmask, other=0)
    else:
        rid = row.to(tl.int64)
    c0 = ((first % n_cols) // 4).to(tl.uint32)
    c1 = (rid & 0xFFFFFFFF).to(tl.uint32)
    c2 = (c0 * 0) + stream.to(tl.uint32)
    c3 = (rid >> 32).to(tl.uint32)
    k0 = (c0 * 0) + seed_lo.to(tl.uint32)
    k1 = (c0 * 0) + seed_hi.to(tl.uint32)
    o0, o1, o2, o3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    r01 = tl.sqrt(-2.0 * tl.log(uint32_to_unit(o0)))
    t01 = TWO_PI * uint32_to_unit(o1)
    r23 = tl.sqrt(-2.0 * tl.log(uint32_to_unit(o2)))
    t23 = TWO_PI * uint32_to_unit(o3)
    n0 = r01 * tl.cos(t01)
    n1 = r01 * tl.sin(t01)
    n2 = r23 * tl.cos(t23)
    n3 = r23 * tl.sin(t23)
    # join(join(n0, n2), join(n1, n3)) flattens to n0, n1, n2, n3 per group.
    return tl.reshape(tl.join(tl.join(n0, n2), tl.join(n1, n3)), [BLOCK])


@triton.jit
def flat_offsets(pid, IDX64: tl.constexpr, BLOCK: tl.constexpr):
    """This program's flat element offsets: int64 when the tensor may pass 2**31 elements."""
    if IDX64:
        return pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        return pid * BLOCK + tl.arange(0, BLOCK)


@triton.jit
def philox_noise(seed_lo, seed_hi, stream, pid, offs, row, mask, n_cols, total, row_ids_ptr,
                 HAS_ROW_IDS: tl.constexpr, GROUPED: tl.constexpr, IDX64: tl.constexpr, BLOCK: tl.constexpr):
    """The Philox normals of this block's elements (one call per 4 elements when ``GROUPED``)."""
    if GROUPED:
        return randn_block4(seed_lo, seed_hi, stream, pid, n_cols, total, row_ids_ptr, HAS_ROW_IDS, IDX64, BLOCK)
    else:
        if HAS_ROW_IDS:
            rid = tl.load(row_ids_ptr + row, mask=mask, other=0)
        else:
            rid = row.to(tl.int64)
        return randn_rowcol(seed_lo, seed_hi, rid, stream, (offs % n_cols).to(tl.int64))
