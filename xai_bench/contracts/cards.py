"""The cards of the methods and metrics a run names: what run.json recorded
(``declarations``), else what the registry declares now (a run written before declarations
were recorded), else the defaults (a name nothing declares, e.g. a function passed to
``evaluate``). Figures, tables, the report and the claims look entries up here, so a plugin is
drawn exactly like a built-in one."""

from __future__ import annotations

from xai_bench.contracts.method import MethodCard
from xai_bench.contracts.metric import MetricCard

__all__ = ["method_cards", "metric_cards", "Cards"]


def _registered(kind: str, name: str):
    from xai_bench.registry import METHODS, METRICS, RegistryError

    registry = METHODS if kind == "method" else METRICS
    try:
        return registry.card(name) if name in registry else None
    except RegistryError:  # a plugin that fails to load: its defaults
        return None


def _cards(kind: str, card_class, names, declared: dict | None) -> dict:
    declared = declared or {}
    out = {}
    for name in dict.fromkeys(str(n) for n in names):
        if isinstance(declared.get(name), dict):
            out[name] = card_class.from_dict({**declared[name], "name": name})
        else:
            out[name] = _registered(kind, name) or card_class(name)
    return out


def method_cards(names, declared: dict | None = None) -> dict:
    """``{name: MethodCard}`` for ``names``; ``declared``: run.json's
    ``declarations["methods"]``."""
    return _cards("method", MethodCard, names, declared)


def metric_cards(names, declared: dict | None = None) -> dict:
    """``{name: MetricCard}`` for ``names``; ``declared``: run.json's
    ``declarations["metrics"]``."""
    return _cards("metric", MetricCard, names, declared)


class Cards:
    """Lazy lookup of the cards of one run: ``cards.method(name)``, ``cards.metric(name)``
    (a name met for the first time is looked up then)."""

    def __init__(self, declarations: dict | None = None):
        declarations = declarations if isinstance(declarations, dict) else {}
        self._declared = {"method": declarations.get("methods") or {},
                          "metric": declarations.get("metrics") or {}}
        self._methods: dict = {}
        self._metrics: dict = {}

    @classmethod
    def of_run(cls, info: dict | None) -> "Cards":
        """The cards of a run from its run.json content."""
        return cls((info or {}).get("declarations"))

    def method(self, name) -> MethodCard:
        name = str(name)
        if name not in self._methods:
            self._methods.update(method_cards([name], self._declared["method"]))
        return self._methods[name]

    def metric(self, name) -> MetricCard:
        name = str(name)
        if name not in self._metrics:
            self._metrics.update(metric_cards([name], self._declared["metric"]))
        return self._metrics[name]
