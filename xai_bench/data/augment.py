"""Batched training augmentations on float RGB batches ``(B, 3, H, W)`` in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def zoom_translate_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                        scale=(0.5, 1.25), flip: bool = True) -> torch.Tensor:
    """Random zoom (out to half size, in up to ``scale[1]``), translation and horizontal flip,
    in one ``grid_sample``. Zoomed-out images are framed by their own border colour plus noise,
    so the model also sees objects at half size, as the grid pointing game shows them."""
    b, _, h, w = images.shape
    dev, dt = images.device, images.dtype

    def uniform(lo, hi, *shape):
        return torch.rand(*shape, generator=generator).to(dev, dt) * (hi - lo) + lo

    s = uniform(*scale, b)                         # output shows the image at size s
    inv = 1.0 / s
    # translation keeps the image inside the frame when zoomed out, inside the image when in
    room = (1.0 - s).abs() / s
    tx, ty = uniform(-1, 1, b) * room, uniform(-1, 1, b) * room
    sign = torch.where(uniform(0, 1, b) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0], theta[:, 1, 1] = inv * sign.to(dev, dt), inv
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0],
                        images[:, :, :, -1]], dim=-1).mean(-1)  # (B, 3)
    noise = torch.randn(images.shape, generator=generator).to(dev, dt) * 0.03
    fill = border[:, :, None, None] + noise
    return (out + (1 - valid) * fill).clamp(0, 1)


def randaugment_crop_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                          padding: int = 4) -> torch.Tensor:
    """RandAugment (2 ops, magnitude 9, per image) + random crop with padding + flip: the
    paper's recipe (RandAugment) with the usual small-image crop."""
    from torchvision.transforms import v2

    ra = v2.RandAugment(num_ops=2, magnitude=9)
    u8 = (images * 255).round().to(torch.uint8).cpu()
    out = torch.stack([ra(im) for im in u8]).to(images.device, images.dtype) / 255.0
    b, _, h, w = out.shape
    padded = F.pad(out, (padding,) * 4, mode="reflect")
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)).to(images.device)
    cols = (ox[:, None] + torch.arange(w)).to(images.device)
    idx = torch.arange(b, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


AUGMENTATIONS = {"shapes": zoom_translate_flip, "randaugment": randaugment_crop_flip,
                 "none": lambda images, generator=None: images}


def train_augmentation(kind: str):
    """The batched augmentation called ``kind`` ("shapes", "randaugment" or "none")."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation '{kind}'; use one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[kind]
