"""The denoising-step kernel family: one memory pass per sampler step.

Per element, with fp32 arithmetic whatever the storage dtype:

    m   = model_output                    (or m_u + g*(m_c - m_u) from [uncond; cond] halves)
    d   = in_x*xe + in_m*m                (the denoised x0 estimate; clamped to +-clip if asked)
    u   = in_x*xe + in_m*m_u              (optional: the unconditional x0 estimate, from the uncond half;
                                           or a given tensor; clamped like d)
    out = out_x*x + out_e*xe + out_m*m + out_d*d + out_u*u + sum_k out_h[k]*h[k] + out_noise*z
    aux = aux_x*xe + aux_d*d + aux_u*u    (optional: a history entry, e.g. d or (xe - d)/sigma)

``x`` is the sample being advanced, ``xe`` the sample the model saw (``x`` unless
a separate one is given, as in Heun's corrector), ``h`` up to three history
tensors, ``z`` noise from the Philox stream or a given tensor. ``u`` (CFG++, Chung et al. 2024) is read only
when ``UNCOND`` is 1 (from the guided halves) or 2 (the tensor at ``u_ptr``); otherwise its columns are
ignored. Coefficients come from a device table ``coef[R, NUM_COEFS]``: row ``coef_idx[b]`` for sample ``b``
when per-row, else row ``coef_row`` for all. Every sampler in fastdiff is a
choice of these coefficients, computed on the host in float64 once per schedule.
"""
import triton
import triton.language as tl

from .philox import flat_offsets, philox_noise

# Column order of the coefficient table (mirrored in fastdiff.ops.step.COEF_NAMES).
C_IN_X = tl.constexpr(0)
C_IN_M = tl.constexpr(1)
C_GUIDANCE = tl.constexpr(2)
C_OUT_X = tl.constexpr(3)
C_OUT_E = tl.constexpr(4)
C_OUT_M = tl.constexpr(5)
C_OUT_D = tl.constexpr(6)
C_OUT_H0 = tl.constexpr(7)
C_OUT_H1 = tl.constexpr(8)
C_OUT_H2 = tl.constexpr(9)
C_OUT_NOISE = tl.constexpr(10)
C_AUX_X = tl.constexpr(11)
C_AUX_D = tl.constexpr(12)
C_OUT_U = tl.constexpr(13)
C_AUX_U = tl.constexpr(14)
NUM_COEFS = tl.constexpr(15)


@triton.jit
def _coef(coef_ptr, base, col: tl.constexpr, mask, PER_ROW: tl.constexpr):
    """One coefficient: gathered per element's row, or a single scalar load shared by the block."""
    if PER_ROW:
        return tl.load(coef_ptr + base + col, mask=mask, other=0.0)
    else:
        return tl.load(coef_ptr + base + col)


# Integer arguments equal to 1 would be specialised into constants (and recompiled); these vary per call.
@triton.jit(do_not_specialize=["coef_row", "seed_lo", "seed_hi", "stream"])
def fused_step_kernel(
    x_ptr, xe_ptr, m_ptr, h0_ptr, h1_ptr, h2_ptr, noise_ptr, u_ptr,
    out_ptr, aux_ptr,
    coef_ptr, coef_idx_ptr, row_ids_ptr,
    coef_row, n_cols, total, clip_value,
    seed_lo, seed_hi, stream,
    HAS_EVAL: tl.constexpr, GUIDANCE: tl.constexpr, UNCOND: tl.constexpr, DO_CLIP: tl.constexpr,
    N_HIST: tl.constexpr, NOISE_MODE: tl.constexpr, WRITE_AUX: tl.constexpr,
    PER_ROW: tl.constexpr, HAS_ROW_IDS: tl.constexpr, GROUPED_NOISE: tl.constexpr, IDX64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = flat_offsets(pid, IDX64, BLOCK)
    mask = offs < total
    row = offs // n_cols
    if PER_ROW:
        base = tl.load(coef_idx_ptr + row, mask=mask, other=0) * NUM_COEFS
    else:
        base = coef_row * NUM_COEFS

    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_EVAL:
        xe = tl.load(xe_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        xe = x
    if GUIDANCE:
        m_u = tl.load(m_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        m_c = tl.load(m_ptr + total + offs, mask=mask, other=0.0).to(tl.float32)
        g = _coef(coef_ptr, base, C_GUIDANCE, mask, PER_ROW)
        m = m_u + g * (m_c - m_u)
    else:
        m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(tl.float32)

    in_x = _coef(coef_ptr, base, C_IN_X, mask, PER_ROW)
    in_m = _coef(coef_ptr, base, C_IN_M, mask, PER_ROW)
    d = in_x * xe + in_m * m
    if DO_CLIP:
        # Propagate NaN: a NaN x0 estimate must stay NaN, not become -clip (PTX min/max drop NaN by default).
        d = tl.minimum(tl.maximum(d, -clip_value, propagate_nan=tl.PropagateNan.ALL), clip_value,
                       propagate_nan=tl.PropagateNan.ALL)
    if UNCOND != 0:
        if UNCOND == 1:  # the uncond half, converted like the guided output (GUIDANCE is set: m_u is loaded)
            u = in_x * xe + in_m * m_u
        else:
            u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if DO_CLIP:
            u = tl.minimum(tl.maximum(u, -clip_value, propagate_nan=tl.PropagateNan.ALL), clip_value,
                           propagate_nan=tl.PropagateNan.ALL)

    acc = _coef(coef_ptr, base, C_OUT_X, mask, PER_ROW) * x \
        + _coef(coef_ptr, base, C_OUT_D, mask, PER_ROW) * d \
        + _coef(coef_ptr, base, C_OUT_M, mask, PER_ROW) * m
    if HAS_EVAL:
        acc += _coef(coef_ptr, base, C_OUT_E, mask, PER_ROW) * xe
    if UNCOND != 0:
        acc += _coef(coef_ptr, base, C_OUT_U, mask, PER_ROW) * u
    if N_HIST >= 1:
        acc += _coef(coef_ptr, base, C_OUT_H0, mask, PER_ROW) \
            * tl.load(h0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_HIST >= 2:
        acc += _coef(coef_ptr, base, C_OUT_H1, mask, PER_ROW) \
            * tl.load(h1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_HIST >= 3:
        acc += _coef(coef_ptr, base, C_OUT_H2, mask, PER_ROW) \
            * tl.load(h2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NOISE_MODE == 1:
        z = philox_noise(seed_lo, seed_hi, stream, pid, offs, row, mask, n_cols, total, row_ids_ptr,
                         HAS_ROW_IDS, GROUPED_NOISE, IDX64, BLOCK)
        acc += _coef(coef_ptr, base, C_OUT_NOISE, mask, PER_ROW) * z
    elif NOISE_MODE == 2:
        z = tl.load(noise_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc += _coef(coef_ptr, base, C_OUT_NOISE, mask, PER_ROW) * z

    if WRITE_AUX:
        aux = _coef(coef_ptr, base, C_AUX_X, mask, PER_ROW) * xe \
            + _coef(coef_ptr, base, C_AUX_D, mask, PER_ROW) * d
        if UNCOND != 0:
            aux += _coef(coef_ptr, base, C_AUX_U, mask, PER_ROW) * u
        tl.store(aux_ptr + offs, aux.to(aux_ptr.dtype.element_ty), mask=mask)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)
