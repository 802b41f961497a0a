"""Generate clips from a prompt with a trained TinyDiT pipeline and write them as mp4.

    python -m tiny_dit.sample --prompt "a red circle moving left on a black background"
    python -m tiny_dit.sample --model runs/dit-small/pipeline --prompt "a blue star growing" \\
        --num-videos 9 --steps 30 --guidance 4 --seed 1 --out samples/blue-star

Writes DIR/sample-00.mp4, sample-01.mp4, ... (one per clip) and DIR/grid.mp4
(all clips tiled in a near-square grid), H.264 at 8 frames per second.
--model is a folder written by TinyDiTPipeline.save_pretrained (python -m
tiny_dit.train leaves one in <out>/pipeline/) or a Hugging Face Hub repo id.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_MODEL = "assets/tiny-dit-shapes"


def build_parser() -> argparse.ArgumentParser:
    from tiny_dit.pipeline import COMPUTE_DTYPES, DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS

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
    parser.add_argument("--steps", type=int, default=DEFAULT_NUM_INFERENCE_STEPS,
                        help=f"Euler steps (default {DEFAULT_NUM_INFERENCE_STEPS})")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE_SCALE,
                        help=f"classifier-free guidance scale, 1 = none (default {DEFAULT_GUIDANCE_SCALE:g})")
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
    import numpy as np
    import torch

    from tiny_dit.data.shapes import FPS
    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.video import make_grid, write_gif, write_mp4

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == DEFAULT_MODEL and not Path(DEFAULT_MODEL).is_dir():
        raise SystemExit(f"error: no model at {DEFAULT_MODEL}/ yet. Train one (python -m tiny_dit.train --cache "
                         "DIR --out runs/NAME, which writes runs/NAME/pipeline/) and pass it with --model.")
    start = time.time()
    try:
        pipe = TinyDiTPipeline.from_pretrained(args.model)
    except OSError as error:
        raise SystemExit(f"error: {error}") from error
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_dtype(args.dtype)
    loaded = time.time()
    try:
        frames = pipe(args.prompt, negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, num_videos_per_prompt=args.num_videos,
                      generator=torch.Generator().manual_seed(args.seed)).frames  # (N, T, H, W, 3) in [0, 1]
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    generated = time.time()

    clips = (frames * 255).round().astype(np.uint8)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [write_mp4(args.out / f"sample-{i:02d}.mp4", clip, fps=FPS) for i, clip in enumerate(clips)]
    grid = make_grid(clips, ncols=args.num_videos if len(args.prompt) > 1 else None)  # a row per prompt
    paths.append(write_mp4(args.out / "grid.mp4", grid, fps=FPS))
    if args.gif:
        paths.append(write_gif(args.gif, grid, fps=FPS))
        print(f"wrote {args.gif}")
    n, t, h, w = clips.shape[:4]
    print(f"wrote {n} clips ({t} frames of {w}x{h} at {FPS} fps) to {args.out}/: "
          f"sample-00.mp4 ... sample-{n - 1:02d}.mp4 and grid.mp4")
    print(f"time: {time.time() - start:.1f} s (loading {loaded - start:.1f} s, "
          f"generating {generated - loaded:.1f} s, writing {time.time() - generated:.1f} s)")
    return paths


if __name__ == "__main__":
    main()
