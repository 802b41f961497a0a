r"""The recipe study: short, comparable training runs on the image proxy, each a learning curve.

Why a proxy: the bundled model's failure is shape, and shape is what one frame shows. A still
(one random frame of a cached clip, held for one tubelet: 64 tokens instead of 256, attention 16x
cheaper) trains about 4x faster per step than a clip, so a recipe change can be ranked in a few
minutes of a 2-core machine. Every run trains from scratch on the same cache with the same seed
and is judged by the project's own frame judge (`tiny_dit.training.evaluate`, still prompts, both splits)
every --eval-every steps; the curves land in each run's log.jsonl.

    python benchmarks/recipe_study.py --study larger-world --cache cache/world --out runs/world-study \
        --only baseline "word embeddings" --jobs 2 --threads 1 --steps 3000 --eval-every 1000 --eval-prompts 72
    python benchmarks/recipe_study.py --study larger-world --out runs/world-study --report    # table + plot
    python benchmarks/recipe_study.py --study blobs --cache cache/shapes --out runs/study      # the first study

Runs that exist are resumed (each is a `tiny_dit.training.train --resume` run folder), so the study can be
stopped and continued. --jobs 2 runs two variants at once, one thread each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# Every run: stills only (the proxy), the small preset's shape and optimiser.
# "blobs": the first study, on the first world's small objects (the README's recipe study). Its baseline is
# bundle v0.3 (plain DiT block, AdamW 1e-3, noise shift 3); every other variant changes one or
# two things against it. bf16 was the faster precision on that machine.
BLOBS_COMMON = ["--preset", "small", "--batch-size", "0", "--image-batch-size", "32", "--lr", "1e-3",
                "--noise-shift", "3", "--warmup", "200", "--sample-every", "0",
                "--mixed-precision", "bf16", "--checkpoint-every", "250"]
BLOBS_VARIANTS = {
    "baseline": ["--no-conv-mlp"],
    "conv-mlp": ["--conv-mlp"],
    "conv-mlp + word dropout 0.3": ["--conv-mlp", "--word-dropout", "0.3"],
    "conv-mlp + lr 2e-3": ["--conv-mlp", "--lr", "2e-3"],
    "conv-mlp + shift 1": ["--conv-mlp", "--noise-shift", "1"],
    "conv-mlp + batch 64": ["--conv-mlp", "--image-batch-size", "64"],
    "conv-mlp + 8 x 160": ["--conv-mlp", "--model", "depth=8", "hidden_size=160", "num_heads=5"],
}
# "larger-world": the study of the default model trained from scratch on the larger objects and the CLIP
# with shape swaps. Its baseline is the small preset as it stands (depthwise-conv MLP, cross-attention to
# CLIP's final states); precision by measurement (auto).
WORLD_COMMON = ["--preset", "small", "--batch-size", "0", "--image-batch-size", "32", "--lr", "1e-3",
                "--noise-shift", "3", "--warmup", "200", "--sample-every", "0",
                "--mixed-precision", "auto", "--checkpoint-every", "250"]
WORLD_VARIANTS = {
    "baseline": [],
    "word embeddings": ["--model", "word_embeddings=true"],
    "object weight 4": ["--object-weight", "4"],
    "word embeddings + word dropout 0.3": ["--model", "word_embeddings=true", "--word-dropout", "0.3"],
}
STUDIES = {"blobs": (BLOBS_COMMON, BLOBS_VARIANTS), "larger-world": (WORLD_COMMON, WORLD_VARIANTS)}
ALL_VARIANTS = sorted({v for _, variants in STUDIES.values() for v in variants})


def folder_name(variant: str) -> str:
    return variant.replace(" + ", "+").replace(" ", "-")


def run_command(variant: str, args: argparse.Namespace) -> list[str]:
    common, variants = STUDIES[args.study]
    return [sys.executable, "-m", "tiny_dit.training.train", "--cache", str(args.cache),
            "--out", str(args.out / folder_name(variant)), "--resume", "--steps", str(args.steps),
            "--eval-every", str(args.eval_every), "--eval-prompts", str(args.eval_prompts),
            "--seed", str(args.seed), "--threads", str(args.threads), *common, *variants[variant]]


def run_all(args: argparse.Namespace) -> None:
    todo = [v for v in STUDIES[args.study][1] if not args.only or v in args.only]
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


def curves(out: Path, variants=ALL_VARIANTS) -> dict[str, list[dict]]:
    """variant -> its evaluation records (step, minutes of training, scores), in step order."""
    result = {}
    for variant in variants:
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
    data = curves(args.out, STUDIES[args.study][1])
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
    parser.add_argument("--study", choices=list(STUDIES), default="larger-world",
                        help="which study's variants and common settings (default larger-world)")
    parser.add_argument("--only", nargs="+", choices=ALL_VARIANTS, default=None, help="run only these variants")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument("--eval-prompts", type=int, default=24, help="prompts per split at each evaluation (default 24)")
    parser.add_argument("--steps", type=int, default=1500, help="steps per run (default 1500)")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations (default 250)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    parser.add_argument("--report", action="store_true", help="do not train: print the table of the runs in --out")
    parser.add_argument("--plot", type=Path, default=None, help="with --report: also draw the curves to this PNG")
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - set(STUDIES[args.study][1])
    if unknown:
        parser.error(f"--only {sorted(unknown)}: not variants of --study {args.study} ({list(STUDIES[args.study][1])})")
    report(args) if args.report else run_all(args)


if __name__ == "__main__":
    main()
