"""One self-contained HTML page per run directory: ``RUN_DIR/report.html``.

:func:`report_html` reads a run directory through the same readers as :mod:`xai_bench.outputs.plots`
(records, curves, run.json, examples, the statistics tables) and returns one page that a
reader can open offline, mail or print:

1. the title (run, data set, date) and *the answer*: the paper's claims (holds / fails /
   inconclusive, with their intervals) and the best method per (model, metric);
2. per metric: what it measures and its direction, the means with 95 % intervals, the best
   mean in bold and the rank groups (after Fig. 6, which covers every metric);
3. the models (family, size, accuracy, checkpoint and its SHA-256);
4. examples: the Fig. 7 grids and, per (model, method), the grid cells it scored best and
   worst on in the grid pointing game;
5. the perturbation curves, the sanity checks, metric agreement and the replicates;
6. provenance: the command that reproduces the run, versions, seeds, parameters, per-cell
   timings and every cell that was skipped or ended in an error, with its message.

The tables are the Markdown sections of :func:`xai_bench.outputs.plots.summary_markdown` (the one
place that turns the statistics into words), converted by :func:`markdown_html`; the figures
are those of :func:`xai_bench.outputs.plots.plot_run`, embedded as ``data:`` URIs. The page loads
nothing from anywhere: no web fonts, scripts or style sheets; CSS and the few lines of
JavaScript that sort a table by its clicked header are inline.

:func:`write_report` reads and checks every input before it writes one file, atomically.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from xai_bench.storage import atomic_io
from xai_bench.outputs import plots
from xai_bench.errors import XaiBenchError
from xai_bench.storage.results import (
    ResultsError, read_curves, read_examples, read_records, read_run_info,
)

# plots selected the Agg backend on import; pyplot only after it
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["REPORT", "report_html", "write_report", "markdown_html", "reproduce_command"]

REPORT = "report.html"
#: side in pixels of each panel of the per-sample galleries: the thumbnails are ≤ 96 px a
#: side (their pixels are the data's own), so a larger panel would only make the page heavier
GALLERY_SIDE = 96
OUTCOMES = ("holds", "fails", "inconclusive")
GALLERY_REQUIRED = ("gallery_images", "gallery_maps", "gallery_scores", "gallery_best")
DASH = "—"


# ------------------------------------------------------------------------------ escaping

def _esc(text) -> str:
    """``text`` safe inside HTML (elements and quoted attributes). The colon of ``://`` also
    becomes a character reference: it reads the same in the browser, but the page's source
    never holds a web address, so no tool (or reader) mistakes it for one that loads."""
    return html.escape(str(text), quote=True).replace("://", "&#58;//")


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


# ------------------------------------------------------------------------------ markdown

_TABLE_SEP = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")
#: "0.42 [0.39, 0.46] ab" or "**0.42 [0.39, 0.46]** a": an interval and its rank group
_GROUP = re.compile(r"^(.*\](?:\*\*)?)\s+([a-z]{1,3})$")


def _inline(text: str) -> str:
    """The inline subset: ``code`` spans (kept literally) and ``**bold**``; all else escaped."""
    out = []
    for part in re.split(r"(`[^`]*`)", text):
        if len(part) >= 2 and part[0] == part[-1] == "`":
            out.append(f"<code>{_esc(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _esc(part)))
    return "".join(out)


def _split_row(line: str) -> list:
    """The cells of a pipe-table row; ``\\|`` is a literal bar inside a cell (as
    :func:`xai_bench.outputs.plots._table` writes it)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _cell_html(text: str, tag: str) -> str:
    plain = text.replace("**", "").replace("`", "").strip()
    classes = []
    if tag == "td" and plain in OUTCOMES:
        classes.append(f"outcome {plain}")  # coloured: the answer should be seen at a glance
    elif tag == "td" and "**" in text:
        classes.append("best")
    group = _GROUP.match(text) if tag == "td" else None
    inner = (f'{_inline(group.group(1))} <span class="grp" title="rank group">'
             f'{_esc(group.group(2))}</span>') if group else _inline(text)
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f"<{tag}{cls}>{inner}</{tag}>"


def _table_html(lines: list, sortable: bool = True) -> str:
    rows = [_split_row(line) for line in lines]
    header = None
    if len(lines) >= 2 and _TABLE_SEP.match(lines[1].strip()):
        header, rows = rows[0], rows[2:]
    return _html_table(header, rows, sortable=sortable, cell=_cell_html)


def _html_table(header, rows, *, sortable=True, cell=None, cls="") -> str:
    """A table in a horizontally scrolling wrapper (wide tables never widen the page)."""
    cell = cell or (lambda text, tag: f"<{tag}>{_esc(text)}</{tag}>")
    classes = " ".join(c for c in ("sortable" if sortable and header else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    out = [f'<div class="tablewrap"><table{attr}>']
    if header:
        out.append("<thead><tr>" + "".join(cell(str(h), "th") for h in header)
                   + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell(str(c), "td") for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def markdown_html(text) -> str:
    """HTML of the Markdown subset :func:`xai_bench.outputs.plots.summary_markdown` writes: ``#``
    headings (one level lower: the page title is the only ``h1``), paragraphs, ``- ``
    bullet lists, pipe tables (sortable; ``\\|`` escapes), ``**bold**`` and ``code``
    spans. Table cells that hold an outcome (holds / fails / inconclusive) are coloured,
    bold cells (the best mean) marked, trailing rank-group letters set apart."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    out, i = [], 0

    def starts_block(line):
        return (not line.strip() or line.startswith("#") or line.startswith("|")
                or line.startswith("- "))

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif (m := re.match(r"^(#{1,5})\s+(.*)$", line)):
            level = len(m.group(1)) + 1
            out.append(f"<h{level}>{_inline(m.group(2).strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table_html(block))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:].strip())}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and not starts_block(lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def _sections(markdown: str) -> tuple[list, dict]:
    """``(preamble lines, {title: body lines})`` of the ``## `` sections, in order."""
    preamble, sections, current = [], {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif line.startswith("Records: "):
            continue  # the record counts: the page says them in its own words, once
        elif current is None:
            preamble.append(line)
        else:
            sections[current].append(line)
    return preamble, sections


# ------------------------------------------------------------------------------ reading

class _Run:
    """Everything a report shows, read (and checked) before anything is drawn or written."""

    def __init__(self, run_dir):
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ResultsError(f"{run_dir} is not a directory: pass a run directory made by "
                               f"`xai-bench run` (it holds run.json and records.csv)")
        # run.json first: its message says best what a directory that is no run lacks
        self.dir = run_dir
        self.info = read_run_info(run_dir)
        self.records = read_records(run_dir)
        self.curves = read_curves(run_dir)
        self.examples = read_examples(run_dir)
        self.tables = plots.read_statistics(run_dir, self.records, self.info)
        self.markdown = plots.summary_markdown(self.records, self.info, self.tables)
        self.summary = plots._finite(self.tables["summary"])
        self.base = plots._base_replicate(self.summary)
        self.models = plots._model_order(self.records, self.summary)
        self.config = self.info.get("config") or {}
        self.classes = list((self.info.get("dataset") or {}).get("classes") or [])
        metrics = list(self.records["metric"].astype(str)) if len(self.records) else []
        metrics += list(self.summary["metric"].astype(str)) if len(self.summary) else []
        self.metrics = plots._order_metrics(metrics or self.config.get("metrics") or [])


# ------------------------------------------------------------------------------ figures

def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_html(uri: str, alt: str, caption: str = "", cls: str = "") -> str:
    cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
    return (f'<figure class="{cls}"><img src="{uri}" alt="{_esc(alt)}">{cap}</figure>'
            if cls else f'<figure><img src="{uri}" alt="{_esc(alt)}">{cap}</figure>')


def _run_figures(run: _Run, figures=None) -> dict:
    """The figures of :func:`xai_bench.outputs.plots.plot_run`, drawn by its own functions into a
    temporary directory (never into the run's ``plots/``, which ``xai-bench plot`` owns),
    as ``{file name: data URI}``. ``figures``: the PNG paths :func:`~xai_bench.outputs.plots.plot_run`
    has just written from this same run directory (``xai-bench run`` passes them), embedded
    as they are instead of drawn a second time."""
    if figures is not None:
        return {Path(p).name: _data_uri(Path(p).read_bytes()) for p in figures
                if str(p).endswith(".png")}
    out = {}
    with tempfile.TemporaryDirectory(prefix="xai_bench_report_") as tmp:
        tmp = Path(tmp)
        with plt.rc_context(plots._STYLE):
            paths = [plots.plot_fig6(run.tables["summary"], tmp, models=run.models,
                                     records=run.records),
                     plots.plot_curves(run.curves, tmp, run.tables["summary"],
                                       models=run.models),
                     plots.plot_agreement(run.tables["agreement"], tmp, models=run.models,
                                          summary=run.tables["summary"]),
                     *plots.plot_grid_examples(run.examples, run.info, tmp)]
        for path in paths:
            out[path.name] = _data_uri(path.read_bytes())
    return out


# ------------------------------------------------------------------------------ galleries

def _gallery(arrays: dict):
    """``(samples, None)`` from a cell's gallery arrays, or ``(None, why)`` when they are
    inconsistent (the page then says so instead of drawing something misleading)."""
    try:
        images = np.asarray(arrays["gallery_images"], np.float32)
        maps = np.asarray(arrays["gallery_maps"], np.float32)
        scores = np.asarray(arrays["gallery_scores"], np.float64).reshape(-1)
        best = np.asarray(arrays["gallery_best"]).reshape(-1).astype(bool)
        n = len(scores)
        if images.ndim != 4 or images.shape[1] != 3 or len(images) != n:
            return None, f"gallery_images has shape {images.shape}, expected ({n}, 3, H, W)"
        if maps.ndim != 3 or len(maps) != n:
            return None, f"gallery_maps has shape {maps.shape}, expected ({n}, H, W)"
        if len(best) != n:
            return None, f"gallery_best has {len(best)} entries for {n} scores"

        def optional(name, default):
            value = arrays.get(name)
            if value is None:
                return default
            value = np.asarray(value).reshape(-1).astype(np.int64)
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} scores")
            return value

        targets = optional("gallery_targets", np.full(n, -1, np.int64))
        cells = optional("gallery_cells", np.full(n, -1, np.int64))
        grids = optional("gallery_grids", np.full(n, -1, np.int64))
        colour = arrays.get("gallery_colour")
        if colour is not None:
            colour = np.asarray(colour, np.float32)
            if colour.ndim != 4 or len(colour) != n or colour.shape[-1] not in (3, 4):
                return None, f"gallery_colour has shape {colour.shape}, expected ({n}, H, W, 4)"
    except (ValueError, TypeError) as e:
        return None, " ".join(str(e).split())
    samples = [dict(image=images[i], map=maps[i], score=float(scores[i]), best=bool(best[i]),
                    target=int(targets[i]), cell=int(cells[i]), grid=int(grids[i]),
                    colour=None if colour is None else colour[i]) for i in range(n)]
    return samples, None


def _class_name(target: int, classes: list) -> str:
    return classes[target] if 0 <= target < len(classes) else (str(target) if target >= 0
                                                                else "?")


def _gallery_png(label: str, method: str, samples: list, classes: list) -> bytes:
    """One PNG per (model, method): the best-scoring cells on the first line, the worst on the
    second; per sample the grid image with the explained cell outlined, the method's map
    (blue-white-red, symmetric at the 99.9th percentile of |map|, as in Fig. 7) and, for B-cos
    models, the colour image of W(x) on black (as the B-cos papers show it). Above each
    sample its score and explained class. Composed as one pixel array (every panel
    ``GALLERY_SIDE`` pixels a side, enlarged nearest-neighbour: the data's own pixels) and
    written with Pillow: no matplotlib figure."""
    lines = [("best", [s for s in samples if s["best"]]),
             ("worst", [s for s in samples if not s["best"]])]
    lines = [(name, group) for name, group in lines if group]
    per = 3 if any(s["colour"] is not None for s in samples) else 2
    k_max = max(len(group) for _, group in lines)
    side, gap, sample_gap, margin, label_w = GALLERY_SIDE, 3, 14, 6, 16
    small, title_size = 10, 12
    head_h = 2 * (small + 2) + 3  # two caption lines over each sample's panels
    title_h = title_size + 8
    sample_w = per * side + (per - 1) * gap
    width = margin + label_w + k_max * sample_w + (k_max - 1) * sample_gap + margin
    height = margin + title_h + len(lines) * (head_h + side) + (len(lines) - 1) * 8 + margin
    canvas = plots._Canvas(width, height)
    canvas.text(width / 2, margin, f"{label} · {method}: best and worst grid cells",
                title_size, anchor="ma")
    font = plots._font(small)
    y = margin + title_h
    for name, group in lines:
        py = y + head_h
        canvas.text(margin + label_w / 2, py + side / 2, name, small + 1, rotate=True)
        for k, s in enumerate(group):
            x = margin + label_w + k * (sample_w + sample_gap)
            image = plots._to_uint8(s["image"].transpose(1, 2, 0))
            canvas.paste(plots._panel(image, side, s["cell"]), x, py, box=side)
            m = np.nan_to_num(s["map"])
            v = float(np.percentile(np.abs(m), 99.9)) if m.size else 1.0
            canvas.paste(plots._panel(plots._map_rgb(m, v or 1.0), side), x + side + gap, py,
                         box=side)
            heads = [f"{s['score']:.3f}\n"
                     + plots._fit_text(_class_name(s["target"], classes), font, side + gap),
                     "map", "W(x) colour"]
            if per == 3:
                colour = np.zeros((side, side, 3), np.uint8)  # on black
                if s["colour"] is not None:
                    c = np.clip(np.nan_to_num(np.asarray(s["colour"], np.float32)), 0, 1)
                    rgb = c[..., :3] * c[..., 3:4] if c.shape[-1] == 4 else c
                    colour = plots._panel(plots._to_uint8(rgb), side)
                canvas.paste(colour, x + 2 * (side + gap), py, box=side)
            for j in range(per):
                text = heads[j]
                canvas.text(x + j * (side + gap) + side / 2,
                            py - 3 - (small + 2) * (text.count("\n") + 1), text, small)
        y += head_h + side + 8
    return canvas.png()


def _galleries_html(run: _Run) -> str:
    metric = plots.GRID_METRIC
    cells = {(mo, me): ex for (mo, me, mt), ex in run.examples.items()
             if mt == metric and any(k.startswith("gallery_") for k in ex)}
    head = "<h3 id=\"galleries\">Best and worst grid cells per method</h3>"
    if not cells:
        return head + ("<p class=\"note\">No per-sample gallery: this run's examples.npz holds "
                       "no gallery arrays (a run made before they were kept, or a run without "
                       f"the {metric}).</p>")
    hib = plots._higher_is_better(metric, run.summary, run.records)
    labels = list(dict.fromkeys([*(run.info.get("models") or {}), *(m for m, _ in cells)]))
    methods = run.config.get("methods") or []
    order = [(mo, me) for mo in labels
             for me in [x for x in methods if (mo, x) in cells]
             + plots._order_methods({x for m, x in cells if m == mo} - set(methods))]
    parts = [head, f"<p>For each (model, method), the cells of the {_esc(metric)} where the "
             f"method's share of positive attribution in the explained cell was "
             f"{'highest' if hib else 'lowest'} (best) and {'lowest' if hib else 'highest'} "
             f"(worst). Per sample: the 2×2 grid with the explained cell outlined in yellow, "
             f"the map (blue negative, red positive, each on its own symmetric scale) and, on "
             f"B-cos models, the colour image of the dynamic linear weights W(x) for the "
             f"explained class. Titles: the score and the explained class.</p>"]
    parts.append('<div class="galleries">')  # side by side where the screen is wide enough
    for label, method in order:
        missing = [k for k in GALLERY_REQUIRED if k not in cells[label, method]]
        samples, why = (None, f"it lacks {', '.join(missing)}") if missing else \
            _gallery(cells[label, method])
        title = f"{label} · {method}"
        if samples is None:
            parts.append(f'<p class="note">{_esc(title)}: the gallery cannot be shown '
                         f'({_esc(why)}).</p>')
            continue
        if not samples:
            parts.append(f'<p class="note">{_esc(title)}: no samples in the gallery.</p>')
            continue
        uri = _data_uri(_gallery_png(label, method, samples, run.classes))

        def listing(group):
            return ", ".join(f"{s['score']:.3f} ({_class_name(s['target'], run.classes)})"
                             for s in group) or DASH

        best = listing([s for s in samples if s["best"]])
        worst = listing([s for s in samples if not s["best"]])
        # the scores also as text: searchable, readable by screen readers and in the DOM
        caption = f"**{title}** — best: {best}; worst: {worst}"
        parts.append(f'<div class="gallery" id="gallery-{_slug(label)}-{_slug(method)}">'
                     + _figure_html(uri, f"gallery of {title}: best {best}; worst {worst}",
                                    caption, cls="thumbs") + "</div>")
    parts.append("</div>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------ sections

def _fmt_number(value, digits: int = 4) -> str:
    if value is None or isinstance(value, bool):
        return DASH if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", " ")
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return DASH if not np.isfinite(v) else f"{v:.{digits}f}"


def _title_html(run: _Run, figures: dict) -> str:
    cfg, info = run.config, run.info
    name = cfg.get("name") or run.dir.name
    dataset = (info.get("dataset") or {}).get("name") or cfg.get("dataset") or DASH
    stamp = (info.get("provenance") or {}).get("timestamp_utc") or ""
    date = stamp.replace("T", " ").replace("+00:00", " UTC") if stamp else "date unknown"
    counts = info.get("counts") or (run.records["status"].astype(str).value_counts().to_dict()
                                    if len(run.records) else {})
    # the methods the run resolved ("all" or a glob in the config names several)
    methods = set(run.records["method"].astype(str)) if len(run.records) else \
        set(cfg.get("methods") or [])
    facts = [f"data set <b>{_esc(dataset)}</b>", _esc(date),
             f"{len(run.models)} model{'s' * (len(run.models) != 1)}",
             f"{len(methods)} method{'s' * (len(methods) != 1)}",
             f"{len(run.metrics)} metric{'s' * (len(run.metrics) != 1)}",
             f"seed {_esc(plots._run_seed(info))}"]
    status = ", ".join(f"{int(v)} {_esc(k)}" for k, v in sorted(counts.items())) or "none"
    return (f"<header><h1>xai-bench report: run <code>{_esc(name)}</code></h1>"
            f"<p class=\"facts\">{' · '.join(facts)}</p>"
            f"<p class=\"facts\">records: {status}"
            + (" — see <a href=\"#not-scored\">not scored</a>" if any(
                k != "ok" and v for k, v in counts.items()) else "") + "</p></header>")


_NAV = [("answer", "The answer"), ("metrics", "Metrics"), ("models", "Models"),
        ("examples", "Examples"), ("curves", "Perturbation curves"),
        ("sanity", "Sanity checks"), ("agreement", "Metric agreement"),
        ("replicates", "Replicates"), ("provenance", "Provenance")]


def _nav_html(run: _Run, sections: dict) -> str:
    items = [(a, t) for a, t in _NAV if a != "replicates" or "Replicates" in sections]
    return ("<nav><ol>" + "".join(f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t in items)
            + "</ol></nav>")


def _verdict(row: dict) -> str:
    """The verdict of one row of ``best.csv`` in the words of summary.md."""
    if row.get("verdict") == "best":
        return f"significantly ahead of {row.get('runner_up') or DASH}"
    if row.get("verdict") == "single":
        return "the only method scored"
    tied = [t.strip() for t in str(row.get("tied") or "").split(",") if t.strip()]
    return f"tie between {', '.join(tied)}" if tied else str(row.get("verdict") or DASH)


def _best_rows(run: _Run) -> list:
    from xai_bench.analysis.statistics import format_interval

    best, ranks, s = run.tables.get("best"), run.tables.get("ranks"), run.summary
    if best is None or not len(best):
        return []
    best = best[best["replicate"] == run.base]
    rows = []
    order = {m: i for i, m in enumerate(run.models)}
    morder = {m: i for i, m in enumerate(run.metrics)}
    for row in sorted(best.to_dict("records"),
                      key=lambda r: (order.get(r["model"], 99), morder.get(r["metric"], 99))):
        model, metric, method = str(row["model"]), str(row["metric"]), str(row["best"])
        hit = s[(s["model"] == model) & (s["metric"] == metric) & (s["method"] == method)
                & (s["replicate"] == run.base)] if len(s) else s
        if len(hit):
            h = hit.iloc[0]
            mean = format_interval(h["mean"], h["ci_low"], h["ci_high"])
            n = str(int(h["n"]))
        else:  # best.csv carries the same interval
            mean = format_interval(row.get("best_mean"), row.get("best_ci_low"),
                                   row.get("best_ci_high"))
            n = DASH
        group = DASH
        if ranks is not None and len(ranks):
            g = ranks[(ranks["model"] == model) & (ranks["metric"] == metric)
                      & (ranks["method"] == method) & (ranks["replicate"] == run.base)]
            if len(g) and str(g.iloc[0]["group"]):
                group = str(g.iloc[0]["group"])
        direction = "↑" if plots._higher_is_better(metric, s, run.records) else "↓"
        # in a tie the method is only the one with the highest mean: say so where it stands
        shown = plots._label(method) + (" (tie)" if row.get("verdict") == "tie" else "")
        rows.append([model, f"{metric} {direction}", shown, mean, n, group, _verdict(row)])
    return rows


def _answer_html(run: _Run, sections: dict, preamble: list) -> str:
    parts = ['<section id="answer"><h2>The answer</h2>']
    if run.tables.get("computed"):
        parts.append('<p class="note">The statistics tables were not in the run directory '
                     '(an older run): they were computed now from records.csv.</p>')
    parts.append("<h3>The paper's claims</h3>")
    parts.append(markdown_html(sections.get("The paper's claims", ["No claims were evaluated."])))
    parts.append("<h3>Best method per model and metric</h3>")
    rows = _best_rows(run)
    if rows:
        parts.append("<p>From best.csv" + (f" (replicate {run.base})" if run.base else "")
                     + ": a method is named best only when it is significantly ahead of the "
                       "runner-up (paired test, Holm-corrected); otherwise the methods that "
                       "tie with the highest mean are listed. ↑ / ↓: higher / lower is "
                       "better; group: the method's rank group (a = the best group).</p>")
        parts.append(_html_table(["model", "metric", "best method", "mean [95 % CI]", "n",
                                  "group", "verdict"], rows, cls="answer"))
    else:
        parts.append("<p>No scored results: every cell was skipped or ended in an error "
                     "(see <a href=\"#not-scored\">not scored</a>).</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _description(metric: str) -> str:
    """The registry's one sentence about ``metric``; a metric from a plugin that is not
    installed here (or fails to load) has none."""
    from xai_bench.registry import METRICS

    try:
        text = METRICS.description(metric)
    except XaiBenchError:
        return ""
    return "" if text.startswith("FAILED TO LOAD") or text == "(no description)" else text


def _metrics_html(run: _Run, sections: dict, preamble: list, figures: dict) -> str:
    parts = ['<section id="metrics"><h2>Metrics</h2>']
    how = next((line for line in preamble if line.startswith("How to read")), None)
    if how:
        parts.append(markdown_html(how))
    if plots.FIG6 in figures:
        parts.append(_figure_html(figures[plots.FIG6], "Fig. 6: each method on each metric",
                                  "Fig. 6: each method's mean with its 95 % bootstrap interval, "
                                  "per model and metric."))
    titles = {t.split(" (")[0]: t for t in sections}
    agnostic = False
    for metric in run.metrics:
        hib = plots._higher_is_better(metric, run.summary, run.records)
        category = plots._category(metric, run.summary, run.records)
        text = _description(metric)
        sentence = (f"{text[0].upper() + text[1:]}" if text else
                    f"{metric} is not a registered metric here (a plugin?): no description")
        sentence = sentence.rstrip(". ") + f". {'Higher' if hib else 'Lower'} is better."
        parts.append(f'<section class="metric" id="metric-{_slug(metric)}">'
                     f"<h3>{_esc(metric)}" + (f' <span class="cat">{_esc(category)}</span>'
                                               if category else "") + "</h3>")
        parts.append(f'<p class="what">{_esc(sentence)}</p>')
        body = sections.get(titles.get(metric, ""), None)
        if body is None:
            parts.append("<p>No scored results: every cell of this metric was skipped or ended "
                         "in an error (see <a href=\"#not-scored\">not scored</a>).</p>")
        else:
            note = plots.AGNOSTIC_NOTE + "."
            agnostic = agnostic or note in body
            parts.append(markdown_html([line for line in body if line != note]))
        parts.append("</section>")
    if agnostic:
        parts.append(f"<p class=\"note\">{_esc(plots.AGNOSTIC_NOTE)}.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _models_html(run: _Run) -> str:
    from xai_bench.storage.identity import file_sha256

    infos = run.info.get("models") or {}
    parts = ['<section id="models"><h2>Models</h2>']
    if not infos:
        parts.append("<p>run.json lists no models.</p></section>")
        return "\n".join(parts)
    rows, notes = [], []
    for label, m in infos.items():
        m = m if isinstance(m, dict) else {}
        ckpt = m.get("checkpoint")
        sha = m.get("checkpoint_sha256")
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
        recipe = m.get("recipe_name") or (m["recipe"].get("name")
                                          if isinstance(m.get("recipe"), dict) else None)
        rows.append([label, m.get("family") or DASH, _fmt_number(m.get("parameters")),
                     _fmt_number(m.get("test_accuracy")), recipe or DASH,
                     m.get("trained_on") or DASH,
                     DASH if m.get("shipped") is None else ("yes" if m["shipped"] else "no"),
                     where, sha or DASH])
        if m.get("error"):
            notes.append(f"{label}: {m['error']}")
    parts.append(_html_table(["model", "family", "parameters", "test accuracy", "recipe",
                              "trained on", "shipped", "checkpoint", "checkpoint sha256"],
                             rows, cls="models"))
    for note in notes:
        parts.append(f'<p class="note">{_esc(note)}</p>')
    details = []
    for label, m in infos.items():
        m = m if isinstance(m, dict) else {}
        extra = {k: m[k] for k in ("config", "recipe", "capabilities", "image_size",
                                   "num_classes", "replicate") if m.get(k) not in (None, {}, [])}
        if extra:
            details.append(f"<details><summary>{_esc(label)}: constructor arguments, recipe, "
                           f"capabilities</summary><pre>{_esc(json.dumps(extra, indent=1, default=str))}"
                           f"</pre></details>")
    parts += details
    parts.append("</section>")
    return "\n".join(parts)


def _examples_html(run: _Run, figures: dict) -> str:
    parts = ['<section id="examples"><h2>Examples</h2>', "<h3>Fig. 7: one grid explained</h3>"]
    fig7 = [(name, uri) for name, uri in figures.items() if name.startswith("fig7_grid_")]
    if fig7:
        parts.append("<p>The first 2×2 grid of the grid pointing game, explained for each of "
                     "its four classes (rows) by every method (columns); the explained cell "
                     "is outlined.</p>")
        for name, uri in fig7:
            parts.append(_figure_html(uri, f"Fig. 7 {name[len('fig7_grid_'):-4]}"))
    else:
        parts.append(f"<p class=\"note\">No example grid: the run has no scored "
                     f"{_esc(plots.GRID_METRIC)} cell.</p>")
    parts.append(_galleries_html(run))
    parts.append("</section>")
    return "\n".join(parts)


def _body(sections: dict, title: str, fallback: str) -> str:
    body = sections.get(title)
    return markdown_html(body) if body is not None else f"<p>{_esc(fallback)}</p>"


def _later_html(run: _Run, sections: dict, figures: dict) -> str:
    parts = ['<section id="curves"><h2>Perturbation curves</h2>']
    if plots.CURVES in figures:
        parts.append(_figure_html(figures[plots.CURVES], "pixel perturbation curves"))
    parts.append("</section>")
    parts.append('<section id="sanity"><h2>Sanity checks</h2>')
    parts.append(_body(sections, "Sanity checks", "No sanity checks."))
    parts.append("</section>")
    parts.append('<section id="agreement"><h2>Metric agreement</h2>')
    parts.append(_body(sections, "Metric agreement", "No metric agreement."))
    if plots.AGREEMENT in figures:
        parts.append(_figure_html(figures[plots.AGREEMENT], "metric agreement"))
    parts.append("</section>")
    if "Replicates" in sections:
        parts.append('<section id="replicates"><h2>Replicates</h2>')
        parts.append(markdown_html(sections["Replicates"]))
        parts.append("</section>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------ provenance

def _arg_value(value) -> str:
    """A parameter value as ``--method-arg``/``--metric-arg`` parse it back (see
    ``xai_bench.cli._parse_value``): true/false, none, comma lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_arg_value(v) for v in value)
    if isinstance(value, dict):  # not expressible on the command line: shown, not parsable
        return json.dumps(value, sort_keys=True)
    return str(value)


def reproduce_command(info: dict) -> tuple[str, list]:
    """``(command, caveats)``: the ``xai-bench run`` command line that reproduces the run of
    ``info`` (run.json), rebuilt from its configuration (``info["command"]`` where the run
    recorded its own), and what it cannot reproduce."""
    if info.get("command"):
        command = info["command"]
        return (shlex.join(map(str, command)) if isinstance(command, (list, tuple))
                else str(command)), []
    cfg = info.get("config") or {}
    caveats = []
    args = [["xai-bench", "run"]]

    def option(flag, value):
        if value is not None and value != [] and value != "":
            args.append([flag, str(value)])

    def names(key):
        value = cfg.get(key)
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value

    option("--models", names("models"))
    option("--methods", names("methods"))
    option("--metric", names("metrics"))
    option("--dataset", cfg.get("dataset"))
    for key, flag in (("n_grids", "--n-grids"), ("n_images", "--n-images"), ("seed", "--seed"),
                      ("batch_size", "--batch-size")):
        option(flag, cfg.get(key))
    option("--replicates", cfg.get("replicates", 1))
    option("--device", cfg.get("device"))
    for model, path in (cfg.get("checkpoints") or {}).items():
        option("--checkpoint", f"{model}={path}")
    for flag, key in (("--method-arg", "method_params"), ("--metric-arg", "metric_params")):
        for name, params in (cfg.get(key) or {}).items():
            for k, v in (params or {}).items():
                if isinstance(v, dict):
                    caveats.append(f"{flag} {name}.{k}: a nested value cannot be given on the "
                                   f"command line")
                option(flag, f"{name}.{k}={_arg_value(v)}")
    if cfg.get("untrained"):
        args.append(["--untrained"])
    option("--precision", cfg.get("precision"))
    if cfg.get("compile"):
        args.append(["--compile"])
    option("--epochs", cfg.get("train_epochs"))
    option("--out", cfg.get("out"))
    option("--name", cfg.get("name"))
    objects = [label for label, m in (info.get("models") or {}).items()
               if isinstance(m, dict) and m.get("object")]
    if objects:
        caveats.append(f"{', '.join(objects)} were passed to xai_bench.evaluate as model "
                       f"objects: this command loads the registered models of those names "
                       f"instead (give their checkpoints with --checkpoint MODEL=PATH)")
    local = [name for name, p in (info.get("plugins") or {}).items()
             if isinstance(p, dict) and not p.get("distribution")]
    if local:
        caveats.append(f"{', '.join(local)} came from code that is not an installed plugin "
                       f"(a script or notebook): the command finds them only where they are "
                       f"registered")
    # "all", a glob or a category resolves to what is installed when the command runs: name
    # what it resolved to in this run, so that a reader can pin it
    for key, flag, resolved in (("methods", "--methods", "method_params"),
                                ("metrics", "--metric", "metric_params")):
        given = [str(v) for v in (cfg.get(key) or [])]
        names = list(info.get(resolved) or {})
        if names and sorted(given) != sorted(names):
            caveats.append(f"{flag} {','.join(given)} resolved to {','.join(names)} in this run")
    if cfg.get("out") is None:
        caveats.append("the run was kept in memory (out=None): add --out to write it")
    text = " \\\n  ".join(" ".join(shlex.quote(a) for a in group) for group in args)
    return text, caveats


def _kv_table(mapping: dict, header=("key", "value")) -> str:
    rows = [[k, DASH if v is None else (json.dumps(v, default=str, sort_keys=True)
                                        if isinstance(v, (dict, list)) else v)]
            for k, v in mapping.items()]
    return _html_table(list(header), rows, sortable=False, cls="kv")


def _timing_rows(run: _Run) -> list:
    cells = ((run.info.get("timings") or {}).get("cells") or {})
    labels = sorted(set(run.info.get("models") or {}) | set(run.models), key=len, reverse=True)
    metrics = sorted(set(run.metrics) | set(run.config.get("metrics") or []), key=len,
                     reverse=True)
    rows = []
    for key, t in cells.items():
        t = t if isinstance(t, dict) else {}
        # cell keys are MODEL__METHOD__METRIC; known names first, as a method may hold "__"
        model = next((m for m in labels if key.startswith(m + "__")), None)
        metric = next((m for m in metrics if key.endswith("__" + m)), None)
        if model and metric and len(key) > len(model) + len(metric) + 4:
            method = key[len(model) + 2:-(len(metric) + 2)]
        else:
            parts = key.split("__")
            model, method, metric = (parts + ["", "", ""])[:3] if len(parts) == 3 \
                else (key, "", "")
        rows.append([model, method, metric, _fmt_number(t.get("time_s"), 3),
                     _fmt_number(t.get("prepare_time_s"), 3)])
    return rows


def _not_scored_rows(records: pd.DataFrame) -> list:
    if not len(records):
        return []
    bad = records[records["status"].astype(str) != "ok"]
    rows = []
    has_rep = "replicate" in bad
    keys = ["model", "method", "metric", "status"] + (["replicate"] if has_rep else [])
    for key, g in bad.groupby(keys, sort=False, dropna=False):
        messages = list(dict.fromkeys(str(m) for m in g["message"] if str(m)))
        rep = "" if not has_rep or pd.isna(key[4]) else str(int(key[4]))
        rows.append([*map(str, key[:4]), rep, len(g), " / ".join(messages) or DASH])
    return rows


def _provenance_html(run: _Run) -> str:
    info = run.info
    parts = ['<section id="provenance"><h2>Provenance</h2>', "<h3>Reproduce</h3>"]
    command, caveats = reproduce_command(info)
    parts.append(f'<pre class="command"><code>{_esc(command)}</code></pre>')
    for caveat in caveats:
        parts.append(f'<p class="note">Note: {_esc(caveat)}.</p>')
    prov = info.get("provenance") or {}
    parts.append("<h3>Versions, device, time</h3>")
    parts.append(_kv_table(prov) if prov else "<p>run.json records no provenance.</p>")
    parts.append("<h3>Seeds and parameters</h3>")
    parts.append(_kv_table(info.get("seeds") or {"seed": plots._run_seed(info)}))
    params = [[kind, name, json.dumps(p, default=str, sort_keys=True)]
              for kind, key in (("method", "method_params"), ("metric", "metric_params"))
              for name, p in (info.get(key) or {}).items()]
    if params:
        parts.append("<p>Parameters after defaults, as the cells used them:</p>")
        parts.append(_html_table(["kind", "name", "parameters"], params, sortable=False,
                                 cls="kv"))
    if info.get("plugins"):
        parts.append("<p>Plugins and methods defined outside xai-bench:</p>")
        parts.append(_kv_table(info["plugins"], header=("name", "from")))
    timings = info.get("timings") or {}
    parts.append('<h3 id="timings">Timings</h3>')
    words = {"last_invocation_wall_s": "wall time of the last invocation",
             "cells_total_s": "all cells together", "statistics_s": "statistics"}
    totals = [f"{_esc(words.get(k, k))}: {_esc(_fmt_number(v, 1))} s"
              for k, v in timings.items() if k != "cells"]
    if totals:
        parts.append("<p>" + "; ".join(totals) + ".</p>")
    rows = _timing_rows(run)
    if rows:
        parts.append("<p>Per cell (click a column head to sort): the time of the method and "
                     "metric, and the time the metric spent preparing its samples.</p>")
        parts.append(_html_table(["model", "method", "metric", "time (s)", "prepare (s)"],
                                 rows, cls="timings"))
    parts.append('<h3 id="not-scored">Not scored: skipped and errored cells</h3>')
    rows = _not_scored_rows(run.records)
    if rows:
        parts.append("<p>Skipped: the method does not apply to the model (or the metric to the "
                     "data); error: the method or metric raised or broke its contract. The "
                     "message is the one recorded in records.csv.</p>")
        parts.append(_html_table(["model", "method", "metric", "status", "replicate",
                                  "records", "message"], rows, cls="notscored"))
    else:
        parts.append("<p>Every cell was scored.</p>")
    parts.append("</section>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------ the page

_CSS = """
:root { --ink: #1d1f23; --muted: #5b616b; --rule: #d8dbe0; --head: #f1f3f6;
        --holds: #d7f0d8; --holds-ink: #14501e; --fails: #f8d5d3; --fails-ink: #7a1712;
        --inc: #fbefc6; --inc-ink: #5f4500; --best: #eef5ff; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1240px; padding: 0 1.5rem 3rem; color: var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; background: #fff; }
header { border-bottom: 2px solid var(--ink); margin-bottom: .5rem; }
h1 { font-size: 1.6rem; margin: 1.2rem 0 .3rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 .6rem; padding-bottom: .2rem;
     border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.08rem; margin: 1.4rem 0 .4rem; }
.facts { color: var(--muted); margin: .2rem 0 .6rem; }
nav ol { display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; list-style: none; padding: 0;
         margin: .4rem 0 1rem; font-size: .92rem; }
a { color: #0b57a4; }
p { max-width: 62rem; }
.note { color: var(--muted); font-style: italic; }
.what { margin-top: 0; }
.cat { font-size: .8rem; font-weight: normal; color: var(--muted); border: 1px solid var(--rule);
       border-radius: 3px; padding: 0 .3rem; margin-left: .3rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
            monospace; font-size: .88em; }
pre { background: var(--head); padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap;
      word-break: break-all; max-width: 100%; }
.tablewrap { overflow-x: auto; margin: .4rem 0 .8rem; max-width: 100%; }
table { border-collapse: collapse; font-size: .86rem; }
th, td { border: 1px solid var(--rule); padding: .22rem .5rem; text-align: left;
         vertical-align: top; }
th { background: var(--head); font-weight: 600; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #9aa0a8; font-size: .8em; }
table.sortable th[aria-sort=ascending]::after { content: " \\2191"; color: var(--ink); }
table.sortable th[aria-sort=descending]::after { content: " \\2193"; color: var(--ink); }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.best { background: var(--best) !important; }
td.outcome { font-weight: 600; text-align: center; }
td.outcome.holds { background: var(--holds) !important; color: var(--holds-ink); }
td.outcome.fails { background: var(--fails) !important; color: var(--fails-ink); }
td.outcome.inconclusive { background: var(--inc) !important; color: var(--inc-ink); }
.grp { display: inline-block; min-width: 1.1em; padding: 0 .25em; border-radius: 3px;
       background: #e4e7ec; color: #333; font-size: .8em; text-align: center; }
table.models td:nth-last-child(-n+2), table.kv td { word-break: break-all; }
table.kv td:first-child { white-space: nowrap; font-weight: 600; }
figure { margin: .6rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
.galleries { display: flex; flex-wrap: wrap; gap: 0 1.2rem; align-items: flex-start; }
.gallery { max-width: 100%; }
.gallery figure { margin: .3rem 0 .9rem; }
.gallery figcaption { max-width: 36rem; }
.galleries > .note { flex-basis: 100%; }
figure.thumbs img { image-rendering: pixelated; }
figcaption { font-size: .85rem; color: var(--muted); margin-top: .2rem; }
details { margin: .3rem 0; }
details pre { max-height: 22rem; overflow: auto; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav, table.sortable th::after { display: none; }
  .tablewrap { overflow: visible; }
  table { font-size: 8pt; }
  h2 { break-after: avoid; page-break-after: avoid; }
  figure, tr { break-inside: avoid; page-break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
  td.outcome, td.best, .grp { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

# Sorting: numbers (the leading number of "0.427 [0.39, 0.46] a") before words, and empty or
# "—" cells always last, whichever the direction. Print expands every <details>.
_JS = """
(function () {
  function key(row, i) {
    var c = row.cells[i], t = c ? c.textContent.trim() : "";
    var m = t.replace("\\u2212", "-").match(/^[-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?/i);
    if (m) return [0, parseFloat(m[0])];
    return [(t === "" || t === "\\u2014") ? 2 : 1, t.toLowerCase()];
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, i) {
      th.title = "click to sort";
      th.addEventListener("click", function () {
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a, i), y = key(b, i);
          if (x[0] !== y[0]) return x[0] - y[0];
          var c = x[1] < y[1] ? -1 : (x[1] > y[1] ? 1 : 0);
          return x[0] === 2 ? 0 : (up ? c : -c);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  });
})();
"""


def report_html(run_dir, figures=None) -> str:
    """The report of one run directory as one self-contained HTML page (see the module
    docstring). A directory that is not a readable run raises a one-line
    :class:`~xai_bench.storage.results.ResultsError`. ``figures``: see :func:`_run_figures`."""
    run = _Run(run_dir)
    preamble, sections = _sections(run.markdown)
    figures = _run_figures(run, figures)
    name = run.config.get("name") or run.dir.name
    body = [_title_html(run, figures), _nav_html(run, sections), "<main>",
            _answer_html(run, sections, preamble),
            _metrics_html(run, sections, preamble, figures),
            _models_html(run), _examples_html(run, figures),
            _later_html(run, sections, figures), _provenance_html(run), "</main>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>xai-bench report: {_esc(name)}</title>\n<style>{_CSS}</style>\n</head>\n"
            "<body>\n" + "\n".join(body) + f"\n<script>{_JS}</script>\n</body>\n</html>\n")


def write_report(run_dir, out=None, figures=None) -> Path:
    """Write :func:`report_html` of ``run_dir`` to ``out`` (a file, or a directory to hold
    ``report.html``; default ``RUN_DIR/report.html``) atomically; returns its path. The page
    is built completely (every input read and checked) before the file is written, so a bad
    run directory leaves no file, and a failed write leaves the old one."""
    page = report_html(run_dir, figures)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    if path.is_dir():
        path = path / REPORT
    return atomic_io.write_text(path, page)
