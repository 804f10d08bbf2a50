"""Composed images: figures that are only pictures (Fig. 7, the report's galleries).

They are composed as one pixel array with numpy and written with Pillow: a matplotlib axes
per panel (dozens per figure) costs far more to lay out and draw than the pixels themselves.
Maps are coloured with matplotlib's colour maps (no figure), text is set in matplotlib's own
DejaVu Sans.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib
import numpy as np

__all__ = ["font", "text_width", "fit_text", "resize", "to_uint8", "colormap", "map_rgb",
           "panel", "Canvas", "WHITE", "BLACK", "YELLOW"]

WHITE, BLACK, YELLOW = (255, 255, 255), (0, 0, 0), (255, 255, 0)


@functools.lru_cache(maxsize=None)
def font(size: int):
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels; Pillow's default font where
    it cannot be loaded."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf"
                                      / "DejaVuSans.ttf"), size)
    except OSError:
        try:
            return ImageFont.load_default(size=size)  # Pillow >= 10.1
        except TypeError:
            return ImageFont.load_default()


def text_width(text: str, font) -> float:
    return max((font.getlength(line) for line in str(text).split("\n")), default=0.0)


def fit_text(text: str, font, width: float) -> str:
    """``text`` (one line) cut with "…" to at most ``width`` pixels."""
    text = str(text)
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (h, w, 3) uint8 image at ``height`` × ``width``: nearest neighbour when enlarged
    (the data's own pixels, as ``interpolation="nearest"``), area-averaged when reduced."""
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return rgb
    if height >= h and width >= w:
        rows = np.arange(height) * h // height
        cols = np.arange(width) * w // width
        return rgb[rows[:, None], cols[None, :]]
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX))


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(np.asarray(rgb, np.float32)), 0, 1) * 255 + 0.5) \
        .astype(np.uint8)


@functools.lru_cache(maxsize=None)
def colormap(name: str):
    return matplotlib.colormaps[name]  # a copy per look-up: kept, with its lookup table


def map_rgb(attribution: np.ndarray, limit: float) -> np.ndarray:
    """``attribution`` on the blue-white-red map, clamped to ``[-limit, limit]`` (as
    ``imshow(cmap="bwr", vmin=-limit, vmax=limit)``); non-finite values white."""
    a = np.asarray(attribution, np.float64)
    limit = limit or 1.0
    rgb = colormap("bwr")(np.clip((a + limit) / (2 * limit), 0, 1))[..., :3]
    rgb[~np.isfinite(a)] = 1.0
    return to_uint8(rgb)


def panel(rgb: np.ndarray, side: int, cell: int = -1, outline: int = 2) -> np.ndarray:
    """An (h, w, 3) uint8 image scaled to fit ``side`` × ``side`` (aspect kept), the cell
    ``cell`` (0-3, row-major) of its 2×2 grid outlined in yellow."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w, 1)
    out = resize(rgb, max(1, round(h * scale)), max(1, round(w * scale))).copy()
    if 0 <= cell < 4:
        H, W = out.shape[:2]
        row, col = divmod(cell, 2)
        y0, y1 = row * H // 2, (row + 1) * H // 2
        x0, x1 = col * W // 2, (col + 1) * W // 2
        t = max(1, min(outline, (y1 - y0) // 4, (x1 - x0) // 4))
        for ys, xs in ((slice(y0, y0 + t), slice(x0, x1)), (slice(y1 - t, y1), slice(x0, x1)),
                       (slice(y0, y1), slice(x0, x0 + t)), (slice(y0, y1), slice(x1 - t, x1))):
            out[ys, xs] = YELLOW
    return out


class Canvas:
    """A white RGB pixel array to paste panels into and write text on, saved as PNG."""

    def __init__(self, width: int, height: int):
        from PIL import Image, ImageDraw

        self.pixels = np.full((int(height), int(width), 3), 255, np.uint8)
        self._texts = []  # drawn last, on the finished pixels
        self._image, self._draw = Image, ImageDraw

    def paste(self, rgb: np.ndarray, x: int, y: int, box: int | None = None,
              border=(64, 64, 64)) -> None:
        """``rgb`` with its top-left corner at (x, y) (centred in a ``box`` square when
        given), framed by a one-pixel ``border`` just outside it."""
        h, w = rgb.shape[:2]
        if box is not None:
            x, y = x + (box - w) // 2, y + (box - h) // 2
        if border is not None:
            self.pixels[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1] = border
        self.pixels[y:y + h, x:x + w] = rgb

    def text(self, x: float, y: float, text: str, size: int, *, anchor: str = "ma",
             fill=(0, 0, 0), rotate: bool = False) -> None:
        """``text`` (lines centred on each other) at (x, y); ``anchor`` as Pillow's (the
        default: its top centre). ``rotate``: read bottom to top, centred at (x, y)."""
        self._texts.append((x, y, str(text), size, anchor, fill, rotate))

    def png(self) -> bytes:
        import io

        image = self._image.fromarray(self.pixels)
        draw = self._draw.Draw(image)
        for x, y, text, size, anchor, fill, rotate in self._texts:
            face = font(size)
            if rotate:  # drawn on its own strip, turned, pasted
                w = int(math.ceil(text_width(text, face))) + 4
                h = (size + 4) * (text.count("\n") + 1)
                strip = self._image.new("RGB", (w, h), WHITE)
                self._draw.Draw(strip).multiline_text((w / 2, h / 2), text, font=face,
                                                       fill=fill, anchor="mm", align="center")
                strip = strip.rotate(90, expand=True)  # on white: the margin is white
                image.paste(strip, (int(x - strip.width / 2), int(y - strip.height / 2)))
            else:
                draw.multiline_text((x, y), text, font=face, fill=fill, anchor=anchor,
                                    align="center", spacing=max(1, size // 5))
        buffer = io.BytesIO()
        image.save(buffer, format="png", compress_level=6)  # 9: 2 % smaller, 8× slower
        return buffer.getvalue()
