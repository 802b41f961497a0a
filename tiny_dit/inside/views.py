"""Pictures of a recorded run (tiny_dit.inside.recorder.RunRecord): what the app's "Inside the model" shows.

Everything here is numpy + PIL (no plotting library needed) and returns PIL images,
uint8 frame arrays or Markdown strings, so it can be tested without a browser:

    patch_grid_image / latent_channels_image / token_arithmetic   spacetime patches (tubelets)
    SlotLayout, picker_image, attention_heatmap, attention_matrix  self-attention maps
    trajectory_images                                              x_t and pred_x0 over the steps
    noise_levels_chart                                             the noise levels a solver visits
    labelled_grid                                                  clips side by side with a caption
    tokens_image, tokens_markdown, clip_score_chart                the text path
    adaln_plot                                                     adaLN-Zero modulation over the steps
    word_heatmap_image, word_summary_image                         cross-attention per word (tiny_dit.inside.word_attention)
    forward_process_images                                         x_s = (1 - s) x0 + s noise, decoded
    preview_image                                                  the live preview while sampling

Attention maps come in the shapes of tiny_dit.model.Attention: full (heads, N, N), spatial
(heads, T', S, S), temporal (heads, S, T', T'). `full_attention` turns each of them into the
(heads, N, N) token-by-token matrix (zeros where a factorized layer cannot look), so every
view works for all three layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from tiny_dit.flow import add_noise
from tiny_dit.video import make_grid, to_uint8  # noqa: F401 (views.to_uint8: one home, in video.py)

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


# ----------------------------------------------------------------------------
# Basics: colours, text, tiling
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# Patch grid: how a clip becomes tokens
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------


@dataclass
class SlotLayout:
    """Where each time slot's frame and each token cell sit in the picker/heatmap images."""

    grid: tuple[int, int, int]
    cell: int
    gap: int = 10
    top: int = 22
    bottom: int = 20

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.grid[2] * self.cell, self.grid[1] * self.cell

    @property
    def size(self) -> tuple[int, int]:
        fw, fh = self.frame_size
        return self.grid[0] * (fw + self.gap) - self.gap, self.top + fh + self.bottom

    def origin(self, slot: int) -> tuple[int, int]:
        return slot * (self.frame_size[0] + self.gap), self.top

    def hit(self, x: float, y: float) -> tuple[int, int, int] | None:
        """(t, h, w) of the token cell under image pixel (x, y), or None outside every frame."""
        fw, fh = self.frame_size
        x, y = int(x), int(y) - self.top
        slot, dx = divmod(x, fw + self.gap)
        if not (0 <= slot < self.grid[0] and 0 <= dx < fw and 0 <= y < fh):
            return None
        return int(slot), y // self.cell, dx // self.cell

    def centre(self, token: tuple[int, int, int]) -> tuple[int, int]:
        """Image pixel at the middle of a token's cell (what a click there sends)."""
        t, h, w = token
        x0, y0 = self.origin(t)
        return x0 + w * self.cell + self.cell // 2, y0 + h * self.cell + self.cell // 2


def slot_layout(geometry, target: int = 192) -> SlotLayout:
    return SlotLayout(grid=geometry.grid, cell=display_cell(geometry, target))


def slot_frames(frames: np.ndarray, geometry) -> list[int]:
    """The frame shown for each time slot: the middle one of its patch_size_t frames."""
    pt = geometry.patch_size_t
    return [t * pt + pt // 2 for t in range(geometry.grid[0])]


def _draw_slots(layout: SlotLayout, frames: np.ndarray, geometry, heat: np.ndarray | None = None,
                query: tuple[int, int, int] | None = None, captions: list[str] | None = None) -> Image.Image:
    frames = to_uint8(frames)
    fw, fh = layout.frame_size
    out = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(out)
    pt = geometry.patch_size_t
    for t, f in enumerate(slot_frames(frames, geometry)):
        x, y = layout.origin(t)
        if heat is None:  # the frame with its token grid (a heatmap shows its cells already)
            out.paste(resize(frames[f], fw, fh), (x, y))
            draw_token_grid(draw, x, y, layout.cell, layout.grid[1], layout.grid[2])
        else:
            out.paste(overlay_heat(frames[f], heat[t], fw, fh), (x, y))
        draw.text((x + 2, 4), f"slot {t + 1} (frames {t * pt + 1}-{t * pt + pt})", fill=INK, font=font(12))
        if captions:
            draw.text((x + 2, y + fh + 3), captions[t], fill=INK, font=font(12))
    if query is not None:
        t, h, w = query
        outline_token(draw, *layout.origin(t), layout.cell, h, w)
    return out


def picker_image(frames: np.ndarray, geometry, query: tuple[int, int, int] | None = None) -> Image.Image:
    """One frame per time slot with the token grid: click a cell to choose the query token."""
    layout = slot_layout(geometry)
    return _draw_slots(layout, frames, geometry, query=query,
                       captions=["click a patch" if i == 0 else "" for i in range(geometry.grid[0])])


def full_attention(probs: np.ndarray, layout: str, grid: tuple[int, int, int]) -> np.ndarray:
    """One block's attention maps for one clip -> (heads, N, N) query-by-key probabilities over all
    N tokens in (t, h, w) order. Factorized layers get zeros where they cannot look: spatial
    maps (heads, T', S, S) become block-diagonal, temporal maps (heads, S, T', T') put each
    position's T' x T' map on the tokens at that position."""
    probs = np.asarray(probs, dtype=np.float32)
    tg, hg, wg = grid
    s, n = hg * wg, tg * hg * wg
    if layout == "full":
        if probs.shape[-2:] != (n, n):
            raise ValueError(f"full attention maps should be (heads, {n}, {n}), got {probs.shape}")
        return probs
    heads = probs.shape[0]
    out = np.zeros((heads, n, n), dtype=np.float32)
    if layout == "spatial":  # (heads, T', S, S)
        for t in range(tg):
            out[:, t * s:(t + 1) * s, t * s:(t + 1) * s] = probs[:, t]
    elif layout == "temporal":  # (heads, S, T', T')
        idx = np.arange(tg) * s
        for p in range(s):
            out[:, (idx + p)[:, None], (idx + p)[None, :]] = probs[:, p]
    else:
        raise ValueError(f"unknown attention layout {layout!r}")
    return out


def attention_matrix_of(record, block: int, head: int | None, step_index: int) -> np.ndarray:
    """(N, N) attention of one head (or the mean of all heads, head=None) at step `step_index`
    (0-based; recomputed by the record, see tiny_dit.inside.attention_maps)."""
    probs = record.attention_at(step_index)[block]
    full = full_attention(probs, record.geometry.layouts[block], record.geometry.grid)
    return full.mean(axis=0) if head is None else full[head]


def attention_heatmap(record, block: int, head: int | None, step_index: int, query: tuple[int, int, int],
                      sample_frames: np.ndarray | None = None) -> tuple[Image.Image, str]:
    """Where the query token looks: its row of the attention matrix over the tokens of every
    time slot, as a heatmap over the clip's frames (scaled to the largest weight). Also a
    Markdown summary (share of attention per slot, on itself, the strongest key)."""
    g = record.geometry
    tg, hg, wg = g.grid
    t, h, w = query
    q = (t * hg + h) * wg + w
    row = attention_matrix_of(record, block, head, step_index)[q]  # (N,)
    heat = row.reshape(tg, hg, wg)
    top = float(heat.max()) or 1.0
    per_slot = heat.reshape(tg, -1).sum(axis=1)
    frames = record.frames[0] if sample_frames is None else sample_frames
    image = _draw_slots(slot_layout(g), frames, g, heat=heat / top, query=query,
                        captions=[f"{100 * p:.0f}% of the attention" for p in per_slot])
    k = int(row.argmax())
    kt, kh, kw = k // (hg * wg), (k // wg) % hg, k % wg
    uniform = 1.0 / row.size
    entropy = float(-(row[row > 0] * np.log(row[row > 0])).sum())
    md = (f"Query: the patch at row {h + 1}, column {w + 1} of time slot {t + 1}. It gives "
          f"**{100 * per_slot[t]:.0f}%** of its attention to its own time slot and {100 * row[q]:.1f}% to itself; "
          f"its strongest key is row {kh + 1}, column {kw + 1} of slot {kt + 1} ({100 * row[k]:.1f}%, "
          f"{row[k] / uniform:.0f}x the uniform {100 * uniform:.2f}%). Entropy {entropy:.2f} nats "
          f"(uniform: {np.log(row.size):.2f}).")
    layout = g.layouts[block]
    if layout == "spatial":
        md += " This is a *spatial* block: a token can only look at its own time slot."
    elif layout == "temporal":
        md += " This is a *temporal* block: a token can only look at its own position in the other slots."
    return image, md


def attention_matrix(record, block: int, head: int | None, step_index: int,
                     query: tuple[int, int, int] | None = None, target: int = 512) -> Image.Image:
    """The whole N x N attention matrix (queries down, keys across) on a log scale relative to
    uniform attention (1/N: the middle colour), with the time-slot boundaries drawn in white
    and the query's row marked."""
    g = record.geometry
    tg, hg, wg = g.grid
    s = hg * wg
    a = attention_matrix_of(record, block, head, step_index)
    n = a.shape[0]
    scale = max(1, target // n)
    rel = np.log10(np.maximum(a * n, 1e-6))  # 0 = uniform attention
    image = Image.fromarray(colormap((rel + 2) / 4)).resize((n * scale, n * scale), Image.NEAREST)
    margin_l, margin_t, margin_b = 56, 22, 34
    out = Image.new("RGB", (margin_l + image.width + 8, margin_t + image.height + margin_b), BACKGROUND)
    out.paste(image, (margin_l, margin_t))
    draw = ImageDraw.Draw(out)
    draw.text((margin_l, 3), "keys (what is looked at) ->", fill=INK, font=font(12))
    for t in range(1, tg):
        p = t * s * scale
        draw.line([(margin_l + p, margin_t), (margin_l + p, margin_t + image.height - 1)], fill=GRID_LINE)
        draw.line([(margin_l, margin_t + p), (margin_l + image.width - 1, margin_t + p)], fill=GRID_LINE)
    for t in range(tg):
        c = (t * s + s // 2) * scale
        draw.text((4, margin_t + c - 7), f"slot {t + 1}", fill=INK, font=font(11))
        draw.text((margin_l + c - 14, margin_t + image.height + 3), f"slot {t + 1}", fill=INK, font=font(11))
    draw.text((4, margin_t + image.height + 18), "queries down; colour: log10(weight x N), "
              "-2 (dark) .. 0 = uniform .. +2 (bright)", fill=MUTED, font=font(11))
    if query is not None:
        qt, qh, qw = query
        y = margin_t + ((qt * hg + qh) * wg + qw) * scale + scale // 2
        draw.polygon([(margin_l - 10, y - 5), (margin_l - 2, y), (margin_l - 10, y + 5)], fill=HIGHLIGHT)
    return out


# ----------------------------------------------------------------------------
# Denoising trajectory and forward process
# ----------------------------------------------------------------------------


def decode(pipe, latents, frame_indices: list[int] | None = None) -> np.ndarray:
    """Latents (C, T, h, w) or (B, C, T, h, w) -> uint8 frames (B, T, H, W, 3); with frame_indices,
    only those frames are decoded (the autoencoder works frame by frame)."""
    x = torch.as_tensor(np.asarray(latents, dtype=np.float32))
    if x.dim() == 4:
        x = x[None]
    if frame_indices is not None:
        x = x[:, :, list(frame_indices)]
    with torch.no_grad():
        return to_uint8(pipe.decode_latents(x))


FEWER_STEPS_TEXT = (
    "Why a few steps can be enough: rectified flow is trained on straight lines from noise to clip, so the "
    "sampler's paths are nearly straight, and on a straight path one step lands where a hundred would; "
    "higher-order solvers (Heun, DPM-Solver++, UniPC) use more than one velocity to correct for the bends.")


def noise_levels_chart(record, k: int | None = None, size: tuple[int, int] = (360, 150)) -> Image.Image:
    """The noise levels the run's solver visited (record.sigmas: the input of every transformer pass,
    then 0), one dot per pass, with pass k (its input x_t[k]) ringed."""
    sigmas = np.asarray(record.sigmas, dtype=np.float64)
    passes = len(sigmas) - 1
    w, h = size
    left, right, top, bottom = 36, 10, 22, 26
    out = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(out)
    solver = getattr(record, "scheduler", "euler")
    steps = record.num_inference_steps
    title = (f"noise level sigma at each pass: {solver}, {passes} passes"
             + (f" for {steps} steps" if passes != steps else ""))
    draw.text((left, 3), title, fill=INK, font=font(12))
    pw, ph = w - left - right, h - top - bottom

    def xy(i, v):
        return left + (i / max(passes, 1)) * pw, top + ph - float(v) * ph

    for tick in (0.0, 0.5, 1.0):
        _, y = xy(0, tick)
        draw.line([(left, y), (left + pw, y)], fill=(232, 232, 232))
        draw.text((4, y - 7), f"{tick:g}", fill=MUTED, font=font(10))
    draw.rectangle([left, top, left + pw, top + ph], outline=(180, 180, 180))
    draw.text((left, top + ph + 6), "pass 0 (noise)", fill=MUTED, font=font(10))
    draw.text((left + pw - 60, top + ph + 6), f"{passes}: the clip", fill=MUTED, font=font(10))
    draw.text((left + pw // 2 - 20, top + ph + 6), "pass ->", fill=MUTED, font=font(10))
    points = [xy(i, v) for i, v in enumerate(sigmas)]
    if len(points) > 1:
        draw.line(points, fill=SERIES_COLORS[0], width=1)
    for x, y in points:
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=SERIES_COLORS[0])
    if k is not None and 0 <= k < len(points):
        x, y = points[k]
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=SERIES_COLORS[5], width=2)
    return out


def trajectory_images(record, pipe, k: int, frames_shown: int = 8) -> tuple[Image.Image, Image.Image, str]:
    """Pass k of the run (0 = the starting noise, passes = the result), for clip 1: the noise levels
    the solver visits above the latent channels of x_t, and x_t and the predicted clean clip pred_x0
    decoded to frames. A pass is a step for Euler, DPM-Solver++ and UniPC; Heun makes two a step."""
    steps = getattr(record, "num_passes", record.num_inference_steps)
    k = int(min(max(k, 0), steps))
    sigma = float(record.sigmas[k])
    x_t = record.x_t[k].astype(np.float32)
    latent_image = latent_channels_image(x_t, record.geometry, cell=80,
                                         title=f"x_t at noise level sigma = {sigma:.3f}: latent channels")
    latent_image = stack([noise_levels_chart(record, k), latent_image], gap=4)
    idx = spread(frames_shown, record.geometry.num_frames)
    solver = getattr(record, "scheduler", "euler")
    what_step = "Euler step" if solver == "euler" else f"{solver} solver"
    if k < steps:
        pred = record.pred_x0[k].astype(np.float32)
        decoded = decode(pipe, np.stack([x_t, pred]), idx)
        labels = ["x_t", "pred_x0"]
        done = "Before the first iteration" if k == 0 else f"After {k} of {steps} iterations"
        what = (f"**{done}**: x_t is at noise level sigma = {sigma:.3f}. Iteration {k + 1} feeds it to the model, "
                f"which predicts a velocity v; pred_x0 = x_t - sigma * v is where the straight path would end. The "
                f"{what_step} then moves x_t to sigma = {float(record.sigmas[k + 1]):.3f}.")
    else:
        decoded = decode(pipe, x_t, idx)
        labels = ["result"]
        what = f"**After all {steps} iterations**: sigma = 0, x_t is the finished clip (clip 1)."
    if steps != record.num_inference_steps:
        what += (f" (An iteration here is one transformer pass: {solver} takes {steps} passes for its "
                 f"{record.num_inference_steps} steps.)")
    what += "\n\n" + FEWER_STEPS_TEXT
    strip = filmstrip(decoded, None, cell=80, row_labels=labels, show_frame_numbers=False)
    header = Image.new("RGB", (strip.width, 16), BACKGROUND)
    draw = ImageDraw.Draw(header)
    offset = strip.width - len(idx) * 82 + 2
    for j, f in enumerate(idx):
        draw.text((offset + j * 82 + 2, 2), f"frame {f + 1}", fill=MUTED, font=font(11))
    return latent_image, stack([header, strip], gap=0), what


def forward_process_images(pipe, clip: np.ndarray, level: float, seed: int = 0,
                           levels: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
                           frames_shown: int = 8) -> tuple[Image.Image, Image.Image]:
    """A clean clip (T, H, W, 3) encoded to latents x0, noised as x_s = (1 - s) x0 + s noise with one
    fixed noise draw, and decoded: some frames at `level`, and the middle frame at several levels."""
    from tiny_dit.autoencoder import encode_clips

    x0 = encode_clips(pipe.vae, torch.from_numpy(to_uint8(clip))[None]).float()  # (1, C, T, h, w)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)))
    t = x0.shape[2]
    idx, mid = spread(frames_shown, t), t // 2
    at_level = decode(pipe, add_noise(x0, noise, level).numpy(), idx)  # (1, F, H, W, 3)
    ladder = decode(pipe, torch.cat([add_noise(x0, noise, s) for s in levels]).numpy(), [mid])[:, 0]
    strip = filmstrip(at_level, None, cell=80, row_labels=[f"s = {level:.2f}"], show_frame_numbers=False)
    ladder_image = filmstrip(ladder[None], None, cell=96, show_frame_numbers=False)
    header = Image.new("RGB", (ladder_image.width, 18), BACKGROUND)
    draw = ImageDraw.Draw(header)
    for i, s in enumerate(levels):
        draw.text((i * 98 + 2, 2), f"s = {s:g}", fill=INK, font=font(12))
    return strip, stack([header, ladder_image], gap=0)


def preview_image(pipe, pred_x0: torch.Tensor, max_clips: int = 4, frames_shown: int = 4,
                  cell: int = 80) -> Image.Image:
    """The live preview: the predicted clean clips (B, C, T, h, w), the first few, a few frames each."""
    latents = pred_x0[:max_clips].detach().float().cpu()
    decoded = decode(pipe, latents.numpy(), spread(frames_shown, latents.shape[2]))
    return filmstrip(decoded, None, cell=cell, show_frame_numbers=False,
                     row_labels=[f"clip {i + 1}" for i in range(len(decoded))])


# ----------------------------------------------------------------------------
# Text path
# ----------------------------------------------------------------------------


def tokens_markdown(tokens, max_padding_rows: int = 1) -> str:
    """CLIP's view of the prompt: one row per token, padding summarised."""
    rows = ["| position | id | token | |", "|---:|---:|---|---|"]
    for i, (token_id, piece) in enumerate(zip(tokens.ids, tokens.pieces)):
        if i >= tokens.num_real:
            break
        role = "start" if i == 0 else "end (its state is the pooled embedding)" if i == tokens.num_real - 1 else ""
        shown = piece.strip().replace("|", "\\|") or "(space)"
        rows.append(f"| {i} | {token_id} | `{shown}` | {role} |")
    pad = tokens.context_length - tokens.num_real
    if pad:
        rows.append(f"| {tokens.num_real}-{tokens.context_length - 1} | 0 | (padding x {pad}) | masked out |")
    return "\n".join(rows)


def tokens_image(tokens, width: int = 640, max_padding_shown: int = 2) -> Image.Image:
    """CLIP's view of the prompt as a row of chips: each token's text with its id below; start/end
    in blue, padding (masked out) in grey, only the first few padding slots drawn."""
    chips = []
    for i, (token_id, piece) in enumerate(zip(tokens.ids, tokens.pieces)):
        if i >= tokens.num_real + max_padding_shown:
            break
        if i >= tokens.num_real:
            chips.append(("(pad)", str(token_id), "pad"))
        else:
            kind = "special" if i in (0, tokens.num_real - 1) else "word"
            text = {"<start_of_text>": "<start>", "<end_of_text>": "<end>"}.get(piece.strip(), piece.strip())
            chips.append((text or "(space)", str(token_id), kind))
    pad = tokens.context_length - tokens.num_real
    if pad > max_padding_shown:
        chips.append((f"... {pad - max_padding_shown} more", "(pad)", "pad"))
    fills = {"word": (255, 255, 255), "special": (214, 232, 250), "pad": (236, 236, 236)}
    gap, chip_h, pad_x = 6, 40, 8
    x, y = 0, 0
    placed = []
    for text, sub, kind in chips:
        w = max(text_width(text, 14), text_width(sub, 11)) + 2 * pad_x
        if x and x + w > width:
            x, y = 0, y + chip_h + gap
        placed.append((x, y, w, text, sub, kind))
        x += w + gap
    used = max(x + w for x, _, w, *_ in placed) + 2
    out = Image.new("RGB", (used, y + chip_h + 2), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for x, y, w, text, sub, kind in placed:
        draw.rounded_rectangle([x, y, x + w, y + chip_h], radius=6, fill=fills[kind], outline=(180, 180, 180))
        draw.text((x + pad_x, y + 4), text, fill=MUTED if kind == "pad" else INK, font=font(14))
        draw.text((x + pad_x, y + 23), sub, fill=MUTED, font=font(11))
    return out


def clip_score_chart(scores: list[float], reference: float | None = None, width: int = 460) -> Image.Image:
    """Horizontal bars of the clips' CLIP scores (cosine similarity with the prompt)."""
    bar_h, gap, label_w, top = 16, 4, 64, 22
    n = len(scores)
    lo = min(0.0, min(scores), reference if reference is not None else 0.0)
    hi = max(max(scores), reference if reference is not None else 0.0, 1e-6)
    span = max(hi - lo, 1e-6)
    plot_w = width - label_w - 56
    height = top + n * (bar_h + gap) + 22
    out = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(out)
    draw.text((4, 3), "CLIP score of each clip with the prompt (cosine similarity)", fill=INK, font=font(12))
    zero = label_w + int(-lo / span * plot_w)
    for i, score in enumerate(scores):
        y = top + i * (bar_h + gap)
        x = label_w + int((score - lo) / span * plot_w)
        draw.text((4, y + 1), f"clip {i + 1}", fill=INK, font=font(12))
        draw.rectangle([min(zero, x), y, max(zero, x), y + bar_h], fill=SERIES_COLORS[0])
        draw.text((max(zero, x) + 4, y + 1), f"{score:.3f}", fill=INK, font=font(12))
    draw.line([(zero, top - 2), (zero, top + n * (bar_h + gap))], fill=MUTED)
    if reference is not None:
        x = label_w + int((reference - lo) / span * plot_w)
        y1 = top + n * (bar_h + gap)
        draw.line([(x, top - 2), (x, y1)], fill=SERIES_COLORS[5], width=2)
        draw.text((4, y1 + 3), f"orange line: a rendered clip of the prompt scores {reference:.3f}",
                  fill=SERIES_COLORS[5], font=font(11))
    return out


# ----------------------------------------------------------------------------
# adaLN-Zero
# ----------------------------------------------------------------------------


def _nice_ticks(hi: float, count: int = 4) -> list[float]:
    if hi <= 0:
        return [0.0]
    raw = hi / count
    magnitude = 10 ** np.floor(np.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    return [i * step for i in range(int(np.floor(hi / step)) + 1)]


def line_panel(series: list[np.ndarray], title: str, size: tuple[int, int] = (300, 190),
               ymax: float | None = None, xlabel: str = "step") -> Image.Image:
    """A small line plot of several series over the same x = 1..len."""
    w, h = size
    left, right, top, bottom = 44, 8, 22, 30
    out = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((left, 3), title, fill=INK, font=font(13))
    n = max(len(s) for s in series)
    hi = ymax if ymax is not None else max(float(np.nanmax(s)) for s in series)
    hi = hi * 1.05 if hi > 0 else 1.0
    pw, ph = w - left - right, h - top - bottom

    def xy(i, v):
        x = left + (i / max(n - 1, 1)) * pw
        return x, top + ph - (v / hi) * ph

    for tick in _nice_ticks(hi):
        _, y = xy(0, tick)
        draw.line([(left, y), (left + pw, y)], fill=(232, 232, 232))
        draw.text((2, y - 7), f"{tick:.3g}", fill=MUTED, font=font(10))
    draw.rectangle([left, top, left + pw, top + ph], outline=(180, 180, 180))
    for i in sorted({0, n - 1, (n - 1) // 2}):
        x, _ = xy(i, 0)
        draw.text((x - 4, top + ph + 3), str(i + 1), fill=MUTED, font=font(10))
    draw.text((left + pw // 2 - 14, top + ph + 15), xlabel, fill=MUTED, font=font(10))
    for j, s in enumerate(series):
        points = [xy(i, float(v)) for i, v in enumerate(s)]
        color = SERIES_COLORS[j % len(SERIES_COLORS)]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        else:
            draw.line(points, fill=color, width=2)
    return out


def adaln_plot(record) -> Image.Image:
    """Mean |shift|, |scale| and |gate| of every block over the denoising steps: one panel per
    (branch, kind), one line per block."""
    from tiny_dit.inside.recorder import MODULATION_NAMES

    adaln = record.adaln  # (steps, depth, 6)
    depth = adaln.shape[1]
    titles = {"shift": "shift", "scale": "scale", "gate": "gate"}
    rows = []
    for branch, name in (("msa", "attention branch"), ("mlp", "MLP branch")):
        panels = []
        for kind in ("shift", "scale", "gate"):
            j = MODULATION_NAMES.index(f"{kind}_{branch}")
            series = [adaln[:, b, j] for b in range(depth)]
            panels.append(line_panel(series, f"{titles[kind]} ({name})"))
        rows.append(stack(panels, vertical=False, gap=6))
    legend = Image.new("RGB", (rows[0].width, 22), BACKGROUND)
    draw = ImageDraw.Draw(legend)
    x = 4
    draw.text((x, 4), "mean |value| per block:", fill=INK, font=font(12))
    x += text_width("mean |value| per block:", 12) + 10
    for b in range(depth):
        color = SERIES_COLORS[b % len(SERIES_COLORS)]
        draw.rectangle([x, 8, x + 14, 14], fill=color)
        draw.text((x + 18, 4), f"block {b + 1}", fill=INK, font=font(12))
        x += 18 + text_width(f"block {b + 1}", 12) + 12
    return stack([legend] + rows, gap=6)


# ----------------------------------------------------------------------------
# Word attention (cross-attention to the prompt, per word): tiny_dit.inside.word_attention
# ----------------------------------------------------------------------------


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
