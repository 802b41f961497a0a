"""Self-attention maps: pick a query patch, see where it looks, and the whole matrix.

Attention maps come in the shapes of tiny_dit.model.Attention: full (heads, N, N), spatial
(heads, T', S, S), temporal (heads, S, T', T'). `full_attention` turns each of them into the
(heads, N, N) token-by-token matrix (zeros where a factorized layer cannot look), so every
view works for all three layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from tiny_dit.inside.views.drawing import (BACKGROUND, GRID_LINE, HIGHLIGHT, INK, MUTED, colormap, font,
                                           overlay_heat, resize)
from tiny_dit.inside.views.patch_grid import display_cell, draw_token_grid, outline_token
from tiny_dit.video import to_uint8


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
