"""Compile every fastdiff kernel variant for NVIDIA targets without a GPU (Triton's ahead-of-time path).

Run as a script in a process WITHOUT TRITON_INTERPRET (the interpreter never lowers to PTX, so it cannot catch
what only the GPU compiler rejects: non-constexpr globals, constexpr-specialised arguments, layout errors in
tl.join/tl.reshape). Prints one line per variant and exits non-zero on the first failure.
"""
import itertools
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastdiff.kernels.encode import fused_encode_kernel
from fastdiff.kernels.langevin import langevin_kernel, langevin_select_kernel
from fastdiff.kernels.step import fused_step_kernel
from fastdiff.kernels.underdamped import underdamped_kernel

PTR = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}


def step_variants():
    for dtype, (grouped, per_row), noise_mode, idx64 in itertools.product(
            ("fp32", "bf16"), ((True, True), (False, False)), (0, 1, 2), (False, True)):
        p = PTR[dtype]
        sig = {"x_ptr": p, "xe_ptr": p, "m_ptr": "*fp16", "h0_ptr": p, "h1_ptr": p, "h2_ptr": p, "noise_ptr": p,
               "u_ptr": p, "out_ptr": p, "aux_ptr": "*fp32", "coef_ptr": "*fp32", "coef_idx_ptr": "*i64", "row_ids_ptr": "*i64",
               "coef_row": "i32", "n_cols": "i32", "total": "i64" if idx64 else "i32", "clip_value": "fp32",
               "seed_lo": "i32", "seed_hi": "i32", "stream": "i32"}
        # UNCOND (the CFG++ u term) cycles with the noise mode: every mode is compiled without tripling the set
        ce = {"HAS_EVAL": True, "GUIDANCE": True, "UNCOND": (1, 2, 0)[noise_mode], "DO_CLIP": True, "N_HIST": 3, "NOISE_MODE": noise_mode,
              "WRITE_AUX": True, "PER_ROW": per_row, "HAS_ROW_IDS": True, "GROUPED_NOISE": grouped, "IDX64": idx64,
              "BLOCK": 1024}
        yield f"step {dtype} grouped={grouped} per_row={per_row} noise={noise_mode} uncond={(1, 2, 0)[noise_mode]} idx64={idx64}", \
            fused_step_kernel, sig, ce


def encode_variants():
    for dtype, grouped, noise_mode in itertools.product(("fp32", "bf16"), (True, False), (1, 2)):
        p = PTR[dtype]
        sig = {"x0_ptr": p, "noise_ptr": p, "out_ptr": p, "target_ptr": p, "noise_out_ptr": p, "coef_ptr": "*fp32",
               "idx_ptr": "*i64", "row_ids_ptr": "*i64", "n_cols": "i32", "total": "i32", "seed_lo": "i32",
               "seed_hi": "i32", "stream": "i32"}
        ce = {"HAS_IDX": True, "NOISE_MODE": noise_mode, "WRITE_TARGET": True, "WRITE_NOISE": True,
              "HAS_ROW_IDS": grouped, "GROUPED_NOISE": grouped, "IDX64": False, "BLOCK": 1024}
        yield f"encode {dtype} grouped={grouped} noise={noise_mode}", fused_encode_kernel, sig, ce


def langevin_variants():
    for dtype, grouped, per_row in itertools.product(("fp32", "bf16"), (True, False), (True, False)):
        p = PTR[dtype]
        sig = {"x_ptr": p, "g_ptr": p, "step_ptr": "*fp32", "noise_ptr": p, "out_ptr": p, "noise_out_ptr": "*fp32",
               "row_ids_ptr": "*i64", "n_cols": "i32", "total": "i32", "step_scalar": "fp32", "temperature": "fp32",
               "seed_lo": "i32", "seed_hi": "i32", "stream": "i32"}
        ce = {"PER_ROW": per_row, "NOISE_MODE": 1, "WRITE_NOISE": True, "HAS_ROW_IDS": True,
              "GROUPED_NOISE": grouped, "IDX64": False, "BLOCK": 1024}
        yield f"langevin {dtype} grouped={grouped} per_row={per_row}", langevin_kernel, sig, ce
    sig = {"x_ptr": "*fp32", "prop_ptr": "*fp32", "accept_ptr": "*i1", "out_ptr": "*fp32", "n_cols": "i32",
           "total": "i32"}
    yield "langevin_select", langevin_select_kernel, sig, {"IDX64": False, "BLOCK": 1024}


def underdamped_variants():
    for dtype, (grouped, per_row, per_col_mass), drift in itertools.product(
            ("fp32", "bf16"), ((True, True, True), (False, False, False)), (True, False)):
        p = PTR[dtype]
        sig = {"x_ptr": p, "v_ptr": p, "g_ptr": p, "step_ptr": "*fp32", "mass_ptr": "*fp32", "noise_ptr": p,
               "row_ids_ptr": "*i64", "x_out_ptr": p, "v_out_ptr": p, "n_cols": "i32", "total": "i32",
               "step_scalar": "fp32", "kick": "fp32", "friction": "fp32", "temperature": "fp32",
               "mass_scalar": "fp32", "seed_lo": "i32", "seed_hi": "i32", "stream": "i32"}
        ce = {"PER_ROW": per_row, "PER_COL_MASS": per_col_mass, "NOISE_MODE": 1, "DRIFT": drift,
              "HAS_ROW_IDS": True, "GROUPED_NOISE": grouped, "IDX64": False, "BLOCK": 1024}
        yield f"underdamped {dtype} grouped={grouped} per_row={per_row} mass={per_col_mass} drift={drift}", \
            underdamped_kernel, sig, ce


def main(argv):
    quick = "--quick" in argv
    archs = [90] if quick else [80, 90]
    variants = (list(step_variants()) + list(encode_variants()) + list(langevin_variants())
                + list(underdamped_variants()))
    if quick:
        variants = variants[::3] + [v for v in variants if v[0] == "langevin_select"]
    for arch in archs:
        for name, fn, sig, ce in variants:
            try:
                kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=ce),
                                        target=GPUTarget("cuda", arch, 32))
            except Exception as exc:  # noqa: BLE001 - report any compiler failure with its variant
                print(f"FAIL sm_{arch} {name}: {type(exc).__name__}: {exc}")
                return 1
            print(f"ok   sm_{arch} {name} ({len(kernel.asm['ptx'])} bytes of PTX)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
