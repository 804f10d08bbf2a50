"""Metrics (see docs/definitions.md, 'Metrics'). Each module registers its metrics in
``xai_bench.METRICS``.

- ``grid_pointing_game`` (localisation, higher is better): positive attribution inside the
  explained cell of 2x2 grids of four classes (row-major cells);
- ``mask_localisation`` (localisation, higher is better): positive attribution inside the
  object mask (data sets with masks; otherwise :class:`MetricNotApplicable`);
- ``pixel_perturbation`` (perturbation, higher is better): the paper's area between the
  least-first and most-first removal curves (ABC);
- ``deletion`` (lower is better) / ``insertion`` (higher is better): RISE's AUCs.
- ``parameter_randomisation`` / ``random_target`` (sanity, lower is better): Spearman
  correlation of a method's maps with those of a randomised model / of a random other class.

Usage::

    metric = xai_bench.get_metric("pixel_perturbation", n_images=250)
    prepared = metric.prepare(model, dataset, device="cpu", batch_size=32, seed=0)
    result = metric.evaluate(model, method, prepared, device="cpu", batch_size=32)

Every built-in metric is a :class:`SampleMetric`: ``evaluate`` is ``reduce`` of the joined
``evaluate_part`` of all samples, so a cell can be computed in parts (see metrics.base).
"""

from xai_bench.metrics import localisation, perturbation, sanity  # noqa: F401
from xai_bench.metrics.base import (
    Metric, MetricNotApplicable, MetricResult, SampleMetric, join_parts,
)
from xai_bench.metrics.common import ImageSelection, select_confident
from xai_bench.data.grids import cell_masks, make_grids, make_mosaic
from xai_bench.metrics.localisation import GridSet
from xai_bench.metrics.perturbation import ABC_FRACTIONS
from xai_bench.registry import register_metric

__all__ = ["Metric", "SampleMetric", "join_parts", "MetricNotApplicable", "MetricResult",
           "register_metric", "ImageSelection",
           "select_confident", "GridSet", "cell_masks", "make_grids", "make_mosaic",
           "ABC_FRACTIONS"]
