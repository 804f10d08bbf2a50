"""The summary table: one estimate with its bootstrap interval per (model, method, metric,
replicate)."""

from __future__ import annotations

import pandas as pd

from xai_bench.analysis.bootstrap import weighted_mean_interval
from xai_bench.analysis.frames import GROUP, as_bool, check_options, empty_table, group_rng
from xai_bench.analysis.samples import group_positions, sample_values
from xai_bench.storage.results import FAMILY as FAMILY_COLUMN

__all__ = ["SUMMARY_COLUMNS", "summarise"]

SUMMARY_COLUMNS = ["model", "method", "metric", "replicate", "n", "mean", "ci_low", "ci_high",
                   "higher_is_better", "category", "statistic", "estimator"]


def summarise(records: pd.DataFrame, *, confidence: float = 0.95, n_resamples: int = 2000,
              seed: int = 0, interval: str = "bca") -> pd.DataFrame:
    """One row per (model, method, metric, replicate) with ok samples: ``n`` samples, ``mean``
    (the metric's reported statistic: the ratio estimator = ABC of the mean curves where
    the records carry its columns, e.g. ``pixel_perturbation``, the sample mean otherwise),
    ``ci_low``/``ci_high`` (a seeded bootstrap over samples at ``confidence``; BCa or
    percentile), ``higher_is_better``, ``category``, ``statistic`` (``mean_curve`` where the
    metric reports one, else ``mean``) and ``estimator`` (``ratio`` / ``mean``); plus
    ``family`` when the records have one (:data:`~xai_bench.storage.results.FAMILY`).
    Columns: :data:`SUMMARY_COLUMNS`."""
    check_options(confidence, n_resamples, seed, interval)
    samples = sample_values(records)
    columns = SUMMARY_COLUMNS + ([FAMILY_COLUMN] if FAMILY_COLUMN in samples else [])
    if samples.empty:
        return empty_table(columns)
    values = samples["value"].to_numpy(float)
    weights = samples["weight"].to_numpy(float)
    column = {c: samples[c].to_numpy(object) for c in
              ("higher_is_better", "category", "reported", "estimator", FAMILY_COLUMN)
              if c in samples}
    rows = []
    for key, at in group_positions(samples, GROUP):
        v, w = values[at], weights[at]
        rng = group_rng(seed, "summary", *key)
        mean, low, high = weighted_mean_interval(v, w, rng, int(n_resamples), float(confidence),
                                                 interval)
        first = at[0]
        hib = column["higher_is_better"][first] if "higher_is_better" in column else True
        row = dict(zip(GROUP, key), n=len(at), mean=mean, ci_low=low, ci_high=high,
                   higher_is_better=as_bool(hib),
                   category=column["category"][first] if "category" in column else "",
                   statistic=column["reported"][first], estimator=column["estimator"][first])
        if FAMILY_COLUMN in column:
            row[FAMILY_COLUMN] = column[FAMILY_COLUMN][first]
        rows.append(row)
    out = pd.DataFrame(rows, columns=columns)
    out["n"] = out["n"].astype(int)
    out["replicate"] = out["replicate"].astype(int)
    return out
