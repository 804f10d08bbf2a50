"""Checking and resolving a :class:`~xai_bench.run.config.RunConfig` before any work: sizes,
device, precision, the run name, the models and their checkpoints, the methods and the metrics
(built with their parameters after defaults) and every ``--method-arg``/``--metric-arg``
target. Everything here fails with one line (:class:`~xai_bench.run.config.RunError` or
another :class:`~xai_bench.errors.ConfigError`) before a file is written or a model trained.

A method plugin that fails to load or construct does not stop the run: it becomes a
:class:`MethodEntry` with an ``error``, and its own cells become ``error`` records.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch

from xai_bench.contracts.method import check_method
from xai_bench.contracts.model_args import (
    ALL_MODELS, ModelArgumentError, builder_arguments, check_model_params_targets,
    model_params_for, normalise_model_params, unknown_argument_message,
)
from xai_bench.contracts.metric import check_metric, is_metric_function
from xai_bench.contracts.parameters import build_entry, entry_parameters, resolve_parameters
from xai_bench.errors import ConfigError, XaiBenchError, one_line
from xai_bench.loading import get_model
from xai_bench.registry import METHODS, METRICS, MODELS, RegistryError
from xai_bench.run.config import RunError, label_of
from xai_bench.run.dataset import check_split_content, class_count
from xai_bench.run.models import (
    ModelSpec, check_classes_fit, check_logit_count, check_weights, declared_num_classes,
    replicate_label, resolve_checkpoints, resolve_models,
)
from xai_bench.run.names import names_or_objects, resolve_metrics
from xai_bench.storage.identity import code_identity
from xai_bench.storage.results import file_safe

__all__ = ["MethodEntry", "MetricEntry", "Resolution", "resolve_run", "resolve_device",
           "check_run_name", "METRIC_RUN_OPTIONS"]

#: options the runner passes to metric constructors that take them
METRIC_RUN_OPTIONS = ("n_grids", "n_images", "seed", "selection")


@dataclass
class MethodEntry:
    name: str
    method: object = None          # a CheckedMethod, or None when it failed to load
    params: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)
    error: str | None = None       # why it could not be loaded or constructed


@dataclass
class MetricEntry:
    name: str
    metric: object                 # a CheckedMetric
    params: dict
    identity: dict


@dataclass
class Resolution:
    """A checked configuration: what the run computes, and on which device."""

    device: str
    model_specs: list              # [ModelSpec], one per model and replicate
    checkpoints: dict              # replicate label -> checkpoint path
    methods: list                  # [MethodEntry]
    metrics: list                  # [MetricEntry]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device.startswith("cuda")):
        raise RunError(f"unknown device '{device}'; use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda requested but no CUDA device is available; "
                       "use --device cpu or auto")
    return device


def check_run_name(name: str) -> str:
    """A run name is one path component inside ``--out``."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith(".")
            or file_safe(name) != name or name != name.strip()):
        raise RunError(f"run name {name!r} is not a plain directory name; use letters, digits, "
                       f"'-' and '_' (the run directory stays inside --out)")
    return name


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RunError(f"{name} must be a positive integer, got {value!r}")


def resolve_run(config, check_dataset) -> Resolution:
    """Check ``config`` and resolve its names; ``check_dataset()`` loads the test split (an
    unknown spec or a missing path fails there). Registry errors become :class:`RunError`."""
    try:
        return _resolve(config, check_dataset)
    except RegistryError as e:
        raise RunError(str(e)) from None


def _resolve(cfg, check_dataset) -> Resolution:
    for key in ("n_grids", "n_images", "batch_size"):
        _positive_int(key, getattr(cfg, key))
    device = resolve_device(cfg.device)
    from xai_bench.compute.precision import PRECISIONS

    if cfg.precision not in PRECISIONS:
        raise RunError(f"unknown precision {cfg.precision!r}; use one of "
                       f"{', '.join(PRECISIONS)}")
    _positive_int("replicates", cfg.replicates)
    models = resolve_models(cfg)
    model_names = [name for name, _ in models]
    if len(set(model_names)) != len(model_names):
        raise RunError(f"two models share a name in {model_names}; give each a distinct "
                       f"`name` attribute")
    if cfg.replicates > 1 and any(obj is not None for _, obj in models):
        raise RunError("--replicates needs models given by name (objects are one replicate "
                       "each); pass the copies as separate models instead")
    check_model_params(cfg, models)
    checkpoints = resolve_checkpoints(cfg, model_names)
    specs = [ModelSpec(replicate_label(name, r), name, obj, r)
             for name, obj in models for r in range(cfg.replicates)]
    split = check_dataset()
    check_split_content(split)
    data_classes, data_name = class_count(split), label_of(cfg.dataset)
    for label, path in checkpoints.items():
        # a corrupt, foreign or wrong-architecture checkpoint fails now, before any work
        # (CheckpointError, one line); the model is loaded again when its cells run
        name = label.partition("@")[0]
        model = get_model(name, checkpoint=path, **model_params_for(cfg.model_params, name))
        check_classes_fit(label, getattr(model, "num_classes", None), data_classes, data_name)
        check_logit_count(model, label)
        del model
    for spec in specs:  # a default model's data set is its own: nothing to check
        if spec.label not in checkpoints and (spec.obj is not None or cfg.untrained):
            args = {} if spec.obj is not None else model_params_for(cfg.model_params, spec.name)
            check_classes_fit(spec.label, declared_num_classes(spec, args), data_classes,
                              data_name)
        if spec.obj is not None:
            check_logit_count(spec.obj, spec.label)
    methods = resolve_methods(cfg)
    metrics = resolve_metric_entries(cfg)
    check_min_effect(cfg.min_effect, [m.name for m in metrics])
    check_weights(cfg, specs, checkpoints)
    return Resolution(device, specs, checkpoints, methods, metrics)


def check_model_params(cfg, models: list) -> None:
    """Every ``--model-arg`` names a model of the run given by name (or ``*``), and each
    model takes the arguments it gets (one line naming the argument and the ones it takes,
    before any work)."""
    params = normalise_model_params(cfg.model_params)
    if not params:
        return
    names = [name for name, obj in models if obj is None]
    check_model_params_targets(params, names)
    for name in names:
        known = None
        for owner in (ALL_MODELS, name):
            for key in params.get(owner, {}):
                known = builder_arguments(MODELS.get(name)) if known is None else known
                if known is not None and key not in known:
                    raise ModelArgumentError(unknown_argument_message(
                        name, key, known, f"--model-arg {owner}.{key}"))


def check_min_effect(spec, metric_names: list) -> None:
    """``--min-effect`` parses, and each metric it names is one this run scores."""
    from xai_bench.analysis.effects import parse_min_effect

    min_effect = parse_min_effect(spec)
    for name in min_effect.per_metric:
        if name not in metric_names:
            close = difflib.get_close_matches(name, metric_names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else \
                f"this run scores {', '.join(metric_names)}"
            raise RunError(f"--min-effect names '{name}', which this run does not score; {hint}")


def check_params_targets(params: dict, chosen: list, registry, kind: str, option: str):
    """Every key of ``params`` (``--{kind}-arg`` values) names a {kind} of this run."""
    names = [m for m in chosen if isinstance(m, str)]
    for target in params:
        if target not in names:
            if target in registry:
                raise RunError(f"--{kind}-arg for '{target}', which this run does not use "
                               f"({kind}s: {', '.join(names)}); add it to {option}")
            raise RunError(f"--{kind}-arg: {registry.unknown_message(target)}")


def _failed_method(name: str, message: str) -> MethodEntry:
    return MethodEntry(name, error=message, identity={"name": name, "load_error": message})


def resolve_methods(cfg) -> list:
    """:class:`MethodEntry` of every method of the run, built with its parameters."""
    chosen = names_or_objects("method", METHODS, cfg.methods)
    check_params_targets(cfg.method_params, chosen, METHODS, "method", "--methods")
    entries = []
    for item in chosen:
        if not isinstance(item, str):
            checked = check_method(item)
            entries.append(MethodEntry(checked.name, checked, dict(checked.params),
                                       {"name": checked.name, "params": checked.params,
                                        "code": code_identity(checked.method)}))
            continue
        given = cfg.method_params.get(item, {})
        try:
            entry = METHODS.get(item)
        except RegistryError as e:  # a plugin that fails to import: its own cells fail
            entries.append(_failed_method(item, str(e)))
            continue
        resolve_parameters("method", item, entry, given)  # usage errors before any work
        try:
            obj, params = build_entry("method", item, entry, given)
            checked = check_method(obj, name=item)
        except XaiBenchError as e:
            if isinstance(e, ConfigError):
                raise
            entries.append(_failed_method(item, one_line(e)))
            continue
        except Exception as e:  # a plugin whose constructor raises
            entries.append(_failed_method(item, f"method '{item}' failed to construct: "
                                                f"{type(e).__name__}: {one_line(e)}"))
            continue
        checked.params = params
        entries.append(MethodEntry(item, checked, params,
                                   {"name": item, "params": params,
                                    "code": code_identity(entry)}))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise RunError(f"two methods share a name in {names}; give each a distinct `name`")
    return entries


def _build_metric(cfg, item: str):
    """``(metric, params)`` of a registered metric: the run options it takes
    (:data:`METRIC_RUN_OPTIONS`), then its ``--metric-arg`` values (which win)."""
    cls = METRICS.get(item)
    known = entry_parameters(cls, "metric")
    given = {k: getattr(cfg, k) for k in METRIC_RUN_OPTIONS if k in known}
    own = cfg.metric_params.get(item, {})
    refuse_contradicting_run_options(item, own, given)
    given.update(own)
    resolve_parameters("metric", item, cls, given)  # usage errors before any work
    try:
        if is_metric_function(cls):  # a plain function scored on the maps
            from xai_bench.metrics.function import FunctionMetric

            params = resolve_parameters("metric", item, cls, given)
            return FunctionMetric(cls, item, **params), params
        return build_entry("metric", item, cls, given)
    except RegistryError as e:  # e.g. a library it wraps is not installed: say which metric
        raise RunError(f"metric '{item}': {one_line(e)}; or leave it out of --metric") from None
    except (TypeError, ValueError) as e:  # the constructor's own validation
        if isinstance(e, XaiBenchError):
            raise
        raise ConfigError(f"metric '{item}': {one_line(e)}") from None


def refuse_contradicting_run_options(metric: str, own: dict, run_values: dict) -> None:
    """A metric parameter that is also a run option (``n_images``, ``n_grids``, ``seed``)
    may repeat the run option's value but not contradict it: which of the two was measured
    would otherwise depend on a rule the user cannot see (the run's name and the report show
    the run option)."""
    for key, value in own.items():
        if key in run_values and value != run_values[key]:
            flag = "--" + key.replace("_", "-")
            raise RunError(f"--metric-arg {metric}.{key}={value} contradicts {flag} "
                           f"{run_values[key]}; use {flag} {value} (it sets {key} of every "
                           f"metric that takes it) and drop the --metric-arg")


def resolve_metric_entries(cfg) -> list:
    """:class:`MetricEntry` of every metric of the run, built with its parameters."""
    entries = []
    chosen = resolve_metrics(cfg.metrics)
    check_params_targets(cfg.metric_params, chosen, METRICS, "metric", "--metric")
    for item in chosen:
        if isinstance(item, str):
            metric, params = _build_metric(cfg, item)
            name, code = item, METRICS.get(item)
        else:
            metric, name = item, label_of(item)
            if is_metric_function(item):
                from xai_bench.metrics.function import FunctionMetric

                metric = FunctionMetric(item, name, n_images=cfg.n_images,
                                        selection=cfg.selection)
            params = dict(getattr(metric, "params", {}) or {})
            code = item
        checked = check_metric(metric, name)
        entries.append(MetricEntry(name, checked, params,
                                   {"name": name, "params": params,
                                    "code": code_identity(code)}))
    return entries
