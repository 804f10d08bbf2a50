"""Yeh et al. (2019)'s infidelity and max-sensitivity, computed through captum's own
implementations (``captum.metrics.infidelity`` and ``captum.metrics.sensitivity_max``;
definitions: docs/definitions.md, 'infidelity' and 'max_sensitivity').

- ``infidelity`` (category ``faithfulness``, as Quantus files it; lower is better): the
  expected squared error between ``map · I`` and ``f(x) - f(x - I)`` for Gaussian
  perturbations ``I`` of the model's input, ``f`` the logit of the explained class.
  ``normalize=True`` (our default; captum's is False) first rescales the map by the optimal
  factor, so the score does not depend on the map's units — needed to compare methods whose
  maps live on different scales.
- ``max_sensitivity`` (category ``robustness``; lower is better): the largest relative change
  ``||map(x + δ) - map(x)|| / ||map(x)||`` (Frobenius) over ``n_perturb_samples`` uniform
  perturbations ``δ`` in ``[-perturb_radius, perturb_radius]``, the method re-explaining every
  perturbed input for the same class.

Both work in the model's input space (``model.encode(images)``, the 6-channel ``[x, 1-x]``
encoding for B-cos models). The noise of image ``b`` is drawn from its own CPU generator,
seeded by the image's content (:func:`xai_bench.compute.seeding.content_seed`): the draws do
not depend on the batch, the device or captum's sub-batching, only on the image and ``seed``.

Maps are ``(B, H, W)``; captum's infidelity needs attributions of the input's shape, so the
map of a pixel is given to every channel of that pixel. That is the only choice a per-pixel
map supports, and with ``normalize=True`` the factor ``C`` it introduces cancels. The noise is
drawn independently per channel of the *encoded* input: drawing it on the RGB image and
encoding would perturb a B-cos input by ``[n, -n]``, whose product with a map repeated over
the channels is exactly zero — infidelity would then ignore the map altogether.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.contracts.metric import metric
from xai_bench.contracts.parameters import boolean, integer, number, one_of
from xai_bench.metrics.base import MetricResult, SampleMetric
from xai_bench.metrics.common import (
    DEFAULT_SELECTION, SELECTION_RULES, ImageSelection, attribute, image_batches,
    image_records, select_confident,
)

__all__ = ["Infidelity", "MaxSensitivity", "ImageNoise", "infidelity_scores",
           "max_sensitivity_scores"]


class ImageNoise:
    """Seeded per-image noise for captum's perturbation functions.

    captum repeats every input ``k`` times (``repeat_interleave``: rows ``b*k … b*k+k-1`` are
    image ``b``) and calls the perturbation function once per sub-batch of samples; each
    image's generator continues across the calls, so sample ``j`` of image ``b`` is draw ``j``
    of that image's stream however captum cuts the samples."""

    def __init__(self, x: torch.Tensor, seed: int, what: str):
        self.n_images = x.shape[0]
        self.shape = tuple(x.shape[1:])
        self.generators = [cpu_generator(derive_seed(what, content_seed(img, seed)))
                           for img in x]

    def draw(self, rows: int, kind: str) -> torch.Tensor:
        """``(rows, *shape)`` float32 draws on the CPU: standard normal (``kind="normal"``) or
        uniform in [-1, 1) (``"uniform"``)."""
        if rows % self.n_images:
            raise RuntimeError(f"captum passed {rows} rows for {self.n_images} images")
        k = rows // self.n_images
        out = torch.empty((rows, *self.shape), dtype=torch.float32)
        for r in range(rows):
            g = self.generators[r // k]
            if kind == "normal":
                out[r] = torch.randn(self.shape, generator=g, dtype=torch.float32)
            else:
                out[r] = torch.rand(self.shape, generator=g, dtype=torch.float32) * 2 - 1
        return out


def _sub_batch(batch_size: int, n_images: int, n_samples: int) -> int:
    """captum's ``max_examples_per_batch``: as many perturbed copies per forward as
    ``batch_size`` allows, at least one sample of every image, at most all of them (captum
    clamps to the same range but warns outside it)."""
    return n_images * min(max(int(batch_size) // n_images, 1), int(n_samples))


def logit_of(model, x: torch.Tensor | None = None):
    """captum's ``forward_func``: the model's logits in float64 (captum picks the target).
    captum's infidelity forwards the unperturbed batch again with every sub-batch of samples;
    the logits of ``x`` itself are computed once and reused (the same batch, the same
    numbers), which halves the forwards at one sample per image and sub-batch."""
    kept = {}

    def forward(inputs):
        if x is not None and inputs is x:
            if "x" not in kept:
                kept["x"] = model(x).double()
            return kept["x"]
        return model(inputs).double()
    return forward


def infidelity_scores(model, x, targets, maps, *, n_perturb_samples: int, noise_std: float,
                      normalize: bool, seed: int, batch_size: int) -> torch.Tensor:
    """captum's infidelity of ``maps (B, H, W)`` for ``x`` (encoded) and ``targets``, the map
    repeated over the channels, Gaussian noise of ``noise_std`` seeded per image. ``(B,)``
    float64 on the CPU."""
    from captum.metrics import infidelity

    noise = ImageNoise(x, seed, "infidelity")

    def perturb(inputs):
        i = (noise.draw(inputs.shape[0], "normal") * float(noise_std)).to(inputs)
        return i, inputs - i

    attributions = maps.to(x.device, torch.float64)[:, None].expand(x.shape)
    with torch.no_grad():
        out = infidelity(logit_of(model, x), perturb, x, attributions, target=targets,
                         n_perturb_samples=int(n_perturb_samples),
                         max_examples_per_batch=_sub_batch(batch_size, x.shape[0],
                                                           n_perturb_samples),
                         normalize=bool(normalize))
    return out.detach().double().cpu()


def max_sensitivity_scores(method, model, x, targets, *, n_perturb_samples: int,
                           perturb_radius: float, seed: int, batch_size: int) -> torch.Tensor:
    """captum's max-sensitivity of ``method`` at ``x`` (encoded) for ``targets``: uniform
    noise in ``[-perturb_radius, perturb_radius]`` seeded per image, Frobenius norm. The
    unperturbed maps come from :func:`~xai_bench.metrics.common.attribute` (shared with the
    other metrics of a run). ``(B,)`` float64 on the CPU."""
    from captum.metrics import sensitivity_max

    noise = ImageNoise(x, seed, "max_sensitivity")

    def perturb(inputs, radius):
        return inputs + (noise.draw(inputs.shape[0], "uniform") * float(radius)).to(inputs)

    def explain(inputs, target):
        # captum passes the unperturbed batch as a tuple and reads the answer as one (like
        # its own attribution methods), the perturbed batches as a tensor
        if isinstance(inputs, tuple):
            if inputs[0] is not x:
                raise RuntimeError("captum asked for the maps of an unexpected batch")
            return (attribute(method, model, x, target).double(),)
        maps = method(model, inputs, target)
        if tuple(maps.shape) != (inputs.shape[0], *inputs.shape[2:]):
            raise RuntimeError(f"method '{getattr(method, 'name', method)}' returned maps of "
                               f"shape {tuple(maps.shape)} for inputs {tuple(inputs.shape)}")
        return maps.detach().double()

    out = sensitivity_max(explain, x, perturb_func=perturb, perturb_radius=float(perturb_radius),
                          n_perturb_samples=int(n_perturb_samples), norm_ord="fro",
                          max_examples_per_batch=_sub_batch(batch_size, x.shape[0],
                                                            n_perturb_samples),
                          target=targets)
    return out.detach().double().cpu()


@dataclass
class _Images:
    selection: ImageSelection
    seed: int

    def __len__(self) -> int:
        return len(self.selection)


class _PerImage(SampleMetric):
    """Shared harness: the most confident correct images, one score per image in batches."""

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32,
                seed=None) -> _Images:
        return _Images(select_confident(model, dataset, self.params["n_images"], device=device,
                                         batch_size=batch_size,
                                         selection=self.params["selection"]), self._seed(seed))

    def score_batch(self, model, method, x, targets, seed, batch_size) -> torch.Tensor:
        raise NotImplementedError

    def evaluate_part(self, model, method, prepared: _Images, start: int, stop: int, *,
                      device="cpu", batch_size: int = 32) -> dict:
        """``scores`` (float64) of the images ``start:stop``."""
        sel = prepared.selection
        scores = torch.empty(stop - start, dtype=torch.float64)
        with eval_mode(model):
            for sl, x, targets in image_batches(model, sel, start, stop, batch_size, device):
                scores[sl.start - start:sl.stop - start] = self.score_batch(
                    model, method, x, targets, prepared.seed, batch_size)
        return {"scores": scores}

    def reduce(self, model, prepared: _Images, part: dict, *, device="cpu") -> MetricResult:
        sel, scores = prepared.selection, part["scores"]
        records = image_records(sel, scores, statistic=self.name)
        summary = dict(mean=float(scores.mean()) if len(scores) else float("nan"),
                       n_images=len(sel), n_images_requested=sel.n_requested,
                       seed=prepared.seed)
        return MetricResult(records=records, curves=[], summary=summary)


@metric("infidelity", higher_is_better=False, category="faithfulness",
        label="infidelity")
class Infidelity(_PerImage):
    """Infidelity (Yeh et al., 2019) through ``captum.metrics.infidelity``: Gaussian noise in
    the model's input space, the logit of the true class."""

    name = "infidelity"
    category = "faithfulness"
    higher_is_better = False
    description = ("infidelity (Yeh et al. 2019, captum): squared error between map·noise and "
                   "the logit's drop under Gaussian input noise, map optimally rescaled "
                   "(lower: more faithful)")
    PARAMETER_CHECKS = {"n_images": integer(1), "n_perturb_samples": integer(1),
                        "noise_std": number(above=0), "normalize": boolean(),
                        "seed": integer(), "selection": one_of(*SELECTION_RULES)}

    def __init__(self, n_images: int = 250, n_perturb_samples: int = 10,
                 noise_std: float = 0.003, normalize: bool = True, seed: int = 0,
                 selection: str = DEFAULT_SELECTION):
        super().__init__(n_images=n_images, n_perturb_samples=n_perturb_samples,
                         noise_std=noise_std,
                         normalize=normalize, seed=seed, selection=selection)

    def score_batch(self, model, method, x, targets, seed, batch_size):
        maps = attribute(method, model, x, targets)
        p = self.params
        return infidelity_scores(model, x, targets, maps,
                                 n_perturb_samples=p["n_perturb_samples"],
                                 noise_std=p["noise_std"], normalize=p["normalize"],
                                 seed=seed, batch_size=batch_size)


@metric("max_sensitivity", higher_is_better=False, category="robustness",
        label="max-sensitivity", reexplains=True)
class MaxSensitivity(_PerImage):
    """Max-sensitivity (Yeh et al., 2019) through ``captum.metrics.sensitivity_max``: the
    method re-explains uniformly perturbed inputs for the same class."""

    name = "max_sensitivity"
    category = "robustness"
    higher_is_better = False
    reexplains = True
    description = ("max-sensitivity (Yeh et al. 2019, captum): largest relative change of the "
                   "map under uniform input noise (lower: more robust)")
    PARAMETER_CHECKS = {"n_images": integer(1), "n_perturb_samples": integer(1),
                        "perturb_radius": number(above=0), "seed": integer(),
                        "selection": one_of(*SELECTION_RULES)}

    def __init__(self, n_images: int = 32, n_perturb_samples: int = 10,
                 perturb_radius: float = 0.02, seed: int = 0, selection: str = DEFAULT_SELECTION):
        super().__init__(n_images=n_images, n_perturb_samples=n_perturb_samples,
                         perturb_radius=perturb_radius,
                         seed=seed, selection=selection)

    def score_batch(self, model, method, x, targets, seed, batch_size):
        p = self.params
        return max_sensitivity_scores(method, model, x, targets,
                                      n_perturb_samples=p["n_perturb_samples"],
                                      perturb_radius=p["perturb_radius"], seed=seed,
                                      batch_size=batch_size)
