"""TinyDiT: a small, text-conditioned diffusion transformer for latent video.

The idea
--------
A video autoencoder turns a clip into a latent tensor of shape (B, C, T, H, W).
We cut that tensor into non-overlapping *tubelets* of `patch_size_t` frames by
`patch_size` x `patch_size` latent pixels, flatten each tubelet into a vector
and project it to `hidden_size`: the clip becomes a sequence of tokens, just as
an image becomes a sequence of patches in ViT. Fixed sine-cosine embeddings of
each token's (t, h, w) position tell the transformer where a token came from.

The transformer is a stack of DiT blocks (Peebles & Xie, "Scalable Diffusion
Models with Transformers", 2023). A DiT block is a standard pre-norm block
(attention, then MLP), except that the LayerNorms have no learned affine
parameters: their shift and scale, plus a gate on each residual branch, are
regressed from a conditioning vector `c` ("adaLN"). `c` summarises everything
that is the same for the whole clip: the noise level and the pooled CLIP
embedding of the prompt. The gates start at zero ("adaLN-Zero"), so every
block starts as the identity and the untrained network outputs exactly zero.
With `pooled_conditioning=False`, `c` is the noise level alone and the prompt
reaches the network only through cross-attention, as in PixArt-alpha. Why that
can matter: one pooled vector for the whole prompt is a point the DiT learned
only near the captions it saw. For a colour-shape pair it never saw, adaLN
reads an unseen point and draws something it learned (measured: "a blue star"
sits nearest "a purple star" and came out green), and two captions that differ
in one word can sit so close that the word is lost ("moving left" against a
still's caption with no motion at all: cosine 0.90).

Optionally a cross-attention layer in every block lets each video token look
at the individual CLIP token states, which carries more detail about the
prompt than the single pooled vector. With `word_embeddings` it also sees each
word's own embedding, from before CLIP's text transformer mixed the words: in
a causal text tower the final state of "star" in "a green star" is mostly
"green" (measured: closer to other shapes after the same colour than to the
same shape after other colours), and a colour-shape pair never seen in
training is a context the tower never saw. A word's embedding is the same in
every caption, so the DiT can bind "star" to a shape whatever colour precedes it.

Attention over all T*H*W tokens ("full") costs O(N^2). The "factorized"
variant alternates, block by block, between spatial attention (tokens of the
same frame slot attend to each other) and temporal attention (tokens at the
same (h, w) position attend across time), as in Latte and TimeSformer.

What the network predicts
-------------------------
The sampler integrates a rectified-flow velocity v = noise - x0 (see `flow.py`),
and `forward` always returns v. With `prediction_type="velocity"` the network
outputs v directly. With `prediction_type="sample"` (the default) it outputs
the clean latents x0_hat and v is computed from them:

    v = (x_s - x0_hat) / s          s = noise level = timestep / 1000

Why this matters here: a 4 x 4 x 4 tubelet of 4-channel latents has 256 numbers
but a token only D = 192. A velocity contains the noise itself, which has no
structure, so the part of it that does not fit through the patch embedding can
never be predicted: it stays in the sample as patch-sized specks (measured: a
loss floor of about 0.3 and speckled samples). The clean clip is smooth and
low-dimensional, so it fits; the noise then cancels exactly in the formula
above. This is the argument of Li & He, "Back to Basics: Let Denoising
Generative Models Denoise" (2025, "JiT"), who also divide by max(s, 0.05).

Shape legend used in the comments:
    B  batch             C  latent channels      T, H, W  latent frames/height/width
    pt, p  tubelet size  T', H', W' = T/pt, H/p, W/p  the token grid
    N = T' * H' * W'  tokens   S = H' * W'  tokens per frame slot
    D  hidden size       L  CLIP tokens (2L with word_embeddings: states, then words)
    heads, hd = D / heads
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from tiny_dit.flow import TIMESTEP_SCALE, velocity_from_x0


# ---------------------------------------------------------------------------
# Tubelets: latents <-> token sequences
# ---------------------------------------------------------------------------


def patchify(x: torch.Tensor, patch_size_t: int, patch_size: int) -> torch.Tensor:
    """Cut latents into tubelets and flatten each one into a token vector.

    A tubelet is `patch_size_t` consecutive frames of a `patch_size` x
    `patch_size` square of latent pixels, across all channels. Tokens are
    ordered time-major, (t, h, w), i.e. token index = (t * H' + h) * W' + w, so
    all tokens of one frame slot are contiguous. The features of a token are
    ordered (C, pt, p, p), the same order as a Conv3d kernel.

    Args:
        x: latents, (B, C, T, H, W); T, H, W must be divisible by the patch sizes.

    Returns:
        tokens, (B, N, C * pt * p * p) with N = T/pt * H/p * W/p.
    """
    B, C, T, H, W = x.shape
    pt, p = patch_size_t, patch_size
    if T % pt or H % p or W % p:
        raise ValueError(f"latents of size T={T}, H={H}, W={W} do not split into tubelets of {pt}x{p}x{p}")
    x = x.reshape(B, C, T // pt, pt, H // p, p, W // p, p)  # (B, C, T', pt, H', p, W', p)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, T', H', W', C, pt, p, p)
    return x.reshape(B, (T // pt) * (H // p) * (W // p), C * pt * p * p)  # (B, N, C*pt*p*p)


def token_grid(num_frames: int, height: int, width: int, patch_size_t: int, patch_size: int
               ) -> tuple[int, int, int]:
    """The token grid (T', H', W') = (T / pt, H / p, W / p) of latents (T, H, W): one token per tubelet.
    The one home of this arithmetic (TinyDiT.token_grid, tiny_dit.inside.geometry.ModelGeometry, training's buckets)."""
    pt, p = patch_size_t, patch_size
    if num_frames % pt or height % p or width % p:
        raise ValueError(
            f"latent size (T={num_frames}, H={height}, W={width}) must be divisible by "
            f"the tubelet size (pt={pt}, p={p}, p={p})"
        )
    return num_frames // pt, height // p, width // p


def unpatchify(
    tokens: torch.Tensor, grid: tuple[int, int, int], patch_size_t: int, patch_size: int, channels: int
) -> torch.Tensor:
    """Inverse of `patchify`: put the tubelets back in their places.

    Args:
        tokens: (B, N, channels * pt * p * p), in `patchify`'s order.
        grid: the token grid (T', H', W'), with N = T' * H' * W'.
        channels: number of channels C of the output.

    Returns:
        latents, (B, C, T' * pt, H' * p, W' * p).
    """
    B = tokens.shape[0]
    Tg, Hg, Wg = grid
    pt, p = patch_size_t, patch_size
    x = tokens.reshape(B, Tg, Hg, Wg, channels, pt, p, p)  # (B, T', H', W', C, pt, p, p)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, T', pt, H', p, W', p)
    return x.reshape(B, channels, Tg * pt, Hg * p, Wg * p)  # (B, C, T, H, W)


# ---------------------------------------------------------------------------
# Positional embeddings: fixed 3-D sine-cosine
# ---------------------------------------------------------------------------


def get_1d_sincos_pos_embed(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """DiT/MAE 1-D sine-cosine embedding: (M,) positions -> (M, embed_dim).

    Half of the channels are sin(pos * w_i), the other half cos(pos * w_i), with
    frequencies w_i spaced geometrically from 1 down to 1/10000.
    """
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (embed_dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, embed_dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()  # (M, embed_dim)


def sincos_embed_positions(embed_dim: int, positions_t: torch.Tensor, positions_h: torch.Tensor,
                           positions_w: torch.Tensor) -> torch.Tensor:
    """The embedding of a (T', H', W') grid from each axis' positions (T',), (H',), (W'): (N, embed_dim).

    The channels are split between the three axes: h and w each get an even
    share of about a third, t gets the rest. A token's embedding is the
    concatenation [emb_t(t), emb_h(h), emb_w(w)] of 1-D sin-cos embeddings.
    """
    Tg, Hg, Wg = len(positions_t), len(positions_h), len(positions_w)
    dim_hw = 2 * (embed_dim // 6)  # even, so that sin and cos halves are equal
    dim_t = embed_dim - 2 * dim_hw  # even too, because embed_dim is even
    emb_t = get_1d_sincos_pos_embed(dim_t, positions_t)  # (T', dim_t)
    emb_h = get_1d_sincos_pos_embed(dim_hw, positions_h)  # (H', dim_hw)
    emb_w = get_1d_sincos_pos_embed(dim_hw, positions_w)  # (W', dim_hw)
    # Broadcast each axis' embedding over the other two axes, then concatenate.
    emb = torch.cat(
        [
            emb_t[:, None, None, :].expand(Tg, Hg, Wg, dim_t),
            emb_h[None, :, None, :].expand(Tg, Hg, Wg, dim_hw),
            emb_w[None, None, :, :].expand(Tg, Hg, Wg, dim_hw),
        ],
        dim=-1,
    )  # (T', H', W', D)
    return emb.reshape(Tg * Hg * Wg, embed_dim)  # (N, D), time-major like patchify


@lru_cache(maxsize=32)
def get_3d_sincos_pos_embed(embed_dim: int, grid: tuple[int, int, int], time_span: int | None = None,
                            space_span: int | None = None) -> torch.Tensor:
    """Fixed positional embedding for a (T', H', W') token grid: (N, embed_dim).

    Each token's position is its integer coordinate (t, h, w) in the grid, embedded
    by `sincos_embed_positions`. Nothing here is learned, and it is computed from
    the grid at forward time, so one set of weights accepts any clip length and
    aspect ratio. Without the spans below, the positions of a larger grid simply
    run on past the trained ones, which the model never saw (docs/sora-tasks.md's
    "Other lengths" and "Other sizes" tables).

    time_span: a grid of more than one frame slot and not time_span of them (the
    trained length) gets its slots' temporal positions spread over 0 .. time_span - 1
    (position interpolation, as for long contexts in language models): a clip twice
    the trained length plays as one trained clip in slow motion instead of reaching
    positions never trained on, and a clip half as long shows the whole motion
    faster instead of its first half. One slot (an image) stays at position 0.

    space_span: a grid of another height or width than space_span tokens (the
    trained side) gets that axis' positions centred on the trained ones, one apart
    as in training: 12 columns for 8 trained sit at -2 .. 9. Spacing is kept because
    the model draws shapes in position units: spreading 12 columns over 0 .. 7 (as
    for time) draws every circle 1.5x too wide. Centring halves the distance the
    positions run past the trained ones; run on from 0, columns 8 .. 11 draw
    copies of the object and stripes.

    Results are cached per arguments; the returned CPU tensor is shared, so do not
    modify it in place.
    """
    Tg, Hg, Wg = grid
    positions_t = torch.arange(Tg, dtype=torch.float64)
    positions_h = torch.arange(Hg, dtype=torch.float64)
    positions_w = torch.arange(Wg, dtype=torch.float64)
    if time_span is not None and Tg > 1 and Tg != time_span:
        positions_t = positions_t * (time_span - 1) / (Tg - 1)  # from the first trained slot to the last
    if space_span is not None:
        positions_h += (space_span - Hg) / 2  # + 0 at the trained size; run on both sides when larger
        positions_w += (space_span - Wg) / 2
    return sincos_embed_positions(embed_dim, positions_t, positions_h, positions_w)


# ---------------------------------------------------------------------------
# Conditioning: noise level and pooled text -> one vector c per clip
# ---------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """DiT's timestep embedding: sinusoidal features of t, then a 2-layer MLP.

    `t` is the flow-matching noise level times 1000 (a float in [0, 1000], as in
    diffusers' FlowMatchEulerDiscreteScheduler), so the sinusoids see the same
    range of values as DiT's integer DDPM timesteps.
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(B,) float timesteps -> (B, dim) features [cos(t * f_i), sin(t * f_i)]."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)  # (B, 256), float32
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (B, D)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: per-clip shift and scale of normalised tokens. x (B, N, D); shift, scale (B, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]  # scale starts at 0, i.e. at "no change"


# ---------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention over the tokens of a clip, in one of three layouts.

    - "full":     one sequence of all N = T' * H' * W' tokens.
    - "spatial":  B * T' independent sequences of S = H' * W' tokens (one per frame slot).
    - "temporal": B * S independent sequences of T' tokens (one per (h, w) position).

    The layouts differ only in how the (B, N, D) tokens are regrouped into a
    batch of sequences before attention and put back afterwards; the weights
    (one qkv Linear and one output Linear) are the same kind in all three.

    With `return_probs=True` the attention is computed explicitly,
    softmax(Q K^T / sqrt(hd)) V, and the probabilities are returned:
        full:     (B, heads, N, N)
        spatial:  (B, heads, T', S, S)   one S x S map per frame slot
        temporal: (B, heads, S, T', T')  one T' x T' map per (h, w) position
    always with queries on the second-to-last axis and keys on the last one.
    Otherwise the fused `scaled_dot_product_attention` kernel is used and no
    probabilities are materialised.
    """

    def __init__(self, dim: int, num_heads: int, layout: str = "full"):
        super().__init__()
        if layout not in ("full", "spatial", "temporal"):
            raise ValueError(f"unknown attention layout {layout!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.layout = layout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int, int], return_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, D = x.shape
        Tg, Hg, Wg = grid
        S = Hg * Wg

        # 1. Regroup the tokens into a batch of independent sequences (b, n, D).
        if self.layout == "spatial":
            x = x.reshape(B * Tg, S, D)  # tokens are time-major, so each frame slot is contiguous
        elif self.layout == "temporal":
            x = x.reshape(B, Tg, S, D).transpose(1, 2).reshape(B * S, Tg, D)  # (B*S, T', D)
        b, n, _ = x.shape

        # 2. Multi-head attention within each sequence.
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)  # (b, n, 3, heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (b, heads, n, hd)
        if return_probs:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (b, heads, n, n)
            probs = scores.softmax(dim=-1, dtype=torch.float32)  # float32 for stable, inspectable maps
            out = probs.to(v.dtype) @ v  # (b, heads, n, hd)
        else:
            probs = None
            out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, hd), same maths, fused
        out = out.transpose(1, 2).reshape(b, n, D)  # (b, n, D): heads concatenated again

        # 3. Put the tokens back in (B, N, D) order.
        if self.layout == "spatial":
            out = out.reshape(B, N, D)
            if probs is not None:
                probs = probs.reshape(B, Tg, self.num_heads, S, S).transpose(1, 2)  # (B, heads, T', S, S)
        elif self.layout == "temporal":
            out = out.reshape(B, S, Tg, D).transpose(1, 2).reshape(B, N, D)
            if probs is not None:
                probs = probs.reshape(B, S, self.num_heads, Tg, Tg).transpose(1, 2)  # (B, heads, S, T', T')
        return self.proj(out), probs


class CrossAttention(nn.Module):
    """Video tokens (queries) attend to CLIP token states (keys and values).

    It has its own pre-norm (with learned affine: the text does not modulate its
    own read-out) and no adaLN gate; instead its output projection is
    zero-initialised so that, like the rest of the block, it starts as a no-op.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)  # projects text width -> hidden width
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, N, D = x.shape
        L = context.shape[1]
        q = self.q(self.norm(x)).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, hd)
        kv = self.kv(context).reshape(B, L, 2, self.num_heads, self.head_dim)  # (B, L, 2, heads, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, hd)
        # Padding tokens of the prompt must not be attended to. SDPA's boolean
        # mask means True = attend; it broadcasts over heads and queries.
        attn_mask = None if context_mask is None else context_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, heads, N, hd)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


# ---------------------------------------------------------------------------
# DiT block
# ---------------------------------------------------------------------------


class DepthwiseConv(nn.Module):
    """A 3 x 3 depthwise convolution over each frame slot's token grid, as a zero-initialised residual.

        h = h + DWConv3x3(h)      h: the MLP's hidden tokens, (B, N, D_mlp)

    Attention treats tokens as a set (only the positional embedding says who is a
    neighbour) and the MLP sees one token at a time, so nothing in a plain DiT block
    mixes a token with its neighbours directly. Outlines (a corner, a point of a star)
    span patch borders, and the plain block learns them slowly: samples are
    patch-sized blocks long before they are shapes. TLD (apapiu/transformer_latent_diffusion)
    puts this convolution between the MLP's two Linears for exactly that reason.
    Each channel has its own 3 x 3 kernel (9 D_mlp weights), within a frame slot (1 x 3 x 3),
    so it costs little and works for any number of frames. Zero-initialised, the block
    starts as a plain DiT block.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, h: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        B, N, D = h.shape
        Tg, Hg, Wg = grid
        img = h.reshape(B * Tg, Hg, Wg, D).permute(0, 3, 1, 2)  # (B*T', D_mlp, H', W'): one image per frame slot
        out = self.conv(img).permute(0, 2, 3, 1).reshape(B, N, D)  # (B, N, D_mlp), time-major again
        return h + out


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning.

        x = x + gate_msa * SelfAttn(modulate(LN(x), shift_msa, scale_msa))
        x = x + CrossAttn(x, text)                 (only if cross_attention)
        x = x + gate_mlp * MLP(modulate(LN(x), shift_mlp, scale_mlp))

    MLP is Linear -> GELU -> Linear, or with `conv_mlp` Linear -> DepthwiseConv -> GELU -> Linear (TLD).
    The six (B, D) modulation vectors are one Linear of SiLU(c). That Linear is
    zero-initialised, so all gates are 0 and the block starts as the identity.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        layout: str = "full",
        context_dim: int | None = None,
        conv_mlp: bool = False,
    ):
        super().__init__()
        # No affine parameters: shift and scale come from c instead.
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, layout)
        self.cross_attn = CrossAttention(dim, context_dim, num_heads) if context_dim is not None else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(dim * mlp_ratio)
        # Exact (erf) GELU, not DiT's tanh approximation: on this CPU PyTorch's tanh kernel is ~6x
        # slower (1.1 vs 0.18 ms for the 2048 x 768 activations of a 4-clip guided batch, ~10% of a
        # forward pass), and the two differ by < 0.001, so weights trained with either work with both.
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim))
        self.mlp_conv = DepthwiseConv(mlp_hidden) if conv_mlp else None  # between mlp[0] and the GELU
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def feed_forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """The MLP: (B, N, D) -> (B, N, D_mlp) -> (B, N, D), with the depthwise convolution if any."""
        if self.mlp_conv is None:
            return self.mlp(x)
        fc1, act, fc2 = self.mlp
        return fc2(act(self.mlp_conv(fc1(x), grid)))

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        grid: tuple[int, int, int],
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        return_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # x (B, N, D), c (B, D) -> six (B, D) vectors
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)

        attn_out, probs = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid, return_probs)
        x = x + gate_msa[:, None, :] * attn_out

        if self.cross_attn is not None:
            x = x + self.cross_attn(x, context, context_mask)

        x = x + gate_mlp[:, None, :] * self.feed_forward(modulate(self.norm2(x), shift_mlp, scale_mlp), grid)
        return x, probs  # (B, N, D), attention probabilities or None


# ---------------------------------------------------------------------------
# Final layer
# ---------------------------------------------------------------------------


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a Linear from D to one tubelet's worth of output values.

    The Linear is zero-initialised, so the untrained model outputs exactly zero.
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # each (B, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, out_dim)


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


PREDICTION_TYPES = ("sample", "velocity")
MIN_NOISE_LEVEL = 0.05  # x0 -> v divides by the noise level; JiT's clamp keeps it from blowing up near s = 0


@dataclass
class TinyDiTOutput(BaseOutput):
    """Output of `TinyDiT.forward`.

    Args:
        sample: the prediction, (B, out_channels, T, H, W), same layout as the input latents.
        attentions: `{block_index: probabilities}` for the blocks named in
            `capture_attention_layers`, else None. Shapes depend on the block's
            layout, see `Attention`: (B, heads, N, N) for full attention,
            (B, heads, T', S, S) for spatial and (B, heads, S, T', T') for temporal.
    """

    sample: torch.Tensor
    attentions: dict[int, torch.Tensor] | None = None


class TinyDiT(ModelMixin, ConfigMixin):
    """Diffusion transformer over video latents, conditioned on a noise level and CLIP text embeddings.

    Args:
        in_channels: latent channels C of the input.
        out_channels: channels of the prediction; None means `in_channels`.
        num_frames, sample_size: the latent clip length and height/width the
            model is meant for. The network takes any size (positional embeddings
            are computed from the input); they are read only by interpolate_time and centre_space.
        patch_size: tubelet height and width p, in latent pixels.
        patch_size_t: tubelet length pt, in latent frames.
        hidden_size: token width D.
        depth: number of DiT blocks.
        num_heads: attention heads per block; must divide `hidden_size`.
        mlp_ratio: MLP hidden width as a multiple of D.
        text_embed_dim: width of the CLIP token states (`encoder_hidden_states`).
        pooled_embed_dim: width of the pooled/projected CLIP embedding (`pooled_projections`).
        pooled_conditioning: add the pooled embedding to the noise level's in `c`, which every block's
            adaLN reads (DiT, SD3). False: `c` is the noise level alone and the text is read only by
            cross-attention (PixArt-alpha); `pooled_projections` is then ignored.
        cross_attention: add a cross-attention layer to CLIP token states in every block.
        word_embeddings: with cross_attention, the context is 2L tokens, CLIP's final token states
            followed by each token's context-free embedding (`CLIPEncoder.encode_text`'s
            word_embeddings; the pipeline and training put them together, `text_context`): each half
            gets a learned type embedding, and the words their own projection.
        attention_type: "full" (all tokens attend to all tokens) or "factorized"
            (even blocks attend spatially, odd blocks temporally).
        conv_mlp: a zero-initialised 3 x 3 depthwise convolution inside every MLP (TLD),
            so that neighbouring patches mix; see `DepthwiseConv`.
        interpolate_time: a clip of another length than num_frames gets temporal
            positions spread over the trained ones (see `get_3d_sincos_pos_embed`'s time_span).
        centre_space: a frame of another height or width than sample_size gets its spatial
            positions centred on the trained ones (see `get_3d_sincos_pos_embed`'s space_span).
        known_frames_input: the model also takes known frames as input (forward's known_latents
            and known_mask), as an inpainting model does: C + 1 more input channels, the known
            latents (zero elsewhere) and a mask, their patch-embedding columns zero-initialised.
        prediction_type: what the network outputs before conversion to a velocity:
            "sample" (the clean latents x0) or "velocity" (v itself). See the module docstring.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock"]
    # Left in the model's dtype by enable_layerwise_casting (fp8 storage): the layers whose weight dtype
    # forward casts its inputs to (patch_embed, time_embed.mlp), and the norms.
    _skip_layerwise_casting_patterns = ["patch_embed", "time_embed", "norm"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int | None = None,
        num_frames: int = 16,
        sample_size: int = 32,
        patch_size: int = 4,
        patch_size_t: int = 4,
        hidden_size: int = 192,
        depth: int = 6,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        text_embed_dim: int = 128,
        pooled_embed_dim: int = 128,
        cross_attention: bool = False,
        attention_type: str = "full",
        prediction_type: str = "sample",
        conv_mlp: bool = False,
        interpolate_time: bool = False,
        centre_space: bool = False,
        known_frames_input: bool = False,
        word_embeddings: bool = False,
        pooled_conditioning: bool = True,
    ):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if hidden_size % 2 != 0:
            raise ValueError("hidden_size must be even for the sine-cosine embeddings")
        if attention_type not in ("full", "factorized"):
            raise ValueError(f"attention_type must be 'full' or 'factorized', got {attention_type!r}")
        if word_embeddings and not cross_attention:
            raise ValueError("word_embeddings are read by cross-attention: set cross_attention=True too")
        if not pooled_conditioning and not cross_attention:
            raise ValueError("pooled_conditioning=False leaves cross-attention as the only way in for the text: "
                             "set cross_attention=True too")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.out_channels = in_channels if out_channels is None else out_channels
        if prediction_type == "sample" and self.out_channels != in_channels:
            raise ValueError("prediction_type 'sample' predicts the input latents: out_channels must equal in_channels")
        tubelet = patch_size_t * patch_size * patch_size

        # Patch embedding: a Linear on flattened tubelets. This is exactly a
        # Conv3d with kernel = stride = (pt, p, p) (its weight, reshaped), but
        # keeps the tubelet layout in one place, `patchify`, which the output
        # side mirrors with `unpatchify`.
        # With known_frames_input, each tubelet also carries the known latents and the mask (see forward).
        input_channels = 2 * in_channels + 1 if known_frames_input else in_channels
        self.patch_embed = nn.Linear(input_channels * tubelet, hidden_size)
        self.time_embed = TimestepEmbedder(hidden_size)
        self.pooled_embed = nn.Sequential(
            nn.Linear(pooled_embed_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        ) if pooled_conditioning else None

        # The two kinds of text tokens with word_embeddings: which half a token is in (0: CLIP's final
        # states, 1: the words' own embeddings), and a projection of the words into the states' space.
        if word_embeddings:
            self.text_type_embed = nn.Embedding(2, text_embed_dim)
            self.word_proj = nn.Linear(text_embed_dim, text_embed_dim)

        def layout(i: int) -> str:
            if attention_type == "full":
                return "full"
            return "spatial" if i % 2 == 0 else "temporal"

        self.blocks = nn.ModuleList(
            [
                DiTBlock(
                    hidden_size,
                    num_heads,
                    mlp_ratio,
                    layout=layout(i),
                    context_dim=text_embed_dim if cross_attention else None,
                    conv_mlp=conv_mlp,
                )
                for i in range(depth)
            ]
        )
        self.final_layer = FinalLayer(hidden_size, tubelet * self.out_channels)
        self.gradient_checkpointing = False
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT initialisation; afterwards the network output (x0_hat or v) is exactly zero."""

        def basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic_init)

        # Known frames start out ignored: patchify puts each tubelet's channels one after the other, so
        # the columns past the first C * pt * p * p are the known latents' and the mask's. A model
        # initialised from one trained without them computes what that one did (up to rounding).
        nn.init.zeros_(self.patch_embed.weight[:, self.config.in_channels * self.tubelet_size:])

        # Text token types: small normal weights, like the conditioning embedders below.
        if self.config.word_embeddings:
            nn.init.normal_(self.text_type_embed.weight, std=0.02)

        # Conditioning MLPs: small normal weights, as DiT does for its timestep and label embedders.
        for mlp in [m for m in (self.time_embed.mlp, self.pooled_embed) if m is not None]:
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)

        # adaLN-Zero: every block starts as the identity ...
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
            if block.mlp_conv is not None:  # the MLP starts as the plain one
                nn.init.zeros_(block.mlp_conv.conv.weight)
                nn.init.zeros_(block.mlp_conv.conv.bias)

        # ... and the output layer starts at zero.
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    @property
    def tubelet_size(self) -> int:
        """Latent pixels per tubelet and channel: pt * p * p."""
        return self.config.patch_size_t * self.config.patch_size ** 2

    def token_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The token grid (T', H', W') = (T / pt, H / p, W / p) for latents of that size."""
        return token_grid(num_frames, height, width, self.config.patch_size_t, self.config.patch_size)

    def num_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Tokens per clip: T/pt * H/p * W/p (latent sizes, not pixels).

        For the default config, 16 latent frames of 32 x 32: 16/4 * 32/4 * 32/4 = 4 * 8 * 8 = 256.
        """
        Tg, Hg, Wg = self.token_grid(num_frames, height, width)
        return Tg * Hg * Wg

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor | None = None,
        pooled_projections: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        capture_attention_layers: list[int] | None = None,
        known_latents: torch.Tensor | None = None,
        known_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> TinyDiTOutput | tuple:
        """Predict the flow-matching velocity v = noise - x0 for noisy latents.

        Args:
            hidden_states: noisy latents, (B, C, T, H, W).
            timestep: noise level times 1000, a float in [0, 1000]; shape (B,) or a scalar.
            encoder_hidden_states: CLIP token states, (B, L, text_embed_dim). Required
                if the model has cross-attention, ignored otherwise. With word_embeddings,
                (B, 2L, text_embed_dim): the states, then the words' embeddings (`text_context`).
            pooled_projections: pooled CLIP embedding, (B, pooled_embed_dim). Required with
                pooled_conditioning (ignored without): for the unconditional branch of
                classifier-free guidance pass the embedding of the empty prompt.
            encoder_attention_mask: (B, L), True (or 1) for real prompt tokens, False
                for padding. Only used by cross-attention.
            capture_attention_layers: indices of blocks whose self-attention
                probabilities to return (they compute attention explicitly instead of
                with the fused kernel; the result is the same).
            known_latents, known_mask: only with known_frames_input: the clean latents of
                the known frames (B or 1, C, T, H, W), and (B or 1, 1, T, 1, 1) 1 at known
                latent frames, 0 elsewhere. None: nothing is known.
            return_dict: return a `TinyDiTOutput` (default) or a tuple, `(sample,)`,
                or `(sample, attentions)` when capturing (diffusers' `to_tuple` convention).
        """
        if pooled_projections is None and self.config.pooled_conditioning:
            raise ValueError("pooled_projections is required (use the empty-prompt embedding for 'unconditional')")
        if self.config.cross_attention and encoder_hidden_states is None:
            raise ValueError("this model has cross-attention: pass encoder_hidden_states")
        if self.config.word_embeddings and encoder_hidden_states.shape[1] % 2:
            raise ValueError(f"this model reads word_embeddings: encoder_hidden_states must be CLIP's states followed "
                             f"by the words' embeddings (2L tokens, tiny_dit.text_encoder.text_context), got "
                             f"{encoder_hidden_states.shape[1]} tokens")
        if (known_latents is not None or known_mask is not None) and not self.config.known_frames_input:
            raise ValueError("this model takes no known frames (known_frames_input is off): hold them instead "
                             "(tiny_dit.conditions.hold_known_frames)")
        capture = set(capture_attention_layers or ())
        if any(not 0 <= i < len(self.blocks) for i in capture):
            raise ValueError(f"capture_attention_layers {sorted(capture)} out of range for {len(self.blocks)} blocks")

        B, _, T, H, W = hidden_states.shape
        pt, p = self.config.patch_size_t, self.config.patch_size
        grid = self.token_grid(T, H, W)  # (T', H', W')

        # 1. Latents -> tokens, plus where each token is.
        # The network runs in its weights' dtype (float32 or bfloat16); `hidden_states` itself stays as
        # given, so that the conversion to a velocity in step 5 sees the exact x_s.
        inputs = hidden_states
        if self.config.known_frames_input:  # the known frames, clean, beside the noisy latents (zero: none)
            mask = hidden_states.new_zeros(B, 1, T, 1, 1) if known_mask is None else known_mask.to(hidden_states)
            known = hidden_states.new_zeros(()) if known_latents is None else known_latents.to(hidden_states)
            inputs = torch.cat([hidden_states, (known * mask).expand_as(hidden_states),
                                mask.expand(B, 1, T, H, W)], dim=1)  # (B, 2C + 1, T, H, W)
        x = self.patch_embed(patchify(inputs, pt, p).to(self.patch_embed.weight.dtype))  # (B, N, D)
        time_span = self.config.num_frames // pt if self.config.interpolate_time else None
        space_span = self.config.sample_size // p if self.config.centre_space else None
        pos = get_3d_sincos_pos_embed(self.config.hidden_size, grid, time_span, space_span)  # (N, D), cached on CPU
        x = x + pos.to(device=x.device, dtype=x.dtype)

        # 2. One conditioning vector per clip: noise level (+ pooled prompt, with pooled_conditioning).
        timestep = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(B)  # (B,)
        c = self.time_embed(timestep)  # (B, D)
        if self.pooled_embed is not None:
            c = c + self.pooled_embed(pooled_projections.to(x.dtype))  # (B, D)

        context = context_mask = None
        if self.config.cross_attention:
            context = encoder_hidden_states.to(x.dtype)  # (B, L, text_embed_dim)
            context_mask = encoder_attention_mask  # (B, L) or None
            if self.config.word_embeddings:  # (B, 2L, text_embed_dim): states, then words; each marked
                states, words = context.chunk(2, dim=1)  # each (B, L, text_embed_dim)
                context = torch.cat([states + self.text_type_embed.weight[0], self.word_proj(words)
                                     + self.text_type_embed.weight[1]], dim=1)

        # 3. The transformer.
        attentions = {}
        for i, block in enumerate(self.blocks):
            args = (x, c, grid, context, context_mask, i in capture)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x, probs = self._gradient_checkpointing_func(block, *args)  # recompute activations in backward
            else:
                x, probs = block(*args)  # x stays (B, N, D)
            if probs is not None:
                attentions[i] = probs

        # 4. Tokens -> latents.
        x = self.final_layer(x, c)  # (B, N, pt*p*p*C_out)
        sample = unpatchify(x, grid, pt, p, self.out_channels)  # (B, C_out, T, H, W)

        # 5. A clean-clip prediction becomes a velocity: the straight line from x0_hat through x_s.
        if self.config.prediction_type == "sample":
            s = (timestep.float() / TIMESTEP_SCALE).clamp(min=MIN_NOISE_LEVEL).view(B, 1, 1, 1, 1)
            sample = velocity_from_x0(hidden_states.float(), s, sample.float())  # (B, C, T, H, W), float32

        attentions = attentions if capture else None
        if not return_dict:
            return (sample,) if attentions is None else (sample, attentions)
        return TinyDiTOutput(sample=sample, attentions=attentions)


# ----------------------------------------------------------------------------
# Presets (as DiT's DiT_models): the model's shape by name. The input sizes (latent channels,
# frames, sample size, CLIP widths) come from the data; training defaults per preset live in
# tiny_dit/training/train.py. Token counts are for 16 x 32 x 32 latents.
# ----------------------------------------------------------------------------

TINY_DIT_PRESETS = {
    # For tests and quick checks: runs in seconds on one CPU core.
    "tiny": dict(hidden_size=32, depth=2, num_heads=2, patch_size=2, patch_size_t=2, cross_attention=True),
    # For 2 CPU cores: patch 4 x 4 x 4 -> 4 x 8 x 8 = 256 tokens, 5.1M parameters (the bundled model).
    # conv_mlp: see DepthwiseConv and docs/recipe-study.md; interpolate_time, centre_space: other lengths and
    # sizes (get_3d_sincos_pos_embed).
    "small": dict(hidden_size=192, depth=6, num_heads=6, patch_size=4, patch_size_t=4, cross_attention=True,
                  conv_mlp=True, interpolate_time=True, centre_space=True),
    # For one GPU: patch 2 x 2 x 4 -> 4 x 16 x 16 = 1024 tokens, 37M parameters.
    "base": dict(hidden_size=384, depth=12, num_heads=6, patch_size=2, patch_size_t=4, cross_attention=True,
                 conv_mlp=True, interpolate_time=True, centre_space=True),
}


def tiny_dit_preset(name: str, **kwargs) -> TinyDiT:
    """A fresh TinyDiT of a preset's shape; `kwargs` are the input sizes (in_channels, num_frames,
    sample_size, text_embed_dim, pooled_embed_dim) and any TinyDiT argument that replaces the preset's."""
    if name not in TINY_DIT_PRESETS:
        raise ValueError(f"unknown TinyDiT preset {name!r}: choose one of {list(TINY_DIT_PRESETS)}")
    return TinyDiT(**{**TINY_DIT_PRESETS[name], **kwargs})
