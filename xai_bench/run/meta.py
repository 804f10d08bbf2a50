"""Which metrics of a run can be trusted: a meta-evaluation in the spirit of MetaQuantus
(Hedström et al., 2023), written to ``meta.csv`` by ``xai-bench run --meta``.

For every (model, metric, method) of the run whose metric scores maps, the metric's per-sample
scores are computed again under perturbations of the evaluation problem:

* **model** perturbation: a deep copy of the model with every parameter multiplied by
  IID ``N(1, σ)`` noise (buffers untouched; the caller's model is never modified);
* **input** perturbation: ``U(-δ, δ)`` noise added to the RGB images in [0, 1] the metric's
  prepared data hold (before ``model.encode``), clamped to [0, 1].

Each comes *minor* (σ = δ = 0.001: the predictions on the metric's images must stay what they
were; a draw that changes one is redrawn, at most ``max_redraws`` times, and a draw that was
never accepted is recorded) and *disruptive* (σ = 0.5, δ = 5.0: MetaQuantus's ImageNet setting),
``k`` draws of each, every draw seeded by :func:`~xai_bench.compute.seeding.derive_seed`.

The samples stay fixed, as in MetaQuantus: every metric is prepared once on the unperturbed
model and data (its selection of images, grids, targets), and each perturbed setting scores that
same selection with the perturbed model or on the perturbed images; the metric's stochastic parts
draw from the cell's own seed in every setting, so the perturbation is the only difference.

From the scores (intra-consistency, MetaQuantus's IAC): Wilcoxon's signed-rank test (two-sided,
``zsplit`` zeros) of the clean against the perturbed per-sample scores gives one p-value per
draw; **resilience** is the mean p under minor draws (high: the scores stay put), **reactivity**
the mean 1 − p under disruptive ones (high: the scores move). Across methods (inter-consistency,
IEC): under minor draws the share of (sample, rank) positions at which the ranking of the
methods is unchanged; under disruptive draws the share of (method, sample) scores that got
worse. The meta-consistency of a metric is the mean of its four numbers per perturbation kind.

Without any extra computation, the run's own records give the **random gap**: per (model,
metric, method) the paired difference from the ``random`` baseline method on the same samples,
direction-adjusted (positive: better than random), with the run's estimator (the plain mean, or
the clean-confidence-weighted ratio of the perturbation metrics) and a paired bootstrap interval;
``separates_from_random``: the interval excludes 0.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from xai_bench.analysis.meta_statistics import (
    RANDOM, inter_reactivity, inter_resilience, intra_p_value, pair_scores, per_sample_scores,
    random_gaps,
)
from xai_bench.compute.seeding import cpu_generator, derive_seed, per_image_uniform

__all__ = ["MetaSettings", "perturb_model", "perturb_images", "perturb_prepared",
           "image_tensors", "intra_p_value", "inter_resilience", "inter_reactivity",
           "random_gaps", "meta_evaluate", "meta_summary", "run_meta", "meta_cost",
           "META_COLUMNS", "META_FILE"]

#: the file in the run directory
META_FILE = "meta.csv"
KINDS = ("model", "input")
STRENGTHS = ("minor", "disruptive")


@dataclass(frozen=True)
class MetaSettings:
    """How the meta-evaluation perturbs. ``k``: draws per (kind, strength); ``model_*``: σ of
    the multiplicative N(1, σ) weight noise; ``input_*``: half-width δ of the additive U(-δ, δ)
    pixel noise (images in [0, 1]); ``max_redraws``: draws tried per minor perturbation until
    the predictions are unchanged; ``n_resamples``/``confidence``: the random gap's bootstrap."""

    k: int = 3
    model_minor: float = 0.001
    model_disruptive: float = 0.5
    input_minor: float = 0.001
    input_disruptive: float = 5.0
    max_redraws: int = 5
    n_resamples: int = 2000
    confidence: float = 0.95

    def __post_init__(self):
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}: draw at least one perturbation")
        for name in ("model_minor", "model_disruptive", "input_minor", "input_disruptive"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}: a zero noise "
                                 f"perturbs nothing")
        if int(self.max_redraws) < 1:
            raise ValueError(f"max_redraws must be >= 1, got {self.max_redraws}")

    def scale(self, kind: str, strength: str) -> float:
        return float(getattr(self, f"{kind}_{strength}"))

    def columns(self) -> dict:
        """The settings as meta.csv records them."""
        return {"k": self.k, "model_sigma_minor": self.model_minor,
                "model_sigma_disruptive": self.model_disruptive,
                "input_delta_minor": self.input_minor,
                "input_delta_disruptive": self.input_disruptive}


# ------------------------------------------------------------------------ perturbations
def perturb_model(model, sigma: float, seed: int):
    """A deep copy of ``model`` with every parameter multiplied by IID ``N(1, sigma)`` noise
    (as MetaQuantus samples a model). Each parameter draws from its own stream, seeded by
    ``seed`` and its name on a CPU generator, so the copy is the same on any device."""
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in noisy.named_parameters():
            g = cpu_generator(derive_seed(seed, "weights", name))
            factor = 1.0 + float(sigma) * torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.mul_(factor.to(device=p.device, dtype=p.dtype))
    return noisy


def perturb_images(images: torch.Tensor, delta: float, seed: int) -> torch.Tensor:
    """``images`` (…, 3, H, W) in [0, 1] plus ``U(-delta, delta)`` noise, clamped to [0, 1].
    Each image's noise is seeded by its own content and ``seed``, so an image gets the same
    noise wherever it appears (in any metric's selection, in any batch)."""
    flat = images.reshape(-1, *images.shape[-3:])
    u = per_image_uniform(flat, flat.shape[1:], seed, dtype=torch.float64)
    noisy = (flat.double() + (2.0 * u - 1.0) * float(delta)).clamp(0.0, 1.0)
    return noisy.to(images.dtype).reshape(images.shape)


def _is_rgb(t) -> bool:
    return (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() >= 4
            and t.shape[-3] == 3)


def image_tensors(prepared) -> list:
    """The RGB image tensors (float, (…, 3, H, W)) of a metric's prepared data: the fields of
    a dataclass (nested dataclasses too) — the selections and grids of the built-in metrics."""
    if not dataclasses.is_dataclass(prepared) or isinstance(prepared, type):
        return []
    found = []
    for f in dataclasses.fields(prepared):
        value = getattr(prepared, f.name)
        if _is_rgb(value):
            found.append(value)
        elif dataclasses.is_dataclass(value):
            found += image_tensors(value)
    return found


def perturb_prepared(prepared, change):
    """A copy of ``prepared`` with ``change(t)`` applied to each of its RGB image tensors
    (:func:`image_tensors`), or None where it holds none (the input cannot be perturbed)."""
    if not image_tensors(prepared):
        return None

    def walk(obj):
        updates = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if _is_rgb(value):
                updates[f.name] = change(value)
            elif dataclasses.is_dataclass(value) and image_tensors(value):
                updates[f.name] = walk(value)
        return dataclasses.replace(obj, **updates)

    return walk(prepared)


@torch.no_grad()
def _predicted(model, images: list, device, batch_size: int) -> torch.Tensor:
    """Top-1 classes of every image of ``images`` (tensors (…, 3, H, W)), in order."""
    from xai_bench.compute.modes import eval_mode

    out = []
    with eval_mode(model):
        for t in images:
            flat = t.reshape(-1, *t.shape[-3:])
            for first in range(0, flat.shape[0], batch_size):
                x = model.encode(flat[first:first + batch_size].to(device))
                out.append(model(x).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


# ------------------------------------------------------------------------ the scores
@dataclass
class _Setting:
    kind: str          # "clean", "model" or "input"
    strength: str      # "", "minor" or "disruptive"
    k: int
    model: object
    change: object     # images -> images (input perturbations) or None
    redraws: int = 0   # minor: draws rejected before this one
    accepted: bool = True
    flipped: float = 0.0  # share of the checked images whose prediction changed


def _settings(model, label, images, cfg: MetaSettings, seed, device, batch_size):
    """The clean setting, then ``k`` draws of each (kind, strength); minor draws that change
    a prediction on ``images`` are redrawn."""
    yield _Setting("clean", "", 0, model, None)
    clean = _predicted(model, images, device, batch_size)
    for kind in KINDS:
        for strength in STRENGTHS:
            scale = cfg.scale(kind, strength)
            for k in range(cfg.k):
                tries = cfg.max_redraws if strength == "minor" else 1
                for attempt in range(tries):
                    s = derive_seed(seed, "meta", label, kind, strength, k, attempt)
                    if kind == "model":
                        m, change = perturb_model(model, scale, s), None
                        now = _predicted(m, images, device, batch_size)
                    else:
                        m = model
                        change = (lambda t, s=s, scale=scale: perturb_images(t, scale, s))
                        now = _predicted(m, [change(t) for t in images], device, batch_size)
                    flipped = float((now != clean).double().mean()) if clean.numel() else 0.0
                    if flipped == 0.0 or strength == "disruptive":
                        break
                yield _Setting(kind, strength, k, m, change, redraws=attempt,
                               accepted=strength == "disruptive" or flipped == 0.0,
                               flipped=flipped)


def _model_scores(runner, spec, cfg: MetaSettings, say) -> tuple[dict, dict, dict]:
    """Scores of one model: ``{(metric, method): {(kind, strength, k): {key: value}}}``,
    facts per (kind, strength) (redraws, acceptance, flipped predictions) and a note per
    metric that could not be meta-evaluated."""
    from xai_bench.compute.map_cache import sharing_maps
    from xai_bench.contracts.model import check_model
    from xai_bench.run.plan import cell_key

    model, _ = runner.load_model(spec)
    card = check_model(model, spec.name)
    data = runner.dataset(card["image_size"])
    seed, device, bs = runner.config.seed, runner.device, runner.config.batch_size
    prepared, notes = {}, {}
    for metric in runner.metrics:
        if not metric.metric.card.needs_maps:
            notes[metric.name] = "scores no maps"
            continue
        try:
            prepared[metric.name] = metric.metric.prepare(model, data, device=device,
                                                          batch_size=bs, seed=seed)
        except Exception as e:  # not applicable here (no masks, ...): no meta numbers
            notes[metric.name] = f"not prepared: {type(e).__name__}: {e}"[:200]
    images = [t for p in prepared.values() for t in image_tensors(p)]
    methods = [m for m in runner.methods if m.error is None and m.method.applies_to(model)]
    scores: dict = {}
    facts: dict = {}
    for setting in _settings(model, spec.label, images, cfg, seed, device, bs):
        where = (setting.kind, setting.strength, setting.k)
        if setting.kind != "clean":
            f = facts.setdefault((setting.kind, setting.strength),
                                 {"redraws": 0, "accepted": True, "flipped": []})
            f["redraws"] = max(f["redraws"], setting.redraws)
            f["accepted"] = f["accepted"] and setting.accepted
            f["flipped"].append(setting.flipped)
        inputs = {}
        for name, p in prepared.items():
            inputs[name] = p if setting.change is None else perturb_prepared(p, setting.change)
            if inputs[name] is None:
                notes.setdefault(name, "its prepared data hold no RGB images: no input "
                                       "perturbation")
        for method in methods:
            # one cache per (setting, method): the method explains each batch once for
            # every metric of the setting
            with sharing_maps(setting.model):
                for metric in runner.metrics:
                    p = inputs.get(metric.name)
                    if p is None:
                        continue
                    # the cell's own seed in every setting: the perturbation is the only change
                    torch.manual_seed(derive_seed(seed, cell_key(spec.label, method.name,
                                                                 metric.name)))
                    try:
                        result = metric.metric.evaluate(setting.model, method.method, p,
                                                 device=device, batch_size=bs)
                        values = per_sample_scores(result.records)
                    except Exception as e:
                        notes.setdefault(metric.name, f"{type(e).__name__}: {e}"[:200])
                        values = {}
                    scores.setdefault((metric.name, method.name), {})[where] = values
        say(f"meta-evaluation: {spec.label} {setting.kind} {setting.strength} "
            f"{setting.k + 1 if setting.kind != 'clean' else ''}".rstrip())
    return scores, facts, notes


def _rows(spec, runner, scores, facts, notes, cfg: MetaSettings) -> list:
    rows = []
    by_metric: dict = {}
    for metric in runner.metrics:
        methods = [m.name for m in runner.methods if (metric.name, m.name) in scores]
        clean = {m: scores[(metric.name, m)].get(("clean", "", 0), {}) for m in methods}
        inter = {}
        for kind in KINDS:
            for strength in STRENGTHS:
                values = []
                for k in range(cfg.k):
                    keys = None
                    for m in methods:
                        got = set(clean[m]) & set(scores[(metric.name, m)].get(
                            (kind, strength, k), {}))
                        keys = got if keys is None else keys & got
                    keys = sorted(keys or [])
                    if not keys:
                        continue
                    q0 = np.array([[clean[m][key] for key in keys] for m in methods])
                    q1 = np.array([[scores[(metric.name, m)][(kind, strength, k)][key]
                                    for key in keys] for m in methods])
                    values.append(inter_resilience(q0, q1) if strength == "minor" else
                                  inter_reactivity(q0, q1, metric.metric.higher_is_better))
                inter[(kind, strength)] = _mean(values)
        by_metric[metric.name] = inter
        for m in methods:
            row = dict(model=spec.name, replicate=spec.replicate, metric=metric.name, method=m)
            per = scores[(metric.name, m)]
            n_meta = 0
            for kind in KINDS:
                for strength in STRENGTHS:
                    ps = []
                    for k in range(cfg.k):
                        a, b = pair_scores(clean[m], per.get((kind, strength, k), {}))
                        n_meta = max(n_meta, int(a.size))
                        p = intra_p_value(a, b)
                        ps.append(p if strength == "minor" else 1.0 - p)
                    name = "resilience" if strength == "minor" else "reactivity"
                    row[f"{name}_{kind}"] = _mean(ps)
            for kind in KINDS:
                row[f"inter_resilience_{kind}"] = inter[(kind, "minor")]
                row[f"inter_reactivity_{kind}"] = inter[(kind, "disruptive")]
            row["n_meta"] = n_meta
            rows.append(row)
    facts_cols = {}
    for kind in KINDS:
        f = facts.get((kind, "minor"), {})
        facts_cols[f"minor_redraws_{kind}"] = f.get("redraws", 0)
        facts_cols[f"minor_accepted_{kind}"] = f.get("accepted", True)
        d = facts.get((kind, "disruptive"), {})
        facts_cols[f"disruptive_flipped_{kind}"] = _mean(d.get("flipped", []))
    for row in rows:
        row.update(facts_cols)
        row["note"] = notes.get(row["metric"], "")
    # a metric with no rows (not prepared, no maps) still gets one, with its reason
    done = {r["metric"] for r in rows}
    for metric in runner.metrics:
        if metric.name not in done:
            rows.append(dict(model=spec.name, replicate=spec.replicate, metric=metric.name,
                             method="", **facts_cols,
                             note=notes.get(metric.name, "no scored method")))
    return rows


def _mean(values) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


#: meta.csv's columns, in order
META_COLUMNS = ["model", "replicate", "metric", "method",
                "resilience_model", "resilience_input", "reactivity_model", "reactivity_input",
                "inter_resilience_model", "inter_resilience_input",
                "inter_reactivity_model", "inter_reactivity_input", "n_meta",
                "random_gap", "random_gap_low", "random_gap_high", "n_samples",
                "separates_from_random",
                "k", "model_sigma_minor", "model_sigma_disruptive", "input_delta_minor",
                "input_delta_disruptive", "minor_redraws_model", "minor_accepted_model",
                "disruptive_flipped_model", "minor_redraws_input", "minor_accepted_input",
                "disruptive_flipped_input", "note"]


def meta_evaluate(runner, records, cfg: MetaSettings | None = None, say=None):
    """meta.csv's rows (a pandas DataFrame, :data:`META_COLUMNS`) of a runner whose cells are
    computed; ``records``: the run's records (for the random gap)."""
    import pandas as pd

    cfg = cfg or MetaSettings()
    say = say or (lambda *_: None)
    rows = []
    for spec in runner.model_specs:
        scores, facts, notes = _model_scores(runner, spec, cfg, say)
        rows += _rows(spec, runner, scores, facts, notes, cfg)
    gaps = random_gaps(records, seed=runner.config.seed, n_resamples=cfg.n_resamples,
                       confidence=cfg.confidence)
    empty = dict(random_gap=math.nan, random_gap_low=math.nan, random_gap_high=math.nan,
                 n_samples=0, separates_from_random=None)
    for row in rows:
        row.update(gaps.get((row["model"], int(row["replicate"]), row["metric"],
                             row["method"]), empty))
        row.update(cfg.columns())
    return pd.DataFrame(rows, columns=META_COLUMNS)


def meta_summary(frame):
    """Per metric (mean over models and methods): resilience and reactivity per kind, the
    inter-consistency, the meta-consistency per kind (mean of its four numbers) and how many
    (model, method) pairs other than ``random`` separate from random."""
    import pandas as pd

    rows = []
    # rows without a method only carry a metric's note (read back from CSV: NaN)
    frame = frame[frame["method"].notna() & (frame["method"].astype(str) != "")]
    for metric, g in frame.groupby("metric", sort=False):
        row = {"metric": metric}
        for col in ("resilience_model", "reactivity_model", "resilience_input",
                    "reactivity_input", "inter_resilience_model", "inter_reactivity_model",
                    "inter_resilience_input", "inter_reactivity_input"):
            row[col] = _mean(pd.to_numeric(g[col], errors="coerce"))
        for kind in KINDS:
            row[f"meta_consistency_{kind}"] = _mean(
                [row[f"resilience_{kind}"], row[f"reactivity_{kind}"],
                 row[f"inter_resilience_{kind}"], row[f"inter_reactivity_{kind}"]])
        others = g[g["method"].astype(str) != RANDOM]
        gap = pd.to_numeric(others["random_gap"], errors="coerce")
        sep = others["separates_from_random"].astype(str).str.lower() == "true"
        row["separating"] = int(sep.sum()) if gap.notna().any() else None
        row["compared"] = int(gap.notna().sum())
        rows.append(row)
    return pd.DataFrame(rows)


def meta_cost(runner, timings: dict, cfg: MetaSettings | None = None) -> str:
    """The line printed before the meta-evaluation starts: its metric evaluations and an
    estimate from the run's own cell times."""
    cfg = cfg or MetaSettings()
    n_models, n_metrics, n_methods = (len(runner.model_specs), len(runner.metrics),
                                      len(runner.methods))
    settings = 1 + 2 * cfg.k * 2
    total = n_models * n_metrics * n_methods * settings
    line = (f"meta-evaluation (--meta): {n_models} model(s) × {n_metrics} metric(s) × "
            f"{n_methods} method(s) × (1 + 2·{cfg.k}·2) settings = {total} extra metric "
            f"evaluations")
    spent = sum(float(t.get("time_s") or 0) for t in (timings or {}).values())
    if spent > 0:
        line += f", about {spent * settings:.0f} s (the run's cells took {spent:.0f} s)"
    return line


def run_meta(runner, collected, cfg: MetaSettings | None = None, say=None):
    """``--meta``: say the cost, compute, and write meta.csv into the run directory (if
    any); returns the frame."""
    from xai_bench.storage import atomic_io

    cfg = cfg or MetaSettings()
    runner.log(meta_cost(runner, collected.timings, cfg))
    t = time.time()
    frame = meta_evaluate(runner, collected.records, cfg, say=say)
    if runner.run_dir is not None:
        atomic_io.write_csv(runner.run_dir / META_FILE, frame)
    where = runner.run_dir / META_FILE if runner.run_dir is not None else "(in memory)"
    runner.log(f"meta-evaluation: {time.time() - t:.0f} s, written to {where}")
    return frame
