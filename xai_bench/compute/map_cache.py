"""Explain once, score many: the attribution maps of one model shared by the metrics of a run.

Pixel perturbation, deletion, insertion, mask localisation and the random-target check all
explain the same most-confident test images for their true classes, in the same batches (the
selection of :func:`xai_bench.metrics.common.select_confident`, chunks of ``batch_size``).
Without sharing, every method explains them once per metric; with it, once per run.

:func:`sharing_maps` scopes a :class:`MapCache` to one model object; inside it
:func:`xai_bench.metrics.common.attribute` looks a batch up before calling the method. The key
is the method object and the exact bytes of the batch (encoded inputs, their dtype and shape)
and of the targets, so a hit is the very computation that would otherwise run again: the maps
are bit-identical to computing them, whatever the order of the metrics, and a resumed or a
multi-process run (which may evaluate a different subset of metrics in one process) gets the
same numbers. Attribution methods are deterministic given their input (the stochastic ones draw
from seeds derived from the image's content), which is what makes reuse exact.

Only the one model object the cache was opened for is served: the parameter-randomisation
check explains randomised *copies*, which never hit. A class-agnostic method (``class_agnostic
= True``: rollout, FinAtt, the baselines) is called once per distinct image of a batch instead
of once per (image, target): the grid pointing game's four targets of one grid cost one call.

The perturbation metrics share their forward passes the same way
(:func:`xai_bench.metrics.common.curve_confidences`): every point of a curve is forwarded on
its own, so its confidences depend on (model, images, substrate, pixel ordering, pixel count,
targets) alone and :meth:`MapCache.confidences` can hand them to the next metric that needs the
same point: pixel perturbation's most-important-first points are deletion's first points; the
clean images are the 0 % point of pixel perturbation and deletion and insertion's last point,
and the all-zero and the blurred inputs do not depend on the method at all. Those
method-independent points are kept per model (the runner passes one ``confidences`` dictionary
to the caches of all the units of a model), so each is forwarded once per image batch, not once
per method and metric.

Memory: the runner opens one cache per (model, method) and drops it before the next method, so
at most one method's maps of the selected images are held (250 maps at 224² are 50 MB); the
confidences are one float per image and point.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib

import torch

from xai_bench.compute.seeding import tensor_bytes

__all__ = ["MapCache", "sharing_maps", "active_cache", "batch_digest"]

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("xai_bench_map_cache", default=None)


def batch_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the exact bytes, dtypes and shapes of ``tensors``."""
    h = hashlib.sha256()
    for t in tensors:
        dtype, shape, raw = tensor_bytes(t)
        h.update(f"{dtype}|{shape}|".encode())
        h.update(raw)
    return h.hexdigest()


def row_digests(x: torch.Tensor) -> list[str]:
    """One digest per row of ``x`` (its first dimension)."""
    flat = x.detach().to("cpu").contiguous().reshape(x.shape[0], -1)
    return [batch_digest(row) for row in flat]


class MapCache:
    """Maps of one model, keyed by (method object, batch bytes, target bytes), and the
    confidences of perturbed copies, keyed by their content (:meth:`confidences`).

    ``hits``/``misses`` count batches (a class-agnostic call counts one miss per call that
    had to explain anything); ``saved`` counts the images not explained again,
    ``copies_saved`` the perturbed copies not forwarded again. ``confidences``: a dictionary
    to keep the confidences in (shared with other caches of the same model), or a new one."""

    def __init__(self, model, confidences: dict | None = None):
        self.model = model
        self._maps: dict = {}
        self._methods: dict = {}  # id -> method: keeps the object alive, so its id stays unique
        self._confidences = {} if confidences is None else confidences
        self.hits = self.misses = self.saved = self.copies_saved = 0

    def serves(self, model) -> bool:
        return model is self.model

    def maps(self, method, x: torch.Tensor, targets: torch.Tensor, compute) -> torch.Tensor:
        """The maps of ``method`` for ``(x, targets)``: stored ones, or ``compute(x, targets)``
        (stored for the next metric). Class-agnostic methods are computed on the distinct
        images of the batch only and expanded back."""
        self._methods[id(method)] = method
        if getattr(method, "class_agnostic", False):
            return self._class_agnostic(method, x, targets, compute)
        key = (id(method), batch_digest(x, targets))
        found = self._maps.get(key)
        if found is not None:
            self.hits += 1
            self.saved += x.shape[0]
            return found.clone()
        self.misses += 1
        maps = compute(x, targets)
        self._maps[key] = maps
        return maps.clone()

    def confidences(self, key, compute) -> torch.Tensor:
        """The stored confidences under ``key`` (a hashable description of the exact copies
        and of how they are forwarded), or ``compute()``, stored for the next caller."""
        found = self._confidences.get(key)
        if found is None:
            found = self._confidences[key] = compute()
        else:
            self.copies_saved += found.numel()
        return found.clone()

    def _class_agnostic(self, method, x, targets, compute):
        # the distinct images of the batch, in first-seen order; the key is their bytes alone
        # (the map ignores the target), so the computation depends on the requested batch
        # only, never on what earlier calls left in the cache
        digests = row_digests(x)
        position: dict = {}  # digest -> its index among the distinct images
        unique = []
        for i, d in enumerate(digests):
            if d not in position:
                position[d] = len(unique)
                unique.append(i)
        where = torch.tensor([position[d] for d in digests], device=x.device)
        index = torch.tensor(unique, device=x.device)
        key = (id(method), "agnostic", batch_digest(x[index]))
        found = self._maps.get(key)
        if found is None:
            self.misses += 1
            found = compute(x[index], targets[index])
            self._maps[key] = found
            self.saved += x.shape[0] - len(unique)
        else:
            self.hits += 1
            self.saved += x.shape[0]
        return found[where].clone()


def active_cache(model) -> MapCache | None:
    """The cache that serves ``model`` here, if any."""
    cache = _ACTIVE.get()
    return cache if cache is not None and cache.serves(model) else None


@contextlib.contextmanager
def sharing_maps(model, cache: MapCache | None = None, confidences: dict | None = None):
    """Within the block, the metrics' calls of :func:`~xai_bench.metrics.common.attribute`
    and :func:`~xai_bench.metrics.common.curve_confidences` on ``model`` share their maps and
    forwards (``cache``, or a new :class:`MapCache` keeping its confidences in
    ``confidences``). Yields the cache."""
    cache = cache if cache is not None else MapCache(model, confidences)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
