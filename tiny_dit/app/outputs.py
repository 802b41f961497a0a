"""The app's output files: one fresh folder per run under the app's output root, each with the
run's mp4 files (browser-playable H.264, tiny_dit.video.write_mp4). Folders older than
OUTPUT_MAX_AGE_S are removed whenever a new one is made, so a classroom server's disk stays small.

    folder = run_dir(root)
    grid, clips = write_run_videos(folder, record)     # a Generate run: the grid and each clip
    video = write_video(folder, "guidance.mp4", frames)
"""

from __future__ import annotations

import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tiny_dit.data.shapes import FPS
from tiny_dit.video import make_grid, write_mp4

OUTPUT_MAX_AGE_S = 2 * 3600  # mp4 files of older runs are deleted


def remove_old_runs(root: str | Path, max_age_s: float = OUTPUT_MAX_AGE_S) -> None:
    """Delete the run folders under `root` last changed more than `max_age_s` ago."""
    now = time.time()
    for old in Path(root).glob("run-*"):
        try:
            if now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def run_dir(root: str | Path, max_age_s: float = OUTPUT_MAX_AGE_S) -> Path:
    """A fresh folder for one run's files under `root`; older run folders are removed first."""
    remove_old_runs(root, max_age_s)
    folder = Path(root) / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


def write_video(folder: str | Path, name: str, frames: np.ndarray, fps: int = FPS) -> str:
    """`frames` (T, H, W, 3) uint8 as the mp4 `folder/name`; returns its path."""
    return str(write_mp4(Path(folder) / name, frames, fps=fps))


def write_run_videos(folder: str | Path, record) -> tuple[str, list[tuple[str, str]]]:
    """A Generate run's videos (a RunRecord with all its clips): the looping grid and one mp4 per clip,
    captioned with its CLIP score, written a few at a time (one ffmpeg process each). Returns
    (grid path, [(clip path, caption)]) and records the time taken in record.timings["write_mp4"]."""
    start = time.perf_counter()
    folder = Path(folder)
    with ThreadPoolExecutor(max_workers=4) as pool:
        grid = pool.submit(write_mp4, folder / "grid.mp4", make_grid(record.frames), fps=FPS)
        paths = list(pool.map(lambda i: write_mp4(folder / f"clip-{i + 1:02d}.mp4", record.frames[i], fps=FPS),
                              range(len(record.frames))))
        grid = grid.result()
    clips = [(str(path), f"{i + 1}: CLIP {score:.2f}")
             for i, (path, score) in enumerate(zip(paths, record.clip_scores))]
    record.timings["write_mp4"] = time.perf_counter() - start
    return str(grid), clips
