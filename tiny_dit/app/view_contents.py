"""What each view of the app shows, as pictures (PIL) and Markdown, from checked values: the
"Inside the model" views of one recorded run (tiny_dit.inside.recorder.RunRecord, clip 1), the two
comparisons (guidance methods or scales, the forward process) and a Sora task's run. app.py checks the inputs
(tiny_dit.app.checks) and calls these; the drawing is tiny_dit.inside.views, the words tiny_dit.inside.teaching.

    frames, channels, md = patch_grid(record)
    picker, heat, matrix, md, query = attention(record, block, head, iteration, query=None)
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tiny_dit.app import sora_tasks
from tiny_dit.data.shapes import attributes_clip, shapes_attributes
from tiny_dit.guiders import GUIDERS
from tiny_dit.inside import teaching
from tiny_dit.inside import word_attention as word_maps
from tiny_dit.inside.views.adaln import adaln_plot
from tiny_dit.inside.views.attention import attention_heatmap, attention_matrix, picker_image
from tiny_dit.inside.views.drawing import labelled_grid
from tiny_dit.inside.views.patch_grid import latent_channels_image, patch_grid_image, token_arithmetic
from tiny_dit.inside.views.text_path import clip_score_chart, tokens_image
from tiny_dit.inside.views.trajectory import forward_process_images
from tiny_dit.inside.views.words import word_heatmap_image
from tiny_dit.text_encoder import tokenize
from tiny_dit.training.evaluate import stray_pixel_share
from tiny_dit.video import to_uint8

DEFAULT_ATTRIBUTES = {"color": "red", "shape": "circle", "motion": "left", "background": "black"}


# ----------------------------------------------------------------------------
# Inside the model: one recorded run
# ----------------------------------------------------------------------------


def patch_grid(record):
    """(clip 1 cut into tubelets, its latent channel by channel, the token arithmetic)."""
    frames = patch_grid_image(record.frames[0], record.geometry)
    channels = latent_channels_image(record.x_t[-1].astype(np.float32), record.geometry,
                                           title="clip 1 in latent space: one row per channel")
    return frames, channels, token_arithmetic(record.geometry)


def attention(record, block: int, head: int | None, iteration: int, query: tuple[int, int, int] | None = None):
    """(picker image, heatmap, matrix, description, query) for a block, head (None: the mean) and
    iteration (from 1); without a query patch, one on the object (word_attention.default_query)."""
    if query is None:  # a patch on the object: the first picture should show structure
        query = word_maps.default_query(record.frames[0], record.geometry)
    shown = iteration - 1
    heat, md = attention_heatmap(record, block, head, shown, query)
    matrix = attention_matrix(record, block, head, shown, query)
    picker = picker_image(record.frames[0], record.geometry, query)
    return picker, heat, matrix, teaching.attention_caption(record, block, head, shown) + "\n\n" + md, query


def text_path(record, pipe):
    """(the tokens CLIP read, the CLIP-score chart, a summary); the chart's reference is the CLIP
    score of a rendered clip of the prompt, when the prompt names a shapes-world clip."""
    reference = None
    attributes = shapes_attributes(record.prompt)
    if attributes is not None:
        g = record.geometry
        clip = attributes_clip(attributes, g.num_frames, g.height, g.width, seed=record.seed)
        with torch.no_grad():
            reference = float(pipe.text_encoder.clip_score(torch.from_numpy(clip[None]), record.prompt)[0])
    chart = clip_score_chart(record.clip_scores, reference)
    return (tokens_image(record.tokens), chart,
            teaching.text_path_summary(record.tokens, record.clip_scores, reference))


def adaln(record):
    return adaln_plot(record), teaching.adaln_summary(record.adaln)


# -- word attention (cross-attention per word, recomputed from the record) --------------------


def word_attention(record, words, index: int, block: int | None, head: int | None, iteration: int):
    """(heatmap over every frame, description) of how much each patch reads word `index` of `words`
    (word_attention.group_words), in a block and head (None: the mean) at an iteration (from 1)."""
    if not word_maps.has_cross_attention(record.transformer):
        return None, word_maps.NO_CROSS_ATTENTION
    if not words:
        return None, "The prompt has no words for CLIP to read."
    chosen = words[index]
    heat = word_maps.word_heat(record, chosen, iteration - 1, block, head)
    image = word_heatmap_image(record.frames[0], record.geometry, heat,
                                     title=f"\"{chosen.text}\": how much each patch reads it")
    return image, word_maps.describe(record, words, index, block, head, iteration - 1)


def word_summary(record, words, block: int | None, head: int | None, iteration: int):
    """One row per word of the prompt (the middle frame of each time slot, heat over it); None when
    the model has no cross-attention or the prompt no words."""
    if not word_maps.has_cross_attention(record.transformer) or not words:
        return None
    return word_maps.summary_image(record, words, iteration - 1, block, head)


def word_choices(record):
    """The word view of a fresh run: (the words, [(label, index)] to choose from, the chosen word's
    index: the shape's name if the prompt has one, the last iteration)."""
    words = word_maps.group_words(record.tokens)
    choices = [(label, i) for i, label in enumerate(word_maps.word_labels(words))]
    return words, choices, word_maps.default_word(words, record.prompt), record.num_passes


# ----------------------------------------------------------------------------
# The comparisons and the Sora tasks
# ----------------------------------------------------------------------------


def forward_process(pipe, geometry, prompt: str, level: float, seed: int):
    """A training-style clip of the prompt (a red circle if the prompt names no shapes-world clip)
    noised to level s, decoded: (clip image, ladder from s = 0 to 1, text)."""
    attributes = shapes_attributes(prompt)
    named = attributes is not None
    attributes = attributes or DEFAULT_ATTRIBUTES
    clip = attributes_clip(attributes, geometry.num_frames, geometry.height, geometry.width, seed=seed)
    strip, ladder = forward_process_images(pipe, clip, level, seed=seed)
    return strip, ladder, teaching.forward_process_summary(attributes, named, level, geometry.num_frames)


def guidance_runs(compare: str, scales: list[float], scale: float, guider: str | None) -> list[tuple]:
    """The clips a guidance comparison samples, (method: a name of GUIDERS or None for the pipeline's own,
    scale w) each: every method at `scale` (`compare` "methods"), or method `guider` at each of `scales`."""
    if compare == "methods":
        return [(name, scale) for name in GUIDERS]
    return [(guider, w) for w in scales]


def guidance_grid(pipe, clips: list[np.ndarray], prompt: str, compare: str, methods: list[str], scales: list[float]):
    """The guidance comparison's clips (one per method or scale) as one labelled grid clip, their CLIP
    scores, and their stray-pixel shares (0 to 1: the fringes too much guidance paints)."""
    with torch.no_grad():
        scores = pipe.text_encoder.clip_score(torch.from_numpy(np.stack(clips)), prompt).tolist()
    labels = methods if compare == "methods" else [f"w = {w:g}" for w in scales]
    return labelled_grid(clips, labels), scores, [stray_pixel_share(clip) for clip in clips]


def run_sora_task(pipe, prompt: str, conditions, *, num_frames: int, height: int, width: int, steps: int,
                  guidance: float, seed: int, lock, on_pass=None, video=None, strength=None, loop: bool = False):
    """Sample one clip with the task's known frames (sora_tasks.build_conditions), or the clip to edit
    (`video`, `strength`), or a loop, under `lock`; `on_pass(i)` after each transformer pass. Returns
    (uint8 frames (T, H, W, 3), seconds)."""
    def on_step(_pipe, i, t, kwargs):
        if on_pass is not None:
            on_pass(i)
        return {}

    start = time.perf_counter()
    with lock:
        frames = pipe(prompt, num_frames=num_frames, height=height, width=width, conditions=conditions or None,
                      num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
                      output_type="np", callback_on_step_end=on_step, video=video, strength=strength,
                      loop=loop).frames[0]
    return to_uint8(frames), time.perf_counter() - start


def sora_result_views(frames: np.ndarray, known: np.ndarray):
    """(the result with the given frames bordered, the filmstrip of given and new frames)."""
    return sora_tasks.mark_known_frames(frames, known), sora_tasks.known_frames_strip(frames, known)


def prompt_notices(pipe, prompt: str) -> list[str]:
    """What the page should warn about a prompt: one longer than CLIP's context is truncated."""
    tokens, messages = tokenize(pipe.tokenizer, prompt)
    if not (tokens.truncated or messages):
        return []
    return [f"The prompt has {tokens.num_wanted} tokens but CLIP reads {tokens.context_length}: it was truncated "
            f"to \"{tokens.read_text}\"."]
