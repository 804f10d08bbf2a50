"""Machinery shared by the metrics: batched prediction over a data set, selection of the most
confidently and correctly classified test images, positive-attribution shares, pixel rankings,
chunked forward passes over perturbed copies and the blur of the insertion substrate.

Data sets: anything with ``images`` (uint8 ``(N, 3, H, W)``, or float in [0, 1]) and
``labels`` tensors; otherwise items ``dataset[i] -> (image float (3, H, W), label)`` are
stacked. Object masks (:func:`has_masks`, :func:`load_masks`): a ``mask(i)`` method giving
item ``i``'s mask ``(H, W)`` (non-zero = object), or a ``masks`` attribute indexable by item
(e.g. a bool tensor ``(N, H, W)``); either one is enough (``has_masks = False`` hides them).

Which images the image-selecting metrics explain (:func:`select_confident`): the correctly
classified test images, most confident first, either per class in turn (``"stratified"``,
the default) or over the whole data set (``"global"``); see :data:`SELECTION_RULES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from xai_bench.compute.blur import (  # noqa: F401  (moved there; importable here as before)
    BLUR_KERNELS, BLUR_PADDINGS, RISE_TRUNCATE, check_choice, gaussian_blur, rise_kernel,
)
from xai_bench.data.errors import DataError
from xai_bench.data.loader import load_batch
from xai_bench.compute.inference import check_image_size as check_size  # noqa: F401
from xai_bench.compute.inference import log_confidence  # noqa: F401  (re-exported: moved there)
from xai_bench.metrics.base import MetricNotApplicable


def confidence_name(model) -> str:
    """How ``model.confidence`` turns logits into confidences, for the records."""
    return "sigmoid" if model.training_loss == "bce" else "softmax"


def model_name(model) -> str:
    from xai_bench.contracts.model import model_name as name

    return name(model)


def _base(dataset):
    """The data set under any ``torch.utils.data.Subset`` wrappers, and the index map."""
    base, remap = dataset, None
    while isinstance(base, torch.utils.data.Subset):
        here = torch.as_tensor(base.indices, dtype=torch.long)
        remap = here if remap is None else here[remap]
        base = base.dataset
    return base, remap


def has_masks(dataset) -> bool:
    """Whether ``dataset`` gives object masks: a callable ``mask(i)`` or a ``masks``
    attribute that is not None, unless it sets ``has_masks = False`` (a data set class whose
    instances have masks or not, e.g. an image folder with or without a ``masks/`` tree)."""
    base, _ = _base(dataset)
    if getattr(base, "has_masks", None) is False:
        return False
    return callable(getattr(base, "mask", None)) or getattr(base, "masks", None) is not None


def load_masks(dataset, indices) -> torch.Tensor:
    """Object masks ``(B, H, W)`` bool of ``indices`` (non-zero = object): from ``mask(i)``
    where the data set has it, else by indexing its ``masks``."""
    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    base, remap = _base(dataset)
    if remap is not None:
        indices = remap[indices]
    name = getattr(base, "name", type(base).__name__)
    mask = getattr(base, "mask", None)
    try:
        if callable(mask):
            masks = [torch.as_tensor(mask(int(i))) for i in indices]
            shapes = {tuple(m.shape) for m in masks}
            if len(shapes) > 1 or any(len(s) != 2 for s in shapes):
                raise DataError(f"data set '{name}': mask(i) gave shapes {sorted(shapes)}; "
                                f"each mask must be (H, W), the size of its image")
            return torch.stack(masks).bool() if masks else torch.zeros(0, 0, 0, dtype=torch.bool)
        masks = base.masks
        if isinstance(masks, torch.Tensor):
            return masks[indices].bool()
        return torch.stack([torch.as_tensor(masks[int(i)]) for i in indices]).bool()
    except (IndexError, TypeError, RuntimeError) as e:
        raise DataError(f"data set '{name}': its masks cannot be read for items "
                        f"{indices.tolist()[:4]} ({type(e).__name__}: {e}); give masks as a "
                        f"(N, H, W) tensor or a mask(i) method returning (H, W)") from None


def predictions(model, dataset, *, device="cpu", batch_size: int = 32):
    """The one inference pass over ``dataset`` (:func:`xai_bench.compute.inference.predict`, cached
    per model, data set, device and batch size, so the metrics of a model and the runner's
    accuracy figure share it); :class:`MetricNotApplicable` for an empty data set."""
    from xai_bench.compute.inference import predict

    if len(dataset) == 0:
        raise MetricNotApplicable("the data set is empty")
    return predict(model, dataset, device=device, batch_size=batch_size)


def confident_order(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Indices of the correctly classified items, most confident first (ties: lower index
    first — a stable sort). ``confidence`` may be any increasing function of the confidence
    (e.g. the log-confidence of :func:`predict`)."""
    idx = torch.nonzero(correct, as_tuple=False)[:, 0]
    order = torch.sort(-confidence[idx].double(), stable=True).indices
    return idx[order]


#: how :func:`select_confident` picks images: ``stratified`` (default) takes the most
#: confident correct image of each class in turn, ``global`` the most confident overall
SELECTION_RULES = ("stratified", "global")
DEFAULT_SELECTION = "stratified"


def stratified_order(order: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``order`` (items most confident first) rearranged into rounds: round ``r`` holds the
    ``r``-th most confident item of every class that has one, most confident first (ties:
    lower index first, as in ``order``). A class with fewer items drops out of the later
    rounds; any prefix of the result spreads over the classes as evenly as they allow."""
    order = torch.as_tensor(order, dtype=torch.long).reshape(-1)
    classes = torch.as_tensor(labels, dtype=torch.long)[order]
    rounds = torch.empty_like(order)
    seen: dict = {}
    for pos, c in enumerate(classes.tolist()):  # the item's rank within its class
        rounds[pos] = seen.get(c, 0)
        seen[c] = int(rounds[pos]) + 1
    return order[torch.sort(rounds, stable=True).indices]


def selection_order(confidence: torch.Tensor, correct: torch.Tensor, labels: torch.Tensor,
                    rule: str = DEFAULT_SELECTION) -> torch.Tensor:
    """Every correctly classified item in the order ``rule`` selects them (the first ``n``
    are the ``n`` selected): ``global``, :func:`confident_order`; ``stratified``, the same
    rearranged per class in turn (:func:`stratified_order`)."""
    check_choice("selection", rule, SELECTION_RULES)
    order = confident_order(confidence, correct)
    return order if rule == "global" else stratified_order(order, labels)


@dataclass
class ImageSelection:
    """The ``n_images`` most confidently and correctly classified test images of one model,
    picked by a selection rule (:data:`SELECTION_RULES`; shared ``prepare`` result of
    pixel_perturbation, deletion, insertion, mask_localisation and the sanity metrics).

    indices: dataset indices (n,), in selection order (``global``: most confident first;
    ``stratified``: class by class in rounds); labels (n,); images: float RGB
    (n, 3, H, W); confidences: clean confidence of the true class from the selection pass (n,);
    masks: object masks (n, H, W) bool or None; selection: the rule."""

    indices: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor
    confidences: torch.Tensor
    masks: torch.Tensor | None
    n_requested: int
    n_correct: int
    n_total: int
    confidence: str
    selection: str = DEFAULT_SELECTION

    def __len__(self) -> int:
        return int(self.indices.numel())

    def class_counts(self) -> dict:
        """``{class index: number of selected images}``, by class index."""
        return {int(c): int(k) for c, k in zip(*torch.unique(self.labels, return_counts=True))}


def select_confident(model, dataset, n_images: int, *, device="cpu", batch_size: int = 32,
                     with_masks: bool = False, selection: str = DEFAULT_SELECTION,
                     correct_only: bool = True) -> ImageSelection:
    """The ``n_images`` test images a metric explains. All test images are ranked by the
    model's confidence in the *true* class (as a float64 log-confidence, so that saturated
    sigmoids still rank by their logits) and only the correctly classified ones (argmax =
    label) are kept; ``selection`` then picks (:func:`selection_order`): ``stratified`` (the
    default) the most confident image of each class in turn, so that 24 images over 10
    classes cover every class that has a correct image; ``global`` the most confident
    overall, whatever their classes. Ties go to the lower dataset index. Fewer are returned
    when fewer are correct. ``correct_only=False`` ranks every test image, correct or not
    (the sanity checks on random weights: :mod:`xai_bench.metrics.random_weights`)."""
    check_choice("selection", selection, SELECTION_RULES)
    if with_masks and not has_masks(dataset):
        raise MetricNotApplicable(
            f"data set '{getattr(dataset, 'name', type(dataset).__name__)}' has no object "
            f"masks (an image folder: add a masks/ tree; a data set object: a mask(i) method "
            f"or a masks attribute)")
    found = predictions(model, dataset, device=device, batch_size=batch_size)
    log_conf = found.log_confidence
    eligible = found.correct if correct_only else torch.ones_like(found.correct, dtype=torch.bool)
    order = selection_order(log_conf, eligible, found.labels, selection)
    if order.numel() == 0:
        raise MetricNotApplicable(f"model '{model_name(model)}' classifies no test image "
                                  f"correctly; nothing to explain")
    chosen = order[: int(n_images)]
    images, y = load_batch(dataset, chosen)
    masks = load_masks(dataset, chosen) if with_masks else None
    if masks is not None and tuple(masks.shape[-2:]) != tuple(images.shape[-2:]):
        raise DataError(f"data set '{getattr(dataset, 'name', type(dataset).__name__)}': "
                        f"object masks are {tuple(masks.shape[-2:])} but images are "
                        f"{tuple(images.shape[-2:])}; give each mask its image's size")
    return ImageSelection(indices=chosen, labels=y, images=images,
                          confidences=log_conf[chosen].exp(),
                          masks=masks, n_requested=int(n_images),
                          n_correct=int(found.correct.sum()),
                          n_total=len(dataset), confidence=confidence_name(model),
                          selection=selection)


def positive_share(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Positive attribution inside ``regions`` divided by the positive attribution in the
    whole map, per map (0 where a map has no positive attribution). maps (B, H, W) float,
    regions (B, H, W) bool; computed in float64."""
    pos = maps.double().clamp(min=0)
    total = pos.sum(dim=(1, 2))
    inside = (pos * regions.to(pos.device, torch.float64)).sum(dim=(1, 2))
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0),
                       torch.zeros_like(total))


def pixel_ranks(maps: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Rank of every pixel (0 = first to be removed / inserted), ``(B, H*W)`` long.

    The order is a *stable* sort of the flattened map (row-major pixel index), by decreasing
    value if ``descending`` else by increasing value: ties keep pixel-index order in both
    directions, so a constant map removes the same pixels most-first and least-first."""
    flat = maps.detach().reshape(maps.shape[0], -1).double()
    order = torch.sort(-flat if descending else flat, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def n_pixels(fraction: float, total: int) -> int:
    """``round(fraction × total)``, halves rounded up."""
    return min(int(total), int(math.floor(float(fraction) * total + 0.5)))


@torch.no_grad()
def perturbed_confidences(model, outside: torch.Tensor, inside: torch.Tensor | None,
                          ranks: torch.Tensor, points, targets: torch.Tensor,
                          batch_size: int) -> torch.Tensor:
    """Confidence of ``targets`` on perturbed copies, in chunked forward passes.

    For image ``b`` and point ``p = (r, k)`` the input is ``outside[b]`` with the pixels
    ranked ``< k`` in ordering ``r`` (``ranks[r, b]``) replaced by ``inside[b]`` — every
    channel of the pixel; ``inside=None`` means zero (the zero encoding).
    outside/inside: encoded ``(B, C, H, W)``; ranks: ``(R, B, H*W)``; points: list of
    ``(r, k)``. All ``B × P`` copies are built chunk by chunk and forwarded at most
    ``batch_size`` at a time — fewer when the device's free memory holds fewer
    (:func:`xai_bench.compute.chunking.chunk_size`), and half as many again after an out-of-memory
    error (:func:`xai_bench.compute.chunking.run_chunked`; a copy's value depends on its chunk only at
    float rounding: a product over another number of rows may sum in another order). The
    forwards run under the forward options of
    :mod:`xai_bench.compute.precision` (bf16 autocast, torch.compile); the logits are cast to float32
    before ``model.confidence``. Returns ``(B, P)`` float64 on CPU."""
    from xai_bench.compute.chunking import chunk_size, remember_limit, run_chunked
    from xai_bench.compute.precision import forward_autocast, forward_model

    n_img, channels, height, width = outside.shape
    device = outside.device
    r_idx = torch.tensor([int(r) for r, _ in points], dtype=torch.long, device=device)
    k_val = torch.tensor([int(k) for _, k in points], dtype=torch.long, device=device)
    n_pts = len(points)
    targets = targets.to(device).long()
    # kept on the device and copied to the CPU once: no synchronisation per chunk (MPS has
    # no float64; the float32 confidences are exact in float64 anyway)
    out = torch.empty(n_img * n_pts, device=device,
                      dtype=torch.float32 if device.type == "mps" else torch.float64)
    forward = forward_model(model)

    def confidences(start: int, stop: int) -> None:
        jobs = torch.arange(start, stop, device=device)
        b, p = jobs // n_pts, jobs % n_pts
        replace = (ranks[r_idx[p], b] < k_val[p, None]).view(-1, 1, height, width)
        if inside is None:
            x = outside[b].masked_fill(replace, 0.0)
        else:
            x = torch.where(replace, inside[b], outside[b])
        with forward_autocast(device):
            logits = forward(x)
        conf = model.confidence(logits.float())
        out[start:stop] = conf.gather(1, targets[b][:, None])[:, 0].double()

    if n_img * n_pts:
        chunk = chunk_size(model, outside, device, with_grad=False,
                           requested=min(int(batch_size), n_img * n_pts))
        run_chunked(confidences, n_img * n_pts, chunk, device=device,
                    what="perturbed copies of the perturbation metric",
                    on_oom=lambda c: remember_limit(model, outside, with_grad=False, chunk=c))
    return out.cpu().double().view(n_img, n_pts)


def curve_confidences(model, outside: torch.Tensor, inside: torch.Tensor | None,
                      ranks: torch.Tensor, points, targets: torch.Tensor,
                      batch_size: int) -> torch.Tensor:
    """:func:`perturbed_confidences` of the same arguments, with every point forwarded on its
    own: the copies of one point (the images of the call, at most ``batch_size`` at a time)
    form the forward batches, so a point's confidences depend on that point's copies alone
    and never on which other points were asked for with it.

    That makes points shareable (:mod:`xai_bench.compute.map_cache`): inside
    :func:`~xai_bench.compute.map_cache.sharing_maps` for ``model`` a point whose copies were
    forwarded before is taken from the cache, bit for bit what forwarding it again would give.
    A point is named by its content: the bytes of ``outside``, ``inside`` and the ordering,
    the pixel count and the targets; a point that replaces no pixel is ``outside`` itself and
    one that replaces every pixel is ``inside`` (zeros for ``None``), whatever the ordering,
    so the clean, all-zero and blurred inputs are shared across methods and metrics.
    Returns ``(B, P)`` float64 on CPU."""
    from xai_bench.compute.map_cache import active_cache, batch_digest

    n_img, _, height, width = outside.shape
    n_pix = height * width
    cache = active_cache(model)
    unordered = torch.zeros(1, n_img, n_pix, dtype=torch.long, device=outside.device)
    digests: dict = {}  # what a point is made of -> its digest with the targets, once a call

    def named(what: str, t: torch.Tensor) -> str:
        if cache is not None and what not in digests:
            digests[what] = batch_digest(t, targets)
        return digests.get(what, "")

    columns = []
    for r, k in points:
        k = int(k)
        if k <= 0 or k >= n_pix:  # the copy is one of the inputs: the ordering plays no part
            what, whole = (("outside", outside) if k <= 0 else
                           ("inside", inside) if inside is not None else
                           ("zeros", torch.zeros_like(outside)))
            key = ("whole", named(what, whole), int(batch_size))
            args = (whole, None, unordered, [(0, 0)])
        else:
            key = ("copies", named("outside", outside),
                   "zeros" if inside is None else named("inside", inside),
                   named(f"order{int(r)}", ranks[int(r)]), k, int(batch_size))
            args = (outside, inside, ranks[int(r)][None], [(0, k)])

        def forward(args=args):
            return perturbed_confidences(model, *args, targets, batch_size)[:, 0]

        columns.append(forward() if cache is None else cache.confidences(key, forward))
    if not columns:
        return torch.empty(n_img, 0, dtype=torch.float64)
    return torch.stack(columns, dim=1)


def trapezoid(values: torch.Tensor, fractions) -> torch.Tensor:
    """Trapezoid area of ``values (..., P)`` over the fraction axis ``(P,)``."""
    x = torch.as_tensor(fractions, dtype=torch.float64, device=values.device)
    return torch.trapezoid(values.double(), x, dim=-1)


def image_batches(model, selection, start: int, stop: int, batch_size: int, device):
    """``(sl, x, targets)`` for the selected images ``start:stop`` in batches of at most
    ``batch_size`` from ``start`` (the batches a part shares with the whole cell): ``sl`` the
    batch's slice of the selection, ``x`` its images encoded on ``device``, ``targets`` the
    true classes. A part's outputs for the batch go at ``sl.start - start``."""
    for first in range(start, stop, batch_size):
        sl = slice(first, min(first + batch_size, stop))
        yield sl, model.encode(selection.images[sl].to(device)), selection.labels[sl].to(device)


def image_records(selection, scores, **columns) -> list:
    """One record per selected image (``sample_id`` from its data-set index, ``target``,
    ``value``, ``source_index``, ``explained``: the true class), with ``columns`` added to
    each: a scalar for all, or a sequence with one value per image."""
    extra = {k: (v if isinstance(v, (list, tuple, torch.Tensor)) else [v] * len(scores))
             for k, v in columns.items()}
    return [dict(sample_id=f"img{int(idx):05d}", target=int(y), value=float(s),
                 source_index=int(idx), explained="true class",
                 **{k: (float(v[i]) if isinstance(v, torch.Tensor) else v[i])
                    for k, v in extra.items()})
            for i, (idx, y, s) in enumerate(zip(selection.indices, selection.labels, scores))]


def attribute(method, model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``method(model, x, targets)`` with a shape check; maps (B, H, W) detached. Inside
    :func:`xai_bench.compute.map_cache.sharing_maps` for ``model`` a batch explained before (by
    another metric) is not explained again."""
    from xai_bench.compute.map_cache import active_cache

    def compute(x, targets):
        maps = method(model, x, targets)
        expected = (x.shape[0], x.shape[2], x.shape[3])
        if tuple(maps.shape) != expected:
            raise RuntimeError(f"method '{getattr(method, 'name', method)}' returned maps of "
                               f"shape {tuple(maps.shape)}, expected {expected}")
        return maps.detach()

    cache = active_cache(model)
    return compute(x, targets) if cache is None else cache.maps(method, x, targets, compute)


#: largest side of the thumbnails a metric keeps for the report's galleries
THUMBNAIL_SIDE = 96


def thumbnail(images: torch.Tensor, side: int = THUMBNAIL_SIDE) -> torch.Tensor:
    """``images (N, C, H, W)`` area-downscaled so that the longer side is at most ``side``
    (unchanged when already small enough)."""
    h, w = images.shape[-2:]
    scale = side / max(h, w)
    if scale >= 1:
        return images
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(images.float(), size=size, mode="area")


class ExtremeSamples:
    """The ``k`` best- and ``k`` worst-scoring samples of a metric with their maps, kept while
    the batches stream by (memory: 2k thumbnails, not one map per sample), for the report's
    galleries. "Best" follows ``higher_is_better``; ties are broken by the sample index, so
    batched and per-sample evaluation keep the same samples (the worst of tied ones is the last).
    ``k`` is capped at half the
    number of samples so the two sets never overlap."""

    def __init__(self, k: int, n_samples: int, higher_is_better: bool = True):
        self.k = max(0, min(int(k), int(n_samples) // 2))
        self.sign = 1.0 if higher_is_better else -1.0
        self._kept: dict = {}  # sample index -> (score, thumbnail map)

    def add(self, indices: torch.Tensor, scores: torch.Tensor, maps: torch.Tensor) -> None:
        if not self.k:
            return
        small = thumbnail(maps.detach().float().cpu()[:, None])[:, 0]
        for i, s, m in zip(indices.tolist(), scores.tolist(), small):
            self._kept[int(i)] = (float(s), m)
        best, worst = self._order()
        keep = set(best) | set(worst)
        self._kept = {i: v for i, v in self._kept.items() if i in keep}

    def _order(self):
        # non-finite scores sort last among the best and first among the worst
        def goodness(i):
            s = self._kept[i][0] * self.sign
            return s if math.isfinite(s) else -math.inf
        # one total order (ties: lower index = better), read from both ends, so the best and
        # the worst never share a sample once there are 2k of them
        ranked = sorted(self._kept, key=lambda i: (-goodness(i), i))
        return ranked[:self.k], ranked[::-1][:self.k]

    def kept(self):
        """``(indices, scores, maps)`` of every sample kept so far, by index: what a part of
        the samples hands on, so that :meth:`add` of the parts' kept samples keeps what one
        pass over all samples keeps (the maps are already thumbnails, which stay as they are)."""
        order = sorted(self._kept)
        maps = torch.stack([self._kept[i][1] for i in order]) if order else torch.empty(0)
        return (torch.tensor(order, dtype=torch.long),
                torch.tensor([self._kept[i][0] for i in order], dtype=torch.float64), maps)

    def selected(self):
        """``(indices, best, scores, maps)``: the best samples (best first), then the worst
        (worst first); ``best`` is 1 for the former, 0 for the latter."""
        best, worst = self._order()
        order = best + [i for i in worst if i not in best]
        flags = [1] * len(best) + [0] * (len(order) - len(best))
        maps = torch.stack([self._kept[i][1] for i in order]) if order else torch.empty(0)
        return (torch.tensor(order, dtype=torch.long), torch.tensor(flags, dtype=torch.uint8),
                torch.tensor([self._kept[i][0] for i in order], dtype=torch.float64), maps)
