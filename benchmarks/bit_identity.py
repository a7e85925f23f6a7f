"""Record every public sampler's outputs on fixed inputs, or compare them with an earlier record, bit for bit.

A restructuring must not change a single bit: run ``record`` on the old code, ``compare`` on the new one::

    TRITON_INTERPRET=1 python benchmarks/bit_identity.py record /tmp/before.pt
    TRITON_INTERPRET=1 python benchmarks/bit_identity.py compare /tmp/before.pt

Covered: every ``fastdiff.sample`` sampler (plain, schedule-wrapped and guided denoisers, float32 and float64, the
"torch" and "triton" backends, option variants), every ``fastdiff.k_diffusion`` sampler (global RNG and caller
``noise_sampler``), every drop-in diffusers class over a spread of configs (each step's ``prev_sample`` and
``pred_original_sample``, ``add_noise``, timesteps, sigmas), the MCMC samplers and the three ops. Only public API is
used, so the same file runs on both sides of a refactor. ``compare`` prints the first cases that differ and exits 1.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from typing import Callable, Dict

import torch

import fastdiff
from fastdiff import k_diffusion as K
from fastdiff.toy import GaussianMixture

CASES: Dict[str, Callable[[], object]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


def _gmm() -> GaussianMixture:
    return GaussianMixture.ring(k=4)


# ------------------------------------------------------------------------------------------ fastdiff.sample
SAMPLE_OPTIONS = {
    "euler": [{}, {"s_churn": 1.0, "s_tmin": 0.05, "s_tmax": 5.0}],
    "heun": [{}, {"s_churn": 0.8}],
    "dpm_2": [{}, {"s_churn": 0.8, "s_noise": 1.003}],
    "dpm_2_ancestral": [{}, {"eta": 0.5}],
    "euler_ancestral": [{}, {"eta": 0.7, "s_noise": 0.9}],
    "ddim": [{}, {"eta": 1.0}, {"eta": 0.3}],
    "ddpm": [{}],
    "lms": [{}, {"order": 1}, {"order": 2}, {"order": 4}],
    "dpmpp_2s_ancestral": [{}, {"eta": 0.0}],
    "dpmpp_sde": [{}, {"r": 0.3, "eta": 0.5}],
    "dpmpp_2m": [{}],
    "dpmpp_2m_sde": [{}, {"solver_type": "heun"}, {"eta": 0.0}],
    "dpmpp_3m_sde": [{}, {"eta": 0.0}],
    "unipc": [{}, {"order": 1}, {"order": 3}, {"order": 3, "variant": "bh1"}],
    "flow_euler": [{}],
}


def _eps_model(x, t, **kw):
    return torch.tanh(0.3 * x) + 1e-3 * t.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)


def _register_sample_cases() -> None:
    sched = fastdiff.DiscreteVPSchedule()
    for sampler, variants in SAMPLE_OPTIONS.items():
        for vi, opts in enumerate(variants):
            for dtype in (torch.float32, torch.float64):
                for backend in ("torch", "triton"):
                    if dtype == torch.float64 and backend == "triton":
                        continue
                    for kind in ("plain", "eps", "cfg"):
                        if sampler == "flow_euler" and kind != "plain":
                            continue
                        name = f"sample/{sampler}/{vi}/{kind}/{str(dtype)[6:]}/{backend}"

                        def run(sampler=sampler, opts=opts, dtype=dtype, backend=backend, kind=kind):
                            if kind == "plain":
                                den = _gmm().denoiser
                            elif kind == "eps":
                                den = fastdiff.EpsDenoiser(_eps_model, sched)
                            else:
                                inner = fastdiff.EpsDenoiser(lambda x, t, c=None: _eps_model(x, t) + 0.1 * c, sched)
                                den = fastdiff.CFGDenoiser(inner, cond={"c": torch.ones(1)},
                                                           uncond={"c": torch.zeros(1)}, scale=3.0)
                            if sampler == "flow_euler":
                                sig = fastdiff.FlowMatchingSchedule().sigmas(7)
                                x = fastdiff.initial_noise((5, 2), seed=3, dtype=dtype)
                            else:
                                sig = fastdiff.karras_sigmas(7, 0.02, 14.0)
                                x = fastdiff.initial_noise((5, 2), seed=3, dtype=dtype) * 14.0
                            seen = []
                            out = fastdiff.sample(den, x, sig, sampler=sampler, seed=11, backend=backend,
                                                  callback=lambda d: seen.append(d["denoised"].clone()), **opts)
                            return [out] + seen

                        CASES[name] = run


# ------------------------------------------------------------------------------------------ k-diffusion face
K_OPTIONS = {
    "euler": [{}, {"s_churn": 1.0, "s_tmin": 0.05, "s_tmax": 5.0}],
    "heun": [{}, {"s_churn": 0.8}],
    "dpm_2": [{}, {"s_churn": 0.8}],
    "euler_ancestral": [{}, {"eta": 0.6}],
    "dpm_2_ancestral": [{}, {"eta": 0.6}],
    "lms": [{}, {"order": 2}, {"order": 6}],
    "dpmpp_2s_ancestral": [{}, {"eta": 0.0}],
    "dpmpp_sde": [{"ns": True}, {"ns": True, "r": 0.3, "eta": 0.5}],
    "dpmpp_2m": [{}],
    "dpmpp_2m_sde": [{"ns": True}, {"ns": True, "solver_type": "heun"}, {"eta": 0.0}],
    "dpmpp_3m_sde": [{"ns": True}, {"eta": 0.0}],
}


def _register_k_cases() -> None:
    for sampler, variants in K_OPTIONS.items():
        for vi, opts in enumerate(variants):
            for dtype in (torch.float32, torch.float64):
                name = f"k_diffusion/{sampler}/{vi}/{str(dtype)[6:]}"

                def run(sampler=sampler, opts=dict(opts), dtype=dtype):
                    fn = getattr(K, f"sample_{sampler}")
                    sig = K.get_sigmas_karras(6, 0.03, 12.0).to(dtype)
                    torch.manual_seed(5)
                    x = torch.randn(5, 2, dtype=dtype) * sig[0]
                    if opts.pop("ns", False):
                        g = torch.Generator().manual_seed(9)
                        opts["noise_sampler"] = lambda a, b: torch.randn(x.shape, generator=g, dtype=dtype)
                    seen = []
                    out = fn(_gmm().denoiser, x, sig, callback=lambda d: seen.append(d["denoised"].clone()),
                             disable=True, **opts)
                    return [out, torch.randn(2)] + seen  # the draw after shows the global RNG's state

                CASES[name] = run


# ------------------------------------------------------------------------------------------ diffusers face
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
ZSNR_V = {**SD, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
DIFFUSERS_CONFIGS = {
    "DDPMScheduler": [{}, {"clip_sample": False}, {**SD, "prediction_type": "v_prediction"},
                      {"prediction_type": "sample"}, ZSNR_V,
                      {"variance_type": "fixed_large", "beta_schedule": "squaredcos_cap_v2",
                       "timestep_spacing": "linspace"}, {"beta_schedule": "sigmoid", "steps_offset": 1}],
    "DDIMScheduler": [{}, {"clip_sample": False, "steps_offset": 1, "set_alpha_to_one": False},
                      {**SD, "prediction_type": "v_prediction"}, {"prediction_type": "sample"}, ZSNR_V],
    "EulerDiscreteScheduler": [{}, SD, {**SD, "prediction_type": "v_prediction"},
                               {"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "trailing"},
                               ZSNR_V, {**SD, "use_karras_sigmas": True}, {**SD, "use_exponential_sigmas": True},
                               {"prediction_type": "sample"}, {"final_sigmas_type": "sigma_min"},
                               {**SD, "timestep_type": "continuous", "prediction_type": "v_prediction"}],
    "EulerAncestralDiscreteScheduler": [{}, SD, {**SD, "prediction_type": "v_prediction"},
                                        {"timestep_spacing": "leading", "steps_offset": 1}, ZSNR_V],
    "HeunDiscreteScheduler": [{}, {**SD, "prediction_type": "v_prediction"}, {"timestep_spacing": "trailing"},
                              {**SD, "use_karras_sigmas": True}, {"clip_sample": True, "prediction_type": "sample"}],
    "DPMSolverMultistepScheduler": [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                    {"solver_order": 1}, {"solver_order": 3, "lower_order_final": False},
                                    {"timestep_spacing": "leading", "steps_offset": 1},
                                    {"timestep_spacing": "trailing"}, ZSNR_V, {**SD, "use_karras_sigmas": True},
                                    {**SD, "use_exponential_sigmas": True}, {"prediction_type": "sample"},
                                    {"final_sigmas_type": "sigma_min"}, {"algorithm_type": "sde-dpmsolver++"},
                                    {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, **SD,
                                     "use_karras_sigmas": True},
                                    {"solver_type": "heun"}, {"algorithm_type": "sde-dpmsolver++",
                                                              "solver_type": "heun"},
                                    {"euler_at_final": True, "final_sigmas_type": "sigma_min"}],
    "UniPCMultistepScheduler": [{}, SD, {**SD, "prediction_type": "v_prediction"}, {"solver_order": 3},
                                {"solver_order": 1}, {"timestep_spacing": "leading", "steps_offset": 1}, ZSNR_V,
                                {**SD, "use_karras_sigmas": True}, {"prediction_type": "sample"},
                                {"final_sigmas_type": "sigma_min"}, {"disable_corrector": [0, 3]},
                                {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}],
    "FlowMatchEulerDiscreteScheduler": [{}, {"shift": 3.0}, {"shift": 3.0, "use_karras_sigmas": True},
                                        {"shift": 2.0, "use_exponential_sigmas": True},
                                        {"stochastic_sampling": True, "shift": 3.0}, {"invert_sigmas": True},
                                        {"shift_terminal": 0.1, "shift": 3.0}],
}
STEP_EXTRAS = {"DDIMScheduler": [{}, {"eta": 1.0}, {"eta": 0.5, "use_clipped_model_output": True}],
               "EulerDiscreteScheduler": [{}, {"s_churn": 1.0}]}


def _fake_model(x: torch.Tensor, t) -> torch.Tensor:
    return torch.sin(x * 1.3 + float(t) / 300.0) * 0.9 + 0.05 * x


def _register_diffusers_cases() -> None:
    import fastdiff.diffusers as fdd

    for cls_name, cfgs in DIFFUSERS_CONFIGS.items():
        for ci, cfg in enumerate(cfgs):
            for ei, extra in enumerate(STEP_EXTRAS.get(cls_name, [{}])):
                for n in (10, 4):
                    name = f"diffusers/{cls_name}/{ci}/{ei}/{n}"

                    def run(cls_name=cls_name, cfg=cfg, extra=extra, n=n):
                        s = getattr(fdd, cls_name)(**cfg)
                        s.set_timesteps(n)
                        out = [s.timesteps.clone()]
                        if hasattr(s, "sigmas"):
                            out.append(s.sigmas.clone())
                        g = torch.Generator().manual_seed(0)
                        x = torch.randn(2, 3, 4, 4, generator=g) * float(getattr(s, "init_noise_sigma", 1.0))
                        kw = dict(extra)
                        if "generator" in inspect.signature(s.step).parameters:
                            kw["generator"] = g
                        for t in s.timesteps:
                            inp = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
                            o = s.step(_fake_model(inp, t), t, x, **kw)
                            out += [inp, o.prev_sample]
                            if getattr(o, "pred_original_sample", None) is not None:
                                out.append(o.pred_original_sample)
                            x = o.prev_sample
                        if hasattr(s, "add_noise"):
                            s2 = getattr(fdd, cls_name)(**cfg)
                            s2.set_timesteps(n)
                            clean = torch.randn(2, 3, 4, 4, generator=g)
                            out.append(s2.add_noise(clean, torch.randn_like(clean), s2.timesteps[:2]))
                        return out

                    CASES[name] = run


# ------------------------------------------------------------------------------------------ MCMC and ops
@case("mcmc/langevin")
def _langevin():
    gmm = _gmm()
    x = fastdiff.initial_noise((6, 2), seed=1)
    return [fastdiff.langevin(gmm.grad_log_prob, x, 0.05, 9, seed=2, backend=b) for b in ("torch", "triton")]


@case("mcmc/mala")
def _mala():
    gmm = _gmm()
    x = fastdiff.initial_noise((6, 2), seed=1)
    out = fastdiff.mala(gmm.log_prob, x, 0.1, 8, seed=2)
    adapted = fastdiff.mala(gmm.log_prob, x, 0.1, 8, seed=2, adapt_steps=4)
    return [o for o in (out, adapted) for o in (o if isinstance(o, (tuple, list)) else [o])]


@case("mcmc/annealed_langevin")
def _annealed():
    gmm = _gmm()
    sig = fastdiff.karras_sigmas(4, 0.05, 3.0)[:-1]
    score = lambda x, s: (gmm.denoiser(x, s) - x) / s.reshape(-1, 1) ** 2  # noqa: E731
    x = fastdiff.initial_noise((6, 2), seed=1) * 3.0
    return [fastdiff.annealed_langevin(score, x, sig, n_steps_each=3, step_lr=1e-2, seed=4, denoise=d)
            for d in (False, True)]


@case("mcmc/predictor_corrector")
def _pc():
    out = []
    for sde in (fastdiff.VPSDE(), fastdiff.VESDE(), fastdiff.SubVPSDE()):
        def score(x, t, sde=sde):  # the exact score of N(0, I) data pushed through the SDE
            mean, std = sde.marginal(t)
            var = mean.reshape(-1, 1) ** 2 + std.reshape(-1, 1) ** 2
            return -x / var

        x = fastdiff.initial_noise((6, 2), seed=1)
        for pred in ("reverse_diffusion", "euler_maruyama"):
            out.append(fastdiff.predictor_corrector(score, x, sde, 40, predictor=pred, seed=5))
    return out


@case("ops/fused_step")
def _ops_step():
    g = torch.Generator().manual_seed(0)
    x, m, h = (torch.randn(3, 37, generator=g) for _ in range(3))
    table = fastdiff.step_coefs(out_x=0.7, out_d=0.2, out_h=(0.1,), out_noise=0.3, in_x=0.1, in_m=0.9)
    return [fastdiff.fused_step(x, m, table, history=(h,), seed=3, stream=2, backend=b)
            for b in ("torch", "triton", "reference")]


@case("ops/add_noise")
def _ops_encode():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 37, generator=g)
    sched = fastdiff.DiscreteVPSchedule()
    t = torch.tensor([0, 500, 999])
    return [fastdiff.add_noise(x0, t, sched, seed=3, backend=b) for b in ("torch", "triton", "reference")]


@case("ops/langevin_step")
def _ops_langevin():
    g = torch.Generator().manual_seed(0)
    x, grad = torch.randn(3, 37, generator=g), torch.randn(3, 37, generator=g)
    return [fastdiff.langevin_step(x, grad, 0.01, seed=3, backend=b) for b in ("torch", "triton", "reference")]


def _flatten(obj):
    if isinstance(obj, torch.Tensor):
        return [obj.detach().cpu()]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _flatten(o)]
    if isinstance(obj, dict):
        return [t for k in sorted(obj) for t in _flatten(obj[k])]
    return [repr(obj)]


def collect() -> Dict[str, list]:
    _register_sample_cases()
    _register_k_cases()
    _register_diffusers_cases()
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in CASES.items():
            try:
                results[name] = _flatten(fn())
            except Exception as err:  # a case that raises is recorded as its error, which must not change either
                results[name] = [f"raised {type(err).__name__}: {err}"]
    return results


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8) if a.numel()
                                                                         else a, b.view(-1).view(torch.uint8)
                                                                         if b.numel() else b)
    return a == b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["record", "compare"])
    p.add_argument("path")
    args = p.parse_args(argv)
    results = collect()
    n_tensors = sum(isinstance(t, torch.Tensor) for v in results.values() for t in v)
    if args.mode == "record":
        torch.save(results, args.path)
        print(f"recorded {len(results)} cases ({n_tensors} tensors) to {args.path}")
        return 0
    before = torch.load(args.path, weights_only=False)
    bad = []
    for name in sorted(set(before) | set(results)):
        a, b = before.get(name), results.get(name)
        if a is None or b is None or len(a) != len(b) or not all(_same(x, y) for x, y in zip(a, b)):
            bad.append(name)
    print(f"{len(results)} cases ({n_tensors} tensors); {len(bad)} differ from {args.path}")
    for name in bad[:40]:
        print("  differs:", name)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
