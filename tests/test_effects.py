"""Effect sizes and --min-effect (xai_bench.analysis.effects, analysis.comparisons): the
paired standardised difference's known answers, the threshold grammar, and the constructed
case of the issue: a difference far too small to matter but significant is a tie (one rank
group) once a smallest difference worth reporting is given."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from xai_bench.analysis.effects import MinEffect, paired_effect_size, parse_min_effect
from xai_bench.analysis.statistics import analyse, compare
from xai_bench.errors import ConfigError


def test_d_z_is_the_mean_difference_over_the_sd_of_the_differences():
    a = np.array([3.0, 5.0, 7.0, 9.0])
    b = np.array([2.0, 3.0, 4.0, 5.0])  # differences 1, 2, 3, 4: mean 2.5, sd 1.29
    ones = np.ones(4)
    assert paired_effect_size(a, ones, b, ones) == pytest.approx(2.5 / np.std([1, 2, 3, 4],
                                                                               ddof=1))
    assert paired_effect_size(b, ones, a, ones) == pytest.approx(-2.5 / 1.2909944487358056)


def test_d_z_of_identical_and_of_constantly_shifted_samples():
    a = np.array([0.1, 0.5, 0.9])
    ones = np.ones(3)
    assert paired_effect_size(a, ones, a, ones) == 0.0
    assert paired_effect_size(a + 0.25, ones, a, ones) == math.inf
    assert math.isnan(paired_effect_size(a[:1], ones[:1], a[:1], ones[:1]))


def test_ratio_weights_scaled_by_a_constant_leave_d_z_unchanged():
    rng = np.random.default_rng(0)
    a, b, w = rng.random(30), rng.random(30), rng.random(30) + 0.1
    ones = np.ones(30)
    assert paired_effect_size(a, w, b, w) == pytest.approx(paired_effect_size(a, 7 * w, b, 7 * w))
    # equal weights are the plain paired d_z
    d = a - b
    assert paired_effect_size(a, 3 * ones, b, 3 * ones) == pytest.approx(d.mean() / d.std(ddof=1))


@pytest.mark.parametrize("spec, metric, value, standardised", [
    ("0.01", "any", 0.01, False),
    ("0.2sd", "any", 0.2, True),
    ("0.2sd,pixel_perturbation=0.05", "pixel_perturbation", 0.05, False),
    ("0.2sd,pixel_perturbation=0.05", "deletion", 0.2, True),
    ("grid_pointing_game=1e-3", "grid_pointing_game", 0.001, False),
    (0.5, "any", 0.5, False),
    ({"deletion": "0.1sd"}, "deletion", 0.1, True),
])
def test_min_effect_grammar(spec, metric, value, standardised):
    threshold = parse_min_effect(spec).threshold(metric)
    assert threshold.value == pytest.approx(value) and threshold.standardised == standardised


def test_min_effect_none_and_per_metric_only():
    assert not parse_min_effect(None) and not parse_min_effect("")
    only = parse_min_effect("deletion=0.1")
    assert only.threshold("insertion") is None and only.text() == "deletion=0.1"
    assert isinstance(parse_min_effect(only), MinEffect)


@pytest.mark.parametrize("spec, fragment", [
    ("small", "'small' is not a non-negative number"),
    ("-0.1", "not a non-negative number"),
    ("0.1,0.2", "two thresholds"),
    ("=0.1", "names no metric"),
    ("deletion=0.1furlongs", "not a non-negative number"),
])
def test_bad_min_effect_is_one_line(spec, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        parse_min_effect(spec)
    assert "\n" not in str(err.value)


def _records(a, b, metric="grid_pointing_game"):
    rows = [dict(model="m", method=method, metric=metric, status="ok", sample_id=f"s{i}",
                 target=0, value=float(v), higher_is_better=True)
            for method, values in (("a", a), ("b", b)) for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def _negligible_pair():
    """Two methods whose localisation differs by 0.0004 on every one of 300 samples (plus
    noise 100 times smaller): significant beyond doubt, and irrelevant."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0.3, 0.7, 300)
    return a + 0.0004 + rng.normal(0, 4e-6, 300), a


def test_a_negligible_significant_difference_splits_the_groups_without_min_effect():
    a, b = _negligible_pair()
    tables = analyse(_records(a, b), n_resamples=300)
    pair = tables["comparisons"].iloc[0]
    assert pair["p_holm"] < 1e-6 and pair["better"] == "a" and not pair["negligible"]
    assert pair["effect_size"] > 10  # consistent: large in standardised units
    assert sorted(tables["ranks"]["group"]) == ["a", "b"]
    assert tables["best"].iloc[0]["verdict"] == "best"


def test_min_effect_folds_a_negligible_difference_into_one_rank_group():
    a, b = _negligible_pair()
    tables = analyse(_records(a, b), n_resamples=300, min_effect="0.001")
    pair = tables["comparisons"].iloc[0]
    assert pair["significant"] and pair["negligible"] and pair["better"] == "tie"
    assert list(tables["ranks"]["group"]) == ["a", "a"]
    best = tables["best"].iloc[0]
    assert best["verdict"] == "tie" and best["negligible"]
    assert best["diff"] == pytest.approx(0.0004, rel=0.05)
    assert best["diff_ci_low"] <= best["diff"] <= best["diff_ci_high"]


def test_a_threshold_for_another_metric_leaves_this_one_alone():
    a, b = _negligible_pair()
    folded = compare(_records(a, b), n_resamples=200, min_effect="deletion=1")
    assert folded.iloc[0]["better"] == "a" and not folded.iloc[0]["negligible"]


def test_a_standardised_threshold_reads_the_effect_size():
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 1, 2000)
    a = b + 0.1 + rng.normal(0, 0.5, 2000)   # d_z about 0.2: small, but significant
    plain = compare(_records(a, b), n_resamples=200).iloc[0]
    assert plain["significant"] and 0.1 < plain["effect_size"] < 0.3
    folded = compare(_records(a, b), n_resamples=200, min_effect="0.3sd").iloc[0]
    assert folded["negligible"] and folded["better"] == "tie"
    kept = compare(_records(a, b), n_resamples=200, min_effect="0.01sd").iloc[0]
    assert not kept["negligible"] and kept["better"] == "a"
