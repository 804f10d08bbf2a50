"""Checkpoints: round trip through the registry, metadata, atomic writes, and one-line errors
for every broken file; provenance."""

import numpy as np
import pytest
import torch

import xai_bench
from conftest import TINY, TinyLinear
from xai_bench.contracts.model_args import ModelArgumentError
from xai_bench.loading import load_model_from_checkpoint
from xai_bench.storage.checkpoint import (
    FORMAT, CheckpointError, checkpoint_info, load_checkpoint, save_checkpoint,
)
from xai_bench.storage.provenance import collect_provenance
from xai_bench.training import RECIPES, Recipe


@pytest.fixture()
def good(tmp_path, tiny_model):
    model = xai_bench.get_model(tiny_model, pool=4)
    return save_checkpoint(tmp_path / "good.pt", model, tiny_model, "shapes",
                           RECIPES["conventional-quick"], {"test_accuracy": 0.5})


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_round_trip_restores_identical_outputs(tmp_path, tiny_model):
    model = xai_bench.get_model(tiny_model, pool=4, loss="bce").eval()
    with torch.no_grad():
        model.linear.weight.normal_()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, tiny_model, "shapes:n=256",
                           Recipe(epochs=2), {"test_accuracy": np.float64(0.75)},
                           extra={"note": "hello", "sizes": np.arange(3)},
                           classes=[f"c{i}" for i in range(10)])
    restored = xai_bench.get_model(tiny_model, checkpoint=path)
    assert type(restored) is TinyLinear and not restored.training
    assert restored.config == model.config and restored.name == tiny_model
    x = model.encode(torch.rand(3, 3, 32, 32))
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    info = restored.checkpoint_info
    assert info["format"] == FORMAT and info["format_version"] == 1
    assert info["model"] == tiny_model and info["dataset"] == "shapes:n=256"
    assert info["num_classes"] == 10 and info["image_size"] == [32, 32]
    assert info["classes"][3] == "c3" and info["recipe"]["epochs"] == 2
    assert info["metrics"] == {"test_accuracy": 0.75}
    assert type(info["metrics"]["test_accuracy"]) is float
    assert info["note"] == "hello" and info["sizes"] == [0, 1, 2]
    assert info["provenance"]["torch"] and "state_dict" not in info
    assert checkpoint_info(path)["model"] == tiny_model
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary files left
    # the raw file is a plain dict readable with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"format", "format_version", "model", "model_config", "state_dict",
                        "dataset", "num_classes", "image_size", "classes", "recipe", "metrics",
                        "provenance"}
    # without a name, and with constructor overrides that keep the weights' shapes
    assert load_model_from_checkpoint(path).config["pool"] == 4
    assert load_model_from_checkpoint(path, name=tiny_model, loss="ce").training_loss == "ce"


def test_real_model_round_trip(tmp_path):
    model = xai_bench.get_model("bcos_vit_nano", position="additive", **TINY).eval()
    path = save_checkpoint(tmp_path / "b.pt", model, "bcos_vit_nano", "shapes",
                           RECIPES["bcos-quick"], {"test_accuracy": 0.5})
    restored = xai_bench.get_model("bcos_vit_nano", checkpoint=path)
    assert restored.config["position"] == "additive"
    x = model.encode(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(restored(x), model(x))
    assert restored.checkpoint_info["recipe"]["loss"] == "bce"


def test_missing_and_unreadable_files(tmp_path, good):
    with pytest.raises(CheckpointError, match="does not exist") as e:
        load_checkpoint(tmp_path / "missing.pt")
    assert "missing.pt" in one_line(e) and "xai-bench train" in one_line(e)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(CheckpointError, match="cannot be read") as e:
        load_checkpoint(junk)
    assert "junk.pt" in one_line(e)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(empty)
    data = good.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 30):
        truncated = tmp_path / f"truncated{cut}.pt"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="cannot be read") as e:
            load_checkpoint(truncated)
        one_line(e)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("payload", [torch.zeros(3), [1, 2], {"weights": torch.zeros(2)},
                                     {"format": "other", "state_dict": {}}])
def test_other_torch_files_are_not_checkpoints(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="not an xai-bench checkpoint") as e:
        load_checkpoint(path)
    assert str(path) in one_line(e)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(TinyLinear(), path)  # a whole pickled module: never unpickled
    with pytest.raises(CheckpointError, match="pickled Python objects") as e:
        load_checkpoint(path)
    one_line(e)


def test_incomplete_and_newer_checkpoints(tmp_path, good):
    data = torch.load(good, weights_only=True)
    newer = {**data, "format_version": 99}
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="upgrade xai-bench"):
        load_checkpoint(tmp_path / "newer.pt")
    incomplete = {k: v for k, v in data.items() if k != "state_dict"}
    torch.save(incomplete, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="incomplete .*state_dict"):
        load_checkpoint(tmp_path / "incomplete.pt")


def test_wrong_model_and_mismatched_weights(tmp_path, good, tiny_model):
    message = f"holds model '{tiny_model}', not 'vit_nano'"
    with pytest.raises(CheckpointError, match=message) as e:
        xai_bench.get_model("vit_nano", checkpoint=good)
    assert str(good) in one_line(e)
    data = torch.load(good, weights_only=True)
    data["state_dict"]["extra.weight"] = torch.zeros(1)
    del data["state_dict"]["linear.bias"]
    torch.save(data, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match="1 missing key: linear.bias; 1 unexpected key: "
                                              "extra.weight; .*another version"):
        xai_bench.get_model(tiny_model, checkpoint=tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match=r"does not fit .*size mismatch keys?: linear\.weight "
                                              r"\(10, 48\) in the file vs \(10, 192\).*pool "
                                              r"change the model's shapes") as e:
        xai_bench.get_model(tiny_model, checkpoint=good, pool=8)  # other weight shapes
    one_line(e)
    with pytest.raises(ModelArgumentError, match="has no argument 'colour'; it takes: num_classes, image_size, pool"):
        xai_bench.get_model(tiny_model, checkpoint=good, colour="blue")
    data = torch.load(good, weights_only=True)
    data["model"] = "no_such_model"
    torch.save(data, tmp_path / "unknown.pt")
    with pytest.raises(xai_bench.registry.RegistryError, match="unknown model"):
        load_model_from_checkpoint(tmp_path / "unknown.pt")


def test_save_is_atomic(tmp_path, good, monkeypatch):
    before = good.read_bytes()

    import xai_bench.storage.atomic_io as atomic_io

    def killed_while_flushing(fd):  # the bytes are in the temporary file, not yet renamed
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_io.os, "fsync", killed_while_flushing)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(good, TinyLinear(pool=4), "x", "shapes", Recipe(), {})
    assert good.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["good.pt"]  # no temporary file left
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "new.pt", TinyLinear(), "x", "shapes", Recipe(), {})
    assert not (tmp_path / "new.pt").exists()


def test_model_without_config_cannot_be_saved(tmp_path):
    with pytest.raises(CheckpointError, match="no `config`"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2), "lin", "shapes", Recipe(), {})


def test_provenance_keys():
    prov = collect_provenance()
    for key in ("python", "platform", "torch", "torchvision", "captum", "numpy", "xai_bench",
                "git_sha", "device", "device_name", "torch_threads", "timestamp_utc"):
        assert key in prov
    assert prov["xai_bench"] == xai_bench.__version__ and prov["device"] == "cpu"
    assert prov["timestamp_utc"].endswith("+00:00") and prov["torch_threads"] >= 1
    assert prov["git_sha"] is None or len(prov["git_sha"]) == 40
    import socket

    assert socket.gethostname() not in str(prov.values()) or not socket.gethostname()
    assert collect_provenance(torch.device("cpu"))["device"] == "cpu"
