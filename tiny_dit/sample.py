r"""Generate clips from a prompt with a trained TinyDiT pipeline and write them as mp4.

    python -m tiny_dit.sample --prompt "a red circle moving left on a black background"
    python -m tiny_dit.sample --model runs/dit-small/pipeline --prompt "a blue star growing" \
        --num-videos 9 --steps 30 --guidance 4 --seed 1 --out samples/blue-star
    python -m tiny_dit.sample --prompt "..." --scheduler dpm++ --steps 8        # another solver, fewer steps

--scheduler picks the ODE solver (tiny_dit.schedulers: euler, heun, dpm++, unipc; default: the one
saved with the model) and --shift its noise shift (default: the model's, which is the shift it trained with).

Any length and size, and known frames (tiny_dit.conditions):

    python -m tiny_dit.sample --prompt "a red star on a black background" --num-frames 1     # images
    python -m tiny_dit.sample --prompt "..." --num-frames 32 --width 192                     # 32 x 128 x 192
    python -m tiny_dit.sample --prompt "a red star moving up on a black background" --image star.png
    python -m tiny_dit.sample --prompt "..." --video clip.mp4 --num-frames 32                 # extend forwards
    python -m tiny_dit.sample --prompt "..." --video clip.mp4 --frame-index -16 --num-frames 32  # backwards
    python -m tiny_dit.sample --prompt "..." --video a.mp4 --frame-index 0 --video b.mp4 --frame-index -4

--image (a picture file) and --video (an mp4, or anything ffmpeg reads) may be repeated; the n-th
--frame-index places the n-th of them, in command-line order (default: all at frame 0; negative
counts from the end). Without --width and --height the clip takes the size of their frames.

Edit a clip by prompt, and loops (tiny_dit.edit_and_loop):

    python -m tiny_dit.sample --prompt "a blue circle moving right on a black background" \
        --video-to-edit red-circle.mp4 --strength 0.7                                       # edit (SDEdit)
    python -m tiny_dit.sample --prompt "a red circle moving right on a black background" --loop  # loops

--video-to-edit noises the clip part of the way (--strength, 0 to 1: how far into the noise; 1 keeps
nothing of it) and denoises it with the prompt: the path and motion stay, what the prompt changes
changes. The result has the clip's length and size (--num-frames N edits its first N frames).
--loop makes clips whose last frame leads into the first: an outward clip and the way back (30 frames
for the bundled model, unless --num-frames: a way out of 16, as long as the clips it learned).

Writes DIR/sample-00.mp4, sample-01.mp4, ... (one per clip) and DIR/grid.mp4
(all clips tiled in a near-square grid), H.264 at 8 frames per second; with
--num-frames 1, PNG images instead (sample-00.png, ..., grid.png).
--model is a folder written by TinyDiTPipeline.save_pretrained (python -m
tiny_dit.training.train leaves one in <out>/pipeline/) or a Hugging Face Hub repo id.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

DEFAULT_MODEL = "assets/tiny-dit-shapes"


def build_parser() -> argparse.ArgumentParser:
    from tiny_dit.edit_and_loop import DEFAULT_STRENGTH
    from tiny_dit.guiders import GUIDERS
    from tiny_dit.pipeline import COMPUTE_DTYPES, DEFAULT_NUM_INFERENCE_STEPS
    from tiny_dit.schedulers import SCHEDULERS

    parser = argparse.ArgumentParser(prog="python -m tiny_dit.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"pipeline folder or Hub repo id (default {DEFAULT_MODEL})")
    parser.add_argument("--prompt", required=True, action="append",
                        help="what the clips should show; repeat it for several prompts")
    parser.add_argument("--negative-prompt", default=None,
                        help="what to steer away from (replaces the empty prompt in guidance)")
    parser.add_argument("--num-videos", type=int, default=4,
                        help="clips per prompt (default 4; at most 36 clips in all)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"sampler steps (default: the model's, {DEFAULT_NUM_INFERENCE_STEPS} for the bundled one, "
                             "4 for its fast student); Heun makes 2 transformer passes a step")
    parser.add_argument("--scheduler", choices=list(SCHEDULERS), default=None,
                        help="ODE solver (default: the model's saved scheduler, Euler for the bundled one)")
    parser.add_argument("--shift", type=float, default=None,
                        help="noise shift of the solver's levels, > 0 (default: the model's; 1 = as trained)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale, 1 = none (default: the model's saved guider's)")
    parser.add_argument("--guider", choices=list(GUIDERS), default=None,
                        help="guidance method (tiny_dit.guiders: " + "; ".join(
                            f"{name}: {label}" for name, (_, _, label) in GUIDERS.items())
                        + "; default: the model's saved guider)")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="frames per clip, 1 (an image) to 64 (default: the model's, 16 for the bundled one)")
    parser.add_argument("--height", type=int, default=None, help="frame height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="frame width in pixels (default: the model's)")
    parser.add_argument("--image", dest="conditions", action="append", type=lambda path: ("image", Path(path)),
                        metavar="PATH", help="an image to hold at its --frame-index (animate it); repeatable")
    parser.add_argument("--video", dest="conditions", action="append", type=lambda path: ("video", Path(path)),
                        metavar="PATH", help="a clip to hold from its --frame-index on (extend or connect); "
                                             "repeatable")
    parser.add_argument("--frame-index", type=int, action="append", default=None,
                        help="where the matching --image/--video goes, in their order (default 0; "
                             "negative: from the end)")
    parser.add_argument("--video-to-edit", type=Path, default=None, metavar="PATH",
                        help="a clip (mp4, or anything ffmpeg reads) to edit with the prompt (SDEdit): noised to "
                             "--strength and denoised; the result has its length and size")
    parser.add_argument("--strength", type=float, default=None,
                        help="with --video-to-edit: how far into the noise the clip goes, in (0, 1]; low keeps more "
                             f"of it, 1 keeps nothing (text-to-video) (default {DEFAULT_STRENGTH:g})")
    parser.add_argument("--loop", action="store_true",
                        help="make clips that loop: the last frame leads into the first (an outward clip of "
                             "--num-frames // 2 + 1 frames, then the way back; default length: twice the model's "
                             "less 2, 30 for the bundled one)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same clips")
    parser.add_argument("--out", type=Path, default=Path("samples"), help="output folder (default samples/)")
    parser.add_argument("--gif", type=Path, default=None,
                        help="also write the grid as an animated GIF here (for a README or slides)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=("auto", *COMPUTE_DTYPES), default="auto",
                        help="transformer and autoencoder precision; auto (default) times both and keeps the faster")
    return parser


def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    import torch

    from tiny_dit.data.shapes import FPS
    from tiny_dit.edit_and_loop import DEFAULT_STRENGTH
    from tiny_dit.guiders import guider_name, make_guider
    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.schedulers import choose_scheduler, describe_scheduler, transformer_passes
    from tiny_dit.video import make_grid, to_uint8, write_gif, write_mp4

    conditions = load_conditions(args.conditions or [], args.frame_index)
    video_to_edit = load_video_to_edit(args.video_to_edit, args.num_frames, args.strength)
    if conditions and args.height is None and args.width is None:  # the size of the given frames
        first = conditions[0].image if conditions[0].image is not None else conditions[0].video[0]
        args.height, args.width = first.shape[:2]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == DEFAULT_MODEL and not Path(DEFAULT_MODEL).is_dir():
        raise SystemExit(f"error: no model at {DEFAULT_MODEL}/ yet. Train one (python -m tiny_dit.training.train "
                         "--cache DIR --out runs/NAME, which writes runs/NAME/pipeline/) and pass it with --model.")
    start = time.time()
    try:
        pipe = TinyDiTPipeline.from_pretrained(args.model)
    except OSError as error:
        raise SystemExit(f"error: {error}") from error
    try:
        pipe.scheduler = choose_scheduler(pipe.scheduler, args.scheduler, args.shift)
        if args.guider is not None:
            pipe.guider = make_guider(args.guider, pipe.default_guider.guidance_scale)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_dtype(args.dtype)
    args.steps = pipe.default_num_inference_steps if args.steps is None else args.steps
    loaded = time.time()
    try:
        frames = pipe(args.prompt, negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, num_videos_per_prompt=args.num_videos,
                      num_frames=args.num_frames, height=args.height, width=args.width, conditions=conditions,
                      video=video_to_edit, strength=args.strength, loop=args.loop,
                      generator=torch.Generator().manual_seed(args.seed)).frames  # (N, T, H, W, 3) in [0, 1]
    except ValueError as error:  # name the option behind conditions[i], video and strength
        named = sorted({int(i) for i in re.findall(r"conditions\[(\d+)\]", str(error)) if int(i) < len(conditions)})
        where = ", ".join("conditions[{}] is --{} {}".format(i, *args.conditions[i]) for i in named)
        if re.search(r"(?<![.\w])video\b", str(error)) and video_to_edit is not None:
            where = ", ".join(filter(None, [where, f"video is --video-to-edit {args.video_to_edit}"]))
        raise SystemExit(f"error: {error}" + (f" ({where})" if where else "")) from error
    generated = time.time()

    clips = to_uint8(frames)  # (N, T, H, W, 3)
    args.out.mkdir(parents=True, exist_ok=True)
    grid = make_grid(clips, ncols=args.num_videos if len(args.prompt) > 1 else None)  # a row per prompt
    if clips.shape[1] == 1:  # images
        from PIL import Image

        paths = []
        for name, image in [*((f"sample-{i:02d}.png", c[0]) for i, c in enumerate(clips)), ("grid.png", grid[0])]:
            Image.fromarray(image).save(args.out / name)
            paths.append(args.out / name)
    else:
        paths = [write_mp4(args.out / f"sample-{i:02d}.mp4", clip, fps=FPS) for i, clip in enumerate(clips)]
        paths.append(write_mp4(args.out / "grid.mp4", grid, fps=FPS))
    if args.gif:
        paths.append(write_gif(args.gif, grid, fps=FPS))
        print(f"wrote {args.gif}")
    n, t, h, w = clips.shape[:4]
    if t == 1:
        print(f"wrote {n} images ({w}x{h}) to {args.out}/: sample-00.png ... sample-{n - 1:02d}.png and grid.png")
    else:
        print(f"wrote {n} clips ({t} frames of {w}x{h} at {FPS} fps) to {args.out}/: "
              f"sample-00.mp4 ... sample-{n - 1:02d}.mp4 and grid.mp4")
    print(f"sampler: {describe_scheduler(pipe.scheduler)}, {args.steps} steps = "
          f"{transformer_passes(pipe.scheduler, args.steps)} transformer passes; guidance: "
          f"{guider_name(pipe.default_guider) or type(pipe.default_guider).__name__} at {pipe.guidance_scale:g}")
    if video_to_edit is not None:  # where the edit started: the level nearest --strength, on the sampler's grid
        level, strength = float(pipe.scheduler.sigmas[pipe.scheduler.begin_index]), args.strength or DEFAULT_STRENGTH
        print(f"edit: {args.video_to_edit} noised to level {level:.2f} (strength {strength:g}), "
              f"then {pipe.num_timesteps} of the {transformer_passes(pipe.scheduler, args.steps)} passes")
    print(f"time: {time.time() - start:.1f} s (loading {loaded - start:.1f} s, "
          f"generating {generated - loaded:.1f} s, writing {time.time() - generated:.1f} s)")
    return paths


def load_video_to_edit(path: Path | None, num_frames: int | None, strength: float | None):
    """The frames of --video-to-edit, uint8 (T, H, W, 3), its first --num-frames of them if given; None without
    it (then --strength has nothing to go with)."""
    from tiny_dit.video import read_mp4

    if path is None:
        if strength is not None:
            raise SystemExit("error: --strength goes with --video-to-edit (how far into the noise the clip goes)")
        return None
    if not path.is_file():
        raise SystemExit(f"error: --video-to-edit {path}: no such file")
    try:
        frames = read_mp4(path)[0]
    except (OSError, RuntimeError, ValueError) as error:
        raise SystemExit(f"error: --video-to-edit {path} could not be read: {error}") from error
    return frames[:num_frames] if num_frames is not None and num_frames >= 1 else frames


def load_conditions(inputs: list[tuple[str, Path]], frame_indices: list[int] | None) -> list:
    """TinyDiTConditions from the --image/--video files, in command-line order, each placed at the
    --frame-index of the same position (all at 0 when none is given)."""
    import numpy as np

    from tiny_dit.pipeline import TinyDiTCondition
    from tiny_dit.video import read_mp4

    if frame_indices is None:
        frame_indices = [0] * len(inputs)
    if len(frame_indices) != len(inputs):
        raise SystemExit(f"error: {len(frame_indices)} --frame-index for {len(inputs)} --image/--video: give one "
                         "per --image/--video, in the same order, or none (all at frame 0)")
    conditions = []
    for (kind, path), index in zip(inputs, frame_indices):
        if not path.is_file():
            raise SystemExit(f"error: --{kind} {path}: no such file")
        try:
            if kind == "image":
                from PIL import Image

                conditions.append(TinyDiTCondition(image=np.asarray(Image.open(path).convert("RGB")),
                                                   frame_index=index))
            else:
                conditions.append(TinyDiTCondition(video=read_mp4(path)[0], frame_index=index))
        except (OSError, RuntimeError) as error:
            raise SystemExit(f"error: --{kind} {path} could not be read: {error}") from error
    return conditions


if __name__ == "__main__":
    main()
