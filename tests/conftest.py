"""Test configuration: Triton kernels run on CPU under the interpreter when there is no GPU."""
import os

# The suite checks kernel semantics under Triton's CPU interpreter everywhere, GPU machines included. The
# compiled kernels on a real GPU are the `gpu`-marked tests: FASTDIFF_GPU_TESTS=1 python -m pytest -m gpu
# (what benchmarks/gpu_check.py runs). TRITON_INTERPRET must be set before triton is imported anywhere.
GPU_TESTS = os.environ.get("FASTDIFF_GPU_TESTS", "0") == "1"
if not GPU_TESTS:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow statistical/fuzz tests")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long run, only with --runslow")
    config.addinivalue_line("markers", "gpu: needs CUDA")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device and FASTDIFF_GPU_TESTS=1 (compiled kernels)")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not (GPU_TESTS and torch.cuda.is_available()):
            item.add_marker(skip_gpu)


@pytest.fixture
def device() -> torch.device:
    """The device the kernels run on: CUDA when present, else CPU under the Triton interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of many tiny ops (thread hand-off costs more than it saves on 2 cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
