"""The samples behind every estimate, and which estimator each group of them gets.

Two estimators are used, chosen per (model, method, metric, replicate):

``mean``
    the plain sample mean (grid pointing game cells, mask localisation, deletion and insertion
    images: for the latter two the area under the mean curve *is* the mean of the per-image
    areas, the trapezoid rule being linear);
``ratio``
    where a metric reports a :data:`~xai_bench.storage.results.MEAN_CURVE` row and its
    per-image rows carry their :data:`~xai_bench.storage.results.CLEAN_CONFIDENCE`: the ABC of
    the mean curves normalised by the mean clean confidence equals ``sum_i v_i c_i / sum_i c_i``
    with ``v_i`` the image's own normalised ABC and ``c_i`` its clean confidence — a ratio
    estimator. Bootstraps resample images and recompute this ratio.

The choice is made from the record columns a metric writes (declared in
:mod:`xai_bench.storage.results`), never from the metric's name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xai_bench.analysis.frames import GROUP, REQUIRED_RECORD_COLUMNS, check_frame, with_replicate
from xai_bench.storage.results import CLEAN_CONFIDENCE, MEAN_CURVE, STATISTIC

__all__ = ["RATIO_ESTIMATOR", "MEAN_ESTIMATOR", "SAMPLE_MEAN", "sample_values",
           "group_positions"]

#: ``estimator`` of a group scored by the clean-confidence-weighted ratio
RATIO_ESTIMATOR = "ratio"
#: ``estimator`` of a group scored by the plain sample mean
MEAN_ESTIMATOR = "mean"
#: the summary's ``statistic`` of a metric that reports no mean-curve row
SAMPLE_MEAN = "mean"


def sample_values(records: pd.DataFrame) -> pd.DataFrame:
    """The ok per-sample rows of ``records`` (mean-curve summary rows dropped, non-finite
    values dropped), with ``replicate`` (int, 0 when absent), ``value`` as float and three
    added columns: ``weight`` (the ratio-estimator weight: the image's clean confidence for
    metrics computed from mean curves with per-image clean confidences, 1.0 otherwise),
    ``estimator`` (:data:`RATIO_ESTIMATOR` or :data:`MEAN_ESTIMATOR`) and ``reported``
    (the statistic the metric reports: ``mean_curve`` or :data:`SAMPLE_MEAN`)."""
    check_frame(records, "records", REQUIRED_RECORD_COLUMNS)
    ok = with_replicate(records[records["status"].astype(str) == "ok"])
    ok["value"] = pd.to_numeric(ok["value"], errors="coerce").astype(float)
    statistic = ok[STATISTIC].astype(str) if STATISTIC in ok else pd.Series("", ok.index)
    is_curve = statistic == MEAN_CURVE
    has_curve = is_curve.groupby([ok[c] for c in GROUP], dropna=False).transform("any") \
        if len(ok) else is_curve
    rows = ok[~is_curve & np.isfinite(ok["value"])].copy()
    has_curve = has_curve[rows.index]
    if CLEAN_CONFIDENCE in rows:
        conf = pd.to_numeric(rows[CLEAN_CONFIDENCE], errors="coerce").astype(float)
        usable = np.isfinite(conf) & (conf > 0)
        all_usable = usable.groupby([rows[c] for c in GROUP], dropna=False).transform("all") \
            if len(rows) else usable
        ratio = has_curve & all_usable
    else:
        conf = pd.Series(1.0, rows.index)
        ratio = pd.Series(False, rows.index)
    rows["weight"] = np.where(ratio, conf, 1.0).astype(float)
    rows["estimator"] = np.where(ratio, RATIO_ESTIMATOR, MEAN_ESTIMATOR)
    rows["reported"] = np.where(has_curve, MEAN_CURVE, SAMPLE_MEAN)
    return rows.reset_index(drop=True)


def group_positions(frame: pd.DataFrame, by: list):
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
