"""The drop-in schedulers' host side: the folded CPU step, the first step's index lookup, torch's global RNG.

* The folded CPU step (``_base._launch`` without ``fused_step``'s general path) must give ``fused_step``'s CPU
  result bit for bit: every float dtype, odd sizes, 0-3 history tensors, with and without aux, rows whose
  coefficients hit each special case of the CPU path (0, 1, other) -- and it must actually run.
* The first step must not read a timestep that is an element of ``scheduler.timesteps`` back to the host.
* ``set_timesteps``, and ``step`` with a generator, must leave torch's global generator as they found it
  (diffusers never draws from it there), while a noisy step without a generator draws from it, as diffusers does.
"""
import warnings

import pytest
import torch

import fastdiff.diffusers as fdd
from fastdiff.diffusers import _base
from fastdiff.ops.step import COEF_NAMES, fused_step, step_coefs

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
STOCHASTIC = [("DDPMScheduler", {}), ("EulerAncestralDiscreteScheduler", {}),
              ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
              ("DPMSolverSinglestepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
              ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}), ("LCMScheduler", {}),
              ("TCDScheduler", {}), ("DDPMParallelScheduler", {}), ("CMStochasticIterativeScheduler", {}),
              ("UnCLIPScheduler", {}), ("KDPM2AncestralDiscreteScheduler", {}),
              ("EDMDPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}), ("SASolverScheduler", {})]
ALL = ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
       "HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
       "FlowMatchEulerDiscreteScheduler", "PNDMScheduler", "LCMScheduler", "TCDScheduler",
       "DDIMInverseScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler", "DEISMultistepScheduler",
       "DPMSolverSinglestepScheduler", "DPMSolverMultistepInverseScheduler", "IPNDMScheduler",
       "CMStochasticIterativeScheduler", "FlowMatchHeunDiscreteScheduler", "UnCLIPScheduler",
       "FlowMapEulerDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
       "KDPM2AncestralDiscreteScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
       "DPMSolverSDEScheduler", "SASolverScheduler", "CogVideoXDDIMScheduler", "CosineDPMSolverMultistepScheduler"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


def _table(gen: torch.Generator, x_eval: bool = False, noise: bool = False) -> torch.Tensor:
    """Rows covering the CPU path's special cases: folded coefficients 0, 1 and general, on x and on m."""
    cols = {name: torch.randn(6, generator=gen, dtype=torch.float64) for name in COEF_NAMES}
    unused = ("guidance",) + (() if x_eval else ("out_e",)) + (() if noise else ("out_noise",))
    for name in unused:  # unused by a plain call
        cols[name] = torch.zeros(6, dtype=torch.float64)
    # row 0: x + c*m (out_x = 1, d unused); row 1: c*m only; row 2: c*x only; row 3: all zero out;
    # row 4: aux = x exactly; row 5: general
    for r, (ox, om, od) in enumerate([(1.0, 0.3, 0.0), (0.0, 0.7, 0.0), (0.4, 0.0, 0.0), (0.0, 0.0, 0.0)]):
        cols["out_x"][r], cols["out_m"][r], cols["out_d"][r] = ox, om, od
    cols["aux_x"][4], cols["aux_d"][4] = 1.0, 0.0
    hist = [cols.pop(f"out_h{k}") for k in range(3)]
    return step_coefs(**cols, out_h=hist)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_hist", [0, 1, 3])
@pytest.mark.parametrize("with_x_eval, with_noise", [(False, False), (True, False), (False, True), (True, True)])
def test_folded_step_is_fused_steps_cpu_result_bit_for_bit(dtype, n_hist, with_x_eval, with_noise):
    """x_eval: a second stage (Heun, KDPM2) takes x0 from it; noise: a generator's, given as a tensor."""
    gen = torch.Generator().manual_seed(10 + n_hist)
    table = _table(gen, x_eval=with_x_eval, noise=with_noise)
    shape = (3, 5, 7)  # odd sizes
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    m = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    hist = tuple(torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(n_hist))
    kw = {name: torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
          for name, on in (("x_eval", with_x_eval), ("noise", with_noise)) if on}
    sched = fdd.EulerDiscreteScheduler()  # any drop-in: _launch is the base's
    for row in range(table.shape[0]):
        for aux_dtype in (None, dtype):
            want = aux_dtype is not None
            ref = fused_step(x, m, table, coef_row=row, history=hist, write_aux=want, backend="torch", **kw)
            ref = ref if want else (ref, None)
            got = sched._launch(x, m, table, row, out_dtype=dtype, aux_dtype=aux_dtype, history=hist, **kw)
            assert got[0].dtype == dtype and got[0].shape == shape
            assert torch.equal(_bits(got[0]), _bits(ref[0])), (row, aux_dtype)
            if want:
                assert torch.equal(_bits(got[1]), _bits(ref[1])), (row, "aux")
            else:
                assert got[1] is None


def test_folded_step_runs_and_leaves_anything_unusual_to_fused_step(monkeypatch):
    """The plain CPU call skips fused_step (else the fast path would be dead code); a call it does not cover
    still goes through fused_step and its checks."""
    calls = []
    real = _base._FUSED_STEP

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    # both names replaced: the module's fused_step is "unchanged", so the folded path may run (and must)
    monkeypatch.setattr(_base, "_FUSED_STEP", counting)
    monkeypatch.setattr(_base, "fused_step", counting)
    s = fdd.FlowMatchEulerDiscreteScheduler(shift=3.0)
    s.set_timesteps(4)
    x = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(3))
    for t in s.timesteps:
        x = s.step(torch.sin(x), t, x).prev_sample
    assert calls == [] and torch.isfinite(x).all()
    heun = fdd.HeunDiscreteScheduler()  # predictor and corrector (an x_eval call): both folded
    heun.set_timesteps(3)
    for t in heun.timesteps:
        x = heun.step(torch.sin(heun.scale_model_input(x, t)), t, x).prev_sample
    assert calls == [] and torch.isfinite(x).all()
    ddpm = fdd.DDPMScheduler(clip_sample=False)  # a generator's noise: folded; the in-kernel Philox noise (a seed): fused_step
    ddpm.set_timesteps(3)
    for t in ddpm.timesteps:
        x = ddpm.step(torch.sin(x), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    assert calls == [] and torch.isfinite(x).all()
    ddpm.set_timesteps(3)
    ddpm.set_noise_seed(0)
    x = ddpm.step(torch.sin(x), ddpm.timesteps[0], x).prev_sample
    assert len(calls) == 1 and "seed" in calls[0]
    calls.clear()
    monkeypatch.setattr(_base, "_FUSED_STEP", real)  # fused_step replaced in the module: every call is seen
    s.set_timesteps(4)
    for t in s.timesteps:
        x = s.step(torch.sin(x), t, x).prev_sample
    assert len(calls) == 4
    monkeypatch.undo()
    s.set_timesteps(4)
    with pytest.raises(ValueError, match="model_output must have shape"):  # fused_step's own check
        s.step(torch.zeros(1, 4, 5, 6), s.timesteps[0], x)
    with pytest.raises(ValueError, match="model_output must have shape"):
        s._launch(x, torch.zeros(1, 4, 5, 6), s._table("rows", x.device), 0, out_dtype=x.dtype)


@pytest.mark.parametrize("name", [n for n in ALL if n != "PNDMScheduler"])  # PNDM steps by its counter, not
def test_first_step_finds_its_index_without_reading_the_timestep(name, monkeypatch):  # by a timestep lookup
    """An element of ``timesteps`` is located from its storage offset: no value is read back (on a GPU that read
    is a sync). The index is the one diffusers' value lookup gives (the second of two equal timesteps)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = getattr(fdd, name)()
        s.set_timesteps(6)
        ts = s.timesteps
        expected = [s.index_for_timestep(float(t)) for t in ts]
        reads = []
        real = _base._read_timestep
        monkeypatch.setattr(_base, "_read_timestep", lambda t: reads.append(t) or real(t))
        assert [s.index_for_timestep(t) for t in ts] == expected and reads == []
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        start = 2
        t = ts[start]
        inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
        s.step(torch.sin(inp), t, x)
        assert reads == [] and s.step_index == expected[start] + 1
        # a tensor that is not one of the timesteps is read (as diffusers does)
        assert s.index_for_timestep(ts[start].clone()) == expected[start] and len(reads) == 1


@pytest.mark.parametrize("name,cfg", STOCHASTIC)
def test_set_timesteps_and_seeded_steps_leave_the_global_rng_alone(name, cfg):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    s = getattr(fdd, name)(**cfg)
    s.set_timesteps(5)
    assert torch.equal(torch.get_rng_state(), state), "set_timesteps drew from torch's global generator"
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 4, 4, generator=g)
    for t in s.timesteps:
        inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
        x = s.step(torch.sin(inp), t, x, generator=g).prev_sample
    assert torch.equal(torch.get_rng_state(), state), "step(generator=g) drew from torch's global generator"
    # without a generator the run's noise comes from the global generator, as diffusers' does: once per run
    s.set_timesteps(5)
    for t in s.timesteps:
        inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
        x = s.step(torch.sin(inp), t, x).prev_sample
    assert not torch.equal(torch.get_rng_state(), state)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name,cfg", STOCHASTIC)
def test_unseeded_runs_repeat_under_manual_seed(name, cfg):
    """The lazily drawn seed still makes a run reproducible with ``torch.manual_seed`` before it."""
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        s = getattr(fdd, name)(**cfg)
        s.set_timesteps(4)
        x = torch.ones(1, 2, 3, 3)
        for t in s.timesteps:
            inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
            x = s.step(torch.sin(inp), t, x).prev_sample
        outs.append(x)
    assert torch.equal(outs[0], outs[1])


def test_score_sde_ve_global_rng_and_first_step_lookup(monkeypatch):
    """ScoreSdeVeScheduler: set_timesteps / set_sigmas and seeded steps leave torch's global generator alone, an
    unseeded run draws from it once and repeats under manual_seed, and an element of ``timesteps`` is located
    without reading it back."""
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    s = fdd.ScoreSdeVeScheduler(sigma_max=30.0)
    s.set_timesteps(5)
    s.set_sigmas(5)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 4, generator=g)
    reads = []
    real = _base._read_timestep
    monkeypatch.setattr(_base, "_read_timestep", lambda t: reads.append(t) or real(t))
    for t in s.timesteps:
        x = s.step_correct(torch.sin(x), x, generator=g).prev_sample
        x = s.step_pred(torch.sin(x), t, x, generator=g).prev_sample
    assert torch.equal(torch.get_rng_state(), state) and reads == []
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        s.set_timesteps(5)
        y = torch.ones(1, 2, 3)
        for t in s.timesteps:
            y = s.step_correct(torch.sin(y), y).prev_sample
            y = s.step_pred(torch.sin(y), t, y).prev_sample
        outs.append(y)
        assert not torch.equal(torch.get_rng_state(), torch.manual_seed(7).get_state())
    assert torch.equal(outs[0], outs[1]) and torch.isfinite(outs[0]).all()
