"""The one train/eval-mode helper of xai-bench: :func:`eval_mode`.

Methods explain and metrics evaluate a model in eval mode (no batch-norm statistics updates,
no dropout, so a batched call equals the per-image calls). A model may mix frozen eval-mode
parts (e.g. a pretrained backbone kept in eval mode while a head trains) with trained ones,
so on exit every submodule gets back its *own* ``training`` flag — not the top-level flag
applied to the whole tree, which would flip the frozen parts to train mode.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model):
    """Put ``model`` in eval mode for the duration, restoring every submodule's own
    ``training`` flag afterwards (also when the body raises). Yields ``model``. Objects that
    are not ``nn.Module`` (e.g. test doubles) pass through unchanged."""
    if not isinstance(model, torch.nn.Module):
        yield model
        return
    training = [m for m in model.modules() if m.training]
    if not training:  # the usual case: already in eval mode, nothing to change or restore
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        for m in training:
            m.training = True
