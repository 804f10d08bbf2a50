"""The shape of a run's summary: sections of tables whose cells are typed values.

Built once (:func:`xai_bench.outputs.summary.build_summary`) and rendered by each output in
its own form — ``summary.md`` (:mod:`xai_bench.outputs.markdown`), the HTML report
(:mod:`xai_bench.outputs.report`) and the terminal (:mod:`xai_bench.outputs.terminal`). Nothing
here is Markdown or HTML: a best mean is a flag on its cell, a rank group a field, so no
renderer has to parse another's text back.

The one wording of a best-method verdict is :func:`verdict_text`; every renderer shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from xai_bench.analysis.formatting import format_interval

__all__ = ["Interval", "Cell", "Table", "Verdict", "Claim", "Section", "Summary",
           "verdict_text", "contrast_text", "MISSING"]

#: what a cell shows for "not scored on that model"
MISSING = "—"


@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % interval."""

    mean: float
    low: float
    high: float

    @property
    def text(self) -> str:
        return format_interval(self.mean, self.low, self.high)


@dataclass(frozen=True)
class Cell:
    """One table cell: plain ``text`` or an ``interval``; ``best``: the best mean on its
    model; ``group``: its rank-group letter; ``outcome``: a claim's holds / fails /
    inconclusive."""

    text: str = ""
    interval: Interval | None = None
    best: bool = False
    group: str = ""
    outcome: str = ""

    @property
    def value(self) -> str:
        """The cell's text without its marks (the interval, or the text)."""
        return self.interval.text if self.interval is not None else self.text

    @classmethod
    def of(cls, value) -> "Cell":
        return value if isinstance(value, Cell) else cls(text="" if value is None else str(value))


@dataclass
class Table:
    """Column heads and rows of :class:`Cell`; ``kind`` says what it holds (``metric``,
    ``claims``, ``agreement``, ``sanity``, ``replicates``, ``not-scored``, ``models``);
    ``keys``: what each column is about (a metric table's models), where that is not the
    head's text."""

    columns: list
    rows: list
    kind: str = ""
    keys: list = field(default_factory=list)


def contrast_text(diff: float, low: float, high: float, effect_size: float, p_holm: float,
                  negligible: bool = False) -> str:
    """The best-minus-runner-up comparison in one phrase: the difference with its interval,
    the standardised effect size and the Holm-adjusted p-value (empty without a
    difference)."""
    if not math.isfinite(diff):
        return ""
    parts = [f"difference {format_interval(diff, low, high)}"]
    if not math.isnan(effect_size):
        parts.append(f"d_z {effect_size:.2f}")
    if math.isfinite(p_holm):
        parts.append(f"p_holm {p_holm:.2g}")
    if negligible:
        parts.append("below --min-effect")
    return ", ".join(parts)


def verdict_text(kind: str, best: str, runner_up: str = "", tied=(),
                 higher_is_better: bool = True) -> str:
    """The verdict on one (model, metric): the method named best only when it is
    significantly ahead of the runner-up, else the tie (``kind``: ``best``, ``tie`` or
    ``single``, as best.csv's ``verdict``). The one wording that summary.md, the report and
    the terminal show."""
    if kind == "best":
        return f"{best} (significantly ahead of {runner_up})"
    if kind == "single":
        return f"{best} (the only method scored)"
    tied = [t for t in dict.fromkeys(str(t).strip() for t in tied) if t]
    if len(tied) < 2:  # best.csv lists the tie; a hand-written one may not
        tied = [t for t in dict.fromkeys([best, runner_up]) if t]
    word = "highest" if higher_is_better else "lowest"
    return (f"tie between {', '.join(tied)}: {best} has the {word} mean, not significantly "
            f"better than {runner_up}")


@dataclass(frozen=True)
class Verdict:
    """One row of best.csv with what the page shows next to it: the best (or highest-mean)
    method's interval, its n and rank group."""

    model: str
    metric: str
    kind: str
    best: str
    runner_up: str = ""
    tied: tuple = ()
    higher_is_better: bool = True
    interval: Interval | None = None
    n: int | None = None
    group: str = ""
    #: best minus runner-up (:func:`contrast_text`; empty for a single method)
    contrast: str = ""

    @property
    def text(self) -> str:
        words = verdict_text(self.kind, self.best, self.runner_up, self.tied,
                             self.higher_is_better)
        return f"{words} [{self.contrast}]" if self.contrast else words


@dataclass(frozen=True)
class Claim:
    """One evaluated claim (a row of claims.csv)."""

    claim: str
    text: str
    model: str
    twin: str
    replicate: int
    outcome: str
    estimate: Interval | None
    detail: str
    n: str


@dataclass
class Section:
    """A part of the summary, in page order. ``intro``/``notes``: paragraphs before / after
    the tables (plain text); ``subsections``: e.g. one per metric. A metric's section also
    carries what its card declares (``metric``, ``category``, ``higher_is_better``,
    ``description``, ``label``) and its verdicts; ``scored``: whether it has any result."""

    id: str
    title: str
    intro: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    subsections: list = field(default_factory=list)
    metric: str = ""
    category: str = ""
    higher_is_better: bool = True
    description: str = ""
    label: str = ""
    scored: bool = True

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


@dataclass
class Summary:
    """A run's summary: ``facts`` (run, data set, seed, sizes), the statistics tables that
    were ``computed`` now (an older run lacks them), the replicate shown (``base``), the
    models and metrics in page order, the ``sections``, every verdict (metric-major), every
    claim and the record counts by status."""

    facts: list
    seed: int
    computed: tuple
    base: int
    models: list
    metrics: list
    sections: list
    verdicts: list
    claims: list
    counts: dict
    #: one line per (model, metric) whose estimates rest on fewer samples than
    #: :data:`xai_bench.analysis.sample_size.SMALL_SAMPLE_N`
    small: list = field(default_factory=list)
    #: the (B-cos model, twin) pairs in the run: the claims are shown only when there is one
    pairs: list = field(default_factory=list)

    @property
    def computed_note(self) -> str:
        """What a reader must know when tables were computed now ("" when none was)."""
        if not self.computed:
            return ""
        names = ", ".join(f"{n}.csv" for n in self.computed)
        return (f"{names} {'was' if len(self.computed) == 1 else 'were'} not in the run "
                f"directory (an older run): computed now from records.csv (seed {self.seed}).")

    def section(self, ident: str) -> Section | None:
        for s in self.sections:
            if s.id == ident:
                return s
            for sub in s.subsections:
                if sub.id == ident:
                    return sub
        return None
