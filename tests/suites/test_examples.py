"""The runnable examples (one per quickstart) finish cleanly and print what they promise."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    # script: a line fragment its output must contain
    "diffusers_dropin.py": ("max |fastdiff - diffusers|", "diffusers is not installed"),
    "kdiffusion_style.py": ("dpmpp_2m: sliced Wasserstein",),
    "langevin_energy.py": ("MALA acceptance rate",),
    "training_noising.py": ("steps 200-299: mean epsilon loss",),
}


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script):
    env = dict(os.environ)
    env.setdefault("TRITON_INTERPRET", "1")
    # the examples' tensors are tiny: on a shared 2-core runner intra-op threads only add spin-waiting
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(frag in proc.stdout for frag in EXAMPLES[script]), proc.stdout[-2000:]
    assert not re.search(r"\bnan\b", proc.stdout, re.IGNORECASE), proc.stdout
