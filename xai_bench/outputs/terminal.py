"""What ``xai-bench run`` prints when it ends.

- :func:`compact_summary` (the default): per model and metric one line with the best method,
  its mean and 95 % interval, and whether it is significantly ahead of the runner-up (or which
  methods it ties with); then the claims' outcomes. Replicate 0 (the first one present).
- :func:`full_summary` (``--verbose``): every method's mean and interval, per metric, one
  column per model, then the same verdicts.

Both read the statistics tables of a run (:func:`xai_bench.analysis.statistics.analyse`).
"""

from __future__ import annotations

import pandas as pd

from xai_bench.storage.results import base_replicate
from xai_bench.analysis.statistics import format_interval

__all__ = ["compact_summary", "full_summary", "verdict_text"]


def _base(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the replicate shown by default (:func:`~xai_bench.storage.results.base_replicate`)."""
    if not len(frame) or "replicate" not in frame:
        return frame
    return frame[frame["replicate"].astype(int) == base_replicate(frame)]


def verdict_text(row) -> str:
    """One phrase for a row of the ``best`` table."""
    if row.verdict == "best":
        return f"significantly ahead of {row.runner_up}"
    if row.verdict == "tie":
        others = [t.strip() for t in str(row.tied).split(",") if t.strip() and t.strip() != row.best]
        return f"not significantly ahead: ties with {', '.join(others)}" if others else "tie"
    return "the only method scored"


def _rows(tables: dict) -> list:
    summary, best = _base(tables["summary"]), _base(tables["best"])
    direction = {m: bool(g["higher_is_better"].iloc[0]) for m, g in summary.groupby("metric")}
    rows = []
    for row in best.itertuples():
        arrow = "↑" if direction.get(row.metric, True) else "↓"
        rows.append((f"{row.metric} {arrow}", row.model, str(row.best),
                     format_interval(row.best_mean, row.best_ci_low, row.best_ci_high),
                     verdict_text(row)))
    return rows


def _claims_line(tables: dict) -> list:
    claims = tables.get("claims")
    if claims is None or not len(claims):
        return []
    claims = _base(claims)
    parts = [f"({c.claim}) {c.outcome}" for c in claims.itertuples()]
    return ["claims: " + ", ".join(parts) + "  (details: report, claims.csv)"]


def compact_summary(tables: dict) -> str:
    """Per (metric, model): the best method, its interval and the verdict; then the claims."""
    if tables["summary"].empty:
        return "(no ok records)"
    rows = _rows(tables)
    if not rows:
        return "(no ok records)"
    header = ("metric", "model", "best method", "mean [95% CI]", "verdict")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    lines = ["  ".join(f"{h:{w}s}" for h, w in zip(header, widths)) + "  " + header[4]]
    for r in rows:
        lines.append("  ".join(f"{c:{w}s}" for c, w in zip(r, widths)) + "  " + r[4])
    return "\n".join(lines + _claims_line(tables))


def full_summary(tables: dict) -> str:
    """Per metric: each method's mean and 95 % interval per model, then the best method per
    model, named only when it is significantly ahead of the runner-up."""
    summary, best = _base(tables["summary"]), _base(tables["best"])
    if summary.empty:
        return "(no ok records)"
    lines = []
    for metric, block in summary.groupby("metric", sort=False):
        direction = "higher" if bool(block["higher_is_better"].iloc[0]) else "lower"
        models = list(dict.fromkeys(block["model"]))
        cells = {(r.method, r.model): format_interval(r.mean, r.ci_low, r.ci_high)
                 for r in block.itertuples()}
        methods = list(dict.fromkeys(block["method"]))
        width = max(len(m) for m in methods) + 2
        col = max(24, max(len(v) for v in cells.values()) + 2)
        lines += ["", f"{metric} ({direction} is better; mean [95% CI])",
                  " " * width + "".join(f"{m:>{col}s}" for m in models)]
        for method in methods:
            lines.append(f"{method:{width}s}" + "".join(f"{cells.get((method, m), '–'):>{col}s}"
                                                        for m in models))
        for row in best[best["metric"] == metric].itertuples():
            lines.append(f"  best on {row.model}: {row.best} ({verdict_text(row)})")
    return "\n".join(lines + [""] + _claims_line(tables))
