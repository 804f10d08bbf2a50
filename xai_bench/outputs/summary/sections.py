"""The sections of a run's summary other than the metrics': the models, the paper's claims,
metric agreement, the sanity checks (the metrics whose card declares the category
``sanity``), the replicates and what was not scored."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xai_bench.outputs.summary.metrics import (
    interval_of, method_cell, metric_facts, n_text, select,
)
from xai_bench.outputs.summary.model import MISSING, Cell, Claim, Section, Table

__all__ = ["models_section", "claims_of", "claims_section", "agreement_section",
           "sanity_section", "replicates_section", "not_scored_section", "SANITY"]

#: the category whose metrics the sanity section gathers
SANITY = "sanity"


def models_section(info: dict) -> Section:
    section = Section(id="models", title="Models")
    infos = info.get("models") or {}
    if not infos:
        section.intro.append("run.json lists no models.")
        return section
    rows = []
    for name, m in infos.items():
        m = m if isinstance(m, dict) else {}
        acc = m.get("test_accuracy")
        rows.append([Cell.of(name), Cell.of(m.get("family", "")),
                     Cell.of(m.get("parameters", "")),
                     Cell("" if acc is None else f"{acc:.4f}")])
    section.tables.append(Table(["model", "family", "parameters", "test accuracy"], rows,
                                kind="models"))
    return section


def claims_of(claims, summary) -> list:
    """Every evaluated claim as a :class:`Claim`, with n: the samples of its metric on the
    model (and twin)."""
    if claims is None or not len(claims):
        return []
    out = []
    for c in claims.to_dict("records"):
        model, twin = str(c.get("model") or ""), str(c.get("twin") or "")
        replicate = int(c.get("replicate", 0) or 0)

        def n_of(name):
            hit = select(summary, replicate, model=name, metric=c["metric"]) if name \
                else summary.iloc[0:0]
            return str(int(hit["n"].max())) if len(hit) else MISSING

        est = c.get("estimate")
        estimate = None if est is None or not np.isfinite(float(est)) else \
            interval_of(dict(mean=est, ci_low=c.get("ci_low"), ci_high=c.get("ci_high")))
        out.append(Claim(claim=str(c["claim"]), text=str(c.get("text") or ""), model=model,
                         twin=twin, replicate=replicate, outcome=str(c["outcome"]),
                         estimate=estimate, detail=str(c.get("detail") or ""),
                         n=n_of(model) + (f" / {n_of(twin)}" if twin else "")))
    return out


def claims_section(claims: list) -> Section:
    section = Section(id="claims", title="The paper's claims")
    if not claims:
        section.intro.append("No claims were evaluated.")
        return section
    several = len({c.replicate for c in claims}) > 1
    columns = ["claim", "text", "model vs twin"] + (["replicate"] if several else []) + \
        ["n (model / twin)", "outcome", "estimate [95 % interval]", "detail"]
    rows = []
    for c in claims:
        who = f"{c.model} vs {c.twin}" if c.model and c.twin else (c.model or MISSING)
        rows.append([Cell(c.claim), Cell(c.text), Cell(who)]
                    + ([Cell(str(c.replicate))] if several else [])
                    + [Cell(c.n), Cell(c.outcome, outcome=c.outcome),
                       Cell(interval=c.estimate) if c.estimate else Cell(MISSING),
                       Cell(c.detail)])
    section.tables.append(Table(columns, rows, kind="claims"))
    section.notes.append(
        "holds / fails: the interval (or the paired test) decides; inconclusive: it does not, "
        "or the run lacks what the claim needs (the detail says which). Estimate: a "
        "best-method claim's advantage over the strongest other method (positive = better); "
        "a twin claim's factor or difference against the twin's best method. n: samples of "
        "the claim's metric. Rules: docs/statistics.md.")
    return section


def agreement_section(agreement, models: list, base: int, presentation) -> Section:
    section = Section(id="agreement", title="Metric agreement")
    a = select(agreement, base) if agreement is not None else None
    if a is None or not len(a):
        section.intro.append("Needs at least two metrics scored on one model.")
        return section
    models = [m for m in models if m in set(a["model"].astype(str))]
    order = presentation.order_metrics(list(a["metric_a"]) + list(a["metric_b"]))
    pairs = list(dict.fromkeys(tuple(sorted((str(x), str(y)), key=order.index))
                               for x, y in zip(a["metric_a"], a["metric_b"])))
    pairs.sort(key=lambda p: (order.index(p[0]), order.index(p[1])))
    rows = []
    for ma, mb in pairs:
        row = [Cell(ma), Cell(mb)]
        for model in models:
            hit = a[(a["model"].astype(str) == model)
                    & (((a["metric_a"] == ma) & (a["metric_b"] == mb))
                       | ((a["metric_a"] == mb) & (a["metric_b"] == ma)))]
            if not len(hit):
                row.append(Cell(MISSING))
                continue
            h = hit.iloc[0]
            tau = f"{h['tau']:.2f}" if np.isfinite(h["tau"]) else "n/a"
            p = f", p = {h['p_value']:.2g}" if np.isfinite(h["p_value"]) else ""
            row.append(Cell(f"{tau} (n = {int(h['n_methods'])} methods{p})"))
        rows.append(row)
    section.tables.append(Table(["metric A", "metric B"] + [f"{m}: τ" for m in models], rows,
                                kind="agreement"))
    section.notes.append(
        "Kendall's τ-b between the two metrics' rankings of the methods both scored (n "
        "methods; lower-is-better metrics reversed first, so τ = 1 means the same order from "
        "better to worse, −1 the reverse); n/a: fewer than 3 common methods or a constant "
        "ranking.")
    return section


def sanity_section(summary, records, models: list, base: int, presentation) -> Section:
    """The metrics whose card declares the category ``sanity``, side by side."""
    section = Section(id="sanity", title="Sanity checks")
    names = list(summary["metric"].astype(str)) if len(summary) else []
    present = [m for m in presentation.order_metrics(names)
               if metric_facts(m, presentation, summary, records)[0] == SANITY]
    if not present:
        section.intro.append(f"This run has no sanity metric (category {SANITY}); add them "
                             f"with --metric {SANITY}.")
        return section
    what = "; ".join(f"{m} ({presentation.direction(m, arrow=False)}): "
                     f"{presentation.description(m) or 'no description'}" for m in present)
    section.intro.append(
        f"Each sanity metric compares a method's maps with maps that should differ from them "
        f"— {what}. A high value (near 1) means the map hardly changes when the model's "
        f"weights are randomised or another class is explained: such a map does not explain "
        f"what the trained model decided for the explained class. Class-agnostic methods (†) "
        f"score 1 by construction wherever another class is explained.")
    s = select(summary, base)
    s = s[s["metric"].astype(str).isin(present)]
    models = [m for m in models if m in set(s["model"].astype(str))]
    cols = [(mo, mt) for mo in models for mt in present]
    def head(mo, mt):
        ns = s.loc[(s["model"] == mo) & (s["metric"] == mt), "n"]
        return f"{mo}: {mt} ({n_text(ns, presentation.metric_unit(mt))})"

    columns = ["method"] + [head(mo, mt) for mo, mt in cols]
    rows = []
    for method in presentation.order_methods(s["method"].astype(str)):
        row = [method_cell(method, presentation)]
        for mo, mt in cols:
            hit = s[(s["model"] == mo) & (s["metric"] == mt) & (s["method"] == method)]
            row.append(Cell(interval=interval_of(hit.iloc[0])) if len(hit) else Cell(MISSING))
        rows.append(row)
    section.tables.append(Table(columns, rows, kind="sanity"))
    return section


def replicates_section(stability, base: int, presentation) -> Section | None:
    if stability is None or not len(stability):
        return None
    section = Section(id="replicates", title="Replicates")
    section.intro.append(
        f"Over the independently trained replicates of each model (the tables above show "
        f"replicate {base}): how often each method ranked first (ties count for each), and "
        f"the spread of its means.")
    order = presentation.order_metrics(stability["metric"].astype(str))
    st = stability.assign(_m=stability["metric"].astype(str).map(order.index))
    rows = []
    for (family, metric), g in st.sort_values(["family", "_m"]).groupby(["family", "metric"],
                                                                      sort=False):
        for method in presentation.order_methods(g["method"].astype(str)):
            r = g[g["method"].astype(str) == method].iloc[0]
            std = f" ± {r['std']:.3g}" if np.isfinite(r["std"]) else ""
            rows.append([Cell(str(family)), Cell(str(metric)),
                         Cell(presentation.method_label(method)),
                         Cell(str(int(r["n_replicates"]))),
                         Cell(f"{int(r['n_first'])} ({r['share_first']:.0%})"),
                         Cell(f"{r['mean']:.3g}{std}"),
                         Cell(f"{r['range']:.3g} [{r['min']:.3g}, {r['max']:.3g}]")])
    section.tables.append(Table(["model", "metric", "method", "n replicates", "ranked first",
                                 "mean ± sd", "range [min, max]"], rows, kind="replicates"))
    return section


def not_scored_section(records: pd.DataFrame, presentation) -> Section | None:
    """Per (model, method, status): the metrics and the first message."""
    not_ok = records[records["status"].astype(str) != "ok"] if len(records) else records
    if not len(not_ok):
        return None
    reps = pd.to_numeric(not_ok["replicate"], errors="coerce").fillna(0).astype(int) \
        if "replicate" in not_ok else pd.Series(0, not_ok.index)
    several = reps.nunique() > 1 or bool((reps != 0).any())
    rows = []
    for (model, method, status), g in not_ok.groupby(["model", "method", "status"], sort=False):
        messages = list(dict.fromkeys(str(m) for m in g["message"] if str(m)))
        rows.append([Cell(str(model)), Cell(str(method)), Cell(str(status)),
                     Cell(", ".join(presentation.order_metrics(g["metric"].astype(str))))]
                    + ([Cell(", ".join(map(str, sorted(set(reps[g.index])))))]
                       if several else [])
                    + [Cell(messages[0] if messages else "")])
    columns = ["model", "method", "status", "metrics"] + (["replicates"] if several else []) \
        + ["why (first message)"]
    return Section(id="not-scored", title="Not scored",
                   tables=[Table(columns, rows, kind="not-scored")])
