"""Figures and the summary of one run directory, drawn from its tables alone.

:func:`plot_run` reads ``records.csv``, ``curves.csv``, ``run.json``, ``examples.npz`` and the
statistics tables the runner wrote (``summary.csv``, ``ranks.csv``, ``best.csv``,
``agreement.csv``, ``claims.csv`` and, with replicates, ``stability.csv``; for an older run
without them they are computed now with :func:`xai_bench.analysis.statistics.analyse`) and writes

- ``fig6.png`` — the paper's Fig. 6 for every metric: per model, each method's mean with its
  95 % bootstrap interval (replicate 0; further replicates' means as small markers). The ABC
  is shown raw, never normalised per model. Baselines are grey, hatched and set apart after
  a gap; class-agnostic methods carry a "†"; the grid pointing game's chance level 0.25 is
  drawn; each panel says whether higher or lower is better; methods a model could not be
  scored with are left out, never drawn as 0;
- ``curves.png`` — the pixel-perturbation mean curves, one panel per (model, method):
  most-important-first solid, least-important-first dashed, the ABC (the area between them)
  shaded and written with its interval;
- ``agreement.png`` — Kendall's τ between the metrics' method rankings, per model;
- ``fig7_grid_<model>.png`` — the paper's Fig. 7: the first 2×2 grid of the grid pointing game
  explained for each of its four classes (rows) by every method (columns); a panel whose map
  is constant or a noise baseline says so in its title;
- ``summary.md`` — the tables behind the figures: per metric the means with intervals, rank
  groups and the best method (or tie) per model; the paper's claims; metric agreement; the
  sanity checks; with replicates, how stable the rankings are.

Every method has one colour in every figure (:func:`method_colour`). A figure with nothing to
show is still written, saying why, so a plots folder never keeps a stale figure.
"""

from __future__ import annotations

import functools
import math
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from xai_bench.storage import atomic_io  # noqa: E402
from xai_bench.errors import XaiBenchError  # noqa: E402
from xai_bench.analysis.statistics import as_bool  # noqa: E402
from xai_bench.storage.results import (  # noqa: E402
    ResultsError, _read, base_replicate, file_safe, read_curves, read_examples, read_records,
    read_run_info,
)

__all__ = ["plot_run", "method_colour", "is_baseline", "is_class_agnostic", "plot_fig6",
           "plot_curves", "plot_agreement", "plot_grid_examples", "summary_markdown",
           "read_statistics", "FIG6", "CURVES", "AGREEMENT", "SUMMARY"]

FIG6, CURVES, AGREEMENT, SUMMARY = "fig6.png", "curves.png", "agreement.png", "summary.md"
ABC_METRIC = "pixel_perturbation"
GRID_METRIC = "grid_pointing_game"
CHANCE = 0.25  # a uniform map in the 2x2 grid pointing game
SANITY_METRICS = ("parameter_randomisation", "random_target")
DPI = 150
#: side in pixels of each panel of Fig. 7 (a 32-pixel grid enlarged 6×)
FIG7_SIDE = 192

METHOD_ORDER = ("inherent", "ixg", "intgrad", "rollout", "finatt", "gradsam", "gradcam",
                "chefer_lrp", "plrp", "vit_cx")
BASELINES = ("random", "uniform", "centre")
METRIC_ORDER = ("grid_pointing_game", "mask_localisation", "pixel_perturbation", "deletion",
                "insertion", "parameter_randomisation", "random_target")

# Okabe & Ito (2008) plus Paul Tol's muted/bright colours; no grey (that is for baselines).
_COLOURS = {
    "inherent": "#D55E00",    # vermillion
    "ixg": "#0072B2",         # blue
    "intgrad": "#56B4E9",     # sky blue
    "rollout": "#009E73",     # bluish green
    "finatt": "#332288",      # Tol indigo
    "gradsam": "#E69F00",     # orange
    "gradcam": "#F0E442",     # yellow
    "chefer_lrp": "#CC79A7",  # reddish purple
    "plrp": "#882255",        # Tol wine
    "vit_cx": "#999933",      # Tol olive
}
_EXTRA_COLOURS = ("#117733", "#88CCEE", "#AA4499", "#DDCC77", "#44AA99", "#661100",
                  "#6699CC", "#000000")  # plugins: chosen by a checksum of the name
_BASELINE_GREYS = {"random": "#5f5f5f", "uniform": "#999999", "centre": "#c8c8c8"}
_BASELINE_GREY = "#808080"
_BASELINE_HATCH = "///"

_UNITS = {GRID_METRIC: "grid cells", "parameter_randomisation": "(image, stage) pairs"}
_YLABELS = {
    "grid_pointing_game": "share of positive attribution\nin the explained cell",
    "mask_localisation": "share of positive attribution\ninside the object mask",
    "pixel_perturbation": "ABC (area between the\nleast- and most-first curves)",
    "deletion": "deletion AUC",
    "insertion": "insertion AUC",
    "parameter_randomisation": "Spearman ρ with the\ntrained model's map",
    "random_target": "Spearman ρ with the map\nof another class",
}
_STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7,
          "ytick.labelsize": 7, "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.35,
          "grid.linewidth": 0.5, "axes.axisbelow": True, "hatch.linewidth": 0.6,
          "figure.facecolor": "white", "savefig.facecolor": "white"}
DAGGER = "†"
AGNOSTIC_NOTE = "† class-agnostic: the map does not depend on the explained class"


# ------------------------------------------------------------------------------ methods

def _registered(name: str):
    from xai_bench.registry import METHODS

    try:
        return METHODS.get(str(name))
    except XaiBenchError:  # unknown here (a plain function passed to evaluate) or a broken plugin
        return None


def is_baseline(name: str) -> bool:
    """Whether ``name`` is a sanity baseline (``random``, ``uniform``, ``centre`` or a
    registered method of kind ``"baseline"``)."""
    return name in BASELINES or getattr(_registered(name), "kind", None) == "baseline"


def is_class_agnostic(name: str) -> bool:
    """Whether the registered method ``name`` ignores the explained class."""
    return bool(getattr(_registered(name), "class_agnostic", False))


def method_colour(name: str) -> str:
    """The one colour of method ``name`` in every figure (``"#rrggbb"``): a colour-blind-safe
    colour (Okabe–Ito, Tol) per built-in method, a grey per baseline, and for any other
    method a colour picked by a checksum of its name (the same in every run)."""
    name = str(name)
    if name in _COLOURS:
        return _COLOURS[name]
    if name in _BASELINE_GREYS:
        return _BASELINE_GREYS[name]
    if is_baseline(name):
        return _BASELINE_GREY
    return _EXTRA_COLOURS[zlib.crc32(name.encode("utf-8")) % len(_EXTRA_COLOURS)]


def _label(method: str) -> str:
    return method + (DAGGER if is_class_agnostic(method) else "")


def _order_methods(names) -> list:
    """Built-in methods in their fixed order, then other methods by name, then baselines."""
    names = list(dict.fromkeys(str(n) for n in names))
    base = [n for n in names if is_baseline(n)]

    def key(n):
        return (METHOD_ORDER.index(n) if n in METHOD_ORDER else len(METHOD_ORDER), n)

    def base_key(n):
        return (BASELINES.index(n) if n in BASELINES else len(BASELINES), n)

    return sorted((n for n in names if n not in base), key=key) + sorted(base, key=base_key)


def _order_metrics(names) -> list:
    names = list(dict.fromkeys(str(n) for n in names))
    return sorted(names, key=lambda n: (METRIC_ORDER.index(n) if n in METRIC_ORDER
                                        else len(METRIC_ORDER), n))


# ------------------------------------------------------------------------------ tables

_STAT_TABLES = ("summary", "ranks", "best", "agreement", "claims")


def _columns() -> dict:
    from xai_bench.analysis.claims import CLAIM_COLUMNS
    from xai_bench.analysis.statistics import (
        AGREEMENT_COLUMNS, BEST_COLUMNS, RANK_COLUMNS, STABILITY_COLUMNS, SUMMARY_COLUMNS,
    )

    return dict(summary=SUMMARY_COLUMNS, ranks=RANK_COLUMNS, best=BEST_COLUMNS,
                agreement=AGREEMENT_COLUMNS, claims=CLAIM_COLUMNS, stability=STABILITY_COLUMNS)


def _run_seed(info: dict) -> int:
    for value in ((info.get("seeds") or {}).get("seed"), (info.get("config") or {}).get("seed")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def read_statistics(run_dir, records: pd.DataFrame, info: dict) -> dict:
    """The statistics tables of a run directory (``summary``, ``ranks``, ``best``,
    ``agreement``, ``claims``, and ``stability`` where written) as DataFrames. A run written
    before these tables existed gets them computed now (``analyse(records, seed=<the run's
    seed>, claims=True)``); ``tables["computed"]`` says which happened. A table that cannot
    be read is a one-line :class:`~xai_bench.storage.results.ResultsError`."""
    run_dir = Path(run_dir)
    columns = _columns()
    if all((run_dir / f"{name}.csv").is_file() for name in _STAT_TABLES):
        tables = {name: _read(run_dir / f"{name}.csv", columns[name]) for name in _STAT_TABLES}
        if (run_dir / "stability.csv").is_file():
            tables["stability"] = _read(run_dir / "stability.csv", columns["stability"])
        computed = False
    else:
        from xai_bench.analysis.statistics import analyse

        try:
            tables = dict(analyse(records, seed=_run_seed(info), claims=True))
        except XaiBenchError as e:
            raise ResultsError(f"{run_dir / 'records.csv'}: the statistics cannot be computed "
                               f"({' '.join(str(e).split())}); rerun `xai-bench run`") from None
        computed = True
    for name, table in list(tables.items()):
        table = table.copy()
        if "replicate" in table:
            table["replicate"] = pd.to_numeric(table["replicate"], errors="coerce") \
                .fillna(0).astype(int)
        for col in ("mean", "ci_low", "ci_high", "estimate", "tau", "p_value", "p_holm",
                    "best_mean", "diff", "std", "min", "max", "range", "share_first"):
            if col in table:
                table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
        for col in ("text", "detail", "twin", "model", "runner_up", "tied", "group", "best"):
            if col in table:
                table[col] = table[col].astype(object).where(table[col].notna(), "")
        tables[name] = table
    tables["computed"] = computed
    return tables


def _first(metric: str, column: str, frames, default):
    """The first recorded ``column`` of ``metric`` in any of ``frames``."""
    for frame in frames:
        if frame is not None and len(frame) and column in frame:
            rows = frame.loc[frame["metric"] == metric, column].dropna()
            if len(rows):
                return rows.iloc[0]
    return default


def _higher_is_better(metric: str, *frames) -> bool:
    return as_bool(_first(metric, "higher_is_better", frames, True))


def _category(metric: str, *frames) -> str:
    return str(_first(metric, "category", frames, ""))


def _direction(metric: str, *frames) -> str:
    return "higher is better ↑" if _higher_is_better(metric, *frames) else "lower is better ↓"


_base_replicate = base_replicate  # the name the report uses


def _finite(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[np.isfinite(summary["mean"].astype(float))] if len(summary) else summary


def _model_order(records: pd.DataFrame, *frames) -> list:
    names = list(records["model"].astype(str)) if len(records) else []
    for frame in frames:
        if frame is not None and len(frame) and "model" in frame:
            names += [str(m) for m in frame["model"] if str(m)]
    return list(dict.fromkeys(names))


def _n_text(ns, unit: str) -> str:
    ns = sorted({int(n) for n in ns if pd.notna(n)})
    if not ns:
        return ""
    return f"n = {ns[0]} {unit}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} {unit}"


def _unit(metric: str) -> str:
    return _UNITS.get(metric, "images")


# ------------------------------------------------------------------------------ figures

def _save(fig, path: Path) -> Path:
    atomic_io.write_figure(path, fig, dpi=DPI)
    plt.close(fig)
    return path


def _wrap(lines, inches: float) -> str:
    """Lines of a 7-point note wrapped to a figure ``inches`` wide."""
    import textwrap

    return "\n".join(textwrap.fill(line, width=max(40, int(inches * 15))) for line in lines)


def _placeholder(path: Path, title: str, message: str) -> Path:
    """A small figure saying why there is nothing to draw (so no stale figure survives)."""
    fig = plt.figure(figsize=(6.4, 1.6))
    fig.text(0.5, 0.68, title, ha="center", va="center", fontsize=10, weight="bold")
    fig.text(0.5, 0.35, message, ha="center", va="center", fontsize=8, wrap=True)
    return _save(fig, path)


# ------------------------------------------------------------------------------ composed images
#
# Figures that are only pictures (Fig. 7, the report's galleries) are composed as one pixel
# array with numpy and written with Pillow: a matplotlib axes per panel (dozens per figure)
# costs far more to lay out and draw than the pixels themselves. Maps are coloured with the
# same colour map function (no figure), text is set in matplotlib's own DejaVu Sans.

_WHITE, _BLACK, _YELLOW = (255, 255, 255), (0, 0, 0), (255, 255, 0)


@functools.lru_cache(maxsize=None)
def _font(size: int):
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels; Pillow's default font where
    it cannot be loaded."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf"
                                      / "DejaVuSans.ttf"), size)
    except OSError:
        try:
            return ImageFont.load_default(size=size)  # Pillow >= 10.1
        except TypeError:
            return ImageFont.load_default()


def _text_width(text: str, font) -> float:
    return max((font.getlength(line) for line in str(text).split("\n")), default=0.0)


def _fit_text(text: str, font, width: float) -> str:
    """``text`` (one line) cut with "…" to at most ``width`` pixels."""
    text = str(text)
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (h, w, 3) uint8 image at ``height`` × ``width``: nearest neighbour when enlarged
    (the data's own pixels, as ``interpolation="nearest"``), area-averaged when reduced."""
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return rgb
    if height >= h and width >= w:
        rows = np.arange(height) * h // height
        cols = np.arange(width) * w // width
        return rgb[rows[:, None], cols[None, :]]
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX))


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(np.asarray(rgb, np.float32)), 0, 1) * 255 + 0.5) \
        .astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _colormap(name: str):
    return matplotlib.colormaps[name]  # a copy per look-up: kept, with its lookup table


def _map_rgb(attribution: np.ndarray, limit: float) -> np.ndarray:
    """``attribution`` on the blue-white-red map, clamped to ``[-limit, limit]`` (as
    ``imshow(cmap="bwr", vmin=-limit, vmax=limit)``); non-finite values white."""
    a = np.asarray(attribution, np.float64)
    limit = limit or 1.0
    rgb = _colormap("bwr")(np.clip((a + limit) / (2 * limit), 0, 1))[..., :3]
    rgb[~np.isfinite(a)] = 1.0
    return _to_uint8(rgb)


def _panel(rgb: np.ndarray, side: int, cell: int = -1, outline: int = 2) -> np.ndarray:
    """An (h, w, 3) uint8 image scaled to fit ``side`` × ``side`` (aspect kept), the cell
    ``cell`` (0-3, row-major) of its 2×2 grid outlined in yellow."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w, 1)
    out = _resize(rgb, max(1, round(h * scale)), max(1, round(w * scale))).copy()
    if 0 <= cell < 4:
        H, W = out.shape[:2]
        row, col = divmod(cell, 2)
        y0, y1 = row * H // 2, (row + 1) * H // 2
        x0, x1 = col * W // 2, (col + 1) * W // 2
        t = max(1, min(outline, (y1 - y0) // 4, (x1 - x0) // 4))
        for ys, xs in ((slice(y0, y0 + t), slice(x0, x1)), (slice(y1 - t, y1), slice(x0, x1)),
                       (slice(y0, y1), slice(x0, x0 + t)), (slice(y0, y1), slice(x1 - t, x1))):
            out[ys, xs] = _YELLOW
    return out


class _Canvas:
    """A white RGB pixel array to paste panels into and write text on, saved as PNG."""

    def __init__(self, width: int, height: int):
        from PIL import Image, ImageDraw

        self.pixels = np.full((int(height), int(width), 3), 255, np.uint8)
        self._texts = []  # drawn last, on the finished pixels
        self._image, self._draw = Image, ImageDraw

    def paste(self, rgb: np.ndarray, x: int, y: int, box: int | None = None,
              border=(64, 64, 64)) -> None:
        """``rgb`` with its top-left corner at (x, y) (centred in a ``box`` square when
        given), framed by a one-pixel ``border`` just outside it."""
        h, w = rgb.shape[:2]
        if box is not None:
            x, y = x + (box - w) // 2, y + (box - h) // 2
        if border is not None:
            self.pixels[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1] = border
        self.pixels[y:y + h, x:x + w] = rgb

    def text(self, x: float, y: float, text: str, size: int, *, anchor: str = "ma",
             fill=(0, 0, 0), rotate: bool = False) -> None:
        """``text`` (lines centred on each other) at (x, y); ``anchor`` as Pillow's (the
        default: its top centre). ``rotate``: read bottom to top, centred at (x, y)."""
        self._texts.append((x, y, str(text), size, anchor, fill, rotate))

    def png(self) -> bytes:
        import io

        image = self._image.fromarray(self.pixels)
        draw = self._draw.Draw(image)
        for x, y, text, size, anchor, fill, rotate in self._texts:
            font = _font(size)
            if rotate:  # drawn on its own strip, turned, pasted
                w = int(math.ceil(_text_width(text, font))) + 4
                h = (size + 4) * (text.count("\n") + 1)
                strip = self._image.new("RGB", (w, h), _WHITE)
                self._draw.Draw(strip).multiline_text((w / 2, h / 2), text, font=font,
                                                       fill=fill, anchor="mm", align="center")
                strip = strip.rotate(90, expand=True)  # on white: the margin is white
                image.paste(strip, (int(x - strip.width / 2), int(y - strip.height / 2)))
            else:
                draw.multiline_text((x, y), text, font=font, fill=fill, anchor=anchor,
                                    align="center", spacing=max(1, size // 5))
        buffer = io.BytesIO()
        image.save(buffer, format="png", compress_level=6)  # 9: 2 % smaller, 8× slower
        return buffer.getvalue()


def _group_layout(methods: list) -> list:
    """x positions of a model's methods: real methods side by side, a gap, the baselines."""
    xs, x, seen_base = [], 0.0, False
    for m in methods:
        if is_baseline(m) and not seen_base and xs:
            x += 0.7
        seen_base = seen_base or is_baseline(m)
        xs.append(x)
        x += 1.0
    return xs


def plot_fig6(summary: pd.DataFrame, out: Path, *, models=None, records=None) -> Path:
    """``fig6.png`` (see the module docstring) from the ``summary`` statistics table."""
    path = Path(out) / FIG6
    summary = _finite(summary)
    if not len(summary):
        return _placeholder(path, "Fig. 6: methods per metric",
                            "No scored results: every (model, method, metric) cell of this run "
                            "was skipped or ended in an error (see records.csv).")
    base = _base_replicate(summary)
    first, others = summary[summary["replicate"] == base], summary[summary["replicate"] != base]
    metrics = _order_metrics(first["metric"])
    models = [m for m in (models or []) if m in set(summary["model"])] or \
        list(dict.fromkeys(summary["model"].astype(str)))
    ncols = 1 if len(metrics) == 1 else 2
    nrows = math.ceil(len(metrics) / ncols)
    slots = max(len(first[(first["metric"] == mt) & (first["model"] == mo)]) + 1.5
                for mt in metrics for mo in models)
    width = min(max(3.2, 0.24 * slots * len(models) + 1.4), 9.0)
    total = max(width * ncols, 7.0)  # room for the legend and its notes
    fig, axes = plt.subplots(nrows, ncols, figsize=(total, 3.5 * nrows + 1.3),
                             squeeze=False, layout="constrained")
    used = set()
    for ax, metric in zip(axes.flat, metrics):
        frame = first[first["metric"] == metric]
        rest = others[others["metric"] == metric]
        ticks, labels, centres, heads = [], [], [], []
        bars, whiskers = {False: [], True: []}, []  # drawn with one call each (far faster)
        offset = 0.0
        for gi, model in enumerate(models):
            g = frame[frame["model"] == model].set_index("method")
            rest_g = rest[rest["model"] == model]
            # a method scored only on other replicates gets their markers, without a bar
            methods = _order_methods(list(g.index) + list(rest_g["method"]))
            xs = [offset + x for x in _group_layout(methods)]
            for x, method in zip(xs, methods):
                used.add(method)
                reps = rest_g[rest_g["method"] == method]["mean"]
                if len(reps):
                    jitter = np.linspace(-0.2, 0.2, len(reps)) if len(reps) > 1 else [0.0]
                    ax.plot(x + np.asarray(jitter), reps.to_numpy(float), ls="none",
                            marker="o", ms=2.8, mfc="white", mec="black", mew=0.7, zorder=4)
                if method not in g.index:
                    continue
                row = g.loc[method]
                mean, lo, hi = float(row["mean"]), float(row["ci_low"]), float(row["ci_high"])
                bars[is_baseline(method)].append((x, mean, method_colour(method)))
                if np.isfinite(lo) and np.isfinite(hi):
                    whiskers.append((x, mean, max(mean - lo, 0.0), max(hi - mean, 0.0)))
            ticks += xs
            labels += [_label(m) for m in methods]
            width_g = (xs[-1] - xs[0]) if xs else 2.0
            centre = (xs[0] + width_g / 2) if xs else offset + 1.0
            centres.append(centre)
            heads.append(f"{model}\n{_n_text(g['n'], _unit(metric)) if len(g) else ''}")
            if not xs:
                ax.text(centre, 0.5, "not scored\n(skipped / error)", ha="center",
                        va="center", fontsize=7, color="#555555",
                        transform=ax.get_xaxis_transform())
            if gi < len(models) - 1:
                sep = (xs[-1] if xs else offset + 2.0) + 1.25
                ax.axvline(sep, color="#bbbbbb", lw=0.8, zorder=1)
                offset = sep + 1.25
        for base_m, group in bars.items():
            if group:
                x, mean, colour = zip(*group)
                ax.bar(x, mean, width=0.8, color=colour, edgecolor="#303030", linewidth=0.5,
                       hatch=_BASELINE_HATCH if base_m else None,
                       alpha=0.75 if base_m else 1.0, zorder=2)
        if whiskers:
            x, mean, down, up = (np.asarray(v, float) for v in zip(*whiskers))
            ax.errorbar(x, mean, yerr=[down, up], fmt="none", ecolor="black", elinewidth=0.8,
                        capsize=2, zorder=3)
        ax.set_xticks(ticks, labels, rotation=90)
        ax.set_xlim(-0.8, (max(ticks) if ticks else offset + 2.0) + 0.8)
        ax.tick_params(axis="x", length=0)
        ax.grid(axis="x", visible=False)
        top = ax.secondary_xaxis("top")
        top.set_xticks(centres, heads)
        top.tick_params(length=0, labelsize=7)
        ax.axhline(0, color="black", lw=0.6, zorder=2)
        if metric == GRID_METRIC:
            ax.axhline(CHANCE, color="#444444", ls="--", lw=0.9, zorder=3)
            low, high = ax.get_ylim()
            ax.set_ylim(min(low, 0.0), max(high, CHANCE * 1.15))  # the line is never the edge
            ax.annotate(f"chance\n{CHANCE:g}", xy=(1.0, CHANCE),
                        xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", ha="left", fontsize=6.5,
                        color="#444444", annotation_clip=False)
        category = _category(metric, summary, records)
        ax.set_title(f"{metric}" + (f" ({category})" if category else "")
                     + f"\n{_direction(metric, summary, records)}", fontsize=8.5)
        ax.set_ylabel(_YLABELS.get(metric, "mean"))
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    handles = [Patch(facecolor=method_colour(m), edgecolor="#303030", linewidth=0.5,
                     hatch=_BASELINE_HATCH if is_baseline(m) else None,
                     alpha=0.75 if is_baseline(m) else 1.0,
                     label=_label(m) + (" (baseline)" if is_baseline(m) else ""))
               for m in _order_methods(used)]
    if GRID_METRIC in metrics:
        handles.append(Line2D([], [], color="#444444", ls="--", lw=0.9,
                              label=f"chance level {CHANCE:g} (uniform map, 2×2 grid)"))
    if len(others):
        handles.append(Line2D([], [], ls="none", marker="o", ms=3, mfc="white", mec="black",
                              label="means of the other replicates"))
    notes = ["bars: mean; whiskers: 95 % bootstrap interval"
             + (f" (replicate {base})" if len(others) or base else "")
             + "; the ABC is raw (not normalised); methods a model could not be scored with "
               "are left out"]
    if any(is_class_agnostic(m) for m in used):
        notes.append(AGNOSTIC_NOTE)
    fig.legend(handles=handles, loc="outside lower center",
               ncols=max(1, min(len(handles), 6, int(total // 1.9))), frameon=False,
               title=_wrap(notes, total), title_fontsize=7)
    fig.suptitle("Fig. 6: each method on each metric, per model", fontsize=10)
    return _save(fig, path)


def _curve(frame: pd.DataFrame, order: str) -> pd.Series:
    c = frame[frame["order"] == order]
    return c.groupby("fraction")["value"].mean().sort_index()


def _columns_for(counts: list, lo: int = 3, hi: int = 6) -> int:
    """Columns of a wrapped grid of panels (blocks of ``counts`` panels): the fewest empty
    slots, then the most columns."""
    most = max(counts)
    if most <= hi:
        return most
    return min(range(lo, hi + 1), key=lambda c: (sum(-n % c for n in counts), -c))


def plot_curves(curves: pd.DataFrame, out: Path, summary: pd.DataFrame | None = None, *,
                models=None) -> Path:
    """``curves.png``: the pixel-perturbation mean curves, one panel per (model, method)."""
    from xai_bench.analysis.statistics import format_interval

    path = Path(out) / CURVES
    c = curves[curves["metric"] == ABC_METRIC] if len(curves) else curves
    if len(c) and "statistic" in c:
        c = c[c["statistic"].isna() | (c["statistic"] == "mean_curve")]
    if len(c):
        c = c.assign(replicate=pd.to_numeric(c["replicate"], errors="coerce").fillna(0)
                     .astype(int), value=pd.to_numeric(c["value"], errors="coerce"),
                     fraction=pd.to_numeric(c["fraction"], errors="coerce"))
        c = c[c["order"].isin(["most_first", "least_first"])]
    if not len(c):
        return _placeholder(path, "Pixel perturbation curves",
                            f"This run has no {ABC_METRIC} curves (the metric was not run, or "
                            f"every cell of it was skipped or failed).")
    base = _base_replicate(c)
    c = c[c["replicate"] == base]
    models = [m for m in (models or []) if m in set(c["model"])] or \
        list(dict.fromkeys(c["model"].astype(str)))
    per_model = {m: _order_methods(c.loc[c["model"] == m, "method"]) for m in models}
    ncols = _columns_for([len(v) for v in per_model.values()])
    block = {m: math.ceil(len(v) / ncols) for m, v in per_model.items()}
    nrows = sum(block.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(2.3 * ncols, 7.0), 2.0 * nrows + 1.0),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    used_axes, agnostic = set(), False
    row0 = 0
    s = summary if summary is not None and len(summary) else None
    for model in models:
        for i, method in enumerate(per_model[model]):
            r, col = row0 + i // ncols, i % ncols
            ax = axes[r, col]
            used_axes.add((r, col))
            g = c[(c["model"] == model) & (c["method"] == method)]
            most, least = _curve(g, "most_first"), _curve(g, "least_first")
            colour = method_colour(method)
            ax.plot(most.index, most.values, color=colour, ls="-", lw=1.4)
            ax.plot(least.index, least.values, color=colour, ls="--", lw=1.4)
            common = most.index.intersection(least.index)
            ax.fill_between(common, most[common].values, least[common].values, color=colour,
                            alpha=0.25, lw=0)
            agnostic = agnostic or is_class_agnostic(method)
            text = None
            if s is not None:
                row = s[(s["model"] == model) & (s["method"] == method)
                        & (s["metric"] == ABC_METRIC) & (s["replicate"] == base)]
                if len(row):
                    row = row.iloc[0]
                    text = (f"ABC {format_interval(row['mean'], row['ci_low'], row['ci_high'])}"
                            f", n = {int(row['n'])}")
            if text is None and len(common) > 1:
                x = np.asarray(common, float)
                text = f"ABC {np.trapezoid(least[common].values - most[common].values, x):.3g}"
            # the ABC goes above the panel, where it covers no curve; y given: no ticks on
            # top to clear, so matplotlib need not measure every panel for every title
            ax.set_title(f"{model} · {_label(method)}" + (f"\n{text}" if text else ""),
                         fontsize=7, y=1.0)
        row0 += block[model]
    for r in range(nrows):
        for col in range(ncols):
            ax = axes[r, col]
            if (r, col) not in used_axes:
                ax.set_visible(False)
                continue
            if r == nrows - 1 or (r + 1, col) not in used_axes:
                ax.tick_params(labelbottom=True)
                ax.set_xlabel("fraction of pixels removed", fontsize=7)
            if col == 0:
                ax.set_ylabel("confidence /\nclean confidence", fontsize=7)
    handles = [Line2D([], [], color="#333333", ls="-", lw=1.4,
                      label="most important pixels removed first"),
               Line2D([], [], color="#333333", ls="--", lw=1.4,
                      label="least important pixels removed first"),
               Patch(facecolor="#333333", alpha=0.25, label="ABC: area between the curves "
                                                             "(larger is better)")]
    title = f"mean curves over the images (replicate {base}); one colour per method"
    if agnostic:
        title += "\n" + AGNOSTIC_NOTE
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False,
               title=title, title_fontsize=7)
    fig.suptitle("Pixel perturbation: confidence as pixels are removed (zero encoding)",
                 fontsize=10)
    return _save(fig, path)


def plot_agreement(agreement: pd.DataFrame, out: Path, *, models=None,
                   summary: pd.DataFrame | None = None) -> Path:
    """``agreement.png``: per model, Kendall's τ between every two metrics' method rankings
    (replicate 0), annotated, on a diverging map centred at 0; NaN cells hatched."""
    path = Path(out) / AGREEMENT
    a = agreement
    if len(a):
        a = a[a["replicate"] == _base_replicate(a)]
    metrics = _order_metrics(list(a["metric_a"]) + list(a["metric_b"])) if len(a) else []
    if len(metrics) < 2:
        return _placeholder(path, "Metric agreement",
                            "Kendall's τ compares two metrics' rankings of the methods: this "
                            "run has fewer than two metrics with scored methods on one model.")
    models = [m for m in (models or []) if m in set(a["model"])] or \
        list(dict.fromkeys(a["model"].astype(str)))
    k = len(metrics)
    side = 0.62 * k + 1.6
    fig, axes = plt.subplots(1, len(models),
                             figsize=(max(side * len(models) + 1.0, 7.0), side + 0.9),
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("PuOr").with_extremes(bad="#eeeeee")
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
    image = None
    for ax, model in zip(axes[0], models):
        tau = np.full((k, k), np.nan)
        count = np.zeros((k, k), int)
        for row in a[a["model"] == model].to_dict("records"):
            i, j = metrics.index(row["metric_a"]), metrics.index(row["metric_b"])
            tau[i, j] = tau[j, i] = float(row["tau"])
            count[i, j] = count[j, i] = int(row["n_methods"])
        image = ax.imshow(np.ma.masked_invalid(tau), cmap=cmap, norm=norm)
        for i in range(k):
            for j in range(k):
                if i == j:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white",
                                           edgecolor="#cccccc", lw=0.5))
                    ax.text(j, i, "—", ha="center", va="center", fontsize=7, color="#999999")
                elif np.isfinite(tau[i, j]):
                    v = tau[i, j]
                    ax.text(j, i, f"{v:.2f}\n{count[i, j]} m.", ha="center", va="center",
                            fontsize=6.5, color="white" if abs(v) > 0.6 else "black")
                else:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none",
                                           edgecolor="#aaaaaa", hatch="///", lw=0))
                    ax.text(j, i, f"n/a\n{count[i, j]} m.", ha="center", va="center",
                            fontsize=6.5, color="#555555",
                            bbox=dict(facecolor="#eeeeee", lw=0, pad=0.5))
        names = [m + ("" if _higher_is_better(m, summary) else " ↓") for m in metrics]
        ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), names)
        ax.grid(False)
        ax.set_title(model, fontsize=9, y=1.0)  # nothing on top to clear
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="Kendall τ-b")
    fig.suptitle("Metric agreement: Kendall τ between the metrics' rankings of the methods\n"
                 "(↓ lower-is-better metric, reversed first: τ = 1 means the same order of "
                 "better; m. = methods compared;\nn/a: fewer than 3 common methods or a "
                 "constant ranking)", fontsize=8)
    return _save(fig, path)


def _map_note(method: str, attribution: np.ndarray) -> str:
    """Why a panel of Fig. 7 looks the way it does, when that is not an explanation."""
    values = np.asarray(attribution, float)
    finite = values[np.isfinite(values)]
    if finite.size < values.size:
        return "non-finite values"
    if finite.size and np.ptp(finite) <= 1e-12 * max(1.0, float(np.abs(finite).max())):
        return "constant map"
    if method == "random":
        return "random baseline: noise"
    if method == "centre":
        return "centre-bias baseline"
    if is_baseline(method):
        return "baseline"
    return ""


def plot_grid_examples(examples: dict, info: dict, out: Path) -> list[Path]:
    """One Fig. 7 per model: the grid image with the explained cell outlined, then each
    method's map for that cell's class (blue-white-red, clamped at the 99.9th percentile of
    |map|, each map on its own scale). A panel whose map is constant or a baseline says so
    in its title. Composed as one pixel array (panels ``FIG7_SIDE`` pixels a side, enlarged
    nearest-neighbour) and written with Pillow, without a matplotlib figure."""
    classes = (info.get("dataset") or {}).get("classes") or []
    methods = (info.get("config") or {}).get("methods") or []
    side, gap, margin, label_w = FIG7_SIDE, 14, 10, 26
    head, small, title = 14, 13, 17  # text sizes in pixels (7, 6.5 and 8 points at DPI)
    paths = []
    for model in dict.fromkeys(m for m, _, metric in examples if metric == GRID_METRIC):
        found = {me: ex for (mo, me, mt), ex in examples.items()
                 if mo == model and mt == GRID_METRIC}
        names = [me for me in methods if me in found] + \
            _order_methods(set(found) - set(methods))
        first = found[names[0]]
        image = _to_uint8(np.asarray(first["image"], np.float32).transpose(1, 2, 0))
        notes = {(cell, j): _map_note(name, found[name]["maps"][cell])
                 for cell in range(4) for j, name in enumerate(names, start=1)}
        heads, cell_notes = ["grid (explained cell)"], {}
        for j, name in enumerate(names, start=1):
            column = {notes[cell, j] for cell in range(4)}
            shared = column.pop() if len(column) == 1 else None
            note = notes[0, j]
            # the column head; a note every row shares is said once here
            heads.append(_label(name) + (f"\n({note})" if note else ""))
            if not shared:
                cell_notes.update({(cell, j): f"({notes[cell, j]})" for cell in range(1, 4)
                                   if notes[cell, j]})
        suptitle = f"{model}: one grid explained for each of its four classes"
        if any(is_class_agnostic(n) for n in names):
            suptitle += f"\n{AGNOSTIC_NOTE}"
        ncols = 1 + len(names)
        width = max(margin + label_w + ncols * side + (ncols - 1) * gap + margin,
                    int(_text_width(suptitle, _font(title))) + 2 * margin)
        title_h = (title + 5) * (suptitle.count("\n") + 1) + 14
        head_h = (head + 4) * max(h.count("\n") + 1 for h in heads) + 6
        bands = [head_h] + [(small + 8) if any((cell, j) in cell_notes
                                               for j in range(1, ncols)) else 10
                            for cell in range(1, 4)]
        height = margin + title_h + sum(bands) + 4 * side + margin
        canvas = _Canvas(width, height)
        canvas.text(width / 2, margin, suptitle, title)
        x0 = margin + label_w
        for j, text in enumerate(heads):
            canvas.text(x0 + j * (side + gap) + side / 2,
                        margin + title_h + head_h - 4 - (head + 4) * (text.count("\n") + 1),
                        text, head)
        y = margin + title_h
        for cell in range(4):
            y += bands[cell]
            target = int(first["targets"][cell])
            label = classes[target] if 0 <= target < len(classes) else str(target)
            canvas.text(margin + label_w / 2, y + side / 2, label, head + 1, rotate=True)
            canvas.paste(_panel(image, side, cell, outline=3), x0, y, box=side,
                         border=_BLACK)
            for j, name in enumerate(names, start=1):
                attribution = np.asarray(found[name]["maps"][cell], np.float64)
                finite = np.abs(attribution[np.isfinite(attribution)])
                v = float(np.percentile(finite, 99.9)) if finite.size else 1.0
                x = x0 + j * (side + gap)
                canvas.paste(_panel(_map_rgb(attribution, v or 1.0), side), x, y, box=side,
                             border=_BLACK)
                if (cell, j) in cell_notes:
                    canvas.text(x + side / 2, y - small - 5, cell_notes[cell, j], small,
                                fill=(51, 51, 51))
            y += side
        path = Path(out) / f"fig7_grid_{file_safe(model)}.png"
        paths.append(atomic_io.write_bytes(path, canvas.png()))
    return paths


# ------------------------------------------------------------------------------ summary.md

def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _interval(row) -> str:
    from xai_bench.analysis.statistics import format_interval

    return format_interval(row["mean"], row["ci_low"], row["ci_high"])


def _metric_section(metric, summary, ranks, best, records, models, base) -> list:
    s = summary[(summary["metric"] == metric) & (summary["replicate"] == base)]
    hib = _higher_is_better(metric, summary, records)
    category = _category(metric, summary, records)
    lines = [f"## {metric} ({category + '; ' if category else ''}"
             f"{'higher' if hib else 'lower'} is better)", ""]
    if not len(s):
        return lines + ["No scored results (every cell skipped or failed).", ""]
    models = [m for m in models if m in set(s["model"])]
    methods = _order_methods(s["method"])
    r = ranks[(ranks["metric"] == metric) & (ranks["replicate"] == base)] if len(ranks) else ranks
    b = best[(best["metric"] == metric) & (best["replicate"] == base)] if len(best) else best
    groups = {(x["model"], x["method"]): x["group"] for x in r.to_dict("records")} \
        if len(r) else {}
    best_of = {x["model"]: x for x in b.to_dict("records")} if len(b) else {}
    header = ["method"] + [f"{m} ({_n_text(s.loc[s['model'] == m, 'n'], _unit(metric))})"
                           for m in models]
    rows = []
    for method in methods:
        row = [_label(method) + (" (baseline)" if is_baseline(method) else "")]
        for model in models:
            hit = s[(s["model"] == model) & (s["method"] == method)]
            if not len(hit):
                row.append("—")
                continue
            text = _interval(hit.iloc[0])
            if best_of.get(model, {}).get("best") == method:
                text = f"**{text}**"
            group = groups.get((model, method), "")
            row.append(f"{text} {group}".strip())
        rows.append(row)
    lines += _table(header, rows) + [""]
    word = "highest" if hib else "lowest"
    for model in models:
        v = best_of.get(model)
        if v is None:
            continue
        if v["verdict"] == "best":
            lines.append(f"- best on {model}: {v['best']} (significantly ahead of "
                         f"{v['runner_up']})")
        elif v["verdict"] == "single":
            lines.append(f"- best on {model}: {v['best']} (the only method scored)")
        else:
            tied = [t.strip() for t in str(v["tied"]).split(",") if t.strip()]
            lines.append(f"- best on {model}: tie between {', '.join(tied)} ({v['best']} has "
                         f"the {word} mean but is not significantly ahead of "
                         f"{v['runner_up']})")
    return lines + [""]


def _claims_section(claims, summary) -> list:
    from xai_bench.analysis.statistics import format_interval

    lines = ["## The paper's claims", ""]
    if claims is None or not len(claims):
        return lines + ["No claims were evaluated.", ""]
    several = claims["replicate"].nunique() > 1 if "replicate" in claims else False
    header = ["claim", "text", "model vs twin"] + (["replicate"] if several else []) + \
        ["n (model / twin)", "outcome", "estimate [95 % interval]", "detail"]
    rows = []
    for c in claims.to_dict("records"):
        model, twin = str(c.get("model") or ""), str(c.get("twin") or "")
        who = f"{model} vs {twin}" if model and twin else (model or "—")

        def n_of(name):
            hit = summary[(summary["model"] == name) & (summary["metric"] == c["metric"])
                          & (summary["replicate"] == int(c.get("replicate", 0)))] \
                if name and len(summary) else summary.iloc[0:0]
            return str(int(hit["n"].max())) if len(hit) else "—"

        n = n_of(model) + (f" / {n_of(twin)}" if twin else "")
        est = c.get("estimate")
        estimate = "—" if est is None or not np.isfinite(float(est)) else \
            format_interval(est, c.get("ci_low"), c.get("ci_high"))
        rows.append([c["claim"], c["text"], who] + ([c.get("replicate", 0)] if several else [])
                    + [n, f"**{c['outcome']}**", estimate, c.get("detail", "")])
    lines += _table(header, rows)
    lines += ["", "holds / fails: the interval (or the paired test) decides; inconclusive: it "
                  "does not, or the run lacks what the claim needs (the detail says which). "
                  "Estimate: a best-method claim's advantage over the strongest other method "
                  "(positive = better); a twin claim's factor or difference against the "
                  "twin's best method. n: samples of the claim's metric. Rules: "
                  "docs/statistics.md.", ""]
    return lines


def _agreement_section(agreement, models) -> list:
    lines = ["## Metric agreement", ""]
    a = agreement[agreement["replicate"] == _base_replicate(agreement)] \
        if len(agreement) else agreement
    if not len(a):
        return lines + ["Needs at least two metrics scored on one model.", ""]
    models = [m for m in models if m in set(a["model"])]
    order = _order_metrics(list(a["metric_a"]) + list(a["metric_b"]))
    pairs = list(dict.fromkeys(tuple(sorted(pair, key=order.index))
                               for pair in zip(a["metric_a"], a["metric_b"])))
    pairs.sort(key=lambda p: (order.index(p[0]), order.index(p[1])))
    rows = []
    for ma, mb in pairs:
        row = [ma, mb]
        for model in models:
            hit = a[(a["model"] == model) & (((a["metric_a"] == ma) & (a["metric_b"] == mb))
                                             | ((a["metric_a"] == mb) & (a["metric_b"] == ma)))]
            if not len(hit):
                row.append("—")
                continue
            h = hit.iloc[0]
            tau = f"{h['tau']:.2f}" if np.isfinite(h["tau"]) else "n/a"
            p = f", p = {h['p_value']:.2g}" if np.isfinite(h["p_value"]) else ""
            row.append(f"{tau} (n = {int(h['n_methods'])} methods{p})")
        rows.append(row)
    lines += _table(["metric A", "metric B"] + [f"{m}: τ" for m in models], rows)
    lines += ["", "Kendall's τ-b between the two metrics' rankings of the methods both scored "
                  "(n methods; lower-is-better metrics reversed first, so τ = 1 means the same "
                  "order from better to worse, −1 the reverse); n/a: fewer than 3 common "
                  "methods or a constant ranking.", ""]
    return lines


def _sanity_section(summary, models, base) -> list:
    lines = ["## Sanity checks", ""]
    present = [m for m in SANITY_METRICS if m in set(summary["metric"])] if len(summary) else []
    if not present:
        return lines + [f"This run has no sanity metric ({', '.join(SANITY_METRICS)}); add them "
                        f"with `--metric {','.join(SANITY_METRICS)}`.", ""]
    lines += ["Both are Spearman rank correlations between maps (lower is better). A high value "
              "(near 1) means the map hardly changes when the model's weights are randomised "
              "(parameter_randomisation) or when another class is explained (random_target): "
              "such a map does not explain what the trained model decided for the explained "
              "class. Class-agnostic methods (†) score 1 on random_target by construction.", ""]
    s = summary[(summary["replicate"] == base) & summary["metric"].isin(present)]
    models = [m for m in models if m in set(s["model"])]
    cols = [(mo, mt) for mo in models for mt in present]
    header = ["method"] + [
        f"{mo}: {mt} ({_n_text(s.loc[(s['model'] == mo) & (s['metric'] == mt), 'n'], _unit(mt))})"
        for mo, mt in cols]
    rows = []
    for method in _order_methods(s["method"]):
        row = [_label(method) + (" (baseline)" if is_baseline(method) else "")]
        for mo, mt in cols:
            hit = s[(s["model"] == mo) & (s["metric"] == mt) & (s["method"] == method)]
            row.append(_interval(hit.iloc[0]) if len(hit) else "—")
        rows.append(row)
    return lines + _table(header, rows) + [""]


def _replicates_section(stability, base) -> list:
    if stability is None or not len(stability):
        return []
    lines = ["## Replicates", "",
             f"Over the independently trained replicates of each model (the tables above show "
             f"replicate {base}): how often each method ranked first (ties count for each), and "
             f"the spread of its means.", ""]
    rows = []
    order = _order_metrics(stability["metric"])
    st = stability.assign(_m=stability["metric"].map(order.index))
    for (family, metric), g in st.sort_values(["family", "_m"]).groupby(["family", "metric"],
                                                                      sort=False):
        for method in _order_methods(g["method"]):
            r = g[g["method"] == method].iloc[0]
            std = f" ± {r['std']:.3g}" if np.isfinite(r["std"]) else ""
            rows.append([family, metric, _label(method), int(r["n_replicates"]),
                         f"{int(r['n_first'])} ({r['share_first']:.0%})",
                         f"{r['mean']:.3g}{std}",
                         f"{r['range']:.3g} [{r['min']:.3g}, {r['max']:.3g}]"])
    return lines + _table(["model", "metric", "method", "n replicates", "ranked first",
                           "mean ± sd", "range [min, max]"], rows) + [""]


def summary_markdown(records: pd.DataFrame, info: dict, tables: dict | None = None) -> str:
    """``summary.md`` (see the module docstring); ``tables`` as :func:`read_statistics`
    returns them (computed from ``records`` when None)."""
    if tables is None:
        from xai_bench.analysis.statistics import analyse

        tables = dict(analyse(records, seed=_run_seed(info), claims=True), computed=True)
    summary = _finite(tables["summary"])
    ranks, best = tables.get("ranks"), tables.get("best")
    models = _model_order(records, summary)
    cfg = info.get("config") or {}
    lines = ["# xai-bench summary", ""]
    dataset = (info.get("dataset") or {}).get("name") or cfg.get("dataset")
    facts = [f"run {cfg['name']}" if cfg.get("name") else "",
             f"data set {dataset}" if dataset else "", f"seed {_run_seed(info)}",
             f"{cfg['n_grids']} grids" if cfg.get("n_grids") is not None else "",
             f"{cfg['n_images']} images per metric" if cfg.get("n_images") is not None else ""]
    lines += ["; ".join(f for f in facts if f) + ".", ""]
    if tables.get("computed"):
        lines += ["The statistics tables were not in the run directory (an older run): they "
                  f"were computed now from records.csv (seed {_run_seed(info)}).", ""]
    infos = info.get("models", {}) or {}
    if infos:
        rows = []
        for name, m in infos.items():
            acc = m.get("test_accuracy") if isinstance(m, dict) else None
            m = m if isinstance(m, dict) else {}
            rows.append([name, m.get("family", ""), m.get("parameters", ""),
                         "" if acc is None else f"{acc:.4f}"])
        lines += _table(["model", "family", "parameters", "test accuracy"], rows) + [""]
    base = _base_replicate(summary)
    several = len(summary) and summary["replicate"].nunique() > 1
    lines += ["How to read the metric tables: each cell is the mean with its 95 % bootstrap "
              "interval over n samples (the column head gives n"
              + (f"; replicate {base} only, the other replicates are under Replicates" if several
                 else "") + "); **bold**: the best mean on the model; the letter is the rank "
              "group (a = the best group; a method shares a group's letter when it is not "
              "significantly different from the group's leader: paired test, Holm-corrected "
              "within the model and metric); —: not scored on that model (skipped or error, "
              "see Not scored). Rules: docs/statistics.md.", ""]
    for metric in _order_metrics(list(summary["metric"]) if len(summary) else []):
        lines += _metric_section(metric, summary, ranks, best, records, models, base)
    if not len(summary):
        lines += ["No scored results: every (model, method, metric) cell was skipped or ended "
                  "in an error.", ""]
    if any(is_class_agnostic(m) for m in (summary["method"] if len(summary) else [])):
        lines += [AGNOSTIC_NOTE + ".", ""]
    lines += _claims_section(tables.get("claims"), summary)
    lines += _agreement_section(tables.get("agreement", pd.DataFrame(
        columns=["model", "replicate", "metric_a", "metric_b", "n_methods", "tau", "p_value"])),
        models)
    lines += _sanity_section(summary, models, base)
    lines += _replicates_section(tables.get("stability"), base)
    not_ok = records[records["status"].astype(str) != "ok"] if len(records) else records
    if len(not_ok):
        lines += ["## Not scored", ""]
        rows = []
        reps = pd.to_numeric(not_ok["replicate"], errors="coerce").fillna(0).astype(int) \
            if "replicate" in not_ok else pd.Series(0, not_ok.index)
        several = reps.nunique() > 1 or bool((reps != 0).any())
        for (model, method, status), g in not_ok.groupby(["model", "method", "status"],
                                                         sort=False):
            messages = list(dict.fromkeys(str(m) for m in g["message"] if str(m)))
            rows.append([model, method, status, ", ".join(_order_metrics(g["metric"]))]
                        + ([", ".join(map(str, sorted(set(reps[g.index]))))] if several else [])
                        + [messages[0] if messages else ""])
        lines += _table(["model", "method", "status", "metrics"]
                        + (["replicates"] if several else []) + ["why (first message)"],
                        rows) + [""]
    counts = records["status"].astype(str).value_counts().to_dict() if len(records) else {}
    lines.append("Records: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                                or "none"))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ entry point

def plot_run(run_dir, out=None) -> list[Path]:
    """Write every figure and the summary of one run directory (see the module docstring)
    into ``out`` (default ``RUN_DIR/plots``); returns the paths written."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "plots"
    records, curves, info = read_records(run_dir), read_curves(run_dir), read_run_info(run_dir)
    examples = read_examples(run_dir)  # every input is read (and checked) before any output
    tables = read_statistics(run_dir, records, info)
    atomic_io.ensure_dir(out)
    models = _model_order(records, tables["summary"])
    with plt.rc_context(_STYLE):
        written = [plot_fig6(tables["summary"], out, models=models, records=records),
                   plot_curves(curves, out, tables["summary"], models=models),
                   plot_agreement(tables["agreement"], out, models=models,
                                  summary=tables["summary"]),
                   *plot_grid_examples(examples, info, out)]
    summary = atomic_io.write_text(out / SUMMARY, summary_markdown(records, info, tables))
    return written + [summary]
