"""The quality measure: the prompt sets, the frame judge on rendered clips, the summary per value, and the CLI
end to end."""

import collections
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_pipeline import tiny_clip, tiny_pipeline
from tiny_dit.data.shapes import (BACKGROUNDS, COLORS, HELD_OUT_PAIRS, MOTIONS, NUM_PHRASINGS, SHAPES,
                                  all_attribute_combinations, caption, random_clip_spec, render_clips)
from tiny_dit.autoencoder import decode_latents, encode_clips, load_autoencoder
from tiny_dit.training.evaluate import (ATTRIBUTES, EVALUATION_SEEDS, MIN_CLIPS_PER_SPLIT, UNSEEN_PHRASINGS, count_points,
                                       evaluation_prompt_set, evaluation_prompts, judge_frames, main, object_aspect,
                                       object_body, object_in_every_frame, per_value_accuracy, sample_indices, score,
                                       stray_pixel_share, summarize, template_body)
from tiny_dit.video import to_uint8

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


def test_the_full_prompt_set_asks_every_combination_of_each_split_once_per_seed_in_both_phrasing_kinds():
    """The full evaluation's prompts (the CLI's default): every combination of each split, as often in each seed's
    set (seen once, held-out twice: at least MIN_CLIPS_PER_SPLIT clips over the seeds), every motion and background
    equally often, every value of every attribute in as many training as unseen phrasings per seed, and over the
    seeds each combination in both kinds."""
    for split, combos, repeats in (("seen", all_attribute_combinations("train"), 1),
                                   ("held-out", all_attribute_combinations("heldout"), 2)):
        assert len(combos) * repeats * EVALUATION_SEEDS >= MIN_CLIPS_PER_SPLIT
        kinds = collections.defaultdict(set)
        for seed in range(EVALUATION_SEEDS):
            prompts = evaluation_prompts(split, None, seed)
            asked = collections.Counter(tuple(p[a] for a in ATTRIBUTES) for p in prompts)
            assert asked == {combo: repeats for combo in combos}, split
            assert all(p["seed"] == seed for p in prompts) and len({p["text"] for p in prompts}) == len(prompts)
            for attribute in ATTRIBUTES:
                per_value = collections.Counter((p[attribute], p["phrasing"]) for p in prompts)
                assert all(per_value[v, "training"] == per_value[v, "unseen"] for v, _ in per_value), (split, attribute)
            for attribute, values in (("motion", MOTIONS), ("background", BACKGROUNDS)):
                counts = collections.Counter(p[attribute] for p in prompts)
                assert set(counts) == set(values) and len(set(counts.values())) == 1, (split, attribute)
            for p in prompts:
                kinds[tuple(p[a] for a in ATTRIBUTES)].add(p["phrasing"])
        assert all(k == {"training", "unseen"} for k in kinds.values()), split
    assert evaluation_prompt_set("seen", None, [0, 1]) == evaluation_prompt_set("seen", None, [0, 1])  # fixed


def test_unseen_phrasings_are_no_caption_and_training_phrasings_are_the_captions():
    every_caption = {caption(*combo, phrasing=k) for combo in all_attribute_combinations("all")
                     for k in range(NUM_PHRASINGS)}
    prompts = evaluation_prompt_set("seen", None, [0, 1]) + evaluation_prompt_set("held-out", None, [0, 1])
    for p in prompts:
        if p["phrasing"] == "training":
            assert p["text"] == caption(p["color"], p["shape"], p["motion"], p["background"], phrasing=p["template"])
        else:
            assert p["text"] not in every_caption and p["color"] in p["text"] and p["shape"] in p["text"]
    assert {p["template"] for p in prompts if p["phrasing"] == "unseen"} == set(range(len(UNSEEN_PHRASINGS)))
    stills = evaluation_prompt_set("held-out", None, [0, 1], still=True)
    assert {p["motion"] for p in stills} == {"none"} and {p["phrasing"] for p in stills} == {"training", "unseen"}
    assert not any(word in p["text"] for p in stills for word in ("moving", "slides", "grow", "shrink", "going"))


def test_per_value_accuracy_and_the_summary_of_a_hand_made_case():
    """Judge results where only the motion "left" is read wrong: left 0%, every other motion and every value of
    the other attributes 100%; all four right: 0% for left, and for each colour the share of its clips not asked
    to move left. The viewer's measures per value, per phrasing kind and per seed are means over those clips."""
    truth = evaluation_prompts("seen", 24, seed=0) + evaluation_prompts("seen", 12, seed=1)
    truth[0] = {**truth[0], "phrasing": "unseen"}
    judged = [{**t, "motion": "right" if t["motion"] == "left" else t["motion"]} for t in truth]
    motion = per_value_accuracy(judged, truth)["motion"]
    assert list(motion) == list(MOTIONS) and motion["left"] == 0 and all(motion[m] == 1 for m in MOTIONS[1:])
    assert all(v == 1 for a in ("color", "shape", "background") for v in per_value_accuracy(judged, truth)[a].values())
    all_four = per_value_accuracy(judged, truth, all_four=True)
    assert all_four["motion"]["left"] == 0 and all_four["motion"]["up"] == 1
    for color, share in all_four["color"].items():
        asked = [t for t in truth if t["color"] == color]
        assert share == sum(t["motion"] != "left" for t in asked) / len(asked)
    verdicts = [{"frame_judge": j, "clip_judge": t, "stray_pixels": 0.01 * (t["background"] == "white"),
                 "object_in_every_frame": t["motion"] != "up"} for j, t in zip(judged, truth)]
    summary = summarize(verdicts, truth)
    assert summary["num_clips"] == 36 and summary["clip_judge"]["all"] == 1
    assert summary["frame_judge"]["motion"] == summary["frame_judge"]["all"] == pytest.approx(30 / 36)  # 6 move left
    assert summary["per_value"]["frame_judge"]["motion"] == motion
    assert summary["per_value"]["stray_pixels"]["background"] == pytest.approx({"black": 0, "white": 0.01, "gray": 0})
    assert summary["per_value"]["object_in_every_frame"]["motion"]["up"] == 0
    assert summary["per_value"]["object_in_every_frame"]["motion"]["down"] == 1
    assert {k: g["num_clips"] for k, g in summary["per_phrasing"].items()} == {"training": 35, "unseen": 1}
    assert {k: g["num_clips"] for k, g in summary["per_seed"].items()} == {"0": 24, "1": 12}
    assert summary["per_phrasing"]["unseen"]["frame_judge"]["all"] == 0  # truth[0] moves left


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


def test_stray_pixels_are_about_zero_on_rendered_and_round_tripped_clips_and_see_dots_and_stripes():
    """The viewer's measure: rendered clips, and rendered clips through the bundled autoencoder, have almost no
    stray pixels (measured 0.01% and 0.00% in the issue that asked for it); dots or a stripe added beside the
    object are counted, and a line touching the object is not (it is part of its body)."""
    prompts = evaluation_prompts("seen", 24)[::3] + evaluation_prompts("held-out", 24)[::6]
    clips = render_for(prompts)
    assert max(stray_pixel_share(c) for c in clips) < 0.0005
    vae = load_autoencoder("assets/tiny-dit-shapes", subfolder="vae")
    with torch.no_grad():
        round_trip = to_uint8(decode_latents(vae, encode_clips(vae, torch.from_numpy(clips))))
    assert np.mean([stray_pixel_share(c) for c in round_trip]) < 0.0005
    dotted, striped = clips.copy(), clips.copy()
    for clip in dotted:
        ys, xs = np.nonzero(drawn(clip[0]))
        for y in range(8, 120, 12):  # a column of 2x2 magenta dots, away from the object
            x = 8 if xs.mean() > 64 else 116
            clip[:, y:y + 2, x:x + 2] = (230, 60, 230)
    striped[:, :, 4:6, 10:118] = (40, 200, 240)  # a cyan stripe near the top edge
    for changed, pixels in ((dotted, 10 * 4), (striped, 2 * 108)):
        shares = np.array([stray_pixel_share(c) for c in changed])
        clean = np.array([stray_pixel_share(c) for c in clips])
        expected = pixels / (128 * 128)  # the added pixels' share of a frame (where the background is far from them)
        assert np.mean(shares - clean) > expected / 2, (shares, clean)
    touching = clips[:1].copy()
    ys, xs = np.nonzero(drawn(touching[0, 0]))
    touching[:, ys.max() + 1:ys.max() + 3, xs.min():xs.max()] = touching[0, 0, ys.mean().astype(int), xs.mean().astype(int)]
    assert stray_pixel_share(touching[0]) < 0.0005


def test_object_in_every_frame_sees_a_vanishing_object():
    clip = render_for(evaluation_prompts("seen", 1))[0]
    assert object_in_every_frame(clip)
    clip[7] = clip[7, 0, 0]  # frame 7 is all background: the object vanished for a frame
    assert not object_in_every_frame(clip)


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
        assert 0 <= results[split]["stray_pixels"] <= 1 and 0 <= results[split]["object_in_every_frame"] <= 1
    printed = capsys.readouterr().out
    assert "held-out" in printed and "background" in printed


def test_cli_full_evaluation_is_the_default_and_a_small_set_reports_per_value_seed_and_sample(
        tmp_path, capsys, monkeypatch):
    """Without --num-prompts the CLI runs the full evaluation (checked with the sampling replaced: it takes
    minutes); --num-prompts 2 --num-seeds 2 samples each prompt with seeds 0 and 1 and reports them apart, per
    value and per phrasing kind; --sample draws the evaluated clips (here all 8) with the judge's verdicts."""
    import tiny_dit.training.evaluate as evaluate
    from PIL import Image

    class Asked(Exception):
        pass

    def asked(model, clip, num_prompts, *args, num_seeds=None, each_clip=None, **kwargs):
        raise Asked(num_prompts, num_seeds, each_clip)

    tiny_clip().save_pretrained(tmp_path / "clip")
    monkeypatch.setattr(evaluate, "evaluate_model", asked)
    with pytest.raises(Asked) as default:
        main(["--clip", str(tmp_path / "clip")])
    assert default.value.args == (None, None, None)
    monkeypatch.undo()
    sizes = {"seen": len(evaluation_prompt_set("seen", None, [0, 1])),
             "held-out": len(evaluation_prompt_set("held-out", None, [0, 1]))}
    assert sizes == {"seen": 720, "held-out": 288}
    assert len(sample_indices(sizes)) == 24 and sample_indices(sizes) == sample_indices(sizes)  # the same for every model

    tiny_pipeline().save_pretrained(tmp_path / "model")
    results = main(["--model", str(tmp_path / "model"), "--clip", str(tmp_path / "clip"), "--num-prompts", "2",
                    "--num-seeds", "2", "--steps", "2", "--dtype", "float32", "--sample", str(tmp_path / "look")])
    assert results["seeds"] == [0, 1] and results["prompt_set"] == "small" and results["num_clips"] == 8
    for split in ("seen", "held-out"):
        assert set(results[split]["per_seed"]) == {"0", "1"} and set(results[split]["per_phrasing"]) == {"training"}
        per_value = results[split]["per_value"]
        assert set(per_value) == {"frame_judge", "clip_judge", "stray_pixels", "object_in_every_frame"}
        assert set(per_value["frame_judge"]["motion"]) == {"left", "right"}  # the motions of the first two prompts
    printed = capsys.readouterr().out
    assert "per value" in printed and "left" in printed and "seed 1" in printed
    rows = [line for line in (tmp_path / "look.md").read_text().splitlines()
            if line.startswith("| ") and (" | seen | " in line or " | held-out | " in line)]
    assert len(rows) == 8 and all(line.endswith("|  |") for line in rows)  # an empty column for a person's verdict
    width, height = Image.open(tmp_path / "look.png").size
    assert width > height > 0 and (tmp_path / "look.mp4").stat().st_size > 0


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
