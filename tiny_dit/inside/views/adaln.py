"""adaLN-Zero: each block's shift, scale and gate magnitudes over the denoising steps."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tiny_dit.inside.views.drawing import BACKGROUND, INK, MUTED, SERIES_COLORS, _nice_ticks, font, stack, text_width


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
