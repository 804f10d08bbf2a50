"""Effect sizes of paired comparisons, and the smallest difference worth reporting.

A p-value says whether a difference is there, not whether it matters: with a few hundred
samples a difference of a thousandth of a metric's range can be significant. Every paired
comparison therefore carries, next to its difference and interval, a standardised effect
size, and a run may name a smallest difference worth reporting (``--min-effect``): a
significant difference below it counts as a tie, so it folds into one rank group.

The effect size is the paired standardised mean difference ``d_z``: the difference of the
two estimates over the standard deviation of the per-sample paired differences. For a ratio
estimate (the clean-confidence-weighted ABC) the per-sample differences are the linearised
ones, ``diff + w_a,i (a_i − A) / mean(w_a) − w_b,i (b_i − B) / mean(w_b)`` (the ratio's
influence values), which reduce to ``a_i − b_i`` when every weight is 1 (docs/statistics.md,
'Effect sizes').
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from xai_bench.errors import ConfigError

__all__ = ["paired_effect_size", "MinEffect", "parse_min_effect", "STANDARDISED"]

#: the suffix of a threshold given as a standardised effect size (``0.2sd``)
STANDARDISED = "sd"

_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(sd)?\s*$")


def paired_effect_size(va, wa, vb, wb) -> float:
    """``d_z`` of the paired samples ``va``/``vb`` with ratio weights ``wa``/``wb`` (all ones
    for plain means): the difference of the weighted means over the standard deviation
    (ddof 1) of the linearised per-sample differences. 0 when every sample is equal, ±inf
    when the differences are all the same non-zero number, NaN below two samples."""
    va, vb = np.asarray(va, float), np.asarray(vb, float)
    wa, wb = np.asarray(wa, float), np.asarray(wb, float)
    n = len(va)
    if n < 2:
        return math.nan
    mean_a = float((va * wa).sum() / wa.sum())
    mean_b = float((vb * wb).sum() / wb.sum())
    diff = mean_a - mean_b
    per_sample = wa * (va - mean_a) / wa.mean() - wb * (vb - mean_b) / wb.mean()
    sd = float(np.std(per_sample, ddof=1))
    # below rounding noise of the differences themselves the spread is zero
    if sd <= 1e-12 * max(1.0, float(np.abs(per_sample).max(initial=0.0)), abs(diff)):
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / sd


@dataclass(frozen=True)
class Threshold:
    """A smallest difference worth reporting: ``value`` in the metric's units, or (with
    ``standardised``) in units of the paired differences' standard deviation (``d_z``)."""

    value: float
    standardised: bool = False

    def negligible(self, diff: float, effect_size: float) -> bool:
        size = effect_size if self.standardised else diff
        return bool(np.isfinite(size) and abs(size) < self.value)

    def text(self) -> str:
        return f"{self.value:g}{STANDARDISED if self.standardised else ''}"


@dataclass(frozen=True)
class MinEffect:
    """The ``--min-effect`` of a run: a threshold for every metric (``default``) and
    per-metric ones that replace it (``per_metric``)."""

    default: Threshold | None = None
    per_metric: dict = field(default_factory=dict)

    def threshold(self, metric: str) -> Threshold | None:
        return self.per_metric.get(str(metric), self.default)

    def __bool__(self) -> bool:
        return self.default is not None or bool(self.per_metric)

    def text(self) -> str:
        parts = ([self.default.text()] if self.default else []) + \
            [f"{m}={t.text()}" for m, t in self.per_metric.items()]
        return ",".join(parts)


def _threshold(text: str, whole: str) -> Threshold:
    match = _NUMBER.match(text)
    if not match:
        raise ConfigError(f"--min-effect '{whole}': '{text.strip()}' is not a non-negative "
                          f"number; write e.g. 0.01 (the metric's units) or 0.2sd "
                          f"(standardised), or per metric METRIC=VALUE (grid_pointing_game=0.01)")
    return Threshold(float(match.group(1)), match.group(2) == STANDARDISED)


def parse_min_effect(spec) -> MinEffect:
    """``--min-effect`` as a :class:`MinEffect`: ``None``/``""`` (none), a number (``0.01``:
    in every metric's units), a standardised size (``0.2sd``: |d_z| below 0.2), or
    comma-separated ``METRIC=VALUE`` entries with an optional leading default
    (``0.2sd,pixel_perturbation=0.05``); a :class:`MinEffect`, a number or a dict
    ``{metric: value}`` are taken as they are. Bad input is a one-line :class:`ConfigError`."""
    if isinstance(spec, MinEffect):
        return spec
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return MinEffect()
    if isinstance(spec, bool):
        raise ConfigError(f"--min-effect must be a number, '0.2sd' or METRIC=VALUE, got {spec}")
    if isinstance(spec, (int, float)):
        return parse_min_effect(repr(float(spec)))
    if isinstance(spec, dict):
        spec = ",".join(f"{k}={v}" for k, v in spec.items())
    whole = str(spec)
    default, per_metric = None, {}
    for item in whole.split(","):
        if not item.strip():
            continue
        if "=" in item:
            metric, _, value = item.partition("=")
            if not metric.strip():
                raise ConfigError(f"--min-effect '{whole}': an entry '{item.strip()}' names no "
                                  f"metric; write METRIC=VALUE")
            per_metric[metric.strip()] = _threshold(value, whole)
        elif default is not None:
            raise ConfigError(f"--min-effect '{whole}' gives two thresholds for every metric; "
                              f"give one, and METRIC=VALUE for the others")
        else:
            default = _threshold(item, whole)
    return MinEffect(default, per_metric)
