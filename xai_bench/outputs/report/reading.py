"""Everything a report shows, read (and checked) before anything is drawn or written: the run
directory's records, curves, run.json, examples and statistics tables, the run's summary
(:mod:`xai_bench.outputs.summary`, built once) and its figures."""

from __future__ import annotations

import tempfile
from pathlib import Path

from xai_bench.outputs.plots import draw_figures
from xai_bench.outputs.presentation import Presentation
from xai_bench.outputs.report.html import data_uri
from xai_bench.outputs.run_inputs import read_run_inputs
from xai_bench.outputs.summary import build_summary

__all__ = ["ReportRun", "run_figures"]


class ReportRun:
    """One run directory as the report sees it."""

    def __init__(self, run_dir, inputs=None):
        # every input, checked, before anything is drawn (unless the caller has read them)
        inputs = inputs if inputs is not None else read_run_inputs(run_dir)
        self.dir, self.info, self.records = inputs.dir, inputs.info, inputs.records
        self.curves, self.examples, self.tables = inputs.curves, inputs.examples, inputs.tables
        self.presentation = Presentation.of_run(self.info)
        self.summary = build_summary(self.tables, self.records, self.info, self.presentation)
        self.models = self.summary.models
        self.metrics = self.summary.metrics
        self.config = self.info.get("config") or {}
        self.classes = list((self.info.get("dataset") or {}).get("classes") or [])


def run_figures(run: ReportRun, figures=None) -> dict:
    """The figures of :func:`xai_bench.outputs.plots.plot_run` as ``{file name: data URI}``:
    ``figures``, the PNG paths it has just written from this same run directory
    (``xai-bench run`` passes them), embedded as they are; else drawn now from what ``run``
    has read, into a temporary directory (never into the run's ``plots/``, which
    ``xai-bench plot`` owns)."""
    if figures is None:
        with tempfile.TemporaryDirectory(prefix="xai_bench_report_") as tmp:
            paths = draw_figures(Path(tmp), tables=run.tables, curves=run.curves,
                                 examples=run.examples, info=run.info, models=run.models,
                                 presentation=run.presentation)
            return {p.name: data_uri(p.read_bytes()) for p in paths if p.suffix == ".png"}
    return {Path(p).name: data_uri(Path(p).read_bytes()) for p in figures
            if str(p).endswith(".png")}
