"""The bundled model loads offline and follows different prompts differently."""

import numpy as np
import torch

from tiny_dit import TinyDiTPipeline

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
