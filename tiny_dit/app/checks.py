"""Input checks and error handling for the app (app.py): every value an event receives, from
the page, gradio_client or raw HTTP, is checked here, and every failure becomes a gr.Error
whose message names the field and the allowed range or type.

The app's events run with `preprocess=False`, so these functions see the raw JSON values:
Gradio's own preprocessing would coerce silently (a prompt of 123 becomes "123", a seed of
1.5 becomes 2) or fail with a generic message ("has not enabled verbose error reporting").
Nothing is coerced here: a number sent as text, a fraction where a whole number is wanted,
NaN or infinity, None, a list... each is refused with a message that says what was expected.

User errors are logged as one line (`tiny-dit-app WARNING user error in generate: ...`);
only unexpected errors (bugs) are logged with their traceback.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import math
import re
import traceback

import gradio as gr
import numpy as np

from tiny_dit.guiders import GUIDERS
from tiny_dit.pipeline_checks import MAX_VIDEOS

log = logging.getLogger("tiny-dit-app")

EXAMPLE_PROMPT = "a red circle moving left on a black background"


def user_error(message: str, title: str = "Error") -> gr.Error:
    """A gr.Error for a mistake of the user: shown on the page, one log line, no traceback."""
    return gr.Error(message, title=title, print_exception=False)


def describe(value) -> str:
    """What was received, for an error message: "the text 'five'", "nothing (None)", "a list"..."""
    if value is None:
        return "nothing (None)"
    if isinstance(value, (bool, np.bool_)):
        return f"the boolean {bool(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"the text {shown!r}" + (f" ({len(value):,} characters)" if len(value) > 40 else "")
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    name = {dict: "an object (dict)", list: "a list", tuple: "a list"}.get(type(value), f"a {type(value).__name__}")
    return f"{name} {_clip(repr(value), 40)}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def check_number(value, what: str, lo: float, hi: float, integer: bool = False):
    """`value` if it is a finite number in [lo, hi] (a whole number if `integer`; 3.0 counts as
    whole), as int or float; else a gr.Error naming `what`, the range and what was received.
    Text, booleans and None are refused, never converted."""
    kind = "a whole number" if integer else "a number"
    allowed = f"{what} must be {kind} from {_fmt(lo)} to {_fmt(hi)}"
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not is_number:
        hint = " (send a JSON number, not text)" if isinstance(value, str) else ""
        raise user_error(f"{allowed}; got {describe(value)}{hint}.")
    number = float(value)
    if not math.isfinite(number):
        raise user_error(f"{allowed}; got {describe(value)}.")
    if integer and not number.is_integer():
        raise user_error(f"{allowed}; got {describe(value)} (it is not rounded for you).")
    if not lo <= number <= hi:
        raise user_error(f"{allowed}; got {describe(value)}.")
    return int(number) if integer else number


def check_text(value, what: str, max_chars: int) -> str:
    """`value` as one line of text (control characters and runs of spaces become one space),
    if it is a non-empty string of at most `max_chars` characters; else a gr.Error."""
    if value is None:
        raise user_error(f"{what} is missing: type one, e.g. \"{EXAMPLE_PROMPT}\".")
    if not isinstance(value, str):
        raise user_error(f"{what} must be text (a string); got {describe(value)}.")
    if len(value) > max_chars:
        raise user_error(f"{what} is {len(value):,} characters long; at most {max_chars:,} are accepted "
                         f"(CLIP reads only its first few dozen tokens anyway).")
    text = re.sub(r"\s+", " ", re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", value)).strip()
    if not text:
        raise user_error(f"{what} is empty. Describe a clip, e.g. \"{EXAMPLE_PROMPT}\".")
    return text


def check_choice(value, what: str, choices: dict) -> object:
    """choices[value] for one of the allowed values (the keys); else a gr.Error listing them."""
    try:
        if value in choices and not isinstance(value, (bool, np.bool_)):
            return choices[value]
    except TypeError:  # unhashable (a list, a dict)
        pass
    shown = ", ".join(repr(k) for k in list(choices)[:12])
    raise user_error(f"{what} must be one of {shown}; got {describe(value)}.")


def check_list(value, what: str, max_items: int) -> list:
    """`value` as a list of 1..max_items items; else a gr.Error."""
    if not isinstance(value, (list, tuple)):
        raise user_error(f"{what} must be a list of 1 to {max_items} values; got {describe(value)}.")
    if not value:
        raise user_error(f"{what}: choose at least one.")
    if len(value) > max_items:
        raise user_error(f"{what}: choose at most {max_items}; got {len(value)}.")
    return list(value)


def md_escape(text: str) -> str:
    """`text` (an error message, a path) shown literally in Markdown: `<out>/pipeline/` is not
    read as an HTML tag, `*` and `_` do not start emphasis."""
    text = html.escape(str(text), quote=False)
    return re.sub(r"([\\`*_\[\]#|])", r"\\\1", text)


def short(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def user_errors(fn):
    """Wrap an event function: gr.Error for every failure (never a traceback in the page).
    User errors (gr.Error, and the pipeline's ValueError input checks) are logged as one line;
    unexpected errors with their traceback. Generator functions stay generators."""
    name = getattr(fn, "__name__", "event")

    def translate(error: Exception) -> gr.Error:
        if isinstance(error, gr.Error):
            log.warning("user error in %s: %s", name, str(error.message).replace("\n", " "))
            error.print_exception = False
            return error
        if isinstance(error, ValueError):  # the pipeline's own input checks
            log.warning("user error in %s: %s", name, str(error).replace("\n", " "))
            return user_error(str(error))
        log.error("unexpected error in %s:\n%s", name, traceback.format_exc())
        return user_error(f"Something went wrong inside the app ({short(error, 200)}). The server is still "
                          "running; try again, perhaps with fewer clips or iterations.")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as error:
                raise translate(error) from None
        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise translate(error) from None
    return wrapper


# ----------------------------------------------------------------------------
# The app's fields, checked as app.py's events receive them
# ----------------------------------------------------------------------------

# Limits of the app's controls: the sliders show them, these checks hold them for API callers too.
GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_STEP = 0.0, 15.0, 0.5
STEPS_MIN, STEPS_MAX = 1, 60
SAMPLES_MIN, SAMPLES_MAX, SAMPLES_DEFAULT = 1, MAX_VIDEOS, 4  # the pipeline's limit per call
SEED_MAX = 2**32 - 1
MAX_PROMPT_CHARS = 1000
MAX_GUIDANCE_COMPARE = 8
OWN_GUIDER = "own"  # the guidance method "the loaded pipeline's own guider" (one that is none of GUIDERS)
OWN_SAMPLER = "own"  # the sampler "the model's own scheduler" (offered when a model's is none of SCHEDULERS)
MODELS = ("full", "fast")  # the Model choice: the full model, or its fast (distilled) student when one is loaded
FAST_STEPS_MAX = 4  # the fast model's steps in the comparison: the 1 to 4 a student is distilled for
COMPARE_MODES = ("methods", "scales")  # what the guidance comparison varies


def check_prompt(prompt) -> str:
    return check_text(prompt, "The prompt", MAX_PROMPT_CHARS)


def check_guidance(guidance, what: str = "Class guidance (guidance scale)") -> float:
    return check_number(guidance, what, GUIDANCE_MIN, GUIDANCE_MAX)


def check_steps(steps) -> int:
    return check_number(steps, "Iterations (sampling steps)", STEPS_MIN, STEPS_MAX, integer=True)


def check_seed(seed) -> int:
    return check_number(seed, "Seed", 0, SEED_MAX, integer=True)


def check_guidance_method(guider, what: str = "Guidance method") -> str | None:
    """A name of tiny_dit.guiders.GUIDERS, or None for the loaded pipeline's own guider (OWN_GUIDER, or
    nothing sent: API callers that predate the choice)."""
    if guider is None:
        return None
    return check_choice(guider, what, {**{name: name for name in GUIDERS}, OWN_GUIDER: None})


def check_model(model, loaded) -> str:
    """"full" or "fast", one of MODELS that is `loaded` (None: "full", for API callers that predate the choice);
    "fast" on a server without a fast model is refused, saying so."""
    if model is None:
        return "full"
    model = check_choice(model, "Model", {name: name for name in MODELS})
    if model not in loaded:
        raise user_error(f"Model {model!r} is not available: no fast (distilled) model is loaded on this server. "
                         "Choose 'full'.")
    return model


def fast_steps_max(default_steps: int) -> int:
    """The most steps the comparison offers a fast model whose default is `default_steps`: FAST_STEPS_MAX, or
    its default if that is more."""
    return max(FAST_STEPS_MAX, default_steps)


def check_fast_steps(steps, default_steps: int) -> int:
    return check_number(steps, "Fast model steps", 1, fast_steps_max(default_steps), integer=True)


def check_scales(scales) -> list[float]:
    """The guidance scales to compare: a list of 1 to MAX_GUIDANCE_COMPARE, sorted, without repeats."""
    scales = check_list(scales, "Class guidance scales to compare", MAX_GUIDANCE_COMPARE)
    return sorted({check_guidance(s, "Each class guidance scale") for s in scales})


def check_record(record):
    """A recorded run (tiny_dit.inside.recorder.RunRecord), else the error that asks for one."""
    from tiny_dit.inside.recorder import RunRecord

    if not isinstance(record, RunRecord):
        raise user_error("Generate a clip first: these views show the run you just made.")
    return record


def _index_choices(count: int, mean: bool = True) -> dict:
    """The accepted values of a head or block dropdown: "mean" (None), and each index as int or text."""
    return {**({"mean": None} if mean else {}), **{str(i): i for i in range(count)}, **{i: i for i in range(count)}}


def check_head(head, geometry):
    return check_choice(head, "Head", _index_choices(geometry.num_heads))


def check_iteration(step, num_passes: int, what: str = "Iteration (denoising step)", lo: int = 1) -> int:
    return check_number(step, what, lo, num_passes, integer=True)


def check_attention_view(record, layer, head, step) -> tuple[int, int | None, int]:
    """(block, head or None for the mean, iteration from 1) of the attention view."""
    layer = check_number(layer, "Layer (block)", 0, record.geometry.depth - 1, integer=True)
    return layer, check_head(head, record.geometry), check_iteration(step, record.num_passes)


def check_query(query, grid: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """The query patch (time slot, row, column) inside the token grid; None: the view picks one."""
    if query is None:
        return None
    tg, hg, wg = grid
    try:
        t, h, w = (int(v) for v in query)
    except (TypeError, ValueError):
        raise user_error(f"The query patch must be (time slot, row, column); got {query!r:.60}.") from None
    if not (0 <= t < tg and 0 <= h < hg and 0 <= w < wg):
        raise user_error(f"The query patch {query!r} is outside the token grid {tg} x {hg} x {wg}.")
    return (t, h, w)


def check_click(evt, layout) -> tuple[int, int, int]:
    """The patch a click (gr.SelectData) on a picture of the time slots
    (tiny_dit.inside.views.attention.SlotLayout) hit."""
    index = getattr(evt, "index", None)
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise user_error("Click on a patch inside one of the frames.")
    hit = layout.hit(*index)
    if hit is None:
        raise user_error("That click was between the frames: click on a patch inside a frame.")
    return hit


def check_word_view(record, word, block, head, step, num_words: int, num_passes: int):
    """(word index, block or None, head or None, iteration from 1) of the word-attention view."""
    word = check_number(word, "Word (its index in the prompt, from 0)", 0, max(num_words - 1, 0), integer=True)
    block = check_choice(block, "Layer (block, or 'mean')", _index_choices(record.geometry.depth))
    return word, block, check_head(head, record.geometry), check_iteration(step, num_passes)


# The largest frame side the app offers, as a multiple of the trained side: with centred positions (TinyDiT's
# centre_space) shapes hold at 1.5x (128 -> 192 px) and are lost at 2x (the size table of docs/sora-tasks.md).
SIDE_MAX_SCALE = 1.5


def side_max(trained: int, step: int) -> int:
    """The largest frame side in pixels for a model trained at `trained` px: a multiple of `step` (one token)."""
    return int(trained * SIDE_MAX_SCALE) // step * step


def check_frame_size(height, width, geometry, frames_max: int, num_frames, keep) -> tuple[int, int, int, int]:
    """(number of frames, frames kept per clip, height, width) of a Sora task: sides from one token's
    pixels to `side_max`, in multiples of one token's pixels."""
    side = geometry.patch_pixels  # autoencoder x patch size
    num_frames = check_number(num_frames, "Number of frames", 1, frames_max, integer=True)
    keep = check_number(keep, "Frames taken from each clip", 1, frames_max - 1, integer=True)
    height = check_number(height, "Height (px)", side, side_max(geometry.height, side), integer=True)
    width = check_number(width, "Width (px)", side, side_max(geometry.width, side), integer=True)
    for value, what in ((height, "Height (px)"), (width, "Width (px)")):
        if value % side:
            raise user_error(f"{what} must be a multiple of {side} (autoencoder x patch size); got {value}.")
    return num_frames, keep, height, width
