"""How much compute a training run of a TinyDiT preset takes, and how long that is on a GPU.

    python benchmarks/flops.py                       # the base preset on a T4 (docs/training.md's figure)
    python benchmarks/flops.py --preset small --peak 65 --achieved 10 25
    python benchmarks/flops.py --latent 4 16 16 16 --text-width 512 --pooled-width 512 --context 77   # TAESD/SD VAE + ViT-B-32

Counts the matrix-multiply FLOPs of one training step (forward + backward = 3 x forward: the backward
pass computes gradients for both the activations and the weights, each as costly as the forward;
layers fed straight by the inputs need no input gradient, so the measured count is a little lower):
every Linear layer, self-attention scores and weighted sums (2 N^2 D per block), cross-attention to
the CLIP tokens. The count is done twice: by formula below, and by torch's FlopCounterMode on a
forward/backward of the real model on the `meta` device (no memory, no compute). Element-wise work
(LayerNorm, GELU, softmax, the optimiser, the EMA) is not counted: it is memory-bound and is part of why
a GPU reaches only a fraction of its peak. The time is FLOPs / an *achieved* throughput you choose.

It also measures the activations a step keeps for the backward pass (all saved tensors of a
forward on `meta`, attention probabilities excluded since the GPU's fused attention does not store
them), as all-float16 (lower bound) and all-float32 (upper bound); mixed precision lies in between.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from diffusers.utils import logging  # noqa: E402

from tiny_dit.model import TINY_DIT_PRESETS, TinyDiT, tiny_dit_preset  # noqa: E402

logging.set_verbosity_error()  # no notes about casting the (meta) model to float16


def build(preset: str, latent: tuple[int, int, int, int], text_width: int, pooled_width: int,
          dtype=torch.float32) -> TinyDiT:
    channels, frames, height, _ = latent
    with torch.device("meta"):
        return tiny_dit_preset(preset, in_channels=channels, num_frames=frames, sample_size=height,
                               text_embed_dim=text_width, pooled_embed_dim=pooled_width).to(dtype)


def forward_macs(model: TinyDiT, latent, context: int) -> dict[str, float]:
    """Multiply-accumulates of one forward pass for one clip, by part (the formula)."""
    c = model.config
    _, frames, height, width = latent
    n = model.num_tokens(frames, height, width)  # tokens per clip
    d, tubelet = c.hidden_size, c.in_channels * c.patch_size_t * c.patch_size ** 2
    mlp = int(d * c.mlp_ratio)
    per_block = {
        "attention projections (qkv, out)": n * d * 3 * d + n * d * d,
        "attention scores and sums (2 N^2 D)": 2 * n * n * d if c.attention_type == "full" else None,
        "MLP": 2 * n * d * mlp + (9 * n * mlp if c.conv_mlp else 0),  # + its depthwise 3 x 3
        "cross-attention": (2 * n * d * d + context * c.text_embed_dim * 2 * d + 2 * n * context * d
                            if c.cross_attention else 0),
        "adaLN (per clip)": d * 6 * d,
    }
    if per_block["attention scores and sums (2 N^2 D)"] is None:  # factorized: spatial / temporal blocks
        tg, hg, wg = model.token_grid(frames, height, width)
        per_block["attention scores and sums (2 N^2 D)"] = (2 * n * hg * wg * d + 2 * n * tg * d) / 2
    macs = {k: v * c.depth for k, v in per_block.items()}
    macs["patch embedding + final layer"] = 2 * n * tubelet * d + 2 * d * d
    macs["timestep + pooled-text embeddings"] = 256 * d + d * d + c.pooled_embed_dim * d + d * d
    return macs


def measured(model: TinyDiT, latent, context: int) -> tuple[float, int]:
    """(forward+backward FLOPs for one clip by FlopCounterMode, saved-activation bytes for one clip)."""
    from torch.utils.flop_counter import FlopCounterMode

    dtype = next(model.parameters()).dtype
    channels, frames, height, width = latent
    params = {id(p) for p in model.parameters()}
    seen, saved = set(), [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(t) not in params and id(base) not in params and id(base) not in seen:
            seen.add(id(base))
            keep.append(base)  # keep it alive, so that ids stay unique
            if not (base.dim() >= 2 and base.shape[-1] == base.shape[-2] == base.shape[-1] > context):
                saved[0] += base.numel() * base.element_size()  # attention probabilities (N x N) left out
        return t

    keep: list[torch.Tensor] = []
    with torch.device("meta"):
        x = torch.randn(1, channels, frames, height, width, dtype=dtype)
        cond = dict(encoder_hidden_states=torch.randn(1, context, model.config.text_embed_dim, dtype=dtype),
                    pooled_projections=torch.randn(1, model.config.pooled_embed_dim, dtype=dtype),
                    encoder_attention_mask=torch.ones(1, context, dtype=torch.bool))
        with FlopCounterMode(display=False) as counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = model(x, timestep=torch.full((1,), 500.0), **cond).sample
            out.float().square().mean().backward()
    return counter.get_total_flops(), saved[0]


# The presets' training defaults, as tiny_dit.training.train.PRESETS sets them (tests/test_train.py checks that they
# agree): written out here so that a FLOP count does not import the training script and accelerate.
PRESET_TRAINING = {
    "tiny": {"batch_size": 8, "image_batch_size": 0, "steps": 200},
    "small": {"batch_size": 16, "image_batch_size": 32, "steps": 20000},
    "base": {"batch_size": 64, "image_batch_size": 64, "steps": 50000},
}


def duration(seconds: float) -> str:
    return f"{seconds / 3600:5.1f} h" if seconds >= 3600 else f"{seconds / 60:5.1f} min"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(TINY_DIT_PRESETS), default="base")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per step (default: the preset's training default)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    parser.add_argument("--image-batch-size", type=int, default=None,
                        help="still images per step (one tubelet long), default: the preset's")
    parser.add_argument("--latent", type=int, nargs=4, default=(4, 16, 32, 32), metavar=("C", "T", "H", "W"),
                        help="latent clip shape (default 4 16 32 32: the bundled autoencoder, 16 x 128 x 128 frames)")
    parser.add_argument("--text-width", type=int, default=128, help="CLIP token-state width (tiny CLIP 128)")
    parser.add_argument("--pooled-width", type=int, default=128, help="CLIP pooled width (tiny CLIP 128)")
    parser.add_argument("--context", type=int, default=32, help="CLIP tokens (tiny CLIP 32)")
    parser.add_argument("--gpu", default="T4", help="name of the GPU, for the printout")
    parser.add_argument("--peak", type=float, default=65.0, help="peak float16 tensor TFLOP/s (T4: 65)")
    parser.add_argument("--achieved", type=float, nargs="+", default=[15.0, 25.0, 30.0],
                        help="achieved TFLOP/s to convert FLOPs into time (default 15 25 30)")
    parser.add_argument("--memory", type=float, default=15.0, help="usable GPU memory in GB (T4: 15)")
    args = parser.parse_args(argv)
    batch, steps, stills = args.batch_size, args.steps, args.image_batch_size
    preset = PRESET_TRAINING[args.preset]
    batch = preset["batch_size"] if batch is None else batch
    steps = preset["steps"] if steps is None else steps
    stills = preset["image_batch_size"] if stills is None else stills
    latent = tuple(args.latent)

    model = build(args.preset, latent, args.text_width, args.pooled_width)
    c = model.config
    n = model.num_tokens(*latent[1:])
    grid = model.token_grid(*latent[1:])
    params = sum(p.numel() for p in model.parameters())
    macs = forward_macs(model, latent, args.context)
    fwd = 2 * sum(macs.values())  # FLOPs = 2 x MACs
    still_latent = (latent[0], c.patch_size_t, *latent[2:])  # a still: one tubelet of frames
    fwd_still = 2 * sum(forward_macs(model, still_latent, args.context).values())
    step_flops = 3 * fwd * batch + 3 * fwd_still * stills
    counted, saved32 = measured(model, latent, args.context)
    _, saved16 = measured(build(args.preset, latent, args.text_width, args.pooled_width, torch.float16),
                          latent, args.context)

    print(f"preset {args.preset}: {c.hidden_size} wide x {c.depth} blocks, {c.num_heads} heads, "
          f"cross-attention {c.cross_attention}, {params / 1e6:.1f}M parameters")
    print(f"latents {'x'.join(map(str, latent))} / tubelets {c.patch_size_t}x{c.patch_size}x{c.patch_size} "
          f"-> {grid[0]}x{grid[1]}x{grid[2]} = {n} tokens per clip")
    print("\nforward FLOPs per clip (matrix multiplies):")
    for part, value in macs.items():
        print(f"  {part:<38} {2 * value / 1e9:8.2f} GFLOP")
    print(f"  {'total':<38} {fwd / 1e9:8.2f} GFLOP   (the rule of thumb 2 x parameters x tokens: "
          f"{2 * params * n / 1e9:.1f})")
    print(f"forward + backward, per clip: {3 * fwd / 1e9:.1f} GFLOP by formula, {counted / 1e9:.1f} GFLOP by "
          f"torch FlopCounterMode" + (" (which counts a depthwise convolution's backward pass as if it were dense: "
                                      "768x too much for conv_mlp's, so it overcounts here)" if c.conv_mlp else ""))
    print(f"a still image ({model.num_tokens(*still_latent[1:])} tokens): {3 * fwd_still / 1e9:.1f} GFLOP forward + "
          f"backward")
    print(f"one step ({batch} clips + {stills} stills): {step_flops / 1e12:.2f} TFLOP; {steps:,} steps: "
          f"{steps * step_flops / 1e15:.1f} PFLOP")

    print(f"\ntime on a {args.gpu} (peak {args.peak:g} TFLOP/s float16), {steps:,} steps:")
    for achieved in args.achieved:
        seconds = step_flops / (achieved * 1e12)
        print(f"  at {achieved:4.1f} TFLOP/s achieved ({achieved / args.peak:4.0%} of peak): {seconds:6.3f} s/step, "
              f"{duration(steps * seconds)}   (with gradient checkpointing, x4/3: {duration(steps * seconds * 4 / 3)})")

    low, high = saved16 * batch / 1e9, saved32 * batch / 1e9
    print(f"\nactivations kept for the backward pass: {saved16 / 1e6:.0f}-{saved32 / 1e6:.0f} MB per clip "
          f"(float16-float32), {low:.1f}-{high:.1f} GB for a batch of {batch}")
    weights = params * 16 / 1e9  # float32 weights, gradients, two Adam moments
    verdict = "fits" if low + weights < args.memory else "does NOT fit"
    print(f"  + {weights:.1f} GB of weights, gradients and Adam moments: {verdict} in {args.memory:g} GB "
          f"without gradient checkpointing (with it, only one block's activations are kept at a time: "
          f"~{low / c.depth + batch * n * c.hidden_size * 4 * c.depth / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
