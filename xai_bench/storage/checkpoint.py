"""Checkpoints: weights plus the metadata that travels with them (model name, constructor
arguments, data set, recipe, metrics, provenance).

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)`` (no arbitrary code runs on loading)::

    {"format": "xai-bench-checkpoint", "format_version": 1, "model": name,
     "model_config": {...}, "state_dict": {...}, "dataset": spec, "num_classes": C,
     "image_size": [H, W], "classes": [...], "recipe": {...}, "metrics": {...},
     "provenance": {...}, ...extra}

Files are written atomically (temporary file + rename): never a half-written checkpoint.
Every problem on loading is a :class:`CheckpointError` with a one-line message naming the
file and the fix.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from xai_bench.storage.atomic_io import write_torch
from xai_bench.errors import XaiBenchError

FORMAT = "xai-bench-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "model_config", "state_dict")


class CheckpointError(XaiBenchError):
    """A checkpoint is missing, corrupted, of another format or for another model."""


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


def _read_error(path: Path, error: Exception) -> CheckpointError:
    text = " ".join(str(error).split())
    if isinstance(error, IsADirectoryError):
        return CheckpointError(f"checkpoint {path} is a directory; pass the checkpoint file")
    if isinstance(error, PermissionError):
        return CheckpointError(f"checkpoint {path} cannot be read: permission denied")
    lowered = text.lower()
    if "unsupported global" in lowered or "not an allowed global" in lowered:
        match = re.search(r"global:?\s+global\s+(\S+)", text, re.IGNORECASE) or \
            re.search(r"global\s+(\S+)\s+was not an allowed global", text, re.IGNORECASE)
        found = match.group(1) if match else "?"
        return CheckpointError(f"checkpoint {path} holds pickled Python objects ({found}), not "
                               f"an xai-bench checkpoint (only weights-only files are loaded); "
                               f"write it with `xai-bench train` or `save_checkpoint`")
    return CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}): the "
                           f"file is truncated, corrupted or not a torch file; retrain it or "
                           f"copy it again")


def read_weights_file(path, missing_hint: str):
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file is a
    one-line :class:`CheckpointError` (``missing_hint`` says what to do if it is missing)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; {missing_hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError,
            ValueError, AttributeError, ImportError, KeyError, IndexError, TypeError,
            UnicodeDecodeError, MemoryError) as e:
        raise _read_error(path, e) from None


def load_checkpoint(path) -> dict:
    """The checkpoint dict (weights on the CPU), validated; :class:`CheckpointError` if the
    file is missing, unreadable or not an xai-bench checkpoint."""
    path = Path(path).expanduser()
    data = read_weights_file(path, f"check the path or train one with `xai-bench train MODEL "
                                   f"--out {path}`")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xai-bench checkpoint (no '{FORMAT}' format "
                              f"marker); pass a file written by `xai-bench train`")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; this "
                              f"xai-bench reads up to {FORMAT_VERSION}: upgrade xai-bench")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing or not isinstance(data["state_dict"], dict) or \
            not isinstance(data["model_config"], dict):
        raise CheckpointError(f"checkpoint {path} is incomplete (missing or malformed "
                              f"{', '.join(missing) or 'state_dict/model_config'}); retrain it")
    return data


def checkpoint_info(path) -> dict:
    """The checkpoint's metadata (everything except the weights)."""
    return {k: v for k, v in load_checkpoint(path).items() if k != "state_dict"}


def load_model_from_checkpoint(path, name: str | None = None, **overrides):
    """Build the stored model from the registry with its stored constructor arguments
    (keyword ``overrides`` win), load the weights strictly and return it in eval mode with
    ``model.checkpoint_info`` (the metadata). ``name``, if given, must match the stored model."""
    from xai_bench.registry import MODELS

    data = load_checkpoint(path)
    stored = data["model"]
    if name is not None and name != stored:
        raise CheckpointError(f"checkpoint {path} holds model '{stored}', not '{name}'; use "
                              f"`get_model('{stored}', checkpoint=...)` or the right file")
    builder = MODELS.get(stored)  # UnknownNameError (one line) if it is not registered
    try:
        model = builder(**{**data["model_config"], **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot build model '{stored}' from its "
                              f"stored arguments{' and overrides' if overrides else ''}: "
                              f"{' '.join(str(e).split())}") from None
    try:
        result = model.load_state_dict(data["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        detail = "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else "")
        raise CheckpointError(f"checkpoint {path} does not fit model '{stored}': "
                              f"{detail or ' '.join(str(e).split())[:300]}") from None
    problems = [f"missing {k}" for k in result.missing_keys] + \
        [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"checkpoint {path} does not fit model '{stored}': "
                              f"{', '.join(problems[:5])}{more}; it was saved from another "
                              f"version of the model: retrain it")
    model.name = stored
    model.checkpoint_info = {k: v for k, v in data.items() if k != "state_dict"}
    model.checkpoint_info["path"] = str(path)
    return model.eval()
