"""The checkpoint format, and reading it: :func:`load_checkpoint`, :func:`checkpoint_info`,
:func:`restore_model` (a model from a checkpoint, given its builder), :func:`read_weights_file`.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)`` (no arbitrary code runs on loading)::

    {"format": "xai-bench-checkpoint", "format_version": 1, "model": name,
     "model_config": {...}, "state_dict": {...}, "dataset": spec, "num_classes": C,
     "image_size": [H, W], "classes": [...], "recipe": {...}, "metrics": {...},
     "provenance": {...}, ...extra}

Every problem on loading is a :class:`CheckpointError` with a one-line message naming the
file and the fix. The stored model configuration is sized before the model is built
(:func:`check_model_size`: the model is built on torch's ``meta`` device, which allocates
nothing): one asking for more than :data:`MAX_PARAMETERS` parameters, or for far more than the
checkpoint's own weights hold, is refused. Writing is :func:`xai_bench.storage.checkpoint.save_checkpoint`; model code
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
           "forbidden_global", "MAX_PARAMETERS", "check_model_size",
           "load_checkpoint", "check_checkpoint", "checkpoint_info", "restore_model"]

FORMAT = "xai-bench-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "model_config", "state_dict")


#: the most parameters (and buffer elements) a checkpoint's configuration may ask for: 8 GB
#: in float32, far above any model this benchmark runs, far below a damaged configuration's
MAX_PARAMETERS = 2_000_000_000
#: a configuration that asks for more than twice the stored elements, and this many more, does
#: not describe the stored weights (smaller differences are named by the strict load)
_SIZE_SLACK = 10_000_000


class CheckpointError(XaiBenchError):
    """A checkpoint is missing, corrupted, of another format or for another model."""


#: how torch's weights-only unpickler names what it refused, most specific first: "Unsupported
#: global: GLOBAL io.open was not an allowed global", "Trying to load unsupported GLOBAL
#: posix.system whose module posix is blocked", "... but got <class 'x.Y'>"
_QUALIFIED = r"([\w<>]+(?:\.[\w<>]+)+)"  # module.name: "by" in "global by default" is not one
_FORBIDDEN = (re.compile(r"global:?\s+" + _QUALIFIED + r"\s+was not an allowed global",
                         re.IGNORECASE),
              re.compile(r"\bGLOBAL\s+" + _QUALIFIED, re.IGNORECASE),
              re.compile(r"allowlisted via.*?but got\s+<class '([^']+)'>", re.IGNORECASE))
_PICKLE_WORDS = ("unsupported global", "not an allowed global", "is blocked", "allowlisted via")


def forbidden_global(message: str) -> str | None:
    """What a refused weights-only load names as the forbidden global ("?" if it names none);
    None when ``message`` is not such a refusal."""
    text = " ".join(str(message).split())
    if not any(word in text.lower() for word in _PICKLE_WORDS):
        return None
    for pattern in _FORBIDDEN:
        match = pattern.search(text)
        if match:
            return match.group(1).rstrip(".,;:")
    return "?"


def _read_error(path: Path, error: Exception) -> CheckpointError:
    text = " ".join(str(error).split())
    if isinstance(error, IsADirectoryError):
        return CheckpointError(f"checkpoint {path} is a directory; pass the checkpoint file")
    if isinstance(error, PermissionError):
        return CheckpointError(f"checkpoint {path} cannot be read: permission denied")
    found = forbidden_global(text)
    if found is not None:
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
    kwargs = {**data["model_config"], **overrides}
    try:
        check_model_size(path, stored, builder, kwargs, data["state_dict"])
        model = builder(**kwargs)
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


def _meta_size(builder, kwargs) -> int | None:
    """Elements of the state dict ``builder(**kwargs)`` would have, counted on the ``meta``
    device (nothing allocated); None when the builder cannot run there. A TypeError or
    ValueError (arguments the builder refuses) propagates: the real build would raise it."""
    try:  # the random state is left as it was: the sizing must not shift later draws
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = builder(**kwargs)
        return sum(t.numel() for t in model.state_dict().values()
                   if isinstance(t, torch.Tensor))
    except (TypeError, ValueError):
        raise
    except Exception:  # noqa: BLE001 - e.g. a builder that reads values: left to the build
        return None


def _count(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.1f} billion"
    return f"{n / 1e6:.1f} million" if n >= 10**6 else f"{n:,}"


def check_model_size(path, stored: str, builder, kwargs: dict, state_dict: dict) -> None:
    """A :class:`CheckpointError` if the model that ``builder(**kwargs)`` would build is too
    large (:data:`MAX_PARAMETERS`) or far larger than ``state_dict``: decided before it is
    built, so that a damaged configuration cannot allocate hundreds of GB first."""
    size = _meta_size(builder, kwargs)
    if size is None:
        return
    held = sum(t.numel() for t in state_dict.values() if isinstance(t, torch.Tensor))
    if size > MAX_PARAMETERS:
        raise CheckpointError(f"checkpoint {path}: its model_config asks for a '{stored}' of "
                              f"{_count(size)} parameters, more than the {_count(MAX_PARAMETERS)}"
                              f" xai-bench builds (MAX_PARAMETERS); the configuration is damaged"
                              f" or edited: retrain the model or copy the file again")
    if size > 2 * held and size - held > _SIZE_SLACK:
        raise CheckpointError(f"checkpoint {path}: its model_config asks for a '{stored}' of "
                              f"{_count(size)} parameters but its weights hold {_count(held)}; "
                              f"the configuration does not describe the weights (damaged or "
                              f"edited): retrain the model or copy the file again")
