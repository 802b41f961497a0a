"""Editing a clip by prompt (video=, strength=) and loops (loop=True): tiny_dit.edit_and_loop, the pipeline,
the CLI, the Sora tab's helpers and the measurement script, on the tiny random pipeline of test_pipeline.py
(32 x 32 frames, 4 x 8 x 8 latents per frame, tubelets of 2 frames, 4 frames by default); the last test
runs the issue's two targets on the bundled model.
"""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import ClassifierFreeGuidance

from test_pipeline import FRAMES, PROMPT, SIZE, gen, tiny_pipeline
from tiny_dit.app import sora_tasks
from tiny_dit.autoencoder import decode_latents, encode_clips
from tiny_dit.edit_and_loop import (edit_schedule, edit_start_index, loop_frame_order, loop_num_frames,
                                    outward_num_frames, seam_ratio, there_and_back)
from tiny_dit.flow import add_noise
from tiny_dit.pipeline import TinyDiTCondition
from tiny_dit.schedulers import SCHEDULERS, make_scheduler, set_flow_timesteps

torch.set_num_threads(1)
STEPS = 4
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """A clip the tiny pipeline made: uint8 (FRAMES, SIZE, SIZE, 3)."""
    frames = tiny_pipeline(seed=1)(PROMPT, num_inference_steps=2, generator=gen(5)).frames[0]
    return (frames * 255).round().astype(np.uint8)


def round_trip(pipe, frames: np.ndarray) -> np.ndarray:
    return decode_latents(pipe.vae, encode_clips(pipe.vae, torch.from_numpy(frames)[None]))[0].numpy()


# --- where an edit starts -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_an_edit_starts_at_the_step_nearest_strength_from_the_noised_clip(pipe, clip, name):
    """The run starts at the step (the first pass of a step, for Heun) whose noise level is nearest strength,
    from x = (1 - s) x0 + s noise with s exactly that level, and makes the passes left from there."""
    run_pipe = pipe.with_scheduler(name, shift=3.0)
    scheduler = make_scheduler(name, run_pipe.scheduler.config)
    set_flow_timesteps(scheduler, 10)
    begin = edit_start_index(scheduler, 0.6)
    starts = range(0, len(scheduler.timesteps), scheduler.order)
    assert begin in starts
    assert abs(scheduler.sigmas[begin] - 0.6) == min(abs(scheduler.sigmas[k] - 0.6) for k in starts)
    seen = []

    def record(_pipe, i, t, kwargs):
        seen.append((i, float(kwargs["sigma"][0]), float(kwargs["sigma_next"][0]), kwargs["start_latents"]))
        return {}

    run_pipe(PROMPT, video=clip, strength=0.6, num_inference_steps=10, generator=gen(0), guidance_scale=1.0,
             callback_on_step_end=record, callback_on_step_end_tensor_inputs=["start_latents", "sigma", "sigma_next"])
    sigmas = scheduler.sigmas.tolist()
    assert [i for i, *_ in seen] == list(range(len(scheduler.timesteps) - begin)) == list(range(run_pipe.num_timesteps))
    assert [s for _, s, _, _ in seen] == pytest.approx(sigmas[begin:-1])
    assert [s for _, _, s, _ in seen] == pytest.approx(sigmas[begin + 1:])
    assert edit_schedule(run_pipe.scheduler, 10, 0.6) == (pytest.approx(sigmas[begin]), run_pipe.num_timesteps)
    noise = pipe.prepare_latents(1, FRAMES, SIZE, SIZE, gen(0), torch.device("cpu"))
    x0 = encode_clips(pipe.vae, torch.from_numpy(clip)[None])
    torch.testing.assert_close(seen[0][3], add_noise(x0, noise, scheduler.sigmas[begin]))


def test_strength_one_is_text_to_video(pipe, clip):
    for name in ("euler", "dpm++"):  # DPM-Solver++'s first level is 0.9997: still the noise as it is
        run_pipe = pipe.with_scheduler(name)
        plain = run_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(3)).frames
        edited = run_pipe(PROMPT, video=clip, strength=1.0, num_inference_steps=STEPS, generator=gen(3)).frames
        np.testing.assert_array_equal(edited, plain)


def test_the_default_strength_and_sizes_come_from_the_clip(pipe):
    clip = np.random.default_rng(0).integers(0, 256, (6, SIZE, 2 * SIZE, 3), dtype=np.uint8)
    out = pipe(PROMPT, video=clip, num_inference_steps=STEPS, generator=gen(0))
    assert out.frames.shape == (1, 6, SIZE, 2 * SIZE, 3)  # length and size of the clip (6: whole tubelets of 2)
    odd = pipe(PROMPT, video=clip[:5], num_inference_steps=STEPS, generator=gen(0)).frames
    assert odd.shape == (1, 5, SIZE, 2 * SIZE, 3)  # 5 frames: sampled as 6, padded with the last, cut
    explicit = pipe(PROMPT, video=clip, strength=0.7, num_inference_steps=STEPS, generator=gen(0)).frames
    np.testing.assert_array_equal(out.frames, explicit)  # DEFAULT_STRENGTH


def test_the_clip_may_be_uint8_float_pil_or_a_tensor(pipe, clip):
    kwargs = dict(strength=0.5, num_inference_steps=STEPS)
    reference = pipe(PROMPT, video=clip, generator=gen(1), **kwargs).frames
    for video in (clip.astype(np.float32) / 255, [PIL.Image.fromarray(f) for f in clip], torch.from_numpy(clip),
                  list(clip)):
        np.testing.assert_allclose(pipe(PROMPT, video=video, generator=gen(1), **kwargs).frames, reference, atol=1e-6)


def test_edits_with_output_types_batches_guiders_and_conditions(pipe, clip):
    kwargs = dict(video=clip, strength=0.5, num_inference_steps=STEPS)
    assert pipe(PROMPT, output_type="latent", generator=gen(0), **kwargs).frames.shape == (1, 4, FRAMES, 8, 8)
    assert pipe(PROMPT, output_type="pt", generator=gen(0), **kwargs).frames.shape == (1, FRAMES, 3, SIZE, SIZE)
    pil = pipe(PROMPT, output_type="pil", generator=gen(0), **kwargs).frames
    assert len(pil) == 1 and len(pil[0]) == FRAMES and pil[0][0].size == (SIZE, SIZE)
    batch = pipe([PROMPT, "a blue square moving up on a white background"], num_videos_per_prompt=2,
                 generator=gen(0), **kwargs).frames
    assert batch.shape == (4, FRAMES, SIZE, SIZE, 3) and not np.allclose(batch[0], batch[1])
    guider = ClassifierFreeGuidance(guidance_scale=5.0, start=0.0, stop=0.5)
    passes = []
    pipe(PROMPT, guider=guider, generator=gen(0), callback_on_step_end=lambda p, i, t, k: passes.append(
        p.do_classifier_free_guidance) or {}, **{**kwargs, "num_inference_steps": 8})
    assert passes == [True, True, False, False]  # the interval is over the run's steps: 4 of the 8
    held = pipe(PROMPT, conditions=[TinyDiTCondition(image=clip[0])], generator=gen(0), **kwargs).frames[0]
    np.testing.assert_allclose(held[0], round_trip(pipe, clip)[0], atol=1e-5)  # a known frame is still held


def test_interrupt_and_replaced_latents_work_in_an_edit(pipe, clip):
    def stop(p, i, t, kwargs):
        p._interrupt = True
        return {}

    out = pipe(PROMPT, video=clip, strength=0.5, num_inference_steps=8, output_type="latent", generator=gen(0),
               callback_on_step_end=stop)
    assert out.frames.shape == (1, 4, FRAMES, 8, 8) and pipe.num_timesteps == 4


BAD_EDITS = [
    (dict(video=np.zeros((4, 20, 20, 3), np.uint8)), "video frames are 20x20 (width x height): this model takes "
                                                      "sides that are multiples of 8 px"),
    (dict(video=np.zeros((4, 32, 64, 3), np.uint8), width=32), "video frames are 64x32 (width x height) but height "
                                                                "and width ask for 32x32"),
    (dict(video=np.zeros((4, 32, 32, 3), np.uint8), num_frames=6), "video has 4 frames but num_frames is 6"),
    (dict(video=np.zeros((70, 32, 32, 3), np.uint8)), "video has 70 frames; at most 64"),
    (dict(video="clip.mp4"), "video must be frames, not a file name"),
    (dict(video=PIL.Image.new("RGB", (32, 32))), "video is one PIL image"),
    (dict(video=np.zeros((32, 32, 3), np.uint8)), "video must have shape (T, H, W, 3)"),
    (dict(video=np.full((4, 32, 32, 3), 2.0)), "video is float, so its values must lie in [0, 1]"),
    (dict(video=[]), "video is an empty list"),
    (dict(video=[np.zeros((32, 32, 3), np.uint8), np.zeros((64, 32, 3), np.uint8)]), "frames of different sizes"),
    (dict(video=np.zeros((4, 32, 32, 3), np.uint8), strength=0), "strength must be a number in (0, 1]"),
    (dict(video=np.zeros((4, 32, 32, 3), np.uint8), strength=1.5), "strength must be a number in (0, 1]"),
    (dict(video=np.zeros((4, 32, 32, 3), np.uint8), strength=float("nan")), "strength must be a number"),
    (dict(video=np.zeros((4, 32, 32, 3), np.uint8), strength="0.5"), "strength must be a number"),
    (dict(video=np.zeros((4, 32, 32, 3), np.uint8), strength=True), "strength must be a number"),
    (dict(strength=0.5), "strength goes with video"),
    (dict(loop=True, video=np.zeros((4, 32, 32, 3), np.uint8)), "loop=True makes a clip of its own"),
    (dict(loop=True, conditions=[TinyDiTCondition(image=np.zeros((32, 32, 3), np.uint8))]), "it takes no conditions"),
    (dict(loop=True, num_frames=1), "a loop needs num_frames of at least 2"),
    (dict(loop="yes"), "loop must be True or False"),
]


@pytest.mark.parametrize("kwargs, message", BAD_EDITS, ids=[m[:40] for _, m in BAD_EDITS])
def test_bad_edits_and_loops_raise_value_errors_that_name_the_argument(pipe, kwargs, message):
    with pytest.raises(ValueError) as caught:
        pipe(PROMPT, num_inference_steps=1, **kwargs)
    assert message in str(caught.value)


def test_check_inputs_checks_the_clip_to_edit(pipe):
    args = (PROMPT, None, 2, 1.0, 1, 4, 32, 32, None, "np", ["latents"], None)
    pipe.check_inputs(*args, video=np.zeros((4, 32, 32, 3), np.uint8), strength=0.3)
    with pytest.raises(ValueError, match="video has 4 frames but num_frames is 6"):
        pipe.check_inputs(*args[:5], 6, *args[6:], video=np.zeros((4, 32, 32, 3), np.uint8))


# --- loops ---------------------------------------------------------------------------------------


def test_loop_frame_order_goes_out_and_back_and_ends_next_to_the_start():
    assert loop_frame_order(16) == [*range(9), *range(7, 0, -1)] and outward_num_frames(16) == 9
    assert loop_frame_order(15) == [*range(8), 7, *range(6, 0, -1)]  # the far end twice: a pause at the turn
    assert loop_frame_order(2) == [0, 1] and loop_frame_order(3) == [0, 1, 1] and loop_frame_order(4) == [0, 1, 2, 1]
    for n in range(2, 65):
        order = loop_frame_order(n)
        assert len(order) == n and order[0] == 0 and order[-1] == 1 and max(order) == outward_num_frames(n) - 1
        assert all(abs(a - b) <= 1 for a, b in zip(order, order[1:]))  # every neighbour a step (or a pause)
    latents = torch.arange(9.0).view(1, 1, 9, 1, 1)
    assert there_and_back(latents, 16).flatten().tolist() == loop_frame_order(16)


def test_seam_ratio_sees_a_jump_back_to_the_start():
    clip = np.zeros((16, 8, 80, 3), np.uint8)
    for k in range(16):  # a 40 px object moving right 2 px a frame
        clip[k, :, 2 * k:2 * k + 40] = 255
    assert seam_ratio(clip) == pytest.approx(15.0)  # the last frame is 15 steps from the first
    assert seam_ratio(clip[loop_frame_order(16)]) == pytest.approx(1.0)


@pytest.mark.parametrize("num_frames", [4, 5, 8])
def test_a_loop_is_its_outward_clip_and_the_way_back(pipe, num_frames):
    kwargs = dict(num_inference_steps=STEPS, guidance_scale=3.0)
    loop = pipe(PROMPT, loop=True, num_frames=num_frames, generator=gen(2), **kwargs).frames[0]
    outward = pipe(PROMPT, num_frames=outward_num_frames(num_frames), generator=gen(2), **kwargs).frames[0]
    assert loop.shape == (num_frames, SIZE, SIZE, 3)
    np.testing.assert_allclose(loop, outward[loop_frame_order(num_frames)], atol=1e-6)
    change = np.abs(np.diff(loop, axis=0)).mean(axis=(1, 2, 3))
    assert np.abs(loop[-1] - loop[0]).mean() == pytest.approx(change[0], rel=1e-5)  # the seam is a step out
    latents = pipe(PROMPT, loop=True, num_frames=num_frames, output_type="latent", generator=gen(2), **kwargs).frames
    assert latents.shape == (1, 4, num_frames, 8, 8)


def test_a_loops_default_length_gives_a_way_out_as_long_as_a_trained_clip(pipe):
    assert FRAMES == 4 and loop_num_frames(16) == 30 and loop_num_frames(1) == 2
    out = pipe(PROMPT, loop=True, num_inference_steps=1, generator=gen(0)).frames
    assert out.shape == (1, loop_num_frames(FRAMES), SIZE, SIZE, 3) and outward_num_frames(6) == FRAMES


def test_loop_callbacks_see_the_outward_clip(pipe):
    shapes = []
    pipe(PROMPT, loop=True, num_frames=8, num_inference_steps=2, generator=gen(0),
         callback_on_step_end=lambda p, i, t, k: shapes.append(tuple(k["latents"].shape)) or {})
    assert shapes == [(1, 4, 6, 8, 8)] * 2  # 5 outward frames, sampled as 3 whole tubelets


# --- the CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "pipe"
    tiny_pipeline().save_pretrained(path)
    return path


def test_cli_edits_a_clip_and_makes_loops(model_dir, clip, tmp_path, capsys):
    from tiny_dit.sample import main
    from tiny_dit.video import probe_mp4, write_mp4

    clip_path = write_mp4(tmp_path / "clip.mp4", np.concatenate([clip, clip]))  # 8 frames
    common = ["--model", str(model_dir), "--prompt", PROMPT, "--num-videos", "2", "--steps", "4", "--dtype",
              "float32"]
    main([*common, "--video-to-edit", str(clip_path), "--strength", "0.5", "--out", str(tmp_path / "edit")])
    assert probe_mp4(tmp_path / "edit" / "sample-01.mp4")["num_frames"] == 8
    assert "noised to level 0.50 (strength 0.5), then 2 of the 4 passes" in capsys.readouterr().out
    main([*common, "--video-to-edit", str(clip_path), "--num-frames", "6", "--out", str(tmp_path / "cut")])
    assert probe_mp4(tmp_path / "cut" / "sample-00.mp4")["num_frames"] == 6  # its first 6 frames
    main([*common, "--loop", "--num-frames", "8", "--out", str(tmp_path / "loop")])
    assert probe_mp4(tmp_path / "loop" / "grid.mp4")["num_frames"] == 8
    help_text = __import__("tiny_dit.sample", fromlist=["build_parser"]).build_parser().format_help()
    assert "--video-to-edit" in help_text and "--strength" in help_text and "--loop" in help_text


def test_cli_edit_errors_name_the_option(model_dir, clip, tmp_path):
    from tiny_dit.sample import main
    from tiny_dit.video import write_mp4

    common = ["--model", str(model_dir), "--prompt", PROMPT, "--steps", "1", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="--strength goes with --video-to-edit"):
        main([*common, "--strength", "0.5"])
    with pytest.raises(SystemExit, match="--video-to-edit .*missing.mp4: no such file"):
        main([*common, "--video-to-edit", str(tmp_path / "missing.mp4")])
    small = write_mp4(tmp_path / "small.mp4", np.zeros((4, 20, 20, 3), np.uint8))
    with pytest.raises(SystemExit, match=r"video frames are 20x20.*\(video is --video-to-edit .*small.mp4\)"):
        main([*common, "--video-to-edit", str(small)])
    with pytest.raises(SystemExit, match="strength must be a number in"):
        main([*common, "--video-to-edit", str(write_mp4(tmp_path / "ok.mp4", clip)), "--strength", "2"])


# --- the Sora tab's helpers ----------------------------------------------------------------------------


def test_sora_tab_edit_and_loop_helpers(clip, tmp_path):
    conditions, known = sora_tasks.build_conditions("edit", 8, 32, 32)
    assert conditions == [] and not known.any() and len(known) == 8
    with pytest.raises(ValueError, match="a loop needs at least 2 frames"):
        sora_tasks.build_conditions("loop", 1, 32, 32)
    long = np.concatenate([clip] * 3)  # 12 frames of 32 x 32
    video = sora_tasks.edit_video(long, 8, 64, 64)
    assert video.shape == (8, 64, 64, 3) and video.dtype == np.uint8
    assert len(sora_tasks.edit_video(long, 20, 32, 32)) == 12  # a shorter clip keeps its length
    with pytest.raises(ValueError, match="Clip A is missing"):
        sora_tasks.edit_video(None, 8, 32, 32)
    shown, strip = sora_tasks.edit_result_views(video, video)
    assert shown.shape[:3] == (8, 64, 64 * 2 + 2) and isinstance(strip, PIL.Image.Image)
    frames, strip = sora_tasks.loop_result_views(video)
    assert frames is video and isinstance(strip, PIL.Image.Image)
    assert "noised to s = 0.71" in sora_tasks.describe_edit(16, 0.7, 0.711, 9, 20)
    assert "frames 1-9 were generated" in sora_tasks.describe_loop(16)
    rows = sora_tasks.example_rows(tmp_path)
    assert [r[0] for r in rows] == list(sora_tasks.TASKS) and all(len(r) == 7 for r in rows)
    edit_row = rows[list(sora_tasks.TASKS).index("edit")]
    assert sora_tasks.load_clip(edit_row[3]).shape == (16, 128, 128, 3)


# --- the measurement script runs ------------------------------------------------------------------------


def test_edit_and_loop_benchmark_runs_on_a_tiny_pipeline(pipe, capsys, load_benchmark):
    bench = load_benchmark("edit_and_loop")
    edits = bench.measure_edits(pipe, num_inputs=2, seeds=2, strengths=[0.5], steps=2, guidance_scale=1.0)
    bench.print_edits(edits)
    assert set(edits) >= {"color@0.5", "shape@0.5", "background@0.5"}
    assert edits["color@0.5"]["samples"] == 4
    target = bench.measure_target(pipe, num_inputs=1, seeds=2, steps=2, guidance_scale=1.0)
    bench.print_target(target)
    assert target["samples"] == 2
    loops = bench.measure_loops(pipe, num_prompts=2, steps=2, guidance_scale=1.0)
    bench.print_loops(loops)
    assert set(loops) >= set(bench.LOOP_METHODS) and len(loops["bridge"]["seam_ratios"]) == 2
    assert max(loops["there-and-back"]["seam_ratios"]) < 2
    printed = capsys.readouterr().out
    assert "there-and-back" in printed and "background" in printed


def test_benchmark_path_and_targets(load_benchmark):
    bench = load_benchmark("edit_and_loop")
    clip = np.zeros((3, 64, 64, 3), np.uint8)
    for k in range(3):
        clip[k, 10:20, 10 + 5 * k:20 + 5 * k] = 255
    moved = np.roll(clip, 3, axis=1)  # 3 px down
    assert bench.path_distance(moved, clip) == pytest.approx(3.0)
    assert bench.path_distance(np.zeros_like(clip), clip) == float("inf")  # no object: no path kept
    attrs = {"color": "green", "shape": "circle", "motion": "up", "background": "gray"}
    assert bench.edit_target("shape", attrs, 0) != "circle"
    assert ("green", bench.edit_target("shape", attrs, 1)) != ("green", "triangle")  # never a held-out pair


# --- the bundled model: the targets, on a few seeds ---------------------------------------------

BUNDLE = ROOT / "assets" / "tiny-dit-shapes"


@pytest.mark.skipif(not (BUNDLE / "model_index.json").is_file(), reason="no bundled model")
def test_the_bundle_edits_a_red_circle_blue_and_loops_seamlessly(monkeypatch, load_benchmark):
    from tiny_dit.data.shapes import random_clip_spec, render_clips
    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.training.evaluate import judge_frames
    from tiny_dit.video import to_uint8

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = TinyDiTPipeline.from_pretrained(BUNDLE)
    bundle.set_progress_bar_config(disable=True)
    bench = load_benchmark("edit_and_loop")
    spec = random_clip_spec(np.random.default_rng(0), "red", "circle", "right", "black", phrasing=0)
    clip = render_clips([spec]).numpy()[0]
    edits = to_uint8(bundle("a blue circle moving right on a black background", video=clip, strength=0.7,
                            num_videos_per_prompt=2, generator=gen(0)).frames)
    for edit in edits:
        judged = judge_frames(edit)
        assert (judged["color"], judged["motion"]) == ("blue", "right")
        assert bench.path_distance(edit, clip) < 8
    loop = to_uint8(bundle("a red circle moving right on a black background", loop=True, generator=gen(0)).frames[0])
    assert len(loop) == 30 and seam_ratio(loop) <= 1.5  # a 16-frame way out, 14 frames back
    assert judge_frames(loop[:outward_num_frames(30)]) == {"color": "red", "shape": "circle", "motion": "right",
                                                           "background": "black"}


# --- the app's Sora tab ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT))  # app.py lives at the top of the checkout
    import app

    _, served = app.build_demo(tiny_pipeline(), "tiny test model")
    served.output_root = tmp_path_factory.mktemp("app-out")
    return served


def test_the_sora_tab_edits_a_clip_and_makes_a_loop(tiny_app, clip, tmp_path):
    import gradio as gr

    import app
    from tiny_dit.video import probe_mp4, read_mp4, write_mp4

    path = str(write_mp4(tmp_path / "clip.mp4", np.concatenate([clip, clip])))
    video, strip, text = tiny_app.sora_task("edit", PROMPT, None, {"path": path, "meta": {}}, None, 6, 4, 32, 32,
                                            4.0, 4, 0, "euler", 0.5)
    probe = probe_mp4(video)
    assert probe["num_frames"] == 6 and probe["size"] == (2 * 32 + 2, 32)  # the first 6 frames, then the edit beside
    assert "noised to s = 0.50" in text and "in 2 of the 4 passes" in text and isinstance(strip, PIL.Image.Image)
    assert tiny_app.sora_task_changed("loop", 16)[0] == loop_num_frames(FRAMES)  # a way out of a trained length
    video, strip, text = tiny_app.sora_task("loop", PROMPT, None, None, None, 8, 4, 32, 32, 4.0, 2, 0, "heun")
    frames = read_mp4(video)[0]
    assert len(frames) == 8 and "frames 1-5 were generated" in text
    np.testing.assert_allclose(frames[3].astype(float), frames[5].astype(float), atol=6)  # the way back: 3 = 5
    for change, message in ((dict(strength=0), "Edit strength must be a number from 0.05 to 1"),
                            (dict(clip=None), "Clip A is missing"), (dict(task="loop", num_frames=1), "a loop")):
        args = dict(task="edit", prompt=PROMPT, image=None, clip=path, clip_b=None, num_frames=8, keep=4, height=32,
                    width=32, guidance=4.0, steps=1, seed=0, sampler="euler", strength=0.5) | change
        with pytest.raises(gr.Error, match=message):
            app.user_errors(tiny_app.sora_task)(**args)
