"""Bad input to ``xai-bench plot`` and ``xai-bench report`` (edited or damaged files of a run
directory) and to the benchmark scripts (bad arguments), in the format of the catalogue in
tests/test_bad_input.py: every case exits 2 with exactly one ``Error:`` line that names the
problem, no traceback, and nothing written (the files under the test's directory are the same
before and after). Nothing is trained: the run is a tiny untrained one, made once per module
and copied per case; training is patched to fail the test if a script reaches it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import load_benchmark
from xai_bench.cli import main
from catalogue import assert_one_line_error, files_under


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A finished tiny run (no plots, no report) for the cases to copy and damage."""
    import xai_bench

    root = tmp_path_factory.mktemp("good")
    result = xai_bench.evaluate(models=["vit_nano"], untrained=True, methods="uniform,ixg",
                                metrics="deletion", n_images=2, out=root, plots=False,
                                report=False, progress=False)
    return Path(result.run_dir)


def _text_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def edit_table(name: str, edit):
    """A damage: ``edit(frame)`` of the table ``name`` (read as text), written back."""
    def damage(run: Path):
        edit(_text_table(run / name)).to_csv(run / name, index=False)
    return damage


def set_cell(column, value, row=0):
    def edit(frame):
        frame.loc[row, column] = value
        return frame
    return edit


def duplicate_row(row=0):
    return lambda frame: pd.concat([frame, frame.iloc[[row]]], ignore_index=True)


def drop_column(column):
    return lambda frame: frame.drop(columns=[column])


def edit_run_json(edit):
    def damage(run: Path):
        info = json.loads((run / "run.json").read_text())
        edit(info)
        (run / "run.json").write_text(json.dumps(info))
    return damage


def write_file(name, text):
    return lambda run: (run / name).write_text(text)


def remove_file(name):
    return lambda run: (run / name).unlink()


RECORDS, SUMMARY, CURVES = "records.csv", "summary.csv", "curves.csv"

#: (id, damage, fragments of the one error line)
DAMAGES = [
    ("records-value-not-a-number", edit_table(RECORDS, set_cell("value", "abc")),
     ("records.csv line 2", "value 'abc' is not a number")),
    ("records-unknown-status", edit_table(RECORDS, set_cell("status", "fine", row=1)),
     ("records.csv line 3", "status 'fine'", "ok, skipped, error")),
    ("records-ok-row-without-value", edit_table(RECORDS, set_cell("value", "")),
     ("records.csv line 2", "empty or NaN in an 'ok' row")),
    ("records-duplicated-row", edit_table(RECORDS, duplicate_row(1)),
     ("records.csv line 8", "duplicates line 3", "counted twice")),
    ("records-unknown-metric", edit_table(RECORDS, set_cell("metric", "delition", row=2)),
     ("records.csv line 4", "metric 'delition'", "neither declared")),
    ("records-higher-is-better-maybe",
     edit_table(RECORDS, set_cell("higher_is_better", "maybe")),
     ("records.csv line 2", "higher_is_better 'maybe'", "True or False")),
    ("records-missing-column", edit_table(RECORDS, drop_column("status")),
     ("records.csv", "lacks the columns status")),
    ("records-replicate-not-an-integer", edit_table(RECORDS, set_cell("replicate", "1.5")),
     ("records.csv line 2", "replicate '1.5' is not an integer")),
    ("run-json-wrong-field-type", edit_run_json(lambda i: i.update(models="vit_nano")),
     ("run.json", "'models' must be an object", "'vit_nano'")),
    ("run-json-nested-wrong-type",
     edit_run_json(lambda i: i["dataset"].update(classes=5)),
     ("run.json", "'dataset.classes' must be a list of strings")),
    ("run-json-bad-declared-colour",
     edit_run_json(lambda i: i["declarations"]["methods"]["uniform"].update(colour="grey")),
     ("run.json", "'declarations.methods.uniform.colour'", "#rrggbb")),
    ("run-json-not-json", write_file("run.json", "{not json"),
     ("run.json", "cannot be read")),
    ("run-json-missing", remove_file("run.json"), ("run.json",)),
    ("summary-mean-not-a-number", edit_table(SUMMARY, set_cell("mean", "high")),
     ("summary.csv line 2", "mean 'high' is not a number")),
    ("summary-duplicated-row", edit_table(SUMMARY, duplicate_row(0)),
     ("summary.csv line 4", "a second row for vit_nano/uniform/deletion/0")),
    ("summary-higher-is-better-maybe",
     edit_table(SUMMARY, set_cell("higher_is_better", "maybe")),
     ("summary.csv line 2", "higher_is_better 'maybe'")),
    ("curves-fraction-not-a-number", edit_table(CURVES, set_cell("fraction", "half")),
     ("curves.csv line 2", "fraction 'half' is not a number")),
    ("curves-duplicated-point", edit_table(CURVES, duplicate_row(3)),
     ("curves.csv", "duplicates line 5")),
]

OUTPUT_CASES = [pytest.param(command, damage, fragments, id=f"{command}-{name}")
                for name, damage, fragments in DAMAGES for command in ("plot", "report")]




@pytest.mark.parametrize("command, damage, fragments", OUTPUT_CASES)
def test_bad_run_directory_is_one_line_and_writes_nothing(command, damage, fragments,
                                                          good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    damage(run)
    before = files_under(tmp_path)
    if command == "report" and not (run / "run.json").exists():
        fragments = ("not a run directory",)  # report names what a run directory lacks
    result = CliRunner().invoke(main, [command, str(run)])
    assert_one_line_error(result, fragments)
    assert files_under(tmp_path) == before, sorted(files_under(tmp_path) - before)


def test_the_good_run_is_accepted(good_run, tmp_path):
    """The readers' strictness refuses nothing that a run writes."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").is_file()


# ---- the benchmark scripts -------------------------------------------------------------------

def _a_file(tmp: Path) -> Path:
    (tmp / "a_file.txt").write_text("a file, not a directory")
    return tmp / "a_file.txt"


SCRIPT_CASES = [
    pytest.param("replicate", lambda t: ["--data", "shapes", "--replicates", "0"],
                 ("--replicates", "at least 1"), id="replicate-replicates-0"),
    pytest.param("replicate", lambda t: ["--data", "nosuch"], ("unknown data set 'nosuch'",),
                 id="replicate-data-unknown"),
    pytest.param("replicate", lambda t: ["--data", "shapes", "--n-grids", "0"],
                 ("--n-grids", "at least 1"), id="replicate-n-grids-0"),
    pytest.param("replicate", lambda t: ["--data", "shapes", "--out", _a_file(t) / "sub"],
                 ("--out", "a_file.txt"), id="replicate-out-below-a-file"),
    pytest.param("replicate", lambda t: ["--data", "shapes", "--methods", "unifrom"],
                 ("unknown method 'unifrom'",), id="replicate-unknown-method"),
    pytest.param("replicate", lambda t: ["--ablation-only", "--ablation-data", "nosuch"],
                 ("unknown data set 'nosuch'",), id="replicate-ablation-data-unknown"),
    pytest.param("gpu_check", lambda t: ["--device", "cpu", "--n-grids", "0"],
                 ("--n-grids", "at least 1"), id="gpu-check-n-grids-0"),
    pytest.param("gpu_check", lambda t: ["--device", "cpu", "--dataset", "nosuch"],
                 ("unknown data set 'nosuch'",), id="gpu-check-dataset-unknown"),
    pytest.param("gpu_check", lambda t: ["--device", "cpu", "--out", _a_file(t) / "x.json"],
                 ("--out", "a_file.txt"), id="gpu-check-out-below-a-file"),
    pytest.param("gpu_check", lambda t: ["--device", "cpu", "--models", "vit_nan0"],
                 ("unknown model 'vit_nan0'",), id="gpu-check-unknown-model"),
    pytest.param("gpu_check", lambda t: ["--device", "cpu", "--skip", "bogus"],
                 ("--skip", "bogus"), id="gpu-check-skip-unknown-part"),
    pytest.param("method_cost", lambda t: ["--repeats", "0"], ("--repeats", "at least 1"),
                 id="method-cost-repeats-0"),
    pytest.param("method_cost", lambda t: ["--batch-sizes", "0"], ("--batch-sizes",),
                 id="method-cost-batch-sizes-0"),
    pytest.param("multiprocess_speedup", lambda t: ["--processes", "1,x"], ("--processes",),
                 id="multiprocess-processes-not-integers"),
    pytest.param("shipped_models", lambda t: ["--json", _a_file(t) / "x.json"],
                 ("--json", "a_file.txt"), id="shipped-models-json-below-a-file"),
]


@pytest.mark.parametrize("script, make_args, fragments", SCRIPT_CASES)
def test_bad_benchmark_argument_is_one_line_before_any_work(script, make_args, fragments,
                                                            tmp_path, monkeypatch, capsys):
    import xai_bench.training.loop as loop

    def no_training(*args, **kwargs):
        raise AssertionError("training started: the error should have come first")

    monkeypatch.setattr(loop, "train_model", no_training)
    monkeypatch.chdir(tmp_path)  # default output files would land here
    module = load_benchmark(script)
    args = [str(a) for a in make_args(tmp_path)]
    if script == "replicate":
        args += ["--docs", str(tmp_path / "replication.md")]
    before = files_under(tmp_path)
    try:
        code = module.main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert files_under(tmp_path) == before, sorted(files_under(tmp_path) - before)


def test_catalogue_size():
    assert len(OUTPUT_CASES) + len(SCRIPT_CASES) >= 40
