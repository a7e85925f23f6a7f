"""Convergence diagnostics of many chains: effective sample size and rank-normalised split R-hat.

Both follow Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", and give arviz-stats' values (its
``array_stats.ess`` / ``array_stats.rhat`` on ``(chain, draw)`` axes) on the same array (measured: within
4e-15 relative). They are vectorised: every event column is done at once in float64 torch ops (one sort per
rank transform, selections for quantiles and medians, one batched FFT for all the chains' autocovariances,
Geyer's initial monotone sequence as cumulative products and minima over lag pairs), on the device the
draws are on, with no Python loop over chains, columns or lags.

Example:
    >>> import torch, fastdiff
    >>> draws = torch.randn(64, 500, 3, generator=torch.Generator().manual_seed(0))  # iid: ESS ~ 32000
    >>> ess = fastdiff.mcmc.ess(draws)                 # shape (3,), bulk ESS per coordinate
    >>> bool(((ess > 25000) & (ess < 40000)).all())
    True
    >>> r = fastdiff.mcmc.rhat(draws)
    >>> bool((r < 1.01).all())
    True
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = ["ess", "rhat", "ESS_KINDS"]

# the default tail probabilities of Vehtari et al. (2021) and of Stan's posterior package
_TAIL_PROB = (0.05, 0.95)
_MIN_DRAWS = 4  # arviz's minimum: split chains need two draws each
# columns per batch: bounds the temporaries at ~2**24 float64 values each (128 MiB), whatever the event size
_CHUNK_VALUES = 2**24
# arviz's constant-column test: max - min below numpy's float64 resolution
_CONSTANT = 1e-15

Draws = Union[torch.Tensor, Any]  # a torch tensor or anything numpy.asarray takes


# ----------------------------------------------------------------------------------------------------------
# input handling


def _as_columns(draws: Draws, min_chains: int) -> Tuple[torch.Tensor, Tuple[int, ...], bool]:
    """``draws`` (chains, draws, *event) -> float64 (K, chains, draws) with K = prod(event); event shape; numpy in?"""
    is_numpy = not isinstance(draws, torch.Tensor)
    if is_numpy:
        import numpy as np

        try:
            arr = np.asarray(draws)
        except Exception as err:  # ragged lists and the like
            raise TypeError(f"draws must be a torch tensor or a numpy array, got {type(draws).__name__}") from err
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"draws must hold real numbers, got numpy dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.float64, copy=False))
    else:
        if draws.is_complex():
            raise TypeError(f"draws must hold real numbers, got {draws.dtype}")
        t = draws.detach()
    if t.dim() < 2:
        raise ValueError(f"draws must be shaped (chains, draws, *event) (arviz's layout), got shape {tuple(t.shape)}")
    chains, n = t.shape[0], t.shape[1]
    if n < _MIN_DRAWS:
        raise ValueError(f"draws must have at least {_MIN_DRAWS} draws per chain (dimension 1), got {n}")
    if chains < min_chains:
        raise ValueError(f"draws must have at least {min_chains} chains (dimension 0) for R-hat, got {chains}")
    event = tuple(t.shape[2:])
    cols = t.to(torch.float64).reshape(chains, n, -1).permute(2, 0, 1)  # (K, chains, draws): draws contiguous last
    return cols.contiguous(), event, is_numpy


def _as_result(values: torch.Tensor, event: Tuple[int, ...], is_numpy: bool):
    out = values.reshape(event)
    return out.cpu().numpy() if is_numpy else out


def _by_chunks(cols: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` on batches of columns of (K, chains, draws), concatenated (bounded temporaries for any K); NaN for
    a column holding a NaN (as arviz: ranks and sorts would otherwise place it silently)."""
    k, per_col = cols.shape[0], cols.shape[1] * cols.shape[2]
    step = max(1, _CHUNK_VALUES // max(per_col, 1))
    out = fn(cols) if k <= step else torch.cat([fn(cols[i:i + step]) for i in range(0, k, step)])
    has_nan = torch.isnan(cols).flatten(1).any(dim=1)
    return torch.where(has_nan, torch.full_like(out, math.nan), out)


# ----------------------------------------------------------------------------------------------------------
# transforms (all per column, over every chain and draw of it)


def _split(x: torch.Tensor) -> torch.Tensor:
    """(K, C, N) -> (K, 2C, N // 2): first and last halves as separate chains (an odd middle draw dropped)."""
    half = x.shape[-1] // 2
    return torch.cat([x[..., :half], x[..., x.shape[-1] - half:]], dim=1)


def _order_stat(flat: torch.Tensor, i: int) -> torch.Tensor:
    """The ``i``-th smallest (0-based) of each row of (K, M): a selection, not a sort (O(M))."""
    return torch.kthvalue(flat, i + 1, dim=1).values


def _quantile(x: torch.Tensor, prob: float) -> torch.Tensor:
    """numpy's default ("linear", type 7) quantile of each column over all its values, rounded as numpy does."""
    flat = x.reshape(x.shape[0], -1)
    m = flat.shape[1]
    pos = prob * (m - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, m - 1)
    frac = pos - lo
    a = _order_stat(flat, lo)
    b = a if hi == lo else _order_stat(flat, hi)
    # numpy's _lerp: a + (b - a) t for t < 0.5, else b - (b - a)(1 - t) (exact at both ends)
    return a + (b - a) * frac if frac < 0.5 else b - (b - a) * (1.0 - frac)


def _median(x: torch.Tensor) -> torch.Tensor:
    """numpy.median of each column over all its chains and draws: (K,) (mean of the middle two if even)."""
    flat = x.reshape(x.shape[0], -1)
    m = flat.shape[1]
    return _order_stat(flat, (m - 1) // 2) if m % 2 else 0.5 * (_order_stat(flat, m // 2 - 1) +
                                                              _order_stat(flat, m // 2))


def _z_scale(x: torch.Tensor) -> torch.Tensor:
    """Rank-normalisation: average ranks (ties share them) over each column, Blom's offset 3/8, then Phi^-1."""
    k = x.shape[0]
    flat = x.reshape(k, -1)
    m = flat.shape[1]
    s, order = torch.sort(flat, dim=1)
    pos = torch.arange(m, device=x.device).expand(k, m)
    differs = s[:, 1:] != s[:, :-1]
    if bool(differs.all()):  # no ties (continuous draws): the ranks are the positions (one host read per call)
        rank_sorted = pos.to(torch.float64) + 1.0
    else:  # each tie group gets the mean of its first and last 1-based positions
        edge = torch.ones(k, 1, dtype=torch.bool, device=x.device)
        first = torch.where(torch.cat([edge, differs], 1), pos, torch.zeros_like(pos)).cummax(1).values
        last_mark = torch.where(torch.cat([differs, edge], 1), pos, torch.full_like(pos, m))
        last = last_mark.flip(1).cummin(1).values.flip(1)
        rank_sorted = 0.5 * (first + last).to(torch.float64) + 1.0
    ranks = torch.empty_like(flat).scatter_(1, order, rank_sorted)
    c = 3.0 / 8.0
    return torch.special.ndtri((ranks - c) / (m - 2 * c + 1)).reshape(x.shape)


# ----------------------------------------------------------------------------------------------------------
# the cores, on (K, chains, draws) float64


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: a length pocketfft handles fast (any length >= 2N - 1 is exact)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            q = p35
            while q < n:
                q *= 2
            best = min(best, q)
            p35 *= 3
        p5 *= 5
    return best


def _ess_core(x: torch.Tensor) -> torch.Tensor:
    """ESS of each column of (K, C, N): Geyer's initial monotone sequence on the chains' mean autocorrelation.

    Written as whole-tensor steps equivalent to arviz's lag loop: the lag pairs ``P_j = rho_2j + rho_2j+1``
    are summed while every earlier pair is positive (and ``2j - 1 < N - 3``); the kept pairs after the first
    are replaced by their running minimum; the next even lag counts once when it is positive or its pair is
    non-negative; ``tau >= 1 / log10(C N)``. A constant column gets ``C N`` (as arviz), NaN stays NaN.
    """
    k, c, n = x.shape
    m = _fast_len(2 * n)
    centred = x - x.mean(dim=2, keepdim=True)
    spec = torch.fft.rfft(centred, n=m, dim=2)
    # the chains' mean autocovariance is the inverse FFT of their mean power spectrum: one inverse per column
    power = (spec.real ** 2 + spec.imag ** 2).mean(dim=1)
    mean_acov = torch.fft.irfft(power, n=m, dim=1)[:, :n] / n  # (K, N)
    mean_var = mean_acov[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + x.mean(dim=2).var(dim=1, correction=1)
    rho = 1.0 - (mean_var[:, None] - mean_acov) / var_plus[:, None]
    rho[:, 0] = 1.0

    j_max = (n - 3) // 2  # the last pair the lag loop may reach
    n_pairs = j_max + 1
    if n_pairs >= 1:
        pairs = rho[:, 0:2 * n_pairs:2] + rho[:, 1:2 * n_pairs:2]  # (K, n_pairs)
        runs = torch.cumprod((pairs[:, :j_max] > 0).to(torch.int64), dim=1)  # pair j = 1..j_max examined?
        n_kept = runs.sum(dim=1)  # J: pairs 1..J examined; pairs 0..J-1 enter tau
        kept_mask = torch.arange(n_pairs, device=x.device)[None, :] < n_kept[:, None]
        monotone = pairs.cummin(dim=1).values
        pair_sum = torch.where(kept_mask, monotone, torch.zeros_like(monotone)).sum(dim=1)
        j = n_kept[:, None]
        rho_even = rho.gather(1, 2 * j)[:, 0]
        pair_j = pairs.gather(1, torch.clamp(j, max=n_pairs - 1))[:, 0]
        last = torch.where((pair_j >= 0) | (rho_even > 0), rho_even, torch.zeros_like(rho_even))
        last = torch.where(n_kept == 0, torch.ones_like(last), last)
    else:  # N = 2 (split chains of 4 or 5 draws): the loop never runs, tau = -1 + rho_0
        pair_sum = torch.zeros(k, dtype=x.dtype, device=x.device)
        last = torch.ones(k, dtype=x.dtype, device=x.device)
    size = float(c * n)
    tau = torch.clamp(-1.0 + 2.0 * pair_sum + last, min=1.0 / math.log10(size))
    out = torch.where(torch.isnan(rho).any(dim=1), torch.full_like(tau, math.nan), size / tau)
    flat = x.reshape(k, -1)
    constant = (flat.amax(dim=1) - flat.amin(dim=1)) < _CONSTANT  # its rho is 0/0: arviz returns C N
    out = torch.where(constant, torch.full_like(out, size), out)
    return torch.where(torch.isnan(flat).any(dim=1), torch.full_like(out, math.nan), out)


def _rhat_core(x: torch.Tensor) -> torch.Tensor:
    """Classic R-hat of each column of (K, C, N): ``sqrt((B / W + N - 1) / N)`` (0/0 for a constant column: NaN)."""
    n = x.shape[2]
    between = n * x.mean(dim=2).var(dim=1, correction=1)
    within = x.var(dim=2, correction=1).mean(dim=1)
    return torch.sqrt((between / within + n - 1) / n)


# ----------------------------------------------------------------------------------------------------------
# the kinds of ESS


def _indicator_ess(x: torch.Tensor, prob: float) -> torch.Tensor:
    """ESS of the indicator ``x <= quantile(prob)`` (the quantile over all draws, the indicator split)."""
    return _ess_core(_split((x <= _quantile(x, prob)[:, None, None]).to(torch.float64)))


def _ess_tail(x: torch.Tensor, prob) -> torch.Tensor:
    lo, hi = sorted((prob, 1.0 - prob)) if isinstance(prob, (int, float)) else prob
    return torch.minimum(_indicator_ess(x, lo), _indicator_ess(x, hi))


def _ess_mad(x: torch.Tensor, prob) -> torch.Tensor:
    dev = (x - _median(x)[:, None, None]).abs()
    return _ess_core(_z_scale(_split((dev <= _median(dev)[:, None, None]).to(torch.float64))))


_KINDS: Dict[str, Callable[[torch.Tensor, Any], torch.Tensor]] = {
    "bulk": lambda x, p: _ess_core(_z_scale(_split(x))),
    "tail": _ess_tail,
    "mean": lambda x, p: _ess_core(_split(x)),
    "sd": lambda x, p: _ess_core(_split((x - x.mean(dim=(1, 2), keepdim=True)) ** 2)),
    "median": lambda x, p: _indicator_ess(x, 0.5),
    "mad": _ess_mad,
    "quantile": _indicator_ess,
}
ESS_KINDS: Tuple[str, ...] = tuple(_KINDS)


def _check_prob(kind: str, prob) -> Any:
    if kind == "quantile":
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 < prob < 1.0:
            raise ValueError(f"prob must be a float in (0, 1) for kind='quantile', got {prob!r}")
        return float(prob)
    if kind == "tail":
        if prob is None:
            return _TAIL_PROB
        if isinstance(prob, (int, float)) and not isinstance(prob, bool) and 0.0 < prob < 1.0:
            return float(prob)
        if (isinstance(prob, Sequence) and len(prob) == 2 and all(isinstance(p, (int, float)) and
                                                                  not isinstance(p, bool) for p in prob)
                and 0.0 < prob[0] < prob[1] < 1.0):
            return (float(prob[0]), float(prob[1]))
        raise ValueError(f"prob must be a float in (0, 1) or an increasing pair in (0, 1) for kind='tail', "
                         f"got {prob!r}")
    if prob is not None:
        raise ValueError(f"prob is only used by kind='tail' and kind='quantile', not kind={kind!r}")
    return None


# ----------------------------------------------------------------------------------------------------------
# public API


def ess(draws: Draws, kind: str = "bulk", *, prob: Optional[Union[float, Tuple[float, float]]] = None):
    """Effective sample size of each event coordinate of many chains (Vehtari et al. 2021), as arviz computes it.

    Args:
        draws: (chains, draws, *event), arviz's ``(chain, draw, ...)`` layout -- what ``record_every``
            returns; a torch tensor (any real dtype, any device; computed in float64) or a numpy array.
            At least 4 draws per chain.
        kind: which quantity's ESS (see :data:`ESS_KINDS`):

            * ``"bulk"`` (default): of the rank-normalised split chains -- for means and central intervals.
            * ``"tail"``: the smaller of the 5% and 95% quantile indicators' ESS -- for tail quantiles.
            * ``"mean"``, ``"sd"``: of the split chains themselves / their squared deviations (no ranks).
            * ``"median"``, ``"mad"``, ``"quantile"`` (with ``prob``): of those estimators' indicators.
        prob: the quantile for ``kind="quantile"``; for ``"tail"`` a probability p (then p and 1 - p) or a
            pair (default (0.05, 0.95), as Stan and the paper).

    Returns:
        float64 ESS shaped ``event`` (0-d for scalar chains), on draws' device; a numpy array for numpy
        input. A column holding a NaN gives NaN; a constant column gives ``chains * 2 * (draws // 2)``
        (as arviz). Compare it with ``chains * draws``: Vehtari et al. ask for bulk and
        tail ESS of at least 400 before trusting the estimates (and R-hat < 1.01).

    Raises:
        ValueError: draws has fewer than 2 dimensions or fewer than 4 draws; unknown ``kind``; bad ``prob``.
        TypeError: draws is not a real-valued tensor/array.

    Example:
        >>> x = torch.zeros(8, 1000)
        >>> g = torch.Generator().manual_seed(1)
        >>> for t in range(1, 1000):                      # AR(1), phi = 0.5: ESS ~ n (1 - phi) / (1 + phi)
        ...     x[:, t] = 0.5 * x[:, t - 1] + torch.randn(8, generator=g)
        >>> 2000 < float(fastdiff.mcmc.ess(x, "mean")) < 3400
        True
    """
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(repr(k) for k in ESS_KINDS)}, got {kind!r}")
    prob = _check_prob(kind, prob)
    cols, event, is_numpy = _as_columns(draws, min_chains=1)
    fn = _KINDS[kind]
    return _as_result(_by_chunks(cols, lambda c: fn(c, prob)), event, is_numpy)


def rhat(draws: Draws):
    """Rank-normalised split R-hat of each event coordinate (Vehtari et al. 2021), as arviz computes it.

    The larger of the classic split R-hat of the rank-normalised draws (differences in location) and of the
    rank-normalised absolute deviations from the median (differences in scale, the "folded" R-hat).

    Args:
        draws: (chains, draws, *event), at least 2 chains of at least 4 draws; torch tensor or numpy array.

    Returns:
        float64 R-hat shaped ``event`` (numpy for numpy input). 1 when the chains agree; the paper's rule is
        to trust the draws only when R-hat < 1.01 (and the ESS is large). A constant column gives NaN (no
        spread to compare; arviz gives NaN too), as does a column holding a NaN.

    Raises:
        ValueError: draws has fewer than 2 dimensions, 2 chains or 4 draws. TypeError: not real-valued.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> stuck = torch.randn(4, 500, generator=g) + torch.tensor([0.0, 0.0, 0.0, 3.0])[:, None]
        >>> float(fastdiff.mcmc.rhat(stuck)) > 1.2                  # one chain elsewhere
        True
    """
    cols, event, is_numpy = _as_columns(draws, min_chains=2)

    def one(x: torch.Tensor) -> torch.Tensor:
        s = _split(x)
        bulk = _rhat_core(_z_scale(s))
        tail = _rhat_core(_z_scale((s - _median(s)[:, None, None]).abs()))
        out = torch.maximum(bulk, tail)
        return torch.where(torch.isnan(bulk) | torch.isnan(tail), torch.full_like(out, math.nan), out)

    return _as_result(_by_chunks(cols, one), event, is_numpy)
