"""CIFAR-10 (torchvision, or an ImageFolder layout / .tar.gz of it) and ImageFolder/ImageNet.

* ``cifar10``: ``torchvision.datasets.CIFAR10`` under ``cache_dir()/cifar10`` (downloaded
  once), held in memory.
* ``cifar10:PATH``: a directory with ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``
  (optionally inside one wrapping folder), or a ``.tar.gz`` of it — verified completely and
  extracted once (atomically) into ``cache_dir()/extracted/<archive name>-<SHA-256 prefix>``
  (:mod:`xai_bench.data.archives`); decoded splits are cached
  there as uint8 tensors, so later loads take well under a second. Held in memory.
* ``imagefolder:PATH`` / ``imagenet:PATH``: lazily loaded ImageFolders (resize + centre crop),
  with object masks when a ``masks/`` tree mirrors the images (:mod:`xai_bench.data.masks`).
  ``imagenet:PATH`` applies the standard evaluation transform (shorter side resized to 256,
  centre crop 224; scaled alike for another image size) and, when the class folders are
  WordNet ids (``n01440764`` ...), labels every image with its ImageNet-1k class index and
  names the classes (:func:`imagenet_classes`, from ``imagenet_classes.txt``).

ImageNet class order: index ``i`` is the ``i``-th WordNet id in sorted order — the order in
which an ImageFolder lists the 1000 ``n0xxxxxxx`` folders, and the order of the outputs of
torchvision's and timm's ImageNet-1k models. For the full validation set the ImageFolder label
*is* that index; for a subset of the class folders the label is still the ImageNet-1k index
(not the position among the folders present), so it matches a 1000-class model's outputs.

``cache_dir()`` is ``$XAI_BENCH_DATA`` or ``~/.cache/xai_bench/data``.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from xai_bench.data.archives import ARCHIVE_SUFFIXES, unpack_verified
from xai_bench.data.errors import DataError
from xai_bench.data.masks import MASKS_DIR, find_masks, read_mask, resize_mask

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
SPLIT_DIRS = {"train": ("train",), "test": ("test", "val", "validation")}
_TENSOR_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where downloads, extractions and decoded tensors go: ``$XAI_BENCH_DATA`` or
    ``~/.cache/xai_bench/data``."""
    env = os.environ.get("XAI_BENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xai_bench" / "data"


def square_side(image_size) -> int | None:
    """The side of a square ``image_size`` (an int or ``(H, W)`` with ``H == W``); None
    for None; :class:`DataError` for a non-square size."""
    if image_size is None:
        return None
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2 or image_size[0] != image_size[1]:
            raise DataError(f"only square image sizes are supported, got {tuple(image_size)}")
        image_size = image_size[0]
    return int(image_size)


class TensorImageDataset(Dataset):
    """A whole split in memory: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,); items
    are ``(float image in [0, 1], label)`` (``transform``, if given, applied to the image)."""

    has_masks = False

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes, name: str,
                 transform=None):
        self.images, self.labels = images, labels
        self.classes, self.num_classes, self.name = list(classes), len(classes), name
        self.image_size = tuple(images.shape[-2:])
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.images[i].float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def __repr__(self):
        return f"TensorImageDataset({self.name!r}, n={len(self)}, image_size={self.image_size})"


def _resize_batch(images: torch.Tensor, side: int | None, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, side, side): shorter side resized, centre crop."""
    if side is None or tuple(images.shape[-2:]) == (side, side):
        return images
    from torchvision.transforms.v2 import functional as TF

    return torch.cat([TF.center_crop(TF.resize(images[i:i + chunk], side, antialias=True), side)
                      for i in range(0, len(images), chunk)])


# ----------------------------------------------------------------------------- CIFAR-10


def cifar10_torchvision(split: str, download: bool = True, image_size=None,
                        root=None) -> TensorImageDataset:
    """torchvision's CIFAR-10 (downloaded once into ``cache_dir()/cifar10``), in memory."""
    import numpy as np

    try:
        from torchvision.datasets import CIFAR10
    except ImportError:  # pragma: no cover - torchvision is a dependency
        raise DataError("torchvision is not installed; pip install torchvision, or use "
                        "cifar10:PATH with an ImageFolder copy") from None
    root = Path(root).expanduser() if root else cache_dir() / "cifar10"
    try:
        ds = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as e:  # no network and no files, or a corrupt download
        raise DataError(
            f"CIFAR-10 is not in {root} and could not be downloaded ({type(e).__name__}); run "
            f"once with network access (or set XAI_BENCH_DATA), or use cifar10:PATH with an "
            f"ImageFolder copy / .tar.gz of it") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    images = _resize_batch(images, square_side(image_size))
    return TensorImageDataset(images, torch.tensor(ds.targets, dtype=torch.int64),
                              ds.classes, "cifar10")


def extract_once(archive: Path) -> Path:
    """``archive`` unpacked once into ``cache_dir()/extracted/<name>-<SHA-256 prefix>`` and
    reused; verified completely first (see :mod:`xai_bench.data.archives`)."""
    return unpack_verified(Path(archive), cache_dir() / "extracted")


def _split_dir(path: Path, split: str) -> Path | None:
    """``<path>/[<single wrapping dir>/]<split dir>`` or None when there is none (a
    ``masks`` folder beside the wrapping dir does not count)."""
    candidates = [path]
    subdirs = [p for p in path.iterdir()
               if p.is_dir() and not p.name.startswith(".") and p.name != MASKS_DIR]
    if len(subdirs) == 1:
        candidates.append(subdirs[0])
    for base in candidates:
        for name in SPLIT_DIRS[split]:
            if (base / name).is_dir():
                return base / name
    return None


def _has_any_split(path: Path) -> bool:
    return any(_split_dir(path, s) is not None for s in SPLIT_DIRS)


def _class_files(root: Path, exclude: tuple = ()):
    classes = sorted(p.name for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name not in exclude)
    if not classes:
        raise DataError(f"{root} has no class folders; expected <class>/<image files> inside")
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders "
                        f"of {root}")
    return classes, files


#: single-channel modes of more than 8 bits, which ``convert("RGB")`` clips at 255 (a 16-bit
#: grey PNG comes out white); 16-bit RGB(A) PNGs Pillow itself reduces to 8 bits correctly
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _rgb_uint8(im, path):
    """uint8 (H, W, 3) of a Pillow image in any mode: 16-bit grey scaled by 255/65535, float
    grey taken as [0, 1]; palette, grey+alpha, RGBA, CMYK ... through ``convert("RGB")``
    (alpha dropped)."""
    import numpy as np

    if im.mode in WIDE_GREY_MODES or im.mode == "F":
        grey = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            if not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > 1:
                raise DataError(f"image {path} has floating-point pixels outside [0, 1] (or "
                                f"not finite): convert it to an 8- or 16-bit image")
            grey = grey * 255.0
        else:  # 16-bit range (mode "I" is how older Pillows open 16-bit PNGs)
            grey = np.clip(grey, 0, 65535) * (255.0 / 65535.0)
        grey = np.rint(grey).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    return np.asarray(im.convert("RGB")).copy()


def read_rgb(path) -> torch.Tensor:
    """uint8 (3, H, W) RGB of an image file (Pillow: any format, any colour mode; 16-bit grey
    scaled to 8 bits, not clipped: :func:`_rgb_uint8`).

    A file that cannot be read or decoded (truncated, not an image, gone) is a one-line
    :class:`DataError` naming it and the fix."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return torch.from_numpy(_rgb_uint8(im, path)).permute(2, 0, 1)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise DataError(f"image {path} cannot be read ({e.strerror or type(e).__name__}): "
                        f"check the data set's files and permissions") from None
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as e:
        # PIL.UnidentifiedImageError and "image file is truncated" are OSErrors
        reason = "not a recognised image format" if isinstance(e, UnidentifiedImageError) \
            else " ".join(str(e).split())[:120] or type(e).__name__
        raise DataError(f"image {path} cannot be decoded (truncated or not an image: "
                        f"{reason}): remove or replace it") from None


def _decode_many(paths, chunk: int = 4096) -> list[torch.Tensor]:
    """Decode image files to uint8 (3, H, W): JPEGs batched with torchvision.io (several
    times faster than one by one), anything else (or a failed batch) with Pillow."""
    out: list[torch.Tensor | None] = [None] * len(paths)
    jpegs = [i for i, p in enumerate(paths) if Path(p).suffix.lower() in (".jpg", ".jpeg")]
    try:
        with warnings.catch_warnings():  # torchvision.io's codecs warn about deprecation
            warnings.simplefilter("ignore")
            from torchvision.io import ImageReadMode, decode_jpeg, read_file

            for start in range(0, len(jpegs), chunk):
                idx = jpegs[start:start + chunk]
                try:
                    decoded = decode_jpeg([read_file(str(paths[i])) for i in idx],
                                          mode=ImageReadMode.RGB)
                except Exception:  # e.g. a CMYK or truncated JPEG: Pillow handles it below
                    continue
                for i, image in zip(idx, decoded):
                    out[i] = image
    except ImportError:  # pragma: no cover - codecs removed from a future torchvision
        pass
    return [image if image is not None else read_rgb(p) for image, p in zip(out, paths)]


def _load_in_memory(root: Path, image_size=None):
    classes, files = _class_files(root)
    images = _decode_many([f for f, _ in files])
    side = square_side(image_size)
    if side is None and len({tuple(im.shape[-2:]) for im in images}) > 1:
        side = min(min(im.shape[-2:]) for im in images)  # mixed sizes: a common square
    if side is not None:
        images = [_resize_batch(im[None], side)[0] for im in images]
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return torch.stack(images), labels, classes


def cifar10_folder(path: str, split: str, image_size=None) -> TensorImageDataset:
    """CIFAR-10 in ImageFolder layout (a directory or a .tar.gz of one), in memory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"CIFAR-10 path {p} does not exist")
    from_archive = p.is_file()
    if from_archive:
        if not p.name.endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{p} is neither a directory nor a .tar.gz/.tgz/.tar archive")
        p = extract_once(p)
    root = _split_dir(p, split)
    if root is None:
        raise DataError(f"no '{split}' folder in {path}; expected an ImageFolder layout "
                        f"train/<class>/*.jpg and test/<class>/*.jpg")
    side = square_side(image_size)
    cached = p / f".xai_bench-{split}-{side or 'native'}-v{_TENSOR_CACHE_VERSION}.pt"
    if from_archive and cached.is_file():
        try:
            blob = torch.load(cached, weights_only=True)
            return TensorImageDataset(blob["images"], blob["labels"], blob["classes"], "cifar10")
        except Exception:
            pass  # unreadable cache: decode again (and rewrite it)
    images, labels, classes = _load_in_memory(root, side)
    if from_archive:  # the extraction is immutable: cache the decoded split next to it
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        try:
            torch.save({"images": images, "labels": labels, "classes": classes}, tmp)
            os.replace(tmp, cached)
        except OSError:
            tmp.unlink(missing_ok=True)
    return TensorImageDataset(images, labels, classes, "cifar10")


# ----------------------------------------------------------------------- ImageFolder


class ImageFolderDataset(Dataset):
    """Lazily loaded ImageFolder: each image is resized (shorter side to ``resize``) and
    centre cropped to ``crop``; float RGB in [0, 1] (models normalise themselves).

    ``base``: the folder that holds the split folders (default ``root``, a folder without
    them); its ``masks/`` tree, if it mirrors ``root``, gives every image an object mask:
    ``has_masks`` is then True and :meth:`mask` gives item ``i``'s (:mod:`xai_bench.data.masks`;
    ``transform`` is not applied to masks)."""

    def __init__(self, root: Path, resize: int, crop: int, name: str, transform=None,
                 base: Path | None = None):
        self.root = Path(root)
        base = self.root if base is None else Path(base)
        exclude = (MASKS_DIR,) if base == self.root else ()
        self.classes, self.files = _class_files(self.root, exclude)
        self.num_classes, self.name = len(self.classes), name
        self.image_size = (crop, crop)
        self.resize, self.crop = resize, crop
        self.labels = torch.tensor([label for _, label in self.files], dtype=torch.int64)
        self.transform = transform
        self.mask_files = find_masks(base, self.root, self.classes, self.files, IMAGE_SUFFIXES)
        self.has_masks = self.mask_files is not None

    def mask(self, i) -> torch.Tensor:
        """Object mask of item ``i``: bool ``(crop, crop)``, transformed like the image."""
        from PIL import Image

        if self.mask_files is None:
            raise DataError(f"{self.name} {self.root} has no masks/ tree")
        path, mask_path = self.files[i][0], self.mask_files[i]
        mask = read_mask(mask_path)
        try:
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
        except Exception:
            read_rgb(path)  # the one-line error naming the image
            raise
        if tuple(mask.shape) != (height, width):
            raise DataError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                            f"{path} is {width}x{height}: give each mask its image's size")
        return resize_mask(mask, self.resize, self.crop)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from torchvision.transforms.v2 import functional as TF

        path, label = self.files[i]
        image = TF.center_crop(TF.resize(read_rgb(path), self.resize, antialias=True), self.crop)
        image = image.float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self):
        return (f"ImageFolderDataset({self.name!r}, n={len(self)}, resize={self.resize}, "
                f"crop={self.crop})")


# ------------------------------------------------------------------------ ImageNet


IMAGENET_CLASSES_FILE = "imagenet_classes.txt"


@functools.lru_cache(maxsize=1)
def _imagenet_table() -> tuple[tuple[str, str], ...]:
    from importlib.resources import files

    text = files("xai_bench.data").joinpath(IMAGENET_CLASSES_FILE).read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines()
                 if line.strip() and not line.startswith("#"))
    if len(rows) != 1000 or any(len(r) != 2 for r in rows):  # pragma: no cover - packaging
        raise DataError(f"xai_bench/data/{IMAGENET_CLASSES_FILE} is damaged: expected 1000 "
                        f"'wnid<TAB>name' lines, found {len(rows)}; reinstall xai-bench")
    return rows


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (index ``i`` = the ``i``-th
    WordNet id in sorted order = ImageFolder order of the class folders), e.g. ``0`` is
    'tench', ``1`` 'goldfish'. Source: torchvision's ImageNet weights metadata."""
    return [name for _, name in _imagenet_table()]


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids (``n01440764`` ...), sorted: class-index order."""
    return [wnid for wnid, _ in _imagenet_table()]


def _use_imagenet_classes(ds: "ImageFolderDataset") -> None:
    """Class folders named by WordNet id: labels become ImageNet-1k class indices and
    ``classes`` the 1000 names (``wnids`` the ids; ``folder_classes`` the folders found).
    Other folder names are kept (sorted folder order), with a warning."""
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    unknown = [c for c in ds.classes if c not in index]
    if unknown:
        warnings.warn(f"imagenet: {len(unknown)} of the {len(ds.classes)} class folders of "
                      f"{ds.root} are not ImageNet-1k WordNet ids (e.g. '{unknown[0]}'); the "
                      f"labels follow the sorted folder names, which need not match a "
                      f"1000-class model's outputs", stacklevel=3)
        return
    remap = [index[c] for c in ds.classes]
    ds.files = [(path, remap[label]) for path, label in ds.files]
    ds.labels = torch.tensor([label for _, label in ds.files], dtype=torch.int64)
    ds.folder_classes = list(ds.classes)
    ds.wnids, ds.classes = imagenet_wnids(), imagenet_classes()
    ds.num_classes = len(ds.classes)


def imagefolder(path: str, split: str, image_size=None, imagenet: bool = False):
    """An ImageFolder split: ``PATH/<split dir>`` (train; test, val or validation) when PATH
    has split folders, else PATH itself. ``imagenet``: the standard evaluation transform
    (shorter side resized to 256 (bilinear, antialiased), centre crop 224; scaled alike for
    another ``image_size``, e.g. 384 -> resize 439, crop 384) and ImageNet-1k class indices and
    names for WordNet-id folders (see the module docstring); otherwise the shorter side is
    resized to ``image_size`` (default 224) and centre cropped."""
    kind = "imagenet" if imagenet else "imagefolder"
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{kind} path {p} does not exist")
    if not p.is_dir():
        raise DataError(f"{kind} path {p} is not a directory (expected an ImageFolder: "
                        f"<class>/<image files>)")
    root = _split_dir(p, split)
    if root is None:
        if _has_any_split(p):
            raise DataError(f"{p} has split folders but no '{split}' one (looked for "
                            f"{', '.join(SPLIT_DIRS[split])})")
        root = p  # the directory itself is the split
    crop = square_side(image_size) or 224
    resize = int(round(crop * 256 / 224)) if imagenet else crop
    ds = ImageFolderDataset(root, resize, crop, kind, base=root.parent if root != p else p)
    if imagenet:
        _use_imagenet_classes(ds)
    return ds
