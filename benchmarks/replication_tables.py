"""The study's tables across replicates, for benchmarks/replicate.py: each claim per replicate
and how often it holds, which method leads each metric how often (with the effect size of its
lead), which metrics tell the methods apart from the random baseline, and the positional-prior
ablation's paired differences against the multiplicative prior.

Pure functions of the run's tables and records (and of the ablation's per-image results), so
that a test can feed them small frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from xai_bench.analysis.bootstrap import paired_bootstrap, two_sample_bootstrap
from xai_bench.analysis.formatting import format_interval
from xai_bench.analysis.meta_statistics import random_gaps

#: the ablation's reference prior (the paper's choice)
REFERENCE_POSITION = "multiplicative"
BASELINES = ("random", "uniform", "centre")
N_RESAMPLES = 2000


def _family(model: str) -> str:
    return "B-cos" if str(model).startswith("bcos") else "conventional"


def _outcome_cell(c: dict) -> str:
    return f"{c['outcome']} ({format_interval(c['estimate'], c['ci_low'], c['ci_high'])})"


def claims_across(claims: pd.DataFrame, replicates: int, paper_says: dict) -> pd.DataFrame:
    """One row per claim: its outcome and estimate in each replicate, ``holds in k of n`` and
    what the paper reports. A replicate that could not test the claim shows ``—``."""
    rows = []
    if claims is None or not len(claims):
        return pd.DataFrame(rows)
    for claim, group in claims.groupby("claim", sort=True):
        by_rep = {int(r["replicate"]): r for r in group.to_dict("records")}
        row = {"claim": claim, "text": str(group["text"].iloc[0])}
        for r in range(replicates):
            row[f"replicate {r}"] = _outcome_cell(by_rep[r]) if r in by_rep else "—"
        holds = sum(1 for r in by_rep.values() if r["outcome"] == "holds")
        fails = sum(1 for r in by_rep.values() if r["outcome"] == "fails")
        row["holds in"] = f"{holds} of {replicates}"
        row["fails in"] = f"{fails} of {replicates}"
        row["paper"] = paper_says.get(str(claim), "")
        rows.append(row)
    return pd.DataFrame(rows)


def leaders(best: pd.DataFrame, summary: pd.DataFrame, replicates: int) -> pd.DataFrame:
    """Per model family and metric: the leading method of each replicate (``tie`` when the
    runner-up is not significantly worse), how often each leader led, and the lead's size:
    the median over replicates of best − runner-up with its range, and of the paired effect
    size ``d_z``, both signed so that positive means better (a lower-is-better metric's
    difference is negated). The baselines compete too: a baseline in the lead says the metric cannot
    tell the methods from it."""
    if best is None or not len(best):
        return pd.DataFrame()
    category = summary.groupby("metric")["category"].first().to_dict() \
        if "category" in summary else {}
    rows = []
    best = best.assign(family=best["model"].map(_family))
    for (fam, metric), group in best.groupby(["family", "metric"], sort=True):
        per_rep = []
        for r in group.sort_values("replicate").to_dict("records"):
            mark = "" if r["verdict"] == "best" else " (tie)"
            per_rep.append(f"{r['best']}{mark}")
        counts = pd.Series([r.split(" ")[0] for r in per_rep]).value_counts()
        # oriented so that a positive lead is better in the metric's own direction
        sign = np.where(group["higher_is_better"].astype(str).str.lower()
                        .isin(("true", "1", "1.0")), 1.0, -1.0) \
            if "higher_is_better" in group else 1.0
        diffs = sign * group["diff"].astype(float).to_numpy()
        effects = sign * group["effect_size"].astype(float).to_numpy()
        significant = int((group["verdict"] == "best").sum())
        rows.append({
            "family": fam, "metric": metric, "kind": category.get(metric, ""),
            "leader per replicate": ", ".join(per_rep),
            "most often first": f"{counts.index[0]} ({counts.iloc[0]} of {len(per_rep)})",
            "lead significant in": f"{significant} of {len(per_rep)}",
            "lead (best − runner-up), median [min, max]": _median_range(diffs),
            "d_z, median": _fmt(np.nanmedian(effects)) if np.isfinite(effects).any() else "—",
        })
    return pd.DataFrame(rows)


def _fmt(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.3g}"


def _median_range(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not len(values):
        return "—"
    return f"{np.median(values):.3g} [{values.min():.3g}, {values.max():.3g}]"


def metric_trust(records: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per metric and model family: of the (method, replicate) pairs it scored, how many are
    told apart from the ``random`` baseline (paired bootstrap interval of the gap excluding 0,
    in the better direction), and the median gap. A metric that separates few methods on real
    images ranks them mostly by noise."""
    gaps = random_gaps(records)
    if not gaps:
        return pd.DataFrame()
    category = summary.groupby("metric")["category"].first().to_dict() \
        if "category" in summary else {}
    frame = pd.DataFrame([dict(model=k[0], replicate=k[1], metric=k[2], method=k[3], **v)
                          for k, v in gaps.items()])
    frame = frame[~frame["method"].astype(str).isin(BASELINES)]
    rows = []
    for (metric, fam), g in frame.assign(family=frame["model"].map(_family)).groupby(
            ["metric", "family"], sort=True):
        better = g["random_gap_low"].astype(float) > 0
        worse = g["random_gap_high"].astype(float) < 0
        rows.append({"metric": metric, "kind": category.get(metric, ""), "family": fam,
                     "better than random": f"{int(better.sum())} of {len(g)}",
                     "worse than random": f"{int(worse.sum())} of {len(g)}",
                     "share better": round(float(better.mean()), 2),
                     "median gap": _fmt(float(np.nanmedian(g["random_gap"].astype(float)))),
                     "samples per cell": int(g["n_samples"].median())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ ablation

def accuracy_difference(correct, reference, seed: int) -> dict:
    """Paired (same test images) difference of accuracy ``correct − reference``: estimate,
    95% BCa interval, bootstrap p and McNemar's exact p (the binomial test of the discordant
    images)."""
    a, b = np.asarray(correct, float), np.asarray(reference, float)
    ones = np.ones_like(a)
    diff, low, high, p = paired_bootstrap(a, ones, b, ones, np.random.default_rng(seed),
                                          N_RESAMPLES, 0.95, "bca")
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    mcnemar = float(stats.binomtest(only_a, only_a + only_b).pvalue) if only_a + only_b else 1.0
    return dict(diff=diff, low=low, high=high, p=mcnemar, p_bootstrap=p)


def score_difference(scores, reference, seed: int) -> dict:
    """Unpaired difference of mean scores (each model scores its own grid cells): estimate,
    95% BCa interval from independent resamples, Welch's p and Cohen's d (pooled sd)."""
    a, b = np.asarray(scores, float), np.asarray(reference, float)
    if len(a) < 2 or len(b) < 2:
        return dict(diff=math.nan, low=math.nan, high=math.nan, p=math.nan, d=math.nan)
    diff, low, high = two_sample_bootstrap((a, np.ones_like(a)), (b, np.ones_like(b)),
                                           lambda x, y: x - y, np.random.default_rng(seed),
                                           N_RESAMPLES, 0.95, "bca")
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1))
                       / (len(a) + len(b) - 2))
    d = diff / pooled if pooled > 0 else math.nan
    return dict(diff=diff, low=low, high=high, p=p if np.isfinite(p) else math.nan, d=d)


def _verdict(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    return "multiplicative better" if high < 0 else "this prior better" if low > 0 \
        else "no clear difference"


def ablation_differences(results: list) -> pd.DataFrame:
    """``results``: one dict per trained model with ``position``, ``replicate``, ``correct``
    (per test image, 0/1) and ``scores`` (inherent grid pointing game per cell). Each prior
    against the multiplicative prior of the same replicate (same seed and recipe): accuracy
    paired over the test images, localisation unpaired over the two models' cells."""
    ref = {r["replicate"]: r for r in results if r["position"] == REFERENCE_POSITION}
    rows = []
    for r in results:
        if r["position"] == REFERENCE_POSITION or r["replicate"] not in ref:
            continue
        base = ref[r["replicate"]]
        acc = accuracy_difference(r["correct"], base["correct"], seed=r["replicate"])
        loc = score_difference(r["scores"], base["scores"], seed=r["replicate"])
        rows.append(dict(position=r["position"], replicate=r["replicate"],
                         accuracy_diff=acc["diff"], accuracy_low=acc["low"],
                         accuracy_high=acc["high"], accuracy_p=acc["p"],
                         accuracy_verdict=_verdict(acc["low"], acc["high"]),
                         localisation_diff=loc["diff"], localisation_low=loc["low"],
                         localisation_high=loc["high"], localisation_p=loc["p"],
                         localisation_d=loc["d"],
                         localisation_verdict=_verdict(loc["low"], loc["high"])))
    return pd.DataFrame(rows)


def ablation_verdict(diffs: pd.DataFrame, replicates: int) -> tuple[pd.DataFrame, str]:
    """Per prior: in how many replicates the multiplicative prior was significantly better,
    and the sentence the page states about the paper's preference (holds: multiplicative
    significantly better than every other prior on localisation in every replicate; fails:
    some prior significantly better than multiplicative in most replicates)."""
    if diffs is None or not len(diffs):
        return pd.DataFrame(), "not tested (no ablation with the multiplicative prior)"
    rows, holds_everywhere, beaten = [], True, []
    for position, g in diffs.groupby("position", sort=False):
        mult_loc = int((g["localisation_verdict"] == "multiplicative better").sum())
        other_loc = int((g["localisation_verdict"] == "this prior better").sum())
        mult_acc = int((g["accuracy_verdict"] == "multiplicative better").sum())
        other_acc = int((g["accuracy_verdict"] == "this prior better").sum())
        rows.append({"prior": position,
                     "localisation: multiplicative better / this better / unclear":
                         f"{mult_loc} / {other_loc} / {len(g) - mult_loc - other_loc} "
                         f"of {len(g)}",
                     "accuracy: multiplicative better / this better / unclear":
                         f"{mult_acc} / {other_acc} / {len(g) - mult_acc - other_acc} "
                         f"of {len(g)}"})
        holds_everywhere &= mult_loc == len(g) == replicates
        if other_loc > len(g) / 2:
            beaten.append(position)
    if beaten:
        sentence = ("fails on these models: the " + ", ".join(beaten) + " prior localises "
                    "significantly better than the multiplicative one in most replicates")
    elif holds_everywhere:
        sentence = ("holds: the multiplicative prior localises significantly better than "
                    "every other prior in every replicate")
    else:
        sentence = ("not confirmed: the multiplicative prior is not significantly better "
                    "than every other prior in every replicate (see the table), nor "
                    "consistently beaten")
    return pd.DataFrame(rows), sentence
