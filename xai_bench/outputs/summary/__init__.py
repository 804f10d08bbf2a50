"""The summary of a run as one structure (sections of typed tables, verdicts, claims) that
summary.md, the HTML report and the terminal each render: :func:`build_summary` builds it,
:mod:`.model` says its shape, :func:`verdict_text` is the one wording of a verdict."""

from xai_bench.outputs.summary.build import (
    READING, base_claims, build_summary, model_order,
)
from xai_bench.outputs.summary.model import (
    MISSING, Cell, Claim, Interval, Section, Summary, Table, Verdict, verdict_text,
)

__all__ = ["build_summary", "model_order", "base_claims", "READING", "MISSING",
           "Cell", "Claim", "Interval", "Section", "Summary", "Table", "Verdict",
           "verdict_text"]
