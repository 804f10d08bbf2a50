"""The statistics of the meta-evaluation (:mod:`xai_bench.run.meta`,
docs/meta_evaluation.md): intra-consistency (a paired test of clean against perturbed
scores), inter-consistency (rankings of the methods kept / scores worsened) and the gap of
every method to the ``random`` baseline from a run's records."""

from __future__ import annotations

import math

import numpy as np

from xai_bench.compute.seeding import derive_seed

__all__ = ["RANDOM", "intra_p_value", "inter_resilience", "inter_reactivity", "pair_scores",
           "per_sample_scores", "random_gaps"]

#: the baseline method the gap is measured to
RANDOM = "random"


def intra_p_value(clean, perturbed) -> float:
    """Wilcoxon's signed-rank p-value (two-sided, zero differences split) of paired scores:
    1 where they are identical, NaN without a finite pair. MetaQuantus's IAC."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(clean, float), np.asarray(perturbed, float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return math.nan
    if np.array_equal(a, b):
        return 1.0  # nothing moved (scipy warns and may return NaN here)
    p = float(wilcoxon(a, b, zero_method="zsplit", alternative="two-sided").pvalue)
    return p


def inter_resilience(clean: np.ndarray, perturbed: np.ndarray) -> float:
    """Share of (sample, rank) positions at which the methods' ranking (stable sort of the
    scores, per sample) is unchanged; ``clean``/``perturbed``: (methods, samples). IEC_NR."""
    if clean.shape[0] < 2 or clean.shape[1] == 0:
        return math.nan
    keep = np.isfinite(clean).all(0) & np.isfinite(perturbed).all(0)
    if not keep.any():
        return math.nan
    r0 = np.argsort(clean[:, keep], axis=0, kind="stable")
    r1 = np.argsort(perturbed[:, keep], axis=0, kind="stable")
    return float((r0 == r1).mean())


def inter_reactivity(clean: np.ndarray, perturbed: np.ndarray, higher_is_better: bool) -> float:
    """Share of (method, sample) scores that got worse under the perturbation. IEC_AR, with
    the comparison in the metric's direction (as the paper states it)."""
    keep = np.isfinite(clean) & np.isfinite(perturbed)
    if not keep.any():
        return math.nan
    worse = perturbed < clean if higher_is_better else perturbed > clean
    return float(worse[keep].mean())


def pair_scores(by_key_a: dict, by_key_b: dict):
    keys = [k for k in by_key_a if k in by_key_b]
    return (np.array([by_key_a[k] for k in keys], float),
            np.array([by_key_b[k] for k in keys], float))


def per_sample_scores(records) -> dict:
    """``{(sample_id, occurrence): value}`` of a result's per-sample records (mean-curve
    summary rows dropped)."""
    from xai_bench.storage.results import MEAN_CURVE, STATISTIC

    out, seen = {}, {}
    for r in records:
        if r.get(STATISTIC) == MEAN_CURVE:
            continue
        sid = str(r["sample_id"])
        n = seen.get(sid, 0)
        seen[sid] = n + 1
        v = r.get("value")
        out[(sid, n)] = float("nan") if v is None else float(v)
    return out


def random_gaps(records, *, seed: int = 0, n_resamples: int = 2000,
                confidence: float = 0.95) -> dict:
    """``{(model, replicate, metric, method): {random_gap, random_gap_low, random_gap_high,
    n_samples, separates_from_random}}`` from a run's records: the paired difference from the
    ``random`` method on the same samples, positive where better than random (the run's
    estimator: plain mean or clean-confidence ratio; BCa paired bootstrap). Empty without a
    ``random`` method."""
    from xai_bench.analysis.bootstrap import paired_bootstrap
    from xai_bench.analysis.samples import sample_values

    values = sample_values(records)
    if not len(values) or RANDOM not in set(values["method"].astype(str)):
        return {}
    values = values.assign(occurrence=values.groupby(
        ["model", "replicate", "metric", "method", "sample_id"]).cumcount())
    hib = {}
    if "higher_is_better" in records:
        for metric, flag in records.groupby("metric")["higher_is_better"].first().items():
            hib[str(metric)] = str(flag).lower() in ("true", "1", "1.0")
    out = {}
    for (model, rep, metric), group in values.groupby(["model", "replicate", "metric"]):
        base = group[group["method"].astype(str) == RANDOM].set_index(
            ["sample_id", "occurrence"])
        if not len(base):
            continue
        sign = 1.0 if hib.get(str(metric), True) else -1.0
        for method, rows in group.groupby("method"):
            rows = rows.set_index(["sample_id", "occurrence"])
            common = rows.index.intersection(base.index)
            a, b = rows.loc[common], base.loc[common]
            n = len(common)
            if n == 0:
                gap = low = high = math.nan
            else:
                rng = np.random.default_rng(derive_seed(seed, "meta", "random_gap", model,
                                                        int(rep), metric, method))
                gap, low, high, _ = paired_bootstrap(
                    a["value"].to_numpy(float), a["weight"].to_numpy(float),
                    b["value"].to_numpy(float), b["weight"].to_numpy(float), rng,
                    int(n_resamples), float(confidence), "bca", want_p=False)
                # direction-adjusted: positive = better than random
                # + 0.0: a zero gap reads 0, not -0 (lower-is-better metrics)
                gap, low, high = sign * gap + 0.0, *sorted((sign * low + 0.0,
                                                            sign * high + 0.0))
            out[(str(model), int(rep), str(metric), str(method))] = dict(
                random_gap=gap, random_gap_low=low, random_gap_high=high, n_samples=n,
                separates_from_random=bool(n and np.isfinite(low) and (low > 0 or high < 0)))
    return out
