"""Tidy result tables and their on-disk layout.

A run directory holds
- ``records.csv`` — one row per observation (schema :data:`RECORD_COLUMNS` first, then any
  metric-specific columns);
- ``curves.csv`` — perturbation curves, one row per (model, method, metric, order, fraction)
  (schema :data:`CURVE_COLUMNS`);
- ``run.json`` — per-run facts: resolved config, seeds, versions, git sha, device, timings,
  model accuracies;
- ``examples.npz`` — arrays some metrics keep for figures, keyed ``model/method/metric/name``
  (the grid pointing game keeps its first grid: ``image`` (3, H, W) in [0, 1], ``maps``
  (4, H, W) explaining each cell's class, ``targets`` (4,) those classes, row-major);
- ``cells/`` — one finished (model, method, metric) cell per file pair, each written atomically;
  the run is resumable because a cell whose file exists is complete.

``records.csv`` columns:

============  ===============================================================================
model         registered model name
method        attribution method name
metric        metric name
sample_id     stable id of the observation within (model, metric), e.g. ``grid0003/cell2``
target        class explained (int; -1 where not applicable)
value         the observation (float; NaN for skipped/error rows)
status        ``ok``, ``skipped`` (method does not apply / metric not applicable) or ``error``
message       why a row is skipped or an error ('' for ok)
category      metric category (localisation, perturbation)
higher_is_better  whether larger values are better for this metric
============  ===============================================================================
followed by what the metric reports about what was explained and how (``explained``,
``confidence``, ``substrate``, ``statistic``, ...).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from xai_bench.errors import XaiBenchError

RECORD_COLUMNS = ["model", "method", "metric", "sample_id", "target", "value", "status",
                  "message", "category", "higher_is_better"]
CURVE_COLUMNS = ["model", "method", "metric", "order", "fraction", "value"]
STATUSES = ("ok", "skipped", "error")


def file_safe(name: str) -> str:
    """A name usable as a file name everywhere (``timm:vit_s`` -> ``timm+vit_s``)."""
    return re.sub(r'[:<>"/\\|?*]', "+", name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: readers never see
    a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_arrays(path: Path, arrays: dict) -> None:
    """A compressed ``.npz`` of named arrays, written atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def read_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def records_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> a frame with the schema's columns first (missing ones filled)."""
    frame = pd.DataFrame(rows)
    for col in RECORD_COLUMNS:
        if col not in frame:
            frame[col] = "" if col in ("message",) else pd.NA
    extra = [c for c in frame.columns if c not in RECORD_COLUMNS]
    return frame[RECORD_COLUMNS + extra]


def curves_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=None if rows else CURVE_COLUMNS)
    extra = [c for c in frame.columns if c not in CURVE_COLUMNS]
    for col in CURVE_COLUMNS:
        if col not in frame:
            frame[col] = pd.NA
    return frame[CURVE_COLUMNS + extra]


class ResultsError(XaiBenchError):
    """A results directory is missing, incomplete or not of this schema."""


def read_records(run_dir) -> pd.DataFrame:
    """``records.csv`` of a run directory as a DataFrame (schema checked)."""
    return _read(Path(run_dir) / "records.csv", RECORD_COLUMNS)


def read_curves(run_dir) -> pd.DataFrame:
    path = Path(run_dir) / "curves.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return _read(path, CURVE_COLUMNS)


def read_run_info(run_dir) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise ResultsError(f"{path} not found: is '{run_dir}' a finished xai-bench run "
                           f"directory (made by `xai-bench run`)?")
    return json.loads(path.read_text(encoding="utf-8"))


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise ResultsError(f"{path} not found: is '{path.parent}' a finished xai-bench run "
                           f"directory (made by `xai-bench run`)?")
    frame = pd.read_csv(path, dtype={"message": "string"} if "message" in columns else None)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks the columns {', '.join(missing)}; it was not written "
                           f"by this version of xai-bench")
    if "message" in frame:
        frame["message"] = frame["message"].fillna("").astype(object)
    return frame


def read_examples(run_dir) -> dict:
    """``examples.npz`` of a run directory as ``{(model, method, metric): {name: array}}``
    (empty if the run kept no examples)."""
    path = Path(run_dir) / "examples.npz"
    if not path.exists():
        return {}
    out: dict = {}
    for key, value in read_arrays(path).items():
        model, method, metric, name = key.split("/")
        out.setdefault((model, method, metric), {})[name] = value
    return out


def find_run_dirs(path) -> list[Path]:
    """``path`` itself if it is a run directory, else its run sub-directories (newest last)."""
    path = Path(path)
    if (path / "run.json").exists():
        return [path]
    runs = sorted((p for p in path.glob("*/run.json")), key=lambda p: p.stat().st_mtime)
    return [p.parent for p in runs]
