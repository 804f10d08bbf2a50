"""``xai-bench run``: a thin layer over :func:`xai_bench.evaluate`.

Its run options are generated from the fields of :class:`~xai_bench.run.config.RunConfig`
(flag, help, type, default: :func:`config_options`), so that the command line, ``evaluate``'s
keywords and the reproduce command of the report cannot drift apart. The options that are not
part of a run's configuration (``--processes``, ``--no-plots``, ``--no-progress``, ``-q``,
``-v``) are written here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from xai_bench.cli.common import EXIT_INCOMPLETE, dotted_params, friendly_errors, \
    parse_key_values
from xai_bench.run.config import run_options

__all__ = ["run", "config_options", "from_command_line"]


def _click_settings(how, default) -> dict:
    """The keyword arguments of ``click.option`` for one :class:`~xai_bench.run.config.Option`."""
    settings: dict = {"help": how.help}
    if how.kind in ("pairs", "dotted"):
        return {**settings, "multiple": True, "metavar": how.metavar}
    if how.kind == "flag":
        return {**settings, "is_flag": True}
    types = {"int": click.IntRange(min=how.minimum) if how.minimum is not None else int,
             "choice": click.Choice(list(how.choices)),
             "directory": click.Path(file_okay=False)}
    if how.kind in types:
        settings["type"] = types[how.kind]
    if how.kind == "names" and isinstance(default, (list, tuple)):
        default = ",".join(default)  # as typed: the run splits the commas
    settings["default"] = default
    if default is not None:
        settings["show_default"] = True
    return settings


def config_options(command):
    """Decorate ``command`` with one option per run option, in the fields' order (click
    lists the option applied last first, hence reversed)."""
    for name, how, default in reversed(run_options()):
        command = click.option(*how.flags, name, **_click_settings(how, default))(command)
    return command


def from_command_line(how, value):
    """A click value in the form :func:`xai_bench.evaluate` takes."""
    if how.kind == "pairs":
        return parse_key_values(value, how.flag, parse=False)
    if how.kind == "dotted":
        owner = how.metavar.partition(".")[0]
        if how.flag == "--model-arg":  # KEY=VALUE without a model: every model, as in `train`
            value = [v if "." in v.partition("=")[0] else f"*.{v}" for v in value]
        return dotted_params(value, how.flag, owner, how.example)
    return value


@click.command()
@config_options
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="share the work out over this many local processes of one thread each "
              "(torchrun --nproc-per-node; docs/distributed.md)")
@click.option("--no-plots", is_flag=True, help="do not write the figures and the report")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@click.option("-q", "--quiet", is_flag=True, help="print only the paths written (and errors)")
@click.option("-v", "--verbose", is_flag=True, help="end with every method's mean and interval "
              "per metric and model, not only the best")
@friendly_errors
def run(processes, no_plots, no_progress, quiet, verbose, **options):
    """Benchmark models x attribution methods x metrics; resumable.

    Writes records.csv, curves.csv, the statistics tables and run.json under OUT/<run name>/,
    the figures under OUT/<run name>/plots/ and the report OUT/<run name>/report.html (one
    self-contained page). Rerunning the same command skips finished cells.

    \b
    Examples:
      xai-bench run                                   # quick suite on the embedded data
      xai-bench run --metric localisation --methods inherent,rollout,ixg
      xai-bench run --models vit_nano --checkpoint vit_nano=vit.pt --dataset shapes
    """
    from xai_bench.api import evaluate

    def start_processes(runner):
        """--processes N: once the configuration is checked (usage errors exit 2 here, once),
        run the command again as N workers of one thread each and end with their exit code."""
        if processes == 1 or runner.ranks.distributed:  # 1, or already a worker
            return
        from xai_bench.run.distributed import launch_local

        if Path(sys.argv[0]).name not in ("xai-bench", "__main__.py"):
            raise click.UsageError("--processes starts the xai-bench command again; from "
                                   "Python, start your script with torchrun instead")
        sys.exit(launch_local(processes, sys.argv[1:]))

    given = {name: from_command_line(how, options[name]) for name, how, _ in run_options()}
    results = evaluate(**given, plots=not no_plots, report=not no_plots,
                       progress=not (quiet or no_progress), before_run=start_processes,
                       log=None if quiet else click.echo)
    if results is None:  # torchrun: a process other than rank 0, which writes the results
        return
    _say_results(results, quiet, verbose)


def _accuracy_line(label: str, m: dict) -> str:
    """A model's test accuracy, saying where its weights come from, or why it has none."""
    if "error" in m:
        return f"{label}: not benchmarked — {m['error']}"
    accuracy = m.get("test_accuracy")
    if not isinstance(accuracy, (int, float)):
        return f"{label}: test accuracy not measured"
    if m.get("untrained"):
        source = " (random weights: --untrained)"
    elif m.get("shipped"):
        source = " (shipped with xai-bench)"
    else:
        source = ""
    return f"{label}: test accuracy {accuracy:.4f}{source}"


def _say_results(results, quiet, verbose):
    """The models' accuracies, the summary, the paths written, then what the run could not
    answer; exit :data:`~xai_bench.cli.common.EXIT_INCOMPLETE` when a record is an error or a
    (model, metric) has no ok cell (every file is written by then)."""
    from xai_bench.run.outcomes import expected_gaps, problem_lines, problems, unrequested

    info = results.info
    say = (lambda *a, **k: None) if quiet else click.echo
    say("")
    for label, m in info["models"].items():
        say(_accuracy_line(label, m))
    from xai_bench.outputs.terminal import compact_summary, full_summary

    render = full_summary if verbose else compact_summary
    say(render(results.tables, info, results.records))  # the run's own cards and model order
    say("")
    run_dir = results.run_dir
    if "report" in results.outputs:
        click.echo(f"report:  {results.outputs['report']}")
    if "plots" in results.outputs:
        click.echo(f"plots:   {run_dir / 'plots'}")
    click.echo(f"tables:  {run_dir / 'summary.csv'}, {run_dir / 'records.csv'}")
    for line in problem_lines(expected_gaps(results.records)):
        say(f"not run on random weights: {line}")
    failed = False
    missing, notes = unrequested(problems(results.records), results.records,
                                 info["config"].get("metrics"))
    for line in problem_lines(notes):
        say(f"not applicable here (a metric of a group; name it in --metric to require it): "
            f"{line}")
    if missing:
        click.echo(f"no result for {_pairs(missing)} (model, metric) pair(s):", err=True)
        for line in problem_lines(missing):
            click.echo(f"  {line}", err=True)
        click.echo(f"  (the status and message columns of {run_dir / 'records.csv'} have "
                   f"every cell's reason)", err=True)
        failed = True
    errors = info["counts"].get("error", 0)
    if errors:
        click.echo(f"{errors} record(s) are errors; see the message column of records.csv",
                   err=True)
        failed = True
    if failed:
        sys.exit(EXIT_INCOMPLETE)


def _pairs(found) -> int:
    return len({pair for gap in found for pair in gap.pairs})
