"""The run options: one RunConfig field each, from which the command line's options,
evaluate's keywords and the reproduce command are generated; the forward options
(--precision, --compile): validated, part of the run's name and of every cell's identity,
recorded, and rebuilt into the reproduce command; evaluate(out=...) and `xai-bench run` write
the same run directory."""

import inspect
import shlex
from dataclasses import fields

import pytest
from click.testing import CliRunner

import xai_bench
from xai_bench.cli import main
from xai_bench.cli.run import run as run_command
from xai_bench.outputs.report import reproduce_command
from xai_bench.run.config import RunConfig, run_options
from xai_bench.run.names import split_names
from xai_bench.run.runner import Runner, RunError

SMALL = dict(models=["vit_nano"], methods=["uniform"], metrics=["deletion"], n_images=2,
             batch_size=2)


def test_an_unknown_precision_is_a_usage_error():
    with pytest.raises(RunError, match="unknown precision 'fp8'.*fp32, bf16"):
        Runner(RunConfig(precision="fp8", out=None, **SMALL), progress=False)
    result = CliRunner().invoke(main, ["run", "--precision", "fp8"])
    assert result.exit_code == 2 and "fp8" in result.output


def test_the_default_options_keep_the_run_name_and_others_change_it():
    default = RunConfig(**SMALL)
    assert "precision" not in default.spec() and "compile" not in default.spec()
    assert RunConfig(precision="fp32", compile=False, **SMALL).run_name() == default.run_name()
    assert RunConfig(precision="bf16", **SMALL).run_name() != default.run_name()
    assert RunConfig(compile=True, **SMALL).run_name() != default.run_name()


@pytest.mark.usefixtures("one_thread")
def test_switching_precision_recomputes_the_cells_and_says_why(tmp_path):
    lines = []
    Runner(RunConfig(out=str(tmp_path), name="r", **SMALL), progress=False,
           log=lines.append).run()
    lines.clear()
    runner = Runner(RunConfig(out=str(tmp_path), name="r", precision="bf16", **SMALL),
                    progress=False, log=lines.append)
    info = runner.run()
    assert runner.computed == ["vit_nano__uniform__deletion"]
    assert any("stale" in line and "precision" in line for line in lines), lines
    assert info["config"]["precision"] == "bf16"
    command, _ = reproduce_command(info)
    assert "--precision bf16" in command


# ---- one source for every run option ------------------------------------------------------

#: evaluate's keywords that are not run options: how the run is shown and what it writes
NOT_OPTIONS = {"plots", "report", "progress", "log", "before_run"}


def test_evaluate_takes_every_run_option_with_the_fields_default():
    from xai_bench.api import evaluate

    parameters = inspect.signature(evaluate).parameters
    assert set(parameters) - NOT_OPTIONS == set(RunConfig.option_names())
    default = RunConfig()
    for f in fields(RunConfig):
        given = RunConfig.from_options(**{f.name: parameters[f.name].default})
        assert getattr(given, f.name) == getattr(default, f.name), f.name
    with pytest.raises(TypeError, match="unknown run option"):
        RunConfig.from_options(n_grid=3)


def test_the_run_command_has_one_option_per_field_with_its_flag_default_and_help():
    params = {p.name: p for p in run_command.params}
    for name, how, default in run_options():
        option = params.pop(name)
        assert tuple(option.opts) == how.flags and option.help == how.help
        if how.kind == "names":
            default = ",".join(default)
        if how.kind in ("pairs", "dotted"):
            assert option.multiple
        elif how.kind == "flag":
            assert option.is_flag and default is False
        else:
            assert option.default == default, name
    assert set(params) == {"processes", "no_plots", "no_progress", "quiet", "verbose"}


def test_the_reproduce_command_reads_back_as_the_same_configuration():
    config = RunConfig(models=["vit_nano"], methods=["uniform", "ixg"],
                       metrics=["grid_pointing_game"], checkpoints={"vit_nano": "/x y/v.pt"},
                       replicates=1, n_grids=3, n_images=5, batch_size=4, device="cpu",
                       seed=7, out="/tmp/some where", name="r", untrained=True,
                       train_epochs=2, precision="bf16", compile=True,
                       method_params={"intgrad": {"n_steps": 20, "flag": False,
                                                  "sizes": (16, 32), "none": None}},
                       metric_params={"grid_pointing_game": {"confidence_threshold": 0.0}})
    info = {"config": {**config.spec(), "batch_size": 4, "device": "cpu",
                       "out": config.out, "name": "r"}}
    command, caveats = reproduce_command(info)
    assert caveats == []
    args = shlex.split(command.replace("\\\n", " "))
    assert args[:2] == ["xai-bench", "run"]
    with run_command.make_context("run", args[2:]) as ctx:
        parsed = ctx.params
    from xai_bench.cli.run import from_command_line

    given = {name: from_command_line(how, parsed[name]) for name, how, _ in run_options()}
    again = RunConfig.from_options(**given)
    # the command line gives names comma-separated, as one string the run splits
    assert again.methods == ["uniform,ixg"]
    again.methods = split_names(again.methods)
    assert again.spec() == config.spec()
    assert (again.batch_size, again.device, again.out, again.name) == (4, "cpu", config.out, "r")


@pytest.mark.usefixtures("one_thread")
def test_evaluate_and_the_cli_write_the_same_run_directory(tmp_path):
    options = dict(models=["vit_nano"], untrained=True, methods=["uniform", "ixg"],
                   metrics=["deletion"], n_grids=2, n_images=4, batch_size=4)
    results = xai_bench.evaluate(out=tmp_path / "api", name="r", **options)
    cli = CliRunner().invoke(main, [
        "run", "--models", "vit_nano", "--untrained", "--methods", "uniform,ixg", "--metric",
        "deletion", "--n-grids", "2", "--n-images", "4", "--batch-size", "4",
        "--out", str(tmp_path / "cli"), "--name", "r", "--no-progress"])
    assert cli.exit_code == 0, cli.output

    def files(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    api_dir, cli_dir = tmp_path / "api" / "r", tmp_path / "cli" / "r"
    assert files(api_dir) == files(cli_dir)
    assert {"report.html", "plots/fig6.png", "records.csv", "run.json"} <= set(files(api_dir))
    assert (api_dir / "records.csv").read_text() == (cli_dir / "records.csv").read_text()
    assert results.outputs["report"] == api_dir / "report.html"
    assert f"report:  {cli_dir / 'report.html'}" in cli.output
    # switched off: neither figures nor report (--no-plots is both)
    bare = xai_bench.evaluate(out=tmp_path / "bare", name="r", plots=False, report=False,
                              **options)
    assert bare.outputs == {}
    assert not (tmp_path / "bare" / "r" / "plots").exists()
    assert not (tmp_path / "bare" / "r" / "report.html").exists()
