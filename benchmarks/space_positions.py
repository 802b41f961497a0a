"""Other frame sizes without training: where to put the positions of a grid larger than the trained one.

    python benchmarks/space_positions.py                      # the bundle, 48 prompts per row (~12 min here)
    python benchmarks/space_positions.py --seeds 1 --json space_positions.json
    python benchmarks/space_positions.py --figure assets/space-positions.png --figure-only   # in docs/sora-tasks.md

The bundle learned 8 x 8 token grids (128 x 128 pixels). A 128 x 192 frame is 8 x 12 tokens, and
its positional embedding (`tiny_dit.model.get_3d_sincos_pos_embed`) must say where each token is.
Four ways, each a pair of (H',) and (W',) positions embedded by `sincos_embed_positions`:

    run-on      0 .. 11, one apart: columns 8 .. 11 sit where training never went
    stretched   the longer axis spread over the trained 0 .. 7, 7/11 apart (PixArt's per-axis scaling,
                and what `interpolate_time` does for time)
    fitted      both axes scaled by the same 7/11, the shorter one centred (no position outside 0 .. 7)
    centred     0 .. 11 shifted by -2: -2 .. 9, one apart (`centre_space`, on in the bundle)

Each is judged like `benchmarks/sora_tasks.py --mode sizes` (the frame judge on one sample per seen
prompt, 24 prompts per seed), plus the object's median width over height: the judge's shape
features do not see a stretched shape, this does (1 = as wide as tall, like every rendered shape).
The model runs unchanged except for the positions, which this script swaps in for the study.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sora_tasks.py beside this file
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from sora_tasks import measure_sizes  # noqa: E402

import tiny_dit.model as model_module  # noqa: E402
from tiny_dit.inside.views.drawing import stack  # noqa: E402
from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS, TinyDiTPipeline  # noqa: E402
from tiny_dit.training.evaluate import ATTRIBUTES  # noqa: E402
from tiny_dit.video import to_uint8  # noqa: E402


def run_on(h: int, w: int, span: int):
    return torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)


def stretched(h: int, w: int, span: int):
    return tuple(torch.arange(n, dtype=torch.float64) * ((span - 1) / (n - 1) if n > span else 1.0) for n in (h, w))


def fitted(h: int, w: int, span: int):
    scale = (span - 1) / (max(h, w) - 1) if max(h, w) > span else 1.0
    return tuple(torch.arange(n, dtype=torch.float64) * scale + (span - 1 - (n - 1) * scale) / 2 for n in (h, w))


def centred(h: int, w: int, span: int):
    return tuple(torch.arange(n, dtype=torch.float64) + (span - n) / 2 for n in (h, w))


VARIANTS = {"run-on": run_on, "stretched": stretched, "fitted": fitted, "centred": centred}
SIZES = ((16, 128, 192), (16, 192, 128))


def use_positions(variant, span: int):
    """A stand-in for get_3d_sincos_pos_embed with these spatial positions (16-frame clips: time as trained)."""
    def pos_embed(embed_dim, grid, time_span=None, space_span=None):
        Tg, Hg, Wg = grid
        return model_module.sincos_embed_positions(embed_dim, torch.arange(Tg, dtype=torch.float64),
                                                   *variant(Hg, Wg, span))
    return pos_embed


def measure(pipe: TinyDiTPipeline, variant_name: str | None, sizes, seeds: int,
            steps: int = DEFAULT_NUM_INFERENCE_STEPS) -> dict:
    """Judge accuracy (mean over seeds) and median aspect (over all clips) per size."""
    original = model_module.get_3d_sincos_pos_embed
    span = pipe.transformer.config.sample_size // pipe.transformer.config.patch_size
    if variant_name is not None:
        model_module.get_3d_sincos_pos_embed = use_positions(VARIANTS[variant_name], span)
    try:
        runs = [measure_sizes(pipe, sizes, 24, steps=steps, seed=seed) for seed in range(seeds)]
    finally:
        model_module.get_3d_sincos_pos_embed = original
    rows = {}
    for key in runs[0]:
        if isinstance(runs[0][key], dict):
            aspects = [a for run in runs for a in run[key]["aspects"]]
            rows[key] = {"accuracy": {a: float(np.mean([run[key]["accuracy"][a] for run in runs]))
                                      for a in (*ATTRIBUTES, "all")},
                         "aspect": float(np.median(aspects)) if aspects else None}
    return rows


FIGURE_PROMPTS = ("a green square moving left on a black background", "a red circle moving up on a white background",
                  "a yellow star growing on a black background", "a purple triangle moving right on a gray background")


@torch.no_grad()
def figure(pipe: TinyDiTPipeline, variants, out: Path, size=(128, 192)) -> None:
    """The middle frame of one 16-frame clip per prompt (columns), one row per way of placing positions."""
    original = model_module.get_3d_sincos_pos_embed
    span = pipe.transformer.config.sample_size // pipe.transformer.config.patch_size
    rows = []
    for name in variants:
        model_module.get_3d_sincos_pos_embed = use_positions(VARIANTS[name], span)
        try:
            frames = pipe(list(FIGURE_PROMPTS), height=size[0], width=size[1],
                          generator=torch.Generator().manual_seed(0)).frames  # (N, 16, H, W, 3)
        finally:
            model_module.get_3d_sincos_pos_embed = original
        middle = to_uint8(frames[:, frames.shape[1] // 2])  # (N, H, W, 3)
        cells = np.concatenate([np.pad(f, ((0, 0), (0, 4), (0, 0)), constant_values=255) for f in middle], axis=1)
        label = Image.new("RGB", (cells.shape[1], 18), "white")
        ImageDraw.Draw(label).text((4, 2), f"{name}", fill="black")
        rows.append(stack([label, Image.fromarray(cells)], gap=0))
    stack(rows, gap=6).save(out)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/space_positions.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder or Hub repo id")
    parser.add_argument("--seeds", type=int, default=2, help="24 prompts per seed (default 2)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--figure", type=Path, default=None,
                        help="also draw one 128 x 192 clip's middle frame per prompt and variant here (a PNG)")
    parser.add_argument("--figure-only", action="store_true", help="only draw --figure, measure nothing")
    args = parser.parse_args(argv)
    pipe = TinyDiTPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    if args.figure:
        figure(pipe, args.variants, args.figure)
    if args.figure_only:
        return {}
    results = {"trained size": measure(pipe, None, ((16, 128, 128),), args.seeds)}
    for name in args.variants:
        results[name] = measure(pipe, name, SIZES, args.seeds)
    print(f"\nframe judge, {24 * args.seeds} seen prompts per row; w/h: the object's median width over height")
    print(f"{'positions':14s} {'frames x H x W':15s} " + " ".join(f"{a:>10s}" for a in (*ATTRIBUTES, "all"))
          + f" {'w/h':>6s}")
    for name, rows in results.items():
        for key, row in rows.items():
            aspect = "-" if row["aspect"] is None else f"{row['aspect']:.2f}"
            print(f"{name:14s} {key:15s} " + " ".join(f"{row['accuracy'][a]:10.1%}" for a in (*ATTRIBUTES, "all"))
                  + f" {aspect:>6s}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "seeds": args.seeds, **results}, indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
