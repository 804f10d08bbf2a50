"""How a contract is written down: one :class:`Member` per thing the harness may ask of an
object, with its default where it is optional, and the Markdown table the docs embed."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Member", "REQUIRED", "members_table", "missing_members", "callable_parameters",
           "declared_values", "entry_name", "first_doc_line", "declare", "DECLARED"]

#: the attribute the declaring decorators set to the entry's kind ("method", "metric"): the
#: marker by which the registry finds the built-in entries
DECLARED = "__xai_bench_entry__"


class _Required:
    def __repr__(self):
        return "required"


#: the default of a member (or parameter) that has none
REQUIRED = _Required()


@dataclass(frozen=True)
class Member:
    """One member of a contract: its name, whether it is called, its default (``REQUIRED``
    when there is none) and one line of documentation."""

    name: str
    callable: bool
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def members_table(members) -> str:
    """A Markdown table of contract members (the docs embed these tables; a test checks
    that they are current)."""
    lines = ["| member | required | default | what |", "|---|---|---|---|"]
    for m in members:
        name = f"`{m.name}()`" if m.callable and m.name != "__call__" else f"`{m.name}`"
        default = "" if m.required else f"{m.default!r}".replace("'", "`") \
            if not isinstance(m.default, str) else f"`{m.default}`"
        lines.append(f"| {name} | {'yes' if m.required else 'no'} | {default} | {m.doc} |")
    return "\n".join(lines)


def missing_members(obj, members) -> list[str]:
    """The required members of ``members`` that ``obj`` lacks (``name()`` for callables)."""
    missing = []
    for m in members:
        if not m.required:
            continue
        if m.name in ("forward", "__call__"):
            ok = callable(obj)
        else:
            ok = hasattr(obj, m.name) and (not m.callable or callable(getattr(obj, m.name)))
        if not ok:
            missing.append(f"{m.name}()" if m.callable else m.name)
    return missing


def callable_parameters(fn: Callable, skip: int = 0) -> dict:
    """Keyword parameters of ``fn`` with their defaults (``REQUIRED`` for none), after the
    first ``skip`` positional ones; ``*args``/``**kwargs`` are left out."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return {}
    out = {}
    for p in params[skip:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = REQUIRED if p.default is p.empty else p.default
    return out


def first_doc_line(obj) -> str:
    """The first line of the docstring of ``obj`` (of its class for an instance)."""
    target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    lines = (inspect.getdoc(target) or "").strip().splitlines()
    return lines[0] if lines else ""


def entry_name(obj, name: str | None, base_default: str) -> str:
    """The name an entry is registered and shown under: ``name`` if given, else a class's own
    ``name`` attribute (unless it is the base class's ``base_default``), else ``__name__``."""
    if name:
        return name
    own = getattr(obj, "name", None)
    if isinstance(own, str) and own and own != base_default:
        return own
    return getattr(obj, "__name__", None) or type(obj).__name__


def declared_values(target, fields) -> dict:
    """The declarations ``target`` (class, function or instance) carries among ``fields``:
    its non-callable, non-None attributes of those names."""
    values = {}
    for key in fields:
        value = getattr(target, key, None)
        if value is not None and not callable(value):
            values[key] = value
    if not values.get("description"):
        values["description"] = first_doc_line(target)
    return values


def declare(obj, kind: str, name: str | None, values: dict, check):
    """What the ``@method`` / ``@metric`` decorators do to ``obj`` (a class or a function):
    resolve its name (``entry_name``; a function's ``__name__``), ``check(name)`` the declared
    values, complete the description (given, else a class's own ``description``, else the
    first docstring line), set every value as an attribute and mark it as a ``kind`` entry."""
    own = entry_name(obj, name, kind) if inspect.isclass(obj) else name or obj.__name__
    check(own)
    own_description = getattr(obj, "description", "") if inspect.isclass(obj) else ""
    values = {**values, "description": values.get("description") or own_description
              or first_doc_line(obj)}
    obj.name = own
    for key, value in values.items():
        setattr(obj, key, value)
    setattr(obj, DECLARED, kind)
    return obj
