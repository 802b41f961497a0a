"""Word attention: how much each patch of every frame reads one word of the prompt through
cross-attention (the maps: tiny_dit.inside.word_attention)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tiny_dit.inside.views.attention import slot_frames
from tiny_dit.inside.views.drawing import (BACKGROUND, INK, MUTED, caption_above, colormap, font, overlay_heat,
                                           stack, text_width)
from tiny_dit.inside.views.patch_grid import display_cell, slot_rows_image
from tiny_dit.video import to_uint8


def _stretch(heat: np.ndarray) -> np.ndarray:
    """Values -> [0, 1] from their smallest to their largest (all 0 if they are all equal)."""
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def word_heatmap_image(frames: np.ndarray, geometry, heat: np.ndarray, title: str = "",
                       target: int = 112) -> Image.Image:
    """Every frame of a clip (T, H, W, 3) with a word's attention heat (T', H', W') over it, from its
    smallest (dark) to its largest value (bright): one row per time slot (its patch_size_t frames
    share their tokens)."""
    frames = to_uint8(frames)
    _, hg, wg = geometry.grid
    pt = geometry.patch_size_t
    cell = display_cell(geometry, target)
    lo, hi = float(heat.min()), float(heat.max())
    scaled = _stretch(heat)

    def draw_frame(out, draw, t, j, x, y):
        out.paste(overlay_heat(frames[t * pt + j], scaled[t], wg * cell, hg * cell), (x, y))

    out = slot_rows_image(geometry, draw_frame, target, gap=4, label_w=104)
    legend = Image.new("RGB", (out.width, 22), BACKGROUND)
    ldraw = ImageDraw.Draw(legend)
    bar = Image.fromarray(colormap(np.linspace(0, 1, 120)[None].repeat(10, axis=0)))
    ldraw.text((4, 4), "attention to the word:", fill=MUTED, font=font(11))
    x = 6 + text_width("attention to the word:", 11) + 6
    ldraw.text((x, 4), f"{100 * lo:.1f}%", fill=MUTED, font=font(11))
    x += text_width(f"{100 * lo:.1f}%", 11) + 4
    legend.paste(bar, (x, 6))
    ldraw.text((x + 124, 4), f"{100 * hi:.1f}% of a patch's attention", fill=MUTED, font=font(11))
    parts = ([caption_above(out, title)] if title else [out]) + [legend]
    return stack(parts, gap=2)


def word_summary_image(frames: np.ndarray, geometry, rows: list[tuple[str, np.ndarray]], cell: int = 72
                       ) -> Image.Image:
    """One row per word: its label, then the frame in the middle of each time slot with the word's
    heat (T', H', W') over it, each row from its own smallest to its largest value."""
    frames = to_uint8(frames)
    g = geometry
    tg, hg, wg = g.grid
    fw, fh = cell, max(1, round(cell * hg / wg))
    gap, top = 4, 18
    label_w = max(text_width(label, 13) for label, _ in rows) + 12
    out = Image.new("RGB", (label_w + tg * (fw + gap) - gap, top + len(rows) * (fh + gap) - gap), BACKGROUND)
    draw = ImageDraw.Draw(out)
    middle = slot_frames(frames, g)
    for t in range(tg):
        draw.text((label_w + t * (fw + gap) + 2, 2), f"slot {t + 1}", fill=MUTED, font=font(11))
    for i, (label, heat) in enumerate(rows):
        y = top + i * (fh + gap)
        draw.text((4, y + fh // 2 - 8), label, fill=INK, font=font(13))
        scaled = _stretch(heat)
        for t, f in enumerate(middle):
            out.paste(overlay_heat(frames[f], scaled[t], fw, fh), (label_w + t * (fw + gap), y))
    return out
