"""Numbers as the tables, the summary and the report print them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["format_interval"]


def _decimals(mean: float) -> int:
    if not np.isfinite(mean) or mean == 0:
        return 3
    return max(3, 2 - math.floor(math.log10(abs(mean))))


def _fmt(x: float, decimals: int) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_interval(mean, low, high) -> str:
    """``"0.427 [0.39, 0.46]"``: the mean with 3 decimals (more for |mean| < 0.1: three
    significant digits, e.g. ``0.00102``), the bounds with one decimal fewer; ``nan`` for
    missing numbers, no ``-0.00``."""
    mean, low, high = (math.nan if v is None or pd.isna(v) else float(v)
                       for v in (mean, low, high))
    d = _decimals(mean)
    return f"{_fmt(mean, d)} [{_fmt(low, d - 1)}, {_fmt(high, d - 1)}]"
