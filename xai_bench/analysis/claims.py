"""The paper's claims (or a user's), checked against a run's statistics.

What a claim says is data (:mod:`xai_bench.analysis.claim_set`); this module decides it.
Kinds (rules in docs/statistics.md):

``best_method``
    on each selected model, ``method`` scores best on ``metric``: *holds* when it has the best
    mean and is significantly better than the runner-up (Holm-adjusted paired test), *fails*
    when another method is significantly better than it, else *inconclusive*. ``estimate``:
    its advantage over the strongest other method (positive = better).
``ratio_to_twin_best``
    ``method`` on the model beats the best non-excluded method on its conventional twin by a
    factor: ``estimate`` = mean(model, method) / mean(twin, twin's best) with an independent
    two-sample bootstrap interval; *holds* when the interval lies above 1 (below 1 for
    lower-is-better metrics), *fails* when it lies on the other side, else *inconclusive*.
``best_vs_twin_best``
    the model's best non-excluded method beats the twin's: ``estimate`` = difference of the
    two means, independent bootstrap interval, the same rule around 0.

Excluded by default are the run's baselines: the methods whose card (run.json's
``declarations``, else the registry's) declares ``kind="baseline"``, whatever their name.
The twin of ``bcos_X`` is ``X`` (``bcos_vit_nano`` -> ``vit_nano``); ``pairs`` overrides.
Anything the run lacks (model, twin, metric, method) gives *inconclusive* with a ``detail``
saying what is missing, never an exception.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import numpy as np
import pandas as pd

from xai_bench.analysis.bootstrap import two_sample_bootstrap
from xai_bench.analysis.claim_set import (
    KINDS, PAPER_CLAIMS, Claim, load_claims, parse_claims, registered_baselines,
    registered_metrics,
)
from xai_bench.analysis.comparisons import compare, is_significant, pair_lookup
from xai_bench.analysis.formatting import format_interval
from xai_bench.analysis.frames import as_bool, check_options, group_rng, with_replicate
from xai_bench.analysis.samples import RATIO_ESTIMATOR, sample_values
from xai_bench.analysis.summary import summarise
from xai_bench.contracts.cards import Cards
from xai_bench.errors import ConfigError

__all__ = ["Claim", "KINDS", "CLAIM_COLUMNS", "PAPER_CLAIMS", "load_claims", "parse_claims",
           "registered_baselines", "run_baselines", "twin_of", "pairs_in_run",
           "evaluate_claims"]

CLAIM_COLUMNS = ["claim", "text", "model", "twin", "metric", "replicate", "outcome",
                 "estimate", "ci_low", "ci_high", "detail"]


def run_baselines(methods, cards: Cards) -> tuple:
    """The baselines among ``methods`` (in their order): those whose card declares
    ``kind="baseline"``."""
    return tuple(m for m in dict.fromkeys(str(m) for m in methods)
                 if cards.method(m).is_baseline)


def twin_of(model: str, pairs=None):
    """The conventional twin of a model: ``pairs[model]`` if given, else the name without
    its ``bcos_`` prefix; None for other names."""
    if pairs and model in pairs:
        return pairs[model]
    return model[len("bcos_"):] if model.startswith("bcos_") else None


def pairs_in_run(models, pairs=None) -> list:
    """The (B-cos model, conventional twin) pairs of which both are among ``models``, in the
    models' order (``pairs`` as for :func:`twin_of`). The paper's claims compare a B-cos
    model with its twin: a run without such a pair cannot speak to them, so the summaries
    show no claims then (:func:`evaluate_claims` still returns its inconclusive rows)."""
    present = [str(m) for m in dict.fromkeys(models)]
    found = [(m, twin_of(m, pairs)) for m in present]
    return [(m, t) for m, t in found if t is not None and t != m and t in present]


def _selected(claim: Claim, models: list, pairs) -> list:
    if claim.models is None:
        return [m for m in models if m.startswith("bcos_") or (pairs and m in pairs)]
    return [m for m in models if any(fnmatch.fnmatchcase(m, g) for g in claim.models)]


class _Inconclusive(Exception):
    """Internal: the claim cannot be decided; the message is the detail."""


def _scores(summary, model, metric, replicate):
    g = summary[(summary["model"] == model) & (summary["metric"] == metric)
                & (summary["replicate"] == replicate)]
    g = g[np.isfinite(g["mean"].astype(float))]
    if g.empty:
        raise _Inconclusive(f"{model} has no ok records of {metric}"
                            + (f" (replicate {replicate})" if replicate else ""))
    hib = as_bool(g["higher_is_better"].iloc[0]) if "higher_is_better" in g else True
    return g.set_index("method"), hib


def _best(scores: pd.DataFrame, hib: bool, exclude, model: str, metric: str) -> str:
    candidates = scores.drop(index=[m for m in exclude if m in scores.index])
    if candidates.empty:
        raise _Inconclusive(f"{model} has no method outside {', '.join(exclude)} scored on "
                            f"{metric}")
    score = candidates["mean"].astype(float) * (1 if hib else -1)
    return str(score.sort_index().idxmax())


def _fmt_row(scores, method) -> str:
    r = scores.loc[method]
    return f"{method} {format_interval(r['mean'], r.get('ci_low'), r.get('ci_high'))}"


def _best_method(claim, model, replicate, summary, lookup, **_):
    scores, hib = _scores(summary, model, claim.metric, replicate)
    method = claim.method
    if method not in scores.index:
        raise _Inconclusive(f"{method} has no ok records of {claim.metric} for {model}")
    others = [m for m in scores.index if m != method]
    if not others:
        raise _Inconclusive(f"only {method} was scored on {claim.metric} for {model}; "
                            f"nothing to compare with")
    key = (model, claim.metric, replicate)
    sign = 1 if hib else -1
    order = sorted(scores.index, key=lambda m: (-sign * float(scores.loc[m, "mean"]), m))
    rival = order[1] if order[0] == method else order[0]
    pair = lookup.get(key + (method, rival))
    estimate = low = high = math.nan
    p_text = "no paired comparison"
    if pair is not None:
        flip = sign * (1 if pair["method_a"] == method else -1)
        estimate = flip * float(pair["diff"])
        low, high = sorted((flip * float(pair["ci_low"]), flip * float(pair["ci_high"])))
        p_text = f"p_holm={float(pair['p_holm']):.3g}"
    beaten_by = [m for m in others if is_significant(lookup.get(key + (method, m)))
                 and lookup[key + (method, m)]["better"] == m]
    if beaten_by:
        outcome = "fails"
        detail = (f"{', '.join(beaten_by)} significantly better than {method} "
                  f"({_fmt_row(scores, beaten_by[0])} vs {_fmt_row(scores, method)})")
    elif order[0] == method and is_significant(pair) and pair["better"] == method:
        outcome = "holds"
        detail = (f"{_fmt_row(scores, method)} best, significantly better than runner-up "
                  f"{_fmt_row(scores, rival)} ({p_text})")
    else:
        outcome = "inconclusive"
        if order[0] == method:
            detail = (f"{_fmt_row(scores, method)} best but not significantly better than "
                      f"runner-up {_fmt_row(scores, rival)} ({p_text})")
        else:
            detail = (f"{_fmt_row(scores, rival)} has the better mean but does not differ "
                      f"significantly from {_fmt_row(scores, method)} ({p_text})")
    return dict(outcome=outcome, estimate=estimate, ci_low=low, ci_high=high, detail=detail)


def _side(samples, model, method, metric, replicate):
    g = samples[(samples["model"] == model) & (samples["method"] == method)
                & (samples["metric"] == metric) & (samples["replicate"] == replicate)]
    if g.empty:
        raise _Inconclusive(f"{method} has no ok samples of {metric} for {model}")
    w = g["weight"].to_numpy(float) if (g["estimator"] == RATIO_ESTIMATOR).all() \
        else np.ones(len(g))
    return g["value"].to_numpy(float), w


def _decide(low, high, threshold, hib) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    above, below = low > threshold, high < threshold
    if (above and hib) or (below and not hib):
        return "holds"
    if (below and hib) or (above and not hib):
        return "fails"
    return "inconclusive"


def _twin_claim(claim, model, replicate, summary, samples, pairs, opts, models, baselines,
                **_):
    twin = twin_of(model, pairs)
    if twin is None:
        raise _Inconclusive(f"no twin known for {model}: pass pairs={{'{model}': 'TWIN'}}")
    if twin not in models:
        raise _Inconclusive(f"twin {twin} of {model} is not in the run (add it, or pass "
                            f"pairs={{'{model}': 'TWIN'}})")
    scores, hib = _scores(summary, model, claim.metric, replicate)
    twin_scores, _ = _scores(summary, twin, claim.metric, replicate)
    if claim.kind == "ratio_to_twin_best":
        mine = claim.method
        if mine not in scores.index:
            raise _Inconclusive(f"{mine} has no ok records of {claim.metric} for {model}")
    else:
        mine = _best(scores, hib, claim.excluded(baselines), model, claim.metric)
    theirs = _best(twin_scores, hib, claim.twin_excluded(baselines), twin, claim.metric)
    a = _side(samples, model, mine, claim.metric, replicate)
    b = _side(samples, twin, theirs, claim.metric, replicate)
    rng = group_rng(opts["seed"], "claim", claim.id, model, twin, replicate)
    n_res, conf, interval = opts["n_resamples"], opts["confidence"], opts["interval"]
    pair_text = f"{_fmt_row(scores, mine)} on {model} vs {_fmt_row(twin_scores, theirs)} on {twin}"
    if claim.kind == "ratio_to_twin_best":
        tb = float(twin_scores.loc[theirs, "mean"])
        if not tb > 0:
            raise _Inconclusive(f"the twin's best mean ({theirs} on {twin}: {tb:.3g}) is not "
                                f"positive, so a factor is undefined")
        est, low, high = two_sample_bootstrap(a, b, lambda x, y: x / y, rng, n_res, conf, interval)
        outcome = _decide(low, high, 1.0, hib)
        detail = f"factor {format_interval(est, low, high)}: {pair_text}"
    else:
        est, low, high = two_sample_bootstrap(a, b, lambda x, y: x - y, rng, n_res, conf, interval)
        outcome = _decide(low, high, 0.0, hib)
        detail = f"difference {format_interval(est, low, high)}: {pair_text}"
    return dict(twin=twin, outcome=outcome, estimate=est, ci_low=low, ci_high=high,
                detail=detail)


_EVALUATORS = {"best_method": _best_method, "ratio_to_twin_best": _twin_claim,
               "best_vs_twin_best": _twin_claim}


def evaluate_claims(summary: pd.DataFrame, comparisons: pd.DataFrame, records: pd.DataFrame,
                    claims=None, *, pairs=None, confidence: float = 0.95,
                    n_resamples: int = 2000, seed: int = 0, interval: str = "bca",
                    declarations: dict | None = None) -> pd.DataFrame:
    """Check ``claims`` (a list of :class:`Claim` or claim dicts, a path to a JSON claims
    file, or None for the paper's) on a run: one row per (claim, selected model,
    replicate) with ``outcome`` ``holds`` / ``fails`` / ``inconclusive``, the ``estimate``
    with its interval and a ``detail`` line; a claim with no selected model in the run gives
    one inconclusive row with an empty ``model``. ``summary`` and ``comparisons`` come from
    :func:`~xai_bench.analysis.summary.summarise` /
    :func:`~xai_bench.analysis.comparisons.compare` (None: computed from ``records``);
    ``pairs`` maps a B-cos model to its twin (overriding the ``bcos_`` prefix rule);
    ``declarations``: the run's (run.json's ``declarations``; None: the registry's cards),
    which say which methods are baselines. Columns: :data:`CLAIM_COLUMNS`."""
    check_options(confidence, n_resamples, seed, interval)
    opts = dict(confidence=float(confidence), n_resamples=int(n_resamples), seed=int(seed),
                interval=interval)
    if pairs is not None and not isinstance(pairs, dict):
        raise ConfigError(f"pairs must be a mapping B-cos model -> twin (e.g. "
                          f"{{'bcos_vit_nano': 'vit_nano'}}), got {type(pairs).__name__}")
    samples = sample_values(records)
    if summary is None:
        summary = summarise(records, **opts)
    if comparisons is None:
        comparisons = compare(records, **opts)
    summary = with_replicate(summary)
    if claims is None or isinstance(claims, (str, Path)):
        claims = load_claims(claims, known_metrics=False)
    else:
        claims = parse_claims(list(claims), known_metrics=False)
    in_run = set(samples["metric"]) | set(summary["metric"]) | set(records["metric"])
    if any(c.metric not in in_run for c in claims):  # only then ask the registry
        parse_claims(claims, known_metrics=in_run | set(registered_metrics()))
    lookup = pair_lookup(comparisons)
    models = list(dict.fromkeys(list(records["model"].astype(str)) +
                                list(summary["model"].astype(str))))
    baselines = run_baselines(list(records["method"]) + list(summary["method"]),
                              Cards(declarations))
    rows = []
    for claim in claims:
        chosen = _selected(claim, models, pairs)
        base = dict(claim=claim.id, text=claim.text, metric=claim.metric, twin="",
                    estimate=math.nan, ci_low=math.nan, ci_high=math.nan)
        if not chosen:
            which = ("B-cos model (bcos_* or a key of pairs)" if claim.models is None
                     else f"model matching {', '.join(claim.models)}")
            rows.append(dict(base, model="", replicate=0, outcome="inconclusive",
                             detail=f"no {which} in the run"))
            continue
        for model in chosen:
            reps = sorted(set(summary.loc[summary["model"] == model, "replicate"])) or [0]
            for replicate in reps:
                row = dict(base, model=model, replicate=int(replicate))
                if claim.kind != "best_method":
                    row["twin"] = twin_of(model, pairs) or ""
                try:
                    row.update(_EVALUATORS[claim.kind](
                        claim, model, int(replicate), summary=summary, lookup=lookup,
                        samples=samples, pairs=pairs, opts=opts,
                        models=models, baselines=baselines))
                except _Inconclusive as e:
                    row.update(outcome="inconclusive", detail=str(e))
                rows.append(row)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
