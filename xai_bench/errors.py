"""The project's own error classes.

An :class:`XaiBenchError` is an anticipated problem with what the user asked for or with the
environment (an unknown name, a bad number, a corrupt checkpoint, an unwritable output
directory). Its message is one line that names the problem and the fix. The command line maps
these, and only these, to a one-line ``Error: ...`` with exit code 2; every other exception is
a bug and keeps its traceback (exit code 1).

The classes below that also derive from a builtin (``ValueError``, ``OSError``) do so for
callers that catch the builtin; new code should catch :class:`XaiBenchError`.
"""

from __future__ import annotations

__all__ = ["XaiBenchError", "ConfigError", "OutputError", "ContractError", "Interrupted",
           "TrainingError", "NotApplicable", "RegistryError", "UnknownNameError", "one_line"]


class XaiBenchError(Exception):
    """Base of the anticipated errors; the message is a single line."""

    def __str__(self):
        return one_line(super().__str__())


class ConfigError(XaiBenchError, ValueError):
    """A configuration value (option, parameter, spec) is invalid."""


class OutputError(XaiBenchError, OSError):
    """Results cannot be written (unwritable or full output location, a file in the way)."""


class ContractError(XaiBenchError, TypeError):
    """A model, method or metric does not provide what its contract
    (:mod:`xai_bench.contracts`) requires."""


class Interrupted(XaiBenchError):
    """The run was stopped by SIGINT or SIGTERM; finished work is kept."""


class TrainingError(XaiBenchError, FloatingPointError):
    """Training cannot go on (the loss diverged); the message says what to change."""


class RegistryError(XaiBenchError):
    """A registry lookup or plugin load failed (:mod:`xai_bench.registry`); the message is a
    single line."""


class UnknownNameError(RegistryError, KeyError):
    """No registry entry matches the requested name (also a ``KeyError`` for dict-like
    callers)."""

    def __str__(self):
        # KeyError.__str__ would repr() the message, adding quotes around it.
        return one_line(self.args[0]) if self.args else ""


def unknown_library_name(name: str, names: list, *, what: str, prefix: str,
                         library: str) -> UnknownNameError:
    """The error for ``<prefix>:<name>`` naming nothing in a wrapped library (captum,
    Quantus): up to three close names (case-insensitive as a fallback) as suggestions, else
    every name ``library`` (its name and version) offers."""
    import difflib

    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or \
        difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.5)
    close = [next(n for n in names if n.lower() == c.lower()) for c in close]
    if close:
        hint = " or ".join(f"'{prefix}:{c}'" for c in close)
        return UnknownNameError(f"unknown {what} '{name}' — did you mean {hint}?")
    return UnknownNameError(f"unknown {what} '{name}'; {library} offers {', '.join(names)}")


class NotApplicable(ValueError):
    """A method or metric cannot be computed for this model or data set (a B-cos method on a
    conventional model, mask localisation without masks): its cells are recorded as
    ``skipped`` with the message, not as errors."""


def one_line(text) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(str(text).split())
