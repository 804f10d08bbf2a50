"""Train a model and save its checkpoint: :func:`train_and_save`, the one place that decides
what a trained checkpoint records (used by ``xai-bench train`` and the default-model cache).

Every checkpoint it writes has the metrics ``test_accuracy``, ``train_time_s``,
``eval_time_s``, ``images_per_s``, ``epochs``, ``steps``, ``train_images`` and ``history``
(per epoch), the top-level ``recipe_name``, the data set's ``classes`` and the training
device (in the provenance).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from xai_bench.errors import OutputError
import xai_bench.training.loop as loop  # the module: tests replace loop.train_model
from xai_bench.training.recipes import Recipe, default_recipe

__all__ = ["TrainedModel", "check_output_file", "checkpoint_metrics", "train_and_save"]


@dataclass
class TrainedModel:
    """What :func:`train_and_save` returns: the trained ``model`` (CPU, eval mode, with
    ``name`` and ``checkpoint_info``), the checkpoint ``path``, the loop's ``result``, the
    stored ``metrics`` and the ``recipe`` (with its ``recipe_name``)."""

    model: object
    path: Path
    result: loop.TrainResult
    metrics: dict
    recipe: Recipe
    recipe_name: str


def seeded_model(name: str, seed: int, **kwargs):
    """``get_model(name, **kwargs)`` with its random initialisation drawn from ``seed`` (the
    recipe's), so that a recipe trains the same model whatever ran before in the process."""
    import torch

    from xai_bench.loading import get_model

    torch.manual_seed(int(seed))
    return get_model(name, **kwargs)


def check_output_file(path) -> Path:
    """Make sure a file can be written at ``path`` *before* spending time on training:
    :class:`OutputError` (one line) when ``path`` is a directory, or when its nearest existing
    ancestor is not a directory or does not accept new files (read-only, permission denied).
    Creates nothing (a probe file is removed at once)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; pass a file name "
                          f"(e.g. --out {path / 'model.pt'})")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is not a directory; choose "
                          f"another --out")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=ancestor)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or type(e).__name__} in "
                          f"{ancestor}; choose a writable location (another --out)") from None
    os.close(fd)
    os.unlink(probe)
    return path


def checkpoint_metrics(result: loop.TrainResult) -> dict:
    """The metrics a trained checkpoint records (see the module docstring)."""
    return {"test_accuracy": result.accuracy, "train_time_s": round(result.train_time_s, 2),
            "eval_time_s": round(result.eval_time_s, 2),
            "images_per_s": round(result.images_per_s, 1), "epochs": result.epochs,
            "steps": result.steps, "train_images": result.train_images,
            "history": result.history}


def train_and_save(name: str, dataset_spec: str, out, *, recipe: Recipe | None = None,
                   recipe_name: str | None = None, model_kwargs: dict | None = None,
                   device: str = "cpu", progress: bool = True, limit_train: int | None = None,
                   train_set=None, test_set=None) -> TrainedModel:
    """Train model ``name`` (built with ``model_kwargs``, its initialisation drawn from the
    recipe's seed) on ``dataset_spec`` and save the checkpoint to ``out`` atomically.

    ``recipe`` defaults to the model family's :func:`default_recipe` for the data set;
    ``recipe_name`` is recorded with it (default: the preset's name, or ``custom`` for a
    recipe passed without a name). ``train_set`` / ``test_set`` are the loaded splits of
    ``dataset_spec`` when the caller has them already. ``out`` is checked to be writable
    before training (:class:`OutputError`)."""
    from xai_bench.loading import get_model
    from xai_bench.storage.checkpoint import load_checkpoint, save_checkpoint

    out = check_output_file(out)
    model_kwargs = dict(model_kwargs or {})
    if recipe is None:
        default_name, recipe = default_recipe(get_model(name, **model_kwargs),
                                              dataset_spec)
        recipe_name = recipe_name or default_name
    recipe_name = recipe_name or "custom"
    if train_set is None or test_set is None:
        from xai_bench.data import get_dataset

        train_set = train_set if train_set is not None else get_dataset(dataset_spec, "train")
        test_set = test_set if test_set is not None else get_dataset(dataset_spec, "test")
    model = seeded_model(name, recipe.seed, **model_kwargs)
    result = loop.train_model(model, train_set, test_set, recipe, device=device,
                              progress=progress, limit_train=limit_train)
    metrics = checkpoint_metrics(result)
    path = save_checkpoint(out, model.cpu().eval(), name, dataset_spec, recipe, metrics,
                           extra={"recipe_name": recipe_name},
                           classes=getattr(test_set, "classes", None), device=device)
    model.name = name
    model.checkpoint_info = {k: v for k, v in load_checkpoint(path).items() if k != "state_dict"}
    model.checkpoint_info["path"] = str(path)
    return TrainedModel(model=model, path=Path(path), result=result, metrics=metrics,
                        recipe=recipe, recipe_name=recipe_name)
