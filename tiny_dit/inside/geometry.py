"""How pixels become tokens for one pipeline: the sizes of every stage, read from its configs.

    from tiny_dit.inside.geometry import ModelGeometry

    g = ModelGeometry.of(pipe)
    g.latent_size     # (T, h, w): the autoencoder's output, per frame /vae_scale_factor
    g.grid            # (T', H', W'): the token grid (tiny_dit.model.token_grid)
    g.num_tokens      # T' * H' * W'
    g.patch_pixels    # one token covers patch_pixels x patch_pixels pixels of patch_size_t frames

A clip of num_frames x height x width pixels is encoded frame by frame into latent_channels
channels at 1/vae_scale_factor of the size; the transformer cuts those latents into tubelets of
patch_size_t frames x patch_size x patch_size latent pixels, one token each (tiny_dit.model).
The app's views, its input checks and its teaching text all need these numbers; this is where
they are gathered, so that each of them reads the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiny_dit.model import token_grid


@dataclass
class ModelGeometry:
    """How pixels become tokens for one pipeline (all sizes from its configs)."""

    num_frames: int  # pixel frames (= latent frames: the autoencoder works frame by frame)
    height: int  # pixels
    width: int
    latent_channels: int
    vae_scale_factor: int  # pixels per latent pixel along each side
    patch_size: int  # tubelet height/width in latent pixels
    patch_size_t: int  # tubelet length in frames
    hidden_size: int
    depth: int
    num_heads: int
    attention_type: str
    layouts: list[str]  # per block: "full", "spatial" or "temporal"
    cross_attention: bool
    context_length: int  # CLIP tokens

    @property
    def latent_size(self) -> tuple[int, int, int]:
        return self.num_frames, self.height // self.vae_scale_factor, self.width // self.vae_scale_factor

    @property
    def grid(self) -> tuple[int, int, int]:
        """The token grid (T', H', W') (tiny_dit.model.token_grid)."""
        return token_grid(*self.latent_size, self.patch_size_t, self.patch_size)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_pixels(self) -> int:
        """One token covers patch_pixels x patch_pixels pixels of patch_size_t frames."""
        return self.patch_size * self.vae_scale_factor

    @property
    def token_features(self) -> int:
        return self.latent_channels * self.patch_size_t * self.patch_size ** 2

    @classmethod
    def of(cls, pipe) -> "ModelGeometry":
        config = pipe.transformer.config
        frames, height, width = pipe.default_size()
        layouts = [block.attn.layout for block in pipe.transformer.blocks]
        return cls(num_frames=frames, height=height, width=width, latent_channels=config.in_channels,
                   vae_scale_factor=pipe.vae_scale_factor, patch_size=config.patch_size,
                   patch_size_t=config.patch_size_t, hidden_size=config.hidden_size, depth=config.depth,
                   num_heads=config.num_heads, attention_type=config.attention_type, layouts=layouts,
                   cross_attention=bool(config.cross_attention),
                   context_length=int(pipe.tokenizer.config.context_length))
