"""Data sets. Images flow as float RGB tensors in [0, 1]; items are ``(image, label)``.

Specs for :func:`get_dataset`:
- ``shapes`` (alias ``synthetic``): the embedded default, generated, with object masks;
- ``cifar10``: torchvision's CIFAR-10 (downloaded once into ``$XAI_BENCH_DATA``);
- ``cifar10:PATH``: CIFAR-10 in ImageFolder layout (``train/<class>/*.jpg``, ``test/...``) or a
  ``.tar.gz`` of it;
- ``imagefolder:PATH``: any ImageFolder (``train``/``val``/``test`` sub-folders if present);
- ``imagenet:PATH``: the ImageNet validation set as an ImageFolder (resize 256, crop 224).
"""

from __future__ import annotations

import torch

from xai_bench.data.errors import DataError
from xai_bench.data.synthetic import SyntheticShapes

DATASET_SPECS = {
    "shapes": "embedded synthetic shapes (10 classes, 32x32, object masks; no download)",
    "cifar10": "CIFAR-10 through torchvision (downloads once)",
    "cifar10:PATH": "CIFAR-10 in ImageFolder layout, or a .tar.gz of it",
    "imagefolder:PATH": "any ImageFolder directory",
    "imagenet:PATH": "ImageNet validation ImageFolder (resize 256, centre crop 224)",
}

__all__ = ["DataError", "SyntheticShapes", "get_dataset", "list_datasets", "load_batch"]


def list_datasets() -> dict:
    return dict(DATASET_SPECS)


def get_dataset(spec: str, split: str = "test", image_size=None, **kwargs):
    """The data set named by ``spec`` (see module docstring), ``split`` train or test."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got '{split}'")
    kind, _, path = spec.partition(":")
    if kind in ("shapes", "synthetic") and not path:
        size = 32 if image_size is None else int(image_size if isinstance(image_size, int)
                                                 else image_size[0])
        return SyntheticShapes(split, image_size=size, **kwargs)
    from xai_bench.data import folders

    if kind == "cifar10":
        return folders.cifar10_folder(path, split) if path else folders.cifar10_torchvision(split)
    if kind in ("imagefolder", "imagenet") and path:
        return folders.imagefolder(path, split, image_size, imagenet=kind == "imagenet")
    raise DataError(f"unknown data set '{spec}'; use one of: {', '.join(DATASET_SPECS)}")


def load_batch(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float, [0, 1]) and labels of ``indices``; indexes in-memory tensors when the
    data set has them, else stacks items."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    if hasattr(dataset, "images"):
        return dataset.images[indices].float() / 255.0, dataset.labels[indices]
    items = [dataset[int(i)] for i in indices]
    return torch.stack([im for im, _ in items]), torch.tensor([lab for _, lab in items])
