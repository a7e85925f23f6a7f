"""Counter-based Philox4x32-10 Gaussian noise (Salmon et al., SC'11).

The stream is defined by position, not by launch layout: element ``col`` of row
``row`` in noise stream ``stream`` under key ``seed`` is a fixed number. Four
consecutive columns share one Philox call (group ``col // 4``) and take its four
32-bit outputs through two Box-Muller pairs. The angle 2*pi*u of a pair is reduced
exactly from u (nearest quarter turn) and its sine and cosine are polynomials on
[-pi/4, pi/4] (``sincos_turns``): no general range reduction, no slow path.
Counter words:

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
HALF_PI = tl.constexpr(1.5707963267948966)
INV_2_24 = tl.constexpr(5.9604644775390625e-08)
# Taylor coefficients of sin (b^3..b^9) and cos (b^2..b^10) on |b| <= pi/4: truncation below 2e-9, under the
# float32 rounding of the result (fastdiff.random repeats these operations in the same order on CPU)
SIN3 = tl.constexpr(-1.0 / 6.0)
SIN5 = tl.constexpr(1.0 / 120.0)
SIN7 = tl.constexpr(-1.0 / 5040.0)
SIN9 = tl.constexpr(1.0 / 362880.0)
COS2 = tl.constexpr(-0.5)
COS4 = tl.constexpr(1.0 / 24.0)
COS6 = tl.constexpr(-1.0 / 720.0)
COS8 = tl.constexpr(1.0 / 40320.0)
COS10 = tl.constexpr(-1.0 / 3628800.0)


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
def sincos_turns(u):
    """(sin, cos) of 2*pi*u for float32 u in (0, 1): u = k/4 + r/4 with k the nearest quarter turn (exact), then
    polynomials in b = r*pi/2, |b| <= pi/4, and the quadrant k mod 4 picks and signs them."""
    t = u * 4.0
    k = tl.floor(t + 0.5)
    b = (t - k) * HALF_PI
    b2 = b * b
    ps = SIN5 + b2 * (SIN7 + b2 * SIN9)
    ps = SIN3 + b2 * ps
    s = b + (b * b2) * ps
    pc = COS6 + b2 * (COS8 + b2 * COS10)
    pc = COS2 + b2 * (COS4 + b2 * pc)
    c = 1.0 + b2 * pc
    q = k.to(tl.int32) & 3
    sin = tl.where(q == 0, s, tl.where(q == 1, c, tl.where(q == 2, -s, -c)))
    cos = tl.where(q == 0, c, tl.where(q == 1, -s, tl.where(q == 2, -c, s)))
    return sin, cos


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
    sin, cos = sincos_turns(ub)
    return tl.where((lane % 2) == 0, radius * cos, radius * sin)


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
    s01, c01 = sincos_turns(uint32_to_unit(o1))
    r23 = tl.sqrt(-2.0 * tl.log(uint32_to_unit(o2)))
    s23, c23 = sincos_turns(uint32_to_unit(o3))
    n0 = r01 * c01
    n1 = r01 * s01
    n2 = r23 * c23
    n3 = r23 * s23
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
