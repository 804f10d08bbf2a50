"""The Wilcoxon signed-rank test of paired differences, fast: the comparisons run it for
every pair of methods of every family, where scipy's per-call overhead would dominate."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _stats
from scipy.special import ndtr

try:  # the exact null distribution scipy.stats.wilcoxon uses (private; see wilcoxon_p_value)
    from scipy.stats._hypotests import _get_wilcoxon_distr
except ImportError:  # pragma: no cover - other scipy layouts: use scipy.stats.wilcoxon
    _get_wilcoxon_distr = None

__all__ = ["wilcoxon_p_value", "scipy_wilcoxon_p_value"]

_WILCOXON_NULL: dict = {}


def wilcoxon_p_value(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences ``d`` (zeros split
    between the signs, no continuity correction): the exact null distribution for at most 50
    differences without zeros or ties, the normal approximation (tie-corrected variance)
    otherwise (scipy would fall back to a slow permutation test). The same numbers, bit for
    bit, as ``scipy.stats.wilcoxon(d, zero_method="zsplit", method="exact" / "approx")``,
    computed without its per-call overhead."""
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    if np.all(d == 0):
        return 1.0
    n = d.size
    magnitudes = np.abs(d)
    order = np.argsort(magnitudes, kind="stable")
    ordered = magnitudes[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[:-1] != ordered[1:])))
    counts = np.diff(starts, append=n)
    zeros = d == 0
    exact = n <= 50 and not zeros.any() and counts.size == n
    if exact and _get_wilcoxon_distr is None:  # pragma: no cover
        return scipy_wilcoxon_p_value(d, "exact")
    ranks = np.empty(n)
    ranks[order] = np.repeat(starts + 1 + (counts - 1) / 2, counts)  # average ranks
    # sums of (half-)integers: exact, so independent of the order of summation
    r_plus = float(ranks[d > 0].sum()) + float(ranks[zeros].sum()) / 2
    if exact:
        pmf = _WILCOXON_NULL.get(n)
        if pmf is None:
            pmf = _WILCOXON_NULL[n] = _get_wilcoxon_distr(n)
        mean = n * (n + 1) / 4
        k = int(math.floor(r_plus))  # survival function at floor(r_plus)
        sf = float(pmf[k:].sum()) if k <= mean else 1 - float(pmf[:k].sum())
        k = int(math.ceil(r_plus))  # distribution function at ceil(r_plus)
        cdf = float(pmf[:k + 1].sum()) if k <= mean else 1 - float(pmf[k + 1:].sum())
        return float(min(max(2 * min(sf, cdf), 0.0), 1.0))
    count = float(n)
    mn = count * (count + 1.0) * 0.25
    se = count * (count + 1.0) * (2.0 * count + 1.0)
    t = counts.astype(float)
    tie_correct = float(np.sum(t ** 3 - t))
    se = math.sqrt((se - tie_correct / 2) / 24)
    z = (r_plus - mn) / se
    return float(2 * ndtr(-abs(z)))


def scipy_wilcoxon_p_value(d: np.ndarray, method: str) -> float:
    """The same p-value from ``scipy.stats.wilcoxon`` (NaN where scipy refuses the input)."""
    try:
        return float(_stats.wilcoxon(d, zero_method="zsplit", method=method).pvalue)
    except ValueError:
        return math.nan
