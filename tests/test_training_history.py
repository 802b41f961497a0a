"""How a model learned (tiny_dit.inside.training_history): a pipeline folder's training_log.jsonl and
training_samples/step-*/ read back, pictured, and shown by the app's "How it learned" view,
on a small fake folder (and on the bundled model, which has a log but no samples yet)."""

import json
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # app.py lives at the top of the checkout
import app  # noqa: E402
from test_pipeline import tiny_pipeline
from tiny_dit.inside import training_history as th
from tiny_dit.video import make_grid, split_grid, write_mp4

PROMPTS = ["a red circle moving left on a black background", "a yellow star growing on a white background",
           "a green square moving up on a gray background", "a blue triangle moving right on a black background"]
BUNDLE = Path(__file__).resolve().parent.parent / "assets" / "tiny-dit-shapes"


def clips(level: int) -> np.ndarray:
    """Four distinct 4-frame clips of 32 x 32 (N, T, H, W, 3)."""
    out = np.zeros((4, 4, 32, 32, 3), np.uint8)
    for i in range(4):
        out[i, :, :, :, i % 3] = level + 40 * i
    return out


def fake_folder(root: Path, steps=(2000, 500, 6000), samples: bool = True, evals: bool = True) -> Path:
    """A pipeline folder's training files as tiny_dit.training.train writes them."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "loss": 5.0 / s ** 0.5, "lr": 1e-3, "clips_per_s": 20.0})
             for s in range(10, 6001, 10)]
    if evals:
        lines += [json.dumps({"step": s, "eval": {"seen/shape": s / 8000, "seen/color": 0.9, "held-out/motion": 0.5,
                                                 "seen/all": 0.2}, "eval_seconds": 3.0}) for s in (1000, 3000, 6000)]
    lines.insert(5, "not json")
    (root / th.LOG_NAME).write_text("\n".join(lines) + "\n")
    if samples:
        for step in steps:
            folder = root / th.SAMPLES_DIR / f"step-{step:06d}"
            folder.mkdir(parents=True)
            write_mp4(folder / "grid.mp4", make_grid(clips(step // 100)), fps=8)
            (folder / "prompts.txt").write_text("".join(f"sample-{i:02d}: {p}\n" for i, p in enumerate(PROMPTS)))
    return root


def test_the_folder_layout_is_read_back(tmp_path):
    history = th.load_history(fake_folder(tmp_path / "pipeline"))
    assert [s.step for s in history.snapshots] == [500, 2000, 6000]  # sorted by step
    assert history.snapshots[0].prompts == PROMPTS
    assert len(history.steps) == 600 and history.steps[0] == 10
    assert history.loss_at(2005) == pytest.approx(5 / 2000 ** 0.5)
    assert [s for s, _ in history.evals] == [1000, 3000, 6000] and history.eval_at(2000)[0] == 1000
    assert history.problems == ["1 unreadable line in training_log.jsonl"]
    assert history.snapshot_near(1900).step == 2000


def test_split_grid_undoes_make_grid():
    original = clips(30)
    np.testing.assert_array_equal(split_grid(make_grid(original), 4), original)
    assert split_grid(make_grid(original), 5) is None  # a layout that does not fit


def test_pictures_of_the_run(tmp_path):
    history = th.load_history(fake_folder(tmp_path / "pipeline"))
    curve = th.loss_curve_image(history, mark_step=2000)
    assert isinstance(curve, Image.Image) and curve.height > 240 + 2 * 200  # loss + seen + held-out panels
    samples = th.snapshot_image(history.snapshots[1])
    assert samples.height > 4 * 80  # a row per prompt
    plain = th.load_history(fake_folder(tmp_path / "no-evals", samples=False, evals=False))
    assert th.loss_curve_image(plain).height == 240 and plain.snapshots == []
    assert th.loss_curve_image(th.load_history(tmp_path / "empty")) is None


def test_the_how_it_learned_view(tmp_path):
    _, tiny_app = app.build_demo(tiny_pipeline(), "tiny test model")
    curve, samples, md = tiny_app.training()
    assert curve is None and samples is None and "No training history" in md  # built in memory: no folder

    tiny_app.training_dir = fake_folder(tmp_path / "pipeline")
    curve, samples, md = tiny_app.training(2)
    assert isinstance(curve, Image.Image) and isinstance(samples, Image.Image)
    assert "**Step 2,000** of 6,000 (snapshot 2 of 3)" in md and "Evaluation at step 1,000" in md
    assert "evaluated after training" not in md  # no evaluation.json
    assert "seen/shape 12%" in md and "seen/all" not in md
    assert "**Step 6,000**" in tiny_app.training()[2]  # default: the last snapshot
    with pytest.raises(gr.Error, match="Training snapshot"):
        tiny_app.training(4)

    (tmp_path / "pipeline" / th.EVALUATION_NAME).write_text(json.dumps(
        {split: {"frame_judge": {"color": 1.0, "shape": 0.93, "motion": 0.5, "background": 1.0, "all": 0.5}}
         for split in ("seen", "held-out")}))
    md = tiny_app.training(2)[2]
    assert "evaluated after training" in md and "seen: color 100%, shape 93%, motion 50%" in md

    tiny_app.training_dir = fake_folder(tmp_path / "older", samples=False)
    curve, samples, md = tiny_app.training(1)
    assert isinstance(curve, Image.Image) and samples is None and "No sample snapshots" in md


def test_the_folder_a_pipeline_was_loaded_from(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "pipeline")
    from tiny_dit.pipeline import TinyDiTPipeline

    assert th.pipeline_folder(TinyDiTPipeline.from_pretrained(str(tmp_path / "pipeline"))) == tmp_path / "pipeline"
    assert th.pipeline_folder(tiny_pipeline()) is None


@pytest.mark.skipif(not (BUNDLE / th.LOG_NAME).is_file(), reason="no bundled training log")
def test_the_bundled_model_has_a_loss_curve():
    history = th.load_history(BUNDLE)
    assert history.has_log and history.problems in ([], [f"no {th.SAMPLES_DIR}/step-*/grid.mp4"])
    assert th.loss_curve_image(history).width == 640
    md = th.describe(history, history.snapshots[-1] if history.snapshots else None)
    assert "Step" in md or "No sample snapshots" in md
    if (BUNDLE / th.EVALUATION_NAME).is_file():
        assert "evaluated after training" in md and set(history.evaluation) == {"seen", "held-out"}
