"""Parameters of registered entries: what a method or metric takes, checked before any work.

A registry entry is either a **class** (constructed with its parameters, e.g.
``IntegratedGradients(n_steps=20)``), a **function** that is itself the method
(``f(model, x, targets, *, power=1.0)``: its keyword parameters after the first three are the
method's parameters, bound with :func:`functools.partial`), or an **object** that is already a
method (takes no parameters). :func:`resolve_parameters` returns the complete parameter dict
after defaults, which is what results record and what identifies a cell; unknown keys, missing
required ones and values of the wrong type are one-line :class:`ConfigError` s with
suggestions.

A class or function may declare the valid values of its parameters next to them, as
``PARAMETER_CHECKS = {"blur_kernel": odd_integer(1, 255), ...}`` (the helpers below), so that a
value out of range (``fractions=0,nan``, ``blur_kernel=100001``) is refused with one line
before any work instead of failing inside a cell or changing the measurement silently.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Callable

from xai_bench.errors import ConfigError
from xai_bench.contracts.members import REQUIRED, callable_parameters
from xai_bench.contracts.metric import function_parameters, is_metric_function

__all__ = ["entry_parameters", "resolve_parameters", "build_entry", "is_method_function",
           "Valid", "integer", "number", "odd_integer", "one_of", "or_none", "or_literal",
           "fractions_0_to_1", "check_parameter_values"]

#: the positional call arguments of a method function
_METHOD_CALL_ARGS = 3


def is_method_function(entry) -> bool:
    """A plain function (or other non-class callable without ``__call__`` semantics of its own)
    registered as a method: it is called as ``f(model, x, targets)``."""
    return inspect.isfunction(entry) or isinstance(entry, functools.partial)


def entry_parameters(entry, kind: str = "method") -> dict:
    """``{name: default}`` (``REQUIRED`` where there is none) of a registry entry."""
    if inspect.isclass(entry):
        return callable_parameters(entry.__init__, skip=1)
    if kind == "method" and is_method_function(entry):
        return callable_parameters(entry, skip=_METHOD_CALL_ARGS)
    if kind == "metric" and is_metric_function(entry):
        return function_parameters(entry)
    if kind != "method" and callable(entry):  # builder functions of models and metrics
        return callable_parameters(entry)
    return {}  # a ready-made method object


# ---- declared valid values ----------------------------------------------------------------

@dataclass(frozen=True)
class Valid:
    """The valid values of one parameter: ``test(value) -> bool``, and ``wants``, what the
    error message says the value must be."""

    wants: str
    test: Callable

    def __call__(self, value) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError, OverflowError):
            return False


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _bounds_text(low, high) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f">= {low}"
    return f"<= {high}" if low is None else f"in {low}..{high}"


def integer(low=None, high=None) -> Valid:
    """An integer in ``low..high`` (either bound may be left open)."""
    return Valid(f"an integer {_bounds_text(low, high)}".rstrip(),
                 lambda v: _is_int(v) and (low is None or v >= low)
                 and (high is None or v <= high))


def odd_integer(low, high) -> Valid:
    """An odd integer in ``low..high`` (a kernel with a centre pixel)."""
    return Valid(f"an odd integer in {low}..{high}",
                 lambda v: _is_int(v) and low <= v <= high and v % 2 == 1)


def number(low=None, high=None, *, above=None, below=None) -> Valid:
    """A finite number with ``low <= v <= high`` and ``above < v < below`` (any may be
    left out)."""
    parts = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
             f"<= {high}" if high is not None else "", f"< {below}" if below is not None else ""]
    wants = " and ".join(p for p in parts if p)
    return Valid(f"a finite number {wants}".rstrip(),
                 lambda v: _is_finite(v) and (low is None or v >= low)
                 and (high is None or v <= high) and (above is None or v > above)
                 and (below is None or v < below))


def boolean() -> Valid:
    return Valid("true or false", lambda v: isinstance(v, bool))


def one_of(*allowed) -> Valid:
    return Valid(f"one of {', '.join(repr(a) for a in allowed)}", lambda v: v in allowed)


def or_none(valid: Valid) -> Valid:
    return Valid(f"{valid.wants} or none", lambda v: v is None or valid(v))


def or_literal(valid: Valid, literal) -> Valid:
    return Valid(f"{valid.wants} or {literal!r}", lambda v: v == literal or valid(v))


def _increasing_fractions(values) -> bool:
    values = list(values)
    return (len(values) >= 2 and all(_is_finite(v) and 0 <= v <= 1 for v in values)
            and values[0] == 0 and all(b > a for a, b in zip(values, values[1:])))


def fractions_0_to_1() -> Valid:
    """At least two finite fractions, starting at 0, strictly increasing, at most 1."""
    return Valid("a comma list of at least two finite fractions that starts at 0, increases "
                 "strictly and stays <= 1", _increasing_fractions)


def declared_checks(entry) -> dict:
    """``{parameter: Valid}`` that ``entry`` (a class, function or object) declares."""
    checks = getattr(entry, "PARAMETER_CHECKS", None)
    return dict(checks) if isinstance(checks, dict) else {}


def check_parameter_values(kind: str, name: str, entry, params: dict) -> None:
    """Every value of ``params`` that ``entry`` declares a check for passes it (else one
    :class:`ConfigError` naming the parameter, what it must be and the value)."""
    for key, valid in declared_checks(entry).items():
        if key in params and params[key] is not REQUIRED and not valid(params[key]):
            value = params[key]
            shown = ",".join(map(repr, value)) if isinstance(value, (list, tuple)) else repr(value)
            raise ConfigError(f"parameter '{key}' of {kind} '{name}' must be {valid.wants}, "
                              f"got {shown}; pass --{kind}-arg {name}.{key}=VALUE with a "
                              f"valid value")


# ---- types and defaults --------------------------------------------------------------------

def _type_ok(default, value) -> bool:
    if default is None or default is REQUIRED:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True


def _type_name(value) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            tuple: "a comma list", list: "a comma list"}.get(type(value), type(value).__name__)


def resolve_parameters(kind: str, name: str, entry, given: dict | None = None) -> dict:
    """All parameters of entry ``name`` after defaults, with ``given`` checked and applied."""
    given = dict(given or {})
    known = entry_parameters(entry, kind)
    checks = declared_checks(entry)
    if given and not known:
        raise ConfigError(f"{kind} '{name}' takes no parameters; remove "
                          f"{', '.join(f'{name}.{k}' for k in given)}")
    for key, value in given.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown parameter '{key}' of {kind} '{name}'{hint} (it takes "
                              f"{', '.join(known)})")
        default = known[key]
        # a declared check governs the values (e.g. an integer or 'auto'); else the default's type
        if key not in checks and not _type_ok(default, value):
            raise ConfigError(f"parameter '{key}' of {kind} '{name}' must be "
                              f"{_type_name(default)} (default {default!r}), got {value!r}")
    missing = [k for k, d in known.items() if d is REQUIRED and k not in given]
    if missing:
        raise ConfigError(f"{kind} '{name}' needs the parameter(s) {', '.join(missing)}")
    resolved = {k: d for k, d in known.items() if d is not REQUIRED}
    resolved.update(given)
    check_parameter_values(kind, name, entry, resolved)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}


def build_entry(kind: str, name: str, entry, given: dict | None = None):
    """``(object, resolved parameters)``: a class constructed with its parameters, a method
    function bound to them, or a ready-made object as it is."""
    params = resolve_parameters(kind, name, entry, given)
    explicit = dict(given or {})
    if inspect.isclass(entry):
        obj = entry(**explicit)
        own = getattr(obj, "params", None)
        if isinstance(own, dict):  # what the object reports wins (it may derive values)
            params = {**params, **own}
        return obj, params
    if kind == "method" and is_method_function(entry):
        obj = functools.partial(entry, **explicit) if explicit else entry
        return obj, params
    return entry, params
