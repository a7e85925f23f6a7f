"""Every Python block in README.md runs as written (the quickstarts a newcomer copies)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path):
    code = BLOCKS[index]
    script = tmp_path / f"block{index}.py"
    script.write_text(code)
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"README block {index} failed:\n{code}\n{proc.stderr[-3000:]}"


def _pins():
    """The peer versions the README states, the test extra pins and the README's test command installs."""
    root = README.parent
    text = README.read_text()
    stated = dict(re.findall(r"\*\*(diffusers|k-diffusion) ([0-9][^*]*)\*\*", text))
    extra = re.search(r'"diffusers==([^"]+)"', (root / "pyproject.toml").read_text())
    command = re.search(r"pip install --no-deps k-diffusion==(\S+)", text)
    return stated, extra and extra.group(1), command and command.group(1)


def test_peer_pins_agree_with_the_readme():
    stated, diffusers_pin, k_diffusion_pin = _pins()
    assert stated.get("diffusers") == diffusers_pin, (stated, diffusers_pin)
    assert stated.get("k-diffusion") == k_diffusion_pin, (stated, k_diffusion_pin)
    ci = (README.parent / ".ci" / "run").read_text()
    assert f"k-diffusion=={k_diffusion_pin}" in ci


def test_docs_install_commands_pin_torch():
    """A CPU machine given a bare torch pulls a multi-GB CUDA build: every documented pip install pins it."""
    for doc in [README, *sorted((README.parent / "docs").glob("*.md"))]:
        for line in re.findall(r"^.*pip install [^\n]*-e [^\n]*$", doc.read_text(), flags=re.M):
            assert "torch==" in line, f"{doc.name}: {line.strip()}"
