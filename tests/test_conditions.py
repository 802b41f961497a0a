"""Known frames (TinyDiTCondition) and any length and size, on the tiny random pipeline of test_pipeline.py.

The tiny pipeline: 32 x 32 frames, 4 x 8 x 8 latents per frame, tubelets of patch_size_t = 2 frames.
"""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from test_pipeline import PROMPT, SIZE, gen, tiny_pipeline
import tiny_dit.model as model_module
from tiny_dit.autoencoder import decode_latents, encode_clips
from tiny_dit.conditions import KnownFrames, hold_known_frames, random_known_mask
from tiny_dit.model import TinyDiT, get_3d_sincos_pos_embed
from tiny_dit.pipeline import TinyDiTCondition, TinyDiTPipeline

torch.set_num_threads(1)
STEPS = 2


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def random_clip(num_frames: int, seed: int = 0, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def round_trip(pipe, frames: np.ndarray) -> np.ndarray:
    """What the autoencoder makes of uint8 frames (T, H, W, 3): float (T, H, W, 3) in [0, 1]."""
    return decode_latents(pipe.vae, encode_clips(pipe.vae, torch.from_numpy(frames)[None]))[0].numpy()


# --- the one equation -----------------------------------------------------------


def test_hold_known_frames_is_the_forward_process_at_known_frames_only():
    latents, x0, noise = (torch.randn(2, 4, 6, 3, 3, generator=gen(i)) for i in range(3))
    mask = torch.zeros(1, 1, 6, 1, 1)
    mask[:, :, 1:3] = 1
    known = KnownFrames(latents=x0[:1] * mask, mask=mask)
    for sigma in (1.0, 0.3, 0.0):
        held = hold_known_frames(latents, known, noise, torch.tensor(sigma))
        expected = (1 - sigma) * x0[:1, :, 1:3] + sigma * noise[:, :, 1:3]  # the same clean frames for every clip
        torch.testing.assert_close(held[:, :, 1:3], expected)
        assert torch.equal(held[:, :, [0, 3, 4, 5]], latents[:, :, [0, 3, 4, 5]])
    assert torch.equal(hold_known_frames(latents, known, noise, 1.0)[:, :, 1:3], noise[:, :, 1:3])  # s=1: the noise


# --- frame placement: the known frames come back --------------------------------

PLACEMENTS = {
    # task: (num_frames, [(kind, length, frame_index)], the frames they end up at)
    "image-to-video": (6, [("image", 1, 0)], [[0]]),
    "image in the middle": (6, [("image", 1, 3)], [[3]]),
    "extend forwards": (7, [("video", 3, 0)], [[0, 1, 2]]),  # 7: not a multiple of patch_size_t
    "extend backwards": (8, [("video", 3, -3)], [[5, 6, 7]]),
    "connect": (8, [("video", 2, 0), ("video", 3, -3)], [[0, 1], [5, 6, 7]]),
    "an image as an image": (1, [("image", 1, 0)], [[0]]),
    "odd tubelet split": (5, [("video", 2, 1)], [[1, 2]]),  # the known frames straddle two tubelets
}


@pytest.mark.parametrize("task", PLACEMENTS)
def test_known_frames_come_back_within_the_round_trip_error(pipe, task):
    num_frames, specs, positions = PLACEMENTS[task]
    inputs, conditions = [], []
    for i, (kind, length, index) in enumerate(specs):
        clip = random_clip(length, seed=i)
        inputs.append(clip)
        conditions.append(TinyDiTCondition(image=clip[0], frame_index=index) if kind == "image"
                          else TinyDiTCondition(video=clip, frame_index=index))
    out = pipe([PROMPT, "a blue star"], num_frames=num_frames, num_inference_steps=STEPS, conditions=conditions,
               generator=gen(0)).frames
    assert out.shape == (2, num_frames, SIZE, SIZE, 3)
    held = set()
    for clip, frames in zip(inputs, positions):
        expected = round_trip(pipe, clip)
        for clip_out in out:  # every clip of the call holds them
            np.testing.assert_allclose(clip_out[frames], expected, atol=1e-5)
            # ... which is the given frames up to the autoencoder's own error (large: it is untrained)
            assert np.abs(clip_out[frames] - clip / 255).mean() <= np.abs(expected - clip / 255).mean() + 1e-5
        held.update(frames)
    free = [k for k in range(num_frames) if k not in held]
    if free:  # the generated frames are not copies of the known ones
        assert np.abs(out[:, free] - round_trip(pipe, inputs[0])[:1]).mean() > 0.01


def test_latent_output_holds_the_encoded_frames_exactly(pipe):
    clip = random_clip(3)
    latents = pipe(PROMPT, num_frames=5, num_inference_steps=STEPS, output_type="latent", generator=gen(1),
                   conditions=[TinyDiTCondition(video=clip, frame_index=2)]).frames
    assert latents.shape == (1, 4, 5, 8, 8)  # cut to num_frames (6 were sampled)
    torch.testing.assert_close(latents[:, :, 2:5], encode_clips(pipe.vae, torch.from_numpy(clip)[None]))


def test_the_generated_frames_see_the_known_ones(pipe):
    """The condition changes the frames around it (attention), and the same seed gives the same clip."""
    kwargs = dict(num_frames=4, num_inference_steps=3, guidance_scale=3.0)
    plain = pipe(PROMPT, generator=gen(2), **kwargs).frames
    a = pipe(PROMPT, generator=gen(2), conditions=[TinyDiTCondition(image=random_clip(1)[0])], **kwargs).frames
    b = pipe(PROMPT, generator=gen(2), conditions=[TinyDiTCondition(image=random_clip(1)[0])], **kwargs).frames
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[:, 1:] - plain[:, 1:]).mean() > 1e-3


def test_callback_latents_hold_the_known_frames_at_the_next_noise_level(pipe):
    clip = random_clip(2)
    x0 = encode_clips(pipe.vae, torch.from_numpy(clip)[None])  # (1, C, 2, h, w)
    noise = pipe.prepare_latents(1, 4, SIZE, SIZE, gen(3), torch.device("cpu"))
    seen = []

    def callback(p, i, t, kwargs):
        sigma = p.scheduler.sigmas[i + 1]
        torch.testing.assert_close(kwargs["latents"][:, :, :2], (1 - sigma) * x0 + sigma * noise[:, :, :2])
        seen.append(i)
        return {}

    pipe(PROMPT, num_frames=4, num_inference_steps=3, generator=gen(3), callback_on_step_end=callback,
         conditions=[TinyDiTCondition(video=clip)])
    assert seen == [0, 1, 2]


def test_accepted_frame_formats_give_the_same_clip(pipe):
    clip = random_clip(2)
    run = lambda condition: pipe(PROMPT, num_frames=4, num_inference_steps=1, generator=gen(0),  # noqa: E731
                                 conditions=condition).frames
    expected = run([TinyDiTCondition(video=clip)])
    for condition in (TinyDiTCondition(video=clip),  # a single condition, not in a list
                      [TinyDiTCondition(video=[PIL.Image.fromarray(f) for f in clip])],
                      [TinyDiTCondition(video=torch.from_numpy(clip))],
                      [TinyDiTCondition(video=clip.astype(np.float32) / 255)],  # e.g. a clip the pipeline made
                      [TinyDiTCondition(video=clip[:1]), TinyDiTCondition(image=PIL.Image.fromarray(clip[1]),
                                                                          frame_index=1)]):
        np.testing.assert_allclose(run(condition), expected, atol=1e-6)
    assert np.array_equal(run([]), run(None))  # no conditions: plain text-to-video


def test_extending_a_generated_clip(pipe):
    first = pipe(PROMPT, num_frames=4, num_inference_steps=STEPS, generator=gen(0)).frames[0]  # float in [0, 1]
    longer = pipe(PROMPT, num_frames=8, num_inference_steps=STEPS, generator=gen(1),
                  conditions=[TinyDiTCondition(video=first)]).frames[0]
    expected = round_trip(pipe, (first * 255).round().astype(np.uint8))
    np.testing.assert_allclose(longer[:4], expected, atol=1e-5)


# --- condition checks --------------------------------------------------------------

CLIP4 = random_clip(4)
BAD_CONDITIONS = [
    ([TinyDiTCondition(image=CLIP4[0]), TinyDiTCondition(image=CLIP4[0], frame_index=40)],
     "conditions[1].frame_index=40 is outside the 8-frame clip (0 to 7, or -8 to -1"),
    ([TinyDiTCondition(image=CLIP4[0], frame_index=-9)], "conditions[0].frame_index=-9 is outside the 8-frame clip"),
    ([TinyDiTCondition(video=random_clip(9))], "conditions[0] has 9 frames, more frames than num_frames: from "
                                               "frame 0 the 8-frame clip has room for 8"),
    ([TinyDiTCondition(video=CLIP4, frame_index=6)], "conditions[0] has 4 frames, too many frames for its place: "
                                                     "from frame 6 the 8-frame clip has room for 2"),
    ([TinyDiTCondition(image=random_clip(1, height=48)[0])],
     "conditions[0] frames are 32x48 (width x height) but the clip is 32x32"),
    ([TinyDiTCondition(video=CLIP4), TinyDiTCondition(video=CLIP4, frame_index=-5)],
     "conditions[1] (frames 3 to 6) overlaps conditions[0] at frame 3"),
    ([TinyDiTCondition()], "conditions[0] needs exactly one of image and video, got neither"),
    ([TinyDiTCondition(image=CLIP4[0], video=CLIP4)], "conditions[0] needs exactly one of image and video, got both"),
    ([TinyDiTCondition(image=CLIP4)], r"conditions[0].image must have shape (H, W, 3)"),
    ([TinyDiTCondition(video=CLIP4.transpose(0, 3, 1, 2))], r"conditions[0].video must have shape (T, H, W, 3)"),
    ([TinyDiTCondition(video=CLIP4 * 2.0)], "conditions[0].video is float, so its values must lie in [0, 1]"),
    ([TinyDiTCondition(video=CLIP4.astype(np.int64))], "conditions[0].video must be uint8 or float"),
    ([TinyDiTCondition(video=[])], "conditions[0].video is an empty list"),
    ([TinyDiTCondition(video=PIL.Image.fromarray(CLIP4[0]))], "conditions[0].video is one PIL image"),
    ([TinyDiTCondition(image="frame.png")], "conditions[0].image must be a PIL image or an array"),
    ([TinyDiTCondition(image=CLIP4[0], frame_index=1.0)], "conditions[0].frame_index must be an integer"),
    ([CLIP4], "conditions[0] must be a TinyDiTCondition"),
    ("frame.png", "conditions must be a list of TinyDiTCondition"),
]


@pytest.mark.parametrize("conditions, message", BAD_CONDITIONS, ids=[m[:40] for _, m in BAD_CONDITIONS])
def test_bad_conditions_raise_value_errors_before_any_work(pipe, conditions, message):
    calls = []
    hooks = [model.register_forward_hook(lambda *a: calls.append(1)) for model in (pipe.transformer, pipe.vae.encoder)]
    try:
        with pytest.raises(ValueError) as error:
            pipe(PROMPT, num_frames=8, num_inference_steps=1, conditions=conditions)
        assert message in str(error.value), str(error.value)
    finally:
        for hook in hooks:
            hook.remove()
    assert not calls


def test_check_inputs_checks_conditions(pipe):
    """check_inputs alone (what the app calls before it starts work) rejects a condition that does not fit."""
    args = (PROMPT, None, 1, 1.0, 1, 4, SIZE, SIZE, None, "np", ["latents"], None)
    pipe.check_inputs(*args, conditions=[TinyDiTCondition(video=CLIP4)])
    with pytest.raises(ValueError, match="more frames than num_frames"):
        pipe.check_inputs(*args, conditions=[TinyDiTCondition(video=random_clip(5))])


# --- any length and size -------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [1, 3, 5])
def test_any_length_is_the_next_whole_tubelet_cut(pipe, num_frames):
    """A length that is not a multiple of patch_size_t (2 here) is sampled at the next multiple and cut:
    the same frames as asking for that multiple. One frame is the first of a one-tubelet still."""
    out = pipe(PROMPT, num_frames=num_frames, num_inference_steps=STEPS, generator=gen(4)).frames
    assert out.shape == (1, num_frames, SIZE, SIZE, 3)
    whole = pipe(PROMPT, num_frames=num_frames + 1, num_inference_steps=STEPS, generator=gen(4)).frames
    np.testing.assert_allclose(out, whole[:, :num_frames], atol=1e-6)
    pt_out = pipe(PROMPT, num_frames=num_frames, num_inference_steps=STEPS, generator=gen(4), output_type="pt").frames
    assert pt_out.shape == (1, num_frames, 3, SIZE, SIZE)
    assert len(pipe(PROMPT, num_frames=num_frames, num_inference_steps=1, output_type="pil").frames[0]) == num_frames


@pytest.mark.parametrize("height, width", [(32, 48), (48, 32)])
def test_other_sizes_with_a_condition(pipe, height, width):
    image = random_clip(1, height=height, width=width)[0]
    out = pipe(PROMPT, num_frames=3, height=height, width=width, num_inference_steps=STEPS, generator=gen(0),
               conditions=[TinyDiTCondition(image=image)]).frames
    assert out.shape == (1, 3, height, width, 3)
    np.testing.assert_allclose(out[0, 0], round_trip(pipe, image[None])[0], atol=1e-5)


def test_given_latents_are_whole_tubelets(pipe):
    latents = torch.randn(1, 4, 4, 8, 8, generator=gen(0))
    out = pipe(PROMPT, num_frames=3, latents=latents, num_inference_steps=1).frames
    assert out.shape == (1, 3, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match=r"latents must have shape \(1, 4, 2, 8, 8\)"):
        pipe(PROMPT, num_frames=1, latents=latents, num_inference_steps=1)


def test_random_known_mask_gives_runs_at_the_ends():
    """Training masks: with probability 1 every clip has its first and/or last frames known, each run 1 to
    T // 2 long, all three layouts appear; with probability 0 none."""
    generator = torch.Generator().manual_seed(0)
    assert not random_known_mask(16, 8, 0.0, generator).any()
    masks = random_known_mask(400, 8, 1.0, generator)[:, 0, :, 0, 0]  # (B, T)
    starts, ends = masks[:, 0] == 1, masks[:, -1] == 1
    assert (starts | ends).all() and starts.any() and ends.any() and (starts & ends).any()
    for row in masks:
        first = int(row.argmin()) if row[0] else 0  # known frames from the start
        last = int(row.flip(0).argmin()) if row[-1] else 0  # known frames at the end
        assert 0 < first + last and first <= 4 and last <= 4 and row.sum() == first + last, row
    assert 0.4 < random_known_mask(400, 8, 0.5, generator).amax(dim=(1, 2, 3, 4)).mean() < 0.6


def test_pipeline_gives_a_known_frames_model_its_known_frames(pipe):
    """With known_frames_input the transformer gets the encoded known latents and their mask at every step;
    the known frames still come back as the autoencoder's round trip."""
    config = {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")}
    model = TinyDiT.from_config({**config, "known_frames_input": True}).eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("known_mask")),
                                    with_kwargs=True)
    known_pipe = TinyDiTPipeline.from_components(model, pipe.text_encoder, pipe.vae)
    known_pipe.set_progress_bar_config(disable=True)
    clip = random_clip(2)
    frames = known_pipe(PROMPT, num_frames=4, conditions=[TinyDiTCondition(video=clip)], num_inference_steps=STEPS,
                        generator=gen(0)).frames[0]
    assert len(seen) == STEPS and all(m is not None and m.flatten().tolist() == [1, 1, 0, 0] for m in seen)
    np.testing.assert_allclose(frames[:2], round_trip(pipe, clip), atol=1e-5)


# --- the measurement script runs -------------------------------------------------------


def test_sora_tasks_benchmark_runs_on_a_tiny_pipeline(pipe, capsys, load_benchmark):
    bench = load_benchmark("sora_tasks")
    tasks = bench.measure_tasks(pipe, num_inputs=2, steps=1, guidance_scale=1.0)
    bench.print_tasks(tasks)
    for task in bench.TASKS:
        row = tasks[task]
        assert set(row["agreement"]) == {"color", "shape", "motion", "background", "all"}
        assert row["seam_ratio"] > 0 and row["rendered_seam_ratio"] > 0
    sizes = bench.measure_sizes(pipe, sizes=[(1, 32, 32), (3, 32, 48)], num_prompts=2, steps=1, guidance_scale=1.0)
    bench.print_sizes(sizes)
    assert set(sizes) >= {"1x32x32", "3x32x48"}
    printed = capsys.readouterr().out
    assert "extend-backwards" in printed and "3x32x48" in printed


def test_space_positions_benchmark_centred_is_the_models_own(pipe, load_benchmark):
    """benchmarks/space_positions.py: its "centred" positions are exactly centre_space's, the others stay in
    (stretched, fitted) or run past (run-on) the trained range, and a run swaps the model's positions back."""
    bench = load_benchmark("space_positions")
    embed = bench.use_positions(bench.VARIANTS["centred"], 8)
    assert torch.equal(embed(36, (2, 8, 12)), get_3d_sincos_pos_embed(36, (2, 8, 12), None, 8))
    for name in ("stretched", "fitted"):
        h, w = bench.VARIANTS[name](8, 12, 8)
        assert min(h.min(), w.min()) >= 0 and max(h.max(), w.max()) <= 7 + 1e-9, name
    assert bench.VARIANTS["run-on"](8, 12, 8)[1].max() == 11
    assert bench.VARIANTS["stretched"](8, 12, 8)[0].tolist() == list(range(8))  # the trained axis is left alone
    original = model_module.get_3d_sincos_pos_embed
    rows = bench.measure(pipe, "run-on", [(1, 32, 48)], seeds=1, steps=1)
    assert model_module.get_3d_sincos_pos_embed is original and set(rows) == {"1x32x48"}


def test_seam_changes_compare_boundaries_with_the_rest(load_benchmark):
    bench = load_benchmark("sora_tasks")
    clips = np.zeros((1, 4, 2, 2, 3), dtype=np.uint8)
    clips[0, 1:] = 10  # a jump of 10 between frames 0 and 1, nothing elsewhere
    assert bench.seam_changes(clips, np.array([True, False, False, False])) == (10.0, 0.0)
    conditions = bench.conditions_for(random_clip(16), bench.TASKS["connect"])
    assert [c.frame_index for c in conditions] == [0, -4] and len(conditions[1].video) == 4


# --- the bundled model, offline: every task from the Python API and the CLI -------------------

BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "tiny-dit-shapes"


@pytest.mark.skipif(not (BUNDLE / "model_index.json").is_file(), reason="no bundled model")
def test_every_task_runs_on_the_bundled_model_offline(monkeypatch, tmp_path):
    from tiny_dit.data.shapes import random_clip_spec, render_clips
    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.sample import main
    from tiny_dit.video import probe_mp4, write_mp4

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = TinyDiTPipeline.from_pretrained(BUNDLE)
    bundle.set_progress_bar_config(disable=True)
    spec = random_clip_spec(np.random.default_rng(0), "red", "star", "right", "black", phrasing=0)
    clip = render_clips([spec]).numpy()[0]  # (16, 128, 128, 3)
    kwargs = dict(num_inference_steps=2, generator=gen(0))
    tasks = {  # name: (num_frames, conditions, known output frames -> input frames)
        "image-to-video": (16, [TinyDiTCondition(image=clip[0])], {0: 0}),
        "extend forwards": (16, [TinyDiTCondition(video=clip[:8])], {k: k for k in range(8)}),
        "extend backwards": (16, [TinyDiTCondition(video=clip[8:], frame_index=-8)], {k: k for k in range(8, 16)}),
        "connect": (16, [TinyDiTCondition(video=clip[:4]), TinyDiTCondition(video=clip[12:], frame_index=-4)],
                    {**{k: k for k in range(4)}, **{k: k for k in range(12, 16)}}),
    }
    expected = round_trip(bundle, clip)
    for name, (num_frames, conditions, known) in tasks.items():
        out = bundle(spec.text, num_frames=num_frames, conditions=conditions, **kwargs).frames[0]
        assert out.shape == (num_frames, 128, 128, 3), name
        np.testing.assert_allclose(out[list(known)], expected[list(known.values())], atol=1e-4, err_msg=name)
    assert bundle("a red star on a black background", num_frames=1, **kwargs).frames.shape == (1, 1, 128, 128, 3)
    assert bundle(spec.text, num_frames=5, height=128, width=192, **kwargs).frames.shape == (1, 5, 128, 192, 3)

    write_mp4(tmp_path / "clip.mp4", clip[:8])
    main(["--model", str(BUNDLE), "--prompt", spec.text, "--video", str(tmp_path / "clip.mp4"), "--num-frames", "12",
          "--num-videos", "1", "--steps", "2", "--dtype", "float32", "--out", str(tmp_path / "out")])
    assert probe_mp4(tmp_path / "out" / "sample-00.mp4")["num_frames"] == 12
