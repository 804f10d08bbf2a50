"""xai-bench: an explainability benchmark harness for (B-cos) vision transformers.

The public API mirrors timm / captum: models, attribution methods and metrics live in
registries and are addressed by name::

    import xai_bench
    xai_bench.list_models("bcos_*")
    model = xai_bench.get_model("bcos_vit_nano", pretrained=True)  # the shipped weights
"""

from xai_bench.registry import METHODS, METRICS, MODELS
from xai_bench.version import VERSION as __version__

# Nothing inside the package imports this module (it would close an import circle): code
# there imports `xai_bench.version`, `xai_bench.registry` or `xai_bench.loading`.

__all__ = [
    "MODELS", "METHODS", "METRICS", "evaluate", "Results", "method", "metric",
    "list_models", "get_model", "list_methods", "get_method", "list_metrics", "get_metric",
]


def evaluate(*args, **kwargs):
    """Benchmark models × methods × metrics (names or objects) and return the tidy results;
    see :func:`xai_bench.api.evaluate`."""
    from xai_bench.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def __getattr__(name):  # lazy, so that `import xai_bench` stays cheap
    if name == "Results":
        from xai_bench.api import Results

        return Results
    raise AttributeError(f"module 'xai_bench' has no attribute {name!r}")


def method(*args, **kwargs):
    """Decorator: declare a method's description next to its code (kind, class-agnostic,
    required model capabilities, cost, label, place and colour in figures); see
    :func:`xai_bench.contracts.method.method`. ``@xai_bench.method`` alone takes the
    defaults."""
    from xai_bench.contracts.method import method as declare

    return declare(*args, **kwargs)


def metric(*args, **kwargs):
    """Decorator: declare a metric (a plain function ``f(model, x, targets, maps, *,
    param=default) -> scores (B,)`` or a metric class) with its direction, category, label,
    unit, chance level; see :func:`xai_bench.contracts.metric.metric`."""
    from xai_bench.contracts.metric import metric as declare

    return declare(*args, **kwargs)


def list_models(pattern="*"):
    """Names of the registered models matching a glob (or a list of globs)."""
    return MODELS.list(pattern)


def get_model(name, checkpoint=None, pretrained=False, **kwargs):
    """Build model `name` (keyword arguments: its constructor arguments, checked by name).

    ``pretrained=False`` (the default) gives random weights from torch's global random state;
    ``pretrained=True`` the weights that come with the name (timm's convention): for
    ``bcos_vit_nano`` and ``vit_nano`` the ones shipped with xai-bench, which ``xai-bench
    run`` uses too; for ``bcos_v2.*`` the official ones, for ``timm:NAME`` timm's.
    ``checkpoint=PATH`` loads a file of ``xai-bench train`` or a plain ``state_dict``
    (``.pt``/``.pth``/``.safetensors``) strictly. ``model.weights_source`` says where the
    weights came from; see :func:`xai_bench.loading.get_model`."""
    from xai_bench.loading import get_model as build

    return build(name, checkpoint=checkpoint, pretrained=pretrained, **kwargs)


def list_methods(pattern="*"):
    """Names of the registered attribution methods matching a glob."""
    return METHODS.list(pattern)


def get_method(name, **params):
    """An attribution method, called as ``method(model, x, targets) -> maps``: a class
    constructed with ``params``, a plain-function method bound to them (as a run builds it)."""
    from xai_bench.contracts.parameters import build_entry

    return build_entry("method", name, METHODS.get(name), params)[0]


def list_metrics(pattern="*"):
    """Names of the registered metrics matching a glob."""
    return METRICS.list(pattern)


def get_metric(name, **params):
    """A metric object (see ``xai_bench.metrics``); a metric declared as a plain function
    comes as the :class:`~xai_bench.metrics.function.FunctionMetric` a run scores it with."""
    from xai_bench.contracts.metric import is_metric_function

    entry = METRICS.get(name)
    if is_metric_function(entry):
        from xai_bench.metrics.function import FunctionMetric

        return FunctionMetric(entry, name, **params)
    return entry(**params)
