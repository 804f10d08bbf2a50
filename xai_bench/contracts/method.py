"""The method contract, and what a method declares about itself.

A method is anything callable as ``method(model, x, targets) -> maps`` with ``x`` the encoded
input ``(B, C, H, W)``, ``targets`` ``(B,)`` and ``maps`` a floating ``(B, H, W)`` tensor: an
:class:`~xai_bench.methods.base.AttributionMethod` subclass, a plain function
``f(model, x, targets, *, param=default)`` or any object with ``__call__``.

Next to its code a method declares what the harness needs to know about it — its
:class:`MethodCard`: kind, whether its map depends on the explained class, the model
capabilities it needs, its cost (for scheduling) and how figures show it (label, place,
colour). Classes declare these as class attributes, functions through the
:func:`method` decorator (which also works on classes)::

    @xai_bench.method(kind="gradient", cost=2.0, colour="#117733")
    def saliency(model, x, targets, *, absolute=True):
        ...

Nothing outside the entry is keyed by its name: figures, tables, the report and the scheduler
read the card (:func:`method_card`).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, replace

from xai_bench.contracts.members import (
    REQUIRED, Member, declare, declared_values, entry_name,
)
from xai_bench.contracts.model import CAPABILITY_MEMBERS, has_capabilities
from xai_bench.errors import ContractError

__all__ = ["MethodCard", "method", "method_card", "METHOD_KINDS", "METHOD_GROUPS", "METHOD_MEMBERS",
           "CheckedMethod", "check_method", "DEFAULT_METHOD_COST"]

#: the kinds a method may declare (a plugin may use another word; "baseline" is special:
#: baselines are drawn grey, set apart, and left out of the claims' best methods)
METHOD_KINDS = ("model-inherent", "gradient", "attention", "lrp", "perturbation", "baseline",
                "other")
#: forward passes per explained image of a method that declares no cost (a gradient method)
DEFAULT_METHOD_COST = 2.5


@dataclass(frozen=True)
class MethodCard:
    """What a method declares. ``cost``: forward passes per explained image (relative cost,
    for scheduling); ``place``: its place in figures and tables (built-ins 0–99; ``None``:
    after them, by name); ``colour``: ``"#rrggbb"`` (``None``: derived from the name, the same
    in every run); ``requires``: model capabilities (``attention``, ``lrp``,
    ``dynamic_linear``) without which the method does not apply."""

    name: str
    kind: str = "other"
    class_agnostic: bool = False
    cost: float = DEFAULT_METHOD_COST
    requires: tuple = ()
    label: str = ""
    place: float | None = None
    colour: str | None = None
    description: str = ""
    groups: tuple = ()

    @property
    def is_baseline(self) -> bool:
        return self.kind == "baseline"

    def in_group(self, word: str) -> bool:
        """Whether ``--methods <word>`` selects this method: its kind or a declared group."""
        return word == self.kind or word in self.groups

    def as_dict(self) -> dict:
        return {**asdict(self), "requires": list(self.requires), "groups": list(self.groups)}

    @classmethod
    def from_dict(cls, data: dict) -> "MethodCard":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in dict(data).items() if k in known}
        values["requires"] = tuple(values.get("requires") or ())
        values["groups"] = tuple(values.get("groups") or ())
        return cls(**values)


_FIELDS = ("kind", "class_agnostic", "cost", "requires", "label", "place", "colour",
           "description", "groups")
#: the groups the built-ins declare (``--methods paper``); a method is also in the group of
#: its kind (``--methods perturbation``), and a plugin may name its own groups
METHOD_GROUPS = {"paper": "the paper's nine methods",
                 "default": "what `xai-bench run` runs without --methods: the paper's methods, "
                            "ViT-CX and the baselines",
                 "captum": "methods computed by captum"}


def _check_card(name, kind, cost, requires, colour, groups=()):
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"method '{name}': kind must be a non-empty string, got {kind!r}")
    if not isinstance(cost, (int, float)) or isinstance(cost, bool) or not cost > 0:
        raise ValueError(f"method '{name}': cost must be a positive number, got {cost!r}")
    unknown = [r for r in requires if r not in CAPABILITY_MEMBERS]
    if unknown:
        raise ValueError(f"method '{name}' requires unknown capabilities {unknown}; known: "
                         f"{', '.join(CAPABILITY_MEMBERS)}")
    if colour is not None and not (isinstance(colour, str) and len(colour) == 7
                                   and colour.startswith("#")):
        raise ValueError(f"method '{name}': colour must be '#rrggbb', got {colour!r}")
    if not all(isinstance(g, str) and g for g in groups):
        raise ValueError(f"method '{name}': groups must be non-empty strings, got {groups!r}")


def method(name: str | None = None, *, kind: str = "other", class_agnostic: bool = False,
           cost: float = DEFAULT_METHOD_COST, requires=(), label: str = "",
           place: float | None = None, colour: str | None = None, description: str = "",
           groups=()):
    """Decorator: declare a method's card on a function ``f(model, x, targets, *, param=...)``
    or a method class. The object is returned unchanged apart from the declaration (a
    function stays a plain function). Register it through the ``xai_bench.methods`` entry
    point group (plugins) or :func:`xai_bench.registry.register_method`."""
    if callable(name) and not isinstance(name, str):  # used bare: @method
        return method()(name)
    requires = (requires,) if isinstance(requires, str) else tuple(requires)
    groups = (groups,) if isinstance(groups, str) else tuple(groups)

    def decorate(obj):
        values = dict(kind=kind, class_agnostic=bool(class_agnostic), cost=float(cost),
                      requires=requires, label=label, place=place, colour=colour,
                      description=description, groups=groups)
        return declare(obj, "method", name, values,
                       lambda own: _check_card(own, kind, cost, requires, colour, groups))

    return decorate


def method_card(obj, name: str | None = None) -> MethodCard:
    """The card of a method (class, function, instance or :class:`CheckedMethod`): its
    declared attributes, with the defaults of :class:`MethodCard` for what it leaves out."""
    if isinstance(obj, CheckedMethod):
        return obj.card if name is None else replace(obj.card, name=name)
    target = obj.func if hasattr(obj, "func") and hasattr(obj, "keywords") else obj  # partial
    values = declared_values(target, _FIELDS)
    for key in ("requires", "groups"):
        if key in values:
            got = values[key]
            values[key] = (got,) if isinstance(got, str) else tuple(got or ())
    card = MethodCard(name=entry_name(target, name, ""), **values)
    if not isinstance(card.kind, str):
        return MethodCard(**{**card.__dict__, "kind": "other"})
    return card


METHOD_MEMBERS = (
    Member("__call__", True, REQUIRED, "method(model, x, targets) -> maps (B, H, W) float"),
    Member("applies_to", True, "from `requires`", "applies_to(model) -> bool"),
    Member("params", False, {}, "parameters, recorded with the results"),
    Member("name", False, "the function's or class's name", "name in tables"),
    Member("kind", False, "other", "'model-inherent', 'gradient', 'attention', 'lrp', "
           "'perturbation', 'baseline' (drawn grey, left out of the claims) or any word"),
    Member("class_agnostic", False, False, "True where the map ignores the target class"),
    Member("requires", False, (), "model capabilities the method needs ('attention', 'lrp', "
           "'dynamic_linear')"),
    Member("cost", False, DEFAULT_METHOD_COST, "forward passes per explained image "
           "(scheduling)"),
    Member("label", False, "its name", "text in figures"),
    Member("place", False, None, "place in figures and tables (None: after the built-ins)"),
    Member("colour", False, None, "'#rrggbb' in every figure (None: derived from the name)"),
    Member("groups", False, (), "groups that --methods can name besides the kind (e.g. "
           "'paper', 'captum', or a plugin's own word)"),
)


class CheckedMethod:
    """A method with every optional member filled in (its :class:`MethodCard`), whose results
    are checked: a tensor of shape ``(B, H, W)``, floating dtype, finite. Violations raise
    :class:`ContractError` (the runner records an ``error`` for that cell)."""

    def __init__(self, method, name: str | None = None, params: dict | None = None):
        if isinstance(method, CheckedMethod):
            method = method.method
        if not callable(method):
            raise ContractError(f"method {name or method_card(method).name!r} is not "
                                f"callable; a method is called as method(model, x, targets) "
                                f"-> maps")
        self.method = method
        self.card = method_card(method, name)
        self.name = self.card.name
        own = getattr(method, "params", None)
        self.params = dict(params if params is not None else own if isinstance(own, dict)
                           else {})

    @property
    def class_agnostic(self) -> bool:
        return self.card.class_agnostic

    @property
    def kind(self) -> str:
        return self.card.kind

    def applies_to(self, model) -> bool:
        test = getattr(self.method, "applies_to", None)
        if callable(test):
            return bool(test(model))
        return has_capabilities(model, self.card.requires)

    def __call__(self, model, x, targets):
        import torch

        maps = self.method(model, x, targets)
        if not isinstance(maps, torch.Tensor):
            raise ContractError(f"method '{self.name}' returned {type(maps).__name__}, not a "
                                f"tensor of shape (B, H, W)")
        expected = (x.shape[0], x.shape[2], x.shape[3])
        if tuple(maps.shape) != expected:
            raise ContractError(f"method '{self.name}' returned maps of shape "
                                f"{tuple(maps.shape)}, expected {expected}")
        if not maps.is_floating_point():
            raise ContractError(f"method '{self.name}' returned {maps.dtype} maps; expected a "
                                f"floating dtype")
        if not torch.isfinite(maps).all():
            raise ContractError(f"method '{self.name}' returned non-finite maps (NaN or inf)")
        return maps.detach()

    def __repr__(self):
        return f"CheckedMethod({self.name!r}, params={self.params!r})"


def check_method(method, name: str | None = None) -> CheckedMethod:
    """Any callable ``method(model, x, targets)`` (function, object, AttributionMethod) as a
    :class:`CheckedMethod`. A class (not an instance) is a :class:`ContractError`: construct it
    first (the registry does this for registered names)."""
    if inspect.isclass(method):
        raise ContractError(f"method {name or method.__name__!r} is a class; pass an instance "
                            f"(e.g. {method.__name__}()) or register the class by name")
    if callable(method) and not isinstance(method, CheckedMethod):
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            try:
                signature.bind(None, None, None)
            except TypeError:
                raise ContractError(f"method {name or method_card(method).name!r} cannot be "
                                    f"called as method(model, x, targets); its signature is "
                                    f"{signature}") from None
    return CheckedMethod(method, name=name)
