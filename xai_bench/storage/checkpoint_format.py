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
           "load_checkpoint", "check_checkpoint", "checkpoint_info", "restore_model",
           "key_problems", "head_hint", "strict_load"]

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
                               f"an xai-bench checkpoint or a state dict (only weights-only "
                               f"files are loaded); save torch.save(model.state_dict(), PATH) "
                               f"instead, or write a checkpoint with `xai-bench train` or "
                               f"`save_checkpoint`")
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
                              f"marker): pass a file written by `xai-bench train`, or load a "
                              f"plain state dict (.pt, .pth, .safetensors) by model name with "
                              f"get_model(NAME, checkpoint=PATH) or xai-bench run --checkpoint "
                              f"NAME=PATH (timm weights: also save_timm_checkpoint)")
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
    strict_load(model, data["state_dict"], f"checkpoint {path}", stored,
                f"the arguments {', '.join(overrides)} change the model's shapes: drop them"
                if overrides else "it was saved from another version of the model: retrain it")
    model.name = stored
    model.weights_source = "checkpoint"
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


#: how many keys of each kind an error names
_SHOWN = 3


def _listed(keys: list) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def key_problems(model_state: dict, state_dict: dict) -> tuple[list, list, list]:
    """``(missing, unexpected, mis-shaped)`` keys of ``state_dict`` against a model's own
    state dict; a size-mismatched key reads ``key (file shape) vs (model shape)``."""
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    shapes = [f"{k} {tuple(state_dict[k].shape)} in the file vs {tuple(model_state[k].shape)}"
              for k in model_state if k in state_dict
              and isinstance(state_dict[k], torch.Tensor)
              and tuple(state_dict[k].shape) != tuple(model_state[k].shape)]
    return missing, unexpected, shapes


def head_hint(model_state: dict, state_dict: dict) -> str:
    """``num_classes=N`` when the classifier (a key with ``head``, ``classifier`` or ``fc``
    in its name, ending in ``weight``) is the only thing of another size, else ''."""
    for key, value in state_dict.items():
        own = model_state.get(key)
        if own is None or not isinstance(value, torch.Tensor) or own.shape == value.shape:
            continue
        if key.endswith("weight") and any(w in key for w in ("head", "classifier", "fc")) \
                and value.dim() == 2:
            return f"num_classes={value.shape[0]}"
    return ""


def strict_load(model, state_dict: dict, source: str, name: str, fix: str) -> None:
    """Load ``state_dict`` into ``model`` strictly; else one :class:`CheckpointError` line:
    ``{source} does not fit model '{name}': 2 missing keys: ...; 1 size mismatch key: ...;
    {fix}`` (with ``num_classes=N`` named when only the classifier differs)."""
    own = model.state_dict()
    missing, unexpected, shapes = key_problems(own, state_dict)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("size mismatch", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label} key{'s' if len(keys) > 1 else ''}: "
                            f"{_listed(keys)}")
    if problems:
        hint = head_hint(own, state_dict)
        hint = f"; the classifier has another size: pass {hint}" if hint else ""
        raise CheckpointError(f"{source} does not fit model '{name}': {'; '.join(problems)}"
                              f"{hint}; {fix}")
    model.load_state_dict(state_dict, strict=True)
