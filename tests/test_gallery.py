"""The best- and worst-scoring samples a metric keeps for the report's galleries
(xai_bench.metrics.common.ExtremeSamples and the grid pointing game's gallery arrays)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_bench
from xai_bench.data import SyntheticShapes
from xai_bench.metrics.common import THUMBNAIL_SIDE, ExtremeSamples, thumbnail


def keep(scores, k, batch, higher=True):
    keeper = ExtremeSamples(k, len(scores), higher)
    scores = torch.as_tensor(scores, dtype=torch.float64)
    maps = scores[:, None, None].float().expand(-1, 4, 4) * 1.0
    for start in range(0, len(scores), batch):
        idx = torch.arange(start, min(start + batch, len(scores)))
        keeper.add(idx, scores[idx], maps[idx])
    return keeper.selected()


def test_streamed_extremes_equal_a_full_sort_whatever_the_batch_size():
    scores = torch.rand(37, generator=torch.Generator().manual_seed(1)).tolist()
    order = sorted(range(37), key=lambda i: -scores[i])
    for batch in (1, 5, 37):
        idx, best, values, maps = keep(scores, 3, batch)
        assert idx.tolist() == order[:3] + order[::-1][:3]
        assert best.tolist() == [1, 1, 1, 0, 0, 0]
        assert values.tolist() == [scores[i] for i in idx.tolist()]
        assert torch.allclose(maps[:, 0, 0], values.float())  # each map travels with its score


def test_lower_is_better_and_ties_by_index_and_small_sets():
    idx, best, _, _ = keep([0.5, 0.1, 0.9, 0.1], 1, 2, higher=False)
    assert idx.tolist() == [1, 2]  # the lowest is best; of the tied 0.1s the first index
    idx, best, _, _ = keep([0.2, 0.2, 0.2], 5, 1)
    assert idx.tolist() == [0, 2] and best.tolist() == [1, 0]  # k capped at n // 2: disjoint
    idx, _, _, _ = keep([float("nan"), 0.3, 0.7, 0.1], 1, 4)
    assert idx.tolist() == [2, 0]  # a non-finite score is never "best"


def test_thumbnails_cap_the_longer_side():
    assert thumbnail(torch.rand(2, 3, 224, 112)).shape == (2, 3, THUMBNAIL_SIDE,
                                                          THUMBNAIL_SIDE // 2)
    small = torch.rand(1, 3, 32, 32)
    assert thumbnail(small) is small


@pytest.fixture(scope="module")
def grid_results(trained_pair):
    data = SyntheticShapes("test", n=200, seed=0)
    metric = xai_bench.get_metric("grid_pointing_game", n_grids=3, confidence_threshold=0)
    out = {}
    torch.set_num_threads(1)
    for name, model in trained_pair.items():
        prepared = metric.prepare(model, data)
        method = xai_bench.get_method("ixg")
        out[name] = [metric.evaluate(model, method, prepared, batch_size=b) for b in (12, 5)]
    return out


def test_grid_gallery_holds_the_best_and_worst_cells_with_their_scores(grid_results):
    for name, (result, rebatched) in grid_results.items():
        ex = result.examples
        values = {(r["grid"], r["cell"]): r["value"] for r in result.records}
        ranked = sorted(values.values(), reverse=True)
        n = len(ex["gallery_scores"])
        assert n == 6 and ex["gallery_best"].tolist() == [1, 1, 1, 0, 0, 0]
        assert np.allclose(ex["gallery_scores"][:3], ranked[:3])
        assert np.allclose(ex["gallery_scores"][3:], ranked[::-1][:3])
        for g, c, s, t in zip(ex["gallery_grids"], ex["gallery_cells"], ex["gallery_scores"],
                              ex["gallery_targets"]):
            assert values[int(g), int(c)] == pytest.approx(s)
            record = next(r for r in result.records if (r["grid"], r["cell"]) == (g, c))
            assert record["target"] == t
        assert ex["gallery_images"].shape == (n, 3, 32, 32)
        assert ex["gallery_maps"].shape == (n, 32, 32)
        assert ex["gallery_images"].dtype == np.float16
        # the same cells whatever the batch size
        assert rebatched.examples["gallery_grids"].tolist() == ex["gallery_grids"].tolist()
        assert rebatched.examples["gallery_cells"].tolist() == ex["gallery_cells"].tolist()
        # the colour explanation of W(x): B-cos (6-channel) models only
        assert ("gallery_colour" in ex) == name.startswith("bcos")
        if "gallery_colour" in ex:
            colour = ex["gallery_colour"].astype(np.float32)
            assert colour.shape == (n, 32, 32, 4)
            assert np.all((colour >= 0) & (colour <= 1)) and colour[..., 3].max() > 0
