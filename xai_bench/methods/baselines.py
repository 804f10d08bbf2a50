"""Sanity baselines: model-independent maps that every real method should beat."""

from __future__ import annotations

import torch

from xai_bench.contracts.method import method
from xai_bench.contracts.parameters import integer, number
from xai_bench.methods.base import AttributionMethod
from xai_bench.compute.seeding import per_image_uniform


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


@method("random", kind="baseline", cost=0.1, place=100, colour="#5f5f5f",
        groups=("default",))
class RandomMap(AttributionMethod):
    """IID uniform noise in [0, 1), seeded per image by ``content_seed(image, seed)``
    (:mod:`xai_bench.compute.seeding`) and drawn from a CPU generator: deterministic, independent of
    the target and of the image's position in the batch (a batched call equals the per-image
    calls), identical on CPU and GPU. The map has the input's floating dtype (the default
    dtype for integer inputs)."""

    PARAMETER_CHECKS = {"seed": integer()}

    def __init__(self, seed: int = 0):
        super().__init__(seed=int(seed))

    def attribute(self, model, x, targets):
        return per_image_uniform(x, x.shape[-2:], self.params["seed"], _float_dtype(x))


@method("uniform", kind="baseline", class_agnostic=True, cost=0.1, place=101,
        colour="#999999", groups=("default",))
class UniformMap(AttributionMethod):
    """A constant map of ones (every pixel equally important)."""

    def attribute(self, model, x, targets):
        return torch.ones(x.shape[0], *x.shape[-2:], device=x.device, dtype=_float_dtype(x))


@method("centre", kind="baseline", class_agnostic=True, cost=0.1, place=102,
        colour="#c8c8c8", groups=("default",))
class CentreMap(AttributionMethod):
    """A centred Gaussian bump ``exp(-d²/(2σ²))``, ``d`` the distance from the image centre and
    ``σ = sigma`` in units of the image size (per axis): the centre bias."""

    PARAMETER_CHECKS = {"sigma": number(above=0)}

    def __init__(self, sigma: float = 0.25):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        super().__init__(sigma=float(sigma))

    def attribute(self, model, x, targets):
        h, w = x.shape[-2:]
        dtype = _float_dtype(x)
        ys = (torch.arange(h, device=x.device, dtype=dtype) + 0.5) / h - 0.5
        xs = (torch.arange(w, device=x.device, dtype=dtype) + 0.5) / w - 0.5
        d2 = ys[:, None] ** 2 + xs[None, :] ** 2
        bump = torch.exp(-d2 / (2 * self.params["sigma"] ** 2))
        return bump.expand(x.shape[0], h, w).clone()
