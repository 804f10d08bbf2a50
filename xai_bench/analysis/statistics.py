"""Uncertainty, paired tests, rank groups and agreement for a run's records.

Every number the harness reports is an estimate from a finite sample of images (or grid
cells). This module attaches to each such number a seeded bootstrap interval, compares
methods on the *same* samples with a paired test and a Holm correction, and derives from
these the verdicts the tables and the claims use (docs/statistics.md states every rule).

Input is the tidy records table (:func:`xai_bench.storage.results.read_records`); only
``status == "ok"`` rows count. A ``replicate`` column (int) is optional (0 when absent); every
output is split by it.

Two estimators are used, chosen per (model, method, metric, replicate) by
:func:`sample_values`:

``mean``
    the plain sample mean (grid pointing game cells, mask localisation, deletion and insertion
    images: for the latter two the area under the mean curve *is* the mean of the per-image
    areas, the trapezoid rule being linear);
``ratio``
    where a metric reports a ``mean_curve`` statistic and its per-image rows carry their
    ``clean_confidence`` (``pixel_perturbation``): the ABC of the mean curves normalised by
    the mean clean confidence equals ``sum_i v_i c_i / sum_i c_i`` with ``v_i`` the image's own
    normalised ABC and ``c_i`` its clean confidence — a ratio estimator. Bootstraps resample
    images and recompute this ratio.

Public functions: :func:`sample_values`, :func:`bootstrap_interval`, :func:`summarise`,
:func:`compare`, :func:`holm`, :func:`rank_groups`, :func:`best_methods`,
:func:`metric_agreement`, :func:`replicate_stability`, :func:`format_interval`,
:func:`write_statistics`.
"""

from __future__ import annotations

import math
import zlib
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as _stats
from scipy.special import ndtr, ndtri

try:  # the exact null distribution scipy.stats.wilcoxon uses (private; see _wilcoxon)
    from scipy.stats._hypotests import _get_wilcoxon_distr
except ImportError:  # pragma: no cover - other scipy layouts: use scipy.stats.wilcoxon
    _get_wilcoxon_distr = None

from xai_bench.errors import ConfigError

__all__ = [
    "sample_values", "bootstrap_interval", "summarise", "compare", "holm", "rank_groups",
    "best_methods", "metric_agreement", "replicate_stability", "format_interval",
    "write_statistics", "SUMMARY_COLUMNS", "COMPARISON_COLUMNS", "RANK_COLUMNS",
    "BEST_COLUMNS", "AGREEMENT_COLUMNS", "STABILITY_COLUMNS", "INTERVALS",
]

GROUP = ["model", "method", "metric", "replicate"]
FAMILY = ["model", "metric", "replicate"]
INTERVALS = ("bca", "percentile")

SUMMARY_COLUMNS = ["model", "method", "metric", "replicate", "n", "mean", "ci_low", "ci_high",
                   "higher_is_better", "category", "statistic", "estimator"]
COMPARISON_COLUMNS = ["model", "metric", "replicate", "method_a", "method_b", "n", "mean_a",
                      "mean_b", "diff", "ci_low", "ci_high", "test", "p_value", "p_holm",
                      "significant", "better", "higher_is_better"]
RANK_COLUMNS = ["model", "metric", "replicate", "method", "rank", "group", "leader", "mean",
                "ci_low", "ci_high", "higher_is_better"]
BEST_COLUMNS = ["model", "metric", "replicate", "best", "runner_up", "verdict", "tied",
                "best_mean", "best_ci_low", "best_ci_high", "runner_up_mean",
                "runner_up_ci_low", "runner_up_ci_high", "diff", "p_holm", "higher_is_better"]
AGREEMENT_COLUMNS = ["model", "replicate", "metric_a", "metric_b", "n_methods", "tau",
                     "p_value"]
STABILITY_COLUMNS = ["family", "metric", "method", "n_replicates", "n_first", "share_first",
                     "mean", "std", "min", "max", "range"]

_REQUIRED = ["model", "method", "metric", "sample_id", "target", "value", "status"]
_MAX_BLOCK = 4_000_000  # resample indices drawn per block (n_resamples x n elements)


# ------------------------------------------------------------------------------ checking

def _check_options(confidence, n_resamples, seed, interval="bca", alpha=None) -> None:
    if not isinstance(confidence, (int, float)) or not 0 < float(confidence) < 1:
        raise ConfigError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), "
                          f"got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) \
            or int(n_resamples) < 10:
        raise ConfigError(f"n_resamples must be an integer >= 10 (e.g. 2000), "
                          f"got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if interval not in INTERVALS:
        raise ConfigError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if alpha is not None and (not isinstance(alpha, (int, float)) or not 0 < float(alpha) < 1):
        raise ConfigError(f"alpha must be a number strictly between 0 and 1 (e.g. 0.05), "
                          f"got {alpha!r}")


def _check_frame(frame, what: str, columns) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}; "
                          f"pass e.g. xai_bench.storage.results.read_records(run_dir)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what} lacks the column(s) {', '.join(missing)}; pass the table "
                          f"xai-bench produced (records.csv or the output of summarise)")
    return frame


def as_bool(value) -> bool:
    """A table cell as a bool: "false"/"0"/"no"/"" are False, a missing value is True (the
    metrics' default direction)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return bool(value)


def _with_replicate(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    if "replicate" not in frame:
        frame["replicate"] = 0
    frame["replicate"] = pd.to_numeric(frame["replicate"], errors="coerce").fillna(0).astype(int)
    return frame


def _rng(seed: int, *key) -> np.random.Generator:
    """A generator for one group: depends only on ``seed`` and the group's key, so that the
    interval of a group does not change when other groups are added."""
    digest = zlib.crc32("\x1f".join(str(k) for k in key).encode("utf-8"))
    return np.random.default_rng([int(seed), digest])


# ------------------------------------------------------------------------------ samples

def sample_values(records: pd.DataFrame) -> pd.DataFrame:
    """The ok per-sample rows of ``records`` (``mean_curve`` summary rows dropped, non-finite
    values dropped), with ``replicate`` (int, 0 when absent), ``value`` as float and two added
    columns: ``weight`` (the ratio-estimator weight: the image's ``clean_confidence`` for
    metrics computed from mean curves with per-image clean confidences, 1.0 otherwise) and
    ``estimator`` (``"ratio"`` or ``"mean"``)."""
    _check_frame(records, "records", _REQUIRED)
    ok = _with_replicate(records[records["status"].astype(str) == "ok"])
    ok["value"] = pd.to_numeric(ok["value"], errors="coerce").astype(float)
    statistic = ok["statistic"].astype(str) if "statistic" in ok else pd.Series("", ok.index)
    is_curve = statistic == "mean_curve"
    has_curve = is_curve.groupby([ok[c] for c in GROUP], dropna=False).transform("any") \
        if len(ok) else is_curve
    rows = ok[~is_curve & np.isfinite(ok["value"])].copy()
    has_curve = has_curve[rows.index]
    if "clean_confidence" in rows:
        conf = pd.to_numeric(rows["clean_confidence"], errors="coerce").astype(float)
        usable = np.isfinite(conf) & (conf > 0)
        all_usable = usable.groupby([rows[c] for c in GROUP], dropna=False).transform("all") \
            if len(rows) else usable
        ratio = has_curve & all_usable
    else:
        conf = pd.Series(1.0, rows.index)
        ratio = pd.Series(False, rows.index)
    rows["weight"] = np.where(ratio, conf, 1.0).astype(float)
    rows["estimator"] = np.where(ratio, "ratio", "mean")
    rows["reported"] = np.where(has_curve, "mean_curve", "mean")
    return rows.reset_index(drop=True)


# ------------------------------------------------------------------------------ bootstrap core

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


def _one_sample(v, w, rng, n_resamples, confidence, interval):
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
    _check_options(confidence, n_resamples, seed, interval)
    v = np.asarray(values, dtype=float).ravel()
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float).ravel()
    if v.shape != w.shape:
        raise ConfigError(f"values and weights differ in length ({v.size} vs {w.size}); pass "
                          f"one weight per value")
    return _one_sample(v, w, np.random.default_rng(int(seed)), int(n_resamples),
                       float(confidence), interval)


def _paired(va, wa, vb, wb, rng, n_resamples, confidence, interval, want_p=True):
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


def _two_sample(a, b, combine, rng, n_resamples, confidence, interval):
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


# ------------------------------------------------------------------------------ summary

def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _groups(frame: pd.DataFrame, by: list):
    """``(key, row positions)`` for each group of ``frame.groupby(by, sort=False)``, in its
    order and with its rows (positions ascending), without building a frame per group."""
    grouped = frame.groupby(by, sort=False)
    codes = grouped.ngroup().to_numpy(float)  # NaN for rows whose key has a missing value
    keep = np.flatnonzero(np.isfinite(codes))
    codes = codes[keep].astype(np.int64)
    order = keep[np.argsort(codes, kind="stable")]
    bounds = np.searchsorted(np.sort(codes), np.arange(grouped.ngroups + 1))
    cols = [frame[c].to_numpy(object) for c in by]
    for i in range(grouped.ngroups):
        at = order[bounds[i]:bounds[i + 1]]
        yield tuple(col[at[0]] for col in cols), at


def summarise(records: pd.DataFrame, *, confidence: float = 0.95, n_resamples: int = 2000,
              seed: int = 0, interval: str = "bca") -> pd.DataFrame:
    """One row per (model, method, metric, replicate) with ok samples: ``n`` samples, ``mean``
    (the metric's reported statistic: the ratio estimator = ABC of the mean curves for
    ``pixel_perturbation``, the sample mean otherwise), ``ci_low``/``ci_high`` (a seeded
    bootstrap over samples at ``confidence``; BCa or percentile), ``higher_is_better``,
    ``category``, ``statistic`` (``mean_curve`` where the metric reports one, else ``mean``)
    and ``estimator`` (``ratio`` / ``mean``); plus ``family`` when the records have one.
    Columns: :data:`SUMMARY_COLUMNS`."""
    _check_options(confidence, n_resamples, seed, interval)
    samples = sample_values(records)
    columns = SUMMARY_COLUMNS + (["family"] if "family" in samples else [])
    if samples.empty:
        return _empty(columns)
    values = samples["value"].to_numpy(float)
    weights = samples["weight"].to_numpy(float)
    column = {c: samples[c].to_numpy(object) for c in
              ("higher_is_better", "category", "reported", "estimator", "family")
              if c in samples}
    rows = []
    for key, at in _groups(samples, GROUP):
        v, w = values[at], weights[at]
        mean, low, high = _one_sample(v, w, _rng(seed, "summary", *key), int(n_resamples),
                                      float(confidence), interval)
        first = at[0]
        hib = column["higher_is_better"][first] if "higher_is_better" in column else True
        row = dict(zip(GROUP, key), n=len(at), mean=mean, ci_low=low, ci_high=high,
                   higher_is_better=as_bool(hib),
                   category=column["category"][first] if "category" in column else "",
                   statistic=column["reported"][first], estimator=column["estimator"][first])
        if "family" in column:
            row["family"] = column["family"][first]
        rows.append(row)
    out = pd.DataFrame(rows, columns=columns)
    out["n"] = out["n"].astype(int)
    out["replicate"] = out["replicate"].astype(int)
    return out


# ------------------------------------------------------------------------------ comparisons

def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment: with the m finite p-values sorted ascending,
    ``p_(k) -> max_{j <= k} min(1, (m - j + 1) p_(j))``; NaN stays NaN and does not count in m.
    Returns the adjusted values in the input order."""
    p = np.asarray(p_values, dtype=float).ravel()
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ConfigError("p-values must lie in [0, 1]; pass probabilities, not scores")
    out = np.full(p.shape, np.nan)
    m = int(finite.sum())
    if m == 0:
        return out
    idx = np.flatnonzero(finite)
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


_WILCOXON_NULL: dict = {}


def _wilcoxon(d: np.ndarray) -> float:
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
        return _scipy_wilcoxon(d, "exact")
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


def _scipy_wilcoxon(d: np.ndarray, method: str) -> float:
    try:
        return float(_stats.wilcoxon(d, zero_method="zsplit", method=method).pvalue)
    except ValueError:
        return math.nan


def _first_rows(methods: np.ndarray, keys: np.ndarray):
    """``(method, positions)`` per method in order of first appearance (as
    ``groupby("method", sort=False)``; missing methods dropped), each method's first row per
    key (as ``drop_duplicates``), positions ascending."""
    for m in dict.fromkeys(methods):
        if not isinstance(m, str) and pd.isna(m):
            continue
        mine = np.flatnonzero(methods == m)
        _, first = np.unique(keys[mine], return_index=True)
        yield m, mine[np.sort(first)]


def compare(records: pd.DataFrame, *, confidence: float = 0.95, n_resamples: int = 2000,
            seed: int = 0, alpha: float = 0.05, interval: str = "bca") -> pd.DataFrame:
    """Every pair of methods scored on the same (model, metric, replicate), paired on the
    samples both scored (inner join on ``sample_id``, ``target``).

    ``diff`` = statistic(a) − statistic(b) on those samples (``mean_a``, ``mean_b``) with a
    paired bootstrap interval; ``test``/``p_value``: the two-sided Wilcoxon signed-rank test
    (zeros split between the signs: identical methods give p = 1) for mean metrics, a paired
    bootstrap t-test of the ratio difference (its bootstrap standard error, t with n - 1
    degrees of freedom) for ratio metrics (ABC);
    ``p_holm``: Holm-adjusted within each (model, metric, replicate); ``significant``:
    ``p_holm < alpha``; ``better``: the significantly better method given
    ``higher_is_better``, else ``"tie"``. Columns: :data:`COMPARISON_COLUMNS`."""
    _check_options(confidence, n_resamples, seed, interval, alpha)
    samples = sample_values(records)
    if samples.empty:
        return _empty(COMPARISON_COLUMNS)
    samples["target"] = samples["target"].astype(str)
    # one integer per (sample_id, target) (missing values match each other, as in a merge);
    # the pairs are then found with numpy rather than one merge per pair of methods
    keys = samples.groupby(["sample_id", "target"], sort=False, dropna=False).ngroup() \
        .to_numpy(np.int64)
    n_keys = int(keys.max()) + 1 if len(keys) else 0
    values = samples["value"].to_numpy(float)
    weights = samples["weight"].to_numpy(float)
    is_ratio = (samples["estimator"] == "ratio").to_numpy(bool)
    frames = []
    method_of = samples["method"].to_numpy(object)
    for fkey, fam in samples.groupby(FAMILY, sort=False):
        model, metric, replicate = fkey
        positions = fam.index.to_numpy(np.int64)  # samples has a RangeIndex
        fam_methods = method_of[positions]
        methods, rows_of, where = [], {}, {}
        for m, rows_m in _first_rows(fam_methods, keys[positions]):
            rows_m = positions[rows_m]  # this method's rows, one per sample, in table order
            methods.append(m)
            rows_of[m] = rows_m
            at = np.full(n_keys, -1, dtype=np.int64)
            at[keys[rows_m]] = rows_m
            where[m] = at
        hib = as_bool(fam["higher_is_better"].iloc[0]) if "higher_is_better" in fam else True
        rows = []
        for a, b in combinations(methods, 2):
            # the inner join of a's and b's samples, in a's order (as DataFrame.merge)
            ia = rows_of[a]
            ib = where[b][keys[ia]]
            found = ib >= 0
            ia, ib = ia[found], ib[found]
            n = len(ia)
            row = dict(model=model, metric=metric, replicate=int(replicate), method_a=a,
                       method_b=b, n=n, higher_is_better=hib)
            if n == 0:
                rows.append(dict(row, mean_a=math.nan, mean_b=math.nan, diff=math.nan,
                                 ci_low=math.nan, ci_high=math.nan, test="none",
                                 p_value=math.nan))
                continue
            ratio = bool(is_ratio[ia].all() and is_ratio[ib].all())
            va, vb = values[ia], values[ib]
            wa = weights[ia] if ratio else np.ones(n)
            wb = weights[ib] if ratio else np.ones(n)
            rng = _rng(seed, "compare", model, metric, replicate, a, b)
            diff, low, high, p_boot = _paired(va, wa, vb, wb, rng, int(n_resamples),
                                              float(confidence), interval, want_p=ratio)
            test, p = ("bootstrap", p_boot) if ratio else ("wilcoxon", _wilcoxon(va - vb))
            rows.append(dict(row, mean_a=float((va * wa).sum() / wa.sum()),
                             mean_b=float((vb * wb).sum() / wb.sum()), diff=diff, ci_low=low,
                             ci_high=high, test=test, p_value=p))
        if rows:
            frames.append(pd.DataFrame(rows))
    if not frames:
        return _empty(COMPARISON_COLUMNS)
    out = []
    for frame in frames:
        frame["p_holm"] = holm(frame["p_value"].to_numpy(float))
        frame["significant"] = (frame["p_holm"] < alpha).fillna(False).astype(bool)
        hib = frame["higher_is_better"].astype(bool)
        a_better = (frame["diff"] > 0) == hib
        frame["better"] = np.where(~frame["significant"] | (frame["diff"] == 0), "tie",
                                   np.where(a_better, frame["method_a"], frame["method_b"]))
        out.append(frame)
    result = pd.concat(out, ignore_index=True)[COMPARISON_COLUMNS]
    result["n"] = result["n"].astype(int)
    return result


# ------------------------------------------------------------------------------ ranks and verdicts

def _pair_lookup(comparisons: pd.DataFrame | None) -> dict:
    """``{(model, metric, replicate, x, y): row}`` for both orders of every pair."""
    lookup = {}
    if comparisons is None or comparisons.empty:
        return lookup
    comparisons = _with_replicate(comparisons)
    for row in comparisons.to_dict("records"):
        base = (row["model"], row["metric"], int(row["replicate"]))
        lookup[base + (row["method_a"], row["method_b"])] = row
        lookup[base + (row["method_b"], row["method_a"])] = row
    return lookup


def _significant(row) -> bool:
    return row is not None and bool(row.get("significant", False)) and \
        str(row.get("better", "tie")) != "tie"


def _letters(i: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa', ..."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(97 + r) + out
    return out


def _ordered(summary: pd.DataFrame):
    """Yield ``(family key, frame ordered best first)`` per (model, metric, replicate)."""
    summary = _with_replicate(_check_frame(summary, "summary",
                                           ["model", "method", "metric", "mean"]))
    summary = summary[np.isfinite(pd.to_numeric(summary["mean"], errors="coerce")
                                  .astype(float))]
    for key, g in summary.groupby(FAMILY, sort=False):
        hib = as_bool(g["higher_is_better"].iloc[0]) if "higher_is_better" in g else True
        g = g.assign(_score=g["mean"].astype(float) * (1 if hib else -1))
        g = g.sort_values(["_score", "method"], ascending=[False, True], kind="stable")
        yield (key[0], key[1], int(key[2])), g.drop(columns="_score"), hib


def rank_groups(summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per (model, metric, replicate) the methods best first (by ``mean`` given
    ``higher_is_better``; equal means by name) with ``rank`` (1 = best) and ``group``.

    Group rule (sequential leaders): the best method leads group ``a``; walking down the
    ranking, a method joins the current group when it is *not* significantly different (after
    Holm, in ``comparisons``) from that group's leader, otherwise it leads the next group
    (``b``, ``c``, ...). A pair missing from ``comparisons`` counts as not different.
    ``leader`` names the group's leader. Columns: :data:`RANK_COLUMNS`."""
    lookup = _pair_lookup(comparisons)
    rows = []
    for key, g, hib in _ordered(summary):
        leader, group = None, -1
        for rank, r in enumerate(g.to_dict("records"), start=1):
            if leader is None or _significant(lookup.get(key + (leader, r["method"]))):
                leader, group = r["method"], group + 1
            rows.append(dict(model=key[0], metric=key[1], replicate=key[2],
                             method=r["method"], rank=rank, group=_letters(group),
                             leader=leader, mean=r["mean"], ci_low=r.get("ci_low", math.nan),
                             ci_high=r.get("ci_high", math.nan), higher_is_better=hib))
    return pd.DataFrame(rows, columns=RANK_COLUMNS) if rows else _empty(RANK_COLUMNS)


def best_methods(summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per (model, metric, replicate): ``best`` and ``runner_up`` by mean; ``verdict`` is
    ``"best"`` when the best is significantly better than the runner-up (Holm), ``"tie"``
    otherwise, ``"single"`` when only one method was scored; ``tied`` lists (best first,
    comma-separated) the best and, for a tie, every method not significantly different from
    it. ``diff``/``p_holm``: best vs runner-up. Columns: :data:`BEST_COLUMNS`."""
    lookup = _pair_lookup(comparisons)
    rows = []
    for key, g, hib in _ordered(summary):
        recs = g.to_dict("records")
        best = recs[0]
        row = dict(model=key[0], metric=key[1], replicate=key[2], best=best["method"],
                   best_mean=best["mean"], best_ci_low=best.get("ci_low", math.nan),
                   best_ci_high=best.get("ci_high", math.nan), higher_is_better=hib,
                   runner_up="", runner_up_mean=math.nan, runner_up_ci_low=math.nan,
                   runner_up_ci_high=math.nan, diff=math.nan, p_holm=math.nan)
        if len(recs) == 1:
            rows.append(dict(row, verdict="single", tied=best["method"]))
            continue
        second = recs[1]
        pair = lookup.get(key + (best["method"], second["method"]))
        wins = _significant(pair) and pair["better"] == best["method"]
        if pair is not None:
            sign = 1 if pair["method_a"] == best["method"] else -1
            row.update(diff=sign * float(pair["diff"]), p_holm=float(pair["p_holm"]))
        tied = [best["method"]]
        if not wins:
            tied += [r["method"] for r in recs[1:]
                     if not _significant(lookup.get(key + (best["method"], r["method"])))]
        rows.append(dict(row, runner_up=second["method"], runner_up_mean=second["mean"],
                         runner_up_ci_low=second.get("ci_low", math.nan),
                         runner_up_ci_high=second.get("ci_high", math.nan),
                         verdict="best" if wins else "tie", tied=", ".join(tied)))
    return pd.DataFrame(rows, columns=BEST_COLUMNS) if rows else _empty(BEST_COLUMNS)


# ------------------------------------------------------------------------------ agreement

def metric_agreement(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (model, replicate), Kendall's tau-b between the method rankings of every pair of
    metrics, over the methods both scored; lower-is-better metrics are negated first, so
    tau = 1 means the same order of "better". NaN with fewer than 3 common methods (or a
    constant ranking). Columns: :data:`AGREEMENT_COLUMNS`."""
    summary = _with_replicate(_check_frame(summary, "summary",
                                           ["model", "method", "metric", "mean"]))
    rows = []
    for (model, replicate), g in summary.groupby(["model", "replicate"], sort=False):
        scores = {}
        for metric, gm in g.groupby("metric", sort=False):
            hib = as_bool(gm["higher_is_better"].iloc[0]) if "higher_is_better" in gm else True
            s = gm.set_index("method")["mean"].astype(float)
            scores[metric] = s[np.isfinite(s)] * (1 if hib else -1)
        for ma, mb in combinations(scores, 2):
            common = [m for m in scores[ma].index if m in scores[mb].index]
            tau = p = math.nan
            if len(common) >= 3:
                x, y = scores[ma][common].to_numpy(), scores[mb][common].to_numpy()
                if np.ptp(x) > 0 and np.ptp(y) > 0:
                    res = _stats.kendalltau(x, y)
                    tau, p = float(res.statistic), float(res.pvalue)
            rows.append(dict(model=model, replicate=int(replicate), metric_a=ma, metric_b=mb,
                             n_methods=len(common), tau=tau, p_value=p))
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS) if rows else _empty(AGREEMENT_COLUMNS)


def replicate_stability(summary: pd.DataFrame, families=None) -> pd.DataFrame:
    """For each (model family, metric, method) over the replicates — every (model, replicate)
    of the family that scored the metric — ``n_replicates`` (how many scored the method),
    ``n_first``/``share_first`` (how often it ranked first; tied firsts all count) and the
    spread of its means (``mean``, ``std`` with ddof 1, ``min``, ``max``, ``range``).

    ``families``: a mapping ``model -> family`` or a callable; models it does not map keep
    their own name. Without it, a ``family`` column of ``summary`` is used if present, else
    each model is its own family (replicates then come from the ``replicate`` column).
    Columns: :data:`STABILITY_COLUMNS`."""
    summary = _with_replicate(_check_frame(summary, "summary",
                                           ["model", "method", "metric", "mean"]))
    if families is not None:
        if callable(families):
            fam = summary["model"].map(lambda m: families(m) or m)
        elif isinstance(families, dict):
            fam = summary["model"].map(lambda m: families.get(m, m))
        else:
            raise ConfigError(f"families must be a mapping model -> family or a callable, got "
                              f"{type(families).__name__}")
    elif "family" in summary:
        fam = summary["family"].where(summary["family"].notna(), summary["model"])
    else:
        fam = summary["model"]
    summary = summary.assign(family=fam.astype(str), mean=summary["mean"].astype(float))
    summary = summary[np.isfinite(summary["mean"])]
    rows = []
    for (family, metric), g in summary.groupby(["family", "metric"], sort=False):
        hib = as_bool(g["higher_is_better"].iloc[0]) if "higher_is_better" in g else True
        score = g["mean"] * (1 if hib else -1)
        top = score.groupby([g["model"], g["replicate"]]).transform("max")
        first = g.assign(_first=score >= top)
        for method, gm in first.groupby("method", sort=False):
            means = gm["mean"].to_numpy(float)
            n = len(gm)
            rows.append(dict(family=family, metric=metric, method=method, n_replicates=n,
                             n_first=int(gm["_first"].sum()),
                             share_first=float(gm["_first"].mean()), mean=float(means.mean()),
                             std=float(means.std(ddof=1)) if n > 1 else math.nan,
                             min=float(means.min()), max=float(means.max()),
                             range=float(np.ptp(means))))
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS) if rows else _empty(STABILITY_COLUMNS)


# ------------------------------------------------------------------------------ formatting, files

def _decimals(mean: float) -> int:
    if not np.isfinite(mean) or mean == 0:
        return 3
    return max(3, 2 - math.floor(math.log10(abs(mean))))


def _fmt(x: float, decimals: int) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_interval(mean, low, high) -> str:
    """``"0.427 [0.39, 0.46]"``: the mean with 3 decimals (more for |mean| < 0.1: three
    significant digits, e.g. ``0.00102``), the bounds with one decimal fewer; ``nan`` for
    missing numbers, no ``-0.00``."""
    mean, low, high = (math.nan if v is None or pd.isna(v) else float(v)
                       for v in (mean, low, high))
    d = _decimals(mean)
    return f"{_fmt(mean, d)} [{_fmt(low, d - 1)}, {_fmt(high, d - 1)}]"


def analyse(records: pd.DataFrame, *, confidence: float = 0.95, n_resamples: int = 2000,
            seed: int = 0, alpha: float = 0.05, interval: str = "bca", claims=None,
            pairs=None) -> dict:
    """Every statistical table of a run, as DataFrames: ``summary``, ``comparisons``,
    ``ranks``, ``best``, ``agreement``, ``stability`` (when there are several replicates) and
    ``claims`` (when ``claims`` is given: ``True``/``"paper"`` for the paper's claims, a path
    or a list of claims; ``pairs`` as for :func:`xai_bench.analysis.claims.evaluate_claims`)."""
    opts = dict(confidence=confidence, n_resamples=n_resamples, seed=seed, interval=interval)
    summary = summarise(records, **opts)
    comparisons = compare(records, alpha=alpha, **opts)
    tables = dict(summary=summary, comparisons=comparisons,
                  ranks=rank_groups(summary, comparisons),
                  best=best_methods(summary, comparisons), agreement=metric_agreement(summary))
    if len(summary) and summary["replicate"].nunique() > 1:
        tables["stability"] = replicate_stability(summary)
    if claims is not None and claims is not False:
        from xai_bench.analysis.claims import evaluate_claims, load_claims

        if claims is True or claims == "paper":
            claims = load_claims()
        elif isinstance(claims, (str, Path)):
            claims = load_claims(claims)
        tables["claims"] = evaluate_claims(summary, comparisons, records, claims, pairs=pairs,
                                           **opts)
    return tables


def write_statistics(records: pd.DataFrame, out_dir, tables: dict | None = None,
                     **options) -> dict:
    """Write the tables of :func:`analyse` (computed with ``options`` unless given) as
    ``NAME.csv`` into ``out_dir`` atomically; returns ``{name: path}``."""
    from xai_bench.storage.atomic_io import ensure_dir, write_csv

    tables = analyse(records, **options) if tables is None else tables
    out_dir = ensure_dir(out_dir)
    return {name: write_csv(Path(out_dir) / f"{name}.csv", table)
            for name, table in tables.items()}
