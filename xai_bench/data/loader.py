"""Batches of a data set for training and inference: :func:`iter_batches`.

In-memory data sets (``images``/``labels`` tensors, also through ``Subset``) are batched by
tensor indexing (:func:`load_batch`); any other data set (e.g. a lazily decoded
ImageFolder) goes through a ``torch.utils.data.DataLoader`` with worker processes.

A :class:`~xai_bench.data.DataError` raised while loading an item (e.g. an image file that
cannot be decoded) reaches the caller as the same one-line ``DataError`` also when it was
raised in a worker process (the DataLoader re-raises it wrapped, with the worker's traceback
in its message; the failing batch is loaded again in this process to get the clean error).
"""

from __future__ import annotations

import os

import torch

from xai_bench.errors import XaiBenchError

__all__ = ["in_memory", "load_batch", "default_num_workers", "iter_batches"]


def in_memory(dataset) -> bool:
    """Whether ``dataset`` (or the data set under its ``Subset`` wrappers) holds its images
    and labels as tensors."""
    base = dataset
    while isinstance(base, torch.utils.data.Subset):
        base = base.dataset
    return isinstance(getattr(base, "images", None), torch.Tensor) and \
        isinstance(getattr(base, "labels", None), torch.Tensor)


def load_batch(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float (B, 3, H, W) in [0, 1]) and labels (int64 (B,)) of ``indices``, as
    ``dataset[i]`` gives them (the data set's ``transform``, if any, applied). Indexes the
    in-memory ``images``/``labels`` tensors (uint8, or float in [0, 1]) when the data set has
    them (also through a ``torch.utils.data.Subset``), else stacks items. The one image loader
    of xai-bench: training, inference and the metrics all load through it."""
    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    base = dataset
    while isinstance(base, torch.utils.data.Subset):
        indices = torch.as_tensor(base.indices, dtype=torch.long)[indices]
        base = base.dataset
    images = getattr(base, "images", None)
    labels = getattr(base, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        batch = images[indices]
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        transform = getattr(base, "transform", None)
        if transform is not None:
            batch = torch.stack([transform(im) for im in batch]) if len(batch) else batch
        return batch, labels[indices].long()
    items = [base[int(i)] for i in indices]
    if not items:
        raise ValueError("load_batch needs at least one index for a data set without "
                         "in-memory tensors")
    return (torch.stack([torch.as_tensor(im).float() for im, _ in items]),
            torch.tensor([int(y) for _, y in items], dtype=torch.int64))


def default_num_workers() -> int:
    """DataLoader worker processes: ``min(8, cpu_count - 1)`` on more than 2 cores, else 0
    (load in the main process)."""
    cores = os.cpu_count() or 1
    return min(8, cores - 1) if cores > 2 else 0


def _original_message(error: BaseException) -> str:
    """The worker exception's own message from the DataLoader's wrapped one (its traceback's
    last line, ``module.Class: message``)."""
    text = str(error.args[0]) if error.args else str(error)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else text
    head, sep, tail = last.partition(": ")
    return tail if sep and " " not in head else last


def iter_batches(dataset, batches, num_workers: int | None = None):
    """Yield ``(float images (B, 3, H, W), int64 labels (B,))`` for each index tensor in
    ``batches``: by tensor indexing for in-memory data sets, else through a ``DataLoader``
    (``num_workers`` worker processes, default :func:`default_num_workers`)."""
    batches = [torch.as_tensor(b, dtype=torch.long).reshape(-1) for b in batches]
    if in_memory(dataset):
        for idx in batches:
            yield load_batch(dataset, idx)
        return
    if num_workers is None:
        num_workers = default_num_workers()
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[b.tolist() for b in batches],
                                         num_workers=int(num_workers),
                                         pin_memory=torch.cuda.is_available())
    done = 0
    iterator = iter(loader)
    while True:
        try:
            images, labels = next(iterator)
        except StopIteration:
            return
        except Exception as e:
            if int(num_workers) == 0 or done >= len(batches):
                raise
            # raised in a worker: load the failing batch here for the clean error
            del iterator
            try:
                load_batch(dataset, batches[done])
            except XaiBenchError as clean:
                raise clean from None
            if isinstance(e, XaiBenchError):  # not reproducible here: unwrap the message
                raise type(e)(_original_message(e)) from None
            raise
        done += 1
        yield torch.as_tensor(images).float(), torch.as_tensor(labels, dtype=torch.long)
