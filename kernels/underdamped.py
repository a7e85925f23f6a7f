"""Underdamped (kinetic) Langevin: one BAOAB step (Leimkuhler & Matthews 2013) of many chains in one pass.

With momentum ``p`` (the op's ``v``), diagonal mass ``m``, friction ``gamma``, temperature ``T`` and
per-chain step ``h``, the pass is

    p += kick*h*g                        (B; kick = 1/2 on a run's first step, 1 when it merges the
                                          closing half-kick of the previous step with this one's opening)
    x += h/2 * p/m                       (A)
    p  = c*p + sqrt((1 - c^2)*T*m) * z   (O, the exact Ornstein-Uhlenbeck refresh, c = exp(-gamma*h))
    x += h/2 * p/m                       (A)

with in-kernel Philox noise ``z`` keyed by (seed, chain id, stream, column). ``DRIFT=False`` runs only
the kick (``p += kick*h*g``: a run's closing half-kick); ``x`` is then neither read nor written.
"""
import triton
import triton.language as tl

from .langevin import chain_step
from .philox import flat_offsets, philox_noise


@triton.jit
def one_minus_exp_neg(a):
    """``1 - exp(-a)`` for ``a >= 0`` to float32 rounding: a Taylor polynomial below 0.7 (where
    ``1 - exp(-a)`` would cancel: at a = 1e-3 it loses 10 of 24 bits), the direct form above (exact to
    1.2e-7 relative there). Truncation of the polynomial: a^11/11! < 1e-9 of the result at a = 0.7."""
    t = 1.0 - a * (1.0 / 11.0)
    t = 1.0 - a * (1.0 / 10.0) * t
    t = 1.0 - a * (1.0 / 9.0) * t
    t = 1.0 - a * (1.0 / 8.0) * t
    t = 1.0 - a * (1.0 / 7.0) * t
    t = 1.0 - a * (1.0 / 6.0) * t
    t = 1.0 - a * (1.0 / 5.0) * t
    t = 1.0 - a * (1.0 / 4.0) * t
    t = 1.0 - a * (1.0 / 3.0) * t
    t = 1.0 - a * 0.5 * t
    return tl.where(a < 0.7, a * t, 1.0 - tl.exp(-a))


# Integer arguments equal to 1 would be specialised into constants (and recompiled); these vary per call.
@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "stream"])
def underdamped_kernel(
    x_ptr, v_ptr, g_ptr, step_ptr, mass_ptr, noise_ptr, row_ids_ptr, x_out_ptr, v_out_ptr,
    n_cols, total, step_scalar, kick, friction, temperature, mass_scalar, seed_lo, seed_hi, stream,
    PER_ROW: tl.constexpr, PER_COL_MASS: tl.constexpr, NOISE_MODE: tl.constexpr, DRIFT: tl.constexpr,
    HAS_ROW_IDS: tl.constexpr, GROUPED_NOISE: tl.constexpr, IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = flat_offsets(pid, IDX64, BLOCK)
    mask = offs < total
    row = offs // n_cols
    h = chain_step(step_ptr, row, mask, step_scalar, PER_ROW)
    p = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    p = p + (kick * h) * g
    if DRIFT:
        if PER_COL_MASS:  # a tensor of one event's worth, else one host float
            m = tl.load(mass_ptr + (offs % n_cols), mask=mask, other=1.0).to(tl.float32)
        else:
            m = mass_scalar
        if NOISE_MODE == 1:
            z = philox_noise(seed_lo, seed_hi, stream, pid, offs, row, mask, n_cols, total, row_ids_ptr,
                             HAS_ROW_IDS, GROUPED_NOISE, IDX64, BLOCK)
        else:
            z = tl.load(noise_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        half_h = 0.5 * h
        c = tl.exp(-friction * h)
        sigma = tl.sqrt(one_minus_exp_neg(2.0 * friction * h) * temperature * m)
        x = x + half_h * (p / m)
        p = c * p + sigma * z
        x = x + half_h * (p / m)
        tl.store(x_out_ptr + offs, x.to(x_out_ptr.dtype.element_ty), mask=mask)
    tl.store(v_out_ptr + offs, p.to(v_out_ptr.dtype.element_ty), mask=mask)
