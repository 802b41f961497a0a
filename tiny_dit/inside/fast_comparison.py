"""The full model beside its fast (distilled) student: one prompt from one starting noise, sampled by both.

    paths, clips, md = compare_with_fast(full, fast, prompt, seed, fast_steps=4)

The full model samples at its defaults (its steps, guider and scheduler: what the student was distilled to
imitate, tiny_dit.training.distill), the student in `fast_steps` steps of its own scheduler at its own guidance
(off: it is in its weights). Both draw their starting noise from `seed`, one clip each: the noise of clip 1 of
a run with that seed, whatever its number of clips. Both runs are recorded (tiny_dit.inside.recorder), so the
pictures show where each model stands at every noise level the student visits (views.trajectory.
fast_comparison_images) and the text what each cost (teaching.fast_comparison_summary).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

import numpy as np

from tiny_dit.inside import teaching
from tiny_dit.inside.recorder import RunRecord, record_run
from tiny_dit.inside.views.trajectory import fast_comparison_images


def record_full_and_fast(full, fast, prompt: str, seed: int, fast_steps: int, lock: threading.Lock | None = None,
                         on_start: Callable[[int, str], None] | None = None) -> tuple[RunRecord, RunRecord]:
    """The recorded runs of `full` at its default steps and of `fast` in `fast_steps`, each at its own guider and
    scheduler, one clip each from the noise of `seed`. Each samples under `lock`, if given (one sampling run at a
    time); on_start(i, what) is called before run i (0: the full model, 1: the fast one)."""
    runs = []
    for i, (pipe, steps, what) in enumerate([
            (full, full.default_num_inference_steps, f"the full model, {full.default_num_inference_steps} steps"),
            (fast, fast_steps, f"the fast model, {fast_steps} step{'s' if fast_steps > 1 else ''}")]):
        if on_start is not None:
            on_start(i, what)
        with lock if lock is not None else contextlib.nullcontext():
            runs.append(record_run(pipe, prompt, seed=seed, num_inference_steps=steps))
    return runs[0], runs[1]


def clip_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The mean absolute difference of two uint8 clips (T, H, W, 3), in grey levels (0-255)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def compare_with_fast(full, fast, prompt: str, seed: int, fast_steps: int, lock: threading.Lock | None = None,
                      on_start: Callable[[int, str], None] | None = None):
    """`prompt` from the noise of `seed` by the full model (its defaults) and by its fast student (`fast_steps`):
    (the two paths at the student's noise levels, the two finished clips, Markdown: what each did, and why so
    few steps suffice). The pictures are decoded with `full`'s autoencoder (the student shares its latent space)."""
    full_run, fast_run = record_full_and_fast(full, fast, prompt, seed, fast_steps, lock, on_start)
    paths, clips = fast_comparison_images(full_run, fast_run, full)
    return paths, clips, teaching.fast_comparison_summary(full_run, fast_run,
                                                          clip_difference(full_run.frames[0], fast_run.frames[0]))
