"""Every kernel variant compiles for NVIDIA GPUs (sm_80, sm_90) even on a machine without one.

The CPU interpreter runs the kernels' semantics but never lowers them, so this ahead-of-time compile (in a
subprocess without TRITON_INTERPRET) is what catches GPU-only compile errors before a GPU is available.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("aot_compile_kernels.py")


def _ptxas_available() -> bool:
    try:
        import triton.backends.nvidia  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _ptxas_available(), reason="triton has no NVIDIA backend in this install")
def test_all_kernel_variants_compile_for_sm80_and_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    compiled = [line for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert len(compiled) >= 10, proc.stdout


@pytest.mark.skipif(not _ptxas_available(), reason="triton has no NVIDIA backend in this install")
def test_noise_kernels_stay_cheap_in_sass():
    """The grouped-noise Langevin kernel, bf16, sm_90: under 120 SASS instructions per element (84 with
    ``sincos_turns``; 190 with libdevice sin/cos). A regression guard for the instruction-bound noise ops."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "sass_counts.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    variant = "langevin bf16 grouped=True per_row=False"
    proc = subprocess.run([sys.executable, str(script), variant], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith(variant))
    per_element = float(row[len(variant):].split()[2])
    assert 20 < per_element < 120, row
