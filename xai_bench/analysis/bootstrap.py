"""Seeded bootstrap intervals of a (weighted) mean: one sample, two paired samples, two
independent samples.

Every estimate is ``sum(v * w) / sum(w)``: the plain mean with unit weights, the ratio
estimator of the ABC with clean-confidence weights (:mod:`xai_bench.analysis.samples`). Each
resample draws indices ``rng.integers(0, n, (rows, n))`` in blocks of at most about
``_MAX_BLOCK`` indices (bounded memory) and recomputes the ratio; the interval is BCa
(jackknife acceleration) or percentile.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _stats
from scipy.special import ndtr, ndtri

from xai_bench.analysis.frames import check_options
from xai_bench.errors import ConfigError

__all__ = ["bootstrap_interval", "weighted_mean_interval", "paired_bootstrap",
           "two_sample_bootstrap"]

_MAX_BLOCK = 4_000_000  # resample indices drawn per block (n_resamples x n elements)


def _blocks(n_resamples: int, *sizes: int):
    """Row counts of the resample blocks (at most about ``_MAX_BLOCK`` indices each)."""
    block = max(1, _MAX_BLOCK // max(sum(sizes), 1))
    done = 0
    while done < n_resamples:
        rows = min(block, n_resamples - done)
        yield rows
        done += rows


def _draw(rng: np.random.Generator, n: int, n_resamples: int):
    """Blocks of resample indices, ``(rows, n)`` each, ``n_resamples`` rows in all."""
    for rows in _blocks(n_resamples, n):
        yield rng.integers(0, n, size=(rows, n))


def _ratio(v, w, idx):
    vw = (v * w)[idx].sum(axis=-1)
    return vw / w[idx].sum(axis=-1)


def _resampled_ratio(v, w):
    """``idx -> _ratio(v, w, idx)``, the same numbers; with unit weights the denominator of
    every resample is exactly its size, so only the values are gathered."""
    if np.all(w == 1.0):
        n = v.shape[-1]
        return lambda idx: np.take(v, idx).sum(axis=-1) / n
    vw = v * w
    return lambda idx: np.take(vw, idx).sum(axis=-1) / np.take(w, idx).sum(axis=-1)


def _loo(v, w) -> np.ndarray:
    """Leave-one-out values of ``sum v w / sum w`` (jackknife; needs n >= 2)."""
    sw, svw = w.sum(), (v * w).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return (svw - v * w) / (sw - w)


def _interval(theta: float, boot: np.ndarray, jackknives, confidence: float,
              interval: str) -> tuple[float, float]:
    """Percentile or BCa interval from a bootstrap distribution; ``jackknives`` is a list of
    leave-one-out arrays, one per independent sample (BCa acceleration), or None."""
    if not np.isfinite(theta):
        return math.nan, math.nan
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan, math.nan
    if np.ptp(boot) <= 1e-12 * max(1.0, abs(theta)):
        return float(theta), float(theta)  # constant samples: the interval is the point
    tail = (1.0 - confidence) / 2
    levels = np.array([tail, 1.0 - tail])
    if interval == "bca" and jackknives is not None:
        prop = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / boot.size
        if 0 < prop < 1:
            z0 = ndtri(prop)
            num = den = 0.0
            for jack in jackknives:
                jack = jack[np.isfinite(jack)]
                if jack.size:
                    d = jack.mean() - jack
                    num += float(np.sum(d ** 3))
                    den += float(np.sum(d ** 2))
            accel = num / (6.0 * den ** 1.5) if den > 0 else 0.0
            z = ndtri(levels)
            adjusted = ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
            if np.all(np.isfinite(adjusted)):
                levels = adjusted
    low, high = np.quantile(boot, levels)
    return float(low), float(high)


def weighted_mean_interval(v, w, rng, n_resamples, confidence, interval):
    """``(estimate, low, high)`` of ``sum(v w) / sum(w)`` with the generator ``rng`` (the
    core of :func:`bootstrap_interval`, without its checks)."""
    n = len(v)
    theta = float((v * w).sum() / w.sum()) if n else math.nan
    if n == 0:
        return theta, math.nan, math.nan
    resampled = _resampled_ratio(v, w)
    boot = np.concatenate([resampled(idx) for idx in _draw(rng, n, n_resamples)])
    jack = [_loo(v, w)] if n >= 2 else None
    return (theta, *_interval(theta, boot, jack, confidence, interval))


def bootstrap_interval(values, weights=None, *, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0,
                       interval: str = "bca") -> tuple[float, float, float]:
    """``(estimate, low, high)`` for ``sum(values * weights) / sum(weights)`` (the plain mean
    without ``weights``): resamples ``i`` are drawn as ``rng.integers(0, n, (n_resamples, n))``
    with ``rng = numpy.random.default_rng(seed)`` and the ratio is recomputed on each; the
    interval is BCa (``interval="bca"``) or percentile. Constant values give ``(v, v, v)``."""
    check_options(confidence, n_resamples, seed, interval)
    v = np.asarray(values, dtype=float).ravel()
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float).ravel()
    if v.shape != w.shape:
        raise ConfigError(f"values and weights differ in length ({v.size} vs {w.size}); pass "
                          f"one weight per value")
    return weighted_mean_interval(v, w, np.random.default_rng(int(seed)), int(n_resamples),
                                  float(confidence), interval)


def paired_bootstrap(va, wa, vb, wb, rng, n_resamples, confidence, interval,
                     want_p=True):
    """Paired bootstrap of ``ratio(a) - ratio(b)`` on the same resampled samples; returns
    ``(diff, low, high, p)`` with ``p`` the two-sided bootstrap t-test of ``diff = 0``:
    ``t = diff / sd(bootstrap diffs)`` against Student's t with n - 1 degrees of freedom
    (p = 1 when every resampled difference is 0, p = 0 for a constant non-zero one; NaN
    without ``want_p``)."""
    n = len(va)
    diff = float((va * wa).sum() / wa.sum() - (vb * wb).sum() / wb.sum())
    ratio_a, ratio_b = _resampled_ratio(va, wa), _resampled_ratio(vb, wb)
    boot = np.concatenate([ratio_a(idx) - ratio_b(idx) for idx in _draw(rng, n, n_resamples)])
    jack = [_loo(va, wa) - _loo(vb, wb)] if n >= 2 else None
    low, high = _interval(diff, boot, jack, confidence, interval)
    if not want_p:
        return diff, low, high, math.nan
    finite = boot[np.isfinite(boot)]
    tol = 1e-12 * max(1.0, abs(diff))
    if finite.size < 2 or not np.isfinite(diff):
        p = math.nan
    elif abs(diff) <= tol:
        p = 1.0
    else:
        se = float(np.std(finite, ddof=1))
        if se <= tol:
            p = 0.0 if n >= 2 else 1.0
        else:
            p = float(2 * _stats.t.sf(abs(diff) / se, df=max(n - 1, 1)))
    return diff, low, high, p


def two_sample_bootstrap(a, b, combine, rng, n_resamples, confidence, interval):
    """Independent bootstrap of ``combine(ratio(A), ratio(B))``: A and B (each ``(v, w)``)
    are resampled separately."""
    (va, wa), (vb, wb) = a, b
    if not len(va) or not len(vb):
        return math.nan, math.nan, math.nan
    ta, tb = (va * wa).sum() / wa.sum(), (vb * wb).sum() / wb.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = float(combine(ta, tb))
        parts = []
        for rows in _blocks(n_resamples, len(va), len(vb)):
            ia = rng.integers(0, len(va), size=(rows, len(va)))
            ib = rng.integers(0, len(vb), size=(rows, len(vb)))
            parts.append(combine(_ratio(va, wa, ia), _ratio(vb, wb, ib)))
        boot = np.concatenate(parts)
        jack = None
        if len(va) >= 2 and len(vb) >= 2:
            jack = [combine(_loo(va, wa), tb), combine(ta, _loo(vb, wb))]
    return (theta, *_interval(theta, boot, jack, confidence, interval))
