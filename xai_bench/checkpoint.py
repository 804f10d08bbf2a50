"""Checkpoints: weights plus the metadata that travels with them (model name, constructor
arguments, data set, recipe, metrics, provenance). Loading is weights-only (safe)."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT = "xai-bench-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing, corrupted, of another format or for another model."""


def save_checkpoint(path, model, model_name: str, dataset: str, recipe, metrics: dict,
                    classes=None, extra: dict | None = None) -> Path:
    """Write atomically (temporary file + rename): never a half-written checkpoint."""
    from xai_bench.provenance import collect_provenance

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": model_name,
        "model_config": dict(model.config), "family": getattr(model, "family", None),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "dataset": dataset, "num_classes": model.num_classes,
        "image_size": list(model.image_size), "classes": list(classes) if classes else None,
        "recipe": recipe.to_dict() if hasattr(recipe, "to_dict") else dict(recipe or {}),
        "metrics": dict(metrics), "provenance": collect_provenance(), **(extra or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with "
                              f"`xai-bench train MODEL --out {path}`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError,
            ValueError, AttributeError, ImportError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}): the "
                              f"file is corrupted or not a torch checkpoint; retrain or "
                              f"re-copy it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xai-bench checkpoint (made by `xai-bench "
                              f"train`)")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {data['format_version']}, newer "
                              f"than this xai-bench understands; upgrade xai-bench")
    return data


def load_model_from_checkpoint(path, name: str | None = None, **overrides):
    """Build the stored model from the registry with its stored constructor arguments (keyword
    ``overrides`` win) and load the weights strictly."""
    from xai_bench.registry import MODELS

    data = load_checkpoint(path)
    if name is not None and name != data["model"]:
        raise CheckpointError(f"checkpoint {path} holds model '{data['model']}', not '{name}'")
    model = MODELS.get(data["model"])(**{**data["model_config"], **overrides})
    result = model.load_state_dict(data["state_dict"], strict=False)
    problems = [f"missing {k}" for k in result.missing_keys] + \
        [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"checkpoint {path} does not fit model '{data['model']}': "
                              f"{', '.join(problems[:5])}{more}")
    model.name = data["model"]
    model.checkpoint_info = {k: v for k, v in data.items() if k != "state_dict"}
    return model.eval()
