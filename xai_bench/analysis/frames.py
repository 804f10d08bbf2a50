"""What every statistics table shares: the keys of its groups, the checks of its inputs, the
``replicate`` column, boolean cells and the seeded random generator of a group.

Kept apart from the estimators so that the tables and the claims can use the same rules
without importing each other.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from xai_bench.errors import ConfigError

__all__ = ["GROUP", "FAMILY", "INTERVALS", "REQUIRED_RECORD_COLUMNS", "check_options",
           "check_frame", "as_bool", "with_replicate", "group_rng", "empty_table"]

#: one estimate: a method's score on a metric for one trained model
GROUP = ["model", "method", "metric", "replicate"]
#: one family of comparisons (Holm's correction, ranks, verdicts): the methods of one metric
#: on one trained model
FAMILY = ["model", "metric", "replicate"]
#: the bootstrap intervals on offer
INTERVALS = ("bca", "percentile")
#: the record columns the statistics cannot do without
REQUIRED_RECORD_COLUMNS = ["model", "method", "metric", "sample_id", "target", "value",
                           "status"]


def check_options(confidence, n_resamples, seed, interval="bca", alpha=None) -> None:
    """A one-line :class:`ConfigError` for an option out of range (``alpha=None``: not
    checked, for the functions that have none)."""
    if not isinstance(confidence, (int, float)) or not 0 < float(confidence) < 1:
        raise ConfigError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), "
                          f"got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) \
            or int(n_resamples) < 10:
        raise ConfigError(f"n_resamples must be an integer >= 10 (e.g. 2000), "
                          f"got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if interval not in INTERVALS:
        raise ConfigError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if alpha is not None and (not isinstance(alpha, (int, float)) or not 0 < float(alpha) < 1):
        raise ConfigError(f"alpha must be a number strictly between 0 and 1 (e.g. 0.05), "
                          f"got {alpha!r}")


def check_frame(frame, what: str, columns) -> pd.DataFrame:
    """``frame`` itself when it is a DataFrame with ``columns``, else a one-line
    :class:`ConfigError` saying what to pass."""
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}; "
                          f"pass e.g. xai_bench.storage.results.read_records(run_dir)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what} lacks the column(s) {', '.join(missing)}; pass the table "
                          f"xai-bench produced (records.csv or the output of summarise)")
    return frame


def as_bool(value) -> bool:
    """A table cell as a bool: "false"/"0"/"no"/"" are False, a missing value is True (the
    metrics' default direction)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return bool(value)


def with_replicate(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose ``replicate`` column is an int (0 where absent or missing):
    a run without replicates is replicate 0."""
    frame = frame.copy()
    if "replicate" not in frame:
        frame["replicate"] = 0
    frame["replicate"] = pd.to_numeric(frame["replicate"], errors="coerce").fillna(0).astype(int)
    return frame


def group_rng(seed: int, *key) -> np.random.Generator:
    """A generator for one group: depends only on ``seed`` and the group's key, so that the
    interval of a group does not change when other groups are added."""
    digest = zlib.crc32("\x1f".join(str(k) for k in key).encode("utf-8"))
    return np.random.default_rng([int(seed), digest])


def empty_table(columns) -> pd.DataFrame:
    """A table without rows but with ``columns`` (object dtype), so that readers find the
    schema even when nothing was scored."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
