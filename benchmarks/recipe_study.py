"""The recipe study: short, comparable training runs on the image proxy, each a learning curve.

Why a proxy: the bundled model's failure is shape, and shape is what one frame shows. A still
(one random frame of a cached clip, held for one tubelet: 64 tokens instead of 256, attention 16x
cheaper) trains about 4x faster per step than a clip, so a recipe change can be ranked in a few
minutes of a 2-core machine. Every run trains from scratch on the same cache with the same seed
and is judged by the project's own frame judge (`tiny_dit.training.evaluate`, still prompts, both splits)
every --eval-every steps; the curves land in each run's log.jsonl.

    python benchmarks/recipe_study.py --cache cache/shapes --out runs/study              # all variants
    python benchmarks/recipe_study.py --cache cache/shapes --out runs/study --only conv-mlp
    python benchmarks/recipe_study.py --out runs/study --report                          # table + plot

Runs that exist are resumed (each is a `tiny_dit.training.train --resume` run folder), so the study can be
stopped and continued. --jobs 2 runs two variants at once, one thread each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# Every run: stills only (the proxy), the small preset's shape and optimiser, evaluation on 24 still
# prompts per split. The baseline is the recipe of the bundle of session 3 (plain DiT block, AdamW 1e-3,
# noise shift 3); every other variant changes one or two things against it.
COMMON = ["--preset", "small", "--batch-size", "0", "--image-batch-size", "32", "--lr", "1e-3",
          "--noise-shift", "3", "--warmup", "200", "--sample-every", "0", "--eval-prompts", "24",
          "--mixed-precision", "bf16", "--checkpoint-every", "250"]
VARIANTS = {
    "baseline": ["--no-conv-mlp"],
    "conv-mlp": ["--conv-mlp"],
    "conv-mlp + word dropout 0.3": ["--conv-mlp", "--word-dropout", "0.3"],
    "conv-mlp + lr 2e-3": ["--conv-mlp", "--lr", "2e-3"],
    "conv-mlp + shift 1": ["--conv-mlp", "--noise-shift", "1"],
    "conv-mlp + batch 64": ["--conv-mlp", "--image-batch-size", "64"],
    "conv-mlp + 8 x 160": ["--conv-mlp", "--model", "depth=8", "hidden_size=160", "num_heads=5"],
}


def folder_name(variant: str) -> str:
    return variant.replace(" + ", "+").replace(" ", "-")


def run_command(variant: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "tiny_dit.training.train", "--cache", str(args.cache),
            "--out", str(args.out / folder_name(variant)), "--resume", "--steps", str(args.steps),
            "--eval-every", str(args.eval_every), "--threads", str(args.threads), *COMMON, *VARIANTS[variant]]


def run_all(args: argparse.Namespace) -> None:
    todo = [v for v in VARIANTS if not args.only or v in args.only]
    running: list[subprocess.Popen] = []
    for variant in todo:
        if len(running) >= args.jobs:
            running.pop(0).wait()
        folder = args.out / folder_name(variant)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"{variant}: {' '.join(run_command(variant, args))}", flush=True)
        with open(folder / "train.out", "a") as log:
            running.append(subprocess.Popen(run_command(variant, args), stdout=log, stderr=subprocess.STDOUT))
    for process in running:
        process.wait()


def curves(out: Path) -> dict[str, list[dict]]:
    """variant -> its evaluation records (step, minutes of training, scores), in step order."""
    result = {}
    for variant in VARIANTS:
        log = out / folder_name(variant) / "log.jsonl"
        if not log.is_file():
            continue
        records, seconds, last_step = [], 0.0, 0
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "seconds_per_step" in record:  # training time only, evaluations excluded
                seconds += record["seconds_per_step"] * (record["step"] - last_step)
                last_step = record["step"]
            if "eval" in record:
                records.append({"step": record["step"], "minutes": seconds / 60, **record["eval"],
                                "loss": None})
        losses = [json.loads(line) for line in log.read_text().splitlines()]
        for r in records:  # the mean training loss of the 50 steps before each evaluation
            near = [x["loss"] for x in losses if "loss" in x and r["step"] - 50 < x["step"] <= r["step"]]
            r["loss"] = sum(near) / len(near) if near else None
        result[variant] = records
    return result


def report(args: argparse.Namespace) -> None:
    data = curves(args.out)
    lines = ["| variant | step | minutes | loss | shape seen / held-out | colour seen / held-out | all seen |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for variant, records in data.items():
        for r in records:
            lines.append(f"| {variant} | {r['step']:,} | {r['minutes']:.1f} | {r['loss']:.4f} | "
                         f"{r['seen/shape']:.0%} / {r['held-out/shape']:.0%} | "
                         f"{r['seen/color']:.0%} / {r['held-out/color']:.0%} | {r['seen/all']:.0%} |")
    table = "\n".join(lines)
    print(table)
    (args.out / "study.md").write_text(table + "\n")
    if args.plot:
        plot(data, args.plot)
        print(f"wrote {args.plot}")


def plot(data: dict[str, list[dict]], path: Path, size=(900, 420)) -> None:
    """Shape accuracy (seen pairs) against training minutes, one line per variant (PIL, no matplotlib)."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 60, 230, 20, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    max_minutes = max((r["minutes"] for records in data.values() for r in records), default=1.0) or 1.0

    def xy(minutes: float, accuracy: float) -> tuple[float, float]:
        return (left + (width - left - right) * minutes / max_minutes,
                height - bottom - (height - top - bottom) * accuracy)

    for k in range(0, 11, 2):  # horizontal grid every 20%
        y = xy(0, k / 10)[1]
        draw.line([(left, y), (width - right, y)], fill=(225, 225, 225))
        draw.text((8, y - 6), f"{k * 10}%", fill="black")
    draw.text((left, height - bottom + 8), "0", fill="black")
    draw.text((width - right - 40, height - bottom + 8), f"{max_minutes:.0f} min", fill="black")
    draw.text((left + 120, height - bottom + 24), "training minutes (2 cores) -> shape accuracy, seen pairs, "
              "still prompts", fill="black")
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127)]
    for i, (variant, records) in enumerate(data.items()):
        color = palette[i % len(palette)]
        points = [xy(r["minutes"], r["seen/shape"]) for r in records]
        if len(points) > 1:
            draw.line(points, fill=color, width=3)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((width - right + 10, top + 16 * i), variant, fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("cache/shapes"), help="latent cache of shapes-world clips")
    parser.add_argument("--out", type=Path, default=Path("runs/study"), help="one run folder per variant here")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None, help="run only these variants")
    parser.add_argument("--steps", type=int, default=1500, help="steps per run (default 1500)")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations (default 250)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    parser.add_argument("--report", action="store_true", help="do not train: print the table of the runs in --out")
    parser.add_argument("--plot", type=Path, default=None, help="with --report: also draw the curves to this PNG")
    args = parser.parse_args(argv)
    report(args) if args.report else run_all(args)


if __name__ == "__main__":
    main()
