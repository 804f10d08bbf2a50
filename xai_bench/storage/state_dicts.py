"""Plain weights files: a ``state_dict`` saved with ``torch.save`` (``.pt``/``.pth``, read
with ``weights_only=True``) or with safetensors (``.safetensors``), loaded strictly into a
model built by name.

What counts as a plain state dict (:func:`plain_state_dict`): a dict of tensors, or a
training script's dict that holds one under ``state_dict`` or ``model`` (next to an optimiser
state, an epoch, ...); keys that all start with ``module.`` (saved from a
``DistributedDataParallel`` wrapper) lose that prefix. :func:`~xai_bench.storage.checkpoint_format.strict_load`
loads it strictly (a mismatch is one line naming the missing, unexpected and size-mismatched
keys, the first few of each and how many, and the fix).
"""

from __future__ import annotations

from pathlib import Path

import torch

from xai_bench.storage.checkpoint_format import CheckpointError, read_weights_file

__all__ = ["SAFETENSORS_SUFFIX", "read_any_weights", "plain_state_dict"]

SAFETENSORS_SUFFIX = ".safetensors"
#: wrappers in which training scripts save the weights next to other state
_WRAPPERS = ("state_dict", "model")


def read_any_weights(path, missing_hint: str):
    """What ``path`` holds: a ``.safetensors`` file through the safetensors library (a dict
    of tensors), anything else through ``torch.load(weights_only=True)``; a missing,
    unreadable file, or safetensors not installed, is one :class:`CheckpointError` line."""
    path = Path(path).expanduser()
    if path.suffix != SAFETENSORS_SUFFIX:
        return read_weights_file(path, missing_hint)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; {missing_hint}")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"checkpoint {path} is a safetensors file, and reading it needs "
                              f"the safetensors library: pip install safetensors") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"checkpoint {path} cannot be read as safetensors "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:160]}): the "
                              f"file is truncated or not a safetensors file; copy it again"
                              ) from None


def _tensors(data) -> bool:
    return isinstance(data, dict) and bool(data) and \
        all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())


def plain_state_dict(data, path) -> dict:
    """The state dict in ``data`` (what :func:`read_any_weights` read from ``path``); a
    :class:`CheckpointError` naming what the file holds instead."""
    state = data
    if isinstance(data, dict) and not _tensors(data):
        state = next((data[k] for k in _WRAPPERS if _tensors(data.get(k))), data)
    if not _tensors(state):
        what = type(data).__name__ if not isinstance(data, dict) else \
            f"a dict with keys {', '.join(map(str, list(data)[:5]))}" if data else "an empty dict"
        raise CheckpointError(f"{path} holds {what}, neither an xai-bench checkpoint nor a "
                              f"state dict (a dict of tensors, e.g. torch.save(model."
                              f"state_dict(), PATH)); save the model's state_dict, or write "
                              f"a checkpoint with `xai-bench train`")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)
