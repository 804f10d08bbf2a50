"""Figures and the summary of one run directory, drawn from its tables alone.

:func:`plot_run` reads ``records.csv``, ``curves.csv``, ``run.json``, ``examples.npz`` and the
statistics tables the runner wrote (for an older run without them they are computed now, see
:func:`xai_bench.analysis.tables.read_statistics`), builds the run's
:class:`~xai_bench.outputs.presentation.Presentation` from what its methods and metrics
declare, and writes

- ``fig6.png``, ``curves.png``, ``agreement.png`` (:mod:`xai_bench.outputs.figures`);
- ``fig7_grid_<model>.png`` (:mod:`xai_bench.outputs.fig7`);
- ``summary.md`` (:mod:`xai_bench.outputs.markdown`).

Every method has one colour in every figure, the one it declares (else one derived from its
name). A figure with nothing to show is still written, saying why, so a plots folder never
keeps a stale figure.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xai_bench.outputs.fig7 import plot_grid_examples
from xai_bench.outputs.markdown import summary_markdown
from xai_bench.outputs.figures import (
    AGREEMENT, CURVES, FIG6, plot_agreement, plot_curves, plot_fig6,
)
from xai_bench.outputs.presentation import Presentation
from xai_bench.outputs.run_inputs import read_run_inputs
from xai_bench.outputs.summary import model_order
from xai_bench.storage import atomic_io

__all__ = ["plot_run", "draw_figures", "FIG6", "CURVES", "AGREEMENT", "SUMMARY"]

SUMMARY = "summary.md"


def draw_figures(out, *, tables: dict, curves: pd.DataFrame, examples: dict, info: dict,
                 models=None, presentation: Presentation | None = None) -> list[Path]:
    """Every figure of a run into ``out`` (an existing folder): Fig. 6, the curves, the
    metric agreement and Fig. 7; ``tables`` as :func:`read_statistics` returns them,
    ``presentation`` by default the run's (``Presentation.of_run(info)``)."""
    presentation = presentation or Presentation.of_run(info)
    summary = tables["summary"]
    return [plot_fig6(summary, out, presentation=presentation, models=models),
            plot_curves(curves, out, summary, presentation=presentation, models=models),
            plot_agreement(tables["agreement"], out, presentation=presentation, models=models),
            *plot_grid_examples(examples, info, out, presentation=presentation)]


def plot_run(run_dir, out=None, *, inputs=None) -> list[Path]:
    """Write every figure and the summary of one run directory (see the module docstring)
    into ``out`` (default ``RUN_DIR/plots``); returns the paths written. ``inputs``: the
    directory's :class:`~xai_bench.outputs.run_inputs.RunInputs` if the caller has read them
    already (else they are read here)."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "plots"
    # every input is read (and checked) before any output
    run = inputs if inputs is not None else read_run_inputs(run_dir)
    atomic_io.ensure_dir(out)
    written = draw_figures(out, tables=run.tables, curves=run.curves, examples=run.examples,
                           info=run.info, models=model_order(run.records, run.tables["summary"]),
                           presentation=Presentation.of_run(run.info))
    summary = atomic_io.write_text(out / SUMMARY,
                                   summary_markdown(run.records, run.info, run.tables))
    return written + [summary]
