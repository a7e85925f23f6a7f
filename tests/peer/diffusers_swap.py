"""Run diffusers' own scheduler tests with fastdiff's drop-in classes swapped in for diffusers'.

The tests are diffusers' (``tests/schedulers/`` of a diffusers source checkout, e.g. its newest release tag);
nothing of them is kept here. This file is two things:

* a pytest plugin (``-p diffusers_swap``, with this folder on ``sys.path``): at start-up it replaces every
  scheduler class that ``fastdiff.diffusers`` provides in the ``diffusers`` and ``diffusers.schedulers``
  namespaces, so a test file's ``from diffusers import DDIMScheduler`` gets fastdiff's class. With
  ``FASTDIFF_SWAP=0`` it swaps nothing (the same run on diffusers itself);
* a command that runs each test file twice in fresh processes (on diffusers, then swapped), compares the
  outcomes test by test and prints, per file, how many of the tests that pass on diffusers also pass with
  fastdiff, and which do not::

      python tests/peer/diffusers_swap.py --diffusers-src /path/to/diffusers            # every scheduler file
      python tests/peer/diffusers_swap.py --diffusers-src /path/to/diffusers ddim euler  # some files
      python tests/peer/diffusers_swap.py ... --json out.json                            # outcomes, machine-readable

The checkout needs ``tests/__init__.py``, ``tests/testing_utils.py``, ``tests/others/test_utils.py`` and
``tests/schedulers/``; the ``diffusers`` package itself is the installed one. ``tests/peer/test_diffusers_swap.py``
runs this against ``$DIFFUSERS_SRC`` and is skipped, saying why, where that is unset.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
SWAP_ENV = "FASTDIFF_SWAP"


def swap_classes() -> List[str]:
    """Put fastdiff's drop-in classes in diffusers' namespaces; returns the names swapped."""
    import diffusers
    import diffusers.schedulers as schedulers

    import fastdiff.diffusers as fd

    swapped = []
    for name in fd.__all__:
        cls = getattr(fd, name)
        if isinstance(cls, type) and name.endswith("Scheduler") and hasattr(diffusers, name):
            setattr(diffusers, name, cls)
            setattr(schedulers, name, cls)
            swapped.append(name)
    return swapped


# ---- the pytest plugin ----------------------------------------------------------------------------------------

def pytest_configure(config) -> None:
    config._fastdiff_swapped = swap_classes() if os.environ.get(SWAP_ENV, "1") != "0" else []


def pytest_report_header(config) -> str:
    swapped = getattr(config, "_fastdiff_swapped", [])
    return f"fastdiff classes swapped into diffusers: {', '.join(swapped) if swapped else 'none (diffusers itself)'}"


# ---- the side-by-side command ---------------------------------------------------------------------------------

def scheduler_test_files(src: str, names: Sequence[str] = ()) -> List[str]:
    """``tests/schedulers/test_scheduler_<name>.py`` paths of the checkout (all of them without ``names``)."""
    folder = os.path.join(src, "tests", "schedulers")
    if not os.path.isdir(folder):
        raise ValueError(f"{src!r} has no tests/schedulers folder: pass a diffusers source checkout")
    files = sorted(f for f in os.listdir(folder) if f.startswith("test_scheduler") and f.endswith(".py"))
    if names:
        want = {f"test_scheduler_{n}.py" for n in names} | {f"{n}.py" for n in names} | set(names)
        missing = [n for n in names if not any(w in files for w in (f"test_scheduler_{n}.py", f"{n}.py", n))]
        if missing:
            raise ValueError(f"no such test file(s) in {folder}: {', '.join(missing)}")
        files = [f for f in files if f in want]
    return [os.path.join("tests", "schedulers", f) for f in files]


def run_file(src: str, path: str, swap: bool, timeout: float = 900.0) -> Dict[str, str]:
    """``{test id: outcome}`` ("passed", "failed", "error", "skipped") of one test file, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p))
        env[SWAP_ENV] = "1" if swap else "0"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "diffusers_swap", "-p", "no:cacheprovider",
               "-W", "ignore", f"--junitxml={report}", path]
        subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=timeout)
        if not os.path.exists(report):
            return {f"{path}::<collection>": "error"}
        outcomes = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            kind = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    kind = {"failure": "failed"}.get(child.tag, child.tag)
            outcomes[f"{case.get('classname')}::{case.get('name')}"] = kind
        return outcomes


def compare(src: str, files: Sequence[str]) -> Dict[str, dict]:
    """Per file: the tests passing on diffusers, how many of them pass swapped, and the ones that do not."""
    result = {}
    for path in files:
        ref, ours = run_file(src, path, swap=False), run_file(src, path, swap=True)
        passing = sorted(t for t, o in ref.items() if o == "passed")
        lost = {t: ours.get(t, "missing") for t in passing if ours.get(t) != "passed"}
        result[os.path.basename(path)] = {"diffusers_passed": len(passing), "fastdiff_passed": len(passing) - len(lost),
                                          "not_passing_with_fastdiff": lost}
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="test files by scheduler name (ddim, euler, ...); default: all")
    p.add_argument("--diffusers-src", default=os.environ.get("DIFFUSERS_SRC"),
                   help="diffusers source checkout (default: $DIFFUSERS_SRC)")
    p.add_argument("--json", help="write the per-file comparison here")
    args = p.parse_args(argv)
    if not args.diffusers_src:
        p.error("name a diffusers source checkout with --diffusers-src or DIFFUSERS_SRC")
    result = compare(args.diffusers_src, scheduler_test_files(args.diffusers_src, args.names))
    width = max(map(len, result))
    print(f"{'test file':{width}s}  pass on diffusers  pass with fastdiff")
    for name, r in result.items():
        print(f"{name:{width}s}  {r['diffusers_passed']:17d}  {r['fastdiff_passed']:17d}")
    total = [sum(r[k] for r in result.values()) for k in ("diffusers_passed", "fastdiff_passed")]
    print(f"{'total':{width}s}  {total[0]:17d}  {total[1]:17d}")
    for name, r in result.items():
        for test, outcome in r["not_passing_with_fastdiff"].items():
            print(f"  {outcome:8s} {test}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
