"""The report page: its sections in order, the inline style and script, written atomically."""

from __future__ import annotations

from pathlib import Path

from xai_bench.outputs.report.html import esc
from xai_bench.outputs.report.provenance import provenance_html
from xai_bench.outputs.report.reading import ReportRun, run_figures
from xai_bench.outputs.report.sections import (
    answer_html, claims_html, examples_html, later_html, metrics_html, models_html, nav_html,
    title_html,
)
from xai_bench.outputs.report.style import CSS, JS
from xai_bench.storage import atomic_io

__all__ = ["REPORT", "report_html", "write_report"]

REPORT = "report.html"


def report_html(run_dir, figures=None, *, inputs=None) -> str:
    """The report of one run directory as one self-contained HTML page (see the package
    docstring). A directory that is not a readable run raises a one-line
    :class:`~xai_bench.storage.results.ResultsError`. ``figures``: the PNGs that
    :func:`~xai_bench.outputs.plots.plot_run` has just written from this run (else they are
    drawn now). ``inputs``: the directory's already-read
    :class:`~xai_bench.outputs.run_inputs.RunInputs`, if the caller has them."""
    run = ReportRun(run_dir, inputs)
    figures = run_figures(run, figures)
    name = run.config.get("name") or run.dir.name
    body = [title_html(run), nav_html(run), "<main>", answer_html(run), claims_html(run),
            metrics_html(run, figures), models_html(run), examples_html(run, figures),
            later_html(run, figures), provenance_html(run), "</main>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>xai-bench report: {esc(name)}</title>\n<style>{CSS}</style>\n</head>\n"
            "<body>\n" + "\n".join(body) + f"\n<script>{JS}</script>\n</body>\n</html>\n")


def write_report(run_dir, out=None, figures=None, *, inputs=None) -> Path:
    """Write :func:`report_html` of ``run_dir`` to ``out`` (a file, or a directory to hold
    ``report.html``; default ``RUN_DIR/report.html``) atomically; returns its path. The page
    is built completely (every input read and checked) before the file is written, so a bad
    run directory leaves no file, and a failed write leaves the old one."""
    page = report_html(run_dir, figures, inputs=inputs)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    if path.is_dir():
        path = path / REPORT
    return atomic_io.write_text(path, page)
