import io
import tarfile

import pytest
import torch
from pathlib import Path

from xai_bench.data import DataError, SyntheticShapes, get_dataset, load_batch
from xai_bench.data.augment import train_augmentation
from xai_bench.data.synthetic import CLASS_COLOURS, CLASSES, render_shapes

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def test_shapes_deterministic_and_split_dependent():
    a, b = SyntheticShapes("test", n=40), SyntheticShapes("test", n=40)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    c = SyntheticShapes("train", n=40)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, SyntheticShapes("test", n=40, seed=1).images)


def test_shapes_layout_balance_and_items():
    ds = SyntheticShapes("test", n=200)
    assert ds.images.shape == (200, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.masks.shape == (200, 32, 32) and ds.masks.dtype == torch.bool
    assert ds.num_classes == 10 == len(ds.classes) and ds.has_masks
    assert torch.bincount(ds.labels, minlength=10).tolist() == [20] * 10
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
    assert label == int(ds.labels[3])


def test_objects_are_large_and_masks_cover_the_class_colour():
    images, labels, masks = render_shapes(200, 32, seed=5)
    frac = masks.float().mean((1, 2))
    assert frac.min() > 0.03 and frac.max() < 0.6 and frac.mean() > 0.12
    for i in range(0, 200, 7):
        colour = torch.tensor(CLASS_COLOURS[CLASSES[labels[i]].split("_")[0]])
        px = images[i].float().permute(1, 2, 0) / 255
        inside = (px[masks[i]] - colour).norm(dim=1).mean()
        outside = (px[~masks[i]] - colour).norm(dim=1).mean()
        assert inside < 0.2 < outside


def test_get_dataset_specs_and_errors(tmp_path):
    assert get_dataset("synthetic", "test", n=10).name == "shapes"
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        get_dataset("nope")
    with pytest.raises(DataError, match="does not exist"):
        get_dataset(f"cifar10:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="split"):
        get_dataset("shapes", "validation")


def test_load_batch_in_memory_and_item_fallback():
    ds = SyntheticShapes("test", n=20)
    images, labels = load_batch(ds, [1, 4])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == ds.labels[[1, 4]].tolist()

    class Items:
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return ds[i]

    images2, labels2 = load_batch(Items(), [1, 4])
    torch.testing.assert_close(images, images2)
    assert labels2.tolist() == labels.tolist()


@pytest.mark.parametrize("kind", ["shapes", "randaugment", "none"])
def test_augmentations_keep_shape_range_and_are_seeded(kind):
    x = SyntheticShapes("test", n=8).images.float() / 255
    aug = train_augmentation(kind)
    a = aug(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    if kind == "shapes":  # randaugment draws from torch's global RNG for its ops
        b = aug(x, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, x)


def _jpeg_bytes(h=32, w=32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    array = torch.randint(0, 255, (h, w, 3), dtype=torch.uint8).numpy()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()


def _fake_cifar_tar(tmp_path) -> Path:
    archive = tmp_path / "fake-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, n in (("train", 3), ("test", 2)):
            for cls in ("cat", "dog"):
                for i in range(n):
                    data = _jpeg_bytes()
                    info = tarfile.TarInfo(f"fake-cifar/{split}/{cls}/{i}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return archive


def test_cifar10_from_imagefolder_tar(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_BENCH_DATA", str(tmp_path / "cache"))
    archive = _fake_cifar_tar(tmp_path)
    train = get_dataset(f"cifar10:{archive}", "train")
    test = get_dataset(f"cifar10:{archive}", "test")
    assert len(train) == 6 and len(test) == 4
    assert train.classes == ["cat", "dog"] and train.images.shape == (6, 3, 32, 32)
    assert test.labels.tolist() == [0, 0, 1, 1]
    again = get_dataset(f"cifar10:{archive}", "test")  # reuses the extraction
    assert torch.equal(again.images, test.images)


def test_imagefolder_lazy_resize_crop(tmp_path, monkeypatch):
    for cls in ("a", "b"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        (tmp_path / "val" / cls / "x.jpg").write_bytes(_jpeg_bytes(40, 60))
    ds = get_dataset(f"imagenet:{tmp_path}", "test")
    image, label = ds[1]
    assert image.shape == (3, 224, 224) and label == 1 and ds.classes == ["a", "b"]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="shared CIFAR-10 archive not available")
def test_real_cifar10_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_BENCH_DATA", str(tmp_path))
    test = get_dataset(f"cifar10:{SHARED_CIFAR}", "test")
    assert len(test) == 10000 and test.num_classes == 10
    assert test.images.shape[1:] == (3, 32, 32)
