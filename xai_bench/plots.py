"""Figures and summary tables from the tidy tables alone (records.csv, curves.csv, run.json).

- ``fig6_localisation_perturbation.png`` — the paper's Fig. 6: mean localisation per model and
  method, and ABC normalised by the inherent explanation's ABC per model (where it applies;
  otherwise by the model's best method);
- ``perturbation_curves.png`` — mean normalised confidence vs fraction removed, per model, one
  line per method, most-first solid and least-first dashed;
- ``fig7_grid_<model>.png`` — the paper's Fig. 7: the first 2×2 grid of the grid pointing game
  explained for each of its four classes (rows) by every method (columns), from
  ``examples.npz``;
- ``summary.md`` — per-model accuracy and the mean of every metric per method.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from xai_bench import atomic_io  # noqa: E402
from xai_bench.results import (  # noqa: E402
    file_safe, mean_table, read_curves, read_examples, read_records, read_run_info,
)

ABC_METRIC = "pixel_perturbation"


def normalised_abc(means: pd.DataFrame) -> pd.DataFrame:
    """ABC per (model, method) divided by the model's inherent ABC (the paper's
    normalisation), or by the model's best method where inherent does not apply."""
    abc = means[means["metric"] == ABC_METRIC].copy()
    if abc.empty:
        return abc

    def reference(group):
        inherent = group.loc[group["method"] == "inherent", "value"]
        ref = inherent.iloc[0] if len(inherent) else group["value"].max()
        group = group.copy()
        group["value"] = group["value"] / ref if ref else float("nan")
        group["normalised_by"] = "inherent" if len(inherent) else "best method"
        return group

    return pd.concat([reference(g) for _, g in abc.groupby("model")], ignore_index=True)


def plot_fig6(records: pd.DataFrame, out: Path) -> Path | None:
    means = mean_table(records)
    loc = means[means["metric"].isin(localisation_metrics(records))]
    abc = normalised_abc(means)
    panels = [(m, loc[loc["metric"] == m], "mean localisation score")
              for m in sorted(loc["metric"].unique())]
    if not abc.empty:
        panels.append((ABC_METRIC, abc, "ABC / ABC(inherent)"))
    if not panels:
        return None
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (metric, frame, ylabel) in zip(axes[0], panels):
        sns.barplot(frame, x="model", y="value", hue="method", ax=ax, errorbar=None)
        ax.set_title(metric)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("")
        if metric == "grid_pointing_game":
            ax.axhline(0.25, color="grey", ls=":", lw=1)  # uniform map
        ax.legend(fontsize=7, ncols=2, title=None)
    fig.tight_layout()
    path = out / "fig6_localisation_perturbation.png"
    atomic_io.write_figure(path, fig, dpi=150)
    plt.close(fig)
    return path


def localisation_metrics(records: pd.DataFrame) -> list[str]:
    if "category" not in records:
        return []
    return sorted(records.loc[records["category"] == "localisation", "metric"].unique())


def plot_curves(curves: pd.DataFrame, out: Path) -> Path | None:
    curves = curves[curves["metric"] == ABC_METRIC]
    if curves.empty:
        return None
    if "statistic" in curves:
        curves = curves[curves["statistic"].isna() | (curves["statistic"] == "mean_curve")]
    sns.set_theme(style="whitegrid", context="paper")
    models = sorted(curves["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models):
        sns.lineplot(curves[curves["model"] == model], x="fraction", y="value", hue="method",
                     style="order", ax=ax, marker="o", markersize=3, errorbar=None)
        ax.set_title(model)
        ax.set_xlabel("fraction of pixels removed")
        ax.set_ylabel("normalised confidence")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "perturbation_curves.png"
    atomic_io.write_figure(path, fig, dpi=150)
    plt.close(fig)
    return path


GRID_METRIC = "grid_pointing_game"


def plot_grid_examples(examples: dict, info: dict, out: Path) -> list[Path]:
    """One Fig. 7 per model: the grid image with the explained cell outlined, then each
    method's map for that cell's class (blue-white-red, clamped at the 99.9th percentile of
    |map|, each map on its own scale)."""
    classes = (info.get("dataset") or {}).get("classes") or []
    methods = (info.get("config") or {}).get("methods") or []
    paths = []
    for model in dict.fromkeys(m for m, _, metric in examples if metric == GRID_METRIC):
        found = {me: ex for (mo, me, mt), ex in examples.items()
                 if mo == model and mt == GRID_METRIC}
        names = [me for me in methods if me in found] + sorted(set(found) - set(methods))
        first = found[names[0]]
        image = np.clip(first["image"].transpose(1, 2, 0), 0, 1)
        height, width = image.shape[:2]
        fig, axes = plt.subplots(4, 1 + len(names), figsize=(1.5 * (1 + len(names)), 6.3),
                                 squeeze=False)
        for cell in range(4):
            target = int(first["targets"][cell])
            label = classes[target] if target < len(classes) else str(target)
            ax = axes[cell, 0]
            ax.imshow(image)
            row, col = divmod(cell, 2)
            ax.add_patch(Rectangle((col * width / 2 - 0.5, row * height / 2 - 0.5), width / 2,
                                   height / 2, fill=False, edgecolor="yellow", lw=1.5))
            ax.set_ylabel(label, fontsize=8)
            for j, name in enumerate(names, start=1):
                attribution = found[name]["maps"][cell]
                v = float(np.percentile(np.abs(attribution), 99.9)) or 1.0
                axes[cell, j].imshow(attribution, cmap="bwr", vmin=-v, vmax=v)
                if cell == 0:
                    axes[cell, j].set_title(name, fontsize=8)
        axes[0, 0].set_title("grid (explained cell)", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{model}: one grid explained for each of its four classes", fontsize=9)
        fig.tight_layout()
        path = out / f"fig7_grid_{file_safe(model)}.png"
        atomic_io.write_figure(path, fig, dpi=150)
        plt.close(fig)
        paths.append(path)
    return paths


def summary_markdown(records: pd.DataFrame, info: dict) -> str:
    lines = ["# xai-bench summary", ""]
    models = info.get("models", {})
    if models:
        lines += ["| model | family | parameters | test accuracy |", "|---|---|---|---|"]
        for name, m in models.items():
            acc = m.get("test_accuracy")
            lines.append(f"| {name} | {m.get('family', '')} | {m.get('parameters', '')} | "
                         f"{'' if acc is None else f'{acc:.4f}'} |")
        lines.append("")
    means = mean_table(records)
    for metric, frame in means.groupby("metric"):
        table = frame.pivot(index="model", columns="method", values="value")
        higher = records.loc[records["metric"] == metric, "higher_is_better"].iloc[0]
        lines += [f"## {metric} ({'higher' if str(higher) == 'True' else 'lower'} is better)",
                  "", _markdown(table), ""]
    counts = records["status"].value_counts().to_dict()
    lines.append("Records: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines) + "\n"


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    rows = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, row in table.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.3f}" for v in row]
        rows.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_run(run_dir, out=None) -> list[Path]:
    """Write every figure and the summary for one run directory; returns the paths."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "plots"
    records, curves, info = read_records(run_dir), read_curves(run_dir), read_run_info(run_dir)
    examples = read_examples(run_dir)  # every input is read (and checked) before any output
    atomic_io.ensure_dir(out)
    written = [plot_fig6(records, out), plot_curves(curves, out),
               *plot_grid_examples(examples, info, out)]
    summary = out / "summary.md"
    atomic_io.write_text(summary, summary_markdown(records, info))
    return [p for p in written if p is not None] + [summary]
