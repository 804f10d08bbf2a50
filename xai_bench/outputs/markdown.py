"""``summary.md``: the run's summary (:mod:`xai_bench.outputs.summary`) as Markdown.

A best mean is written **bold**, its rank group after it, a claim's outcome bold; every
other word comes from the summary model, so summary.md, the HTML report and the terminal say
the same thing.
"""

from __future__ import annotations

import pandas as pd

from xai_bench.analysis.tables import analyse, run_min_effect, run_seed
from xai_bench.outputs.summary import Cell, Section, Summary, Table, build_summary
from xai_bench.outputs.summary.caveats import SMALL_SAMPLE_N

__all__ = ["summary_markdown", "render_markdown"]


def _escape(text) -> str:
    """A cell's text safe in a pipe table (a bar would split the cell, a newline the row)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell(cell: Cell) -> str:
    if cell.outcome:
        return f"**{_escape(cell.text)}**"
    text = _escape(cell.value)
    if cell.best:
        text = f"**{text}**"
    return f"{text} {cell.group}".strip() if cell.group else text


def _table(table: Table) -> list:
    lines = ["| " + " | ".join(_escape(h) for h in table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return lines + [""]


def _body(section: Section) -> list:
    lines = []
    for text in section.intro:
        lines += [text, ""]
    for table in section.tables:
        lines += _table(table)
    if section.verdicts:
        lines += [f"- best on {v.model}: {v.text}" for v in section.verdicts] + [""]
    for text in section.notes:
        lines += [text, ""]
    return lines


def _section(section: Section) -> list:
    """A section under its ``##`` heading; a section of subsections (the metrics) has no
    heading of its own: its subsections are the headings."""
    if section.subsections:
        lines = [line for text in section.intro for line in (text, "")]
        for sub in section.subsections:
            lines += [f"## {sub.title}", ""] + _body(sub)
        return lines + [line for text in section.notes for line in (text, "")]
    return [f"## {section.title}", ""] + _body(section)


def render_markdown(summary: Summary) -> str:
    """summary.md of a built summary."""
    lines = ["# xai-bench summary", "", "; ".join(summary.facts) + ".", ""]
    if summary.computed:
        lines += [summary.computed_note, ""]
    if summary.small:  # before any number, so that no one reads them without it
        lines += [f"**Small samples** (n below {SMALL_SAMPLE_N}: intervals and tests are "
                  f"unreliable):", ""] + [f"- {note}" for note in summary.small] + [""]
    for section in summary.sections:
        lines += _section(section)
    lines.append("Records: " + (", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
                                or "none"))
    return "\n".join(lines) + "\n"


def summary_markdown(records: pd.DataFrame, info: dict, tables: dict | None = None) -> str:
    """``summary.md`` of a run; ``tables`` as ``read_statistics`` returns them (computed from
    ``records`` when None)."""
    if tables is None:
        tables = dict(analyse(records, seed=run_seed(info), claims=True,
                              declarations=info.get("declarations"),
                              min_effect=run_min_effect(info)), computed=True)
    return render_markdown(build_summary(tables, records, info))
