"""Sora's last two tasks, measured: edit a clip by prompt (SDEdit), and loops.

    python benchmarks/edit_and_loop.py                                # the bundled model, every mode
    python benchmarks/edit_and_loop.py --mode target                  # the issue's target edit, 16 seeds
    python benchmarks/edit_and_loop.py --mode edit --num-inputs 8 --seeds 2 --strengths 0.3,0.5,0.7,0.9
    python benchmarks/edit_and_loop.py --mode edit --num-inputs 8 --guider interval     # another guidance method
    python benchmarks/edit_and_loop.py --mode loop --num-inputs 24 --loop-methods there-and-back,plain
    python benchmarks/edit_and_loop.py --mode loop --loop-methods there-and-back --loop-frames 16

Mode "edit": rendered shapes-world clips (16 frames, balanced over the attributes, seeded) are
edited with a prompt that changes one attribute, the colour, the shape or the background, and keeps
the rest (same motion words): `pipe(prompt, video=clip, strength=s)` at each strength, `--seeds`
samples per input. For each kind of edit and strength, over every sample:
  * changed:  the frame judge (tiny_dit.training.evaluate.judge_frames) reads the asked value;
  * kept:     it reads the input's other two of colour, shape and background;
  * motion:   it reads the input's motion;
  * path:     the object's centroid, frame by frame, against the input's: the mean distance in px
              (over frames and samples), and the share of samples whose mean is within 8 px;
  * all:      changed, kept, motion and path within 8 px, at once.

Mode "target": 'a red circle moving right on a black background' (4 rendered inputs x 4 seeds)
edited into 'a blue circle ...' at strength 0.7: how often it is blue and moving right, and how far
its path is from the input's.

Mode "loop": one clip per seen evaluation prompt (tiny_dit.training.evaluate.evaluation_prompts),
made to loop by each method, and two figures per clip:
  * seam ratio: the mean absolute pixel change from the last frame to the first over the median
    change between neighbouring frames of the clip (edit_and_loop.seam_ratio); a loop plays
    seamlessly when it is about 1, and the target is <= 1.5;
  * the frame judge on the clip as asked (one object of the asked colour, shape, motion and
    background): for there-and-back the outward frames, for the bridge the clip before it, else
    the whole clip.
Methods: "there-and-back" (the pipeline's loop=True: an outward clip and its frames in reverse; by default
30 frames, a 16-frame way out, or --loop-frames),
"plain" (a plain 16-frame clip played in a loop: what loop=True is for), "bridge" (Sora's way: a
16-frame clip, then a 16-frame bridge generated with known frames, the clip's last 4 at its start
and its first 4 at its end, so that clip + bridge leads back to the start; both seams counted, the
larger kept) and "roll" (circular denoising: the latent clip rolled by one tubelet after every step,
so that its end and start are denoised side by side; rolled back at the end).
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

from tiny_dit.data.shapes import BACKGROUNDS, COLORS, HELD_OUT_PAIRS, SHAPES, caption, random_clip_spec, render_clips
from tiny_dit.edit_and_loop import outward_num_frames, seam_ratio
from tiny_dit.guiders import GUIDERS, make_guider
from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS, TinyDiTCondition, TinyDiTPipeline
from tiny_dit.training.evaluate import (ATTRIBUTES, OBJECT_THRESHOLD, evaluation_prompts, judge_frames,
                                        object_in_every_frame)
from tiny_dit.video import to_uint8

EDITS = ("color", "shape", "background")  # the attribute an edit changes
DEFAULT_STRENGTHS = (0.3, 0.5, 0.7, 0.9)
PATH_PX = 8.0  # a path "kept": its centroid within this many px of the input's, on average over the frames
SEAM_MAX = 1.5  # a loop "seamless": its seam change at most this many times the median frame change
LOOP_METHODS = ("there-and-back", "plain", "bridge", "roll")
TARGET_INPUT = ("red", "circle", "right", "black")
TARGET_COLOR = "blue"
TARGET_STRENGTH = 0.7
BRIDGE_KEEP = 4  # frames of the clip held at each end of the bridge


def object_centroids(clip: np.ndarray) -> np.ndarray:
    """The object's centroid (x, y) in each frame of a uint8 clip (T, H, W, 3), px: the mean of the pixels
    far from the background (the median of a 4-px border), as the frame judge finds them; NaN where none."""
    border = np.concatenate([clip[:, :4].reshape(-1, 3), clip[:, -4:].reshape(-1, 3),
                             clip[:, :, :4].reshape(-1, 3), clip[:, :, -4:].reshape(-1, 3)])
    mask = np.linalg.norm(clip.astype(float) - np.median(border, axis=0), axis=-1) > OBJECT_THRESHOLD  # (T, H, W)
    centroids = np.full((len(clip), 2), np.nan)
    for k, frame in enumerate(mask):
        ys, xs = np.nonzero(frame)
        if len(xs):
            centroids[k] = xs.mean(), ys.mean()
    return centroids


def path_distance(clip: np.ndarray, reference: np.ndarray) -> float:
    """The mean distance, px, between the object's centroids in two clips of one length, frame by frame
    (inf when a frame of either has no object: a path that is not there is not kept)."""
    distance = np.linalg.norm(object_centroids(clip) - object_centroids(reference), axis=1)
    return float(distance.mean()) if np.isfinite(distance).all() else float("inf")


def edit_target(kind: str, attrs: dict, k: int) -> str:
    """The value an edit of `kind` asks for in place of attrs[kind]: the k-th other value (cycling), skipping
    held-out colour-shape pairs (an edit should not also be a test of composition)."""
    values = {"color": list(COLORS), "shape": list(SHAPES), "background": list(BACKGROUNDS)}[kind]
    others = [v for v in values if v != attrs[kind]]
    for j in range(len(others)):
        value = others[(k + j) % len(others)]
        pair = (value if kind == "color" else attrs["color"], value if kind == "shape" else attrs["shape"])
        if pair not in HELD_OUT_PAIRS:
            return value
    raise ValueError(f"no value to edit {kind} of {attrs} into")


def rendered_input(attrs: dict, seed: int, size: int) -> np.ndarray:
    """A rendered 16-frame clip with these attributes: uint8 (16, size, size, 3)."""
    spec = random_clip_spec(np.random.default_rng(seed), attrs["color"], attrs["shape"], attrs["motion"],
                            attrs["background"], phrasing=0)
    return render_clips([spec], size=size)[0].numpy()


def edit_samples(pipe, clip: np.ndarray, prompt: str, strength: float, seeds: int, seed: int, steps: int,
                 guidance_scale: float | None) -> np.ndarray:
    """`seeds` edits of one clip: uint8 (seeds, T, H, W, 3)."""
    frames = pipe(prompt, video=clip, strength=strength, num_videos_per_prompt=seeds, num_inference_steps=steps,
                  guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed)).frames
    return to_uint8(frames)


def score_edits(outputs: np.ndarray, clip: np.ndarray, attrs: dict, kind: str, target: str) -> list[dict]:
    """One row per edited sample: changed, kept, motion, path (px), all."""
    rows = []
    for out in outputs:
        judged = judge_frames(out)
        path = path_distance(out, clip)
        row = {"changed": judged[kind] == target,
               "kept": all(judged[a] == attrs[a] for a in EDITS if a != kind),
               "motion": judged["motion"] == attrs["motion"], "path": path, "path_kept": path <= PATH_PX}
        row["all"] = row["changed"] and row["kept"] and row["motion"] and row["path_kept"]
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    paths = np.array([r["path"] for r in rows])
    finite = paths[np.isfinite(paths)]
    summary = {name: float(np.mean([r[name] for r in rows])) for name in ("changed", "kept", "motion", "path_kept",
                                                                          "all")}
    summary["path_px"] = float(finite.mean()) if len(finite) else float("inf")
    summary["no_object"] = int((~np.isfinite(paths)).sum())  # samples with a frame without an object
    summary["samples"] = len(rows)
    return summary


@torch.no_grad()
def measure_edits(pipe: TinyDiTPipeline, num_inputs: int = 4, seeds: int = 2, strengths=DEFAULT_STRENGTHS,
                  steps: int = DEFAULT_NUM_INFERENCE_STEPS, guidance_scale: float | None = None, seed: int = 0,
                  kinds=EDITS) -> dict:
    """Each kind of edit at each strength (see the module docstring), num_inputs rendered inputs x seeds."""
    _, size, _ = pipe.default_size()
    inputs = evaluation_prompts("seen", num_inputs, seed)
    results = {"num_inputs": num_inputs, "seeds": seeds, "steps": steps, "seed": seed, "strengths": list(strengths)}
    for kind in kinds:
        for strength in strengths:
            rows, start = [], time.perf_counter()
            for i, attrs in enumerate(inputs):
                clip = rendered_input(attrs, seed * 1000 + i, size)
                target = edit_target(kind, attrs, i)
                asked = {**attrs, kind: target}
                prompt = caption(asked["color"], asked["shape"], asked["motion"], asked["background"])
                outputs = edit_samples(pipe, clip, prompt, strength, seeds, seed * 1000 + i, steps, guidance_scale)
                rows += score_edits(outputs, clip, attrs, kind, target)
            results[f"{kind}@{strength:g}"] = summarise(rows) | {"seconds": time.perf_counter() - start}
    return results


@torch.no_grad()
def measure_target(pipe: TinyDiTPipeline, num_inputs: int = 4, seeds: int = 4, strength: float = TARGET_STRENGTH,
                   steps: int = DEFAULT_NUM_INFERENCE_STEPS, guidance_scale: float | None = None,
                   seed: int = 0) -> dict:
    """'a red circle moving right ...' edited into a blue one: blue and moving right, and the path kept."""
    _, size, _ = pipe.default_size()
    attrs = dict(zip(("color", "shape", "motion", "background"), TARGET_INPUT))
    prompt = caption(TARGET_COLOR, attrs["shape"], attrs["motion"], attrs["background"])
    rows, start = [], time.perf_counter()
    for i in range(num_inputs):
        clip = rendered_input(attrs, seed * 1000 + i, size)
        for out in edit_samples(pipe, clip, prompt, strength, seeds, seed * 1000 + i, steps, guidance_scale):
            judged = judge_frames(out)
            rows.append({"blue_and_right": judged["color"] == TARGET_COLOR and judged["motion"] == attrs["motion"],
                         "circle": judged["shape"] == attrs["shape"],
                         "background": judged["background"] == attrs["background"],
                         "path": path_distance(out, clip)})
    paths = np.array([r["path"] for r in rows])
    return {"prompt": prompt, "strength": strength, "samples": len(rows), "steps": steps, "seed": seed,
            "blue_and_right": float(np.mean([r["blue_and_right"] for r in rows])),
            "circle": float(np.mean([r["circle"] for r in rows])),
            "background": float(np.mean([r["background"] for r in rows])),
            "path_px": float(paths.mean()), "path_px_max": float(paths.max()),
            "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------
# Loops
# ----------------------------------------------------------------------------


def rolled_clips(pipe, prompts: list[str], generator, steps: int, guidance_scale) -> np.ndarray:
    """Circular denoising: the latents rolled by one tubelet along time after every step, rolled back at the
    end, so the clip's last and first frames are denoised side by side. uint8 (N, T, H, W, 3)."""
    shift = pipe.transformer.config.patch_size_t
    rolled = {"by": 0}

    def roll(_pipe, i, t, kwargs):
        rolled["by"] += shift
        return {"latents": torch.roll(kwargs["latents"], shift, dims=2)}

    latents = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator,
                   output_type="latent", callback_on_step_end=roll).frames
    return to_uint8(pipe.decode_latents(torch.roll(latents, -rolled["by"], dims=2)))


def bridged_clips(pipe, prompts: list[str], clips: np.ndarray, seed: int, steps: int, guidance_scale
                  ) -> np.ndarray:
    """Sora's way: each clip, then a bridge of as many frames generated with the clip's last BRIDGE_KEEP frames at
    its start and its first BRIDGE_KEEP at its end; the loop is the clip and the bridge's new frames."""
    k, loops = max(1, min(BRIDGE_KEEP, clips.shape[1] // 4)), []  # a short clip: fewer, so the bridge has new frames
    for i, (prompt, clip) in enumerate(zip(prompts, clips)):
        bridge = pipe(prompt, num_frames=len(clip), num_inference_steps=steps, guidance_scale=guidance_scale,
                      conditions=[TinyDiTCondition(video=clip[-k:]), TinyDiTCondition(video=clip[:k], frame_index=-k)],
                      generator=torch.Generator().manual_seed(seed * 1000 + i)).frames[0]
        loops.append(np.concatenate([clip, to_uint8(bridge)[k:-k]]))
    return np.stack(loops)


def bridge_seam_ratio(loop: np.ndarray, clip_frames: int) -> float:
    """The larger of a bridged loop's two seams (clip -> bridge, bridge -> the clip's start) over its median
    frame change."""
    frames = loop.astype(np.float32)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    seams = [change[clip_frames - 1], np.abs(frames[0] - frames[-1]).mean()]
    return float(max(seams) / max(np.median(change), 1e-6))


@torch.no_grad()
def measure_loops(pipe: TinyDiTPipeline, num_prompts: int = 24, methods=LOOP_METHODS,
                  steps: int = DEFAULT_NUM_INFERENCE_STEPS, guidance_scale: float | None = None, seed: int = 0,
                  batch_size: int = 8, loop_frames: int | None = None) -> dict:
    """Seam ratio and the frame judge per loop method (see the module docstring); loop_frames: the length of a
    there-and-back loop (default the pipeline's: twice the trained length, less 2)."""
    num_frames, _, _ = pipe.default_size()
    prompts = evaluation_prompts("seen", num_prompts, seed)
    texts = [p["text"] for p in prompts]
    results = {"num_prompts": num_prompts, "steps": steps, "seed": seed, "num_frames": num_frames,
               "loop_frames": loop_frames}
    plain = None
    for method in methods:
        start, loops, judged_frames, seams = time.perf_counter(), [], [], []
        for b in range(0, num_prompts, batch_size):
            batch = texts[b:b + batch_size]
            generator = torch.Generator().manual_seed(seed * 1000 + b)
            call = dict(num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator)
            if method == "there-and-back":
                clips = to_uint8(pipe(batch, loop=True, num_frames=loop_frames, **call).frames)
                loops += list(clips)
                judged_frames += list(clips[:, :outward_num_frames(clips.shape[1])])
            elif method == "roll":
                clips = rolled_clips(pipe, batch, generator, steps, guidance_scale)
                loops += list(clips)
                judged_frames += list(clips)
            else:  # plain, bridge: the plain clips first (the bridge's clips are the plain ones)
                if plain is None or len(plain) < b + len(batch):
                    clips = to_uint8(pipe(batch, **call).frames)
                    plain = clips if plain is None else np.concatenate([plain, clips])
                clips = plain[b:b + len(batch)]
                judged_frames += list(clips)
                loops += list(clips if method == "plain" else
                              bridged_clips(pipe, batch, clips, seed + b, steps, guidance_scale))
        for loop in loops:
            seams.append(bridge_seam_ratio(loop, num_frames) if method == "bridge" else seam_ratio(loop))
        verdicts = [judge_frames(f) for f in judged_frames]
        right = [all(v[a] == p[a] for a in ATTRIBUTES) and object_in_every_frame(loop)
                 for v, p, loop in zip(verdicts, prompts, loops)]
        seams = np.array(seams)
        results[method] = {
            "seam_ratio_median": float(np.median(seams)), "seam_ratio_max": float(seams.max()),
            "seamless": float(np.mean(seams <= SEAM_MAX)), "attributes": float(np.mean(right)),
            "seamless_and_attributes": float(np.mean((seams <= SEAM_MAX) & np.array(right))),
            **{a: float(np.mean([v[a] == p[a] for v, p in zip(verdicts, prompts)])) for a in ATTRIBUTES},
            "frames": len(loops[0]), "seam_ratios": [round(float(s), 3) for s in seams],
            "seconds": time.perf_counter() - start}
    return results


# ----------------------------------------------------------------------------
# Printing and the command line
# ----------------------------------------------------------------------------


def print_edits(results: dict) -> None:
    print(f"\nedits ({results['num_inputs']} rendered inputs x {results['seeds']} seeds per row, {results['steps']} "
          f"steps): changed = the asked value; kept = the other two of colour/shape/background; path = mean "
          f"centroid distance to the input, px (within {PATH_PX:g} px: path kept)")
    print(f"{'edit':12s} {'strength':>8s} {'changed':>8s} {'kept':>8s} {'motion':>8s} {'path px':>8s} "
          f"{'path kept':>9s} {'all':>8s} {'seconds':>8s}")
    for key, row in results.items():
        if isinstance(row, dict):
            kind, strength = key.split("@")
            print(f"{kind:12s} {strength:>8s} {row['changed']:8.1%} {row['kept']:8.1%} {row['motion']:8.1%} "
                  f"{row['path_px']:8.1f} {row['path_kept']:9.1%} {row['all']:8.1%} {row['seconds']:8.1f}")


def print_target(row: dict) -> None:
    print(f"\ntarget: '{row['prompt']}' from a red circle, strength {row['strength']:g}, {row['samples']} samples: "
          f"blue and moving right {row['blue_and_right']:.1%}, circle {row['circle']:.1%}, background "
          f"{row['background']:.1%}, path {row['path_px']:.1f} px on average (largest {row['path_px_max']:.1f}), "
          f"{row['seconds']:.0f} s")


def print_loops(results: dict) -> None:
    print(f"\nloops ({results['num_prompts']} seen prompts, {results['steps']} steps): seam ratio = seam change / "
          f"median frame change; seamless: <= {SEAM_MAX:g}; attributes: the frame judge, all four and an object in "
          "every frame")
    print(f"{'method':15s} {'frames':>6s} {'median seam':>11s} {'max seam':>8s} {'seamless':>8s} "
          + " ".join(f"{a:>10s}" for a in ATTRIBUTES) + f" {'attributes':>10s} {'both':>8s} {'seconds':>8s}")
    for method in LOOP_METHODS:
        if method in results:
            row = results[method]
            print(f"{method:15s} {row['frames']:6d} {row['seam_ratio_median']:11.2f} {row['seam_ratio_max']:8.2f} {row['seamless']:8.1%} "
                  + " ".join(f"{row[a]:10.1%}" for a in ATTRIBUTES)
                  + f" {row['attributes']:10.1%} {row['seamless_and_attributes']:8.1%} {row['seconds']:8.1f}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/edit_and_loop.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder or Hub repo id")
    parser.add_argument("--mode", choices=("edit", "target", "loop", "all"), default="all")
    parser.add_argument("--num-inputs", type=int, default=None,
                        help="rendered inputs per edit row (default 4) or prompts for the loops (default 24)")
    parser.add_argument("--seeds", type=int, default=2, help="samples per rendered input in mode edit (default 2)")
    parser.add_argument("--strengths", default=",".join(f"{s:g}" for s in DEFAULT_STRENGTHS),
                        help="edit strengths, comma-separated (default %(default)s)")
    parser.add_argument("--loop-methods", default=",".join(LOOP_METHODS),
                        help="loop methods, comma-separated, of " + ", ".join(LOOP_METHODS) + " (default: all)")
    parser.add_argument("--loop-frames", type=int, default=None,
                        help="length of a there-and-back loop (default: the pipeline's, twice the trained length less 2)")
    parser.add_argument("--steps", type=int, default=DEFAULT_NUM_INFERENCE_STEPS)
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's guider's)")
    parser.add_argument("--guider", choices=list(GUIDERS), default=None,
                        help="guidance method, a name of tiny_dit.guiders.GUIDERS (default: the model's guider)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    methods = [m for m in args.loop_methods.split(",") if m]
    unknown = [m for m in methods if m not in LOOP_METHODS]
    if unknown:
        parser.error(f"unknown loop methods {unknown}: choose from {list(LOOP_METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = TinyDiTPipeline.from_pretrained(args.model).to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    dtype = pipe.set_dtype(args.dtype)
    if args.guider is not None:
        pipe.guider = make_guider(args.guider, pipe.default_guider.guidance_scale)
    results = {"model": args.model, "dtype": str(dtype).removeprefix("torch."), "guider": args.guider,
               "guidance_scale": args.guidance if args.guidance is not None else pipe.default_guider.guidance_scale}
    if args.mode in ("target", "all"):
        results["target"] = measure_target(pipe, steps=args.steps, guidance_scale=args.guidance, seed=args.seed)
        print_target(results["target"])
    if args.mode in ("edit", "all"):
        strengths = [float(s) for s in args.strengths.split(",")]
        results["edit"] = measure_edits(pipe, args.num_inputs or 4, args.seeds, strengths, args.steps, args.guidance,
                                        args.seed)
        print_edits(results["edit"])
    if args.mode in ("loop", "all"):
        results["loop"] = measure_loops(pipe, args.num_inputs or 24, methods, args.steps, args.guidance, args.seed,
                                        loop_frames=args.loop_frames)
        print_loops(results["loop"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
