"""Faithfulness metrics: does removing what a map calls important change the model's output?
(see docs/definitions.md, 'faithfulness_correlation', 'road').

- ``faithfulness_correlation`` (higher is better; Bhatt et al. 2020, as Quantus
  ``FaithfulnessCorrelation``): per image, the Pearson correlation over ``nr_runs`` random
  subsets of ``subset_size`` input features between the map's sum over the subset and the
  drop of the target's output when the subset is set to a baseline value;
- ``road`` (higher is better; Rong et al. 2022, ROAD): pixels are removed most relevant first
  (MoRF) and least relevant first (LeRF) at a list of percentages and filled in by noisy linear
  imputation; per image, the mean over the percentages of the LeRF minus the MoRF value
  (whether the target class is still predicted, or its confidence).

Both share ``prepare`` with the other image metrics (the ``n_images`` most confidently and
correctly classified test images; the true class is explained) and work on the **RGB image**
in [0, 1], which they perturb and then encode (``model.encode``) for the forward pass: for
B-cos models a removed value is a colour, encoded as ``[v, 1 - v]``, never a channel pair that
no image has (our comparison tests give Quantus a model that encodes its input, so both
perturb the image). Perturbed copies go through the model in chunked no-grad forwards of at
most ``batch_size`` copies (:func:`copy_outputs`). Randomness is drawn per image from its
content and the run's seed (:mod:`xai_bench.compute.seeding`), so results do not depend on the
batch size, the part split or the device.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import numbers

import numpy as np
import torch

from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.contracts.metric import metric
from xai_bench.contracts.parameters import Valid, boolean, integer, one_of
from xai_bench.metrics.base import MetricResult, SampleMetric
from xai_bench.metrics.common import (DEFAULT_SELECTION, SELECTION_RULES, ImageSelection,
                                      attribute, pixel_ranks, select_confident)

__all__ = ["FaithfulnessCorrelation", "Road", "SeededSelection", "copy_outputs",
           "draw_subsets", "faithfulness_correlation", "pearson", "noisy_linear_imputation",
           "road_curves", "ROAD_PERCENTAGES", "IMPUTATION_WEIGHTS"]

#: what a copy's value is: the target's logit, its confidence (``model.confidence``), or
#: whether the target is still the predicted class (1.0 / 0.0)
OUTPUTS = ("logit", "confidence", "correct")
#: per-image baseline values of Quantus (``black``: the image's minimum, ``white``: its
#: maximum, ``mean``: its mean) — or a number
BASELINES = ("black", "white", "mean")


@dataclass
class SeededSelection:
    """The selected images of one model and the seed of the metric's random draws."""

    selection: ImageSelection
    seed: int

    def __len__(self) -> int:
        return len(self.selection)


def _output(model, logits: torch.Tensor, targets: torch.Tensor, output: str) -> torch.Tensor:
    logits = logits.float()
    if output == "correct":
        return (logits.argmax(dim=1) == targets).double()
    values = model.confidence(logits) if output == "confidence" else logits
    return values.gather(1, targets[:, None])[:, 0].double()


@torch.no_grad()
def copy_outputs(model, build, n_items: int, example: torch.Tensor, batch_size: int,
                 output: str, what: str) -> torch.Tensor:
    """The ``output`` of ``n_items`` perturbed copies, ``(n_items,)`` float64 on the CPU.

    ``build(start, stop) -> (images, targets)`` makes copies ``start:stop`` (RGB images on the
    model's device and their targets); they are encoded and forwarded at most ``batch_size``
    at a time (fewer when the device's memory holds fewer, half as many after an
    out-of-memory error: :func:`xai_bench.compute.chunking.run_chunked`) under the forward
    options of :mod:`xai_bench.compute.precision`. ``example``: one encoded input batch,
    for the memory estimate."""
    from xai_bench.compute.chunking import chunk_size, remember_limit, run_chunked
    from xai_bench.compute.precision import forward_autocast, forward_model

    out = torch.empty(int(n_items), dtype=torch.float64)
    if not n_items:
        return out
    device = example.device
    forward = forward_model(model)

    def run(start: int, stop: int) -> None:
        images, targets = build(start, stop)
        with forward_autocast(device):
            logits = forward(model.encode(images))
        out[start:stop] = _output(model, logits, targets.to(logits.device), output).cpu()

    chunk = chunk_size(model, example, device, with_grad=False,
                       requested=min(int(batch_size), int(n_items)))
    run_chunked(run, int(n_items), chunk, device=device, what=what,
                on_oom=lambda c: remember_limit(model, example, with_grad=False, chunk=c))
    return out


def _check_n_images(n_images) -> int:
    if int(n_images) < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    return int(n_images)


class _SeededImagesMetric(SampleMetric):
    """Base: the most confident correct images (``prepare`` as pixel_perturbation's) and the
    seed of the random draws (``prepare``'s ``seed`` wins over the ``seed`` parameter)."""

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32,
                seed=None) -> SeededSelection:
        selection = select_confident(model, dataset, self.params["n_images"], device=device,
                                     batch_size=batch_size,
                                     selection=self.params["selection"])
        self._check_size(selection.images.shape[1:])
        return SeededSelection(selection=selection, seed=self._seed(seed))

    def _check_size(self, image_shape) -> None:
        """A one-line ValueError where the parameters do not fit images of ``image_shape``."""

    def _batches(self, model, method, sel: ImageSelection, device, batch_size, start, stop):
        """``(slice, images, x, targets, maps)`` over batches of ``batch_size`` images."""
        for first in range(start, stop, batch_size):
            sl = slice(first, min(first + batch_size, stop))
            images = sel.images[sl].to(device)
            x = model.encode(images)
            targets = sel.labels[sl].to(device)
            yield sl, images, x, targets, attribute(method, model, x, targets)

    @staticmethod
    def _rows(sel: ImageSelection, values, **facts) -> list[dict]:
        return [dict(sample_id=f"img{int(idx):05d}", target=int(y), value=float(v),
                     statistic="per_image", source_index=int(idx), explained="true class",
                     **facts)
                for idx, y, v in zip(sel.indices, sel.labels, values)]


# ---- faithfulness correlation --------------------------------------------------------------

def _baseline_valid(value) -> bool:
    if isinstance(value, str):
        return value in BASELINES
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def baseline_values(images: torch.Tensor, baseline) -> torch.Tensor:
    """The value a removed feature takes, per image ``(B,)``: Quantus's ``black`` (the image's
    minimum over its channels and pixels), ``white`` (maximum), ``mean``, or a number."""
    flat = images.reshape(images.shape[0], -1)
    if baseline == "black":
        return flat.amin(dim=1)
    if baseline == "white":
        return flat.amax(dim=1)
    if baseline == "mean":
        return flat.mean(dim=1)
    return torch.full((images.shape[0],), float(baseline), dtype=images.dtype,
                      device=images.device)


def draw_subsets(images: torch.Tensor, nr_runs: int, subset_size: int,
                 seed: int) -> torch.Tensor:
    """``(B, nr_runs, subset_size)`` long: for each image ``nr_runs`` subsets of
    ``subset_size`` distinct features (flat indices into its ``C*H*W`` values), each the head
    of a random permutation from ``cpu_generator(derive_seed("faithfulness_correlation",
    content_seed(image, seed)))`` — the image's own stream, whatever its batch."""
    n_features = int(np.prod(images.shape[1:]))
    out = torch.empty(images.shape[0], int(nr_runs), int(subset_size), dtype=torch.long)
    for b, image in enumerate(images):
        g = cpu_generator(derive_seed("faithfulness_correlation", content_seed(image, seed)))
        for r in range(int(nr_runs)):
            out[b, r] = torch.randperm(n_features, generator=g)[:int(subset_size)]
    return out


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of ``a`` and ``b`` ``(B, R)`` in float64; NaN where a
    row is constant (undefined, as scipy's ``pearsonr``)."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    den = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))
    return torch.where(den > 0, (a * b).sum(dim=1) / torch.where(den > 0, den, 1.0),
                       torch.full_like(den, float("nan")))


def faithfulness_correlation(model, images: torch.Tensor, maps: torch.Tensor,
                             targets: torch.Tensor, subsets: torch.Tensor, *, baseline="black",
                             absolute: bool = False, output: str = "logit",
                             batch_size: int = 32, return_parts: bool = False):
    """Per image, the Pearson correlation over the runs between the map's sum over each
    subset and the drop ``output(image) - output(image with the subset set to the baseline)``.

    images: RGB ``(B, C, H, W)``; maps ``(B, H, W)``, each pixel's value given to all ``C``
    of its features (as Quantus broadcasts a one-channel map); subsets ``(B, R, k)`` flat
    feature indices (:func:`draw_subsets`). The ``B * (R + 1)`` inputs (clean and perturbed)
    are forwarded in chunks of at most ``batch_size``. With ``return_parts`` also the
    attribution sums and output drops ``(B, R)``."""
    n_img, n_runs, _ = subsets.shape
    device = images.device
    flat = images.reshape(n_img, -1)
    base = baseline_values(images, baseline)
    subsets = subsets.to(device)
    per_image = n_runs + 1  # item 0 of an image is the clean input

    def build(start: int, stop: int):
        items = torch.arange(start, stop, device=device)
        b, r = items // per_image, items % per_image - 1
        copies = flat[b].clone()
        perturbed = torch.nonzero(r >= 0)[:, 0]
        if perturbed.numel():
            idx = subsets[b[perturbed], r[perturbed]]
            copies[perturbed] = copies[perturbed].scatter(
                1, idx, base[b[perturbed], None].expand_as(idx).to(copies.dtype))
        return copies.view(-1, *images.shape[1:]), targets[b]

    values = copy_outputs(model, build, n_img * per_image, model.encode(images[:1]),
                          batch_size, output, "perturbed copies of faithfulness_correlation")
    values = values.view(n_img, per_image)
    drops = values[:, :1] - values[:, 1:]
    a = maps.detach().double().cpu()
    a = a.abs() if absolute else a
    a = a[:, None].expand(n_img, images.shape[1], *a.shape[1:]).reshape(n_img, -1)
    sums = a.gather(1, subsets.cpu().reshape(n_img, -1)).view(n_img, n_runs, -1).sum(dim=2)
    scores = pearson(sums, drops)
    return (scores, sums, drops) if return_parts else scores


@metric("faithfulness_correlation", higher_is_better=True, category="faithfulness",
        label="faithfulness correlation\n(Pearson, subset sum vs output drop)", chance=0.0)
class FaithfulnessCorrelation(_SeededImagesMetric):
    """Faithfulness correlation (Bhatt et al. 2020), as Quantus FaithfulnessCorrelation."""

    name = "faithfulness_correlation"
    category = "faithfulness"
    higher_is_better = True
    description = ("faithfulness correlation (Bhatt et al. 2020): Pearson correlation between "
                   "the map's sum over random feature subsets and the drop of the target "
                   "logit when they are set to the baseline")
    PARAMETER_CHECKS = {"n_images": integer(1), "nr_runs": integer(2, 100000),
                        "subset_size": integer(1), "absolute": boolean(),
                        "output": one_of(*OUTPUTS[:2]), "seed": integer(),
                        "selection": one_of(*SELECTION_RULES),
                        "baseline": Valid("'black', 'white', 'mean' or a finite number",
                                          _baseline_valid)}

    def __init__(self, n_images: int = 250, nr_runs: int = 100, subset_size: int = 224,
                 baseline="black", absolute: bool = False, output: str = "logit",
                 seed: int = 0, selection: str = DEFAULT_SELECTION):
        """Quantus's defaults: 100 runs of 224 features, the 'black' baseline (the image's
        minimum value), the signed map (``absolute=False``), the target's logit. Quantus's
        ``normalise`` (divide by the largest absolute value) is left out: it cannot change a
        Pearson correlation."""
        super().__init__(n_images=_check_n_images(n_images), nr_runs=int(nr_runs),
                         subset_size=int(subset_size), baseline=baseline,
                         absolute=bool(absolute), output=output, seed=int(seed),
                         selection=selection)

    def _check_size(self, image_shape) -> None:
        n = int(np.prod(tuple(image_shape)))
        if self.params["subset_size"] > n:
            raise ValueError(f"subset_size={self.params['subset_size']} is more than the "
                             f"{n} features (channels x pixels) of the images; pass a "
                             f"subset_size of at most {n}")

    @property
    def evaluate_forwards_per_image(self) -> int:
        return self.params["nr_runs"] + 1

    def evaluate_part(self, model, method, prepared: SeededSelection, start: int, stop: int,
                      *, device="cpu", batch_size: int = 32) -> dict:
        """``scores`` (images,) float64."""
        p, sel = self.params, prepared.selection
        scores = []
        with eval_mode(model):
            for sl, images, _, targets, maps in self._batches(model, method, sel, device,
                                                              batch_size, start, stop):
                subsets = draw_subsets(sel.images[sl], p["nr_runs"], p["subset_size"],
                                       prepared.seed)
                scores.append(faithfulness_correlation(
                    model, images, maps, targets, subsets, baseline=p["baseline"],
                    absolute=p["absolute"], output=p["output"], batch_size=batch_size))
        return {"scores": torch.cat(scores) if scores else torch.empty(0, dtype=torch.float64)}

    def reduce(self, model, prepared: SeededSelection, part: dict, *,
               device="cpu") -> MetricResult:
        sel, scores = prepared.selection, part["scores"]
        p = self.params
        records = self._rows(sel, scores, output=p["output"], baseline=str(p["baseline"]))
        defined = scores[~torch.isnan(scores)]
        summary = dict(mean=float(defined.mean()) if len(defined) else float("nan"),
                       n_undefined=int(len(scores) - len(defined)), n_images=len(sel),
                       n_images_requested=sel.n_requested, seed=prepared.seed,
                       forward_passes=len(sel) * self.evaluate_forwards_per_image)
        return MetricResult(records=records, curves=[], summary=summary)


# ---- ROAD ------------------------------------------------------------------------------------

#: the neighbours of a pixel and their weights in the linear imputation (Rong et al. 2022):
#: edges 1/6, corners 1/12 (row offset, column offset, weight)
IMPUTATION_WEIGHTS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
                      (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))
#: Quantus's percentages: 1, 3, ..., 99
ROAD_PERCENTAGES = tuple(range(1, 100, 2))
ORDERS = ("most_first", "least_first")


def noisy_linear_imputation(image: np.ndarray, missing: np.ndarray,
                            noise: np.ndarray | None = None) -> np.ndarray:
    """``image (C, H, W)`` with the pixels where ``missing (H*W,)`` is true replaced, in every
    channel, by the weighted average of their in-image neighbours (:data:`IMPUTATION_WEIGHTS`,
    renormalised at the border), removed neighbours included — one sparse linear system for
    all removed pixels, solved with ``scipy.sparse.linalg.spsolve`` (one right-hand side per
    channel) — plus ``noise (C, H*W)`` at those pixels when given. float64."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    flat = np.asarray(image, dtype=np.float64).reshape(channels, -1)
    missing = np.asarray(missing, dtype=bool).reshape(-1)
    idx = np.flatnonzero(missing)
    out = flat.copy()
    m = len(idx)
    if m == 0:
        return out.reshape(image.shape)
    variable = np.full(missing.shape[0], -1)
    variable[idx] = np.arange(m)
    row, col = np.divmod(idx, width)
    diagonal = -np.ones(m)  # -(sum of the weights of the neighbours inside the image)
    rhs = np.zeros((m, channels))
    rows, cols, vals = [np.arange(m)], [np.arange(m)], [diagonal]
    for dr, dc, weight in IMPUTATION_WEIGHTS:
        r, c = row + dr, col + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        diagonal[~inside] += weight
        eq = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        known = ~missing[neighbour]
        rhs[eq[known]] -= weight * flat[:, neighbour[known]].T
        rows.append(eq[~known])
        cols.append(variable[neighbour[~known]])
        vals.append(np.full(int((~known).sum()), weight))
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(m, m)).tocsc()
    solved = np.asarray(spsolve(system, rhs)).reshape(m, channels).T
    out[:, idx] = solved if noise is None else solved + noise[:, idx]
    return out.reshape(image.shape)


def road_removed(n_pixels: int, percentage) -> int:
    """Pixels removed at ``percentage``: ``int(n_pixels * percentage / 100)`` (rounded down,
    as Quantus and the reference implementation)."""
    return int(n_pixels * percentage / 100)


def road_noise(image_seed: int, order: str, percentage, shape) -> torch.Tensor:
    """The imputation noise (standard normal, float64, ``shape = (C, H*W)``) of one image,
    order and percentage: its own stream, so any copy can be rebuilt alone."""
    g = cpu_generator(derive_seed("road", image_seed, order, float(percentage)))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64)


def road_curves(model, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                percentages=ROAD_PERCENTAGES, *, noise: float = 0.01, seed: int = 0,
                output: str = "correct", batch_size: int = 32,
                orders=ORDERS) -> torch.Tensor:
    """``(B, len(orders), P)`` float64: the ``output`` for each image with its
    ``road_removed(H*W, p)`` most (``most_first``) or least (``least_first``) relevant pixels
    (stable ranking of the map, :func:`~xai_bench.metrics.common.pixel_ranks`) filled in by
    :func:`noisy_linear_imputation` of the RGB image with noise ``noise *``
    :func:`road_noise` (seeded by the image's content and ``seed``), then encoded. The
    ``B * len(orders) * P`` copies are imputed chunk by chunk and forwarded at most
    ``batch_size`` at a time."""
    n_img, channels, height, width = images.shape
    n_pix = height * width
    percentages = list(percentages)
    orders = list(orders)
    n_pts = len(percentages)
    ranks = torch.stack([pixel_ranks(maps, descending=(o == "most_first")) for o in orders])
    ranks = ranks.cpu().numpy()
    removed = [road_removed(n_pix, p) for p in percentages]
    cpu_images = images.detach().cpu()
    seeds = [content_seed(img, seed) for img in cpu_images]
    np_images = cpu_images.double().numpy()
    per_image = len(orders) * n_pts

    def build(start: int, stop: int):
        copies = []
        for j in range(start, stop):
            b, o, i = j // per_image, (j // n_pts) % len(orders), j % n_pts
            missing = ranks[o, b] < removed[i]
            draw = (noise * road_noise(seeds[b], orders[o], percentages[i],
                                       (channels, n_pix)).numpy()) if noise else None
            copies.append(noisy_linear_imputation(np_images[b], missing, draw))
        copies = torch.from_numpy(np.stack(copies)).to(images.dtype).to(images.device)
        items = torch.arange(start, stop, device=images.device)
        return copies, targets[items // per_image]

    values = copy_outputs(model, build, n_img * per_image, model.encode(images[:1]),
                          batch_size, output, "imputed copies of road")
    return values.view(n_img, len(orders), n_pts)


def _percentages_valid(values) -> bool:
    values = list(values)
    return (len(values) >= 1 and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                     and math.isfinite(v) and 0 <= v < 100 for v in values)
            and all(b > a for a, b in zip(values, values[1:])))


@metric("road", higher_is_better=True, category="faithfulness",
        label="ROAD (LeRF − MoRF, noisy\nlinear imputation)", chance=0.0)
class Road(_SeededImagesMetric):
    """ROAD (Rong et al. 2022): remove and debias with noisy linear imputation; the mean gap
    between the least- and most-relevant-first curves."""

    name = "road"
    category = "faithfulness"
    higher_is_better = True
    description = ("ROAD (Rong et al. 2022): pixels removed most / least relevant first and "
                   "filled by noisy linear imputation; mean over the percentages of LeRF - "
                   "MoRF of whether the true class is still predicted")
    PARAMETER_CHECKS = {"n_images": integer(1), "noise": Valid("a finite number >= 0", lambda v: (
                            isinstance(v, numbers.Real) and not isinstance(v, bool)
                            and math.isfinite(v) and v >= 0)),
                        "output": one_of(*OUTPUTS[1:]), "seed": integer(),
                        "keep_per_image_curves": boolean(), "selection": one_of(*SELECTION_RULES),
                        "percentages": Valid("a comma list of percentages in [0, 100) that "
                                             "increases strictly", _percentages_valid)}

    def __init__(self, n_images: int = 250, percentages=ROAD_PERCENTAGES, noise: float = 0.01,
                 output: str = "correct", keep_per_image_curves: bool = False, seed: int = 0,
                 selection: str = DEFAULT_SELECTION):
        """Quantus's defaults: percentages 1, 3, ..., 99, noise 0.01 (a standard deviation in
        the [0, 1] colour scale), ``output="correct"`` (accuracy curves, as Quantus and the
        paper; ``"confidence"``: the target's confidence, the paper's probability curves).
        A percentage of 100 is refused: with no pixel left the system has no solution."""
        if not _percentages_valid(percentages if isinstance(percentages, (list, tuple))
                                  else [percentages]):
            raise ValueError(f"percentages must be in [0, 100) and increase strictly; got "
                             f"{percentages}")
        super().__init__(n_images=_check_n_images(n_images),
                         percentages=tuple(float(p) if not float(p).is_integer() else int(p)
                                           for p in percentages),
                         noise=float(noise), output=output,
                         keep_per_image_curves=bool(keep_per_image_curves), seed=int(seed),
                         selection=selection)

    @property
    def evaluate_forwards_per_image(self) -> int:
        return 2 * len(self.params["percentages"])

    def evaluate_part(self, model, method, prepared: SeededSelection, start: int, stop: int,
                      *, device="cpu", batch_size: int = 32) -> dict:
        """``curves`` (images, 2, P): [most_first, least_first] at each percentage."""
        p, sel = self.params, prepared.selection
        curves = []
        with eval_mode(model):
            for _, images, _, targets, maps in self._batches(model, method, sel, device,
                                                             batch_size, start, stop):
                curves.append(road_curves(model, images, maps, targets, p["percentages"],
                                          noise=p["noise"], seed=prepared.seed,
                                          output=p["output"], batch_size=batch_size))
        n_pts = len(p["percentages"])
        return {"curves": torch.cat(curves) if curves else torch.empty(0, 2, n_pts,
                                                                      dtype=torch.float64)}

    def reduce(self, model, prepared: SeededSelection, part: dict, *,
               device="cpu") -> MetricResult:
        p, sel = self.params, prepared.selection
        curves = part["curves"]
        gap = (curves[:, 1] - curves[:, 0]).mean(dim=1)
        facts = dict(output=p["output"], substrate="noisy linear imputation")
        records = self._rows(sel, gap, **facts)
        fractions = [q / 100 for q in p["percentages"]]
        n_pix = sel.images.shape[-2] * sel.images.shape[-1]
        pixels = [road_removed(n_pix, q) for q in p["percentages"]]
        mean = curves.mean(dim=0) if len(curves) else torch.full(curves.shape[1:], float("nan"))
        rows = []
        for o, order in enumerate(ORDERS):
            rows += [dict(order=order, fraction=f, value=float(v), statistic="mean_curve",
                          pixels=k) for f, v, k in zip(fractions, mean[o], pixels)]
        if p["keep_per_image_curves"]:
            for o, order in enumerate(ORDERS):
                for idx, y, row in zip(sel.indices, sel.labels, curves[:, o]):
                    rows += [dict(order=order, fraction=f, value=float(v),
                                  statistic="per_image", pixels=k,
                                  sample_id=f"img{int(idx):05d}", target=int(y))
                             for f, v, k in zip(fractions, row, pixels)]
        summary = dict(mean=float(gap.mean()) if len(gap) else float("nan"),
                       mean_most_first=float(mean[0].mean()),
                       mean_least_first=float(mean[1].mean()), n_images=len(sel),
                       n_images_requested=sel.n_requested, seed=prepared.seed,
                       forward_passes=len(sel) * self.evaluate_forwards_per_image)
        return MetricResult(records=records, curves=rows, summary=summary)
