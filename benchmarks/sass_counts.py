#!/usr/bin/env python3
"""Static instruction counts of the kernels for sm_90, without a GPU: SASS instructions per element.

Compiles kernel variants ahead of time (as ``tests/suites/aot_compile_kernels.py`` does), disassembles the cubin
with the ``cuobjdump`` that ships with Triton, and divides the straight-line instruction count by the
elements each thread handles. It is an upper bound of the work per element (code in branches counts even
when not taken), useful to compare variants and to see which ops can stay memory-bound::

    python benchmarks/sass_counts.py            # the noise-drawing variants and a noise-free step

On an H200 an elementwise op stays memory-bound below roughly 7-8 instructions per element per byte it moves
per element (132 SMs x 4 schedulers x ~1.8 GHz x 32 lanes, about 3e13 thread-instructions/s, against about
4e12 B/s): ~45 for a 6-byte bf16 op, ~90 for a 12-byte fp32 op. An estimate from the hardware's issue rate,
not a measurement.
"""
from __future__ import annotations

import collections
import os
import re
import sys

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "suites"))

DEFAULT = (
    "step bf16 grouped=True per_row=True noise=0 idx64=False",
    "step bf16 grouped=True per_row=True noise=1 idx64=False",
    "encode bf16 grouped=True noise=1",
    "langevin fp32 grouped=True per_row=False",
    "langevin bf16 grouped=True per_row=False",
    "langevin bf16 grouped=False per_row=False",
)


def count(names=DEFAULT, arch: int = 90) -> list:
    """``[(variant, instructions, elements per thread, instructions per element, {opcode: n})]``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.tools.disasm import get_sass

    import aot_compile_kernels as aot

    variants = {v[0]: v for v in list(aot.step_variants()) + list(aot.encode_variants()) + list(aot.langevin_variants())}
    rows = []
    for name in names:
        _, fn, sig, ce = variants[name]
        kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=ce), target=GPUTarget("cuda", arch, 32))
        lines = [ln.split("\t", 1)[1] for ln in get_sass(kernel.asm["cubin"]).splitlines() if "\t" in ln]
        ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", ln).split()[0].split(".")[0] for ln in lines)
        per_thread = ce["BLOCK"] / (kernel.metadata.num_warps * 32)
        rows.append((name, len(lines), per_thread, len(lines) / per_thread, dict(ops)))
    return rows


def main() -> None:
    rows = count(sys.argv[1:] or DEFAULT)
    width = max(len(r[0]) for r in rows)
    print(f"{'variant (sm_90)':{width}s}  SASS  elem/thread  instr/elem  MUFU  FFMA  branches")
    for name, n, per, per_elem, ops in rows:
        print(f"{name:{width}s}  {n:4d}  {per:11.0f}  {per_elem:10.1f}  {ops.get('MUFU', 0):4d}  "
              f"{ops.get('FFMA', 0):4d}  {ops.get('BRA', 0):8d}")


if __name__ == "__main__":
    main()
