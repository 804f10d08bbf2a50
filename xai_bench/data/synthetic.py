"""``shapes``: the embedded default data set, generated deterministically (no download).

10 classes = 5 shapes (disc, square, triangle, plus, ring) × 2 colours (red, blue).

Every image has

* a muted, cluttered background: a greyish/greenish base colour with low-frequency
  brightness variation (4×4 and 8×8 random fields, bilinearly upsampled) and only a little
  colour variation, so it never looks red or blue;
* 0–3 (usually 1–3) smaller distractor shapes — any of the 5 shapes, any rotation — in
  non-class colours (yellow, green, white, grey), placed off the object;
* ONE class object on top: its extent (unrotated bounding box) is 38–75 % of the image side,
  at a random position with the whole object inside the image, with ±20° rotation for the
  triangle and the plus (squares stay axis-aligned: rotated squares are too easily confused
  with discs at this size), in a jittered (brightness and hue) class colour;
* mild pixel noise over everything.

Class evidence is local and needs the conjunction of colour *and* shape (distractors reuse
the shapes; the colour alone only tells red from blue), so a model must look at the object;
``masks`` (the object's pixels: those whose centre lies inside it) are ground truth for
localisation. Edges are anti-aliased with analytic coverage (signed distance to the shape,
box filtered: ``clip(0.5 - d)``), and the smallest objects are still ~12 px wide at 32×32, so
they stay recognisable at half size (the grid pointing game shows 2×2 grids of images scaled
down by 2).

Generation is deterministic: the same ``(n, image_size, seed)`` gives identical tensors
(NumPy's PCG64 ``Generator``, all parameters drawn in bulk in a fixed order; the train/test
seeds are ``derive_seed("shapes", seed, split)``, see :mod:`xai_bench.compute.seeding`). It is
vectorised over images (about 2 s for 10k 32×32 images on one CPU core).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from xai_bench.compute.seeding import derive_seed, numpy_rng

SHAPES = ("disc", "square", "triangle", "plus", "ring")
CLASS_COLOURS = {"red": (0.86, 0.15, 0.12), "blue": (0.12, 0.30, 0.90)}
DISTRACTOR_COLOURS = ((0.92, 0.84, 0.16),   # yellow
                      (0.20, 0.70, 0.22),   # green
                      (0.94, 0.94, 0.92),   # white
                      (0.55, 0.55, 0.55))   # grey
CLASSES = tuple(f"{c}_{s}" for c in CLASS_COLOURS for s in SHAPES)
DEFAULT_SIZES = {"train": 10000, "test": 2000}

OBJECT_EXTENT = (0.38, 0.75)      # class object: fraction of the image side (unrotated bbox)
OBJECT_ROTATION = 0.35            # ± radians (20°) for triangle and plus
DISTRACTOR_EXTENT = (0.16, 0.30)  # distractors: clearly smaller than any class object
PLUS_ARM = 0.36                   # half-width of the plus arms (unit shape)
RING_HOLE = 0.5                   # inner / outer radius of the ring

# class objects rotate where that keeps them distinct: an axis-aligned square is much
# easier to tell from a disc (distractors rotate freely)
_ROTATES = np.array([s in ("triangle", "plus") for s in SHAPES])
# convex hull vertices of the unit shapes (x right, y down; bounding box about [-1, 1]²)
_HULLS = {
    "disc": None, "ring": None,
    "square": np.array([[-0.92, -0.92], [0.92, -0.92], [0.92, 0.92], [-0.92, 0.92]]),
    "triangle": np.array([[0.0, -1.0], [1.0, 0.85], [-1.0, 0.85]]),  # apex up
    "plus": np.array([[sx * a, sy * b] for a, b in ((1.0, PLUS_ARM), (PLUS_ARM, 1.0))
                      for sx in (-1, 1) for sy in (-1, 1)]),
}


def _extents(shape_idx: np.ndarray, angle: np.ndarray):
    """Half-width and half-height of the unit shapes ``SHAPES[shape_idx]`` rotated by
    ``angle`` (arrays of the same shape)."""
    ex, ey = np.ones(angle.shape), np.ones(angle.shape)
    for k, name in enumerate(SHAPES):
        sel = shape_idx == k
        if _HULLS[name] is None or not sel.any():
            continue
        c, s = np.cos(angle[sel])[:, None], np.sin(angle[sel])[:, None]
        px, py = _HULLS[name][:, 0], _HULLS[name][:, 1]
        ex[sel] = np.abs(c * px - s * py).max(-1)
        ey[sel] = np.abs(s * px + c * py).max(-1)
    return ex, ey


def _box_sdf(u, v, a, b):
    dx, dy = np.abs(u) - a, np.abs(v) - b
    return np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)


def _triangle_sdf(u, v):
    """Max of the signed distances to the edge lines (exact inside, close outside)."""
    pts = _HULLS["triangle"]
    d = None
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
        nx, ny = y1 - y0, x0 - x1  # outward normal of a clockwise (on screen) polygon
        norm = np.hypot(nx, ny)
        e = ((u - x0) * nx + (v - y0) * ny) / norm
        d = e if d is None else np.maximum(d, e)
    return d


def _unit_sdf(name: str, u, v):
    """Signed distance (negative inside) to the unit shape ``name``."""
    if name == "disc":
        return np.hypot(u, v) - 1.0
    if name == "ring":
        r = np.hypot(u, v)
        return np.maximum(r - 1.0, RING_HOLE - r)
    if name == "square":
        return _box_sdf(u, v, 0.92, 0.92)
    if name == "plus":
        return np.minimum(_box_sdf(u, v, 1.0, PLUS_ARM), _box_sdf(u, v, PLUS_ARM, 1.0))
    if name == "triangle":
        return _triangle_sdf(u, v)
    raise ValueError(name)


def _coverage(shape_idx, cx, cy, half, angle, size: int) -> np.ndarray:
    """Anti-aliased coverage (m, size, size) float32 in [0, 1] of m shapes: the unit shapes
    ``SHAPES[shape_idx]`` scaled by ``half`` pixels, rotated by ``angle``, centred at pixel
    coordinates ``(cx, cy)``. Coverage is ``clip(0.5 - signed distance in pixels)``, i.e.
    analytic box-filtered edges; a pixel is inside (coverage >= 0.5) iff its centre is."""
    out = np.zeros((len(shape_idx), size, size), dtype=np.float32)
    centres = np.arange(size) + 0.5
    for k, name in enumerate(SHAPES):
        sel = np.flatnonzero(shape_idx == k)
        if not len(sel):
            continue
        h = half[sel][:, None, None]
        c, s = np.cos(angle[sel])[:, None, None], np.sin(angle[sel])[:, None, None]
        dx = centres[None, None, :] - cx[sel][:, None, None]
        dy = centres[None, :, None] - cy[sel][:, None, None]
        u, v = (c * dx + s * dy) / h, (c * dy - s * dx) / h  # rotate by -angle
        out[sel] = np.clip(0.5 - _unit_sdf(name, u, v) * h, 0.0, 1.0)
    return out


def _upsample_matrix(k: int, size: int) -> np.ndarray:
    """(size, k) bilinear interpolation weights (align_corners=True)."""
    pos = np.linspace(0, k - 1, size)
    lo = np.minimum(np.floor(pos).astype(int), k - 2)
    frac = pos - lo
    m = np.zeros((size, k))
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _centres(u: np.ndarray, hx: np.ndarray, hy: np.ndarray, size: int):
    """Centres from uniforms ``u`` (..., 2) keeping boxes of half-sizes (hx, hy) inside the
    image (centred when a box does not fit)."""
    cx = hx + u[..., 0] * np.maximum(size - 2 * hx, 0.0)
    cy = hy + u[..., 1] * np.maximum(size - 2 * hy, 0.0)
    return np.where(2 * hx < size, cx, size / 2), np.where(2 * hy < size, cy, size / 2)


def render_shapes(n: int, image_size: int = 32, seed: int = 0):
    """Render ``n`` images. Returns ``(images uint8 (n,3,H,W), labels int64 (n,),
    masks bool (n,H,W))``, identical for the same arguments (see module docstring)."""
    images, labels, masks = _render_cached(int(n), int(image_size), int(seed))
    return images.clone(), labels.clone(), masks.clone()


@functools.lru_cache(maxsize=4)
def _render_cached(n: int, size: int, seed: int):
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 and image_size >= 8, got n={n}, image_size={size}")
    rng = numpy_rng(seed)
    ns, nd, tries = len(SHAPES), 3, 12
    # --- all random parameters, drawn in bulk (fixed order => deterministic) ---
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    colour_idx, shape = labels // ns, labels % ns          # CLASSES is colour-major
    half = rng.uniform(*OBJECT_EXTENT, n) * size / 2
    angle = rng.uniform(-OBJECT_ROTATION, OBJECT_ROTATION, n) * _ROTATES[shape]
    ex, ey = _extents(shape, angle)
    cx, cy = _centres(rng.random((n, 2)), ex * half, ey * half, size)
    palette = np.array(list(CLASS_COLOURS.values()))
    colour = palette[colour_idx] * rng.uniform(0.8, 1.08, (n, 1)) \
        + rng.uniform(-0.06, 0.06, (n, 3))
    # distractors: 1-3 per image, placed off the object (a few tries, else dropped)
    d_active = np.arange(nd)[None, :] < rng.integers(1, nd + 1, n)[:, None]
    d_shape = rng.integers(0, ns, (n, nd))
    d_half = rng.uniform(*DISTRACTOR_EXTENT, (n, nd)) * size / 2
    d_angle = rng.uniform(-np.pi, np.pi, (n, nd))
    dex, dey = _extents(d_shape, d_angle)
    ux, uy = _centres(rng.random((n, nd, tries, 2)), (dex * d_half)[..., None],
                      (dey * d_half)[..., None], size)
    clear = np.hypot(ux - cx[:, None, None], uy - cy[:, None, None]) \
        > (np.maximum(ex, ey) * half)[:, None, None] + 0.6 * d_half[..., None]
    first = clear.argmax(-1)[..., None]
    d_cx, d_cy = np.take_along_axis(ux, first, -1)[..., 0], np.take_along_axis(uy, first, -1)[..., 0]
    d_active &= clear.any(-1)
    d_colour = np.array(DISTRACTOR_COLOURS)[rng.integers(0, len(DISTRACTOR_COLOURS), (n, nd))] \
        * rng.uniform(0.85, 1.05, (n, nd, 1)) + rng.uniform(-0.05, 0.05, (n, nd, 3))
    # background: greyish/greenish base, low-frequency brightness, a little colour
    base = rng.uniform(0.30, 0.58, (n, 1)) + rng.uniform(-0.04, 0.04, (n, 3))
    base[:, 1] += rng.uniform(0.0, 0.08, n)  # a touch of green; never red or blue dominated
    lum4, lum8 = rng.uniform(-0.16, 0.16, (n, 4, 4)), rng.uniform(-0.07, 0.07, (n, 8, 8))
    chroma = rng.uniform(-0.05, 0.05, (n, 3, 4, 4))
    up4, up8 = _upsample_matrix(4, size), _upsample_matrix(8, size)

    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    masks = torch.empty((n, size, size), dtype=torch.bool)
    chunk = max(1, (1 << 21) // (size * size))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        s = slice(a, b)
        lum = up4 @ lum4[s] @ up4.T + up8 @ lum8[s] @ up8.T
        img = (base[s, :, None, None] + lum[:, None] + up4 @ chroma[s] @ up4.T).astype(np.float32)
        for j in range(nd):
            on = np.flatnonzero(d_active[s, j]) + a
            alpha = _coverage(d_shape[on, j], d_cx[on, j], d_cy[on, j], d_half[on, j],
                              d_angle[on, j], size)[:, None]
            col = np.clip(d_colour[on, j], 0, 1).astype(np.float32)[:, :, None, None]
            img[on - a] += (col - img[on - a]) * alpha
        alpha = _coverage(shape[s], cx[s], cy[s], half[s], angle[s], size)
        col = np.clip(colour[s], 0, 1).astype(np.float32)[:, :, None, None]
        img += (col - img) * alpha[:, None]
        img += 0.02 * rng.standard_normal(img.shape, dtype=np.float32)
        images[a:b] = torch.from_numpy(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
        masks[a:b] = torch.from_numpy(alpha >= 0.5)
    return images, torch.from_numpy(labels.astype(np.int64)), masks


def split_seed(seed: int, split: str) -> int:
    """Different, stable seeds per split (train and test never share a seed, so their images
    are independent draws): ``derive_seed("shapes", seed, split)``."""
    return derive_seed("shapes", int(seed), str(split))


class SyntheticShapes(Dataset):
    """The embedded default data set (see module docstring). Items are ``(image, label)``
    with ``image`` float (3, H, W) in [0, 1] (``transform``, if given, is applied to it);
    ``images`` (uint8), ``labels`` (int64) and ``masks`` (bool) hold the whole split."""

    has_masks = True
    classes = list(CLASSES)
    num_classes = len(CLASSES)

    def __init__(self, split: str = "train", n: int | None = None, image_size: int = 32,
                 seed: int = 0, transform=None):
        if split not in DEFAULT_SIZES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split, self.seed = split, seed
        self.n = DEFAULT_SIZES[split] if n is None else int(n)
        self.image_size = (int(image_size), int(image_size))
        self.name = "shapes"
        self.classes = list(CLASSES)
        self.transform = transform
        self.images, self.labels, self.masks = render_shapes(self.n, int(image_size),
                                                             split_seed(seed, split))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        image = self.images[i].float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def __repr__(self) -> str:
        return (f"SyntheticShapes(split={self.split!r}, n={self.n}, "
                f"image_size={self.image_size[0]}, seed={self.seed})")
