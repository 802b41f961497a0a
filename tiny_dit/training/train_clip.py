"""Train the tiny CLIP on shapes-world clips (contrastive, open_clip's ClipLoss).

Each step renders a fresh batch of clips, seeded by the step, so a resumed run
sees exactly the data it would have seen. Half of a batch is groups that share
colour and background and cover every shape x motion ("hard negatives"), so
the loss only drops if shapes and motions are told apart. Captions use every
phrasing of the spec, so the text tower learns the words. The image tower sees
each clip through the "interleave" video view (see tiny_dit/text_encoder.py).

    python -m tiny_dit.training.train_clip --out assets/tiny-clip --steps 800
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip

from tiny_dit.data.shapes import (BACKGROUNDS, COLORS, HELD_OUT_PAIRS, MOTIONS, NUM_FRAMES, SHAPES,
                                  all_attribute_combinations, random_clip_spec, render_clips)
from tiny_dit.text_encoder import VIEW_FRAMES, TINY_CLIP_NAME, CLIPEncoder
from tiny_dit.training.evaluate import clip_retrieval_accuracy
from tiny_dit.training.loop import add_run_arguments, start_run, step_seed, train_simple


def clip_batch(batch_size: int, seed: int, hard_negatives: bool = True):
    """Frames (B, 4, 128, 128, 3) and captions of B clips with distinct attributes.

    With hard_negatives, a batch is three kinds of groups, each of clips that differ in one or two
    attributes only, so that the loss cannot drop without telling those apart:
      * shape swaps (half the batch): one clip drawn with every shape its colour may take (the held-out
        pairs never), the same position, size, speed and phrasing; the captions differ only in the
        shape word. Shape is the faintest attribute in the pixels and, without these, the one the
        text tower learned least (pooled cosine 0.96 between captions differing only in shape);
      * one colour-and-background group (a quarter): every shape x motion of one colour on one background;
      * distinct random clips (the rest), so that colours and backgrounds meet many negatives too.
    Every clip's (colour, shape, motion, background) is distinct: no caption fits another clip."""
    rng = np.random.default_rng(seed)
    if not hard_negatives:
        train = all_attribute_combinations("train")
        combos = [train[i] for i in rng.choice(len(train), size=batch_size, replace=False)]
        specs = [random_clip_spec(rng, *combo) for combo in combos]
    else:
        specs, used = [], set()

        def add(spec):
            specs.append(spec)
            used.add((spec.color, spec.shape, spec.motion, spec.background))

        color, background = list(COLORS)[rng.integers(len(COLORS))], list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        group = [(color, s, m, background) for s in SHAPES for m in MOTIONS if (color, s) not in HELD_OUT_PAIRS]
        for i in rng.permutation(len(group))[:batch_size // 4]:
            add(random_clip_spec(rng, *group[i]))
        triples = [(c, m, b) for c in COLORS for m in MOTIONS for b in BACKGROUNDS
                   if not any((c, s, m, b) in used for s in SHAPES)]
        for i in rng.permutation(len(triples)):
            if len(specs) >= batch_size * 3 // 4:
                break
            c, m, b = triples[i]
            shapes = [s for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
            base = random_clip_spec(rng, c, shapes[rng.integers(len(shapes))], m, b)
            for s in shapes[:batch_size - len(specs)]:
                add(replace(base, shape=s))  # the same clip, another shape
        rest = [c for c in all_attribute_combinations("train") if c not in used]
        for i in rng.choice(len(rest), size=max(0, batch_size - len(specs)), replace=False):
            add(random_clip_spec(rng, *rest[i]))
    frames = render_clips(specs, frame_indices=np.linspace(0, NUM_FRAMES - 1, VIEW_FRAMES).round().astype(int))
    return frames, [s.text for s in specs]


def model_config(name_or_file: str) -> dict:
    """An open_clip model config by name, or read from a .json file."""
    if name_or_file.endswith(".json"):
        return json.loads(Path(name_or_file).read_text())
    config = open_clip.get_model_config(name_or_file)
    if config is None:
        raise SystemExit(f"--model {name_or_file!r}: not an open_clip model config name nor a .json file")
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tiny_dit.training.train_clip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("assets/tiny-clip"),
                        help="where the trained model is saved (open_clip folder layout)")
    add_run_arguments(parser, run_dir="runs/tiny-clip", steps=800, lr=1e-3)
    parser.add_argument("--model", default=TINY_CLIP_NAME,
                        help="open_clip model config: a name open_clip knows, or a .json file of one (for studies)")
    parser.add_argument("--batch-size", type=int, default=120,
                        help="clips per step (at most 360)")
    parser.add_argument("--no-hard-negatives", action="store_true",
                        help="draw batches at random instead of in shape x motion groups")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from the weights of this saved CLIP folder (a new run, not a resume)")
    parser.add_argument("--freeze-text", action="store_true",
                        help="train only the image tower (and the logit scale): the text tower, and with it "
                             "every text embedding a DiT was trained on, stays exactly as it is (use with --init)")
    args = parser.parse_args(argv)
    if args.freeze_text and not args.init:
        parser.error("--freeze-text needs --init: a frozen random text tower would learn nothing")
    start_run(args)

    clip = CLIPEncoder.from_pretrained(args.init) if args.init else \
        CLIPEncoder(model_config(args.model))
    if args.freeze_text:  # the DiT conditions on the text tower: keep it, sharpen only what sees the clips
        for name, param in clip.model.named_parameters():
            param.requires_grad_(name.startswith("visual.") or name == "logit_scale")
    loss_fn = open_clip.ClipLoss()

    def step_loss(step: int):
        frames, captions = clip_batch(args.batch_size, step_seed(args.seed, step),
                                      hard_negatives=not args.no_hard_negatives)
        video, text = clip.video_features(frames), clip.text_features(captions)
        loss = loss_fn(video, text, clip.model.logit_scale.exp())
        return loss, {"logit_scale": clip.model.logit_scale.exp().item()}

    train_simple(clip, step_loss, args, weight_decay=0.1, throughput=("clips_per_s", args.batch_size),
                 desc="tiny CLIP")
    clip.save_pretrained(args.out)
    metrics = {split: clip_retrieval_accuracy(clip, split=split) for split in ("train", "heldout")}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"saved {args.out}/ ; zero-shot caption retrieval accuracy (among 432 captions):")
    for split, accuracy in metrics.items():
        print(f"  {'seen pairs' if split == 'train' else 'held-out pairs':15s}",
              "  ".join(f"{k} {v:.1%}" for k, v in accuracy.items()))


if __name__ == "__main__":
    main()
