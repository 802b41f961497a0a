"""tiny_dit.train_clip: --freeze-text sharpens the image tower and leaves the text tower bit for bit."""

import pytest
import torch

from test_pipeline import tiny_clip
from tiny_dit.text_encoder import CLIPEncoder
from tiny_dit.train_clip import main

torch.set_num_threads(1)


def test_freeze_text_trains_only_the_image_tower(tmp_path, monkeypatch):
    monkeypatch.setattr("tiny_dit.train_clip.clip_retrieval_accuracy", lambda clip, split: {"shape": 0.0})
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
