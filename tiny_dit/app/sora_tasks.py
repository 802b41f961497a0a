"""Sora's other tasks, for the app's "Sora tasks" tab: an image, animate an image, extend a clip
forwards or backwards, connect two clips, edit a clip by prompt, a loop, at any length and size.

    from tiny_dit.app.sora_tasks import build_conditions, mark_known_frames

    conditions, known = build_conditions("connect", num_frames=16, height=128, width=128,
                                         clip=a, clip_b=b, keep=4)
    frames = pipe(prompt, num_frames=16, conditions=conditions, output_type="np").frames[0]
    marked = mark_known_frames(to_uint8(frames), known)   # a border on the given frames

Everything the pipeline needs comes from its `conditions=` API (tiny_dit.conditions): this module
turns uploads (an image, one or two clips; files, arrays or PIL images) into TinyDiTConditions at
the right places, resized to the output's size, and checks them first with ValueErrors that name
the field of the page ("Clip A", "Frames taken from each clip", ...), so that the app's error
wrapper shows them as they are. It also renders the example inputs (shapes-world frames and clips,
`write_examples`; shipped in assets/examples/) and marks the known frames of a result.

The last two tasks take no known frames (tiny_dit.edit_and_loop): "edit" gives the pipeline Clip A as
`video=` with a `strength` (edit_video reads and fits it; edit_result_views shows it beside the edit),
and "loop" asks for `loop=True` (loop_result_views labels the way out and back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tiny_dit.conditions import TinyDiTCondition, place_conditions
from tiny_dit.edit_and_loop import DEFAULT_STRENGTH
from tiny_dit.video import resize_frames, to_uint8


@dataclass(frozen=True)
class SoraTask:
    label: str  # for the page
    needs: tuple[str, ...]  # the inputs it takes: "image", "clip", "clip_b"
    example_prompt: str
    how: str  # one line: where the known frames go


TASKS: dict[str, SoraTask] = {
    "image": SoraTask("An image (one frame)", (), "a red star on a black background",
                      "One frame: a still. Prompts for a still have no motion words."),
    "animate": SoraTask("Animate an image", ("image",), "a red circle moving right on a black background",
                        "The image is frame 1; the model generates the frames after it."),
    "extend_forward": SoraTask("Extend a clip forwards", ("clip",),
                               "a blue square moving right on a black background",
                               "The clip's last frames start the result; the model continues it."),
    "extend_backward": SoraTask("Extend a clip backwards", ("clip",),
                                "a blue square moving right on a black background",
                                "The clip's first frames end the result; the model makes what came before."),
    "connect": SoraTask("Connect two clips", ("clip", "clip_b"), "a yellow circle moving down on a gray background",
                        "Clip A's last frames start the result, clip B's first frames end it; the model fills "
                        "the frames between."),
    "edit": SoraTask("Edit a clip by prompt", ("clip",), "a blue circle moving right on a black background",
                     "Clip A is noised to the Edit strength s on the forward process, x_s = (1 - s) x0 + s noise, "
                     "and denoised with the prompt: what survives that much noise (where the object is, how it "
                     "moves) is kept; what the prompt says anew (a colour, a shape, a background) is redrawn."),
    "loop": SoraTask("A loop", (), "a yellow star growing on a white background",
                     "The model makes the way out (half the frames and one); the way back is the same frames "
                     "in reverse, so the last frame leads into the first. Motions here are one-way, so a loop "
                     "turns around. 30 frames: a way out as long as a trained clip."),
}
FIELDS = {"image": "The image", "clip": "Clip A", "clip_b": "Clip B"}
KNOWN_COLOR = (0, 220, 255)  # the border of a given (known) frame: drawing.HIGHLIGHT
STRENGTH_MIN, STRENGTH_STEP = 0.05, 0.05  # the Edit strength slider (to 1: text-to-video)
EDIT_AND_LOOP_TEXT = (
    "**Edit a clip** (SDEdit) is the *Forward process* view put to work: the clip is noised to the level s you "
    "set, x_s = (1 - s) x0 + s noise, and the sampler starts there instead of at s = 1, denoising with your "
    "prompt. At s = 0.3 most of the clip survives and little changes; at 0.7 its colour and outline are "
    "mostly noise but where the object is and how it moves still show, so a new colour or shape is drawn on "
    "the old path; at 1 nothing survives (text-to-video). **A loop** ends where it starts: every motion "
    "here is one-way, so the model makes the way out and the way back is the same frames in reverse.")
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"


# ----------------------------------------------------------------------------
# Reading uploads
# ----------------------------------------------------------------------------


def _file_path(value) -> str | None:
    """The path of an upload as the app receives it raw (Gradio FileData / VideoData dicts) or a path."""
    if isinstance(value, dict):
        if isinstance(value.get("video"), dict):  # gr.Video's {"video": FileData, "subtitles": ...}
            value = value["video"]
        value = value.get("path")
    if isinstance(value, Path):
        value = str(value)
    return value if isinstance(value, str) else None


def load_image(value, what: str = "The image") -> np.ndarray:
    """An image as uint8 (H, W, 3): a file (path or Gradio FileData), a PIL image, or an array
    (H, W), (H, W, 3) or (H, W, 4), uint8 or float in [0, 1]. ValueError naming `what` otherwise."""
    import PIL.Image

    if value is None:
        raise ValueError(f"{what} is missing: upload one, or pick an example.")
    path = _file_path(value)
    if path is not None:
        try:
            with PIL.Image.open(path) as image:
                value = image.convert("RGB")
        except (OSError, ValueError) as error:
            raise ValueError(f"{what} could not be read as an image ({type(error).__name__}): upload a PNG or "
                             "JPEG file.") from None
    elif isinstance(value, (dict, str)):
        raise ValueError(f"{what} must be an uploaded image file; got {type(value).__name__}.")
    if isinstance(value, PIL.Image.Image):
        value = np.asarray(value.convert("RGB"))
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    return _frames_uint8(value[None] if isinstance(value, np.ndarray) else value, what, still=True)[0]


def load_clip(value, what: str = "Clip A") -> np.ndarray:
    """A clip as uint8 (T, H, W, 3): a video file (path or Gradio VideoData/FileData), a list of
    frames, or an array (T, H, W, 3), uint8 or float in [0, 1]. ValueError naming `what` otherwise."""
    from tiny_dit.video import read_mp4

    if value is None:
        raise ValueError(f"{what} is missing: upload a short video, or pick an example.")
    path = _file_path(value)
    if path is not None:
        try:
            frames, _ = read_mp4(path)
        except (OSError, RuntimeError, ValueError) as error:
            raise ValueError(f"{what} could not be read as a video ({type(error).__name__}): upload an mp4 "
                             "(or another format ffmpeg reads).") from None
        return frames
    if isinstance(value, (dict, str)):
        raise ValueError(f"{what} must be an uploaded video file; got {type(value).__name__}.")
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{what} has no frames.")
        value = np.stack([np.asarray(f) for f in value])
    return _frames_uint8(value, what, still=False)


def _frames_uint8(value, what: str, still: bool) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{what} must be an image or video file, or an array; got {type(value).__name__}.")
    if value.ndim == 3 and still:  # (1, H, W): grey
        value = value[..., None]
    if value.ndim != 4 or value.shape[-1] not in (1, 3, 4) or 0 in value.shape:
        layout = "(H, W, 3)" if still else "(T, H, W, 3)"
        shape = tuple(value.shape[1:] if still else value.shape)
        raise ValueError(f"{what} must have the shape {layout}; got {shape}.")
    if value.shape[-1] == 1:
        value = np.repeat(value, 3, axis=-1)
    value = value[..., :3]
    if value.dtype == np.uint8:
        return np.ascontiguousarray(value)
    if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all() or value.min() < 0 \
            or value.max() > 1:
        raise ValueError(f"{what} must be uint8, or float in [0, 1].")
    return to_uint8(value)


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 frames (T, H, W, 3) cropped to the aspect ratio height:width (centred) and resized
    to height x width (antialiased): the output's size, which known frames must have."""
    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    if h * width > w * height:  # too tall: crop rows
        keep = max(1, round(w * height / width))
        top = (h - keep) // 2
        frames = frames[:, top:top + keep]
    elif h * width < w * height:  # too wide: crop columns
        keep = max(1, round(h * width / height))
        left = (w - keep) // 2
        frames = frames[:, :, left:left + keep]
    return resize_frames(frames, height, width)


# ----------------------------------------------------------------------------
# Building the conditions
# ----------------------------------------------------------------------------


def build_conditions(task: str, num_frames: int, height: int, width: int, *, image=None, clip=None,
                     clip_b=None, keep: int = 4) -> tuple[list[TinyDiTCondition], np.ndarray]:
    """The pipeline's `conditions` for a task of TASKS and the output size, and which output frames
    they hold: bool (num_frames,). Uploads are read (load_image, load_clip) and fitted to
    height x width; from a clip, `keep` frames are used (its last ones to extend it forwards or as
    clip A of a connection, its first ones to extend it backwards or as clip B). The result is checked
    with tiny_dit.conditions.place_conditions (what pipe.check_inputs runs); every ValueError names
    the field of the page."""
    if task not in TASKS:
        raise ValueError(f"The task must be one of {', '.join(repr(t) for t in TASKS)}; got {task!r}.")
    if task in ("edit", "loop"):  # no known frames: the clip to edit is edit_video's, the loop the pipeline's
        if task == "loop" and num_frames < 2:
            raise ValueError("Number of frames: a loop needs at least 2 frames; got 1.")
        return [], np.zeros(num_frames, dtype=bool)
    if task == "image":
        if num_frames != 1:
            raise ValueError(f"An image is one frame: set the Number of frames to 1 (got {num_frames}), or "
                             "choose another task.")
        return [], np.zeros(1, dtype=bool)
    if task == "animate":
        if num_frames < 2:
            raise ValueError("Number of frames: animating an image needs at least 2 frames (the image and one "
                             "more); got 1.")
        frames = fit_frames(load_image(image, FIELDS["image"])[None], height, width)
        placed = [(FIELDS["image"], TinyDiTCondition(image=frames[0], frame_index=0))]
    else:
        clips = ["clip"] + (["clip_b"] if task == "connect" else [])
        room = num_frames - 1 if len(clips) == 1 else num_frames - 2  # leave at least one frame to generate
        if keep < 1 or keep * len(clips) > room:
            limit = max(room // len(clips), 0)
            each = " from each clip" if len(clips) > 1 else ""
            raise ValueError(f"Frames taken from each clip: {keep}{each} leave{'s' if len(clips) == 1 else ''} no "
                             f"frame of the {num_frames} to generate; take at most {limit} (or raise the Number of "
                             "frames).")
        values = {"clip": clip, "clip_b": clip_b}
        placed = []
        for name in clips:
            field = FIELDS[name]
            frames = load_clip(values[name], field)
            n = min(keep, len(frames))
            at_start = (task == "extend_forward") or (task == "connect" and name == "clip")
            frames = frames[-n:] if at_start else frames[:n]  # the frames next to the generated ones
            frames = fit_frames(frames, height, width)
            placed.append((field, TinyDiTCondition(video=frames, frame_index=0 if at_start else -len(frames))))
    conditions = [c for _, c in placed]
    try:
        positions = place_conditions(conditions, num_frames, height, width)
    except ValueError as error:
        message = str(error)
        for i, (field, _) in enumerate(placed):
            message = message.replace(f"conditions[{i}]", field)
        raise ValueError(message) from None
    known = np.zeros(num_frames, dtype=bool)
    for start, frames in positions:
        known[start:start + len(frames)] = True
    return conditions, known


def edit_video(clip, num_frames: int, height: int, width: int) -> np.ndarray:
    """The clip to edit: Clip A's first num_frames frames (all of them if it has fewer), fitted to
    height x width: uint8 (T, height, width, 3). ValueErrors name the field."""
    frames = load_clip(clip, FIELDS["clip"])
    return fit_frames(frames[:num_frames], height, width)


def edit_result_views(clip: np.ndarray, frames: np.ndarray):
    """(the clip and its edit side by side, a filmstrip of both rows): uint8 clips (T, H, W, 3) of one size."""
    from tiny_dit.inside.views.drawing import filmstrip, spread

    gap = np.full((*frames.shape[:2], max(2, frames.shape[2] // 32), 3), 255, np.uint8)  # a white bar between
    side_by_side = np.concatenate([clip, gap, frames], axis=2)
    strip = filmstrip(np.stack([clip, frames]), spread(min(16, len(frames)), len(frames)), cell=80,
                      row_labels=["the clip", "edited"])
    return side_by_side, strip


def loop_result_views(frames: np.ndarray):
    """(the loop as it is, a filmstrip of its frames labelled "out" and "back"): uint8 frames (T, H, W, 3)
    made by loop=True (edit_and_loop.loop_frame_order)."""
    from PIL import Image, ImageDraw

    from tiny_dit.edit_and_loop import outward_num_frames
    from tiny_dit.inside.views.drawing import BACKGROUND, INK, MUTED, filmstrip, font, spread, stack

    cell, idx = 80, spread(min(16, len(frames)), len(frames))
    strip = filmstrip(frames[None], idx, cell=cell, show_frame_numbers=False)
    header = Image.new("RGB", (strip.width, 30), BACKGROUND)
    draw = ImageDraw.Draw(header)
    outward = outward_num_frames(len(frames))
    for j, f in enumerate(idx):
        x = j * (cell + 2) + 2
        draw.text((x, 1), f"frame {f + 1}", fill=MUTED, font=font(11))
        draw.text((x, 15), "out" if f < outward else "back", fill=INK if f < outward else (0, 150, 190),
                  font=font(11))
    return frames, stack([header, strip], gap=0)


def describe_edit(num_frames: int, strength: float, level: float, passes: int, total_passes: int) -> str:
    """One line about an edit: how far into the noise the clip went, and how much of the sampler ran."""
    return (f"Edit a clip by prompt: the clip's {num_frames} frames were noised to s = {level:.2f} (the sampler's "
            f"noise level nearest the strength {strength:g}) on the forward process, x_s = (1 - s) x0 + s noise, "
            f"and denoised with the prompt in {passes} of the {total_passes} passes (left: the clip, right: the "
            "edit).")


def describe_loop(num_frames: int) -> str:
    """One line about a loop: where the way out ends and the way back starts."""
    from tiny_dit.edit_and_loop import outward_num_frames

    outward = outward_num_frames(num_frames)
    return (f"A loop: frames 1-{outward} were generated (the way out), frames {outward + 1}-{num_frames} are "
            "frames of the way out in reverse (the way back), so the last frame leads into the first as any two "
            "neighbouring frames do.")


def mark_known_frames(frames: np.ndarray, known: np.ndarray, color=KNOWN_COLOR, border: int | None = None
                      ) -> np.ndarray:
    """A copy of uint8 frames (T, H, W, 3) with a coloured border (inside the frame, so the size is
    kept) on the frames where `known` (T,) is true: the frames that were given, not generated."""
    frames = np.array(frames, dtype=np.uint8, copy=True)
    t, h, w, _ = frames.shape
    b = border if border is not None else max(2, round(min(h, w) / 32))  # 2 px at least: yuv420p halves colour
    for i in np.flatnonzero(np.asarray(known, dtype=bool)[:t]):
        frames[i, :b], frames[i, -b:], frames[i, :, :b], frames[i, :, -b:] = color, color, color, color
    return frames


def known_frames_strip(frames: np.ndarray, known: np.ndarray, max_frames: int = 16, cell: int = 80):
    """A filmstrip (PIL image) of the result, frames numbered and labelled "given" (bordered) or "new"."""
    from PIL import Image, ImageDraw

    from tiny_dit.inside.views.drawing import BACKGROUND, INK, MUTED, filmstrip, font, spread, stack

    idx = spread(min(max_frames, len(frames)), len(frames))
    marked = mark_known_frames(frames, known)[idx]
    strip = filmstrip(marked[None], None, cell=cell, show_frame_numbers=False)
    header = Image.new("RGB", (strip.width, 30), BACKGROUND)
    draw = ImageDraw.Draw(header)
    offset = strip.width - len(idx) * (cell + 2) + 2
    for j, f in enumerate(idx):
        x = offset + j * (cell + 2) + 2
        draw.text((x, 1), f"frame {f + 1}", fill=MUTED, font=font(11))
        given = bool(known[f])
        draw.text((x, 15), "given" if given else "new", fill=(0, 150, 190) if given else INK, font=font(11))
    return stack([header, strip], gap=0)


def describe_result(task: str, known: np.ndarray) -> str:
    """One line: which frames were given and which generated."""
    n = len(known)
    runs, start = [], None
    for i, k in enumerate(list(known) + [False]):
        if k and start is None:
            start = i
        elif not k and start is not None:
            runs.append(f"{start + 1}" if i - 1 == start else f"{start + 1}-{i}")
            start = None
    if not runs:
        return "One frame, an image, generated from the prompt." if n == 1 else \
            f"All {n} frames generated from the prompt."
    given = int(np.sum(known))
    frames = "frame" if given == 1 else "frames"
    return (f"{TASKS[task].label}: {frames} {', '.join(runs)} of {n} were given (bordered); the model generated "
            f"the other {n - given}, denoising them to fit the given ones (held on their noise path, RePaint-style).")


# ----------------------------------------------------------------------------
# Example inputs: rendered shapes-world frames and clips
# ----------------------------------------------------------------------------


def example_clip(color: str, shape: str, motion: str, background: str, frames: list[int] | range,
                 seed: int = 0, size: int = 128) -> np.ndarray:
    """Frames of a rendered shapes-world clip (uint8 (len(frames), size, size, 3)), from its 16."""
    from tiny_dit.data.shapes import random_clip_spec, render_clips

    spec = random_clip_spec(np.random.default_rng(seed), color, shape, motion, background, phrasing=0)
    return render_clips([spec], frame_indices=list(frames), size=size)[0].numpy()


EXAMPLE_FILES = {  # name -> (color, shape, motion, background, frames of the 16, seed)
    "red-circle.png": ("red", "circle", "right", "black", [0], 1),
    "blue-square-right-start.mp4": ("blue", "square", "right", "black", range(0, 8), 2),
    "yellow-circle-down-start.mp4": ("yellow", "circle", "down", "gray", range(0, 4), 3),
    "yellow-circle-down-end.mp4": ("yellow", "circle", "down", "gray", range(12, 16), 3),
    "red-circle-right.mp4": ("red", "circle", "right", "black", range(0, 16), 1),  # the still's clip, to edit
}


def write_examples(folder: str | Path = EXAMPLES_DIR, names=None) -> list[Path]:
    """Render the example inputs of the Sora tasks tab into `folder` (PNG frames, mp4 clips, 128 x 128,
    a few KB each): a still to animate, a clip to extend, the start and end of one clip to connect, a
    clip to edit. `names`: only these files of EXAMPLE_FILES (default: all)."""
    import PIL.Image

    from tiny_dit.data.shapes import FPS
    from tiny_dit.video import write_mp4

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (color, shape, motion, background, frames, seed) in EXAMPLE_FILES.items():
        if names is not None and name not in names:
            continue
        clip = example_clip(color, shape, motion, background, frames, seed)
        path = folder / name
        if name.endswith(".png"):
            PIL.Image.fromarray(clip[0]).save(path, optimize=True)
        else:
            write_mp4(path, clip, fps=FPS, crf=12)
        written.append(path)
    return written


def example_rows(folder: str | Path = EXAMPLES_DIR) -> list[list]:
    """Rows for the tab's gr.Examples: (task, prompt, image, clip A, clip B, number of frames, edit
    strength); the files that are missing are written first (write_examples; the others are left as they are)."""
    folder = Path(folder)
    missing = [name for name in EXAMPLE_FILES if not (folder / name).is_file()]
    if missing:
        write_examples(folder, missing)
    f = {name: str(folder / name) for name in EXAMPLE_FILES}
    strength = DEFAULT_STRENGTH
    return [
        ["image", TASKS["image"].example_prompt, None, None, None, 1, strength],
        ["animate", TASKS["animate"].example_prompt, f["red-circle.png"], None, None, 16, strength],
        ["extend_forward", TASKS["extend_forward"].example_prompt, None, f["blue-square-right-start.mp4"], None, 16,
         strength],
        ["extend_backward", TASKS["extend_backward"].example_prompt, None, f["blue-square-right-start.mp4"], None,
         16, strength],
        ["connect", TASKS["connect"].example_prompt, None, f["yellow-circle-down-start.mp4"],
         f["yellow-circle-down-end.mp4"], 16, strength],
        ["edit", TASKS["edit"].example_prompt, None, f["red-circle-right.mp4"], None, 16, strength],
        ["loop", TASKS["loop"].example_prompt, None, None, None, 30, strength],
    ]


if __name__ == "__main__":  # python -m tiny_dit.app.sora_tasks: (re)write assets/examples/
    import argparse

    argparse.ArgumentParser(prog="python -m tiny_dit.app.sora_tasks",
                            description="(Re)write the Sora tasks tab's example inputs in assets/examples/."
                            ).parse_args()
    for written_path in write_examples():
        print(written_path, written_path.stat().st_size, "bytes")
