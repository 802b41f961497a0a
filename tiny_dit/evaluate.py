"""Does a clip follow its caption? Zero-shot caption retrieval with the tiny CLIP.

For each clip we score it against all 432 canonical captions of the shapes
world (6 colours x 4 shapes x 6 motions x 3 backgrounds) and take the best one;
each attribute of that caption is then right or wrong. The same judge rates
rendered clips (to test the CLIP) and generated clips (to test the DiT).
"""

from __future__ import annotations

import torch

from tiny_dit.data.shapes import all_attribute_combinations, caption, render_dataset
from tiny_dit.text_encoder import CLIPEncoder

ATTRIBUTES = ("color", "shape", "motion", "background")


@torch.no_grad()
def predict_attributes(clip: CLIPEncoder, frames: torch.Tensor,
                       batch_size: int = 256) -> list[dict[str, str]]:
    """For uint8 clips (N, T, H, W, 3): the attributes of the best-matching canonical caption."""
    combos = all_attribute_combinations("all")
    text = clip.text_features([caption(*c) for c in combos])  # (432, D)
    predictions = []
    for start in range(0, len(frames), batch_size):
        video = clip.video_features(frames[start:start + batch_size])  # (n, D)
        best = (video @ text.T).argmax(dim=-1)
        predictions += [dict(zip(ATTRIBUTES, combos[i])) for i in best.tolist()]
    return predictions


def attribute_accuracy(predicted: list[dict], truth: list[dict]) -> dict[str, float]:
    """Fraction of clips whose predicted attribute equals the true one, per attribute."""
    return {a: sum(p[a] == t[a] for p, t in zip(predicted, truth)) / len(truth) for a in ATTRIBUTES}


@torch.no_grad()
def clip_retrieval_accuracy(clip: CLIPEncoder, num_clips: int = 512, seed: int = 1234,
                            split: str = "train") -> dict[str, float]:
    """Zero-shot retrieval accuracy per attribute on freshly rendered clips
    (split "train" = seen colour-shape pairs, "heldout" = the held-out pairs)."""
    predicted, truth = [], []
    for frames, specs in render_dataset(num_clips, seed=seed, split=split):
        predicted += predict_attributes(clip, frames)
        truth += [{a: getattr(s, a) for a in ATTRIBUTES} for s in specs]
    return attribute_accuracy(predicted, truth)


@torch.no_grad()
def autoencoder_psnr(vae, num_clips: int = 64, seed: int = 1234, split: str = "heldout") -> float:
    """Mean PSNR (dB, pixels in [0, 1]) of encode -> decode on freshly rendered clips."""
    from tiny_dit.autoencoder import decode_latents, encode_clips

    psnrs = []
    for frames, _ in render_dataset(num_clips, seed=seed, split=split, batch_size=16):
        recon = decode_latents(vae, encode_clips(vae, frames))  # (n, T, H, W, 3) in [0, 1]
        mse = (recon - frames.float() / 255).pow(2).flatten(1).mean(1)
        psnrs.append(-10 * torch.log10(mse.clamp_min(1e-10)))
    return torch.cat(psnrs).mean().item()


@torch.no_grad()
def decode_frames_per_second(vae, num_frames: int = 64, repeats: int = 5) -> float:
    """Decoding speed of the autoencoder in frames per second, one batch of num_frames
    (the app decodes 4 clips x 16 frames = 64 per request). Best of `repeats`."""
    import time

    from tiny_dit.autoencoder import decode_latents

    latents = torch.randn(1, vae.config.latent_channels, num_frames, 32, 32)
    decode_latents(vae, latents)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        decode_latents(vae, latents)
        best = min(best, time.perf_counter() - start)
    return num_frames / best
