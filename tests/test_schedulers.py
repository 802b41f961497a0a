"""The solvers (tiny_dit.schedulers): the swap, its passes, save/load, the CLI options, the benchmark.

On the tiny random pipeline of test_pipeline.py, and on an exact velocity field (a Gaussian
"data set", whose flow is known in closed form) to show that the higher-order solvers land
closer to the true endpoint than Euler at the same number of transformer passes.
"""

import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler,
                       UniPCMultistepScheduler)

from test_pipeline import FRAMES, PROMPT, SIZE, gen, tiny_clip, tiny_pipeline
from tiny_dit.autoencoder import encode_clips
from tiny_dit.pipeline import TinyDiTCondition, TinyDiTPipeline
from tiny_dit.schedulers import (SCHEDULERS, choose_scheduler, config_shift, make_scheduler, noise_levels,
                                 scheduler_name, steps_for_passes, transformer_passes)

torch.set_num_threads(1)
NAMES = list(SCHEDULERS)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def noise(seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(seed))


# --- the registry ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_make_scheduler_sets_up_each_solver_for_flow_matching(name):
    base = FlowMatchEulerDiscreteScheduler(shift=2.5).config
    scheduler = make_scheduler(name, base)
    assert type(scheduler) is SCHEDULERS[name].cls and scheduler_name(scheduler) == name
    assert config_shift(scheduler.config) == 2.5  # the base config's shift is kept ...
    assert config_shift(make_scheduler(name, base, shift=3.0).config) == 3.0  # ... unless one is given
    assert config_shift(make_scheduler(name).config) == 1.0
    if name in ("dpm++", "unipc"):
        assert scheduler.config.use_flow_sigmas and scheduler.config.prediction_type == "flow_prediction"
        assert scheduler.config.flow_shift == 2.5 and "shift" not in scheduler.config
    else:
        assert "flow_shift" not in scheduler.config and "use_flow_sigmas" not in scheduler.config
    # Back and forth between classes: the shift goes along, no setting of another class stays behind.
    back = make_scheduler("euler", scheduler.config)
    assert type(back) is FlowMatchEulerDiscreteScheduler and back.config.shift == 2.5
    assert "flow_shift" not in back.config and "prediction_type" not in back.config


def test_bad_names_shifts_and_schedulers_are_refused(pipe):
    with pytest.raises(ValueError, match="unknown scheduler 'ddim'"):
        make_scheduler("ddim")
    for shift in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="shift must be a positive number"):
            make_scheduler("euler", shift=shift)
    # A solver left in noise-prediction mode would silently sample garbage: refused before any work.
    run = pipe.with_scheduler(DPMSolverMultistepScheduler())
    with pytest.raises(ValueError, match="use_flow_sigmas=True, prediction_type='flow_prediction'"):
        run(PROMPT, num_inference_steps=2)
    assert choose_scheduler(pipe.scheduler) is pipe.scheduler  # no option: the model's own
    assert type(choose_scheduler(pipe.scheduler, "heun")) is FlowMatchHeunDiscreteScheduler
    shifted = choose_scheduler(pipe.scheduler, shift=3.0)  # --shift alone: same solver, new shift
    assert type(shifted) is FlowMatchEulerDiscreteScheduler and shifted.config.shift == 3.0


@pytest.mark.parametrize("name, passes", [("euler", 5), ("heun", 9), ("dpm++", 5), ("unipc", 5)])
def test_passes_and_noise_levels(name, passes):
    scheduler = make_scheduler(name)
    before = scheduler.timesteps.clone()
    assert transformer_passes(scheduler, 5) == passes  # Heun: 2 a step, the last step 1
    levels = noise_levels(scheduler, 5)
    assert len(levels) == passes + 1 and levels[-1] == 0 and levels[0] > 0.99
    assert np.all(np.diff(levels) <= 0)  # from noise to clean (Heun visits inner levels twice)
    assert torch.equal(scheduler.timesteps, before)  # a copy was set, not the scheduler itself
    assert steps_for_passes(name, passes) == 5 and steps_for_passes(scheduler, passes + 1) == 5 + (name != "heun")
    assert steps_for_passes(name, 1) == 1
    shifted = noise_levels(make_scheduler(name, shift=3.0), 5)
    assert np.all(shifted[1:-1] >= levels[1:-1]) and shifted[2] > levels[2] + 0.05  # more time at high noise


# --- sampling ----------------------------------------------------------------------


def test_euler_by_name_samples_exactly_like_the_default_scheduler(pipe):
    kwargs = dict(num_inference_steps=3, guidance_scale=3.0, latents=noise(1), output_type="latent")
    expected = pipe(PROMPT, **kwargs).frames
    actual = pipe.with_scheduler("euler")(PROMPT, **kwargs).frames
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("name", NAMES)
def test_every_solver_makes_one_pass_per_timestep_at_its_noise_levels(pipe, name):
    run = pipe.with_scheduler(name)
    steps = 4
    passes = transformer_passes(run.scheduler, steps)
    seen_t, seen_steps = [], []
    hook = run.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen_t.append(kwargs["timestep"].clone()), with_kwargs=True)

    def callback(p, i, t, kw):
        sigma = p.scheduler.sigmas[i]
        assert torch.allclose(kw["pred_x0"], kw["pred_x0"])  # present, finite below
        seen_steps.append((i, float(sigma)))
        return {}

    try:
        out = run([PROMPT, "a blue star"], num_inference_steps=steps, guidance_scale=3.0, latents=noise(2, 2),
                  output_type="latent", callback_on_step_end=callback,
                  callback_on_step_end_tensor_inputs=["latents", "pred_x0"]).frames
    finally:
        hook.remove()
    assert torch.isfinite(out).all() and out.abs().mean() > 0.01
    assert len(seen_t) == passes == run.num_timesteps and [i for i, _ in seen_steps] == list(range(passes))
    levels = noise_levels(run.scheduler, steps)
    for t, sigma in zip(seen_t, levels):  # each pass at 1000 x the noise level the solver assumes
        assert t.shape == (4,) and t.dtype.is_floating_point  # [uncond; cond] of 2 clips in one batch
        torch.testing.assert_close(t, torch.full((4,), 1000 * float(sigma)), atol=1e-3, rtol=0)
    assert scheduler_name(pipe.scheduler) == "euler"  # with_scheduler left the pipeline as it was


def gaussian_flow(mean: float = 1.0, std: float = 0.5):
    """The exact velocity E[noise - x0 | x_s] when every latent value of the data is N(mean, std^2),
    a stand-in transformer; the ODE from noise z at s = 1 ends at mean + std * z."""
    def forward(x, timestep, **kwargs):
        s = (timestep.float() / 1000).view(-1, 1, 1, 1, 1)
        var = (1 - s) ** 2 * std**2 + s**2
        v = -mean + (s - (1 - s) * std**2) / var * (x - (1 - s) * mean)
        return types.SimpleNamespace(sample=v, attentions=None)
    return forward, (lambda z: mean + std * z)


def test_higher_order_solvers_land_closer_at_equal_passes(monkeypatch):
    """Why fewer steps can be enough: a curved flow, where Euler's error shrinks only with its step
    size, while Heun, DPM-Solver++ and UniPC correct the curvature for the same transformer passes."""
    run = tiny_pipeline()
    forward, endpoint = gaussian_flow()
    monkeypatch.setattr(run.transformer, "forward", forward)
    z = noise(3)

    def error(name, steps):
        sampler = run.with_scheduler(name)
        out = sampler(PROMPT, num_inference_steps=steps, guidance_scale=1.0, latents=z, output_type="latent").frames
        return (out - endpoint(z)).abs().max().item(), transformer_passes(sampler.scheduler, steps)

    euler_8, passes = error("euler", 8)
    assert passes == 8 and euler_8 > 0.2
    assert error("euler", 16)[0] < 0.6 * euler_8  # first order: twice the steps, about half the error
    heun, heun_passes = error("heun", 4)
    assert heun_passes == 7 and heun < 0.1 * euler_8  # fewer passes, far closer
    for name in ("dpm++", "unipc"):
        err, p = error(name, 8)
        assert p == 8 and err < 0.3 * euler_8, name


@pytest.mark.parametrize("name", NAMES)
def test_known_frames_are_held_with_every_solver(pipe, name):
    clip = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    run = pipe.with_scheduler(name)
    latents = run(PROMPT, num_frames=FRAMES, num_inference_steps=3, output_type="latent", generator=gen(1),
                  conditions=[TinyDiTCondition(video=clip)]).frames
    torch.testing.assert_close(latents[:, :, :2], encode_clips(pipe.vae, torch.from_numpy(clip)[None]))
    assert torch.isfinite(latents).all()


# --- the swap survives saving ------------------------------------------------------


FLOW = dict(use_flow_sigmas=True, prediction_type="flow_prediction")


@pytest.mark.parametrize("cls, settings", [
    (FlowMatchEulerDiscreteScheduler, dict(shift=2.0)),
    (FlowMatchHeunDiscreteScheduler, dict(shift=2.0)),
    (DPMSolverMultistepScheduler, dict(FLOW, flow_shift=2.0)),
    (UniPCMultistepScheduler, dict(FLOW, flow_shift=2.0)),
])
def test_the_scheduler_swap_survives_save_and_load(cls, settings, tmp_path):
    """diffusers' standard swap, X.from_config(pipe.scheduler.config, ...), saved and loaded back."""
    pipe = tiny_pipeline()
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **settings)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", cls.__name__]
    loaded = TinyDiTPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is type(pipe.scheduler)
    strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert strip(loaded.scheduler.config) == strip(pipe.scheduler.config)
    assert config_shift(loaded.scheduler.config) == 2.0
    kwargs = dict(num_inference_steps=3, guidance_scale=3.0, latents=noise(4), output_type="latent")
    assert torch.equal(loaded(PROMPT, **kwargs).frames, pipe(PROMPT, **kwargs).frames)


def test_with_scheduler_shares_the_models_and_leaves_the_pipeline_alone(pipe):
    before = pipe.scheduler
    run = pipe.with_scheduler("unipc", shift=2.0)
    assert run.transformer is pipe.transformer and run.vae is pipe.vae and run.text_encoder is pipe.text_encoder
    assert pipe.scheduler is before and type(run.scheduler) is UniPCMultistepScheduler
    assert run.scheduler.config.flow_shift == 2.0
    own = make_scheduler("dpm++")
    assert pipe.with_scheduler(own).scheduler is own
    with pytest.raises(ValueError, match="shift goes with a scheduler name"):
        pipe.with_scheduler(own, shift=2.0)


# --- the options of the sample and evaluate CLIs -------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("solvers") / "pipeline"
    tiny_pipeline().save_pretrained(folder)
    return folder


def test_sample_cli_takes_scheduler_and_shift(model_dir, tmp_path, capsys):
    from tiny_dit.sample import main
    from tiny_dit.video import read_mp4

    out = tmp_path / "out"
    main(["--model", str(model_dir), "--prompt", PROMPT, "--num-videos", "1", "--steps", "2", "--guidance", "3",
          "--scheduler", "heun", "--shift", "2", "--dtype", "float32", "--out", str(out), "--threads", "1"])
    assert "heun (shift 2), 2 steps = 3 transformer passes" in capsys.readouterr().out
    expected = tiny_pipeline().with_scheduler("heun", shift=2.0)(
        PROMPT, num_inference_steps=2, guidance_scale=3.0, generator=gen(0)).frames[0] * 255
    frames, _ = read_mp4(out / "sample-00.mp4")
    assert np.abs(frames.astype(np.float32) - expected).mean() < 3
    with pytest.raises(SystemExit):
        main(["--model", str(model_dir), "--prompt", PROMPT, "--scheduler", "ddim"])
    with pytest.raises(SystemExit, match="shift must be a positive number"):
        main(["--model", str(model_dir), "--prompt", PROMPT, "--shift", "0", "--out", str(out)])


def test_evaluate_cli_takes_scheduler_and_shift(model_dir, tmp_path):
    from tiny_dit.training.evaluate import main

    tiny_clip().save_pretrained(tmp_path / "clip")
    results = main(["--model", str(model_dir), "--clip", str(tmp_path / "clip"), "--num-prompts", "1",
                    "--steps", "2", "--dtype", "float32", "--scheduler", "dpm++", "--shift", "3"])
    assert results["scheduler"] == "dpm++" and results["shift"] == 3.0 and results["transformer_passes"] == 2
    default = main(["--model", str(model_dir), "--clip", str(tmp_path / "clip"), "--num-prompts", "1",
                    "--steps", "2", "--dtype", "float32"])
    assert default["scheduler"] == "euler" and default["shift"] == 1.0
    with pytest.raises(SystemExit):
        main(["--model", str(model_dir), "--clip", str(tmp_path / "clip"), "--shift", "-1"])


# --- the benchmark runs -----------------------------------------------------------------


def test_solvers_benchmark_runs_on_a_tiny_pipeline(model_dir, tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "solvers.py"
    spec = importlib.util.spec_from_file_location("solvers_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tiny_clip().save_pretrained(tmp_path / "clip")
    out = tmp_path / "results" / "solvers"
    common = ["--model", str(model_dir), "--clip", str(tmp_path / "clip"), "--num-prompts", "1", "--repeats", "1",
              "--dtype", "float32", "--threads", "1", "--out", str(out), "--reference", "euler shift=1 steps=2"]
    result = bench.main(common + ["--solvers", "euler,heun", "--steps", "1,2"])
    rows = result["settings"]
    assert set(rows) == {f"{s} shift=1 steps={n}" for s in ("euler", "heun") for n in (1, 2)}
    assert [rows[f"heun shift=1 steps={n}"]["passes"] for n in (1, 2)] == [1, 3]
    assert result["choice"]["pick"] in rows and result["choice"]["speedup"] > 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["settings"]) == set(rows) and saved["choice"] == result["choice"]
    assert "| heun | 1 | 2 | 3 |" in out.with_suffix(".md").read_text()
    from PIL import Image
    assert Image.open(out.with_suffix(".png")).size[0] > 500
    # --resume measures only what is missing.
    again = bench.main(common + ["--solvers", "euler,heun,unipc", "--steps", "1,2", "--resume"])
    assert len(again["settings"]) == 6
    assert again["settings"]["euler shift=1 steps=1"] == json.loads(json.dumps(rows["euler shift=1 steps=1"]))
