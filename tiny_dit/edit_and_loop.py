"""Edit a clip by prompt, and make a clip that loops: Sora's last two tasks (the pipeline's `video=`,
`strength=` and `loop=`).

    pipe("a blue circle moving right on a black background", video=clip, strength=0.7)   # edit a clip
    pipe("a red circle moving right on a black background", loop=True)                    # a loop

Neither needs training: the edit is flow matching's forward process put to work, and the loop is
made from an ordinary clip.

Editing (SDEdit, Meng et al. 2021; diffusers' video-to-video pipelines take the same `video` and
`strength`). Training noised every clip along a straight line,

    x_s = (1 - s) * x0 + s * noise          (tiny_dit.flow.add_noise)

and the sampler walks that line back from s = 1 to 0. Nothing says it must start at s = 1: noise
the given clip to a level s and start there, and the model denoises it as it would any clip at
that level, this time to the new prompt. What survives the noise decides what is kept, and what
survives is what many latent pixels agree on (the app's forward-process view shows it): the
outline, a few latent pixels at the object's edge, is gone first, so a shape edit works from
s = 0.3; the object's colour and where it is survive longer, so a colour needs 0.5-0.9 (red to
blue at 0.7 on a path 3 px from the input's); the background, the whole frame, survives most. At
0.9 the path goes too, and at s = 1 nothing is kept: text-to-video (docs/sora-tasks.md measures it).

Which level: the sampler's own. `strength` picks the step whose noise level (the scheduler's
sigma, after its shift) is nearest it, and the run starts there, skipping the steps before
(diffusers' `get_timesteps` idiom, with the scheduler's `set_begin_index`); the clip is noised to
exactly that level, so the first step sees what it expects. With shift 1, about strength * N of
N steps run; a shift > 1 puts more of the levels at high noise (the bundle's 3: strength 0.7 starts
at s = 0.71 and runs 9 of 20 steps; edit_schedule). Multistep solvers (DPM-Solver++, UniPC) start with a first-order step wherever they
start, and Heun starts on the first of a step's two passes, so every solver can start mid-schedule.

Loops. Every motion of the shapes world is one-way: an object moves left, right, up or down, or
grows or shrinks, for the whole clip, and never leaves the frame. A clip of such a motion cannot
end where it started; the only clips that loop are ones that turn around (or wrap across the
frame's edge, which this model never saw: objects never leave the frame in training). So a loop
here is *there and back*: the model makes the outward clip, num_frames // 2 + 1 frames of the
prompt, and the way back is those frames in reverse (a pendulum; a growing object grows and
shrinks again, a pulse). Every change between neighbouring frames, the seam from the last frame to
the first included, is then one of the outward clip's own changes, so the seam is as smooth as any
other pair of frames. By default a loop is 2 * 16 - 2 = 30 frames, so that the way out is the
length the model learned (a 9-frame way out moves less surely). Two ways that ask the model for
more were measured against it (docs/sora-tasks.md): generating the way back as a bridge with known
frames at both ends (Sora's report loops a clip by extending it into its own start), whose seams
jump as the connections of tiny_dit.conditions do (as far as a plain clip's jump back, several
times the median change); and rolling the latent clip in time between steps so that its end and
start are denoised side by side, which narrows the seam by stopping the object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tiny_dit.autoencoder import encode_clips
from tiny_dit.conditions import clip_frames
from tiny_dit.schedulers import set_flow_timesteps

# diffusers' video-to-video pipelines default to 0.8. At 0.7 the bundle makes a red circle blue in every sample
# on a path 3 px from the input's, and changes shapes as surely as at 0.3 (docs/sora-tasks.md measures each
# kind of edit); at 0.9 the path goes.
DEFAULT_STRENGTH = 0.7


# ----------------------------------------------------------------------------
# Editing a clip (SDEdit)
# ----------------------------------------------------------------------------


def video_frames(video, name: str = "video") -> torch.Tensor:
    """The clip to edit as uint8 (T, H, W, 3): a list of PIL images, or an array/tensor (T, H, W, 3),
    uint8 or float in [0, 1] (so a clip the pipeline returned, `out.frames[0]`, can be passed back)."""
    if isinstance(video, (str, Path)):
        raise ValueError(f"{name} must be frames, not a file name ({str(video)!r:.80}): read a video file with "
                         "tiny_dit.video.read_mp4(path)[0]")
    return clip_frames(video, name)


def edit_start_index(scheduler, strength: float) -> int:
    """Where a run of strength `strength` starts: the index into the scheduler's set timesteps (and
    sigmas) of the step whose noise level is nearest `strength`. Only the first pass of a step can
    start one (Heun's second pass corrects the first), and the final level 0 never does, so at least
    one step runs. Ties go to the noisier step. Call it after set_flow_timesteps."""
    order = int(getattr(scheduler, "order", 1))
    starts = np.arange(0, len(scheduler.timesteps), order)
    sigmas = scheduler.sigmas.detach().float().cpu().numpy()[starts]
    return int(starts[int(np.abs(sigmas - float(strength)).argmin())])


def edit_schedule(scheduler, num_inference_steps: int, strength: float) -> tuple[float, int]:
    """(the noise level an edit of this strength starts at, the transformer passes it makes) for a run of
    num_inference_steps with this scheduler's class and config; `scheduler` is left as it is (a copy is set).
    E.g. Euler with the bundle's shift 3, 20 steps, strength 0.7: (0.71, 9)."""
    copy = type(scheduler).from_config(scheduler.config)
    set_flow_timesteps(copy, num_inference_steps)
    begin = edit_start_index(copy, strength)
    return float(copy.sigmas[begin]), len(copy.timesteps) - begin


@torch.no_grad()
def encode_video_to_edit(vae, frames: torch.Tensor, latent_frames: int, device) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> their latents (1, C, latent_frames, h, w): the x0 to noise. A clip
    shorter than whole tubelets is padded with its last latent frame (the pipeline cuts those frames)."""
    latents = encode_clips(vae, frames[None]).to(device, torch.float32)  # (1, C, T, h, w)
    missing = latent_frames - latents.shape[2]
    if missing > 0:
        latents = torch.cat([latents, latents[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2)
    return latents


# ----------------------------------------------------------------------------
# Loops: there and back
# ----------------------------------------------------------------------------


def outward_num_frames(num_frames: int) -> int:
    """Frames of the outward clip of a num_frames loop: num_frames // 2 + 1 (9 of a 16-frame loop)."""
    return num_frames // 2 + 1


def loop_num_frames(outward: int) -> int:
    """Frames of the loop whose way out has `outward` frames: 2 * outward - 2 (the ends shown once each), at
    least 2. A loop's default length: with the trained length as its way out (16 -> 30), the model draws the
    motion it learned; a 9-frame way out (a 16-frame loop) moves less surely (docs/sora-tasks.md)."""
    return max(2, 2 * outward - 2)


def loop_frame_order(num_frames: int) -> list[int]:
    """Which outward frame each frame of a num_frames loop shows: out and back, the ends once each, so
    that every neighbouring pair, the last frame and the first included, is a step of the outward clip.
    16 frames: 0 1 ... 8 7 ... 1 (then 0 again). An odd length shows the far end twice (a pause at the
    turn): 15 frames: 0 ... 7 7 ... 1."""
    outward = outward_num_frames(num_frames)
    back = range(outward - 1 if num_frames % 2 else outward - 2, 0, -1)
    return [*range(outward), *back]


def there_and_back(latents: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The loop of num_frames frames made from an outward clip's latents (B, C, >= outward frames, h, w)
    (or frames: any tensor whose third axis is time): (B, C, num_frames, h, w)."""
    return latents[:, :, loop_frame_order(num_frames)]


def seam_ratio(clip: np.ndarray) -> float:
    """How the loop's seam (last frame -> first) compares with the clip's other frame changes: the mean
    absolute pixel change across the seam over the median change between neighbouring frames, for a clip
    (T, H, W, 3). 1 is as smooth as the median pair of neighbours; a jump back to the start is far above."""
    frames = np.asarray(clip, dtype=np.float32)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # (T - 1,)
    seam = np.abs(frames[0] - frames[-1]).mean()
    return float(seam / max(np.median(change), 1e-6))
