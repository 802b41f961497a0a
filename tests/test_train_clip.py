"""tiny_dit.training.train_clip: --freeze-text sharpens the image tower and leaves the text tower bit for bit."""

import json

import pytest
import torch

from test_pipeline import tiny_clip
from tiny_dit.text_encoder import CLIPEncoder
from tiny_dit.training.train_clip import main
from tiny_dit.training.loop import load_checkpoint

torch.set_num_threads(1)


def test_freeze_text_trains_only_the_image_tower(tmp_path, monkeypatch):
    monkeypatch.setattr("tiny_dit.training.train_clip.clip_retrieval_accuracy", lambda clip, split: {"shape": 0.0})
    tiny_clip().save_pretrained(tmp_path / "start")
    main(["--init", str(tmp_path / "start"), "--freeze-text", "--out", str(tmp_path / "out"), "--steps", "2",
          "--batch-size", "8", "--lr", "1e-2", "--warmup", "1", "--run-dir", str(tmp_path / "run")])
    before = CLIPEncoder.from_pretrained(tmp_path / "start").model.state_dict()
    after = CLIPEncoder.from_pretrained(tmp_path / "out").model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("visual.") or name == "logit_scale" for name in changed)
    assert any(name.startswith("visual.") for name in changed)
    with pytest.raises(SystemExit):  # a frozen random text tower: refused
        main(["--freeze-text", "--out", str(tmp_path / "x"), "--run-dir", str(tmp_path / "run2")])


def test_batches_hold_shape_swaps_and_no_held_out_pair():
    """Half a batch is shape swaps: the same clip (position, size, speed, phrasing) drawn with each shape its
    colour may take, captions differing only in the shape word; every clip's attributes are distinct."""
    from tiny_dit.data.shapes import HELD_OUT_PAIRS, SHAPES, shapes_attributes
    from tiny_dit.training.train_clip import clip_batch

    frames, captions, named = clip_batch(48, seed=3)
    assert frames.shape == (48, 4, 128, 128, 3) and len(captions) == 48
    assert len({tuple(a.values()) for a in named}) == 48, "distinct clips"
    assert not any((a["color"], a["shape"]) in HELD_OUT_PAIRS for a in named)
    attributes = [shapes_attributes(c) for c, a in zip(captions, named) if a["color"] is not None]
    captions = [c for c, a in zip(captions, named) if a["color"] is not None]
    frames = frames[[i for i, a in enumerate(named) if a["color"] is not None]]
    # Shape swaps: captions that become equal once the shape word is blanked, with equal backgrounds
    # (same colour and geometry) and objects covering the same centre.
    blanked = {}
    for i, text in enumerate(captions):
        key = text
        for shape in SHAPES:
            key = key.replace(f" {shape}", " _")
        blanked.setdefault(key, []).append(i)
    swaps = [group for group in blanked.values() if len(group) >= 3]
    assert sum(len(g) for g in swaps) >= 48 * 3 // 8 - 4, swaps
    for group in swaps:
        assert len({attributes[i]["shape"] for i in group}) == len(group)
        assert len({attributes[i]["color"] for i in group}) == 1 and len({attributes[i]["motion"] for i in group}) == 1
        # the same geometry: every object is centred on one pixel, which each shape covers
        masks = (frames[group, 0].float() - frames[group, 0, :1, :1].float()).abs().sum(-1) > 0  # (k, H, W)
        ys, xs = zip(*(torch.nonzero(m).float().mean(0).tolist() for m in masks))
        assert max(xs) - min(xs) < 1 or max(ys) - min(ys) < 8, (xs, ys)  # a triangle's centroid sits lower
        assert masks.all(0).any(), "the shapes overlap where they are centred"
    assert [c for c, a in zip(*clip_batch(48, seed=3)[1:]) if a["color"]] == captions, \
        "a batch is a function of its seed (resumable)"


def test_colour_free_clips_and_the_loss_with_several_right_answers():
    """A quarter of a batch is objects in colours no word names, captioned without a colour word; such a
    caption also fits a clip of the same shape, motion and background in a named colour, and the loss
    counts every caption that fits. With one match per row it is open_clip's ClipLoss."""
    import numpy as np
    import open_clip

    from tiny_dit.data.shapes import BACKGROUNDS, COLORS, object_rgb
    from tiny_dit.training.train_clip import caption_matches, clip_batch, contrastive_loss

    frames, captions, named = clip_batch(120, seed=5)
    free = [i for i, a in enumerate(named) if a["color"] is None]
    assert len(free) == 30
    for i in free:
        assert not any(word in captions[i].split() for word in COLORS), captions[i]
        background = np.array(BACKGROUNDS[named[i]["background"]])
        pixels = frames[i, 0].reshape(-1, 3).numpy().astype(float)
        rgb = pixels[np.abs(pixels - background).sum(1).argmax()]  # the object's colour
        assert min(np.linalg.norm(rgb - np.array(c)) for c in COLORS.values()) >= 100 - 2, rgb
    attributes = [{"color": "red", "shape": "star", "motion": "up", "background": "black"},
                  {"color": None, "shape": "star", "motion": "up", "background": "black"},
                  {"color": "red", "shape": "circle", "motion": "up", "background": "black"}]
    matches = caption_matches(attributes)
    assert matches.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
    g = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    one = contrastive_loss(video, text, scale, torch.eye(6, dtype=torch.bool))
    torch.testing.assert_close(one, open_clip.ClipLoss()(video, text, scale))
    two = torch.eye(6, dtype=torch.bool)
    two[0, 1] = True  # caption 1 also fits clip 0
    assert not torch.isclose(contrastive_loss(video, text, scale, two), one)
    assert object_rgb("#ff8000") == (255, 128, 0) and object_rgb("red") == COLORS["red"]


def test_precision_option_trains_the_clip_under_bf16_autocast(tmp_path, monkeypatch):
    """--precision (from tiny_dit.training.loop.add_run_arguments) reaches the training loop: bf16 trains, the
    checkpoint records it, and the weights stay float32."""
    monkeypatch.setattr("tiny_dit.training.train_clip.clip_retrieval_accuracy", lambda clip, split: {"shape": 0.0})
    monkeypatch.setattr("tiny_dit.training.loop.measure_precision", lambda device="cpu", probe=None:
                        {"fp32": 10.0, "bf16": 5.0})
    tiny_clip().save_pretrained(tmp_path / "start")
    main(["--init", str(tmp_path / "start"), "--out", str(tmp_path / "out"), "--steps", "2", "--batch-size", "8",
          "--lr", "1e-2", "--warmup", "1", "--run-dir", str(tmp_path / "run"), "--precision", "bf16"])
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["precision"] == "bf16"
    loss = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["loss"]
    assert loss == loss and loss > 0  # finite, not NaN
    after = CLIPEncoder.from_pretrained(tmp_path / "out").model
    assert all(p.dtype == torch.float32 for p in after.parameters())
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--run-dir", str(tmp_path / "run2"), "--precision", "fp16"])
