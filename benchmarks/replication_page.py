"""The page benchmarks/replicate.py writes (docs/replication.md): the models and their
accuracy per replicate, the paper's claims replicate by replicate, which method leads which
metric how often, which metrics separate the methods from random, the positional-prior
ablation with its paired differences, every table of the run, the figures and the commands.

The page carries no path of the machine that wrote it: every path the study was given is
written as a placeholder (the data set as ``cifar10:PATH``), and :func:`absolute_paths` finds
any that slipped through (the writer refuses to write such a page)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from xai_bench.analysis.bootstrap import bootstrap_interval
from xai_bench.analysis.formatting import format_interval

import replication_tables as tables

#: an absolute POSIX path (two components at least) or a Windows drive path, where a path
#: can start: at the start of a line, after white space, a quote, a bracket, ``=`` or ``:``
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s`'\"(\[=:]))(?:/[\w.+-]+/[\w.+-]|[A-Za-z]:\\\w)")


def absolute_paths(text: str) -> list:
    """The lines of ``text`` that hold an absolute path."""
    return [line for line in text.splitlines() if _ABSOLUTE.search(line)]


def md_table(frame: pd.DataFrame) -> list:
    if frame is None or not len(frame):
        return []
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |"
              for row in frame.itertuples(False)]
    return lines + [""]


def demote(markdown: str) -> list:
    """A run's summary.md with every heading one level down (it sits under our own ##)."""
    return [("#" + line) if line.startswith("#") else line for line in markdown.splitlines()]


def recipe_accuracy(pair_meta: list, recipe_kind: str) -> pd.DataFrame:
    """Per recipe: epochs, the test accuracy of each replicate, their mean and range, and the
    mean training time (the recipes table in docs/definitions.md quotes the mean)."""
    rows = []
    for name in dict.fromkeys(m["wanted"]["model"] for m in pair_meta):
        metas = sorted((m for m in pair_meta if m["wanted"]["model"] == name),
                       key=lambda m: m["replicate"])
        acc = np.array([m["test_accuracy"] for m in metas])
        family = "bcos" if name.startswith("bcos_") else "conventional"
        minutes = np.mean([m["train_time_s"] for m in metas]) / 60
        rows.append({"recipe": f"{family}-cifar10-{recipe_kind}", "model": name,
                     "epochs": metas[0]["epochs"], "replicates": len(metas),
                     "test accuracy per replicate": ", ".join(f"{a:.1%}" for a in acc),
                     "mean test accuracy": f"{acc.mean():.1%}",
                     "range": f"{acc.min():.1%}–{acc.max():.1%}",
                     "mean train minutes": f"{minutes:.1f}"})
    return pd.DataFrame(rows)


def _models_section(pair_meta: list, recipe_kind: str, threads: str) -> list:
    n_train = pair_meta[0]["train_images"]
    n_test = f"{len(pair_meta[0]['correct']):,}" \
        if pair_meta[0].get("correct") is not None else "the"
    lines = ["## The models", "",
             f"Each replicate is an independent training run (seed = the recipe's seed + the "
             f"replicate index) on {n_train:,} training images; test accuracy on {n_test} "
             f"test images with its 95 % bootstrap interval. {threads}", ""]
    lines += md_table(recipe_accuracy(pair_meta, recipe_kind))
    rows = []
    for m in pair_meta:
        correct = m.get("correct")
        acc = f"{m['test_accuracy']:.4f}"
        if correct is not None:
            acc = format_interval(*bootstrap_interval(correct, seed=m["replicate"]))
        rows.append(dict(model=m["wanted"]["model"], replicate=m["replicate"],
                         epochs=m["epochs"], train_images=m["train_images"],
                         test_accuracy=acc, train_minutes=f"{m['train_time_s'] / 60:.1f}",
                         images_per_s=f"{m['images_per_s']:.0f}"))
    return lines + md_table(pd.DataFrame(rows))


def _claims_section(results, replicates: int, paper_says: dict) -> list:
    frame = tables.claims_across(results.tables.get("claims"), replicates, paper_says)
    if not len(frame):
        return []
    lines = ["## The paper's claims, replicate by replicate", "",
             "Each claim as xai-bench tests it (docs/statistics.md), in each replicate: the "
             "outcome and its estimate with the 95 % interval (a best-method claim: the lead "
             "over the strongest other method; a twin claim: the factor or difference against "
             "the twin's best method), then in how many replicates it holds and fails, next to "
             "what the paper reports on ImageNet."]
    paper = getattr(results, "paper_claims", None)
    if paper is not None and len(paper):
        lines += ["", "### Among the paper's methods", "",
                  "The comparison the paper made: its methods, ViT-CX and the baselines "
                  "(the `default` group).", ""]
        lines += md_table(tables.claims_across(paper, replicates, paper_says))
        lines += ["### Among every method of the run", ""]
    else:
        lines += [""]
    return lines + md_table(frame)


def _leaders_section(results, replicates: int) -> list:
    frame = tables.leaders(results.tables.get("best"), results.tables["summary"], replicates)
    if not len(frame):
        return []
    return ["## Which method leads each metric, and how often", "",
            "Per model family and metric: the best method of each replicate (`(tie)`: the "
            "runner-up is not significantly worse, paired test with Holm's correction), the "
            "method most often first, in how many replicates its lead is significant, and "
            "the size of the lead: best − runner-up in the metric's units (median over the "
            "replicates, [min, max]) and the paired effect size d_z (the difference over the "
            "standard deviation of the per-sample differences), both signed so that positive "
            "is better (for a lower-is-better metric the difference is negated). The baselines (random, "
            "uniform, centre) compete: a baseline in the lead means the metric cannot tell "
            "the methods from it.", ""] + md_table(frame)


def _trust_section(results, meta_summary) -> list:
    frame = tables.metric_trust(results.records, results.tables["summary"])
    lines = []
    if len(frame):
        lines += ["## Which metrics tell the methods from random", "",
                  "Per metric and model family, over every (method, replicate) it scored: how "
                  "many are significantly better (and worse) than the `random` baseline on the "
                  "same samples (paired bootstrap, 95 % BCa interval of the gap excluding 0; "
                  "docs/meta_evaluation.md), and the median gap (positive: better than "
                  "random). A metric that separates few methods ranks them mostly by "
                  "noise.", ""] + md_table(frame)
    if meta_summary is not None and len(meta_summary):
        lines += ["### Resilience and reactivity (the MetaQuantus-style meta-evaluation)", "",
                  "From `meta.csv` of the meta-evaluation run (docs/meta_evaluation.md): means "
                  "over the methods; resilience high = the scores stay put under minor "
                  "perturbations, reactivity high = they move under disruptive ones.", ""]
        lines += md_table(meta_summary)
    return lines


def _ablation_section(frame: pd.DataFrame, per_model: list, replicates: int) -> list:
    data = frame["data"].iloc[0]
    epochs = ", ".join(str(e) for e in sorted(set(frame["epochs"]))) \
        if "epochs" in frame else "?"
    lines = [f"## Positional prior ablation on {data}", "",
             f"The B-cos ViT nano with each positional prior ({epochs} epoch(s) per model), "
             "per replicate: test accuracy and the grid pointing game of the inherent "
             "explanation (images enter a grid when classified correctly with confidence "
             f"≥ {frame['confidence_threshold'].iloc[0]:g}), each with a 95 % bootstrap "
             "interval (over test images / grid cells).", ""]
    rows = []
    for r in frame.to_dict("records"):
        loc = format_interval(r["localisation"], r["localisation_low"],
                              r["localisation_high"]) \
            if r.get("n_cells", 0) else f"not scored ({r.get('note', '')})"
        rows.append(dict(position=r["position"], replicate=r["replicate"],
                         accuracy=format_interval(r["accuracy"], r["accuracy_low"],
                                                  r["accuracy_high"]),
                         localisation=loc, cells=r.get("n_cells", 0),
                         train_minutes=f"{r['train_time_s'] / 60:.1f}"))
    lines += md_table(pd.DataFrame(rows))
    diffs = tables.ablation_differences(per_model)
    if len(diffs):
        shown = pd.DataFrame([dict(
            prior=d["position"], replicate=d["replicate"],
            accuracy_diff=format_interval(d["accuracy_diff"], d["accuracy_low"],
                                          d["accuracy_high"]),
            accuracy_p=f"{d['accuracy_p']:.2g}",
            localisation_diff=format_interval(d["localisation_diff"], d["localisation_low"],
                                              d["localisation_high"]),
            localisation_p=f"{d['localisation_p']:.2g}",
            localisation_d=f"{d['localisation_d']:.2f}")
            for d in diffs.to_dict("records")])
        counts, sentence = tables.ablation_verdict(diffs, replicates)
        lines += ["### Each prior against the multiplicative prior", "",
                  "Differences (this prior − multiplicative) within a replicate (same seed and "
                  "recipe). Accuracy: paired over the same test images (95 % BCa interval; p: "
                  "McNemar's exact test). Localisation: each model scores its own grid cells "
                  "(the grids are built from its own confident images), so the difference is "
                  "unpaired (independent resamples; p: Welch's t-test; d: Cohen's d).", ""]
        lines += md_table(shown) + md_table(counts)
        lines += [f"**The paper's preference for the multiplicative prior on CIFAR-10:** "
                  f"{sentence}.", ""]
    return lines


def write_page(docs: Path, *, title: str, provenance: str, commands: list, note: str,
               pair_meta: list, recipe_kind: str, threads: str, results, replicates: int,
               paper_says: dict, meta_summary, ablations: list, wall: dict,
               placeholders: dict, log=print) -> None:
    """Write the page (and its figures beside it, in ``<docs stem>/``). ``placeholders``:
    ``{machine path: placeholder}``, applied to every line; a page that still holds an
    absolute path is not written (ValueError naming the line)."""
    figures = docs.parent / docs.stem
    lines = [f"# {title}", "", provenance, "", "Commands (PATH: CIFAR-10 as an ImageFolder "
             "tree or a .tar.gz of one; `--data cifar10` downloads it through torchvision "
             "instead):", "", "```bash", *commands, "```", ""]
    if note:
        lines += [f"Note: {note}", ""]
    if pair_meta:
        lines += _models_section(pair_meta, recipe_kind, threads)
    copies = []
    if results is not None:
        lines += _claims_section(results, replicates, paper_says)
        lines += _leaders_section(results, replicates)
        lines += _trust_section(results, meta_summary)
    for frame, per_model in ablations:
        if frame is not None and len(frame):
            lines += _ablation_section(frame, per_model, replicates)
    if results is not None:
        summary_md = Path(results.run_dir) / "plots" / "summary.md"
        if summary_md.exists():
            lines += ["## Every result with its interval", "",
                      "The protocol run's own summary (`plots/summary.md` of its run "
                      "directory).", ""] + demote(summary_md.read_text()) + [""]
        pngs = sorted((Path(results.run_dir) / "plots").glob("*.png"))
        if pngs:
            lines += ["## Figures", ""]
            for png in pngs:
                copies.append(png)
                lines += [f"![{png.stem}]({figures.name}/{png.name})", ""]
    lines += ["## Wall time", ""] + [f"- {k}: {v / 60:.1f} min" for k, v in wall.items()] + [""]
    text = "\n".join(lines)
    for path, placeholder in sorted(placeholders.items(), key=lambda kv: -len(kv[0])):
        if path:
            text = text.replace(path, placeholder)
    leaked = absolute_paths(text)
    if leaked:
        raise ValueError(f"the page would carry a path of this machine: {leaked[0][:200]!r}; "
                         f"add it to the placeholders")
    if figures.is_dir():  # figures of an earlier page must not outlive it
        for old in figures.glob("*.png"):
            if old.name not in {png.name for png in copies}:
                old.unlink()
    if copies:
        figures.mkdir(parents=True, exist_ok=True)
        for png in copies:
            shutil.copy2(png, figures / png.name)
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text)
    log(f"wrote {docs}")
