"""tiny_dit.training.distill on a tiny teacher: what each method learns from, the fast folder's defaults, resuming."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import AdaptiveProjectedGuidance, FlowMatchEulerDiscreteScheduler, FlowMatchLCMScheduler

from test_train import cache_dir, run  # noqa: F401  (the tiny cache fixture and the training command)
from tiny_dit.guiders import make_guider
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.training.distill import (PAIRS_PER_SHARD, load_teacher_pairs, main, make_teacher_pairs,
                                       student_noise_levels, teacher_guidance)
from tiny_dit.training.latent_cache import LatentCache

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher_dir(cache_dir, tmp_path_factory) -> Path:  # noqa: F811
    """A tiny teacher: 4 steps of the tiny preset on the tiny cache (interval guidance at 5, 20 steps)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run(cache_dir, out, "--steps", "4", "--sample-every", "0")
    return out / "pipeline"


def distill(cache_dir, teacher_dir, out: Path, method: str, *extra: str) -> dict:  # noqa: F811
    return main(["--method", method, "--teacher", str(teacher_dir), "--cache", str(cache_dir), "--out", str(out),
                 "--pairs", "8", "--batch-size", "4", "--train-steps", "6", "--warmup", "1", "--decay-steps", "2",
                 "--lr", "1e-3", "--checkpoint-every", "3", "--eval-every", "0", "--precision", "fp32",
                 "--threads", "1", *extra])


def test_the_student_trains_where_its_sampler_goes():
    assert student_noise_levels(3.0).tolist() == pytest.approx([1.0, 0.9, 0.75, 0.5])
    assert student_noise_levels(1.0).tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert student_noise_levels(1.0, (1,)).tolist() == [1.0]


def test_the_teachers_guidance_per_step(teacher_dir):
    teacher = TinyDiTPipeline.from_pretrained(teacher_dir)
    teacher.guider = make_guider("interval", 7.5)  # guided in the first half of the steps
    assert teacher_guidance(teacher, 20).tolist() == [7.5] * 10 + [1.0] * 10
    teacher.guider = make_guider("cfg", 3.0)
    assert teacher_guidance(teacher, 4).tolist() == [3.0] * 4
    teacher.guider = AdaptiveProjectedGuidance(guidance_scale=3.0)
    with pytest.raises(ValueError, match="AdaptiveProjectedGuidance"):
        teacher_guidance(teacher, 4)


def test_teacher_pairs_are_the_teachers_clips_and_survive_a_stop(cache_dir, teacher_dir, tmp_path):  # noqa: F811
    teacher = TinyDiTPipeline.from_pretrained(teacher_dir)
    teacher.set_progress_bar_config(disable=True)
    cache = LatentCache.load(cache_dir)
    make_teacher_pairs(teacher, cache, tmp_path / "pairs", count=3, seed=5, batch_size=2)
    pairs = load_teacher_pairs(tmp_path / "pairs", 3)
    assert pairs["clip"].shape == pairs["noise"].shape == (3, *cache.latents.shape[1:])
    for i in range(3):  # each clip is what the teacher makes from that noise for that caption, at its defaults
        clip = teacher(cache.captions[int(pairs["index"][i])], latents=pairs["noise"][i:i + 1].float(),
                       output_type="latent").frames
        torch.testing.assert_close(pairs["clip"][i:i + 1].float(), clip, atol=2e-2, rtol=2e-2)
    # A shard that is missing (a stopped run) is made again, the same.
    (tmp_path / "pairs" / "pairs-00000.safetensors").unlink()
    make_teacher_pairs(teacher, cache, tmp_path / "pairs", count=3, seed=5, batch_size=2)
    again = load_teacher_pairs(tmp_path / "pairs", 3)
    assert all(torch.equal(pairs[k], again[k]) for k in pairs) and PAIRS_PER_SHARD >= 3


@pytest.mark.parametrize("method, scheduler", [("reflow", FlowMatchEulerDiscreteScheduler),
                                               ("consistency", FlowMatchLCMScheduler)])
def test_the_fast_folder_samples_in_its_few_steps_without_guidance(cache_dir, teacher_dir, tmp_path, method,  # noqa: F811
                                                                   scheduler):
    distill(cache_dir, teacher_dir, tmp_path / "run", method, "--default-steps", "2", "--precision", "bf16")
    folder = tmp_path / "run" / "pipeline"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["default_num_inference_steps"] == 2
    from safetensors.torch import load_file
    weights = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float16}  # half the bytes
    for part in ("vae", "text_encoder"):  # the teacher's files, bit for bit, though the run computed in bfloat16
        for path in (teacher_dir / part).glob("*.safetensors"):
            assert (folder / part / path.name).read_bytes() == path.read_bytes(), path

    pipe = TinyDiTPipeline.from_pretrained(folder)
    assert type(pipe.scheduler) is scheduler and pipe.transformer.dtype == torch.float32
    batches = []
    pipe.transformer.register_forward_hook(lambda module, args, kwargs, out: batches.append(len(args[0])),
                                           with_kwargs=True)
    frames = pipe("a red circle moving left on a black background", generator=torch.Generator().manual_seed(0),
                  output_type="np").frames
    assert batches == [1, 1] and frames.shape[0] == 1  # 2 passes, the prompt alone (no unconditional rows)
    # The student learned: its weights moved from the teacher's.
    teacher = TinyDiTPipeline.from_pretrained(teacher_dir).transformer.state_dict()
    student = pipe.transformer.state_dict()
    assert any(not torch.allclose(student[k], teacher[k], atol=1e-3) for k in teacher)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)


def test_a_stopped_distillation_resumes_exactly(cache_dir, teacher_dir, tmp_path, monkeypatch):  # noqa: F811
    distill(cache_dir, teacher_dir, tmp_path / "whole", "consistency")
    import tiny_dit.training.distill as module
    real_loop = module.train_loop

    def stops_at_step_3(*args, **kwargs):  # a run killed after its checkpoint at step 3
        return real_loop(*args, **{**kwargs, "steps": 3})

    monkeypatch.setattr(module, "train_loop", stops_at_step_3)
    distill(cache_dir, teacher_dir, tmp_path / "stopped", "consistency")
    monkeypatch.setattr(module, "train_loop", real_loop)
    distill(cache_dir, teacher_dir, tmp_path / "stopped", "consistency", "--resume")
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    resumed = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)
    assert whole["step"] == resumed["step"] == 6
    for name, value in whole["ema"].items():
        torch.testing.assert_close(resumed["ema"][name], value, rtol=0, atol=0, msg=name)


def test_the_command_refuses_a_default_it_never_trained(cache_dir, teacher_dir, tmp_path):  # noqa: F811
    with pytest.raises(SystemExit, match="--default-steps 4 is not among --steps-trained"):
        distill(cache_dir, teacher_dir, tmp_path / "run", "reflow", "--steps-trained", "1", "2")


def test_the_fast_benchmark_sets_the_student_beside_its_teacher_and_the_floor(cache_dir, teacher_dir, tmp_path,  # noqa: F811
                                                                             load_benchmark):
    """benchmarks/fast_student.py on the tiny teacher and a student of it: one row per model and step count, the
    passes a clip costs (the teacher's guided steps count twice), each time as a share of the teacher's, and the
    teacher's saved full evaluation reused instead of measured again."""
    distill(cache_dir, teacher_dir, tmp_path / "run", "consistency", "--default-steps", "2", "--steps-trained", "1", "2")
    bench = load_benchmark("fast_student")
    rows = bench.main(["--teacher", str(teacher_dir), "--student", str(tmp_path / "run" / "pipeline"), "--baselines",
                       "--steps", "1", "2", "--baseline-steps", "2", "--num-prompts", "1", "--repeats", "1", "--threads", "1",
                       "--json", str(tmp_path / "rows.json"), "--markdown", str(tmp_path / "table.md")])
    assert [(r["model"].split(" (")[0], r["sampler"], r["steps"], r["passes"]) for r in rows] == [
        ("teacher", "FlowMatchEulerDiscrete", 20, 30),  # interval guidance: the first 10 steps take two passes
        ("student", "FlowMatchLCM", 1, 1), ("student", "FlowMatchLCM", 2, 2),
        ("teacher, guidance off", "FlowMatchEuler", 2, 2), ("teacher, guidance off", "FlowMatchLCM", 2, 2)]
    for row in rows:
        assert set(row["quality"]) == {"seen", "held-out"}
        assert all(0 <= row["quality"][s][k] <= 1 for s in row["quality"] for k in bench.COLUMNS)
        timed = not row["model"].startswith("teacher, guidance off")  # a baseline costs what the student costs
        assert (row.get("bf16_s", 0) > 0 and row.get("fp32_s", 0) > 0) == timed, row
    assert rows[0]["bf16_s_share"] == rows[0]["fp32_s_share"] == 1.0
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    assert (tmp_path / "table.md").read_text().count("\n| ") == len(rows) + 1  # the separator and a line a row

    # A full evaluation saved beside the teacher at its own steps is read, not measured again.
    saved = {"prompt_set": "full", "steps": 20, **{s: {"frame_judge": dict.fromkeys(bench.COLUMNS, 0.5),
                                                        "stray_pixels": 1e-4, "object_in_every_frame": 1.0}
                                                    for s in ("seen", "held-out")}}
    (teacher_dir / "evaluation.json").write_text(json.dumps(saved))
    try:
        teacher = TinyDiTPipeline.from_pretrained(teacher_dir)
        assert bench.teacher_quality(teacher, str(teacher_dir), None, None)["seen"]["shape"] == 0.5
    finally:
        (teacher_dir / "evaluation.json").unlink()
