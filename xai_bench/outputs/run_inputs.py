"""Every input of ``xai-bench plot`` and ``xai-bench report``, read and checked before any
output is written: run.json (the fields the outputs use, with their types), records.csv,
curves.csv, examples.npz and the statistics tables (:mod:`xai_bench.storage.results`,
:func:`xai_bench.analysis.tables.read_statistics`). Checks that need the registry live here:
a metric in records.csv that neither run.json's declarations nor the registry know."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xai_bench.analysis.tables import read_statistics
from xai_bench.storage.results import (
    ResultsError, read_curves, read_examples, read_records, read_run_info,
)

__all__ = ["RunInputs", "read_run_inputs", "check_known_metrics"]


@dataclass
class RunInputs:
    """What a run directory holds, as the outputs read it."""

    dir: Path
    info: dict
    records: pd.DataFrame
    curves: pd.DataFrame
    examples: dict
    tables: dict


def check_known_metrics(records: pd.DataFrame, info: dict, path) -> None:
    """Every metric of ``records`` is declared in run.json or registered: an unknown one (a
    typo from an edit) would be drawn with made-up defaults."""
    from xai_bench.registry import METRICS

    declared = set(((info.get("declarations") or {}).get("metrics") or {}))
    for line, metric in enumerate(records["metric"], start=2):
        if str(metric) not in declared and str(metric) not in METRICS:
            raise ResultsError(f"{path} line {line}: metric '{metric}' is neither declared in "
                               f"run.json nor registered; correct that row or rerun the "
                               f"`xai-bench run` command that made it")


def read_run_inputs(run_dir) -> RunInputs:
    """Every input of a run directory's outputs, read and checked (run.json first: its
    message says best what a directory that is no run lacks); a problem is a one-line
    :class:`ResultsError` and nothing has been written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir} is not a directory: pass a run directory made by "
                           f"`xai-bench run` (it holds run.json and records.csv)")
    info = read_run_info(run_dir)
    records = read_records(run_dir)
    check_known_metrics(records, info, run_dir / "records.csv")
    curves = read_curves(run_dir)
    examples = read_examples(run_dir)
    tables = read_statistics(run_dir, records, info)
    return RunInputs(run_dir, info, records, curves, examples, tables)
