"""Parity of fastdiff.diffusers with the installed diffusers schedulers (same timesteps, sigmas, trajectories).

Trajectories are driven by a fixed deterministic fake model (a function of the sample and of the timestep
diffusers' scheduler gives at that step) and the same torch.Generator, so any difference in coefficients, noise
draws or step bookkeeping shows up.

Tolerances. Trajectories (``prev_sample`` and each step's ``pred_original_sample``) are bounded against a float64
run of diffusers' own code (``peer_float64.assert_parity``):
``|ours - ref64| <= FACTOR * |diffusers - ref64| + 2 ulp * scale * steps``, one step at a time and free-running.
fastdiff and diffusers compute the same formulas in float32 with different operation orders (and fastdiff's
schedule tables are float64 where diffusers' are float32), so each is some float32 roundings away from the exact
value and neither should be more than a small factor further than the other, on any CPU. Schedule tables
(timesteps, sigmas) are compared directly: diffusers accumulates ``alphas_cumprod`` in float32 over 1000 products,
about 1000 * 2**-24 = 6e-5 relative at worst, hence 2e-4.
"""
import inspect
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers parity tests need the 'compat' extra")

import fastdiff.diffusers as fdd  # noqa: E402
from fastdiff.diffusers import _base  # noqa: E402
from peer_float64 import assert_parity, float64_pipeline, float64_scheduler  # noqa: E402

#: every drop-in scheduler class
SCHEDULERS = [n for n in fdd.__all__ if n.endswith("Scheduler") and n != "FusedSchedulerBase"]
#: classes whose ``step`` has diffusers' own different signature (tested in their own files)
OWN_STEP = {"CogVideoXDPMScheduler", "DDPMWuerstchenScheduler"}
#: classes without a beta schedule in their config (their round trips are in their own files)
NO_BETAS = {"DDPMWuerstchenScheduler", "CosineDPMSolverMultistepScheduler"}
#: classes driven through the generic ``step`` tests (ScoreSdeVe has no ``step``: step_pred / step_correct)
STEPPED = [n for n in SCHEDULERS if hasattr(getattr(fdd, n), "step") and n not in OWN_STEP]
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
ZSNR_V = {**SD, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """Computes in float32 (float64 for the float64 reference run) like a model with float32 weights."""
    wide = x if x.dtype == torch.float64 else x.float()
    return torch.sin(wide * 1.3 + float(t) / 300.0).to(x.dtype) * 0.9 + 0.05 * x


def _step_kwargs(sched, generator, extra):
    kw = dict(extra)
    if "generator" in inspect.signature(sched.step).parameters:
        kw["generator"] = generator
    return kw


def _run(sched, n, ref_ts, extra=None, dtype=torch.float32, shape=(2, 3, 4, 4), seed=0):
    """The trajectory of ``sched`` from seeded noise; the model sees the reference timesteps."""
    steps = _steps(sched, n, ref_ts, extra, dtype, shape, seed)
    return steps[-1]["prev"], [step["x0"] for step in steps]


def _steps(sched, n, ref_ts, extra=None, dtype=torch.float32, shape=(2, 3, 4, 4), seed=0, forced=None):
    """Each step's input, ``prev_sample`` and ``pred_original_sample`` along the trajectory of ``sched``.

    Free-running (``forced=None``) all noise comes from one generator. With ``forced`` (another run's steps), step
    i starts from that run's input to step i, rounded to ``dtype``, and both runs draw step i's noise from a
    generator of its own: the difference is then one step's rounding, with nothing carried from earlier steps.
    """
    sched.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype) * float(getattr(sched, "init_noise_sigma", 1.0))
    steps = []
    for i, t in enumerate(sched.timesteps):
        if forced is not None:
            x = forced[i]["x"].to(dtype)
            g = torch.Generator().manual_seed(seed + 1 + i)
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        out = sched.step(fake_model(inp, ref_ts[i]), t, x, **_step_kwargs(sched, g, extra or {}))
        steps.append({"x": x, "prev": out.prev_sample, "x0": _second_output(out)})
        x = out.prev_sample
    return steps


def _second_output(out):
    """The step's estimate beside ``prev_sample``: x0 (most schedulers), LCM's ``denoised``, TCD's
    ``pred_noised_sample``; None where the output has none."""
    for field in ("pred_original_sample", "denoised", "pred_noised_sample"):
        value = getattr(out, field, None)
        if value is not None:
            return value
    return None


CASES = []


def _add(name, cfgs, n=10, extra=None):
    for cfg in cfgs:
        CASES.append(pytest.param(name, cfg, n, extra or {}, id=f"{name[:-9]}-{json.dumps(cfg)}-{n}-{extra}"))


_add("DDPMScheduler", [{}, {"clip_sample": False}, {**SD, "prediction_type": "v_prediction"}, {"prediction_type": "sample"},
                       {**ZSNR_V}, {"variance_type": "fixed_large", "beta_schedule": "squaredcos_cap_v2",
                                    "timestep_spacing": "linspace"}, {"beta_schedule": "sigmoid", "steps_offset": 1}])
for _extra in ({}, {"eta": 1.0}, {"eta": 0.5, "use_clipped_model_output": True}):
    _add("DDIMScheduler", [{}, {"clip_sample": False, "steps_offset": 1, "set_alpha_to_one": False},
                           {**SD, "prediction_type": "v_prediction"}, {"prediction_type": "sample"}, ZSNR_V],
         extra=_extra)
_add("EulerDiscreteScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"},
                                {"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "trailing"},
                                ZSNR_V, {**SD, "use_karras_sigmas": True}, {**SD, "use_exponential_sigmas": True},
                                {"prediction_type": "sample"}, {"final_sigmas_type": "sigma_min"},
                                {**SD, "timestep_type": "continuous", "prediction_type": "v_prediction"},
                                {**SD, "interpolation_type": "log_linear"},
                                {"interpolation_type": "log_linear", "final_sigmas_type": "sigma_min"}])
_add("EulerDiscreteScheduler", [SD], extra={"s_churn": 1.0})
_add("EulerAncestralDiscreteScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"},
                                         {"timestep_spacing": "leading", "steps_offset": 1}, ZSNR_V])
_add("HeunDiscreteScheduler", [{}, {**SD, "prediction_type": "v_prediction"}, {"timestep_spacing": "trailing"},
                               {**SD, "use_karras_sigmas": True}, {"clip_sample": True, "prediction_type": "sample"},
                               {"beta_schedule": "exp"}])
_add("DPMSolverMultistepScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                     {"solver_order": 1}, {"solver_order": 3, "lower_order_final": False},
                                     {"timestep_spacing": "leading", "steps_offset": 1},
                                     {"timestep_spacing": "trailing"}, ZSNR_V, {**SD, "use_karras_sigmas": True},
                                     {**SD, "use_exponential_sigmas": True}, {"prediction_type": "sample"},
                                     {"final_sigmas_type": "sigma_min"}, {"algorithm_type": "sde-dpmsolver++"},
                                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, **SD,
                                      "use_karras_sigmas": True},
                                     {"solver_type": "heun"}, {"algorithm_type": "sde-dpmsolver++",
                                                               "solver_type": "heun"},
                                     {"euler_at_final": True, "final_sigmas_type": "sigma_min"},
                                     *({"final_sigmas_type": "sigma_min", **c} for c in (
                                         {"algorithm_type": "dpmsolver"}, {"algorithm_type": "dpmsolver", "solver_order": 3},
                                         {"algorithm_type": "dpmsolver", "solver_type": "heun", **SD,
                                          "prediction_type": "v_prediction"},
                                         {"algorithm_type": "sde-dpmsolver"},
                                         {"algorithm_type": "sde-dpmsolver", "solver_type": "heun",
                                          "prediction_type": "sample"})),
                                     {"use_lu_lambdas": True}, {**SD, "use_lu_lambdas": True,
                                                                "prediction_type": "v_prediction"}])
_add("DPMSolverMultistepScheduler", [{"solver_order": 3}], n=20)
_add("UniPCMultistepScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                 {"solver_order": 1}, {"timestep_spacing": "leading", "steps_offset": 1}, ZSNR_V,
                                 {**SD, "use_karras_sigmas": True}, {"prediction_type": "sample"},
                                 {"final_sigmas_type": "sigma_min"}, {"disable_corrector": [0, 3]},
                                 {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}])
_add("UniPCMultistepScheduler", [{"solver_order": 3}], n=20)
_add("FlowMatchEulerDiscreteScheduler", [{}, {"shift": 3.0}, {"shift": 3.0, "use_karras_sigmas": True},
                                         {"shift": 2.0, "use_exponential_sigmas": True},
                                         {"stochastic_sampling": True, "shift": 3.0}, {"invert_sigmas": True},
                                         {"shift_terminal": 0.1, "shift": 3.0}])

_add("LMSDiscreteScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"prediction_type": "sample"},
                              {"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "trailing"},
                              {**SD, "use_karras_sigmas": True}, {**SD, "use_exponential_sigmas": True},
                              {"beta_schedule": "squaredcos_cap_v2"}])
_add("LMSDiscreteScheduler", [SD], extra={"order": 2})
_add("LMSDiscreteScheduler", [SD, {**SD, "prediction_type": "v_prediction"}], n=9, extra={"order": 6})
_add("KDPM2DiscreteScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"},
                                {"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "trailing"},
                                {**SD, "use_karras_sigmas": True}, {**SD, "use_exponential_sigmas": True},
                                {"beta_schedule": "squaredcos_cap_v2"}], n=7)
_add("KDPM2AncestralDiscreteScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"},
                                         {"timestep_spacing": "leading", "steps_offset": 1},
                                         {**SD, "use_karras_sigmas": True}, {"timestep_spacing": "trailing"}], n=7)
_add("EDMEulerScheduler", [{}, {"sigma_schedule": "exponential"}, {"prediction_type": "v_prediction"},
                           {"final_sigmas_type": "sigma_min"}, {"sigma_data": 1.0, "rho": 5.0, "sigma_max": 14.6}])
_add("EDMEulerScheduler", [{}], extra={"s_churn": 1.0})
_add("EDMDPMSolverMultistepScheduler", [{}, {"solver_order": 3}, {"solver_order": 1}, {"solver_type": "heun"},
                                        {"prediction_type": "v_prediction"}, {"sigma_schedule": "exponential"},
                                        {"final_sigmas_type": "sigma_min"}, {"algorithm_type": "sde-dpmsolver++"},
                                        {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun",
                                         "final_sigmas_type": "sigma_min"},
                                        {"euler_at_final": True, "final_sigmas_type": "sigma_min"},
                                        {"solver_order": 3, "lower_order_final": False, "sigma_data": 1.0}])
_add("EDMDPMSolverMultistepScheduler", [{"solver_order": 3}], n=20)

# dynamic thresholding (a per-sample quantile of |x0|): ratios and maxima that make it clamp at most steps
_THR = {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}
_add("DDPMScheduler", [_THR, {**_THR, "prediction_type": "v_prediction", **SD}])
_add("DDIMScheduler", [_THR, {**_THR, "prediction_type": "sample"}], extra={"eta": 0.5})
_add("DDIMScheduler", [_THR], extra={"eta": 0.0, "use_clipped_model_output": True})
_add("DPMSolverMultistepScheduler", [_THR, {**_THR, "solver_order": 3}, {**_THR, "algorithm_type": "sde-dpmsolver++"},
                                     {**_THR, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}])
_add("UniPCMultistepScheduler", [_THR, {**_THR, "solver_order": 3, "prediction_type": "v_prediction"}])
_add("EDMDPMSolverMultistepScheduler", [_THR, {**_THR, "solver_order": 3},
                                        {**_THR, "algorithm_type": "sde-dpmsolver++"}])


# flow prediction on flow sigmas (the Wan / SkyReels-V2 / Cosmos UniPC configs)
_FLOW = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
_add("UniPCMultistepScheduler", [{**_FLOW, "flow_shift": 3.0}, {**_FLOW, "flow_shift": 5.0, "solver_order": 3},
                                 {**_FLOW, "flow_shift": 3.0, "final_sigmas_type": "sigma_min"},
                                 {**_FLOW, "use_karras_sigmas": True}, {**_FLOW, "shift_terminal": 0.1, "flow_shift": 2.0},
                                 {**_FLOW, "flow_shift": 3.0, "timestep_spacing": "trailing", "solver_order": 1}])


# flow prediction on flow sigmas (the Sana DPM-Solver config)
_add("DPMSolverMultistepScheduler", [{**_FLOW, "flow_shift": 3.0}, {**_FLOW, "flow_shift": 3.0, "solver_order": 3},
                                     {**_FLOW, "flow_shift": 2.0, "algorithm_type": "sde-dpmsolver++"},
                                     {**_FLOW, "flow_shift": 3.0, "final_sigmas_type": "sigma_min"}])


# beta sigmas (Lee et al. 2024): the Beta(0.6, 0.6) quantile is fastdiff's own float64 one, diffusers' is SciPy's
for _name in ("EulerDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
              "UniPCMultistepScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
              "KDPM2AncestralDiscreteScheduler"):
    _add(_name, [{**SD, "use_beta_sigmas": True}])
_add("FlowMatchEulerDiscreteScheduler", [{"shift": 3.0, "use_beta_sigmas": True}])


_add("PNDMScheduler", [{}, {"skip_prk_steps": True}, {**SD, "skip_prk_steps": True, "steps_offset": 1},
                       {"prediction_type": "v_prediction", "set_alpha_to_one": True},
                       {"skip_prk_steps": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
                       {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace"}])

_add("CMStochasticIterativeScheduler", [{}, {"num_train_timesteps": 201}, {"clip_denoised": False, "s_noise": 1.007},
                                        {"sigma_data": 0.3, "rho": 5.0, "sigma_max": 40.0}])
_add("CMStochasticIterativeScheduler", [{}], n=1)
# diffusers has no tests of its own for FlowMatchHeunDiscreteScheduler: these cases are its parity check
_add("FlowMatchHeunDiscreteScheduler", [{}, {"shift": 3.0}, {"num_train_timesteps": 500, "shift": 2.0}])
_add("FlowMatchHeunDiscreteScheduler", [{"shift": 3.0}], n=7, extra={"s_churn": 2.0})
_add("FlowMatchHeunDiscreteScheduler", [{}], n=6, extra={"s_churn": 4.0, "s_tmin": 0.3, "s_tmax": 0.8, "s_noise": 1.01})
# (without prev_timestep each UnCLIP step is t -> t - 1; the skipping runs are test_unclip_prev_timestep_parity)
_add("UnCLIPScheduler", [{}, {"prediction_type": "sample", "clip_sample_range": 2.0}, {"clip_sample": False}])
_add("FlowMapEulerDiscreteScheduler", [{}, {"shift": 3.0}, {"num_train_timesteps": 500, "shift": 0.7}])
_add("FlowMapEulerDiscreteScheduler", [{"shift": 2.0}], n=3)


# consistency-model samplers: re-noising between steps (generator draws), boundary scalings, origin grids
_add("LCMScheduler", [{}, {"prediction_type": "v_prediction"}, {"timestep_scaling": 5.0, "original_inference_steps": 20},
                      {"clip_sample": True, "clip_sample_range": 0.8, "set_alpha_to_one": False},
                      {**_THR, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
                      {**ZSNR_V}, {"prediction_type": "sample", "num_train_timesteps": 500}])
_add("LCMScheduler", [{}], n=4)
_add("LCMScheduler", [{}], n=1)
for _extra in ({"eta": 0.3}, {"eta": 0.0}, {"eta": 1.0}):
    _add("TCDScheduler", [{}, {"prediction_type": "v_prediction", "beta_schedule": "linear", "beta_start": 0.0001,
                               "beta_end": 0.02}, {"prediction_type": "sample", "set_alpha_to_one": False}],
         extra=_extra)
_add("TCDScheduler", [{**ZSNR_V}, {"original_inference_steps": 20, "num_train_timesteps": 600}], n=4,
     extra={"eta": 0.5})


# DDIM inversion: clean -> noisy along ascending timesteps (the model at t - T // n, the target t)
_add("DDIMInverseScheduler", [{}, {"clip_sample": False, "steps_offset": 1},
                              {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
                              {"prediction_type": "sample", "set_alpha_to_one": False, "clip_sample": False},
                              {**ZSNR_V, "clip_sample": False}, {"beta_schedule": "squaredcos_cap_v2"}])


# the parallel schedulers step as DDIM / DDPM (their batch_step_no_noise: test_diffusers_parallel.py)
_add("DDPMParallelScheduler", [{}, {**SD, "prediction_type": "v_prediction", "clip_sample": False}])
_add("DDIMParallelScheduler", [{}, {**SD, "prediction_type": "v_prediction", "set_alpha_to_one": False}],
     extra={"eta": 0.5})
# DEIS (log-rho multistep): orders 1-3, the lowered final orders (< 15 steps) and not, re-spaced and flow sigmas
_add("DEISMultistepScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                {"solver_order": 1}, {"solver_order": 3, "lower_order_final": False},
                                {"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "trailing"},
                                {**SD, "use_karras_sigmas": True, "solver_order": 3},
                                {**SD, "use_exponential_sigmas": True}, {"prediction_type": "sample"},
                                {"beta_schedule": "squaredcos_cap_v2"}, _THR,
                                {**_FLOW, "flow_shift": 3.0, "solver_order": 3}])
_add("DEISMultistepScheduler", [{"solver_order": 3}, {**SD, "use_karras_sigmas": True}], n=17)


# singlestep DPM-Solver: blocks of orders 1-3 from the block's first sample (uneven counts lower the last block)
_SIGMA_MIN = {"final_sigmas_type": "sigma_min"}
_add("DPMSolverSinglestepScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                      {"solver_order": 1}, {"solver_order": 3, "solver_type": "heun"},
                                      {"solver_type": "heun"}, {"lower_order_final": True},
                                      {**_SIGMA_MIN, "solver_order": 3, "lower_order_final": False},
                                      {**SD, "use_karras_sigmas": True, "solver_order": 3},
                                      {**SD, "use_exponential_sigmas": True}, {"prediction_type": "sample"},
                                      {"algorithm_type": "sde-dpmsolver++"},
                                      {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, "solver_type": "heun"},
                                      {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                                      {**_SIGMA_MIN, "algorithm_type": "dpmsolver"},
                                      {**_SIGMA_MIN, "algorithm_type": "dpmsolver", "solver_order": 3},
                                      {**_SIGMA_MIN, "algorithm_type": "dpmsolver", "solver_order": 3,
                                       "solver_type": "heun", "prediction_type": "v_prediction"},
                                      {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, _THR,
                                      {**_THR, "solver_order": 3},
                                      {**_FLOW, "flow_shift": 3.0, "solver_order": 3}])
_add("DPMSolverSinglestepScheduler", [{"solver_order": 3}, {"solver_order": 2, **SD}], n=11)


# the inverse multistep solver (ascending timesteps, towards the noise); no SDE variants: diffusers' noise scale
# there is the square root of a negative number (h < 0 going up), NaN
_add("DPMSolverMultistepInverseScheduler", [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                            {"solver_order": 1}, {"solver_type": "heun"},
                                            {"timestep_spacing": "leading", "steps_offset": 1},
                                            {"timestep_spacing": "trailing"}, {**SD, "use_karras_sigmas": True},
                                            {**SD, "use_exponential_sigmas": True, "solver_order": 3},
                                            {"prediction_type": "sample"},
                                            {"algorithm_type": "dpmsolver", "solver_order": 3},
                                            {"euler_at_final": True},
                                            {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
                                            _THR, {**_FLOW, "flow_shift": 3.0}])
_add("DPMSolverMultistepInverseScheduler", [{"solver_order": 3}], n=17)


# iPNDM (Adams-Bashforth 1-4 on the trigonometric schedule; its first step divides by alpha floored at 1e-8)
_add("IPNDMScheduler", [{}])
_add("IPNDMScheduler", [{}], n=3)
_add("IPNDMScheduler", [{"num_train_timesteps": 500}], n=23)


# DPMSolverSDE: diffusers' Brownian noise (torchsde) from noise_sampler_seed, the same path on both sides
_add("DPMSolverSDEScheduler", [{"noise_sampler_seed": 0}, {**SD, "prediction_type": "v_prediction", "noise_sampler_seed": 1},
                               {**SD, "use_karras_sigmas": True, "noise_sampler_seed": 2},
                               {"timestep_spacing": "trailing", "noise_sampler_seed": 3},
                               {"timestep_spacing": "leading", "steps_offset": 1, "noise_sampler_seed": 4}], n=7)


# SASolver: predictor/corrector orders, data and noise prediction, re-spaced and flow sigmas
_add("SASolverScheduler", [{}, {**SD, "prediction_type": "v_prediction"}, {**SD, "use_karras_sigmas": True},
                           {"algorithm_type": "noise_prediction"}, {"predictor_order": 3, "corrector_order": 4},
                           {"predictor_order": 1, "corrector_order": 1}, {"corrector_order": 3, "lower_order_final": False},
                           {"algorithm_type": "noise_prediction", "prediction_type": "v_prediction", "predictor_order": 3},
                           {"timestep_spacing": "trailing", "use_exponential_sigmas": True},
                           {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}], n=9)


# CogVideoX's DDIM: the SNR-shifted schedule (its eta / clipping options are accepted and unused, as in diffusers)
_add("CogVideoXDDIMScheduler", [{}, {"timestep_spacing": "trailing", "prediction_type": "v_prediction",
                                     "rescale_betas_zero_snr": True},
                                {"beta_schedule": "linear", "set_alpha_to_one": False, "snr_shift_scale": 1.5},
                                {"prediction_type": "sample", "timestep_spacing": "linspace"}], n=9)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name,cfg,n,extra", CASES)
def test_parity_with_diffusers(name, cfg, n, extra):
    """Schedule tables, then each step from the exact state, then the free-running trajectory."""
    ours, ref = getattr(fdd, name)(**cfg), getattr(diffusers, name)(**cfg)
    ref.set_timesteps(n)
    ref_ts = ref.timesteps.clone()
    ours.set_timesteps(n)
    respaced = cfg.get("use_karras_sigmas") or cfg.get("use_exponential_sigmas")
    if respaced and "Flow" not in name:
        # timesteps come from sigma_to_t of diffusers' float32-rounded sigmas; an integer timestep can land
        # one below (e.g. 998.99999 truncated to 998), a float one a few 1e-3 away
        torch.testing.assert_close(ours.timesteps.double(), ref_ts.double(), rtol=0, atol=1.0)
    else:
        assert ours.timesteps.dtype == ref_ts.dtype
        torch.testing.assert_close(ours.timesteps, ref_ts, rtol=1e-6, atol=1e-5)
    if hasattr(ref, "sigmas"):
        torch.testing.assert_close(ours.sigmas.double(), ref.sigmas.double(), rtol=2e-4, atol=1e-7)
    if hasattr(ref, "init_noise_sigma"):
        assert float(ours.init_noise_sigma) == pytest.approx(float(ref.init_noise_sigma), rel=2e-4)
    exact = float64_scheduler(diffusers, name, cfg)
    # one step at a time from diffusers' float64 trajectory: the comparison of the step formulas themselves
    exact_steps = _steps(exact, n, ref_ts, extra, torch.float64)
    exact_forced = _steps(exact, n, ref_ts, extra, torch.float64, forced=exact_steps)
    ours_forced = _steps(ours, n, ref_ts, extra, forced=exact_forced)
    peer_forced = _steps(ref, n, ref_ts, extra, forced=exact_forced)
    for i, (a, b, c) in enumerate(zip(ours_forced, peer_forced, exact_forced)):
        assert_parity(f"{name} step {i} prev_sample", a["prev"], b["prev"], c["prev"], 1)
        if b["x0"] is not None:
            assert a["x0"] is not None
            assert_parity(f"{name} step {i} pred_original_sample", a["x0"], b["x0"], c["x0"], 1)
    # the whole trajectory from the same noise, every step's rounding carried on
    a, a0 = _run(ours, n, ref_ts, extra)
    b, b0 = _run(ref, n, ref_ts, extra)
    c, c0 = exact_steps[-1]["prev"], [step["x0"] for step in exact_steps]  # diffusers' free run in float64
    assert_parity(f"{name} prev_sample", a, b, c, len(ref_ts))
    for i, (p, q, r) in enumerate(zip(a0, b0, c0)):
        if q is not None:
            assert p is not None
            assert_parity(f"{name} pred_original_sample after {i + 1} steps", p, q, r, i + 1)


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n not in NO_BETAS])
def test_config_round_trip(name, tmp_path):
    cfg = {"num_train_timesteps": 500}
    if "beta_start" in inspect.signature(getattr(fdd, name).__init__).parameters:  # a beta-schedule class
        cfg.update(SD)
    ours = getattr(fdd, name)(**cfg)
    ours.save_pretrained(tmp_path)
    with open(tmp_path / "scheduler_config.json") as f:
        saved = json.load(f)
    assert saved["_class_name"] == name and saved["num_train_timesteps"] == 500
    theirs = getattr(diffusers, name).from_pretrained(tmp_path)
    back = getattr(fdd, name).from_config(theirs.config)
    keys = set(ours.config) & set(theirs.config)
    assert keys >= {"num_train_timesteps"}
    for k in keys:
        assert ours.config[k] == theirs.config[k] == back.config[k], k
    # and from diffusers' default config of another scheduler (the documented swap)
    # (diffusers drops the keys of a class outside a scheduler's compatibles: the consistency scheduler keeps 40;
    # UnCLIP refuses the scaled_linear beta_schedule it is handed, as diffusers' does)
    try:
        peer = getattr(diffusers, name).from_config(diffusers.DDIMScheduler(**SD).config)
    except ValueError:
        with pytest.raises(ValueError):
            getattr(fdd, name).from_config(diffusers.DDIMScheduler(**SD).config)
        return
    swapped = getattr(fdd, name).from_config(diffusers.DDIMScheduler(**SD).config)
    assert swapped.config.num_train_timesteps == peer.config.num_train_timesteps


@pytest.mark.parametrize("name", SCHEDULERS)
def test_compatibles_as_diffusers_lists_them(name):
    """The same ``_compatibles`` names as diffusers' class; ``compatibles`` offers fastdiff's drop-in wherever
    there is one (a pipeline switching through it stays on fastdiff), each loading this scheduler's config."""
    ours = getattr(fdd, name)
    assert list(ours._compatibles) == list(getattr(diffusers, name)._compatibles)
    offered = ours().compatibles
    assert offered[0] is ours
    names = [c.__name__ for c in offered]
    assert sorted(names) == sorted({name, *ours._compatibles})
    for c in offered:
        assert c is getattr(fdd, c.__name__, getattr(diffusers, c.__name__))
    if len(offered) > 1:
        other = next(c for c in offered if c is not ours)
        assert other.from_config(ours().config) is not None


@pytest.mark.parametrize("name", STEPPED)
def test_one_fused_step_per_call_and_no_sync(name, monkeypatch):
    calls = []
    real = _base.fused_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_base, "fused_step", counting)
    # the one read allowed: the run's Philox seed, drawn on the CPU from torch's global generator at the first
    # noisy step without a generator (a later step for a two-stage sampler), which is no device sync
    seeding, real_draw, real_item = [], _base.draw_seed, torch.Tensor.item

    def draw_seed():
        seeding.append(1)
        try:
            return real_draw()
        finally:
            seeding.pop()

    monkeypatch.setattr(_base, "draw_seed", draw_seed)
    s = getattr(fdd, name)()
    s.set_timesteps(6)
    x = torch.randn(2, 3, 4, 4)
    ts = list(s.timesteps)
    for i, t in enumerate(ts):
        if i == 1:
            # from the second step on, no tensor may be read back on the host
            def boom(self, *a, **k):
                if seeding and self.is_cpu:
                    return real_item(self, *a, **k)
                raise AssertionError("host-device sync in step")
            monkeypatch.setattr(torch.Tensor, "item", boom)
            monkeypatch.setattr(torch.Tensor, "__bool__", boom)
        t_arg = float(t) if (i % 2 and t.dtype.is_floating_point) else (int(t) if i % 2 else t)
        before = len(calls)
        x = s.step(torch.sin(x), t_arg, x).prev_sample
        assert len(calls) == before + 1
    monkeypatch.undo()
    assert torch.isfinite(x).all() and len(calls) == len(ts)


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_zero_terminal_snr_epsilon_is_finite(name):
    """diffusers divides by sqrt(alpha_bar_T) = 0 here (inf/NaN); fastdiff clamps alpha_bar to 2**-24."""
    cfg = {**SD, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "clip_sample": False}
    outs = []
    for mod in (fdd, diffusers):
        s = getattr(mod, name)(**cfg)
        s.set_timesteps(5)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 4, 4, generator=g)
        x = s.step(torch.randn(2, 3, 4, 4, generator=g), s.timesteps[0], x, generator=g).prev_sample
        outs.append(x)
    assert torch.isfinite(outs[0]).all()
    # the peer's breakdown is checked, not assumed: its rescaled alpha_bar_T is exactly 0 (x - x in the rescale,
    # the same on every CPU), and its step then divides by sqrt(0)
    assert s.alphas_cumprod[-1].item() == 0.0
    assert not torch.isfinite(outs[1]).all()  # the failure the clamp fixes (keeps this test meaningful)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                  "UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler", "HeunDiscreteScheduler",
                                  "FlowMatchHeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
                                  "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"])
def test_half_precision_kept(name, dtype):
    ref_ts = getattr(fdd, name)()
    ref_ts.set_timesteps(8)
    hi, _ = _run(getattr(fdd, name)(), 8, ref_ts.timesteps)
    lo, _ = _run(getattr(fdd, name)(), 8, ref_ts.timesteps, dtype=dtype)
    assert lo.dtype == dtype
    tol = 0.05 if dtype == torch.float16 else 0.25  # storage rounding of 8 steps; math is fp32
    torch.testing.assert_close(lo.float(), hi, rtol=0, atol=tol * max(1.0, hi.abs().max().item()))


@pytest.mark.parametrize("name", STEPPED)
def test_triton_backend_matches_torch(name):
    """Three steps through the Triton kernel (interpreter on CPU) against the PyTorch path."""
    res = []
    for backend in ("torch", "triton"):
        torch.manual_seed(3)  # before set_timesteps: stochastic schedulers draw their Philox seed there
        # the SDE variant where it is one (the inverse solver's is not: its noise scale has no real root)
        sde = name in ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler")
        s = getattr(fdd, name)(**({"algorithm_type": "sde-dpmsolver++"} if sde else {}))
        s.backend = backend
        s.set_timesteps(4)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 4, 4, generator=g)
        for t in list(s.timesteps)[:3]:
            kw = {"generator": None} if "generator" in inspect.signature(s.step).parameters else {}
            x = s.step(torch.cos(x), t, x, **kw).prev_sample
        res.append(x)
    # Both paths compute in float32 with different association; at sigma ~ 15 (Heun's first steps) the
    # conversion x - sigma*eps cancels, so allow float32 rounding relative to the trajectory's scale.
    scale = max(1.0, res[0].abs().max().item())
    torch.testing.assert_close(res[1], res[0], rtol=1e-4, atol=2e-5 * scale)


def test_in_kernel_noise_follows_global_seed():
    """Without a generator the noise is Philox keyed by one seed from torch's global RNG: reproducible."""
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        s = fdd.EulerAncestralDiscreteScheduler()
        s.set_timesteps(5)
        x = torch.zeros(2, 3, 4, 4)
        for t in s.timesteps:
            x = s.step(torch.zeros_like(x), t, x).prev_sample
        outs.append(x)
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    # with a zero epsilon prediction each step adds N(0, sigma_up^2): the final std is sqrt(sum sigma_up^2).
    # 96 values estimate the std to ~7% (1 sd), so +-30% detects wrong noise scales or missing noise
    sig = s.sigmas.double()
    up = (sig[1:] ** 2 * (sig[:-1] ** 2 - sig[1:] ** 2) / sig[:-1] ** 2).sqrt()
    expected = up.pow(2).sum().sqrt().item()
    assert 0.7 * expected < outs[0].std().item() < 1.3 * expected


def test_add_noise_matches_diffusers():
    x0, noise = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    for name in ("DDPMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler"):
        ours, ref = getattr(fdd, name)(), getattr(diffusers, name)()
        ours.set_timesteps(10)
        ref.set_timesteps(10)
        t = ref.timesteps[[0, 3, 7]]
        torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=2e-4, atol=1e-5)
    ours, ref = fdd.FlowMatchEulerDiscreteScheduler(shift=3.0), diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    t = ref.timesteps[[1, 4, 9]]
    torch.testing.assert_close(ours.scale_noise(x0, t, noise), ref.scale_noise(x0, t, noise), rtol=1e-5, atol=1e-6)


def test_flow_match_heun_scale_noise_and_stage_state_match_diffusers():
    """diffusers has no test file for FlowMatchHeunDiscreteScheduler: its scale_noise (at the step index it sets
    from the timestep, the second of a repeated pair) and the predictor/corrector state, against diffusers'."""
    gen = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(3, 2, 5, generator=gen), torch.randn(3, 2, 5, generator=gen)
    ours, ref = fdd.FlowMatchHeunDiscreteScheduler(shift=3.0), diffusers.FlowMatchHeunDiscreteScheduler(shift=3.0)
    for s in (ours, ref):
        s.set_timesteps(5)
    t = ref.timesteps[3]
    torch.testing.assert_close(ours.scale_noise(x0, t, noise), ref.scale_noise(x0, t, noise), rtol=1e-6, atol=1e-6)
    assert ours.step_index == ref.step_index == 4
    states = []
    for s in (ours, ref):
        s.set_timesteps(5)
        x, seen = x0.clone(), []
        for t in s.timesteps[:4]:
            seen.append(s.state_in_first_order)
            x = s.step(fake_model(x, t), t, x).prev_sample
        states.append((seen, s.state_in_first_order, x))
    assert states[0][:2] == states[1][:2] == ([True, False, True, False], True)
    torch.testing.assert_close(states[0][2], states[1][2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="integer indices"):
        ours.step(x0, 3, x0)


def _sde_ve_score(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A score-like fake model: ``-(x - 0.3 sin x) / (sigma**2 + 1)`` (float32 math, float64 for float64 input)."""
    wide = x if x.dtype == torch.float64 else x.float()
    return (-(wide - 0.3 * torch.sin(wide / 7.0)) / (sigma**2 + 1.0)).to(x.dtype)


def _sde_ve_run(sched, n, sigmas, dtype=torch.float32, seed=0, shape=(3, 2, 5, 7)):
    """Predictor-corrector sampling as diffusers' score-SDE pipeline runs it; each step's outputs."""
    sched.set_timesteps(n)
    sched.set_sigmas(n)
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * sched.init_noise_sigma).to(dtype)
    steps = []
    for i, t in enumerate(sched.timesteps):
        for _ in range(sched.config.correct_steps):
            corrected = sched.step_correct(_sde_ve_score(x, sigmas[i]), x, generator=g).prev_sample
            x = corrected
        out = sched.step_pred(_sde_ve_score(x, sigmas[i]), t, x, generator=g)
        steps.append({"corrected": corrected, "prev": out.prev_sample, "mean": out.prev_sample_mean})
        x = out.prev_sample
    return steps


@pytest.mark.parametrize("cfg,n", [({}, 6), ({"sigma_max": 50.0, "snr": 0.2, "correct_steps": 2}, 5),
                                   ({"sigma_min": 0.002, "sigma_max": 80.0, "sampling_eps": 1e-3}, 4)])
def test_score_sde_ve_parity_with_diffusers(cfg, n):
    """Schedule attributes, then a predictor-corrector run (both outputs of every predictor step and every
    corrector output) bounded against diffusers' own code run in float64."""
    ours, ref = fdd.ScoreSdeVeScheduler(**cfg), diffusers.ScoreSdeVeScheduler(**cfg)
    for s in (ours, ref):
        s.set_timesteps(n)
        s.set_sigmas(n)
    torch.testing.assert_close(ours.timesteps, ref.timesteps, rtol=0, atol=0)
    torch.testing.assert_close(ours.sigmas, ref.sigmas, rtol=2e-6, atol=0)
    torch.testing.assert_close(ours.discrete_sigmas, ref.discrete_sigmas, rtol=0, atol=0)
    assert ours.init_noise_sigma == ref.init_noise_sigma
    sigmas = [float(v) for v in ref.sigmas]
    exact = _sde_ve_run(float64_scheduler(diffusers, "ScoreSdeVeScheduler", cfg), n, sigmas, torch.float64)
    a, b = _sde_ve_run(ours, n, sigmas), _sde_ve_run(ref, n, sigmas)
    for i, (p, q, r) in enumerate(zip(a, b, exact)):
        for key in ("corrected", "prev", "mean"):
            assert p[key].dtype == q[key].dtype
            assert_parity(f"ScoreSdeVe step {i} {key}", p[key], q[key], r[key], i + 1)
    tup = ours.step_pred(torch.ones(2, 3), ours.timesteps[0], torch.zeros(2, 3), return_dict=False)
    assert len(tup) == 2 and len(ours.step_correct(torch.ones(2, 3), torch.zeros(2, 3), return_dict=False)) == 1


def test_score_sde_ve_one_fused_step_per_call_no_sync_and_triton(monkeypatch):
    """step_pred is one fused_step; step_correct one fused_step after its norms; neither reads a tensor back
    on the host; the Triton kernel (interpreter on CPU) gives the PyTorch path's numbers."""
    from fastdiff.diffusers import _sde_ve

    calls = []
    real = _base.fused_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_base, "fused_step", counting)
    monkeypatch.setattr(_sde_ve, "fused_step", counting)
    results = []
    for backend in ("torch", "triton"):
        s = fdd.ScoreSdeVeScheduler(sigma_max=20.0)
        s.backend = backend
        s.set_timesteps(4)
        s.set_sigmas(4)
        g = torch.Generator().manual_seed(2)
        x = torch.randn(2, 3, 5, generator=g) * 20.0
        for i, t in enumerate(s.timesteps):
            if i == 1:
                def boom(*a, **k):
                    raise AssertionError("host-device sync in a step")
                monkeypatch.setattr(torch.Tensor, "item", boom)
                monkeypatch.setattr(torch.Tensor, "__bool__", boom)
            before = len(calls)
            x = s.step_correct(-x / 4.0, x, generator=g).prev_sample
            assert len(calls) == before + 1
            x = s.step_pred(-x / 4.0, t if i % 2 else float(t), x, generator=g).prev_sample
            assert len(calls) == before + 2
        monkeypatch.setattr(torch.Tensor, "item", real_item)
        monkeypatch.setattr(torch.Tensor, "__bool__", real_bool)
        results.append(x)
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-5 * results[0].abs().max().item())
    with pytest.raises(ValueError, match="discrete sigma index"):
        s.step_pred(x, 2.0, x)


real_item, real_bool = torch.Tensor.item, torch.Tensor.__bool__


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_sde_ve_corrector_on_cpu_tensors_is_the_general_paths_bits(dtype, monkeypatch):
    """On plain CPU tensors step_correct reads its step size as a host float and runs the CPU step's tensor ops
    itself: bit for bit what the general path (fused_step on a row built on the device) gives, with no launch."""
    from fastdiff.diffusers import _sde_ve

    gen = torch.Generator().manual_seed(11)
    x, score = torch.randn(3, 2, 7, 5, generator=gen).to(dtype) * 9.0, torch.randn(3, 2, 7, 5, generator=gen).to(dtype)
    s = fdd.ScoreSdeVeScheduler(sigma_max=9.0)
    s.set_timesteps(6)
    s.set_sigmas(6)
    fast = s.step_correct(score, x, generator=torch.Generator().manual_seed(4)).prev_sample
    calls = []
    monkeypatch.setattr(_sde_ve, "fused_step", lambda *a, **k: calls.append(1) or _sde_ve._FUSED_STEP(*a, **k))
    general = s.step_correct(score, x, generator=torch.Generator().manual_seed(4)).prev_sample
    assert calls == [1] and fast.dtype == general.dtype == dtype
    assert torch.equal(fast, general)


def test_score_sde_ve_batched_timesteps_cm_and_unclip_add_noise_match_diffusers():
    """A step_pred with one timestep per sample (a row per sample: fused_step's coef_index), and add_noise of the
    consistency, UnCLIP and score-SDE drop-ins, against diffusers."""
    gen = torch.Generator().manual_seed(8)
    x, m = torch.randn(3, 2, 5, generator=gen) * 30.0, torch.randn(3, 2, 5, generator=gen)
    outs = []
    for mod in (fdd, diffusers):
        s = mod.ScoreSdeVeScheduler(sigma_max=30.0)
        s.set_timesteps(9)
        s.set_sigmas(9)
        outs.append(s.step_pred(m, torch.tensor([0.2, 0.55, 0.9]), x, generator=torch.Generator().manual_seed(1)))
    for key in ("prev_sample", "prev_sample_mean"):
        torch.testing.assert_close(getattr(outs[0], key), getattr(outs[1], key), rtol=1e-6, atol=1e-5)
    # (4-D: diffusers' score-SDE add_noise broadcasts its sigmas as [:, None, None, None])
    x0, noise = torch.randn(3, 2, 3, 5, generator=gen), torch.randn(3, 2, 3, 5, generator=gen)
    for name, n, pick in (("CMStochasticIterativeScheduler", 10, [0, 3, 7]), ("UnCLIPScheduler", 10, [1, 4, 9]),
                          ("ScoreSdeVeScheduler", 9, None)):
        ours, ref = getattr(fdd, name)(), getattr(diffusers, name)()
        for s in (ours, ref):
            s.set_timesteps(n)
        t = torch.tensor([0, 4, 8]) if pick is None else ref.timesteps[pick]
        if pick is None:
            for s in (ours, ref):
                s.set_sigmas(n)
        # (UnCLIP's, as DDPM's, takes fastdiff.add_noise on the float64 schedule: diffusers' float32 cumulative
        # product is up to ~1e-5 away, the tolerance of test_add_noise_matches_diffusers)
        torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("cfg,n", [({}, 8), ({"clip_sample": False, "num_train_timesteps": 500}, 6),
                                   ({"prediction_type": "sample"}, 5), ({"variance_type": "learned_range"}, 7),
                                   ({"variance_type": "learned_range", "clip_sample": False}, 25)])
def test_unclip_prev_timestep_parity(cfg, n):
    """UnCLIP's skipping run (prev_timestep = the next timestep; None at the last, i.e. t - 1), and with
    ``learned_range`` a model output of twice the channels (the second half the predicted variance), bounded
    against diffusers' own code run in float64."""
    learned = cfg.get("variance_type") == "learned_range"

    def run(sched, dtype):
        sched.set_timesteps(n)
        g = torch.Generator().manual_seed(3)
        x = torch.randn(2, 3, 5, 7, generator=g).to(dtype)
        ts, steps = sched.timesteps, []
        for i, t in enumerate(ts):
            out = fake_model(x, t)
            if learned:
                out = torch.cat([out, torch.tanh(x * 0.7)], dim=1)
            res = sched.step(out, t, x, prev_timestep=ts[i + 1] if i + 1 < len(ts) else None, generator=g)
            steps.append(res)
            x = res.prev_sample
        return steps

    ours, ref = fdd.UnCLIPScheduler(**cfg), diffusers.UnCLIPScheduler(**cfg)
    a, b = run(ours, torch.float32), run(ref, torch.float32)
    c = run(float64_scheduler(diffusers, "UnCLIPScheduler", cfg), torch.float64)
    assert torch.equal(ours.timesteps, ref.timesteps)
    for i, (p, q, r) in enumerate(zip(a, b, c)):
        assert_parity(f"UnCLIP step {i} prev_sample", p.prev_sample, q.prev_sample, r.prev_sample, i + 1)
        assert_parity(f"UnCLIP step {i} x0", p.pred_original_sample, q.pred_original_sample,
                      r.pred_original_sample, i + 1)
    # a pair outside both tables (t -> any earlier timestep) and a bad one
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    m = torch.cat([x, x], 1) if learned else x
    T = ours.config.num_train_timesteps
    jump = [s.step(m, T * 7 // 10, x, prev_timestep=T // 8, generator=torch.Generator().manual_seed(9))
            for s in (ours, ref)]
    torch.testing.assert_close(jump[0].prev_sample, jump[1].prev_sample, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(jump[0].pred_original_sample, jump[1].pred_original_sample, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="prev_timestep"):
        ours.step(m, 100, x, prev_timestep=100)


def test_flow_map_any_step_jumps_match_diffusers():
    """FlowMapEuler's jumps to a given r_timestep: on the schedule, skipping steps, off the schedule (t / T), one
    timestep per sample, and the one-shot step; against diffusers' class."""
    gen = torch.Generator().manual_seed(5)
    x, m = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    ours, ref = fdd.FlowMapEulerDiscreteScheduler(shift=3.0), diffusers.FlowMapEulerDiscreteScheduler(shift=3.0)
    for s in (ours, ref):
        s.set_timesteps(6)
    ts = ref.timesteps
    for t, r in [(ts[0], ts[1:2]), (ts[1], ts[4]), (ts[2], None), (ts[5], None), (731.3, 402.9),
                 (torch.tensor([900.0, 650.5, 310.0]), torch.tensor([600.0, 100.0, 0.0])), (ts[0], 0.0),
                 (ts[3], 299.9)]:
        a = ours.step(m, t, x, r_timestep=r).prev_sample
        b = ref.step(m, t, x, r_timestep=r).prev_sample
        assert a.dtype == b.dtype and ours.step_index == ref.step_index
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="r_timestep"):
        ours.step(m, 731.3, x)
    t = torch.tensor([0.0, 500.0, 1000.0])
    torch.testing.assert_close(ours.scale_noise(x, t, m), ref.scale_noise(x, t, m))


@pytest.mark.parametrize("name, begin", [("DPMSolverMultistepScheduler", 4), ("DEISMultistepScheduler", 3),
                                         ("DPMSolverSinglestepScheduler", 4), ("DPMSolverSinglestepScheduler", 5)])
def test_begin_index_img2img(name, begin):
    """set_begin_index starts mid-schedule; multistep orders restart from there as in diffusers (singlestep:
    mid-block, the block is shortened to the steps taken)."""
    res = []
    for mod in (fdd, diffusers):
        s = getattr(mod, name)(solver_order=3)
        s.set_timesteps(10)
        s.set_begin_index(begin)
        x = torch.linspace(-1, 1, 24).reshape(2, 3, 4)
        for t in s.timesteps[begin:]:
            x = s.step(fake_model(x, t), t, x).prev_sample
        res.append(x)
    torch.testing.assert_close(res[0], res[1], rtol=0, atol=5e-5)



@pytest.mark.parametrize("order", [1, 3, 4])
def test_lms_begin_index_pairs_weights_with_the_derivatives_kept(order):
    """LMS started mid-schedule (img2img) has fewer derivatives than its order: diffusers pairs the first weights
    of the full-order formula with those it has, and the drop-in does the same (bounded by diffusers' float64 run)."""
    runs = {}
    for key, sched, dtype in (("ours", fdd.LMSDiscreteScheduler(**SD), torch.float32),
                              ("peer", diffusers.LMSDiscreteScheduler(**SD), torch.float32),
                              ("exact", float64_scheduler(diffusers, "LMSDiscreteScheduler", SD), torch.float64)):
        sched.set_timesteps(11)
        sched.set_begin_index(4)
        x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(order)).to(dtype) * 3.0
        for t in sched.timesteps[4:]:
            x = sched.step(fake_model(sched.scale_model_input(x, t), t), t, x, order=order).prev_sample
        runs[key] = x
    assert_parity(f"LMS order {order} from index 4", runs["ours"], runs["peer"], runs["exact"], 7)


def test_edm_preconditioning_custom_ramp_and_given_x0():
    """EDM's public preconditioning calls, a custom ramp and a caller-given x0 estimate: diffusers' numbers."""
    cfg = {"sigma_schedule": "karras", "prediction_type": "v_prediction", "sigma_data": 0.7}
    ours, ref = fdd.EDMEulerScheduler(**cfg), diffusers.EDMEulerScheduler(**cfg)
    ramp = torch.tensor([0.0, 0.15, 0.4, 0.7, 0.95])
    for s in (ours, ref):
        s.set_timesteps(sigmas=ramp)
    assert torch.equal(ours.sigmas, ref.sigmas) and torch.equal(ours.timesteps, ref.timesteps)
    g = torch.Generator().manual_seed(4)
    x, m = torch.randn(2, 3, 5, generator=g) * 20.0, torch.randn(2, 3, 5, generator=g)
    sigma = ref.sigmas[1]
    assert torch.equal(ours.precondition_inputs(x, sigma), ref.precondition_inputs(x, sigma))
    assert torch.equal(ours.precondition_noise(sigma), ref.precondition_noise(sigma))
    assert torch.equal(ours.precondition_outputs(x, m, sigma), ref.precondition_outputs(x, m, sigma))
    x0 = torch.randn(2, 3, 5, generator=g)
    for t in ref.timesteps[:3]:
        a = ours.step(m, t, x, pred_original_sample=x0)
        b = ref.step(m, t, x, pred_original_sample=x0)
        assert a.pred_original_sample is x0
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="sigma_schedule"):
        fdd.EDMEulerScheduler(sigma_schedule="linear")


@pytest.mark.parametrize("name,cfg", [("KDPM2DiscreteScheduler", SD), ("KDPM2AncestralDiscreteScheduler", SD),
                                      ("EDMDPMSolverMultistepScheduler", {"solver_order": 3}),
                                      ("EDMEulerScheduler", {})])
def test_begin_index_mid_schedule(name, cfg):
    """set_begin_index (img2img) on the new sigma schedulers: the run from index 4 as diffusers steps it (orders
    restart there; a two-stage run starts with a first stage), bounded by diffusers' float64 run."""
    runs = {}
    for key, sched, dtype in (("ours", getattr(fdd, name)(**cfg), torch.float32),
                              ("peer", getattr(diffusers, name)(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, name, cfg), torch.float64)):
        sched.set_timesteps(9)
        sched.set_begin_index(4)
        g = torch.Generator().manual_seed(2)
        x = torch.randn(2, 3, 5, generator=g).to(dtype) * 2.0
        for t in sched.timesteps[4:]:
            kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
            x = sched.step(fake_model(sched.scale_model_input(x, t), t), t, x, **kw).prev_sample
        runs[key] = x
    assert_parity(f"{name} from index 4", runs["ours"], runs["peer"], runs["exact"], 9)

def test_edm_dpm_solver_sde_has_no_third_order():
    """diffusers' EDM DPM-Solver has no third-order SDE update (its step fails there): the drop-in says so."""
    s = fdd.EDMDPMSolverMultistepScheduler(solver_order=3, algorithm_type="sde-dpmsolver++")
    s.set_timesteps(6)
    x = torch.zeros(1, 2, 3)
    with pytest.raises(NotImplementedError, match="third-order"):
        s.step(x, s.timesteps[0], x)
    s = fdd.EDMDPMSolverMultistepScheduler(solver_order=2, algorithm_type="sde-dpmsolver++")
    s.set_timesteps(6)
    for t in s.timesteps:
        x = s.step(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    assert torch.isfinite(x).all()

def _tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@pytest.mark.parametrize("pipe_name,sched_name,kw", [
    ("DDPMPipeline", "DDPMScheduler", {}),
    ("DDIMPipeline", "DDIMScheduler", {"eta": 0.0}),
    ("DDIMPipeline", "DDIMScheduler", {"eta": 1.0}),
    ("PNDMPipeline", "PNDMScheduler", {}),
])
def test_pipeline_swap_same_images(pipe_name, sched_name, kw, monkeypatch):
    """The documented swap in diffusers' own pipelines: the images (``(x / 2 + 0.5).clamp(0, 1)``, continuous and
    1-Lipschitz in the final sample, so no rounding is amplified after the loop) bounded against the same pipeline
    run in float64 with diffusers' scheduler in float64; each of the 8 steps runs the UNet and one step."""
    steps = 8

    def images(sched, wide=False):
        pipe = getattr(diffusers, pipe_name)(unet=_tiny_unet(), scheduler=diffusers.DDIMScheduler())
        pipe.scheduler = sched  # the documented swap (DDIMPipeline converts in __init__)
        if wide:
            float64_pipeline(monkeypatch, pipe)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                       output_type="np", **kw)
        return torch.from_numpy(out.images)

    peer = images(getattr(diffusers, sched_name)())
    ours = images(getattr(fdd, sched_name)())
    exact = images(float64_scheduler(diffusers, sched_name, {}), wide=True)
    assert peer.shape == (2, 8, 8, 3) and exact.dtype == torch.float64
    assert peer.std() > 0.05  # not all clamped to one value
    assert_parity(f"{pipe_name} images", ours, peer, exact, steps)


def test_works_without_diffusers(tmp_path):
    """With diffusers absent the stand-in ConfigMixin/outputs are used (run in a fresh interpreter)."""
    code = f"""
import sys
sys.modules['diffusers'] = None  # make 'import diffusers' fail
import torch, fastdiff.diffusers as fdd
assert not fdd.HAS_DIFFUSERS
s = fdd.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012, clip_sample=False)
assert s.config.clip_sample is False and s.config['num_train_timesteps'] == 1000
s.save_pretrained({str(tmp_path)!r})
t = fdd.DDIMScheduler.from_pretrained({str(tmp_path)!r})
assert dict(t.config) == dict(s.config)
e = fdd.EulerDiscreteScheduler.from_config(t.config, use_karras_sigmas=True)
assert e.config.use_karras_sigmas and e.config.beta_schedule == 'scaled_linear'
t.set_timesteps(4)
x = torch.randn(1, 2, 3)
out = t.step(torch.zeros_like(x), t.timesteps[0], x)
assert out.prev_sample.shape == x.shape and out[0] is out.prev_sample and out.pred_original_sample is not None
print('ok')
"""
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


@pytest.mark.parametrize("algorithm_type", ["dpmsolver++", "dpmsolver"])
def test_learned_variance_model_output(algorithm_type):
    """variance_type learned / learned_range: the model returns [noise; variance] channels and the solver uses
    the first three (diffusers' convention), so a 6-channel output steps a 3-channel sample as diffusers does."""
    cfg = {"variance_type": "learned_range", "algorithm_type": algorithm_type, "final_sigmas_type": "sigma_min"}
    runs = {}
    for key, sched, dtype in (("ours", fdd.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("peer", diffusers.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "DPMSolverMultistepScheduler", cfg), torch.float64)):
        sched.set_timesteps(8)
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)).to(dtype)
        for t in sched.timesteps:
            out = torch.cat([fake_model(x, t), torch.full_like(x, float("nan"))], dim=1)  # variance: never read
            x = sched.step(out, t, x).prev_sample
        runs[key] = x
    assert_parity("learned_range prev_sample", runs["ours"], runs["peer"], runs["exact"], 8)


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_ddpm_learned_variance(variance_type):
    """DDPM with a model that predicts its variance ([noise; variance] channels): the noise of each step is
    scaled per element as diffusers scales it (generator noise, so the three runs draw the same normals)."""
    cfg = {"variance_type": variance_type}
    runs = {}
    for key, sched, dtype in (("ours", fdd.DDPMScheduler(**cfg), torch.float32),
                              ("peer", diffusers.DDPMScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "DDPMScheduler", cfg), torch.float64)):
        sched.set_timesteps(8)
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, 3, 4, 4, generator=g).to(dtype)
        for t in sched.timesteps:
            eps = fake_model(x, t)
            v = torch.tanh(eps) if variance_type == "learned_range" else 0.05 + eps.abs() * 1e-3
            x = sched.step(torch.cat([eps, v], dim=1), t, x, generator=g).prev_sample
        runs[key] = x
    assert_parity(f"{variance_type} prev_sample", runs["ours"], runs["peer"], runs["exact"], 8)


@pytest.mark.parametrize("how", ["mu", "sigmas"])
def test_unipc_flow_dynamic_shift_and_custom_sigmas(how):
    """UniPC on flow sigmas with a dynamic shift (``mu``) or custom ``sigmas``: diffusers' schedule and trajectory."""
    cfg = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "use_dynamic_shifting": how == "mu"}
    kw = {"num_inference_steps": 8, "mu": 0.8} if how == "mu" else {"sigmas": np.array([0.95, 0.8, 0.6, 0.45, 0.3, 0.1])}
    runs = {}
    for key, sched, dtype in (("ours", fdd.UniPCMultistepScheduler(**cfg), torch.float32),
                              ("peer", diffusers.UniPCMultistepScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "UniPCMultistepScheduler", cfg), torch.float64)):
        sched.set_timesteps(**kw)
        runs[key + "_ts"], runs[key + "_sig"] = sched.timesteps.clone(), sched.sigmas.clone()
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)).to(dtype)
        for t in sched.timesteps:
            x = sched.step(fake_model(x, t), t, x).prev_sample
        runs[key] = x
    assert torch.equal(runs["ours_ts"], runs["peer_ts"])
    torch.testing.assert_close(runs["ours_sig"].double(), runs["peer_sig"].double(), rtol=1e-6, atol=1e-7)
    assert_parity(f"flow UniPC ({how}) prev_sample", runs["ours"], runs["peer"], runs["exact"], len(runs["peer_ts"]))


def test_dpm_solver_flow_dynamic_shift():
    """DPM-Solver on flow sigmas with ``mu``: diffusers sets flow_shift = e^mu; the same schedule and trajectory."""
    cfg = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "use_dynamic_shifting": True}
    runs = {}
    for key, sched, dtype in (("ours", fdd.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("peer", diffusers.DPMSolverMultistepScheduler(**cfg), torch.float32),
                              ("exact", float64_scheduler(diffusers, "DPMSolverMultistepScheduler", cfg), torch.float64)):
        sched.set_timesteps(8, mu=0.7)
        runs[key + "_ts"], runs[key + "_shift"] = sched.timesteps.clone(), float(sched.config.flow_shift)
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
        for t in sched.timesteps:
            x = sched.step(fake_model(x, t), t, x).prev_sample
        runs[key] = x
    assert torch.equal(runs["ours_ts"], runs["peer_ts"]) and runs["ours_shift"] == pytest.approx(runs["peer_shift"])
    assert_parity("flow DPM-Solver (mu) prev_sample", runs["ours"], runs["peer"], runs["exact"], 8)


@pytest.mark.parametrize("cfg", [{}, SD, {"beta_schedule": "squaredcos_cap_v2"}, {"beta_schedule": "sigmoid"},
                                 {**SD, "rescale_betas_zero_snr": True}, {"trained_betas": [0.01 * k for k in range(1, 11)],
                                                                          "num_train_timesteps": 10}])
def test_table_arithmetic_modes(cfg):
    """Default: the training schedule is diffusers' float32 one, bit for bit; "float64": fastdiff.schedules' exact one
    (nearer to a float64 run of diffusers' own code than diffusers' float32 run is)."""
    ours, ref = fdd.DDPMScheduler(**cfg), diffusers.DDPMScheduler(**cfg)
    assert torch.equal(ours.betas, ref.betas) and torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)
    previous = fdd.set_table_arithmetic("float64")
    try:
        exact = fdd.DDPMScheduler(**cfg)
    finally:
        fdd.set_table_arithmetic(previous)
    ref64 = float64_scheduler(diffusers, "DDPMScheduler", cfg).alphas_cumprod.double()
    err64 = (exact.alphas_cumprod.double() - ref64).abs().max().item()
    err32 = (ref.alphas_cumprod.double() - ref64).abs().max().item()
    assert err64 <= max(err32, 6e-8 * ref64.abs().max().item())
    with pytest.raises(ValueError, match="mode must be one of"):
        fdd.set_table_arithmetic("float16")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 12288), (3, 7), (16, 1000), (2, 1)])
def test_row_quantile_is_torch_quantile(dtype, shape):
    """Dynamic thresholding's per-sample quantile (two selections) equals torch.quantile's sort, bit for bit."""
    flat = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(shape[1])).abs()
    for q in (0.0, 0.5, 0.9, 0.995, 0.999, 1.0):
        assert torch.equal(_base._row_quantile(flat, q), torch.quantile(flat, q, dim=1)), q


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_beta_end_above_one_accepted_like_diffusers(name):
    """diffusers accepts ``beta_end >= 1`` (its betas pass 1 part-way, ``alphas_cumprod`` turns non-positive): the
    drop-in accepts it too, says where the schedule breaks, and gives diffusers' numbers: ``add_noise`` on both sides
    of the break (NaN exactly where diffusers has NaN) and one step at an early timestep."""
    cfg = {"beta_start": 0.1, "beta_end": 2.0}
    with pytest.warns(UserWarning, match="betas >= 1 from training timestep"):
        ours = getattr(fdd, name)(**cfg)
    ref = getattr(diffusers, name)(**cfg)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0, equal_nan=True)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 3, 100, 473, 474, 999])
    a, b = ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t)
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)
    x = torch.randn(2, 3, 4, 4, generator=g)
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    t = int(ref.timesteps[-2])  # an early timestep: before the break
    out = ours.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    want = ref.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.isfinite(want).all()
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stochastic", [False, True])
def test_flow_match_per_token_timesteps(stochastic):
    """LTX-style conditioning: each token steps from its own timestep to the next schedule sigma below it, with
    diffusers' sign and float32 result; bounded by a float64 run of the same formula (deterministic case: the one
    rounding of addcmul against diffusers' two, so within 2 ulp of the float64 value)."""
    cfg = dict(shift=3.0, stochastic_sampling=stochastic)
    ours, ref = fdd.FlowMatchEulerDiscreteScheduler(**cfg), diffusers.FlowMatchEulerDiscreteScheduler(**cfg)
    ours.set_timesteps(8)
    ref.set_timesteps(8)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 8, generator=g).to(torch.bfloat16)
    v = torch.randn(2, 12, 8, generator=g).to(torch.bfloat16)
    t = ref.timesteps[2]
    # most tokens at the step's timestep, some conditioning tokens further along (a lower timestep) or at 0
    ptt = t.expand(2, 12).clone()
    ptt[:, :3] = ref.timesteps[5]
    ptt[1, 3] = 0.0
    for s in (ours, ref):
        s.set_begin_index(2)
    a = ours.step(v, t, x, per_token_timesteps=ptt, generator=torch.Generator().manual_seed(5)).prev_sample
    b = ref.step(v, t, x, per_token_timesteps=ptt, generator=torch.Generator().manual_seed(5)).prev_sample
    assert a.dtype == b.dtype == torch.float32 and ours.step_index == ref.step_index == 3
    if stochastic:  # same generator draws: the same noise, the same three float32 operations
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        return
    sig = ptt.double() / 1000
    sch = ref.sigmas.double()[:, None, None]
    nxt = ((sch < sig[None] - 1e-6) * sch).max(dim=0).values
    exact = x.double() + ((sig - nxt)[..., None]).float().double() * v.double()
    ulp = torch.finfo(torch.float32).eps * exact.abs().clamp_min(1e-30)
    assert ((a.double() - exact).abs() <= 2 * ulp + (b.double() - exact).abs()).all()
    assert (a - b).abs().max() <= 4 * torch.finfo(torch.float32).eps * b.abs().max()


def test_flow_match_per_token_timesteps_bad_shape():
    s = fdd.FlowMatchEulerDiscreteScheduler()
    s.set_timesteps(4)
    x = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="per_token_timesteps"):
        s.step(x, s.timesteps[0], x, per_token_timesteps=torch.zeros(2, 4))


def test_ddim_inverse_off_schedule_timestep_and_deprecated_kwarg():
    """The inversion step is stateless in diffusers: any training timestep steps with its own row; the deprecated
    ``set_alpha_to_zero`` still sets ``set_alpha_to_one``, as diffusers reads it."""
    x = torch.linspace(-2, 2, 2 * 3 * 5).reshape(2, 3, 5)
    for t in (0, 7, 333, 999):
        outs = []
        for mod in (fdd, diffusers):
            s = mod.DDIMInverseScheduler(clip_sample=False)
            s.set_timesteps(10)
            outs.append(s.step(fake_model(x, t), t, x))
        torch.testing.assert_close(outs[0].prev_sample, outs[1].prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outs[0].pred_original_sample, outs[1].pred_original_sample, rtol=1e-5, atol=1e-5)
    for mod in (fdd, diffusers):
        s = mod.DDIMInverseScheduler(beta_start=0.01, set_alpha_to_zero=False)
        assert float(s.initial_alpha_cumprod) == pytest.approx(1 - 0.01, rel=1e-6)
@pytest.mark.parametrize("name", ["DEISMultistepScheduler", "DPMSolverSinglestepScheduler",
                                  "DPMSolverMultistepInverseScheduler", "IPNDMScheduler"])
def test_new_multistep_classes_refuse_bad_input(name):
    cls = getattr(fdd, name)
    if name != "IPNDMScheduler":
        with pytest.raises(ValueError, match="solver_order"):
            cls(solver_order=4)
        with pytest.raises(NotImplementedError, match="not implemented"):
            cls(algorithm_type="no-such-solver")
    s = cls()
    for bad, err in ((0, ValueError), (2.5, TypeError)):
        with pytest.raises(err, match="num_inference_steps"):
            s.set_timesteps(bad)
    with pytest.raises(ValueError, match="set_timesteps|Number of inference steps"):
        fresh = cls()
        fresh.num_inference_steps = None
        fresh.step(torch.zeros(1, 2), 0, torch.zeros(1, 2))


def test_pndm_too_few_steps_for_its_warm_up_names_the_argument():
    """PRK needs ``pndm_order`` timesteps; diffusers fails on numpy broadcasting, the drop-in says why."""
    with pytest.raises(ValueError, match="num_inference_steps must be at least 4"):
        fdd.PNDMScheduler().set_timesteps(3)
    plms = fdd.PNDMScheduler(skip_prk_steps=True)
    plms.set_timesteps(3)
    assert len(plms.timesteps) == 4
    fdd.PNDMScheduler().set_timesteps(4)


@pytest.mark.parametrize("name, kwargs", [
    ("DPMSolverMultistepScheduler", {"algorithm_type": "deis"}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "deis", "final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {"solver_type": "bh2"}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "foo"}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "solver_type": "foo"}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver"}),
    ("DPMSolverSinglestepScheduler", {"algorithm_type": "sde-dpmsolver"}),
    ("DPMSolverSinglestepScheduler", {"algorithm_type": "deis", "solver_type": "logrho"}),
    ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    ("EDMDPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}),
    ("EDMDPMSolverMultistepScheduler", {"algorithm_type": "deis"}),
    ("DPMSolverMultistepInverseScheduler", {"algorithm_type": "deis", "solver_type": "bh1"}),
    ("DPMSolverMultistepInverseScheduler", {"algorithm_type": "dpmsolver"}),
    ("CosineDPMSolverMultistepScheduler", {"solver_type": "bh1"}),
    ("CosineDPMSolverMultistepScheduler", {"solver_type": "x"}),
])
def test_dpm_solver_option_names_are_checked_as_diffusers_checks_them(name, kwargs):
    """One check of DPM-Solver's option names for the five classes on it: the same error (in diffusers' order:
    algorithm, solver, then a zero final sigma for the non-"++" names) or the same names written to the config."""
    got = []
    for mod in (fdd, diffusers):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # diffusers' deprecation of the plain algorithm names
                s = getattr(mod, name)(**kwargs)
            got.append(("ok", s.config.get("algorithm_type"), s.config.solver_type))
        except (ValueError, NotImplementedError) as exc:
            got.append((type(exc).__name__,))
    assert got[0] == got[1]
