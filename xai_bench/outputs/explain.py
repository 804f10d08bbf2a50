"""Explanation images: contribution maps on a blue-white-red map and B-cos colour images.

- maps are clamped to ``[-v, v]`` with ``v`` the 99.9th percentile of ``|map|`` (each map
  normalised independently, as in the paper);
- B-cos colour images (Böhle et al.): per pixel ``rgb = W[:3] / (W[:3] + W[3:])`` after
  clamping the 6-channel weights ``W`` at 0, opacity from ``‖W‖`` scaled by its 99.5th
  percentile, shown only where the contribution is positive.

Each map's title is its method's declared label (with "†" when class-agnostic), from the
:class:`~xai_bench.outputs.presentation.Presentation` given (by default the methods' own
declarations).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from xai_bench.compute.bcos_colour import (  # noqa: E402
    bcos_colour_image, dynamic_weights, has_colour_image,
)
from xai_bench.contracts.cards import Cards  # noqa: E402
from xai_bench.contracts.method import method_card  # noqa: E402
from xai_bench.outputs.presentation import AGNOSTIC_NOTE, Presentation  # noqa: E402


def symmetric_limit(attribution: torch.Tensor, percentile: float = 99.9) -> float:
    v = float(np.percentile(attribution.abs().flatten().cpu().numpy(), percentile))
    return v if v > 0 else 1.0


def explanation_figure(model, images: torch.Tensor, targets: torch.Tensor, methods: list,
                       class_names=None, out: Path | None = None, titles=None,
                       presentation: Presentation | None = None):
    """One row per image: the input, (B-cos) the colour image of W(x), then every applicable
    method's map, titled by its declared label. Returns the figure (saved to ``out`` if
    given)."""
    x = model.encode(images)
    applicable = [m for m in methods if m.applies_to(model)]
    if presentation is None:  # what the methods themselves declare
        cards = {m.name: method_card(m).as_dict() for m in applicable}
        presentation = Presentation(Cards({"methods": cards}))
    maps = {m.name: m(model, x, targets).cpu() for m in applicable}
    show_colour = has_colour_image(model)
    weights = dynamic_weights(model, x, targets).cpu() if show_colour else None
    cols = 1 + int(show_colour) + len(applicable)
    fig, axes = plt.subplots(len(images), cols, figsize=(1.9 * cols, 2.0 * len(images)),
                             squeeze=False)
    for i in range(len(images)):
        label = class_names[int(targets[i])] if class_names else str(int(targets[i]))
        row = axes[i]
        row[0].imshow(images[i].permute(1, 2, 0).cpu().clamp(0, 1).numpy())
        row[0].set_title((titles[i] + "\n" if titles else "") + f"explained: {label}",
                         fontsize=7)
        col = 1
        if show_colour:
            row[col].imshow(np.zeros((*images.shape[-2:], 3)))
            row[col].imshow(bcos_colour_image(weights[i], x[i].detach().cpu()))
            row[col].set_title("W(x) colour", fontsize=7)
            col += 1
        for name, m in maps.items():
            v = symmetric_limit(m[i])
            row[col].imshow(m[i].numpy(), cmap="bwr", vmin=-v, vmax=v)
            row[col].set_title(presentation.method_label(name), fontsize=7)
            col += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if any(presentation.is_class_agnostic(name) for name in maps):
        fig.suptitle(AGNOSTIC_NOTE, fontsize=7)  # what the "†" of a title means
    fig.tight_layout()
    if out is not None:
        from xai_bench.storage import atomic_io

        atomic_io.write_figure(out, fig, dpi=150)
        plt.close(fig)
    return fig


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
