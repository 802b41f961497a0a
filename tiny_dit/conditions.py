"""Known frames: animate an image, extend a clip, connect two clips (the pipeline's `conditions`).

    from tiny_dit.pipeline import TinyDiTCondition, TinyDiTPipeline

    pipe(prompt, conditions=[TinyDiTCondition(image=img)])                        # image -> video
    pipe(prompt, num_frames=32, conditions=[TinyDiTCondition(video=clip)])        # extend forwards
    pipe(prompt, num_frames=32, conditions=[TinyDiTCondition(video=clip, frame_index=-16)])  # backwards
    pipe(prompt, conditions=[TinyDiTCondition(video=a),                           # connect a ... b
                             TinyDiTCondition(video=b, frame_index=-len(b))])

The API is that of diffusers' LTXConditionPipeline (LTXVideoCondition(image, video,
frame_index)); the method is the training-free one of SDEdit and RePaint. The
model never learned to take known frames as an input; it only learned to denoise
whole clips. So at every step of the sampler the latents of the known frames are
overwritten with what they would be at the current noise level s if the clip
were the known one, flow matching's forward process

    x_s = (1 - s) * x0_known + s * noise

and the model denoises the other frames to fit them: attention lets every
generated frame see the (noised) known frames, and as s falls to 0 the known
frames become sharper and the generated ones must agree with them more closely.
After the last step (s = 0) the known latents are exactly x0_known, so the known
frames come back as the autoencoder's round trip of the given pixels.

Which noise: the same at every step, the known frames' part of the starting
noise. The sampler is a deterministic ODE, and a clip it generates keeps its
starting noise along a straight line to its x0; holding the known frames on the
straight line between *their* starting noise and x0_known makes them look like
any other frame of such a trajectory, and the generated frames next to them saw
the same noise at every step. RePaint draws fresh noise every step because its
DDPM sampler is itself stochastic; here fresh noise would make the known frames
flicker between steps. It also keeps the result a function of the seed alone,
and at s = 1 the replacement changes nothing (the latents *are* the noise).

A model trained with known frames should do better (Open-Sora trains with random frame
masks for this): with TinyDiT's known_frames_input it also takes the clean known
latents and their mask as extra input channels, as inpainting models do, and
`tiny_dit.training.train --model known_frames_input=true` gives some clips their first or
last frames that way (`random_known_mask`). The pipeline then passes them as well
as holding them.

Frames are placed at latent frame positions: the autoencoder works frame by
frame, so pixel frame k is latent frame k and a condition at frame_index k holds
latent frames k .. k + len - 1, whatever the transformer's tubelet length
(patch_size_t). A tubelet may be part known and part generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tiny_dit.autoencoder import encode_clips
from tiny_dit.flow import add_noise
from tiny_dit.video import to_uint8


@dataclass
class TinyDiTCondition:
    """Frames to hold while the rest of the clip is generated (LTXVideoCondition's shape).

    Args:
        image: one frame: a PIL image, or an array/tensor (H, W, 3), uint8 or float in [0, 1].
        video: several frames: a list of PIL images, or an array/tensor (T, H, W, 3), uint8 or
            float in [0, 1] (so a clip the pipeline returned, `out.frames[0]`, can be passed back).
        frame_index: the frame of the output clip where the first given frame goes. Negative
            counts from the end, as in Python: frame_index=-len(video) puts the clip at the end.
    Give either image or video. The frames must have the output's height and width.
    """

    image: Any = None
    video: Any = None
    frame_index: int = 0


@dataclass
class KnownFrames:
    """The encoded conditions, laid out along the latent clip.

    latents: (1, C, T, h, w) normalised latents of the known frames, zero elsewhere;
    mask:    (1, 1, T, 1, 1) float, 1 at known frames and 0 elsewhere (broadcasts over clips).
    """

    latents: torch.Tensor
    mask: torch.Tensor


def hold_known_frames(latents: torch.Tensor, known: KnownFrames, noise: torch.Tensor,
                      sigma: float | torch.Tensor) -> torch.Tensor:
    """The known frames of latents (B, C, T, h, w), replaced by their version at noise level sigma:

        x_s = (1 - s) * x0_known + s * noise

    the forward process of rectified flow (the path every training clip was noised along). The
    other frames are left as they are. noise: (B, C, T, h, w), the starting noise of the run."""
    noised = add_noise(known.latents, noise, sigma)  # (B, C, T, h, w)
    return torch.where(known.mask.bool(), noised, latents)


# The known-frame layouts a model with known_frames_input trains on (Open-Sora's mask strategy, at the tasks
# of this module): k known frames at the start, at the end, or at both ends; k from 1 (an image) to half.
KNOWN_LAYOUTS = ("start", "end", "both ends")


def random_known_mask(batch: int, num_frames: int, probability: float, generator: torch.Generator,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Training masks (B, 1, T, 1, 1): with `probability` per clip, a random layout of known latent frames
    (KNOWN_LAYOUTS, each end 1 .. T // 2 frames long), else none (the model still learns plain
    generation)."""
    mask = torch.zeros(batch, 1, num_frames, 1, 1)
    for b in range(batch):
        if float(torch.rand((), generator=generator)) >= probability:
            continue
        layout = KNOWN_LAYOUTS[int(torch.randint(len(KNOWN_LAYOUTS), (), generator=generator))]
        first, last = (int(torch.randint(1, num_frames // 2 + 1, (), generator=generator)) for _ in range(2))
        if layout == "both ends":
            last = min(last, num_frames - first - 1)  # at least one frame left to generate
        if layout in ("start", "both ends"):
            mask[b, :, :first] = 1
        if layout in ("end", "both ends"):
            mask[b, :, num_frames - last:] = 1
    return mask.to(device)


def condition_frames(condition: TinyDiTCondition, name: str) -> torch.Tensor:
    """The frames of one condition as uint8 (L, H, W, 3); `name` (e.g. "conditions[1]") is for errors."""
    if not isinstance(condition, TinyDiTCondition):
        raise ValueError(f"{name} must be a TinyDiTCondition(image=..., video=..., frame_index=...), "
                         f"got {type(condition).__name__}")
    if (condition.image is None) == (condition.video is None):
        raise ValueError(f"{name} needs exactly one of image and video, got "
                         f"{'both' if condition.image is not None else 'neither'}")
    if condition.image is not None:
        return _to_uint8(condition.image, f"{name}.image", dims=3)[None]  # (1, H, W, 3)
    return clip_frames(condition.video, f"{name}.video")  # (L, H, W, 3) uint8


def clip_frames(video, name: str) -> torch.Tensor:
    """A clip as uint8 (T, H, W, 3): a list of PIL images (or of (H, W, 3) arrays), or an array/tensor
    (T, H, W, 3), uint8 or float in [0, 1]. `name` (e.g. "conditions[1].video", "video") is for errors."""
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError(f"{name} is an empty list: give at least one frame")
        frames = [_to_uint8(f, f"{name}[{i}]", dims=3) for i, f in enumerate(video)]
        sizes = sorted({tuple(f.shape[:2]) for f in frames})
        if len(sizes) > 1:
            raise ValueError(f"{name} has frames of different sizes (height, width) {sizes}: give frames of one size")
        frames = torch.stack(frames)
    else:
        frames = _to_uint8(video, name, dims=4)
    if len(frames) == 0:
        raise ValueError(f"{name} has no frames")
    return frames


def _to_uint8(value, name: str, dims: int) -> torch.Tensor:
    """A PIL image, numpy array or tensor, channels last, uint8 or float in [0, 1] -> uint8 tensor."""
    import PIL.Image

    layout = "(H, W, 3)" if dims == 3 else "(T, H, W, 3)"
    if isinstance(value, PIL.Image.Image):
        if dims != 3:
            raise ValueError(f"{name} is one PIL image: pass it as image=..., or a list of images as video=...")
        value = np.asarray(value.convert("RGB"))
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.array(value))  # a copy: PIL arrays are read-only
    if not torch.is_tensor(value):
        raise ValueError(f"{name} must be a PIL image or an array {layout}, got {type(value).__name__}")
    if value.dim() != dims or value.shape[-1] != 3:
        raise ValueError(f"{name} must have shape {layout} (channels last, RGB), got {tuple(value.shape)}")
    if value.dtype == torch.uint8:
        return value.cpu()
    if not value.is_floating_point():
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got {value.dtype}")
    if value.numel() and not (torch.isfinite(value).all() and value.min() >= 0 and value.max() <= 1):
        raise ValueError(f"{name} is float, so its values must lie in [0, 1] (uint8 for 0-255), "
                         f"got values from {value.min().item():g} to {value.max().item():g}")
    return torch.from_numpy(to_uint8(value.float()))


def place_conditions(conditions, num_frames: int, height: int, width: int) -> list[tuple[int, torch.Tensor]]:
    """Check the conditions against the output clip and return (first frame, uint8 frames (L, H, W, 3))
    for each, with negative frame indices resolved. Raises a ValueError that names the bad condition."""
    if isinstance(conditions, TinyDiTCondition):
        conditions = [conditions]
    if not isinstance(conditions, (list, tuple)):
        raise ValueError(f"conditions must be a list of TinyDiTCondition, got {type(conditions).__name__}")
    placed, taken = [], {}  # taken: frame -> the condition holding it
    for i, condition in enumerate(conditions):
        name = f"conditions[{i}]"
        frames = condition_frames(condition, name)
        length, (h, w) = len(frames), frames.shape[1:3]
        if (h, w) != (height, width):
            raise ValueError(f"{name} frames are {w}x{h} (width x height) but the clip is {width}x{height}: "
                             "resize them, or pass width and height to match")
        index = condition.frame_index
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise ValueError(f"{name}.frame_index must be an integer, got {index!r}")
        if not -num_frames <= index < num_frames:
            raise ValueError(f"{name}.frame_index={index} is outside the {num_frames}-frame clip "
                             f"(0 to {num_frames - 1}, or -{num_frames} to -1 counting from the end)")
        start = int(index) % num_frames
        if length > num_frames - start:
            what = "more frames than num_frames" if length > num_frames else "too many frames for its place"
            raise ValueError(f"{name} has {length} frames, {what}: from frame {start} the {num_frames}-frame clip "
                             f"has room for {num_frames - start}. Raise num_frames or move frame_index")
        for frame in range(start, start + length):
            if frame in taken:
                raise ValueError(f"{name} (frames {start} to {start + length - 1}) overlaps "
                                 f"conditions[{taken[frame]}] at frame {frame}: each frame can be held by one "
                                 "condition only")
            taken[frame] = i
        placed.append((start, frames))
    return placed


@torch.no_grad()
def encode_known_frames(vae, placed: list[tuple[int, torch.Tensor]], latent_frames: int,
                        device: torch.device) -> KnownFrames:
    """Encode placed conditions (from place_conditions) into a KnownFrames of latent_frames frames.
    One encoder pass per condition; the autoencoder works frame by frame, so frame k -> latent frame k."""
    latents, mask = None, None
    for start, frames in placed:
        encoded = encode_clips(vae, frames[None]).to(device)  # (1, C, L, h, w)
        if latents is None:
            latents = torch.zeros(1, encoded.shape[1], latent_frames, *encoded.shape[3:], device=device)
            mask = torch.zeros(1, 1, latent_frames, 1, 1, device=device)
        latents[:, :, start:start + len(frames)] = encoded
        mask[:, :, start:start + len(frames)] = 1
    return KnownFrames(latents=latents, mask=mask)
