"""Object masks of an image folder: the ``masks/`` tree and reading one mask.

Layout. The masks live in a folder ``masks`` next to the split folders (``PATH/masks/test/
<class>/<stem>.png`` for ``PATH/test/<class>/<stem>.jpg``), or next to the class folders when
the image folder has no split folders (``PATH/masks/<class>/<stem>.png`` for
``PATH/<class>/<stem>.jpg``): the tree mirrors the images, one mask per image with the
image's file name stem and any image suffix (PNG recommended: lossless). A split whose
mirror folder exists needs a mask for every image (a one-line :class:`DataError` names the
missing ones); a split without one has no masks; a folder without ``masks/`` has none.

A mask is an image of its image's size, read as one channel: non-zero = object, zero =
background (grey-scale, 1-bit, palette index or 16-bit; a colour mask counts a pixel as
object when any colour channel is non-zero, an alpha channel is ignored). It is resized and
cropped like its image, with nearest-neighbour interpolation, so it stays binary and aligned.
Because ``masks/`` lies inside the data set's folder, a changed mask changes the data set's
content fingerprint (:func:`xai_bench.storage.identity.dataset_spec_fingerprint`) and the
cells that read masks are computed again.
"""

from __future__ import annotations

from pathlib import Path

import torch

from xai_bench.data.errors import DataError

__all__ = ["MASKS_DIR", "find_masks", "read_mask", "resize_mask"]

#: the folder, next to the split (or class) folders, that holds the masks
MASKS_DIR = "masks"


def _mask_index(folder: Path, suffixes: tuple) -> dict:
    """``{stem: mask file}`` of one class folder of the masks tree (two files of one stem are
    ambiguous: a one-line error)."""
    found: dict = {}
    if not folder.is_dir():
        return found
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in suffixes and not f.name.startswith("."):
            if f.stem in found:
                raise DataError(f"masks {found[f.stem]} and {f} have the same name stem: keep "
                                f"one mask per image")
            found[f.stem] = f
    return found


def find_masks(base: Path, split_root: Path, classes: list, files: list, suffixes: tuple):
    """The mask file of every image in ``files`` (``[(path, label)]`` under ``split_root``,
    class folder names ``classes``), or None when the split has no masks; mask files end in
    one of ``suffixes``. ``base`` holds the
    split folders (or is ``split_root`` when there are none); the masks are under
    ``base/masks``, mirroring ``split_root`` relative to ``base``."""
    masks_root = base / MASKS_DIR
    if not masks_root.is_dir():
        return None
    mirror = masks_root / split_root.relative_to(base)
    if not mirror.is_dir():
        stray = [c for c in classes if (masks_root / c).is_dir()]
        if stray:  # class folders right under masks/, but the images are in a split folder
            rel = split_root.relative_to(base)
            raise DataError(f"{masks_root} holds class folders ({stray[0]}, ...) but the images "
                            f"are in {split_root}: move them to {masks_root / rel}/<class>/ so "
                            f"that masks/ mirrors the image folders")
        return None  # masks for another split only
    index = {c: _mask_index(mirror / c, suffixes) for c in classes}
    masks, missing = [], []
    for path, _ in files:
        mask = index[path.parent.name].get(path.stem)
        masks.append(mask)
        if mask is None:
            missing.append(path)
    if missing:
        first = missing[0]
        raise DataError(
            f"{len(missing)} of the {len(files)} images of {split_root} have no mask in "
            f"{mirror} (e.g. {first.relative_to(split_root)} needs "
            f"{(mirror / first.relative_to(split_root)).with_suffix('.png')}): add the missing "
            f"masks, or move {masks_root} away to run without masks")
    return masks


def read_mask(path) -> torch.Tensor:
    """bool (H, W) of a mask file: non-zero = object (colour masks: any colour channel; an
    alpha channel is ignored). Unreadable files are a one-line :class:`DataError`."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im)
            if im.mode in ("LA", "PA", "RGBA", "La", "RGBa"):
                a = a[..., :-1]
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise DataError(f"mask {path} cannot be read ({e.strerror or type(e).__name__}): "
                        f"check the masks/ tree's files and permissions") from None
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"mask {path} cannot be decoded ({type(e).__name__}): replace it with "
                        f"a single-channel PNG (non-zero = object)") from None
    if a.ndim == 3:
        a = (a != 0).any(axis=2)
    return torch.from_numpy(np.ascontiguousarray(a != 0))


def resize_mask(mask: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """``mask`` (H, W) bool with its image's transform (shorter side to ``resize``, centre
    crop ``crop``), nearest-neighbour (pixel centres, so it stays aligned and binary)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    m = TF.resize(mask[None].to(torch.uint8), resize,
                  interpolation=InterpolationMode.NEAREST_EXACT)
    return TF.center_crop(m, crop)[0].bool()
