"""What every view draws with: the palette, fonts, resizing, heat over a frame, stacking, filmstrips
and captioned grids of clips. Everything here is numpy + PIL (no plotting library needed)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tiny_dit.video import make_grid, to_uint8

BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
MUTED = (120, 120, 120)
GRID_LINE = (255, 255, 255)
HIGHLIGHT = (0, 220, 255)
# One colour per block/series (colour-blind friendly, after Okabe & Ito).
SERIES_COLORS = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
                 (213, 94, 0), (240, 228, 66), (0, 0, 0)]
SLOT_COLORS = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (213, 94, 0), (86, 180, 233)]

# Perceptual sequential colormap (anchors of matplotlib's "magma") and a diverging one.
_MAGMA = np.array([[0, 0, 4], [28, 16, 68], [79, 18, 123], [129, 37, 129], [181, 54, 122],
                   [229, 80, 100], [251, 135, 97], [254, 194, 135], [252, 253, 191]], dtype=np.float32)
_DIVERGING = np.array([[59, 76, 192], [141, 176, 254], [221, 221, 221], [244, 154, 123], [180, 4, 38]],
                      dtype=np.float32)


def colormap(values: np.ndarray, anchors: np.ndarray = _MAGMA) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) by linear interpolation between anchors."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0, 1) * (len(anchors) - 1)
    lo = np.floor(v).astype(int).clip(0, len(anchors) - 2)
    frac = (v - lo)[..., None]
    return (anchors[lo] * (1 - frac) + anchors[lo + 1] * frac).round().astype(np.uint8)


def diverging(values: np.ndarray, limit: float = 3.0) -> np.ndarray:
    """Signed values -> blue (negative), grey (0), red (positive); |v| >= limit saturates."""
    return colormap((np.asarray(values, dtype=np.float32) / limit + 1) / 2, _DIVERGING)


@lru_cache(maxsize=8)
def font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def text_width(text: str, size: int = 13) -> int:
    left, _, right, _ = font(size).getbbox(text)
    return int(right - left)


def resize(image: np.ndarray | Image.Image, width: int, height: int, smooth: bool = True) -> Image.Image:
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.BILINEAR if smooth else Image.NEAREST)


def overlay_heat(frame: np.ndarray, heat: np.ndarray, width: int, height: int) -> Image.Image:
    """A frame resized to width x height with a (h', w') heatmap in [0, 1] laid over it (70% colour),
    one flat cell per patch."""
    image = np.asarray(resize(frame, width, height), dtype=np.float32)
    colours = np.asarray(resize(colormap(heat), width, height, smooth=False), dtype=np.float32)
    return Image.fromarray((0.3 * image + 0.7 * colours).round().astype(np.uint8))


def caption_above(image: Image.Image, text: str, size: int = 13, color=INK) -> Image.Image:
    """The image with a line of text above it."""
    band = size + 8
    out = Image.new("RGB", (image.width, image.height + band), BACKGROUND)
    ImageDraw.Draw(out).text((2, 3), text, fill=color, font=font(size))
    out.paste(image, (0, band))
    return out


def stack(images: list[Image.Image], vertical: bool = True, gap: int = 8) -> Image.Image:
    """Images one below (or beside) the other, left/top aligned."""
    if vertical:
        width, height = max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)
    else:
        width, height = sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)
    out = Image.new("RGB", (width, height), BACKGROUND)
    pos = 0
    for image in images:
        out.paste(image, (0, pos) if vertical else (pos, 0))
        pos += (image.height if vertical else image.width) + gap
    return out


def spread(count: int, total: int) -> list[int]:
    """`count` indices spread evenly over range(total), first and last included."""
    if count >= total:
        return list(range(total))
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, count)})


def filmstrip(clips: np.ndarray, frame_indices: list[int] | None = None, cell: int = 96,
              row_labels: list[str] | None = None, gap: int = 2, show_frame_numbers: bool = True) -> Image.Image:
    """Clips (N, T, H, W, 3) as rows of frames: one row per clip, one column per chosen frame."""
    clips = to_uint8(clips)
    n, t, h, w = clips.shape[:4]
    frame_indices = list(range(t)) if frame_indices is None else list(frame_indices)
    cw, ch = cell, max(1, round(cell * h / w))
    label_w = max((text_width(s) for s in row_labels), default=0) + 10 if row_labels else 0
    top = 18 if show_frame_numbers else 0
    out = Image.new("RGB", (label_w + len(frame_indices) * (cw + gap) - gap, top + n * (ch + gap) - gap),
                    BACKGROUND)
    draw = ImageDraw.Draw(out)
    for j, f in enumerate(frame_indices):
        x = label_w + j * (cw + gap)
        if show_frame_numbers:
            draw.text((x + 2, 2), f"frame {f + 1}", fill=MUTED, font=font(11))
        for i in range(n):
            out.paste(resize(clips[i, f], cw, ch), (x, top + i * (ch + gap)))
    for i, label in enumerate(row_labels or []):
        draw.text((2, top + i * (ch + gap) + ch // 2 - 7), label, fill=INK, font=font(13))
    return out


def labelled_grid(clips: list[np.ndarray] | np.ndarray, labels: list[str], band: int = 20,
                  gap: int = 4) -> np.ndarray:
    """Clips (each (T, H, W, 3) uint8) side by side, each with a caption band above it:
    one clip (T, H', W', 3) for write_mp4 (even sizes)."""
    clips = np.stack([to_uint8(c) for c in clips])  # (N, T, H, W, 3)
    n, t, h, w = clips.shape[:4]
    row = make_grid(clips, ncols=n, padding=gap, pad_value=255)  # (T, H, N * (W + gap) - gap, 3): one row
    width = row.shape[2] + row.shape[2] % 2  # H.264 (yuv420p) needs even sizes
    height = h + band + (h + band) % 2
    out = np.full((t, height, width, 3), 255, dtype=np.uint8)
    out[:, band:band + h, :row.shape[2]] = row
    header = Image.new("RGB", (width, band), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    for i, label in enumerate(labels):
        x = i * (w + gap)  # where make_grid put clip i
        size = 13
        while size > 8 and text_width(label, size) > w - 4:
            size -= 1
        draw.text((x + max(2, (w - text_width(label, size)) // 2), 3), label, fill=INK, font=font(size))
    out[:, :band] = np.asarray(header)[None]
    return out


def _nice_ticks(hi: float, count: int = 4) -> list[float]:
    if hi <= 0:
        return [0.0]
    raw = hi / count
    magnitude = 10 ** np.floor(np.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    return [i * step for i in range(int(np.floor(hi / step)) + 1)]
