"""The run's data set: its test split at each model's input size, and its identity."""

from __future__ import annotations

import torch

from xai_bench.data.errors import DataError
from xai_bench.run.config import label_of
from xai_bench.storage.identity import (
    dataset_spec_fingerprint, digest, module_closure, source_digest, weights_digest,
)

__all__ = ["RunDataset", "check_split_content", "class_count"]


class _TensorBag(torch.nn.Module):
    """Named tensors, for :func:`weights_digest` of a data set's tensors."""

    def __init__(self, **tensors):
        super().__init__()
        for k, v in tensors.items():
            if isinstance(v, torch.Tensor):
                self.register_buffer(k, v)


#: data-set kinds whose images are resized to a model's input size (the note says so once)
RESIZED_KINDS = ("imagefolder", "imagenet", "cifar10")


def _native_size(split) -> tuple | None:
    """(H, W) of the first image file of a lazily loaded image folder (its header only)."""
    files = getattr(split, "files", None)
    if not files:
        return None
    try:
        from PIL import Image

        with Image.open(files[0][0]) as im:
            return im.size[1], im.size[0]
    except Exception:  # an unreadable file is reported with its fix when it is loaded
        return None


def resize_note(spec: str, split, size: tuple, model=None) -> str | None:
    """One line saying that the images of ``spec`` are resized to ``size`` for ``model``
    (None where the data set keeps its size or is generated at that size)."""
    kind = spec.partition(":")[0].strip().lower()
    if kind not in RESIZED_KINDS:
        return None
    height, width = size
    whose = f"the input size of {model}" if model else "the model's input size"
    if kind == "cifar10":
        if (height, width) == (32, 32):
            return None
        return f"{spec}: images resized from 32×32 to {height}×{width} ({whose})"
    resize = getattr(split, "resize", height)
    how = (f"shorter side to {resize}, centre crop" if resize != height
           else "shorter side resized, centre crop")
    native = _native_size(split)
    if native == (height, width) and resize == height:  # nothing to resize, as far as seen
        return f"{spec}: images used at {height}×{width} ({whose}; the first image has it)"
    seen = f"; the first image is {native[0]}×{native[1]}" if native else ""
    return f"{spec}: images resized to {height}×{width} ({whose}; {how}{seen})"


class RunDataset:
    """The test split of a data-set spec (one instance per input size), or a data set object
    used as it is. ``log``: where a resized image folder is said to be resized, once per
    (data set, size)."""

    def __init__(self, spec, log=None):
        self.spec = spec
        self.log = log
        self._splits: dict = {}

    def test_split(self, image_size=None, model=None):
        """The test split at ``image_size`` (a model's input size; ``model``: that model's
        name, for the note) where the data set can be resized; one instance per size."""
        if not isinstance(self.spec, str):
            return self.spec
        key = None if image_size is None else tuple(image_size)
        if key not in self._splits:
            from xai_bench.data import get_dataset

            self._splits[key] = get_dataset(self.spec, split="test", image_size=key)
            # size None: the check before any work, at the data set's default size
            note = None if key is None else resize_note(self.spec, self._splits[key], key,
                                                         model)
            if note and self.log is not None:
                self.log(note)
        return self._splits[key]

    def identity(self) -> dict:
        """What determines the data the cells see: a spec's content fingerprint and the data
        code, or an object's tensors (else its type, length and repr)."""
        spec = self.spec
        if isinstance(spec, str):
            return {"spec": spec, "content": dataset_spec_fingerprint(spec),
                    "code": source_digest(module_closure("xai_bench.data"))}
        from xai_bench.metrics.common import has_masks

        # masks change what the mask metrics score: in the identity when the object has them
        # (a data set without masks keeps the identity it had before masks were supported)
        masks = getattr(spec, "masks", None) if has_masks(spec) else None
        mask_note = {"masks": "mask(i)" if callable(getattr(spec, "mask", None))
                     else "tensor"} if has_masks(spec) else {}
        images = getattr(spec, "images", None)
        if isinstance(images, torch.Tensor):
            labels = getattr(spec, "labels", None)
            bag = dict(images=images, labels=labels)
            if isinstance(masks, torch.Tensor):
                bag["masks"] = masks
            h = digest([weights_digest(_TensorBag(**bag))])
            return {"object": type(spec).__qualname__, "tensors": h, **mask_note}
        return {"object": type(spec).__qualname__, "length": len(spec),
                "repr": repr(spec)[:200], **mask_note}


def class_count(split) -> int | None:
    """The number of classes a test split declares (an image folder: its class folders)."""
    n = getattr(split, "num_classes", None)
    if n is None and getattr(split, "classes", None) is not None:
        n = len(split.classes)
    return int(n) if isinstance(n, int) and not isinstance(n, bool) else None


def check_split_content(split) -> None:
    """A split held in memory (``images`` and ``labels`` tensors) has finite pixels and labels
    in ``0..num_classes-1``: one vectorised pass each, before any work. A NaN pixel would give
    NaN scores recorded as "ok" (or blame the method), a label out of range a traceback deep
    in a metric. Lazily loaded splits (image folders) are decoded to uint8, always finite, and
    their labels are folder indices."""
    name = label_of(split)
    images, labels = getattr(split, "images", None), getattr(split, "labels", None)
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        bad = ~torch.isfinite(images.reshape(images.shape[0], -1)).all(dim=1) \
            if images.dim() > 1 else ~torch.isfinite(images)
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0, 0])
            raise DataError(f"data set '{name}' has non-finite (NaN or inf) pixels in "
                            f"{int(bad.sum())} image(s), the first at index {first}; replace "
                            f"or drop them (torch.nan_to_num) before benchmarking")
    if isinstance(labels, torch.Tensor) and labels.numel():
        n = class_count(split)
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (n is not None and high >= n):
            where = int(torch.nonzero((labels < 0) | (labels >= (n or high + 1)))[0, 0])
            raise DataError(f"data set '{name}' has labels in {low}..{high} but "
                            f"{n} classes (labels 0..{(n or 0) - 1}); the first out of range "
                            f"is at index {where}: fix the labels or num_classes")
