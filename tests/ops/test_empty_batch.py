"""An empty batch (0 rows) is valid input for every op on every backend: the result is empty, of x's shape."""
import pytest
import torch

import fastdiff
from fastdiff.ops.step import step_coefs

BACKENDS = ("torch", "triton", "reference")
X0 = torch.randn(0, 3, 4)
C1 = step_coefs(out_x=0.5, out_d=0.5)
SCHED = fastdiff.DiscreteVPSchedule()
NO_T = torch.zeros(0, dtype=torch.int64)

CALLS = {
    "fused_step": lambda b: fastdiff.fused_step(X0, X0, C1, backend=b),
    "fused_step-seeded": lambda b: fastdiff.fused_step(X0, X0, step_coefs(out_x=1.0, out_noise=0.5), seed=0, backend=b),
    "add_noise-discrete": lambda b: fastdiff.add_noise(X0, NO_T, SCHED, seed=0, backend=b),
    "add_noise-continuous": lambda b: fastdiff.add_noise(X0, 0.5, fastdiff.ContinuousVPSchedule(), seed=0, backend=b),
    "add_noise-continuous-tensor": lambda b: fastdiff.add_noise(X0, torch.zeros(0), fastdiff.VESchedule(), seed=0,
                                                                backend=b),
    "add_noise_with_target": lambda b: fastdiff.add_noise_with_target(X0, NO_T, SCHED, seed=0, return_noise=True,
                                                                      backend=b),
    "encoder_transition": lambda b: fastdiff.encoder_transition(X0, 1, SCHED, seed=0, backend=b),
    "langevin_step": lambda b: fastdiff.langevin_step(X0, X0, 0.1, seed=0, backend=b),
    "langevin_step-tensor-step": lambda b: fastdiff.langevin_step(X0, X0, torch.zeros(0), seed=0, backend=b),
    "langevin_select": lambda b: fastdiff.langevin_select(X0, X0, torch.zeros(0, dtype=torch.bool), backend=b),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_ops_on_an_empty_batch_return_empty_results(name, backend):
    res = CALLS[name](backend)
    for t in res if isinstance(res, tuple) else (res,):
        assert t.shape == X0.shape and t.dtype == X0.dtype


def test_philox_normal_on_empty_shapes():
    assert fastdiff.philox_normal((0, 5), seed=0).shape == (0, 5)
    assert fastdiff.philox_normal((3, 0, 2), seed=0).shape == (3, 0, 2)
    assert fastdiff.initial_noise((0, 2), seed=0).shape == (0, 2)
    # nothing is drawn, so nothing is allocated for the rows of a (huge, 0) shape
    assert fastdiff.philox_normal((2 ** 62, 0), seed=0).shape == (2 ** 62, 0)
    assert fastdiff.philox_normal((0, 2 ** 40), seed=0).shape == (0, 2 ** 40)
    assert fastdiff.philox_normal((2, 0), seed=0, row_ids=torch.tensor([5, 6])).shape == (2, 0)
