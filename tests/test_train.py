"""Training recipes, losses, schedules, the training loop and the default-model cache.

The loop is exercised on the tiny fake model of conftest (pool + linear, trains in a second);
the real ViTs get a few-step smoke test (their learning is covered by ``trained_pair``)."""

import math

import pytest
import torch

import xai_bench
from conftest import TINY, ItemsOnly, TinyLinear
from xai_bench.data import SyntheticShapes
from xai_bench.compute.inference import predict
from xai_bench.training import (
    RECIPES, Recipe, cache_path, cached_default_model, default_recipe, get_recipe, loss_fn,
    lr_factor, model_cache_dir, train_model,
)


def evaluate(model, dataset):
    return predict(model, dataset, cache=False).accuracy


@pytest.fixture(scope="module")
def shapes_1k():
    return SyntheticShapes("train", n=1024, seed=0), SyntheticShapes("test", n=256, seed=0)


def fast(recipe_name="conventional-quick", **changes):
    base = dict(epochs=1, lr=1e-2, augmentation="none")
    return get_recipe(recipe_name).replace(**{**base, **changes})


# ---- recipes --------------------------------------------------------------------------------

def test_recipes_round_trip():
    for recipe in RECIPES.values():
        assert Recipe.from_dict(recipe.to_dict()) == recipe
    custom = Recipe(epochs=3, label_smoothing=0.1, grad_clip=1.0, schedule="step",
                    milestones=[0.5, 0.8], seed=7)
    assert Recipe.from_dict(custom.to_dict()) == custom
    assert custom.replace(epochs=None, lr=0.5).lr == 0.5 and custom.epochs == 3
    with pytest.raises(ValueError, match="unknown recipe fields: epochz"):
        Recipe.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        Recipe(loss="mse")
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        get_recipe("nope")
    epochs = RECIPES["bcos-quick"].epochs
    get_recipe("bcos-quick").epochs = 99  # a copy: the preset is untouched
    assert RECIPES["bcos-quick"].epochs == epochs


def test_presets_follow_the_paper():
    bq, cq, bp, cp = (RECIPES[k] for k in ("bcos-quick", "conventional-quick", "bcos-paper",
                                           "conventional-paper"))
    assert (bq.optimizer, bq.loss, bq.lr, bq.weight_decay, bq.schedule) == \
        ("adam", "bce", 1e-3, 0.0, "cosine")
    assert (cq.optimizer, cq.loss, cq.lr, cq.weight_decay) == ("adamw", "ce", 1e-3, 1e-4)
    assert bq.batch_size == cq.batch_size == 64 and bq.warmup_epochs == 1
    assert (bp.epochs, bp.batch_size, bp.schedule, bp.milestones, bp.augmentation) == \
        (100, 256, "step", [0.6], "randaugment")
    assert (cp.epochs, cp.batch_size, cp.loss, cp.optimizer) == (100, 1024, "ce", "adamw")


def test_default_recipe_by_family_and_dataset():
    bcos, vit = TinyLinear(loss="bce"), TinyLinear(loss="ce")
    assert default_recipe(bcos, "shapes")[0] == "bcos-quick"
    assert default_recipe(vit, "shapes:n=100")[0] == "conventional-quick"
    assert default_recipe(vit, "cifar10:/data/c10")[0] == "conventional-paper"
    assert default_recipe(bcos, "imagenet:/x")[0] == "bcos-paper"
    assert default_recipe(xai_bench.get_model("bcos_vit_nano", **TINY), "shapes")[1].loss == "bce"
    assert default_recipe(xai_bench.get_model("vit_nano", **TINY), "shapes")[1].loss == "ce"


# ---- losses and schedules -------------------------------------------------------------------

def test_bce_uses_one_hot_targets_and_ce_softmax():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    y = torch.tensor([1, 2])
    onehot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    F = torch.nn.functional
    torch.testing.assert_close(loss_fn("bce", logits, y),
                               F.binary_cross_entropy_with_logits(logits, onehot))
    torch.testing.assert_close(loss_fn("ce", logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(loss_fn("ce", logits, y, 0.1),
                               F.cross_entropy(logits, y, label_smoothing=0.1))
    torch.testing.assert_close(loss_fn("bce", logits, y, 0.3),
                               F.binary_cross_entropy_with_logits(logits, onehot * 0.7 + 0.1))
    with pytest.raises(ValueError, match="unknown loss"):
        loss_fn("hinge", logits, y)


def test_training_uses_the_recipe_loss(monkeypatch):
    import xai_bench.training.loop as train_mod

    seen = []
    real = train_mod.loss_fn
    monkeypatch.setattr(train_mod, "loss_fn", lambda kind, *a: seen.append(kind) or real(kind, *a))
    data = SyntheticShapes("train", n=64, seed=1)
    for name in ("bcos-quick", "conventional-quick"):
        train_model(TinyLinear(), data, data, fast(name), progress=False, max_steps=1)
    assert seen == ["bce", "ce"]


def test_schedules():
    r = Recipe(epochs=10, warmup_epochs=1, schedule="cosine")
    assert lr_factor(r, 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(r, 9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(r, 10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(r, 55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(r, 99, 100, 10) < 0.01
    s = Recipe(schedule="step", milestones=[0.6], warmup_epochs=0)
    assert lr_factor(s, 59, 100, 10) == 1.0 and lr_factor(s, 60, 100, 10) == pytest.approx(0.1)
    s2 = Recipe(schedule="step", milestones=[0.5, 0.75], gamma=0.5, warmup_epochs=0)
    assert [lr_factor(s2, i, 100, 10) for i in (0, 50, 80)] == [1.0, 0.5, 0.25]
    c = Recipe(schedule="constant", warmup_epochs=0)
    assert lr_factor(c, 0, 10, 10) == lr_factor(c, 9, 10, 10) == 1.0
    # a warm-up longer than the run still reaches the full rate
    assert lr_factor(Recipe(warmup_epochs=5), 1, 2, 1) == pytest.approx(1.0)


# ---- the loop -------------------------------------------------------------------------------

def test_short_training_learns(shapes_1k):
    train_set, test_set = shapes_1k
    model = TinyLinear(pool=8)
    before = evaluate(model, test_set)
    result = train_model(model, train_set, test_set, fast(epochs=3), progress=False)
    assert result.steps == 3 * (1024 // 64) and result.epochs == len(result.history) == 3
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.accuracy == pytest.approx(evaluate(model, test_set))
    assert result.accuracy > max(0.22, before + 0.08)  # chance is 0.1 (a linear model: ~0.35)
    assert result.images_per_s > 0 and result.train_time_s > 0 and result.eval_time_s > 0
    assert set(result.history[0]) >= {"epoch", "loss", "lr", "time_s", "train_accuracy"}
    assert not any(p.grad is not None for p in model.parameters())


def test_bce_training_learns(shapes_1k):
    train_set, test_set = shapes_1k
    result = train_model(TinyLinear(loss="bce"), train_set, test_set,
                         fast("bcos-quick", epochs=3, lr=3e-2), progress=False)
    assert result.accuracy > 0.22


def test_training_is_deterministic_and_limits(shapes_1k):
    train_set, test_set = shapes_1k
    recipe = fast(epochs=2, augmentation="shapes", seed=3)
    a, b = TinyLinear(), TinyLinear()
    b.load_state_dict(a.state_dict())
    ra = train_model(a, train_set, test_set, recipe, progress=False, limit_train=256)
    rb = train_model(b, train_set, test_set, recipe, progress=False, limit_train=256)
    assert ra.steps == 2 * (256 // 64)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert ra.accuracy == rb.accuracy
    short = train_model(TinyLinear(), train_set, test_set, recipe, progress=False, max_steps=3)
    assert short.steps == 3 and short.epochs == 1
    tiny = train_model(TinyLinear(), train_set, test_set, recipe, progress=False, limit_train=10)
    assert tiny.steps == 2  # a batch larger than the data: one step of 10 per epoch


_Lazy = ItemsOnly


def test_dataloader_path_matches_in_memory_path(shapes_1k):
    train_set, test_set = shapes_1k
    recipe = fast(epochs=1, seed=1)
    a, b = TinyLinear(), TinyLinear()
    b.load_state_dict(a.state_dict())
    ra = train_model(a, train_set, test_set, recipe, progress=False, limit_train=192)
    rb = train_model(b, _Lazy(train_set), _Lazy(test_set), recipe, progress=False,
                     limit_train=192)
    torch.testing.assert_close(a.linear.weight, b.linear.weight)
    assert ra.accuracy == rb.accuracy


def test_divergence_is_reported(shapes_1k):
    model = TinyLinear()
    with torch.no_grad():
        model.linear.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        train_model(model, shapes_1k[0], shapes_1k[1], fast(), progress=False, max_steps=2)


@pytest.mark.parametrize("name", ["bcos_vit_nano", "vit_nano"])
def test_real_models_train_a_few_steps(name, shapes_small):
    train_set, test_set = shapes_small
    model = xai_bench.get_model(name, **{**TINY, "depth": 1})
    before = [p.detach().clone() for p in model.parameters()]
    _, recipe = default_recipe(model, "shapes")
    result = train_model(model, train_set, torch.utils.data.Subset(test_set, range(32)),
                         recipe.replace(batch_size=16), progress=False, max_steps=2)
    assert result.steps == 2 and math.isfinite(result.history[0]["loss"])
    assert any(not torch.equal(p0, p) for p0, p in zip(before, model.parameters()))


# ---- the default-model cache ----------------------------------------------------------------

def test_model_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XAI_BENCH_CACHE", str(tmp_path / "c"))
    assert model_cache_dir() == tmp_path / "c" / "models"
    assert model_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("XAI_BENCH_CACHE")
    assert model_cache_dir().parts[-3:] == (".cache", "xai_bench", "models")
    r = Recipe()
    assert cache_path("m", {"a": 1}, "shapes", r) != cache_path("m", {"a": 2}, "shapes", r)
    assert cache_path("m", {}, "shapes", r) != cache_path("m", {}, "shapes", r.replace(epochs=2))
    assert cache_path("m", {}, "cifar10:/a/b", r).name.startswith("m-cifar10__a_b-")


def test_cached_default_model_trains_once(tmp_path, monkeypatch, tiny_model):
    import xai_bench.data as data_mod
    import xai_bench.training.loop as train_mod

    calls = []
    real = train_mod.train_model

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_model", counting)
    monkeypatch.setattr(data_mod, "get_dataset",
                        lambda spec, split, **kw: SyntheticShapes(split, n=256, seed=0))
    logs = []
    m1, info1 = cached_default_model(tiny_model, epochs=1, cache_dir=tmp_path, progress=False,
                                     log=logs.append)
    m2, info2 = cached_default_model(tiny_model, epochs=1, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and not info1["cached"] and info2["cached"] and len(logs) == 1
    assert info1["checkpoint"] == info2["checkpoint"]
    assert [p.name for p in tmp_path.iterdir()] == [tmp_path.joinpath(info1["checkpoint"]).name]
    assert info2["test_accuracy"] == pytest.approx(info1["test_accuracy"])
    assert m1.checkpoint_info["recipe"] == m2.checkpoint_info["recipe"]
    assert m2.checkpoint_info["recipe"]["epochs"] == 1 and m2.checkpoint_info["dataset"] == "shapes"
    x = m1.encode(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(m1(x), m2(x), rtol=0, atol=0)
    # the initialisation comes from the recipe's seed, not from whatever ran before
    torch.manual_seed(12345)
    m3, _ = cached_default_model(tiny_model, epochs=1, cache_dir=tmp_path / "again",
                                 progress=False)
    torch.testing.assert_close(m3(x), m1(x), rtol=0, atol=0)
    assert len(calls) == 2
    # another recipe (here: epochs) is another cache entry
    cached_default_model(tiny_model, epochs=2, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3 and len([p for p in tmp_path.iterdir() if p.is_file()]) == 2


def test_mosaic_batches_are_grid_pointing_grids_with_multi_label_targets():
    from xai_bench.data.augment import mosaic_batch
    from xai_bench.data.grids import make_grids

    images = torch.rand(8, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    gen = torch.Generator().manual_seed(0)
    out, counts = mosaic_batch(images, labels, 5, 0.25, generator=gen)
    picks = torch.randint(0, 8, (2, 4), generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and counts.shape == (8, 5)
    torch.testing.assert_close(out[:2], make_grids(images[picks], (16, 16)))  # same layout
    torch.testing.assert_close(out[2:], images[2:])
    assert counts[:2].sum(1).tolist() == [4.0, 4.0] and counts[2:].sum(1).tolist() == [1.0] * 6
    for row, cells in zip(counts[:2], picks):
        assert row.tolist() == torch.bincount(labels[cells], minlength=5).float().tolist()
    # bce: every present class is a positive; ce: the classes' shares are the target
    logits = torch.randn(8, 5)
    F = torch.nn.functional
    torch.testing.assert_close(loss_fn("bce", logits, counts),
                               F.binary_cross_entropy_with_logits(logits, (counts > 0).float()))
    torch.testing.assert_close(loss_fn("ce", logits, counts),
                               F.cross_entropy(logits, counts / counts.sum(1, keepdim=True)))
    assert mosaic_batch(images, labels, 5, 0.0)[0] is images


def test_quick_recipes_train_on_mosaics(shapes_1k):
    train_set, test_set = shapes_1k
    assert RECIPES["bcos-quick"].mosaic == RECIPES["conventional-quick"].mosaic == 0.25
    result = train_model(TinyLinear(), train_set, test_set, fast("conventional-quick"),
                         progress=False, max_steps=3)
    assert math.isfinite(result.history[-1]["loss"]) and result.steps == 3
    with pytest.raises(ValueError, match="mosaic"):
        Recipe(mosaic=1.5)


# ---- train_and_save: one checkpoint format for `xai-bench train` and the cache ---------------

def test_train_and_save_and_the_cache_record_the_same_metadata(tmp_path, monkeypatch,
                                                               tiny_model):
    import xai_bench.data as data_mod
    from xai_bench.storage.checkpoint import checkpoint_info
    from xai_bench.errors import ConfigError, OutputError
    from xai_bench.training import train_and_save

    monkeypatch.setattr(data_mod, "get_dataset",
                        lambda spec, split, **kw: SyntheticShapes(split, n=128, seed=0))
    _, info = cached_default_model(tiny_model, epochs=1, cache_dir=tmp_path / "cache",
                                   progress=False)
    assert "history" not in info and {"test_accuracy", "train_images"} <= set(info)
    trained = train_and_save(tiny_model, "shapes", tmp_path / "out.pt",
                             recipe=get_recipe("conventional-quick").replace(epochs=1),
                             recipe_name="conventional-quick", progress=False)
    cached, saved = checkpoint_info(info["checkpoint"]), checkpoint_info(trained.path)
    assert set(cached) == set(saved) and set(cached["metrics"]) == set(saved["metrics"])
    assert set(saved["metrics"]) == {"test_accuracy", "train_time_s", "eval_time_s",
                                     "images_per_s", "epochs", "steps", "train_images",
                                     "history"}
    assert cached["recipe_name"] == saved["recipe_name"] == "conventional-quick"
    assert cached["classes"] == saved["classes"] and saved["provenance"]["device"] == "cpu"
    assert saved["metrics"]["train_images"] == 128 and len(saved["metrics"]["history"]) == 1
    assert trained.model.checkpoint_info["path"] == str(trained.path)
    assert trained.metrics["test_accuracy"] == trained.result.accuracy
    # the same recipe and seed: the same weights as the cached model
    torch.testing.assert_close(trained.model.linear.weight,
                               xai_bench.get_model(tiny_model, checkpoint=info["checkpoint"])
                               .linear.weight, rtol=0, atol=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        train_and_save(tiny_model, "shapes", blocker / "x.pt", progress=False)
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("nope")
