"""The metric contract, and what a metric declares about itself.

A metric is an object with ``prepare(model, dataset, ...)`` (model-dependent,
method-independent: select images, build grids) and ``evaluate(model, method, prepared, ...)
-> MetricResult``; a metric whose samples are scored independently also computes in parts:
``samples(prepared)`` (``None``: computed whole), ``requested_samples()``,
``evaluate_part(..., start, stop)`` and ``reduce(...)``. Subclass
:class:`xai_bench.metrics.Metric` / :class:`~xai_bench.metrics.SampleMetric`, or write a plain
function that scores precomputed maps and declare it with :func:`metric`::

    @xai_bench.metric(higher_is_better=True, category="complexity", label="Gini index")
    def gini(model, x, targets, maps, *, eps=1e-12):
        ...                                   # -> scores (B,)

A metric's :class:`MetricCard` — category, direction, label, unit, chance level, whether it
needs maps, masks, re-explanation or a second model — is what figures, tables, the report and
the runner read (:func:`metric_card`); nothing outside the entry is keyed by its name.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

from xai_bench.contracts.members import (
    DECLARED, REQUIRED, Member, callable_parameters, declare, declared_values, entry_name,
    missing_members,
)
from xai_bench.errors import ContractError

__all__ = ["MetricCard", "metric", "metric_card", "is_metric_function", "function_parameters",
           "METRIC_MEMBERS", "METRIC_GROUPS", "METRIC_FUNCTION_ARGS", "CheckedMetric", "check_metric"]

#: the positional arguments of a metric function: f(model, x, targets, maps, *, ...)
METRIC_FUNCTION_ARGS = 4


@dataclass(frozen=True)
class MetricCard:
    """What a metric declares. ``label``: the quantity on a figure's axis (default: the
    name); ``unit``: what one sample is (``images``, ``grid cells``, …); ``chance``: the value
    of an uninformative (uniform) map, drawn as a line where known; ``place``: place in
    figures (built-ins 0–99; ``None``: after them, by name)."""

    name: str
    category: str = "other"
    higher_is_better: bool = True
    label: str = ""
    unit: str = "images"
    chance: float | None = None
    place: float | None = None
    description: str = ""
    needs_maps: bool = True
    needs_masks: bool = False
    reexplains: bool = False
    second_model: bool = False
    function: bool = False
    groups: tuple = ()

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def as_dict(self) -> dict:
        return {**asdict(self), "groups": list(self.groups)}

    @classmethod
    def from_dict(cls, data: dict) -> "MetricCard":
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in dict(data).items() if k in known}
        values["groups"] = tuple(values.get("groups") or ())
        return cls(**values)


_FIELDS = ("category", "higher_is_better", "label", "unit", "chance", "place", "description",
           "needs_maps", "needs_masks", "reexplains", "second_model", "groups")
#: the groups the built-ins declare (``--metric default``); a metric is also in the group of
#: its category (``--metric perturbation``), and a plugin may name its own groups
METRIC_GROUPS = {"default": "what `xai-bench run` scores without --metric: the paper's "
                            "localisation, perturbation and sanity metrics"}


def _check(name, category, higher_is_better, unit, chance, groups=()):
    if not isinstance(category, str) or not category or category == "all":
        raise ValueError(f"metric '{name}': category must be a word other than 'all', got "
                         f"{category!r}")
    if not isinstance(higher_is_better, bool):
        raise ValueError(f"metric '{name}': higher_is_better must be True or False, got "
                         f"{higher_is_better!r}")
    if not isinstance(unit, str) or not unit:
        raise ValueError(f"metric '{name}': unit must be a non-empty string, got {unit!r}")
    if chance is not None and not isinstance(chance, (int, float)):
        raise ValueError(f"metric '{name}': chance must be a number or None, got {chance!r}")
    if not all(isinstance(g, str) and g and g != "all" for g in groups):
        raise ValueError(f"metric '{name}': groups must be words other than 'all', got "
                         f"{groups!r}")


def metric(name: str | None = None, *, higher_is_better: bool, category: str = "other",
           label: str = "", unit: str = "images", chance: float | None = None,
           place: float | None = None, description: str = "", needs_masks: bool = False,
           needs_maps: bool = True, reexplains: bool = False, second_model: bool = False,
           groups=()):
    """Decorator: declare a metric. On a function ``f(model, x, targets, maps, *,
    param=default) -> scores (B,)`` it makes a metric that scores precomputed maps of the most
    confidently and correctly classified test images (``n_images`` of them, the run's
    ``--n-images``; with ``needs_masks=True`` ``f`` gets ``masks=`` too); on a metric class it
    sets the class's declarations. ``groups``: words besides the category that ``--metric``
    can name (``default``, ``latec``). The object is returned unchanged apart from them."""
    groups = (groups,) if isinstance(groups, str) else tuple(groups)

    def decorate(obj):
        values = dict(category=category, higher_is_better=higher_is_better, label=label,
                      unit=unit, chance=chance, place=place, needs_masks=bool(needs_masks),
                      needs_maps=bool(needs_maps), reexplains=bool(reexplains),
                      second_model=bool(second_model), description=description,
                      groups=groups)
        return declare(obj, "metric", name, values,
                       lambda own: _check(own, category, higher_is_better, unit, chance,
                                          groups))

    return decorate


def is_metric_function(obj) -> bool:
    """A plain function declared with :func:`metric` (scored on precomputed maps)."""
    return inspect.isfunction(obj) and getattr(obj, DECLARED, None) == "metric"


def function_parameters(fn) -> dict:
    """``{name: default}`` (``REQUIRED`` where there is none) of a metric function's keyword
    parameters after ``model, x, targets, maps``, ``n_images`` (default 250: the run's
    ``--n-images`` sets it) and ``selection`` (the run's ``--selection``). ``masks`` is data,
    not a parameter."""
    params = callable_parameters(fn, skip=METRIC_FUNCTION_ARGS)
    params.pop("masks", None)
    return {"n_images": 250, "selection": "stratified", **params}


def metric_card(obj, name: str | None = None) -> MetricCard:
    """The card of a metric (class, instance or declared function): its declared attributes,
    with the defaults of :class:`MetricCard` for what it leaves out."""
    target = obj.metric if isinstance(obj, CheckedMetric) else obj
    label = entry_name(target, name, "")
    values = declared_values(target, _FIELDS)
    if "higher_is_better" in values:
        values["higher_is_better"] = bool(values["higher_is_better"])
    if "groups" in values:
        got = values["groups"]
        values["groups"] = (got,) if isinstance(got, str) else tuple(got or ())
    function = getattr(target, "function", None)
    values["function"] = is_metric_function(target) or (
        isinstance(function, bool) and function)
    return MetricCard(name=label, **values)


METRIC_MEMBERS = (
    Member("name", False, REQUIRED, "registered name"),
    Member("category", False, REQUIRED, "'localisation', 'perturbation', 'sanity' or any word"),
    Member("higher_is_better", False, REQUIRED, "direction of the metric"),
    Member("params", False, REQUIRED, "parameters, recorded with the results"),
    Member("prepare", True, REQUIRED, "prepare(model, dataset, *, device, batch_size, seed)"),
    Member("evaluate", True, REQUIRED, "evaluate(model, method, prepared, *, device, "
           "batch_size) -> MetricResult"),
    Member("samples", True, "None", "samples(prepared): how many samples a cell splits over "
           "(None: computed whole)"),
    Member("requested_samples", True, "None", "samples the parameters ask for; a cell of more "
           "than one batch is computed in parts of one batch each"),
    Member("evaluate_part", True, "evaluate, whole", "evaluate_part(model, method, prepared, "
           "start, stop, *, device, batch_size) -> dict of tensors"),
    Member("reduce", True, "evaluate, whole", "reduce(model, prepared, joined parts, *, "
           "device) -> MetricResult"),
    Member("label", False, "its name", "the quantity on a figure's axis"),
    Member("unit", False, "images", "what one sample is"),
    Member("chance", False, None, "score of an uninformative map (a line in figures)"),
    Member("place", False, None, "place in figures (None: after the built-ins)"),
    Member("needs_maps", False, True, "scores a method's maps"),
    Member("needs_masks", False, False, "needs object masks from the data set"),
    Member("reexplains", False, False, "explains again (another class or input)"),
    Member("second_model", False, False, "explains a second (e.g. randomised) model"),
    Member("groups", False, (), "groups that --metric can name besides the category (e.g. "
           "'default', 'latec')"),
)


class CheckedMetric:
    """A metric object with every optional member of the contract filled in: its card and
    the compute-in-parts members (a metric without them is computed whole)."""

    def __init__(self, metric, name: str | None = None):
        self.metric = metric
        self.card = metric_card(metric, name)
        self.name = self.card.name
        own = getattr(metric, "params", None)
        self.params = dict(own) if isinstance(own, dict) else {}

    @property
    def category(self) -> str:
        return self.card.category

    @property
    def higher_is_better(self) -> bool:
        return self.card.higher_is_better

    @property
    def splits(self) -> bool:
        """Whether the metric computes in parts (all four part members present)."""
        return all(callable(getattr(self.metric, m, None))
                   for m in ("samples", "evaluate_part", "reduce"))

    def prepare(self, model, dataset, **kwargs):
        return self.metric.prepare(model, dataset, **kwargs)

    def evaluate(self, model, method, prepared, **kwargs):
        return self.metric.evaluate(model, method, prepared, **kwargs)

    def samples(self, prepared):
        return self.metric.samples(prepared) if self.splits else None

    def requested_samples(self):
        own = getattr(self.metric, "requested_samples", None)
        return own() if self.splits and callable(own) else None

    def evaluate_part(self, model, method, prepared, start, stop, **kwargs):
        return self.metric.evaluate_part(model, method, prepared, start, stop, **kwargs)

    def reduce(self, model, prepared, part, **kwargs):
        return self.metric.reduce(model, prepared, part, **kwargs)

    def __repr__(self):
        return f"CheckedMetric({self.name!r}, params={self.params!r})"


def check_metric(metric, name: str | None = None) -> CheckedMetric:
    """``metric`` as a :class:`CheckedMetric` if it has every required member of the metric
    contract, else :class:`ContractError` listing the missing ones."""
    if isinstance(metric, CheckedMetric):
        return metric
    missing = missing_members(metric, METRIC_MEMBERS)
    if missing:
        label = name or getattr(metric, "name", None) or type(metric).__name__
        raise ContractError(f"metric '{label}' lacks {', '.join(missing)} of the metric "
                            f"contract; subclass xai_bench.metrics.Metric or declare a "
                            f"function with @xai_bench.metric")
    return CheckedMetric(metric, name)
