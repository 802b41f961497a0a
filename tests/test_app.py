"""The teaching app's functions, called directly (no server, no browser), on a tiny random pipeline.

Outputs are browser-playable mp4 files of the right size and length, every "Inside the model"
view renders from a run's state, and bad inputs (as an API caller could send them) raise
gr.Error with a message that says what is wrong.
"""

import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # app.py lives at the top of the checkout
import app  # noqa: E402
from test_pipeline import PROMPT, tiny_clip, tiny_pipeline, tiny_vae
from tiny_dit.inspector import RunRecord, attention_steps_for, record_run, shapes_attributes
from tiny_dit.model import TinyDiT
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.video import make_grid, probe_mp4
from tiny_dit import views

torch.set_num_threads(1)

STEPS, SAMPLES, SEED = 5, 3, 7


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pipe = tiny_pipeline()
    demo, tiny_app = app.build_demo(pipe, "tiny test model", ["a notice for the page"])
    tiny_app.output_root = tmp_path_factory.mktemp("app-out")
    return demo, tiny_app


@pytest.fixture(scope="module")
def tiny_app(built):
    return built[1]


@pytest.fixture(scope="module")
def run(tiny_app):
    """All yields of one Generate run: (preview, grid video, clips, info, state) each."""
    return list(tiny_app.generate(PROMPT, 4.0, STEPS, SAMPLES, SEED))


@pytest.fixture(scope="module")
def record(run) -> RunRecord:
    return run[-1][4]


def images(values):
    return [v for v in values if isinstance(v, Image.Image)]


# --- the page --------------------------------------------------------------------------


def test_demo_has_named_endpoints_and_a_bounded_queue(built):
    demo, _ = built
    names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert {"generate", "attention", "trajectory", "compare_guidance", "forward_process"} <= names
    assert demo._queue.max_size == 16
    sampling = [fn for fn in demo.fns.values() if fn.api_name in ("generate", "compare_guidance")]
    assert all(fn.concurrency_limit == 1 and fn.concurrency_id == "sampler" for fn in sampling)
    config = str(demo.config)
    assert "a notice for the page" in config and "tiny test model" in config


# --- Generate --------------------------------------------------------------------------


def test_generate_yields_live_previews_then_playable_videos(run, record):
    previews = [out[0] for out in run[1:-1]]
    assert previews and all(isinstance(p, Image.Image) for p in previews)  # live pred_x0 previews
    assert all(out[1] == gr.skip() for out in run[1:-1])  # the video waits for the end
    preview, grid_path, clips, info, state = run[-1]
    assert state is record and record.frames.shape == (SAMPLES, 4, 32, 32, 3)

    grid = make_grid(record.frames)
    probe = probe_mp4(grid_path)
    assert probe["codec"] == "h264" and probe["pix_fmt"] == "yuv420p" and probe["faststart"]
    assert probe["size"] == (grid.shape[2], grid.shape[1]) and probe["num_frames"] == 4
    assert len(clips) == SAMPLES
    for path, caption in clips:
        probe = probe_mp4(path)
        assert (probe["codec"], probe["pix_fmt"], probe["size"], probe["num_frames"]) == ("h264", "yuv420p",
                                                                                          (32, 32), 4)
        assert "CLIP" in caption
    assert f"{SAMPLES} clips in" in info and f"{STEPS} iterations" in info and "seed 7" in info


def test_generate_is_reproducible_and_records_the_run(tiny_app, record):
    again = list(tiny_app.generate(PROMPT, 4.0, STEPS, 1, SEED))[-1][4]
    # Same seed, same clip 1 (up to one grey level: a batch of 1 and of 3 round differently in the matmuls).
    assert np.abs(again.frames[0].astype(int) - record.frames[0]).max() <= 1
    assert record.x_t.shape == (STEPS + 1, 4, 4, 8, 8) and record.pred_x0.shape == (STEPS, 4, 4, 8, 8)
    assert record.x_t.dtype == np.float16 and record.sigmas[0] == 1 and record.sigmas[-1] == 0
    assert set(record.attention) == {0, 1} and record.attention[0].shape == (STEPS, 2, 32, 32)
    assert record.adaln.shape == (STEPS, 2, 6) and (record.adaln > 0).all()
    assert len(record.clip_scores) == SAMPLES and record.tokens.read_text == PROMPT


def test_recorded_attention_is_what_the_pipeline_captures(record):
    pipe = tiny_pipeline()
    captured = []

    def keep(_pipe, i, t, kwargs):
        captured.append({b: a[0].numpy() for b, a in kwargs["attentions"].items()})
        return {}

    pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=4.0, num_videos_per_prompt=SAMPLES,
         generator=torch.Generator().manual_seed(SEED), callback_on_step_end=keep,
         callback_on_step_end_tensor_inputs=["attentions"], capture_attention_layers=[0, 1])
    for step in range(STEPS):
        for block in (0, 1):
            np.testing.assert_allclose(record.attention[block][step], captured[step][block], atol=2e-3)


def test_attention_is_kept_for_a_bounded_number_of_steps():
    assert attention_steps_for(10, 20) == list(range(10))
    kept = attention_steps_for(60, 20)
    assert len(kept) == 20 and kept[0] == 0 and kept[-1] == 59


def test_stopping_a_run_stops_the_sampler_thread(tiny_app):
    gen = tiny_app.generate(PROMPT, 4.0, 60, 2, 0)
    next(gen), next(gen)  # started, first preview
    gen.close()
    deadline = time.time() + 10
    while any(t.name == "tiny-dit-sampler" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "tiny-dit-sampler" for t in threading.enumerate())


# --- Inside the model ------------------------------------------------------------------


def test_every_view_renders_from_the_state(tiny_app, record):
    outputs = tiny_app.inside(record)
    assert len(images(outputs)) == 10
    assert all(im.width > 50 and im.height > 30 for im in images(outputs))

    frames, channels, arithmetic = tiny_app.patch_grid(record)
    assert "2 x 4 x 4 = **32 tokens**" in arithmetic and "4 channels" in arithmetic

    for layer in (0, 1):
        for head in ("mean", "0", 1):
            for step in (1, STEPS):
                picker, heat, matrix, text, query = tiny_app.attention(record, layer, head, step, (1, 2, 3))
                assert query == (1, 2, 3) and "row 3, column 4 of time slot 2" in text
    assert matrix.width >= 32 * 8

    for k in range(STEPS + 1):
        latent, decoded, text = tiny_app.trajectory(record, k)
        assert "sigma" in text and isinstance(decoded, Image.Image)

    tokens, chart, summary = tiny_app.text_path(record)
    assert isinstance(tokens, Image.Image) and isinstance(chart, Image.Image) and "CLIP score" in summary
    table = views.tokens_markdown(record.tokens)
    assert "`red`" in table and "`circle`" in table and "padding x 5" in table
    plot, text = tiny_app.adaln(record)
    assert isinstance(plot, Image.Image) and "block 2" in text


def test_clicking_a_patch_selects_it_as_the_query(tiny_app, record):
    layout = views.slot_layout(record.geometry)
    for token in [(0, 0, 0), (1, 2, 3), (1, 3, 3)]:
        x, y = layout.centre(token)
        event = gr.SelectData(None, {"index": [x, y], "value": None})
        assert tiny_app.pick_patch(record, 1, "mean", STEPS, event)[4] == token
    picker = views.picker_image(record.frames[0], record.geometry)
    assert picker.size == layout.size
    with pytest.raises(gr.Error, match="between the frames"):
        tiny_app.pick_patch(record, 1, "mean", STEPS, gr.SelectData(None, {"index": [layout.frame_size[0] + 3, 40],
                                                                          "value": None}))


def test_factorized_attention_degrades_gracefully(tmp_path):
    torch.manual_seed(0)
    model = TinyDiT(in_channels=4, num_frames=4, sample_size=8, patch_size=2, patch_size_t=2, hidden_size=32,
                    depth=2, num_heads=2, text_embed_dim=32, pooled_embed_dim=32, attention_type="factorized")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    clip = tiny_clip()
    pipe = TinyDiTPipeline(vae=tiny_vae(), text_encoder=clip, tokenizer=clip.tokenizer, transformer=model.eval(),
                           scheduler=tiny_pipeline().scheduler)
    pipe.set_progress_bar_config(disable=True)
    record = record_run(pipe, PROMPT, num_inference_steps=2, num_videos=2)
    assert record.geometry.layouts == ["spatial", "temporal"]
    assert record.attention[0].shape == (2, 2, 2, 16, 16) and record.attention[1].shape == (2, 2, 16, 2, 2)
    for block in (0, 1):
        full = views.attention_matrix_of(record, block, None, 0)
        np.testing.assert_allclose(full.sum(axis=1), 1, atol=1e-2)  # rows still sum to 1
    assert views.attention_matrix_of(record, 0, None, 0)[0, 16:].max() == 0  # spatial: own slot only
    factorized_app = app.TinyDiTApp(pipe, "factorized", output_dir=tmp_path)
    _, _, _, text, _ = factorized_app.attention(record, 1, "mean", 2, (0, 1, 1))
    assert "temporal" in text
    assert "spatial blocks" in views.token_arithmetic(record.geometry)


def test_guidance_comparison_and_forward_process(tiny_app, record):
    *_, (video, table) = tiny_app.compare_guidance(PROMPT, SEED, STEPS, [5, "1", 2.5])
    probe = probe_mp4(video)
    assert probe["codec"] == "h264" and probe["pix_fmt"] == "yuv420p" and probe["num_frames"] == 4
    assert probe["size"][0] >= 3 * 32 and "| 2.5 |" in table and "| 1 | off" in table
    strip, ladder, text = tiny_app.forward_process("an orange square grows on a gray background", 0.25, 3)
    assert isinstance(strip, Image.Image) and isinstance(ladder, Image.Image)
    assert "s = 0.25" in text and "held out" in text and "orange square growing" in text


def test_shapes_attributes_reads_every_phrasing():
    assert shapes_attributes("on a gray background, a blue circle slides right") == {
        "color": "blue", "shape": "circle", "motion": "right", "background": "gray"}
    assert shapes_attributes("a yellow star gets smaller")["motion"] == "shrinking"
    assert shapes_attributes("a black background with a red star getting bigger")["background"] == "black"
    assert shapes_attributes("a cat") is None


# --- bad inputs --------------------------------------------------------------------------


GOOD = dict(prompt=PROMPT, guidance=5.0, steps=4, samples=1, seed=0)


@pytest.mark.parametrize("field, value, message", [
    ("prompt", "", "empty"),
    ("prompt", "   \n\t ", "empty"),
    ("prompt", None, "Type a prompt"),
    ("prompt", 42, "must be text"),
    ("prompt", "x" * 100_000, "100,000 characters"),
    ("guidance", float("nan"), "Class guidance"),
    ("guidance", float("inf"), "Class guidance"),
    ("guidance", -0.5, "from 0 to 15"),
    ("guidance", 15.5, "from 0 to 15"),
    ("guidance", "lots", "Class guidance"),
    ("guidance", True, "Class guidance"),
    ("steps", 0, "Iterations"),
    ("steps", 61, "from 1 to 60"),
    ("steps", 2.5, "whole number"),
    ("steps", None, "Iterations"),
    ("samples", 37, "Number of samples"),
    ("samples", 10**12, "from 1 to 36"),
    ("seed", -1, "Seed"),
    ("seed", 2**40, "Seed"),
    ("seed", "x" * 1000, "Seed"),
    ("seed", [1], "Seed"),
])
def test_bad_generate_inputs_raise_a_clear_gr_error(tiny_app, field, value, message):
    args = {**GOOD, field: value}
    with pytest.raises(gr.Error, match=message):
        list(app.user_errors(tiny_app.generate)(**args))


def test_numeric_strings_from_api_callers_are_accepted(tiny_app):
    out = list(tiny_app.generate(PROMPT, "3.5", "2", "1", "11"))[-1]
    assert "class guidance 3.5" in out[3] and "seed 11" in out[3]


def test_long_prompts_are_truncated_with_a_notice(tiny_app):
    long_prompt = " ".join([PROMPT] * 4)
    with pytest.warns(UserWarning, match="truncated"):  # gr.Warning outside a request is a UserWarning
        info = list(tiny_app.generate(long_prompt, 5.0, 2, 1, 0))[-1][3]
    assert "truncated" in info and "CLIP reads 16" in info


@pytest.mark.parametrize("call, message", [
    (lambda a, r: a.patch_grid(None), "Generate a clip first"),
    (lambda a, r: a.attention(None, 0, "mean", 1), "Generate a clip first"),
    (lambda a, r: a.attention(r, 7, "mean", 1), "Layer"),
    (lambda a, r: a.attention(r, 0, "head nine", 1), "Head"),
    (lambda a, r: a.attention(r, 0, 5, 1), "Head"),
    (lambda a, r: a.attention(r, 0, "mean", 99), "denoising step"),
    (lambda a, r: a.attention(r, 0, "mean", 1, (9, 9, 9)), "outside the token grid"),
    (lambda a, r: a.attention(r, 0, "mean", 1, "centre"), "query patch"),
    (lambda a, r: a.pick_patch(r, 0, "mean", 1, gr.SelectData(None, {"index": None, "value": None})), "Click"),
    (lambda a, r: a.trajectory(r, -1), "denoising steps"),
    (lambda a, r: a.trajectory("not a run", 1), "Generate a clip first"),
    (lambda a, r: a.text_path({}), "Generate a clip first"),
    (lambda a, r: a.adaln(None), "Generate a clip first"),
    (lambda a, r: list(a.compare_guidance(PROMPT, 0, 2, [])), "at least one"),
    (lambda a, r: list(a.compare_guidance(PROMPT, 0, 2, [1, 99])), "guidance scale"),
    (lambda a, r: list(a.compare_guidance(PROMPT, 0, 2, list(range(12)))), "at most 8"),
    (lambda a, r: a.forward_process(PROMPT, 1.5, 0), "Noise level"),
    (lambda a, r: a.forward_process("", 0.5, 0), "empty"),
])
def test_bad_view_inputs_raise_a_clear_gr_error(tiny_app, record, call, message):
    with pytest.raises(gr.Error, match=message):
        call(tiny_app, record)


def test_unexpected_errors_become_a_gr_error_not_a_traceback(tiny_app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(tiny_app.pipe, "decode_latents", broken)
    with pytest.raises(gr.Error, match="Something went wrong.*simulated"):
        list(app.user_errors(tiny_app.generate)(PROMPT, 5.0, 2, 1, 0))
    monkeypatch.undo()
    assert list(tiny_app.generate(PROMPT, 5.0, 2, 1, 0))[-1][4] is not None  # and the app still works


# --- loading -------------------------------------------------------------------------------


def test_load_pipeline_falls_back_and_says_so(tmp_path, monkeypatch):
    tiny_pipeline().save_pretrained(tmp_path / "model")
    pipe, name, notices = app.load_pipeline(str(tmp_path / "model"))
    assert name == str(tmp_path / "model") and notices == [] and isinstance(pipe, TinyDiTPipeline)

    monkeypatch.setattr(app, "BUNDLED_MODEL", str(tmp_path / "no-bundled-model"))
    monkeypatch.setenv(app.MODEL_ENV, str(tmp_path / "missing"))
    pipe, name, notices = app.load_pipeline()
    assert "untrained stand-in" in name and len(notices) == 2
    assert "missing" in notices[0] and "bundled model" in notices[0] and "random weights" in notices[1]
    assert pipe.default_size() == (16, 128, 128)
