"""Build a run's :class:`~xai_bench.outputs.summary.model.Summary` once from its statistics
tables (the dict :func:`read_statistics` returns), its records and run.json, with the
entries' cards (:class:`~xai_bench.outputs.presentation.Presentation`) for labels, order,
category and direction."""

from __future__ import annotations

import pandas as pd

from xai_bench.analysis.claims import pairs_in_run
from xai_bench.analysis.tables import run_seed
from xai_bench.outputs.presentation import AGNOSTIC_NOTE, Presentation
from xai_bench.outputs.summary.caveats import classes_section, small_notes
from xai_bench.outputs.summary.metrics import finite, metric_section
from xai_bench.outputs.summary.model import Section, Summary
from xai_bench.outputs.summary.sections import (
    agreement_section, claims_of, claims_section, models_section, not_scored_section,
    replicates_section, sanity_section,
)
from xai_bench.storage.results import base_replicate

__all__ = ["build_summary", "base_claims", "model_order", "READING"]

#: how to read a metric table (the same words on every output that shows one)
READING = ("How to read the metric tables: each cell is the mean with its 95 % bootstrap "
           "interval over n samples (the column head gives n{replicates}); bold: the best "
           "mean on the model; the letter is the rank group (a = the best group; a method "
           "shares a group's letter when it is not significantly different from the group's "
           "leader: paired test, Holm-corrected within the model and metric); —: not scored "
           "on that model (skipped or error, see Not scored). Rules: docs/statistics.md.")


def model_order(records: pd.DataFrame, *frames) -> list:
    """Models in the order the run met them (records first, then any table)."""
    names = list(records["model"].astype(str)) if records is not None and len(records) else []
    for frame in frames:
        if frame is not None and len(frame) and "model" in frame:
            names += [str(m) for m in frame["model"] if str(m)]
    return list(dict.fromkeys(names))


def _facts(info: dict, seed: int) -> list:
    cfg = info.get("config") or {}
    dataset = (info.get("dataset") or {}).get("name") or cfg.get("dataset")
    facts = [f"run {cfg['name']}" if cfg.get("name") else "",
             f"data set {dataset}" if dataset else "", f"seed {seed}",
             f"{cfg['n_grids']} grids" if cfg.get("n_grids") is not None else "",
             f"{cfg['n_images']} images per metric" if cfg.get("n_images") is not None else ""]
    return [f for f in facts if f]


def _computed(tables: dict) -> tuple:
    """The names of the tables computed now: ``tables["computed"]`` is False, a tuple of
    names (``read_statistics``) or True (every table)."""
    computed = tables.get("computed")
    if computed is True:
        return tuple(n for n, t in tables.items() if isinstance(t, pd.DataFrame))
    return tuple(computed or ())


def build_summary(tables: dict, records: pd.DataFrame | None = None, info: dict | None = None,
                  presentation: Presentation | None = None) -> Summary:
    """The summary of one run (see the module doc). ``records``/``info`` may be left out (the
    terminal has only the tables): then there are no model facts and no "Not scored"."""
    info = info or {}
    records = records if records is not None else pd.DataFrame(
        columns=["model", "method", "metric", "status", "message"])
    presentation = presentation or Presentation.of_run(info)
    summary = finite(tables["summary"])
    tables = dict(tables, summary=summary)
    seed = run_seed(info)
    models = model_order(records, summary)
    base = base_replicate(summary)
    several = bool(len(summary)) and summary["replicate"].nunique() > 1
    # every metric the run scored or tried: one whose cells all failed says so in its section
    metric_names = list(summary["metric"].astype(str)) if len(summary) else []
    metric_names += list(records["metric"].astype(str)) if len(records) else []
    metrics = presentation.order_metrics(metric_names)

    sections = [models_section(info)]
    reading = READING.format(replicates=(f"; replicate {base} only, the other replicates are "
                                         f"under Replicates") if several else "")
    group = Section(id="metrics", title="Metrics", intro=[reading],
                    subsections=[metric_section(m, tables, records, models, base, presentation)
                                 for m in metrics])
    if not len(summary):
        group.notes.append("No scored results: every (model, method, metric) cell was "
                           "skipped or ended in an error.")
    methods = summary["method"].astype(str) if len(summary) else []
    agnostic = AGNOSTIC_NOTE + "." if any(presentation.is_class_agnostic(m)
                                          for m in set(methods)) else ""
    if agnostic:
        group.notes.append(agnostic)
    small = small_notes(summary)
    for sub in group.subsections:  # each metric's own small samples, next to its numbers
        sub.notes += small_notes(summary[summary["metric"].astype(str) == sub.metric]) \
            if len(summary) else []
    classes = classes_section(records, info, presentation, base)
    sections += [classes] if classes is not None else []
    sections.append(group)
    claims = claims_of(tables.get("claims"), summary)
    pairs = _pairs(models, claims)
    if pairs:  # the paper's claims compare a B-cos model with its twin: only then
        sections.append(claims_section(claims))
    else:
        claims = []
    sections.append(agreement_section(tables.get("agreement"), models, base, presentation))
    sections.append(sanity_section(summary, records, models, base, presentation))
    optional = [replicates_section(tables.get("stability"), base, presentation),
                not_scored_section(records, presentation)]
    sections += [s for s in optional if s is not None]
    counts = records["status"].astype(str).value_counts().to_dict() if len(records) else {}
    verdicts = [v for s in group.subsections for v in s.verdicts]
    return Summary(facts=_facts(info, seed), seed=seed, computed=_computed(tables),
                   base=base, models=models, metrics=metrics, sections=sections,
                   verdicts=verdicts, claims=claims, counts=counts, small=small,
                   pairs=pairs)


def _pairs(models: list, claims: list) -> list:
    """The (B-cos model, twin) pairs in the run: by the naming rule, and those a claim was
    evaluated on (claims.csv records the twin, also one given by ``pairs``)."""
    found = pairs_in_run(models)
    found += [(c.model, c.twin) for c in claims
              if c.model in models and c.twin in models and c.twin != c.model]
    return list(dict.fromkeys(found))


def base_claims(summary: Summary) -> list:
    """The claims of the replicate shown by default."""
    reps = sorted({c.replicate for c in summary.claims})
    base = 0 if 0 in reps or not reps else reps[0]
    return [c for c in summary.claims if c.replicate == base]

