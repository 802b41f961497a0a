"""How well a CLIP tells the shapes world's attributes apart, and which tower fails where.

For one CLIP folder, on freshly rendered clips of the larger world (seen and held-out colour-shape pairs):
  * choice: each attribute picked among its alternatives (the clip's own caption, that word swapped);
  * retrieval: the best of all 432 canonical captions, attribute by attribute;
  * caption cosines: the mean pooled cosine of captions that differ in one word only (near 1: the text
    tower barely tells that attribute's words apart);
  * linear probes for shape, fit on seen pairs and read on held-out ones, on the image features and on
    the text features apart: which tower ties a shape to the colours it was seen in.

    python benchmarks/clip_measures.py --clip assets/tiny-clip --json runs/clip-measures.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from tiny_dit.data.shapes import SHAPES, all_attribute_combinations, caption, render_dataset
from tiny_dit.text_encoder import CLIPEncoder
from tiny_dit.training.evaluate import attribute_choice_accuracy, caption_cosines, clip_retrieval_accuracy


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, steps: int = 300) -> float:
    """Accuracy on (test_x, test_y) of a softmax classifier fit on (train_x, train_y) with Adam."""
    torch.manual_seed(0)
    classifier = torch.nn.Linear(train_x.shape[1], int(train_y.max()) + 1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(classifier(train_x), train_y).backward()
            optimizer.step()
    return (classifier(test_x).argmax(1) == test_y).float().mean().item()


@torch.no_grad()
def shape_probes(clip: CLIPEncoder, num_clips: int = 1024, seed: int = 5) -> dict[str, float]:
    """Shape read by a linear probe on held-out pairs, fit on seen ones: image features (rendered clips)
    and text features (every canonical combination in all phrasings)."""
    def video(split: str, n: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        features, shapes = [], []
        for frames, specs in render_dataset(n, seed=s, split=split):
            features.append(clip.video_features(frames))
            shapes += [SHAPES.index(spec.shape) for spec in specs]
        return torch.cat(features), torch.tensor(shapes)

    def text(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        combos = [(c, p) for c in all_attribute_combinations(split) for p in range(5)]
        return (clip.text_features([caption(*c, phrasing=p) for c, p in combos]),
                torch.tensor([SHAPES.index(c[1]) for c, _ in combos]))

    return {"image": linear_probe_accuracy(*video("train", num_clips, seed), *video("heldout", num_clips // 4, seed + 1)),
            "text": linear_probe_accuracy(*text("train"), *text("heldout"))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="assets/tiny-clip", help="a CLIP folder (open_clip layout)")
    parser.add_argument("--num-clips", type=int, default=512, help="rendered clips per split (default 512)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    clip = CLIPEncoder.from_pretrained(args.clip)
    with torch.no_grad():
        results = {"clip": args.clip,
                   "choice": {split: attribute_choice_accuracy(clip, args.num_clips, split=split)
                              for split in ("train", "heldout")},
                   "retrieval": {split: clip_retrieval_accuracy(clip, args.num_clips, split=split)
                                 for split in ("train", "heldout")},
                   "caption_cosines": caption_cosines(clip),
                   "shape_probe_seen_to_held_out": shape_probes(clip)}
    for measure in ("choice", "retrieval"):
        for split, accuracy in results[measure].items():
            print(f"{measure:9s} {'seen' if split == 'train' else 'held-out':8s} "
                  + "  ".join(f"{k} {v:.1%}" for k, v in accuracy.items()))
    print("caption cosines  " + "  ".join(f"{k} {v:.2f}" for k, v in results["caption_cosines"].items()))
    print("shape probe, seen -> held-out  " + "  ".join(
        f"{k} {v:.1%}" for k, v in results["shape_probe_seen_to_held_out"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
