"""The ``xai-bench explain`` figure, drawn for a person (matplotlib, Agg).

One row per image: the image (titled with its true, predicted and explained class names), for
a B-cos model the colour image of its dynamic weights ``W(x)``, then one panel per method: the
image in grey with the map laid over it. The overlay's opacity grows with ``|map|``, so the
image shows through where a map is near 0:

- a signed map (any value below 0) on a diverging colour map centred at 0: red is evidence for
  the explained class, blue against;
- a map without sign (every value ≥ 0: rollout, absolute gradients) on a sequential one.

Each map is scaled to its own 99.9th percentile of ``|map|`` (as in the paper), which the
colour bars under the panels state with the convention. A method's panel is framed in its
declared colour and titled with its declared label (from its card, as in every other figure).
More than :data:`MAX_METHOD_COLUMNS` methods wrap onto further lines of the same image.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402

from xai_bench.outputs.presentation import AGNOSTIC_NOTE  # noqa: E402

__all__ = ["draw_explanation", "class_name", "symmetric_limit", "SIGNED_CMAP", "UNSIGNED_CMAP",
           "MAX_METHOD_COLUMNS", "COLOUR_PANEL_TITLE"]

#: methods per line of an image's row; more wrap onto the next line
MAX_METHOD_COLUMNS = 12
#: the overlay's opacity where ``|map|`` reaches its limit
MAX_ALPHA = 0.9
PANEL_IN = 1.45
#: heights (inches) of the colour bars' strip and of one line of notes under it
BARS_IN, NOTE_IN = 1.0, 0.17
COLOUR_PANEL_TITLE = "B-cos colour of W(x)"


def _alpha_colormap(base: str, alpha) -> ListedColormap:
    """``base`` with an opacity per level, so that the colour bar shows exactly the overlay."""
    colours = matplotlib.colormaps[base](np.linspace(0, 1, 256))
    colours[:, 3] = alpha(np.linspace(0, 1, 256))
    return ListedColormap(colours, name=f"{base}_overlay")


#: signed maps: red for, blue against, transparent at 0
SIGNED_CMAP = _alpha_colormap("RdBu_r", lambda t: MAX_ALPHA * np.abs(2 * t - 1) ** 0.5)
#: maps without sign: transparent at 0, opaque at the map's limit
UNSIGNED_CMAP = _alpha_colormap("viridis", lambda t: MAX_ALPHA * t ** 0.5)

SIGNED_NOTE = ("signed maps — red: evidence for the explained class, blue: evidence against; "
               "faint: near 0")
UNSIGNED_NOTE = "maps without sign (all ≥ 0) — brighter: more relevant; no colour: 0"
SCALE_NOTE = "each map scaled to its own 99.9th percentile of |map|"
COLOUR_NOTE = ("B-cos colour of W(x): per pixel, the colour the model's dynamic weights align "
               "with, shown where they add evidence for the explained class")


def class_name(index: int, class_names) -> str:
    """The name of class ``index`` (its index where the model and data carry no names)."""
    if class_names and 0 <= index < len(class_names):
        return str(class_names[index])
    return f"class {index}"


def _image_title(explanation, i: int, class_names, titles) -> str:
    predicted = int(explanation.predicted[i])
    target = int(explanation.targets[i])
    lines = [Path(str(titles[i])).name] if titles else [f"image {i + 1}"]
    if explanation.labels is not None:
        true = int(explanation.labels[i])
        lines.append(f"true: {class_name(true, class_names)}")
        wrong = " ✗" if true != predicted else ""
    else:
        wrong = ""
    lines.append(f"predicted: {class_name(predicted, class_names)}{wrong}")
    if target != predicted:
        lines.append(f"explained: {class_name(target, class_names)}")
    return "\n".join(lines)


def _grey(image) -> np.ndarray:
    """The image's luminance (H, W), under the overlay."""
    rgb = image.permute(1, 2, 0).clamp(0, 1).numpy()
    return rgb @ np.array([0.299, 0.587, 0.114])


def symmetric_limit(attribution, percentile: float = 99.9) -> float:
    """The ``percentile`` of ``|attribution|`` (1.0 for an all-zero map): each map is scaled
    to its own limit, as in the paper, so that one outlying pixel does not blank the rest."""
    v = float(np.percentile(attribution.abs().flatten().cpu().numpy(), percentile))
    return v if v > 0 else 1.0


def _draw_map(ax, image, m, signed: bool) -> None:
    ax.imshow(_grey(image), cmap="gray", vmin=0, vmax=1)
    v = symmetric_limit(m)
    if signed:
        ax.imshow(m.numpy(), cmap=SIGNED_CMAP, vmin=-v, vmax=v)
    else:
        ax.imshow(m.numpy(), cmap=UNSIGNED_CMAP, vmin=0, vmax=v)


def _frame(ax, colour: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        if colour:
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5)


def _legend(sub, width_in: float, signed: bool, unsigned: bool, notes: list) -> None:
    """Colour bars for the kinds of maps drawn (each titled with its convention), then the
    notes, under the panels. Placed by hand: a bar is a fixed strip, not a panel."""
    bars = [(SIGNED_CMAP, Normalize(-1, 1), [-1, 0, 1],
             ["−limit\nagainst", "0", "+limit\nfor"], SIGNED_NOTE)] if signed else []
    if unsigned:
        bars.append((UNSIGNED_CMAP, Normalize(0, 1), [0, 1], ["0", "limit"], UNSIGNED_NOTE))
    lines = sum(n.count("\n") + 1 for n in notes)
    bars_sub, notes_sub = sub.subfigures(2, 1, height_ratios=[BARS_IN, NOTE_IN * lines])
    bar_w, gap = min(0.42, 3.4 / width_in), min(0.08, 0.5 / width_in)
    x = (1 - len(bars) * bar_w - (len(bars) - 1) * gap) / 2
    for cmap, norm, ticks, labels, note in bars:
        ax = bars_sub.add_axes((x, 0.36, bar_w, 0.15))
        x += bar_w + gap
        bar = bars_sub.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=ax,
                                orientation="horizontal")
        bar.set_ticks(ticks, labels=labels, fontsize=7)
        ax.set_title(textwrap.fill(note, int(bar_w * width_in * 16)), fontsize=7)
    notes_sub.text(0.5, 0.5, "\n".join(notes), ha="center", va="center", fontsize=7)


def draw_explanation(explanation, class_names=None, titles=None, heading: str = "",
                     out=None):
    """The figure of an :class:`~xai_bench.outputs.explain.Explanation` (see the module doc);
    saved to ``out`` (and closed) if given. Returns the figure."""
    shown = explanation.presentation
    names = explanation.methods
    # a method's sign is read from all its maps, so that its column keeps one colour scale
    signed = {n: bool((explanation.maps[n] < 0).any()) for n in names}
    lead = 1 + int(explanation.colour is not None)  # the image (and the colour image)
    lines = max(1, math.ceil(len(names) / MAX_METHOD_COLUMNS))
    per_line = max(1, math.ceil(len(names) / lines))  # wrapped lines of even length
    n_images = len(explanation.images)
    cols, rows = lead + per_line, n_images * lines
    width = max(6.5, cols * PANEL_IN)
    notes = [SCALE_NOTE]
    if explanation.colour is not None:
        notes.append(COLOUR_NOTE)
    if any(shown.is_class_agnostic(n) for n in names):
        notes.append(AGNOSTIC_NOTE)  # what the "†" of a title means
    notes = [textwrap.fill(n, int(width * 15)) for n in notes]  # ~15 characters an inch
    grid_h = rows * (PANEL_IN + 0.5)
    legend_h = BARS_IN + NOTE_IN * sum(n.count("\n") + 1 for n in notes)
    fig = plt.figure(figsize=(width, grid_h + legend_h + 0.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[grid_h, legend_h])
    axes = top.subplots(rows, cols, squeeze=False)
    for i in range(n_images):
        row = axes[i * lines]
        row[0].imshow(explanation.images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        row[0].set_title(_image_title(explanation, i, class_names, titles), fontsize=7)
        if explanation.colour is not None:
            row[1].imshow(np.zeros((*explanation.images.shape[-2:], 3)))
            row[1].imshow(explanation.colour[i])
            row[1].set_title(COLOUR_PANEL_TITLE, fontsize=7)
        for k, name in enumerate(names):
            ax = axes[i * lines + k // per_line][lead + k % per_line]
            _draw_map(ax, explanation.images[i], explanation.maps[name][i], signed[name])
            ax.set_title(shown.method_label(name), fontsize=7)
            _frame(ax, shown.method_colour(name))
    for ax in axes.flat:
        if not ax.images:  # the free places of a wrapped line
            ax.axis("off")
        _frame(ax, None)
    _legend(bottom, width, any(signed.values()), not all(signed.values()) and bool(names), notes)
    if heading:
        fig.suptitle(textwrap.fill(heading, int(width * 14)), fontsize=9)
    if out is not None:
        from xai_bench.storage import atomic_io

        atomic_io.write_figure(out, fig, dpi=150)
        plt.close(fig)
    return fig
