"""How fast tiny-dit generates and trains on this machine, measured in one process.

    python benchmarks/speed.py                               # the bundled model, 2 threads
    python benchmarks/speed.py --model runs/dit-small/pipeline --json results.json

Times, with the model loaded and after a warm-up:
  * generating 4 clips at the default steps and guidance, split into text encoding,
    transformer (all denoising steps, conditional and unconditional passes batched;
    also with the transformer in bfloat16) and decoding (float32, and in the auto dtype),
    and end to end through the pipeline
    (float32, and with `set_dtype("auto")` as the app, sample and evaluate run it);
  * training throughput in clips per second (forward, backward and AdamW on random
    latents of the cache's shape, at the small preset's batch size);
  * the same denoising work through diffusers' LatteTransformer3DModel configured to the
    same width, depth (Latte's layers are spatial + temporal pairs, so depth/2 of them),
    heads and tokens per clip, and the ratio of the two (both float32, both bfloat16);
  * the transformer's achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter)
    against a large matmul of the same dtype timed in the same run.
The best of --repeats runs is reported for each figure (the least disturbed by other work).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

import torch
from torch.utils.flop_counter import FlopCounterMode

PROMPT = "a red circle moving left on a black background"


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(repeats: int, n: int = 2048, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / best_time(lambda: a @ b, repeats) / 1e9


def denoise(transformer, latents, cond, steps: int) -> None:
    """The transformer's share of sampling: `steps` batched [uncond; cond] forwards, float32 inputs
    as the pipeline passes them (the transformer casts them to its own dtype)."""
    x = torch.cat([latents, latents])
    for i in range(steps):
        t = torch.full((len(x),), 1000.0 * (1 - i / steps))
        transformer(x, timestep=t, **cond)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/speed.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-dit-shapes", help="pipeline folder")
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch-size", type=int, default=16,
                        help="clips in the timed training step (default 16, the small preset's: "
                             "python -m tiny_dit.training.train --help)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from diffusers import LatteTransformer3DModel

    from tiny_dit.guiders import guider_name
    from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS, TinyDiTPipeline
    pipe = TinyDiTPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    dit = pipe.transformer.eval()
    cfg = dit.config
    steps, n = DEFAULT_NUM_INFERENCE_STEPS, args.num_videos
    frames, height, width = pipe.default_size()
    ds = pipe.vae_scale_factor
    latents = torch.randn(n, cfg.in_channels, frames, height // ds, width // ds)
    tokens = dit.num_tokens(frames, height // ds, width // ds)
    results = {"model": args.model, "threads": args.threads, "num_videos": n, "steps": steps,
               "guidance_scale": pipe.default_guider.guidance_scale, "guider": guider_name(pipe.default_guider),
               "tokens_per_clip": tokens,
               "transformer_parameters": sum(p.numel() for p in dit.parameters())}

    with torch.no_grad():
        prompts = [PROMPT] * n
        results["text_encoding_s"] = best_time(lambda: pipe.encode_conditioning(prompts), args.repeats)
        cond, uncond = pipe.encode_conditioning(prompts)
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
        results["transformer_s"] = best_time(lambda: denoise(dit, latents, both, steps), args.repeats)
        # The same work with the transformer's weights and activations in bfloat16: a copy, held by the
        # partial only while it is timed (no name for a closure to keep, or to `del` from under it).
        bf16_denoise = functools.partial(denoise, copy.deepcopy(dit).to(torch.bfloat16), latents, both, steps)
        results["transformer_bf16_s"] = best_time(bf16_denoise, args.repeats)
        del bf16_denoise  # frees the bfloat16 copy before the end-to-end runs
        results["decoding_s"] = best_time(lambda: pipe.decode_latents(latents), args.repeats)
        results["decode_frames_per_s"] = latents.shape[0] * frames / results["decoding_s"]
        generator = torch.Generator()

        def end_to_end():
            pipe(PROMPT, num_videos_per_prompt=n, generator=generator.manual_seed(0))

        results["end_to_end_float32_s"] = best_time(end_to_end, args.repeats)
        # As the app, sample and evaluate run it: the transformer in the faster dtype, measured.
        results["auto_dtype"] = str(pipe.set_dtype("auto")).removeprefix("torch.")
        results["end_to_end_s"] = best_time(end_to_end, args.repeats)
        results["decoding_auto_dtype_s"] = best_time(lambda: pipe.decode_latents(latents), args.repeats)
        pipe.set_dtype("float32")

        # Achieved arithmetic rate of the transformer, against a large matmul.
        with FlopCounterMode(display=False) as counter:
            denoise(dit, latents, both, 1)
        flops = counter.get_total_flops() * steps
        results["transformer_gflops"] = flops / results["transformer_s"] / 1e9
        results["matmul_gflops"] = matmul_gflops(args.repeats)
        results["fraction_of_matmul"] = results["transformer_gflops"] / results["matmul_gflops"]
        results["transformer_bf16_gflops"] = flops / results["transformer_bf16_s"] / 1e9
        results["matmul_bf16_gflops"] = matmul_gflops(args.repeats, dtype=torch.bfloat16)
        results["fraction_of_matmul_bf16"] = results["transformer_bf16_gflops"] / results["matmul_bf16_gflops"]

        # Latte with the same width, depth, heads and tokens per clip.
        patch = cfg.patch_size * round((cfg.patch_size_t) ** 0.5)  # 4x4x4 tubelets = 256 tokens -> 8x8 patches
        latte = LatteTransformer3DModel(
            num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
            in_channels=cfg.in_channels, out_channels=cfg.in_channels, num_layers=max(1, cfg.depth // 2),
            sample_size=height // ds, patch_size=patch, norm_type="ada_norm_single",
            caption_channels=cfg.text_embed_dim, cross_attention_dim=cfg.hidden_size,
            num_embeds_ada_norm=1000, video_length=frames).eval()
        latte_tokens = frames * (height // ds // patch) * (width // ds // patch)
        x = torch.cat([latents, latents])
        text = both["encoder_hidden_states"]

        def latte_denoise():
            for i in range(steps):
                latte(x, timestep=torch.full((len(x),), 1000 * (1 - i / steps)).long(),
                      encoder_hidden_states=text)

        results["latte_tokens_per_clip"] = latte_tokens
        results["latte_transformer_s"] = best_time(latte_denoise, args.repeats)
        results["speedup_vs_latte"] = results["latte_transformer_s"] / results["transformer_s"]  # both float32
        latte.to(torch.bfloat16)  # the same precision trick for Latte, for a like-for-like bfloat16 ratio
        x, text = x.to(torch.bfloat16), text.to(torch.bfloat16)
        results["latte_transformer_bf16_s"] = best_time(latte_denoise, args.repeats)
        results["speedup_vs_latte_bf16"] = results["latte_transformer_bf16_s"] / results["transformer_bf16_s"]
        # What a user of each gets by default: TinyDiT as the app runs it against Latte as diffusers builds it.
        results["speedup_app_vs_latte_default"] = results["latte_transformer_s"] / results["transformer_bf16_s"]

    # Training throughput of the small preset's step (forward, backward, AdamW).
    from tiny_dit.flow import flow_matching_loss
    batch = args.train_batch_size
    dit.train()
    optimizer = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    x0 = torch.randn(batch, *latents.shape[1:])
    tcond = {k: v[:1].expand(batch, *v.shape[1:]).contiguous() for k, v in cond.items()}
    tuncond = {k: v[:1] for k, v in uncond.items()}

    def train_step():
        loss = flow_matching_loss(dit, x0, tcond, tuncond)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    results["train_step_s"] = best_time(train_step, args.repeats)
    results["train_clips_per_s"] = batch / results["train_step_s"]
    results["train_batch_size"] = batch

    width_ = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:{width_}s}  {value:.3f}" if isinstance(value, float) else f"{key:{width_}s}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
