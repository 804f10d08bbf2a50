"""What a reader must keep in mind about a run's numbers, for every output to say the same:
which estimates rest on a small sample (:mod:`xai_bench.analysis.sample_size`), and which
classes the images of the image-selecting metrics came from (the perturbation and sanity
metrics explain each model's most confidently and correctly classified test images, so a
selection that falls on one class speaks for that class only)."""

from __future__ import annotations

import pandas as pd

from xai_bench.analysis.sample_size import SMALL_SAMPLE_N, small_sample_notes, small_samples
from xai_bench.outputs.summary.model import Cell, Section, Table

__all__ = ["SMALL_SAMPLE_N", "SELECTED_CATEGORIES", "LABEL_COLUMNS", "small_notes",
           "small_groups", "is_small", "small_text", "class_counts", "classes_section"]

#: the metric categories whose images come from the confident-image selection
SELECTED_CATEGORIES = ("perturbation", "sanity")
#: record columns that hold a selected image's class, first found wins: the true label where
#: the runner records it, else the explained class (the label for these metrics, which keep
#: only correctly classified images)
LABEL_COLUMNS = ("label", "target")


def _finite_summary(summary: pd.DataFrame) -> pd.DataFrame:
    if summary is None or not len(summary) or "n" not in summary:
        return pd.DataFrame(columns=["model", "metric", "method", "n"])
    return summary[pd.to_numeric(summary["n"], errors="coerce").notna()]


def small_notes(summary: pd.DataFrame) -> list:
    """One line per (model, metric) with groups below :data:`SMALL_SAMPLE_N` samples."""
    return small_sample_notes(_finite_summary(summary))


def small_groups(summary: pd.DataFrame) -> dict:
    """``{(model, metric, method): n}`` of the groups below :data:`SMALL_SAMPLE_N`."""
    flagged = small_samples(_finite_summary(summary))
    return {(str(r.model), str(r.metric), str(r.method)): int(r.n)
            for r in flagged.itertuples(index=False)}


def is_small(n) -> bool:
    return n is not None and pd.notna(n) and int(n) < SMALL_SAMPLE_N


def small_text(n) -> str:
    """The warning next to a small n: ``n = 2 — below 10: intervals and tests unreliable``."""
    return (f"n = {int(n)} — below {SMALL_SAMPLE_N}: intervals and tests unreliable"
            if is_small(n) else "")


def _image_id(records: pd.DataFrame) -> pd.Series:
    """The selected image of each record: its data-set index where recorded, else the part of
    its sample id before the first "/" (``img00012/stage0`` is image ``img00012``)."""
    ids = records["sample_id"].astype(str).str.split("/").str[0]
    if "source_index" in records:
        index = pd.to_numeric(records["source_index"], errors="coerce")
        ids = index.map(lambda v: f"#{int(v)}" if pd.notna(v) else None).fillna(ids)
    return ids


def class_counts(records: pd.DataFrame) -> pd.DataFrame:
    """Per (model, replicate): the images the perturbation and sanity metrics explained and
    their classes. Columns ``model``, ``replicate``, ``metrics`` (tuple), ``images``,
    ``counts`` (``{class index: images}``, most frequent first). From the ok records of
    metrics whose recorded category is in :data:`SELECTED_CATEGORIES`; the class is the
    first of :data:`LABEL_COLUMNS` the records have. Empty without such records."""
    columns = ["model", "replicate", "metrics", "images", "counts"]
    label = next((c for c in LABEL_COLUMNS if c in records), None) if records is not None \
        else None
    if label is None or not len(records) or "category" not in records:
        return pd.DataFrame(columns=columns)
    ok = records[(records["status"].astype(str) == "ok")
                 & records["category"].astype(str).isin(SELECTED_CATEGORIES)]
    classes = pd.to_numeric(ok[label], errors="coerce")
    ok = ok[classes.notna() & (classes >= 0)]  # -1: a mean-curve row, no image
    if not len(ok):
        return pd.DataFrame(columns=columns)
    replicate = pd.to_numeric(ok["replicate"], errors="coerce").fillna(0).astype(int) \
        if "replicate" in ok else pd.Series(0, ok.index)
    frame = pd.DataFrame({"model": ok["model"].astype(str), "replicate": replicate,
                          "metric": ok["metric"].astype(str), "image": _image_id(ok),
                          "label": pd.to_numeric(ok[label]).astype(int)})
    rows = []
    for (model, replicate), g in frame.groupby(["model", "replicate"], sort=False):
        images = g.drop_duplicates("image")
        counts = images["label"].value_counts()
        counts = counts.sort_index().sort_values(ascending=False, kind="stable")
        rows.append(dict(model=model, replicate=int(replicate),
                         metrics=tuple(dict.fromkeys(g["metric"])), images=len(images),
                         counts={int(k): int(v) for k, v in counts.items()}))
    return pd.DataFrame(rows, columns=columns)


def _name(index: int, classes: list) -> str:
    return str(classes[index]) if 0 <= index < len(classes) else f"class {index}"


def _rule(info: dict, metrics: set) -> str:
    """The selection rule the metrics recorded (their parameters in run.json), "" when none
    did (a run made before the rule was recorded: the rule cannot be told)."""
    params = info.get("metric_params") or {}
    rules = {str(p["selection"]) for m, p in params.items()
             if m in metrics and isinstance(p, dict) and p.get("selection")}
    if not rules and (info.get("config") or {}).get("selection"):
        rules = {str(info["config"]["selection"])}
    return ", ".join(sorted(rules))


def classes_section(records: pd.DataFrame, info: dict, presentation, base: int = 0
                    ) -> Section | None:
    """The classes of the images the perturbation and sanity metrics explained, per model
    (replicate ``base``); None when the run has no such metric."""
    counts = class_counts(records)
    if not len(counts):
        return None
    shown = counts[counts["replicate"] == base]
    shown = shown if len(shown) else counts[counts["replicate"] == counts["replicate"].min()]
    classes = list((info.get("dataset") or {}).get("classes") or [])
    rule = _rule(info, {m for ms in shown["metrics"] for m in ms})
    words = {"stratified": "the most confident of each class in turn",
             "global": "the most confident overall, whatever their class"}
    section = Section(id="classes", title="Classes of the explained images")
    section.intro.append(
        "The perturbation and sanity metrics explain each model's most confidently and "
        "correctly classified test images"
        + (f" (selection rule {rule}: {words.get(rule, rule)})" if rule else "")
        + "; per model, how many of them came from each class.")
    rows, narrow = [], []
    for r in shown.itertuples(index=False):
        metrics = presentation.order_metrics(r.metrics)
        covered = f"{len(r.counts)}" + (f" of {len(classes)}" if classes else "")
        rows.append([Cell(r.model), Cell(str(r.images)), Cell(covered),
                     Cell(", ".join(f"{_name(k, classes)} {v}" for k, v in r.counts.items())),
                     Cell(", ".join(metrics))])
        top, share = next(iter(r.counts.items()))
        if r.images >= 2 and share / r.images > 0.5:
            narrow.append(f"{r.model}: {share} of {r.images} images are of class "
                          f"{_name(top, classes)}, so its perturbation and sanity results "
                          f"speak mostly for that class.")
    section.tables.append(Table(["model", "images", "classes", "images per class", "metrics"],
                                rows, kind="classes"))
    section.notes += narrow
    if rule != "stratified" and narrow:
        section.notes.append("--selection stratified takes the images class by class in "
                             "turn, so that they cover every class.")
    return section
