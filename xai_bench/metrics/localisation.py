"""Localisation metrics: the grid pointing game (see docs/definitions.md, 'grid_pointing_game')
and, for data sets with object masks, the share of positive attribution on the object.

Grids are 2×2 mosaics of four test images of four *distinct* classes, cells in row-major
order (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), scaled down by 2 to the model's
input size. The geometry (mosaic, resize, cell masks at model resolution) is documented and
implemented in :mod:`xai_bench.data.grids`; its names are re-exported here.

Which images enter the grids follows the localisation analysis of the B-cos v2 reference code:

1. One inference pass over the test set; only correctly classified images (argmax = label)
   are candidates.
2. An image is *eligible* when the model's confidence in its true (= predicted) class exceeds
   ``confidence_threshold`` (default 0.5; 0 keeps every correct image). The confidence is
   ``model.confidence``, compared as a float64 log-confidence so that saturated values still
   compare exactly.
3. Per class, the eligible images are ranked, best first, by ``rank_by``: ``"logit"`` (the
   reference: the true-class logit) or ``"confidence"`` (the true-class log-confidence); ties
   by dataset index.
4. Each grid draws four distinct classes uniformly without replacement among the classes that
   still have an unused eligible image (draw order = cell order); each class gives its next
   image. Sampling stops when fewer than four classes are left.

Remaining deviations from the reference:

- Stop condition: the reference keeps drawing only while *more than* four classes are
  available, so it stops one grid early when exactly four are left; we draw while at least
  four are (a grid of exactly the four remaining classes is still a valid grid).
- Confidence on softmax models: the reference applies a sigmoid to the logit whatever the
  model's training loss. We use the model's own confidence, which is the same sigmoid for
  the BCE-trained B-cos models but a softmax for CE-trained conventional ones; there the
  eligible images need not be the best-ranked by logit, so ineligible ones are dropped from
  anywhere in a class's list, not only from its end.
- Random numbers: the draw uses ``numpy.random.default_rng(seed)``, not the reference's
  generator, so the same seed gives other grids than the reference's.
- Layout: our cells are row-major (image k at row k // 2, column k % 2); the reference's are
  column-major (image k at row k % 2, column k // 2). Which image lands in which quadrant
  changes, not what is scored.
- Down-scaling: the reference resizes each image to half size through the data set's
  transform before tiling; we tile the full-size images and scale the whole mosaic down by 2
  with an anti-aliased bilinear filter, so pixels on a cell boundary mix a little of both
  neighbours.
- No smoothing: the reference can average-pool the attribution maps before scoring; we score
  the maps as the method returns them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from xai_bench.data.grids import (  # noqa: F401  (re-exported)
    GRID_LAYOUT, GRID_RESIZE, cell_masks, make_grids, make_mosaic,
)
from xai_bench.compute.bcos_colour import bcos_colour_image, dynamic_weights, has_colour_image
from xai_bench.contracts.metric import metric
from xai_bench.metrics.base import (
    MetricNotApplicable, MetricResult, SampleMetric,
)
from xai_bench.data.loader import load_batch
from xai_bench.metrics.common import (
    ExtremeSamples, attribute, check_size, confidence_name, confident_order, image_records,
    DEFAULT_SELECTION, SELECTION_RULES, model_name, positive_share, predictions,
    select_confident, thumbnail,
)
from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import numpy_rng
from xai_bench.contracts.parameters import integer, number, one_of


@dataclass
class GridSet:
    """Prepared grids of one model. grids: float RGB ``(G, 3, H, W)`` at model resolution;
    labels / source_indices: ``(G, 4)`` class and dataset index of each cell (row-major);
    cell_masks: ``(4, H, W)`` bool. confidence_threshold / rank_by: how the images were
    chosen; n_correct / n_eligible: correctly classified test images, and those of them above
    the threshold. These four are None for grids not built by :meth:`GridPointingGame.prepare`.
    """

    grids: torch.Tensor
    labels: torch.Tensor
    source_indices: torch.Tensor
    cell_masks: torch.Tensor
    n_requested: int
    seed: int
    stopped_early: bool
    confidence: str
    confidence_threshold: float | None = None
    rank_by: str | None = None
    n_correct: int | None = None
    n_eligible: int | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


#: what ``GridPointingGame(rank_by=...)`` ranks each class's images by
GRID_RANKINGS = ("logit", "confidence")
#: the best- and the worst-scoring cells each (model, method) keeps for the report's gallery
GALLERY_SIZE = 3


def gallery(model, prepared: "GridSet", extremes: ExtremeSamples, device) -> dict:
    """The gallery arrays of one grid pointing game cell (float16 thumbnails): for the best-
    and worst-scoring (grid, cell) pairs the grid image, the method's map, the score, the
    explained class, the grid and cell indices, whether it is a best one, and for B-cos
    models (``rgb_inverse`` encoding) the colour image of the dynamic weights W(x) for that class."""
    pairs, best, scores, maps = extremes.selected()
    if not len(pairs):
        return {}
    g, c = pairs // 4, pairs % 4
    images = prepared.grids[g]
    targets = prepared.labels[g, c]
    out = dict(gallery_images=thumbnail(images.float()).half().numpy(),
               gallery_maps=maps.half().numpy(), gallery_scores=scores.numpy(),
               gallery_targets=targets.numpy(), gallery_grids=g.numpy(),
               gallery_cells=c.numpy(), gallery_best=best.numpy())
    if has_colour_image(model):

        with eval_mode(model):
            x = model.encode(images.to(device))
            weights = dynamic_weights(model, x, targets.to(device)).detach()
        colour = torch.stack([torch.from_numpy(bcos_colour_image(w, xi))
                              for w, xi in zip(weights, x.detach())])  # (n, H, W, 4)
        small = thumbnail(colour.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out["gallery_colour"] = small.half().numpy()
    return out


def grid_candidates(found, confidence_threshold: float, rank_by: str) -> dict[int, list[int]]:
    """class -> dataset indices of its eligible images, best-ranked first.

    found: :class:`~xai_bench.compute.inference.Predictions` of the whole test set. Eligible: correctly
    classified and true-class confidence ``> confidence_threshold`` (every correct image when
    it is 0). rank_by ``"logit"``: the true-class logit, highest first; ``"confidence"``: the
    true-class log-confidence. Ties by dataset index. Classes without eligible images are
    absent."""
    eligible = found.correct
    if confidence_threshold > 0:
        # In log space and float64: a float32 sigmoid or softmax saturates at exactly 1.0,
        # and log(p) > log(t) is the same test as p > t.
        eligible = eligible & (found.log_confidence > math.log(confidence_threshold))
    if rank_by == "logit":
        key = found.logits.double().gather(1, found.labels[:, None].long())[:, 0]
    else:
        key = found.log_confidence
    per_class: dict[int, list[int]] = {}
    labels = found.labels
    for i in confident_order(key, eligible).tolist():
        per_class.setdefault(int(labels[i]), []).append(i)
    return per_class


def sample_grid_cells(per_class: dict, n_grids: int, seed: int):
    """Choose the cells of up to ``n_grids`` grids.

    per_class: class -> list of dataset indices, best-ranked first. For each grid, four
    distinct classes are drawn uniformly without replacement (``numpy_rng(seed)``, i.e.
    ``numpy.random.default_rng``)
    among the classes that still have unused images, in draw order = cell order; each takes its
    best-ranked not-yet-used image. Stops early when fewer than four classes have unused
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


@metric("grid_pointing_game", groups="default",
        higher_is_better=True, category="localisation",
        label="share of positive attribution\nin the explained cell", unit="grid cells",
        chance=0.25, place=0)
class GridPointingGame(SampleMetric):
    """Grid pointing game: share of positive attribution in the explained cell of 2x2 grids.

    n_grids: grids requested (fewer when the eligible images run out); seed: of the class
    draw. confidence_threshold: an image enters only if the model's confidence in its true
    class is above it (0 <= t < 1; 0 keeps every correctly classified image). That confidence
    is ``model.confidence``: a sigmoid for BCE-trained (B-cos) models, as in the reference, but
    a softmax for CE-trained conventional models, where the reference applies a sigmoid to the
    logit regardless. rank_by: ``"logit"`` ranks each class's images by the true-class logit
    (the reference), ``"confidence"`` by the true-class confidence; the two agree on sigmoid
    models. See the module docstring for the selection and the deviations from the
    reference."""

    name = "grid_pointing_game"
    PARAMETER_CHECKS = {"n_grids": integer(1), "seed": integer(),
                        "confidence_threshold": number(0, below=1),
                        "rank_by": one_of(*GRID_RANKINGS)}
    category = "localisation"
    higher_is_better = True
    description = ("grid pointing game: positive attribution inside the explained cell of a "
                   "2x2 grid of four classes / positive attribution in the grid")

    def __init__(self, n_grids: int = 250, seed: int = 0, confidence_threshold: float = 0.5,
                 rank_by: str = "logit"):
        if int(n_grids) < 1:
            raise ValueError(f"n_grids must be >= 1, got {n_grids}")
        if (isinstance(confidence_threshold, bool)
                or not isinstance(confidence_threshold, numbers.Real)
                or not 0 <= confidence_threshold < 1):
            raise ValueError(f"confidence_threshold must be a number with 0 <= t < 1 (0 keeps "
                             f"every correct image), got {confidence_threshold!r}")
        if rank_by not in GRID_RANKINGS:
            raise ValueError(f"rank_by must be one of {', '.join(GRID_RANKINGS)}, got "
                             f"{rank_by!r}")
        super().__init__(n_grids=int(n_grids), seed=int(seed),
                         confidence_threshold=float(confidence_threshold), rank_by=rank_by)

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32, seed=None) -> GridSet:
        seed = self._seed(seed)
        threshold, rank_by = self.params["confidence_threshold"], self.params["rank_by"]
        found = predictions(model, dataset, device=device, batch_size=batch_size)
        per_class = grid_candidates(found, threshold, rank_by)
        grid_labels, grid_indices = sample_grid_cells(per_class, self.params["n_grids"], seed)
        if len(grid_labels) == 0:
            correct_classes = len(set(found.labels[found.correct].tolist()))
            if correct_classes < 4:
                raise MetricNotApplicable(
                    f"model '{model_name(model)}' classifies test images of only "
                    f"{correct_classes} class(es) correctly; a grid needs 4 distinct classes")
            raise MetricNotApplicable(
                f"model '{model_name(model)}': only {len(per_class)} of the {correct_classes} "
                f"classes with correctly classified test images have one with "
                f"{confidence_name(model)} confidence > {threshold}; a grid needs 4 distinct "
                f"classes. Lower confidence_threshold of grid_pointing_game (0 keeps every "
                f"correct image): --metric-arg grid_pointing_game.confidence_threshold=0")
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
                       confidence=confidence_name(model), confidence_threshold=threshold,
                       rank_by=rank_by, n_correct=int(found.correct.sum()),
                       n_eligible=sum(len(items) for items in per_class.values()))

    def samples(self, prepared: GridSet) -> int:
        return len(prepared) * 4  # the (grid, cell) pairs, row-major

    def requested_samples(self) -> int:
        return self.params["n_grids"] * 4

    def evaluate_part(self, model, method, prepared: GridSet, start: int, stop: int, *,
                      device="cpu", batch_size: int = 32) -> dict:
        """``scores`` of the pairs ``start:stop``; ``example_maps``: their maps of grid 0 (the
        qualitative figure, Fig. 7); ``extreme_*``: the part's candidates for the gallery (its
        best and worst pairs, as :class:`ExtremeSamples` keeps them for all pairs)."""
        scores = torch.empty(stop - start, dtype=torch.float64)
        example = []
        extremes = ExtremeSamples(GALLERY_SIZE, self.samples(prepared), self.higher_is_better)
        with eval_mode(model):
            for first in range(start, stop, batch_size):
                pairs = torch.arange(first, min(first + batch_size, stop))
                g, c = pairs // 4, pairs % 4
                x = model.encode(prepared.grids[g].to(device))
                targets = prepared.labels[g, c].to(device)
                maps = attribute(method, model, x, targets)
                here = slice(first - start, first - start + len(pairs))
                scores[here] = positive_share(maps, prepared.cell_masks[c].to(maps.device)).cpu()
                example.append(maps[g == 0].float().cpu())
                extremes.add(pairs, scores[here], maps)
        indices, kept_scores, kept_maps = extremes.kept()
        return {"scores": scores, "example_maps": torch.cat(example), "extreme_index": indices,
                "extreme_score": kept_scores, "extreme_map": kept_maps}

    def reduce(self, model, prepared: GridSet, part: dict, *, device="cpu") -> MetricResult:
        n_pairs = self.samples(prepared)
        scores = part["scores"]
        extremes = ExtremeSamples(GALLERY_SIZE, n_pairs, self.higher_is_better)
        extremes.add(part["extreme_index"], part["extreme_score"], part["extreme_map"])
        records = []
        for p in range(n_pairs):
            g, c = divmod(p, 4)
            records.append(dict(sample_id=f"grid{g:04d}/cell{c}", target=int(prepared.labels[g, c]),
                                value=float(scores[p]), grid=g, cell=c,
                                source_index=int(prepared.source_indices[g, c]),
                                explained="cell class", grid_cells=4, grid_layout=GRID_LAYOUT,
                                grid_resize=GRID_RESIZE, confidence=prepared.confidence,
                                confidence_threshold=prepared.confidence_threshold,
                                rank_by=prepared.rank_by))
        summary = dict(mean=float(scores.mean()), n_grids=len(prepared),
                       n_grids_requested=prepared.n_requested,
                       stopped_early=prepared.stopped_early, seed=prepared.seed,
                       confidence=prepared.confidence,
                       confidence_threshold=prepared.confidence_threshold,
                       rank_by=prepared.rank_by, n_correct=prepared.n_correct,
                       n_eligible=prepared.n_eligible)
        examples = dict(image=prepared.grids[0].float().numpy(),
                        maps=part["example_maps"][:4].numpy(),
                        targets=prepared.labels[0].numpy(), grid=0,
                        **gallery(model, prepared, extremes, device))
        return MetricResult(records=records, curves=[], summary=summary, examples=examples)


@metric("mask_localisation", groups="default",
        higher_is_better=True, category="localisation",
        label="share of positive attribution\ninside the object mask", needs_masks=True, place=1)
class MaskLocalisation(SampleMetric):
    """Share of positive attribution inside the object mask (data sets with masks)."""

    name = "mask_localisation"
    PARAMETER_CHECKS = {"n_images": integer(1), "selection": one_of(*SELECTION_RULES)}
    category = "localisation"
    higher_is_better = True
    description = ("object-mask localisation: positive attribution inside the object mask / "
                   "positive attribution in the image (data sets with masks)")

    def __init__(self, n_images: int = 250, selection: str = DEFAULT_SELECTION):
        if int(n_images) < 1:
            raise ValueError(f"n_images must be >= 1, got {n_images}")
        super().__init__(n_images=int(n_images), selection=selection)

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32, seed=None):
        return select_confident(model, dataset, self.params["n_images"], device=device,
                                batch_size=batch_size, with_masks=True,
                                selection=self.params["selection"])

    def evaluate_part(self, model, method, prepared, start: int, stop: int, *, device="cpu",
                      batch_size: int = 32) -> dict:
        """``scores`` of the images ``start:stop``."""
        if prepared.masks is None:
            raise MetricNotApplicable("the prepared selection has no object masks")
        scores = torch.empty(stop - start, dtype=torch.float64)
        with eval_mode(model):
            for first in range(start, stop, batch_size):
                sl = slice(first, min(first + batch_size, stop))
                x = model.encode(prepared.images[sl].to(device))
                maps = attribute(method, model, x, prepared.labels[sl].to(device))
                scores[first - start:sl.stop - start] = positive_share(
                    maps, prepared.masks[sl].to(maps.device)).cpu()
        return {"scores": scores}

    def reduce(self, model, prepared, part: dict, *, device="cpu") -> MetricResult:
        if prepared.masks is None:
            raise MetricNotApplicable("the prepared selection has no object masks")
        n = len(prepared)
        scores = part["scores"]
        area = prepared.masks.double().mean(dim=(1, 2))
        records = image_records(prepared, scores, mask_fraction=area)
        summary = dict(mean=float(scores.mean()), mean_mask_fraction=float(area.mean()),
                       n_images=n, n_images_requested=prepared.n_requested)
        return MetricResult(records=records, curves=[], summary=summary)
