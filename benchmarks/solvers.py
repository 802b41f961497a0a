"""The same quality in fewer steps? Each solver's quality against its transformer passes, and its speed.

    python benchmarks/solvers.py --model assets/tiny-dit-shapes --out benchmarks/results/solvers
    python benchmarks/solvers.py --solvers euler,dpm++ --steps 4,8,20 --shifts 1,3 --num-prompts 72

For every solver (tiny_dit.schedulers.SCHEDULERS), shift and step count, on one pipeline in one process:
  * the project's evaluation (tiny_dit.training.evaluate.evaluate_pipeline: one seeded clip per prompt of the
    fixed prompt set, --num-prompts per split, seen and held-out colour-shape pairs), scored by the
    frame judge and the CLIP judge. Every setting starts from the same noise, so the settings are
    compared clip for clip;
  * the wall time of one pipeline call that makes 4 clips of one prompt (the app's default request:
    text encoding, all passes, decoding), best of --repeats after a warm-up.
A setting's cost is its transformer passes, not its steps: Heun makes two a step (2N - 1 for N).

The pick: among the settings whose frame-judge scores (mean of the two splits) are within --tolerance
points of the reference (--reference, Euler 20 steps) on every attribute and on "all", the one with
the fewest passes (then the least time); its speed-up is the reference's time over its time, both
measured in this run. Results go to OUT.json (everything; written after every setting, and --resume
skips the settings already there), OUT.md (a table) and OUT.png (frame judge "all" and "shape"
against passes, one line per solver and shift, drawn with PIL).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

import torch

PROMPT = "a red circle moving left on a black background"
DEFAULT_STEPS = (4, 6, 8, 10, 15, 20, 30)
SCORES = ("color", "shape", "motion", "background", "all")
COLOURS = {"euler": (31, 119, 180), "heun": (214, 39, 40), "dpm++": (44, 160, 44), "unipc": (148, 103, 189)}


def setting_key(solver: str, shift: float, steps: int) -> str:
    return f"{solver} shift={shift:g} steps={steps}"


def mean_of_splits(results: dict, judge: str = "frame_judge") -> dict[str, float]:
    """A judge's scores in percent, the mean of the seen and held-out splits (equal sizes)."""
    return {a: 100 * (results["seen"][judge][a] + results["held-out"][judge][a]) / 2 for a in SCORES}


def time_clips(pipe, steps: int, guidance_scale: float, repeats: int, num_clips: int = 4) -> float:
    """Best wall time (s) of one pipeline call making num_clips clips of PROMPT."""
    best = math.inf
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance_scale, num_videos_per_prompt=num_clips,
             generator=torch.Generator().manual_seed(0))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def measure(pipe, clip, solvers: list[str], shifts: list[float], steps_list: list[int], num_prompts: int,
            guidance_scale: float, seed: int, repeats: int, batch_size: int = 8, done: dict | None = None,
            save=None) -> dict[str, dict]:
    """One row per setting (see the module docstring); `done` rows are kept, not measured again.
    save(rows) is called after every setting."""
    from tiny_dit.schedulers import make_scheduler, noise_levels, transformer_passes
    from tiny_dit.training.evaluate import evaluate_pipeline

    rows = dict(done or {})
    time_clips(pipe, 2, guidance_scale, 1)  # warm-up: kernels, allocations
    for solver in solvers:
        for shift in shifts:
            scheduler = make_scheduler(solver, pipe.scheduler.config, shift)
            run = pipe.with_scheduler(scheduler)
            for steps in steps_list:
                key = setting_key(solver, shift, steps)
                if key in rows:
                    continue
                start = time.perf_counter()
                results = evaluate_pipeline(run, clip, num_prompts, steps, guidance_scale, seed, batch_size,
                                            progress=False)
                rows[key] = {
                    "solver": solver, "shift": shift, "steps": steps,
                    "passes": transformer_passes(scheduler, steps),
                    "noise_levels": [round(float(s), 5) for s in noise_levels(scheduler, steps)],
                    "seconds_4_clips": time_clips(run, steps, guidance_scale, repeats),
                    "frame_judge": mean_of_splits(results, "frame_judge"),
                    "clip_judge": mean_of_splits(results, "clip_judge"),
                    "results": results,
                }
                row = rows[key]
                print(f"{key:28s} {row['passes']:3d} passes  {row['seconds_4_clips']:7.3f} s  frame judge "
                      + " ".join(f"{a} {row['frame_judge'][a]:5.1f}" for a in SCORES)
                      + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
                if save is not None:
                    save(rows)
    return rows


def pick(rows: dict[str, dict], reference: str, tolerance: float) -> dict:
    """The fastest setting within `tolerance` points of the reference on every frame-judge score."""
    from tiny_dit.schedulers import SCHEDULERS

    if reference not in rows:
        return {"reference": reference, "error": f"the reference setting {reference!r} was not measured"}
    ref = rows[reference]
    good = [key for key, row in rows.items()
            if all(row["frame_judge"][a] >= ref["frame_judge"][a] - tolerance for a in SCORES)]
    # Equal passes cost the same (a solver's own arithmetic is negligible next to a transformer pass),
    # so ties go to the better "all" score, then to the simpler solver (the order of SCHEDULERS).
    order = {name: i for i, name in enumerate(SCHEDULERS)}
    best = min(good, key=lambda k: (rows[k]["passes"], -rows[k]["frame_judge"]["all"],
                                    order.get(rows[k]["solver"], len(order)), rows[k]["shift"]))
    return {"reference": reference, "tolerance_points": tolerance, "within_tolerance": sorted(good),
            "pick": best, "pick_passes": rows[best]["passes"], "reference_passes": ref["passes"],
            "speedup": ref["seconds_4_clips"] / rows[best]["seconds_4_clips"],
            "pass_ratio": ref["passes"] / rows[best]["passes"],
            "pick_seconds_4_clips": rows[best]["seconds_4_clips"],
            "reference_seconds_4_clips": ref["seconds_4_clips"]}


def markdown_table(rows: dict[str, dict], choice: dict) -> str:
    ref = rows.get(choice.get("reference"))
    lines = ["| solver | shift | steps | passes | s / 4 clips | speed-up | frame judge: all | color | shape | motion "
             "| background | CLIP judge: all | within tolerance |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    good = set(choice.get("within_tolerance", ()))
    for key, row in sorted(rows.items(), key=lambda kv: (kv[1]["solver"], kv[1]["shift"], kv[1]["passes"])):
        f = row["frame_judge"]
        speedup = f"{ref['seconds_4_clips'] / row['seconds_4_clips']:.2f}x" if ref else ""
        mark = "**pick**" if key == choice.get("pick") else ("yes" if key in good else "")
        lines.append(f"| {row['solver']} | {row['shift']:g} | {row['steps']} | {row['passes']} | "
                     f"{row['seconds_4_clips']:.3f} | {speedup} | {f['all']:.1f} | {f['color']:.1f} | "
                     f"{f['shape']:.1f} | {f['motion']:.1f} | {f['background']:.1f} | "
                     f"{row['clip_judge']['all']:.1f} | {mark} |")
    if "pick" in choice:
        lines.append("")
        lines.append(f"Reference: {choice['reference']} ({choice['reference_passes']} passes, "
                     f"{choice['reference_seconds_4_clips']:.3f} s). Fastest within {choice['tolerance_points']:g} "
                     f"points on every frame-judge score: **{choice['pick']}** ({choice['pick_passes']} passes, "
                     f"{choice['pick_seconds_4_clips']:.3f} s): {choice['speedup']:.2f}x faster, measured in one run "
                     f"({choice['pass_ratio']:.2f}x fewer transformer passes).")
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], choice: dict, path: Path, scores=("all", "shape")) -> Path:
    """Frame-judge scores against transformer passes (log axis), one panel per score, drawn with PIL."""
    from PIL import Image, ImageDraw, ImageFont

    panel_w, panel_h, margin = 560, 420, (64, 40, 24, 56)  # left, top, right, bottom
    image = Image.new("RGB", (panel_w * len(scores), panel_h + 70), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    passes = [row["passes"] for row in rows.values()]
    x_lo, x_hi = math.log(max(1, min(passes)) / 1.15), math.log(max(passes) * 1.15)
    lines: dict[tuple[str, float], list[dict]] = {}
    for row in rows.values():
        lines.setdefault((row["solver"], row["shift"]), []).append(row)
    ref = rows.get(choice.get("reference"))
    for p, score in enumerate(scores):
        left, top = p * panel_w + margin[0], margin[1]
        right, bottom = (p + 1) * panel_w - margin[2], panel_h - margin[3]
        values = [row["frame_judge"][score] for row in rows.values()]
        y_lo = max(0.0, math.floor((min(values) - 5) / 10) * 10)
        y_hi = 100.0

        def xy(n, v):
            x = left + (math.log(n) - x_lo) / (x_hi - x_lo) * (right - left)
            return x, bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

        draw.rectangle([left, top, right, bottom], outline="black")
        for v in range(int(y_lo), 101, 10):
            y = xy(1, v)[1]
            draw.line([left, y, right, y], fill=(225, 225, 225))
            draw.text((left - 8, y), f"{v}", fill="black", font=font, anchor="rm")
        for n in (1, 2, 3, 4, 6, 8, 10, 15, 20, 30, 40, 60, 80, 120):
            if x_lo <= math.log(n) <= x_hi:
                x = xy(n, y_lo)[0]
                draw.line([x, top, x, bottom], fill=(235, 235, 235))
                draw.text((x, bottom + 6), f"{n}", fill="black", font=font, anchor="mt")
        draw.text(((left + right) / 2, bottom + 26), "transformer passes (log scale)", fill="black", font=font,
                  anchor="mt")
        draw.text(((left + right) / 2, 12), f'frame judge "{score}" (%, mean of seen and held-out)', fill="black",
                  font=font, anchor="mt")
        if ref is not None:  # the reference's score and the tolerance band below it
            for v, colour in ((ref["frame_judge"][score], (120, 120, 120)),
                              (ref["frame_judge"][score] - choice.get("tolerance_points", 2), (190, 190, 190))):
                y = xy(1, v)[1]
                if not top <= y <= bottom:
                    continue
                for x in range(int(left), int(right), 12):
                    draw.line([x, y, min(x + 6, right), y], fill=colour, width=2)
        for k, ((solver, shift), points) in enumerate(sorted(lines.items())):
            colour = COLOURS.get(solver, (0, 0, 0))
            if shift != 1:  # shifted variants: lighter
                colour = tuple(int(c + (255 - c) * 0.45) for c in colour)
            pts = [xy(r["passes"], r["frame_judge"][score]) for r in sorted(points, key=lambda r: r["passes"])]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=3)
            for x, y in pts:
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
            if p == 0:  # the legend, under the panels
                lx, ly = 20 + (k % 4) * 250, panel_h + 8 + (k // 4) * 20
                draw.line([lx, ly + 7, lx + 24, ly + 7], fill=colour, width=3)
                draw.text((lx + 30, ly), f"{solver} (shift {shift:g})", fill="black", font=font)
        picked = rows.get(choice.get("pick"))
        if picked is not None:
            x, y = xy(picked["passes"], picked["frame_judge"][score])
            draw.ellipse([x - 8, y - 8, x + 8, y + 8], outline="black", width=2)
    draw.text((20, panel_h + 48), f"dashed: the reference ({choice.get('reference')}) and "
              f"{choice.get('tolerance_points', 2):g} points below it; circled: the pick "
              f"({choice.get('pick', 'none')})", fill=(90, 90, 90), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def main(argv: list[str] | None = None) -> dict:
    from tiny_dit.schedulers import SCHEDULERS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder")
    parser.add_argument("--clip", default="assets/tiny-clip", help="the CLIP used as a judge")
    parser.add_argument("--solvers", default=",".join(SCHEDULERS), help=f"comma-separated, of {list(SCHEDULERS)}")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="comma-separated step counts")
    parser.add_argument("--shifts", default=None,
                        help="comma-separated noise shifts (default: the model's own, the shift it trained with)")
    parser.add_argument("--num-prompts", type=int, default=24, help="evaluation prompts per split (default 24)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per setting; the best counts")
    parser.add_argument("--reference", default=None,
                        help="the setting to stay close to (default: euler, the first shift, 20 steps)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="points below the reference allowed (2)")
    parser.add_argument("--dtype", default="auto", help="auto (default), float32 or bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/solvers"),
                        help="writes OUT.json, OUT.md and OUT.png")
    parser.add_argument("--resume", action="store_true", help="keep the settings already in OUT.json")
    args = parser.parse_args(argv)
    solvers = [s for s in args.solvers.split(",") if s]
    unknown = [s for s in solvers if s not in SCHEDULERS]
    if unknown:
        parser.error(f"unknown solvers {unknown}: choose from {list(SCHEDULERS)}")
    steps_list = [int(s) for s in args.steps.split(",") if s]

    from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS, TinyDiTPipeline
    from tiny_dit.schedulers import config_shift
    from tiny_dit.text_encoder import CLIPEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = TinyDiTPipeline.from_pretrained(args.model).to(device)
    guidance = pipe.default_guider.guidance_scale if args.guidance is None else args.guidance
    pipe.set_progress_bar_config(disable=True)
    shifts = ([float(s) for s in args.shifts.split(",") if s] if args.shifts
              else [config_shift(pipe.scheduler.config)])
    reference = args.reference or setting_key("euler", shifts[0], DEFAULT_NUM_INFERENCE_STEPS)
    dtype = pipe.set_dtype(args.dtype)
    clip = CLIPEncoder.from_pretrained(args.clip)
    json_path, md_path, png_path = (args.out.with_suffix(s) for s in (".json", ".md", ".png"))
    done = {}
    if args.resume and json_path.is_file():
        done = json.loads(json_path.read_text())["settings"]
    header = {"model": str(args.model), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "dtype": str(dtype).removeprefix("torch."),
              "num_prompts_per_split": args.num_prompts, "guidance_scale": guidance, "seed": args.seed,
              "repeats": args.repeats}

    def save(rows, choice=None):
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({**header, "choice": choice, "settings": rows}, indent=1))

    with torch.no_grad():
        rows = measure(pipe, clip, solvers, shifts, steps_list, args.num_prompts, guidance, args.seed, args.repeats,
                       done=done, save=save)
    choice = pick(rows, reference, args.tolerance)
    save(rows, choice)
    md_path.write_text(f"Model {args.model}, {header['device']}, {header['dtype']}, {args.num_prompts} prompts per "
                       f"split, guidance {guidance:g}.\n\n" + markdown_table(rows, choice))
    plot(rows, choice, png_path)
    print(markdown_table(rows, choice))
    print(f"wrote {json_path}, {md_path} and {png_path}")
    return {**header, "choice": choice, "settings": rows}


if __name__ == "__main__":
    main()
