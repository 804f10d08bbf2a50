"""Which estimates rest on too few samples to be read as more than a hint.

One threshold, :data:`SMALL_SAMPLE_N`, used by the terminal summary, the report and the
runner's shortfall line, so that every place flags the same groups.

Why 10:

* The Wilcoxon signed-rank test the comparisons use cannot reject at all below n = 6: its
  smallest two-sided p-value is ``2 / 2**n`` (0.0625 at n = 5, 0.03125 at n = 6), so a
  "no significant difference" at such n says nothing about the methods. From 6 to 9 only
  (nearly) unanimous signs reach p < 0.05, so one method can be called best only when it
  wins on essentially every image.
* Bootstrap intervals (percentile and BCa) resample the observed values; with fewer than
  about 10 distinct values the resampling distribution is coarse and its intervals are
  too narrow (under-cover), so they look more certain than they are.

A group with n below the threshold is *flagged*, never dropped: its numbers are still
computed and written, and the notes say which groups they are.
"""

from __future__ import annotations

import pandas as pd

from xai_bench.analysis.samples import sample_values

__all__ = ["SMALL_SAMPLE_N", "small_samples", "small_sample_notes"]

#: an estimate from fewer samples (images, or grid cells) than this is flagged as a small
#: sample in the terminal summary, the report and the runner's shortfall line
SMALL_SAMPLE_N = 10

_KEYS = ["model", "metric", "method"]


def small_samples(table: pd.DataFrame, threshold: int = SMALL_SAMPLE_N) -> pd.DataFrame:
    """The (model, metric, method) groups of ``table`` whose sample count ``n`` is below
    ``threshold``: columns ``model``, ``metric``, ``method``, ``n`` (the smallest over
    replicates), sorted by model, metric, method.

    ``table`` is either a statistics summary (``summary.csv`` / the output of
    :func:`~xai_bench.analysis.summary.summarise`: it has an ``n`` column) or the records
    (``records.csv``: the ok per-sample rows are counted, as the statistics count them)."""
    if "n" in table.columns:
        counts = table[[*_KEYS, "n"]].copy()
    else:
        samples = sample_values(table)
        keys = _KEYS + (["replicate"] if "replicate" in samples else [])
        counts = samples.groupby(keys, sort=False).size().rename("n").reset_index()
    if counts.empty:
        return pd.DataFrame(columns=[*_KEYS, "n"])
    counts["n"] = pd.to_numeric(counts["n"], errors="coerce")
    smallest = counts.groupby(_KEYS, sort=True)["n"].min().reset_index()
    flagged = smallest[smallest["n"] < int(threshold)].reset_index(drop=True)
    flagged["n"] = flagged["n"].astype(int)
    return flagged


def small_sample_notes(table: pd.DataFrame, threshold: int = SMALL_SAMPLE_N) -> list[str]:
    """One line per (model, metric) with groups below ``threshold`` samples (see
    :func:`small_samples` for ``table``), naming the methods and their n, e.g.
    ``"vit_nano · deletion: n = 2 for gradient, saliency (below 10: intervals and tests are
    unreliable)"``. Empty when every group has enough samples."""
    flagged = small_samples(table, threshold)
    notes = []
    for (model, metric), rows in flagged.groupby(["model", "metric"], sort=True):
        by_n = rows.groupby("n", sort=True)["method"].apply(lambda m: ", ".join(sorted(m)))
        parts = "; ".join(f"n = {n} for {methods}" for n, methods in by_n.items())
        notes.append(f"{model} · {metric}: {parts} (below {int(threshold)}: intervals and "
                     f"tests are unreliable)")
    return notes
