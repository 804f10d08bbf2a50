"""The checkpoint format, and reading it: :func:`load_checkpoint`, :func:`checkpoint_info`,
:func:`restore_model` (a model from a checkpoint, given its builder), :func:`read_weights_file`.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)`` (no arbitrary code runs on loading)::

    {"format": "xai-bench-checkpoint", "format_version": 1, "model": name,
     "model_config": {...}, "state_dict": {...}, "dataset": spec, "num_classes": C,
     "image_size": [H, W], "classes": [...], "recipe": {...}, "metrics": {...},
     "provenance": {...}, ...extra}

Every problem on loading is a :class:`CheckpointError` with a one-line message naming the
file and the fix. Writing is :func:`xai_bench.storage.checkpoint.save_checkpoint`; model code
that reads checkpoints imports this module only, so that its source identity does not hold
the writer.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from xai_bench.errors import XaiBenchError

__all__ = ["FORMAT", "FORMAT_VERSION", "REQUIRED_KEYS", "CheckpointError", "read_weights_file",
           "load_checkpoint", "check_checkpoint", "checkpoint_info", "restore_model"]

FORMAT = "xai-bench-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "model_config", "state_dict")


class CheckpointError(XaiBenchError):
    """A checkpoint is missing, corrupted, of another format or for another model."""


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
    return check_checkpoint(data, path)


def check_checkpoint(data, path) -> dict:
    """``data`` (what :func:`read_weights_file` read from ``path``) if it is a complete
    xai-bench checkpoint of a format version this xai-bench reads; else
    :class:`CheckpointError`."""
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


def restore_model(path, builder, name: str | None = None, *, data: dict | None = None,
                  **overrides):
    """Build the model stored in checkpoint ``path`` with ``builder`` (the builder of its
    stored model name) and its stored constructor arguments (keyword ``overrides`` win), load
    the weights strictly and return it in eval mode with ``model.checkpoint_info`` (the
    metadata). ``name``, if given, must match the stored model; ``data`` is the checkpoint dict
    when the caller has read it already (:func:`load_checkpoint`). Finding the builder by name
    is :func:`xai_bench.loading.load_model_from_checkpoint`."""
    data = load_checkpoint(path) if data is None else data
    stored = data["model"]
    if name is not None and name != stored:
        raise CheckpointError(f"checkpoint {path} holds model '{stored}', not '{name}'; use "
                              f"`get_model('{stored}', checkpoint=...)` or the right file")
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
