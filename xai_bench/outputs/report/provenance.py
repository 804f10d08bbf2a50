"""The report's provenance section: the command that reproduces the run, versions, seeds,
parameters, per-cell timings and every cell that was skipped or ended in an error, with its
message. The long parts (versions, parameters, per-cell timings, the skipped cells) are
collapsed; errors stay in view."""

from __future__ import annotations

import json

import pandas as pd

from xai_bench.outputs.report.html import (
    DASH, collapsed, esc, fmt_number, html_table, kv_table,
)
from xai_bench.run.config import reproduce_command

__all__ = ["provenance_html", "timing_rows", "not_scored_rows"]


def timing_rows(run) -> list:
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
        rows.append([model, method, metric, fmt_number(t.get("time_s"), 3),
                     fmt_number(t.get("prepare_time_s"), 3)])
    return rows


def not_scored_rows(records: pd.DataFrame) -> list:
    """Per (model, method, metric, status, replicate): the records and every message (the
    summary's "Not scored" groups coarser; here every cell is listed)."""
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


def provenance_html(run) -> str:
    info = run.info
    parts = ['<section id="provenance"><h2>Provenance</h2>', "<h3>Reproduce</h3>"]
    command, caveats = reproduce_command(info)
    parts.append(f'<pre class="command"><code>{esc(command)}</code></pre>')
    parts += [f'<p class="note">Note: {esc(caveat)}.</p>' for caveat in caveats]
    prov = info.get("provenance") or {}
    parts.append("<h3>Versions, device, time</h3>")
    parts.append(collapsed(f"{len(prov)} entries: versions, device, git commit, time",
                           kv_table(prov)) if prov
                 else "<p>run.json records no provenance.</p>")
    parts.append("<h3>Seeds and parameters</h3>")
    seeds = kv_table(info.get("seeds") or {"seed": run.summary.seed})
    params = [[kind, name, json.dumps(p, default=str, sort_keys=True)]
              for kind, key in (("method", "method_params"), ("metric", "metric_params"))
              for name, p in (info.get(key) or {}).items()]
    if params:
        seeds += ("<p>Parameters after defaults, as the cells used them:</p>"
                  + html_table(["kind", "name", "parameters"], params, sortable=False,
                               cls="kv"))
    parts.append(collapsed(f"the seeds and the parameters of {len(params)} methods and "
                           f"metrics", seeds))
    if info.get("plugins"):
        parts.append("<p>Plugins and methods defined outside xai-bench:</p>")
        parts.append(kv_table(info["plugins"], header=("name", "from")))
    timings = info.get("timings") or {}
    parts.append('<h3 id="timings">Timings</h3>')
    words = {"last_invocation_wall_s": "wall time of the last invocation",
             "cells_total_s": "all cells together", "statistics_s": "statistics"}
    totals = [f"{esc(words.get(k, k))}: {esc(fmt_number(v, 1))} s"
              for k, v in timings.items() if k != "cells"]
    if totals:
        parts.append("<p>" + "; ".join(totals) + ".</p>")
    rows = timing_rows(run)
    if rows:
        parts.append(collapsed(
            f"Per cell: {len(rows)} cells (click a column head to sort)",
            "<p>The time of the method and metric, and the time the metric spent preparing "
            "its samples.</p>" + html_table(["model", "method", "metric", "time (s)",
                                              "prepare (s)"], rows, cls="timings"),
            cls="timings"))
    parts.append('<h3 id="not-scored">Not scored: skipped and errored cells</h3>')
    rows = not_scored_rows(run.records)
    if rows:
        head = ["model", "method", "metric", "status", "replicate", "records", "message"]
        errors = [r for r in rows if r[3] == "error"]
        others = [r for r in rows if r[3] != "error"]
        parts.append("<p>Skipped: the method does not apply to the model (or the metric to the "
                     "data); error: the method or metric raised or broke its contract. The "
                     "message is the one recorded in records.csv.</p>")
        if errors:  # a fault to fix: in view
            parts.append(html_table(head, errors, cls="notscored errors"))
        if others:  # expected by construction (does not apply): one click away
            parts.append(collapsed(f"{len(others)} skipped cells (does not apply)",
                                   html_table(head, others, cls="notscored"),
                                   cls="skipped"))
    else:
        parts.append("<p>Every cell was scored.</p>")
    parts.append("</section>")
    return "\n".join(parts)
