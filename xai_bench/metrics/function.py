"""A plain function as a metric: ``f(model, x, targets, maps, *, param=default) -> (B,)``,
declared with ``@xai_bench.metric(higher_is_better=..., category=..., label=...)``.

The function scores precomputed maps; the harness does the rest, exactly as for the built-in
image metrics: ``prepare`` selects the ``n_images`` most confidently and correctly classified
test images (the selection of ``pixel_perturbation``, with object masks where the function
declares ``needs_masks``), the method explains them in batches of ``batch_size`` (maps shared
with every other metric of the run: explain once), the function scores each batch in the
model's input space (``x`` encoded, ``targets`` the true classes, ``maps`` ``(B, H, W)``;
``masks=`` ``(B, H, W)`` bool with ``needs_masks``), and every image is one record. A cell is
computed in parts like any sample metric.
"""

from __future__ import annotations

import torch

from xai_bench.compute.modes import eval_mode
from xai_bench.contracts.members import REQUIRED
from xai_bench.contracts.metric import function_parameters, metric_card
from xai_bench.metrics.base import MetricNotApplicable, MetricResult, SampleMetric
from xai_bench.metrics.common import (
    SELECTION_RULES, attribute, check_choice, image_batches, image_records,
    select_confident,
)

__all__ = ["FunctionMetric"]


class FunctionMetric(SampleMetric):
    """The metric of a declared function ``fn`` with parameters ``params`` (its keyword
    arguments and ``n_images``); its declarations are the function's."""

    def __init__(self, fn, name: str | None = None, **params):
        card = metric_card(fn, name)
        self.fn, self.name = fn, card.name
        for key in ("category", "higher_is_better", "label", "unit", "chance", "place",
                    "description", "needs_masks"):
            setattr(self, key, getattr(card, key))
        self.function = True
        known = function_parameters(fn)
        values = {k: v for k, v in known.items() if v is not REQUIRED}
        values.update(params)
        if int(values["n_images"]) < 1:
            raise ValueError(f"n_images must be >= 1, got {values['n_images']}")
        values["n_images"] = int(values["n_images"])
        check_choice("selection", values["selection"], SELECTION_RULES)
        super().__init__(**values)

    def prepare(self, model, dataset, *, device="cpu", batch_size: int = 32, seed=None):
        return select_confident(model, dataset, self.params["n_images"], device=device,
                                batch_size=batch_size, with_masks=self.needs_masks,
                                selection=self.params["selection"])

    def _kwargs(self) -> dict:
        return {k: v for k, v in self.params.items() if k not in ("n_images", "selection")}

    def evaluate_part(self, model, method, prepared, start: int, stop: int, *, device="cpu",
                      batch_size: int = 32) -> dict:
        """``scores`` (float64) of the images ``start:stop``."""
        if self.needs_masks and prepared.masks is None:
            raise MetricNotApplicable("the data set has no object masks")
        scores = torch.empty(stop - start, dtype=torch.float64)
        with eval_mode(model):
            for sl, x, targets in image_batches(model, prepared, start, stop, batch_size,
                                                device):
                maps = attribute(method, model, x, targets)
                extra = {"masks": prepared.masks[sl].to(device)} if self.needs_masks else {}
                out = self.fn(model, x, targets, maps, **extra, **self._kwargs())
                out = torch.as_tensor(out).detach().reshape(-1)
                if out.shape[0] != sl.stop - sl.start:
                    raise ValueError(f"metric '{self.name}' returned {out.shape[0]} scores for "
                                     f"{sl.stop - sl.start} images; return one per image (B,)")
                scores[sl.start - start:sl.stop - start] = out.double().cpu()
        return {"scores": scores}

    def reduce(self, model, prepared, part: dict, *, device="cpu") -> MetricResult:
        scores = part["scores"]
        records = image_records(prepared, scores)
        summary = dict(mean=float(scores.mean()) if len(scores) else float("nan"),
                       n_images=len(prepared), n_images_requested=prepared.n_requested)
        return MetricResult(records=records, curves=[], summary=summary)

