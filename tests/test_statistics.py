"""xai_bench.analysis.statistics: bootstrap intervals (coverage, 1/sqrt(n) width, the ABC ratio),
paired tests with Holm's correction, rank groups, best/tie verdicts, Kendall agreement,
replicate stability, formatting and the written tables. All on synthetic records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from xai_bench.analysis import statistics as st
from xai_bench.analysis import wilcoxon
from xai_bench.errors import ConfigError

R = 500  # resamples: enough for the checks below, fast


def rows(model, method, metric, values, *, hib=True, category="localisation", ids=None,
         replicate=None, clean=None, mean_row=None, status="ok"):
    """Records of one (model, method, metric): one row per value; with ``clean`` per-image
    ABC rows (``statistic='per_image'``, ``clean_confidence``) plus a ``mean_curve`` row."""
    ids = ids if ids is not None else [f"img{i:05d}" for i in range(len(values))]
    out = [dict(model=model, method=method, metric=metric, sample_id=s, target=i % 10,
                value=float(v), status=status, message="", category=category,
                higher_is_better=hib, statistic="per_image" if clean is not None else "")
           for i, (s, v) in enumerate(zip(ids, values))]
    if clean is not None:
        for r, c in zip(out, clean):
            r["clean_confidence"] = float(c)
        v, c = np.asarray(values, float), np.asarray(clean, float)
        out.append(dict(model=model, method=method, metric=metric, sample_id="mean",
                        target=-1, value=float((v * c).sum() / c.sum()) if mean_row is None
                        else mean_row, status=status, message="", category=category,
                        higher_is_better=hib, statistic="mean_curve",
                        clean_confidence=float(c.mean())))
    if replicate is not None:
        for r in out:
            r["replicate"] = replicate
    return out


def frame(*parts) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p])


# ------------------------------------------------------------------------------ intervals

@pytest.mark.parametrize("interval", ["bca", "percentile"])
def test_the_95_interval_covers_the_true_mean_in_95_percent_of_seeds(interval):
    a, b, n = 2.0, 5.0, 100
    true_mean = a / (a + b)
    records = frame(*[rows("m", f"s{seed:03d}", "grid_pointing_game",
                           np.random.default_rng(seed).beta(a, b, n)) for seed in range(200)])
    summary = st.summarise(records, n_resamples=R, interval=interval)
    assert len(summary) == 200 and (summary["n"] == n).all()
    covered = ((summary["ci_low"] <= true_mean) & (true_mean <= summary["ci_high"])).mean()
    assert 0.91 <= covered <= 0.99, covered


def test_the_interval_width_shrinks_as_one_over_root_n():
    widths = {}
    for n in (25, 400):
        records = frame(*[rows("m", f"s{seed}", "mask_localisation",
                               np.random.default_rng(1000 + seed).normal(0.5, 0.1, n))
                          for seed in range(40)])
        s = st.summarise(records, n_resamples=R)
        widths[n] = float((s["ci_high"] - s["ci_low"]).mean())
    assert 3.4 <= widths[25] / widths[400] <= 4.6, widths


def test_constant_samples_give_the_point_as_interval():
    s = st.summarise(frame(rows("m", "uniform", "grid_pointing_game", [0.25] * 30)),
                     n_resamples=R)
    assert s.loc[0, ["mean", "ci_low", "ci_high"]].tolist() == [0.25, 0.25, 0.25]
    assert st.bootstrap_interval([3.0, 3.0, 3.0], n_resamples=R) == (3.0, 3.0, 3.0)


def test_summary_is_deterministic_per_seed_and_per_group():
    rng = np.random.default_rng(0)
    one = rows("m", "a", "mask_localisation", rng.random(40))
    two = rows("m", "b", "mask_localisation", rng.random(40))
    s1 = st.summarise(frame(one), n_resamples=R, seed=7)
    s2 = st.summarise(frame(one), n_resamples=R, seed=7)
    s3 = st.summarise(frame(one, two), n_resamples=R, seed=7)
    s4 = st.summarise(frame(one), n_resamples=R, seed=8)
    pd.testing.assert_frame_equal(s1, s2)
    pd.testing.assert_frame_equal(s1, s3.iloc[:1])  # other groups do not move an interval
    assert s4.loc[0, "ci_low"] != s1.loc[0, "ci_low"]


def test_summary_columns_skip_non_ok_rows_and_split_replicates():
    rng = np.random.default_rng(1)
    records = frame(rows("m", "a", "mask_localisation", rng.random(10), replicate=0),
                    rows("m", "a", "mask_localisation", rng.random(12), replicate=1),
                    rows("m", "b", "mask_localisation", [np.nan] * 5, status="skipped"))
    s = st.summarise(records, n_resamples=R)
    assert list(s.columns) == st.SUMMARY_COLUMNS
    assert s[["method", "replicate", "n"]].values.tolist() == [["a", 0, 10], ["a", 1, 12]]
    assert (s["statistic"] == "mean").all() and (s["estimator"] == "mean").all()


# ------------------------------------------------------------------------------ the ABC ratio

# One real run (vit_nano untrained, ixg, pixel_perturbation, 12 images): the per-image
# normalised ABCs, their clean confidences and the recorded ABC of the mean curves.
REAL_V = [0.047976161533448324, 0.04341387713732841, 0.04493229046078205, 0.04533347601130627,
          0.04593507686695384, 0.043759012433466006, 0.04241089511435645, 0.041117652310677766,
          0.044857109775142096, 0.04789349443266398, 0.051691270889283714, 0.050743999521862745]
REAL_C = [0.14317724108695984, 0.14252318441867828, 0.14249208569526672, 0.14231787621974945,
          0.1421390026807785, 0.14213818311691284, 0.14089761674404144, 0.14026972651481628,
          0.13995134830474854, 0.13970166444778442, 0.13958369195461273, 0.13937000930309296]
REAL_MEAN_ROW = 0.04582840146029234


def test_the_abc_of_mean_curves_is_the_clean_confidence_weighted_ratio():
    records = frame(rows("vit_nano", "ixg", "pixel_perturbation", REAL_V, clean=REAL_C,
                         mean_row=REAL_MEAN_ROW, category="perturbation"))
    s = st.summarise(records, n_resamples=R)
    assert s.loc[0, "estimator"] == "ratio" and s.loc[0, "statistic"] == "mean_curve"
    assert s.loc[0, "n"] == 12  # the mean row is not a sample
    assert s.loc[0, "mean"] == pytest.approx(REAL_MEAN_ROW, rel=1e-12, abs=0)
    samples = st.sample_values(records)
    assert samples["weight"].tolist() == REAL_C


def test_ratio_point_estimate_on_a_hand_computed_case():
    # (0.2*0.5 + 0.5*0.25 + 0.1*0.25) / (0.5 + 0.25 + 0.25) = 0.25; the plain mean is 0.2667
    records = frame(rows("m", "x", "pixel_perturbation", [0.2, 0.5, 0.1],
                         clean=[0.5, 0.25, 0.25], category="perturbation"))
    s = st.summarise(records, n_resamples=R)
    assert s.loc[0, "mean"] == pytest.approx(0.25)


def test_the_ratio_interval_recomputes_the_ratio_on_every_resample():
    v = np.array([0.0, 0.1, 0.9, 0.4, 0.3, 0.7])
    c = np.array([0.1, 0.9, 0.2, 0.8, 0.5, 0.3])
    est, low, high = st.bootstrap_interval(v, c, n_resamples=1000, seed=3,
                                           interval="percentile")
    idx = np.random.default_rng(3).integers(0, len(v), size=(1000, len(v)))
    by_hand = (v[idx] * c[idx]).sum(1) / c[idx].sum(1)
    assert est == pytest.approx((v * c).sum() / c.sum())
    assert (low, high) == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])))
    # the weights matter (not a mean of per-image values) but only up to scale
    plain = st.bootstrap_interval(v, None, n_resamples=1000, seed=3, interval="percentile")
    assert plain[1:] != pytest.approx((low, high))
    scaled = st.bootstrap_interval(v, 7 * c, n_resamples=1000, seed=3, interval="percentile")
    assert scaled == pytest.approx((est, low, high))


def test_deletion_and_insertion_use_the_plain_mean():
    # the area under the mean curve is the mean of the areas: no weights even with a mean row
    vals = [0.3, 0.5, 0.1]
    part = rows("m", "x", "deletion", vals, hib=False, category="perturbation")
    part.append(dict(part[0], sample_id="mean", target=-1, value=0.3, statistic="mean_curve"))
    s = st.summarise(frame(part), n_resamples=R)
    assert s.loc[0, ["n", "mean", "estimator", "statistic"]].tolist() == [3, pytest.approx(0.3),
                                                                           "mean", "mean_curve"]
    assert not s.loc[0, "higher_is_better"]


# ------------------------------------------------------------------------------ paired tests

def test_holm_known_answer():
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # capped, monotone
    out = st.holm([0.02, np.nan, 0.01])
    assert math.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.02])
    assert st.holm([]).size == 0
    with pytest.raises(ConfigError, match="p-values"):
        st.holm([0.5, 1.5])


def _margin_records(metric="mask_localisation", clean=None, margin=0.05, n=60, hib=True):
    rng = np.random.default_rng(5)
    base = rng.beta(2, 3, n)
    better = base + margin + rng.normal(0, 0.02, n)
    noise = base + rng.normal(0, 0.02, n)
    kw = dict(clean=clean, hib=hib)
    return frame(rows("m", "base", metric, base, **kw), rows("m", "better", metric, better, **kw),
                 rows("m", "same", metric, base, **kw), rows("m", "noise", metric, noise, **kw))


@pytest.mark.parametrize("metric, clean", [
    ("mask_localisation", None),
    ("pixel_perturbation", np.linspace(0.5, 1.0, 60)),
])
def test_a_known_margin_is_detected_and_identical_methods_tie(metric, clean):
    records = _margin_records(metric, clean)
    c = st.compare(records, n_resamples=R)
    assert list(c.columns) == st.COMPARISON_COLUMNS
    assert c["test"].eq("bootstrap" if clean is not None else "wilcoxon").all()
    pair = c[(c.method_a == "base") & (c.method_b == "better")].iloc[0]
    assert pair["significant"] and pair["better"] == "better" and pair["n"] == 60
    assert pair["ci_low"] < -0.05 < pair["ci_high"]
    assert pair["diff"] == pytest.approx(-0.05, abs=0.015)
    same = c[(c.method_a == "base") & (c.method_b == "same")].iloc[0]
    assert same["p_value"] == 1.0 and same["p_holm"] == 1.0 and same["better"] == "tie"
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0
    # Holm within the family: the adjusted p-values are the Holm of the raw ones
    assert c["p_holm"].to_numpy() == pytest.approx(st.holm(c["p_value"]))


def test_lower_is_better_flips_the_winner():
    c = st.compare(_margin_records("deletion", hib=False), n_resamples=R)
    pair = c[(c.method_a == "base") & (c.method_b == "better")].iloc[0]
    assert pair["significant"] and pair["better"] == "base"


def test_pairs_use_only_the_common_samples():
    ids = [f"grid{g:04d}/cell{k}" for g in range(10) for k in range(4)]
    a = rows("m", "a", "grid_pointing_game", np.linspace(0, 1, 40), ids=ids)
    b = rows("m", "b", "grid_pointing_game", np.linspace(0, 1, 40), ids=ids)[:30]
    c = st.compare(frame(a, b), n_resamples=R)
    assert c.loc[0, "n"] == 30 and c.loc[0, "diff"] == 0 and c.loc[0, "p_value"] == 1.0


def test_replicates_are_compared_separately():
    rng = np.random.default_rng(2)
    parts = [rows("m", meth, "mask_localisation", rng.random(20), replicate=rep)
             for rep in (0, 1) for meth in ("a", "b", "c")]
    c = st.compare(frame(*parts), n_resamples=R)
    assert len(c) == 6 and sorted(set(c["replicate"])) == [0, 1]


def test_pairs_match_an_inner_merge_with_shuffled_partial_and_duplicate_samples():
    rng = np.random.default_rng(5)
    parts = []
    for meth in ("a", "b", "c"):
        ids = [f"img{i:03d}" for i in rng.permutation(40)[:int(rng.integers(20, 40))]]
        ids += ids[:3]  # duplicated samples: the first row counts
        parts.append(rows("m", meth, "mask_localisation", rng.random(len(ids)), ids=ids))
    records = frame(*parts)
    records["target"] = records["sample_id"].str[-1].astype(int)  # one target per image
    c = st.compare(records, n_resamples=R)
    assert (c["n"] > 0).all()
    samples = st.sample_values(records)
    samples["target"] = samples["target"].astype(str)
    by = {m: g.drop_duplicates(["sample_id", "target"]) for m, g in samples.groupby("method")}
    for r in c.itertuples():
        j = by[r.method_a].merge(by[r.method_b], on=["sample_id", "target"])
        va, vb = j["value_x"].to_numpy(), j["value_y"].to_numpy()
        assert r.n == len(j)
        assert r.mean_a == va.sum() / len(va) and r.mean_b == vb.sum() / len(vb)
        method = "approx" if len(j) > 50 else "exact"
        assert r.p_value == wilcoxon.scipy_wilcoxon_p_value(va - vb, method)


def test_the_fast_wilcoxon_equals_scipy_bit_for_bit():
    from scipy import stats

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 90))
        d = [rng.normal(size=n), np.round(rng.normal(size=n), 1),
             rng.integers(-3, 4, size=n).astype(float)][trial % 3]
        if np.all(d == 0):
            continue
        exact = n <= 50 and np.all(d != 0) and np.unique(np.abs(d)).size == n
        ref = stats.wilcoxon(d, zero_method="zsplit", method="exact" if exact else "approx")
        assert wilcoxon.wilcoxon_p_value(d) == float(ref.pvalue)


# ------------------------------------------------------------------------------ ranks, best

def _hand_summary(means, hib=True, model="m", metric="mask_localisation"):
    return pd.DataFrame([dict(model=model, method=k, metric=metric, replicate=0, n=10, mean=v,
                              ci_low=v - 0.01, ci_high=v + 0.01, higher_is_better=hib)
                         for k, v in means.items()])


def _hand_comparisons(significant, means, hib=True, model="m", metric="mask_localisation"):
    out = []
    for (a, b), sig in significant.items():
        diff = means[a] - means[b]
        better = "tie" if not sig else (a if (diff > 0) == hib else b)
        out.append(dict(model=model, metric=metric, replicate=0, method_a=a, method_b=b,
                        diff=diff, ci_low=diff - 0.01, ci_high=diff + 0.01, p_holm=0.01 if sig
                        else 0.5, significant=sig, better=better))
    return pd.DataFrame(out)


MEANS = dict(A=0.9, B=0.85, C=0.5, D=0.48)
SIG = {("A", "B"): False, ("A", "C"): True, ("A", "D"): True, ("B", "C"): True,
       ("B", "D"): True, ("C", "D"): False}


def test_rank_groups_follow_the_sequential_leader_rule():
    r = st.rank_groups(_hand_summary(MEANS), _hand_comparisons(SIG, MEANS))
    assert list(r.columns) == st.RANK_COLUMNS
    assert r[["method", "rank", "group", "leader"]].values.tolist() == [
        ["A", 1, "a", "A"], ["B", 2, "a", "A"], ["C", 3, "b", "C"], ["D", 4, "b", "C"]]


def test_rank_groups_with_lower_is_better_and_all_different():
    sig = {k: True for k in SIG}
    r = st.rank_groups(_hand_summary(MEANS, hib=False), _hand_comparisons(sig, MEANS, hib=False))
    assert r["method"].tolist() == ["D", "C", "B", "A"]
    assert r["group"].tolist() == ["a", "b", "c", "d"]


def test_best_methods_tie_and_best():
    tie = st.best_methods(_hand_summary(MEANS), _hand_comparisons(SIG, MEANS))
    assert list(tie.columns) == st.BEST_COLUMNS
    row = tie.iloc[0]
    assert (row["best"], row["runner_up"], row["verdict"], row["tied"]) == ("A", "B", "tie",
                                                                            "A, B")
    assert row["best_mean"] == 0.9 and row["runner_up_ci_high"] == pytest.approx(0.86)
    sig = {**SIG, ("A", "B"): True}
    best = st.best_methods(_hand_summary(MEANS), _hand_comparisons(sig, MEANS)).iloc[0]
    assert (best["verdict"], best["tied"], best["diff"]) == ("best", "A", pytest.approx(0.05))
    single = st.best_methods(_hand_summary({"A": 0.3}), _hand_comparisons({}, {})).iloc[0]
    assert single["verdict"] == "single" and single["runner_up"] == ""


def test_best_methods_end_to_end_identical_methods_are_a_tie():
    v = np.random.default_rng(3).random(30)
    records = frame(rows("m", "a", "mask_localisation", v), rows("m", "b", "mask_localisation", v))
    s = st.summarise(records, n_resamples=R)
    b = st.best_methods(s, st.compare(records, n_resamples=R)).iloc[0]
    assert b["verdict"] == "tie" and set(b["tied"].split(", ")) == {"a", "b"}


# ------------------------------------------------------------------------------ agreement, stability

def test_kendall_tau_between_metric_rankings_respects_the_direction():
    methods = ["p", "q", "r", "s"]
    up = [0.1, 0.2, 0.3, 0.4]
    summary = pd.concat([
        _hand_summary(dict(zip(methods, up)), metric="m1"),
        _hand_summary(dict(zip(methods, [1, 2, 3, 4])), metric="m2"),          # same order
        _hand_summary(dict(zip(methods, up)), hib=False, metric="m3"),         # reversed better
        _hand_summary(dict(zip(methods, up[::-1])), hib=False, metric="m4"),   # same better
        _hand_summary(dict(zip(methods[:2], up[:2])), metric="m5"),            # too few methods
    ], ignore_index=True)
    a = st.metric_agreement(summary)
    assert list(a.columns) == st.AGREEMENT_COLUMNS
    tau = {(r.metric_a, r.metric_b): r.tau for r in a.itertuples()}
    assert tau[("m1", "m2")] == pytest.approx(1.0)
    assert tau[("m1", "m3")] == pytest.approx(-1.0)
    assert tau[("m1", "m4")] == pytest.approx(1.0)
    assert tau[("m3", "m4")] == pytest.approx(-1.0)
    assert math.isnan(tau[("m1", "m5")])
    assert a.set_index(["metric_a", "metric_b"]).loc[("m1", "m5"), "n_methods"] == 2


def test_replicate_stability_counts_firsts_and_spread():
    parts = []
    for rep, (p, q) in enumerate([(0.9, 0.5), (0.8, 0.6), (0.4, 0.7)]):
        s = _hand_summary(dict(p=p, q=q))
        s["replicate"] = rep
        parts.append(s)
    summary = pd.concat(parts, ignore_index=True)
    out = st.replicate_stability(summary)
    assert list(out.columns) == st.STABILITY_COLUMNS
    out = out.set_index("method")
    assert out.loc["p", ["n_replicates", "n_first"]].tolist() == [3, 2]
    assert out.loc["q", "n_first"] == 1 and out.loc["q", "share_first"] == pytest.approx(1 / 3)
    assert out.loc["p", "range"] == pytest.approx(0.5)
    assert out.loc["p", "std"] == pytest.approx(np.std([0.9, 0.8, 0.4], ddof=1))
    # models as replicates of a family, through a mapping
    two = pd.concat([_hand_summary(dict(p=0.9, q=0.5), model="vit_a"),
                     _hand_summary(dict(p=0.1, q=0.5), model="vit_b")], ignore_index=True)
    fam = st.replicate_stability(two, {"vit_a": "vit", "vit_b": "vit"}).set_index("method")
    assert set(fam["family"]) == {"vit"} and fam.loc["p", "n_first"] == 1
    assert fam.loc["q", "n_first"] == 1 and fam.loc["q", "std"] == 0
    # ... or a family column
    two["family"] = "vit"
    pd.testing.assert_frame_equal(st.replicate_stability(two).set_index("method"), fam)


# ------------------------------------------------------------------------------ formatting, files, errors

def test_format_interval():
    assert st.format_interval(0.4271, 0.391, 0.4649) == "0.427 [0.39, 0.46]"
    assert st.format_interval(0.00102, -0.0008, 0.0029) == "0.00102 [-0.0008, 0.0029]"
    assert st.format_interval(12.3456, 11.9, 12.81) == "12.346 [11.90, 12.81]"
    assert st.format_interval(0.001, -0.00001, 0.002) == "0.00100 [0.0000, 0.0020]"
    assert st.format_interval(float("nan"), None, np.nan) == "nan [nan, nan]"


def test_write_statistics_writes_the_four_tables(tmp_path):
    records = _margin_records()
    paths = st.write_statistics(records, tmp_path / "stats", n_resamples=R)
    assert sorted(paths) == ["agreement", "best", "comparisons", "ranks", "summary"]
    for name, path in paths.items():
        assert path.name == f"{name}.csv" and path.exists()
    summary = pd.read_csv(paths["summary"])
    assert list(summary.columns) == st.SUMMARY_COLUMNS and len(summary) == 4
    assert len(pd.read_csv(paths["comparisons"])) == 6


def test_empty_and_bad_input():
    empty = frame(rows("m", "a", "mask_localisation", [np.nan], status="error"))
    assert st.summarise(empty).empty and list(st.summarise(empty).columns) == st.SUMMARY_COLUMNS
    assert st.compare(empty).empty
    assert st.rank_groups(st.summarise(empty), st.compare(empty)).empty
    records = _margin_records()
    with pytest.raises(ConfigError, match="confidence"):
        st.summarise(records, confidence=95)
    with pytest.raises(ConfigError, match="n_resamples"):
        st.summarise(records, n_resamples=0)
    with pytest.raises(ConfigError, match="interval"):
        st.compare(records, interval="normal")
    with pytest.raises(ConfigError, match="alpha"):
        st.compare(records, alpha=2)
    with pytest.raises(ConfigError, match="DataFrame"):
        st.summarise([1, 2, 3])
    with pytest.raises(ConfigError, match="lacks the column"):
        st.summarise(records.drop(columns="sample_id"))
