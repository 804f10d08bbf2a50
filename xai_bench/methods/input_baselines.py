"""Reference inputs ("baselines") of path and reference attributions (Integrated Gradients,
GradientSHAP, DeepLIFT, Occlusion, ...), built in the model's input space.

A method's ``baseline`` parameter names one of:

- ``"zeros"``: the all-zero *model input* (``torch.zeros_like(x)``), the baseline Integrated
  Gradients always used here. For an encoding other than plain RGB it is not the encoding of
  any image (a B-cos model's six channels ``[r, g, b, 1-r, 1-g, 1-b]`` are all 0, a
  normalised model's input 0 is the mean colour);
- a number ``v`` in [0, 1]: the constant grey image of level ``v`` in every RGB channel,
  encoded by the model (``model.encode``), e.g. ``0`` black, ``0.5`` mid grey;
- ``"blurred"``: the image blurred by a Gaussian of std ``blur_sigma`` pixels (default a
  sixteenth of the image's shorter side: 14 px at 224², 2 px at 32²) sampled on
  ``2·⌈3σ⌉ + 1`` offsets, edges replicated, in RGB (``decode``, blur, ``encode``);
- ``"uniform"``: an image of IID uniform noise in [0, 1] per RGB pixel, drawn per image from a
  CPU generator seeded by ``content_seed(image, seed)`` (so the same image gets the same
  noise in any batch and on any device), encoded by the model.
"""

from __future__ import annotations

import math

import torch

from xai_bench.compute.blur import gaussian_blur
from xai_bench.compute.seeding import per_image_uniform
from xai_bench.contracts.model import decode
from xai_bench.contracts.parameters import Valid

__all__ = ["BASELINES", "BASELINE_CHECK", "baseline_inputs", "default_blur_sigma"]

BASELINES = ("zeros", "blurred", "uniform")


def _valid_baseline(value) -> bool:
    if isinstance(value, str):
        return value in BASELINES
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and 0 <= value <= 1


#: the check of a ``baseline`` parameter
BASELINE_CHECK = Valid("'zeros', 'blurred', 'uniform' or a grey level in [0, 1]",
                       _valid_baseline)


def default_blur_sigma(x: torch.Tensor) -> float:
    """A sixteenth of the shorter image side, in pixels."""
    return min(x.shape[-2:]) / 16.0


def baseline_inputs(model, x: torch.Tensor, baseline, *, seed: int = 0,
                    blur_sigma: float | None = None) -> torch.Tensor:
    """The baseline for each input of ``x`` (encoded, ``(B, C, H, W)``): a tensor like ``x``
    (see the module docstring for the choices)."""
    if not _valid_baseline(baseline):
        raise ValueError(f"baseline must be {BASELINE_CHECK.wants}, got {baseline!r}")
    if isinstance(baseline, str) and baseline == "zeros":
        return torch.zeros_like(x)
    if isinstance(baseline, str) and baseline == "blurred":
        sigma = float(blur_sigma) if blur_sigma is not None else default_blur_sigma(x)
        images = decode(model, x)
        size = 2 * math.ceil(3 * sigma) + 1
        blurred = gaussian_blur(images, size, sigma, kernel="gaussian", padding="replicate")
        return model.encode(blurred).to(x.dtype)
    b, _, h, w = x.shape
    if isinstance(baseline, str):  # "uniform"
        images = per_image_uniform(x, (3, h, w), seed).to(x.dtype)
    else:
        images = torch.full((b, 3, h, w), float(baseline), device=x.device, dtype=x.dtype)
    return model.encode(images).to(x.dtype)
