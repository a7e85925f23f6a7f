"""Langevin updates for many chains at once.

    out = x + h*g + sqrt(2*h*T)*z          (unadjusted Langevin / MALA proposal)

with per-chain step ``h`` (a device vector, or one host float for all chains),
temperature ``T`` and in-kernel Philox noise ``z``. ``noise_out`` optionally
keeps ``z`` for MALA's proposal density. ``langevin_select_kernel`` applies the
Metropolis decision: ``out = accept[b] ? proposal : x`` per chain, in place.
"""
import triton
import triton.language as tl

from .philox import flat_offsets, philox_noise


@triton.jit
def chain_step(step_ptr, row, mask, step_scalar, PER_ROW: tl.constexpr):
    """Each element's step size: its chain's entry of the float32 ``step_ptr`` vector, or the one host float."""
    if PER_ROW:
        return tl.load(step_ptr + row, mask=mask, other=0.0).to(tl.float32)
    else:
        return step_scalar


# Integer arguments equal to 1 would be specialised into constants (and recompiled); these vary per call.
@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "stream"])
def langevin_kernel(
    x_ptr, g_ptr, step_ptr, noise_ptr, out_ptr, noise_out_ptr, row_ids_ptr,
    n_cols, total, step_scalar, temperature, seed_lo, seed_hi, stream,
    PER_ROW: tl.constexpr, NOISE_MODE: tl.constexpr, WRITE_NOISE: tl.constexpr,
    HAS_ROW_IDS: tl.constexpr, GROUPED_NOISE: tl.constexpr, IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = flat_offsets(pid, IDX64, BLOCK)
    mask = offs < total
    row = offs // n_cols
    h = chain_step(step_ptr, row, mask, step_scalar, PER_ROW)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NOISE_MODE == 1:
        z = philox_noise(seed_lo, seed_hi, stream, pid, offs, row, mask, n_cols, total, row_ids_ptr,
                         HAS_ROW_IDS, GROUPED_NOISE, IDX64, BLOCK)
    else:
        z = tl.load(noise_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    out = x + h * g + tl.sqrt(2.0 * h * temperature) * z
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
    if WRITE_NOISE:
        tl.store(noise_out_ptr + offs, z.to(noise_out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def langevin_select_kernel(
    x_ptr, prop_ptr, accept_ptr, out_ptr, n_cols, total,
    IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = flat_offsets(pid, IDX64, BLOCK)
    mask = offs < total
    row = offs // n_cols
    acc = tl.load(accept_ptr + row, mask=mask, other=0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    p = tl.load(prop_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, tl.where(acc != 0, p, x), mask=mask)
