"""The shapes-world renderer follows docs/shapes-world.md."""

import json

import numpy as np
import pytest
import torch

from tiny_dit.data import shapes
from tiny_dit.data.shapes import (BACKGROUNDS, COLORS, HELD_OUT_PAIRS, MOTIONS, SHAPES, ClipSpec,
                                  all_attribute_combinations, caption, render_clips,
                                  sample_clip_specs)
from tiny_dit.video import probe_mp4, read_mp4


@pytest.fixture(scope="module")
def clips():
    specs = sample_clip_specs(96, seed=3, split="all")
    return specs, render_clips(specs).numpy()


def object_mask(clip: np.ndarray, background: str) -> np.ndarray:
    """(T, H, W) True where a pixel differs from the background colour."""
    return np.abs(clip.astype(int) - np.array(BACKGROUNDS[background])).sum(-1) > 0


def test_clip_format(clips):
    specs, frames = clips
    assert frames.shape == (96, 16, 128, 128, 3) and frames.dtype == np.uint8


def test_palette_exact_at_centre_and_background(clips):
    specs, frames = clips
    for spec, clip in zip(specs, frames):
        cx, cy, _ = spec.trajectory()
        for t in (0, 15):
            centre = clip[t, int(cy[t]), int(cx[t])]
            assert tuple(centre) == COLORS[spec.color], (spec, t)
        assert tuple(clip[0, 0, 0]) == BACKGROUNDS[spec.background]


def test_object_wholly_inside_every_frame(clips):
    specs, frames = clips
    for spec, clip in zip(specs, frames):
        mask = object_mask(clip, spec.background)
        assert mask.any(axis=(1, 2)).all(), "an object in every frame"
        border = np.concatenate([mask[:, 0, :], mask[:, -1, :], mask[:, :, 0], mask[:, :, -1]], axis=1)
        assert not border.any(), spec


def test_motion_direction_from_centroids(clips):
    specs, frames = clips
    checked = 0
    for spec, clip in zip(specs, frames):
        if spec.motion not in shapes.DIRECTIONS:
            continue
        mask = object_mask(clip, spec.background)
        ys, xs = np.nonzero(mask[0])
        ye, xe = np.nonzero(mask[-1])
        dx, dy = xe.mean() - xs.mean(), ye.mean() - ys.mean()
        expected = {"left": (dx < -25, abs(dy) < 2), "right": (dx > 25, abs(dy) < 2),
                    "up": (dy < -25, abs(dx) < 2), "down": (dy > 25, abs(dx) < 2)}[spec.motion]
        assert all(expected), (spec.motion, dx, dy)
        assert mask[0].sum() == pytest.approx(mask[-1].sum(), rel=0.1), "moving objects keep their size"
        checked += 1
    assert checked > 10


def test_size_changes(clips):
    specs, frames = clips
    checked = 0
    for spec, clip in zip(specs, frames):
        if spec.motion in shapes.DIRECTIONS:
            continue
        area = object_mask(clip, spec.background).sum(axis=(1, 2))
        ratio = area[-1] / area[0]
        if spec.motion == "growing":
            assert ratio > 8 and (np.diff(area) >= 0).all()
        else:
            assert ratio < 1 / 8 and (np.diff(area) <= 0).all()
        checked += 1
    assert checked > 5


def test_shapes_differ_in_fill_ratio():
    """circle, square, triangle and star fill their bounding box by pi/4, 1, 1/2 and less."""
    fills = {}
    for shape in SHAPES:
        spec = ClipSpec("red", shape, "right", "black", 40, 64, 2, 20, 20, 0)
        mask = object_mask(render_clips([spec], frame_indices=[0])[0].numpy(), "black")[0]
        fills[shape] = mask.sum() / (40 * 40)
    assert fills["square"] == pytest.approx(1, abs=0.06)
    assert fills["circle"] == pytest.approx(np.pi / 4, abs=0.05)
    assert fills["triangle"] == pytest.approx(0.5, abs=0.05)
    assert fills["star"] < 0.4


def test_triangle_points_up_and_star_has_a_top_point():
    for shape in ("triangle", "star"):
        spec = ClipSpec("red", shape, "right", "black", 64, 64, 0, 20, 20, 0)
        mask = object_mask(render_clips([spec], frame_indices=[0])[0].numpy(), "black")[0]
        rows = np.nonzero(mask.any(axis=1))[0]
        top_width, bottom_width = mask[rows[0] + 1].sum(), mask[rows[-1] - 1].sum()
        assert top_width < 6, "a point at the top"
        if shape == "triangle":
            assert bottom_width > 30, "a flat base"


def test_held_out_pairs_never_in_training_set():
    train = sample_clip_specs(5000, seed=0, split="train")
    assert not any((s.color, s.shape) in HELD_OUT_PAIRS for s in train)
    assert {(s.color, s.shape) for s in train} == {(c, s) for c in COLORS for s in SHAPES} - HELD_OUT_PAIRS
    held = sample_clip_specs(200, seed=0, split="heldout")
    assert {(s.color, s.shape) for s in held} == set(HELD_OUT_PAIRS)
    assert len(all_attribute_combinations("all")) == 432


def test_captions_name_every_attribute():
    specs = sample_clip_specs(500, seed=1, split="all")
    motion_words = {"left": "left", "right": "right", "up": "up", "down": "down",
                    "growing": ("growing", "bigger", "grows"),
                    "shrinking": ("shrinking", "smaller", "shrinks")}
    for s in specs:
        words = s.text.replace(",", " ").split()
        assert s.color in words and s.shape in words and s.background in words, s.text
        expected = motion_words[s.motion]
        assert any(w in words for w in ((expected,) if isinstance(expected, str) else expected)), s.text
        # no word of another value of any attribute
        for other in [*COLORS, *SHAPES, *BACKGROUNDS]:
            if other not in (s.color, s.shape, s.background):
                assert other not in words, (other, s.text)
    phrasings = {s.phrasing for s in specs}
    assert len(phrasings) >= 4


def test_canonical_caption():
    assert caption("red", "circle", "left", "black") == "a red circle moving left on a black background"
    assert caption("blue", "star", "growing", "white") == "a blue star growing on a white background"


def test_deterministic_for_a_seed():
    a = render_clips(sample_clip_specs(4, seed=7))
    b = render_clips(sample_clip_specs(4, seed=7))
    c = render_clips(sample_clip_specs(4, seed=8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_frame_subset_matches_full_render():
    specs = sample_clip_specs(3, seed=2)
    full = render_clips(specs)
    part = render_clips(specs, frame_indices=[0, 7, 15])
    assert torch.equal(full[:, [0, 7, 15]], part)


def test_cli_writes_videofolder(tmp_path):
    shapes.main(["--out", str(tmp_path / "set"), "--num-clips", "3", "--seed", "5"])
    records = [json.loads(line) for line in (tmp_path / "set" / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert set(record) == {"file_name", "text", "color", "shape", "motion", "background"}
        assert record["motion"] in MOTIONS
        info = probe_mp4(tmp_path / "set" / record["file_name"])
        assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["faststart"]
        assert info["num_frames"] == 16 and info["size"] == (128, 128) and info["fps"] == 8
        frames, _ = read_mp4(tmp_path / "set" / record["file_name"])
        bg = np.array(BACKGROUNDS[record["background"]])
        assert np.abs(frames[0, 0, 0].astype(int) - bg).max() <= 3  # H.264 is lossy, barely

    shapes.main(["--out", str(tmp_path / "held"), "--num-clips", "8", "--seed", "5", "--held-out"])
    held = [json.loads(line) for line in (tmp_path / "held" / "metadata.jsonl").read_text().splitlines()]
    assert all((r["color"], r["shape"]) in HELD_OUT_PAIRS for r in held)


def test_render_at_lower_resolution_is_the_same_scene():
    specs = sample_clip_specs(2, seed=9)
    full = render_clips(specs, frame_indices=[0]).float()
    small = render_clips(specs, frame_indices=[0], size=32).float()
    pooled = torch.nn.functional.avg_pool2d(full[:, 0].permute(0, 3, 1, 2), 4).permute(0, 2, 3, 1)
    assert (small[:, 0] - pooled).abs().mean() < 4  # same picture, up to anti-aliasing


def test_still_captions_leave_out_the_motion():
    from tiny_dit.data.shapes import NUM_PHRASINGS, caption

    stills = {caption("red", "star", None, "black", p) for p in range(NUM_PHRASINGS)}
    assert "a red star on a black background" in stills and len(stills) == NUM_PHRASINGS - 1  # 0 and 1 agree
    for text in stills:
        assert all(word in text for word in ("red", "star", "black"))
        assert not any(word in text for word in ("moving", "moves", "slides", "going", "grow", "shrink", "big"))


def test_still_captions_can_leave_out_each_word():
    from tiny_dit.data.shapes import caption

    assert caption(None, "star", None, "black") == "a star on a black background"
    assert caption("red", None, None, "white") == "a red shape on a white background"
    assert caption("red", "star", None, None) == "a red star"
    assert caption(None, None, None, None, phrasing=4) == "shape"


def test_shapes_attributes_reads_every_phrasing():
    assert shapes.shapes_attributes("on a gray background, a blue circle slides right") == {
        "color": "blue", "shape": "circle", "motion": "right", "background": "gray"}
    assert shapes.shapes_attributes("a yellow star gets smaller")["motion"] == "shrinking"
    assert shapes.shapes_attributes("a black background with a red star getting bigger")["background"] == "black"
    assert shapes.shapes_attributes("a cat") is None


@pytest.mark.parametrize("num_frames, height, width", [(32, 128, 128), (8, 128, 128), (16, 128, 192),
                                                        (16, 192, 128), (64, 128, 128)])
def test_any_length_and_size(num_frames, height, width):
    """Sora's variable lengths and sizes: same objects and speeds (px per frame), the path capped to
    fit, the object whole in every frame, and the frame judge reads the attributes back."""
    from tiny_dit.training.evaluate import judge_frames

    specs = sample_clip_specs(24, seed=5, split="all", num_frames=num_frames, height=height, width=width)
    frames = render_clips(specs).numpy()
    assert frames.shape == (24, num_frames, height, width, 3)
    for spec, clip in zip(specs, frames):
        mask = object_mask(clip, spec.background)
        assert mask.any(axis=(1, 2)).all()
        border = np.concatenate([mask[:, 0, :], mask[:, -1, :], mask[:, :, 0], mask[:, :, -1]], axis=1)
        assert not border.any(), spec
        judged = judge_frames(clip)
        assert all(judged[k] == getattr(spec, k) for k in ("color", "shape", "motion")), (spec, judged)
        if spec.motion in shapes.DIRECTIONS:  # the speed range of 16-frame clips, lowered only to fit
            assert spec.velocity <= 4 and (spec.velocity >= 2 or num_frames > 16)


def test_the_size_arguments_change_nothing_at_the_default_size():
    """Passing 16 x 128 x 128 explicitly draws exactly what the defaults draw, and a seed pins the draws."""
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    for combo in all_attribute_combinations("all")[:40]:
        a = shapes.random_clip_spec(rng_a, *combo)
        b = shapes.random_clip_spec(rng_b, *combo, num_frames=16, height=128, width=128)
        assert a == b and a.num_frames == 16 and (a.height, a.width) == (128, 128)
    spec = shapes.random_clip_spec(np.random.default_rng(0), "red", "star", "right", "black")
    # the larger world's draws for seed 0 (docs/shapes-world.md: half-extent 24-32 px)
    assert (spec.center_x, spec.velocity, spec.size_start) == pytest.approx((32.231275, 2.539573, 29.095693), abs=1e-5)


def _half_extents(mask: np.ndarray) -> np.ndarray:
    """Half the larger side of the object's bounding box in each frame (T,), from the pixels. For a circle,
    a square and a triangle the box is exactly 2 half-extents on a side."""
    rows, cols = mask.any(axis=2), mask.any(axis=1)  # (T, H), (T, W)
    span = lambda m: m.shape[1] - m[:, ::-1].argmax(1) - m.argmax(1)  # noqa: E731 (last - first + 1)
    return np.maximum(span(rows), span(cols)) / 2


@pytest.fixture(scope="module")
def sized_clips():
    """Circles, squares and triangles (their bounding box is the half-extent), every motion."""
    specs = [s for s in sample_clip_specs(400, seed=21, split="all") if s.shape != "star"]
    return specs, render_clips(specs).numpy()


def test_object_sizes_from_the_pixels(sized_clips):
    """docs/shapes-world.md: moving objects have half-extent 24-32 px; growing ones go from 10-12 px to
    38-42 px (shrinking: the reverse). Read off the rendered pixels (1 px of anti-aliasing allowed), and
    both ends of each range are reached."""
    moving, small, large = [], [], []
    for spec, clip in zip(*sized_clips):
        half = _half_extents(object_mask(clip, spec.background))  # (T,)
        if spec.motion in shapes.DIRECTIONS:
            assert half.max() - half.min() <= 1, (spec, half)  # keeps its size
            moving.append(half.mean())
        else:
            first, last = (half[0], half[-1]) if spec.motion == "growing" else (half[-1], half[0])
            small.append(first)
            large.append(last)
    for values, (lo, hi) in ((moving, shapes.MOVING_SIZE), (small, shapes.GROWING_SIZES[0]),
                             (large, shapes.GROWING_SIZES[1])):
        values = np.array(values)
        assert (values >= lo - 1).all() and (values <= hi + 1).all(), (lo, hi, values.min(), values.max())
        assert values.min() < lo + 1 and values.max() > hi - 1, "the whole range is drawn"
    assert (24 - 1, 32 + 1) == (shapes.MOVING_SIZE[0] - 1, shapes.MOVING_SIZE[1] + 1)  # the contract's figures


def test_speeds_from_the_pixels(sized_clips):
    """Moving objects travel 2-4 px per frame in a straight line (the centroid's path), and the whole path
    stays in the frame (test_object_wholly_inside_every_frame checks the border)."""
    speeds = []
    for spec, clip in zip(*sized_clips):
        if spec.motion not in shapes.DIRECTIONS:
            continue
        mask = object_mask(clip, spec.background)
        centroids = np.array([[np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()] for m in mask])  # (T, 2)
        t = np.arange(len(mask))
        fit = np.polyfit(t, centroids, 1)  # (2, 2): slope and intercept of x and y
        residual = centroids - (t[:, None] * fit[0] + fit[1])
        assert np.abs(residual).max() < 1, (spec, residual)  # a straight line at a constant speed
        speeds.append(np.linalg.norm(fit[0]))  # px per frame
    speeds = np.array(speeds)
    assert speeds.min() >= 2 - 0.15 and speeds.max() <= 4 + 0.15, (speeds.min(), speeds.max())
    assert speeds.min() < 2.3 and speeds.max() > 3.7, "the whole range is drawn"


def test_shape_is_a_strong_signal():
    """Why the objects are this large: a circle and a square differ in about 2.5x more pixels at the middle
    of the moving range (half-extent 28: 3.7% of a 128 x 128 frame) than at the first world's 18 (1.4%)."""
    def differing_pixels(half):
        masks = [object_mask(render_clips([ClipSpec("red", shape, "right", "black", 64, 64, 0, half, half, 0)],
                                          frame_indices=[0])[0].numpy(), "black")[0] for shape in ("circle", "square")]
        return (masks[0] != masks[1]).mean()

    assert differing_pixels(shapes.MOVING_SIZE[0]) > 0.025
    assert differing_pixels(sum(shapes.MOVING_SIZE) / 2) > 2.3 * differing_pixels(18)


def test_small_scenes_draw_smaller_objects():
    """A scene smaller than 128 px draws its objects in proportion to its short side, so that they fit."""
    for height, width in ((64, 64), (32, 48)):
        specs = sample_clip_specs(60, seed=4, split="all", height=height, width=width)
        frames = render_clips(specs).numpy()
        for spec, clip in zip(specs, frames):
            mask = object_mask(clip, spec.background)
            assert mask.any(axis=(1, 2)).all()
            border = np.concatenate([mask[:, 0, :], mask[:, -1, :], mask[:, :, 0], mask[:, :, -1]], axis=1)
            assert not border.any(), spec
            assert max(spec.size_start, spec.size_end) <= 42 * min(height, width) / 128 + 1e-6
