"""What ``xai-bench run`` prints when it ends, rendered from the run's summary
(:mod:`xai_bench.outputs.summary`), so it says what summary.md and the report say.

- :func:`compact_summary` (the default): per metric and model one line with the best (or
  highest-mean) method's mean and 95 % interval, its n and the verdict; then the small
  samples (n below :data:`~xai_bench.analysis.sample_size.SMALL_SAMPLE_N`) and, when the run
  has a B-cos model and its twin, the claims' outcomes.
  Replicate 0 (the first one present).
- :func:`full_summary` (``--verbose``): every method's mean and interval, per metric, one
  column per model, then the same verdicts.

Both take the statistics tables of a run (:func:`xai_bench.analysis.statistics.analyse`);
``info`` (run.json) and ``records`` add the run's declarations and model order.
"""

from __future__ import annotations

from xai_bench.outputs.summary import Summary, base_claims, build_summary
from xai_bench.outputs.summary.caveats import SMALL_SAMPLE_N, is_small

__all__ = ["compact_summary", "full_summary", "render_compact", "render_full"]

EMPTY = "(no ok records)"
#: after an n below SMALL_SAMPLE_N (the lines under the table say why)
SMALL_MARK = " (small)"


def _claims_line(summary: Summary) -> list:
    claims = base_claims(summary)
    if not claims:
        return []
    parts = [f"({c.claim}) {c.outcome}" for c in claims]
    return ["claims: " + ", ".join(parts) + "  (details: report, claims.csv)"]


def _arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def _small_lines(summary: Summary) -> list:
    """The small samples, one line per (model, metric), under one heading."""
    if not summary.small:
        return []
    return [f"small samples (n below {SMALL_SAMPLE_N}):"] + [f"  {n}" for n in summary.small]


def _n(v) -> str:
    return "" if v.n is None else f"{v.n}{SMALL_MARK if is_small(v.n) else ''}"


def render_compact(summary: Summary) -> str:
    rows = [(f"{v.metric} {_arrow(v.higher_is_better)}", v.model,
             v.interval.text if v.interval else "", _n(v), v.text) for v in summary.verdicts]
    if not rows:
        return EMPTY
    header = ("metric", "model", "best mean [95% CI]", "n", "verdict")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    lines = ["  ".join(f"{h:{w}s}" for h, w in zip(header, widths)) + "  " + header[4]]
    for r in rows:
        lines.append("  ".join(f"{c:{w}s}" for c, w in zip(r, widths)) + "  " + r[4])
    return "\n".join(lines + _small_lines(summary) + _claims_line(summary))


def render_full(summary: Summary) -> str:
    metrics = [s for s in summary.section("metrics").subsections if s.tables]
    if not metrics:
        return EMPTY
    lines = []
    for section in metrics:
        table = section.tables[0]
        heads = table.keys[1:]  # the models (the column heads also give n)
        cells = [[c.value for c in row] for row in table.rows]
        width = max(len(row[0]) for row in cells) + 2
        col = max(24, max(len(c) for row in cells for c in row[1:]) + 2)
        lines += ["", f"{section.metric} ({section.direction}; mean [95% CI])",
                  " " * width + "".join(f"{m:>{col}s}" for m in heads)]
        lines += [f"{row[0]:{width}s}" + "".join(f"{c:>{col}s}" for c in row[1:])
                  for row in cells]
        lines += [f"  best on {v.model}: {v.text}" for v in section.verdicts]
    return "\n".join(lines + [""] + _small_lines(summary) + _claims_line(summary))


def compact_summary(tables: dict, info: dict | None = None, records=None) -> str:
    """Per (metric, model): the best method's interval and the verdict; then the claims."""
    return render_compact(build_summary(tables, records, info))


def full_summary(tables: dict, info: dict | None = None, records=None) -> str:
    """Per metric: each method's mean and 95 % interval per model, then the verdicts."""
    return render_full(build_summary(tables, records, info))
