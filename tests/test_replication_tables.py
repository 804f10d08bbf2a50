"""benchmarks/replication_tables.py: the study's tables across replicates, on small frames
with known answers (the end-to-end run is in test_replicate_script.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import load_benchmark

T = load_benchmark("replication_tables")


def _claim(claim, replicate, outcome, estimate=0.1):
    return dict(claim=claim, text=f"claim {claim}", model="bcos_vit_nano", twin="vit_nano",
                metric="grid_pointing_game", replicate=replicate, outcome=outcome,
                estimate=estimate, ci_low=estimate - 0.05, ci_high=estimate + 0.05, detail="")


def test_claims_across_counts_the_replicates_a_claim_holds_and_fails_in():
    claims = pd.DataFrame([_claim("a", 0, "holds"), _claim("a", 1, "holds"),
                           _claim("a", 2, "fails", -0.1), _claim("b", 0, "inconclusive")])
    frame = T.claims_across(claims, 3, {"a": "holds"}).set_index("claim")
    assert frame.loc["a", "holds in"] == "2 of 3" and frame.loc["a", "fails in"] == "1 of 3"
    assert frame.loc["a", "replicate 2"].startswith("fails (-0.1")
    assert frame.loc["a", "paper"] == "holds" and frame.loc["b", "paper"] == ""
    assert frame.loc["b", "holds in"] == "0 of 3" and frame.loc["b", "replicate 1"] == "—"


def test_leaders_counts_how_often_each_method_leads_and_how_big_the_lead_is():
    best = pd.DataFrame([
        dict(model=m, metric="deletion", replicate=r, best=b, verdict=v, diff=d, effect_size=e)
        for m, r, b, v, d, e in (("bcos_vit_nano", 0, "ixg", "best", 0.02, 0.8),
                                 ("bcos_vit_nano", 1, "ixg", "best", 0.04, 1.2),
                                 ("bcos_vit_nano", 2, "intgrad", "tie", 0.01, 0.1))])
    summary = pd.DataFrame([dict(metric="deletion", category="perturbation")])
    row = T.leaders(best.assign(higher_is_better=True), summary, 3).iloc[0]
    assert row["family"] == "B-cos" and row["kind"] == "perturbation"
    assert row["leader per replicate"] == "ixg, ixg, intgrad (tie)"
    assert row["most often first"] == "ixg (2 of 3)"
    assert row["lead significant in"] == "2 of 3"
    assert row["lead (best − runner-up), median [min, max]"] == "0.02 [0.01, 0.04]"
    assert row["d_z, median"] == "0.8"
    # a lower-is-better metric's lead is the negated difference: positive is better
    lower = T.leaders(best.assign(higher_is_better=False, diff=-best["diff"],
                                  effect_size=-best["effect_size"]), summary, 3).iloc[0]
    assert lower["lead (best − runner-up), median [min, max]"] == "0.02 [0.01, 0.04]"


def test_accuracy_difference_is_paired_with_mcnemars_exact_test():
    rng = np.random.default_rng(0)
    reference = (rng.random(400) < 0.6).astype(float)
    correct = reference.copy()
    correct[:40] = 1.0  # 40 images only this model gets right (some already were)
    out = T.accuracy_difference(correct, reference, seed=0)
    gained = int(((correct == 1) & (reference == 0)).sum())
    assert out["diff"] == pytest.approx(gained / 400)
    assert out["low"] <= out["diff"] <= out["high"]
    assert out["p"] == pytest.approx(stats.binomtest(gained, gained).pvalue)
    same = T.accuracy_difference(reference, reference, seed=0)
    assert same["diff"] == 0 and same["p"] == 1.0


def test_score_difference_is_unpaired_with_welch_and_cohens_d():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 0.1, 60), rng.normal(0.4, 0.1, 80)
    out = T.score_difference(a, b, seed=0)
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    assert out["low"] < out["diff"] < out["high"] and out["low"] > 0
    assert out["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    pooled = math.sqrt((59 * a.var(ddof=1) + 79 * b.var(ddof=1)) / 138)
    assert out["d"] == pytest.approx((a.mean() - b.mean()) / pooled)
    assert math.isnan(T.score_difference(a[:1], b, seed=0)["diff"])


def _models(loc_by_position: dict, replicates=2, n_cells=60):
    rng = np.random.default_rng(2)
    correct = (rng.random(300) < 0.7).astype(float)
    return [dict(position=p, replicate=r, correct=correct,
                 scores=np.clip(rng.normal(loc, 0.05, n_cells), 0, 1))
            for r in range(replicates) for p, loc in loc_by_position.items()]


def test_the_ablation_verdict_holds_only_when_multiplicative_wins_everywhere():
    wins = _models({"multiplicative": 0.6, "additive": 0.4, "embedding": 0.45, "none": 0.3})
    diffs = T.ablation_differences(wins)
    assert len(diffs) == 3 * 2 and set(diffs["position"]) == {"additive", "embedding", "none"}
    assert (diffs["localisation_verdict"] == "multiplicative better").all()
    assert (diffs["accuracy_diff"] == 0).all()  # same predictions: no accuracy difference
    counts, sentence = T.ablation_verdict(diffs, 2)
    assert sentence.startswith("holds")
    assert counts.set_index("prior").loc["none"].iloc[0] == "2 / 0 / 0 of 2"

    beaten = _models({"multiplicative": 0.4, "additive": 0.4, "embedding": 0.4, "none": 0.6})
    _, sentence = T.ablation_verdict(T.ablation_differences(beaten), 2)
    assert sentence.startswith("fails") and "none" in sentence

    level = _models({"multiplicative": 0.5, "additive": 0.5, "embedding": 0.5, "none": 0.5})
    _, sentence = T.ablation_verdict(T.ablation_differences(level), 2)
    assert sentence.startswith("not confirmed")
