"""The autoencoder: frames <-> latents, the space the DiT works in.

The bundled one is a diffusers `AutoencoderTiny` (the TAESD architecture) with
a very small config, trained here on shapes-world frames: 128x128x3 frames
become 4x32x32 latents (12x fewer numbers) and back. Its encoder/decoder are
plain 3x3 convolutions and ReLUs, which run fast on a CPU in channels-last
memory layout; the app decodes 64 frames per request.

Latents are normalised for the diffusion model the way Stable Diffusion 3 does:
    z_model = (z - shift_factor) * scaling_factor
with both factors measured on training data (mean 0, variance 1) and stored in
the autoencoder's config. A pretrained diffusers autoencoder (SD's
AutoencoderKL, TAESD's AutoencoderTiny) loads through the same functions by
repo id or folder, for training on real clips.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, AutoModel

# 3 stages of 16 channels: 128 -> 64 -> 32 px in the encoder, 32 -> 64 -> 128 in the decoder.
# Blocks sit at the cheap low resolutions; full resolution gets only two convolutions.
TINY_AUTOENCODER_CONFIG = dict(
    encoder_block_out_channels=(16, 16, 16),
    decoder_block_out_channels=(16, 16, 16),
    num_encoder_blocks=(0, 1, 1),
    num_decoder_blocks=(2, 1, 0),
    latent_channels=4,
)


def tiny_autoencoder() -> AutoencoderTiny:
    """A randomly initialised tiny autoencoder (train it with tiny_dit.training.train_autoencoder)."""
    return AutoencoderTiny(**TINY_AUTOENCODER_CONFIG)


def load_autoencoder(name_or_path: str | Path, subfolder: str | None = None):
    """Any diffusers autoencoder by folder or Hub repo id (e.g. "madebyollin/taesd",
    "stabilityai/sd-vae-ft-mse"), set up for fast CPU inference."""
    try:
        vae = AutoModel.from_pretrained(str(name_or_path), subfolder=subfolder)
    except (OSError, ValueError) as error:
        raise OSError(f"could not load the autoencoder {name_or_path!r}: {error}. A Hub repo id "
                      "needs a network connection; a local folder needs config.json and "
                      "weights written by save_pretrained.") from error
    if not isinstance(vae, (AutoencoderTiny, AutoencoderKL)):
        raise TypeError(f"{name_or_path!r} is a {type(vae).__name__}, not an AutoencoderTiny/KL")
    return vae.eval().to(memory_format=torch.channels_last)


def _latent_factors(vae) -> tuple[float, float]:
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return float(shift), float(vae.config.scaling_factor)


def spatial_downsample(vae) -> int:
    """How many pixels one latent pixel covers along each side (4 for the tiny one, 8 for SD)."""
    if isinstance(vae, AutoencoderTiny):
        return vae.config.upsampling_scaling_factor ** (len(vae.config.decoder_block_out_channels) - 1)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _raw_encode(vae, images: torch.Tensor) -> torch.Tensor:
    if isinstance(vae, AutoencoderTiny):
        return vae.encode(images).latents
    return vae.encode(images).latent_dist.mode()  # the mean: deterministic latents


def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], channels-last."""
    images = frames.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return images.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def encode_clips(vae, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 clips (N, T, H, W, 3) -> normalised latents (N, C, T, h, w)."""
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])  # (N*T, H, W, 3)
    weight = next(vae.parameters())
    latents = torch.cat([_raw_encode(vae, frames_to_images(chunk).to(weight.device, weight.dtype)).float()
                         for chunk in flat.split(batch_size)])  # (N*T, C, h, w)
    shift, scale = _latent_factors(vae)
    latents = (latents - shift) * scale
    return latents.reshape(n, t, *latents.shape[1:]).transpose(1, 2).contiguous()  # (N, C, T, h, w)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Normalised latents (N, C, T, h, w) -> float clips (N, T, H, W, 3) in [0, 1].

    Frames are decoded `batch_size` at a time: 16 (one clip) was the fastest of 4 to 64 on a 2-core CPU, 72 ms
    for 64 frames in bfloat16 against 90 ms all at once (their 128 x 128 activations then stay in cache)."""
    n, _, t = latents.shape[:3]
    shift, scale = _latent_factors(vae)
    flat = latents.transpose(1, 2).reshape(n * t, *latents.shape[1:2], *latents.shape[3:])  # (N*T, C, h, w)
    flat = (flat / scale + shift).to(next(vae.parameters()).dtype)
    images = torch.cat([vae.decode(chunk.contiguous(memory_format=torch.channels_last)).sample
                        for chunk in flat.split(batch_size)])  # (N*T, 3, H, W) in [-1, 1]
    frames = images.add(1).div(2).clamp(0, 1).permute(0, 2, 3, 1)
    return frames.reshape(n, t, *frames.shape[1:]).float().cpu()
