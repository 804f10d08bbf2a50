"""Paired comparisons of the methods scored on the same samples: a paired bootstrap interval
of the difference, a standardised effect size, a paired test (Wilcoxon signed-rank, or a
bootstrap t-test for ratio estimates), Holm's correction within each family, the smallest
difference worth reporting (``--min-effect``), and the lookups the verdicts and claims read
the comparisons through."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from xai_bench.analysis.bootstrap import paired_bootstrap
from xai_bench.analysis.effects import paired_effect_size, parse_min_effect
from xai_bench.analysis.frames import (
    FAMILY, as_bool, check_options, empty_table, group_rng, with_replicate,
)
from xai_bench.analysis.samples import RATIO_ESTIMATOR, sample_values
from xai_bench.analysis.wilcoxon import wilcoxon_p_value
from xai_bench.errors import ConfigError

__all__ = ["COMPARISON_COLUMNS", "holm", "compare", "pair_lookup", "is_significant"]

COMPARISON_COLUMNS = ["model", "metric", "replicate", "method_a", "method_b", "n", "mean_a",
                      "mean_b", "diff", "ci_low", "ci_high", "effect_size", "test", "p_value",
                      "p_holm", "significant", "negligible", "better", "higher_is_better"]


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
            seed: int = 0, alpha: float = 0.05, interval: str = "bca",
            min_effect=None) -> pd.DataFrame:
    """Every pair of methods scored on the same (model, metric, replicate), paired on the
    samples both scored (inner join on ``sample_id``, ``target``).

    ``diff`` = statistic(a) − statistic(b) on those samples (``mean_a``, ``mean_b``) with a
    paired bootstrap interval; ``effect_size``: the paired standardised difference ``d_z``
    (:func:`~xai_bench.analysis.effects.paired_effect_size`); ``test``/``p_value``: the two-sided Wilcoxon signed-rank test
    (zeros split between the signs: identical methods give p = 1) for mean metrics, a paired
    bootstrap t-test of the ratio difference (its bootstrap standard error, t with n - 1
    degrees of freedom) for ratio metrics (ABC);
    ``p_holm``: Holm-adjusted within each (model, metric, replicate); ``significant``:
    ``p_holm < alpha``; ``negligible``: the difference is below the metric's threshold of
    ``min_effect`` (``--min-effect``: :func:`~xai_bench.analysis.effects.parse_min_effect`;
    ``False`` without one); ``better``: the significantly better method given
    ``higher_is_better`` when the difference is not negligible, else ``"tie"``. Columns:
    :data:`COMPARISON_COLUMNS`."""
    check_options(confidence, n_resamples, seed, interval, alpha)
    min_effect = parse_min_effect(min_effect)
    samples = sample_values(records)
    if samples.empty:
        return empty_table(COMPARISON_COLUMNS)
    samples["target"] = samples["target"].astype(str)
    # one integer per (sample_id, target) (missing values match each other, as in a merge);
    # the pairs are then found with numpy rather than one merge per pair of methods
    keys = samples.groupby(["sample_id", "target"], sort=False, dropna=False).ngroup() \
        .to_numpy(np.int64)
    n_keys = int(keys.max()) + 1 if len(keys) else 0
    values = samples["value"].to_numpy(float)
    weights = samples["weight"].to_numpy(float)
    is_ratio = (samples["estimator"] == RATIO_ESTIMATOR).to_numpy(bool)
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
                                 ci_low=math.nan, ci_high=math.nan, effect_size=math.nan,
                                 test="none", p_value=math.nan))
                continue
            ratio = bool(is_ratio[ia].all() and is_ratio[ib].all())
            va, vb = values[ia], values[ib]
            wa = weights[ia] if ratio else np.ones(n)
            wb = weights[ib] if ratio else np.ones(n)
            rng = group_rng(seed, "compare", model, metric, replicate, a, b)
            diff, low, high, p_boot = paired_bootstrap(va, wa, vb, wb, rng, int(n_resamples),
                                                      float(confidence), interval,
                                                      want_p=ratio)
            test, p = ("bootstrap", p_boot) if ratio else ("wilcoxon", wilcoxon_p_value(va - vb))
            rows.append(dict(row, mean_a=float((va * wa).sum() / wa.sum()),
                             mean_b=float((vb * wb).sum() / wb.sum()), diff=diff, ci_low=low,
                             ci_high=high, effect_size=paired_effect_size(va, wa, vb, wb),
                             test=test, p_value=p))
        if rows:
            frames.append(pd.DataFrame(rows))
    if not frames:
        return empty_table(COMPARISON_COLUMNS)
    out = []
    for frame in frames:
        frame["p_holm"] = holm(frame["p_value"].to_numpy(float))
        frame["significant"] = (frame["p_holm"] < alpha).fillna(False).astype(bool)
        threshold = min_effect.threshold(frame["metric"].iloc[0])
        frame["negligible"] = [threshold is not None and threshold.negligible(d, e)
                               for d, e in zip(frame["diff"], frame["effect_size"])]
        hib = frame["higher_is_better"].astype(bool)
        a_better = (frame["diff"] > 0) == hib
        tie = ~frame["significant"] | (frame["diff"] == 0) | frame["negligible"]
        frame["better"] = np.where(tie, "tie",
                                   np.where(a_better, frame["method_a"], frame["method_b"]))
        out.append(frame)
    result = pd.concat(out, ignore_index=True)[COMPARISON_COLUMNS]
    result["n"] = result["n"].astype(int)
    return result


def pair_lookup(comparisons: pd.DataFrame | None) -> dict:
    """``{(model, metric, replicate, x, y): row}`` for both orders of every pair."""
    lookup = {}
    if comparisons is None or comparisons.empty:
        return lookup
    comparisons = with_replicate(comparisons)
    for row in comparisons.to_dict("records"):
        base = (row["model"], row["metric"], int(row["replicate"]))
        lookup[base + (row["method_a"], row["method_b"])] = row
        lookup[base + (row["method_b"], row["method_a"])] = row
    return lookup


def is_significant(row) -> bool:
    """Whether a comparison row (or None: no comparison) names a significantly better method."""
    return row is not None and bool(row.get("significant", False)) and \
        str(row.get("better", "tie")) != "tie"
