"""What every command shares: the exit codes, the one-line usage error, the mapping of the
project's errors onto it, and the reading of ``KEY=VALUE`` options (the value grammar is
:func:`xai_bench.run.config.parse_value`).

Exit codes of ``xai-bench run`` (and the other commands where they apply):

===  ====================================================================================
0    done: every (model, metric) has a result and no record is an error
1    :data:`EXIT_INCOMPLETE`: the run finished and wrote all its files, but a record is an
     error or some (model, metric) has no ok cell; the reasons are printed, one line each,
     and are in the status / message columns of records.csv
2    :data:`EXIT_USAGE`: bad input, refused before any work (one line says what to fix)
130  interrupted (SIGINT; 143: SIGTERM); committed cells are kept, rerun to resume
===  ===================================================================================="""

from __future__ import annotations

import functools
import sys

import click

from xai_bench.run.config import parse_value

__all__ = ["EXIT_USAGE", "EXIT_INCOMPLETE", "UsageError", "friendly_errors", "parse_key_values", "dotted_params"]

EXIT_USAGE = 2
#: the run finished, but not every (model, metric) has a result, or a record is an error
EXIT_INCOMPLETE = 1


class UsageError(click.ClickException):
    exit_code = EXIT_USAGE


def friendly_errors(fn):
    """The project's own errors (:class:`~xai_bench.errors.XaiBenchError`) become a one-line
    usage error (exit 2); an interrupted run ends with its one line and 128 + the signal
    number. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from xai_bench.errors import Interrupted, XaiBenchError
        from xai_bench.run.interrupts import SIGNAL_EXIT_CODES, Terminated, terminate_as_interrupt

        try:
            with terminate_as_interrupt():
                return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Interrupted as e:
            click.echo(str(e), err=True)
            sys.exit(SIGNAL_EXIT_CODES.get(getattr(e, "signal_name", "SIGINT"), 130))
        except XaiBenchError as e:
            raise UsageError(str(e)) from None
        except KeyboardInterrupt as e:
            click.echo("interrupted", err=True)
            sys.exit(SIGNAL_EXIT_CODES["SIGTERM" if isinstance(e, Terminated) else "SIGINT"])

    return wrapper


def parse_key_values(items, what="--model-arg", parse: bool = True) -> dict:
    """``key=value`` strings -> dict with int/float/bool/None/tuple/str values (strings only
    with ``parse=False``). A key given twice with different values is refused (the last would
    win silently)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} expects key=value, got '{item}'")
        _refuse_second_value(out, key.strip(), value.strip(), what)
        out[key.strip()] = parse_value(value.strip()) if parse else value.strip()
    return out


def _refuse_second_value(given: dict, key: str, value: str, option: str,
                         label: str | None = None) -> None:
    """``key`` may be repeated only with the value it already has."""
    if key in given and str(given[key]) != value and given[key] != parse_value(value):
        raise UsageError(f"{option} {label or key} given twice, as '{given[key]}' and "
                         f"'{value}': pass it once (the last would win silently)")


def dotted_params(items, option: str, owner: str, example: str) -> dict:
    """``OWNER.KEY=VALUE`` strings -> ``{owner: {key: value}}`` (values as
    :func:`~xai_bench.run.config.parse_value`)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not name or not param:
            raise UsageError(f"{option} expects {owner}.KEY=VALUE (e.g. {example}), got '{item}'")
        params = out.setdefault(name, {})
        _refuse_second_value(params, param.strip(), value.strip(), option,
                             f"{name}.{param.strip()}")
        params[param.strip()] = parse_value(value.strip())
    return out
