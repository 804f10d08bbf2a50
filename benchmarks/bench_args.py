"""Argument checks the benchmark scripts share, so that a bad argument ends them like the CLI:
one line ``Error: ...`` on stderr and exit code 2, before any model is built or trained and
before any file is written. The checks are xai-bench's own (the run options through
:func:`xai_bench.run.resolve.resolve_run`, data-set specs through :func:`xai_bench.data
.get_dataset`, output locations through :func:`xai_bench.training.save.check_output_file`)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from xai_bench.errors import OutputError, XaiBenchError, one_line

__all__ = ["OneLineParser", "at_least", "refuse", "one_line_errors", "check_run_options",
           "check_output_dir", "check_output_path"]


def refuse(message) -> int:
    """Print ``message`` as the one ``Error:`` line; the exit code of a refusal (2)."""
    print(f"Error: {one_line(message)}", file=sys.stderr)
    return 2


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors (an unknown option, ``--n-grids abc``) as one line."""

    def error(self, message):
        raise SystemExit(refuse(f"{message}; see {self.prog} --help"))


def at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def one_line_errors(main):
    """``main(argv)`` with an :class:`~xai_bench.errors.XaiBenchError` as the one-line exit 2."""
    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except XaiBenchError as e:
            return refuse(e)
    return wrapped


def check_run_options(**options) -> None:
    """Check run options (:class:`xai_bench.run.config.RunConfig`'s keywords: models,
    methods, metrics, dataset, n_grids, ...) as ``xai-bench run`` does, loading only the
    data set's test split; nothing is trained (the models count as untrained here)."""
    from xai_bench.data import get_dataset
    from xai_bench.run.config import RunConfig
    from xai_bench.run.resolve import resolve_run

    config = RunConfig.from_options(untrained=True, **options)
    resolve_run(config, lambda: get_dataset(config.dataset, "test"))


def check_output_path(path, option: str) -> Path:
    """A file can be written at ``path`` (nothing is created)."""
    from xai_bench.training.save import check_output_file

    try:
        return check_output_file(path)
    except OutputError as e:
        raise OutputError(f"{option}: {e}") from None


def check_output_dir(path, option: str) -> Path:
    """Files can be written in the directory ``path`` (made later; nothing is created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file; give a directory")
    try:
        check_output_path(path / "probe", option)
    except OutputError as e:  # name the directory, not the probe's name in it
        raise OutputError(str(e).replace(str(path / "probe"), str(path))) from None
    return path
