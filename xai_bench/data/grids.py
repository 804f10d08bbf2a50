"""2×2 grid (mosaic) geometry, shared by the grid pointing game
(:mod:`xai_bench.metrics.localisation`) and the mosaic training augmentation
(:func:`xai_bench.data.augment.mosaic_batch`). Pure tensor functions, no model or metric.

Grid layout. A grid is a 2×2 mosaic of four images, cells in **row-major** order::

    +--------+--------+
    | cell 0 | cell 1 |      cell 0: top-left     cell 1: top-right
    +--------+--------+      cell 2: bottom-left  cell 3: bottom-right
    | cell 2 | cell 3 |
    +--------+--------+

i.e. cell ``c`` occupies rows ``c // 2`` and columns ``c % 2`` of the mosaic. The mosaic is
twice the model's input size and is scaled down by 2 (the paper's 448 → 224) with
``F.interpolate(scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)``
(an anti-aliased triangle filter: pixels on the boundary between two cells mix a little of
both). At model resolution, cell ``c`` is the pixels whose centres lie in its quadrant (for
odd sizes the middle row/column belongs to the lower/right cells).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["GRID_LAYOUT", "GRID_RESIZE", "make_mosaic", "make_grids", "cell_masks"]

GRID_LAYOUT = "2x2 row-major (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)"
GRID_RESIZE = "bilinear, antialias, align_corners=False, scale 0.5"


def make_mosaic(cells: torch.Tensor) -> torch.Tensor:
    """Four images ``(..., 4, C, h, w)`` -> mosaics ``(..., C, 2h, 2w)``, cells row-major."""
    top = torch.cat([cells[..., 0, :, :, :], cells[..., 1, :, :, :]], dim=-1)
    bottom = torch.cat([cells[..., 2, :, :, :], cells[..., 3, :, :, :]], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def make_grids(cells: torch.Tensor, size=None) -> torch.Tensor:
    """Cells ``(G, 4, C, h, w)`` -> grids ``(G, C, H, W)`` scaled to ``size`` (default
    ``(h, w)``, i.e. the mosaic scaled down by exactly 2)."""
    mosaic = make_mosaic(cells.float())
    h, w = cells.shape[-2:]
    size = (h, w) if size is None else tuple(int(s) for s in size)
    if size == (h, w):
        return F.interpolate(mosaic, scale_factor=0.5, mode="bilinear", antialias=True,
                             align_corners=False, recompute_scale_factor=False)
    return F.interpolate(mosaic, size=size, mode="bilinear", antialias=True, align_corners=False)


def cell_masks(size) -> torch.Tensor:
    """``(4, H, W)`` bool: the region of each cell (row-major) at model resolution."""
    height, width = (int(s) for s in size)
    top = (2 * torch.arange(height) + 1 < height)[:, None]  # pixel centre above the middle
    left = (2 * torch.arange(width) + 1 < width)[None, :]
    return torch.stack([top & left, top & ~left, ~top & left, ~top & ~left])
