"""Forward noising (the fixed encoder) in one memory pass.

    x_t    = a*x0 + s*z
    target = ta*x0 + tn*z      (optional: epsilon, v, x0 or flow velocity)

Coefficients ``(a, s, ta, tn)`` come from a device table ``coef[R, 4]`` gathered
in-kernel at row ``idx[b]`` (a per-sample training timestep), or row ``b`` when
no index is given (continuous-time schedules precompute one row per sample).
The same kernel runs the encoder's one-step Markov transition with the table
``(sqrt(1 - beta_t), sqrt(beta_t), ., .)``.
"""
import triton
import triton.language as tl

from .philox import flat_offsets, philox_noise

NUM_ENCODE_COEFS = tl.constexpr(4)


# Integer arguments equal to 1 would be specialised into constants (and recompiled); these vary per call.
@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "stream"])
def fused_encode_kernel(
    x0_ptr, noise_ptr, out_ptr, target_ptr, noise_out_ptr,
    coef_ptr, idx_ptr, row_ids_ptr,
    n_cols, total, seed_lo, seed_hi, stream,
    HAS_IDX: tl.constexpr, NOISE_MODE: tl.constexpr, WRITE_TARGET: tl.constexpr,
    WRITE_NOISE: tl.constexpr, HAS_ROW_IDS: tl.constexpr, GROUPED_NOISE: tl.constexpr, IDX64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = flat_offsets(pid, IDX64, BLOCK)
    mask = offs < total
    row = offs // n_cols
    if HAS_IDX:
        base = tl.load(idx_ptr + row, mask=mask, other=0) * NUM_ENCODE_COEFS
    else:
        base = row * NUM_ENCODE_COEFS
    a = tl.load(coef_ptr + base, mask=mask, other=0.0)
    s = tl.load(coef_ptr + base + 1, mask=mask, other=0.0)
    x0 = tl.load(x0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NOISE_MODE == 1:
        z = philox_noise(seed_lo, seed_hi, stream, pid, offs, row, mask, n_cols, total, row_ids_ptr,
                         HAS_ROW_IDS, GROUPED_NOISE, IDX64, BLOCK)
    else:
        z = tl.load(noise_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (a * x0 + s * z).to(out_ptr.dtype.element_ty), mask=mask)
    if WRITE_TARGET:
        ta = tl.load(coef_ptr + base + 2, mask=mask, other=0.0)
        tn = tl.load(coef_ptr + base + 3, mask=mask, other=0.0)
        tl.store(target_ptr + offs, (ta * x0 + tn * z).to(target_ptr.dtype.element_ty), mask=mask)
    if WRITE_NOISE:
        tl.store(noise_out_ptr + offs, z.to(noise_out_ptr.dtype.element_ty), mask=mask)
