"""Which words drive which patches: the DiT's cross-attention to the prompt's CLIP tokens, per word.

    from tiny_dit.inside.word_attention import group_words, cross_attention_at, word_heat

    words = group_words(record.tokens)          # [Word("a", [1]), Word("yellow", [2, 3]), ...]
    maps = cross_attention_at(record, k)         # block -> float16 (heads, N, L): step k, clip 1
    heat = word_heat(record, words[1], k)        # (T', H', W'): how much each patch attends to "yellow"

Every DiT block with cross-attention lets each video token (query) read the prompt's
per-token CLIP states (keys and values): `CrossAttention.forward` computes
q = q(norm(x)), k = kv(context)[keys], softmax(q k^T / sqrt(head_dim)) over the real tokens
(padding is masked out), with the fused SDPA kernel, which returns no probabilities. They are
recomputed here from the module's own inputs, caught with a forward hook on `block.cross_attn`
while the transformer runs once on clip 1's recorded latents x_t[k] (batch 1, conditional, the
prompt's recorded embeddings): the same pass as `RunRecord.attention_at`, so the same run, no
resampling, and nothing more is kept per run. The last few steps asked for are cached
(tiny_dit.inside.attention_maps: ATTENTION_CACHE_STEPS, shared by all runs, ~0.6 MB a step for the
bundled model).

Words: open_clip's BPE tokenizer cuts a word into pieces and marks the last piece of each
word (`</w>`, decoded as a trailing space), so "chartreusey" is "char" "tre" "u" "sey</w>".
`group_words` merges the pieces back into the words of the prompt; a word's attention is the
sum over its pieces (attention probabilities over the tokens add up).

`object_patches` estimates which patches the object covers in the decoded frames (pixels
far from the frame's border colour), so that the views can say how much of a word's
attention sits on the object, and pick a query patch on the object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from tiny_dit.inside.attention_maps import ATTENTION_CACHE_STEPS, BoundedCache, clip_inputs, maps_at

SPECIAL_TOKENS = {"<start_of_text>", "<end_of_text>", "<|startoftext|>", "<|endoftext|>"}


@dataclass
class Word:
    """One word of the prompt as CLIP read it: its text and the positions of its pieces."""

    text: str
    positions: list[int]  # token positions (into TokenInfo.ids), 1.. (0 is the start token)

    @property
    def pieces(self) -> int:
        return len(self.positions)


def _ends_word(piece: str) -> bool:
    return piece.endswith("</w>") or piece[-1:].isspace()


def _clean(piece: str) -> str:
    return piece.replace("</w>", "").strip()


def group_words(tokens) -> list[Word]:
    """The words of the prompt (tiny_dit.text_encoder.TokenInfo), word pieces merged by the
    end-of-word marker, without the start and end tokens and the padding. A piece that ends
    the prompt without a marker ends its word too (CLIP never splits across the end)."""
    words, current = [], []
    last = tokens.num_real - 1  # the end token
    for i in range(1, last):
        piece = tokens.pieces[i]
        if piece in SPECIAL_TOKENS:
            continue
        current.append(i)
        if _ends_word(piece) or i == last - 1:
            text = "".join(_clean(tokens.pieces[j]) for j in current)
            words.append(Word(text or "(space)", current))
            current = []
    return words


def special_positions(tokens) -> list[int]:
    """Positions of the start and end tokens (what attention often parks on)."""
    return [0, tokens.num_real - 1]


# ----------------------------------------------------------------------------
# Cross-attention probabilities
# ----------------------------------------------------------------------------


@torch.no_grad()
def cross_attention_probs(module, x: torch.Tensor, context: torch.Tensor,
                          context_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The attention probabilities a tiny_dit.model.CrossAttention computes inside its SDPA
    call, from its inputs: (B, heads, N, L) float32, zero on masked (padding) tokens."""
    B, N, _ = x.shape
    L = context.shape[1]
    h, hd = module.num_heads, module.head_dim
    q = module.q(module.norm(x)).reshape(B, N, h, hd).transpose(1, 2).float()  # (B, heads, N, hd)
    k = module.kv(context).reshape(B, L, 2, h, hd)[:, :, 0].transpose(1, 2).float()  # (B, heads, L, hd)
    scores = q @ k.transpose(-1, -2) / hd ** 0.5  # (B, heads, N, L)
    if context_mask is not None:
        scores = scores.masked_fill(~context_mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def has_cross_attention(transformer) -> bool:
    return any(getattr(block, "cross_attn", None) is not None for block in transformer.blocks)


@torch.no_grad()
def recompute_cross_attention(transformer, latents: np.ndarray, timestep: float,
                              conditioning: dict[str, torch.Tensor]) -> dict[int, np.ndarray]:
    """Cross-attention probabilities of every block with cross-attention, for one clip's latents
    (C, T, h, w) at `timestep`: block -> float16 (heads, N, L). One forward pass of batch 1 (as
    the pipeline runs the model), the probabilities computed from each CrossAttention's inputs
    by a forward hook (only for this thread's pass: other threads may sample meanwhile)."""
    modules = {i: block.cross_attn for i, block in enumerate(transformer.blocks)
               if getattr(block, "cross_attn", None) is not None}
    if not modules:
        return {}
    me = threading.get_ident()
    maps: dict[int, np.ndarray] = {}

    def hook(index):
        def fn(module, args, kwargs, output):
            if threading.get_ident() != me:
                return
            names = ("x", "context", "context_mask")
            values = dict(zip(names, args))
            values.update({k: v for k, v in kwargs.items() if k in names})
            probs = cross_attention_probs(module, values["x"], values["context"], values.get("context_mask"))
            maps[index] = probs[0].to(torch.float16).cpu().numpy()
        return fn

    x, t, text = clip_inputs(transformer, latents, timestep, conditioning)
    handles = [m.register_forward_hook(hook(i), with_kwargs=True) for i, m in modules.items()]
    try:
        transformer(x, timestep=t, **text)
    finally:
        for handle in handles:
            handle.remove()
    return maps


CROSS_ATTENTION_CACHE = BoundedCache(ATTENTION_CACHE_STEPS)  # (run key, pass) -> block -> maps


def cross_attention_at(record, step: int) -> dict[int, np.ndarray]:
    """Cross-attention maps of clip 1 at transformer pass `step` (0-based; one a denoising step
    for Euler) of a RunRecord, block -> float16 (heads, N, L), recomputed from x_t[step] and cached
    for a few steps (as `RunRecord.attention_at` does for self-attention; nothing is stored in the
    record)."""
    return maps_at(record, step, CROSS_ATTENTION_CACHE, recompute_cross_attention)


def token_attention(record, step: int, block: int | None = None, head: int | None = None) -> np.ndarray:
    """(N, L) attention of every video token over the prompt's tokens at step `step` (0-based):
    one block's (or the mean over blocks, block=None), one head's (or the mean, head=None)."""
    maps = cross_attention_at(record, step)
    if not maps:
        raise ValueError("this model has no cross-attention")
    chosen = list(maps.values()) if block is None else [maps[block]]
    stacked = np.stack([m.astype(np.float32) for m in chosen])  # (blocks, heads, N, L)
    stacked = stacked.mean(axis=1) if head is None else stacked[:, head]
    return stacked.mean(axis=0)


WORD_SOURCES = ("both", "states", "words")  # for a DiT with word_embeddings: which of a word's two keys


def source_positions(positions: list[int], num_keys: int, context_length: int, source: str = "both") -> list[int]:
    """Columns of an attention map over `num_keys` text keys for these token positions. A DiT with
    word_embeddings reads 2L keys, CLIP's final states and then each word's own embedding, so a word has
    two: "states" (p), "words" (p + L) or "both" (their sum: all the attention the word gets)."""
    if source not in WORD_SOURCES:
        raise ValueError(f"source must be one of {WORD_SOURCES}, got {source!r}")
    if num_keys != 2 * context_length:  # one source: CLIP's states
        return list(positions)
    words = [p + context_length for p in positions]
    return {"states": list(positions), "words": words, "both": list(positions) + words}[source]


def word_heat(record, word: Word, step: int, block: int | None = None, head: int | None = None,
              source: str = "both") -> np.ndarray:
    """How much each patch attends to `word` (summed over its pieces, and over its two keys for a DiT with
    word_embeddings unless `source` picks one): (T', H', W') in [0, 1]."""
    attention = token_attention(record, step, block, head)
    return attention[:, columns(record, attention, word.positions, source)].sum(axis=1).reshape(record.geometry.grid)


def columns(record, attention: np.ndarray, positions: list[int], source: str = "both") -> list[int]:
    """source_positions for a record's (N, keys) attention map."""
    return source_positions(positions, attention.shape[1], record.tokens.context_length, source)


# ----------------------------------------------------------------------------
# Where the object is
# ----------------------------------------------------------------------------


def object_coverage(frames: np.ndarray, geometry, threshold: int = 48) -> np.ndarray:
    """The share of each tubelet's pixels that differ from the background, (T', H', W') in [0, 1].
    The background colour of a frame is the median of its border pixels (the shapes world has
    plain backgrounds); a pixel is foreground if a channel differs from it by > threshold."""
    frames = np.asarray(frames)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)  # (T, P, 3)
    background = np.median(border, axis=1)  # (T, 3)
    mask = (np.abs(frames.astype(np.int16) - background[:, None, None].astype(np.int16)).max(axis=-1)
            > threshold)  # (T, H, W)
    tg, hg, wg = geometry.grid
    pt = geometry.patch_size_t
    t, height, width = mask.shape
    mask = mask[:tg * pt].reshape(tg, pt, hg, height // hg, wg, width // wg)
    return mask.mean(axis=(1, 3, 5))


def object_patches(frames: np.ndarray, geometry, min_share: float = 0.15) -> np.ndarray:
    """Boolean (T', H', W'): the patches the object covers (at least `min_share` of the pixels)."""
    return object_coverage(frames, geometry) >= min_share


def default_query(frames: np.ndarray, geometry) -> tuple[int, int, int]:
    """A query patch on the object in the first time slot (the patch it covers most), or the
    centre of the frame when nothing stands out from the background."""
    tg, hg, wg = geometry.grid
    coverage = object_coverage(frames, geometry)[0]
    if coverage.max() < 0.05 or coverage.min() > 0.95:  # blank, or everything differs (noise)
        return 0, hg // 2, wg // 2
    h, w = np.unravel_index(int(np.argmax(coverage)), coverage.shape)
    return 0, int(h), int(w)


# ----------------------------------------------------------------------------
# For the app's view
# ----------------------------------------------------------------------------

NO_CROSS_ATTENTION = (
    "**This model has no cross-attention**: the prompt reaches the DiT only as the pooled CLIP vector, through "
    "adaLN (see the adaLN-Zero view), the same for every patch. No patch reads any single word, so there is no "
    "word attention to show. (A TinyDiT built with `cross_attention=True` has it.)")


def default_word(words: list[Word], prompt: str = "") -> int:
    """The word to show first: the shape's name if the prompt names one (then the colour), else the
    first word longer than two letters, else the first."""
    from tiny_dit.data.shapes import COLORS, SHAPES

    for names in (SHAPES, COLORS):
        for i, word in enumerate(words):
            if word.text.lower() in names:
                return i
    return next((i for i, w in enumerate(words) if len(w.text) > 2), 0)


def word_labels(words: list[Word]) -> list[str]:
    """Dropdown labels: the word, its pieces when CLIP split it, a number when it occurs twice."""
    seen: dict[str, int] = {}
    labels = []
    for word in words:
        seen[word.text] = seen.get(word.text, 0) + 1
        label = word.text + (f" ({seen[word.text]})" if seen[word.text] > 1 else "")
        labels.append(label)
    return labels


def _where(record, block: int | None, head: int | None, step: int) -> str:
    g = record.geometry
    which = f"block {block + 1}" if block is not None else f"the mean of all {g.depth} blocks"
    who = f"head {head + 1}" if head is not None else "the mean of all heads"
    return (f"{which[0].upper() + which[1:]}, {who}, iteration {step + 1} of {record.num_passes} "
            f"(noise level sigma = {float(record.sigmas[step]):.2f}), clip 1.")


def describe(record, words: list[Word], index: int, block: int | None, head: int | None, step: int) -> str:
    """Markdown about one word's attention: its share, on the object and off it, and the special tokens'."""
    word = words[index]
    tokens = record.tokens
    attention = token_attention(record, step, block, head)  # (N, L), or (N, 2L) with word_embeddings
    heat = attention[:, columns(record, attention, word.positions)].sum(axis=1)  # (N,)
    share = float(heat.mean())
    real = tokens.num_real
    pieces = ""
    if word.pieces > 1:
        shown = " + ".join(f"`{tokens.pieces[p].strip()}`" for p in word.positions)
        pieces = f" (CLIP cut it into {word.pieces} pieces, {shown}; their attention is added up)"
    lines = [_where(record, block, head, step),
             f"**\"{word.text}\"** (word {index} of the prompt, counting from 0){pieces}: on average a patch gives "
             f"it **{100 * share:.1f}%** of its cross-attention; spread evenly over the {real} tokens CLIP read, "
             f"each would get {100 / real:.1f}%. The strongest patch gives it {100 * float(heat.max()):.1f}%."]
    on = object_patches(record.frames[0], record.geometry).reshape(-1)
    if on.any() and not on.all():
        inside, outside = float(heat[on].mean()), float(heat[~on].mean())
        ratio = inside / outside if outside > 0 else float("inf")
        lines.append(f"Patches on the object ({int(on.sum())} of {on.size}, found in the decoded frames) give it "
                     f"{100 * inside:.1f}%, background patches {100 * outside:.1f}%: "
                     + (f"**{ratio:.1f}x more on the object**." if ratio >= 1.2 else
                        f"**{1 / max(ratio, 1e-9):.1f}x more on the background**." if ratio <= 1 / 1.2 else
                        "about the same everywhere."))
    special = float(attention[:, columns(record, attention, special_positions(tokens))].sum(axis=1).mean())
    lines.append(f"The start and end tokens take {100 * special:.0f}% of the attention on average: attention "
                 "often parks on them when no word is needed (as in language models).")
    return "\n\n".join(lines)


def summary_image(record, words: list[Word], step: int, block: int | None = None, head: int | None = None):
    """Every word in a row (tiny_dit.inside.views.words.word_summary_image), labelled with its mean share."""
    from tiny_dit.inside.views.words import word_summary_image

    attention = token_attention(record, step, block, head)
    grid = record.geometry.grid
    rows = []
    for label, word in zip(word_labels(words), words):
        heat = attention[:, columns(record, attention, word.positions)].sum(axis=1)
        rows.append((f"{label}  {100 * heat.mean():.0f}%", heat.reshape(grid)))
    special = attention[:, columns(record, attention, special_positions(record.tokens))].sum(axis=1)
    rows.append((f"<start>+<end>  {100 * special.mean():.0f}%", special.reshape(grid)))
    return word_summary_image(record.frames[0], record.geometry, rows)
