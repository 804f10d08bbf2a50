"""The contracts between the harness and what it benchmarks, stated once.

Everything the runner, the methods, the metrics and the figures may ask of a model, a method
or a metric is declared here as a :class:`typing.Protocol` plus a table of its members
(:data:`MODEL_MEMBERS`, …). The checks :func:`check_model`, :func:`check_method` and
:func:`check_metric` are the only place that probes objects; code elsewhere asks for
*capabilities* (:func:`has_attention`, :func:`has_lrp`, :func:`is_dynamic_linear`) or reads
optional members through :func:`model_attr`, which supplies the documented default.

Models
------
The **core** (every model): ``image_size``, ``num_classes``, ``encode(images)``, the forward
call ``model(x)``, ``confidence(logits)`` and ``training_loss``. Optional members have
defaults (``logit_bias`` 0, ``is_dynamic_linear`` False, ``family`` "conventional",
``pooling`` "mean", ``num_prefix_tokens`` 0, ``in_channels`` 3, ``explanation_mode()`` a
no-op, ``config`` {}). Capabilities add members:

- **attention**: ``token_grid``, ``blocks`` (each with an ``attn`` module) and
  ``record_attention()`` (a context manager yielding the per-block attention maps);
- **lrp**: attention plus ``relprop(relevance, alpha=1.0, rules="chefer")`` and
  ``lrp_recording()``;
- **dynamic-linear** (B-cos): ``is_dynamic_linear`` true (or ``family == "bcos"``) and an
  ``explanation_mode()`` in which ``W(x) x = logits − logit_bias``.

Methods
-------
Anything callable as ``method(model, x, targets) -> maps`` with ``x`` the encoded input
``(B, C, H, W)``, ``targets`` ``(B,)`` and ``maps`` a floating ``(B, H, W)`` tensor. Optional:
``applies_to(model) -> bool``, ``params`` (a dict), ``name``, ``class_agnostic``. A plain
function qualifies; :func:`check_method` wraps any of these in a :class:`CheckedMethod` that
fills the defaults and checks every result (shape, dtype, finiteness).

Metrics
-------
Objects with ``name``, ``category``, ``higher_is_better``, ``params``,
``prepare(model, dataset, *, device, batch_size, seed)`` and
``evaluate(model, method, prepared, *, device, batch_size) -> MetricResult``.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from xai_bench.errors import ContractError

__all__ = [
    "ExplainableModel", "AttentionModel", "LRPModel", "DynamicLinearModel",
    "AttributionMethod", "Metric", "Member", "MODEL_MEMBERS", "CAPABILITY_MEMBERS",
    "METHOD_MEMBERS", "METRIC_MEMBERS", "check_model", "check_method", "check_metric",
    "capabilities", "has_attention", "has_lrp", "is_dynamic_linear", "model_attr",
    "model_name", "parameter_count", "CheckedMethod", "members_table",
]


# --------------------------------------------------------------------------- protocols
@runtime_checkable
class ExplainableModel(Protocol):
    """The core every model provides (see the module docstring for the optional members)."""

    image_size: tuple
    num_classes: int
    training_loss: str

    def encode(self, images): ...
    def __call__(self, x): ...
    def confidence(self, logits): ...


@runtime_checkable
class AttentionModel(ExplainableModel, Protocol):
    token_grid: tuple
    blocks: Any

    def record_attention(self): ...


@runtime_checkable
class LRPModel(AttentionModel, Protocol):
    def relprop(self, relevance, *args, **kwargs): ...
    def lrp_recording(self): ...


@runtime_checkable
class DynamicLinearModel(ExplainableModel, Protocol):
    is_dynamic_linear: bool
    logit_bias: float

    def explanation_mode(self): ...


@runtime_checkable
class AttributionMethod(Protocol):
    def __call__(self, model, x, targets): ...


@runtime_checkable
class Metric(Protocol):
    name: str
    category: str
    higher_is_better: bool
    params: dict

    def prepare(self, model, dataset, *, device, batch_size, seed): ...
    def evaluate(self, model, method, prepared, *, device, batch_size): ...


# --------------------------------------------------------------------------- members
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


class _Required:
    def __repr__(self):
        return "required"


REQUIRED = _Required()

MODEL_MEMBERS = (
    Member("image_size", False, REQUIRED, "(H, W) of the RGB images the model expects"),
    Member("num_classes", False, REQUIRED, "number of output logits"),
    Member("encode", True, REQUIRED, "encode(images): RGB in [0, 1] (B, 3, H, W) -> model input"),
    Member("forward", True, REQUIRED, "model(x): encoded input -> logits (B, num_classes)"),
    Member("confidence", True, REQUIRED, "confidence(logits): class confidences "
           "(sigmoid or softmax)"),
    Member("training_loss", False, REQUIRED, "'bce' (sigmoid outputs) or 'ce' (softmax)"),
    Member("logit_bias", False, 0.0, "constant added to every logit"),
    Member("is_dynamic_linear", False, False, "True where W(x) x = logits - logit_bias exactly"),
    Member("explanation_mode", True, "no-op", "context manager: dynamic factors become "
           "constants"),
    Member("family", False, "conventional", "'bcos' or 'conventional', for tables"),
    Member("pooling", False, "mean", "'mean' or 'cls': how tokens become the representation"),
    Member("num_prefix_tokens", False, 0, "CLS/distillation/register tokens before the patch "
           "tokens"),
    Member("in_channels", False, 3, "channels of the encoded input (6 for B-cos [x, 1-x])"),
    Member("config", False, {}, "constructor keyword arguments, enough to rebuild the model"),
)
CAPABILITY_MEMBERS = {
    "attention": (
        Member("token_grid", False, REQUIRED, "(rows, cols) of the patch-token grid"),
        Member("blocks", False, REQUIRED, "the transformer blocks, each with an attn module"),
        Member("record_attention", True, REQUIRED, "context manager yielding the per-block "
               "attention maps (B, heads, N, N), attached to the autograd graph"),
    ),
    "lrp": (
        Member("relprop", True, REQUIRED, "relprop(relevance, alpha=1.0, rules='chefer'): "
               "propagate LRP relevance from the logits to the input (rules 'chefer' or "
               "'lrp'; each block's attn.attention_relevance keeps what reached its attention "
               "matrix)"),
        Member("lrp_recording", True, REQUIRED, "context manager: forwards keep what relprop "
               "needs"),
    ),
    "dynamic_linear": (
        Member("is_dynamic_linear", False, REQUIRED, "True (or family == 'bcos')"),
        Member("explanation_mode", True, REQUIRED, "context manager in which W(x) is constant"),
    ),
}
METHOD_MEMBERS = (
    Member("__call__", True, REQUIRED, "method(model, x, targets) -> maps (B, H, W) float"),
    Member("applies_to", True, "always", "applies_to(model) -> bool"),
    Member("params", False, {}, "parameters, recorded with the results"),
    Member("name", False, "the function's or class's name", "name in tables"),
    Member("class_agnostic", False, False, "True where the map ignores the target class"),
)
METRIC_MEMBERS = (
    Member("name", False, REQUIRED, "registered name"),
    Member("category", False, REQUIRED, "'localisation', 'perturbation', ..."),
    Member("higher_is_better", False, REQUIRED, "direction of the metric"),
    Member("params", False, REQUIRED, "parameters, recorded with the results"),
    Member("prepare", True, REQUIRED, "prepare(model, dataset, *, device, batch_size, seed)"),
    Member("evaluate", True, REQUIRED, "evaluate(model, method, prepared, *, device, "
           "batch_size) -> MetricResult"),
    Member("requested_samples", True, "None", "samples the parameters ask for; with the "
           "three below (`SampleMetric`) a cell is computed in parts of one batch each"),
    Member("samples", True, "None", "samples(prepared): how many there are"),
    Member("evaluate_part", True, "none", "evaluate_part(model, method, prepared, start, "
           "stop, *, device, batch_size) -> dict of tensors"),
    Member("reduce", True, "none", "reduce(model, prepared, joined parts, *, device) -> "
           "MetricResult"),
)


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


# --------------------------------------------------------------------------- models
def model_name(model) -> str:
    return str(getattr(model, "name", None) or type(model).__name__)


def model_attr(model, name: str):
    """An optional model member, or its documented default."""
    for member in MODEL_MEMBERS:
        if member.name == name:
            if hasattr(model, name):
                return getattr(model, name)
            if name == "explanation_mode":
                return lambda: contextlib.nullcontext(model)
            return member.default if member.default is not REQUIRED else None
    raise KeyError(f"'{name}' is not a member of the model contract")


def _missing(obj, members) -> list[str]:
    missing = []
    for m in members:
        if not m.required:
            continue
        if m.name == "forward":
            ok = callable(obj)
        else:
            ok = hasattr(obj, m.name) and (not m.callable or callable(getattr(obj, m.name)))
        if not ok:
            missing.append(f"{m.name}()" if m.callable else m.name)
    return missing


def has_attention(model) -> bool:
    return not _missing(model, CAPABILITY_MEMBERS["attention"])


def has_lrp(model) -> bool:
    return has_attention(model) and not _missing(model, CAPABILITY_MEMBERS["lrp"])


def is_dynamic_linear(model) -> bool:
    """B-cos models: ``is_dynamic_linear`` true or ``family == "bcos"``, with an
    ``explanation_mode()``."""
    flag = bool(getattr(model, "is_dynamic_linear", False)) or \
        getattr(model, "family", None) == "bcos"
    return flag and callable(getattr(model, "explanation_mode", None))


def capabilities(model) -> list[str]:
    """The capabilities ``model`` provides, e.g. ``["attention", "lrp"]``."""
    found = [name for name, test in (("attention", has_attention), ("lrp", has_lrp),
                                     ("dynamic_linear", is_dynamic_linear)) if test(model)]
    return found


def parameter_count(model) -> int | None:
    count = getattr(model, "num_parameters", None)
    if callable(count):
        return int(count())
    params = getattr(model, "parameters", None)
    return sum(p.numel() for p in params()) if callable(params) else None


def check_model(model, name: str | None = None) -> dict:
    """Check the core contract; return the model's card (name, family, parameters,
    capabilities, config). :class:`ContractError` lists every missing member."""
    missing = _missing(model, MODEL_MEMBERS)
    label = name or model_name(model)
    if missing:
        raise ContractError(f"model '{label}' lacks {', '.join(missing)} of the model contract "
                            f"(see docs/models.md); add them or subclass "
                            f"xai_bench.models.ExplainableModel")
    size = model.image_size
    try:
        size = (int(size), int(size)) if isinstance(size, (int, float)) else \
            (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        raise ContractError(f"model '{label}' has image_size {size!r}; expected (H, W)") \
            from None
    if model.training_loss not in ("bce", "ce"):
        raise ContractError(f"model '{label}' has training_loss {model.training_loss!r}; "
                            f"expected 'bce' or 'ce'")
    config = model_attr(model, "config")
    return {"family": model_attr(model, "family"), "parameters": parameter_count(model),
            "capabilities": capabilities(model), "image_size": list(size),
            "num_classes": int(model.num_classes),
            "config": dict(config) if isinstance(config, dict) else {}}


# --------------------------------------------------------------------------- methods
def _method_label(method) -> str:
    name = getattr(method, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(method, "__name__", None) or type(method).__name__


class CheckedMethod:
    """A method object with every optional member filled in, whose results are checked:
    a tensor of shape ``(B, H, W)``, floating dtype, finite. Violations raise
    :class:`ContractError` (the runner records an ``error`` for that cell)."""

    def __init__(self, method, name: str | None = None, params: dict | None = None):
        if isinstance(method, CheckedMethod):
            method = method.method
        if not callable(method):
            raise ContractError(f"method {name or _method_label(method)!r} is not callable; a "
                                f"method is called as method(model, x, targets) -> maps")
        self.method = method
        self.name = name or _method_label(method)
        own = getattr(method, "params", None)
        self.params = dict(params if params is not None else own if isinstance(own, dict)
                           else {})
        self.class_agnostic = bool(getattr(method, "class_agnostic", False))
        self.kind = getattr(method, "kind", "plugin")

    def applies_to(self, model) -> bool:
        test = getattr(self.method, "applies_to", None)
        return bool(test(model)) if callable(test) else True

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
                raise ContractError(f"method {name or _method_label(method)!r} cannot be "
                                    f"called as method(model, x, targets); its signature is "
                                    f"{signature}") from None
    return CheckedMethod(method, name=name)


# --------------------------------------------------------------------------- metrics
def check_metric(metric, name: str | None = None):
    """``metric`` itself if it has every member of the metric contract, else
    :class:`ContractError` listing the missing ones."""
    missing = _missing(metric, METRIC_MEMBERS)
    if missing:
        label = name or getattr(metric, "name", None) or type(metric).__name__
        raise ContractError(f"metric '{label}' lacks {', '.join(missing)} of the metric "
                            f"contract; subclass xai_bench.metrics.Metric")
    return metric


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


def contract_markdown() -> str:
    """The contract tables of ``docs/models.md`` (between its ``contract`` markers); a test
    keeps the page equal to this."""
    parts = ["**Every model** (`xai_bench.interfaces.ExplainableModel`; optional members take "
             "their default):", "", members_table(MODEL_MEMBERS), ""]
    titles = {"attention": "**Attention** (`AttentionModel`: rollout, finatt, gradsam, gradcam, "
                           "vit_cx)",
              "lrp": "**LRP** (`LRPModel`, on top of attention: chefer_lrp, plrp)",
              "dynamic_linear": "**Dynamic linear** (`DynamicLinearModel`: inherent)"}
    for name, members in CAPABILITY_MEMBERS.items():
        parts += [titles[name] + ":", "", members_table(members), ""]
    parts += ["**Every method** (`AttributionMethod`; a plain function qualifies):", "",
              members_table(METHOD_MEMBERS), "",
              "**Every metric** (`Metric`; subclass `xai_bench.metrics.Metric`):", "",
              members_table(METRIC_MEMBERS)]
    return "\n".join(parts)
