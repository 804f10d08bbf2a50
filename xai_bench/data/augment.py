"""Batched training augmentations on float RGB batches ``(B, 3, H, W)`` in [0, 1].

``train_augmentation(image_size, kind)`` returns a callable ``aug(images, generator=None)``;
every random draw comes from ``generator`` (a CPU ``torch.Generator``; None = torch's global
RNG), so a seeded generator makes the output reproducible. Images may live on any device.

kinds:

* ``shapes`` — for the embedded shapes data: per image, either a zoom-out (the image shown
  at 50–100 % of its size on a background-like fill, so the model also sees objects at half
  size, as the grid pointing game shows them) or a RandomResizedCrop-like zoom-in (35–100 %
  of the area, aspect 4/5–5/4), a random translation and a horizontal flip — all in one
  ``grid_sample`` call, so it costs almost nothing.
* ``randaugment`` — the paper-style recipe: ``torchvision.transforms.v2.RandAugment(2, 9)``
  per image (uint8), then, for small images (side <= 64, e.g. CIFAR-10), a random crop with
  4 px (reflect) padding; and a horizontal flip.
* ``crop-flip`` — the light CIFAR recipe: a random crop with 4 px (reflect) padding and a
  horizontal flip, batched (no per-image work: the augmentation of choice when a few CPU
  epochs are all there is, where RandAugment's regularisation would only slow learning).
* ``none`` — identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xai_bench.data.grids import make_grids

KINDS = ("shapes", "randaugment", "crop-flip", "none")


def _uniform(lo, hi, shape, generator, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, generator=generator)
    return (u * (hi - lo) + lo).to(like.device, like.dtype)


def _binomial_blur(images: torch.Tensor) -> torch.Tensor:
    """Separable 3×3 [1, 2, 1]² / 16 blur (replicate padding): the low-pass a 2× downscale
    needs. Done with shifted slices (depthwise conv2d is slow on CPU)."""
    x = F.pad(images, (1, 1, 1, 1), mode="replicate")
    x = (x[..., :-2, :] + 2 * x[..., 1:-1, :] + x[..., 2:, :]) * 0.25
    return (x[..., :-2] + 2 * x[..., 1:-1] + x[..., 2:]) * 0.25


def zoom_crop_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                   zoom_out: tuple = (0.5, 1.0), p_zoom_out: float = 0.4,
                   crop_area: tuple = (0.35, 1.0), ratio: tuple = (4 / 5, 5 / 4),
                   flip: bool = True) -> torch.Tensor:
    """The ``shapes`` augmentation (see module docstring), batched in one ``grid_sample``."""
    b, c, h, w = images.shape
    if b == 0:
        return images
    like = images
    # output size of the image relative to the frame, per axis (sx, sy)
    out_scale = _uniform(*zoom_out, (b,), generator, like)
    area = _uniform(*crop_area, (b,), generator, like)
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), (b,), generator, like)
    crop_w = (area * log_r.exp()).sqrt().clamp(max=1.0)
    crop_h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    is_out = _uniform(0, 1, (b,), generator, like) < p_zoom_out
    sx = torch.where(is_out, out_scale, 1.0 / crop_w)
    sy = torch.where(is_out, out_scale, 1.0 / crop_h)
    # translations keep the whole image in the frame (zoom-out) or the crop in the image
    tx = _uniform(-1, 1, (b,), generator, like) * (1 - 1 / sx).abs()
    ty = _uniform(-1, 1, (b,), generator, like) * (1 - 1 / sy).abs()
    mirror = torch.where(_uniform(0, 1, (b,), generator, like) < 0.5, -1.0, 1.0) if flip \
        else torch.ones(b, device=like.device, dtype=like.dtype)
    theta = torch.zeros(b, 2, 3, device=like.device, dtype=like.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = mirror / sx, 1 / sy
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    # shrinking needs low-pass filtering first (as an area/antialiased resize would do)
    shrink = (2 * (1 - torch.minimum(sx, sy))).clamp(0, 1)[:, None, None, None]
    source = images + shrink * (_binomial_blur(images) - images)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    # background-like fill: the image's border colour, low-frequency brightness, pixel noise
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0],
                        images[:, :, :, -1]], dim=-1).mean(-1)  # (B, C)
    coarse = _uniform(-0.08, 0.08, (b, 1, 4, 4), generator, like)
    fill = border[:, :, None, None] + F.interpolate(coarse, size=(h, w), mode="bilinear",
                                                    align_corners=True)
    fill = fill + 0.02 * torch.randn((b, c, h, w), generator=generator).to(like.device, like.dtype)
    return (out + (1 - valid) * fill).clamp(0, 1)


def _random_crop_flip(images: torch.Tensor, generator, padding: int, crop: bool):
    b, _, h, w = images.shape
    out = images
    if crop and padding > 0:
        padded = F.pad(images, (padding,) * 4, mode="reflect")
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
        rows = oy[:, None] + torch.arange(h, device=images.device)
        cols = ox[:, None] + torch.arange(w, device=images.device)
        idx = torch.arange(b, device=images.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]
        out = out.permute(0, 3, 1, 2)
    flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def randaugment_crop_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                          padding: int = 4, num_ops: int = 2, magnitude: int = 9,
                          crop: bool | None = None) -> torch.Tensor:
    """RandAugment (per image, on uint8) + random crop with padding (small images) + flip.
    RandAugment draws from torch's global RNG, so it runs under a forked RNG seeded from
    ``generator``: reproducible, and the caller's global RNG state is left untouched."""
    from torchvision.transforms import v2

    b, _, h, w = images.shape
    if b == 0:
        return images
    ra = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    u8 = (images.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u8 = torch.stack([ra(im) for im in u8])
    out = u8.to(images.device, images.dtype) / 255.0
    crop = min(h, w) <= 64 if crop is None else crop
    return _random_crop_flip(out, generator, padding, crop)


def crop_flip(images: torch.Tensor, generator: torch.Generator | None = None,
              padding: int = 4) -> torch.Tensor:
    """Random crop with ``padding`` px (reflect) padding, then a horizontal flip (p = 1/2)."""
    if images.shape[0] == 0:
        return images
    return _random_crop_flip(images, generator, padding, crop=True)


def identity(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return images


AUGMENTATIONS = {"shapes": zoom_crop_flip, "randaugment": randaugment_crop_flip,
                 "crop-flip": crop_flip, "none": identity}


def train_augmentation(image_size=None, kind: str | None = None):
    """The batched augmentation ``kind`` (one of :data:`KINDS`) for images of
    ``image_size`` (int or (H, W); None = decided from each batch). ``train_augmentation(kind)``
    also works. Returns ``aug(images, generator=None) -> images``."""
    if isinstance(image_size, str) and not isinstance(kind, str):
        image_size, kind = kind, image_size
    kind = "shapes" if kind is None else kind
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation '{kind}'; use one of {', '.join(KINDS)}")
    if kind != "randaugment" or image_size is None:
        return AUGMENTATIONS[kind]
    side = min(image_size) if isinstance(image_size, (tuple, list)) else int(image_size)

    def aug(images, generator=None):
        return randaugment_crop_flip(images, generator, crop=side <= 64)

    return aug


def mosaic_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, fraction: float,
                 generator: torch.Generator | None = None):
    """Replace the first ``round(fraction · B)`` images of a batch by 2×2 mosaics of four
    random images of the batch, built exactly like the grid pointing game's grids
    (:func:`xai_bench.data.grids.make_grids`: row-major, scaled down ×2). Returns the images
    and per-class target counts ``(B, C)``: a one-hot row per plain image, the number of cells
    of each class per mosaic. Lets the small default models recognise objects at half size in
    any cell, which the grid pointing game needs."""
    counts = F.one_hot(labels, num_classes).to(images.dtype)
    k = int(round(float(fraction) * len(images)))
    if k == 0:
        return images, counts
    picks = torch.randint(0, len(images), (k, 4), generator=generator).to(images.device)
    grids = make_grids(images[picks], tuple(images.shape[-2:])).to(images.dtype)
    return (torch.cat([grids, images[k:]]),
            torch.cat([counts[picks].sum(1), counts[k:]]))
