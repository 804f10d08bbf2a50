"""The metric sections of a run's summary: per metric, what its card declares, the table of
means (per method and model) with the best mean and rank groups marked, and the verdict per
model. A metric of any category — one the harness has never seen included — gets its section
the same way."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from xai_bench.analysis.frames import as_bool
from xai_bench.contracts.metric import MetricCard
from xai_bench.outputs.summary.model import (
    MISSING, Cell, Interval, Section, Table, Verdict, contrast_text,
)

__all__ = ["metric_facts", "n_text", "interval_of", "method_cell", "metric_section",
           "verdict_of", "select", "finite"]


def select(frame, base: int, **equal) -> pd.DataFrame:
    """The rows of ``frame`` of replicate ``base`` whose columns equal ``equal``."""
    if frame is None or not len(frame):
        return frame.iloc[0:0] if frame is not None else pd.DataFrame()
    mask = frame["replicate"].astype(int) == base if "replicate" in frame else \
        pd.Series(True, frame.index)
    for column, value in equal.items():
        mask &= frame[column].astype(str) == str(value)
    return frame[mask]


def _recorded(metric: str, column: str, frames, default):
    """The first recorded ``column`` of ``metric`` in any of ``frames`` (the runner writes
    the card's category and direction next to every record)."""
    for frame in frames:
        if frame is not None and len(frame) and column in frame and "metric" in frame:
            rows = frame.loc[frame["metric"].astype(str) == metric, column].dropna()
            if len(rows):
                return rows.iloc[0]
    return default


def metric_facts(metric: str, presentation, *frames) -> tuple[str, bool]:
    """``(category, higher_is_better)`` of ``metric``: its card's where it has one (run.json's
    declarations or the registry), else what the records say (a metric that nothing here
    declares: a function passed to ``evaluate``, a plugin not installed now)."""
    card = presentation.cards.metric(metric)
    if card != MetricCard(name=card.name):
        return card.category, card.higher_is_better
    category = str(_recorded(metric, "category", frames, card.category) or card.category)
    return category, as_bool(_recorded(metric, "higher_is_better", frames, True))


def n_text(ns, unit: str) -> str:
    """``n = 8 grid cells`` (or a range ``n = 6–8 images`` when the models differ)."""
    ns = sorted({int(n) for n in ns if pd.notna(n)})
    if not ns:
        return ""
    return f"n = {ns[0]} {unit}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} {unit}"


def interval_of(row, prefix: str = "") -> Interval:
    """The interval of a summary row (``prefix="best_"``: of a best.csv row)."""
    mean = row.get(f"{prefix}mean")
    low = row.get(f"{prefix}ci_low")
    high = row.get(f"{prefix}ci_high")
    return Interval(*(float("nan") if v is None or pd.isna(v) else float(v)
                      for v in (mean, low, high)))


def method_cell(method: str, presentation) -> Cell:
    """A method's row head: its label (with † when class-agnostic), "(baseline)" for a
    baseline."""
    return Cell(presentation.method_label(method)
                + (" (baseline)" if presentation.is_baseline(method) else ""))


def _tied(value) -> tuple:
    return tuple(t.strip() for t in str(value or "").split(",") if t.strip())


def verdict_of(row: dict, s: pd.DataFrame, groups: dict, hib: bool) -> Verdict:
    """The :class:`Verdict` of a best.csv row, with its method's interval, n and group
    (from the summary rows ``s`` of its metric)."""
    model, method = str(row["model"]), str(row["best"])
    hit = s[(s["model"].astype(str) == model) & (s["method"].astype(str) == method)] \
        if len(s) else s
    if len(hit):
        h = hit.iloc[0]
        interval, n = interval_of(h), int(h["n"]) if pd.notna(h["n"]) else None
    else:  # best.csv carries the same interval
        interval, n = interval_of(row, "best_"), None
    return Verdict(model=model, metric=str(row["metric"]), kind=str(row.get("verdict") or ""),
                   best=method, runner_up=str(row.get("runner_up") or ""),
                   tied=_tied(row.get("tied")), higher_is_better=hib, interval=interval,
                   n=n, group=str(groups.get((model, method), "") or ""),
                   contrast=_contrast(row))


def _number(row: dict, key: str) -> float:
    value = pd.to_numeric(pd.Series([row.get(key)]), errors="coerce").iloc[0]
    return float(value) if pd.notna(value) else math.nan


def _contrast(row: dict) -> str:
    """best.csv's best-minus-runner-up comparison as text (older tables without the effect
    size show what they have)."""
    return contrast_text(_number(row, "diff"), _number(row, "diff_ci_low"),
                         _number(row, "diff_ci_high"), _number(row, "effect_size"),
                         _number(row, "p_holm"),
                         str(row.get("negligible", "")).strip().lower() == "true")


def metric_section(metric: str, tables: dict, records, models: list, base: int,
                   presentation) -> Section:
    """The section of one metric (see the module doc)."""
    summary = tables["summary"]
    category, hib = metric_facts(metric, presentation, summary, records)
    card = presentation.cards.metric(metric)
    section = Section(id=f"metric-{metric}",
                      title=f"{metric} ({category + '; ' if category else ''}"
                            f"{'higher' if hib else 'lower'} is better)",
                      metric=metric, category=category, higher_is_better=hib,
                      description=card.description, label=presentation.metric_label(metric))
    s = select(summary, base, metric=metric)
    if not len(s):
        section.scored = False
        section.intro.append("No scored results (every cell skipped or failed).")
        return section
    models = [m for m in models if m in set(s["model"].astype(str))]
    r = select(tables.get("ranks"), base, metric=metric)
    b = select(tables.get("best"), base, metric=metric)
    groups = {(str(x["model"]), str(x["method"])): str(x["group"] or "")
              for x in r.to_dict("records")} if len(r) else {}
    best_of = {str(x["model"]): str(x["best"]) for x in b.to_dict("records")} if len(b) else {}
    unit = presentation.metric_unit(metric)
    columns = ["method"] + [f"{m} ({n_text(s.loc[s['model'] == m, 'n'], unit)})"
                            for m in models]
    rows = []
    for method in presentation.order_methods(s["method"].astype(str)):
        row = [method_cell(method, presentation)]
        for model in models:
            hit = s[(s["model"].astype(str) == model) & (s["method"].astype(str) == method)]
            if not len(hit):
                row.append(Cell(MISSING))
                continue
            row.append(Cell(interval=interval_of(hit.iloc[0]),
                            best=best_of.get(model) == method,
                            group=groups.get((model, method), "")))
        rows.append(row)
    section.tables.append(Table(columns, rows, kind="metric", keys=["method"] + models))
    by_model = {str(x["model"]): x for x in b.to_dict("records")} if len(b) else {}
    section.verdicts = [verdict_of(by_model[m], s, groups, hib) for m in models if m in by_model]
    return section


def finite(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows with a finite mean (a cell with no usable sample is not shown)."""
    return summary[np.isfinite(summary["mean"].astype(float))] if len(summary) else summary
