"""xai_bench.analysis.claims: the paper's claims as data; each of the four comes out holds / fails /
inconclusive on hand-made records, missing pieces are inconclusive, bad claim files are a
ConfigError naming the claim."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from xai_bench.analysis import claims as cl
from xai_bench.analysis import statistics as st
from xai_bench.errors import ConfigError

R = 500
N = 40
METRICS = ["grid_pointing_game", "pixel_perturbation", "mask_localisation", "deletion",
           "insertion"]


def _rows(model, method, metric, values):
    abc = metric == "pixel_perturbation"
    rng = np.random.default_rng(len(model))
    clean = rng.uniform(0.6, 1.0, len(values))  # per model and image, shared by the methods
    out = [dict(model=model, method=method, metric=metric, sample_id=f"s{i:03d}", target=i % 4,
                value=float(v), status="ok", message="",
                category="perturbation" if abc else "localisation", higher_is_better=True,
                statistic="per_image" if abc else "",
                clean_confidence=float(c) if abc else np.nan)
           for i, (v, c) in enumerate(zip(values, clean))]
    if abc:
        v = np.asarray(values, float)
        out.append(dict(out[0], sample_id="mean", target=-1, statistic="mean_curve",
                        value=float((v * clean).sum() / clean.sum())))
    return out


def records_for(bcos: dict, twin: dict | None, metric="grid_pointing_game", *, seed=0,
                bcos_name="bcos_vit_nano", twin_name="vit_nano"):
    """``{method: mean}`` per model: values = mean + shared per-sample noise + small own noise
    (a method given the same mean as another gets identical values)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.08, N)
    out = []
    for model, means in ((bcos_name, bcos), (twin_name, twin or {})):
        cache = {}
        for method, mean in means.items():
            if mean not in cache:
                cache[mean] = mean + common + rng.normal(0, 0.02, N)
            out += _rows(model, method, metric, cache[mean])
    return pd.DataFrame(out)


def check(records, claims=None, **kw):
    summary = st.summarise(records, n_resamples=R)
    comparisons = st.compare(records, n_resamples=R)
    out = cl.evaluate_claims(summary, comparisons, records,
                             cl.load_claims(known_metrics=METRICS) if claims is None else claims,
                             n_resamples=R, **kw)
    assert list(out.columns) == cl.CLAIM_COLUMNS
    return out.set_index("claim")


BASE = dict(random=0.25, centre=0.3, ixg=0.45)


def test_the_paper_claim_set():
    claims = cl.load_claims()
    assert [c.id for c in claims] == ["a", "b", "c", "d"]
    assert [c.kind for c in claims] == ["best_method", "best_method", "ratio_to_twin_best",
                                        "best_vs_twin_best"]
    assert [c.metric for c in claims] == ["grid_pointing_game", "pixel_perturbation",
                                          "grid_pointing_game", "grid_pointing_game"]
    assert claims[2].twin_excluded() == ("random", "uniform", "centre", "inherent")
    assert cl.PAPER_CLAIMS.name == "claims_paper.json" and cl.PAPER_CLAIMS.exists()


@pytest.mark.parametrize("metric, claim", [("grid_pointing_game", "a"),
                                           ("pixel_perturbation", "b")])
@pytest.mark.parametrize("inherent, outcome", [(0.7, "holds"), (0.35, "fails"),
                                               (0.45, "inconclusive")])
def test_best_method_claims(metric, claim, inherent, outcome):
    records = records_for(dict(BASE, inherent=inherent), dict(BASE, rollout=0.4), metric)
    row = check(records).loc[claim]
    assert row["outcome"] == outcome, row["detail"]
    assert row["model"] == "bcos_vit_nano" and row["twin"] == ""
    if outcome == "holds":
        assert row["estimate"] == pytest.approx(0.25, abs=0.02)  # advantage over ixg
        assert 0 < row["ci_low"] < row["estimate"] < row["ci_high"]
        assert "runner-up ixg" in row["detail"]
    if outcome == "fails":
        assert "ixg significantly better than inherent" in row["detail"]
        assert row["estimate"] < 0
    if outcome == "inconclusive":  # inherent and ixg have identical values
        assert row["estimate"] == 0


@pytest.mark.parametrize("inherent, twin_best, outcome", [(0.8, 0.4, "holds"),
                                                          (0.4, 0.8, "fails"),
                                                          (0.6, 0.6, "inconclusive")])
def test_ratio_to_twin_best(inherent, twin_best, outcome):
    # the twin's centre baseline (0.95) must not count as its best post-hoc method
    records = records_for(dict(BASE, inherent=inherent),
                          dict(random=0.25, centre=0.95, rollout=twin_best, ixg=0.3))
    row = check(records).loc["c"]
    assert row["outcome"] == outcome, row["detail"]
    assert row["twin"] == "vit_nano"
    assert row["estimate"] == pytest.approx(inherent / twin_best, rel=0.05)
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    assert "rollout" in row["detail"] and "centre" not in row["detail"]


@pytest.mark.parametrize("bcos_best, twin_best, outcome", [(0.8, 0.4, "holds"),
                                                           (0.4, 0.8, "fails"),
                                                           (0.6, 0.6, "inconclusive")])
def test_best_vs_twin_best(bcos_best, twin_best, outcome):
    records = records_for(dict(random=0.25, centre=0.99, ixg=0.3, inherent=bcos_best),
                          dict(random=0.25, centre=0.99, rollout=twin_best))
    row = check(records).loc["d"]
    assert row["outcome"] == outcome, row["detail"]
    assert row["estimate"] == pytest.approx(bcos_best - twin_best, abs=0.03)
    assert "inherent" in row["detail"] and "rollout" in row["detail"]


def test_the_twin_claims_are_deterministic():
    records = records_for(dict(BASE, inherent=0.6), dict(BASE, rollout=0.55))
    pd.testing.assert_frame_equal(check(records), check(records))


def test_a_missing_twin_is_inconclusive():
    records = records_for(dict(BASE, inherent=0.7), None)
    out = check(records)
    assert out.loc["a", "outcome"] == "holds"
    for claim in "cd":
        assert out.loc[claim, "outcome"] == "inconclusive"
        assert "twin vit_nano of bcos_vit_nano is not in the run" in out.loc[claim, "detail"]
    assert "no ok records of pixel_perturbation" in out.loc["b", "detail"]


def test_missing_method_and_no_bcos_model_are_inconclusive():
    records = records_for(BASE, dict(BASE, rollout=0.4))  # no inherent on the B-cos model
    out = check(records)
    assert out.loc["a", "outcome"] == "inconclusive"
    assert "inherent has no ok records" in out.loc["a", "detail"]
    assert out.loc["c", "outcome"] == "inconclusive"
    only_twin = records[records["model"] == "vit_nano"]
    out = check(only_twin)
    assert (out["outcome"] == "inconclusive").all() and (out["model"] == "").all()
    assert out["detail"].str.contains("no B-cos model").all()


def test_pairs_override_the_naming_rule():
    records = records_for(dict(BASE, inherent=0.8), dict(BASE, rollout=0.4),
                          bcos_name="my_bcos", twin_name="my_vit")
    out = check(records, pairs={"my_bcos": "my_vit"})
    assert out.loc["c", "outcome"] == "holds" and out.loc["c", "twin"] == "my_vit"
    assert cl.twin_of("bcos_vit_s_87") == "vit_s_87" and cl.twin_of("vit_nano") is None


def test_a_user_claim_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"claims": [
        {"id": "lrp", "kind": "best_method", "metric": "grid_pointing_game",
         "method": "rollout", "models": "vit_*", "text": "rollout is best on the twin"},
        {"id": "gap", "kind": "best_vs_twin_best", "metric": "grid_pointing_game",
         "exclude": [], "twin_exclude": []}]}))
    claims = cl.load_claims(path, known_metrics=METRICS)
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.8))
    out = check(records, claims)
    assert out.loc["lrp", "model"] == "vit_nano" and out.loc["lrp", "outcome"] == "holds"
    assert out.loc["gap", "text"] == "best_vs_twin_best on grid_pointing_game"


@pytest.mark.parametrize("claim, message", [
    ({"id": "x1", "kind": "best_everything", "metric": "grid_pointing_game"},
     "claim 'x1' has unknown kind 'best_everything'"),
    ({"id": "x2", "kind": "best_method", "metric": "grid_pointing_gme", "method": "inherent"},
     "claim 'x2' names the unknown metric 'grid_pointing_gme'"),
    ({"id": "x3", "kind": "best_method", "metric": "grid_pointing_game"},
     "claim 'x3' of kind best_method needs a 'method'"),
    ({"id": "x4", "kind": "best_vs_twin_best", "metric": "deletion", "exlude": []},
     "claim 'x4' has unknown field"),
    ({"kind": "best_vs_twin_best", "metric": "deletion"}, "needs an 'id'"),
])
def test_bad_user_claims_are_a_config_error(tmp_path, claim, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"claims": [claim]}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        cl.load_claims(path, known_metrics=METRICS)
    assert "\n" not in str(info.value)


def test_unreadable_claim_files_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cl.load_claims(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        cl.load_claims(bad)
    bad.write_text(json.dumps({"claimz": []}))
    with pytest.raises(ConfigError, match="'claims' list"):
        cl.load_claims(bad)


def test_write_statistics_adds_claims_csv(tmp_path):
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.4))
    paths = st.write_statistics(records, tmp_path, n_resamples=R, claims=True)
    assert sorted(paths) == ["agreement", "best", "claims", "comparisons", "ranks", "summary"]
    claims = pd.read_csv(paths["claims"])
    assert list(claims.columns) == cl.CLAIM_COLUMNS
    assert claims.set_index("claim").loc["a", "outcome"] == "holds"
