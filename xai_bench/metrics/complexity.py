"""Complexity metrics: how concentrated a map is, scored on the precomputed maps of the most
confidently and correctly classified test images (see docs/definitions.md, 'sparseness',
'complexity').

- ``sparseness`` (higher is better): the Gini index of the map (Chalasani et al. 2020), as
  Quantus ``Sparseness``;
- ``complexity`` (lower is better): the Shannon entropy of each pixel's fractional
  contribution to the map (Bhatt et al. 2020), as Quantus ``Complexity``.

Both follow Quantus 0.6.0's preprocessing (``normalise``: divide by the largest absolute
value, then ``absolute``: take the absolute value; both on by default) and its small
constants (``1e-7`` added before the Gini index, ``1e-12`` inside the logarithm), in float64
and batched over images. One deliberate difference: Quantus divides by the largest absolute
value of the *whole batch* it is given, we by each map's own — so a score does not depend on
which other images share its batch. Both scores are invariant to a map's scale apart from those
constants, so the two agree to ~1e-7 (Gini) and ~1e-11 (entropy) on any batch and exactly on
single images (tests/test_complexity_metrics.py).
"""

from __future__ import annotations

import torch

from xai_bench.contracts.metric import metric

__all__ = ["sparseness", "complexity", "gini_index", "attribution_entropy", "preprocess_maps"]

#: Quantus's constants: added to every value before the Gini index (keeps a zero map at 0
#: instead of 0/0), and inside the logarithm of the entropy (log 0)
GINI_OFFSET = 1e-7
ENTROPY_EPS = 1e-12


def preprocess_maps(maps: torch.Tensor, normalise: bool = True,
                    absolute: bool = True) -> torch.Tensor:
    """``maps (B, ...)`` flattened to ``(B, n)`` float64; ``normalise`` divides each map by its
    largest absolute value (an all-zero map is left as it is), then ``absolute`` takes |a| —
    Quantus's order of the two."""
    a = maps.detach().reshape(maps.shape[0], -1).double()
    if normalise:
        peak = a.abs().amax(dim=1, keepdim=True) if a.shape[1] else a.new_ones(a.shape[0], 1)
        a = a / torch.where(peak > 0, peak, torch.ones_like(peak))
    if absolute:
        a = a.abs()
    return a


def gini_index(a: torch.Tensor) -> torch.Tensor:
    """Gini index of each row of ``a (B, n)`` after adding :data:`GINI_OFFSET`:
    ``sum_i (2i - n - 1) a_(i) / (n sum a)`` over the values sorted increasingly (i = 1..n).
    0 for a uniform row, ``1 - 1/n`` (up to the offset) for a one-hot row."""
    a = torch.sort(a.double() + GINI_OFFSET, dim=1).values
    n = a.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=a.device) - n - 1
    return (weights * a).sum(dim=1) / (n * a.sum(dim=1))


def attribution_entropy(a: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of ``a (B, n)`` taken as fractions ``p = a / sum |a|``:
    ``-sum p log(p + 1e-12)`` (natural log). ``log n`` for a uniform row, 0 for a one-hot row,
    NaN for an all-zero row (0/0, as in Quantus)."""
    a = a.double()
    p = a / a.abs().sum(dim=1, keepdim=True)
    return -(p * torch.log(p + ENTROPY_EPS)).sum(dim=1)


@metric("sparseness", higher_is_better=True, category="complexity",
        label="sparseness (Gini index of |map|)", chance=0.0,
        description="sparseness: Gini index of the absolute map (Chalasani et al. 2020, as "
                    "Quantus Sparseness); 0 for a uniform map, 1 - 1/n for a one-pixel map")
def sparseness(model, x, targets, maps, *, normalise: bool = True, absolute: bool = True):
    """Gini index of each map (:func:`gini_index` of :func:`preprocess_maps`)."""
    return gini_index(preprocess_maps(maps, normalise, absolute))


@metric("complexity", higher_is_better=False, category="complexity",
        label="complexity (entropy of |map|)",
        description="complexity: entropy of the fractional contribution of each pixel (Bhatt "
                    "et al. 2020, as Quantus Complexity); log(pixels) for a uniform map")
def complexity(model, x, targets, maps, *, normalise: bool = True, absolute: bool = True):
    """Entropy of each map (:func:`attribution_entropy` of :func:`preprocess_maps`)."""
    return attribution_entropy(preprocess_maps(maps, normalise, absolute))
