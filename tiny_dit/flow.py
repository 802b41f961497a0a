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

This file is the one home of the equations; the pipeline, the conditions, the views and
the app call these functions, so what is read here is what runs:

    add_noise              x_s = (1 - s) x0 + s noise             the forward process
    velocity_target        v = noise - x0                         what the model learns
    predicted_x0           x0 = x_s - s v                         the end of the line through x_s
    guided_velocity        v = v_u + w (v_c - v_u)                classifier-free guidance
    is_guided              w > 1                                  whether guidance runs at all
    sampling_noise_levels  1, 1 - 1/N, ..., 1/N, 0                the noise levels of N Euler steps
    sample_noise_levels    s = sigmoid(n), n ~ N(0, 1), shifted   the training noise levels
"""

import torch
import torch.nn.functional as F

# Default guidance weight w and number of steps of the samplers (euler_sample, the pipeline, the app):
# rectified flow's paths are nearly straight, so few steps suffice.
DEFAULT_GUIDANCE_SCALE = 5.0
DEFAULT_NUM_INFERENCE_STEPS = 20
# The model's timestep for noise level s is TIMESTEP_SCALE * s (diffusers' num_train_timesteps).
TIMESTEP_SCALE = 1000


def add_noise(x0: torch.Tensor, noise: torch.Tensor, s) -> torch.Tensor:
    """The forward process x_s = (1 - s) * x0 + s * noise: the point at noise level s on the straight
    line from the clean latents x0 (s = 0) to the noise (s = 1). `s` broadcasts against x0, e.g.
    (B, 1, 1, 1, 1) for one level per clip, or a float."""
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = d x_s / d s = noise - x0: the (constant) velocity along the line, what the model learns."""
    return noise - x0


def predicted_x0(x_s: torch.Tensor, s, v: torch.Tensor) -> torch.Tensor:
    """x0 = x_s - s * v: where the straight line through x_s with velocity v reaches s = 0, i.e. the
    model's current guess of the clean clip (what the app's live preview shows)."""
    return x_s - s * v


def velocity_from_x0(x_s: torch.Tensor, s, x0: torch.Tensor) -> torch.Tensor:
    """v = (x_s - x0) / s: the same line read the other way, for a model that predicts the clean clip
    (TinyDiT's prediction_type "sample") and a sampler that integrates velocities."""
    return (x_s - x0) / s


def is_guided(guidance_scale: float) -> bool:
    """Whether classifier-free guidance runs: w > 1 (diffusers' convention). With w <= 1 the samplers
    run the conditional model alone, one pass per step instead of two (w = 1 is the same clip)."""
    return guidance_scale > 1.0


def guided_velocity(v_uncond: torch.Tensor, v_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: v = v_uncond + w * (v_cond - v_uncond). w = 1 is the conditional
    velocity; a larger w pushes away from the prompt-free prediction, towards the prompt. The pipeline
    runs it as diffusers' ClassifierFreeGuidance (the same equation); the other guidance methods, and
    how each departs from this one, are in tiny_dit/guiders.py."""
    return v_uncond + guidance_scale * (v_cond - v_uncond)


def sampling_noise_levels(num_inference_steps: int, device=None) -> torch.Tensor:
    """The noise levels of N sampling steps, evenly spaced: 1, 1 - 1/N, ..., 1/N, 0 (N + 1,) float32.
    Step i goes from level i to level i + 1. The pipeline gives the first N to its scheduler (which
    may bend them with its `shift` and appends the final 0)."""
    return torch.linspace(1.0, 0.0, num_inference_steps + 1, device=device)


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
    known_mask: torch.Tensor | None = None,
    loss_weight: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    s: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rectified-flow training loss for a batch of clean latents x0 (B, C, T, H, W).

    With probability `label_dropout` per sample, the prompt is replaced by the
    empty prompt (`uncond`), so that the same model also learns the
    unconditional velocity needed for classifier-free guidance.
    All randomness (noise levels, noise, dropout) comes from `generator`.
    known_mask: (B, 1, T, 1, 1), for a model with known_frames_input: those frames of x0 are
    given to it clean (they are noised in x_s like the rest, as the sampler holds them).
    loss_weight: (B, 1, T, H, W), how much each latent pixel's error counts (e.g. more on the object, whose
    outline is a small share of the pixels): a weighted mean, so the loss keeps its scale.
    noise, s: the noise (B, C, T, H, W) and noise levels (B,) to use instead of fresh draws: a distilled student
    learns the line from the noise its teacher started from to the clip it made (tiny_dit.training.distill).
    """
    B = x0.shape[0]
    if s is None:
        s = sample_noise_levels(B, generator, x0.device, shift=noise_shift)  # (B,)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    s_ = s.to(x0.dtype).view(B, *[1] * (x0.dim() - 1))  # (B, 1, 1, 1, 1): one level per clip
    x_s = add_noise(x0, noise, s_)
    target = velocity_target(x0, noise)

    drop = torch.rand(B, generator=generator, device=x0.device) < label_dropout  # (B,) True = use empty prompt
    kwargs = {}
    for key, value in cond.items():
        drop_b = drop.view(B, *[1] * (value.dim() - 1))  # broadcast over all but the batch axis
        kwargs[key] = torch.where(drop_b, _broadcast_to_batch(uncond[key], B), value)

    if known_mask is not None:
        kwargs.update(known_latents=x0, known_mask=known_mask)
    v_pred = model(x_s, timestep=s * TIMESTEP_SCALE, **kwargs).sample
    if loss_weight is None:
        return F.mse_loss(v_pred.float(), target.float())
    weight = loss_weight.float().expand_as(v_pred)  # (B, C, T, H, W)
    return ((v_pred.float() - target.float()).square() * weight).sum() / weight.sum()


@torch.no_grad()
def euler_sample(
    model,
    noise: torch.Tensor,
    cond: dict,
    uncond: dict | None = None,
    num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
) -> torch.Tensor:
    """Generate latents by Euler integration from s = 1 (noise) to s = 0 (data).

    With `uncond` and guidance_scale > 1 (is_guided), classifier-free guidance: the
    conditional and unconditional velocities come from one forward on a doubled batch
    [uncond; cond] and are combined as v = v_uncond + guidance_scale * (v_cond - v_uncond).
    Without `uncond`, or with guidance_scale <= 1, it samples the conditional model
    alone, as the pipeline does.

    Args:
        noise: the starting point, (B, C, T, H, W), standard Gaussian.
    Returns:
        the sampled latents, same shape as `noise`.
    """
    B = noise.shape[0]
    guided = uncond is not None and is_guided(guidance_scale)
    if guided:
        cond = {k: torch.cat([_broadcast_to_batch(uncond[k], B), v]) for k, v in cond.items()}  # (2B, ...)

    sigmas = sampling_noise_levels(num_inference_steps, device=noise.device)  # (N + 1,) 1 ... 0
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x_in = torch.cat([x, x]) if guided else x  # (2B or B, C, T, H, W)
        v = model(x_in, timestep=(s * TIMESTEP_SCALE).expand(x_in.shape[0]), **cond).sample
        if guided:
            v_uncond, v_cond = v.chunk(2)
            v = guided_velocity(v_uncond, v_cond, guidance_scale)
        x = x + (s_next - s) * v  # s_next < s: a step back along the line, towards the data
    return x
