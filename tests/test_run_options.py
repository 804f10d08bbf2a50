"""The forward options of a run (--precision, --compile): validated, part of the run's name
and of every cell's identity, recorded, and rebuilt into the reproduce command."""

import pytest
from click.testing import CliRunner

from xai_bench.cli import main
from xai_bench.outputs.report import reproduce_command
from xai_bench.run.runner import RunConfig, Runner, RunError

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
