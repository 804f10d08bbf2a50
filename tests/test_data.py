import io
import os
import hashlib
import tarfile
from pathlib import Path

import pytest
import torch

from xai_bench.data import DataError, SyntheticShapes, get_dataset, list_datasets, load_batch
from xai_bench.data.augment import train_augmentation
from xai_bench.data.synthetic import CLASS_COLOURS, CLASSES, render_shapes

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
USER_DATA_ENV = os.environ.get("XAI_BENCH_DATA")  # before the autouse fixture replaces it


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Never touch the user's data or file-hash caches from tests."""
    monkeypatch.setenv("XAI_BENCH_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("XAI_BENCH_CACHE", str(tmp_path / "xai-cache"))


# ------------------------------------------------------------------------ synthetic shapes


def test_shapes_deterministic_and_split_dependent():
    a, b = SyntheticShapes("test", n=40), SyntheticShapes("test", n=40)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)
    a.images[0] += 1  # the in-process cache hands out copies
    assert not torch.equal(a.images, SyntheticShapes("test", n=40).images)
    fresh = render_shapes(40, 32, seed=123)
    assert torch.equal(fresh[0], render_shapes(40, 32, seed=123)[0])
    test = SyntheticShapes("test", n=40)
    assert not torch.equal(test.images, SyntheticShapes("train", n=40).images)
    assert not torch.equal(test.images, SyntheticShapes("test", n=40, seed=1).images)


def test_shapes_layout_balance_and_items():
    ds = SyntheticShapes("test", n=200)
    assert ds.images.shape == (200, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.masks.shape == (200, 32, 32)
    assert ds.masks.dtype == torch.bool and ds.has_masks
    assert ds.num_classes == 10 == len(ds.classes) and ds.classes[0] == "red_disc"
    assert ds.image_size == (32, 32) and ds.name == "shapes" and len(ds) == 200
    assert torch.bincount(ds.labels, minlength=10).tolist() == [20] * 10
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and label == int(ds.labels[3])
    from xai_bench.data.synthetic import DEFAULT_SIZES

    assert DEFAULT_SIZES == {"train": 10000, "test": 2000} and len(SyntheticShapes("test", n=7)) == 7
    big = SyntheticShapes("test", n=10, image_size=48)
    assert big.images.shape == (10, 3, 48, 48) and big.masks.shape == (10, 48, 48)


def test_shapes_transform_is_applied():
    ds = SyntheticShapes("test", n=4, transform=lambda x: 1 - x)
    torch.testing.assert_close(ds[0][0], 1 - ds.images[0].float() / 255)


def test_objects_are_large_inside_and_masks_cover_the_class_colour():
    images, labels, masks = render_shapes(200, 32, seed=5)
    frac = masks.float().mean((1, 2))
    assert frac.min() > 0.05 and frac.max() < 0.6 and 0.12 < frac.mean() < 0.35
    # the whole object is inside the image: masks never fill a full border row/column
    for edge in (masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]):
        assert (edge.sum(-1) < 32).all()
    px = images.float().permute(0, 2, 3, 1) / 255
    palette = torch.tensor(list(CLASS_COLOURS.values()))
    for i in range(200):
        own = palette[labels[i] // 5]
        other = palette[1 - labels[i] // 5]
        inside = px[i][masks[i]].mean(0)
        outside = px[i][~masks[i]]
        assert (inside - own).norm() < 0.25, i          # object pixels: the class colour
        assert (inside - own).norm() < (inside - other).norm(), i
        # background and distractors are far from the class colour
        assert (outside - own).norm(dim=1).mean() > 0.35, i


def test_class_names_match_colour_and_shape_order():
    assert CLASSES[:5] == ("red_disc", "red_square", "red_triangle", "red_plus", "red_ring")
    assert CLASSES[5:] == tuple(c.replace("red", "blue") for c in CLASSES[:5])


# ---------------------------------------------------------------- get_dataset / load_batch


def test_get_dataset_specs_and_errors(tmp_path):
    assert set(list_datasets()) >= {"shapes", "cifar10", "cifar10:PATH", "imagefolder:PATH",
                                    "imagenet:PATH"}
    ds = get_dataset("synthetic", "test", n=10)
    assert ds.name == "shapes" and len(ds) == 10
    inline = get_dataset("shapes:n=12,seed=3", "train")
    assert len(inline) == 12 and torch.equal(inline.images,
                                             SyntheticShapes("train", n=12, seed=3).images)
    assert get_dataset("shapes", "test", image_size=(40, 40), n=4).image_size == (40, 40)
    cases = [("nope", {}, "unknown data set 'nope'; use one of: shapes, cifar10"),
             (f"cifar10:{tmp_path / 'missing'}", {}, "missing does not exist"),
             (f"imagenet:{tmp_path / 'gone'}", {}, "gone does not exist"),
             ("imagefolder", {}, "needs a path"),
             ("shapes:n=ten", {}, "must be an integer"),
             ("shapes", {"colour": 1}, "does not take colour")]
    for spec, kw, message in cases:
        with pytest.raises(DataError, match=message) as info:
            get_dataset(spec, "test", **kw)
        assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="split"):
        get_dataset("shapes", "validation")


def test_load_batch_in_memory_subset_and_item_fallback():
    ds = SyntheticShapes("test", n=20)
    images, labels = load_batch(ds, [1, 4])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == ds.labels[[1, 4]].tolist() and labels.dtype == torch.int64
    sub = torch.utils.data.Subset(ds, [5, 1, 4])
    images_sub, labels_sub = load_batch(sub, torch.tensor([1, 2]))
    torch.testing.assert_close(images_sub, images)
    assert labels_sub.tolist() == labels.tolist()

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return ds[i]

    images2, labels2 = load_batch(Items(), [1, 4])
    torch.testing.assert_close(images, images2)
    assert labels2.tolist() == labels.tolist()


# ------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("kind", ["shapes", "randaugment", "none"])
def test_augmentations_keep_shape_range_and_are_seeded(kind):
    x = SyntheticShapes("test", n=8).images.float() / 255
    aug = train_augmentation(32, kind)
    state = torch.random.get_rng_state()
    a = aug(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert a.shape == x.shape and a.dtype == x.dtype and a.min() >= 0 and a.max() <= 1
    b = aug(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    if kind != "none":
        assert not torch.allclose(a, x)
        c = aug(x, generator=torch.Generator().manual_seed(2))
        assert not torch.allclose(a, c)


def test_train_augmentation_signatures_and_errors():
    x = torch.rand(3, 3, 32, 32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(train_augmentation("shapes")(x, generator=g()),
                               train_augmentation(32, "shapes")(x, generator=g()))
    with pytest.raises(ValueError, match="unknown augmentation"):
        train_augmentation(32, "mixup")


def test_shapes_augmentation_zooms_out_to_half_size():
    x = SyntheticShapes("test", n=64).images.float() / 255
    from xai_bench.data.augment import zoom_crop_flip

    out = zoom_crop_flip(x, torch.Generator().manual_seed(0), p_zoom_out=1.0,
                         zoom_out=(0.5, 0.5), flip=False)
    # the image shrinks to a 16x16 window; a distinct frame of fill surrounds it
    assert out.shape == x.shape
    diff = (out[:, :, 8:24, 8:24] - x[:, :, ::2, ::2]).abs().mean()
    assert out.std() > 0.05 and diff.item() > 0  # not the identity
    identity = zoom_crop_flip(x, torch.Generator().manual_seed(0), p_zoom_out=1.0,
                              zoom_out=(1.0, 1.0), flip=False)
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ folders


def _jpeg_bytes(h=32, w=32, seed=0) -> bytes:
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    array = torch.randint(0, 255, (h, w, 3), dtype=torch.uint8, generator=g).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _fake_cifar_tar(tmp_path) -> Path:
    archive = tmp_path / "fake-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, n in (("train", 3), ("test", 2)):
            for cls in ("cat", "dog"):
                for i in range(n):
                    data = _jpeg_bytes(seed=i)
                    info = tarfile.TarInfo(f"fake-cifar/{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return archive


def test_cifar10_from_imagefolder_tar(tmp_path):
    from xai_bench.data.folders import cache_dir, read_rgb

    archive = _fake_cifar_tar(tmp_path)
    train = get_dataset(f"cifar10:{archive}", "train")
    test = get_dataset(f"cifar10:{archive}", "test")
    assert len(train) == 6 and len(test) == 4 and train.name == "cifar10"
    assert train.classes == ["cat", "dog"] and train.num_classes == 2 and not train.has_masks
    assert train.images.shape == (6, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.labels.tolist() == [0, 0, 1, 1] and test.image_size == (32, 32)
    extracted = list((cache_dir() / "extracted").iterdir())
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert [p.name for p in extracted] == [f"fake-cifar-{sha[:16]}"]  # keyed by content
    # batched torchvision decoding agrees with Pillow
    first = extracted[0] / "fake-cifar" / "test" / "cat" / "0000.jpg"
    assert torch.equal(test.images[0], read_rgb(first))
    image, label = test[3]
    assert image.dtype == torch.float32 and label == 1 and image.max() <= 1
    again = get_dataset(f"cifar10:{archive}", "test")  # reuses extraction + tensor cache
    assert torch.equal(again.images, test.images) and again.classes == test.classes
    assert len(list((cache_dir() / "extracted").iterdir())) == 1
    # the extracted directory works as a path, too
    direct = get_dataset(f"cifar10:{extracted[0]}", "train")
    assert torch.equal(direct.images, train.images)


def test_cifar10_folder_errors(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar file")
    with pytest.raises(DataError, match="bad.tar.gz is corrupt .*; download it again"):
        get_dataset(f"cifar10:{bad}")
    (tmp_path / "nosplit" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no 'test' folder"):
        get_dataset(f"cifar10:{tmp_path / 'nosplit'}")
    other = tmp_path / "x.zip"
    other.write_bytes(b"")
    with pytest.raises(DataError, match="neither a directory"):
        get_dataset(f"cifar10:{other}")


def test_imagefolder_lazy_resize_crop(tmp_path):
    for cls in ("n01", "n02"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        (tmp_path / "val" / cls / "x.jpg").write_bytes(_jpeg_bytes(40, 60))
    ds = get_dataset(f"imagenet:{tmp_path}", "test")
    assert not hasattr(ds, "images") and ds.classes == ["n01", "n02"]
    image, label = ds[1]
    assert image.shape == (3, 224, 224) and label == 1 and ds.image_size == (224, 224)
    assert (ds.resize, ds.crop) == (256, 224)
    small = get_dataset(f"imagefolder:{tmp_path}", "test", image_size=24)
    images, labels = load_batch(small, [0, 1])
    assert images.shape == (2, 3, 24, 24) and labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="no 'train' one"):
        get_dataset(f"imagefolder:{tmp_path}", "train")
    # without split folders the directory itself is the split
    flat = get_dataset(f"imagefolder:{tmp_path / 'val'}", "train", image_size=16)
    assert len(flat) == 2 and flat[0][0].shape == (3, 16, 16)


def test_cifar10_torchvision_without_data_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match="could not be downloaded") as info:
        get_dataset("cifar10", "test", download=False)
    assert "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="shared CIFAR-10 archive not available")
def test_real_cifar10_archive(monkeypatch):
    """Extracts into the real data cache (once; ~1 min), so later runs and benchmarks reuse it."""
    from xai_bench.data.folders import cache_dir, extract_once

    if USER_DATA_ENV is None:
        monkeypatch.delenv("XAI_BENCH_DATA")
    else:
        monkeypatch.setenv("XAI_BENCH_DATA", USER_DATA_ENV)

    root = extract_once(SHARED_CIFAR)
    assert root.parent == cache_dir() / "extracted"
    split = root / "cifar10-jpeg" / "test"
    classes = sorted(p.name for p in split.iterdir())
    assert classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]
    assert sum(1 for _ in split.glob("*/*.jpg")) == 10000
    assert extract_once(SHARED_CIFAR) == root  # reused


# ------------------------------------------------------------------------ ImageNet classes


def test_imagenet_class_names_follow_sorted_wordnet_ids():
    from xai_bench.data.folders import imagenet_classes, imagenet_wnids

    names, wnids = imagenet_classes(), imagenet_wnids()
    assert len(names) == len(set(names)) == 1000 and len(wnids) == len(set(wnids)) == 1000
    assert wnids == sorted(wnids)  # class index = ImageFolder order of the wnid folders
    assert (wnids[0], names[0]) == ("n01440764", "tench")
    assert (wnids[1], names[1]) == ("n01443537", "goldfish")
    assert (wnids[999], names[999]) == ("n15075141", "toilet tissue")
    from torchvision.models import ResNet50_Weights  # the source (offline metadata)

    assert names == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


def test_imagenet_folder_labels_are_imagenet_indices_with_names(tmp_path):
    # a subset of the class folders: labels stay ImageNet-1k indices (not 0..k-1)
    for wnid in ("n01443537", "n01484850", "n15075141"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        (tmp_path / "val" / wnid / "a.jpg").write_bytes(_jpeg_bytes(40, 60))
    ds = get_dataset(f"imagenet:{tmp_path}", "test")
    assert ds.num_classes == 1000 and len(ds.classes) == 1000
    assert ds.labels.tolist() == [1, 2, 999] and [ds[i][1] for i in range(3)] == [1, 2, 999]
    assert [ds.classes[y] for y in ds.labels] == ["goldfish", "great white shark",
                                                  "toilet tissue"]
    assert ds.folder_classes == ["n01443537", "n01484850", "n15075141"]
    assert ds.wnids[2] == "n01484850"
    _, labels = load_batch(ds, [2])
    assert labels.tolist() == [999]


def test_imagenet_folder_without_wordnet_ids_keeps_folder_order(tmp_path):
    for cls in ("dog", "cat"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "a.jpg").write_bytes(_jpeg_bytes())
    with pytest.warns(UserWarning, match="not ImageNet-1k WordNet ids"):
        ds = get_dataset(f"imagenet:{tmp_path}", "test")
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 1]


@pytest.mark.parametrize("size, resize", [(None, 256), (112, 128)])
def test_imagenet_standard_evaluation_transform(tmp_path, size, resize):
    """Resize the shorter side to 256 and centre crop 224 (scaled alike for other sizes), as
    torchvision's ``Resize(256), CenterCrop(224)``."""
    from PIL import Image
    from torchvision import transforms

    (tmp_path / "n01440764").mkdir()
    path = tmp_path / "n01440764" / "a.png"  # lossless, smooth, non-square, asymmetric
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 300), torch.linspace(0, 1, 400), indexing="ij")
    array = (torch.stack([yy, xx, (xx * yy) ** 0.5], -1) * 255).round().to(torch.uint8)
    Image.fromarray(array.numpy()).save(path)
    ds = get_dataset(f"imagenet:{tmp_path}", "test", image_size=size)
    crop = size or 224
    assert (ds.resize, ds.crop, ds.image_size) == (resize, crop, (crop, crop))
    image, label = ds[0]
    assert image.shape == (3, crop, crop) and label == 0
    reference = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop),
                                    transforms.ToTensor()])(Image.open(path).convert("RGB"))
    assert (image - reference).abs().max() < 3 / 255
