"""The bundled model loads offline and follows different prompts differently."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_dit import TinyDiTPipeline
from tiny_dit.training.evaluate import judge_frames

BUNDLE = "assets/tiny-dit-shapes"


def test_bundle_samples_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = TinyDiTPipeline.from_pretrained(BUNDLE)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle moving left on a black background", "a yellow star growing on a white background"]
    frames = pipe(prompts, num_inference_steps=4, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (2, 16, 128, 128, 3) and np.isfinite(frames).all()
    assert 0 <= frames.min() and frames.max() <= 1
    # Same noise for both (one generator, consecutive draws differ, so compare backgrounds):
    # a black and a white background are far apart.
    corners = frames[:, :, :8, :8].mean(axis=(1, 2, 3, 4))
    assert corners[1] - corners[0] > 0.5, corners
    assert pipe.transformer.num_tokens(16, 32, 32) == 256


def test_bundle_follows_background_colour_and_motion_words():
    """The frame judge on 6 clips at the default 20 steps (seed 0). Measured on session 3's bundle: 6/6
    backgrounds, 4/6 colours and motions right, nothing of the wrong colour or motion; session 4's
    bundle passes the same bounds (its 72-prompt evaluation: colour 92%, motion 92% on seen pairs)."""
    pipe = TinyDiTPipeline.from_pretrained(BUNDLE)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle moving left on a black background", "a yellow star growing on a white background",
               "a green square moving up on a gray background", "a blue circle moving right on a white background",
               "an orange triangle moving down on a black background", "a purple square shrinking on a gray background"]
    truth = [("black", "red", "left"), ("white", "yellow", "growing"), ("gray", "green", "up"),
             ("white", "blue", "right"), ("black", "orange", "down"), ("gray", "purple", "shrinking")]
    frames = pipe(prompts, num_inference_steps=20, generator=torch.Generator().manual_seed(0)).frames
    judged = [judge_frames(clip) for clip in (frames * 255).round().astype(np.uint8)]
    assert [j["background"] for j in judged] == [b for b, _, _ in truth]
    for attribute, column in (("color", 1), ("motion", 2)):
        right = sum(j[attribute] == t[column] for j, t in zip(judged, truth))
        wrong = sum(j[attribute] not in (t[column], "none") for j, t in zip(judged, truth))
        assert right >= 3 and wrong <= 1, (attribute, judged)


@pytest.mark.xfail(strict=True, reason="the session-9 bundle draws two or three copies of the object in a 128 x 192 "
                   "frame with its positions centred or run on (median width / height 1.74 and 1.85 on these 8 "
                   "prompts): centre_space fixed that for session 4's bundle, not for this one; it needs training "
                   "with a 128 x 192 bucket (docs/sora-tasks.md). Strict: it fails as soon as the bundle is fixed")
def test_bundle_draws_a_wider_frame_without_stretching_or_copying_the_object():
    """128 x 192 with centre_space (as shipped): each object about as wide as tall, as at 128 x 128. With the
    positions run on (centre_space off) the same weights draw objects twice as wide or a second copy
    (session 4's bundle, benchmarks/space_positions.py: median width / height 1.07 against 2.32 on 48 prompts)."""
    from tiny_dit.training.evaluate import evaluation_prompts, object_aspect
    from tiny_dit.model import TinyDiT

    prompts = [p["text"] for p in evaluation_prompts("seen", 8)]  # measured: median 1.00 shipped, 2.48 run on

    def median_aspect(pipe):
        pipe.set_progress_bar_config(disable=True)
        frames = pipe(prompts, height=128, width=192, generator=torch.Generator().manual_seed(0)).frames
        return float(np.median([object_aspect(c) or 0.0 for c in (frames * 255).round().astype(np.uint8)]))

    shipped = TinyDiTPipeline.from_pretrained(BUNDLE)
    assert shipped.transformer.config.centre_space
    run_on = TinyDiTPipeline.from_pretrained(
        BUNDLE, transformer=TinyDiT.from_pretrained(BUNDLE, subfolder="transformer", centre_space=False))
    assert 0.75 < median_aspect(shipped) < 1.33
    assert median_aspect(run_on) > 1.8


def test_the_refresh_script_explains_itself_and_refuses_a_folder_that_is_not_a_pipeline(tmp_path):
    import subprocess

    script = "benchmarks/refresh_bundle.sh"
    helped = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "assets/tiny-dit-shapes/ becomes a copy" in helped.stdout
    before = sorted(p.name for p in Path(BUNDLE).iterdir())
    refused = subprocess.run([script, str(tmp_path)], capture_output=True, text=True)
    assert refused.returncode == 2 and f"{tmp_path}: no model_index.json" in refused.stderr
    assert sorted(p.name for p in Path(BUNDLE).iterdir()) == before  # nothing was replaced
