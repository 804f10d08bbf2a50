"""A model's constructor arguments: which ones a registered builder accepts, the one-line
error for one it does not (:class:`ModelArgumentError`), and the run's ``--model-arg`` values
(``{model or "*": {key: value}}``) for one model.

The form of ``xai-bench run --model-arg`` follows ``--method-arg``: ``MODEL.KEY=VALUE`` for
one model, and ``*.KEY=VALUE`` for every model of the run (each must accept it; a model's own
value wins over the ``*`` one). Model names may hold dots (``bcos_v2.resnet50``,
``timm:vit_small_patch16_224.augreg_in21k``), argument names never do, so the key is what
follows the last dot: :func:`normalise_model_params` puts a name that the command line's first
dot split apart back together.
"""

from __future__ import annotations

import difflib
import inspect

from xai_bench.errors import ConfigError

__all__ = ["ModelArgumentError", "ALL_MODELS", "builder_arguments", "check_model_arguments",
           "normalise_model_params", "model_params_for", "check_model_params_targets",
           "unknown_argument_message", "takes_argument"]

#: the owner of a ``--model-arg`` that applies to every model of the run
ALL_MODELS = "*"


class ModelArgumentError(ConfigError, TypeError):
    """A model builder does not take a keyword argument. Also a ``TypeError``, what calling
    the builder with it would raise, for callers that catch that."""


def _named(fn) -> tuple[list, bool]:
    """``(keyword parameter names, whether fn takes **kwargs)``; ``self`` left out."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.name != "self"]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _class_arguments(cls) -> list | None:
    """The keyword arguments of ``cls.__init__``, following ``**kwargs`` up the MRO (a
    subclass that passes them on to its base); None when they end in an open ``**kwargs``."""
    out: list = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        names, open_ = _named(vars(klass)["__init__"])
        out += [n for n in names if n not in out]
        if not open_:
            return out
    return None


def takes_argument(builder, name: str) -> bool:
    """Whether ``builder`` names ``name`` among its own parameters or declared arguments
    (no model is built: cheap enough to ask of every registered model)."""
    if name in _named(builder)[0]:
        return True
    declared = getattr(builder, "accepted_arguments", None)
    return callable(declared) and name in (declared() or [])


def builder_arguments(builder) -> list | None:
    """The keyword arguments ``builder`` accepts, or None when that cannot be told (it passes
    ``**kwargs`` on to something that takes anything). A builder may declare them
    (``builder.accepted_arguments()``, e.g. the ``timm:`` builders); else a builder that
    passes ``**kwargs`` on to a model class is built once with its defaults on torch's
    ``meta`` device (nothing allocated, the random state untouched) to read that class's
    arguments."""
    names, open_ = _named(builder)
    if not open_:
        return names
    declared = getattr(builder, "accepted_arguments", None)
    if callable(declared):
        more = declared()
        return None if more is None else names + [n for n in more if n not in names]
    import torch

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = builder()
    except Exception:  # noqa: BLE001 - a builder that needs arguments: left to the build
        return None
    more = _class_arguments(type(model))
    return None if more is None else names + [n for n in more if n not in names]


def check_model_arguments(name: str, builder, kwargs: dict, how: str = "") -> None:
    """A :class:`ModelArgumentError` naming the first argument of ``kwargs`` that model
    ``name``'s builder does not take, a close name and the arguments it takes. ``how`` says
    where the argument came from (e.g. ``"--model-arg *.img_size=32"``)."""
    if not kwargs:
        return
    known = builder_arguments(builder)
    if known is None:
        return
    for key in kwargs:
        if key not in known:
            raise ModelArgumentError(unknown_argument_message(name, key, known, how))


def unknown_argument_message(name: str, key: str, known: list, how: str = "") -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" — did you mean '{close[0]}'?" if close else ""
    where = f" ({how})" if how else ""
    takes = ", ".join(known) if known else "no arguments"
    return (f"model '{name}' has no argument '{key}'{where}{hint}; it takes: {takes}")


def normalise_model_params(params) -> dict:
    """``{model: {key: value}}`` with the model names whole: ``{"bcos_v2":
    {"resnet50.num_classes": 4}}`` (the command line split at the first dot) becomes
    ``{"bcos_v2.resnet50": {"num_classes": 4}}``. A bare ``{key: value}`` at the top level (a
    value that is not a dict) is a ``*`` argument."""
    out: dict = {}
    for owner, values in dict(params or {}).items():
        if not isinstance(values, dict):  # model_params={"img_size": 32}: every model
            out.setdefault(ALL_MODELS, {})[str(owner)] = values
            continue
        for key, value in values.items():
            head, dot, leaf = str(key).rpartition(".")
            model = f"{owner}.{head}" if dot else str(owner)
            out.setdefault(model, {})[leaf if dot else str(key)] = value
    return out


def model_params_for(params, name: str) -> dict:
    """The constructor arguments of model ``name``: the ``*`` ones, then its own (which win)."""
    params = normalise_model_params(params)
    return {**params.get(ALL_MODELS, {}), **params.get(name, {})}


def check_model_params_targets(params, names: list) -> None:
    """Every model a ``--model-arg`` names is one of the run's ``names`` (models given by
    name); else one line saying which are."""
    for owner in normalise_model_params(params):
        if owner != ALL_MODELS and owner not in names:
            raise ConfigError(f"--model-arg for '{owner}', which this run does not benchmark "
                              f"by name (models: {', '.join(names) or 'none'}); add it to "
                              f"--models, or use *.KEY=VALUE for every model")
