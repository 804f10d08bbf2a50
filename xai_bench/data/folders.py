"""CIFAR-10 (torchvision or an ImageFolder layout / .tar.gz of it) and ImageFolder/ImageNet."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from xai_bench.data.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def cache_dir() -> Path:
    return Path(os.environ.get("XAI_BENCH_DATA", Path.home() / ".cache" / "xai_bench" / "data"))


class TensorImageDataset(Dataset):
    """A whole split in memory: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,)."""

    has_masks = False

    def __init__(self, images, labels, classes, name):
        self.images, self.labels = images, labels
        self.classes, self.num_classes, self.name = list(classes), len(classes), name
        self.image_size = tuple(images.shape[-2:])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float() / 255.0, int(self.labels[i])


def cifar10_torchvision(split: str, download: bool = True) -> TensorImageDataset:
    import numpy as np
    from torchvision.datasets import CIFAR10

    root = cache_dir() / "cifar10"
    try:
        ds = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as e:  # no network and no files
        raise DataError(f"CIFAR-10 is not in {root} and could not be downloaded ({type(e).__name__});"
                        f" download it once with network access, or use cifar10:PATH with an "
                        f"ImageFolder copy") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return TensorImageDataset(images, torch.tensor(ds.targets), ds.classes, "cifar10")


def _extract_once(archive: Path) -> Path:
    """Extract a .tar.gz into the cache (atomically: temp dir, then rename) and reuse it."""
    key = hashlib.sha256(f"{archive.resolve()}:{archive.stat().st_size}".encode()).hexdigest()[:12]
    target = cache_dir() / "extracted" / f"{archive.name.split('.')[0]}-{key}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _split_root(path: Path, split: str) -> Path:
    """Find ``<path>/[<single dir>/]<split>`` (train/test, or val for test)."""
    candidates = [path] + [p for p in path.iterdir() if p.is_dir()]
    names = [split] + (["val", "validation"] if split == "test" else [])
    for base in candidates:
        for name in names:
            if (base / name).is_dir():
                return base / name
    raise DataError(f"no '{split}' folder under {path}; expected an ImageFolder layout "
                    f"{split}/<class>/*.jpg")


def _class_files(root: Path):
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root} has no class folders; expected <class>/*.jpg inside")
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    return classes, files


def read_rgb(path) -> torch.Tensor:
    """uint8 (3, H, W) RGB of an image file (Pillow; torchvision.io's codecs are deprecated)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def cifar10_folder(path: str, split: str) -> TensorImageDataset:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"CIFAR-10 path {p} does not exist")
    if p.is_file():
        if not p.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise DataError(f"{p} is neither a directory nor a .tar.gz archive")
        p = _extract_once(p)
    root = _split_root(p, split)
    classes, files = _class_files(root)
    images = torch.stack([read_rgb(f) for f, _ in files])
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return TensorImageDataset(images, labels, classes, f"cifar10:{path}")


class ImageFolderDataset(Dataset):
    """Lazily loaded ImageFolder; each image is resized (shorter side ``resize``) and centre
    cropped to ``crop``; float RGB in [0, 1] (models normalise themselves)."""

    has_masks = False

    def __init__(self, root: Path, resize: int, crop: int, name: str):
        self.root = root
        self.classes, self.files = _class_files(root)
        self.num_classes, self.name = len(self.classes), name
        self.image_size = (crop, crop)
        self.resize, self.crop = resize, crop
        self.labels = torch.tensor([label for _, label in self.files], dtype=torch.int64)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from torchvision.transforms.v2 import functional as TF

        path, label = self.files[i]
        image = read_rgb(path)
        image = TF.center_crop(TF.resize(image, self.resize, antialias=True), self.crop)
        return image.float() / 255.0, label


def imagefolder(path: str, split: str, image_size=None, imagenet: bool = False):
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"ImageFolder path {p} is not a directory")
    try:
        root = _split_root(p, split)
    except DataError:
        root = p  # the directory itself is the split
    crop = 224 if image_size is None else int(image_size if isinstance(image_size, int)
                                              else image_size[0])
    resize = 256 if imagenet and crop == 224 else int(round(crop * 256 / 224))
    return ImageFolderDataset(root, resize, crop, f"{'imagenet' if imagenet else 'imagefolder'}:{path}")
