"""The report's "Which metrics can be trusted" subsection, from the run directory's meta.csv
(``xai-bench run --meta``, :mod:`xai_bench.run.meta`); nothing without that file."""

from __future__ import annotations

from pathlib import Path

from xai_bench.outputs.report.html import DASH, fmt_number, html_table, paragraphs

__all__ = ["meta_html"]

_INTRO = (
    "From meta.csv (xai-bench run --meta), in the spirit of MetaQuantus (Hedström et al., "
    "2023). Resilience: the mean Wilcoxon p-value of the clean against the perturbed "
    "per-sample scores under minor perturbations that leave the predictions unchanged "
    "(high: the scores stay put). Reactivity: the mean 1 − p under disruptive perturbations "
    "(high: the scores move). Inter-consistency: under minor perturbations the share of "
    "unchanged method ranks per sample, under disruptive ones the share of scores that got "
    "worse. Meta-consistency: the mean of the four, per perturbation (model weights, input "
    "pixels); 1 is ideal. Separates from random: the (model, method) pairs whose paired gap to "
    "the random baseline has a 95 % interval excluding 0, of those compared. Means over "
    "models and methods.")


def _num(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return DASH
    return DASH if v != v else f"{v:.2f}"


def meta_html(run_dir) -> str:
    """The subsection's HTML, or "" when the run directory has no meta.csv."""
    path = Path(run_dir) / "meta.csv"
    if not path.is_file():
        return ""
    import pandas as pd

    from xai_bench.run.meta import meta_summary

    frame = pd.read_csv(path)
    parts = ['<h3 id="meta">Which metrics can be trusted</h3>', paragraphs([_INTRO])]
    summary = meta_summary(frame)
    rows = []
    for _, r in summary.iterrows():
        sep = DASH if r["separating"] is None or r["separating"] != r["separating"] else \
            f"{int(r['separating'])} of {int(r['compared'])}"
        rows.append([r["metric"], _num(r["resilience_model"]), _num(r["reactivity_model"]),
                     _num(r["resilience_input"]), _num(r["reactivity_input"]),
                     _num(r["meta_consistency_model"]), _num(r["meta_consistency_input"]),
                     sep])
    parts.append(html_table(["metric", "resilience (model)", "reactivity (model)",
                             "resilience (input)", "reactivity (input)",
                             "meta-consistency (model)", "meta-consistency (input)",
                             "separates from random"], rows, cls="meta"))
    notes = []
    if not frame["random_gap"].notna().any():
        notes.append("The run has no 'random' method, so the gap to the random baseline "
                     "was not computed (add --methods ...,random).")
    for kind in ("model", "input"):
        col = f"minor_accepted_{kind}"
        if col in frame and (frame[col].astype(str).str.lower() == "false").any():
            notes.append(f"Some minor {kind} perturbations changed a prediction in every "
                         f"draw tried; their resilience is measured on those draws anyway.")
    first = frame.iloc[0] if len(frame) else None
    if first is not None:
        notes.append(f"{int(first['k'])} draws per perturbation; model weights × N(1, σ) "
                     f"with σ = {fmt_number(first['model_sigma_minor'])} (minor) and "
                     f"{fmt_number(first['model_sigma_disruptive'])} (disruptive); pixels + "
                     f"U(−δ, δ) with δ = {fmt_number(first['input_delta_minor'])} and "
                     f"{fmt_number(first['input_delta_disruptive'])}.")
    for metric, note in frame.groupby("metric")["note"].first().items():
        if isinstance(note, str) and note:
            notes.append(f"{metric}: {note}")
    parts.append(paragraphs(notes, cls="note"))
    detail = frame[frame["method"].astype(str).ne("") & frame["method"].notna()]
    if len(detail):
        head = ["model", "metric", "method", "resilience model", "reactivity model",
                "resilience input", "reactivity input", "gap to random [95 % CI]", "n"]
        body = []
        for _, r in detail.iterrows():
            gap = DASH if r["random_gap"] != r["random_gap"] else \
                f"{r['random_gap']:.3g} [{r['random_gap_low']:.3g}, {r['random_gap_high']:.3g}]"
            body.append([r["model"], r["metric"], r["method"], _num(r["resilience_model"]),
                         _num(r["reactivity_model"]), _num(r["resilience_input"]),
                         _num(r["reactivity_input"]), gap, fmt_number(r["n_samples"])])
        parts.append("<details><summary>every model, metric and method</summary>"
                     + html_table(head, body) + "</details>")
    return "\n".join(parts)
