"""Checkpoints: weights plus the metadata that travels with them (model name, constructor
arguments, data set, recipe, metrics, provenance).

:func:`save_checkpoint` writes one, atomically (temporary file + rename): never a
half-written checkpoint. The format and reading it (:func:`load_checkpoint`,
:func:`checkpoint_info`, :func:`restore_model`, :class:`CheckpointError`) live in
:mod:`xai_bench.storage.checkpoint_format` and are re-exported here; a model by name from a
checkpoint is :func:`xai_bench.loading.load_model_from_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from xai_bench.storage.atomic_io import write_torch
from xai_bench.storage.checkpoint_format import (  # noqa: F401  (re-exported)
    FORMAT, FORMAT_VERSION, REQUIRED_KEYS, CheckpointError, check_checkpoint, checkpoint_info,
    load_checkpoint, read_weights_file, restore_model,
)

__all__ = ["save_checkpoint", "FORMAT", "FORMAT_VERSION", "REQUIRED_KEYS", "CheckpointError",
           "read_weights_file", "load_checkpoint", "check_checkpoint", "checkpoint_info",
           "restore_model"]


def _plain(obj):
    """Metadata as plain Python (what ``weights_only`` loading accepts): numpy / torch
    scalars become numbers, arrays and tensors lists, paths strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, (int, float, str)) and not hasattr(obj, "tolist"):
        return type(obj).__mro__[-2](obj)  # subclasses (e.g. str enums) -> the builtin
    if isinstance(obj, torch.Tensor):
        return _plain(obj.detach().cpu().tolist())
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _plain(obj.tolist())
    if hasattr(obj, "to_dict"):
        return _plain(obj.to_dict())
    return str(obj)


def save_checkpoint(path, model, model_name: str, dataset: str, recipe, metrics: dict,
                    extra: dict | None = None, classes=None, device=None) -> Path:
    """Save ``model`` (its ``config`` and weights) with its metadata to ``path``, atomically.
    ``recipe`` is a :class:`~xai_bench.training.Recipe` or a dict; ``extra`` adds top-level
    keys (plain Python values)."""
    from xai_bench.storage.provenance import collect_provenance

    path = Path(path)
    from xai_bench.contracts.model import model_attr

    config = getattr(model, "config", None)  # no default: a checkpoint must rebuild the model
    if not isinstance(config, dict):
        raise CheckpointError(f"model '{model_name}' has no `config` dict of constructor "
                              f"arguments, so a checkpoint could not rebuild it")
    if classes is None:
        classes = getattr(model, "classes", None)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": model_name,
        "model_config": dict(config), "family": model_attr(model, "family"),
        "dataset": str(dataset), "num_classes": getattr(model, "num_classes", None),
        "image_size": list(getattr(model, "image_size", ()) or ()) or None,
        "classes": list(classes) if classes is not None else None,
        "recipe": recipe.to_dict() if hasattr(recipe, "to_dict") else dict(recipe or {}),
        "metrics": dict(metrics or {}), "provenance": collect_provenance(device),
    }
    for key, value in (extra or {}).items():
        if key in ("format", "format_version", "state_dict"):
            raise ValueError(f"extra may not override '{key}'")
        meta[key] = value
    payload = _plain(meta)
    payload["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    write_torch(path, payload)
    return path
