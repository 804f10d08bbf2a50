"""What ``xai-bench explain`` shows: every chosen method's map of a model's images, computed
through the same method entries as ``xai-bench run`` (:func:`xai_bench.run.resolve.resolve_methods`:
a class is constructed, a plain ``@xai_bench.method`` function bound to its parameters, both
checked by the method contract), so that any installed method — built-in or plugin, class or
function — is drawn, and one that does not apply to the model is left out with its reason.

The figure itself is :mod:`xai_bench.outputs.explain_figure`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xai_bench.compute.bcos_colour import bcos_colour_image, dynamic_weights, has_colour_image
from xai_bench.contracts.cards import Cards
from xai_bench.contracts.method import method_card
from xai_bench.contracts.model import CAPABILITY_MEMBERS, capabilities, model_attr, model_name
from xai_bench.errors import NotApplicable, one_line
from xai_bench.outputs.explain_figure import draw_explanation, symmetric_limit
from xai_bench.outputs.presentation import Presentation

__all__ = ["Explanation", "explain_batch", "explanation_figure", "inapplicable_reason",
           "symmetric_limit", "weights_description", "load_images"]

#: the seed every method's maps are computed with, so that a stochastic method (SmoothGrad,
#: RISE, LIME) draws the same figure each time
EXPLAIN_SEED = 0


@dataclass
class Explanation:
    """The maps of one batch of images, and what could not be drawn, with the reasons."""

    images: torch.Tensor                   # (B, 3, H, W) in [0, 1], on the CPU
    predicted: torch.Tensor                # (B,) the model's classes
    targets: torch.Tensor                  # (B,) the explained classes
    labels: torch.Tensor | None = None     # (B,) the true classes, where known
    maps: dict = field(default_factory=dict)      # method name -> (B, H, W) float, CPU
    skipped: list = field(default_factory=list)   # [(method, reason)]: does not apply
    failed: list = field(default_factory=list)    # [(method, reason)]: raised or not loaded
    colour: list | None = None             # B-cos colour images (H, W, 4), or None
    presentation: Presentation = field(default_factory=Presentation)

    @property
    def methods(self) -> list:
        """The drawn methods, in the order of the figure."""
        return list(self.maps)


def inapplicable_reason(method, model) -> str:
    """Why ``method`` (a CheckedMethod) does not apply to ``model``, in one line."""
    have = capabilities(model)
    missing = [c for c in method.card.requires if c not in have]
    family = model_attr(model, "family")
    who = f"{family} model '{model_name(model)}'"
    if missing:
        needs = " and ".join(missing) + (" capabilities" if len(missing) > 1 else " capability")
        has = f"it has {', '.join(have)}" if have else \
            f"it has none of {', '.join(CAPABILITY_MEMBERS)}"
        return f"needs the {needs}, which {who} does not have ({has})"
    return f"its applies_to() refuses {who}"


def explain_batch(model, images: torch.Tensor, entries: list, targets: torch.Tensor | None = None,
                  labels: torch.Tensor | None = None, device: str = "cpu",
                  log=None) -> Explanation:
    """Every method entry's maps of ``images`` (RGB in [0, 1]) for ``targets`` (default: the
    model's predictions). ``entries`` are :class:`~xai_bench.run.resolve.MethodEntry` s: one
    that failed to load, raises, or breaks the method contract is listed in ``failed`` with
    its one-line reason; one that does not apply, in ``skipped``. The model is used in eval
    mode on ``device``; ``log(message)``, if given, hears each method's time as it ends
    (the slow ones take minutes on a CPU)."""
    model = model.eval().to(device)
    x = model.encode(images.to(device))
    with torch.no_grad():
        predicted = model(x).argmax(1)
    targets = predicted.clone() if targets is None else targets.to(device)
    presentation = Presentation(Cards({"methods": {
        e.name: method_card(e.method, e.name).as_dict() for e in entries if e.method is not None}}))
    result = Explanation(images.cpu(), predicted.cpu(), targets.cpu(),
                         None if labels is None else labels.cpu(), presentation=presentation)
    maps = {}
    for entry in entries:
        if entry.error is not None:
            result.failed.append((entry.name, entry.error))
            continue
        method = entry.method
        if not method.applies_to(model):
            result.skipped.append((entry.name, inapplicable_reason(method, model)))
            continue
        torch.manual_seed(EXPLAIN_SEED)
        start = time.perf_counter()
        try:
            maps[entry.name] = method(model, x, targets).float().cpu()
            if log is not None:
                log(f"{entry.name}: {time.perf_counter() - start:.1f} s")
        except NotApplicable as e:  # a method that finds out only when it runs
            result.skipped.append((entry.name, one_line(e)))
        except Exception as e:  # noqa: BLE001 - one method's failure leaves the others drawn
            result.failed.append((entry.name, f"{type(e).__name__}: {one_line(e)}"))
    result.maps = {name: maps[name] for name in presentation.order_methods(maps)}
    if has_colour_image(model):
        weights = dynamic_weights(model, x, targets).detach().cpu()
        result.colour = [bcos_colour_image(w, xi) for w, xi in zip(weights, x.detach().cpu())]
    return result


def weights_description(model, checkpoint=None, default_info: dict | None = None) -> str:
    """Where the model's weights come from, in a few words: the checkpoint's file name (never
    its directory: a title is no place for a machine's paths), whether it was shipped with
    xai-bench or trained and cached on first use, and what it was trained on."""
    info = getattr(model, "checkpoint_info", None) or {}
    if checkpoint is not None:
        source = f"weights: {Path(checkpoint).name}"
    elif default_info is not None:
        how = "shipped with xai-bench" if default_info.get("shipped") else \
            "trained on first use, cached"
        source = f"weights: {Path(default_info['checkpoint']).name} ({how})"
    else:
        source = "weights: as given"
    trained = []
    if info.get("dataset"):
        trained.append(f"trained on {info['dataset']}")
    accuracy = (info.get("metrics") or {}).get("test_accuracy")
    if accuracy is None and default_info is not None:
        accuracy = default_info.get("test_accuracy")
    if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool):
        trained.append(f"test accuracy {100 * accuracy:.1f} %")
    return source + (f"; {', '.join(trained)}" if trained else "")


def explanation_figure(model, images: torch.Tensor, targets: torch.Tensor | None, methods: list,
                       class_names=None, out: Path | None = None, titles=None,
                       labels: torch.Tensor | None = None, heading: str | None = None):
    """Compute and draw: ``methods`` are method objects or entries (any callable
    ``method(model, x, targets)``: checked by the method contract). Returns ``(figure,
    explanation)``; the figure is saved to ``out`` (and closed) if given."""
    from xai_bench.contracts.method import check_method
    from xai_bench.run.resolve import MethodEntry

    entries = []
    for m in methods:
        if not isinstance(m, MethodEntry):
            checked = check_method(m)
            m = MethodEntry(checked.name, checked)
        entries.append(m)
    explanation = explain_batch(model, images, entries, targets, labels)
    heading = heading or model_name(model)
    fig = draw_explanation(explanation, class_names=class_names, titles=titles, heading=heading,
                           out=out)
    return fig, explanation


def load_images(paths, size) -> torch.Tensor:
    """Image files -> (B, 3, H, W) in [0, 1], resized (shorter side) and centre-cropped."""
    from torchvision.transforms.v2 import functional as TF

    from xai_bench.data.folders import read_rgb

    out = []
    for p in paths:
        image = read_rgb(p)
        image = TF.center_crop(TF.resize(image, min(size), antialias=True), list(size))
        out.append(image.float() / 255.0)
    return torch.stack(out)
