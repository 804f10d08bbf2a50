"""The embedded default: which models run without a checkpoint, on which data set. A leaf
module (no torch), so that the command line's options can show the defaults cheaply."""

from __future__ import annotations

__all__ = ["DEFAULT_MODELS", "DEFAULT_DATASET", "is_default_model"]

#: the models that are trained (once, cached) on demand on :data:`DEFAULT_DATASET`
DEFAULT_MODELS = ("bcos_vit_nano", "vit_nano")
DEFAULT_DATASET = "shapes"


def is_default_model(name: str, dataset_spec: str = DEFAULT_DATASET) -> bool:
    """Whether ``name`` on ``dataset_spec`` is a default model (trained and cached on demand
    when no checkpoint is given)."""
    return name in DEFAULT_MODELS and str(dataset_spec) == DEFAULT_DATASET
