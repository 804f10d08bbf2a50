"""Parameters of registered entries: what a method or metric takes, checked before any work.

A registry entry is either a **class** (constructed with its parameters, e.g.
``IntegratedGradients(n_steps=20)``), a **function** that is itself the method
(``f(model, x, targets, *, power=1.0)``: its keyword parameters after the first three are the
method's parameters, bound with :func:`functools.partial`), or an **object** that is already a
method (takes no parameters). :func:`resolve_parameters` returns the complete parameter dict
after defaults, which is what results record and what identifies a cell; unknown keys, missing
required ones and values of the wrong type are one-line :class:`ConfigError` s with
suggestions.
"""

from __future__ import annotations

import difflib
import functools
import inspect

from xai_bench.errors import ConfigError
from xai_bench.contracts.members import REQUIRED, callable_parameters
from xai_bench.contracts.metric import function_parameters, is_metric_function

__all__ = ["entry_parameters", "resolve_parameters", "build_entry", "is_method_function"]

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
        if not _type_ok(default, value):
            raise ConfigError(f"parameter '{key}' of {kind} '{name}' must be "
                              f"{_type_name(default)} (default {default!r}), got {value!r}")
    missing = [k for k, d in known.items() if d is REQUIRED and k not in given]
    if missing:
        raise ConfigError(f"{kind} '{name}' needs the parameter(s) {', '.join(missing)}")
    resolved = {k: d for k, d in known.items() if d is not REQUIRED}
    resolved.update(given)
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
