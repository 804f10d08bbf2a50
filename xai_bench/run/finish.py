"""Finishing a run: the tidy tables, ``run.json``, the statistics and, for a run directory,
the figures and the report.

Every output is assembled from the committed cells, so a run that reused every cell writes the
same files as the one that computed them. :func:`xai_bench.evaluate` and ``xai-bench run`` both
finish here, so they write the same run directory: ``records.csv``, ``curves.csv``,
``examples.npz``, the statistics tables, ``run.json`` and, unless switched off, ``plots/``
(:func:`xai_bench.outputs.plots.plot_run`) and ``report.html``
(:func:`xai_bench.outputs.report.write_report`; without ``plots/`` it draws its figures into the
page only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from xai_bench.run.config import label_of
from xai_bench.run.identities import plugin_of
from xai_bench.run.plan import cell_key, info_key
from xai_bench.run.store import MemoryStore
from xai_bench.storage import atomic_io
from xai_bench.storage.results import curves_frame, records_frame

__all__ = ["Collected", "collect", "undefined_as_skipped", "declarations", "run_info",
           "write_tables", "write_figures", "summary_table"]


@dataclass
class Collected:
    """The rows of every cell of the run, as the tables hold them."""

    records: object                # pandas DataFrame (records_frame)
    curves: object                 # pandas DataFrame (curves_frame)
    examples: dict = field(default_factory=dict)   # "label/method/metric/name" -> array
    timings: dict = field(default_factory=dict)    # cell key -> its times and parameters
    models: dict = field(default_factory=dict)     # model label -> its info cell


def collect(specs, methods, metrics, cells: dict, store) -> Collected:
    """Records, curves, examples and timings of every cell, in (model, metric, method)
    order; ``cells``: key -> committed entry."""
    rows, curves, timings, examples = [], [], {}, {}
    for spec in specs:
        which = dict(model=spec.name, replicate=spec.replicate)
        for mt in metrics:
            for me in methods:
                key = cell_key(spec.label, me.name, mt.name)
                cell = cells[key]
                rows += [dict(r, **which) for r in cell["records"]]
                curves += [dict(c, **which) for c in cell["curves"]]
                if cell.get("arrays_sha256") or isinstance(store, MemoryStore):
                    for name, value in store.read_arrays(key).items():
                        examples[f"{spec.label}/{me.name}/{mt.name}/{name}"] = value
                timings[key] = {"time_s": cell["time_s"],
                                "prepare_time_s": cell["prepare_time_s"],
                                "method_params": cell["identity"]["method"].get("params"),
                                "metric_params": cell["identity"]["metric"].get("params")}
    models = {s.label: cells[info_key(s.label)]["info"] for s in specs}
    return Collected(undefined_as_skipped(records_frame(rows)), curves_frame(curves), examples,
                     timings, models)


def undefined_as_skipped(records):
    """Rows a metric scored ``ok`` with a value that is not a finite number (the entropy or
    Gini index of an all-zero map, a ratio over zero) become ``skipped`` rows with a message:
    the sample is left out of every statistic and the run still reads back (an ``ok`` row
    must hold a number). Applied when the cells are collected, so stored cells get it too."""
    import numpy as np
    import pandas as pd

    value = pd.to_numeric(records["value"], errors="coerce").to_numpy(dtype=float)
    bad = (records["status"] == "ok").to_numpy() & ~np.isfinite(value)
    if bad.any():
        records = records.copy()
        records.loc[bad, "message"] = [
            f"the metric is undefined on this sample (it gave {v}, e.g. for an all-zero or "
            f"constant map); left out of the statistics" for v in value[bad]]
        records.loc[bad, "status"] = "skipped"
        records.loc[bad, "value"] = float("nan")
    return records


def declarations(methods, metrics) -> dict:
    """What every method and metric of the run declares about itself (their cards), so
    that figures, tables and the report draw a plugin exactly like a built-in."""
    from xai_bench.contracts.method import MethodCard

    return {"methods": {m.name: (m.method.card if m.method is not None
                                 else MethodCard(m.name)).as_dict() for m in methods},
            "metrics": {m.name: m.metric.card.as_dict() for m in metrics}}


def _min_effect(config) -> dict:
    """run.json's ``min_effect`` in the command line's words (absent when none was given)."""
    from xai_bench.analysis.effects import parse_min_effect

    text = parse_min_effect(config.min_effect).text()
    return {"min_effect": text} if text else {}


def run_info(config, *, device, run_name, methods, metrics, collected: Collected, dataset,
             processes: int, timings: dict) -> dict:
    """What run.json holds (the statistics time is added once they are computed)."""
    from xai_bench.storage.provenance import collect_provenance

    plugins = {}
    for entry in list(methods) + list(metrics):
        found = plugin_of(entry.identity)
        if found:
            plugins[entry.name] = found
    cells = collected.timings
    return dict(
        config={**config.spec(), "batch_size": config.batch_size, "device": device,
                "out": None if config.out is None else str(config.out), "name": run_name,
                **_min_effect(config), **({"meta": True} if config.meta else {})},
        method_params={m.name: m.params for m in methods},
        metric_params={m.name: m.params for m in metrics},
        plugins=plugins, declarations=declarations(methods, metrics),
        seeds={"seed": config.seed}, models=collected.models,
        dataset=dict(name=label_of(config.dataset),
                     classes=list(getattr(dataset, "classes", []) or []),
                     image_size=list(getattr(dataset, "image_size", []) or [])),
        timings={**timings,
                 "cells_total_s": round(sum(t["time_s"] for t in cells.values()), 3),
                 "cells": cells},
        provenance={**collect_provenance(device), "processes": processes},
        counts={str(k): int(v) for k, v in
                collected.records["status"].value_counts().to_dict().items()})


def analyse_run(collected: Collected, info: dict, seed: int, min_effect=None) -> dict:
    """The statistics tables (intervals, paired comparisons, rank groups, claims), seeded so
    that a rerun writes the same tables; their time goes into ``info``."""
    from xai_bench.analysis.statistics import analyse

    t = time.time()
    tables = analyse(collected.records, seed=seed, claims=True,
                     declarations=info["declarations"], min_effect=min_effect)
    info["timings"]["statistics_s"] = round(time.time() - t, 3)
    return tables


def write_tables(run_dir: Path, collected: Collected, info: dict, tables: dict) -> None:
    """records.csv, curves.csv, examples.npz, the statistics tables and run.json."""
    from xai_bench.analysis.statistics import write_statistics

    write_statistics(collected.records, run_dir, tables=tables)
    atomic_io.write_csv(run_dir / "records.csv", collected.records)
    atomic_io.write_csv(run_dir / "curves.csv", collected.curves)
    if collected.examples:
        atomic_io.write_arrays(run_dir / "examples.npz", collected.examples)
    atomic_io.write_json(run_dir / "run.json", info)


def write_figures(run_dir: Path, plots: bool = True, report: bool = True) -> dict:
    """``plots/`` and ``report.html`` of a written run directory (each switchable; the
    report embeds the figures just drawn, or draws them into the page without ``plots/``).
    Returns ``{"plots": [paths], "report": path}`` of what was written."""
    written: dict = {}
    if not (plots or report):
        return written
    from xai_bench.outputs.run_inputs import read_run_inputs

    inputs = read_run_inputs(run_dir)  # read and checked once, for the figures and the report
    figures = None
    if plots:
        from xai_bench.outputs.plots import plot_run

        figures = written["plots"] = plot_run(run_dir, inputs=inputs)
    if report:
        from xai_bench.outputs.report import write_report

        written["report"] = write_report(run_dir, figures=figures, inputs=inputs)
    return written


def summary_table(source) -> "object":
    """Mean value per (metric, model, method) of the ok records (a run directory or a
    records DataFrame): a pandas pivot table."""
    from xai_bench.storage.results import mean_table, read_records

    frame = source if hasattr(source, "columns") else read_records(source)
    means = mean_table(frame)
    if means.empty:
        return means
    return means.pivot_table(index=["metric", "model"], columns="method", values="value")
