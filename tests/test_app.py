"""The teaching app's functions, called directly (no server, no browser), on a tiny random pipeline.

Outputs are browser-playable mp4 files of the right size and length, every "Inside the model"
view renders from a run's state, and bad inputs (as an API caller could send them) raise
gr.Error with a message that says what is wrong. The last section starts a real Gradio server
on the tiny pipeline and calls it through gradio_client and raw HTTP: input errors, Stop and
job.cancel(), and what a session keeps.
"""

import copy
import re
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
from tiny_dit.app import sora_tasks, view_contents
from tiny_dit.app.checks import OWN_GUIDER
from tiny_dit.app.sessions import RunHandle, RunStore
from tiny_dit.inside.attention_maps import ATTENTION_CACHE_STEPS, SELF_ATTENTION_CACHE
from tiny_dit.inside.recorder import RunRecord, record_run
from tiny_dit.inside.views.attention import attention_matrix_of, picker_image, slot_layout
from tiny_dit.inside.views.patch_grid import token_arithmetic
from tiny_dit.inside.views.text_path import tokens_markdown
from tiny_dit.guiders import GUIDERS, make_guider
from tiny_dit.model import TinyDiT
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.schedulers import SCHEDULERS, noise_levels, transformer_passes
from tiny_dit.video import make_grid, probe_mp4, read_mp4, to_uint8

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
def record(run, tiny_app) -> RunRecord:
    return tiny_app.runs.get(run[-1][4])  # the page's state is a handle; the store holds the run


def images(values):
    return [v for v in values if isinstance(v, Image.Image)]


def element(demo, elem_id: str):
    """The page's component with this elem_id."""
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def event(demo, api_name: str):
    return next(fn for fn in demo.fns.values() if fn.api_name == api_name)


# --- the page --------------------------------------------------------------------------


def test_demo_has_named_endpoints_and_a_bounded_queue(built):
    demo, _ = built
    names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert {"generate", "attention", "trajectory", "compare_guidance", "forward_process", "sora_task"} <= names
    assert demo._queue.max_size >= 200  # a class of 100 (tiny_dit.app.queue_limits; tests/test_app_load.py)
    sampling = [fn for fn in demo.fns.values() if fn.api_name in ("generate", "compare_guidance", "sora_task")]
    assert len(sampling) == 3 and all(fn.concurrency_limit == 1 and fn.concurrency_id == "sampler" for fn in sampling)
    assert all(fn.validator is not None for fn in sampling)  # one run at a time per session, a bounded queue
    config = str(demo.config)
    assert "a notice for the page" in config and "tiny test model" in config


# --- Generate --------------------------------------------------------------------------


def test_generate_yields_live_previews_then_playable_videos(run, record):
    previews = [out[0] for out in run[1:-1]]
    assert len(previews) == STEPS  # a status line after every iteration: Stop and cancel act within one
    assert images(previews) and all(isinstance(p, Image.Image) or p == gr.skip() for p in previews)
    assert all(out[1] == gr.skip() for out in run[1:-1])  # the video waits for the end
    preview, grid_path, clips, info, state = run[-1]
    assert isinstance(state, RunHandle) and isinstance(preview, Image.Image)
    assert record.num_videos == SAMPLES and record.frames.shape == (1, 4, 32, 32, 3)  # kept: clip 1 only

    grid = make_grid(np.zeros((SAMPLES, 4, 32, 32, 3), np.uint8))
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
    again = tiny_app.runs.get(list(tiny_app.generate(PROMPT, 4.0, STEPS, 1, SEED))[-1][4])
    # Same seed, same clip 1 (up to one grey level: a batch of 1 and of 3 round differently in the matmuls).
    assert np.abs(again.frames[0].astype(int) - record.frames[0]).max() <= 1
    assert record.x_t.shape == (STEPS + 1, 4, 4, 8, 8) and record.pred_x0.shape == (STEPS, 4, 4, 8, 8)
    assert record.x_t.dtype == np.float16 and record.sigmas[0] == 1 and record.sigmas[-1] == 0
    maps = record.attention_at(STEPS - 1)  # recomputed from the recorded latents
    assert set(maps) == {0, 1} and maps[0].shape == (2, 32, 32) and maps[0].dtype == np.float16
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
        for block in (0, 1):  # equal up to the float16 storage of the latents they are recomputed from
            np.testing.assert_allclose(record.attention_at(step)[block], captured[step][block], atol=2e-3)


def test_a_finished_run_keeps_little_and_the_attention_cache_is_bounded(tiny_app, record):
    # Per step: x_t and pred_x0 of clip 1 in float16, 4 x 4 x 8 x 8 x 2 bytes each; clip 1's frames.
    assert record.nbytes < 2 * (STEPS + 1) * 4 * 4 * 8 * 8 * 2 + record.frames.nbytes + 20_000
    for step in range(STEPS):
        record.attention_at(step)
    assert len(SELF_ATTENTION_CACHE) <= ATTENTION_CACHE_STEPS
    with pytest.raises(ValueError, match="step must be from 0 to 4"):
        record.attention_at(STEPS)


def test_run_store_bounds_sessions_age_and_bytes():
    class Fake:
        def __init__(self, nbytes):
            self.nbytes = nbytes

    store = RunStore(max_bytes=100, ttl_s=3600)
    a = store.put("a", Fake(40))
    a2 = store.put("a", Fake(40))  # a session keeps one run: its latest
    assert store.get(a) is None and store.get(a2) is not None and len(store) == 1
    b, c = store.put("b", Fake(40)), store.put("c", Fake(40))  # 120 > 100 bytes: the least recently used goes
    assert store.get(a2) is None and store.get(b) is not None and store.total_bytes == 80
    store.drop_session("b")  # the tab was closed (demo.unload)
    assert store.get(b) is None and len(store) == 1
    store.drop(c)  # gr.State's delete_callback (time_to_live)
    store.drop(None)
    assert len(store) == 0 and store.total_bytes == 0
    old = RunStore(ttl_s=0.0)
    handle = old.put("x", Fake(1))
    time.sleep(0.01)
    assert old.get(handle) is None  # unused for longer than ttl_s


def test_state_is_released_with_the_session(built):
    demo, tiny_app = built
    state = next(b for b in demo.blocks.values() if isinstance(b, gr.State) and b.time_to_live)
    assert state.time_to_live == app.RUN_TTL_S and state.delete_callback == tiny_app.runs.drop
    unload = [fn for fn in demo.fns.values() if any(t[1] == "unload" for t in fn.targets)]
    assert len(unload) == 1 and unload[0].fn == tiny_app.close_session
    handle = list(tiny_app.generate(PROMPT, 4.0, 2, 1, 0, request=FakeRequest("closing")))[-1][4]
    assert tiny_app.runs.get(handle) is not None
    tiny_app.close_session(FakeRequest("closing"))
    assert tiny_app.runs.get(handle) is None
    with pytest.raises(gr.Error, match="no longer kept"):
        tiny_app.trajectory(handle, 1)


def test_copying_the_page_config_copies_no_run(built, record):
    """Gradio deep-copies its page config for every GET /config and page load, and the config holds gr.State's
    delete_callback, the run store's `drop`: the copy shares the store, it does not copy the kept runs and the
    transformer they point to (a class connecting at once did that in parallel: 1.07 -> 3.4 GB at 30 users)."""
    demo, tiny_app = built
    handle = tiny_app.runs.put("config-copy", record)
    copied = gr.utils.safe_deepcopy(demo.config)
    callbacks = [c["props"]["delete_callback"] for c in copied["components"] if "delete_callback" in c.get("props", {})]
    assert any(getattr(callback, "__self__", None) is tiny_app.runs for callback in callbacks)
    assert copy.deepcopy(tiny_app.runs) is tiny_app.runs and copy.copy(tiny_app.runs) is tiny_app.runs
    assert tiny_app.runs.get(handle) is record
    tiny_app.runs.drop(handle)


class FakeRequest:
    def __init__(self, session_hash):
        self.session_hash = session_hash


def test_stop_stops_within_one_iteration_and_shows_the_last_preview(tiny_app):
    session = FakeRequest("stopping")
    gen = app.user_errors(tiny_app.generate)(PROMPT, 4.0, 60, 2, 0, request=session)
    next(gen), next(gen)  # started, iteration 1 (with the first preview)
    preview, status = tiny_app.stop(session)
    assert isinstance(preview, Image.Image)
    assert "Stopped** after iteration" in status and "of 60" in status and "Press Generate" in status
    stopped_at = int(re.search(r"after iteration (\d+)", status).group(1))
    assert stopped_at < 60  # stopped the run, not waited for its end (no wall-clock limit: the CPU varies)
    with pytest.raises(gr.Error, match="Stopped after iteration"):
        list(gen)
    assert tiny_app.stop(session)[1].startswith("Nothing to stop")
    # The next Generate starts at once and finishes.
    assert isinstance(list(tiny_app.generate(PROMPT, 4.0, 2, 1, 0, request=session))[-1][4], RunHandle)


def test_stopping_a_run_stops_the_sampler_thread(tiny_app):
    gen = tiny_app.generate(PROMPT, 4.0, 60, 2, 0)
    next(gen), next(gen)  # started, iteration 1
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
    table = tokens_markdown(record.tokens)
    assert "`red`" in table and "`circle`" in table and "padding x 5" in table
    plot, text = tiny_app.adaln(record)
    assert isinstance(plot, Image.Image) and "block 2" in text


def test_a_run_of_one_iteration_has_every_view(tiny_app):
    # One transformer pass: the iteration sliders cannot span 1..1 (Gradio refuses minimum == maximum),
    # so they show the one iteration and cannot be moved.
    handle = list(tiny_app.generate(PROMPT, 4.0, 1, 1, SEED))[-1][4]
    outputs = tiny_app.inside(handle)
    assert len(images(outputs)) == 10
    sliders = [o for o in outputs if isinstance(o, gr.Slider)]
    assert [(s.value, s.interactive) for s in sliders] == [(1, False), (0, True)]
    assert tiny_app.word_inside(handle)[1].interactive is False
    assert "iteration 1 of 1" in tiny_app.attention(handle, 0, "mean", 1)[3]


def test_clicking_a_patch_selects_it_as_the_query(tiny_app, record):
    layout = slot_layout(record.geometry)
    for token in [(0, 0, 0), (1, 2, 3), (1, 3, 3)]:
        x, y = layout.centre(token)
        event = gr.SelectData(None, {"index": [x, y], "value": None})
        assert tiny_app.pick_patch(record, 1, "mean", STEPS, event)[4] == token
    picker = picker_image(record.frames[0], record.geometry)
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
    maps = record.attention_at(1)
    assert maps[0].shape == (2, 2, 16, 16) and maps[1].shape == (2, 16, 2, 2)
    for block in (0, 1):
        full = attention_matrix_of(record, block, None, 0)
        np.testing.assert_allclose(full.sum(axis=1), 1, atol=1e-2)  # rows still sum to 1
    assert attention_matrix_of(record, 0, None, 0)[0, 16:].max() == 0  # spatial: own slot only
    factorized_app = app.TinyDiTApp(pipe, "factorized", output_dir=tmp_path)
    _, _, _, text, _ = factorized_app.attention(record, 1, "mean", 2, (0, 1, 1))
    assert "temporal" in text
    assert "spatial blocks" in token_arithmetic(record.geometry)


def test_guidance_comparison_and_forward_process(tiny_app, record):
    *_, (video, table) = tiny_app.compare_guidance(PROMPT, SEED, STEPS, [5, 1, 2.5])
    probe = probe_mp4(video)
    assert probe["codec"] == "h264" and probe["pix_fmt"] == "yuv420p" and probe["num_frames"] == 4
    assert probe["size"][0] >= 3 * 32 and "| 2.5 |" in table and "| 1 | off" in table
    strip, ladder, text = tiny_app.forward_process("an orange square grows on a gray background", 0.25, 3)
    assert isinstance(strip, Image.Image) and isinstance(ladder, Image.Image)
    assert "s = 0.25" in text and "held out" in text and "orange square growing" in text


# --- the sampler choice (issue 15) -------------------------------------------------------


def test_the_sampler_dropdown_reaches_the_pipeline_and_leaves_the_shared_one_alone(built, monkeypatch):
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    demo, tiny_app = built
    dropdown = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sampler")
    assert dropdown.value == "euler" and [v for _, v in dropdown.choices] == list(SCHEDULERS)
    generate = next(fn for fn in demo.fns.values() if fn.api_name == "generate")
    assert generate.inputs[5] is dropdown  # the sampler, then the guidance method (API callers may leave both out)
    calls = []
    heun_step = FlowMatchHeunDiscreteScheduler.step

    def counting_step(self, *args, **kwargs):
        calls.append(type(self))
        return heun_step(self, *args, **kwargs)

    monkeypatch.setattr(FlowMatchHeunDiscreteScheduler, "step", counting_step)
    shared = tiny_app.pipe.scheduler
    handle = list(tiny_app.generate(PROMPT, 4.0, 3, 1, SEED, "heun"))[-1][4]
    assert calls == [FlowMatchHeunDiscreteScheduler] * 5  # 2 N - 1 passes, all of them Heun's
    assert tiny_app.pipe.scheduler is shared and type(shared) is FlowMatchEulerDiscreteScheduler
    assert tiny_app.runs.get(handle).scheduler == "heun"
    message = "Sampler must be one of 'euler', 'heun', 'dpm++', 'unipc'; got the text 'ddim'"
    with pytest.raises(gr.Error, match=re.escape(message)):
        list(app.user_errors(tiny_app.generate)(PROMPT, 4.0, 3, 1, SEED, "ddim"))


@pytest.mark.parametrize("sampler", ["heun", "dpm++", "unipc"])
def test_every_sampler_is_recorded_and_viewed_pass_by_pass(tiny_app, sampler):
    steps = 3
    run_pipe = tiny_app.pipe.with_scheduler(sampler)
    passes = transformer_passes(run_pipe.scheduler, steps)
    out = list(tiny_app.generate(PROMPT, 4.0, steps, 2, SEED, sampler))
    record = tiny_app.runs.get(out[-1][4])
    assert len(out) == passes + 2  # a status line after every pass
    assert record.num_inference_steps == steps and record.num_passes == passes
    assert record.x_t.shape[0] == passes + 1 and record.pred_x0.shape[0] == passes
    assert record.adaln.shape == (passes, 2, 6) and (record.adaln > 0).all() and len(record.step_seconds) == passes
    np.testing.assert_allclose(record.sigmas, noise_levels(run_pipe.scheduler, steps), atol=1e-6)
    assert f"{sampler} sampler" in out[-1][3]
    outputs = tiny_app.inside(out[-1][4])
    assert len(images(outputs)) == 10
    for k in range(passes + 1):
        latent, decoded, text = tiny_app.trajectory(record, k)
        assert isinstance(latent, Image.Image) and "straight" in text
    for k in range(1, passes + 1):
        assert f"of {passes}" in tiny_app.attention(record, 1, "mean", k, (0, 1, 1))[3]
    with pytest.raises(gr.Error, match=f"from 1 to {passes}"):
        tiny_app.attention(record, 1, "mean", passes + 1)
    # The attention recomputed from the record is the one the model saw (the timestep it was fed).
    captured = []
    run_pipe(PROMPT, num_inference_steps=steps, guidance_scale=4.0, num_videos_per_prompt=2,
             generator=torch.Generator().manual_seed(SEED), callback_on_step_end_tensor_inputs=["attentions"],
             callback_on_step_end=lambda p, i, t, kw: captured.append(kw["attentions"][1][0].numpy()) or {},
             capture_attention_layers=[1])
    assert len(captured) == passes
    np.testing.assert_allclose(record.attention_at(passes - 1)[1], captured[-1], atol=2e-3)


def test_guidance_comparison_uses_the_chosen_sampler(tiny_app):
    *_, (video, table) = tiny_app.compare_guidance(PROMPT, SEED, 2, [1, 5], "dpm++")
    assert "dpm++ sampler" in table and probe_mp4(video)["num_frames"] == 4


# --- the guidance method (issue 32) --------------------------------------------------------


@pytest.mark.parametrize("guider, method, scale", [
    (None, "cfg", 5.0),  # a pipeline saved without a guider: plain CFG at 5
    (make_guider("interval", 3.0), "interval", 3.0),
    (make_guider("apg", 2.5), "apg", 2.5),
    (make_guider("cfg", 4.0, stop=0.3), OWN_GUIDER, 4.0),  # none of GUIDERS: offered as the model's own
])
def test_the_guidance_controls_start_at_the_served_pipelines_guider(guider, method, scale):
    pipe = tiny_pipeline()
    if guider is not None:
        pipe.register_modules(guider=guider)
    demo, _ = app.build_demo(pipe, "tiny test model")
    dropdown, slider = element(demo, "guider"), element(demo, "guidance")
    assert dropdown.value == method and slider.value == scale
    assert [v for _, v in dropdown.choices] == ([OWN_GUIDER] if method == OWN_GUIDER else []) + list(GUIDERS)
    sora_slider = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "Class guidance (w)")
    assert sora_slider.value == scale
    generate, compare = event(demo, "generate"), event(demo, "compare_guidance")
    assert generate.inputs[1] is slider and generate.inputs[6] is dropdown  # then the model (tests/test_app_fast.py)
    assert compare.inputs[-2:] == [slider, dropdown] and compare.inputs[-3].value == "methods"


def test_record_run_runs_the_chosen_guidance_method(tiny_app):
    pipe, kwargs = tiny_app.pipe, dict(seed=SEED, guidance_scale=4.0, num_inference_steps=STEPS)
    cfg = record_run(pipe, PROMPT, guider="cfg", **kwargs)
    interval = record_run(pipe, PROMPT, guider="interval", **kwargs)
    assert (cfg.guider, interval.guider, record_run(pipe, PROMPT, **kwargs).guider) == ("cfg", "interval", "cfg")
    np.testing.assert_array_equal(cfg.x_t[1], interval.x_t[1])  # both guide the first step...
    assert not np.array_equal(cfg.x_t[-1], interval.x_t[-1])  # ...interval not the last ones
    frames = pipe(PROMPT, guider=make_guider("interval", 4.0), num_inference_steps=STEPS,
                  generator=torch.Generator().manual_seed(SEED), output_type="np").frames
    np.testing.assert_array_equal(interval.frames, to_uint8(frames))
    # Generate passes the page's choice down to record_run.
    out = list(tiny_app.generate(PROMPT, 4.0, STEPS, 1, SEED, None, "interval"))[-1]
    assert tiny_app.runs.get(out[4]).guider == "interval" and "class guidance 4 = on (interval)" in out[3]
    np.testing.assert_array_equal(tiny_app.runs.get(out[4]).frames, interval.frames)


def test_the_guidance_comparison_over_methods_gives_one_clip_per_method_with_its_stray_pixels(tiny_app,
                                                                                               monkeypatch):
    shares = iter(np.linspace(0.001, 0.005, len(GUIDERS)))
    monkeypatch.setattr(view_contents, "stray_pixel_share", lambda clip: next(shares))  # each clip's own figure
    *_, (video, table) = tiny_app.compare_guidance(PROMPT, SEED, 2, [], None, "methods", 4.0, "cfg")
    assert probe_mp4(video)["size"][0] >= len(GUIDERS) * 32  # one clip per method, side by side
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "%" in line]
    assert [row[0].lstrip("| ").replace("\\*", "*") for row in rows] == list(GUIDERS)
    assert [row[-1] for row in rows] == ["0.10% |", "0.20% |", "0.30% |", "0.40% |", "0.50% |"]
    assert all(re.fullmatch(r"\d\.\d{3}", row[2]) for row in rows)  # the CLIP score beside it
    assert "w = 4 by each method" in table and "Stray pixels" in table
    # Several scales of one method: the same figures, one row per scale.
    monkeypatch.setattr(view_contents, "stray_pixel_share", lambda clip: 0.0)
    *_, (_, table) = tiny_app.compare_guidance(PROMPT, SEED, 2, [5, 1], None, "scales", None, "interval")
    assert "interval guidance at each scale" in table and "| 5 | on |" in table and table.count("0.00% |") == 2


# --- Sora tasks (issue 12) ---------------------------------------------------------------


EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def test_sora_task_examples_are_small_rendered_files():
    rows = sora_tasks.example_rows()
    assert [r[0] for r in rows] == list(sora_tasks.TASKS)
    for row in rows:
        for value in row[2:5]:
            if value is not None:
                assert Path(value).is_file() and Path(value).stat().st_size < 20_000
    assert "moving" not in rows[0][1]  # the still's prompt has no motion words
    clip = sora_tasks.load_clip(str(EXAMPLES / "blue-square-right-start.mp4"))
    assert clip.shape == (8, 128, 128, 3)


def test_a_sora_task_runs_end_to_end_with_the_given_frames_marked(tiny_app):
    start, end = str(EXAMPLES / "yellow-circle-down-start.mp4"), str(EXAMPLES / "yellow-circle-down-end.mp4")
    # As the page sends them (preprocess=False): FileData dicts (and older Gradios' {"video": FileData}).
    video, strip, text = tiny_app.sora_task("connect", PROMPT, None, {"path": start, "meta": {}},
                                            {"video": {"path": end}}, 8, 2, 32, 48, 4.0, 2, SEED, "heun")
    probe = probe_mp4(video)
    assert probe["num_frames"] == 8 and probe["size"] == (48, 32) and probe["codec"] == "h264"
    assert isinstance(strip, Image.Image) and "frames 1-2, 7-8 of 8 were given" in text and "heun" in text
    frames = read_mp4(video)[0]
    ring = lambda f: np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])  # noqa: E731
    colour = np.array(sora_tasks.KNOWN_COLOR)
    for i, frame in enumerate(frames):  # the given frames have the border, the new ones not
        close = np.abs(ring(frame).astype(int) - colour).max(axis=1) < 40
        assert (close.mean() > 0.9) == (i in (0, 1, 6, 7)), i

    _, _, text = tiny_app.sora_task("image", "a red star on a black background", None, None, None, 1, 4, 32, 32,
                                    4.0, 2, SEED)
    assert "One frame, an image" in text
    _, _, text = tiny_app.sora_task("animate", PROMPT, {"path": str(EXAMPLES / "red-circle.png")}, None, None,
                                    5, 4, 48, 32, 4.0, 2, SEED, "euler")
    assert "frame 1 of 5 were given" in text
    for task in ("extend_forward", "extend_backward"):
        _, _, text = tiny_app.sora_task(task, PROMPT, None, start, None, 8, 4, 32, 32, 4.0, 1, SEED)
        assert ("frames 1-4 of 8" if task == "extend_forward" else "frames 5-8 of 8") in text


def test_mark_known_frames_borders_only_the_given_frames():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    marked = sora_tasks.mark_known_frames(frames, np.array([True, False, True]))
    assert (marked[0, 0] == sora_tasks.KNOWN_COLOR).all() and (marked[2, :, -1] == sora_tasks.KNOWN_COLOR).all()
    assert marked[1].max() == 0 and marked[0, 2:-2, 2:-2].max() == 0 and frames.max() == 0  # a 2 px border


@pytest.mark.parametrize("change, message", [
    (dict(clip_b=None), "Clip B is missing"),
    (dict(keep=4), "Frames taken from each clip: 4 from each clip leave no frame of the 8 to generate; take at "
                   "most 3"),
    (dict(height=36), "Height (px) must be a multiple of 8"),
    (dict(width=56), "Width (px) must be a whole number from 8 to 48"),  # 1.5x the tiny model's 32 px
    (dict(task="image"), "An image is one frame: set the Number of frames to 1"),
    (dict(task="animate"), "The image is missing"),
    (dict(task="dance"), "Task must be one of 'image', 'animate'"),
    (dict(num_frames=65), "Number of frames must be a whole number from 1 to 64"),
    (dict(clip={"video": {"path": __file__}}), "Clip A could not be read as a video"),
    (dict(prompt=""), "The prompt is empty"),
    (dict(sampler="ddim"), "Sampler must be one of"),
])
def test_bad_sora_inputs_raise_a_gr_error_that_names_the_field(tiny_app, change, message):
    start, end = str(EXAMPLES / "yellow-circle-down-start.mp4"), str(EXAMPLES / "yellow-circle-down-end.mp4")
    args = dict(task="connect", prompt=PROMPT, image=None, clip=start, clip_b=end, num_frames=8, keep=2,
                height=32, width=32, guidance=4.0, steps=1, seed=0, sampler="euler")
    with pytest.raises(gr.Error) as caught:
        app.user_errors(tiny_app.sora_task)(**{**args, **change})
    assert message in str(caught.value.message)


def test_picking_a_task_sets_the_number_of_frames(tiny_app):
    assert tiny_app.sora_task_changed("image", 16)[0] == 1
    assert tiny_app.sora_task_changed("connect", 1)[0] == tiny_app.geometry.num_frames
    frames, how = tiny_app.sora_task_changed("animate", 8)
    assert frames == gr.skip() and "frame 1" in how


# --- bad inputs --------------------------------------------------------------------------


GOOD = dict(prompt=PROMPT, guidance=5.0, steps=4, samples=1, seed=0)


@pytest.mark.parametrize("field, value, message", [
    ("prompt", "", "empty"),
    ("prompt", "   \n\t ", "empty"),
    ("prompt", None, "The prompt is missing"),
    ("prompt", 42, "The prompt must be text .a string.; got 42"),
    ("prompt", {"text": "a red circle"}, "The prompt must be text .a string.; got an object"),
    ("prompt", "x" * 100_000, "100,000 characters"),
    ("guidance", float("nan"), "Class guidance .guidance scale. must be a number from 0 to 15; got nan"),
    ("guidance", float("inf"), "Class guidance"),
    ("guidance", -0.5, "from 0 to 15"),
    ("guidance", 15.5, "from 0 to 15"),
    ("guidance", "lots", "Class guidance .guidance scale. must be a number from 0 to 15; got the text 'lots'"),
    ("guidance", "5", "got the text '5' .send a JSON number, not text."),
    ("guidance", True, "Class guidance .* got the boolean True"),
    ("steps", 0, "Iterations"),
    ("steps", 61, "from 1 to 60"),
    ("steps", 2.5, "whole number .* got 2.5 .it is not rounded for you."),
    ("steps", None, "Iterations .sampling steps. must be a whole number from 1 to 60; got nothing"),
    ("steps", "20", "Iterations .* got the text '20'"),
    ("samples", 37, "Number of samples"),
    ("samples", 10**12, "from 1 to 36"),
    ("seed", -1, "Seed"),
    ("seed", 2**40, "Seed"),
    ("seed", 1.5, "Seed must be a whole number from 0 to 4,294,967,295; got 1.5"),
    ("seed", "x" * 1000, "Seed .*1,000 characters"),
    ("seed", [1], "Seed .* got a list"),
    ("guider", "pag", "Guidance method must be one of 'cfg', 'interval', 'rescale', 'apg', 'cfg-zero.', 'own'; "
                      "got the text 'pag'"),
    ("guider", ["cfg"], "Guidance method must be one of .* got a list"),
])
def test_bad_generate_inputs_raise_a_clear_gr_error(tiny_app, field, value, message):
    args = {**GOOD, field: value}
    with pytest.raises(gr.Error, match=message):
        list(app.user_errors(tiny_app.generate)(**args))


def test_whole_floats_and_numpy_numbers_are_accepted_but_never_rounded(tiny_app):
    out = list(tiny_app.generate(PROMPT, np.float32(3.5), 2.0, np.int64(1), 11.0))[-1]
    assert "class guidance 3.5" in out[3] and "seed 11" in out[3]


def test_long_prompts_are_truncated_with_a_notice(tiny_app):
    long_prompt = " ".join([PROMPT] * 4)
    with pytest.warns(UserWarning, match="truncated"):  # gr.Warning outside a request is a UserWarning
        info = list(tiny_app.generate(long_prompt, 5.0, 2, 1, 0))[-1][3]
    assert "truncated" in info and "CLIP reads 16" in info


def test_a_warning_from_elsewhere_during_tokenizing_is_not_called_a_truncation(tiny_app, monkeypatch):
    """The warnings tokenize records are the whole process's (the app tokenizes while other threads sample and
    load): one that is not the tokenizer's does not make a short prompt "truncated"."""
    import warnings
    tokenizer = tiny_app.pipe.tokenizer
    real_call = type(tokenizer).__call__

    def call_while_another_thread_warns(self, *args, **kwargs):
        warnings.warn("Guiders are currently an experimental feature", FutureWarning)
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", call_while_another_thread_warns)
    assert view_contents.prompt_notices(tiny_app.pipe, PROMPT) == []
    assert "truncated" in view_contents.prompt_notices(tiny_app.pipe, " ".join([PROMPT] * 4))[0]


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
    (lambda a, r: list(a.compare_guidance(PROMPT, 0, 2, [1], None, "both")), "Compare must be one of 'methods'"),
    (lambda a, r: list(a.compare_guidance(PROMPT, 0, 2, [], None, "methods", 20)), "guidance scale"),
    (lambda a, r: list(a.compare_guidance(PROMPT, 0, 2, [1], None, "scales", 5, "PAG")), "Guidance method"),
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
    with pytest.raises(gr.Error, match="Something went wrong.*simulated") as caught:
        list(app.user_errors(tiny_app.generate)(PROMPT, 5.0, 2, 1, 0))
    assert not caught.value.print_exception  # logged once, by user_errors, with the traceback
    monkeypatch.undo()
    assert list(tiny_app.generate(PROMPT, 5.0, 2, 1, 0))[-1][4] is not None  # and the app still works


def test_user_errors_are_logged_as_one_line(tiny_app, caplog):
    with caplog.at_level("WARNING", logger="tiny-dit-app"):
        with pytest.raises(gr.Error) as caught:
            list(app.user_errors(tiny_app.generate)(PROMPT, "five", 4, 1, 0))
    assert not caught.value.print_exception  # Gradio prints no traceback for it
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["user error in generate: Class guidance (guidance scale) must be a number from 0 to 15; "
                     "got the text 'five' (send a JSON number, not text)."]


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
    # Error texts are escaped for Markdown: "<out>/pipeline/" is not swallowed as an HTML tag.
    assert "<out>" not in notices[0] and "&lt;out&gt;/pipeline/" in notices[0]
    assert notices[0].endswith(f"Falling back to the bundled model `{app.BUNDLED_MODEL}`.")
    assert pipe.default_size() == (16, 128, 128)


# --- through a real server: gradio_client and raw HTTP ------------------------------------


@pytest.fixture(scope="module")
def server():
    """The app on a fresh tiny pipeline, served on a free local port."""
    demo, served = app.build_demo(tiny_pipeline(), "tiny served model")
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=False, quiet=True)
    try:
        yield demo, served, demo.local_url
    finally:
        demo.close()


@pytest.fixture
def client(server):
    from gradio_client import Client

    return Client(server[2], verbose=False)


@pytest.mark.parametrize("args, message", [
    ((PROMPT, "five", 4, 1, 0), "Class guidance (guidance scale) must be a number from 0 to 15; got the text 'five'"),
    ((PROMPT, 5.0, "20", 1, 0), "Iterations (sampling steps) must be a whole number from 1 to 60; got the text '20'"),
    ((PROMPT, 5.0, 4, None, 0), "Number of samples must be a whole number from 1 to 36; got nothing (None)"),
    ((PROMPT, 5.0, 4, 1, "abc"), "Seed must be a whole number from 0 to 4,294,967,295; got the text 'abc'"),
    ((PROMPT, 5.0, 4, 1, 1.5), "Seed must be a whole number from 0 to 4,294,967,295; got 1.5 (it is not rounded"),
    ((PROMPT, 99, 4, 1, 0), "Class guidance (guidance scale) must be a number from 0 to 15; got 99."),
    ((PROMPT, 5.0, 4, 37, 0), "Number of samples must be a whole number from 1 to 36; got 37."),
    ((123, 5.0, 4, 1, 0), "The prompt must be text (a string); got 123."),
    (({"text": PROMPT}, 5.0, 4, 1, 0), "The prompt must be text (a string); got an object (dict)"),
    (("  ", 5.0, 4, 1, 0), "The prompt is empty."),
    ((PROMPT, 5.0, 4, 1, 0, "euler", "pag"), "Guidance method must be one of 'cfg', 'interval'"),
])
def test_api_input_errors_name_the_field_and_leave_no_traceback(client, args, message, capfd, caplog):
    from gradio_client.exceptions import AppError

    with caplog.at_level("WARNING", logger="tiny-dit-app"):
        with pytest.raises(AppError) as caught:
            client.predict(*args, api_name="/generate")
    assert message in str(caught.value)
    assert "Traceback" not in capfd.readouterr().err  # the server logs user errors as one line
    assert [r.getMessage() for r in caplog.records if "user error" in r.getMessage()] == [
        f"user error in generate: {caught.value}"]


def test_raw_http_errors_name_the_field(server):
    import httpx

    url = server[2].rstrip("/")
    # Raw HTTP sends every input (the last three: the sampler, the guidance method and the model); gradio_client
    # fills in defaults.
    for body, message in [('{"data": ["%s", 5, 4, 1, NaN, "euler", "cfg", "full"]}' % PROMPT,
                           "Seed must be a whole number"),
                          ('{"data": ["%s", 5, 4, 1, 1e999, "euler", "cfg", "full"]}' % PROMPT,
                           "Seed must be a whole number"),
                          ('{"data": ["%s", true, 4, 1, 0, "euler", "cfg", "full"]}' % PROMPT, "got the boolean True"),
                          ('{"data": [["%s"], 5, 4, 1, 0, "euler", "cfg", "full"]}' % PROMPT,
                           "The prompt must be text (a string); got a list"),
                          ('{"data": ["%s", 5, 4, 1, 0, ["heun"], "cfg", "full"]}' % PROMPT,
                           "Sampler must be one of 'euler'"),
                          ('{"data": ["%s", 5, 4, 1, 0, "euler", 3, "full"]}' % PROMPT,
                           "Guidance method must be one of 'cfg', 'interval'"),
                          ('{"data": ["%s", 5, 4, 1, 0, "euler", "cfg", "fast"]}' % PROMPT,
                           "Model 'fast' is not available")]:
        post = httpx.post(f"{url}/gradio_api/call/generate", content=body,
                          headers={"Content-Type": "application/json"}, timeout=30)
        assert post.status_code == 200, post.text
        event_id = post.json()["event_id"]
        result = httpx.get(f"{url}/gradio_api/call/generate/{event_id}", timeout=30).text
        assert "event: error" in result and message in result, result


def test_a_session_keeps_one_small_run(server, client):
    _, served, _ = server
    before = len(served.runs)
    result = client.predict(PROMPT, 4.0, 3, 2, 0, api_name="/generate")
    assert "2 clips in" in result[3]
    client.predict(PROMPT, 4.0, 2, 1, 1, api_name="/generate")  # the same session: replaces its run
    assert len(served.runs) == before + 1 and served.runs.total_bytes < 100_000
    picker, heat, matrix, text = client.predict(1, "mean", 2, api_name="/attention")  # looks inside it
    assert "iteration 2 of 2" in text


def test_a_sora_task_through_the_api_with_uploaded_clips(client):
    from gradio_client import handle_file

    start, end = EXAMPLES / "yellow-circle-down-start.mp4", EXAMPLES / "yellow-circle-down-end.mp4"
    video, strip, text = client.predict(
        "connect", PROMPT, None, handle_file(str(start)), handle_file(str(end)),
        8, 2, 32, 32, 4.0, 2, 0, "heun", api_name="/sora_task")
    assert "frames 1-2, 7-8 of 8 were given" in text and "heun sampler" in text
    assert probe_mp4(video["video"] if isinstance(video, dict) else video)["num_frames"] == 8
    _, _, text = client.predict("animate", PROMPT, handle_file(str(EXAMPLES / "red-circle.png")), None, None,
                                4, 1, 32, 32, 4.0, 1, 0, "euler", api_name="/sora_task")
    assert "frame 1 of 4 were given" in text


def test_job_cancel_stops_the_run_and_the_next_generate_runs_alone(server, client):
    _, served, _ = server
    blocks = served.pipe.transformer.blocks
    passes = []  # block passes of every run, counted: how far the cancelled run got, whatever the CPU's speed
    slow = [b.register_forward_pre_hook(lambda *a: passes.append(1) or time.sleep(0.1)) for b in blocks]  # keeps args
    per_iteration = len(blocks)  # one batched [uncond; cond] pass of each block an iteration
    try:
        job = client.submit(PROMPT, 4.0, 60, 8, 0, api_name="/generate")  # ~12 s if not stopped
        deadline = time.time() + 30
        while not any("Iteration 2 of 60" in str(out[3]) for out in job.outputs()) and time.time() < deadline:
            time.sleep(0.02)
        job.cancel()
        while any(t.name == "tiny-dit-sampler" for t in threading.enumerate()) and time.time() < deadline:
            time.sleep(0.02)
        cancelled_run = len(passes) // per_iteration  # iterations the cancelled run made
        result = client.predict(PROMPT, 4.0, 2, 1, 0, api_name="/generate")
        next_run = len(passes) // per_iteration - cancelled_run
    finally:
        for handle in slow:
            handle.remove()
    print(f"the cancelled run stopped after {cancelled_run} of 60 iterations; the next Generate made {next_run}")
    assert cancelled_run < 60 // 2  # stopped within a few iterations of the cancel, not run to its end
    assert "1 clip in" in result[3] and next_run == 2  # the next one ran alone: nothing of the cancelled run left


# --- starting quickly -------------------------------------------------------------------------


def test_the_compute_dtype_comes_from_the_hardware_not_a_timing(monkeypatch):
    from tiny_dit.app import startup

    monkeypatch.delenv(startup.DTYPE_ENV, raising=False)
    pipe = tiny_pipeline()
    monkeypatch.setattr(pipe, "set_dtype", lambda d: (_ for _ in ()).throw(AssertionError("timed")) if d == "auto"
                        else type(pipe).set_dtype(pipe, d))
    monkeypatch.setattr(startup, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert startup.set_dtype(pipe) == "bfloat16 (from the hardware: CPU flags)"
    assert pipe.transformer.dtype == torch.bfloat16
    monkeypatch.setattr(startup, "cpu_flags", lambda: {"avx2"})
    assert startup.set_dtype(pipe).startswith("float32") and pipe.transformer.dtype == torch.float32
    monkeypatch.setenv(startup.DTYPE_ENV, "bfloat16")
    assert startup.set_dtype(pipe) == "bfloat16 (from $TINY_DIT_DTYPE)"
    monkeypatch.setenv(startup.DTYPE_ENV, "float8")
    with pytest.raises(ValueError):
        startup.set_dtype(pipe)


def test_loading_prints_no_config_warning(caplog):
    import logging

    from tiny_dit.app import startup

    startup.quiet_loading()
    logger = logging.getLogger("diffusers.configuration_utils")
    with caplog.at_level("WARNING", logger="diffusers.configuration_utils"):
        logger.warning("The config attributes {'block_out_channels': [16, 16, 16]} were passed to AutoencoderTiny, "
                       "but are not expected and will be ignored. Please verify your config.json configuration file.")
        logger.warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]
