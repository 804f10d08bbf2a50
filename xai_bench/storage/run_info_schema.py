"""The fields of ``run.json`` that ``xai-bench plot`` and ``xai-bench report`` read, with their
types: :func:`run_info_problem` names the first field of the wrong type, so that an edited or
damaged run.json is a one-line error instead of a traceback somewhere in a figure.

Every field is optional (an older run may lack it); a field that is present must have its
type. ``None`` is accepted where the writer records "unknown" (a model's accuracy, a metric's
chance level)."""

from __future__ import annotations

import re

__all__ = ["run_info_problem"]

_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# checks by name: (test, what the value must be)
DICT = (lambda v: isinstance(v, dict), "an object {...}")
TEXT = (lambda v: isinstance(v, str), "a string")
TEXT_OR_NONE = (lambda v: v is None or isinstance(v, str), "a string or null")
TEXTS = (_is_text_list, "a list of strings")
INT = (_is_int, "an integer")
NUMBER = (_is_number, "a number")
NUMBER_OR_NONE = (lambda v: v is None or _is_number(v), "a number or null")
BOOL = (lambda v: isinstance(v, bool), "true or false")
COLOUR = (lambda v: v is None or (isinstance(v, str) and bool(_COLOUR.match(v))),
          "'#rrggbb' or null")
LIST_OR_TEXT = (lambda v: isinstance(v, str) or _is_text_list(v), "a string or list of strings")

#: top-level fields: their check
TOP = {"config": DICT, "method_params": DICT, "metric_params": DICT, "plugins": DICT,
       "declarations": DICT, "seeds": DICT, "models": DICT, "dataset": DICT, "timings": DICT,
       "provenance": DICT, "counts": DICT}
#: fields inside a top-level object: ``{object: {field: check}}``
NESTED = {
    "config": {"models": LIST_OR_TEXT, "methods": LIST_OR_TEXT, "metrics": LIST_OR_TEXT,
               "dataset": TEXT, "seed": INT, "n_images": INT, "n_grids": INT},
    "dataset": {"name": TEXT, "classes": TEXTS},
    "seeds": {"seed": INT},
    "provenance": {"timestamp_utc": TEXT_OR_NONE},
    "timings": {"cells": DICT},
    "declarations": {"methods": DICT, "metrics": DICT},
}
#: every value of these objects: ``{object: check}``
#: (``plugins`` and ``provenance`` values are shown as they are, whatever their JSON type)
VALUES = {"method_params": DICT, "metric_params": DICT, "models": DICT, "counts": INT}
#: a declared method's and metric's card fields (:mod:`xai_bench.contracts`)
METHOD_CARD = {"name": TEXT, "kind": TEXT, "class_agnostic": BOOL, "cost": NUMBER,
               "requires": TEXTS, "label": TEXT, "place": NUMBER_OR_NONE, "colour": COLOUR,
               "description": TEXT}
METRIC_CARD = {"name": TEXT, "category": TEXT, "higher_is_better": BOOL, "label": TEXT,
               "unit": TEXT, "chance": NUMBER_OR_NONE, "place": NUMBER_OR_NONE,
               "description": TEXT, "needs_maps": BOOL, "needs_masks": BOOL, "reexplains": BOOL,
               "second_model": BOOL, "function": BOOL}
#: a model's entry in ``models``
MODEL = {"family": TEXT_OR_NONE, "parameters": NUMBER_OR_NONE, "test_accuracy": NUMBER_OR_NONE,
         "checkpoint": TEXT_OR_NONE, "untrained": BOOL, "replicate": INT,
         "recipe_name": TEXT_OR_NONE, "trained_on": TEXT_OR_NONE}


def _field_problem(where: str, value, check) -> str | None:
    test, what = check
    return None if test(value) else f"'{where}' must be {what}, got {value!r:.60}"


def _fields_problem(prefix: str, obj: dict, checks: dict) -> str | None:
    for key, check in checks.items():
        if key in obj:
            problem = _field_problem(f"{prefix}.{key}" if prefix else key, obj[key], check)
            if problem:
                return problem
    return None


def _entries_problem(prefix: str, entries: dict, check, fields: dict | None = None):
    """Every value of ``entries`` passes ``check`` (and, if a dict, its ``fields``)."""
    for name, value in entries.items():
        problem = _field_problem(f"{prefix}.{name}", value, check)
        if problem is None and fields and isinstance(value, dict):
            problem = _fields_problem(f"{prefix}.{name}", value, fields)
        if problem:
            return problem
    return None


def run_info_problem(info: dict) -> str | None:
    """The first field of run.json content ``info`` whose type the outputs cannot use (a
    phrase naming it, its required type and its value), else None."""
    checks = [lambda: _fields_problem("", info, TOP)]
    # (default arguments bind each loop's values: a plain closure would see the last ones)
    checks += [lambda key=key, fields=fields: _fields_problem(key, info.get(key) or {}, fields)
               for key, fields in NESTED.items()]
    checks += [lambda key=key, check=check: _entries_problem(
                   key, info.get(key) or {}, check, MODEL if key == "models" else None)
               for key, check in VALUES.items()]
    declarations = info.get("declarations") or {}
    checks += [lambda: _entries_problem("declarations.methods",
                                        declarations.get("methods") or {}, DICT, METHOD_CARD),
               lambda: _entries_problem("declarations.metrics",
                                        declarations.get("metrics") or {}, DICT, METRIC_CARD),
               lambda: _entries_problem("timings.cells",
                                        (info.get("timings") or {}).get("cells") or {}, DICT)]
    for check in checks:  # in order: a nested check assumes its parent's type was right
        problem = check()
        if problem:
            return problem
    return None
