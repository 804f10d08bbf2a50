"""Training: recipes, the loop, one train-and-save step and the default-model cache.

* :mod:`~xai_bench.training.recipes`: :class:`Recipe`, the presets :data:`RECIPES`,
  :func:`get_recipe`, :func:`default_recipe`;
* :mod:`~xai_bench.training.loop`: :func:`train_model` -> :class:`TrainResult`,
  :func:`loss_fn`, :func:`lr_factor`, :func:`make_optimizer`;
* :mod:`~xai_bench.training.save`: :func:`train_and_save` (train, then write the checkpoint
  with its metadata; used by ``xai-bench train`` and the cache);
* :mod:`~xai_bench.training.cache`: :func:`cached_default_model`, :func:`cache_path`,
  :func:`model_cache_dir`, :func:`seeded_model`.

Evaluation is :func:`xai_bench.compute.inference.predict`.
"""

import importlib

#: where each public name lives; imported on first use, so that importing a leaf module such
#: as ``xai_bench.training.defaults`` (the command line's defaults) does not import torch
_HOMES = {
    **dict.fromkeys(("DEFAULT_DATASET", "DEFAULT_MODELS", "is_default_model"), "defaults"),
    **dict.fromkeys(("cache_key", "cache_path", "cached_default_model", "model_cache_dir",
                     "seeded_model"), "cache"),
    **dict.fromkeys(("TrainResult", "loss_fn", "lr_factor", "make_optimizer", "train_model"),
                    "loop"),
    **dict.fromkeys(("AUGMENTATIONS", "LOSSES", "OPTIMIZERS", "RECIPES", "SCHEDULES", "Recipe",
                     "default_recipe", "get_recipe"), "recipes"),
    **dict.fromkeys(("TrainedModel", "check_output_file", "checkpoint_metrics",
                     "train_and_save"), "save"),
}


def __getattr__(name):
    if name in _HOMES:
        value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
        globals()[name] = value  # later lookups skip this function (and see monkeypatches)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Recipe", "RECIPES", "get_recipe", "default_recipe", "LOSSES", "OPTIMIZERS", "SCHEDULES",
    "AUGMENTATIONS", "TrainResult", "train_model", "loss_fn", "lr_factor", "make_optimizer",
    "TrainedModel", "train_and_save", "check_output_file", "checkpoint_metrics",
    "cached_default_model", "cache_path", "cache_key", "model_cache_dir", "seeded_model",
    "DEFAULT_MODELS", "DEFAULT_DATASET", "is_default_model",
]
