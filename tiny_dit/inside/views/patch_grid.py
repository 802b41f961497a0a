"""The patch grid: how a clip becomes tokens. A clip cut into spacetime patches (tubelets), its
latent channel by channel, and the arithmetic from pixels to tokens. The token-grid drawing here is
shared by the attention and word-attention views."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tiny_dit.inside.views.drawing import (BACKGROUND, GRID_LINE, HIGHLIGHT, INK, MUTED, SLOT_COLORS, caption_above,
                                           diverging, font, resize)
from tiny_dit.video import to_uint8


def display_cell(geometry, target: int = 192) -> int:
    """Pixels per token cell on screen, so that a frame is about `target` pixels wide."""
    return max(4, target // geometry.grid[2])


def draw_token_grid(draw: ImageDraw.ImageDraw, x: int, y: int, cell: int, rows: int, columns: int) -> None:
    """White lines between the token cells of a frame drawn at (x, y), `cell` pixels a token."""
    width, height = columns * cell, rows * cell
    for k in range(1, columns):
        draw.line([(x + k * cell, y), (x + k * cell, y + height - 1)], fill=GRID_LINE, width=1)
    for k in range(1, rows):
        draw.line([(x, y + k * cell), (x + width - 1, y + k * cell)], fill=GRID_LINE, width=1)


def outline_token(draw: ImageDraw.ImageDraw, x: int, y: int, cell: int, h: int, w: int) -> None:
    """The token at row h, column w of a frame drawn at (x, y) outlined in the highlight colour."""
    draw.rectangle([x + w * cell, y + h * cell, x + (w + 1) * cell, y + (h + 1) * cell], outline=HIGHLIGHT, width=3)


def slot_rows_image(geometry, draw_frame, target: int, gap: int, label_w: int) -> Image.Image:
    """The layout of a clip cut into time slots: one row per time slot (its name and frames on the
    left), one column per frame of a slot ("frame j of the slot" above), each frame W' x H' token
    cells of display_cell(geometry, target) pixels, `gap` pixels apart. draw_frame(out, draw, t, j,
    x, y) draws frame j of slot t (frame t * patch_size_t + j of the clip) with its top-left corner
    at (x, y). The layout of patch_grid_image and word_heatmap_image."""
    tg, hg, wg = geometry.grid
    pt = geometry.patch_size_t
    cell = display_cell(geometry, target)
    fw, fh = wg * cell, hg * cell
    top = 20
    out = Image.new("RGB", (label_w + pt * (fw + gap) - gap, top + tg * (fh + gap) - gap), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for j in range(pt):
        draw.text((label_w + j * (fw + gap) + 2, 3), f"frame {j + 1} of the slot", fill=MUTED, font=font(11))
    for t in range(tg):
        y = top + t * (fh + gap)
        draw.text((4, y + fh // 2 - 16), f"time slot {t + 1}", fill=SLOT_COLORS[t % len(SLOT_COLORS)], font=font(13))
        draw.text((4, y + fh // 2 + 2), f"frames {t * pt + 1}-{t * pt + pt}", fill=MUTED, font=font(11))
        for j in range(pt):
            draw_frame(out, draw, t, j, label_w + j * (fw + gap), y)
    return out


def patch_grid_image(frames: np.ndarray, geometry, target: int = 176, highlight: tuple[int, int] | None = None
                     ) -> Image.Image:
    """One clip (T, H, W, 3) with its tubelet grid drawn over it.

    Rows are time slots (patch_size_t consecutive frames each, one tubelet deep), columns the
    frames inside a slot; the lines are the patch borders. One token (the `highlight` (h, w)
    cell, default the centre) is outlined in every frame of the first slot: its
    patch_size_t x patch_pixels x patch_pixels pixels are what one token is made of."""
    frames = to_uint8(frames)
    _, hg, wg = geometry.grid
    pt = geometry.patch_size_t
    cell = display_cell(geometry, target)
    fw, fh = wg * cell, hg * cell
    hh, ww = highlight if highlight is not None else (hg // 2, wg // 2)

    def draw_frame(out, draw, t, j, x, y):
        out.paste(resize(frames[t * pt + j], fw, fh), (x, y))
        draw_token_grid(draw, x, y, cell, hg, wg)
        draw.rectangle([x, y, x + fw - 1, y + fh - 1], outline=SLOT_COLORS[t % len(SLOT_COLORS)], width=2)
        if t == 0:
            outline_token(draw, x, y, cell, hh, ww)

    return slot_rows_image(geometry, draw_frame, target, gap=6, label_w=118)


def latent_channels_image(latents: np.ndarray, geometry, cell: int = 96, limit: float = 3.0,
                          title: str | None = None) -> Image.Image:
    """Latents (C, T, h, w) as a grid: one row per channel, one column per time slot (its first
    frame); blue = negative, red = positive (saturating at +-limit)."""
    latents = np.asarray(latents, dtype=np.float32)
    c, t = latents.shape[:2]
    slots = list(range(0, t, geometry.patch_size_t))
    label_w, top, gap = 78, 18, 3
    size = cell
    out = Image.new("RGB", (label_w + len(slots) * (size + gap), top + c * (size + gap)), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for j, f in enumerate(slots):
        draw.text((label_w + j * (size + gap) + 2, 2), f"frame {f + 1}", fill=MUTED, font=font(11))
    for i in range(c):
        draw.text((4, top + i * (size + gap) + size // 2 - 7), f"channel {i + 1}", fill=INK, font=font(12))
        for j, f in enumerate(slots):
            tile = resize(diverging(latents[i, f], limit), size, size, smooth=False)
            out.paste(tile, (label_w + j * (size + gap), top + i * (size + gap)))
    return caption_above(out, title) if title else out


def token_arithmetic(geometry) -> str:
    """The sums from pixels to tokens, as Markdown."""
    g = geometry
    t, h, w = g.latent_size
    tg, hg, wg = g.grid
    pixels = g.num_frames * g.height * g.width * 3
    latent_numbers = g.latent_channels * t * h * w
    n = g.num_tokens
    layouts = sorted(set(g.layouts))
    pairs = n * n if layouts == ["full"] else None
    lines = [
        "| | |\n|---|---|",
        f"| clip | {g.num_frames} frames x {g.height} x {g.width} pixels x 3 colours = **{pixels:,} numbers** |",
        f"| autoencoder (per frame, /{g.vae_scale_factor} in height and width) | {g.latent_channels} channels x "
        f"{t} x {h} x {w} = **{latent_numbers:,} numbers** ({pixels / latent_numbers:.0f}x fewer) |",
        f"| tubelet (spacetime patch) | {g.patch_size_t} frames x {g.patch_size} x {g.patch_size} latent pixels "
        f"= {g.patch_size_t} frames x {g.patch_pixels} x {g.patch_pixels} pixels |",
        f"| tokens | {t}/{g.patch_size_t} x {h}/{g.patch_size} x {w}/{g.patch_size} = {tg} x {hg} x {wg} = "
        f"**{n} tokens**, in (time, row, column) order |",
        f"| one token | {g.latent_channels} x {g.patch_size_t} x {g.patch_size} x {g.patch_size} = "
        f"{g.token_features} numbers, projected to a vector of {g.hidden_size} |",
    ]
    if pairs:
        lines.append(f"| full self-attention | {n} x {n} = {pairs:,} query-key pairs per head, "
                     f"{g.num_heads} heads, {g.depth} blocks |")
    else:
        lines.append(f"| factorized attention | spatial blocks: {hg * wg} x {hg * wg} within each of the {tg} "
                     f"time slots; temporal blocks: {tg} x {tg} at each of the {hg * wg} positions |")
    return "\n".join(lines)
