"""Metrics computed in parts (xai_bench.metrics.base.SampleMetric): the parts of a cell,
cut at multiples of the batch size and joined, give exactly what one ``evaluate`` gives —
records, curves, summary and the figures' arrays — for every built-in metric."""

import numpy as np
import pandas as pd
import pytest
import torch

import xai_bench
from xai_bench.metrics import SampleMetric, join_parts

BATCH = 4
METRICS = {"pixel_perturbation": dict(n_images=10), "deletion": dict(n_images=10, n_steps=8),
           "insertion": dict(n_images=10, n_steps=8), "mask_localisation": dict(n_images=10),
           "grid_pointing_game": dict(n_grids=3, confidence_threshold=0.0),
           "parameter_randomisation": dict(n_images=6, max_stages=2),
           "random_target": dict(n_images=10)}


def _frame(rows):
    return pd.DataFrame(rows)


def _same(a, b):
    """Two MetricResults equal bit for bit (NaNs equal)."""
    assert _frame(a.records).equals(_frame(b.records))
    assert _frame(a.curves).equals(_frame(b.curves))
    assert pd.Series(a.summary, dtype=object).equals(pd.Series(b.summary, dtype=object))
    assert a.examples.keys() == b.examples.keys()
    for name in a.examples:
        assert np.array_equal(np.asarray(a.examples[name]), np.asarray(b.examples[name]),
                              equal_nan=True), name


def test_every_builtin_metric_is_computed_in_parts():
    for name in METRICS:
        assert isinstance(xai_bench.get_metric(name), SampleMetric), name


@pytest.mark.parametrize("family, method", [("bcos_vit_nano", "ixg"), ("vit_nano", "rollout")])
def test_parts_joined_equal_one_evaluation(trained_pair, shapes_small, family, method,
                                           one_thread):
    """A gradient method on the B-cos model (with the gallery's W(x) colour images), a
    class-agnostic one (maps shared across a grid's targets) on the conventional twin."""
    model, data = trained_pair[family], shapes_small[1]
    methods = [xai_bench.get_method(method)]
    for name, params in METRICS.items():
        metric = xai_bench.get_metric(name, **params)
        prepared = metric.prepare(model, data, batch_size=BATCH, seed=0)
        n = metric.samples(prepared)
        assert n == metric.requested_samples(), name  # enough samples in this test split
        # uneven parts, all starting at multiples of the batch size
        cuts = [0, BATCH, 3 * BATCH, n] if n > 3 * BATCH else [0, BATCH, n]
        for method in methods:
            whole = metric.evaluate(model, method, prepared, batch_size=BATCH)
            parts = [metric.evaluate_part(model, method, prepared, a, b, batch_size=BATCH)
                     for a, b in zip(cuts, cuts[1:])]
            _same(metric.reduce(model, prepared, join_parts(parts)), whole)


def test_join_parts_concatenates_in_order_and_skips_empty_pieces():
    parts = [{"a": torch.tensor([1.0, 2.0]), "maps": torch.ones(1, 2, 2)},
             {"a": torch.tensor([3.0]), "maps": torch.empty(0)}]
    joined = join_parts(parts)
    assert joined["a"].tolist() == [1.0, 2.0, 3.0]
    assert joined["maps"].shape == (1, 2, 2)
