"""Broken image files in ImageFolder-style data sets are one-line DataErrors that name the
file and the fix: when an item is loaded, in a batch, through DataLoader worker processes, in
training, and on the command line (exit code 2, no traceback)."""

import io

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TinyLinear
from xai_bench.data import DataError, get_dataset, iter_batches, load_batch
from xai_bench.compute.inference import predict

FIX = "remove or replace it"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_BENCH_DATA", str(tmp_path / "cache"))


def _png(path, seed, size=12):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _truncated_png(path):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def make_folder(root, broken=("truncated", "text")):
    """``root/{train,test}/{cat,dog}/*.png``: three real PNGs per class and split, plus in the
    train split a truncated PNG (``cat/3.png``) and a text file named ``dog/4.jpg``."""
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                _png(root / split / cls / f"{i}.png", seed=10 * c + i)
    bad = []
    if "truncated" in broken:
        _truncated_png(root / "train" / "cat" / "3.png")
        bad.append(root / "train" / "cat" / "3.png")
    if "text" in broken:
        (root / "train" / "dog" / "4.jpg").write_text("this is not a JPEG\n")
        bad.append(root / "train" / "dog" / "4.jpg")
    return bad


def _check(error, path):
    text = str(error)
    assert "\n" not in text and "Traceback" not in text and "worker" not in text, text
    assert str(path) in text and "cannot be decoded" in text and FIX in text, text


def test_broken_items_name_the_file(tmp_path):
    truncated, text = make_folder(tmp_path)
    ds = get_dataset(f"imagefolder:{tmp_path}", "train", image_size=8)
    by_path = {p: i for i, (p, _) in enumerate(ds.files)}
    assert ds[by_path[tmp_path / "train" / "cat" / "0.png"]][0].shape == (3, 8, 8)
    for bad in (truncated, text):
        with pytest.raises(DataError) as e:
            ds[by_path[bad]]
        _check(e.value, bad)
    with pytest.raises(DataError) as e:
        load_batch(ds, torch.arange(len(ds)))
    _check(e.value, truncated)  # the first broken file in order


@pytest.mark.parametrize("workers", [0, 2])
def test_broken_files_through_the_dataloader(tmp_path, workers):
    (truncated,) = make_folder(tmp_path, broken=("truncated",))
    ds = get_dataset(f"imagefolder:{tmp_path}", "train", image_size=8)
    batches = [torch.arange(i, min(i + 2, len(ds))) for i in range(0, len(ds), 2)]
    with pytest.raises(DataError) as e:
        list(iter_batches(ds, batches, num_workers=workers))
    _check(e.value, truncated)
    with pytest.raises(DataError) as e:
        predict(TinyLinear(image_size=8, pool=2), ds, batch_size=2, num_workers=workers)
    _check(e.value, truncated)


def test_worker_error_message_is_unwrapped():
    from xai_bench.data.loader import _original_message

    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback "
                        "(most recent call last):\n  File \"x.py\", line 1, in f\n    g()\n"
                        "xai_bench.data.errors.DataError: image a/b.png cannot be decoded "
                        "(truncated or not an image: x): remove or replace it\n")
    assert _original_message(wrapped) == ("image a/b.png cannot be decoded (truncated or not "
                                          "an image: x): remove or replace it")


def test_good_folder_trains_and_predicts(tmp_path):
    make_folder(tmp_path, broken=())
    ds = get_dataset(f"imagefolder:{tmp_path}", "test", image_size=8)
    p = predict(TinyLinear(image_size=8, pool=2, num_classes=2), ds, num_workers=0)
    assert p.logits.shape == (6, 2) and p.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_cifar10_folder_with_a_broken_file(tmp_path):
    _, text = make_folder(tmp_path)
    with pytest.raises(DataError) as e:
        get_dataset(f"cifar10:{tmp_path}", "train")
    assert "cannot be decoded" in str(e.value) and FIX in str(e.value)
    assert "\n" not in str(e.value)
    assert len(get_dataset(f"cifar10:{tmp_path}", "test")) == 6  # the test split is fine


def _cli(*args):
    from xai_bench.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and result.stderr.strip().endswith(lines[0]), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_train_and_info_on_a_broken_folder(tmp_path, tiny_model):
    make_folder(tmp_path / "data")
    test_bad = tmp_path / "data" / "test" / "dog" / "9.png"
    _truncated_png(test_bad)  # a broken test image too (for info --evaluate)
    out = tmp_path / "m.pt"
    _one_line_error(_cli("train", tiny_model, "--dataset", f"imagefolder:{tmp_path / 'data'}",
                         "--quiet", "--epochs", 1, "--model-arg", "pool=2", "--out", out),
                    "cannot be decoded", FIX)
    assert not out.exists()
    good = tmp_path / "good.pt"
    model = TinyLinear(num_classes=2, image_size=8, pool=2)
    from xai_bench.storage.checkpoint import save_checkpoint
    from xai_bench.training import Recipe

    save_checkpoint(good, model, tiny_model, "shapes", Recipe(), {})
    _one_line_error(_cli("info", good, "--evaluate", f"imagefolder:{tmp_path / 'data'}",
                         "--device", "cpu"), str(test_bad), "cannot be decoded", FIX)
