"""Sanity baselines: model-independent maps that every real method should beat."""

from __future__ import annotations

import torch

from xai_bench.methods.base import AttributionMethod, register_method

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """``(a * c) mod 2**32`` for int64 tensors holding values in [0, 2**32), without int64
    overflow (the constant is split into 16-bit halves)."""
    lo = a * (c & 0xFFFF)
    hi = ((a * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _mix32(a: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser ("lowbias32" by C. Wellons): a bijection on [0, 2**32) with
    good avalanche, applied elementwise to int64 tensors."""
    a = a & _MASK32
    a = a ^ (a >> 16)
    a = _mul32(a, 0x7FEB352D)
    a = a ^ (a >> 15)
    a = _mul32(a, 0x846CA68B)
    return a ^ (a >> 16)


def _image_hashes(x: torch.Tensor) -> torch.Tensor:
    """One 32-bit hash per image of its exact values (bit patterns), vectorised: (B,) int64.
    Every 32-bit word is mixed with its position before summing, so the hash depends on where
    each value is."""
    flat = x.detach().contiguous().reshape(x.shape[0], -1)
    if flat.dtype == torch.float64:
        bits = flat.view(torch.int64)
        words = torch.stack([bits & _MASK32, (bits >> 32) & _MASK32], -1).reshape(x.shape[0], -1)
    elif flat.dtype in (torch.float16, torch.bfloat16):
        words = flat.view(torch.int16).to(torch.int64) & 0xFFFF
    elif flat.is_floating_point():
        words = flat.float().view(torch.int32).to(torch.int64) & _MASK32
    else:
        words = flat.to(torch.int64) & _MASK32
    pos = torch.arange(words.shape[1], device=x.device, dtype=torch.int64)
    mixed = _mix32(words ^ _mix32(pos * 2 + 1))
    return _mix32(mixed.sum(1) & _MASK32)


def _uniform_from_counter(seed: torch.Tensor, n: int) -> torch.Tensor:
    """Counter-based uniform numbers in [0, 1): ``(B, n)`` float64 from per-row seeds ``(B,)``
    (int64 in [0, 2**32)). Pure integer arithmetic, so identical on every device."""
    counter = torch.arange(n, device=seed.device, dtype=torch.int64)
    a = _mix32(seed[:, None] ^ _mix32(counter * _GOLDEN + 0x632BE5AB))
    b = _mix32(a ^ 0x5851F42D)
    # 53 random bits -> a float64 in [0, 1)
    return ((a >> 6).double() * 2.0 ** 27 + (b >> 5).double()) / 2.0 ** 53


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


@register_method
class RandomMap(AttributionMethod):
    """IID uniform noise in [0, 1), seeded per image from ``seed`` and a hash of the image's
    values: deterministic, independent of the target and of the image's position in the batch
    (a batched call equals the per-image calls), identical on CPU and GPU."""

    name, kind = "random", "baseline"

    def __init__(self, seed: int = 0):
        super().__init__(seed=int(seed))

    def attribute(self, model, x, targets):
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        salt = _mix32(torch.tensor(self.params["seed"] & _MASK32, dtype=torch.int64)
                      ^ (self.params["seed"] >> 32 & _MASK32)).to(x.device)
        seeds = _mix32(_image_hashes(x) ^ salt)
        return _uniform_from_counter(seeds, h * w).reshape(b, h, w).to(_float_dtype(x))


@register_method
class UniformMap(AttributionMethod):
    """A constant map of ones (every pixel equally important)."""

    name, kind, class_agnostic = "uniform", "baseline", True

    def attribute(self, model, x, targets):
        return torch.ones(x.shape[0], *x.shape[-2:], device=x.device, dtype=_float_dtype(x))


@register_method
class CentreMap(AttributionMethod):
    """A centred Gaussian bump ``exp(-d²/(2σ²))``, ``d`` the distance from the image centre and
    ``σ = sigma`` in units of the image size (per axis): the centre bias."""

    name, kind, class_agnostic = "centre", "baseline", True

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
