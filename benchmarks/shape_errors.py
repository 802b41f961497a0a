"""Where shape goes wrong: the frame judge's shape per prompt, as a confusion table and by motion.

    python benchmarks/shape_errors.py                                   # the bundle
    python benchmarks/shape_errors.py --model runs/long/pipeline --wrong wrong.png

The same prompts and seeds as `python -m tiny_dit.training.evaluate --num-prompts 72` (the small set, 72 per split),
the pipeline's defaults.
Prints, per split, how often each asked shape was judged as each shape (or "fragments", "blob"), and shape accuracy
per motion and per shape. --wrong writes the first, middle and last frame of every wrongly judged clip
(a column each, eight to a row, in the order printed) to look at: is the judge or the model wrong?
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout

from tiny_dit import TinyDiTPipeline  # noqa: E402
from tiny_dit.training.evaluate import evaluation_batches, evaluation_prompts, judge_frames  # noqa: E402


def shape_errors(pipe: TinyDiTPipeline, num_prompts: int = 72, batch_size: int = 8, seed: int = 0):
    """({split: {"confusion", "by_motion", "by_shape"}}, [(prompt, judged shape, clip)] of the wrong ones)."""
    report, wrong = {}, []
    for split in ("seen", "held-out"):
        prompts = evaluation_prompts(split, num_prompts, seed)
        confusion = collections.Counter()
        by = {"by_motion": collections.defaultdict(lambda: [0, 0]), "by_shape": collections.defaultdict(lambda: [0, 0])}
        for batch, clips in evaluation_batches(pipe, prompts, seed, batch_size):
            for prompt, clip in zip(batch, clips):
                judged = judge_frames(clip)["shape"]
                confusion[f"{prompt['shape']} -> {judged}"] += 1
                for key, value in (("by_motion", prompt["motion"]), ("by_shape", prompt["shape"])):
                    by[key][value][0] += judged == prompt["shape"]
                    by[key][value][1] += 1
                if judged != prompt["shape"]:
                    wrong.append((f"{split}: {prompt['text']}", judged, clip))
        report[split] = {"confusion": dict(sorted(confusion.items())),
                         **{key: {v: f"{right}/{n}" for v, (right, n) in table.items()} for key, table in by.items()}}
    return report, wrong


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder")
    parser.add_argument("--num-prompts", type=int, default=72, help="prompts per split (default 72)")
    parser.add_argument("--wrong", type=Path, default=None, help="a PNG of wrongly judged clips")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = TinyDiTPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    report, wrong = shape_errors(pipe, args.num_prompts)
    for text, judged, _ in wrong:
        print(f"{text} -> {judged}")
    print(json.dumps(report, indent=1))
    if args.wrong and wrong:
        from PIL import Image

        columns = [np.concatenate([c[0], c[len(c) // 2], c[-1]], axis=0) for _, _, c in wrong]  # (3H, W, 3) each
        columns += [np.zeros_like(columns[0])] * (-len(columns) % 8)  # fill the last row
        rows = [np.concatenate(columns[k:k + 8], axis=1) for k in range(0, len(columns), 8)]
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.wrong)
        print(f"wrote {args.wrong}")


if __name__ == "__main__":
    main()
