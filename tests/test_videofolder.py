"""Real clips in the videofolder layout: any size and length in, fixed shape out."""

import json

import numpy as np
import pytest

from tiny_dit.data.videofolder import VideoFolder, resize_center_crop, sample_frame_indices
from tiny_dit.video import write_mp4


def make_folder(root, clips):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.jsonl", "w") as f:
        for name, frames, text in clips:
            if frames is not None:
                write_mp4(root / name, frames)
            f.write(json.dumps({"file_name": name, "text": text}) + "\n")
    return root


def gradient_clip(t, h, w):
    """A clip whose left half is red and right half blue, so crops can be checked."""
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[:, :, : w // 2, 0] = 255
    frames[:, :, w // 2:, 2] = 255
    return frames


def test_loads_any_size_and_length_and_skips_corrupt(tmp_path):
    root = make_folder(tmp_path / "clips", [
        ("wide.mp4", gradient_clip(24, 96, 160), "a wide clip of a red and blue wall"),
        ("short.mp4", gradient_clip(5, 120, 64), "a short tall clip"),
        ("broken.mp4", None, "this file is corrupt"),
        ("missing.mp4", None, "this file does not exist"),
    ])
    (root / "broken.mp4").write_bytes(b"not an mp4 at all" * 100)
    folder = VideoFolder(root, num_frames=16, size=64)
    with pytest.warns(UserWarning, match="skipping"):
        items = list(folder)
    assert folder.num_skipped == 2 and len(items) == 2
    for frames, text, meta in items:
        assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
        assert text == meta["text"]
    wide = items[0][0]
    # centre crop of a red|blue clip keeps both halves
    assert wide[0, 32, 5, 0] > 200 and wide[0, 32, 58, 2] > 200


def test_missing_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.jsonl"):
        VideoFolder(tmp_path)


def test_frame_sampling_spreads_and_repeats():
    assert sample_frame_indices(32, 4).tolist() == [0, 10, 21, 31]
    short = sample_frame_indices(5, 16)
    assert len(short) == 16 and short[0] == 0 and short[-1] == 4 and (np.diff(short) >= 0).all()


def test_resize_center_crop_shape():
    out = resize_center_crop(np.zeros((3, 50, 200, 3), dtype=np.uint8), 32)
    assert out.shape == (3, 32, 32, 3)
