"""The paper's Fig. 7: one 2×2 grid explained for each of its four classes (rows) by every
method (columns).

Drawn for every metric that keeps a grid example (``examples.npz``: the grid ``image``
``(3, H, W)``, one map per cell ``maps`` ``(4, H, W)`` and the cells' ``targets`` ``(4,)``) —
a rule on the data, not on a metric's name. A panel whose map is constant, non-finite or a
baseline's says so in its title. Composed as one pixel array (:mod:`.canvas`), without a
matplotlib figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xai_bench.outputs import canvas
from xai_bench.outputs.presentation import AGNOSTIC_NOTE
from xai_bench.storage import atomic_io
from xai_bench.storage.results import file_safe

__all__ = ["FIG7_SIDE", "grid_examples", "map_note", "plot_grid_examples"]

#: side in pixels of each panel of Fig. 7 (a 32-pixel grid enlarged 6×)
FIG7_SIDE = 192
#: the arrays of a grid example, and its number of cells
GRID_ARRAYS, CELLS = ("image", "maps", "targets"), 4


def _is_grid(example: dict) -> bool:
    if not all(k in example for k in GRID_ARRAYS):
        return False
    maps, targets = np.asarray(example["maps"]), np.asarray(example["targets"])
    return maps.ndim == 3 and len(maps) == CELLS and targets.shape == (CELLS,)


def grid_examples(examples: dict, presentation) -> dict:
    """``{(model, metric): {method: example}}`` of the grid examples of a run
    (``read_examples``' dict), metrics in their declared order, models as first met."""
    found: dict = {}
    for (model, method, metric), example in examples.items():
        if _is_grid(example):
            found.setdefault(metric, {}).setdefault(model, {})[method] = example
    return {(model, metric): found[metric][model]
            for metric in presentation.order_metrics(found) for model in found[metric]}


def map_note(method: str, attribution: np.ndarray, presentation) -> str:
    """Why a panel of Fig. 7 looks the way it does, when that is not an explanation."""
    values = np.asarray(attribution, float)
    finite = values[np.isfinite(values)]
    if finite.size < values.size:
        return "non-finite values"
    if finite.size and np.ptp(finite) <= 1e-12 * max(1.0, float(np.abs(finite).max())):
        return "constant map"
    if presentation.is_baseline(method):
        return f"{presentation.method_label(method, dagger=False)} baseline"
    return ""


def _heads(names, found, presentation):
    """Column heads and the notes of single panels: a note every row of a column shares is
    said once, in its head."""
    notes = {(cell, j): map_note(name, found[name]["maps"][cell], presentation)
             for cell in range(CELLS) for j, name in enumerate(names, start=1)}
    heads, cell_notes = ["grid (explained cell)"], {}
    for j, name in enumerate(names, start=1):
        column = {notes[cell, j] for cell in range(CELLS)}
        shared = column.pop() if len(column) == 1 else None
        note = notes[0, j]
        heads.append(presentation.method_label(name) + (f"\n({note})" if note else ""))
        if not shared:
            cell_notes.update({(cell, j): f"({notes[cell, j]})" for cell in range(1, CELLS)
                               if notes[cell, j]})
    return heads, cell_notes


def _grid_png(model, found, names, classes, presentation) -> bytes:
    side, gap, margin, label_w = FIG7_SIDE, 14, 10, 26
    head, small, title = 14, 13, 17  # text sizes in pixels (7, 6.5 and 8 points at 150 dpi)
    first = found[names[0]]
    image = canvas.to_uint8(np.asarray(first["image"], np.float32).transpose(1, 2, 0))
    heads, cell_notes = _heads(names, found, presentation)
    suptitle = f"{model}: one grid explained for each of its four classes"
    if any(presentation.is_class_agnostic(n) for n in names):
        suptitle += f"\n{AGNOSTIC_NOTE}"
    ncols = 1 + len(names)
    width = max(margin + label_w + ncols * side + (ncols - 1) * gap + margin,
                int(canvas.text_width(suptitle, canvas.font(title))) + 2 * margin)
    title_h = (title + 5) * (suptitle.count("\n") + 1) + 14
    head_h = (head + 4) * max(h.count("\n") + 1 for h in heads) + 6
    bands = [head_h] + [(small + 8) if any((cell, j) in cell_notes for j in range(1, ncols))
                        else 10 for cell in range(1, CELLS)]
    height = margin + title_h + sum(bands) + CELLS * side + margin
    picture = canvas.Canvas(width, height)
    picture.text(width / 2, margin, suptitle, title)
    x0 = margin + label_w
    for j, text in enumerate(heads):
        picture.text(x0 + j * (side + gap) + side / 2,
                     margin + title_h + head_h - 4 - (head + 4) * (text.count("\n") + 1),
                     text, head)
    y = margin + title_h
    for cell in range(CELLS):
        y += bands[cell]
        target = int(first["targets"][cell])
        label = classes[target] if 0 <= target < len(classes) else str(target)
        picture.text(margin + label_w / 2, y + side / 2, label, head + 1, rotate=True)
        picture.paste(canvas.panel(image, side, cell, outline=3), x0, y, box=side,
                      border=canvas.BLACK)
        for j, name in enumerate(names, start=1):
            attribution = np.asarray(found[name]["maps"][cell], np.float64)
            magnitude = np.abs(attribution[np.isfinite(attribution)])
            # each map on its own scale, clamped at the 99.9th percentile of |map|
            v = float(np.percentile(magnitude, 99.9)) if magnitude.size else 1.0
            x = x0 + j * (side + gap)
            picture.paste(canvas.panel(canvas.map_rgb(attribution, v or 1.0), side), x, y,
                          box=side, border=canvas.BLACK)
            if (cell, j) in cell_notes:
                picture.text(x + side / 2, y - small - 5, cell_notes[cell, j], small,
                             fill=(51, 51, 51))
        y += side
    return picture.png()


def plot_grid_examples(examples: dict, info: dict, out: Path, *, presentation) -> list[Path]:
    """One Fig. 7 per model (``fig7_grid_<model>.png``; a second metric with grid examples:
    ``fig7_grid_<model>_<metric>.png``): the grid image with the explained cell outlined,
    then each method's map for that cell's class (blue-white-red, each map on its own
    scale), methods in the run's order, then the others in their declared order."""
    classes = (info.get("dataset") or {}).get("classes") or []
    methods = (info.get("config") or {}).get("methods") or []
    paths, named = [], set()
    for (model, metric), found in grid_examples(examples, presentation).items():
        names = [me for me in methods if me in found] + \
            presentation.order_methods(set(found) - set(methods))
        stem = f"fig7_grid_{file_safe(model)}"
        if stem in named:
            stem += f"_{file_safe(metric)}"
        named.add(stem)
        png = _grid_png(model, found, names, classes, presentation)
        paths.append(atomic_io.write_bytes(Path(out) / f"{stem}.png", png))
    return paths
