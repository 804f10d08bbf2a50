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
- ``cells/`` — one finished (model, method, metric) cell per file (with its identity and a
  checksum; see :mod:`xai_bench.run.store`), written atomically.

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
replicate     which independently trained copy of the model (0, 1, ...; ``--replicates``)
============  ===============================================================================
followed by what the metric reports about what was explained and how (``explained``,
``confidence``, ``substrate``, ``statistic``, ...).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from xai_bench.errors import XaiBenchError

RECORD_COLUMNS = ["model", "method", "metric", "sample_id", "target", "value", "status",
                  "message", "category", "higher_is_better", "replicate"]
CURVE_COLUMNS = ["model", "method", "metric", "order", "fraction", "value", "replicate"]

# Optional record columns (and their values) the statistics read: they switch the estimator
# and group replicates; a metric that writes none gets the plain sample mean.
#: which statistic a row reports (absent or '': a plain sample)
STATISTIC = "statistic"
#: :data:`STATISTIC` of the one row of a (model, method, metric) whose value is computed on the
#: mean curves; it is not a sample, and its presence marks the metric's reported statistic
MEAN_CURVE = "mean_curve"
#: :data:`STATISTIC` of a per-image row of a metric that also reports a :data:`MEAN_CURVE` row
PER_IMAGE = "per_image"
#: the image's clean-class confidence (> 0); with a :data:`MEAN_CURVE` row it makes the score
#: the ratio estimator ``sum v c / sum c`` (the ABC of the mean curves) instead of the mean
CLEAN_CONFIDENCE = "clean_confidence"
#: the model family a model is a replicate of (replicate stability groups by it)
FAMILY = "family"
#: the optional record columns the statistics read, with their meaning
OPTIONAL_RECORD_COLUMNS = {
    STATISTIC: f"which statistic a row reports: '{MEAN_CURVE}', '{PER_IMAGE}' or '' (a sample)",
    CLEAN_CONFIDENCE: "per-image clean confidence: the ratio-estimator weight",
    FAMILY: "the model family whose replicates the stability table compares",
}
STATUSES = ("ok", "skipped", "error")


def file_safe(name: str) -> str:
    """A name usable as a file name everywhere (``timm:vit_s`` -> ``timm+vit_s``)."""
    return re.sub(r'[:<>"/\\|?*]', "+", name)


def read_arrays(path: Path) -> dict:
    """The arrays of an ``.npz`` file (no pickled objects); :class:`ResultsError` naming the
    file when it is truncated or not an array archive."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ResultsError(f"{path} cannot be read ({type(e).__name__}): it is truncated or not "
                           f"an xai-bench array file; delete it and rerun the command that "
                           f"wrote it") from None


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
    return read_table(Path(run_dir) / "records.csv", RECORD_COLUMNS)


def read_curves(run_dir) -> pd.DataFrame:
    path = Path(run_dir) / "curves.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return read_table(path, CURVE_COLUMNS)


def read_run_info(run_dir) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise ResultsError(f"{path} not found: is '{run_dir}' a finished xai-bench run "
                           f"directory (made by `xai-bench run`)?")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultsError(f"{path} cannot be read ({type(e).__name__}); rerun the "
                           f"`xai-bench run` command that made it") from None
    if not isinstance(info, dict):
        raise ResultsError(f"{path} is not an xai-bench run.json; rerun `xai-bench run`")
    return info


def read_table(path, columns: list[str]) -> pd.DataFrame:
    """The CSV table at ``path`` as a DataFrame, checked to have ``columns`` (``message``
    read as text, missing messages ``''``); a missing or unreadable file, or one without
    these columns, is a one-line :class:`ResultsError`."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path} not found: is '{path.parent}' a finished xai-bench run "
                           f"directory (made by `xai-bench run`)?")
    try:
        frame = pd.read_csv(path, dtype={"message": "string"} if "message" in columns else None)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as e:
        raise ResultsError(f"{path} cannot be read as a table ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:120]}); rerun the `xai-bench run` "
                           f"command that made it") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks the columns {', '.join(missing)}; it was not written "
                           f"by this version of xai-bench")
    if "message" in frame:
        frame["message"] = frame["message"].fillna("").astype(object)
    return frame


def base_replicate(frame: pd.DataFrame) -> int:
    """The replicate a table shows by default: 0 where present, else the lowest one."""
    if frame is None or not len(frame) or "replicate" not in frame:
        return 0
    reps = sorted(set(frame["replicate"].astype(int)))
    return 0 if 0 in reps else reps[0]


def ok_values(records: pd.DataFrame) -> pd.DataFrame:
    """ok rows, keeping for perturbation metrics only the paper's mean-curve statistic where a
    metric reports both per-image and mean-curve values."""
    ok = records[records["status"] == "ok"].copy()
    if STATISTIC in ok:
        has_mean = ok.groupby("metric")[STATISTIC].transform(
            lambda s: (s == MEAN_CURVE).any())
        ok = ok[~has_mean | (ok[STATISTIC] == MEAN_CURVE)]
    ok["value"] = ok["value"].astype(float)
    return ok


def mean_table(records: pd.DataFrame) -> pd.DataFrame:
    """The one table of means: mean value per (metric, model, method) of the ok records
    (:func:`ok_values`), long form with columns ``metric, model, method, value``."""
    return (ok_values(records).groupby(["metric", "model", "method"], as_index=False)["value"]
            .mean())


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
