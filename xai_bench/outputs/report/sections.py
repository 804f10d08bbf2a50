"""The report's sections, each rendered from the run's summary model
(:mod:`xai_bench.outputs.summary`) and run.json: the title, the answer (claims and the best
method per model and metric), one section per metric (from its card), the models, examples,
perturbation curves, sanity checks, metric agreement and replicates."""

from __future__ import annotations

import json
from pathlib import Path

from xai_bench.outputs.plots import AGREEMENT, CURVES, FIG6
from xai_bench.outputs.report.answer import NOT_SCORED, SMALL_MARK, answer_html, claims_html
from xai_bench.outputs.report.galleries import galleries_html
from xai_bench.outputs.report.html import (
    DASH, collapsed, esc, figure_html, fmt_number, html_table, model_table, paragraphs,
    section_body, slug,
)
from xai_bench.outputs.summary import Section

__all__ = ["title_html", "nav_html", "answer_html", "claims_html", "metrics_html",
           "models_html", "examples_html", "later_html", "NAV"]

NAV = [("answer", "Best methods"), ("claims", "The paper's claims"), ("metrics", "Metrics"),
       ("models", "Models"), ("examples", "Examples"), ("curves", "Perturbation curves"),
       ("sanity", "Sanity checks"), ("agreement", "Metric agreement"),
       ("replicates", "Replicates"), ("provenance", "Provenance")]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def title_html(run) -> str:
    cfg, info = run.config, run.info
    name = cfg.get("name") or run.dir.name
    dataset = (info.get("dataset") or {}).get("name") or cfg.get("dataset") or DASH
    stamp = (info.get("provenance") or {}).get("timestamp_utc") or ""
    date = stamp.replace("T", " ").replace("+00:00", " UTC") if stamp else "date unknown"
    counts = info.get("counts") or run.summary.counts
    # the methods the run resolved ("all" or a glob in the config names several)
    methods = set(run.records["method"].astype(str)) if len(run.records) else \
        set(cfg.get("methods") or [])
    facts = [f"data set <b>{esc(dataset)}</b>", esc(date), _plural(len(run.models), "model"),
             _plural(len(methods), "method"), _plural(len(run.metrics), "metric"),
             f"seed {esc(run.summary.seed)}"]
    status = ", ".join(f"{int(v)} {esc(k)}" for k, v in sorted(counts.items())) or "none"
    failed = any(k != "ok" and v for k, v in counts.items())
    return (f"<header><h1>xai-bench report: run <code>{esc(name)}</code></h1>"
            f"<p class=\"facts\">{' · '.join(facts)}</p>"
            f"<p class=\"facts\">records: {status}"
            + (" — see <a href=\"#not-scored\">not scored</a>" if failed else "")
            + "</p></header>")


def nav_html(run) -> str:
    optional = ("replicates", "claims")  # only where the run has them
    items = [(a, t) for a, t in NAV if a not in optional or run.summary.section(a)]
    return ("<nav><ol>" + "".join(f'<li><a href="#{a}">{esc(t)}</a></li>' for a, t in items)
            + "</ol></nav>")


def _what(section: Section) -> str:
    """What the metric measures (its card's description), its direction and axis label."""
    text = section.description or f"{section.metric}: no description declared"
    sentence = text[0].upper() + text[1:]
    sentence = sentence.rstrip(". ") + f". {section.direction.capitalize()}."
    label = " ".join(section.label.split())
    if label and label != section.metric:
        sentence += f" In the figures: {label}."
    return sentence


def _metric_table(section: Section) -> str:
    """A metric's table of means and its verdicts, collapsed: the answer is at the top of
    the page and in Fig. 6; the numbers of every method stay one click away."""
    table = section.tables[0] if section.tables else None
    body = section_body(Section(id=section.id, title=section.title, intro=section.intro,
                                tables=section.tables, verdicts=section.verdicts))
    size = f"{len(table.rows)} methods × {len(table.columns) - 1} " \
           f"model{'s' * (len(table.columns) != 2)}" if table is not None else ""
    return collapsed(f"Table: every method's mean [95 % CI] and rank group ({size})", body)


def _metric_notes(section: Section) -> str:
    """A metric's notes; its small samples as a visible warning next to its numbers."""
    small = [n for n in section.notes if "intervals and tests are unreliable" in n]
    other = [n for n in section.notes if n not in small]
    warn = ('<div class="warn" role="note">' + "".join(
        f"<p>{SMALL_MARK} {esc(n)}</p>" for n in small) + "</div>") if small else ""
    return warn + paragraphs(other)


def metrics_html(run, figures: dict) -> str:
    group = run.summary.section("metrics")
    parts = ['<section id="metrics"><h2>Metrics</h2>', paragraphs(group.intro)]
    if FIG6 in figures:
        parts.append(figure_html(figures[FIG6], "Fig. 6: each method on each metric",
                                 "Fig. 6: each method's mean with its 95 % bootstrap interval, "
                                 "per model and metric."))
    for section in group.subsections:
        parts.append(f'<section class="metric" id="metric-{slug(section.metric)}">'
                     f"<h3>{esc(section.metric)}"
                     + (f' <span class="cat">{esc(section.category)}</span>'
                        if section.category else "") + "</h3>")
        parts.append(f'<p class="what">{esc(_what(section))}</p>')
        if section.scored:
            parts.append(_metric_notes(section))
            parts.append(_metric_table(section))
        else:
            parts.append("<p>No scored results: every cell of this metric was skipped or ended "
                         "in an error" + NOT_SCORED + ".</p>")
        parts.append("</section>")
    parts.append(paragraphs(group.notes, cls="note"))
    parts.append("</section>")
    return "\n".join(parts)


def _checkpoint(m: dict):
    """``(where, sha)`` of a model's checkpoint as the page shows them."""
    from xai_bench.storage.identity import file_sha256

    ckpt, sha = m.get("checkpoint"), m.get("checkpoint_sha256")
    if not sha and ckpt:
        try:  # run.json did not record it; the file may still be there
            sha = file_sha256(ckpt) if Path(ckpt).is_file() else None
        except OSError:
            sha = None
        # a file hashed now may have changed since the run: the reader should know
        sha = sha and f"{sha} (of the file now: run.json does not record it)"
    if ckpt:
        where = str(ckpt) + ("" if Path(str(ckpt)).exists() else " (file not found now)")
    elif m.get("object"):
        where = f"— (passed as a Python object: {m['object']})"
    elif m.get("untrained"):
        where = "— (untrained: seeded random weights)"
    else:
        where = DASH
    return where, sha


def models_html(run) -> str:
    infos = run.info.get("models") or {}
    parts = ['<section id="models"><h2>Models</h2>']
    if not infos:
        return "\n".join(parts + ["<p>run.json lists no models.</p></section>"])
    rows, notes, details = [], [], []
    for label, m in infos.items():
        m = m if isinstance(m, dict) else {}
        where, sha = _checkpoint(m)
        recipe = m.get("recipe_name") or (m["recipe"].get("name")
                                          if isinstance(m.get("recipe"), dict) else None)
        rows.append([label, m.get("family") or DASH, fmt_number(m.get("parameters")),
                     fmt_number(m.get("test_accuracy")), recipe or DASH,
                     m.get("trained_on") or DASH,
                     DASH if m.get("shipped") is None else ("yes" if m["shipped"] else "no"),
                     where, sha or DASH])
        if m.get("error"):
            notes.append(f"{label}: {m['error']}")
        extra = {k: m[k] for k in ("config", "recipe", "capabilities", "image_size",
                                   "num_classes", "replicate") if m.get(k) not in (None, {}, [])}
        if extra:
            details.append(f"<details><summary>{esc(label)}: constructor arguments, recipe, "
                           f"capabilities</summary>"
                           f"<pre>{esc(json.dumps(extra, indent=1, default=str))}</pre>"
                           f"</details>")
    parts.append(html_table(["model", "family", "parameters", "test accuracy", "recipe",
                             "trained on", "shipped", "checkpoint", "checkpoint sha256"],
                            rows, cls="models"))
    parts += [f'<p class="note">{esc(note)}</p>' for note in notes] + details
    classes = run.summary.section("classes")
    if classes is not None:
        parts.append(f'<h3 id="classes">{esc(classes.title)}</h3>')
        parts.append(paragraphs(classes.intro))
        parts += [model_table(t, cls="classes") for t in classes.tables]
        parts.append(paragraphs(classes.notes, cls="note"))
    parts.append("</section>")
    return "\n".join(parts)


def examples_html(run, figures: dict) -> str:
    parts = ['<section id="examples"><h2>Examples</h2>', "<h3>Fig. 7: one grid explained</h3>"]
    fig7 = [(name, uri) for name, uri in figures.items() if name.startswith("fig7_grid_")]
    if fig7:
        parts.append("<p>The first 2×2 grid of the grid pointing game, explained for each of "
                     "its four classes (rows) by every method (columns); the explained cell "
                     "is outlined.</p>")
        parts += [figure_html(uri, f"Fig. 7 {name[len('fig7_grid_'):-4]}")
                  for name, uri in fig7]
    else:
        parts.append('<p class="note">No example grid: no metric of this run kept one (the '
                     'grid pointing game keeps its first grid).</p>')
    parts.append(galleries_html(run))
    parts.append("</section>")
    return "\n".join(parts)


def later_html(run, figures: dict) -> str:
    summary = run.summary
    parts = ['<section id="curves"><h2>Perturbation curves</h2>']
    if CURVES in figures:  # what the perturbation metrics' numbers above summarise
        parts.append(collapsed("Figure: the mean perturbation curves of every method, per "
                               "model and metric",
                               figure_html(figures[CURVES], "pixel perturbation curves")))
    parts.append("</section>")
    parts.append('<section id="sanity"><h2>Sanity checks</h2>')
    sanity = summary.section("sanity")
    if sanity is not None and sanity.tables:  # the same numbers as their metrics' tables
        parts.append(paragraphs(sanity.intro))
        parts.append(collapsed("Table: the sanity metrics side by side, per model",
                               "".join(model_table(t) for t in sanity.tables)
                               + paragraphs(sanity.notes)))
    else:
        parts.append(section_body(sanity, "No sanity checks."))
    parts.append("</section>")
    parts.append('<section id="agreement"><h2>Metric agreement</h2>')
    agreement = summary.section("agreement")
    if AGREEMENT in figures:
        parts.append(figure_html(figures[AGREEMENT], "metric agreement"))
    if agreement is not None and agreement.tables:
        parts.append(collapsed("Table: Kendall's τ of every pair of metrics, per model",
                               section_body(agreement)))
    else:
        parts.append(section_body(agreement, "No metric agreement."))
    from xai_bench.outputs.report.meta_section import meta_html

    parts.append(meta_html(run.dir))  # "" without meta.csv (xai-bench run --meta)
    parts.append("</section>")
    replicates = summary.section("replicates")
    if replicates is not None:
        parts += ['<section id="replicates"><h2>Replicates</h2>', section_body(replicates),
                  "</section>"]
    return "\n".join(parts)
