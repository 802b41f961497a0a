"""tiny_dit.training.train on a tiny latent cache: the loss goes down, resuming is exact, the pipeline loads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

import tiny_dit.training.train
from test_pipeline import tiny_clip, tiny_vae
from tiny_dit.autoencoder import load_autoencoder
from tiny_dit.data.shapes import render_clips, sample_clip_specs
from tiny_dit.flow import flow_matching_loss
from tiny_dit.training.latent_cache import LatentCache, build_latent_cache
from tiny_dit.model import TinyDiT
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.text_encoder import CLIPEncoder
from tiny_dit.training.train import PRESETS, build_parser, main

torch.set_num_threads(1)

NUM_CLIPS = 8


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """8 shapes clips of 4 frames at 32 x 32, encoded by a tiny random CLIP and autoencoder."""
    root = tmp_path_factory.mktemp("train")
    clip, vae = tiny_clip(), tiny_vae()
    clip.save_pretrained(root / "clip")
    vae.save_pretrained(root / "vae")
    specs = sample_clip_specs(NUM_CLIPS, seed=0)
    frames = render_clips(specs, frame_indices=[0, 5, 10, 15], size=32)  # (8, 4, 32, 32, 3)
    source = [(frames, [s.text for s in specs], [{} for _ in specs])]
    build_latent_cache(root / "cache", source, clip, vae, total=NUM_CLIPS,
                       info={"clip": str(root / "clip"), "autoencoder": str(root / "vae")})
    return root / "cache"


def run(cache_dir: Path, out: Path, *extra: str) -> dict:
    return main(["--cache", str(cache_dir), "--out", str(out), "--preset", "tiny", "--threads", "1",
                 "--lr", "3e-3", "--warmup", "2", "--batch-size", "8", "--log-every", "2",
                 "--sample-steps", "2", "--num-samples", "2", *extra])


def dataset_loss(model: TinyDiT, cache: LatentCache, seeds=range(8)) -> float:
    """Flow-matching loss on the whole tiny set, averaged over fixed noise draws."""
    cond = {"encoder_hidden_states": cache.hidden_states.float(), "pooled_projections": cache.pooled.float(),
            "encoder_attention_mask": cache.mask}
    uncond = {"encoder_hidden_states": cache.uncond.hidden_states.float(),
              "pooled_projections": cache.uncond.pooled.float(), "encoder_attention_mask": cache.uncond.mask}
    with torch.no_grad():
        return float(np.mean([flow_matching_loss(model, cache.latents.float(), cond, uncond, label_dropout=0.0,
                                                 generator=torch.Generator().manual_seed(s)).item()
                              for s in seeds]))


def load_model(state: dict, key: str) -> TinyDiT:
    model = TinyDiT.from_config(state["model_config"])
    model.load_state_dict(state[key])
    return model.eval()


def auto_precision(probe: str) -> str:
    """What --mixed-precision auto resolves to under the precision probe's answer (tests/conftest.py)."""
    return "bf16" if probe == "bf16-faster" else "no"


def test_a_few_steps_reduce_the_loss(cache_dir, tmp_path, precision_probe):
    """In the precision auto picks where bfloat16 is the faster and where it is the slower."""
    summary = run(cache_dir, tmp_path / "run", "--steps", "40", "--checkpoint-every", "20", "--sample-every", "20")
    cache = LatentCache.load(cache_dir)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 40
    assert json.loads((tmp_path / "run" / "args.json").read_text())["mixed_precision"] == \
        auto_precision(precision_probe)
    initial = dataset_loss(TinyDiT.from_config(state["model_config"]).eval(), cache)  # predicts 0 at init
    trained = dataset_loss(load_model(state, "model"), cache)
    assert trained < 0.8 * initial, (initial, trained)
    assert dataset_loss(load_model(state, "ema"), cache) < initial

    # The model is shaped by the preset and sized by the cache.
    config = state["model_config"]
    assert config["hidden_size"] == PRESETS["tiny"]["model"]["hidden_size"]
    assert (config["in_channels"], config["num_frames"], config["sample_size"]) == (4, 4, 8)
    assert (config["text_embed_dim"], config["pooled_embed_dim"]) == (32, 32)

    # A log line every 2 steps: step, loss, lr, clips/s.
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, 41, 2))
    assert all(np.isfinite(r["loss"]) and r["clips_per_s"] > 0 for r in records)
    assert records[0]["lr"] == pytest.approx(3e-3) and records[-1]["lr"] == pytest.approx(3e-3)
    assert np.mean([r["loss"] for r in records[-5:]]) < np.mean([r["loss"] for r in records[:5]])
    assert summary["step"] == 40 and np.isfinite(summary["loss"])

    # Sample clips at steps 20 and 40, one per distinct caption, and a grid.
    for step in (20, 40):
        folder = tmp_path / "run" / "samples" / f"step-{step:06d}"
        assert sorted(p.name for p in folder.glob("*.mp4")) == ["grid.mp4", "sample-00.mp4", "sample-01.mp4"]
        assert all(p.stat().st_size > 0 for p in folder.glob("*.mp4"))
        assert len((folder / "prompts.txt").read_text().splitlines()) == 2

    # The final pipeline holds the EMA weights, the cache's CLIP and autoencoder, and samples.
    pipe = TinyDiTPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    for name, value in pipe.transformer.state_dict().items():
        assert torch.equal(value, state["ema"][name]), name
    clip = CLIPEncoder.from_pretrained(cache_dir.parent / "clip")  # the cache's CLIP, as saved
    for a, b in zip(clip.parameters(), pipe.text_encoder.parameters()):
        assert torch.equal(a, b)
    assert pipe.scheduler.config.shift == 1.0
    frames = pipe(cache.captions[0], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 4, 32, 32, 3) and np.isfinite(frames).all()

    # Without --resume an existing run is never overwritten.
    with pytest.raises(FileExistsError, match="--resume"):
        run(cache_dir, tmp_path / "run", "--steps", "40")


def test_kill_and_resume_gives_identical_weights(cache_dir, tmp_path, monkeypatch, precision_probe):
    """In float32 and under bfloat16 autocast (auto, where the probe finds it the faster)."""
    args = ("--steps", "12", "--checkpoint-every", "4", "--sample-every", "6")
    run(cache_dir, tmp_path / "straight", *args)

    # Same run, killed during step 10: the checkpoint of step 8 survives, steps 9-10 are lost.
    calls = {"n": 0}

    def dies_at_step_10(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt("killed")
        return flow_matching_loss(*a, **kw)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):  # undoes its own patch only
        patch.setattr(tiny_dit.training.train, "flow_matching_loss", dies_at_step_10)
        run(cache_dir, tmp_path / "resumed", *args)
    killed = torch.load(tmp_path / "resumed" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert killed["step"] == 8 and not (tmp_path / "resumed" / "pipeline").exists()
    # diffusers lists a config's defaulted keys in set order, which changes from process to process:
    # a checkpoint written by another process must still resume.
    killed["model_config"]["_use_default_values"] = sorted(killed["model_config"]["_use_default_values"])[::-1]
    killed["model_config"]["_name_or_path"] = "written by another process"
    torch.save(killed, tmp_path / "resumed" / "checkpoint.pt")
    run(cache_dir, tmp_path / "resumed", *args, "--resume")

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert a["step"] == b["step"] == 12
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert not torch.equal(a["model"]["final_layer.linear.weight"], killed["model"]["final_layer.linear.weight"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert torch.equal(a["rng"][0]["batch_generator"], b["rng"][0]["batch_generator"])
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"] == 12

    # The log has each step once, with the same losses, as if the run had never stopped.
    log_a, log_b = ((tmp_path / r / "log.jsonl").read_text().splitlines() for r in ("straight", "resumed"))
    steps_b = [json.loads(line)["step"] for line in log_b]
    assert steps_b == list(range(2, 13, 2))
    assert [json.loads(line)["loss"] for line in log_a] == [json.loads(line)["loss"] for line in log_b]
    assert json.loads((tmp_path / "resumed" / "args.json").read_text())["mixed_precision"] == \
        auto_precision(precision_probe)


def test_max_minutes_stops_at_a_checkpoint_and_resume_goes_on(cache_dir, tmp_path, capsys):
    """--max-minutes (a session of fixed length): the run stops at the first logged step after the limit,
    with a checkpoint of that step and the pipeline, and --resume continues to --steps."""
    summary = run(cache_dir, tmp_path / "run", "--steps", "12", "--sample-every", "0", "--max-minutes", "1e-9")
    assert summary["step"] == 2  # the first logged step (--log-every 2)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 2 and (tmp_path / "run" / "pipeline" / "transformer").is_dir()
    assert "stopped at step 2 of 12: --max-minutes 1e-09 is up" in capsys.readouterr().out
    assert run(cache_dir, tmp_path / "run", "--steps", "12", "--sample-every", "0", "--resume")["step"] == 12
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] \
        == list(range(2, 13, 2))
    with pytest.raises(ValueError, match="--max-minutes must be more than 0"):
        run(cache_dir, tmp_path / "other", "--max-minutes", "0")


def test_init_from_a_trained_pipeline(cache_dir, tmp_path):
    run(cache_dir, tmp_path / "first", "--steps", "4", "--sample-every", "0")
    trained = TinyDiT.from_pretrained(tmp_path / "first" / "pipeline" / "transformer")
    # A new run starting from those weights, with a learning rate of 0: it must still hold them.
    run(cache_dir, tmp_path / "second", "--steps", "2", "--sample-every", "0", "--lr", "0",
        "--init-from", str(tmp_path / "first" / "pipeline"))
    state = torch.load(tmp_path / "second" / "checkpoint.pt", map_location="cpu", weights_only=False)
    for name, value in trained.state_dict().items():
        assert torch.equal(state["model"][name], value), name
    assert not torch.equal(state["model"]["final_layer.linear.weight"],
                           torch.zeros_like(state["model"]["final_layer.linear.weight"]))


def test_the_pipeline_carries_its_training_record(cache_dir, tmp_path):
    """The run's args, log and sample grids go into the pipeline folder (the app's "how it learned")."""
    run(cache_dir, tmp_path / "run", "--steps", "4", "--sample-every", "2", "--checkpoint-every", "2")
    pipeline = tmp_path / "run" / "pipeline"
    assert json.loads((pipeline / "training_args.json").read_text())["steps"] == 4
    steps = [json.loads(line)["step"] for line in (pipeline / "training_log.jsonl").read_text().splitlines()]
    assert steps and max(steps) == 4
    grids = sorted(p.parent.name for p in (pipeline / "training_samples").glob("step-*/grid.mp4"))
    assert grids == ["step-000002", "step-000004"]
    assert not list((pipeline / "training_samples").rglob("sample-*.mp4"))  # grids only: small
    assert (pipeline / "training_samples" / "step-000002" / "prompts.txt").is_file()


def test_export_writes_the_checkpoint_ema_as_a_pipeline(cache_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(cache_dir, tmp_path / "run", "--export", str(tmp_path / "exported"))
    run(cache_dir, tmp_path / "run", "--steps", "4", "--checkpoint-every", "2", "--sample-every", "0")
    run(cache_dir, tmp_path / "run", "--export", str(tmp_path / "exported"))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    pipe = TinyDiTPipeline.from_pretrained(tmp_path / "exported")
    for name, value in pipe.transformer.state_dict().items():
        assert torch.equal(value, state["ema"][name]), name
    assert not torch.equal(state["ema"]["final_layer.linear.weight"], state["model"]["final_layer.linear.weight"])


def test_help_and_presets():
    text = build_parser().format_help()
    for option in ("--cache", "--out", "--preset", "--steps", "--batch-size", "--lr", "--warmup", "--ema-decay",
                   "--grad-clip", "--label-dropout", "--checkpoint-every", "--sample-every", "--resume", "--seed",
                   "--threads", "--mixed-precision", "--noise-shift", "--export"):
        assert option in text
    assert {"tiny", "small", "base"} <= set(PRESETS)
    small = PRESETS["small"]["model"]
    tokens = (16 // small["patch_size_t"]) * (32 // small["patch_size"]) ** 2
    assert (small["hidden_size"], small["depth"], small["num_heads"], tokens) == (192, 6, 6, 256)
    assert PRESETS["small"]["batch_size"] == 16 and PRESETS["base"]["batch_size"] == 64
    # the recipe: stills beside the clips, and the depthwise convolution in the MLP
    assert PRESETS["small"]["image_batch_size"] == 32 and small["conv_mlp"]
    args = build_parser().parse_args(["--cache", "c", "--out", "o", "--preset", "small"])
    assert args.noise_shift is None  # filled in from the preset by train()
    assert args.mixed_precision == "auto"  # resolved by train(): measured
    for value in ("no", "fp16", "bf16"):
        assert build_parser().parse_args(["--cache", "c", "--out", "o", "--mixed-precision", value]).mixed_precision \
            == value
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--cache", "c", "--out", "o", "--mixed-precision", "fp32"])


def test_runs_in_one_process_may_each_have_their_own_precision(cache_dir, tmp_path):
    """accelerate keeps one mixed precision per process and refuses another: a notebook that trains twice, or
    this test suite, must still be able to train in float32 after bf16 and back, and after an Accelerator of
    the caller's own in another precision."""
    for name, precision in (("a", "no"), ("b", "bf16"), ("c", "no")):
        run(cache_dir, tmp_path / name, "--steps", "2", "--sample-every", "0", "--mixed-precision", precision)
        assert json.loads((tmp_path / name / "args.json").read_text())["mixed_precision"] == precision
    assert Accelerator(mixed_precision="no").mixed_precision == "no"  # the caller's own, as the last run left it
    run(cache_dir, tmp_path / "d", "--steps", "2", "--sample-every", "0", "--mixed-precision", "bf16")
    assert json.loads((tmp_path / "d" / "args.json").read_text())["mixed_precision"] == "bf16"


def test_the_run_records_the_precision_auto_resolved(cache_dir, tmp_path, monkeypatch, capsys):
    """--mixed-precision auto (the default) becomes bf16 or no by the measurement, and the run's args.json (and
    the pipeline's training_args.json) say which; a resumed run stays with it through a near tie."""
    monkeypatch.setattr("tiny_dit.training.loop.measure_precision", lambda device="cpu", probe=None:
                        {"fp32": 10.0, "bf16": 5.0})
    run(cache_dir, tmp_path / "run", "--steps", "2", "--sample-every", "0")
    assert "precision: bf16 (--mixed-precision auto, 2.0x faster than no" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "args.json").read_text())["mixed_precision"] == "bf16"
    assert json.loads((tmp_path / "run" / "pipeline" / "training_args.json").read_text())["mixed_precision"] == "bf16"
    monkeypatch.setattr("tiny_dit.training.loop.measure_precision", lambda device="cpu", probe=None:
                        {"fp32": 9.0, "bf16": 10.0})
    run(cache_dir, tmp_path / "run", "--steps", "4", "--sample-every", "0", "--resume")
    assert "precision: bf16 (--mixed-precision auto, as the run it resumes" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "args.json").read_text())["mixed_precision"] == "bf16"
    assert torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)["step"] == 4


@pytest.fixture(scope="module")
def wide_cache_dir(cache_dir) -> Path:
    """4 clips of 8 frames at 32 x 48 (a 128 x 192 scene drawn at a quarter), with the same encoders."""
    root = cache_dir.parent
    specs = sample_clip_specs(4, seed=1, num_frames=8, height=128, width=192)
    frames = render_clips(specs, size=32)  # (4, 8, 32, 48, 3)
    info = json.loads((cache_dir / "cache.json").read_text())
    build_latent_cache(root / "wide", [(frames, [s.text for s in specs], [{} for _ in specs])],
                       CLIPEncoder.from_pretrained(root / "clip"), load_autoencoder(root / "vae"),
                       total=4, info={k: info[k] for k in ("clip", "autoencoder")})
    return root / "wide"


def test_caches_of_other_lengths_and_sizes_train_one_model(cache_dir, wide_cache_dir, tmp_path, monkeypatch):
    """Open-Sora's buckets: each step's clips come from one cache (or a run of their tubelets), and a
    bucket of larger clips gets fewer of them, so a step holds about as many tokens as a plain one."""
    batches = []
    loss = tiny_dit.training.train.flow_matching_loss

    def recording_loss(model, x0, *args, **kwargs):
        batches.append(tuple(x0.shape))
        return loss(model, x0, *args, **kwargs)

    monkeypatch.setattr(tiny_dit.training.train, "flow_matching_loss", recording_loss)
    run(cache_dir, tmp_path / "run", "--steps", "30", "--sample-every", "0", "--cache", str(cache_dir),
        str(wide_cache_dir), "--cache-weights", "1", "1", "--random-length", "0.5")
    model = TinyDiT.from_pretrained(tmp_path / "run" / "pipeline" / "transformer")
    pt, p = model.config.patch_size_t, model.config.patch_size
    first = tuple(LatentCache.load(cache_dir).latents.shape[2:])  # (T, h, w)
    assert model.config.num_frames == first[0]  # the first cache sets the default size
    reference = 8 * first[0] // pt * (first[1] // p) * (first[2] // p)  # --batch-size 8 clips of the first cache
    wide = (first[1], first[2] * 3 // 2)
    assert {shape[3:] for shape in batches} == {first[1:], wide}  # both buckets drawn
    assert any(shape[2] < 8 for shape in batches if shape[3:] == wide)  # some cut to fewer tubelets
    for count, _, frames, h, w in batches:  # each batch costs about the reference's tokens
        tokens = count * frames // pt * (h // p) * (w // p)
        assert abs(tokens - reference) <= frames // pt * (h // p) * (w // p), (count, frames, h, w)

    with pytest.raises(ValueError, match="--cache-weights"):
        run(cache_dir, tmp_path / "bad", "--steps", "2", "--cache", str(cache_dir), str(wide_cache_dir),
            "--cache-weights", "1")


def test_the_benchmarks_know_the_presets_training_defaults():
    """benchmarks/flops.py and speed.py do not import the training script: their copies must agree."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("flops", root / "benchmarks" / "flops.py")
    flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flops)
    for name, preset in PRESETS.items():
        assert flops.PRESET_TRAINING[name] == {k: preset[k] for k in ("batch_size", "image_batch_size", "steps")}
    assert '"--train-batch-size", type=int, default=%d' % PRESETS["small"]["batch_size"] in \
        (root / "benchmarks" / "speed.py").read_text()
    for path in [*(root / "tiny_dit").rglob("*.py"), *(root / "benchmarks").glob("*.py"), root / "app.py"]:
        if not path.name.startswith("train"):
            assert "tiny_dit.training.train import" not in path.read_text() and \
                "import tiny_dit.training.train\n" not in path.read_text(), path


def test_still_images_are_one_frame_held_for_a_tubelet():
    latents = torch.randn(3, 4, 8, 5, 5)
    stills, _ = tiny_dit.training.train.still_images(latents, 2, torch.Generator().manual_seed(0))
    assert stills.shape == (3, 4, 2, 5, 5)
    for clip, still in zip(latents, stills):
        assert torch.equal(still[:, 0], still[:, 1])  # it does not move
        assert any(torch.equal(still[:, 0], clip[:, t]) for t in range(8))  # a frame of its own clip


def test_stills_only_training_with_evaluation_and_matched_sampler(cache_dir, tmp_path):
    """--batch-size 0 trains on stills alone (the image proxy); --eval-every logs the frame judge on
    still prompts; the saved pipeline samples with the noise shift it was trained with."""
    run(cache_dir, tmp_path / "run", "--steps", "2", "--batch-size", "0", "--image-batch-size", "4",
        "--sample-every", "0", "--eval-every", "2", "--eval-prompts", "2", "--noise-shift", "2")
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert len(evals) == 1 and evals[0]["eval_still"] and evals[0]["step"] == 2
    assert {"seen/shape", "held-out/shape", "seen/color", "seen/all"} <= set(evals[0]["eval"])
    assert any(key.startswith("held-out/color/") for key in evals[0]["eval"])  # each colour apart
    pipe = TinyDiTPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.scheduler.config.shift == 2
    with pytest.raises(ValueError, match="--batch-size"):
        run(cache_dir, tmp_path / "none", "--steps", "2", "--batch-size", "0", "--image-batch-size", "0")


def test_init_from_adds_a_zero_initialised_conv_mlp(cache_dir, tmp_path):
    run(cache_dir, tmp_path / "first", "--steps", "2", "--sample-every", "0")
    trained = TinyDiT.from_pretrained(tmp_path / "first" / "pipeline" / "transformer")
    run(cache_dir, tmp_path / "second", "--steps", "1", "--sample-every", "0", "--lr", "0", "--conv-mlp",
        "--image-batch-size", "2", "--init-from", str(tmp_path / "first" / "pipeline"))
    state = torch.load(tmp_path / "second" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["model_config"]["conv_mlp"]
    for name, value in state["model"].items():
        expected = trained.state_dict().get(name, torch.zeros_like(value))  # new parts: still zero
        assert torch.equal(value, expected), name
    with pytest.raises(ValueError, match="another shape"):
        run(cache_dir, tmp_path / "third", "--steps", "1", "--model", "depth=3",
            "--init-from", str(tmp_path / "first" / "pipeline"))


def test_init_from_adds_the_word_embeddings_starting_at_zero(cache_dir, tmp_path):
    """--model word_embeddings=true from a model without them: the trained weights as they were, the words'
    type embedding and projection at zero (their tokens start as zeros), and the model then reads them."""
    run(cache_dir, tmp_path / "first", "--steps", "2", "--sample-every", "0")
    trained = TinyDiT.from_pretrained(tmp_path / "first" / "pipeline" / "transformer")
    run(cache_dir, tmp_path / "second", "--steps", "1", "--sample-every", "0", "--lr", "0",
        "--model", "word_embeddings=true", "--init-from", str(tmp_path / "first" / "pipeline"))
    state = torch.load(tmp_path / "second" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["model_config"]["word_embeddings"]
    for name, value in state["model"].items():
        expected = trained.state_dict().get(name, torch.zeros_like(value))  # new parts: zero
        assert torch.equal(value, expected), name
    run(cache_dir, tmp_path / "third", "--steps", "6", "--sample-every", "0", "--checkpoint-every", "6",
        "--model", "word_embeddings=true", "--init-from", str(tmp_path / "first" / "pipeline"))
    state = torch.load(tmp_path / "third" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["model"]["word_proj.weight"].abs().sum() > 0  # it learns to read the words


def test_init_from_folds_the_pooled_path_into_the_timestep_embedder(cache_dir, tmp_path):
    """--model pooled_conditioning=false from a model trained with it: the pooled path is gone, its output
    for the empty prompt sits in the timestep embedder's bias, everything else as trained (lr 0)."""
    run(cache_dir, tmp_path / "first", "--steps", "2", "--sample-every", "0")
    trained = TinyDiT.from_pretrained(tmp_path / "first" / "pipeline" / "transformer")
    run(cache_dir, tmp_path / "second", "--steps", "1", "--sample-every", "0", "--lr", "0", "--model",
        "pooled_conditioning=false", "--init-from", str(tmp_path / "first" / "pipeline"))
    state = torch.load(tmp_path / "second" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert not state["model_config"]["pooled_conditioning"]
    assert not any(name.startswith("pooled_embed.") for name in state["model"])
    empty_pooled = LatentCache.load(cache_dir).uncond.pooled.float().reshape(1, -1)
    with torch.no_grad():
        constant = trained.pooled_embed(empty_pooled)[0]
    bias = "time_embed.mlp.2.bias"
    torch.testing.assert_close(state["model"][bias], trained.state_dict()[bias] + constant)
    assert all(torch.equal(value, trained.state_dict()[name]) for name, value in state["model"].items() if name != bias)
    pipe = TinyDiTPipeline.from_pretrained(tmp_path / "second" / "pipeline")  # it samples
    assert pipe("a red circle", num_inference_steps=2, output_type="latent").frames.shape[0] == 1
    with pytest.raises(ValueError, match="pooled_conditioning"):
        run(cache_dir, tmp_path / "third", "--steps", "1", "--init-from", str(tmp_path / "second" / "pipeline"))


def test_init_from_widens_the_patch_embedding_for_known_frames(cache_dir, tmp_path):
    """--model known_frames_input=true from a model trained without: the trained patch-embedding columns
    first, the known frames' columns zero, everything else as trained (lr 0: the weights stay)."""
    run(cache_dir, tmp_path / "first", "--steps", "2", "--sample-every", "0")
    trained = TinyDiT.from_pretrained(tmp_path / "first" / "pipeline" / "transformer")
    run(cache_dir, tmp_path / "second", "--steps", "1", "--sample-every", "0", "--lr", "0", "--model",
        "known_frames_input=true", "--known-frames", "1", "--init-from", str(tmp_path / "first" / "pipeline"))
    state = torch.load(tmp_path / "second" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["model_config"]["known_frames_input"]
    old = trained.state_dict()["patch_embed.weight"]  # (D, C * tubelet)
    new = state["model"]["patch_embed.weight"]  # (D, (2C + 1) * tubelet)
    assert new.shape[1] == old.shape[1] * 2 + old.shape[1] // 4
    assert torch.equal(new[:, :old.shape[1]], old) and not new[:, old.shape[1]:].any()
    assert all(torch.equal(v, old_v) for (k, v), old_v in zip(state["model"].items(), trained.state_dict().values())
               if k != "patch_embed.weight")
    with pytest.raises(ValueError, match="--known-frames is a probability"):
        run(cache_dir, tmp_path / "third", "--steps", "1", "--known-frames", "2")


@pytest.mark.parametrize("damage", ["truncated", "empty", "random bytes"])
def test_resume_from_a_damaged_checkpoint(cache_dir, tmp_path, damage):
    """A damaged checkpoint.pt: --resume falls back to the previous one kept beside it, and with no good
    one left the error names the file and what to do (no raw unpickling traceback)."""
    run(cache_dir, tmp_path / "run", "--steps", "4", "--checkpoint-every", "2", "--sample-every", "0")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert (tmp_path / "run" / "checkpoint.prev.pt").is_file()  # step 2, kept when step 4 was written
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": data[:len(data) // 2], "empty": b"",
                      "random bytes": np.random.default_rng(0).bytes(5000)}[damage])
    summary = run(cache_dir, tmp_path / "run", "--steps", "6", "--checkpoint-every", "2", "--sample-every", "0",
                  "--resume")
    assert summary["step"] == 6  # resumed from step 2 and went on
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / "run" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="cannot resume.*checkpoint.pt.*delete"):
        run(cache_dir, tmp_path / "run", "--steps", "8", "--sample-every", "0", "--resume")


def test_cache_loss_benchmark_compares_models_on_caches(cache_dir, tmp_path):
    """benchmarks/cache_loss.py: one loss per (cache, model), the same clips and noise for each model."""
    import importlib.util

    run(cache_dir, tmp_path / "run", "--steps", "4", "--sample-every", "0")
    spec = importlib.util.spec_from_file_location("cache_loss", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "cache_loss.py")
    cache_loss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache_loss)
    pipeline = str(tmp_path / "run" / "pipeline")
    first = cache_loss.main(["--model", pipeline, "--cache", str(cache_dir), "--num-clips", "4", "--draws", "2"])
    again = cache_loss.main(["--model", pipeline, "--cache", str(cache_dir), "--num-clips", "4", "--draws", "2"])
    assert first == again and np.isfinite(first[str(cache_dir)][pipeline])


def test_word_embeddings_train_from_the_cache_and_reach_the_pipeline(cache_dir, tmp_path):
    """--model word_embeddings=true: the cache's word embeddings go after the states (stills too), the loss
    falls, and the exported pipeline reads the same 2L context."""
    cache = LatentCache.load(cache_dir)
    assert cache.word_embeddings is not None and cache.word_embeddings.shape == cache.hidden_states.shape
    assert cache.uncond.word_embeddings is not None
    summary = run(cache_dir, tmp_path / "run", "--steps", "30", "--checkpoint-every", "30", "--sample-every", "0",
                  "--image-batch-size", "4", "--model", "word_embeddings=true")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["model_config"]["word_embeddings"]
    model = load_model(state, "model")
    assert model.text_type_embed.weight.abs().sum() > 0
    run(cache_dir, tmp_path / "run", "--export", str(tmp_path / "exported"))
    pipe = TinyDiTPipeline.from_pretrained(tmp_path / "exported")
    assert pipe.transformer.config.word_embeddings
    assert pipe.encode_prompt("a red star", do_classifier_free_guidance=False)[0].shape[1] == 2 * cache.hidden_states.shape[1]
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert summary["loss"] < first, (first, summary["loss"])


def test_object_weight_trains_from_the_caches_masks(cache_dir, tmp_path):
    """--object-weight reads the object masks a shapes-world cache keeps (clips and stills), and a cache
    without them is refused with the fix."""
    from tiny_dit.training.latent_cache import shapes_source

    clip, vae = tiny_clip(), tiny_vae()
    clip.save_pretrained(tmp_path / "clip")
    vae.save_pretrained(tmp_path / "vae")
    source = shapes_source(NUM_CLIPS, seed=0, batch_size=NUM_CLIPS, num_frames=4, mask_factor=4)
    build_latent_cache(tmp_path / "cache", source, clip, vae, total=NUM_CLIPS,
                       info={"clip": str(tmp_path / "clip"), "autoencoder": str(tmp_path / "vae")})
    summary = run(tmp_path / "cache", tmp_path / "run", "--steps", "20", "--checkpoint-every", "20",
                  "--sample-every", "0", "--image-batch-size", "4", "--object-weight", "4")
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert summary["loss"] < first
    with pytest.raises(ValueError, match="object masks"):  # cache_dir was built from a source without them
        run(cache_dir, tmp_path / "run2", "--steps", "2", "--object-weight", "4")


def test_the_gpu_long_run_script_asks_the_training_script_for_what_it_has():
    """benchmarks/long_run_gpu.py runs on a lent GPU with no second try: every variant's command line must
    parse, with the options it means."""
    import argparse
    import importlib.util

    from tiny_dit.training.train import build_parser, model_overrides

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "long_run_gpu.py"
    spec = importlib.util.spec_from_file_location("long_run_gpu", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    options = argparse.Namespace(steps=100, batch_size=64, image_batch_size=128, warmup=500, checkpoint_every=1000,
                                 eval_every=1500, eval_prompts=72, seed=0)
    for name in script.VARIANTS:
        command = script.train_command(options, name, [Path("cache-00"), Path("cache-01")], Path("/nonexistent/run"),
                                       6.5, evaluate=False)
        assert command[1:3] == ["-m", "tiny_dit.training.train"]
        args = build_parser().parse_args(command[3:])
        assert (args.max_minutes, args.batch_size, args.image_batch_size, args.eval_every) == (6.5, 64, 128, 0)
        assert len(args.cache) == 2 and not args.resume
        assert args.object_weight == (float(name.split("-")[2]) if name.startswith("object-weight") else 0.0)
        assert model_overrides(args).get("word_embeddings", False) == ("word" in name)


def test_warmup_stable_decay_can_begin_its_decay_on_resume(cache_dir, tmp_path):
    """--lr-schedule warmup_stable_decay: warm-up, a constant rate, a linear fall to 0 over --decay-steps. A
    constant-rate run resumed with --steps N + D --decay-steps D falls from its own rate at step N, without a jump."""
    from tiny_dit.training.loop import warmup_stable_decay

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_stable_decay(optimizer, warmup=4, steps=20, decay_steps=8)
    rates = []
    for _ in range(20):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0] and rates[4:13] == [1.0] * 9
    assert rates[12:] == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])

    run(cache_dir, tmp_path / "run", "--steps", "8", "--sample-every", "0", "--warmup", "2")
    run(cache_dir, tmp_path / "run", "--steps", "12", "--sample-every", "0", "--warmup", "2", "--resume",
        "--lr-schedule", "warmup_stable_decay", "--decay-steps", "4")
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())}
    assert lrs[8] == pytest.approx(3e-3) and lrs[10] == pytest.approx(1.5e-3) and lrs[12] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="--decay-steps goes with"):
        run(cache_dir, tmp_path / "other", "--decay-steps", "4")
    with pytest.raises(ValueError, match="--decay-steps must be 1 to --steps"):
        run(cache_dir, tmp_path / "other", "--lr-schedule", "warmup_stable_decay", "--steps", "4", "--decay-steps", "9")
