"""Leapfrog passes of Hamiltonian Monte Carlo for many chains at once.

One kernel, one pass over ``(x, p, grad)`` per gradient evaluation:

    p_new = p + kick*h*g                (kick = 1/2 at a trajectory's ends, 1 between)
    x_new = x + h * inv_mass * p_new    (DRIFT; not after the last gradient of a trajectory)

with per-chain step ``h`` (a device vector, or one host float) and a diagonal inverse mass ``inv_mass`` shared by
all chains (one value per column). ``MOMENTUM`` picks where ``p`` comes from: 0 loads it, 1 draws a fresh
momentum ``p = z / sqrt(inv_mass)`` (``p ~ N(0, M)``) from in-kernel Philox normals ``z``, 2 builds it from a
given ``z``; the refresh pass thus fuses the momentum draw, the first half-kick and the first drift.
``noise_out`` optionally keeps ``z`` (the initial kinetic energy is ``|z|^2 / 2``).
"""
import triton
import triton.language as tl

from .philox import flat_offsets, philox_noise


# Integer arguments equal to 1 would be specialised into constants (and recompiled); these vary per call.
@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "stream"])
def hmc_leapfrog_kernel(
    x_ptr, p_ptr, g_ptr, step_ptr, inv_mass_ptr, noise_ptr, x_out_ptr, p_out_ptr, noise_out_ptr, row_ids_ptr,
    n_cols, total, step_scalar, kick, seed_lo, seed_hi, stream,
    MOMENTUM: tl.constexpr, DRIFT: tl.constexpr, PER_ROW: tl.constexpr, HAS_MASS: tl.constexpr,
    WRITE_NOISE: tl.constexpr, HAS_ROW_IDS: tl.constexpr, GROUPED_NOISE: tl.constexpr, IDX64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = flat_offsets(pid, IDX64, BLOCK)
    mask = offs < total
    row = offs // n_cols
    if PER_ROW:
        h = tl.load(step_ptr + row, mask=mask, other=0.0).to(tl.float32)
    else:
        h = step_scalar
    if HAS_MASS:
        inv_m = tl.load(inv_mass_ptr + offs % n_cols, mask=mask, other=1.0).to(tl.float32)
    else:
        inv_m = 1.0
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if MOMENTUM == 0:
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        if MOMENTUM == 1:
            z = philox_noise(seed_lo, seed_hi, stream, pid, offs, row, mask, n_cols, total, row_ids_ptr,
                             HAS_ROW_IDS, GROUPED_NOISE, IDX64, BLOCK)
        else:
            z = tl.load(noise_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_MASS:
            p = z / tl.sqrt(inv_m)
        else:
            p = z
        if WRITE_NOISE:
            tl.store(noise_out_ptr + offs, z.to(noise_out_ptr.dtype.element_ty), mask=mask)
    p = p + (kick * h) * g
    tl.store(p_out_ptr + offs, p.to(p_out_ptr.dtype.element_ty), mask=mask)
    if DRIFT:
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = x + h * (inv_m * p)
        tl.store(x_out_ptr + offs, x.to(x_out_ptr.dtype.element_ty), mask=mask)
