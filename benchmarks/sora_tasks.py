"""Sora's other tasks, measured: animate an image, extend a clip, connect two clips; any length and size.

    python benchmarks/sora_tasks.py                                   # the bundled model, both modes
    python benchmarks/sora_tasks.py --mode tasks --num-inputs 8 --steps 20 --json sora_tasks.json
    python benchmarks/sora_tasks.py --mode sizes --sizes 1x128x128,16x128x192

Mode "tasks": for each task, num_inputs rendered shapes-world clips (16 frames, balanced over
colour, shape, motion and background, seeded); some of their frames are given to the pipeline as
`conditions` and the rest is generated from the clip's own caption:

    image-to-video    frame 0 known                   frames 1-15 generated
    extend-forwards   frames 0-7 known                frames 8-15 generated
    extend-backwards  frames 8-15 known (index -8)    frames 0-7 generated
    connect           frames 0-3 and 12-15 known      frames 4-11 generated

Two figures per task:
  * agreement: the frame judge (tiny_dit.training.evaluate.judge_frames) on the generated frames alone,
    against the input clip's attributes: the object keeps its colour and shape, the background
    stays, and it moves on in the same direction (or keeps growing/shrinking);
  * seam ratio: the mean absolute pixel change between the two frames at each boundary of known and
    generated frames, over the mean change between neighbouring frames elsewhere in the clip. 1 is
    a seamless join; much above 1 is a visible jump at the boundary.
The "rendered" row scores the true clips (after the autoencoder's round trip) the same way: the
best a model can do, and how far to trust the judge on 8- and 4-frame pieces.

Mode "sizes": one sample per evaluation prompt (tiny_dit.training.evaluate.evaluation_prompts, seen pairs) at
each clip size (frames x height x width), judged by the frame judge against its prompt; a one-frame
clip is prompted without a motion ("a red star on a black background") and judged as a still.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

import numpy as np
import torch

from tiny_dit.autoencoder import decode_latents, encode_clips
from tiny_dit.data.shapes import NUM_FRAMES, random_clip_spec, render_clips
from tiny_dit.flow import DEFAULT_GUIDANCE_SCALE
from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS, TinyDiTCondition, TinyDiTPipeline
from tiny_dit.training.evaluate import (ATTRIBUTES, evaluation_batches, evaluation_prompts, judge_frames, object_aspect,
                                       score)
from tiny_dit.video import to_uint8

# task -> the known pieces of the 16-frame clip, as (first, last + 1) frame ranges.
TASKS = {
    "image-to-video": [(0, 1)],
    "extend-forwards": [(0, 8)],
    "extend-backwards": [(8, 16)],
    "connect": [(0, 4), (12, 16)],
}
DEFAULT_SIZES = ((1, 128, 128), (8, 128, 128), (16, 128, 128), (32, 128, 128), (16, 128, 192), (16, 192, 128))


def conditions_for(clip: np.ndarray, pieces: list[tuple[int, int]]) -> list[TinyDiTCondition]:
    """The known pieces of a uint8 clip (T, H, W, 3) as conditions; a piece that ends the clip is placed
    from the end (negative frame_index), as a user extending backwards or connecting would."""
    conditions = []
    for start, stop in pieces:
        index = start - len(clip) if stop == len(clip) and start > 0 else start
        if stop - start == 1:
            conditions.append(TinyDiTCondition(image=clip[start], frame_index=index))
        else:
            conditions.append(TinyDiTCondition(video=clip[start:stop], frame_index=index))
    return conditions


def known_mask(pieces: list[tuple[int, int]], num_frames: int) -> np.ndarray:
    mask = np.zeros(num_frames, dtype=bool)
    for start, stop in pieces:
        mask[start:stop] = True
    return mask


def seam_changes(clips: np.ndarray, known: np.ndarray) -> tuple[float, float]:
    """(mean |pixel change| across known/generated boundaries, the same between all other neighbours),
    over uint8 clips (N, T, H, W, 3), pixels in 0-255."""
    change = np.abs(np.diff(clips.astype(np.float32), axis=1)).mean(axis=(2, 3, 4))  # (N, T - 1)
    boundary = known[1:] != known[:-1]  # (T - 1,): frame k-1 -> k crosses a boundary
    return float(change[:, boundary].mean()), float(change[:, ~boundary].mean())


def judge_pieces(clips: np.ndarray, frames: np.ndarray, truth: list[dict]) -> dict[str, float]:
    """The frame judge on frames[...] of each clip against the true attributes."""
    return score([judge_frames(clip[frames]) for clip in clips], truth)


def input_clips(num_inputs: int, seed: int, size: int) -> tuple[np.ndarray, list[dict]]:
    """Rendered clips (N, 16, size, size, 3) balanced over the attributes, and their attributes and captions."""
    rng = np.random.default_rng(seed)
    prompts = evaluation_prompts("seen", num_inputs, seed)
    specs = [random_clip_spec(rng, p["color"], p["shape"], p["motion"], p["background"], phrasing=0)
             for p in prompts]
    truth = [{a: getattr(s, a) for a in ATTRIBUTES} | {"text": s.text} for s in specs]
    return render_clips(specs, size=size).numpy(), truth


@torch.no_grad()
def measure_tasks(pipe: TinyDiTPipeline, num_inputs: int = 8, steps: int = DEFAULT_NUM_INFERENCE_STEPS,
                  guidance_scale: float = DEFAULT_GUIDANCE_SCALE, seed: int = 0, tasks=tuple(TASKS)) -> dict:
    """Agreement and seam ratio per task (see the module docstring), and for the rendered clips."""
    _, height, width = pipe.default_size()
    if height != width:
        raise ValueError(f"the tasks render square shapes-world clips; this model makes {width}x{height}")
    clips, truth = input_clips(num_inputs, seed, height)  # (N, 16, H, W, 3) uint8
    round_trip = to_uint8(decode_latents(pipe.vae, encode_clips(pipe.vae, torch.from_numpy(clips))))
    results = {"num_inputs": num_inputs, "steps": steps, "guidance_scale": guidance_scale, "seed": seed}
    for task in tasks:
        pieces = TASKS[task]
        known = known_mask(pieces, NUM_FRAMES)
        outputs = []
        start = time.perf_counter()
        for i, (clip, attrs) in enumerate(zip(clips, truth)):
            frames = pipe(attrs["text"], num_frames=NUM_FRAMES, height=height, width=width,
                          conditions=conditions_for(clip, pieces), num_inference_steps=steps,
                          guidance_scale=guidance_scale,
                          generator=torch.Generator().manual_seed(seed * 100_003 + i)).frames[0]
            outputs.append(to_uint8(frames))
        outputs = np.stack(outputs)  # (N, 16, H, W, 3)
        boundary, elsewhere = seam_changes(outputs, known)
        ref_boundary, ref_elsewhere = seam_changes(round_trip, known)
        results[task] = {
            "agreement": judge_pieces(outputs, ~known, truth),
            "seam_change": boundary, "other_change": elsewhere, "seam_ratio": boundary / max(elsewhere, 1e-6),
            "rendered_agreement": judge_pieces(round_trip, ~known, truth),
            "rendered_seam_ratio": ref_boundary / max(ref_elsewhere, 1e-6),
            "seconds": time.perf_counter() - start,
        }
    return results


@torch.no_grad()
def measure_sizes(pipe: TinyDiTPipeline, sizes=DEFAULT_SIZES, num_prompts: int = 8,
                  steps: int = DEFAULT_NUM_INFERENCE_STEPS, guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
                  seed: int = 0) -> dict:
    """The frame judge's accuracy per clip size (frames, height, width), one sample per prompt."""
    results = {"num_prompts": num_prompts, "steps": steps, "guidance_scale": guidance_scale, "seed": seed}
    for num_frames, height, width in sizes:
        still = num_frames == 1
        prompts = evaluation_prompts("seen", num_prompts, seed, still=still)
        start = time.perf_counter()
        # In batches of 8, each seeded by its start (the evaluation's batches): any number of prompts.
        clips = np.concatenate([batch_clips for _, batch_clips in evaluation_batches(
            pipe, prompts, seed, num_frames=num_frames, height=height, width=width, num_inference_steps=steps,
            guidance_scale=guidance_scale)])  # (N, T, H, W, 3) uint8
        if still:  # the judge reads motion off several frames: a still held for 4 shows none
            clips = np.repeat(clips, 4, axis=1)
        aspects = [a for a in map(object_aspect, clips) if a is not None]
        verdicts = [judge_frames(c) for c in clips]
        results[f"{num_frames}x{height}x{width}"] = {
            "accuracy": score(verdicts, prompts),
            # one object: the judge found one piece of the object's colour (not "fragments": copies, pieces)
            "one_object": float(np.mean([v["shape"] != "fragments" for v in verdicts])),
            "aspect": float(np.median(aspects)) if aspects else None, "aspects": aspects,
            "seconds": time.perf_counter() - start}
    return results


def print_tasks(results: dict) -> None:
    print(f"\nknown frames ({results['num_inputs']} inputs per task, {results['steps']} steps, "
          f"guidance {results['guidance_scale']}): frame judge on the generated frames; seam ratio = "
          "mean change across boundaries / elsewhere")
    print(f"{'task':18s} {'clips':9s} " + " ".join(f"{a:>10s}" for a in (*ATTRIBUTES, "all")) + f" {'seam':>6s}")
    for task in TASKS:
        if task not in results:
            continue
        row = results[task]
        for name, agreement, ratio in (("generated", row["agreement"], row["seam_ratio"]),
                                       ("rendered", row["rendered_agreement"], row["rendered_seam_ratio"])):
            print(f"{task:18s} {name:9s} " + " ".join(f"{agreement[a]:10.1%}" for a in (*ATTRIBUTES, "all"))
                  + f" {ratio:6.2f}")


def print_sizes(results: dict) -> None:
    print(f"\nlength and size ({results['num_prompts']} prompts each, {results['steps']} steps): frame judge")
    print(f"{'frames x H x W':16s} " + " ".join(f"{a:>10s}" for a in (*ATTRIBUTES, "all"))
          + f" {'one obj':>8s} {'w/h':>6s} {'seconds':>8s}   (one obj: clips with one piece of the object's colour; "
          "w/h: the object's median width over height, 1 = not stretched)")
    for key, row in results.items():
        if isinstance(row, dict):
            aspect = "-" if row["aspect"] is None else f"{row['aspect']:.2f}"
            print(f"{key:16s} " + " ".join(f"{row['accuracy'][a]:10.1%}" for a in (*ATTRIBUTES, "all"))
                  + f" {row['one_object']:8.1%} {aspect:>6s} {row['seconds']:8.1f}")


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    try:
        return [tuple(int(n) for n in item.split("x")) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are FRAMESxHEIGHTxWIDTH, comma-separated, got {text!r}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/sora_tasks.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder or Hub repo id")
    parser.add_argument("--mode", choices=("tasks", "sizes", "all"), default="all")
    parser.add_argument("--num-inputs", type=int, default=8, help="inputs per task, prompts per size (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale of the model's guider (default: the model's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES),
                        help="FRAMESxHEIGHTxWIDTH,... (default: " + ",".join("x".join(map(str, s))
                                                                             for s in DEFAULT_SIZES) + ")")
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = TinyDiTPipeline.from_pretrained(args.model).to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    dtype = pipe.set_dtype(args.dtype)
    args.steps = pipe.default_num_inference_steps if args.steps is None else args.steps
    args.guidance = pipe.default_guider.guidance_scale if args.guidance is None else args.guidance
    results = {"model": args.model, "dtype": str(dtype).removeprefix("torch.")}
    if args.mode in ("tasks", "all"):
        results["tasks"] = measure_tasks(pipe, args.num_inputs, args.steps, args.guidance, args.seed)
        print_tasks(results["tasks"])
    if args.mode in ("sizes", "all"):
        results["sizes"] = measure_sizes(pipe, args.sizes, args.num_inputs, args.steps, args.guidance, args.seed)
        print_sizes(results["sizes"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
