"""Plain-PyTorch transcriptions of the CFG++ samplers' update rules (test helper, not collected).

``model(x, sigma) -> (D, U)``: the guided and the unconditional x0 estimates (``sigma`` a float). Written step
by step from the update rules (Chung et al. 2024, "CFG++", Algorithm 1 and its DPM-Solver++ / RES / gradient-
estimation forms as ComfyUI defines them): no coefficient tables, no fusion. Noise: :class:`Noise` serves the
Philox stream numbered by the count of model evaluations so far (``fastdiff.sample``'s numbering), or draws from
a list in order (``draws``) to compare with a run that takes a ``noise_sampler``.
"""
import math

import torch

import fastdiff


class Noise:
    """Counts model evaluations and serves the matching noise (Philox, or the next of ``draws``)."""

    def __init__(self, model, seed=0, draws=None):
        self._model, self.seed, self.calls, self.draws = model, seed, 0, draws

    def model(self, x, sigma):
        self.calls += 1
        return self._model(x, float(sigma))

    def __call__(self, like):
        if self.draws is not None:
            return self.draws.pop(0).to(like.dtype)
        return fastdiff.philox_normal(like.shape, self.seed, self.calls).to(like.dtype)


def _cb(callback, **kw):
    if callback is not None:
        callback(kw)


def ancestral(sigma, sigma_next, eta=1.0):
    """(sigma_down, sigma_up) of the ancestral split (Ho et al. 2020 posterior variance, scaled by eta)."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return math.sqrt(max(sigma_next ** 2 - up ** 2, 0.0)), up


def ref_euler_ancestral_cfg_pp(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0, flow=False):
    """x' = alpha' D + sigma_down (x - alpha U) / sigma + alpha' s_noise sigma_up z: VE (alpha = 1), or with
    ``flow`` flow times s and samples x_s = (1 - s) x0 + s eps (alpha = 1 - s; the split on the VE levels
    s / alpha, sigma_down scaled back by alpha')."""
    s = [float(v) for v in sigmas]
    for i in range(len(s) - 1):
        den, unc = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        if s[i + 1] == 0:
            x = den
            continue
        a_s, a_t = (1 - s[i], 1 - s[i + 1]) if flow else (1.0, 1.0)
        sd, su = ancestral(s[i] / a_s, s[i + 1] / a_t, eta)
        x = a_t * den + a_t * sd * (x - a_s * unc) / s[i]
        if eta > 0 and s_noise > 0:
            x = x + a_t * nz(x) * s_noise * su
    return x


def ref_euler_cfg_pp(nz, x, sigmas, callback=None, flow=False):
    return ref_euler_ancestral_cfg_pp(nz, x, sigmas, callback, eta=0.0, s_noise=0.0, flow=flow)


def ref_dpmpp_2s_ancestral_cfg_pp(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0,
                                  corrector_uncond="predictor"):
    """Both DPM-Solver++(2S) stages move x + (D - U) with the first call's D; the corrector's U is the first
    call's ("predictor") or the second call's ("corrector": ComfyUI)."""
    s = [float(v) for v in sigmas]
    for i in range(len(s) - 1):
        den, unc = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        sd, su = ancestral(s[i], s[i + 1], eta)
        if sd == 0:
            x = den
        else:
            t, t_next = -math.log(s[i]), -math.log(sd)
            h = t_next - t
            s_mid = math.exp(-(t + h / 2))
            x2 = (s_mid / s[i]) * (x + den - unc) - math.expm1(-h / 2) * den
            den2, unc2 = nz.model(x2, s_mid)
            rebase_u = unc2 if corrector_uncond == "corrector" else unc
            x = (sd / s[i]) * (x + den - rebase_u) - math.expm1(-h) * den2
        if s[i + 1] > 0:
            x = x + nz(x) * s_noise * su
    return x


def ref_dpmpp_2m_cfg_pp(nz, x, sigmas, callback=None):
    """x' = e^{-h} (x - U) + D - expm1(-h) (D - U_prev) / (2 r); first order on the first and last step."""
    s = [float(v) for v in sigmas]
    old_unc = None
    for i in range(len(s) - 1):
        den, unc = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        if s[i + 1] == 0:
            x = den
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            x = math.exp(-h) * (x - unc) + den
            if old_unc is not None:
                r = (math.log(s[i - 1]) - math.log(s[i])) / h
                x = x - math.expm1(-h) / (2 * r) * (den - old_unc)
        old_unc = unc
    return x


def _res(nz, x, sigmas, callback, eta, s_noise, cfg_pp):
    s = [float(v) for v in sigmas]
    old, old_sd = None, None
    for i in range(len(s) - 1):
        den, unc = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        sd, su = ancestral(s[i], s[i + 1], eta)
        base = unc if cfg_pp else den  # the estimate the exponential integrator runs on
        if sd == 0 or old is None:
            x = den + sd * (x - unc) / s[i] if cfg_pp else x + (x - den) / s[i] * (sd - s[i])
        else:
            t, t_next = -math.log(s[i]), -math.log(sd)
            h = t_next - t
            c2 = (-math.log(s[i - 1]) + math.log(old_sd)) / h
            phi1 = math.expm1(-h) / -h
            phi2 = (phi1 - 1) / -h
            b1, b2 = phi1 - phi2 / c2, phi2 / c2
            start = x + den - unc if cfg_pp else x
            x = math.exp(-h) * start + h * (b1 * base + b2 * old)
        if s[i + 1] > 0:
            x = x + nz(x) * s_noise * su
        old, old_sd = base, sd
    return x


def ref_res_multistep_cfg_pp(nz, x, sigmas, callback=None, s_noise=1.0):
    return _res(nz, x, sigmas, callback, 0.0, s_noise, True)


def ref_res_multistep_ancestral_cfg_pp(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0):
    return _res(nz, x, sigmas, callback, eta, s_noise, True)


def ref_gradient_estimation_cfg_pp(nz, x, sigmas, callback=None, ge_gamma=2.0):
    """d = (x - U) / sigma; x' = D + d sigma' + (ge_gamma - 1) (d - d_prev) (sigma' - sigma); x = D at the end."""
    s = [float(v) for v in sigmas]
    old_d = None
    for i in range(len(s) - 1):
        den, unc = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        d = (x - unc) / s[i]
        if s[i + 1] == 0:
            x = den
        else:
            x = den + d * s[i + 1]
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * (s[i + 1] - s[i])
        old_d = d
    return x


CFGPP_REFERENCES = {name[4:]: fn for name, fn in globals().items() if name.startswith("ref_")}


def run_cfgpp_reference(name, model, x, sigmas, seed=0, callback=None, draws=None, **options):
    return CFGPP_REFERENCES[name](Noise(model, seed, draws), x, sigmas, callback=callback, **options)
