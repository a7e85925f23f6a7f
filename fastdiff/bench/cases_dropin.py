"""Drop-in scheduler cases: ``fastdiff.diffusers.<Name>.step`` vs ``diffusers.<Name>.step``, same config and state.

One row per scheduler class ``fastdiff.diffusers`` exports (``tests/faces/test_bench.py`` checks that none is
missing), timed per step against diffusers, both interleaved in one run; fastdiff's outputs must match
diffusers' (all the tensors the step returns) to 1e-4 of their largest magnitude.

Both schedulers of a case are brought to the same mid-trajectory step of a 50-step run (:func:`common.at_step`)
and set back to it before every timed call, host-side state only (no set_timesteps in the timed call).

The first rows (DDIM, Euler, DPM++ 2M, DEIS, FlowMatch Euler, PNDM, EDM Euler; DDPM, Euler ancestral, LCM with a
generator) are set back with :func:`common.rewind` and their history put where each side reads it: DDIM and
Euler return pred_original_sample beside prev_sample; DPM-Solver++ keeps its x0 (DEIS its noise estimate) as
the next step's history; PNDM (PLMS) combines the output with three earlier ones.

The other rows (:class:`_Row`, a table per kind: multistep, two-stage, one-state, batched) are brought there
by running the steps before the timed one on both sides with the same inputs (``warm``), once per input set
before timing: the history, a two-stage step's first-stage result and any counters are then each side's own,
in its own form (diffusers' Heun keeps a derivative, fastdiff's an x0 estimate), and equal in value. The
attributes those steps and the timed one change are snapshotted (:class:`common.HostState`) and written back
before every call; the history tensors differ per input set, so they rotate out of cache with the inputs.
Two-stage steps (Heun, FlowMatch Heun, KDPM2, KDPM2 ancestral, DPM-Solver SDE) are timed at their second stage,
which reads the first stage's sample again (and Heun's x0 estimate); single-step DPM-Solver at the second step
of its pair. UniPC's fused step folds the correction of the previous output into the current sample, which
holds along a trajectory only: its timed sample is the warm step's output (the other rows take any sample).

Noise: the stochastic steps draw from a generator both sides re-seed before each call, so both read the same
numbers (counted as an input of fastdiff's fused pass). DPM-Solver SDE and Cosine DPM-Solver draw Brownian-tree
noise (torchsde) from a seed: the config's ``noise_sampler_seed`` for DPM-Solver SDE (set, so both sides draw the
same path; diffusers' default draws a random seed), the generator's for Cosine; without torchsde their
diffusers rows are skipped.

Byte counts are what the step must read and write: the sample and model output, the history tensors and kept
samples it reads, the noise, and what it returns or keeps (for fastdiff: the x0 or derivative a multistep
step keeps). Not counted: ScoreSdeVe's corrector reads the score and the noise twice (their norms set the step
size before the update); fastdiff's FlowMatch Heun corrector writes an x0 estimate it does not return (one
extra N); diffusers' UniPC reads its previous sample again, which fastdiff's folded row does not.

Configs: Stable Diffusion's training schedule for the discrete-time classes (SD's choices where diffusers'
defaults differ: ``clip_sample=False``), diffusers' defaults for EDM, Cosine (Stable Cascade), IPNDM, UnCLIP,
consistency models (40 training steps, so a 40-step run timed at step 20), Wuerstchen and score SDE (VE),
CogVideoX's checkpoint configs for its two classes, FlowMatch shift 3 (SD3). ScoreSdeVe has two rows:
``step_pred`` and ``step_correct`` (its pipeline calls both each step). DDIM/DDPM parallel time
``batch_step_no_noise``, every sample of the batch at its own timestep (steps 25, 26, ...). CogVideoX's DPM
takes the previous x0 estimate as an argument (an input here). Every class's step is comparable: none is left
out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from . import common
from .registry import Case, Factory, Fn, Spec, Unavailable, register_case, register_provider

__all__: List[str] = []  # importing the module registers its cases

# (case, scheduler class, config, history tensors read, x0 written)
_DROPIN = (
    ("dropin_ddim", "DDIMScheduler", dict(common.diffusers_kwargs(), clip_sample=False, set_alpha_to_one=False),
     0, True),
    ("dropin_euler", "EulerDiscreteScheduler", common.diffusers_kwargs(), 0, True),
    ("dropin_dpmpp2m", "DPMSolverMultistepScheduler",
     dict(common.diffusers_kwargs(), algorithm_type="dpmsolver++", solver_order=2), 1, True),
    # DEIS keeps its noise estimate (the aux output, counted as the x0 slot) as the next step's history
    ("dropin_deis", "DEISMultistepScheduler", dict(common.diffusers_kwargs(), solver_order=2), 1, True),
    ("dropin_flow_euler", "FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0), 0, False),
    # Stable Diffusion 1.x's default: PLMS (skip_prk_steps), a fourth-order step reading three earlier outputs
    ("dropin_pndm", "PNDMScheduler", dict(common.diffusers_kwargs(), skip_prk_steps=True, set_alpha_to_one=False,
                                          steps_offset=1), 3, False),
    ("dropin_edm_euler", "EDMEulerScheduler", {}, 0, True),
)

#: stochastic steps, timed with a generator both sides draw the same noise from (re-seeded before each call, so
#: every call draws the same numbers; fastdiff reads that noise in its fused pass)
_DROPIN_NOISY = (
    ("dropin_ddpm", "DDPMScheduler", dict(common.diffusers_kwargs(), clip_sample=False)),
    ("dropin_euler_a", "EulerAncestralDiscreteScheduler", common.diffusers_kwargs()),
    ("dropin_lcm", "LCMScheduler", dict(common.diffusers_kwargs(), clip_sample=False)),
)


def _dropin_factory(module: str, cls_name: str, config: Dict[str, Any], n_hist: int, noisy: bool = False) -> Factory:
    own_history = module == "fastdiff.diffusers"  # fastdiff's multistep drop-in keeps its own history list

    def factory(spec: Spec) -> Fn:
        sched = getattr(common.import_scheduler_module(module), cls_name)(**config)
        k = common.MID_STEP
        t = common.at_step(sched, spec, k, warm_history=bool(n_hist))
        if noisy:
            gen = torch.Generator(device=spec.device)

            def fn(inp):
                common.rewind(sched, k)
                return (sched.step(inp["eps"], t, inp["x"], generator=gen.manual_seed(0)).prev_sample,)

            return fn

        if cls_name == "PNDMScheduler":  # a step counter and the earlier outputs (oldest first), in both classes
            def fn(inp):
                sched.counter, sched.ets = k, [inp["h3"], inp["h2"], inp["h1"]]
                return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

            return fn

        def fn(inp):
            common.rewind(sched, k, inp["hist"] if n_hist else None, own_history=own_history)
            return (sched.step(inp["eps"], t, inp["x"]).prev_sample,)

        return fn

    return factory


for _name, _cls, _cfg, _nh, _x0 in _DROPIN:
    register_case(Case(
        _name, f"drop-in {_cls}.step (50 steps, mid-trajectory)",
        inputs={"x": 1, "eps": 1, **({"hist": 1} if _nh == 1 else {f"h{j}": 1 for j in range(1, _nh + 1)})},
        writes={"out": 1, **({"x0": 1} if _x0 else {})}, group="dropin",
        check=("fastdiff",), reference="diffusers", op=f"fastdiff.diffusers.{_cls}().step(eps, t, x)"))
    register_provider(_name, "fastdiff", _dropin_factory("fastdiff.diffusers", _cls, _cfg, _nh))
    register_provider(_name, "diffusers", _dropin_factory("diffusers", _cls, _cfg, _nh))

for _name, _cls, _cfg in _DROPIN_NOISY:
    register_case(Case(
        _name, f"drop-in {_cls}.step with a generator (50 steps, mid-trajectory)",
        inputs={"x": 1, "eps": 1, "noise": 1}, writes={"out": 1, "x0": 1}, group="dropin",
        check=("fastdiff",), reference="diffusers", op=f"fastdiff.diffusers.{_cls}().step(eps, t, x, generator=g)"))
    register_provider(_name, "fastdiff", _dropin_factory("fastdiff.diffusers", _cls, _cfg, 0, noisy=True))
    register_provider(_name, "diffusers", _dropin_factory("diffusers", _cls, _cfg, 0, noisy=True))


# ---- the other drop-in classes: one table per kind, one factory -------------------------------------------------

@dataclass(frozen=True)
class _Row:
    """One drop-in row: the class, its config, and how both schedulers reach the timed step.

    ``warm`` names the inputs fed as model outputs to the steps run just before the timed one (oldest first), on
    both sides alike: the state those steps leave (multistep history, a two-stage scheduler's first-stage
    result) is what the timed step reads. Inputs named ``h*`` are history tensors the timed step reads
    (counted); ``eps`` there only drives a step whose output the timed step does not read. ``kept`` is an input
    the warm steps take as their sample and the scheduler keeps (a two-stage step's first-stage sample,
    single-step DPM-Solver's sample at the start of its pair), read again by the timed step.
    """

    name: str
    cls: str
    config: Mapping[str, Any]
    warm: Tuple[str, ...] = ()
    kept: bool = False
    noise: bool = False  # the step reads noise: a generator's (re-seeded before each call on both sides)
    aux: Optional[str] = "x0"  # what the step writes beside prev_sample (returned or kept as history), if any
    chain: bool = False  # the timed step's sample is the warm steps' output, as in a sampling loop
    call: str = "step"  # how the timed step is called (_CALLS)
    steps: int = common.INFERENCE_STEPS
    args: Tuple[str, ...] = ()  # further inputs the call passes explicitly (read by the step)

    def inputs(self) -> Dict[str, int]:
        hist = [n for n in (*self.warm, *self.args) if n.startswith("h")]
        return {"x": 1, "eps": 1, **({"xp": 1} if self.kept else {}), **{h: 1 for h in sorted(set(hist))},
                **({"noise": 1} if self.noise else {})}

    def writes(self) -> Dict[str, int]:
        return {"out": 1, **({self.aux: 1} if self.aux else {})}


_SD = common.diffusers_kwargs()  # Stable Diffusion's training schedule (scaled_linear 0.00085 .. 0.012)
#: the CogVideoX checkpoints' scheduler config (v-prediction on a zero-terminal-SNR, trailing-spaced schedule)
_COGVIDEOX = dict(_SD, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing",
                  rescale_betas_zero_snr=True, prediction_type="v_prediction")

#: multistep solvers: the warm steps' outputs are the history the timed step combines with its own
_MULTISTEP = (
    # UniPC corrects the previous step's output with this step's model output; fastdiff folds that into one
    # pass that holds along a trajectory only, so the timed sample is the warm step's output
    _Row("dropin_unipc", "UniPCMultistepScheduler", dict(_SD, solver_order=2), warm=("h1",), chain=True),
    # order 2 alternates a first-order step (which keeps its sample) and a second-order one (timed)
    _Row("dropin_dpm_single", "DPMSolverSinglestepScheduler", dict(_SD, solver_order=2), warm=("h1",), kept=True),
    # LMS reads its three previous derivatives (order 4, diffusers' default); IPNDM its three previous outputs
    _Row("dropin_lms", "LMSDiscreteScheduler", _SD, warm=("h3", "h2", "h1")),
    _Row("dropin_ipndm", "IPNDMScheduler", {}, warm=("h3", "h2", "h1"), aux="ets"),  # it keeps its derivative
    _Row("dropin_edm_dpm", "EDMDPMSolverMultistepScheduler", dict(solver_order=2), warm=("h1",)),
    _Row("dropin_dpm_inverse", "DPMSolverMultistepInverseScheduler", dict(_SD, solver_order=2), warm=("h1",)),
    # SA-Solver: predictor and corrector of order 2, its default tau adds noise at mid-trajectory
    _Row("dropin_sa", "SASolverScheduler", _SD, warm=("h1",), kept=True, noise=True),
    # Stable Cascade's: SDE-DPM-Solver++ 2 with Brownian-tree noise (a deterministic function of the seed)
    _Row("dropin_cosine_dpm", "CosineDPMSolverMultistepScheduler", {}, warm=("h1",), noise=True),
    # CogVideoX's DPM: the pipeline passes the previous x0 estimate itself
    _Row("dropin_cogvideox_dpm", "CogVideoXDPMScheduler", dict(_COGVIDEOX, snr_shift_scale=1.0), noise=True,
         call="cogvideox", args=("h1",)),  # CogVideoX-5B's
)

#: two-stage steps, timed at their second stage (it reads the first stage's kept sample and, for Heun, its x0)
_TWO_STAGE = (
    _Row("dropin_heun", "HeunDiscreteScheduler", _SD, warm=("h1",), kept=True),
    _Row("dropin_flow_heun", "FlowMatchHeunDiscreteScheduler", dict(shift=3.0), warm=("h1",), kept=True, aux=None),
    _Row("dropin_kdpm2", "KDPM2DiscreteScheduler", _SD, warm=("eps",), kept=True),
    _Row("dropin_kdpm2_a", "KDPM2AncestralDiscreteScheduler", _SD, warm=("eps",), kept=True, noise=True),
    # its Brownian-tree noise comes from the config's seed (step takes no generator)
    _Row("dropin_dpm_sde", "DPMSolverSDEScheduler", dict(_SD, noise_sampler_seed=0), warm=("eps",), kept=True,
         noise=True, call="seeded"),
)

#: one-state steps (a step counter or none), with and without noise
_SINGLE = (
    _Row("dropin_ddim_inverse", "DDIMInverseScheduler", dict(_SD, clip_sample=False, set_alpha_to_one=False)),
    _Row("dropin_cogvideox_ddim", "CogVideoXDDIMScheduler", dict(_COGVIDEOX, snr_shift_scale=3.0)),  # 2B
    _Row("dropin_flow_map_euler", "FlowMapEulerDiscreteScheduler", dict(shift=3.0), aux=None),
    _Row("dropin_tcd", "TCDScheduler", dict(_SD, clip_sample=False), noise=True, aux="pred_noised"),
    _Row("dropin_unclip", "UnCLIPScheduler", {}, noise=True, call="unclip"),
    # consistency models: 40 training steps (its default), so 40 steps with the timed one at 20
    _Row("dropin_cm", "CMStochasticIterativeScheduler", {}, noise=True, aux=None, steps=40),
    _Row("dropin_wuerstchen", "DDPMWuerstchenScheduler", {}, noise=True, aux=None, call="wuerstchen"),
    # score SDE (VE): the predictor returns the sample and its noise-free mean; the Langevin corrector's step
    # size comes from the norms of the score and the noise, which it reads once more before its fused pass
    _Row("dropin_sde_ve_pred", "ScoreSdeVeScheduler", {}, noise=True, aux="mean", call="sde_ve_pred"),
    _Row("dropin_sde_ve_correct", "ScoreSdeVeScheduler", {}, noise=True, aux=None, call="sde_ve_correct"),
)

#: batched steps: every sample of the batch at its own timestep (ParaDiGMS' parallel window), no noise
_BATCHED = (
    _Row("dropin_ddim_parallel", "DDIMParallelScheduler", dict(_SD, clip_sample=False, set_alpha_to_one=False),
         aux=None, call="batch"),
    _Row("dropin_ddpm_parallel", "DDPMParallelScheduler", dict(_SD, clip_sample=False), aux=None, call="batch"),
)


def _outputs(out: Any) -> Tuple[torch.Tensor, ...]:
    """Every tensor the step returns, prev_sample first (a diffusers output's fields in order)."""
    if isinstance(out, torch.Tensor):
        return (out,)
    values = out if isinstance(out, tuple) else out.to_tuple()
    return tuple(o for o in values if isinstance(o, torch.Tensor))


def _call_step(s, ts, i, m, x, g, inp):
    return s.step(m, ts[i], x, **({"generator": g.manual_seed(0)} if g is not None else {}))


_CALLS: Dict[str, Callable] = {
    "step": _call_step,
    "seeded": lambda s, ts, i, m, x, g, inp: s.step(m, ts[i], x),
    "unclip": lambda s, ts, i, m, x, g, inp: s.step(m, ts[i], x, prev_timestep=ts[i + 1],
                                                    generator=g.manual_seed(0)),
    "wuerstchen": lambda s, ts, i, m, x, g, inp: s.step(m, ts[i].expand(x.shape[0]), x, generator=g.manual_seed(0)),
    "cogvideox": lambda s, ts, i, m, x, g, inp: s.step(m, inp["h1"], ts[i], ts[i - 1], x, generator=g.manual_seed(0),
                                                       return_dict=False),
    "sde_ve_pred": lambda s, ts, i, m, x, g, inp: s.step_pred(m, ts[i], x, generator=g.manual_seed(0)),
    "sde_ve_correct": lambda s, ts, i, m, x, g, inp: s.step_correct(m, x, generator=g.manual_seed(0)),
    "batch": lambda s, ts, i, m, x, g, inp: s.batch_step_no_noise(m, ts, x),
}


_SIGNATURES = {
    "step": "step(eps, t, x{g})", "seeded": "step(eps, t, x)", "unclip": "step(eps, t, x, prev_timestep{g})",
    "wuerstchen": "step(eps, t, x{g})", "cogvideox": "step(eps, old_x0, t, t_back, x{g})",
    "sde_ve_pred": "step_pred(score, t, x{g})", "sde_ve_correct": "step_correct(score, x{g})",
    "batch": "batch_step_no_noise(eps, timesteps, x)",
}


def _row_factory(module: str, row: _Row) -> Factory:
    def factory(spec: Spec) -> Fn:
        try:
            sched = getattr(common.import_scheduler_module(module), row.cls)(**row.config)
        except ImportError as exc:  # diffusers' Brownian-noise classes without torchsde
            raise Unavailable(f"{module}.{row.cls} needs a package missing here ({exc})"[:160]) from None
        k = row.steps // 2
        start = k - len(row.warm)
        common.at_step(sched, spec, start, steps=row.steps)
        if row.cls == "ScoreSdeVeScheduler":  # its pipeline sets the sigmas beside the timesteps
            sched.set_sigmas(row.steps)
        ts = sched.timesteps
        if row.call == "batch":  # sample b at step k + b (wrapping round the run)
            ts = ts[(torch.arange(spec.batch) + k) % len(ts)].to(spec.device)
            k = start = 0
        gen = torch.Generator(device=spec.device) if row.noise else None
        call = _CALLS[row.call]
        base = common.HostState(sched)
        states: Dict[int, Any] = {}
        changed: List[frozenset] = []

        def prepare(inp):
            """The state at the timed step with this input set's history: the warm steps run on its tensors."""
            base.restore(sched)
            x = inp["x"]
            for j, name in enumerate(row.warm):
                out = call(sched, ts, start + j, inp[name], inp["xp"] if row.kept else x, gen, inp)
                if row.chain:
                    x = out.prev_sample
            state = common.HostState(sched)
            if not changed:  # what the warm steps and the timed step write: what every call sets back
                warm_keys = base.changed_by(sched)
                call(sched, ts, k, inp["eps"], x, gen, inp)
                changed.append(warm_keys | state.changed_by(sched))
            states[id(inp)] = (inp, x, state.subset(changed[0]))  # the set itself kept: its id stays its own

        def fn(inp):
            entry = states.get(id(inp))
            if entry is None:
                prepare(inp)
                entry = states[id(inp)]
            entry[2].restore(sched)
            return _outputs(call(sched, ts, k, inp["eps"], entry[1], gen, inp))

        fn.prepare = lambda sets: [prepare(s) for s in sets if id(s) not in states]
        return fn

    return factory


for _kind, _rows in (("multistep", _MULTISTEP), ("two-stage", _TWO_STAGE), ("single", _SINGLE),
                     ("batched", _BATCHED)):
    for _row in _rows:
        register_case(Case(
            _row.name, f"drop-in {_row.cls} ({_kind}, {_row.steps} steps, mid-trajectory)",
            inputs=_row.inputs(), writes=_row.writes(), group="dropin", check=("fastdiff",), reference="diffusers",
            op=f"fastdiff.diffusers.{_row.cls}()."
               + _SIGNATURES[_row.call].format(g=", generator=g" if _row.noise else "")))
        register_provider(_row.name, "fastdiff", _row_factory("fastdiff.diffusers", _row))
        register_provider(_row.name, "diffusers", _row_factory("diffusers", _row))
