"""The default-model cache: :func:`cached_default_model` trains a model with its default
recipe on first use (through :func:`~xai_bench.training.save.train_and_save`) and loads the
checkpoint afterwards.

Files live in ``cache_dir``, else ``$XAI_BENCH_CACHE/models``, else
``~/.cache/xai_bench/models``, named by model, data set and a hash of everything that decides
the weights (:func:`cache_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from xai_bench.training.defaults import DEFAULT_DATASET, DEFAULT_MODELS, is_default_model
from xai_bench.training.recipes import Recipe, default_recipe
from xai_bench.training.save import seeded_model, train_and_save
from xai_bench.training.shipped import shipped_checkpoint
from xai_bench.version import VERSION

__all__ = ["DEFAULT_MODELS", "DEFAULT_DATASET", "is_default_model", "model_cache_dir",
           "cache_key", "cache_path", "seeded_model", "cached_default_model"]

def model_cache_dir(cache_dir=None) -> Path:
    """``cache_dir`` if given, else ``$XAI_BENCH_CACHE/models``, else
    ``~/.cache/xai_bench/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("XAI_BENCH_CACHE")
    root = Path(root).expanduser() if root else Path.home() / ".cache" / "xai_bench"
    return root / "models"


def cache_key(name: str, config: dict, dataset_spec: str, recipe: Recipe) -> str:
    """Short hash of everything that decides the trained weights: the model and its
    arguments, the data set, the recipe, the xai-bench version and the source of the code that
    builds the model, generates the data and trains (so an edit there retrains instead of
    silently reusing a model trained by other code)."""
    from xai_bench.registry import MODELS
    from xai_bench.storage.identity import code_identity, module_closure, source_digest

    code = source_digest(sorted(set(module_closure("xai_bench.training.loop"))
                                | set(module_closure("xai_bench.data"))))
    model_code = code_identity(MODELS.get(name)).get("source") if name in MODELS else None
    payload = json.dumps(dict(model=name, config=config, dataset=dataset_spec,
                              recipe=recipe.to_dict(), version=VERSION,
                              code=code, model_code=model_code),
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_path(name: str, config: dict, dataset_spec: str, recipe: Recipe,
               cache_dir=None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(dataset_spec))
    return model_cache_dir(cache_dir) / \
        f"{name}-{safe}-{cache_key(name, config, dataset_spec, recipe)}.pt"


def _info(path: Path, cached: bool, metrics: dict) -> dict:
    # the per-epoch history stays in the checkpoint; the info is a flat summary
    return {"checkpoint": str(path), "cached": cached,
            **{k: v for k, v in (metrics or {}).items() if k != "history"}}


def cached_default_model(name: str, dataset_spec: str = DEFAULT_DATASET,
                         recipe: Recipe | None = None, epochs: int | None = None,
                         cache_dir=None, progress: bool = True, log=None,
                         device: str = "cpu", replicate: int = 0, **model_kwargs):
    """``(model, info)``: model ``name`` trained on ``dataset_spec`` with its default recipe
    (or ``recipe``; ``epochs`` overrides its epochs; replicate ``r`` trains with the recipe's
    seed + r, an independently initialised copy). Trained on first use and saved in the
    cache (file keyed by model, config, data set, recipe and xai_bench version), loaded from
    there afterwards; replicate 0 of the default recipe comes from the checkpoint shipped with
    the package where there is one (:mod:`xai_bench.training.shipped`; ``info["shipped"]``).
    ``info`` has ``checkpoint``, ``cached`` and the stored metrics (without the per-epoch
    history). The model is returned on the CPU in eval mode."""
    from xai_bench.loading import get_model, load_model_from_checkpoint

    model = get_model(name, **model_kwargs)
    recipe_name, default = default_recipe(model, dataset_spec)
    if recipe is None:
        recipe = default
    else:
        recipe_name = "custom"
    if epochs is not None:
        recipe = recipe.replace(epochs=int(epochs))
    if replicate:
        recipe = recipe.replace(seed=recipe.seed + int(replicate))
    shipped = shipped_checkpoint(name, dataset_spec, recipe, model.config, replicate) \
        if recipe_name != "custom" else None
    if shipped is not None:  # replicate 0 of the default recipe: shipped with the package
        model = load_model_from_checkpoint(shipped, name=name)
        return model, {**_info(shipped, True, model.checkpoint_info.get("metrics", {})),
                       "shipped": True}
    path = cache_path(name, model.config, dataset_spec, recipe, cache_dir)
    if path.exists():
        model = load_model_from_checkpoint(path, name=name)
        return model, _info(path, True, model.checkpoint_info.get("metrics", {}))
    if log:
        copy = f", replicate {replicate} (seed {recipe.seed})" if replicate else ""
        log(f"training {name} on {dataset_spec} ({recipe_name}, {recipe.epochs} epochs{copy}) "
            f"on {device}; cached at {path} for later runs")
    trained = train_and_save(name, dataset_spec, path, recipe=recipe, recipe_name=recipe_name,
                             model_kwargs=model_kwargs, device=device, progress=progress)
    return trained.model, _info(path, False, trained.metrics)
