"""Train the tiny autoencoder on shapes-world frames.

Each step renders a fresh batch of frames (seeded by the step, so a resumed run
sees exactly the data it would have seen; held-out colour-shape pairs never
appear) and minimises the reconstruction error. At the end the latent
statistics are measured on training clips and stored in the config
(shift_factor = mean, scaling_factor = 1 / std), so the DiT sees latents with
zero mean and unit variance.

    python -m tiny_dit.training.train_autoencoder --out assets/tiny-autoencoder --steps 3000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tiny_dit.autoencoder import encode_clips, frames_to_images, tiny_autoencoder
from tiny_dit.data.shapes import NUM_FRAMES, render_clips, render_dataset, sample_clip_specs
from tiny_dit.training.evaluate import autoencoder_psnr, decode_frames_per_second
from tiny_dit.training.loop import add_run_arguments, start_run, step_seed, train_simple


@torch.no_grad()
def measure_latent_statistics(vae, num_clips: int = 256, seed: int = 999) -> tuple[float, float]:
    """Mean and standard deviation of the raw latents over training clips."""
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)  # raw latents
    latents = torch.cat([encode_clips(vae, frames) for frames, _ in
                         render_dataset(num_clips, seed=seed, split="train", batch_size=64)])
    return latents.mean().item(), latents.std().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tiny_dit.training.train_autoencoder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("assets/tiny-autoencoder"),
                        help="where the trained model is saved (diffusers save_pretrained)")
    add_run_arguments(parser, run_dir="runs/tiny-autoencoder", steps=3000, lr=2e-3)
    parser.add_argument("--batch-size", type=int, default=32, help="frames per step")
    args = parser.parse_args(argv)
    start_run(args)

    vae = tiny_autoencoder().to(memory_format=torch.channels_last)

    def step_loss(step: int):
        seed = step_seed(args.seed, step)
        specs = sample_clip_specs(args.batch_size, seed=seed, split="train")
        frame = int(np.random.default_rng(seed).integers(NUM_FRAMES))  # one frame time per step
        images = frames_to_images(render_clips(specs, frame_indices=[frame])[:, 0])  # (B, 3, H, W)
        recon = vae.decoder(vae.encoder(images))  # (B, 3, H, W) in [-1, 1]; bfloat16 under --precision bf16
        loss = F.mse_loss(recon.float(), images)  # in float32: bfloat16 carries ~3 significant digits
        psnr = -10 * torch.log10(loss.detach() / 4)  # MSE on [-1, 1] is 4x the MSE on [0, 1]
        return loss, {"psnr": round(psnr.item(), 2)}

    probe_images = frames_to_images(render_clips(sample_clip_specs(4, seed=0, split="train"), frame_indices=[0])[:, 0])

    def probe():  # what --precision auto times: a 4-frame step of this autoencoder (convolutions, not linear_probe)
        return F.mse_loss(vae.decoder(vae.encoder(probe_images)).float(), probe_images)

    train_simple(vae, step_loss, args, throughput=("frames_per_s", args.batch_size), desc="tiny autoencoder",
                 probe=probe)

    mean, std = measure_latent_statistics(vae)
    vae.register_to_config(shift_factor=mean, scaling_factor=1.0 / std)
    vae.save_pretrained(args.out)
    metrics = {"latent_mean": mean, "latent_std": std,
               "psnr_heldout_db": autoencoder_psnr(vae, split="heldout"),
               "psnr_seen_db": autoencoder_psnr(vae, split="train"),
               "decode_fps_64_frames": decode_frames_per_second(vae)}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"saved {args.out}/ ; " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
