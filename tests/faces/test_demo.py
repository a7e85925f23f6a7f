"""``fastdiff demo``: runs --quick in-process, checks its figures and table, and its error handling."""
import contextlib
import io
import math
import re

import pytest
import torch

from fastdiff.cli import main
from fastdiff.demo import config_for
from fastdiff.samplers import NEEDS_UNCOND
from fastdiff.sampling import list_samplers

# the demo's targets are unguided: it runs every sampler but the CFG++ ones (they need guidance)
UNGUIDED = [s for s in list_samplers() if s not in NEEDS_UNCOND]

FIGURES = ("training_loss.png", "samples_mixture.png", "samples_model.png", "error_vs_steps.png", "langevin.png",
           "mcmc.png")
ROW = re.compile(r"^(mixture|model)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)")
MCMC_ROW = re.compile(r"^(gaussian|banana)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s*(.*)$")


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path_factory.mktemp("demo") / "nested" / "out"  # created by the demo
    threads = torch.get_num_threads()
    rc, stdout, stderr = _run(["demo", "--quick", "--device", "cpu", "--out", str(out_dir)])
    return dict(rc=rc, stdout=stdout, stderr=stderr, out=out_dir, threads_after=torch.get_num_threads(),
                threads_before=threads)


def _rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            target, sampler, steps, evals, sw, ms = m.groups()
            rows[(target, sampler, int(steps))] = (int(evals), float(sw), float(ms))
    return rows


def test_quick_demo_exits_zero_and_restores_threads(quick_run):
    assert quick_run["rc"] == 0, quick_run["stderr"][-2000:]
    assert "Traceback" not in quick_run["stderr"]
    assert quick_run["threads_after"] == quick_run["threads_before"]


def test_quick_demo_writes_non_trivial_pngs(quick_run):
    import matplotlib.image as mpimg

    assert str(quick_run["out"].resolve()) in quick_run["stdout"]
    for name in FIGURES:
        path = quick_run["out"] / name
        assert path.is_file(), name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 500, (name, img.shape)
        gray = img[..., :3].mean(-1)
        # a blank or single-colour canvas fails: drawn points/lines/text cover part of the image
        assert 0.002 < float((gray < 0.9).mean()) < 0.9, name
        assert float(gray.std()) > 0.05, name


def test_quick_demo_table_covers_every_sampler_and_step_count(quick_run):
    rows = _rows(quick_run["stdout"])
    steps = config_for(True).steps
    for target in ("mixture", "model"):
        for sampler in UNGUIDED:
            for k in steps:
                evals, sw, ms = rows[(target, sampler, k)]
                assert evals >= k and math.isfinite(ms) and ms > 0, (target, sampler, k)
                assert math.isfinite(sw) and sw > 0, (target, sampler, k)
    n_langevin = config_for(True).langevin_steps
    assert ("mixture", "ula", n_langevin) in rows and ("mixture", "mala", n_langevin) in rows


def test_quick_demo_quality(quick_run):
    """Every sampler at the largest quick step count, and both Langevin chains, land near the exact law.

    The floor is the mean sliced-W between two exact 1000-point sets (about 0.23 on this ring); 2x the floor
    detects a sampler that misses or blurs modes (a wrong coefficient gives SW >= 1), not small biases.
    """
    rows = _rows(quick_run["stdout"])
    m = re.search(r"floor of sliced-W .*?: mixture ([\d.]+) \+- [\d.]+ \[[\d., ]+\]; model ([\d.]+)",
                  quick_run["stdout"])
    assert m, quick_run["stdout"][-1500:]
    floor = float(m.group(1))
    k = max(config_for(True).steps)
    bad = {s: rows[("mixture", s, k)][1] for s in UNGUIDED if rows[("mixture", s, k)][1] > 2 * floor}
    assert not bad, f"samplers far from the exact mixture at {k} steps (floor {floor}): {bad}"
    n_langevin = config_for(True).langevin_steps
    for name in ("ula", "mala"):
        assert rows[("mixture", name, n_langevin)][1] < 2 * floor, name


def test_out_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    rc, stdout, stderr = _run(["demo", "--quick", "--out", str(f)])
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "not a directory" in lines[0]
    assert "Traceback" not in stderr and f.read_text() == "x"


def test_out_cannot_be_created(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    rc, _, stderr = _run(["demo", "--quick", "--out", str(f / "sub")])
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create" in lines[0] and "Traceback" not in stderr


def test_cuda_requested_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "never"
    rc, _, stderr = _run(["demo", "--quick", "--device", "cuda", "--out", str(out)])
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda" in lines[0] and "Traceback" not in stderr
    assert not out.exists()  # the device is checked before anything is written


def test_bad_device_choice_is_an_argparse_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        _run(["demo", "--device", "tpu", "--out", str(tmp_path)])
    assert exc.value.code == 2


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_seed_outside_the_library_range_is_refused(tmp_path, seed):
    rc, _, stderr = _run(["demo", "--quick", "--device", "cpu", "--seed", seed, "--out", str(tmp_path / "out")])
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "--seed" in lines[0] and "[0, 2**63)" in lines[0] and "Traceback" not in stderr


def test_every_library_seed_is_accepted(tmp_path, monkeypatch):
    """--seed takes the library's range [0, 2**63): the seeds derived from it wrap instead of overflowing."""
    from fastdiff import demo
    from fastdiff.random import MAX_SEED, split_seed

    seen = {}

    def fake_run(self):
        seen["seeds"] = [self._seed(k) for k in (0, 11, 200)]
        return 0

    monkeypatch.setattr(demo._Demo, "run", fake_run)
    rc, _, stderr = _run(["demo", "--quick", "--device", "cpu", "--seed", str(MAX_SEED), "--out", str(tmp_path)])
    assert rc == 0, stderr
    assert seen["seeds"] == [MAX_SEED, 10, 199]
    for s in seen["seeds"]:
        split_seed(s)  # valid Philox keys


def test_noise_floor_is_a_mean_and_spread_over_several_pairs(quick_run):
    """One exact-vs-exact pair is a noisy floor; the table reports the mean, sd and range over several pairs
    and marks the rows inside that range, so a ranking among them is not read into noise."""
    out = quick_run["stdout"]
    m = re.search(r"floor of sliced-W .*over (\d+) independent pairs\): mixture ([\d.]+) \+- ([\d.]+) "
                  r"\[([\d.]+), ([\d.]+)\]", out)
    assert m, out[-1500:]
    pairs, mean, sd, lo, hi = int(m.group(1)), *map(float, m.groups()[1:])
    assert pairs >= 8 and sd > 0 and lo <= mean <= hi
    marked = [line for line in out.splitlines() if ROW.match(line) and line.rstrip().endswith("within noise")]
    assert marked and all(float(ROW.match(line).group(5)) <= hi for line in marked if line.startswith("mixture"))


def test_error_plot_styles_are_distinct_and_the_few_step_caveat_is_captioned():
    from fastdiff.demo_run import _grid_caption, _style

    names = list_samplers()
    styles = [_style(i) for i in range(len(names))]
    assert len({(tuple(c), m) for c, m in styles}) == len(names)  # no two curves look alike
    assert "k-diffusion" in _grid_caption((10,), names) and "dpmpp_3m_sde" in _grid_caption((10,), names)
    assert _grid_caption((20,), names) == ""  # nothing to explain where it converges


def test_quick_demo_mcmc_panel(quick_run):
    """The MCMC panel: every sampler on both targets (or a note naming what this build lacks), each row with
    the gradient evaluations actually spent, its sliced-W, bulk ESS and R-hat. Quality: at the largest budget
    each sampler's sliced-W is under 2x the exact-vs-exact floor -- detects a sampler that misses the banana's
    arms or the Gaussian's long axis (sliced-W >= 0.5 at these sizes), not the ULA's O(h) bias."""
    from fastdiff.demo_mcmc import METHODS, _budgets

    out = quick_run["stdout"]
    rows = {}
    for line in out.splitlines():
        m = MCMC_ROW.match(line)
        if m:
            target, sampler, steps, evals, sw, ms, note = m.groups()
            rows[(target, sampler)] = (int(steps), int(evals), float(sw), note)
    floors = dict(re.findall(r"(gaussian|banana) ([\d.]+) \+- [\d.]+ \[", out))
    assert set(floors) == {"gaussian", "banana"}, out[-1500:]
    budget = _budgets(True)[-1]
    for name in METHODS:
        skipped = f"the MCMC panel skips {name}:" in out
        for target in ("gaussian", "banana"):
            if skipped:
                assert (target, name.lower()) not in rows
                continue
            steps, evals, sw, note = rows[(target, name.lower())]
            assert budget <= evals <= budget + 1, (target, name, evals)  # +1: the gradient at the start
            assert math.isfinite(sw) and 0 < sw < 2 * float(floors[target]), (target, name, sw, floors)
            assert re.search(r"bulk ESS \d+ \(\d+/1000 grads\), max R-hat [\d.]+", note), note
    assert ("gaussian", "ula") in rows and ("gaussian", "mala") in rows  # the samplers this build always has
