"""Test configuration: Triton kernels run on CPU under the interpreter when there is no GPU."""
import os

if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch

        _has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        _has_cuda = False
    if not _has_cuda:
        # Must be set before triton is imported anywhere.
        os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow statistical/fuzz tests")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long run, only with --runslow")
    config.addinivalue_line("markers", "gpu: needs CUDA")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def device() -> torch.device:
    """The device the kernels run on: CUDA when present, else CPU under the Triton interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
