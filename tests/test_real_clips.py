"""Training on real clips: a videofolder of mp4 files of any size and length, with free-form captions.

Clips of other sizes and lengths are frame-sampled and resized/centre-cropped by the latent cache; a
corrupt file is skipped and counted; `tiny_dit.training.train` then trains on the cache and leaves a pipeline that
samples clips of the cache's size (and of other sizes on request). Tiny random CLIP and autoencoder
(from test_pipeline) keep this to seconds.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_pipeline import tiny_clip, tiny_vae
from tiny_dit.training import latent_cache
from tiny_dit.training.latent_cache import LatentCache
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.training.train import main as train_main
from tiny_dit.video import probe_mp4, write_mp4

torch.set_num_threads(1)

NUM_FRAMES, SIZE = 8, 32  # what the clips become in the cache

# (file name, frames, height, width, caption): sizes, lengths and captions unlike the shapes world.
CLIPS = [
    ("wide.mp4", 10, 48, 80, "a small white square drifts to the right over a dark blue gradient"),
    ("tall.mp4", 30, 100, 60, "A ball bounces up and down -- filmed from far away, colours fading!"),
    ("short.mp4", 3, 64, 64, "three frames only: red stripes scrolling down"),
    ("long caption.mp4", 12, 40, 40, "a very long caption that goes on and on about a green dot which slowly "
                                     "circles the centre of a frame while the background turns from black to grey"),
]


def moving_pattern(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (T, H, W, 3): a bright square moving across a colour gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     np.full_like(x, int(rng.integers(256)))], axis=-1)
    frames = np.repeat(base[None], num_frames, axis=0).astype(np.uint8)
    side = max(4, min(height, width) // 4)
    for t in range(num_frames):
        top = (t * 3) % (height - side)
        left = (t * 5 + int(rng.integers(width - side))) % (width - side)
        frames[t, top:top + side, left:left + side] = 255
    return frames


@pytest.fixture(scope="module")
def videofolder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "clips"
    root.mkdir()
    records = []
    for i, (name, t, h, w, text) in enumerate(CLIPS):
        write_mp4(root / name, moving_pattern(t, h, w, seed=i), fps=12)
        records.append({"file_name": name, "text": text, "source": "synthetic"})
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 40)
    records.insert(2, {"file_name": "corrupt.mp4", "text": "this file is broken"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.mark.filterwarnings("ignore:prompt has .* tokens")  # long captions are truncated to CLIP's context
def test_train_on_a_videofolder_of_real_clips(videofolder, tmp_path, capsys):
    clip_dir, vae_dir, cache_dir, run_dir = (tmp_path / n for n in ("clip", "vae", "cache", "run"))
    tiny_clip().save_pretrained(clip_dir)
    tiny_vae().save_pretrained(vae_dir)

    # The latent cache command, on the videofolder: the corrupt file is skipped with a warning and counted.
    with pytest.warns(UserWarning, match="skipping corrupt.mp4"):
        latent_cache.main(["--out", str(cache_dir), "--videofolder", str(videofolder), "--clip", str(clip_dir),
                           "--autoencoder", str(vae_dir), "--num-frames", str(NUM_FRAMES), "--size", str(SIZE),
                           "--threads", "1"])
    assert "skipped 1 unreadable clip(s) of 5" in capsys.readouterr().out
    cache = LatentCache.load(cache_dir)
    assert len(cache) == len(CLIPS) and cache.info["num_clips"] == len(CLIPS)
    assert cache.captions == [text for *_, text in CLIPS]  # free-form captions, in order, corrupt one left out
    assert cache.latents.shape == (len(CLIPS), 4, NUM_FRAMES, SIZE // 4, SIZE // 4)  # every clip the same shape
    assert torch.isfinite(cache.latents.float()).all()
    assert cache.latents.float().flatten(1).std(1).min() > 0  # real content, not blank frames
    assert cache.info["source"] == str(videofolder)

    # Train the tiny preset on it.
    summary = train_main(["--cache", str(cache_dir), "--out", str(run_dir), "--preset", "tiny", "--steps", "10",
                          "--batch-size", "4", "--log-every", "5", "--checkpoint-every", "10",
                          "--sample-every", "10", "--sample-steps", "2", "--num-samples", "2", "--threads", "1"])
    assert summary["step"] == 10 and np.isfinite(summary["loss"])
    grid = probe_mp4(run_dir / "samples" / "step-000010" / "grid.mp4")
    assert grid["num_frames"] == NUM_FRAMES

    # The pipeline loads and samples clips of the cache's size by default, and of other sizes on request.
    pipe = TinyDiTPipeline.from_pretrained(summary["pipeline"])
    pipe.set_progress_bar_config(disable=True)
    assert pipe.default_size() == (NUM_FRAMES, SIZE, SIZE)
    frames = pipe(CLIPS[0][-1], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, NUM_FRAMES, SIZE, SIZE, 3) and np.isfinite(frames).all()
    frames = pipe([CLIPS[1][-1], "a prompt never seen in training"], num_frames=4, height=48, width=32,
                  num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (2, 4, 48, 32, 3) and np.isfinite(frames).all()
