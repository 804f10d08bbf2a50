"""Perturbation metrics: the paper's pixel perturbation / area between curves (ABC) and RISE's
deletion / insertion AUC (see docs/definitions.md, 'pixel_perturbation', 'deletion',
'insertion').

All three share ``prepare``: the ``n_images`` most confidently *and correctly* classified
test images, ranked globally (not per class) by the model's confidence in the true class
(sigmoid for BCE-trained models, softmax otherwise; compared as float64 log-confidences so
that saturated sigmoids still rank by their logits; ties by dataset index). The explained class
is always the true class (= the predicted class for these images).

Pixels are ranked per image by the attribution map with a *stable* sort (ties keep the
row-major pixel order), see :func:`xai_bench.metrics.common.pixel_ranks`. "Removing" a pixel
sets every channel of its *encoding* to zero (``x[:, :, i, j] = 0`` in the model's input
space, as in the paper): for B-cos models the 6-channel ``[rgb, 1-rgb]`` encoding of the pixel
becomes all zeros (no input at all), for conventional models the normalised pixel becomes 0
(the data set's mean colour).

Every curve point is forwarded on its own (:func:`~xai_bench.metrics.common.curve_confidences`:
the batch's copies of that point, at most ``batch_size`` at a time, under ``torch.no_grad()``),
so that the metrics of a run share the points they have in common (pixel perturbation's
most-first points are deletion's; the clean, all-zero and blurred inputs); methods are called
on batches of at most ``batch_size`` images.

Records: perturbation metrics report one row per image (``statistic="per_image"``,
``sample_id="img00042"`` with the dataset index) *and* one summary row (``sample_id="mean"``,
``target=-1``, ``statistic="mean_curve"``) whose value is the area computed on the mean curves
— the paper's quantity; tables and plots use the ``mean_curve`` row. Curves rows: ``order``,
``fraction``, ``value`` (the mean curve), ``statistic="mean_curve"``, ``pixels`` (number of
pixels removed / inserted) and, with ``keep_per_image_curves=True``, per-image rows
(``statistic="per_image"``, ``sample_id``, ``target``). For pixel_perturbation ``value`` is
normalised (by the mean clean confidence, or the image's own for per-image rows) and
``raw_confidence`` holds the unnormalised confidence; deletion / insertion curves are not
normalised.
"""

from __future__ import annotations

import torch

from xai_bench.contracts.metric import metric
from xai_bench.metrics.base import MetricResult, SampleMetric
from xai_bench.metrics.common import (
    BLUR_KERNELS, BLUR_PADDINGS, ImageSelection, attribute, check_choice, gaussian_blur,
    DEFAULT_SELECTION, SELECTION_RULES, curve_confidences, n_pixels, pixel_ranks,
    select_confident, trapezoid,
)
from xai_bench.compute.modes import eval_mode
from xai_bench.contracts.parameters import fractions_0_to_1, integer, number, odd_integer, one_of

ZERO_ENCODING = "zero encoding"
BLUR_SPACES = ("rgb", "model")
ABC_FRACTIONS = tuple(i / 32 for i in range(9))  # 0, 1/32, ..., 8/32 (up to 25 %)


class ConfidentImagesMetric(SampleMetric):
    """Base of the metrics that explain the most confident correct test images (the samples
    are the selected images)."""

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32,
                seed=None) -> ImageSelection:
        return select_confident(model, dataset, self.params["n_images"], device=device,
                                batch_size=batch_size, selection=self.params["selection"])

    def _chunks(self, model, method, prepared: ImageSelection, device, batch_size, start,
                stop):
        """Yield ``(slice, x, targets, maps)`` over chunks of ``batch_size`` of the images
        ``start:stop``."""
        for first in range(start, stop, batch_size):
            sl = slice(first, min(first + batch_size, stop))
            x = model.encode(prepared.images[sl].to(device))
            targets = prepared.labels[sl].to(device)
            yield sl, x, targets, attribute(method, model, x, targets)

    @staticmethod
    def _image_rows(prepared: ImageSelection, values, **facts) -> list[dict]:
        return [dict(sample_id=f"img{int(idx):05d}", target=int(y), value=float(v),
                     statistic="per_image", source_index=int(idx), **facts)
                for idx, y, v in zip(prepared.indices, prepared.labels, values)]


def _check_n_images(n_images) -> int:
    if int(n_images) < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    return int(n_images)


@metric("pixel_perturbation", groups="default",
        higher_is_better=True, category="perturbation",
        label="ABC (area between the\nleast- and most-first curves)", place=2)
class PixelPerturbation(ConfidentImagesMetric):
    """Pixel perturbation: area between the least- and most-important-first removal curves (ABC)."""

    name = "pixel_perturbation"
    PARAMETER_CHECKS = {"n_images": integer(1), "fractions": fractions_0_to_1(),
                        "selection": one_of(*SELECTION_RULES)}
    category = "perturbation"
    higher_is_better = True
    description = ("pixel perturbation (ABC): area between the least-first and most-first "
                   "pixel-removal curves of the normalised true-class confidence, 0-25 %")

    def __init__(self, n_images: int = 250, fractions=ABC_FRACTIONS,
                 keep_per_image_curves: bool = False, selection: str = DEFAULT_SELECTION):
        fractions = tuple(float(f) for f in fractions)
        if len(fractions) < 2 or fractions[0] != 0.0 or any(
                b <= a for a, b in zip(fractions, fractions[1:])) or fractions[-1] > 1.0:
            raise ValueError("fractions must start at 0, increase strictly and stay <= 1; "
                             f"got {fractions}")
        super().__init__(n_images=_check_n_images(n_images), fractions=fractions,
                         keep_per_image_curves=bool(keep_per_image_curves),
                         selection=selection)

    @property
    def forwards_per_image(self) -> int:
        """Forward passes per selected image: 1 clean (the selection pass of ``prepare``,
        which the metrics of one model share) + the 0 % point shared by both orders +
        (len(fractions) - 1) per order in ``evaluate`` (18 with the default 9 fractions)."""
        return 1 + self.evaluate_forwards_per_image

    @property
    def evaluate_forwards_per_image(self) -> int:
        """Curve points per image in ``evaluate`` (17 by default): the 0 % point shared by
        both orders and ``len(fractions) - 1`` per order (in a run some of them are deletion's
        too, and forwarded once: :func:`~xai_bench.metrics.common.curve_confidences`)."""
        return 2 * len(self.params["fractions"]) - 1

    def _points(self, n_pix: int) -> list:
        fr = self.params["fractions"]
        return ([(0, 0)] + [(0, n_pixels(f, n_pix)) for f in fr[1:]]
                + [(1, n_pixels(f, n_pix)) for f in fr[1:]])

    def evaluate_part(self, model, method, prepared: ImageSelection, start: int, stop: int, *,
                      device="cpu", batch_size: int = 32) -> dict:
        """``confidences``: (images, 2F-1) = [0 %, most-first 1..F-1, least-first 1..F-1]."""
        points = self._points(prepared.images.shape[-2] * prepared.images.shape[-1])
        confs = []
        with eval_mode(model):
            for _, x, targets, maps in self._chunks(model, method, prepared, device, batch_size,
                                                    start, stop):
                ranks = torch.stack([pixel_ranks(maps, descending=True),
                                     pixel_ranks(maps, descending=False)])
                confs.append(curve_confidences(model, x, None, ranks, points, targets,
                                               batch_size))
        return {"confidences": torch.cat(confs)}

    def reduce(self, model, prepared: ImageSelection, part: dict, *,
               device="cpu") -> MetricResult:
        fr = self.params["fractions"]
        n_f = len(fr)
        points = self._points(prepared.images.shape[-2] * prepared.images.shape[-1])
        conf = part["confidences"]
        most = conf[:, :n_f]
        least = torch.cat([conf[:, :1], conf[:, n_f:]], dim=1)
        clean = conf[:, 0]
        # per image: curves normalised by that image's clean confidence
        scale = clean.clamp(min=torch.finfo(torch.float64).tiny)[:, None]
        per_image_abc = trapezoid(least / scale - most / scale, fr)
        # the paper: mean confidence per point, normalised by the mean clean confidence
        mean_clean = clean.mean()
        most_curve, least_curve = most.mean(0) / mean_clean, least.mean(0) / mean_clean
        abc = float(trapezoid(least_curve - most_curve, fr))

        facts = dict(explained="true class", confidence=prepared.confidence,
                     substrate=ZERO_ENCODING)
        records = self._image_rows(prepared, per_image_abc, **facts)
        for row, c in zip(records, clean):
            row["clean_confidence"] = float(c)  # the 0 % point, which normalises the row
        records.append(dict(sample_id="mean", target=-1, value=abc, statistic="mean_curve",
                            n_images=len(prepared), clean_confidence=float(mean_clean), **facts))
        pixels = [k for _, k in points[:n_f]]
        curves = []
        for order, curve in (("most_first", most_curve), ("least_first", least_curve)):
            curves += [dict(order=order, fraction=f, value=float(v), statistic="mean_curve",
                            pixels=k, raw_confidence=float(v * mean_clean))
                       for f, v, k in zip(fr, curve, pixels)]
        if self.params["keep_per_image_curves"]:
            for order, block in (("most_first", most), ("least_first", least)):
                for idx, y, row, s in zip(prepared.indices, prepared.labels, block, scale[:, 0]):
                    curves += [dict(order=order, fraction=f, value=float(v / s),
                                    statistic="per_image", pixels=k,
                                    sample_id=f"img{int(idx):05d}", target=int(y),
                                    raw_confidence=float(v))
                               for f, v, k in zip(fr, row, pixels)]
        summary = dict(abc=abc, mean_per_image_abc=float(per_image_abc.mean()),
                       n_images=len(prepared), n_images_requested=prepared.n_requested,
                       mean_clean_confidence=float(mean_clean),
                       forward_passes=len(prepared) * len(points))
        return MetricResult(records=records, curves=curves, summary=summary)


class RiseMetric(ConfidentImagesMetric):
    """Deletion / insertion (RISE, Petsiuk et al. 2018; as used by ViT-CX): pixels are
    removed / inserted in attribution order (most important first) in ``n_steps`` equal steps
    over [0, 1]; the value is the trapezoid area under the true-class confidence curve
    (not normalised). RISE moves one image row's worth of pixels per step (224 steps at 224²);
    the default ``n_steps=32`` is exactly that for 32² images and keeps 224² images at
    33 forward passes each (1568 pixels per step)."""

    order = "deletion"
    higher_is_better = True
    PARAMETER_CHECKS = {"n_images": integer(1), "n_steps": integer(1, 1024),
                        "selection": one_of(*SELECTION_RULES)}

    def __init__(self, n_images: int = 250, n_steps: int = 32,
                 keep_per_image_curves: bool = False, selection: str = DEFAULT_SELECTION, **extra):
        if not 1 <= int(n_steps) <= 1024:
            raise ValueError(f"n_steps must be in 1..1024, got {n_steps}")
        super().__init__(n_images=_check_n_images(n_images), n_steps=int(n_steps),
                         keep_per_image_curves=bool(keep_per_image_curves),
                         selection=selection, **extra)

    @property
    def evaluate_forwards_per_image(self) -> int:
        return self.params["n_steps"] + 1

    def substrate_name(self) -> str:
        raise NotImplementedError

    def _inputs(self, model, prepared, sl, x):
        """(outside, inside) for :func:`curve_confidences`."""
        raise NotImplementedError

    def _curve_points(self, prepared: ImageSelection):
        n_steps = self.params["n_steps"]
        n_pix = prepared.images.shape[-2] * prepared.images.shape[-1]
        fractions = [s / n_steps for s in range(n_steps + 1)]
        return fractions, [(0, n_pixels(f, n_pix)) for f in fractions]

    def evaluate_part(self, model, method, prepared: ImageSelection, start: int, stop: int, *,
                      device="cpu", batch_size: int = 32) -> dict:
        """``confidences``: (images, n_steps + 1), the curve of each image."""
        _, points = self._curve_points(prepared)
        confs = []
        with eval_mode(model):
            for sl, x, targets, maps in self._chunks(model, method, prepared, device, batch_size,
                                                     start, stop):
                ranks = pixel_ranks(maps, descending=True)[None]
                with torch.no_grad():
                    outside, inside = self._inputs(model, prepared, sl, x)
                confs.append(curve_confidences(model, outside, inside, ranks, points, targets,
                                               batch_size))
        return {"confidences": torch.cat(confs)}

    def reduce(self, model, prepared: ImageSelection, part: dict, *,
               device="cpu") -> MetricResult:
        n_steps = self.params["n_steps"]
        fractions, points = self._curve_points(prepared)
        conf = part["confidences"]  # (n, n_steps + 1)
        per_image = trapezoid(conf, fractions)
        mean_curve = conf.mean(0)
        auc = float(trapezoid(mean_curve, fractions))
        facts = dict(explained="true class", confidence=prepared.confidence,
                     substrate=self.substrate_name(), n_steps=n_steps)
        records = self._image_rows(prepared, per_image, **facts)
        records.append(dict(sample_id="mean", target=-1, value=auc, statistic="mean_curve",
                            n_images=len(prepared), **facts))
        pixels = [k for _, k in points]
        curves = [dict(order=self.order, fraction=f, value=float(v), statistic="mean_curve",
                       pixels=k) for f, v, k in zip(fractions, mean_curve, pixels)]
        if self.params["keep_per_image_curves"]:
            for idx, y, row in zip(prepared.indices, prepared.labels, conf):
                curves += [dict(order=self.order, fraction=f, value=float(v),
                                statistic="per_image", pixels=k, sample_id=f"img{int(idx):05d}",
                                target=int(y)) for f, v, k in zip(fractions, row, pixels)]
        summary = dict(auc=auc, n_images=len(prepared), n_images_requested=prepared.n_requested,
                       forward_passes=len(prepared) * len(points))
        return MetricResult(records=records, curves=curves, summary=summary)


@metric("deletion", groups="default",
        higher_is_better=False, category="perturbation", label="deletion AUC",
        place=3)
class Deletion(RiseMetric):
    """Deletion AUC (RISE): remove pixels most important first (zero encoding); lower is better."""

    name = "deletion"
    category = "perturbation"
    higher_is_better = False
    order = "deletion"
    description = ("deletion AUC (RISE): true-class confidence while removing pixels most "
                   "important first (zero encoding); lower is better")

    def substrate_name(self) -> str:
        return ZERO_ENCODING

    def _inputs(self, model, prepared, sl, x):
        return x, None  # pixels ranked < k are set to zero in the encoded space


@metric("insertion", groups="default",
        higher_is_better=True, category="perturbation", label="insertion AUC",
        place=4)
class Insertion(RiseMetric):
    """Insertion AUC (RISE): insert pixels most important first into a blurred image."""

    name = "insertion"
    category = "perturbation"
    higher_is_better = True
    order = "insertion"
    # an odd kernel has a centre pixel (an even one shifts the blurred copy by half a pixel);
    # sigma 0 divides by zero in the kernel
    PARAMETER_CHECKS = {**RiseMetric.PARAMETER_CHECKS, "blur_kernel": odd_integer(1, 255),
                        "blur_sigma": number(above=0), "blur_type": one_of(*BLUR_KERNELS),
                        "blur_padding": one_of(*BLUR_PADDINGS),
                        "blur_space": one_of(*BLUR_SPACES)}
    description = ("insertion AUC (RISE): true-class confidence while inserting pixels most "
                   "important first into a blurred copy of the image; higher is better")

    def __init__(self, n_images: int = 250, n_steps: int = 32, blur_kernel: int = 11,
                 blur_sigma: float = 5.0, keep_per_image_curves: bool = False,
                 blur_type: str = "rise", blur_padding: str = "replicate",
                 blur_space: str = "rgb", selection: str = DEFAULT_SELECTION):
        """The substrate is a blurred copy of the image.

        blur_type: ``"rise"`` — RISE's kernel (:func:`xai_bench.metrics.common.rise_kernel`:
        a ``blur_kernel``² delta Gaussian-filtered with std ``blur_sigma`` and reflecting
        edges; nearly a box at 11 px, σ 5); ``"gaussian"`` — a Gaussian sampled on
        ``blur_kernel`` offsets and normalised (this metric's kernel before the RISE kernel).
        blur_padding: ``"replicate"`` or ``"zeros"``. blur_space: ``"rgb"`` blurs the RGB
        image and then encodes it; ``"model"`` encodes first and blurs the model input.

        ``blur_padding="zeros", blur_space="model"`` is RISE exactly. The defaults keep RISE's
        kernel but replicate padding in RGB: at 32² inputs an 11 px kernel reaches 5 px into
        every border (about half of the pixels), and zero padding would pull all of them
        towards 0; and the B-cos encoding ``[r, g, b, 1-r, 1-g, 1-b]`` has no colour whose
        encoding is 0, so zeros in its model space are no image at all. For a mean/std encoded
        model (a kernel summing to 1) zero padding in model space is the same as padding the
        RGB image with the data mean colour."""
        if int(blur_kernel) < 1 or float(blur_sigma) < 0:
            raise ValueError("blur_kernel must be >= 1 and blur_sigma >= 0")
        super().__init__(n_images=n_images, n_steps=n_steps,
                         keep_per_image_curves=keep_per_image_curves, selection=selection,
                         blur_kernel=int(blur_kernel), blur_sigma=float(blur_sigma),
                         blur_type=check_choice("blur_type", blur_type, BLUR_KERNELS),
                         blur_padding=check_choice("blur_padding", blur_padding, BLUR_PADDINGS),
                         blur_space=check_choice("blur_space", blur_space, BLUR_SPACES))

    def substrate_name(self) -> str:
        p = self.params
        kernel = "RISE kernel" if p["blur_type"] == "rise" else "gaussian"
        space = "RGB image" if p["blur_space"] == "rgb" else "model input"
        return (f"blurred image ({kernel} {p['blur_kernel']}px, sigma {p['blur_sigma']:g}, "
                f"{p['blur_padding']} padding, blurred in the {space})")

    def _blur(self, images: torch.Tensor) -> torch.Tensor:
        p = self.params
        return gaussian_blur(images, p["blur_kernel"], p["blur_sigma"], kernel=p["blur_type"],
                             padding=p["blur_padding"])

    def _inputs(self, model, prepared, sl, x):
        if self.params["blur_space"] == "model":
            blurred = self._blur(x)
        else:
            blurred = model.encode(self._blur(prepared.images[sl].to(x.device)))
        return blurred, x  # start blurred, pixels ranked < k are the original
