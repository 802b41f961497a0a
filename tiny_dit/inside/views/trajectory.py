"""Latents decoded on the way: the denoising trajectory (x_t and pred_x0 pass by pass, and the noise
levels the solver visits), the full model's path beside its fast student's, the forward process (a clean
clip noised, x_s = (1 - s) x0 + s noise) and the live preview while sampling."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from tiny_dit.flow import add_noise
from tiny_dit.inside.views.drawing import (BACKGROUND, INK, MUTED, SERIES_COLORS, filmstrip, font, spread,
                                           stack)
from tiny_dit.inside.views.patch_grid import latent_channels_image
from tiny_dit.video import to_uint8


def decode(pipe, latents, frame_indices: list[int] | None = None) -> np.ndarray:
    """Latents (C, T, h, w) or (B, C, T, h, w) -> uint8 frames (B, T, H, W, 3); with frame_indices,
    only those frames are decoded (the autoencoder works frame by frame)."""
    x = torch.as_tensor(np.asarray(latents, dtype=np.float32))
    if x.dim() == 4:
        x = x[None]
    if frame_indices is not None:
        x = x[:, :, list(frame_indices)]
    with torch.no_grad():
        return to_uint8(pipe.decode_latents(x))


FEWER_STEPS_TEXT = (
    "Why a few steps can be enough: rectified flow is trained on straight lines from noise to clip, so the "
    "sampler's paths are nearly straight, and on a straight path one step lands where a hundred would; "
    "higher-order solvers (Heun, DPM-Solver++, UniPC) use more than one velocity to correct for the bends.")


def noise_levels_chart(record, k: int | None = None, size: tuple[int, int] = (360, 150)) -> Image.Image:
    """The noise levels the run's solver visited (record.sigmas: the input of every transformer pass,
    then 0), one dot per pass, with pass k (its input x_t[k]) ringed."""
    sigmas = np.asarray(record.sigmas, dtype=np.float64)
    passes = len(sigmas) - 1
    w, h = size
    left, right, top, bottom = 36, 10, 22, 26
    out = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(out)
    solver = getattr(record, "scheduler", "euler")
    steps = record.num_inference_steps
    title = (f"noise level sigma at each pass: {solver}, {passes} passes"
             + (f" for {steps} steps" if passes != steps else ""))
    draw.text((left, 3), title, fill=INK, font=font(12))
    pw, ph = w - left - right, h - top - bottom

    def xy(i, v):
        return left + (i / max(passes, 1)) * pw, top + ph - float(v) * ph

    for tick in (0.0, 0.5, 1.0):
        _, y = xy(0, tick)
        draw.line([(left, y), (left + pw, y)], fill=(232, 232, 232))
        draw.text((4, y - 7), f"{tick:g}", fill=MUTED, font=font(10))
    draw.rectangle([left, top, left + pw, top + ph], outline=(180, 180, 180))
    draw.text((left, top + ph + 6), "pass 0 (noise)", fill=MUTED, font=font(10))
    draw.text((left + pw - 60, top + ph + 6), f"{passes}: the clip", fill=MUTED, font=font(10))
    draw.text((left + pw // 2 - 20, top + ph + 6), "pass ->", fill=MUTED, font=font(10))
    points = [xy(i, v) for i, v in enumerate(sigmas)]
    if len(points) > 1:
        draw.line(points, fill=SERIES_COLORS[0], width=1)
    for x, y in points:
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=SERIES_COLORS[0])
    if k is not None and 0 <= k < len(points):
        x, y = points[k]
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=SERIES_COLORS[5], width=2)
    return out


def trajectory_images(record, pipe, k: int, frames_shown: int = 8) -> tuple[Image.Image, Image.Image, str]:
    """Pass k of the run (0 = the starting noise, passes = the result), for clip 1: the noise levels
    the solver visits above the latent channels of x_t, and x_t and the predicted clean clip pred_x0
    decoded to frames. A pass is a step for Euler, DPM-Solver++ and UniPC; Heun makes two a step."""
    steps = getattr(record, "num_passes", record.num_inference_steps)
    k = int(min(max(k, 0), steps))
    sigma = float(record.sigmas[k])
    x_t = record.x_t[k].astype(np.float32)
    latent_image = latent_channels_image(x_t, record.geometry, cell=80,
                                         title=f"x_t at noise level sigma = {sigma:.3f}: latent channels")
    latent_image = stack([noise_levels_chart(record, k), latent_image], gap=4)
    idx = spread(frames_shown, record.geometry.num_frames)
    solver = getattr(record, "scheduler", "euler")
    what_step = "Euler step" if solver == "euler" else f"{solver} solver"
    if k < steps:
        pred = record.pred_x0[k].astype(np.float32)
        decoded = decode(pipe, np.stack([x_t, pred]), idx)
        labels = ["x_t", "pred_x0"]
        done = "Before the first iteration" if k == 0 else f"After {k} of {steps} iterations"
        what = (f"**{done}**: x_t is at noise level sigma = {sigma:.3f}. Iteration {k + 1} feeds it to the model, "
                f"which predicts a velocity v; pred_x0 = x_t - sigma * v is where the straight path would end. The "
                f"{what_step} then moves x_t to sigma = {float(record.sigmas[k + 1]):.3f}.")
    else:
        decoded = decode(pipe, x_t, idx)
        labels = ["result"]
        what = f"**After all {steps} iterations**: sigma = 0, x_t is the finished clip (clip 1)."
    if steps != record.num_inference_steps:
        what += (f" (An iteration here is one transformer pass: {solver} takes {steps} passes for its "
                 f"{record.num_inference_steps} steps.)")
    what += "\n\n" + FEWER_STEPS_TEXT
    strip = filmstrip(decoded, None, cell=80, row_labels=labels, show_frame_numbers=False)
    return latent_image, stack([column_header(strip, [f"frame {f + 1}" for f in idx]), strip], gap=0), what


def column_header(strip: Image.Image, labels: list[str], cell: int = 80, gap: int = 2) -> Image.Image:
    """A band to stack above a filmstrip of `cell`-wide columns (after its row labels): one label a column."""
    header = Image.new("RGB", (strip.width, 16), BACKGROUND)
    draw = ImageDraw.Draw(header)
    left = strip.width - len(labels) * (cell + gap) + gap  # where the first column starts
    for j, label in enumerate(labels):
        draw.text((left + j * (cell + gap) + 2, 2), label, fill=MUTED, font=font(11))
    return header


def fast_comparison_images(full, fast, pipe, frames_shown: int = 8) -> tuple[Image.Image, Image.Image]:
    """The full model's run beside its fast student's (two RunRecords from the same starting noise,
    tiny_dit.inside.fast_comparison), decoded with `pipe`: (their paths, their finished clips).

    The paths: one column per noise level the student visits (from 1, the shared noise, to 0, the clips), the
    middle frame of x_t (where each sampler is) and of pred_x0 (where one straight step from there would land;
    at 0, the clip itself) for each model; the full model's columns show its pass nearest that level (the same
    level for 1, 2 or 4 student steps of a 20-step teacher at one shift)."""
    levels = np.asarray(fast.sigmas, dtype=np.float64)
    nearest = [int(np.abs(np.asarray(full.sigmas, dtype=np.float64) - level).argmin()) for level in levels]

    def at(record, passes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """x_t and pred_x0 of clip 1 at each pass (pred_x0 after the last pass: the finished x_t)."""
        x_t = record.x_t[passes]
        pred = np.stack([record.pred_x0[k] if k < record.num_passes else record.x_t[k] for k in passes])
        return x_t, pred

    (full_x, full_pred), (fast_x, fast_pred) = at(full, nearest), at(fast, list(range(len(levels))))
    rows = np.stack([full_x, fast_x, full_pred, fast_pred])  # (4, columns, C, T, h, w)
    middle = full.geometry.num_frames // 2
    decoded = decode(pipe, rows.reshape(-1, *rows.shape[2:]), [middle])  # (4 x columns, 1, H, W, 3)
    decoded = decoded[:, 0].reshape(*rows.shape[:2], *decoded.shape[2:])  # (4, columns, H, W, 3)
    where = "full (nearest pass)" if np.abs(np.asarray(full.sigmas)[nearest] - levels).max() > 1e-3 else "full"
    strip = filmstrip(decoded, None, cell=80, show_frame_numbers=False,
                      row_labels=[f"{where}: x_t", "fast: x_t", f"{where}: pred_x0", "fast: pred_x0"])
    paths = stack([column_header(strip, [f"sigma = {level:.2f}" for level in levels]), strip], gap=0)

    idx = spread(frames_shown, full.geometry.num_frames)
    clips = filmstrip(np.stack([full.frames[0], fast.frames[0]]), idx, cell=80,
                      row_labels=[f"full: {full.num_inference_steps} steps", f"fast: {fast.num_inference_steps} steps"])
    return paths, clips


def forward_process_images(pipe, clip: np.ndarray, level: float, seed: int = 0,
                           levels: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
                           frames_shown: int = 8) -> tuple[Image.Image, Image.Image]:
    """A clean clip (T, H, W, 3) encoded to latents x0, noised as x_s = (1 - s) x0 + s noise with one
    fixed noise draw, and decoded: some frames at `level`, and the middle frame at several levels."""
    from tiny_dit.autoencoder import encode_clips

    x0 = encode_clips(pipe.vae, torch.from_numpy(to_uint8(clip))[None]).float()  # (1, C, T, h, w)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)))
    t = x0.shape[2]
    idx, mid = spread(frames_shown, t), t // 2
    at_level = decode(pipe, add_noise(x0, noise, level).numpy(), idx)  # (1, F, H, W, 3)
    ladder = decode(pipe, torch.cat([add_noise(x0, noise, s) for s in levels]).numpy(), [mid])[:, 0]
    strip = filmstrip(at_level, None, cell=80, row_labels=[f"s = {level:.2f}"], show_frame_numbers=False)
    ladder_image = filmstrip(ladder[None], None, cell=96, show_frame_numbers=False)
    header = Image.new("RGB", (ladder_image.width, 18), BACKGROUND)
    draw = ImageDraw.Draw(header)
    for i, s in enumerate(levels):
        draw.text((i * 98 + 2, 2), f"s = {s:g}", fill=INK, font=font(12))
    return strip, stack([header, ladder_image], gap=0)


def preview_image(pipe, pred_x0: torch.Tensor, max_clips: int = 4, frames_shown: int = 4,
                  cell: int = 80) -> Image.Image:
    """The live preview: the predicted clean clips (B, C, T, h, w), the first few, a few frames each."""
    latents = pred_x0[:max_clips].detach().float().cpu()
    decoded = decode(pipe, latents.numpy(), spread(frames_shown, latents.shape[2]))
    return filmstrip(decoded, None, cell=cell, show_frame_numbers=False,
                     row_labels=[f"clip {i + 1}" for i in range(len(decoded))])
