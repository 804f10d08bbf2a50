"""Models by name and from files: :func:`get_model` (``xai_bench.get_model``) and
:func:`load_model_from_checkpoint`, the places that look a model up in
:data:`xai_bench.registry.MODELS`, and :func:`save_timm_checkpoint`.

The model code itself (builders, architectures) imports neither the registry, nor this
module, nor the checkpoint writer: builders are declared (:mod:`xai_bench.models.declare`)
and found by the registry, so a model's source identity holds only model code.
"""

from __future__ import annotations

from xai_bench.registry import MODELS
from xai_bench.storage.checkpoint_format import load_checkpoint, restore_model

__all__ = ["get_model", "load_model_from_checkpoint", "save_timm_checkpoint"]


def get_model(name, checkpoint=None, **kwargs):
    """Build model `name`; with `checkpoint`, restore the weights (and constructor arguments)
    saved by `xai-bench train`. Keyword arguments override the stored constructor arguments."""
    if checkpoint is not None:
        # Builders that read other checkpoint formats (e.g. the official B-cos-v2 `.pth`
        # state dicts) expose them as `builder.load_checkpoint(path, **kwargs)`.
        loader = getattr(MODELS.get(name), "load_checkpoint", None) if name in MODELS else None
        if loader is not None:
            return loader(checkpoint, **kwargs)
        return load_model_from_checkpoint(checkpoint, name=name, **kwargs)
    return MODELS.get(name)(**kwargs)


def load_model_from_checkpoint(path, name: str | None = None, **overrides):
    """Build the stored model from the registry with its stored constructor arguments
    (keyword ``overrides`` win), load the weights strictly and return it in eval mode with
    ``model.checkpoint_info`` (the metadata). ``name``, if given, must match the stored model
    (:class:`~xai_bench.storage.checkpoint_format.CheckpointError`); a stored name that is not
    registered is an :class:`~xai_bench.errors.UnknownNameError`."""
    data = load_checkpoint(path)
    stored = data["model"]
    builder = MODELS.get(stored) if name is None or name == stored else None
    return restore_model(path, builder, name=name, data=data, **overrides)


def save_timm_checkpoint(path, name: str, dataset: str = "imagenet", pretrained: bool = True,
                         **kwargs):
    """Build ``timm:<name>`` (by default with its pretrained timm weights) and save it as an
    xai-bench checkpoint, for ``xai-bench run --models timm:<name> --checkpoint
    timm:<name>=PATH`` or ``get_model("timm:<name>", checkpoint=PATH)``. ``kwargs`` go to the
    builder (e.g. ``pretrained_cfg_overlay=dict(file=...)`` for a local weights file).
    Returns the path."""
    from xai_bench.models.timm_adapter import PREFIX, resolve_timm_model
    from xai_bench.storage.checkpoint import save_checkpoint

    name = name[len(PREFIX) + 1:] if name.startswith(PREFIX + ":") else name
    model = resolve_timm_model(name)(pretrained=pretrained, **kwargs)
    recipe = {"source": "timm", "timm_model": name, "pretrained": bool(pretrained)}
    return save_checkpoint(path, model.eval(), f"{PREFIX}:{name}", dataset, recipe, {},
                           extra={"timm_data_config": model.data_config})
