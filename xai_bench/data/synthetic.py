"""``shapes``: the embedded default data set, generated deterministically (no download).

10 classes = 5 shapes (disc, square, triangle, plus, ring) × 2 colours (red, blue). Every
image has one class object (35–75 % of the image side, random position fully inside the
image, small rotation) on a cluttered, muted background with 1–3 smaller distractor shapes in
non-class colours (yellow, green, white, grey). Class evidence is local — the object's colour
*and* shape — so a model must look at the object, and a per-image object mask gives
ground-truth localisation. Shapes are rendered 4× supersampled for clean edges, so they stay
recognisable when the image is shown at half size (the grid pointing game).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

SHAPES = ("disc", "square", "triangle", "plus", "ring")
CLASS_COLOURS = {"red": (0.86, 0.16, 0.12), "blue": (0.12, 0.32, 0.92)}
DISTRACTOR_COLOURS = ((0.92, 0.86, 0.18), (0.22, 0.72, 0.24), (0.95, 0.95, 0.95),
                      (0.55, 0.55, 0.55))
CLASSES = tuple(f"{c}_{s}" for c in CLASS_COLOURS for s in SHAPES)
SUPERSAMPLE = 4
DEFAULT_SIZES = {"train": 10000, "test": 2000}


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean inside-test of a shape of half-size ``r`` centred at the origin."""
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "triangle":  # apex up; inside = below both slanted edges and above the base
        return (dy <= 0.8 * r) & (dy >= -r + 1.9 * np.abs(dx))
    if shape == "plus":
        arm = 0.34 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    raise ValueError(shape)


def _shape_alpha(shape, cx, cy, r, angle, yy, xx) -> np.ndarray:
    """Anti-aliased coverage on the supersampled grid, averaged down to pixels."""
    dx, dy = xx - cx, yy - cy
    if shape not in ("disc", "ring"):
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    inside = _coverage(shape, dx, dy, r).astype(np.float32)
    h, w = inside.shape
    return inside.reshape(h // SUPERSAMPLE, SUPERSAMPLE, w // SUPERSAMPLE, SUPERSAMPLE).mean((1, 3))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted, low-frequency clutter: a bilinearly upsampled random 4×4 field around a greyish
    or greenish base colour, plus mild pixel noise."""
    base = rng.uniform(0.30, 0.55) + rng.uniform(-0.06, 0.06, size=3)
    base[1] += rng.uniform(0.0, 0.08)  # a little green tint; never red or blue dominated
    coarse = torch.from_numpy(rng.uniform(-0.14, 0.14, size=(1, 3, 4, 4)).astype(np.float32))
    field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                            align_corners=True)[0].numpy()
    img = base[:, None, None] + field + rng.normal(0, 0.025, size=(3, size, size))
    return img.astype(np.float32)


def render_shapes(n: int, image_size: int = 32, seed: int = 0):
    """Render ``n`` images. Returns ``(images uint8 (n,3,H,W), labels int64 (n,),
    masks bool (n,H,W))``, identical for the same arguments on any machine."""
    rng = np.random.default_rng(seed)
    size, ss = image_size, image_size * SUPERSAMPLE
    # pixel-centre coordinates of the supersampled grid, in output-pixel units
    coords = (np.arange(ss, dtype=np.float32) + 0.5) / SUPERSAMPLE
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    for i in range(n):
        img = _background(rng, size)
        colour_name, shape = CLASSES[labels[i]].split("_")
        r = rng.uniform(0.35, 0.75) * size / 2
        cx, cy = rng.uniform(r, size - r, size=2)
        for _ in range(rng.integers(1, 4)):
            dr = rng.uniform(0.10, 0.18) * size
            for _try in range(20):  # keep distractors mostly off the object
                dx_, dy_ = rng.uniform(dr, size - dr, size=2)
                if np.hypot(dx_ - cx, dy_ - cy) > 0.8 * (r + dr):
                    break
            alpha = _shape_alpha(SHAPES[rng.integers(len(SHAPES))], dx_, dy_, dr,
                                 rng.uniform(-np.pi, np.pi), yy, xx)
            colour = np.array(DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))])
            colour = colour + rng.uniform(-0.05, 0.05, size=3)
            img = img * (1 - alpha) + colour[:, None, None] * alpha
        alpha = _shape_alpha(shape, cx, cy, r, rng.uniform(-0.35, 0.35), yy, xx)
        colour = np.array(CLASS_COLOURS[colour_name]) + rng.uniform(-0.07, 0.07, size=3)
        img = img * (1 - alpha) + colour[:, None, None] * alpha
        images[i] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        masks[i] = alpha >= 0.5
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), \
        torch.from_numpy(masks)


def split_seed(seed: int, split: str) -> int:
    """Different, stable seeds per split (no overlap between train and test)."""
    return int(hashlib.sha256(f"shapes/{seed}/{split}".encode()).hexdigest()[:8], 16)


class SyntheticShapes(Dataset):
    """The embedded default data set (see module docstring). Items are ``(image, label)``
    with ``image`` float (3, H, W) in [0, 1]; ``images``, ``labels`` and ``masks`` hold the
    whole split in memory."""

    has_masks = True
    classes = list(CLASSES)
    num_classes = len(CLASSES)

    def __init__(self, split: str = "train", n: int | None = None, image_size: int = 32,
                 seed: int = 0, transform=None):
        if split not in DEFAULT_SIZES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split, self.seed = split, seed
        self.n = DEFAULT_SIZES[split] if n is None else int(n)
        self.image_size = (image_size, image_size)
        self.name = "shapes"
        self.transform = transform
        self.images, self.labels, self.masks = render_shapes(self.n, image_size,
                                                             split_seed(seed, split))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        image = self.images[i].float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])
