"""The report's per-sample galleries: for each (model, method) of a metric that kept them
(``gallery_*`` arrays in examples.npz; the grid pointing game does), the samples it scored
best and worst on, composed as one PNG with :mod:`xai_bench.outputs.canvas`. One gallery per
metric is drawn open; the others (and every baseline's) are one line each, opened by a
click or for printing."""

from __future__ import annotations

import numpy as np

from xai_bench.outputs import canvas
from xai_bench.outputs.report.html import (
    DASH, collapsed, data_uri, esc, figure_html, slug,
)

__all__ = ["galleries_html", "gallery_samples", "GALLERY_REQUIRED", "GALLERY_SIDE"]

#: side in pixels of each panel: the thumbnails are ≤ 96 px a side (their pixels are the
#: data's own), so a larger panel would only make the page heavier
GALLERY_SIDE = 96
GALLERY_REQUIRED = ("gallery_images", "gallery_maps", "gallery_scores", "gallery_best")


def gallery_samples(arrays: dict):
    """``(samples, None)`` from a cell's gallery arrays, or ``(None, why)`` when they are
    inconsistent (the page then says so instead of drawing something misleading)."""
    try:
        images = np.asarray(arrays["gallery_images"], np.float32)
        maps = np.asarray(arrays["gallery_maps"], np.float32)
        scores = np.asarray(arrays["gallery_scores"], np.float64).reshape(-1)
        best = np.asarray(arrays["gallery_best"]).reshape(-1).astype(bool)
        n = len(scores)
        if images.ndim != 4 or images.shape[1] != 3 or len(images) != n:
            return None, f"gallery_images has shape {images.shape}, expected ({n}, 3, H, W)"
        if maps.ndim != 3 or len(maps) != n:
            return None, f"gallery_maps has shape {maps.shape}, expected ({n}, H, W)"
        if len(best) != n:
            return None, f"gallery_best has {len(best)} entries for {n} scores"

        def optional(name, default):
            value = arrays.get(name)
            if value is None:
                return default
            value = np.asarray(value).reshape(-1).astype(np.int64)
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} scores")
            return value

        targets = optional("gallery_targets", np.full(n, -1, np.int64))
        cells = optional("gallery_cells", np.full(n, -1, np.int64))
        grids = optional("gallery_grids", np.full(n, -1, np.int64))
        colour = arrays.get("gallery_colour")
        if colour is not None:
            colour = np.asarray(colour, np.float32)
            if colour.ndim != 4 or len(colour) != n or colour.shape[-1] not in (3, 4):
                return None, f"gallery_colour has shape {colour.shape}, expected ({n}, H, W, 4)"
    except (ValueError, TypeError) as e:
        return None, " ".join(str(e).split())
    return [dict(image=images[i], map=maps[i], score=float(scores[i]), best=bool(best[i]),
                 target=int(targets[i]), cell=int(cells[i]), grid=int(grids[i]),
                 colour=None if colour is None else colour[i]) for i in range(n)], None


def _class_name(target: int, classes: list) -> str:
    return classes[target] if 0 <= target < len(classes) else (str(target) if target >= 0
                                                                else "?")


def _gallery_png(title: str, samples: list, classes: list) -> bytes:
    """The best-scoring samples on the first line, the worst on the second; per sample the
    image with the explained cell outlined, the method's map (blue-white-red, symmetric at
    the 99.9th percentile of |map|, as in Fig. 7) and, for B-cos models, the colour image of
    W(x) on black (as the B-cos papers show it). Above each sample its score and explained
    class. Every panel ``GALLERY_SIDE`` pixels a side, enlarged nearest-neighbour."""
    lines = [("best", [s for s in samples if s["best"]]),
             ("worst", [s for s in samples if not s["best"]])]
    lines = [(name, group) for name, group in lines if group]
    per = 3 if any(s["colour"] is not None for s in samples) else 2
    k_max = max(len(group) for _, group in lines)
    side, gap, sample_gap, margin, label_w = GALLERY_SIDE, 3, 14, 6, 16
    small, title_size = 10, 12
    head_h = 2 * (small + 2) + 3  # two caption lines over each sample's panels
    title_h = title_size + 8
    sample_w = per * side + (per - 1) * gap
    width = margin + label_w + k_max * sample_w + (k_max - 1) * sample_gap + margin
    height = margin + title_h + len(lines) * (head_h + side) + (len(lines) - 1) * 8 + margin
    image = canvas.Canvas(width, height)
    image.text(width / 2, margin, f"{title}: best and worst samples", title_size, anchor="ma")
    face = canvas.font(small)
    y = margin + title_h
    for name, group in lines:
        py = y + head_h
        image.text(margin + label_w / 2, py + side / 2, name, small + 1, rotate=True)
        for k, s in enumerate(group):
            x = margin + label_w + k * (sample_w + sample_gap)
            rgb = canvas.to_uint8(s["image"].transpose(1, 2, 0))
            image.paste(canvas.panel(rgb, side, s["cell"]), x, py, box=side)
            m = np.nan_to_num(s["map"])
            v = float(np.percentile(np.abs(m), 99.9)) if m.size else 1.0
            image.paste(canvas.panel(canvas.map_rgb(m, v or 1.0), side), x + side + gap, py,
                        box=side)
            heads = [f"{s['score']:.3f}\n"
                     + canvas.fit_text(_class_name(s["target"], classes), face, side + gap),
                     "map", "W(x) colour"]
            if per == 3:
                colour = np.zeros((side, side, 3), np.uint8)  # on black
                if s["colour"] is not None:
                    c = np.clip(np.nan_to_num(np.asarray(s["colour"], np.float32)), 0, 1)
                    colour = canvas.panel(canvas.to_uint8(
                        c[..., :3] * c[..., 3:4] if c.shape[-1] == 4 else c), side)
                image.paste(colour, x + 2 * (side + gap), py, box=side)
            for j in range(per):
                image.text(x + j * (side + gap) + side / 2,
                           py - 3 - (small + 2) * (heads[j].count("\n") + 1), heads[j], small)
        y += head_h + side + 8
    return image.png()


def _one(title: str, ident: str, arrays: dict, classes: list, *, shown: bool,
         baseline: bool) -> str:
    """One gallery: drawn open when ``shown``, else behind its one-line summary (the scores
    as text), closed until clicked or printed."""
    missing = [k for k in GALLERY_REQUIRED if k not in arrays]
    samples, why = (None, f"it lacks {', '.join(missing)}") if missing else \
        gallery_samples(arrays)
    if samples is None:
        return f'<p class="note">{esc(title)}: the gallery cannot be shown ({esc(why)}).</p>'
    if not samples:
        return f'<p class="note">{esc(title)}: no samples in the gallery.</p>'

    def listing(group):
        return ", ".join(f"{s['score']:.3f} ({_class_name(s['target'], classes)})"
                         for s in group) or DASH

    best = listing([s for s in samples if s["best"]])
    worst = listing([s for s in samples if not s["best"]])
    uri = data_uri(_gallery_png(title, samples, classes))
    # the scores also as text: searchable, readable by screen readers and in the DOM
    caption = f" — best: {best}; worst: {worst}" + (" (a baseline)" if baseline else "")
    if shown:
        return (f'<div class="gallery" id="{ident}">'
                + figure_html(uri, f"gallery of {title}: best {best}; worst {worst}", caption,
                              cls="thumbs", lead=title) + "</div>")
    return (f'<div class="gallery closed" id="{ident}">'
            + collapsed(f"<strong>{esc(title)}</strong>{esc(caption)}",
                        figure_html(uri, f"gallery of {title}: best {best}; worst {worst}",
                                    cls="thumbs"), summary_html=True) + "</div>")


def galleries_html(run) -> str:
    """Every gallery of ``run`` (a :class:`~.reading.ReportRun`), per metric: the first
    gallery of a method that is not a baseline drawn, every other one (baselines included:
    their maps are constant or random) behind its one-line summary."""
    cells = {key: ex for key, ex in run.examples.items()
             if any(k.startswith("gallery_") for k in ex)}
    head = '<h3 id="galleries">Best and worst samples per method</h3>'
    if not cells:
        return head + ('<p class="note">No per-sample gallery: this run\'s examples.npz holds '
                       'no gallery arrays (a run made before they were kept, or a run without '
                       'a metric that keeps them, such as the grid pointing game).</p>')
    metrics = run.presentation.order_metrics({mt for _, _, mt in cells})
    labels = list(dict.fromkeys([*(run.info.get("models") or {}), *(mo for mo, _, _ in cells)]))
    parts = [head]
    for metric in metrics:
        section = run.summary.section(f"metric-{metric}")
        hib = section.higher_is_better if section is not None else \
            run.presentation.higher_is_better(metric)
        if len(metrics) > 1:
            parts.append(f"<h4>{esc(metric)}</h4>")
        parts.append(
            f"<p>For each (model, method), the samples of the {esc(metric)} the method scored "
            f"{'highest' if hib else 'lowest'} (best) and {'lowest' if hib else 'highest'} "
            f"(worst). Per sample: the image (the explained cell of a 2×2 grid outlined in "
            f"yellow), the map (blue negative, red positive, each on its own symmetric scale) "
            f"and, on B-cos models, the colour image of the dynamic linear weights W(x) for "
            f"the explained class. Titles: the score and the explained class. The first "
            f"gallery is drawn; click a line to open another.</p>")
        parts.append('<div class="galleries">')
        drawn = False
        for model in labels:
            methods = run.presentation.order_methods(
                me for mo, me, mt in cells if mo == model and mt == metric)
            for method in methods:
                title = f"{model} · {method}"
                ident = "gallery-" + "-".join(slug(x) for x in (
                    (model, method) if len(metrics) == 1 else (model, method, metric)))
                baseline = run.presentation.is_baseline(method)
                shown = not drawn and not baseline
                drawn = drawn or shown
                parts.append(_one(title, ident, cells[model, method, metric], run.classes,
                                  shown=shown, baseline=baseline))
        parts.append("</div>")
    return "\n".join(parts)
