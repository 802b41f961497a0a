"""Where "moving left" is lost: the same "left" prompts sampled with one text input swapped at a time.

The DiT reads a prompt twice: its CLIP token states through cross-attention, and its pooled embedding through
adaLN (with `pooled_conditioning`). This samples 20 "left" prompts (every colour and shape of the seen pairs,
the three backgrounds in turn) with two seeds each, and the frame judge reads the motion of each clip, for:

  own        the prompt's own token states and pooled embedding;
  still      its token states, with the pooled embedding of the same caption without a motion (a still's caption);
  right      its token states, with the pooled embedding of the same caption saying "right";
  no-left    the caption saying "moving" with no direction ("a red circle moving on ...": tokens and pooled).

With --first-step it measures instead where the direction is lost: the model's prediction of the clean clip at
pure noise (where the sampler starts), for the 20 prompts with black backgrounds, one noise draw, decoded, and
the travel of its bright pixels' centre from the first frame to the last, with the token states and the pooled
embedding of "left", "right" and the still captions crossed; and with --cache, the error of the prediction on
cached clips of each direction at noise levels 0.95, 0.8 and 0.6, with the clip's own caption, the still caption
and the opposite direction's.

    python benchmarks/left_study.py --model assets/tiny-dit-shapes --json left_study.json
    python benchmarks/left_study.py --first-step --cache cache/world
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from tiny_dit.autoencoder import decode_latents
from tiny_dit.data.shapes import BACKGROUNDS, COLORS, HELD_OUT_PAIRS, SHAPES, caption
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.training.evaluate import judge_frames, to_uint8

VARIANTS = ("own", "still", "right", "no-left")


def left_prompts() -> list[tuple[str, str, str]]:
    """(colour, shape, background) of the 20 seen pairs, the backgrounds in turn."""
    pairs = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
    return [(c, s, list(BACKGROUNDS)[i % len(BACKGROUNDS)]) for i, (c, s) in enumerate(pairs)]


def embeddings(pipe: TinyDiTPipeline, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    states, mask, pooled = pipe.encode_prompt(prompts, do_classifier_free_guidance=False)[:3]
    return states, mask, pooled


def centre_travel(pipe: TinyDiTPipeline, latents: torch.Tensor) -> float:
    """Mean travel (px) of the bright pixels' centre, first frame to last, of latents decoded (black background)."""
    brightness = decode_latents(pipe.vae, latents).sum(-1)  # (N, T, H, W)
    columns = torch.arange(brightness.shape[-1], dtype=brightness.dtype)
    centre = (brightness.sum(2) * columns).sum(-1) / brightness.sum((2, 3))  # (N, T)
    return float((centre[:, -1] - centre[:, 0]).mean())


def first_step_travel(pipe: TinyDiTPipeline) -> dict:
    """{tokens of: {pooled of: travel}}: the clean-clip prediction at pure noise, the two text inputs crossed."""
    pairs = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
    embedded = {m or "still": pipe.encode_prompt([caption(c, s, m, "black") for c, s in pairs],
                                                 do_classifier_free_guidance=False) for m in ("left", "right", None)}
    noise = torch.randn(len(pairs), 4, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    timestep = torch.full((len(pairs),), 1000.0)
    table = {}
    for tokens, (states, mask, *_) in embedded.items():
        table[tokens] = {}
        for pooled_of, (_, _, pooled, *_) in embedded.items():
            velocity = pipe.transformer(noise, timestep, encoder_hidden_states=states, encoder_attention_mask=mask,
                                        pooled_projections=pooled).sample
            table[tokens][pooled_of] = round(centre_travel(pipe, noise - velocity), 1)  # x0 = x_1 - 1 * v
        print(f"first step, token states of {tokens:5s}: " + ", ".join(
            f"pooled of {k} {v:+.1f} px" for k, v in table[tokens].items()), flush=True)
    return table


def denoising_errors(pipe: TinyDiTPipeline, cache_dir: Path, clips: int = 48) -> dict:
    """{direction: {noise level: [error with own, still, opposite caption]}} on cached clips, one noise draw."""
    from tiny_dit.training.latent_cache import LatentCache

    cache = LatentCache.load(cache_dir)
    rows = [json.loads(line) for line in (Path(cache_dir) / "captions.jsonl").read_text().splitlines()]
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    table = {}
    for direction in opposite:
        idx = [i for i, r in enumerate(rows) if r["motion"] == direction][:clips]
        x0 = cache.latents[idx].float()
        captions = [[caption(rows[i]["color"], rows[i]["shape"], m, rows[i]["background"]) for i in idx]
                    for m in (direction, None, opposite[direction])]
        embedded = [pipe.encode_prompt(c, do_classifier_free_guidance=False)[:3] for c in captions]
        table[direction] = {}
        for level in (0.95, 0.8, 0.6):
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
            noisy = (1 - level) * x0 + level * noise
            errors = []
            for states, mask, pooled in embedded:
                velocity = pipe.transformer(noisy, torch.full((len(idx),), level * 1000), encoder_hidden_states=states,
                                            encoder_attention_mask=mask, pooled_projections=pooled).sample
                errors.append(round(float(((noisy - level * velocity - x0) ** 2).mean()), 4))
            table[direction][level] = errors
        print(f"{direction:5s} error own / still / opposite: " + "; ".join(
            f"{level}: {' / '.join(map(str, e))}" for level, e in table[direction].items()), flush=True)
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"which of {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--first-step", action="store_true",
                        help="measure the prediction at pure noise (and with --cache, the denoising errors) instead")
    parser.add_argument("--cache", type=Path, default=None, help="with --first-step: a latent cache of the shapes world")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {','.join(VARIANTS)}")
    pipe = TinyDiTPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    if args.first_step:
        pipe.transformer.float()
        results = {"first_step_travel": first_step_travel(pipe)}
        if args.cache:
            results["denoising_errors"] = denoising_errors(pipe, args.cache)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return results
    items = left_prompts()
    left = [caption(c, s, "left", b) for c, s, b in items]
    inputs = {"own": (left, left), "still": (left, [caption(c, s, None, b) for c, s, b in items]),
              "right": (left, [caption(c, s, "right", b) for c, s, b in items]),
              "no-left": ([f"a {c} {s} moving on a {b} background" for c, s, b in items],) * 2}
    results = {}
    for name in variants:
        token_prompts, pooled_prompts = inputs[name]
        states, mask, _ = embeddings(pipe, token_prompts)
        pooled = embeddings(pipe, pooled_prompts)[2]
        motions = collections.Counter()
        for seed in range(args.seeds):
            generator = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(len(items))]
            clips = pipe(prompt_embeds=states, prompt_attention_mask=mask, pooled_prompt_embeds=pooled,
                         generator=generator).frames
            motions.update(judge_frames(clip)["motion"] for clip in to_uint8(clips))
        total = sum(motions.values())
        results[name] = {"clips": total, "left": motions["left"] / total, "motions": dict(motions)}
        print(f"{name:8s} left {motions['left']:2d}/{total}  {dict(motions)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
