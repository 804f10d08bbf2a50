"""Models by name and from files: :func:`get_model` (``xai_bench.get_model``) and
:func:`load_model_from_checkpoint`, the places that look a model up in
:data:`xai_bench.registry.MODELS`, and :func:`save_timm_checkpoint`.

The model code itself (builders, architectures) imports neither the registry, nor this
module, nor the checkpoint writer: builders are declared (:mod:`xai_bench.models.declare`)
and found by the registry, so a model's source identity holds only model code.

Every model :func:`get_model` returns says where its weights come from in
``model.weights_source`` (:data:`WEIGHTS_SOURCES`); one loaded from a file also has
``model.checkpoint_info`` (the file's metadata and ``path``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from xai_bench.contracts.model_args import (
    ModelArgumentError, builder_arguments, check_model_arguments, takes_argument,
    unknown_argument_message,
)
from xai_bench.errors import ConfigError
from xai_bench.registry import MODELS
from xai_bench.storage.checkpoint_format import (
    FORMAT, CheckpointError, check_checkpoint, check_model_size, load_checkpoint, restore_model,
    strict_load,
)

__all__ = ["get_model", "load_model_from_checkpoint", "save_timm_checkpoint",
           "WEIGHTS_SOURCES", "names_with_weights"]

#: the values of ``model.weights_source``
WEIGHTS_SOURCES = {
    "random": "random initialisation (pretrained=False): torch's global random state",
    "shipped": "the weights shipped with xai-bench, which `xai-bench run` uses too",
    "cached": "trained by xai-bench on first use and cached (the shipped file is missing)",
    "official": "the model's official released weights (pretrained=True)",
    "timm": "timm's pretrained weights (pretrained=True)",
    "pretrained": "the builder's own pretrained weights (pretrained=True)",
    "checkpoint": "an xai-bench checkpoint (checkpoint=PATH)",
    "state_dict": "a plain state dict file (checkpoint=PATH)",
}

_FIX = ("build the model with the arguments the weights were trained with (keyword arguments "
        "of get_model, or --model-arg MODEL.KEY=VALUE of xai-bench run)")


def get_model(name, checkpoint=None, pretrained: bool = False, **kwargs):
    """Build model ``name``; keyword arguments go to its builder (its constructor arguments).

    - ``pretrained=False`` (the default): random weights, drawn from torch's global random
      state (call ``torch.manual_seed`` first for the same weights again; ``xai-bench run
      --untrained`` seeds it from ``--seed``).
    - ``pretrained=True`` (timm's convention): the weights that come with the name — for the
      default models (``bcos_vit_nano``, ``vit_nano``) the ones shipped with xai-bench, which
      ``xai-bench run`` and ``explain`` use on ``shapes`` (equal tensors); for ``bcos_v2.*``
      the official released weights and for ``timm:NAME`` timm's (both downloaded once). A
      name without such weights is a one-line error naming the names that have them.
    - ``checkpoint=PATH``: a file written by ``xai-bench train`` (its stored constructor
      arguments, which keyword arguments override), or a plain ``state_dict`` of this model
      (``.pt``/``.pth`` read with ``torch.load(weights_only=True)``, or ``.safetensors``),
      built with the keyword arguments (a ``timm:`` model takes ``num_classes`` and
      ``img_size`` from the file's head and position embedding when they are not given).
      Loaded strictly: a mismatch is one line naming the missing, unexpected and
      size-mismatched keys.

    The model says where its weights came from: ``model.weights_source`` (one of
    :data:`WEIGHTS_SOURCES`) and, for a file, ``model.checkpoint_info``. An argument the
    builder does not take is a one-line :class:`~xai_bench.contracts.model_args.
    ModelArgumentError` naming the arguments it takes."""
    builder = MODELS.get(name)
    check_model_arguments(name, builder, kwargs)
    if checkpoint is not None:
        if pretrained:
            raise ConfigError(f"get_model('{name}'): pass either pretrained=True or "
                              f"checkpoint=PATH, not both")
        return _from_file(name, builder, checkpoint, kwargs)
    if pretrained:
        return _pretrained(name, builder, kwargs)
    return _mark(_build(name, builder, kwargs), "random")


def _mark(model, source: str):
    """Say where ``model``'s weights came from, unless its builder already did."""
    if getattr(model, "weights_source", None) is None:
        try:
            model.weights_source = source
        except (AttributeError, TypeError):  # e.g. a builder that returns a frozen object
            pass
    return model


def _build(name, builder, kwargs: dict):
    """``builder(**kwargs)``; a keyword the builder (or what it passes them on to) refuses
    is a one-line :class:`ModelArgumentError`."""
    try:
        return builder(**kwargs)
    except TypeError as e:
        key = next((k for k in kwargs if f"unexpected keyword argument '{k}'" in str(e)), None)
        if key is None or isinstance(e, ModelArgumentError):
            raise
        known = builder_arguments(builder) or []
        raise ModelArgumentError(unknown_argument_message(name, key, known)) from None


def _takes_pretrained(builder) -> bool:
    return takes_argument(builder, "pretrained")


def _pretrained(name: str, builder, kwargs: dict):
    if _takes_pretrained(builder):
        model = _build(name, builder, {**kwargs, "pretrained": True})
        kind = "timm" if name.startswith("timm:") else \
            "official" if name.startswith("bcos_v2.") else "pretrained"
        return _mark(model, kind)
    from xai_bench.training.defaults import DEFAULT_DATASET
    from xai_bench.training.shipped import read_manifest

    entry = read_manifest().get(name)
    if entry is None:
        raise ConfigError(f"model '{name}' has no shipped or official weights, so "
                          f"pretrained=True cannot load any; weights come with "
                          f"{names_with_weights()}; for '{name}' pass checkpoint=PATH (train "
                          f"one with `xai-bench train {name} --out PATH`) or pretrained=False "
                          f"(random weights)")
    _refuse_other_configuration(name, builder, kwargs)
    # the run's own rule (xai_bench.run.models.RunModels.load): the shipped file, or the
    # default model trained once and cached where the file is missing
    import xai_bench.training as training

    model, info = training.cached_default_model(
        name, DEFAULT_DATASET, progress=False, log=lambda m: print(m, file=sys.stderr))
    model.weights_source = "shipped" if info.get("shipped") else "cached"
    return model


def _refuse_other_configuration(name: str, builder, kwargs: dict) -> None:
    """The shipped weights fit the default configuration only: arguments that change it
    are refused (loading the weights into another model would be silently wrong)."""
    if not kwargs:
        return
    import torch

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        default = dict(getattr(builder(), "config", {}) or {})
        wanted = dict(getattr(builder(**kwargs), "config", {}) or {})
    changed = sorted(k for k in set(default) | set(wanted) if default.get(k) != wanted.get(k))
    if changed:
        raise ConfigError(f"the shipped weights of '{name}' were trained with its default "
                          f"configuration; pretrained=True cannot change {', '.join(changed)} "
                          f"(train that model with `xai-bench train {name} --model-arg "
                          f"KEY=VALUE`, or use pretrained=False)")


def names_with_weights() -> str:
    """The names ``pretrained=True`` loads weights for, in a few words: the shipped models,
    the registered builders that take ``pretrained`` (a family ``family.*`` once) and the
    ``timm:`` prefix."""
    from xai_bench.training.shipped import read_manifest

    shipped = list(read_manifest())
    parts = [f"{', '.join(shipped)} (shipped, trained on shapes)"] if shipped else []
    families: list = []
    for other in MODELS.list("*"):
        if other in shipped:
            continue
        try:
            if not _takes_pretrained(MODELS.get(other)):
                continue
        except Exception:  # noqa: BLE001 - a plugin that fails to load has no weights here
            continue
        family = other.split(".", 1)[0] + ".*" if "." in other else other
        if family not in families:
            families.append(family)
    parts += [f"{f} (official weights)" for f in families]
    if "timm" in MODELS.prefixes():
        parts.append("timm:NAME (timm's weights)")
    return ", ".join(parts) or "no model here"


def _from_file(name: str, builder, path, kwargs: dict):
    """A model from ``path``: an xai-bench checkpoint, or a plain state dict."""
    from xai_bench.storage.state_dicts import SAFETENSORS_SUFFIX, read_any_weights

    path = Path(path).expanduser()
    loader = getattr(builder, "load_checkpoint", None)
    if loader is not None and path.suffix != SAFETENSORS_SUFFIX:
        # Builders that read other checkpoint formats (e.g. the official B-cos-v2 `.pth`
        # state dicts) expose them as `builder.load_checkpoint(path, **kwargs)`.
        return _mark(loader(path, **kwargs), "state_dict")
    data = read_any_weights(path, f"check the path or train one with `xai-bench train {name} "
                                  f"--out {path}`")
    if isinstance(data, dict) and data.get("format") == FORMAT:
        data = check_checkpoint(data, path)
        stored = data["model"]
        own = builder if stored == name else None
        return restore_model(path, own, name=name, data=data, **kwargs)
    return _from_state_dict(name, builder, path, data, kwargs)


def _from_state_dict(name: str, builder, path: Path, data, kwargs: dict):
    from xai_bench.storage.state_dicts import plain_state_dict

    state = plain_state_dict(data, path)
    infer = getattr(builder, "arguments_from_state_dict", None)
    inferred = {k: v for k, v in (infer(state) if infer else {}).items() if k not in kwargs}
    args = {**inferred, **kwargs}
    try:
        check_model_size(path, name, builder, args, state)
    except ModelArgumentError:
        raise
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise CheckpointError(f"checkpoint {path}: cannot build model '{name}' with "
                              f"{_shown(args)}: {' '.join(str(e).split())}") from None
    model = _build(name, builder, args)
    adapt = getattr(model, "adapt_state_dict", None)
    strict_load(model, adapt(state) if adapt else state, f"state dict {path}", name, _FIX)
    model.name = name
    model.weights_source = "state_dict"
    model.checkpoint_info = {"format": "state_dict", "model": name, "path": str(path),
                             "model_config": dict(getattr(model, "config", args) or {}),
                             "inferred": inferred}
    return model.eval()


def _shown(args: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items()) or "its default arguments"


def load_model_from_checkpoint(path, name: str | None = None, **overrides):
    """Build the stored model from the registry with its stored constructor arguments
    (keyword ``overrides`` win), load the weights strictly and return it in eval mode with
    ``model.checkpoint_info`` (the metadata). ``name``, if given, must match the stored model
    (:class:`~xai_bench.storage.checkpoint_format.CheckpointError`); a stored name that is not
    registered is an :class:`~xai_bench.errors.UnknownNameError`. A plain state dict needs
    its model's name: :func:`get_model` ``(name, checkpoint=path)``."""
    data = load_checkpoint(path)
    stored = data["model"]
    builder = MODELS.get(stored) if name is None or name == stored else None
    return restore_model(path, builder, name=name, data=data, **overrides)


def save_timm_checkpoint(path, name: str, dataset: str = "imagenet", pretrained: bool = True,
                         **kwargs):
    """Build ``timm:<name>`` (by default with its pretrained timm weights) and save it as an
    xai-bench checkpoint, for ``xai-bench run --models timm:<name> --checkpoint
    timm:<name>=PATH`` or ``get_model("timm:<name>", checkpoint=PATH)``. ``kwargs`` go to the
    builder (e.g. ``pretrained_cfg_overlay=dict(file=...)`` for a local weights file, whose
    classifier is kept: ``num_classes`` defaults to the file's, and one that differs gives a
    new head, with a warning). A plain state dict loads without this step:
    ``get_model("timm:<name>", checkpoint=FILE)``. Returns the path."""
    from xai_bench.models.timm_adapter import PREFIX, resolve_timm_model
    from xai_bench.storage.checkpoint import save_checkpoint

    name = name[len(PREFIX) + 1:] if name.startswith(PREFIX + ":") else name
    model = resolve_timm_model(name)(pretrained=pretrained, **kwargs)
    recipe = {"source": "timm", "timm_model": name, "pretrained": bool(pretrained)}
    if getattr(model, "new_head", False):
        recipe["head"] = "new (randomly initialised: num_classes differs from the weights')"
    return save_checkpoint(path, model.eval(), f"{PREFIX}:{name}", dataset, recipe, {},
                           extra={"timm_data_config": model.data_config})
