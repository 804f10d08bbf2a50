"""How a run's methods and metrics are shown, from what they declare (their cards) alone.

One :class:`Presentation` per run (``Presentation.of_run(info)``; run.json's
``declarations``, else the registry's): every figure, table, the report and the terminal ask
it for a method's colour, label and place, and a metric's label, unit, direction and chance
level. Nothing here is keyed by a built-in name, so a plugin method or metric is drawn exactly
like a built-in one: its declared colour (or a colour derived from its name, the same in every
run), its declared place (or after the built-ins, by name), its metric's declared axis label,
unit and direction.
"""

from __future__ import annotations

import zlib

from xai_bench.contracts.cards import Cards

__all__ = ["Presentation", "DAGGER", "AGNOSTIC_NOTE", "BASELINE_HATCH", "PALETTE"]

DAGGER = "†"
AGNOSTIC_NOTE = "† class-agnostic: the map does not depend on the explained class"
BASELINE_HATCH = "///"
#: colours for methods that declare none, picked by a checksum of the name (Tol's and
#: Okabe–Ito's colour-blind-safe colours; no grey, which is for baselines)
PALETTE = ("#117733", "#88CCEE", "#AA4499", "#DDCC77", "#44AA99", "#661100", "#6699CC",
           "#000000")
#: the grey of a baseline that declares no colour
BASELINE_GREY = "#808080"
#: where an entry that declares no place goes: after every built-in (places 0–99 for methods
#: and metrics, 100+ for baselines)
_UNPLACED = 1000.0


class Presentation:
    """Colours, labels and order of one run's methods and metrics (see the module doc)."""

    def __init__(self, cards: Cards | None = None):
        self.cards = cards or Cards()

    @classmethod
    def of_run(cls, info: dict | None) -> "Presentation":
        return cls(Cards.of_run(info))

    # ---- methods -----------------------------------------------------------------------
    def is_baseline(self, method) -> bool:
        return self.cards.method(method).is_baseline

    def is_class_agnostic(self, method) -> bool:
        return self.cards.method(method).class_agnostic

    def method_colour(self, method) -> str:
        """The one colour of ``method`` in every figure (``"#rrggbb"``): its declared colour,
        else a grey for a baseline, else a palette colour chosen by a checksum of its name."""
        card = self.cards.method(method)
        if card.colour:
            return card.colour
        if card.is_baseline:
            return BASELINE_GREY
        return PALETTE[zlib.crc32(str(method).encode("utf-8")) % len(PALETTE)]

    def method_label(self, method, *, dagger: bool = True) -> str:
        """Its declared label (else its name), with "†" when it is class-agnostic."""
        card = self.cards.method(method)
        text = card.label or str(method)
        return text + (DAGGER if dagger and card.class_agnostic else "")

    def order_methods(self, names) -> list:
        """Methods by declared place (undeclared: after the built-ins, by name), baselines
        last."""
        names = list(dict.fromkeys(str(n) for n in names))

        def key(name):
            card = self.cards.method(name)
            place = card.place if card.place is not None else _UNPLACED
            return (card.is_baseline, place, name)

        return sorted(names, key=key)

    # ---- metrics -----------------------------------------------------------------------
    def metric_label(self, metric) -> str:
        """The quantity on a figure's axis: the declared label, else the name."""
        return self.cards.metric(metric).label or str(metric)

    def metric_unit(self, metric) -> str:
        """What one sample of the metric is (``images``, ``grid cells``, …)."""
        return self.cards.metric(metric).unit

    def metric_chance(self, metric) -> float | None:
        """The declared score of an uninformative map (``None``: not declared)."""
        chance = self.cards.metric(metric).chance
        return None if chance is None else float(chance)

    def higher_is_better(self, metric) -> bool:
        return self.cards.metric(metric).higher_is_better

    def category(self, metric) -> str:
        return self.cards.metric(metric).category

    def description(self, metric) -> str:
        return self.cards.metric(metric).description

    def direction(self, metric, *, arrow: bool = True) -> str:
        hib = self.higher_is_better(metric)
        text = "higher is better" if hib else "lower is better"
        return text + ((" ↑" if hib else " ↓") if arrow else "")

    def order_metrics(self, names) -> list:
        names = list(dict.fromkeys(str(n) for n in names))

        def key(name):
            place = self.cards.metric(name).place
            return (place if place is not None else _UNPLACED, name)

        return sorted(names, key=key)

    def title(self, metric) -> str:
        """A figure panel's title: the name, its declared category and direction."""
        category = self.category(metric)
        return f"{metric}" + (f" ({category})" if category else "") + \
            f"\n{self.direction(metric)}"

    def metrics_of_category(self, names, category: str) -> list:
        return [n for n in self.order_metrics(names) if self.category(n) == category]
