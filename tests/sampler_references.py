"""Plain-PyTorch transcriptions of each sampler's published algorithm (test helper, not collected).

Written step by step as in the papers (and k-diffusion's formulation where that is the
reference): no coefficient tables, no fusion. ``model(x, sigma)`` returns the x0 estimate
(``sigma`` a 0-d tensor). Noise comes from ``Noise``: the Philox stream numbered by the
count of model evaluations made so far, which is the numbering ``fastdiff.sample`` uses
(noise added in the step after evaluation k is stream k + 1; churn before the first
evaluation is stream 0).
"""
import math

import numpy as np
import torch
from scipy import integrate

import fastdiff


class Noise:
    """Counts model evaluations and serves the matching Philox noise."""

    def __init__(self, model, seed, row_ids=None):
        self._model, self.seed, self.row_ids, self.calls = model, seed, row_ids, 0

    def model(self, x, sigma):
        self.calls += 1
        return self._model(x, torch.as_tensor(sigma, dtype=x.dtype))

    def __call__(self, like):
        z = fastdiff.philox_normal(like.shape, self.seed, self.calls, row_ids=self.row_ids)
        return z.to(like.dtype)


def _cb(callback, **kw):
    if callback is not None:
        callback(kw)


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def ancestral(sigma, sigma_next, eta=1.0):
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def _churn(x, sigma, n, noise, s_churn, s_tmin, s_tmax, s_noise):
    gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + noise(x) * s_noise * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def ref_euler(nz, x, sigmas, callback=None, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        x, sh = _churn(x, s[i], len(s) - 1, nz, s_churn, s_tmin, s_tmax, s_noise)
        den = nz.model(x, sh)
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=sh, denoised=den)
        x = x + to_d(x, sh, den) * (s[i + 1] - sh)
    return x


def ref_heun(nz, x, sigmas, callback=None, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        x, sh = _churn(x, s[i], len(s) - 1, nz, s_churn, s_tmin, s_tmax, s_noise)
        den = nz.model(x, sh)
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=sh, denoised=den)
        d = to_d(x, sh, den)
        dt = s[i + 1] - sh
        if s[i + 1] == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = to_d(x2, s[i + 1], nz.model(x2, s[i + 1]))
            x = x + (d + d2) / 2 * dt
    return x


def ref_dpm_2(nz, x, sigmas, callback=None, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        x, sh = _churn(x, s[i], len(s) - 1, nz, s_churn, s_tmin, s_tmax, s_noise)
        den = nz.model(x, sh)
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=sh, denoised=den)
        d = to_d(x, sh, den)
        if s[i + 1] == 0:
            x = x + d * (s[i + 1] - sh)
        else:
            sm = math.exp((math.log(sh) + math.log(s[i + 1])) / 2)
            x2 = x + d * (sm - sh)
            d2 = to_d(x2, sm, nz.model(x2, sm))
            x = x + d2 * (s[i + 1] - sh)
    return x


def ref_dpm_2_ancestral(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0):
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        sd, su = ancestral(s[i], s[i + 1], eta)
        d = to_d(x, s[i], den)
        if sd == 0:
            x = x + d * (sd - s[i])
        else:
            sm = math.exp((math.log(s[i]) + math.log(sd)) / 2)
            x2 = x + d * (sm - s[i])
            d2 = to_d(x2, sm, nz.model(x2, sm))
            x = x + d2 * (sd - s[i])
        if s[i + 1] > 0:
            x = x + nz(x) * s_noise * su
    return x


def ref_euler_ancestral(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0):
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        sd, su = ancestral(s[i], s[i + 1], eta)
        x = x + to_d(x, s[i], den) * (sd - s[i])
        if s[i + 1] > 0:
            x = x + nz(x) * s_noise * su
    return x


def ref_ddim(nz, x, sigmas, callback=None, eta=0.0):
    """Song et al. (2021) eq. (12) in VP variables: abar = 1 / (1 + sigma^2), x_vp = sqrt(abar) x."""
    s = sigmas.tolist()
    x_vp = x / math.sqrt(1 + s[0] ** 2)
    for i in range(len(s) - 1):
        a_t, a_prev = 1 / (1 + s[i] ** 2), 1 / (1 + s[i + 1] ** 2)
        x_ve = x_vp / math.sqrt(a_t)
        den = nz.model(x_ve, s[i])
        _cb(callback, x=x_ve, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        eps = (x_vp - math.sqrt(a_t) * den) / math.sqrt(1 - a_t)
        sig_t = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        x_vp = math.sqrt(a_prev) * den + math.sqrt(max(1 - a_prev - sig_t**2, 0.0)) * eps
        if sig_t > 0:
            x_vp = x_vp + sig_t * nz(x_vp)
    return x_vp / math.sqrt(1 / (1 + s[-1] ** 2))


def ref_ddpm(nz, x, sigmas, callback=None):
    """Ho et al. (2020) Algorithm 2 with beta_t = 1 - abar_t / abar_{t-1} and sigma_t^2 = beta-tilde."""
    s = sigmas.tolist()
    x_vp = x / math.sqrt(1 + s[0] ** 2)
    for i in range(len(s) - 1):
        abar, abar_prev = 1 / (1 + s[i] ** 2), 1 / (1 + s[i + 1] ** 2)
        alpha = abar / abar_prev
        beta = 1 - alpha
        x_ve = x_vp / math.sqrt(abar)
        den = nz.model(x_ve, s[i])
        _cb(callback, x=x_ve, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        eps = (x_vp - math.sqrt(abar) * den) / math.sqrt(1 - abar)
        x_vp = (x_vp - beta / math.sqrt(1 - abar) * eps) / math.sqrt(alpha)
        if s[i + 1] > 0:
            x_vp = x_vp + math.sqrt(beta * (1 - abar_prev) / (1 - abar)) * nz(x_vp)
    return x_vp


def ref_lms(nz, x, sigmas, callback=None, order=4):
    s = sigmas.tolist()
    ds = []
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        ds.append(to_d(x, s[i], den))
        ds = ds[-order:]
        cur = min(i + 1, order)

        def coeff(j):
            def fn(tau):
                prod = 1.0
                for k in range(cur):
                    if k != j:
                        prod *= (tau - s[i - k]) / (s[i - j] - s[i - k])
                return prod
            return integrate.quad(fn, s[i], s[i + 1], epsrel=1e-13, epsabs=1e-15)[0]

        x = x + sum(coeff(j) * d for j, d in enumerate(reversed(ds)))
    return x


def ref_dpmpp_2s_ancestral(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0):
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        sd, su = ancestral(s[i], s[i + 1], eta)
        if sd == 0:
            x = x + to_d(x, s[i], den) * (sd - s[i])
        else:
            t, t_next = -math.log(s[i]), -math.log(sd)
            h = t_next - t
            s_mid = t + h / 2
            x2 = (math.exp(-s_mid) / math.exp(-t)) * x - math.expm1(-h / 2) * den
            den2 = nz.model(x2, math.exp(-s_mid))
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * den2
        if s[i + 1] > 0:
            x = x + nz(x) * s_noise * su
    return x


def ref_dpmpp_sde(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0, r=0.5):
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        if s[i + 1] == 0:
            x = x + to_d(x, s[i], den) * (s[i + 1] - s[i])
            continue
        t, t_next = -math.log(s[i]), -math.log(s[i + 1])
        h = t_next - t
        s_mid = t + h * r
        fac = 1 / (2 * r)
        sd, su = ancestral(math.exp(-t), math.exp(-s_mid), eta)
        s_ = -math.log(sd)
        x2 = (sd / math.exp(-t)) * x - math.expm1(t - s_) * den
        x2 = x2 + nz(x) * s_noise * su
        den2 = nz.model(x2, math.exp(-s_mid))
        sd, su = ancestral(math.exp(-t), math.exp(-t_next), eta)
        t_next_ = -math.log(sd)
        den_d = (1 - fac) * den + fac * den2
        x = (sd / math.exp(-t)) * x - math.expm1(t - t_next_) * den_d
        x = x + nz(x) * s_noise * su
    return x


def ref_dpmpp_2m(nz, x, sigmas, callback=None):
    s = sigmas.tolist()
    old = None
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        if s[i + 1] == 0:
            x = den
        else:
            t, t_next = -math.log(s[i]), -math.log(s[i + 1])
            h = t_next - t
            if old is None:
                x = (s[i + 1] / s[i]) * x - math.expm1(-h) * den
            else:
                r = (t - (-math.log(s[i - 1]))) / h
                den_d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
                x = (s[i + 1] / s[i]) * x - math.expm1(-h) * den_d
        old = den
    return x


def ref_dpmpp_2m_sde(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0, solver_type="midpoint"):
    s = sigmas.tolist()
    old, h_last = None, None
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        if s[i + 1] == 0:
            x = den
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            eta_h = eta * h
            x = s[i + 1] / s[i] * math.exp(-eta_h) * x + (-math.expm1(-h - eta_h)) * den
            if old is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-math.expm1(-h - eta_h)) / (-h - eta_h) + 1) * (1 / r) * (den - old)
                else:
                    x = x + 0.5 * (-math.expm1(-h - eta_h)) * (1 / r) * (den - old)
            if eta:
                x = x + nz(x) * s[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
            h_last = h
        old = den
    return x


def ref_dpmpp_3m_sde(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0):
    s = sigmas.tolist()
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        h = None
        if s[i + 1] == 0:
            x = den
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x + (-math.expm1(-h_eta)) * den
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (den - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * (den - d_1) / r
            if eta:
                x = x + nz(x) * s[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        d_1, d_2 = den, d_1
        h_1, h_2 = h, h_1
    return x


def ref_unipc(nz, x, sigmas, callback=None, order=2, variant="bh2"):
    """UniPC (Zhao et al. 2023), data prediction, in VP variables as in the paper's Algorithms 2-3:
    UniP predictor each step, UniC corrector with the next model output, lower order at warm-up and at the end."""
    s = sigmas.tolist()
    n = len(s) - 1
    alpha = [1 / math.sqrt(1 + v * v) for v in s]
    sig_vp = [v * a for v, a in zip(s, alpha)]
    lam = [math.log(a) - math.log(sv) if sv > 0 else math.inf for a, sv in zip(alpha, sig_vp)]

    def coeffs(k, p):
        h = lam[k + 1] - lam[k]
        rks = [(lam[k - j] - lam[k]) / h for j in range(1, p)] + [1.0]
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = math.expm1(hh) if variant == "bh2" else hh
        fact, big_r, b = 1, [], []
        for i in range(1, p + 1):
            big_r.append([r ** (i - 1) for r in rks])
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        big_r, b = np.array(big_r), np.array(b)
        rp = [] if p == 1 else ([0.5] if p == 2 else list(np.linalg.solve(big_r[:-1, :-1], b[:-1])))
        rc = [0.5] if p == 1 else list(np.linalg.solve(big_r, b))
        return h_phi_1, b_h, rks, rp, rc

    ms = []  # model outputs (x0 predictions), oldest first
    x_vp = x * alpha[0]
    last, last_order = None, None
    for k in range(n):
        den = nz.model(x_vp / alpha[k], s[k])
        _cb(callback, x=x_vp / alpha[k], i=k, sigma=s[k], sigma_hat=s[k], denoised=den)
        if last is not None:  # UniC: correct x_k with the new model output
            h_phi_1, b_h, rks, _, rc = coeffs(k - 1, last_order)
            m0 = ms[-1]
            d1s = [(ms[-(j + 1)] - m0) / rks[j - 1] for j in range(1, last_order)]
            corr = sum(rc[j] * d for j, d in enumerate(d1s)) if d1s else 0.0
            x_vp = sig_vp[k] / sig_vp[k - 1] * last - alpha[k] * h_phi_1 * m0 \
                - alpha[k] * b_h * (corr + rc[-1] * (den - m0))
        ms.append(den)
        p = min(order, n - k, k + 1)
        if s[k + 1] == 0:
            x_vp = den  # alpha = 1, sigma = 0: the first-order step lands on the x0 prediction
            break
        h_phi_1, b_h, rks, rp, _ = coeffs(k, p)
        d1s = [(ms[-(j + 1)] - den) / rks[j - 1] for j in range(1, p)]
        pred = sum(rp[j] * d for j, d in enumerate(d1s)) if d1s else 0.0
        last, last_order = x_vp, p
        x_vp = sig_vp[k + 1] / sig_vp[k] * x_vp - alpha[k + 1] * h_phi_1 * den - alpha[k + 1] * b_h * pred
    return x_vp


def ref_flow_euler(nz, x, sigmas, callback=None):
    """Euler on dx/ds = v, v = (x - x0_hat) / s."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        v = (x - den) / s[i]
        x = x + (s[i + 1] - s[i]) * v
    return x


def _res_multistep(nz, x, sigmas, callback, eta, s_noise):
    """The 2-step RES exponential multistep (Zhang et al. 2023) to sigma_down, then sigma_up of noise; first order
    on the first step and where sigma_down = 0 (ComfyUI's res_multistep)."""
    s = sigmas.tolist()
    old, old_sd = None, None
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        sd, su = ancestral(s[i], s[i + 1], eta)
        if sd == 0 or old is None:
            x = x + to_d(x, s[i], den) * (sd - s[i])
        else:
            t, t_next = -math.log(s[i]), -math.log(sd)
            h = t_next - t
            c2 = (-math.log(s[i - 1]) + math.log(old_sd)) / h
            phi1 = math.expm1(-h) / -h
            phi2 = (phi1 - 1) / -h
            x = math.exp(-h) * x + h * ((phi1 - phi2 / c2) * den + phi2 / c2 * old)
        if s[i + 1] > 0:
            x = x + nz(x) * s_noise * su
        old, old_sd = den, sd
    return x


def ref_res_multistep(nz, x, sigmas, callback=None, s_noise=1.0):
    return _res_multistep(nz, x, sigmas, callback, 0.0, s_noise)


def ref_res_multistep_ancestral(nz, x, sigmas, callback=None, eta=1.0, s_noise=1.0):
    return _res_multistep(nz, x, sigmas, callback, eta, s_noise)


def ref_gradient_estimation(nz, x, sigmas, callback=None, ge_gamma=2.0):
    """Euler with the derivative extrapolated as d + (ge_gamma - 1) (d - d_prev) (Permenter & Yuan 2024)."""
    s = sigmas.tolist()
    old_d = None
    for i in range(len(s) - 1):
        den = nz.model(x, s[i])
        _cb(callback, x=x, i=i, sigma=s[i], sigma_hat=s[i], denoised=den)
        d = to_d(x, s[i], den)
        if s[i + 1] == 0:
            x = den
        else:
            dt = s[i + 1] - s[i]
            x = x + d * dt
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


REFERENCES = {name[4:]: fn for name, fn in globals().items() if name.startswith("ref_")}


def run_reference(name, model, x, sigmas, seed, row_ids=None, callback=None, **options):
    nz = Noise(model, seed, row_ids)
    return REFERENCES[name](nz, x, torch.as_tensor(sigmas, dtype=torch.float64), callback=callback, **options)
