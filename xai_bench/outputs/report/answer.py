"""The top of the report: what the run asked, answered. First the best method per (metric,
model) — the method named best only when it is significantly ahead, else the rank group of
methods that tie with the best mean —, with its mean, 95 % interval, n and verdict, and the
warnings a reader must see next to these numbers (small samples, images of one class); then
the paper's claims, only when the run has a B-cos model and its conventional twin."""

from __future__ import annotations

from xai_bench.outputs.report.html import DASH, esc, html_table, paragraphs, section_body
from xai_bench.outputs.summary.caveats import SMALL_SAMPLE_N, is_small, small_text

__all__ = ["answer_html", "claims_html", "best_rows", "warnings_html", "NOT_SCORED"]

NOT_SCORED = ' (see <a href="#not-scored">not scored</a>)'
#: the mark after a small n (its cell's title and the warning under the table say why)
SMALL_MARK = "⚠"


def _methods(v, presentation) -> str:
    """The best method, or the methods of its tie (the best mean first)."""
    label = presentation.method_label
    if v.kind != "tie":
        return label(v.best)
    tied = [t for t in dict.fromkeys([v.best, *v.tied]) if t]
    if len(tied) < 2:
        tied = [t for t in dict.fromkeys([v.best, v.runner_up]) if t]
    return ", ".join(label(t) for t in tied) + " (tie)"


def _why(v) -> str:
    """The verdict without the names the best-method(s) column already gives: why the method
    is named best, or why the group ties (the full wording, :attr:`Verdict.text`, is the
    cell's title and in the metric's section)."""
    if v.kind == "best":
        words = f"significantly ahead of {v.runner_up}"
    elif v.kind == "single":
        words = "the only method scored"
    else:
        word = "highest" if v.higher_is_better else "lowest"
        words = f"{v.best} has the {word} mean, not significantly better than {v.runner_up}"
    return f"{words} [{v.contrast}]" if v.contrast else words


def best_rows(run) -> list:
    """One row per verdict, metric-major: the metric with its direction, the model, the best
    method(s), the interval of the best (or highest-mean) one, n and the verdict."""
    order = {m: i for i, m in enumerate(run.models)}
    morder = {m: i for i, m in enumerate(run.metrics)}
    rows = []
    for v in sorted(run.summary.verdicts, key=lambda v: (morder.get(v.metric, len(morder)),
                                                         order.get(v.model, len(order)))):
        rows.append([f"{v.metric} {'↑' if v.higher_is_better else '↓'}", v.model,
                     _methods(v, run.presentation),
                     v.interval.text if v.interval else DASH,
                     DASH if v.n is None else str(v.n), _Verdict(_why(v), v.text)])
    return rows


class _Verdict(str):
    """A verdict cell's short text, with the full wording for its title."""

    def __new__(cls, short: str, full: str):
        self = super().__new__(cls, short)
        self.full = full
        return self


def _cell(value, tag: str) -> str:
    """A plain cell; a small n marked, with the warning as its title; a verdict with its
    full wording as its title."""
    if isinstance(value, _Verdict):
        return f'<{tag} title="{esc(value.full)}">{esc(value)}</{tag}>'
    text = str(value)
    if tag == "td" and text.isdigit() and is_small(int(text)):
        return (f'<td class="small" title="{esc(small_text(int(text)))}">{esc(text)} '
                f"{SMALL_MARK}</td>")
    return f"<{tag}>{esc(text)}</{tag}>"


def warnings_html(run) -> str:
    """Small samples and one-class image selections, as a visible box ("" when none)."""
    items = [esc(n) for n in run.summary.small]
    classes = run.summary.section("classes")
    items += [esc(n.rstrip(".")) + ' (see <a href="#classes">classes of the explained '
              'images</a>).'
              for n in (classes.notes if classes is not None else [])
              if "speak mostly for" in n]
    if not items:
        return ""
    head = (f"Small samples: n below {SMALL_SAMPLE_N} ({SMALL_MARK}) — intervals and tests "
            f"unreliable" if run.summary.small else "Read with care")
    return (f'<div class="warn" role="note"><strong>{esc(head)}.</strong><ul>'
            + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>")


def answer_html(run) -> str:
    parts = ['<section id="answer"><h2>Best method per model and metric</h2>']
    if run.summary.computed:
        parts.append(paragraphs([run.summary.computed_note], cls="note"))
    rows = best_rows(run)
    if rows:
        base = run.summary.base
        parts.append("<p>From best.csv" + (f" (replicate {base})" if base else "")
                     + ": a method is named best only when it is significantly ahead of the "
                       "runner-up (paired test, Holm-corrected); otherwise the methods that "
                       "tie with the best mean (its rank group) are listed, the best mean "
                       "first, and the mean is that method's. ↑ / ↓: higher / lower is "
                       "better; n: samples; the verdict's full wording is in each metric's "
                       "table below.</p>")
        parts.append(html_table(["metric", "model", "best method(s)", "mean [95 % CI]", "n",
                                 "verdict"], rows, cell=_cell, cls="answer"))
        parts.append(warnings_html(run))
    else:
        parts.append("<p>No scored results: every cell was skipped or ended in an error"
                     + NOT_SCORED + ".</p>")
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def claims_html(run) -> str:
    """The paper's claims, or "" when the run has no B-cos model with its twin."""
    claims = run.summary.section("claims")
    if claims is None:
        return ""
    pairs = ", ".join(f"{m} and its twin {t}" for m, t in run.summary.pairs)
    return ('<section id="claims"><h2>The paper\'s claims</h2>'
            f"<p>Checked on {esc(pairs)}.</p>" + section_body(claims) + "</section>")
