"""Guidance without fringes: each guider and guidance scale, its adherence to the prompt and its stray pixels.

    python benchmarks/guidance.py --model assets/tiny-dit-shapes --out benchmarks/results/guidance
    python benchmarks/guidance.py --guiders cfg,interval --scales 1,3,5 --num-prompts 24      # a quick look

For every guider (tiny_dit.guiders.GUIDERS) and guidance scale, on one pipeline in one process, the project's
evaluation (tiny_dit.training.evaluate.evaluate_pipeline: one seeded clip per prompt of the fixed prompt set,
--num-prompts per split, seen and held-out colour-shape pairs, the pipeline's scheduler and steps), scored by
the frame judge, with the stray-pixel share (pixels far from the background outside the object's body) and
the share of clips with an object in every frame. Every setting starts from the same noise, so the settings
are compared clip for clip. Scale 1 is no guidance, the same for every guider: it is measured once ("none").

The pick (the pipeline's and the app's default): among the settings whose adherence (frame judge "all",
the mean of the two splits) is within --tolerance points of the best one's, the one with the fewest stray
pixels. Results go to OUT.json (everything; written after every setting, --resume skips the settings
already there), OUT.md (a table) and OUT.png (adherence and stray pixels against the scale, a line per
guider, drawn with PIL).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

SCORES = ("color", "shape", "motion", "all")
DEFAULT_SCALES = (1.0, 3.0, 5.0, 2.0, 4.0, 7.5)  # measured in this order
COLOURS = {"none": (0, 0, 0), "cfg": (31, 119, 180), "interval": (214, 39, 40), "rescale": (44, 160, 44),
           "apg": (148, 103, 189), "cfg-zero*": (255, 127, 14)}


def setting_key(guider: str, scale: float) -> str:
    return "none" if scale <= 1 else f"{guider} w={scale:g}"


def mean_of_splits(results: dict) -> dict[str, float]:
    """Frame-judge scores in percent and the viewer's measures, the mean of the seen and held-out splits."""
    row = {a: 100 * (results["seen"]["frame_judge"][a] + results["held-out"]["frame_judge"][a]) / 2 for a in SCORES}
    for measure in ("stray_pixels", "object_in_every_frame"):
        row[measure] = 100 * (results["seen"][measure] + results["held-out"][measure]) / 2
    return row


def measure(pipe, clip, guiders: list[str], scales: list[float], num_prompts: int, seed: int,
            done: dict | None = None, save=None) -> dict[str, dict]:
    """One row per setting (see the module docstring); `done` rows are kept, not measured again.
    save(rows) is called after every setting."""
    from tiny_dit.guiders import make_guider
    from tiny_dit.training.evaluate import evaluate_pipeline

    rows = dict(done or {})
    for scale in scales:  # every guider at one scale before the next: a sweep cut short still compares them
        for guider in guiders:
            key = setting_key(guider, scale)
            if key in rows:
                continue
            start = time.perf_counter()
            pipe.guider = make_guider(guider, scale)
            results = evaluate_pipeline(pipe, clip, num_prompts, seed=seed, progress=False)
            rows[key] = {"guider": "none" if scale <= 1 else guider, "scale": scale, **mean_of_splits(results),
                         "results": results}
            row = rows[key]
            print(f"{key:16s} " + " ".join(f"{a} {row[a]:5.1f}" for a in SCORES)
                  + f"  stray {row['stray_pixels']:.3f}%  object in every frame {row['object_in_every_frame']:.1f}%"
                  + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
            if save is not None:
                save(rows)
    return rows


def pick(rows: dict[str, dict], tolerance: float) -> dict:
    """The setting with the fewest stray pixels among those within `tolerance` points of the best "all"."""
    best_all = max(row["all"] for row in rows.values())
    good = [key for key, row in rows.items() if row["all"] >= best_all - tolerance]
    chosen = min(good, key=lambda k: (rows[k]["stray_pixels"], -rows[k]["all"]))
    return {"tolerance_points": tolerance, "best_all": best_all, "within_tolerance": sorted(good), "pick": chosen,
            "guider": rows[chosen]["guider"], "scale": rows[chosen]["scale"]}


def markdown_table(rows: dict[str, dict], choice: dict) -> str:
    lines = ["| guider | scale | all four | colour | shape | motion | stray pixels (% of the frame) "
             "| object in every frame | seen: colour / shape / motion / all | held-out: colour / shape / motion / all "
             "| within 1 point |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|:---:|"]
    good = set(choice.get("within_tolerance", ()))
    for key, row in sorted(rows.items(), key=lambda kv: (list(COLOURS).index(kv[1]["guider"]), kv[1]["scale"])):
        splits = ["/".join(f"{100 * row['results'][s]['frame_judge'][a]:.0f}" for a in SCORES)
                  for s in ("seen", "held-out")]
        mark = "**pick**" if key == choice.get("pick") else ("yes" if key in good else "")
        lines.append(f"| {row['guider']} | {row['scale']:g} | {row['all']:.1f} | {row['color']:.1f} | "
                     f"{row['shape']:.1f} | {row['motion']:.1f} | {row['stray_pixels']:.3f} | "
                     f"{row['object_in_every_frame']:.1f}% | {splits[0]} | {splits[1]} | {mark} |")
    lines += ["", f"The pick: fewest stray pixels among the settings within {choice['tolerance_points']:g} point(s) "
              f"of the best all-four score ({choice['best_all']:.1f}%): **{choice['pick']}**."]
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], choice: dict, path: Path) -> Path:
    """Adherence ("all", %) and stray pixels (% of the frame, log scale) against the guidance scale, a line per
    guider (the unguided setting at scale 1 starts every line), drawn with PIL."""
    from PIL import Image, ImageDraw, ImageFont

    panel_w, panel_h, margin = 520, 400, (64, 40, 24, 56)  # left, top, right, bottom
    image = Image.new("RGB", (panel_w * 2, panel_h + 60), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    scales = sorted({row["scale"] for row in rows.values()})
    x_lo, x_hi = min(scales) - 0.3, max(scales) + 0.3
    stray_lo = math.log10(max(min(max(r["stray_pixels"], 1e-4) for r in rows.values()), 1e-4)) - 0.2
    stray_hi = math.log10(max(max(r["stray_pixels"] for r in rows.values()), 1e-3)) + 0.2
    lowest_all = min(r["all"] for r in rows.values())
    panels = [("all", 'frame judge "all four" (%, mean of seen and held-out)',
               max(0.0, math.floor((lowest_all - 5) / 10) * 10), 100.0, lambda v: v),
              ("stray_pixels", "stray pixels (% of the frame, log scale)", stray_lo, stray_hi,
               lambda v: math.log10(max(v, 1e-4)))]
    unguided = next((r for r in rows.values() if r["guider"] == "none"), None)
    for p, (score, title, y_lo, y_hi, f) in enumerate(panels):
        left, top = p * panel_w + margin[0], margin[1]
        right, bottom = (p + 1) * panel_w - margin[2], panel_h - margin[3]

        def xy(scale, value):
            x = left + (scale - x_lo) / (x_hi - x_lo) * (right - left)
            return x, bottom - (f(value) - y_lo) / (y_hi - y_lo) * (bottom - top)

        draw.rectangle([left, top, right, bottom], outline="black")
        if score == "all":
            ticks = [(t, f"{t}") for t in range(int(y_lo), 101, 10)]
        else:  # 1, 2 and 5 of each decade
            ticks = [(math.log10(m * 10.0 ** e), f"{m * 10.0 ** e:g}")
                     for e in range(math.floor(y_lo), math.ceil(y_hi) + 1) for m in (1, 2, 5)
                     if y_lo <= math.log10(m * 10.0 ** e) <= y_hi]
        for t, label in ticks:
            y = bottom - (t - y_lo) / (y_hi - y_lo) * (bottom - top)
            draw.line([left, y, right, y], fill=(225, 225, 225))
            draw.text((left - 8, y), label, fill="black", font=font, anchor="rm")
        for s in scales:
            x = xy(s, 50)[0]
            draw.text((x, bottom + 6), f"{s:g}", fill="black", font=font, anchor="mt")
        draw.text(((left + right) / 2, bottom + 26), "guidance scale", fill="black", font=font, anchor="mt")
        draw.text(((left + right) / 2, 12), title, fill="black", font=font, anchor="mt")
        names = [g for g in COLOURS if g != "none" and any(r["guider"] == g for r in rows.values())]
        for k, name in enumerate(names):
            points = sorted([r for r in rows.values() if r["guider"] == name], key=lambda r: r["scale"])
            points = ([unguided] if unguided else []) + points
            pts = [xy(r["scale"], r[score]) for r in points]
            if len(pts) > 1:
                draw.line(pts, fill=COLOURS[name], width=3)
            for x, y in pts:
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=COLOURS[name])
            if p == 0:
                lx, ly = 20 + k * 200, panel_h + 8
                draw.line([lx, ly + 7, lx + 24, ly + 7], fill=COLOURS[name], width=3)
                draw.text((lx + 30, ly), name, fill="black", font=font)
        picked = rows.get(choice.get("pick"))
        if picked is not None:
            x, y = xy(picked["scale"], picked[score])
            draw.ellipse([x - 9, y - 9, x + 9, y + 9], outline="black", width=2)
    draw.text((20, panel_h + 34), f"circled: the pick ({choice.get('pick')}), the fewest stray pixels within "
              f"{choice.get('tolerance_points'):g} point of the best all-four score", fill=(90, 90, 90), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def main(argv: list[str] | None = None) -> dict:
    from tiny_dit.guiders import GUIDERS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder")
    parser.add_argument("--clip", default="assets/tiny-clip", help="the CLIP used as a judge")
    parser.add_argument("--guiders", default=",".join(GUIDERS), help=f"comma-separated, of {list(GUIDERS)}")
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES),
                        help="comma-separated guidance scales (1 = none, measured once)")
    parser.add_argument("--num-prompts", type=int, default=72, help="evaluation prompts per split (default 72)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="points of 'all four' below the best that still count as the best (default 1)")
    parser.add_argument("--dtype", default="auto", help="auto (the faster), float32 or bfloat16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/guidance"),
                        help="writes OUT.json, OUT.md and OUT.png")
    parser.add_argument("--resume", action="store_true", help="keep the settings already in OUT.json")
    args = parser.parse_args(argv)
    guiders = [g.strip() for g in args.guiders.split(",") if g.strip()]
    unknown = [g for g in guiders if g not in GUIDERS]
    if unknown:
        parser.error(f"--guiders: unknown {unknown}; choose from {list(GUIDERS)}")
    try:
        scales = [float(s) for s in args.scales.split(",")]
    except ValueError:
        parser.error(f"--scales must be comma-separated numbers, got {args.scales!r}")
    if any(not 1 <= s <= 30 for s in scales):
        parser.error(f"--scales must be from 1 to 30, got {args.scales!r}")

    import torch

    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.text_encoder import CLIPEncoder

    pipe = TinyDiTPipeline.from_pretrained(args.model).to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    dtype = pipe.set_dtype(args.dtype)
    clip = CLIPEncoder.from_pretrained(args.clip)
    json_path = args.out.with_suffix(".json")
    done = json.loads(json_path.read_text())["rows"] if args.resume and json_path.is_file() else {}
    header = {"model": args.model, "num_prompts": args.num_prompts, "seed": args.seed,
              "dtype": str(dtype).removeprefix("torch.")}

    def save(rows):
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({**header, "rows": rows}, indent=1))

    with torch.no_grad():
        rows = measure(pipe, clip, guiders, scales, args.num_prompts, args.seed, done, save)
    choice = pick(rows, args.tolerance)
    json_path.write_text(json.dumps({**header, "rows": rows, "choice": choice}, indent=1))
    table = markdown_table(rows, choice)
    args.out.with_suffix(".md").write_text(table)
    plot(rows, choice, args.out.with_suffix(".png"))
    print(table)
    print(f"wrote {json_path}, {args.out.with_suffix('.md')} and {args.out.with_suffix('.png')}")
    return {"rows": rows, "choice": choice}


if __name__ == "__main__":
    main()
