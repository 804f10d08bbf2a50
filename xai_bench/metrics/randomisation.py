"""The repaired model-parameter randomisation tests of Hedström et al. (2024), "Sanity Checks
Revisited" (category ``sanity``, next to ``parameter_randomisation``; definitions:
docs/definitions.md, 'efficient_mprt' and 'smooth_mprt').

- ``efficient_mprt`` (eMPRT; higher is better): the relative rise in explanation complexity
  when the whole model is randomised, ``(H(map of the randomised model) - H(map of the
  trained model)) / H(map of the trained model)``, ``H`` the discrete entropy of the map's
  histogram (``n_bins`` equal-width bins over the map's own range; Quantus's default 100). A
  method that explains the model gives noisier maps for a random model (> 0); a
  model-independent map gives exactly 0.
- ``smooth_mprt`` (sMPRT; lower is better): the Spearman rank correlation of the absolute
  maps of the trained and of the randomised model (as ``parameter_randomisation``), each map
  first denoised as the mean of the method's maps of ``nr_samples`` copies of the input
  (``nr_samples - 1`` with Gaussian noise of standard deviation ``noise_magnitude × (max -
  min)`` of the input, and the input itself, as Quantus). A model-independent map gives 1.

Both compare with the fully randomised model only (Quantus: ``skip_layers=True`` for eMPRT,
``return_last_correlation=True`` for sMPRT). The randomised model is
``parameter_randomisation``'s last stage: a deep copy with every stage of
:func:`~xai_bench.metrics.sanity.randomisation_stages` re-drawn by
:func:`~xai_bench.metrics.sanity.randomise_parameters` (seeded normal draws with each tensor's
own mean and standard deviation; tokeniser and position embedding kept), built once in
``prepare``. Quantus instead calls ``reset_parameters()`` of every module that has one
(torch's default initialisation; LayerNorms become the identity, parameters of modules without
the method — e.g. B-cos linear layers, tokens — stay trained).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch

from xai_bench.compute.modes import eval_mode
from xai_bench.compute.seeding import content_seed, cpu_generator, derive_seed
from xai_bench.contracts.metric import metric
from xai_bench.contracts.model import model_name
from xai_bench.contracts.parameters import integer, number, one_of
from xai_bench.metrics.base import MetricNotApplicable, MetricResult, SampleMetric
from xai_bench.metrics.common import DEFAULT_SELECTION, SELECTION_RULES, ImageSelection, \
    attribute
from xai_bench.metrics.random_weights import require_trained_weights, sanity_images, \
    selected_from
from xai_bench.metrics.sanity import (
    randomisation_stages, randomise_parameters, require_parameters, spearman,
)

__all__ = ["EfficientMPRT", "SmoothMPRT", "RandomisedModel", "fully_randomised",
           "discrete_entropy", "smoothed_maps"]


def fully_randomised(model, x, seed: int):
    """A deep copy of ``model`` with every stage of ``randomisation_stages(model, x)``
    randomised (``parameter_randomisation``'s last stage, same draws for the same ``seed``)."""
    stages = randomisation_stages(model, x)
    if not stages:
        raise MetricNotApplicable(f"model '{model_name(model)}' has no randomisable stage")
    randomised = copy.deepcopy(model)
    for _, names in stages:
        randomise_parameters(randomised, names, seed)
    return randomised.eval()


def discrete_entropy(maps: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Entropy (nats) of the histogram of each map ``(B, ...)`` over ``n_bins`` equal-width
    bins spanning the map's range — ``numpy.histogram`` and ``scipy.stats.entropy`` on the
    map's values in its own dtype, as Quantus's ``discrete_entropy``. ``(B,)`` float64."""
    values = maps.detach().cpu().numpy()
    return torch.tensor([float(scipy.stats.entropy(np.histogram(m.ravel(), bins=n_bins)[0]))
                         for m in values], dtype=torch.float64)


@dataclass
class RandomisedModel:
    """Prepared images of one model and its fully randomised copy (built once)."""

    selection: ImageSelection
    randomised: torch.nn.Module
    seed: int
    selected_from: str = ""        # the records' column of that name (selected_from())

    def __len__(self) -> int:
        return len(self.selection)


class _Randomised(SampleMetric):
    """Shared harness: select images, randomise the whole model once, score per image."""

    second_model = True
    #: why the metric means nothing on random weights (None: it runs on them, with the images
    #: sanity_images picks there)
    needs_trained_weights: str | None = None

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32,
                seed=None) -> RandomisedModel:
        seed = self._seed(seed)
        require_parameters(model)
        if self.needs_trained_weights:
            require_trained_weights(model, self.name, self.needs_trained_weights)
        selection = sanity_images(model, dataset, self.params["n_images"], device=device,
                                  batch_size=batch_size, selection=self.params["selection"])
        x = model.encode(selection.images[:1].to(device))
        return RandomisedModel(selection, fully_randomised(model, x, seed), seed,
                               selected_from(model))

    def score_batch(self, model, randomised, method, x, targets, seed) -> dict:
        raise NotImplementedError

    def evaluate_part(self, model, method, prepared: RandomisedModel, start: int, stop: int,
                      *, device="cpu", batch_size: int = 32) -> dict:
        sel = prepared.selection
        randomised = prepared.randomised.to(device)
        out: dict = {}
        with eval_mode(model), eval_mode(randomised):
            for first in range(start, stop, batch_size):
                sl = slice(first, min(first + batch_size, stop))
                x = model.encode(sel.images[sl].to(device))
                got = self.score_batch(model, randomised, method, x, sel.labels[sl].to(device),
                                       prepared.seed)
                for key, value in got.items():
                    out.setdefault(key, []).append(value.double().cpu())
        return {k: torch.cat(v) if v else torch.empty(0, dtype=torch.float64)
                for k, v in out.items()} or {"scores": torch.empty(0, dtype=torch.float64)}

    def reduce(self, model, prepared: RandomisedModel, part: dict, *,
               device="cpu") -> MetricResult:
        sel = prepared.selection
        scores = part["scores"]
        extra = [k for k in part if k != "scores"]
        records = []
        for i, (idx, y) in enumerate(zip(sel.indices.tolist(), sel.labels.tolist())):
            row = dict(sample_id=f"img{idx:05d}", target=int(y), value=float(scores[i]),
                       source_index=idx, explained="true class",
                       selected_from=prepared.selected_from, statistic=self.name)
            row.update({k: float(part[k][i]) for k in extra})
            records.append(row)
        summary = dict(mean=float(scores.mean()) if len(scores) else float("nan"),
                       n_images=len(sel), n_images_requested=sel.n_requested,
                       seed=prepared.seed)
        return MetricResult(records=records, curves=[], summary=summary)


@metric("efficient_mprt", higher_is_better=True, category="sanity",
        label="relative rise in map entropy\nunder model randomisation", second_model=True)
class EfficientMPRT(_Randomised):
    """eMPRT (Hedström et al., 2024): relative rise of the map's histogram entropy from the
    trained to the fully randomised model."""

    name = "efficient_mprt"
    category = "sanity"
    higher_is_better = True
    description = ("efficient MPRT (Hedström et al. 2024): relative rise of the map's histogram "
                   "entropy when the whole model is randomised (higher: more model-sensitive; "
                   "model-independent: 0)")
    PARAMETER_CHECKS = {"n_images": integer(1), "n_bins": integer(2), "seed": integer(),
                        "selection": one_of(*SELECTION_RULES)}
    needs_trained_weights = ("it measures how much structure a trained model's maps lose "
                             "when the model is randomised, and re-randomising random weights "
                             "leaves every method near 0")

    def __init__(self, n_images: int = 32, n_bins: int = 100, seed: int = 0,
                 selection: str = DEFAULT_SELECTION):
        super().__init__(n_images=n_images, n_bins=n_bins, seed=seed, selection=selection)

    def score_batch(self, model, randomised, method, x, targets, seed) -> dict:
        n_bins = self.params["n_bins"]
        trained = discrete_entropy(attribute(method, model, x, targets), n_bins)
        random = discrete_entropy(attribute(method, randomised, x, targets), n_bins)
        # a constant trained map has entropy 0: the rise is undefined (Quantus gives inf or
        # nan); reduce() leaves such images out
        return {"scores": (random - trained) / trained, "entropy_trained": trained,
                "entropy_randomised": random}

    def reduce(self, model, prepared: RandomisedModel, part: dict, *,
               device="cpu") -> MetricResult:
        """As every randomisation metric, without the images whose trained map is constant
        (entropy 0: no relative rise is defined; counted in ``summary["n_undefined"]``). When
        every map is constant (the ``uniform`` baseline), the cell does not apply."""
        defined = torch.isfinite(part["scores"])
        if not bool(defined.any()):
            raise MetricNotApplicable(
                "every map is constant on the selected images (entropy 0), so eMPRT's relative "
                "rise in entropy is undefined; a constant map has no structure to lose")
        result = super().reduce(model, prepared, part, device=device)
        if bool(defined.all()):
            return result
        result.records = [r for r, ok in zip(result.records, defined.tolist()) if ok]
        result.summary["mean"] = float(part["scores"][defined].mean())
        result.summary["n_undefined"] = int((~defined).sum())
        return result


def smoothed_maps(method, models, x, targets, *, nr_samples: int, noise_magnitude: float,
                  seed: int) -> list:
    """For each model of ``models``, the mean of the method's maps of ``nr_samples`` copies of
    ``x``: ``nr_samples - 1`` noisy ones (Gaussian, standard deviation ``noise_magnitude ×
    (max - min)`` of each image; image ``b``'s noise seeded by its content, the same for every
    model) and ``x`` itself (through :func:`attribute`, shared with other metrics). ``[(B, H,
    W) float64, ...]``."""
    generators = [cpu_generator(derive_seed("smooth_mprt", content_seed(img, seed)))
                  for img in x]
    flat = x.detach().reshape(x.shape[0], -1)
    std = (noise_magnitude * (flat.max(1).values - flat.min(1).values)).view(-1, 1, 1, 1)
    sums = [attribute(method, m, x, targets).double() for m in models]
    for _ in range(int(nr_samples) - 1):
        z = torch.stack([torch.randn(tuple(x.shape[1:]), generator=g, dtype=torch.float32)
                         for g in generators]).to(x.device)
        noisy = x + z.to(x.dtype) * std
        for i, m in enumerate(models):
            maps = method(m, noisy, targets)
            if tuple(maps.shape) != (x.shape[0], *x.shape[2:]):
                raise RuntimeError(f"method '{getattr(method, 'name', method)}' returned maps "
                                   f"of shape {tuple(maps.shape)} for inputs {tuple(x.shape)}")
            sums[i] = sums[i] + maps.detach().double()
    return [s / int(nr_samples) for s in sums]


@metric("smooth_mprt", higher_is_better=False, category="sanity",
        label="Spearman ρ of smoothed maps with\nthe randomised model's", second_model=True,
        reexplains=True)
class SmoothMPRT(_Randomised):
    """sMPRT (Hedström et al., 2024): Spearman correlation of |map| of the trained and the fully
    randomised model, both maps averaged over noisy copies of the input."""

    name = "smooth_mprt"
    category = "sanity"
    higher_is_better = False
    reexplains = True
    description = ("smooth MPRT (Hedström et al. 2024): Spearman correlation of |map| of the "
                   "trained and the fully randomised model, maps averaged over noisy inputs "
                   "(lower: more model-sensitive; model-independent: 1)")
    PARAMETER_CHECKS = {"n_images": integer(1), "nr_samples": integer(1),
                        "noise_magnitude": number(low=0), "seed": integer(),
                        "selection": one_of(*SELECTION_RULES)}

    def __init__(self, n_images: int = 8, nr_samples: int = 50, noise_magnitude: float = 0.1,
                 seed: int = 0, selection: str = DEFAULT_SELECTION):
        super().__init__(n_images=n_images, nr_samples=nr_samples,
                         noise_magnitude=noise_magnitude, seed=seed, selection=selection)

    def score_batch(self, model, randomised, method, x, targets, seed) -> dict:
        p = self.params
        trained, random = smoothed_maps(method, [model, randomised], x, targets,
                                        nr_samples=p["nr_samples"],
                                        noise_magnitude=float(p["noise_magnitude"]), seed=seed)
        return {"scores": spearman(trained.abs(), random.abs()),
                "rho_signed": spearman(trained, random)}
