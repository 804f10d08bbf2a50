"""Image blurs shared by the insertion metric's substrate and the methods' blurred baselines:
RISE's nearly-box kernel and a sampled Gaussian, both separable, on any device."""

from __future__ import annotations

import torch

BLUR_KERNELS = ("rise", "gaussian")
BLUR_PADDINGS = ("replicate", "zeros")
# scipy.ndimage.gaussian_filter's default: the 1-D filter reaches int(4σ + 0.5) samples out
RISE_TRUNCATE = 4.0


def check_choice(name: str, value, allowed) -> str:
    """``value`` if it is one of ``allowed``, else a one-line ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; "
                         f"got {value!r}")
    return value


def _rise_kernel_1d(size: int, sigma: float) -> torch.Tensor:
    """One axis of :func:`rise_kernel`: a length-``size`` delta at ``size // 2`` correlated
    with a normalised Gaussian of radius ``int(4σ + 0.5)`` under half-sample symmetric
    reflection (``d c b a | a b c d | d c b a``), float64."""
    centre = size // 2
    delta = torch.zeros(size, dtype=torch.float64)
    delta[centre] = 1.0
    if sigma <= 0:  # no smoothing at all: the delta itself
        return delta
    radius = int(RISE_TRUNCATE * float(sigma) + 0.5)
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-0.5 * (offsets.double() / float(sigma)) ** 2)
    weights = weights / weights.sum()
    # The radius may exceed the array many times over (20 samples for an 11-sample delta at
    # σ 5), so every out-of-range index is folded back with the period-2n reflection rather
    # than by a single pad.
    index = (torch.arange(size)[:, None] + offsets[None, :]) % (2 * size)
    index = torch.where(index >= size, 2 * size - 1 - index, index)
    return (weights[None, :] * delta[index]).sum(dim=1)


def rise_kernel(size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion blur kernel, ``(size, size)`` float64: a delta at
    ``(size // 2, size // 2)`` smoothed by a Gaussian of std ``sigma`` whose reach is
    truncated at 4σ, reflecting at the array's edges (what ``gaussian_filter`` of scipy.ndimage
    does with its defaults). The Gaussian's reach is wider than the array, so the reflected
    tails pile up at the edges: at 11 px and σ 5 the kernel is nearly a box (centre / corner
    1.1417) and sums to 1. A delta is the outer product of two 1-D deltas and the filter is
    separable, so the kernel is the outer product of the 1-D result with itself."""
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    line = _rise_kernel_1d(int(size), float(sigma))
    return torch.outer(line, line)


def _sampled_gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """A Gaussian of std ``sigma`` sampled at ``size`` integer offsets around the array's
    middle and normalised to sum 1, float64."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * float(sigma) ** 2))
    return g / g.sum()


def gaussian_blur(images: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0, *,
                  kernel: str = "rise", padding: str = "replicate") -> torch.Tensor:
    """Separable blur of ``(B, C, H, W)`` images, every channel on its own.

    kernel: ``"rise"`` — :func:`rise_kernel` (``kernel_size``, ``sigma``), RISE's nearly-box
    kernel; ``"gaussian"`` — a Gaussian of std ``sigma`` sampled on ``kernel_size`` offsets
    and normalised to sum 1. Both kernels are outer products of a 1-D kernel, so the blur runs
    as a horizontal then a vertical pass. padding: ``"replicate"`` keeps the image's own
    colours at the borders (a constant image is unchanged); ``"zeros"`` pads with 0, which
    pulls the borders towards 0 (as RISE's ``conv2d(..., padding=klen // 2)``). The output has
    the input's shape."""
    check_choice("kernel", kernel, BLUR_KERNELS)
    check_choice("padding", padding, BLUR_PADDINGS)
    kernel_size = int(kernel_size)
    if kernel_size <= 1 or sigma <= 0:
        return images.clone()
    if kernel == "rise":
        line = _rise_kernel_1d(kernel_size, float(sigma))
    else:
        line = _sampled_gaussian_1d(kernel_size, float(sigma))
    line = line.to(device=images.device, dtype=images.dtype)
    channels = images.shape[1]
    # the kernel's centre is sample kernel_size // 2, so that many pixels are padded before it
    pad_l = kernel_size // 2
    pad_r = kernel_size - 1 - pad_l
    pad = (pad_l, pad_r, pad_l, pad_r)
    if padding == "replicate":
        x = torch.nn.functional.pad(images, pad, mode="replicate")
    else:
        x = torch.nn.functional.pad(images, pad, mode="constant", value=0.0)
    x = torch.nn.functional.conv2d(x, line.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                                   groups=channels)
    x = torch.nn.functional.conv2d(x, line.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                                   groups=channels)
    return x
