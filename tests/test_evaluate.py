"""The quality measure: the prompt set, the frame judge on rendered clips, and the CLI end to end."""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from test_pipeline import tiny_clip, tiny_pipeline
from tiny_dit.data.shapes import BACKGROUNDS, COLORS, HELD_OUT_PAIRS, MOTIONS, SHAPES, random_clip_spec, render_clips
from tiny_dit.training.evaluate import (ATTRIBUTES, count_points, evaluation_prompts, judge_frames, main, object_aspect,
                                       object_body, score, template_body)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from shape_errors import main as shape_errors_main  # noqa: E402
from shape_errors import shape_errors  # noqa: E402

torch.set_num_threads(1)


def render_for(prompts: list[dict], seed: int = 0, **override) -> np.ndarray:
    """One rendered clip per prompt (uint8, (N, 16, 128, 128, 3)), attributes optionally overridden."""
    rng = np.random.default_rng(seed)
    specs = [random_clip_spec(rng, *(override.get(a, p[a]) for a in ATTRIBUTES)) for p in prompts]
    return render_clips(specs).numpy()


def test_evaluation_prompts_cover_every_value_and_respect_the_split():
    seen, held_out = evaluation_prompts("seen", 72), evaluation_prompts("held-out", 72)
    for prompts in (seen, held_out):
        for attribute, values in (("motion", MOTIONS), ("background", BACKGROUNDS), ("shape", SHAPES)):
            assert {p[attribute] for p in prompts} == set(values), attribute
        assert len({p["text"] for p in prompts}) == 72  # several phrasings, no repeats
    assert {p["color"] for p in seen} == set(COLORS)
    assert all((p["color"], p["shape"]) not in HELD_OUT_PAIRS for p in seen)
    assert {(p["color"], p["shape"]) for p in held_out} == set(HELD_OUT_PAIRS)
    assert evaluation_prompts("seen", 72) == seen  # fixed: every model sees the same prompts


def test_frame_judge_reads_rendered_clips():
    """Measured 100% on every attribute (python -m tiny_dit.training.evaluate --rendered); allow a little."""
    prompts = evaluation_prompts("seen", 36) + evaluation_prompts("held-out", 12)
    predicted = [judge_frames(clip) for clip in render_for(prompts)]
    accuracy = score(predicted, prompts)
    assert all(accuracy[a] >= 0.95 for a in ATTRIBUTES), accuracy


def test_object_aspect_sees_a_stretched_shape_that_the_judge_does_not():
    """Rendered shapes are about as wide as tall; stretched 1.5x along the width, the judge still reads
    the same shape (its features do not change) but the aspect says 1.5."""
    prompts = [p for p in evaluation_prompts("seen", 24) if p["motion"] in ("left", "right", "up", "down")][:8]
    clips = render_for(prompts)
    aspects = np.array([object_aspect(clip) for clip in clips])
    assert np.all((aspects > 0.8) & (aspects < 1.25)), aspects
    wide = np.stack([np.repeat(clip, 3, axis=2)[:, :, ::2] for clip in clips])  # (N, 16, 128, 192, 3)
    stretched = np.array([object_aspect(clip) for clip in wide])
    np.testing.assert_allclose(stretched, 1.5 * aspects, rtol=0.1)
    assert [judge_frames(c)["shape"] for c in wide] == [judge_frames(c)["shape"] for c in clips]
    assert object_aspect(np.zeros((4, 32, 32, 3), np.uint8)) is None


def test_frame_judge_notices_the_wrong_colour_motion_and_an_empty_clip():
    prompts = [p for p in evaluation_prompts("seen", 24) if p["color"] != "blue" and p["motion"] != "up"][:8]
    wrong = [judge_frames(clip) for clip in render_for(prompts, color="blue", motion="up")]
    accuracy = score(wrong, prompts)
    assert accuracy["color"] == 0 and accuracy["motion"] == 0 and accuracy["all"] == 0
    assert accuracy["background"] >= 0.95  # the rest is still read correctly
    empty = np.broadcast_to(np.array(BACKGROUNDS["gray"], np.uint8), (16, 128, 128, 3))
    assert judge_frames(empty) == {"background": "gray", "color": "none", "shape": "none", "motion": "none"}


def test_frame_judge_notices_the_wrong_shape():
    """Each prompt drawn as the next shape over: the judge must call every one wrong."""
    prompts = evaluation_prompts("seen", 24)[:12]
    next_shape = {s: SHAPES[(k + 1) % len(SHAPES)] for k, s in enumerate(SHAPES)}
    clips = np.stack([render_for([p], shape=next_shape[p["shape"]])[0] for p in prompts])
    judged = [judge_frames(clip) for clip in clips]
    assert [j["shape"] for j in judged] == [next_shape[p["shape"]] for p in prompts]  # read, not just refused
    assert score(judged, prompts)["color"] == 1


def drawn(frame: np.ndarray) -> np.ndarray:
    """(H, W) pixels of a rendered frame (H, W, 3) that differ from its corner's background colour."""
    return np.linalg.norm(frame.astype(float) - frame[0, 0], axis=-1) > 60


def with_fringes(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the DiT adds around its objects: dots of another hue beside the object and a line of the
    object's own colour stuck to one edge (both widen the box of every pixel far from the background)."""
    clip = clip.copy()
    ys, xs = np.nonzero(drawn(clip[0]))  # the first frame's object
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    for y in range(top, bottom, 6):  # a column of magenta dots two pixels left of the object
        clip[:, y:y + 3, max(left - 5, 0):max(left - 2, 0)] = (230, 60, 230)
    colour = clip[0, (top + bottom) // 2, (left + right) // 2]
    clip[:, bottom + 1:bottom + 3, left:right] = colour  # a thin line under it, touching it
    spur = rng.integers(top, bottom)
    clip[:, spur:spur + 2, right:min(right + 9, clip.shape[2])] = colour  # a spur out of the right edge
    return clip


def test_frame_judge_reads_the_body_through_fringes_spurs_and_a_dark_core():
    """The bundle's objects carry fringes that made a square read as a circle and a triangle as fragments
    (docs/recipe-study.md); on the object's own colour, its largest piece, opened, the shape reads right."""
    rng = np.random.default_rng(0)
    prompts = [p for p in evaluation_prompts("seen", 72) if p["motion"] in ("left", "right", "up", "down")
               and p["background"] != "black"][:12]
    clips = render_for(prompts)
    fringed = np.stack([with_fringes(clip[:1].repeat(16, axis=0), rng) for clip in clips])  # still: the fringes stay put
    assert score([judge_frames(c) for c in fringed], prompts)["shape"] == 1.0
    star_prompt = next(p for p in prompts if p["shape"] == "star")
    star = render_for([star_prompt])[0][:1].repeat(16, axis=0)  # a still, so the core stays inside the star
    ys, xs = np.nonzero(drawn(star[0]))
    cy, cx = int(ys.mean()), int(xs.mean())
    star[:, cy - 3:cy + 4, cx - 3:cx + 4] = 20  # a dark core, as the DiT draws some stars on white
    body, _ = object_body(star[0], star[0, 0, 0].astype(float), np.array(COLORS[star_prompt["color"]], float))
    assert body[cy, cx]  # the hole is filled
    assert judge_frames(star)["shape"] == "star"


def test_points_tell_the_rendered_shapes_apart_and_a_lumpy_blob_is_no_star():
    """count_points: 0, 4, 3 and 5 on the rendered shapes; a blob with three bumps, whose fill and
    solidity are a trimmed star's, is judged a "blob", not a star."""
    for shape, points in (("circle", 0), ("square", 4), ("triangle", 3), ("star", 5)):
        assert count_points(template_body(shape)) == points, shape
    yy, xx = np.mgrid[:128, :128]
    angle, radius = np.arctan2(yy - 64, xx - 64), np.hypot(yy - 64, xx - 64)
    blob = radius < 22 * (1 + 0.45 * np.cos(3 * angle)) ** 1.5  # three lobes: low fill and solidity, 3 points
    clip = np.zeros((16, 128, 128, 3), np.uint8)
    clip[:, blob] = COLORS["red"]
    assert judge_frames(clip)["shape"] == "blob"


def test_cli_evaluates_a_pipeline_and_writes_json(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "model")
    tiny_clip().save_pretrained(tmp_path / "clip")
    out = tmp_path / "eval.json"
    results = main(["--model", str(tmp_path / "model"), "--clip", str(tmp_path / "clip"), "--num-prompts", "3",
                    "--steps", "2", "--dtype", "float32", "--json", str(out)])
    assert json.loads(out.read_text()) == results
    assert results["steps"] == 2 and results["dtype"] == "float32"
    for split in ("seen", "held-out"):
        for judge in ("frame_judge", "clip_judge"):
            row = results[split][judge]
            assert set(row) == {*ATTRIBUTES, "all"} and all(0 <= v <= 1 for v in row.values())
    printed = capsys.readouterr().out
    assert "held-out" in printed and "background" in printed


def test_round_trip_through_the_autoencoder_is_judged(tmp_path):
    """--rendered --round-trip: rendered clips through the model's autoencoder, the ceiling for its DiT.
    The stand-in autoencoder is untrained, so its round trip must score below the rendered clips."""
    tiny_pipeline().save_pretrained(tmp_path / "model")
    tiny_clip().save_pretrained(tmp_path / "clip")
    common = ["--clip", str(tmp_path / "clip"), "--num-prompts", "4", "--rendered"]
    rendered = main(common)
    round_trip = main(common + ["--round-trip", "--model", str(tmp_path / "model")])
    assert "round trip" in round_trip["model"]
    assert rendered["seen"]["frame_judge"]["all"] == 1.0
    assert round_trip["seen"]["frame_judge"]["all"] < 1.0


def test_frame_judge_calls_several_pieces_fragments_not_a_shape():
    """A cloud of blobs (an undertrained sample) has a low box fill, which would read as a star."""
    rng = np.random.default_rng(0)
    one = render_clips([random_clip_spec(rng, "red", "circle", "growing", "black")]).numpy()[0]
    assert judge_frames(one)["shape"] == "circle"
    pieces = np.full_like(one, BACKGROUNDS["black"])
    for y, x in ((20, 20), (20, 90), (90, 50)):  # three separate red squares
        pieces[:, y:y + 12, x:x + 12] = COLORS["red"]
    verdict = judge_frames(pieces)
    assert verdict["shape"] == "fragments" and verdict["color"] == "red"


def test_still_prompts_have_no_motion():
    prompts = evaluation_prompts("seen", 12, still=True)
    assert all(p["motion"] == "none" for p in prompts)
    assert not any(word in p["text"] for p in prompts for word in ("moving", "slides", "grow", "shrink"))
    assert len({(p["color"], p["shape"]) for p in prompts}) == 4  # backgrounds cycle first


def test_shape_errors_counts_every_clip_once_and_keeps_the_wrong_ones():
    report, wrong = shape_errors(tiny_pipeline(), num_prompts=6, batch_size=4)
    for split in ("seen", "held-out"):
        table = report[split]
        assert sum(table["confusion"].values()) == 6
        right = sum(n for pair, n in table["confusion"].items() if pair.split(" -> ")[0] == pair.split(" -> ")[1])
        for key in ("by_motion", "by_shape"):
            counts = [tuple(map(int, v.split("/"))) for v in table[key].values()]
            assert sum(n for _, n in counts) == 6 and sum(r for r, _ in counts) == right
    assert len(wrong) == 12 - sum(int(v.split("/")[0]) for s in report.values() for v in s["by_shape"].values())
    assert all(text.startswith(("seen: ", "held-out: ")) for text, _, _ in wrong)


def test_shape_errors_draws_every_wrong_clip(tmp_path, capsys):
    """--wrong: first, middle and last frame of each wrongly judged clip, eight columns to a row."""
    from PIL import Image

    tiny_pipeline().save_pretrained(tmp_path / "model")
    shape_errors_main(["--model", str(tmp_path / "model"), "--num-prompts", "5", "--wrong", str(tmp_path / "w.png")])
    wrong = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("seen: ", "held-out: "))]
    assert wrong, "an untrained stand-in draws no shape right"
    width, height = Image.open(tmp_path / "w.png").size
    rows = -(-len(wrong) // 8)
    assert height % (3 * rows) == 0 and width * 3 * rows == 8 * height  # square frames: 8 columns, 3 frames each
