"""The default models shipped inside the package (xai_bench/weights): what a first run uses
instead of training."""

from __future__ import annotations

import pytest
import torch

import xai_bench
from xai_bench.data import get_dataset
from xai_bench.storage.identity import file_sha256
from xai_bench.compute.inference import predict
from xai_bench.training import DEFAULT_DATASET, DEFAULT_MODELS, cached_default_model
from xai_bench.training.recipes import default_recipe
from xai_bench.training.shipped import MANIFEST, SHIPPED_DIR, read_manifest, shipped_checkpoint

SHIPPED = read_manifest()


def test_every_default_model_is_shipped():
    assert MANIFEST.is_file(), "xai_bench/weights/manifest.json is missing"
    assert set(SHIPPED) == set(DEFAULT_MODELS)


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_shipped_file_matches_its_sha256_and_loads_safely(name):
    entry = SHIPPED[name]
    path = SHIPPED_DIR / entry["file"]
    assert file_sha256(path) == entry["sha256"]
    data = torch.load(path, map_location="cpu", weights_only=True)  # no code runs on load
    assert data["model"] == name and data["dataset"] == DEFAULT_DATASET
    assert data["metrics"]["test_accuracy"] == entry["test_accuracy"]
    assert path.stat().st_size < 4_000_000  # a few MB in all


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_shipped_model_is_what_a_first_run_would_train(name, tmp_path):
    """It was trained with today's default recipe and configuration, so the cache hands it
    out (and nothing is trained or written into an empty cache)."""
    model = xai_bench.get_model(name)
    recipe_name, recipe = default_recipe(model, DEFAULT_DATASET)
    assert SHIPPED[name]["recipe_name"] == recipe_name
    assert shipped_checkpoint(name, DEFAULT_DATASET, recipe, model.config) is not None
    loaded, info = cached_default_model(name, cache_dir=tmp_path, progress=False)
    assert info["shipped"] and info["cached"] and not any(tmp_path.iterdir())
    assert info["test_accuracy"] == SHIPPED[name]["test_accuracy"]


def test_only_replicate_zero_of_the_default_recipe_is_shipped():
    name = DEFAULT_MODELS[0]
    model = xai_bench.get_model(name)
    _, recipe = default_recipe(model, DEFAULT_DATASET)
    assert shipped_checkpoint(name, DEFAULT_DATASET, recipe, model.config, replicate=1) is None
    assert shipped_checkpoint(name, DEFAULT_DATASET, recipe.replace(epochs=recipe.epochs + 1),
                              model.config) is None
    other = xai_bench.get_model(name, position="additive").config
    assert shipped_checkpoint(name, DEFAULT_DATASET, recipe, other) is None
    assert shipped_checkpoint(name, "cifar10", recipe, model.config) is None


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_shipped_model_gives_its_recorded_test_accuracy(name, one_thread):
    """Guards against a change to the data generator or the model code that would leave the
    shipped weights stale: the accuracy on the embedded test split must be the recorded one."""
    model = xai_bench.get_model(name, checkpoint=str(SHIPPED_DIR / SHIPPED[name]["file"]))
    found = predict(model, get_dataset(DEFAULT_DATASET, "test"), batch_size=256)
    # at most one borderline image may flip with the thread count (float32 sums)
    assert abs(found.accuracy - SHIPPED[name]["test_accuracy"]) <= 1.0 / len(found.correct)
