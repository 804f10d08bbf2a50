"""The one inference pass over a data set: :func:`predict` -> :class:`Predictions`.

Training (test accuracy), ``xai-bench info --evaluate``, the runner's accuracy figure and the
metrics' selection of confidently classified images all use :func:`predict`. Its result is
cached per (model, data set, device, batch size, forward options): called twice with the same
arguments, the model runs once. The cache entry is recomputed when the model's parameters or
buffers, or the data set's ``images``/``labels`` tensors, are replaced or modified in place
(PyTorch bumps a tensor's version on every in-place write); files of a lazily loaded data set
changing on disk are not noticed (pass ``cache=False``).

The forwards follow the options of :mod:`xai_bench.compute.precision` (bf16 autocast, torch.compile);
the logits are cast to float32 before anything is computed from them (the float64
log-confidence that ranks the images then starts from bf16-rounded logits: see docs/gpu.md).

Batches come from the in-memory tensors when the data set has them, else through a
``DataLoader`` with worker processes (:func:`xai_bench.data.iter_batches`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from xai_bench.errors import ConfigError
from xai_bench.contracts.model import model_name

__all__ = ["Predictions", "predict", "log_confidence", "check_image_size", "clear_cache"]


def log_confidence(model, logits: torch.Tensor) -> torch.Tensor:
    """log of ``model.confidence(logits)`` in float64, computed stably: saturated sigmoids
    (exactly 1.0 in float32 above a logit of ~17) still differ, so rankings by confidence
    do not collapse into ties."""
    logits = logits.double()
    kind = model.training_loss
    if kind == "bce":
        return torch.nn.functional.logsigmoid(logits)
    if kind == "ce":
        return torch.log_softmax(logits, dim=-1)
    return model.confidence(logits).double().log()


@dataclass
class Predictions:
    """Outputs of a model over a whole data set (CPU tensors).

    logits: (N, C) float32; labels: (N,) int64. ``log_confidence``: float64 log-confidence of
    the true class (sigmoid for BCE-trained models, softmax for CE-trained ones, else the
    model's own ``confidence``; see :func:`log_confidence`), computed by :func:`predict`."""

    logits: torch.Tensor
    labels: torch.Tensor
    true_log_confidence: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def predicted(self) -> torch.Tensor:
        """Top-1 class per item, (N,) int64."""
        return self.logits.argmax(1)

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: top-1 prediction equals the label."""
        return self.predicted == self.labels

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy."""
        return self.correct.float().mean().item()

    @property
    def log_confidence(self) -> torch.Tensor:
        """(N,) float64 log-confidence of the true class (softmax of the logits when the
        predictions were built without a model)."""
        if self.true_log_confidence is None:
            self.true_log_confidence = torch.log_softmax(self.logits.double(), dim=-1).gather(
                1, self.labels[:, None].long())[:, 0]
        return self.true_log_confidence


def check_image_size(model, images: torch.Tensor, what: str = "data set images") -> None:
    """:class:`ConfigError` when ``images`` are not at the model's ``image_size``."""
    size = model.image_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    if tuple(images.shape[-2:]) != size:
        raise ConfigError(f"{what} are {tuple(images.shape[-2:])} but model "
                          f"'{model_name(model)}' expects "
                          f"{size}; build the data set at the model's image size")


# ---- the cache ------------------------------------------------------------------------------
# model -> {(id(dataset), device, batch_size): (dataset weakref, fingerprint, Predictions)}
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget every cached inference pass."""
    _CACHE.clear()


def _fingerprint(model, dataset) -> tuple:
    """Changes whenever the model's parameters/buffers or the data set's tensors are replaced
    or modified in place."""
    tensors = list(model.parameters()) + list(model.buffers()) if isinstance(
        model, torch.nn.Module) else []
    base, parts = dataset, [len(dataset)]
    while isinstance(base, torch.utils.data.Subset):
        parts.append(tuple(int(i) for i in base.indices))
        base = base.dataset
    for attr in ("images", "labels"):
        value = getattr(base, attr, None)
        if isinstance(value, torch.Tensor):
            tensors.append(value)
    parts.append(getattr(base, "transform", None) is not None)
    return tuple(parts) + tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors)


def _cache_slot(model, cache: bool):
    if not cache:
        return None
    try:
        return _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        return None


@torch.no_grad()
def predict(model, dataset, *, device="cpu", batch_size: int = 256, num_workers=None,
            cache: bool = True) -> Predictions:
    """Run ``model`` (in eval mode, no gradients; it must already be on ``device``) over the
    whole ``dataset`` in batches of ``batch_size`` and return :class:`Predictions`.

    ``num_workers``: DataLoader worker processes for data sets without in-memory tensors
    (default: ``min(8, cpu_count - 1)`` on more than 2 cores, else 0). ``cache=False``
    recomputes (and stores nothing). Raises :class:`~xai_bench.data.DataError` for an empty
    data set or an image that cannot be loaded, :class:`ConfigError` when the images are not
    at the model's ``image_size``."""
    from xai_bench.data.errors import DataError
    from xai_bench.data.loader import iter_batches
    from xai_bench.compute.modes import eval_mode

    batch_size = int(batch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    if n == 0:
        raise DataError("cannot evaluate on an empty data set")
    from xai_bench.compute.precision import current_options, forward_autocast, forward_model

    # bf16 forwards give other logits (and compiled ones may round differently): their own entry
    key = (id(dataset), str(device), batch_size, current_options().key())
    slot = _cache_slot(model, cache)
    fingerprint = _fingerprint(model, dataset) if slot is not None else None
    if slot is not None and key in slot:
        ref, fp, result = slot[key]
        if ref() is dataset and fp == fingerprint:
            return result
    chunks = [torch.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    logits, labels = [], []
    forward = forward_model(model)
    with eval_mode(model):
        for images, y in iter_batches(dataset, chunks, num_workers=num_workers):
            if not logits:
                check_image_size(model, images)
            x = model.encode(images.to(device))
            with forward_autocast(device):
                out = forward(x)
            # float32 before the float64 log-confidence (bf16 logits would rank coarsely);
            # kept on the device until the end: one copy to the CPU, not one per batch
            logits.append(out.float())
            labels.append(y.long().cpu())
    logits, labels = torch.cat(logits).cpu(), torch.cat(labels)
    result = Predictions(logits=logits, labels=labels,
                         true_log_confidence=log_confidence(model, logits).gather(
                             1, labels[:, None])[:, 0])
    if slot is not None:
        try:
            slot.clear()  # one data set per model at a time is enough
            slot[key] = (weakref.ref(dataset), fingerprint, result)
        except TypeError:  # the data set is not weak-referenceable
            pass
    return result
