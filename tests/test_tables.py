"""xai_bench.analysis.tables: every statistics table is registered once (name, columns,
producer), analyse/write_statistics/read_statistics follow the registry, a table a run
directory lacks is computed alone, and the claims take their baselines from the run's
declarations, not from method names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xai_bench.analysis import tables as tb
from xai_bench.analysis.claims import run_baselines
from xai_bench.contracts.cards import Cards
from xai_bench.errors import ConfigError

R = 200  # resamples: enough for the checks below, fast
N = 30


def _rows(model, method, metric, values, replicate=0):
    return [dict(model=model, method=method, metric=metric, sample_id=f"s{i:03d}",
                 target=i % 4, value=float(v), status="ok", message="",
                 category="localisation", higher_is_better=True, replicate=replicate)
            for i, v in enumerate(values)]


def records_for(bcos: dict, twin: dict, *, replicates=(0,), seed=0) -> pd.DataFrame:
    """Records of ``bcos_vit_nano`` and its twin ``vit_nano`` on two metrics: ``{method:
    mean}`` per model, values = mean + shared per-sample noise + own noise."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.08, N)
    out = []
    for replicate in replicates:
        for model, means in (("bcos_vit_nano", bcos), ("vit_nano", twin)):
            for metric in ("grid_pointing_game", "mask_localisation"):
                for method, mean in means.items():
                    values = mean + common + rng.normal(0, 0.02, N)
                    out += _rows(model, method, metric, values, replicate)
    return pd.DataFrame(out)


BASE = dict(random=0.25, centre=0.3, ixg=0.45)


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the registry for a test that registers a table, restored afterwards."""
    monkeypatch.setattr(tb, "TABLES", dict(tb.TABLES))
    return tb.TABLES


# ------------------------------------------------------------------------------ the registry

def test_every_registered_table_is_produced_and_written_with_its_columns(tmp_path):
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.4),
                          replicates=(0, 1))
    tables = tb.analyse(records, n_resamples=R, claims=True)
    assert list(tables) == list(tb.TABLES)  # stability and claims apply here
    for name, table in tb.TABLES.items():
        assert list(tables[name].columns) == list(table.columns), name
        assert len(tables[name]), name
    paths = tb.write_statistics(records, tmp_path, tables=tables)
    assert list(paths) == list(tb.TABLES)
    for name, path in paths.items():
        assert path.name == f"{name}.csv"
        assert list(pd.read_csv(path).columns) == list(tb.TABLES[name].columns)


def test_tables_that_do_not_apply_are_neither_produced_nor_written(tmp_path):
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.4))
    tables = tb.analyse(records, n_resamples=R)
    assert "stability" not in tables and "claims" not in tables  # one replicate, no claims
    assert tb.TABLES["stability"].applies is not None and tb.TABLES["summary"].applies is None
    paths = tb.write_statistics(records, tmp_path, n_resamples=R)
    assert sorted(paths) == sorted(tables)
    assert not (tmp_path / "stability.csv").exists()


def test_a_table_registered_once_appears_in_analyse_and_is_written(own_registry, tmp_path):
    def methods_per_model(records, tables, options):
        summary = tables["summary"]
        counts = summary.groupby("model")["method"].nunique()
        return pd.DataFrame({"model": counts.index, "n_methods": counts.to_numpy()})

    tb.register_table("methods_per_model", ["model", "n_methods"], methods_per_model,
                      needs=("summary",))
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.4))
    tables = tb.analyse(records, n_resamples=R)
    assert list(tables)[-1] == "methods_per_model"
    assert tables["methods_per_model"].set_index("model")["n_methods"].to_dict() == {
        "bcos_vit_nano": 4, "vit_nano": 4}
    paths = tb.write_statistics(records, tmp_path, tables=tables)
    assert pd.read_csv(paths["methods_per_model"]).shape == (2, 2)


def test_a_registration_names_a_new_table_and_earlier_ones_it_needs(own_registry):
    produce = lambda records, tables, options: pd.DataFrame()  # noqa: E731
    with pytest.raises(ConfigError, match="registered already"):
        tb.register_table("summary", ["model"], produce)
    with pytest.raises(ConfigError, match="needs later_table"):
        tb.register_table("early", ["model"], produce, needs=("later_table",))
    with pytest.raises(ConfigError, match="file name"):
        tb.register_table("bad/name", ["model"], produce)


# ------------------------------------------------------------------------------ baselines

def test_a_method_declared_a_baseline_is_one_whatever_its_name():
    # the twin's "my_noise" scores highest; only its declared kind keeps it from being the
    # twin's best method in claim c
    records = records_for(dict(BASE, inherent=0.8),
                          dict(random=0.25, my_noise=0.95, rollout=0.4, ixg=0.3))
    declarations = {"methods": {"my_noise": {"kind": "baseline"}}}
    declared = tb.analyse(records, n_resamples=R, claims=True, declarations=declarations)
    row = declared["claims"].set_index("claim").loc["c"]
    assert row["outcome"] == "holds", row["detail"]
    assert "rollout" in row["detail"] and "my_noise" not in row["detail"]
    assert row["estimate"] == pytest.approx(0.8 / 0.4, rel=0.05)
    undeclared = tb.analyse(records, n_resamples=R, claims=True)["claims"]
    row = undeclared.set_index("claim").loc["c"]
    assert "my_noise" in row["detail"] and row["outcome"] != "holds"
    assert run_baselines(["ixg", "my_noise", "random"], Cards(declarations)) == (
        "my_noise", "random")


def test_a_declared_card_overrides_the_registry_for_the_claims():
    # "centre" declared as an ordinary method in this run: it is then the twin's best
    records = records_for(dict(BASE, inherent=0.8),
                          dict(random=0.25, centre=0.95, rollout=0.4))
    declarations = {"methods": {"centre": {"kind": "other"}}}
    row = tb.analyse(records, n_resamples=R, claims=True, declarations=declarations)[
        "claims"].set_index("claim").loc["c"]
    assert "centre" in row["detail"] and "rollout" not in row["detail"]


# ------------------------------------------------------------------------------ reading a run

def _run_dir(tmp_path, records):
    tb.write_statistics(records, tmp_path, seed=3, n_resamples=R, claims=True)
    return tmp_path


def test_read_statistics_reads_every_table_of_a_complete_run(tmp_path):
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.4),
                          replicates=(0, 1))
    run = _run_dir(tmp_path, records)
    tables = tb.read_statistics(run, records, {"seeds": {"seed": 3}})
    assert tables["computed"] is False
    assert set(tables) - {"computed"} == set(tb.TABLES)


@pytest.mark.parametrize("missing", ["ranks", "claims", "stability"])
def test_read_statistics_computes_only_the_missing_table(tmp_path, missing):
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.4),
                          replicates=(0, 1))
    run = _run_dir(tmp_path, records)
    written = pd.read_csv(run / f"{missing}.csv")
    stored_summary = pd.read_csv(run / "summary.csv")
    (run / f"{missing}.csv").unlink()
    tables = tb.read_statistics(run, records, {"seeds": {"seed": 3}})
    assert tables["computed"] == (missing,)
    # the other tables come from the files: the summary keeps the intervals of its 200
    # resamples (recomputing it would use 2000)
    assert tables["summary"]["ci_low"].tolist() == stored_summary["ci_low"].tolist()
    computed = tables[missing]
    assert list(computed.columns) == list(tb.TABLES[missing].columns)
    if missing == "claims":  # evaluated with the run's seed but the default resamples
        assert computed["outcome"].tolist() == written["outcome"].tolist()
    else:  # drawn from the stored summary (and comparisons): the table the run wrote
        keys = {"ranks": ["model", "replicate", "method", "rank", "group", "leader", "mean"],
                "stability": ["family", "method", "n_replicates", "n_first", "mean", "std"]}
        for key in keys[missing]:
            assert computed[key].tolist() == written[key].tolist(), key


def test_read_statistics_of_a_run_without_tables_computes_them_all(tmp_path):
    records = records_for(dict(BASE, inherent=0.7), dict(BASE, rollout=0.4))
    tables = tb.read_statistics(tmp_path, records, {"config": {"seed": 1}})
    assert tables["computed"] == ("summary", "comparisons", "ranks", "best", "agreement",
                                  "claims")
    assert tb.run_seed({"config": {"seed": 1}}) == 1 and tb.run_seed({}) == 0
