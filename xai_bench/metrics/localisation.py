"""Localisation metrics: the grid pointing game (see docs/definitions.md, 'grid_pointing_game')
and, for data sets with object masks, the share of positive attribution on the object.

Grids are 2×2 mosaics of four test images of four *distinct* classes, cells in row-major
order (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), scaled down by 2 to the model's
input size. The geometry (mosaic, resize, cell masks at model resolution) is documented and
implemented in :mod:`xai_bench.data.grids`; its names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xai_bench.data.grids import (  # noqa: F401  (re-exported)
    GRID_LAYOUT, GRID_RESIZE, cell_masks, make_grids, make_mosaic,
)
from xai_bench.metrics.base import Metric, MetricNotApplicable, MetricResult, register_metric
from xai_bench.data import load_batch
from xai_bench.metrics.common import (
    attribute, check_size, confidence_name, confident_order, model_name, positive_share,
    predictions, select_confident,
)
from xai_bench.modes import eval_mode
from xai_bench.seeding import numpy_rng


@dataclass
class GridSet:
    """Prepared grids of one model. grids: float RGB ``(G, 3, H, W)`` at model resolution;
    labels / source_indices: ``(G, 4)`` class and dataset index of each cell (row-major);
    cell_masks: ``(4, H, W)`` bool."""

    grids: torch.Tensor
    labels: torch.Tensor
    source_indices: torch.Tensor
    cell_masks: torch.Tensor
    n_requested: int
    seed: int
    stopped_early: bool
    confidence: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def sample_grid_cells(per_class: dict, n_grids: int, seed: int):
    """Choose the cells of up to ``n_grids`` grids.

    per_class: class -> list of dataset indices, most confident first. For each grid, four
    distinct classes are drawn uniformly without replacement (``numpy_rng(seed)``, i.e.
    ``numpy.random.default_rng``)
    among the classes that still have unused images, in draw order = cell order; each takes its
    most confident not-yet-used image. Stops early when fewer than four classes have unused
    images. Returns (labels (G, 4), indices (G, 4)) as int64 numpy arrays."""
    rng = numpy_rng(seed)
    next_pos = {c: 0 for c in per_class}
    labels, indices = [], []
    for _ in range(int(n_grids)):
        available = sorted(c for c, items in per_class.items() if next_pos[c] < len(items))
        if len(available) < 4:
            break
        classes = rng.choice(np.asarray(available, dtype=np.int64), size=4, replace=False)
        labels.append([int(c) for c in classes])
        indices.append([int(per_class[int(c)][next_pos[int(c)]]) for c in classes])
        for c in classes:
            next_pos[int(c)] += 1
    return (np.asarray(labels, dtype=np.int64).reshape(-1, 4),
            np.asarray(indices, dtype=np.int64).reshape(-1, 4))


@register_metric
class GridPointingGame(Metric):
    """Grid pointing game: share of positive attribution in the explained cell of 2x2 grids."""

    name = "grid_pointing_game"
    category = "localisation"
    higher_is_better = True
    description = ("grid pointing game: positive attribution inside the explained cell of a "
                   "2x2 grid of four classes / positive attribution in the grid")

    def __init__(self, n_grids: int = 250, seed: int = 0):
        if int(n_grids) < 1:
            raise ValueError(f"n_grids must be >= 1, got {n_grids}")
        super().__init__(n_grids=int(n_grids), seed=int(seed))

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32, seed=None) -> GridSet:
        seed = self._seed(seed)
        found = predictions(model, dataset, device=device, batch_size=batch_size)
        labels = found.labels
        order = confident_order(found.log_confidence, found.correct)  # most confident first
        per_class: dict[int, list[int]] = {}
        for i in order.tolist():
            per_class.setdefault(int(labels[i]), []).append(i)
        grid_labels, grid_indices = sample_grid_cells(per_class, self.params["n_grids"], seed)
        if len(grid_labels) == 0:
            raise MetricNotApplicable(
                f"model '{model_name(model)}' classifies test images of only {len(per_class)} "
                f"class(es) correctly; a grid needs 4 distinct classes")
        flat = torch.from_numpy(grid_indices.reshape(-1))
        images, _ = load_batch(dataset, flat)
        check_size(model, images)
        size = tuple(model.image_size)
        cells = images.view(len(grid_labels), 4, *images.shape[1:])
        grids = make_grids(cells, size)
        return GridSet(grids=grids, labels=torch.from_numpy(grid_labels),
                       source_indices=torch.from_numpy(grid_indices), cell_masks=cell_masks(size),
                       n_requested=self.params["n_grids"], seed=seed,
                       stopped_early=len(grid_labels) < self.params["n_grids"],
                       confidence=confidence_name(model))

    def evaluate(self, model, method, prepared: GridSet, *, device="cpu",
                 batch_size: int = 32) -> MetricResult:
        n_pairs = len(prepared) * 4
        scores = torch.empty(n_pairs, dtype=torch.float64)
        example = []  # the maps of grid 0 for its four classes: the qualitative figure (Fig. 7)
        with eval_mode(model):
            for start in range(0, n_pairs, batch_size):
                pairs = torch.arange(start, min(start + batch_size, n_pairs))
                g, c = pairs // 4, pairs % 4
                x = model.encode(prepared.grids[g].to(device))
                targets = prepared.labels[g, c].to(device)
                maps = attribute(method, model, x, targets)
                scores[start:start + len(pairs)] = positive_share(
                    maps, prepared.cell_masks[c].to(maps.device)).cpu()
                example.append(maps[g == 0].float().cpu())
        records = []
        for p in range(n_pairs):
            g, c = divmod(p, 4)
            records.append(dict(sample_id=f"grid{g:04d}/cell{c}", target=int(prepared.labels[g, c]),
                                value=float(scores[p]), grid=g, cell=c,
                                source_index=int(prepared.source_indices[g, c]),
                                explained="cell class", grid_cells=4, grid_layout=GRID_LAYOUT,
                                grid_resize=GRID_RESIZE))
        summary = dict(mean=float(scores.mean()), n_grids=len(prepared),
                       n_grids_requested=prepared.n_requested,
                       stopped_early=prepared.stopped_early, seed=prepared.seed)
        examples = dict(image=prepared.grids[0].float().numpy(),
                        maps=torch.cat(example)[:4].numpy(),
                        targets=prepared.labels[0].numpy(), grid=0)
        return MetricResult(records=records, curves=[], summary=summary, examples=examples)


@register_metric
class MaskLocalisation(Metric):
    """Share of positive attribution inside the object mask (data sets with masks)."""

    name = "mask_localisation"
    category = "localisation"
    higher_is_better = True
    description = ("object-mask localisation: positive attribution inside the object mask / "
                   "positive attribution in the image (data sets with masks)")

    def __init__(self, n_images: int = 250):
        if int(n_images) < 1:
            raise ValueError(f"n_images must be >= 1, got {n_images}")
        super().__init__(n_images=int(n_images))

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32, seed=None):
        return select_confident(model, dataset, self.params["n_images"], device=device,
                                batch_size=batch_size, with_masks=True)

    def evaluate(self, model, method, prepared, *, device="cpu",
                 batch_size: int = 32) -> MetricResult:
        if prepared.masks is None:
            raise MetricNotApplicable("the prepared selection has no object masks")
        n = len(prepared)
        scores = torch.empty(n, dtype=torch.float64)
        with eval_mode(model):
            for start in range(0, n, batch_size):
                sl = slice(start, min(start + batch_size, n))
                x = model.encode(prepared.images[sl].to(device))
                maps = attribute(method, model, x, prepared.labels[sl].to(device))
                scores[sl] = positive_share(maps, prepared.masks[sl].to(maps.device)).cpu()
        area = prepared.masks.double().mean(dim=(1, 2))
        records = [dict(sample_id=f"img{int(idx):05d}", target=int(y), value=float(s),
                        source_index=int(idx), explained="true class", mask_fraction=float(a))
                   for idx, y, s, a in zip(prepared.indices, prepared.labels, scores, area)]
        summary = dict(mean=float(scores.mean()), mean_mask_fraction=float(area.mean()),
                       n_images=n, n_images_requested=prepared.n_requested)
        return MetricResult(records=records, curves=[], summary=summary)
