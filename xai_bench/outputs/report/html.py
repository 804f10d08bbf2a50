"""HTML pieces of the report: escaping, tables (from the summary model's typed cells, or plain
rows), figures as ``data:`` URIs."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np

from xai_bench.outputs.summary import Cell, Section, Table

__all__ = ["esc", "slug", "DASH", "html_table", "model_table", "section_body", "data_uri",
           "figure_html", "fmt_number", "kv_table", "paragraphs", "collapsed"]

DASH = "—"


def esc(text) -> str:
    """``text`` safe inside HTML (elements and quoted attributes). The colon of ``://`` also
    becomes a character reference: it reads the same in the browser, but the page's source
    never holds a web address, so no tool (or reader) mistakes it for one that loads."""
    return html.escape(str(text), quote=True).replace("://", "&#58;//")


def slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


def _plain(text, tag: str) -> str:
    return f"<{tag}>{esc(text)}</{tag}>"


def html_table(header, rows, *, sortable=True, cell=None, cls="") -> str:
    """A table in a horizontally scrolling wrapper (wide tables never widen the page);
    ``cell(value, tag)`` renders one cell (default: escaped text)."""
    cell = cell or _plain
    classes = " ".join(c for c in ("sortable" if sortable and header else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    out = [f'<div class="tablewrap"><table{attr}>']
    if header:
        out.append("<thead><tr>" + "".join(_plain(h, "th") for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _model_cell(cell: Cell, tag: str) -> str:
    """A typed cell: an outcome coloured (the answer should be seen at a glance), the best
    mean marked, the rank group set apart."""
    cell = Cell.of(cell)
    classes = f"outcome {cell.outcome}" if cell.outcome else ("best" if cell.best else "")
    inner = esc(cell.value)
    if cell.group:
        inner += f' <span class="grp" title="rank group">{esc(cell.group)}</span>'
    cls = f' class="{classes}"' if classes else ""
    return f"<{tag}{cls}>{inner}</{tag}>"


def model_table(table: Table, *, cls: str = "") -> str:
    """A table of the summary model, sortable by its column heads."""
    return html_table(table.columns, table.rows, cell=_model_cell, cls=cls)


def paragraphs(texts, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return "".join(f"<p{attr}>{esc(t)}</p>" for t in texts)


def section_body(section: Section | None, fallback: str = "") -> str:
    """A section of the summary model: its intro, tables, verdicts and notes."""
    if section is None:
        return f"<p>{esc(fallback)}</p>" if fallback else ""
    parts = [paragraphs(section.intro)]
    parts += [model_table(t) for t in section.tables]
    if section.verdicts:
        parts.append("<ul class=\"verdicts\">" + "".join(
            f"<li>best on {esc(v.model)}: {esc(v.text)}</li>" for v in section.verdicts)
            + "</ul>")
    parts.append(paragraphs(section.notes))
    return "".join(p for p in parts if p)


def collapsed(summary: str, body: str, cls: str = "", *, summary_html: bool = False) -> str:
    """``body`` behind a one-line ``summary``, closed on load: a click opens it, and the
    page's script opens every one before printing (:mod:`.style`). ``summary_html``: the
    summary is already HTML."""
    attr = f' class="{cls}"' if cls else ""
    head = summary if summary_html else esc(summary)
    return f"<details{attr}><summary>{head}</summary>{body}</details>"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(uri: str, alt: str, caption: str = "", cls: str = "", lead: str = "") -> str:
    """A figure; ``lead``: the caption's first words, in bold."""
    cap = ""
    if caption or lead:
        cap = "<figcaption>" + (f"<strong>{esc(lead)}</strong>" if lead else "") \
            + esc(caption) + "</figcaption>"
    attr = f' class="{cls}"' if cls else ""
    return f'<figure{attr}><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def fmt_number(value, digits: int = 4) -> str:
    if value is None or isinstance(value, bool):
        return DASH if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", " ")
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return DASH if not np.isfinite(v) else f"{v:.{digits}f}"


def kv_table(mapping: dict, header=("key", "value")) -> str:
    rows = [[k, DASH if v is None else (json.dumps(v, default=str, sort_keys=True)
                                        if isinstance(v, (dict, list)) else v)]
            for k, v in mapping.items()]
    return html_table(list(header), rows, sortable=False, cls="kv")
