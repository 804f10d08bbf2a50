"""What a finished run could not answer: the (model, metric) pairs without a single ok cell,
grouped by reason, for the terminal, the exit code and :attr:`xai_bench.Results.problems`.

The reasons are the ``status`` / ``message`` columns of ``records.csv`` (a cell that ended
``skipped`` or ``error`` before any sample writes one record saying why). A reason is stated
once for every (model, metric) and method it hit, e.g.::

    vit_nano · grid_pointing_game: skipped for all 2 methods (ixg, saliency) — model
    'vit_nano' classifies no test image correctly; nothing to explain

A metric that declares it needs trained weights, skipped on a model the run initialised with
random weights (``--untrained``), is what ``--untrained`` documents: it is reported as a
note (:func:`expected_gaps`), not as a problem, and does not fail the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["Gap", "gaps", "problems", "expected_gaps", "unrequested", "problem_lines",
           "gap_line", "MAX_LINES"]

#: at most this many reason lines on the terminal (the rest: "… and N more")
MAX_LINES = 20
#: the message prefix :func:`~xai_bench.run.execute.error_line` gives a metric's refusal
_PREFIXES = ("MetricNotApplicable: ", "NotApplicable: ")


@dataclass(frozen=True)
class Gap:
    """One reason some (model, metric) pairs have no ok cell: ``status`` (``skipped`` /
    ``error``), ``reason`` (the message, the method's own name replaced by "the method"),
    ``pairs`` (``((model label, metric), ...)``), ``methods`` (the methods it hit, sorted)
    and ``of`` (how many methods each pair had)."""

    status: str
    reason: str
    pairs: tuple
    methods: tuple
    of: int

    @property
    def expected(self) -> bool:
        """Whether this gap is what ``--untrained`` documents (see the module's docstring)."""
        from xai_bench.metrics.random_weights import TRAINED_WEIGHTS_ONLY

        return self.status == "skipped" and TRAINED_WEIGHTS_ONLY in self.reason


def _label(model, replicate) -> str:
    try:
        r = int(replicate)
    except (TypeError, ValueError):
        r = 0
    return str(model) if not r else f"{model}@{r}"


def _reason(message, method: str) -> str:
    text = "" if message is None or (isinstance(message, float) and pd.isna(message)) \
        else str(message)
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
    # "method 'rollout' does not apply ..." is one reason for every method it names
    text = text.replace(f"method '{method}'", "the method").replace(f"'{method}'", "the method")
    return text or "(no message)"


def gaps(records: pd.DataFrame) -> list[Gap]:
    """Every reason a (model, metric) of ``records`` has no ok record, in the order the
    pairs first appear; empty when every pair has at least one ok record."""
    if records is None or len(records) == 0:
        return []
    frame = records.copy()
    frame["label"] = [_label(m, r) for m, r in
                      zip(frame["model"], frame.get("replicate", pd.Series(0, frame.index)))]
    ok = frame["status"].astype(str) == "ok"
    answered = set(zip(frame.loc[ok, "label"], frame.loc[ok, "metric"]))
    found: dict = {}
    n_methods: dict = {}
    for (label, metric), rows in frame.groupby(["label", "metric"], sort=False):
        if (label, metric) in answered:
            continue
        n_methods[(label, metric)] = rows["method"].nunique()
        # one reason per cell: its first record (a cell without samples has exactly one)
        for method, cell in rows.groupby("method", sort=False):
            first = cell.iloc[0]
            key = (str(first["status"]), _reason(first.get("message"), str(method)))
            found.setdefault(key, {}).setdefault((label, metric), set()).add(str(method))
    out = []
    for (status, reason), by_pair in found.items():
        methods = sorted(set().union(*by_pair.values()))
        out.append(Gap(status, reason, tuple(by_pair), tuple(methods),
                       max(n_methods[p] for p in by_pair)))
    return out


def problems(records: pd.DataFrame) -> list[Gap]:
    """The gaps that make ``xai-bench run`` exit 1 (all but the :attr:`Gap.expected`)."""
    return [g for g in gaps(records) if not g.expected]


def unrequested(found: list[Gap], records: pd.DataFrame, named) -> tuple[list, list]:
    """``(problems, notes)`` of ``found``: a gap that only *skips* metrics the run took from a
    group, category or glob (``named``: the ``--metric`` values as given) is a note — e.g.
    the default group's ``mask_localisation`` on an image folder without masks — as long as
    some pair of the run has a result; every other gap is a problem (exit 1). A run without
    any result is always a problem, however its metrics were chosen."""
    from xai_bench.run.names import split_names

    named = {str(n) for n in split_names(list(named or ()))}
    answered = records is not None and len(records) > 0 and \
        bool((records["status"].astype(str) == "ok").any())
    notes = [g for g in found if answered and g.status == "skipped"
             and not any(metric in named for _, metric in g.pairs)]
    return [g for g in found if g not in notes], notes


def expected_gaps(records: pd.DataFrame) -> list[Gap]:
    """The gaps ``--untrained`` documents (metrics that need trained weights)."""
    return [g for g in gaps(records) if g.expected]


def gap_line(gap: Gap) -> str:
    """One line: which (model, metric) pairs and methods, the status and the reason."""
    pairs = ", ".join(f"{label} · {metric}" for label, metric in gap.pairs)
    names = ", ".join(gap.methods) if len(gap.methods) <= 6 else \
        f"{', '.join(gap.methods[:5])}, … ({len(gap.methods) - 5} more)"
    k = len(gap.methods)
    count = f"all {k} methods" if k == gap.of and k > 1 else \
        f"{k} method{'s' if k > 1 else ''}"
    return f"{pairs}: {gap.status} for {count} ({names}) — {gap.reason}"


def problem_lines(found: list[Gap], limit: int | None = MAX_LINES) -> list[str]:
    """:func:`gap_line` of each gap, at most ``limit`` of them (None: all) and then one
    "… and N more"."""
    lines = [gap_line(g) for g in found[:limit]]
    if limit is not None and len(found) > limit:
        lines.append(f"… and {len(found) - limit} more reasons")
    return lines
