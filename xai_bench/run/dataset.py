"""The run's data set: its test split at each model's input size, and its identity."""

from __future__ import annotations

import torch

from xai_bench.storage.identity import (
    dataset_spec_fingerprint, digest, module_closure, source_digest, weights_digest,
)

__all__ = ["RunDataset"]


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
