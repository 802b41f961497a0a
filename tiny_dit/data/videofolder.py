"""Real clips: a folder in the Hugging Face "videofolder" layout.

    my_clips/
      metadata.jsonl      {"file_name": "a.mp4", "text": "a dog runs on the beach"} per line
      a.mp4
      ...

Every clip is brought to the shape the model trains on: `num_frames` frames
sampled evenly over the clip (frames repeat if it is shorter), the shorter side
resized to `size` and the centre cropped to size x size. A file that cannot be
read is skipped with a warning and counted, so one bad file never stops a run.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from tiny_dit.video import read_mp4, resize_frames


def sample_frame_indices(total: int, num_frames: int) -> np.ndarray:
    """num_frames indices spread evenly over [0, total); repeats when total < num_frames."""
    return np.linspace(0, total - 1, num_frames).round().astype(np.int64)


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, size, size, 3): shorter side to size, centre crop."""
    height, width = frames.shape[1:3]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        frames = resize_frames(frames, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return frames[:, top:top + size, left:left + size].copy()


class VideoFolder:
    """Iterate over (frames uint8 (T, size, size, 3), caption, metadata) of a videofolder.

    `num_skipped` counts the clips that could not be read in the last pass."""

    def __init__(self, root: str | Path, num_frames: int = 16, size: int = 128):
        self.root = Path(root)
        self.num_frames, self.size = num_frames, size
        metadata = self.root / "metadata.jsonl"
        if not metadata.is_file():
            raise FileNotFoundError(f"{metadata} not found: a videofolder needs a metadata.jsonl "
                                    "with one {\"file_name\": ..., \"text\": ...} per line")
        self.records = []
        for line_no, line in enumerate(metadata.read_text().splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if "file_name" not in record or "text" not in record:
                raise ValueError(f"{metadata}:{line_no}: needs 'file_name' and 'text'")
            self.records.append(record)
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.records)

    def load(self, record: dict) -> np.ndarray:
        frames, _ = read_mp4(self.root / record["file_name"])
        frames = frames[sample_frame_indices(len(frames), self.num_frames)]
        return resize_center_crop(frames, self.size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, str, dict]]:
        self.num_skipped = 0
        for record in self.records:
            try:
                frames = self.load(record)
            except Exception as error:  # a corrupt or missing file: count it, go on
                self.num_skipped += 1
                warnings.warn(f"skipping {record['file_name']}: {error}", stacklevel=2)
                continue
            yield frames, record["text"], record
