"""Frames on their way to and from files: conversions, resizing, tiling, and mp4/GIF files.

    to_uint8(frames)                 float frames in [0, 1] (the pipeline's output_type="np") -> uint8
    resize_frames(frames, h, w)      uint8 frames at another size (antialiased)
    make_grid(clips)                 N clips tiled into one clip
    write_mp4, read_mp4, probe_mp4   mp4 files, with imageio-ffmpeg (which ships its own ffmpeg)
    write_gif                        a looping GIF

Written clips are H.264, yuv420p, with the index at the front (faststart): the
format every browser plays straight from a `<video>` tag without re-encoding.
"""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np


def to_uint8(frames) -> np.ndarray:
    """Float frames in [0, 1] (or uint8), a numpy array or a tensor -> uint8 numpy, any shape: the
    one conversion of the pipeline's float frames (output_type="np") to what mp4 files and CLIP take."""
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def resize_frames(frames, height: int, width: int) -> np.ndarray:
    """uint8 frames (T, H, W, 3), a numpy array or a tensor -> uint8 numpy (T, height, width, 3), resized
    bilinearly with antialiasing (so that shrinking averages pixels instead of skipping them)."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.array(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W); np.array: a writable copy
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8, crf: int = 18) -> Path:
    """Write uint8 frames (T, H, W, 3) as a browser-playable H.264 mp4.

    H and W must be even (yuv420p halves the chroma resolution)."""
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {width}x{height}")
    path = Path(path)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        quality=None, macro_block_size=1, ffmpeg_log_level="error",
        # veryfast: the same size as the default "medium" at these tiny frame sizes, in about 15% less time
        output_params=["-crf", str(crf), "-preset", "veryfast", "-movflags", "+faststart"])
    writer.send(None)  # start the generator
    for frame in frames:
        writer.send(frame)
    writer.close()
    return path


def read_mp4(path: str | Path) -> tuple[np.ndarray, float]:
    """Read every frame of a video as uint8 (T, H, W, 3); also return its fps.

    Raises RuntimeError (or OSError) for a file ffmpeg cannot decode."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
    if not frames:
        raise RuntimeError(f"{path}: no frames could be decoded")
    return np.stack(frames), float(meta.get("fps") or 0.0)


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8) -> Path:
    """Write uint8 frames (T, H, W, 3) as a looping animated GIF (for places that show no video)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in np.asarray(frames)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def probe_mp4(path: str | Path) -> dict:
    """What a browser needs to know about a file: codec, pixel format, size, frame count, fps,
    and whether the index (moov atom) comes before the media data (faststart)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    reader.close()
    num_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    head = Path(path).read_bytes()[:1 << 16]
    moov, mdat = head.find(b"moov"), head.find(b"mdat")
    return {"codec": meta["codec"], "pix_fmt": meta["pix_fmt"].split("(")[0], "size": tuple(meta["size"]),
            "fps": meta["fps"], "num_frames": num_frames,
            "faststart": moov != -1 and (mdat == -1 or moov < mdat)}


def grid_layout(count: int, ncols: int | None = None) -> tuple[int, int]:
    """(rows, columns) of make_grid's near-square grid of `count` clips: ceil(sqrt(count)) columns."""
    ncols = min(count, ncols or int(np.ceil(np.sqrt(count))))
    return int(np.ceil(count / ncols)), ncols


def grid_cell(i: int, ncols: int, h: int, w: int, padding: int) -> tuple[int, int]:
    """Top-left (y, x) of clip i in a grid of h x w clips separated by `padding` pixels."""
    return (i // ncols) * (h + padding), (i % ncols) * (w + padding)


def make_grid(frames: np.ndarray, ncols: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile N clips (N, T, H, W, 3) into one clip (T, H', W', 3), in a near-square grid.

    Clips fill the grid in reading order; `ncols` defaults to ceil(sqrt(N)), so 4 clips
    make 2 x 2 and 5 make 3 + 2. Clips are separated (not surrounded) by `padding`
    pixels of `pad_value`; empty cells are `pad_value` too. The dtype is kept.
    """
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected clips (N, T, H, W, 3) with N >= 1, got {frames.shape}")
    n, t, h, w, _ = frames.shape
    nrows, ncols = grid_layout(n, ncols)
    grid = np.full((t, nrows * (h + padding) - padding, ncols * (w + padding) - padding, 3), pad_value,
                   dtype=frames.dtype)
    for i, clip in enumerate(frames):
        y, x = grid_cell(i, ncols, h, w, padding)
        grid[:, y:y + h, x:x + w] = clip
    return grid


def split_grid(grid: np.ndarray, count: int, padding: int = 2) -> np.ndarray | None:
    """The clips of a make_grid grid (T, H', W', 3) of `count` clips: (count, T, h, w, 3),
    or None if the grid's size does not fit that layout."""
    if count < 1:
        return None
    nrows, ncols = grid_layout(count)
    _, height, width, _ = grid.shape
    h, rem_h = divmod(height - padding * (nrows - 1), nrows)
    w, rem_w = divmod(width - padding * (ncols - 1), ncols)
    if rem_h or rem_w or h < 2 or w < 2:
        return None
    cells = (grid_cell(i, ncols, h, w, padding) for i in range(count))
    return np.stack([grid[:, y:y + h, x:x + w] for y, x in cells])
