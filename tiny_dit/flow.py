"""Rectified flow: training loss and Euler sampler, in the style of minRF.

A clean latent x0 and Gaussian noise are joined by a straight line, indexed by
the noise level s in [0, 1]:

    x_s = (1 - s) * x0 + s * noise      s = 0: data, s = 1: pure noise
    v   = d x_s / d s = noise - x0      the (constant) velocity along the line

The model sees x_s and `timestep = 1000 * s` and is trained to predict v with a
plain MSE. (TinyDiT's network by default predicts x0 and returns the v of the
line through x_s and its x0; the loss and the sampler are the same. See
`model.py` for why that matters.) This is the convention of diffusers' FlowMatchEulerDiscreteScheduler,
so a trained model can also be sampled with that scheduler. To generate, start
from noise at s = 1 and integrate dx/ds = v down to s = 0.

Text conditioning is passed as a dict of model keyword arguments, e.g.

    cond = dict(encoder_hidden_states=..., pooled_projections=..., encoder_attention_mask=...)

and `uncond` holds the same keys for the empty prompt, with batch size 1
(broadcast to the batch) or B. Token states and masks of `cond` and `uncond`
must have the same length L (CLIP pads every prompt to its context length).
"""

import torch
import torch.nn.functional as F


def sample_noise_levels(batch_size: int, generator: torch.Generator | None = None, device=None,
                        shift: float = 1.0) -> torch.Tensor:
    """Logit-normal noise levels, s = sigmoid(n) with n ~ N(0, 1): (batch_size,) in (0, 1).

    Compared with uniform s, this spends more of training on intermediate noise
    levels, where predicting v is hardest (Esser et al. 2024, "SD3").
    `shift` > 1 moves them towards noise, s -> shift * s / (1 + (shift - 1) * s), the
    same map as the `shift` of diffusers' FlowMatchEulerDiscreteScheduler: large
    clips are so redundant that a little noise hides little, and where the one
    object goes is decided at high noise levels.
    """
    s = torch.sigmoid(torch.randn(batch_size, generator=generator, device=device))
    return shift * s / (1 + (shift - 1) * s)


def _broadcast_to_batch(t: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(1, ...) or (B, ...) -> (B, ...): lets `uncond` be a single empty-prompt embedding."""
    return t.expand(batch_size, *t.shape[1:])


def flow_matching_loss(
    model,
    x0: torch.Tensor,
    cond: dict,
    uncond: dict,
    label_dropout: float = 0.1,
    generator: torch.Generator | None = None,
    noise_shift: float = 1.0,
) -> torch.Tensor:
    """Rectified-flow training loss for a batch of clean latents x0 (B, C, T, H, W).

    With probability `label_dropout` per sample, the prompt is replaced by the
    empty prompt (`uncond`), so that the same model also learns the
    unconditional velocity needed for classifier-free guidance.
    All randomness (noise levels, noise, dropout) comes from `generator`.
    """
    B = x0.shape[0]
    s = sample_noise_levels(B, generator, x0.device, shift=noise_shift)  # (B,)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    s_ = s.to(x0.dtype).view(B, *[1] * (x0.dim() - 1))  # (B, 1, 1, 1, 1): one level per clip
    x_s = (1 - s_) * x0 + s_ * noise
    target = noise - x0

    drop = torch.rand(B, generator=generator, device=x0.device) < label_dropout  # (B,) True = use empty prompt
    kwargs = {}
    for key, value in cond.items():
        drop_b = drop.view(B, *[1] * (value.dim() - 1))  # broadcast over all but the batch axis
        kwargs[key] = torch.where(drop_b, _broadcast_to_batch(uncond[key], B), value)

    v_pred = model(x_s, timestep=s * 1000, **kwargs).sample
    return F.mse_loss(v_pred.float(), target.float())


@torch.no_grad()
def euler_sample(
    model,
    noise: torch.Tensor,
    cond: dict,
    uncond: dict | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
) -> torch.Tensor:
    """Generate latents by Euler integration from s = 1 (noise) to s = 0 (data).

    With `uncond`, classifier-free guidance: the conditional and unconditional
    velocities come from one forward on a doubled batch [uncond; cond] and are
    combined as v = v_uncond + guidance_scale * (v_cond - v_uncond).
    Without `uncond` (or, equivalently, with guidance_scale = 1) it samples the
    conditional model alone.

    Args:
        noise: the starting point, (B, C, T, H, W), standard Gaussian.
    Returns:
        the sampled latents, same shape as `noise`.
    """
    B = noise.shape[0]
    if uncond is not None:
        cond = {k: torch.cat([_broadcast_to_batch(uncond[k], B), v]) for k, v in cond.items()}  # (2B, ...)

    sigmas = torch.linspace(1.0, 0.0, num_inference_steps + 1, device=noise.device)  # evenly spaced noise levels
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x_in = x if uncond is None else torch.cat([x, x])  # (B or 2B, C, T, H, W)
        v = model(x_in, timestep=(s * 1000).expand(x_in.shape[0]), **cond).sample
        if uncond is not None:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + guidance_scale * (v_cond - v_uncond)
        x = x + (s_next - s) * v  # s_next < s: a step back along the line, towards the data
    return x
