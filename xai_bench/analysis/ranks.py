"""Verdicts drawn from the summary and the paired comparisons: rank groups (sequential
leaders) and the best method (or a tie) of each family."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from xai_bench.analysis.comparisons import is_significant, pair_lookup
from xai_bench.analysis.frames import FAMILY, as_bool, check_frame, empty_table, with_replicate

__all__ = ["RANK_COLUMNS", "BEST_COLUMNS", "rank_groups", "best_methods"]

RANK_COLUMNS = ["model", "metric", "replicate", "method", "rank", "group", "leader", "mean",
                "ci_low", "ci_high", "higher_is_better"]
BEST_COLUMNS = ["model", "metric", "replicate", "best", "runner_up", "verdict", "tied",
                "best_mean", "best_ci_low", "best_ci_high", "runner_up_mean",
                "runner_up_ci_low", "runner_up_ci_high", "diff", "diff_ci_low", "diff_ci_high",
                "effect_size", "p_holm", "negligible", "higher_is_better"]


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
    summary = with_replicate(check_frame(summary, "summary",
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
    lookup = pair_lookup(comparisons)
    rows = []
    for key, g, hib in _ordered(summary):
        leader, group = None, -1
        for rank, r in enumerate(g.to_dict("records"), start=1):
            if leader is None or is_significant(lookup.get(key + (leader, r["method"]))):
                leader, group = r["method"], group + 1
            rows.append(dict(model=key[0], metric=key[1], replicate=key[2],
                             method=r["method"], rank=rank, group=_letters(group),
                             leader=leader, mean=r["mean"], ci_low=r.get("ci_low", math.nan),
                             ci_high=r.get("ci_high", math.nan), higher_is_better=hib))
    return pd.DataFrame(rows, columns=RANK_COLUMNS) if rows else empty_table(RANK_COLUMNS)


def best_methods(summary: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per (model, metric, replicate): ``best`` and ``runner_up`` by mean; ``verdict`` is
    ``"best"`` when the best is significantly better than the runner-up (Holm), ``"tie"``
    otherwise, ``"single"`` when only one method was scored; ``tied`` lists (best first,
    comma-separated) the best and, for a tie, every method not significantly different from
    it. ``diff`` (with its interval ``diff_ci_low``/``diff_ci_high``), ``effect_size``,
    ``p_holm`` and ``negligible``: best vs runner-up (the comparison's, oriented best minus
    runner-up). Columns: :data:`BEST_COLUMNS`."""
    lookup = pair_lookup(comparisons)
    rows = []
    for key, g, hib in _ordered(summary):
        recs = g.to_dict("records")
        best = recs[0]
        row = dict(model=key[0], metric=key[1], replicate=key[2], best=best["method"],
                   best_mean=best["mean"], best_ci_low=best.get("ci_low", math.nan),
                   best_ci_high=best.get("ci_high", math.nan), higher_is_better=hib,
                   runner_up="", runner_up_mean=math.nan, runner_up_ci_low=math.nan,
                   runner_up_ci_high=math.nan, diff=math.nan, diff_ci_low=math.nan,
                   diff_ci_high=math.nan, effect_size=math.nan, p_holm=math.nan,
                   negligible=False)
        if len(recs) == 1:
            rows.append(dict(row, verdict="single", tied=best["method"]))
            continue
        second = recs[1]
        pair = lookup.get(key + (best["method"], second["method"]))
        wins = is_significant(pair) and pair["better"] == best["method"]
        if pair is not None:
            sign = 1 if pair["method_a"] == best["method"] else -1
            low, high = sign * float(pair["ci_low"]), sign * float(pair["ci_high"])
            row.update(diff=sign * float(pair["diff"]), diff_ci_low=min(low, high),
                       diff_ci_high=max(low, high),
                       effect_size=sign * float(pair.get("effect_size", math.nan)),
                       p_holm=float(pair["p_holm"]),
                       negligible=str(pair.get("negligible", False)).strip().lower() == "true")
        tied = [best["method"]]
        if not wins:
            tied += [r["method"] for r in recs[1:]
                     if not is_significant(lookup.get(key + (best["method"], r["method"])))]
        rows.append(dict(row, runner_up=second["method"], runner_up_mean=second["mean"],
                         runner_up_ci_low=second.get("ci_low", math.nan),
                         runner_up_ci_high=second.get("ci_high", math.nan),
                         verdict="best" if wins else "tie", tied=", ".join(tied)))
    return pd.DataFrame(rows, columns=BEST_COLUMNS) if rows else empty_table(BEST_COLUMNS)
