"""diffusers' own scheduler tests, with fastdiff's classes swapped in, pass wherever they pass on diffusers.

Runs ``tests/peer/diffusers_swap.py`` against the diffusers source checkout named by ``DIFFUSERS_SRC`` (its
``tests/schedulers/`` files; none of them is kept in this repository) and is skipped where that is unset.
``OPEN_GAPS`` lists the tests that still fail with fastdiff, each with the reason: a test failing that is not
listed is a regression; a listed one that passes should be removed from the list.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffusers_swap  # noqa: E402

SRC = os.environ.get("DIFFUSERS_SRC")
FILES = ("ddim", "ddpm", "euler", "euler_ancestral", "heun", "dpm_multi", "unipc", "pndm", "lcm", "tcd", "ddim_inverse",
         "ddim_parallel", "ddpm_parallel", "deis", "dpm_single", "dpm_multi_inverse", "ipndm", "consistency_model",
         "score_sde_ve", "unclip", "flow_map_euler_discrete", "lms", "kdpm2_discrete",
         "kdpm2_ancestral", "edm_euler", "edm_dpmsolver_multistep", "dpm_sde", "sasolver")

OPEN_GAPS: dict = {}  # none: every test that passes on diffusers passes swapped


@pytest.mark.skipif(not SRC, reason="set DIFFUSERS_SRC to a diffusers source checkout (its tests/schedulers/) "
                                    "to run diffusers' own scheduler tests against fastdiff's classes")
@pytest.mark.parametrize("name", FILES)
def test_diffusers_scheduler_tests_pass_with_fastdiff(name):
    [path] = diffusers_swap.scheduler_test_files(SRC, [name])
    result = diffusers_swap.compare(SRC, [path])[os.path.basename(path)]
    assert result["diffusers_passed"] > 0, "no test passed on diffusers itself: is the checkout complete?"
    lost = {t.split("tests.schedulers.", 1)[-1]: o for t, o in result["not_passing_with_fastdiff"].items()}
    new = sorted(t for t in lost if t not in OPEN_GAPS)
    assert not new, f"pass on diffusers, not with fastdiff: {new}"
