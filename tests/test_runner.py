"""End-to-end checks of the runner, the result schema and the plots on tiny trained models."""

import json
import math
import sys
import textwrap

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.methods.base import AttributionMethod
from xai_bench.storage.results import (
    CURVE_COLUMNS, RECORD_COLUMNS, read_curves, read_examples, read_records,
)
from xai_bench.run.runner import RunConfig, Runner, resolve_metrics
from xai_bench.data.synthetic import CLASSES

from conftest import TINY

METHODS = "inherent,rollout,chefer_lrp,uniform"


@pytest.fixture(scope="module")
def checkpoints(pair_checkpoints):
    return pair_checkpoints


def run_args(out, checkpoints, methods=METHODS, extra=()):
    args = ["run", "--models", "bcos_vit_nano,vit_nano", "--methods", methods,
            "--n-grids", "3", "--n-images", "4", "--batch-size", "16", "--out", str(out),
            "--name", "r", "--no-progress", "--no-plots"]
    for name, path in checkpoints.items():
        args += ["--checkpoint", f"{name}={path}"]
    extra = list(extra)
    metrics = extra[extra.index("--metric") + 1] if "--metric" in extra else "all"
    if metrics == "all" or "grid_pointing_game" in metrics:
        # the fixture pair is too unconfident for the reference's 0.5 confidence threshold
        args += ["--metric-arg", "grid_pointing_game.confidence_threshold=0"]
    return args + extra


def test_metric_categories_resolve():
    assert set(resolve_metrics("localisation")) == {"grid_pointing_game", "mask_localisation"}
    assert "pixel_perturbation" in resolve_metrics("perturbation")
    assert resolve_metrics("all") == xai_bench.list_metrics()


def test_run_writes_tidy_tables_and_run_json_then_plots(tmp_path, checkpoints):
    result = CliRunner().invoke(main, run_args(tmp_path, checkpoints))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "r"
    records, curves = read_records(run_dir), read_curves(run_dir)
    assert list(records.columns[:len(RECORD_COLUMNS)]) == RECORD_COLUMNS
    assert list(curves.columns[:len(CURVE_COLUMNS)]) == CURVE_COLUMNS
    assert set(records["status"]) <= {"ok", "skipped", "error"}
    assert (records["status"] != "error").all(), records[records["status"] == "error"]
    skipped = records[records["status"] == "skipped"]
    assert {("bcos_vit_nano", "chefer_lrp"), ("vit_nano", "inherent")} <= set(
        zip(skipped["model"], skipped["method"]))
    ok = records[records["status"] == "ok"]
    gpg = ok[ok["metric"] == "grid_pointing_game"]
    assert len(gpg[(gpg["model"] == "vit_nano") & (gpg["method"] == "uniform")]) == 3 * 4
    uniform = gpg[gpg["method"] == "uniform"]["value"]
    assert uniform.sub(0.25).abs().max() < 1e-6  # known answer through the whole pipeline
    assert (gpg["confidence_threshold"] == 0).all()  # --metric-arg reached the metric
    assert (gpg["rank_by"] == "logit").all()
    assert set(curves["order"]) >= {"most_first", "least_first"}
    for table in ("summary", "comparisons", "ranks", "best", "agreement", "claims"):
        assert (run_dir / f"{table}.csv").exists(), table
    summary = pd.read_csv(run_dir / "summary.csv")
    ok = summary[summary["n"] > 0]
    assert ((ok["ci_low"] <= ok["mean"] + 1e-12) & (ok["mean"] <= ok["ci_high"] + 1e-12)).all()
    claims = pd.read_csv(run_dir / "claims.csv")
    assert set(claims["claim"]) == {"a", "b", "c", "d"}
    assert set(claims["outcome"]) <= {"holds", "fails", "inconclusive"}
    # the compact summary: per (metric, model) the best method, its interval and verdict
    best = pd.read_csv(run_dir / "best.csv")
    lines = result.output.splitlines()
    for row in best[best["replicate"] == 0].itertuples():
        line = next(ln for ln in lines if ln.startswith(row.metric) and f" {row.model} " in ln)
        assert f" {row.best} " in line and "[" in line
        assert ("significantly ahead of" in line) == (row.verdict == "best")
    assert any(ln.startswith("claims: (a) ") for ln in lines)
    assert f"tables:  {run_dir / 'summary.csv'}" in result.output
    info = json.loads((run_dir / "run.json").read_text())
    for key in ("config", "seeds", "models", "timings", "provenance"):
        assert key in info
    assert info["provenance"]["torch"] and "git_sha" in info["provenance"]
    assert set(info["models"]) == {"bcos_vit_nano", "vit_nano"}
    assert 0 <= info["models"]["vit_nano"]["test_accuracy"] <= 1
    assert info["timings"]["cells"]  # per-cell timings

    assert info["dataset"]["classes"] == list(CLASSES)

    # The grid pointing game keeps its first grid, explained for its four cell classes.
    examples = read_examples(run_dir)
    kept = examples[("vit_nano", "rollout", "grid_pointing_game")]
    assert kept["image"].shape == (3, 32, 32) and kept["maps"].shape == (4, 32, 32)
    assert sorted(kept["targets"].tolist()) == sorted(
        gpg[(gpg["model"] == "vit_nano") & (gpg["method"] == "rollout")
            & (gpg["grid"] == 0)]["target"].tolist())
    model = xai_bench.get_model("bcos_vit_nano", checkpoint=checkpoints["bcos_vit_nano"]).eval()
    inherent = examples[("bcos_vit_nano", "inherent", "grid_pointing_game")]
    x = model.encode(torch.from_numpy(inherent["image"])[None].expand(4, -1, -1, -1))
    expected = xai_bench.get_method("inherent")(model, x, torch.from_numpy(inherent["targets"]))
    torch.testing.assert_close(torch.from_numpy(inherent["maps"]), expected, rtol=1e-4,
                               atol=1e-6)
    assert ("vit_nano", "chefer_lrp", "grid_pointing_game") in examples
    assert ("bcos_vit_nano", "chefer_lrp", "grid_pointing_game") not in examples  # skipped

    plot = CliRunner().invoke(main, ["plot", str(run_dir), "--out", str(tmp_path / "fig")])
    assert plot.exit_code == 0, plot.output
    written = {p.name for p in (tmp_path / "fig").iterdir()}
    assert {"fig6.png", "curves.png", "agreement.png", "fig7_grid_bcos_vit_nano.png",
            "fig7_grid_vit_nano.png", "summary.md"} <= written
    summary = (tmp_path / "fig" / "summary.md").read_text()
    assert "grid_pointing_game" in summary and "vit_nano" in summary


def test_rerun_skips_everything_and_changes_nothing(tmp_path, checkpoints, monkeypatch):
    args = run_args(tmp_path, checkpoints, methods="rollout,uniform")
    assert CliRunner().invoke(main, args).exit_code == 0
    before = (tmp_path / "r" / "records.csv").read_text()

    def fail(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    from xai_bench.run.models import RunModels

    monkeypatch.setattr(RunModels, "load", fail)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    import re

    assert re.search(r"\b(\d+)/\1 cells already done", again.output), again.output
    assert (tmp_path / "r" / "records.csv").read_text() == before


def test_interrupted_run_resumes_to_identical_records(tmp_path, checkpoints, monkeypatch):
    cfg = dict(models=["bcos_vit_nano", "vit_nano"], methods=["rollout", "random"],
               metrics=["grid_pointing_game", "pixel_perturbation"], n_grids=2, n_images=3,
               batch_size=8, checkpoints=checkpoints, name="x")
    Runner(RunConfig(out=str(tmp_path / "full"), **cfg), progress=False, log=lambda *_: None).run()
    full = read_records(tmp_path / "full" / "x")

    from xai_bench.errors import Interrupted
    from xai_bench.run.store import RunStore

    real, calls = RunStore.write, []

    def crash_on_third_cell(self, key, entry, arrays=None):
        if not key.startswith("model__"):
            calls.append(key)
            if len(calls) == 3:
                raise KeyboardInterrupt  # Ctrl-C while computing the third cell
        return real(self, key, entry, arrays)

    monkeypatch.setattr(RunStore, "write", crash_on_third_cell)
    partial = Runner(RunConfig(out=str(tmp_path / "part"), **cfg), progress=False,
                     log=lambda *_: None)
    with pytest.raises(Interrupted, match="interrupted: 2/8 cells kept; rerun the same"):
        partial.run()
    run_dir = tmp_path / "part" / "x"
    assert not (run_dir / "records.csv").exists()  # nothing looks complete
    assert len(list((run_dir / "cells").glob("*__*__*.json"))) == 2
    assert not list((run_dir / "cells").glob(".*"))  # no temporary files left behind
    monkeypatch.setattr(RunStore, "write", real)
    Runner(RunConfig(out=str(tmp_path / "part"), **cfg), progress=False,
           log=lambda *_: None).run()
    resumed = read_records(run_dir)
    pd.testing.assert_frame_equal(resumed, full)


class NaNMethod(AttributionMethod):
    """Returns non-finite maps (the runner must record an error and go on)."""

    name = "nan_method"

    def attribute(self, model, x, targets):
        return torch.full((x.shape[0], *x.shape[-2:]), math.nan)


def test_errors_are_recorded_and_exit_code_is_1(tmp_path, checkpoints):
    xai_bench.METHODS.add("nan_method", NaNMethod)
    try:
        result = CliRunner().invoke(main, run_args(tmp_path, checkpoints,
                                                   methods="nan_method,uniform",
                                                   extra=["--metric", "grid_pointing_game"]))
    finally:
        xai_bench.METHODS.unregister("nan_method")
    assert result.exit_code == 1, result.output
    records = read_records(tmp_path / "r")
    bad = records[records["method"] == "nan_method"]
    assert (bad["status"] == "error").all() and bad["message"].str.contains("non-finite").all()
    assert (records[records["method"] == "uniform"]["status"] == "ok").all()


def test_entry_point_method_runs_like_a_builtin(tmp_path, checkpoints, monkeypatch):
    pkg = tmp_path / "site"
    (pkg / "xb_plugin_demo").mkdir(parents=True)
    (pkg / "xb_plugin_demo" / "__init__.py").write_text(textwrap.dedent("""
        import torch
        from xai_bench.methods.base import AttributionMethod

        class Checker(AttributionMethod):
            \"\"\"A plugin method: a checkerboard.\"\"\"
            name = "checker"
            def attribute(self, model, x, targets):
                h, w = x.shape[-2:]
                board = ((torch.arange(h)[:, None] + torch.arange(w)) % 2).float()
                return board.expand(x.shape[0], h, w).clone()
        """))
    dist = pkg / "xb_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xb-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[xai_bench.methods]\nchecker = xb_plugin_demo:Checker\n")
    monkeypatch.syspath_prepend(str(pkg))
    import importlib

    importlib.invalidate_caches()
    if hasattr(xai_bench.METHODS, "refresh"):
        xai_bench.METHODS.refresh()
    try:
        assert "checker" in xai_bench.list_methods()
        listing = CliRunner().invoke(main, ["list", "methods"])
        assert "checker" in listing.output
        result = CliRunner().invoke(main, run_args(tmp_path, checkpoints, methods="checker",
                                                   extra=["--metric", "grid_pointing_game"]))
        assert result.exit_code == 0, result.output
        records = read_records(tmp_path / "r")
        assert (records["method"] == "checker").all() and (records["status"] == "ok").all()
    finally:
        monkeypatch.undo()
        sys.modules.pop("xb_plugin_demo", None)
        if hasattr(xai_bench.METHODS, "refresh"):
            xai_bench.METHODS.refresh()


@pytest.mark.parametrize("args, message", [
    (["run", "--models", "bcos_vit_nanoo"], "did you mean 'bcos_vit_nano'"),
    (["run", "--metric", "localization"], "localization"),
    (["run", "--models", "vit_ti"], "needs weights"),
    (["run", "--checkpoint", "vit_nano=/does/not/exist.pt", "--models", "vit_nano"],
     "does not exist"),
    (["run", "--device", "tpu"], "unknown device"),
    (["plot"], "no xai-bench run found"),
])
def test_usage_errors_are_one_line_with_exit_code_2(args, message, tmp_path):
    extra = ["--out", str(tmp_path)] if args[0] == "run" else [str(tmp_path)]
    result = CliRunner().invoke(main, args + extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and "Traceback" not in result.output
    assert not list(tmp_path.glob("*/records.csv"))


def test_explain_draws_every_applicable_method(tmp_path, checkpoints):
    out = tmp_path / "fig.png"
    result = CliRunner().invoke(main, ["explain", "bcos_vit_nano", "--checkpoint",
                                       checkpoints["bcos_vit_nano"], "--n-images", "2",
                                       "--methods", "inherent,rollout,chefer_lrp",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and out.stat().st_size > 1000
    bad = CliRunner().invoke(main, ["explain", "vit_nano", "--checkpoint",
                                    checkpoints["vit_nano"], "--target", "99", "--out",
                                    str(out)])
    assert bad.exit_code == 2 and "--target 99" in bad.output


def test_models_all_means_the_models_that_can_run_here(tmp_path):
    # the default pair on the embedded data, plus whatever has a checkpoint
    def models(**kw):
        return [spec.name for spec in Runner(RunConfig(models=["all"], out=str(tmp_path), **kw),
                                           progress=False).model_specs]

    assert models() == ["bcos_vit_nano", "vit_nano"]
    from xai_bench.storage.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "x.pt", xai_bench.get_model("vit_micro"), "vit_micro", "shapes",
                    {}, {})
    assert set(models(checkpoints={"vit_micro": str(tmp_path / "x.pt")})) == \
        {"bcos_vit_nano", "vit_nano", "vit_micro"}
    assert "bcos_vit_b" in models(untrained=True)
    result = CliRunner().invoke(main, ["run", "--models", "all", "--dataset", "cifar10",
                                       "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "--models all found no model" in result.output


def test_untrained_models_are_the_same_on_every_invocation(tmp_path):
    def runner():
        return Runner(RunConfig(models=["vit_nano"], untrained=True, out=str(tmp_path)),
                      progress=False, log=lambda *_: None)

    torch.manual_seed(1)
    a, _ = runner().load_model("vit_nano")
    torch.manual_seed(2)
    b, _ = runner().load_model("vit_nano")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_quiet_prints_only_paths_verbose_every_method_and_report_command(tmp_path,
                                                                          checkpoints):
    args = run_args(tmp_path, checkpoints, extra=["--metric", "grid_pointing_game"])
    assert CliRunner().invoke(main, args).exit_code == 0
    with_report = [a for a in args if a != "--no-plots"]
    quiet = CliRunner().invoke(main, with_report + ["-q"])  # every cell is reused
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.output.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["report:", "plots:", "tables:"], quiet.output
    report = lines[0].split()[1]
    assert report == str(tmp_path / "r" / "report.html") and (tmp_path / "r" / "report.html").is_file()
    verbose = CliRunner().invoke(main, args + ["--verbose"])
    assert verbose.exit_code == 0
    for method in METHODS.split(","):
        assert method in verbose.output
    assert "best on bcos_vit_nano: " in verbose.output
    # xai-bench report: a run directory to a chosen file; anything else is one line, exit 2
    target = tmp_path / "page.html"
    made = CliRunner().invoke(main, ["report", str(tmp_path / "r"), "--out", str(target)])
    assert made.exit_code == 0 and made.output.strip() == str(target) and target.is_file()
    bad = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a run directory" in bad.output
    assert "Traceback" not in bad.output


def test_a_cell_in_parts_resumes_from_its_committed_parts(tmp_path, monkeypatch):
    """A grid pointing game cell of 20 pairs at batch size 8 is computed in 3 parts, each
    committed on its own: interrupted after 2 parts, the rerun computes only the other 4 of
    the 6 (two models) and ends with the records of an uninterrupted run."""
    from xai_bench.errors import Interrupted
    from xai_bench.metrics.localisation import GridPointingGame

    def config(out):
        return RunConfig(methods=["ixg"], metrics=["grid_pointing_game"], n_grids=5,
                         batch_size=8, out=out, name="parts")

    original, calls = GridPointingGame.evaluate_part, []

    def counted(self, *args, **kwargs):
        calls.append(args[3])  # start
        if len(calls) == 3 and interrupt:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GridPointingGame, "evaluate_part", counted)
    interrupt = True
    with pytest.raises(Interrupted):
        Runner(config(str(tmp_path)), progress=False, log=lambda *_: None).run()
    parts_dir = tmp_path / "parts" / "parts"
    assert len(list(parts_dir.glob("*.json"))) == 2 and calls == [0, 8, 16]
    interrupt, calls[:] = False, []
    resumed = Runner(config(str(tmp_path)), progress=False, log=lambda *_: None)
    resumed.run()
    assert calls == [16, 0, 8, 16]  # the interrupted part, then the second model's three
    assert not parts_dir.exists()  # joined into their cells, then removed
    whole = Runner(config(None), progress=False, log=lambda *_: None)
    whole.run()
    assert resumed.records.equals(whole.records)


def test_a_failing_part_fails_its_cell_with_the_message_and_is_retried(tmp_path,
                                                                        monkeypatch):
    from xai_bench.metrics.localisation import GridPointingGame

    cfg = RunConfig(models=["vit_nano"], methods=["ixg"], metrics=["grid_pointing_game"],
                    n_grids=5, batch_size=8, out=str(tmp_path), name="failing")
    original = GridPointingGame.evaluate_part

    def second_part_fails(self, *args, **kwargs):
        if args[3] == 8:
            raise ValueError("part two broke")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GridPointingGame, "evaluate_part", second_part_fails)
    first = Runner(cfg, progress=False, log=lambda *_: None)
    first.run()
    assert set(first.records["status"]) == {"error"}
    assert "ValueError: part two broke" in first.records["message"].iloc[0]
    assert not (tmp_path / "failing" / "parts").exists()
    monkeypatch.setattr(GridPointingGame, "evaluate_part", original)
    logged = []
    second = Runner(cfg, progress=False, log=logged.append)
    second.run()
    assert set(second.records["status"]) == {"ok"} and len(second.records) == 20
    assert any("retried" in line for line in logged)


def test_a_failed_part_of_an_interrupted_run_is_computed_again(tmp_path, monkeypatch):
    """Committed parts are reused by the next run, except one that failed: like a cell
    that ended in an error, it is retried."""
    from xai_bench.errors import Interrupted
    from xai_bench.metrics.localisation import GridPointingGame

    cfg = RunConfig(models=["vit_nano"], methods=["ixg"], metrics=["grid_pointing_game"],
                    n_grids=5, batch_size=8, out=str(tmp_path), name="again")
    original, calls = GridPointingGame.evaluate_part, []

    def flaky(self, *args, **kwargs):
        if args[3] == 8:
            raise ValueError("part two broke")
        if args[3] == 16:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    def counted(self, *args, **kwargs):
        calls.append(args[3])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GridPointingGame, "evaluate_part", flaky)
    with pytest.raises(Interrupted):
        Runner(cfg, progress=False, log=lambda *_: None).run()
    monkeypatch.setattr(GridPointingGame, "evaluate_part", counted)
    resumed = Runner(cfg, progress=False, log=lambda *_: None)
    resumed.run()
    assert calls == [8, 16]  # part one reused, the failed part two and part three computed
    assert set(resumed.records["status"]) == {"ok"}


def test_every_method_runs_through_the_harness_without_an_error(tmp_path, checkpoints):
    """``--methods all`` (every registered method, defaults as shipped) on the tiny pair: each
    cell is computed or skipped as not applicable, none fails."""
    args = run_args(tmp_path, checkpoints, methods="all",
                    extra=["--metric", "mask_localisation", "--n-images", "2"])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = read_records(tmp_path / "r")
    assert (records["status"] != "error").all(), records[records["status"] == "error"]
    ran = set(records.loc[records["status"] == "ok", "method"])
    assert ran == set(xai_bench.list_methods()), set(xai_bench.list_methods()) - ran
    skipped = records[records["status"] == "skipped"]
    for _, row in skipped.iterrows():
        method = xai_bench.get_method(row["method"])
        model = xai_bench.get_model(row["model"], **TINY)
        assert not method.applies_to(model), (row["model"], row["method"])
