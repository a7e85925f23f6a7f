"""The Beta(a, b) distribution's CDF (the regularized incomplete beta function) and its inverse, in float64.

Only what :func:`fastdiff.schedules.beta_sigmas` needs, so that the schedule does not depend on SciPy: the CDF
``I_x(a, b)`` from its continued fraction (evaluated with the modified Lentz method, on the side of
``x = (a + 1) / (a + b + 2)`` where it converges fast, the other side by ``I_x(a, b) = 1 - I_{1-x}(b, a)``), and
the quantile by Halley's method on ``I_x(a, b) - q`` kept inside a bracket that bisection (in ``log x`` while it
spans decades) shrinks whenever a step would leave it, the upper tail solved as the lower tail of Beta(b, a).
The cases with a closed form (``q`` in {0, 1}, ``a == 1`` or ``b == 1``, the median of a symmetric law) return it, so that values which are exact fractions (0.5 for ``a == b``) come out exact:
:func:`beta_sigmas` rounds ``quantile * T`` to an integer, and a ``0.49999999999999994`` there would move a tie.

Example:
    >>> round(beta_cdf(torch.tensor([0.25], dtype=torch.float64), 2.0, 2.0).item(), 12)  # 3x^2 - 2x^3
    0.15625
    >>> beta_ppf(torch.tensor([0.5], dtype=torch.float64), 0.6, 0.6).item()
    0.5
"""
from __future__ import annotations

import math

import torch

__all__ = ["beta_cdf", "beta_ppf"]

_F64 = torch.float64
_TINY = 1e-300
_CF_EPS = 1e-16
_CF_MAX_TERMS = 2000
_MAX_ITERS = 200


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _continued_fraction(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """The continued fraction of ``I_x(a, b)`` (without its front factor), every element to ``_CF_EPS``."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = torch.ones_like(x)
    d = 1.0 - qab * x / qap
    d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
    d = 1.0 / d
    h = d.clone()
    done = torch.zeros_like(x, dtype=torch.bool)
    for m in range(1, _CF_MAX_TERMS + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
            c = 1.0 + aa / c
            c = torch.where(c.abs() < _TINY, torch.full_like(c, _TINY), c)
            d = 1.0 / d
            delta = d * c
            h = torch.where(done, h, h * delta)
        done = done | ((delta - 1.0).abs() < _CF_EPS)
        if bool(done.all()):
            return h
    raise RuntimeError(f"the incomplete beta continued fraction did not converge for a={a}, b={b}")


def beta_cdf(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """``I_x(a, b)``, the CDF of Beta(a, b) at ``x`` (float64 tensor, values in [0, 1]), to ~1e-15.

    Example:
        >>> beta_cdf(torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64), 1.0, 1.0).tolist()
        [0.0, 0.3, 1.0]
    """
    x = x.to(_F64)
    out = torch.empty_like(x)
    inside = (x > 0) & (x < 1)
    out[x <= 0] = 0.0
    out[x >= 1] = 1.0
    if not bool(inside.any()):
        return out
    xi = x[inside]
    direct = xi < (a + 1.0) / (a + b + 2.0)
    result = torch.empty_like(xi)
    log_b = _log_beta(a, b)
    if bool(direct.any()):
        xd = xi[direct]
        front = torch.exp(a * torch.log(xd) + b * torch.log1p(-xd) - log_b)
        result[direct] = front * _continued_fraction(xd, a, b) / a
    if not bool(direct.all()):
        xo = xi[~direct]
        front = torch.exp(a * torch.log(xo) + b * torch.log1p(-xo) - log_b)
        result[~direct] = 1.0 - front * _continued_fraction(1.0 - xo, b, a) / b
    out[inside] = result
    return out


def _beta_pdf(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    return torch.exp((a - 1.0) * torch.log(x) + (b - 1.0) * torch.log1p(-x) - _log_beta(a, b))


def beta_ppf(q: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """The quantile of Beta(a, b): the ``x`` in [0, 1] with ``I_x(a, b) = q`` (float64, to ~1e-15 absolute).

    ``q`` is a float64 tensor of values in [0, 1]; ``a``, ``b`` > 0 (checked by the caller).

    Example:
        >>> [round(v, 12) for v in beta_ppf(torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64), 1.0, 2.0).tolist()]
        [0.0, 0.133974596216, 1.0]
    """
    q = q.to(_F64)
    if a == 1.0 and b == 1.0:
        return q.clone()
    if a == 1.0:  # I_x(1, b) = 1 - (1 - x)**b
        return -torch.expm1(torch.log1p(-q) / b)
    if b == 1.0:  # I_x(a, 1) = x**a
        return q ** (1.0 / a)
    out = torch.empty_like(q)
    out[q <= 0] = 0.0
    out[q >= 1] = 1.0
    todo = (q > 0) & (q < 1)
    if a == b:
        half = q == 0.5
        out[half] = 0.5
        todo = todo & ~half
    if not bool(todo.any()):
        return out
    target = q[todo]
    # the lower tail (q below the CDF at the mean) directly, the upper one as the lower tail of the mirrored law,
    # x = 1 - F^-1_{Beta(b, a)}(1 - q): 1 - q is exact there, and 1 - x comes out to its own relative precision
    lower = target < beta_cdf(torch.tensor([a / (a + b)], dtype=_F64), a, b).item()
    x = torch.empty_like(target)
    if bool(lower.any()):
        x[lower] = _lower_quantile(target[lower], a, b)
    if not bool(lower.all()):
        x[~lower] = 1.0 - _lower_quantile(1.0 - target[~lower], b, a)
    out[todo] = x
    return out


def _lower_quantile(target: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """``F^-1(target)`` of Beta(a, b) for targets at most the CDF at the mean: the root lies in [0, a/(a+b)]."""
    lo = torch.zeros_like(target)
    hi = torch.full_like(target, a / (a + b))
    # start from the leading term of the tail, I_x(a, b) ~ x**a / (a B(a, b)) as x -> 0
    x = torch.exp((torch.log(target) + math.log(a) + _log_beta(a, b)) / a)
    x = torch.where((x > lo) & (x < hi), x, 0.5 * hi)
    for _ in range(_MAX_ITERS):
        residual = beta_cdf(x, a, b) - target
        # keep the bracket [lo, hi] around the root: the CDF is increasing
        lo = torch.where(residual < 0, x, lo)
        hi = torch.where(residual > 0, x, hi)
        # Halley's step: Newton's corrected by the curvature pdf'/pdf = (a-1)/x - (b-1)/(1-x) (cubic convergence)
        pdf = _beta_pdf(x, a, b)
        curvature = (a - 1.0) / x - (b - 1.0) / (1.0 - x)
        step = residual / (pdf * (1.0 - 0.5 * residual * curvature / pdf))
        # at the root to the last bit: stop there (a step that rounds onto the bracket's end must not be
        # mistaken for one that leaves the bracket, which would bisect away from the root)
        at_root = (step.abs() <= 4e-16 * x) | (residual == 0)
        candidate = x - step
        inside = torch.isfinite(candidate) & (candidate > lo) & (candidate < hi)
        # bisect in log x while the bracket spans decades (a root near 0 is then reached in a few dozen halvings)
        spread = lo * 1e3 < hi
        middle = torch.where(spread, torch.sqrt(lo.clamp_min(1e-300) * hi), 0.5 * (lo + hi))
        x = torch.where(at_root, x, torch.where(inside, candidate, middle))
        # or the bracket is down to the CDF's own rounding noise
        if bool((at_root | (hi - lo <= 1e-14 * x)).all()):
            break
    return x
