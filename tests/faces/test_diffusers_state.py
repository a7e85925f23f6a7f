"""A drop-in scheduler is a plain Python object: ``copy.deepcopy(pipe.scheduler)``, pickling (multiprocessing,
saving a pipeline's state) and a copy taken mid-run all work, and a copy steps exactly as the original."""
import copy
import pickle
import warnings

import pytest
import torch

import fastdiff.diffusers as fdd
from fastdiff.schedules import DiscreteVPSchedule

CLASSES = ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
           "HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
           "FlowMatchEulerDiscreteScheduler", "PNDMScheduler", "LCMScheduler",
           "TCDScheduler", "DDIMInverseScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler",
           "DEISMultistepScheduler", "DPMSolverSinglestepScheduler", "DPMSolverMultistepInverseScheduler",
           "IPNDMScheduler", "CMStochasticIterativeScheduler", "FlowMatchHeunDiscreteScheduler",
           "UnCLIPScheduler", "FlowMapEulerDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
           "KDPM2AncestralDiscreteScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
           "DPMSolverSDEScheduler", "SASolverScheduler", "CogVideoXDDIMScheduler", "CosineDPMSolverMultistepScheduler"]


def _steps(sched, x, n_steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in sched.timesteps[len(sched.timesteps) - n_steps:] if n_steps else []:
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        kw = {"generator": g} if "generator" in sched.step.__code__.co_varnames else {}
        x = sched.step(torch.sin(inp) * 0.9, t, x, **kw).prev_sample
        out.append(x)
    return out


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_taken_mid_run_steps_as_the_original(name, how):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = getattr(fdd, name)()
        sched.set_timesteps(6)
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * float(
            getattr(sched, "init_noise_sigma", 1.0))
        g = torch.Generator().manual_seed(2)
        for t in sched.timesteps[:3]:  # half the run: step counter, history and tables exist
            inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
            kw = {"generator": g} if "generator" in sched.step.__code__.co_varnames else {}
            x = sched.step(torch.sin(inp) * 0.9, t, x, **kw).prev_sample
        twin = copy.deepcopy(sched) if how == "deepcopy" else pickle.loads(pickle.dumps(sched))
        rest = len(sched.timesteps) - 3
        a, b = _steps(sched, x, rest), _steps(twin, x, rest)
    assert len(a) == rest and all(torch.equal(p, q) for p, q in zip(a, b))


def test_schedule_pickles_without_its_lock_or_device_cache():
    s = DiscreteVPSchedule()
    s.table("cpu")
    t = pickle.loads(pickle.dumps(s))
    assert torch.equal(t.alphas_cumprod, s.alphas_cumprod) and t._tables == {}
    assert torch.equal(t.table("cpu"), s.table("cpu"))  # rebuilt on demand, with a working lock
    assert torch.equal(copy.deepcopy(s).table("cpu"), s.table("cpu"))


def test_ddpm_previous_timestep_has_diffusers_type():
    diffusers = pytest.importorskip("diffusers")
    ours, ref = fdd.DDPMScheduler(), diffusers.DDPMScheduler()
    for s in (ours, ref):
        s.set_timesteps(10)
    for t in list(ref.timesteps) + [ref.timesteps[-1]]:
        a, b = ours.previous_timestep(t), ref.previous_timestep(t)
        assert isinstance(a, torch.Tensor) and a.dim() == 0 and a.dtype == b.dtype and int(a) == int(b)
    fresh, fresh_ref = fdd.DDPMScheduler(), diffusers.DDPMScheduler()  # before set_timesteps: timestep - 1
    assert fresh.previous_timestep(500) == fresh_ref.previous_timestep(500) == 499


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_score_sde_ve_copy_taken_mid_run_steps_as_the_original(how):
    """ScoreSdeVeScheduler steps by step_correct / step_pred (no ``step``): a copy continues exactly."""
    def run(s, x, ts, seed):
        g = torch.Generator().manual_seed(seed)
        for t in ts:
            x = s.step_correct(-x / 9.0, x, generator=g).prev_sample
            x = s.step_pred(-x / 9.0, t, x, generator=g).prev_sample
        return x

    s = fdd.ScoreSdeVeScheduler(sigma_max=30.0)
    s.set_timesteps(6)
    s.set_sigmas(6)
    x = run(s, torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1)) * 30.0, s.timesteps[:3], 2)
    twin = copy.deepcopy(s) if how == "deepcopy" else pickle.loads(pickle.dumps(s))
    assert torch.equal(run(s, x, s.timesteps[3:], 3), run(twin, x, twin.timesteps[3:], 3))
    # without a generator the copy continues the run's Philox streams
    torch.manual_seed(0)
    run(s, x, [], 0)
    y = s.step_pred(-x, s.timesteps[0], x).prev_sample
    twin = copy.deepcopy(s)
    y2, y2_twin = (c.step_pred(-x, c.timesteps[0], x).prev_sample for c in (s, twin))
    assert not torch.equal(y, y2) and torch.equal(y2, y2_twin)  # a fresh stream per call, continued by the copy
    assert torch.equal(s.step_correct(-x, x).prev_sample, twin.step_correct(-x, x).prev_sample)


@pytest.mark.parametrize("name, other", [
    ("FlowMatchEulerDiscreteScheduler", {"sigmas": [1.0, 0.7, 0.45, 0.2, 0.05]}),
    ("EulerDiscreteScheduler", {"num_inference_steps": 6}),
    ("DPMSolverMultistepScheduler", {"num_inference_steps": 6}),
    ("DDIMScheduler", {"num_inference_steps": 6}),
])
def test_a_repeated_run_reuses_its_table_and_another_run_does_not(name, other):
    """set_timesteps with the same schedule as a recent run takes that run's coefficient table (a pipeline's
    per-image set_timesteps does not rebuild it); a run on another schedule gets its own, and every run gives
    what a fresh scheduler gives."""
    cls = getattr(fdd, name)
    x = torch.linspace(-1.5, 1.5, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)

    def run(sched, **kw):
        sched.set_timesteps(**({"num_inference_steps": 5} | kw))
        y = x.clone()
        for t in sched.timesteps:
            y = sched.step(torch.sin(y) * 0.5, t, y).prev_sample
        return y

    s = cls()
    first = run(s)
    tables = dict(s._tables)
    assert tables
    second_other = run(s, **other)
    assert all(s._tables.get(k) is not v for k, v in tables.items())  # another schedule: its own tables
    torch.testing.assert_close(second_other, run(cls(), **other), rtol=0, atol=0)
    again = run(s)
    assert any(s._tables.get(k) is v for k, v in tables.items())  # the first schedule again: its tables back
    torch.testing.assert_close(again, first, rtol=0, atol=0)
