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
from xai_bench.storage.run_info_schema import run_info_problem

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


#: the columns that identify one observation: a second row with the same key is a duplicate
RECORD_KEY = ["model", "method", "metric", "replicate", "sample_id"]
#: the columns that identify one point of a curve (with ``statistic`` and ``sample_id`` where
#: present: per-image curves)
CURVE_KEY = ["model", "method", "metric", "replicate", "order", "fraction"]
#: the columns a bad row is named by
NAMES = ("model", "method", "metric")
#: the fix every bad row's message suggests
REWRITE = "correct or remove that row, or rerun the `xai-bench run` command that made it"


def read_records(run_dir) -> pd.DataFrame:
    """``records.csv`` of a run directory as a DataFrame, checked row by row (see
    :func:`check_records`); a bad row is a one-line :class:`ResultsError` naming it."""
    path = Path(run_dir) / "records.csv"
    return check_records(read_table(path, RECORD_COLUMNS), path)


def read_curves(run_dir) -> pd.DataFrame:
    path = Path(run_dir) / "curves.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return check_curves(read_table(path, CURVE_COLUMNS), path)


def _row_error(path, frame: pd.DataFrame, index, problem: str) -> ResultsError:
    """A :class:`ResultsError` naming the file, the CSV line and the row's cell of ``index``."""
    line = frame.index.get_loc(index) + 2  # the header is line 1
    row = frame.loc[index]
    names = "/".join(str(row[c]) for c in NAMES if c in frame)
    return ResultsError(f"{path} line {line} ({names}): {problem}; {REWRITE}")


def check_numbers(frame: pd.DataFrame, path, columns, *, blank_ok=True,
                  integers=()) -> pd.DataFrame:
    """``columns`` of ``frame`` as floats (``integers`` as ints, never blank): a cell that is
    not a number (or a blank where ``blank_ok`` is False) is a :class:`ResultsError` naming
    the row."""
    for col in [*columns, *integers]:
        if col not in frame:
            continue
        numbers = pd.to_numeric(frame[col], errors="coerce")
        blank = frame[col].isna()
        bad = numbers.isna() & ~blank
        if col in integers or not blank_ok:
            bad |= blank
        if col in integers:
            bad |= numbers.notna() & (numbers != numbers.round())
        if bad.any():
            index = bad.idxmax()
            kind = "an integer" if col in integers else "a number"
            raise _row_error(path, frame, index, f"{col} '{frame.at[index, col]}' is not {kind}")
        frame[col] = numbers.astype(int) if col in integers else numbers.astype(float)
    return frame


_BOOLEANS = {True: True, False: False, "True": True, "False": False, "true": True,
             "false": False}


def check_booleans(frame: pd.DataFrame, path, column: str, blank=None) -> pd.DataFrame:
    """``column`` as Python booleans; any other value (a blank too, unless ``blank`` is True
    or marks the rows where one is allowed) is a :class:`ResultsError` naming the row."""
    if column not in frame or frame[column].dtype == bool:
        return frame
    values = frame[column].astype(object)
    known = values.map(lambda v: isinstance(v, (bool, np.bool_, str)) and v in _BOOLEANS)
    allowed = known | (values.isna() & (blank if blank is not None else False))
    if not allowed.all():
        index = (~allowed).idxmax()
        raise _row_error(path, frame, index, f"{column} '{values[index]}' is not True or False")
    frame[column] = values.map(lambda v: _BOOLEANS[v] if v in _BOOLEANS else v)
    return frame


def _check_texts(frame: pd.DataFrame, path, columns) -> None:
    for col in columns:
        blank = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        if blank.any():
            raise _row_error(path, frame, blank.idxmax(), f"{col} is empty")


def _check_unique(frame: pd.DataFrame, path, key) -> None:
    duplicated = frame.duplicated(subset=[c for c in key if c in frame], keep="first")
    if duplicated.any():
        index = duplicated.idxmax()
        first = frame.index.get_loc(frame[frame[key].eq(frame.loc[index, key]).all(axis=1)].index[0])
        raise _row_error(path, frame, index,
                         f"duplicates line {first + 2} ({', '.join(key)} are the same), so it "
                         f"would be counted twice")


def check_records(frame: pd.DataFrame, path) -> pd.DataFrame:
    """``records.csv`` read back, made strict: names and sample ids present, ``status`` one of
    :data:`STATUSES`, ``value`` a number (blank or NaN only where the status is not ok),
    ``target`` and ``replicate`` integers, ``higher_is_better`` a boolean (one per metric),
    no two rows with the same :data:`RECORD_KEY`. The first bad row is a one-line
    :class:`ResultsError` naming the file and its line."""
    _check_texts(frame, path, [*NAMES, "sample_id", "status"])
    unknown = ~frame["status"].isin(STATUSES)
    if unknown.any():
        index = unknown.idxmax()
        raise _row_error(path, frame, index, f"status '{frame.at[index, 'status']}' is not one "
                                             f"of {', '.join(STATUSES)}")
    frame = check_numbers(frame, path, ["value"], integers=("target", "replicate"))
    missing = (frame["status"] == "ok") & frame["value"].isna()
    if missing.any():
        raise _row_error(path, frame, missing.idxmax(),
                         "value is empty or NaN in an 'ok' row (only skipped and error rows "
                         "may lack a value)")
    frame = check_booleans(frame, path, "higher_is_better", blank=frame["status"] != "ok")
    mixed = frame.groupby("metric")["higher_is_better"].nunique() > 1
    if mixed.any():
        metric = mixed.idxmax()
        raise ResultsError(f"{path}: higher_is_better is both True and False for metric "
                           f"'{metric}'; {REWRITE}")
    _check_unique(frame, path, RECORD_KEY)
    return frame


def check_curves(frame: pd.DataFrame, path) -> pd.DataFrame:
    """``curves.csv`` read back, made strict: names and order present, ``fraction`` and
    ``value`` numbers (``fraction`` never blank), ``replicate`` an integer, no repeated
    point; the first bad row is a one-line :class:`ResultsError`."""
    _check_texts(frame, path, [*NAMES, "order"])
    frame = check_numbers(frame, path, ["value"], integers=("replicate",))
    frame = check_numbers(frame, path, ["fraction"], blank_ok=False)
    key = CURVE_KEY + [c for c in (STATISTIC, "sample_id") if c in frame]
    _check_unique(frame.fillna({c: "" for c in key if c in (STATISTIC, "sample_id")}),
                  path, key)
    return frame


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
    problem = run_info_problem(info)
    if problem:
        raise ResultsError(f"{path}: {problem}; correct it or rerun the `xai-bench run` "
                           f"command that made it")
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
        parts = key.split("/")
        if len(parts) != 4 or not all(parts):
            raise ResultsError(f"{path} holds the array '{key}', not named "
                               f"model/method/metric/name; delete the file and rerun the "
                               f"`xai-bench run` command that made it")
        problem = example_problem(parts[3], value)
        if problem:
            raise ResultsError(f"{path}: the array '{key}' {problem}; delete the file and rerun "
                               f"the `xai-bench run` command that made it")
        out.setdefault(tuple(parts[:3]), {})[parts[3]] = value
    return out


#: the example arrays the figures draw: ``{name: (ndim, channels or None)}``
EXAMPLE_SHAPES = {"image": (3, 3), "maps": (3, None), "targets": (1, None)}


def example_problem(name: str, value: np.ndarray) -> str | None:
    """What is wrong with one example array the figures draw (None: nothing, or not drawn)."""
    if name not in EXAMPLE_SHAPES:
        return None
    if value.dtype.kind not in "biuf":
        return f"holds {value.dtype} values, not numbers"
    ndim, channels = EXAMPLE_SHAPES[name]
    if value.ndim != ndim or (channels is not None and value.shape[0] != channels):
        return f"has the shape {tuple(value.shape)}, not the {ndim}-d array figures draw"
    return None


def find_run_dirs(path) -> list[Path]:
    """``path`` itself if it is a run directory, else its run sub-directories (newest last)."""
    path = Path(path)
    if (path / "run.json").exists():
        return [path]
    runs = sorted((p for p in path.glob("*/run.json")), key=lambda p: p.stat().st_mtime)
    return [p.parent for p in runs]
