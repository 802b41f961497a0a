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
import torch

from tiny_dit.data.shapes import (BACKGROUNDS, COLORS, HELD_OUT_PAIRS, MOTIONS, NUM_FRAMES, SHAPES,
                                  all_attribute_combinations, caption, random_clip_spec, render_clips)
from tiny_dit.text_encoder import VIEW_FRAMES, TINY_CLIP_NAME, CLIPEncoder
from tiny_dit.training.evaluate import clip_retrieval_accuracy
from tiny_dit.training.loop import add_run_arguments, start_run, step_seed, train_simple


def off_palette_color(rng: np.random.Generator, background: str, min_distance: float = 100.0) -> str:
    """A random "#rrggbb" at least min_distance (RGB) from every colour of the vocabulary and from the
    background: an object colour that no caption word names, so a held-out pair is never drawn."""
    named = [*COLORS.values(), BACKGROUNDS[background]]
    while True:
        rgb = rng.integers(0, 256, size=3)
        if min(np.linalg.norm(rgb - np.array(c)) for c in named) >= min_distance:
            return "#" + "".join(f"{int(v):02x}" for v in rgb)


def colour_free_caption(shape: str, motion: str, background: str, phrasing: int) -> str:
    """A clip's caption without its colour word: "a star moving left on a black background"."""
    return " ".join(caption("", shape, motion, background, phrasing).split())


def clip_batch(batch_size: int, seed: int, hard_negatives: bool = True, colour_free: float = 0.25):
    """Frames (B, 4, 128, 128, 3), captions and attributes of B clips (the attributes a caption names:
    "color" is None for a colour-free one).

    With hard_negatives, a batch is four kinds of groups, each of clips that differ in one or two
    attributes only, so that the loss cannot drop without telling those apart:
      * shape swaps (3/8 of the batch, less when colour-free clips need the room): one clip drawn with every shape its colour may take (the held-out
        pairs never), the same position, size, speed and phrasing; the captions differ only in the
        shape word. Shape is the faintest attribute in the pixels and, without these, the one the
        text tower learned least (pooled cosine 0.96 between captions differing only in shape);
      * one colour-and-background group (1/4): every shape x motion of one colour on one background;
      * colour-free clips (`colour_free` of the batch, in shape swaps of one colour): objects in random
        colours that no word names, captioned without a colour ("a star moving left ..."). Without them
        the image tower tied shapes to the colours it saw them in and read a held-out pair's shape at
        55-59% (its text tower kept shape apart: a linear probe fit on seen captions read held-out ones 100%);
      * distinct random clips (the rest), so that colours and backgrounds meet many negatives too.
    A caption may fit several clips (a colour-free one fits the same shape, motion and background in a
    named colour): `caption_matches` says which, for the loss."""
    rng = np.random.default_rng(seed)
    if not hard_negatives:
        train = all_attribute_combinations("train")
        combos = [train[i] for i in rng.choice(len(train), size=batch_size, replace=False)]
        specs = [random_clip_spec(rng, *combo) for combo in combos]
        captions = [s.text for s in specs]
    else:
        specs, captions, used = [], [], set()

        def add(spec, text=None):
            specs.append(spec)
            captions.append(spec.text if text is None else text)
            used.add((spec.color, spec.shape, spec.motion, spec.background))

        def add_shape_swaps(base, shapes, end, colour_free=False):
            """`base` drawn with each of `shapes` (the same clip, another shape), until the batch holds `end`."""
            for shape in shapes[:end - len(specs)]:
                add(replace(base, shape=shape), colour_free_caption(shape, base.motion, base.background,
                                                                    base.phrasing) if colour_free else None)

        color, background = list(COLORS)[rng.integers(len(COLORS))], list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        group = [(color, s, m, background) for s in SHAPES for m in MOTIONS if (color, s) not in HELD_OUT_PAIRS]
        for i in rng.permutation(len(group))[:batch_size // 4]:
            add(random_clip_spec(rng, *group[i]))
        triples = [(c, m, b) for c in COLORS for m in MOTIONS for b in BACKGROUNDS
                   if not any((c, s, m, b) in used for s in SHAPES)]
        num_free = round(batch_size * colour_free)
        swaps_end = min(batch_size * 5 // 8, batch_size - num_free - batch_size // 8)  # leave room for the rest
        for i in rng.permutation(len(triples)):
            if len(specs) >= swaps_end:
                break
            c, m, b = triples[i]
            shapes = [s for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
            add_shape_swaps(random_clip_spec(rng, c, shapes[rng.integers(len(shapes))], m, b), shapes, swaps_end)
        free = [(m, b) for m in MOTIONS for b in BACKGROUNDS]  # colour-free clips, in shape swaps too
        for i in rng.permutation(len(free)):
            if len(specs) >= swaps_end + num_free:
                break
            motion, background = free[i]
            base = random_clip_spec(rng, "red", SHAPES[rng.integers(len(SHAPES))], motion, background)
            add_shape_swaps(replace(base, color=off_palette_color(rng, background)), SHAPES, swaps_end + num_free,
                            colour_free=True)
        rest = [c for c in all_attribute_combinations("train") if c not in used]
        for i in rng.choice(len(rest), size=max(0, batch_size - len(specs)), replace=False):
            add(random_clip_spec(rng, *rest[i]))
    frames = render_clips(specs, frame_indices=np.linspace(0, NUM_FRAMES - 1, VIEW_FRAMES).round().astype(int))
    return frames, captions, [{"color": s.color if s.color in COLORS else None, "shape": s.shape,
                               "motion": s.motion, "background": s.background} for s in specs]


def caption_matches(attributes: list[dict]) -> torch.Tensor:
    """(B, B) bool: caption j fits clip i, all the attributes caption j names being clip i's (a colour-free
    caption names no colour, and a clip in a colour no word names fits only colour-free captions)."""
    keys = ("shape", "motion", "background")
    return torch.tensor([[all(a[k] == b[k] for k in keys) and (b["color"] is None or b["color"] == a["color"])
                          for b in attributes] for a in attributes])


def contrastive_loss(video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     matches: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss with several right answers per row: cross-entropy against the
    uniform distribution over the captions that fit a clip, and over the clips a caption fits. With one
    match per row (the diagonal) it is open_clip's ClipLoss."""
    logits = logit_scale * video @ text.T  # (B, B): clip i against caption j
    targets = matches.float()
    clip_to_text = -(targets / targets.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    text_to_clip = -(targets.T / targets.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return (clip_to_text + text_to_clip) / 2


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
    parser.add_argument("--colour-free", type=float, default=0.25,
                        help="share of a batch drawn in colours no word names and captioned without a colour, in "
                             "shape swaps (default 0.25): teaches the image tower shapes apart from colours")
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

    def step_loss(step: int):
        frames, captions, attributes = clip_batch(args.batch_size, step_seed(args.seed, step),
                                                  hard_negatives=not args.no_hard_negatives,
                                                  colour_free=args.colour_free)
        video, text = clip.video_features(frames), clip.text_features(captions)
        loss = contrastive_loss(video, text, clip.model.logit_scale.exp(), caption_matches(attributes))
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
