"""How far rankings agree: between the metrics of one model (Kendall's tau) and between the
replicates of one model family (how often each method ranks first, how much its mean
moves)."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as _stats

from xai_bench.analysis.frames import as_bool, check_frame, empty_table, with_replicate
from xai_bench.errors import ConfigError
from xai_bench.storage.results import FAMILY as FAMILY_COLUMN

__all__ = ["AGREEMENT_COLUMNS", "STABILITY_COLUMNS", "metric_agreement",
           "replicate_stability"]

AGREEMENT_COLUMNS = ["model", "replicate", "metric_a", "metric_b", "n_methods", "tau",
                     "p_value"]
STABILITY_COLUMNS = ["family", "metric", "method", "n_replicates", "n_first", "share_first",
                     "mean", "std", "min", "max", "range"]


def metric_agreement(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (model, replicate), Kendall's tau-b between the method rankings of every pair of
    metrics, over the methods both scored; lower-is-better metrics are negated first, so
    tau = 1 means the same order of "better". NaN with fewer than 3 common methods (or a
    constant ranking). Columns: :data:`AGREEMENT_COLUMNS`."""
    summary = with_replicate(check_frame(summary, "summary",
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
    if not rows:
        return empty_table(AGREEMENT_COLUMNS)
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def replicate_stability(summary: pd.DataFrame, families=None) -> pd.DataFrame:
    """For each (model family, metric, method) over the replicates — every (model, replicate)
    of the family that scored the metric — ``n_replicates`` (how many scored the method),
    ``n_first``/``share_first`` (how often it ranked first; tied firsts all count) and the
    spread of its means (``mean``, ``std`` with ddof 1, ``min``, ``max``, ``range``).

    ``families``: a mapping ``model -> family`` or a callable; models it does not map keep
    their own name. Without it, a ``family`` column of ``summary`` is used if present, else
    each model is its own family (replicates then come from the ``replicate`` column).
    Columns: :data:`STABILITY_COLUMNS`."""
    summary = with_replicate(check_frame(summary, "summary",
                                           ["model", "method", "metric", "mean"]))
    if families is not None:
        if callable(families):
            fam = summary["model"].map(lambda m: families(m) or m)
        elif isinstance(families, dict):
            fam = summary["model"].map(lambda m: families.get(m, m))
        else:
            raise ConfigError(f"families must be a mapping model -> family or a callable, got "
                              f"{type(families).__name__}")
    elif FAMILY_COLUMN in summary:
        fam = summary[FAMILY_COLUMN].where(summary[FAMILY_COLUMN].notna(), summary["model"])
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
    if not rows:
        return empty_table(STABILITY_COLUMNS)
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)
