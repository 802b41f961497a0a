"""The text path: CLIP's tokens of the prompt (word pieces, ids, padding) and each clip's CLIP score."""

from __future__ import annotations

from PIL import Image, ImageDraw

from tiny_dit.inside.views.drawing import BACKGROUND, INK, MUTED, SERIES_COLORS, font, text_width


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
