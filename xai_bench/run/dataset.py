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


class RunDataset:
    """The test split of a data-set spec (one instance per input size), or a data set object
    used as it is."""

    def __init__(self, spec):
        self.spec = spec
        self._splits: dict = {}

    def test_split(self, image_size=None):
        """The test split at ``image_size`` (a model's input size) where the data set can be
        resized; one instance per size."""
        if not isinstance(self.spec, str):
            return self.spec
        key = None if image_size is None else tuple(image_size)
        if key not in self._splits:
            from xai_bench.data import get_dataset

            self._splits[key] = get_dataset(self.spec, split="test", image_size=key)
        return self._splits[key]

    def identity(self) -> dict:
        """What determines the data the cells see: a spec's content fingerprint and the data
        code, or an object's tensors (else its type, length and repr)."""
        spec = self.spec
        if isinstance(spec, str):
            return {"spec": spec, "content": dataset_spec_fingerprint(spec),
                    "code": source_digest(module_closure("xai_bench.data"))}
        images = getattr(spec, "images", None)
        if isinstance(images, torch.Tensor):
            labels = getattr(spec, "labels", None)
            h = digest([weights_digest(_TensorBag(images=images, labels=labels))])
            return {"object": type(spec).__qualname__, "tensors": h}
        return {"object": type(spec).__qualname__, "length": len(spec),
                "repr": repr(spec)[:200]}


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
