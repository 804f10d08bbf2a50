"""The matplotlib figures of a run: Fig. 6, the perturbation curves and the metric agreement.

Each is drawn from a statistics table and the run's :class:`Presentation` alone — the
colours, labels, order, units, directions and chance levels the methods and metrics declare —
so a plugin method or metric is drawn exactly like a built-in one:

- ``fig6.png`` — the paper's Fig. 6 for every metric: per model, each method's mean with its
  95 % bootstrap interval (the base replicate; further replicates' means as small markers),
  raw, never normalised per model. Baselines are in their grey, hatched and set apart after a
  gap; class-agnostic methods carry a "†"; a metric's declared chance level is drawn; each
  panel says its declared category and direction, its axis the declared label; methods a
  model could not be scored with are left out, never drawn as 0;
- ``curves.png`` — the mean removal curves of every metric that records both orders
  (most-important-first solid, least-important-first dashed), one panel per (model, method),
  the area between them (the ABC) shaded and written with its interval;
- ``agreement.png`` — Kendall's τ between the metrics' method rankings, per model.

``fig6_figure`` & co. return the figure (for tests and the report); ``plot_fig6`` & co. write
it. A figure with nothing to show is still written, saying why, so a plots folder never keeps
a stale figure.
"""

from __future__ import annotations

import functools
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from xai_bench.outputs.presentation import AGNOSTIC_NOTE, BASELINE_HATCH  # noqa: E402
from xai_bench.outputs.summary.metrics import finite, n_text  # noqa: E402
from xai_bench.storage import atomic_io  # noqa: E402
from xai_bench.storage.results import base_replicate  # noqa: E402

__all__ = ["FIG6", "CURVES", "AGREEMENT", "DPI", "STYLE", "PAIRED_ORDERS", "fig6_figure",
           "curves_figure", "agreement_figure", "plot_fig6", "plot_curves", "plot_agreement",
           "save_figure"]

FIG6, CURVES, AGREEMENT = "fig6.png", "curves.png", "agreement.png"
DPI = 150
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.35,
         "grid.linewidth": 0.5, "axes.axisbelow": True, "hatch.linewidth": 0.6,
         "figure.facecolor": "white", "savefig.facecolor": "white"}
#: the two orders of a removal curve whose area between them is the metric's score (the
#: curves.csv convention); a metric that records both gets a panel in curves.png
PAIRED_ORDERS = ("most_first", "least_first")
CHANCE_GREY = "#444444"


def _styled(draw):
    """``draw`` inside :data:`STYLE` (text sizes are fixed when the artists are made)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` atomically (inside :data:`STYLE`: hatches are drawn now) and close it."""
    with plt.rc_context(STYLE):
        atomic_io.write_figure(path, fig, dpi=DPI)
    plt.close(fig)
    return Path(path)


def _wrap(lines, inches: float) -> str:
    """Lines of a 7-point note wrapped to a figure ``inches`` wide."""
    return "\n".join(textwrap.fill(line, width=max(40, int(inches * 15))) for line in lines)


def _placeholder(title: str, message: str):
    """A small figure saying why there is nothing to draw (so no stale figure survives)."""
    fig = plt.figure(figsize=(6.4, 1.6))
    fig.text(0.5, 0.68, title, ha="center", va="center", fontsize=10, weight="bold")
    fig.text(0.5, 0.35, message, ha="center", va="center", fontsize=8, wrap=True)
    return fig


def _models(models, frame) -> list:
    """The models to draw: ``models`` (the run's order) where the frame has them."""
    return [m for m in (models or []) if m in set(frame["model"])] or \
        list(dict.fromkeys(frame["model"].astype(str)))


# ------------------------------------------------------------------------------ Fig. 6

def _group_layout(methods: list, presentation) -> list:
    """x positions of a model's methods: real methods side by side, a gap, the baselines."""
    xs, x, seen_base = [], 0.0, False
    for m in methods:
        baseline = presentation.is_baseline(m)
        if baseline and not seen_base and xs:
            x += 0.7
        seen_base = seen_base or baseline
        xs.append(x)
        x += 1.0
    return xs


def _chance_line(ax, chance: float) -> None:
    """The declared chance level, never at the edge of the panel."""
    ax.axhline(chance, color=CHANCE_GREY, ls="--", lw=0.9, zorder=3)
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, 0.0, chance), max(high, chance + 0.15 * abs(chance or 1.0)))
    ax.annotate(f"chance\n{chance:g}", xy=(1.0, chance), xycoords=("axes fraction", "data"),
                xytext=(3, 0), textcoords="offset points", va="center", ha="left",
                fontsize=6.5, color=CHANCE_GREY, annotation_clip=False)


def _fig6_panel(ax, metric, first, others, models, presentation, used) -> None:
    """One metric's panel: per model its methods' bars, whiskers and replicate markers."""
    frame = first[first["metric"] == metric]
    rest = others[others["metric"] == metric]
    ticks, labels, centres, heads = [], [], [], []
    bars, whiskers = {False: [], True: []}, []  # drawn with one call each (far faster)
    offset = 0.0
    for gi, model in enumerate(models):
        g = frame[frame["model"] == model].set_index("method")
        rest_g = rest[rest["model"] == model]
        # a method scored only on other replicates gets their markers, without a bar
        methods = presentation.order_methods(list(g.index) + list(rest_g["method"]))
        xs = [offset + x for x in _group_layout(methods, presentation)]
        for x, method in zip(xs, methods):
            used.add(method)
            reps = rest_g[rest_g["method"] == method]["mean"]
            if len(reps):
                jitter = np.linspace(-0.2, 0.2, len(reps)) if len(reps) > 1 else [0.0]
                ax.plot(x + np.asarray(jitter), reps.to_numpy(float), ls="none", marker="o",
                        ms=2.8, mfc="white", mec="black", mew=0.7, zorder=4)
            if method not in g.index:
                continue
            row = g.loc[method]
            mean, lo, hi = float(row["mean"]), float(row["ci_low"]), float(row["ci_high"])
            bars[presentation.is_baseline(method)].append(
                (x, mean, presentation.method_colour(method)))
            if np.isfinite(lo) and np.isfinite(hi):
                whiskers.append((x, mean, max(mean - lo, 0.0), max(hi - mean, 0.0)))
        ticks += xs
        labels += [presentation.method_label(m) for m in methods]
        width_g = (xs[-1] - xs[0]) if xs else 2.0
        centre = (xs[0] + width_g / 2) if xs else offset + 1.0
        centres.append(centre)
        count = n_text(g["n"], presentation.metric_unit(metric)) if len(g) else ""
        heads.append(f"{model}\n{count}")
        if not xs:
            ax.text(centre, 0.5, "not scored\n(skipped / error)", ha="center", va="center",
                    fontsize=7, color="#555555", transform=ax.get_xaxis_transform())
        if gi < len(models) - 1:
            sep = (xs[-1] if xs else offset + 2.0) + 1.25
            ax.axvline(sep, color="#bbbbbb", lw=0.8, zorder=1)
            offset = sep + 1.25
    for baseline, group in bars.items():
        if group:
            x, mean, colour = zip(*group)
            ax.bar(x, mean, width=0.8, color=colour, edgecolor="#303030", linewidth=0.5,
                   hatch=BASELINE_HATCH if baseline else None, alpha=0.75 if baseline else 1.0,
                   zorder=2)
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
    chance = presentation.metric_chance(metric)
    if chance is not None:
        _chance_line(ax, chance)
    ax.set_title(presentation.title(metric), fontsize=8.5)
    ax.set_ylabel(presentation.metric_label(metric))


def _fig6_legend(fig, used, presentation, *, chance, others, base, total) -> None:
    handles = []
    for m in presentation.order_methods(used):
        baseline = presentation.is_baseline(m)
        handles.append(Patch(facecolor=presentation.method_colour(m), edgecolor="#303030",
                             linewidth=0.5, hatch=BASELINE_HATCH if baseline else None,
                             alpha=0.75 if baseline else 1.0,
                             label=presentation.method_label(m)
                             + (" (baseline)" if baseline else "")))
    if chance:
        handles.append(Line2D([], [], color=CHANCE_GREY, ls="--", lw=0.9,
                              label="chance level: the declared score of an uninformative map"))
    if others:
        handles.append(Line2D([], [], ls="none", marker="o", ms=3, mfc="white", mec="black",
                              label="means of the other replicates"))
    notes = ["bars: mean; whiskers: 95 % bootstrap interval"
             + (f" (replicate {base})" if others or base else "")
             + "; means are raw (not normalised per model); methods a model could not be "
               "scored with are left out"]
    if any(presentation.is_class_agnostic(m) for m in used):
        notes.append(AGNOSTIC_NOTE)
    fig.legend(handles=handles, loc="outside lower center",
               ncols=max(1, min(len(handles), 6, int(total // 1.9))), frameon=False,
               title=_wrap(notes, total), title_fontsize=7)


@_styled
def fig6_figure(summary: pd.DataFrame, *, presentation, models=None):
    """Fig. 6 (see the module docstring) of the ``summary`` statistics table."""
    summary = finite(summary)
    if not len(summary):
        return _placeholder("Fig. 6: methods per metric",
                            "No scored results: every (model, method, metric) cell of this run "
                            "was skipped or ended in an error (see records.csv).")
    base = base_replicate(summary)
    first, others = summary[summary["replicate"] == base], summary[summary["replicate"] != base]
    metrics = presentation.order_metrics(first["metric"])
    models = _models(models, summary)
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
        _fig6_panel(ax, metric, first, others, models, presentation, used)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    chance = any(presentation.metric_chance(m) is not None for m in metrics)
    _fig6_legend(fig, used, presentation, chance=chance, others=bool(len(others)), base=base,
                 total=total)
    fig.suptitle("Fig. 6: each method on each metric, per model", fontsize=10)
    return fig


def plot_fig6(summary: pd.DataFrame, out: Path, *, presentation, models=None) -> Path:
    """``fig6.png`` in ``out`` (see :func:`fig6_figure`)."""
    return save_figure(fig6_figure(summary, presentation=presentation, models=models),
                       Path(out) / FIG6)


# ------------------------------------------------------------------------------ curves

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


def _paired_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The mean-curve rows of both :data:`PAIRED_ORDERS`, of the metrics that record both."""
    c = curves
    if len(c) and "statistic" in c:
        c = c[c["statistic"].isna() | (c["statistic"] == "mean_curve")]
    if not len(c) or "order" not in c:
        return c.iloc[0:0] if len(c) else c
    c = c[c["order"].isin(PAIRED_ORDERS)]
    paired = [m for m, g in c.groupby("metric") if set(g["order"]) >= set(PAIRED_ORDERS)]
    c = c[c["metric"].isin(paired)]
    return c.assign(replicate=pd.to_numeric(c["replicate"], errors="coerce").fillna(0)
                    .astype(int), value=pd.to_numeric(c["value"], errors="coerce"),
                    fraction=pd.to_numeric(c["fraction"], errors="coerce"))


def _area_text(summary, model, method, metric, base, most, least, common) -> str | None:
    """The panel's ABC: the summary's estimate with its interval, else the area of the mean
    curves."""
    from xai_bench.analysis.statistics import format_interval

    if summary is not None and len(summary):
        s = summary
        row = s[(s["model"] == model) & (s["method"] == method) & (s["metric"] == metric)
                & (s["replicate"] == base)]
        if len(row):
            row = row.iloc[0]
            return (f"ABC {format_interval(row['mean'], row['ci_low'], row['ci_high'])}"
                    f", n = {int(row['n'])}")
    if len(common) > 1:
        x = np.asarray(common, float)
        return f"ABC {np.trapezoid(least[common].values - most[common].values, x):.3g}"
    return None


@_styled
def curves_figure(curves: pd.DataFrame, summary: pd.DataFrame | None = None, *, presentation,
                  models=None):
    """The mean removal curves (see the module docstring), one panel per (metric, model,
    method)."""
    c = _paired_curves(curves)
    if not len(c):
        return _placeholder("Removal curves", "This run has no metric with both removal "
                            "orders (most- and least-important first): none was run, or every "
                            "cell of one was skipped or failed.")
    base = base_replicate(c)
    c = c[c["replicate"] == base]
    metrics = presentation.order_metrics(c["metric"])
    blocks = [(mt, mo) for mt in metrics for mo in _models(models, c[c["metric"] == mt])]
    panels = {b: presentation.order_methods(c.loc[(c["metric"] == b[0]) & (c["model"] == b[1]),
                                                  "method"]) for b in blocks}
    panels = {b: v for b, v in panels.items() if v}
    ncols = _columns_for([len(v) for v in panels.values()])
    rows_of = {b: math.ceil(len(v) / ncols) for b, v in panels.items()}
    nrows = sum(rows_of.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(2.3 * ncols, 7.0), 2.0 * nrows + 1.0),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    used_axes, agnostic, row0 = set(), False, 0
    for (metric, model), methods in panels.items():
        for i, method in enumerate(methods):
            r, col = row0 + i // ncols, i % ncols
            ax = axes[r, col]
            used_axes.add((r, col))
            g = c[(c["metric"] == metric) & (c["model"] == model) & (c["method"] == method)]
            most, least = _curve(g, PAIRED_ORDERS[0]), _curve(g, PAIRED_ORDERS[1])
            colour = presentation.method_colour(method)
            ax.plot(most.index, most.values, color=colour, ls="-", lw=1.4)
            ax.plot(least.index, least.values, color=colour, ls="--", lw=1.4)
            common = most.index.intersection(least.index)
            ax.fill_between(common, most[common].values, least[common].values, color=colour,
                            alpha=0.25, lw=0)
            agnostic = agnostic or presentation.is_class_agnostic(method)
            text = _area_text(summary, model, method, metric, base, most, least, common)
            head = (f"{metric} · " if len(metrics) > 1 else "") + \
                f"{model} · {presentation.method_label(method)}"
            # the ABC goes above the panel, where it covers no curve; y given: no ticks on
            # top to clear, so matplotlib need not measure every panel for every title
            ax.set_title(head + (f"\n{text}" if text else ""), fontsize=7, y=1.0)
        row0 += rows_of[(metric, model)]
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
    fig.suptitle(f"{', '.join(metrics)}: confidence as pixels are removed", fontsize=10)
    return fig


def plot_curves(curves: pd.DataFrame, out: Path, summary: pd.DataFrame | None = None, *,
                presentation, models=None) -> Path:
    """``curves.png`` in ``out`` (see :func:`curves_figure`)."""
    return save_figure(curves_figure(curves, summary, presentation=presentation,
                                     models=models), Path(out) / CURVES)


# ------------------------------------------------------------------------------ agreement

def _agreement_cell(ax, i, j, tau, count) -> None:
    if i == j:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white",
                               edgecolor="#cccccc", lw=0.5))
        ax.text(j, i, "—", ha="center", va="center", fontsize=7, color="#999999")
    elif np.isfinite(tau):
        ax.text(j, i, f"{tau:.2f}\n{count} m.", ha="center", va="center", fontsize=6.5,
                color="white" if abs(tau) > 0.6 else "black")
    else:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none",
                               edgecolor="#aaaaaa", hatch="///", lw=0))
        ax.text(j, i, f"n/a\n{count} m.", ha="center", va="center", fontsize=6.5,
                color="#555555", bbox=dict(facecolor="#eeeeee", lw=0, pad=0.5))


@_styled
def agreement_figure(agreement: pd.DataFrame, *, presentation, models=None):
    """Per model, Kendall's τ between every two metrics' method rankings (the base
    replicate), annotated, on a diverging map centred at 0; NaN cells hatched."""
    a = agreement
    if len(a):
        a = a[a["replicate"] == base_replicate(a)]
    metrics = presentation.order_metrics(list(a["metric_a"]) + list(a["metric_b"])) \
        if len(a) else []
    if len(metrics) < 2:
        return _placeholder("Metric agreement",
                            "Kendall's τ compares two metrics' rankings of the methods: this "
                            "run has fewer than two metrics with scored methods on one model.")
    models = _models(models, a)
    k = len(metrics)
    side = 0.62 * k + 1.6
    fig, axes = plt.subplots(1, len(models),
                             figsize=(max(side * len(models) + 1.0, 7.0), side + 0.9),
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("PuOr").with_extremes(bad="#eeeeee")
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
    names = [m + ("" if presentation.higher_is_better(m) else " ↓") for m in metrics]
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
                _agreement_cell(ax, i, j, tau[i, j], count[i, j])
        ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), names)
        ax.grid(False)
        ax.set_title(model, fontsize=9, y=1.0)  # nothing on top to clear
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="Kendall τ-b")
    fig.suptitle("Metric agreement: Kendall τ between the metrics' rankings of the methods\n"
                 "(↓ lower-is-better metric, reversed first: τ = 1 means the same order of "
                 "better; m. = methods compared;\nn/a: fewer than 3 common methods or a "
                 "constant ranking)", fontsize=8)
    return fig


def plot_agreement(agreement: pd.DataFrame, out: Path, *, presentation, models=None) -> Path:
    """``agreement.png`` in ``out`` (see :func:`agreement_figure`)."""
    return save_figure(agreement_figure(agreement, presentation=presentation, models=models),
                       Path(out) / AGREEMENT)
