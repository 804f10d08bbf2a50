"""Data sets. Images flow as float RGB tensors in [0, 1]; items are ``(image, label)``.

Every data set has ``classes``, ``num_classes``, ``image_size`` (H, W), ``name`` and
``has_masks``; in-memory ones also ``images`` (uint8 N,3,H,W) and ``labels`` (int64 N). Object
masks: the synthetic one has ``masks`` (bool N,H,W); an image folder has ``mask(i)`` when a
``masks/`` tree mirrors its images (:mod:`xai_bench.data.masks`). A data set object of your
own needs only ``__len__``, ``__getitem__`` -> ``(float image (3, H, W) in [0, 1], int
label)`` and, for masks, a ``masks`` attribute or a ``mask(i)`` method
(:mod:`xai_bench.metrics.common`).

Specs for :func:`get_dataset`:

- ``shapes`` (alias ``synthetic``): the embedded default, generated, with object masks;
  options as keywords (``n``, ``seed``, ``transform``) or inline: ``shapes:n=2000,seed=1``;
- ``cifar10``: torchvision's CIFAR-10 (downloaded once into ``$XAI_BENCH_DATA``);
- ``cifar10:PATH``: CIFAR-10 in ImageFolder layout (``train/<class>/*.jpg``, ``test/...``) or a
  ``.tar.gz`` of it;
- ``imagefolder:PATH``: any ImageFolder (``train``/``val``/``test`` sub-folders if present),
  object masks from ``PATH/masks/<split>/<class>/<stem>.png`` (:mod:`xai_bench.data.masks`);
- ``imagenet:PATH``: the ImageNet validation set as an ImageFolder (resize 256, crop 224).
"""

from __future__ import annotations

from xai_bench.data.errors import DataError
from xai_bench.data.folders import square_side
from xai_bench.data.loader import iter_batches, load_batch
from xai_bench.data.synthetic import SyntheticShapes

DATASET_SPECS = {
    "shapes": "embedded synthetic shapes: 10 classes, 32x32, object masks, no download "
              "(alias synthetic; options shapes:n=N,seed=S,image_size=P)",
    "cifar10": "CIFAR-10 through torchvision (downloaded once into $XAI_BENCH_DATA)",
    "cifar10:PATH": "CIFAR-10 in ImageFolder layout (train/<class>/*.jpg, test/...) or a "
                    ".tar.gz of it",
    "imagefolder:PATH": "any ImageFolder directory (train/val/test sub-folders if present), "
                        "resized and centre cropped; object masks from a masks/ tree "
                        "mirroring the images (masks/test/<class>/<stem>.png)",
    "imagenet:PATH": "ImageNet validation ImageFolder (resize 256, centre crop 224); masks "
                     "as for imagefolder",
}
SPLITS = ("train", "test")

__all__ = ["DataError", "SyntheticShapes", "get_dataset", "iter_batches", "list_datasets",
           "load_batch"]


def list_datasets() -> dict:
    """The spec forms :func:`get_dataset` accepts, with one-line descriptions."""
    return dict(DATASET_SPECS)


def _inline_options(spec: str, text: str) -> dict:
    opts = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"bad option '{item}' in '{spec}'; use shapes:key=value,... "
                            f"(n, seed, image_size)")
        try:
            opts[key.strip()] = int(value)
        except ValueError:
            raise DataError(f"option '{key.strip()}' in '{spec}' must be an integer") from None
    return opts


def _check_kwargs(kind: str, kwargs: dict, allowed: tuple):
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise DataError(f"'{kind}' does not take {', '.join(unknown)}; it takes "
                        f"{', '.join(allowed) or 'no options'}")


def get_dataset(spec: str, split: str = "test", image_size=None, **kwargs):
    """The data set named by ``spec`` (see :func:`list_datasets`), ``split`` train or test.
    ``image_size`` (int or (H, W), square) overrides the native size where that makes sense.
    Raises :class:`DataError` (one line) for unknown specs, missing paths or data."""
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got '{split}'")
    kind, sep, path = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind in ("shapes", "synthetic"):
        options = {**_inline_options(spec, path), **kwargs}
        _check_kwargs(kind, options, ("n", "seed", "image_size", "transform"))
        size = options.pop("image_size", None) or square_side(image_size) or 32
        if size < 8:
            raise DataError(f"shapes needs image_size >= 8, got {size}")
        return SyntheticShapes(split, image_size=size, **options)
    from xai_bench.data import folders

    if kind == "cifar10":
        if path:
            _check_kwargs(spec, kwargs, ())
            return folders.cifar10_folder(path, split, image_size)
        _check_kwargs(kind, kwargs, ("download", "root"))
        return folders.cifar10_torchvision(split, image_size=image_size, **kwargs)
    if kind in ("imagefolder", "imagenet"):
        if not path:
            raise DataError(f"'{kind}' needs a path: {kind}:PATH")
        _check_kwargs(kind, kwargs, ())
        return folders.imagefolder(path, split, image_size, imagenet=kind == "imagenet")
    raise DataError(f"unknown data set '{spec}'; use one of: {', '.join(DATASET_SPECS)}")
