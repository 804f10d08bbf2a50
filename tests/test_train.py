import math

import pytest
import torch

import xai_bench
from xai_bench.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from xai_bench.train import (
    RECIPES, Recipe, cached_default_model, default_recipe, evaluate, loss_fn, lr_factor,
    train_model,
)

TINY = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=(8, 16))


def test_recipes_round_trip_and_defaults():
    for name, recipe in RECIPES.items():
        assert Recipe.from_dict(recipe.to_dict()) == recipe
    bcos, vit = xai_bench.get_model("bcos_vit_nano"), xai_bench.get_model("vit_nano")
    assert default_recipe(bcos, "shapes")[0] == "bcos-quick"
    assert default_recipe(vit, "shapes")[0] == "conventional-quick"
    assert default_recipe(vit, "cifar10")[0] == "conventional-paper"
    assert RECIPES["bcos-quick"].loss == "bce" and RECIPES["conventional-quick"].loss == "ce"
    with pytest.raises(ValueError, match="unknown recipe fields"):
        Recipe.from_dict({"epochz": 3})


def test_bce_uses_one_hot_targets():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(loss_fn("bce", logits, torch.tensor([1])), expected)
    torch.testing.assert_close(loss_fn("ce", logits, torch.tensor([1])),
                               torch.nn.functional.cross_entropy(logits, torch.tensor([1])))


def test_schedules():
    r = Recipe(epochs=10, warmup_epochs=1, schedule="cosine")
    assert lr_factor(r, 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(r, 10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(r, 99, 100, 10) < 0.01
    s = Recipe(schedule="step", milestones=[0.6], warmup_epochs=0)
    assert lr_factor(s, 59, 100, 10) == 1.0 and lr_factor(s, 60, 100, 10) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["vit_nano", "bcos_vit_nano"])
def test_short_training_learns(name, shapes_small):
    train_set, test_set = shapes_small
    model = xai_bench.get_model(name, **TINY)
    before = evaluate(model, test_set)
    _, recipe = default_recipe(model, "shapes")
    recipe.epochs, recipe.lr = 4, 3e-3
    result = train_model(model, train_set, test_set, recipe, progress=False)
    assert result.steps == 4 * (600 // 64) and len(result.history) == 4
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.accuracy > max(0.15, before + 0.05)  # chance is 0.1


def test_checkpoint_round_trip(tmp_path, shapes_small):
    model = xai_bench.get_model("bcos_vit_nano", position="additive", **TINY).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, "bcos_vit_nano", "shapes", RECIPES["bcos-quick"],
                           {"test_accuracy": 0.5}, classes=shapes_small[1].classes)
    restored = xai_bench.get_model("bcos_vit_nano", checkpoint=path)
    assert restored.config["position"] == "additive"
    x = model.encode(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(restored(x), model(x))
    info = restored.checkpoint_info
    assert info["recipe"]["loss"] == "bce" and info["metrics"]["test_accuracy"] == 0.5
    assert info["dataset"] == "shapes" and info["provenance"]["torch"]
    assert len(list(tmp_path.iterdir())) == 1  # no temporary files left


def test_checkpoint_errors(tmp_path):
    model = xai_bench.get_model("vit_nano", **TINY)
    good = save_checkpoint(tmp_path / "good.pt", model, "vit_nano", "shapes", RECIPES["bcos-quick"], {})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(junk)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an xai-bench checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="holds model 'vit_nano', not 'bcos_vit_nano'"):
        xai_bench.get_model("bcos_vit_nano", checkpoint=good)
    data = torch.load(good, weights_only=True)
    data["state_dict"]["blocks.0.extra"] = torch.zeros(1)
    del data["state_dict"]["head.weight"]
    torch.save(data, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="missing head.weight, unexpected blocks.0.extra"):
        xai_bench.get_model("vit_nano", checkpoint=tmp_path / "mismatch.pt")


def test_cached_default_model_trains_once(tmp_path, monkeypatch):
    import xai_bench.train as train_mod

    calls = []
    real = train_mod.train_model

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_model", counting)
    monkeypatch.setattr(train_mod, "get_dataset", None, raising=False)
    small = Recipe(epochs=1, augmentation="none", batch_size=128)
    import xai_bench.data as data_mod
    from xai_bench.data import SyntheticShapes
    monkeypatch.setattr(data_mod, "get_dataset",
                        lambda spec, split, **kw: SyntheticShapes(split, n=256 if split == "train" else 64))
    m1, info1 = cached_default_model("vit_nano", recipe=small, cache_dir=tmp_path, progress=False)
    m2, info2 = cached_default_model("vit_nano", recipe=small, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and not info1["cached"] and info2["cached"]
    assert info2["test_accuracy"] == pytest.approx(info1["test_accuracy"])
    x = m1.encode(torch.rand(1, 3, 32, 32))
    torch.testing.assert_close(m1.eval()(x), m2(x))
    assert not math.isnan(info2["test_accuracy"])
