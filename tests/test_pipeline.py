"""TinyDiTPipeline: saving and loading through diffusers, seeds, outputs, input checks, CFG, callbacks.

Everything runs on tiny random components built here: a 1-layer CLIP, a 3-stage
AutoencoderTiny (32 x 32 frames -> 4 x 8 x 8 latents) and a 2-block TinyDiT.
test_train.py and test_sample.py import the builders below.
"""

import copy
import importlib
import json
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderTiny, FlowMatchEulerDiscreteScheduler

import tiny_dit
from tiny_dit.autoencoder import encode_clips
from tiny_dit.flow import DEFAULT_GUIDANCE_SCALE, euler_sample, guided_velocity
from tiny_dit.guiders import DEFAULT_GUIDER, GUIDERS, guider_name, make_guider
from tiny_dit.model import TinyDiT
from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS, TinyDiTPipeline
from tiny_dit.text_encoder import CLIPEncoder

torch.set_num_threads(1)

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_VAE_CFG = dict(encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                    num_encoder_blocks=(0, 1, 1), num_decoder_blocks=(1, 1, 0), latent_channels=4)
FRAMES, SIZE = 4, 32  # pixels; latents are 4 x 4 x 8 x 8
PROMPT = "a red circle moving left on a black background"


def tiny_clip(seed: int = 0) -> CLIPEncoder:
    torch.manual_seed(seed)
    return CLIPEncoder(TINY_CLIP_CFG).eval()


def tiny_vae(seed: int = 0) -> AutoencoderTiny:
    torch.manual_seed(seed)
    return AutoencoderTiny(**TINY_VAE_CFG).eval()


def tiny_transformer(seed: int = 0, perturb: float = 0.1, **overrides) -> TinyDiT:
    """A 2-block TinyDiT whose weights are moved off the (zero-output) initialisation."""
    torch.manual_seed(seed)
    model = TinyDiT(**{**dict(in_channels=4, num_frames=FRAMES, sample_size=SIZE // 4, patch_size=2, patch_size_t=2,
                              hidden_size=32, depth=2, num_heads=2, text_embed_dim=32, pooled_embed_dim=32,
                              cross_attention=True), **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * perturb)
    return model


def tiny_pipeline(seed: int = 0) -> TinyDiTPipeline:
    """A small untrained pipeline with plain CFG (not the project's default guider), so that its loop can be
    checked against flow.euler_sample, the teaching sampler."""
    clip = tiny_clip(seed)
    pipe = TinyDiTPipeline(vae=tiny_vae(seed), text_encoder=clip, tokenizer=clip.tokenizer,
                           transformer=tiny_transformer(seed), scheduler=FlowMatchEulerDiscreteScheduler(),
                           guider=make_guider("cfg"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- saving and loading ------------------------------------------------------


def test_a_folder_keeps_its_default_number_of_steps(pipe, tmp_path):
    """A distilled folder samples in its few steps when a call names none; a folder saved before the setting
    existed samples in 20."""
    fast = TinyDiTPipeline(**pipe.components, default_num_inference_steps=3)
    fast.save_pretrained(tmp_path / "fast")
    loaded = TinyDiTPipeline.from_pretrained(tmp_path / "fast")
    loaded.set_progress_bar_config(disable=True)
    steps = []
    loaded(PROMPT, num_frames=2, height=16, width=16, generator=gen(0),
           callback_on_step_end=lambda p, i, t, kw: steps.append(i) or {})
    assert loaded.default_num_inference_steps == 3 and steps == [0, 1, 2]
    index = json.loads((tmp_path / "fast" / "model_index.json").read_text())
    del index["default_num_inference_steps"]
    (tmp_path / "fast" / "model_index.json").write_text(json.dumps(index))
    assert TinyDiTPipeline.from_pretrained(tmp_path / "fast").default_num_inference_steps == DEFAULT_NUM_INFERENCE_STEPS


def test_save_pretrained_from_pretrained_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == "TinyDiTPipeline"
    assert index["transformer"] == ["tiny_dit.model", "TinyDiT"]
    assert index["text_encoder"] == ["tiny_dit.text_encoder", "CLIPEncoder"]
    assert index["tokenizer"] == ["tiny_dit.text_encoder", "OpenCLIPTokenizer"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert index["vae"] == ["diffusers", "AutoencoderTiny"]
    for name in ("transformer", "text_encoder", "tokenizer"):  # what diffusers does to find the class
        library, class_name = index[name]
        assert getattr(importlib.import_module(library), class_name) is type(getattr(pipe, name))
        assert getattr(tiny_dit, class_name) is type(getattr(pipe, name))  # also exported by the package
    assert tiny_dit.TinyDiTPipeline is TinyDiTPipeline

    loaded = TinyDiTPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.transformer, TinyDiT) and isinstance(loaded.text_encoder, CLIPEncoder)
    assert loaded.transformer.config.hidden_size == 32 and loaded.device.type == "cpu"
    for a, b in zip(pipe.transformer.state_dict().values(), loaded.transformer.state_dict().values()):
        assert torch.equal(a, b)
    kwargs = dict(num_inference_steps=3, guidance_scale=3.0)
    expected = pipe([PROMPT, "a blue star"], generator=gen(0), **kwargs).frames
    actual = loaded([PROMPT, "a blue star"], generator=gen(0), **kwargs).frames
    np.testing.assert_array_equal(actual, expected)
    assert expected.std() > 0.01  # not a blank clip: the comparison means something


def test_push_to_hub_uploads_a_loadable_folder(pipe, tmp_path, monkeypatch):
    """push_to_hub goes through diffusers; only the network calls are replaced."""
    import diffusers.utils.hub_utils as hub_utils
    from huggingface_hub import ModelCard

    uploaded = tmp_path / "uploaded"
    monkeypatch.setattr(hub_utils, "create_repo", lambda repo_id, **kw: type("Repo", (), {"repo_id": repo_id}))
    monkeypatch.setattr(hub_utils, "load_or_create_model_card", lambda *a, **kw: ModelCard("---\n---\n"))
    monkeypatch.setattr(hub_utils, "upload_folder",
                        lambda folder_path, repo_id, **kw: shutil.copytree(folder_path, uploaded) and repo_id)
    pipe.push_to_hub("someone/tiny-dit-test")
    loaded = TinyDiTPipeline.from_pretrained(uploaded)
    for a, b in zip(pipe.transformer.parameters(), loaded.transformer.parameters()):
        assert torch.equal(a, b)


def test_unreachable_hub_id_raises_a_clear_oserror(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="local folder") as info:
        TinyDiTPipeline.from_pretrained("nobody/tiny-dit-does-not-exist", cache_dir=tmp_path / "hub-cache")
    assert "HF_HUB_OFFLINE" in str(info.value) and "nobody/tiny-dit-does-not-exist" in str(info.value)
    with pytest.raises(OSError, match="no pipeline folder"):
        TinyDiTPipeline.from_pretrained(tmp_path / "missing" / "pipeline")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="model_index.json"):
        TinyDiTPipeline.from_pretrained(tmp_path / "empty")


# --- seeds and outputs ---------------------------------------------------------


def test_same_seed_same_clips_different_seed_different_clips(pipe):
    a = pipe(PROMPT, num_inference_steps=2, num_videos_per_prompt=2, generator=gen(1)).frames
    b = pipe(PROMPT, num_inference_steps=2, num_videos_per_prompt=2, generator=gen(1)).frames
    c = pipe(PROMPT, num_inference_steps=2, num_videos_per_prompt=2, generator=gen(2)).frames
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3
    assert np.abs(a[0] - a[1]).mean() > 1e-3  # two clips of one prompt differ
    # One generator per clip: a clip depends only on its own seed.
    d = pipe(PROMPT, num_inference_steps=2, num_videos_per_prompt=2, generator=[gen(5), gen(6)]).frames
    e = pipe(PROMPT, num_inference_steps=2, generator=gen(6)).frames
    np.testing.assert_allclose(d[1], e[0], atol=1e-6)


def test_output_types_and_shapes(pipe):
    prompts = [PROMPT, "a blue star", "a green square"]

    def run(**kwargs):  # a fresh generator each time, so every call starts from the same noise
        return pipe(prompts, num_inference_steps=2, num_videos_per_prompt=2, generator=gen(0), **kwargs)

    # diffusers' video layouts (LTX, Wan, Latte): "np" channels last, "pt" channels first, "pil" lists of frames.
    frames = run().frames
    assert isinstance(frames, np.ndarray) and frames.dtype == np.float32
    assert frames.shape == (6, FRAMES, SIZE, SIZE, 3)
    assert frames.min() >= 0 and frames.max() <= 1
    pt = run(output_type="pt").frames
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float32 and pt.shape == (6, FRAMES, 3, SIZE, SIZE)
    np.testing.assert_array_equal(pt.permute(0, 1, 3, 4, 2).numpy(), frames)
    pil = run(output_type="pil").frames
    assert isinstance(pil, list) and len(pil) == 6 and all(isinstance(clip, list) and len(clip) == FRAMES
                                                            for clip in pil)
    assert all(isinstance(f, PIL.Image.Image) and f.mode == "RGB" and f.size == (SIZE, SIZE) for c in pil for f in c)
    np.testing.assert_array_equal(np.stack([np.stack([np.asarray(f) for f in clip]) for clip in pil]),
                                  (frames * 255).round().astype(np.uint8))
    latents = run(output_type="latent").frames
    assert isinstance(latents, torch.Tensor) and latents.shape == (6, 4, FRAMES, SIZE // 4, SIZE // 4)
    np.testing.assert_allclose(pipe.decode_latents(latents).numpy(), frames, atol=1e-6)
    (tup,) = run(return_dict=False)
    np.testing.assert_array_equal(tup, frames)
    # Other sizes: 2 frames of 16 x 48 pixels, i.e. latents 2 x 4 x 12.
    other = pipe(PROMPT, num_inference_steps=1, num_frames=2, height=16, width=48, generator=gen(0)).frames
    assert other.shape == (1, 2, 16, 48, 3)
    other_pt = pipe(PROMPT, num_inference_steps=1, num_frames=2, height=16, width=48, generator=gen(0),
                    output_type="pt").frames
    assert other_pt.shape == (1, 2, 3, 16, 48)
    other_pil = pipe(PROMPT, num_inference_steps=1, num_frames=2, height=16, width=48, generator=gen(0),
                     output_type="pil").frames
    assert other_pil[0][0].size == (48, 16)  # PIL sizes are (width, height)


def test_defaults():
    assert (DEFAULT_NUM_INFERENCE_STEPS, DEFAULT_GUIDANCE_SCALE) == (20, 5.0)
    import inspect

    params = inspect.signature(TinyDiTPipeline.__call__).parameters
    assert params["num_inference_steps"].default is None  # the pipeline's default_num_inference_steps
    assert inspect.signature(TinyDiTPipeline.__init__).parameters["default_num_inference_steps"].default == \
        DEFAULT_NUM_INFERENCE_STEPS
    assert params["guidance_scale"].default is None  # the guider's own scale
    assert params["guider"].default is None  # the pipeline's guider component
    assert params["output_type"].default == "np"


BAD_INPUTS = [
    (dict(generator=0), "generator must be a torch.Generator"),
    (dict(prompt=[]), "prompt must be a string or a non-empty list"),
    (dict(prompt=None), "prompt must be a string"),
    (dict(prompt=["ok", 3]), "prompt must be a string"),
    (dict(negative_prompt=["a", "b"]), "negative_prompt has 2 entries but there are 1 prompts"),
    (dict(negative_prompt=7), "negative_prompt must be None, a string or a list"),
    (dict(num_inference_steps=0), "num_inference_steps must be an integer from 1 to 200"),
    (dict(num_inference_steps=201), "num_inference_steps must be an integer from 1 to 200"),
    (dict(num_inference_steps=2.5), "num_inference_steps must be an integer"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number from 0 to 30"),
    (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number"),
    (dict(guidance_scale=-1.0), "guidance_scale must be a finite number from 0 to 30"),
    (dict(guidance_scale=31), "guidance_scale must be a finite number from 0 to 30"),
    (dict(guidance_scale="5"), "guidance_scale must be a finite number"),
    (dict(num_videos_per_prompt=0), "num_videos_per_prompt must be an integer from 1 to 36"),
    (dict(num_videos_per_prompt=37), "num_videos_per_prompt must be an integer from 1 to 36"),
    (dict(prompt=["a"] * 10, num_videos_per_prompt=4), "10 prompts x 4 videos per prompt = 40 videos"),
    (dict(num_frames=65), "num_frames must be an integer from 1 (an image) to 64"),
    (dict(num_frames=0), "num_frames must be an integer from 1"),
    (dict(num_frames=2.0), "num_frames must be an integer"),
    (dict(height=20), "height must be a positive multiple of 8 pixels"),
    (dict(width=36), "width must be a positive multiple of 8 pixels"),
    (dict(width=-8), "width must be a positive multiple"),
    (dict(output_type="mp4"), "output_type must be one of"),
    (dict(generator=[torch.Generator()] * 3), "list of 3 generators for 1 videos"),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), "may only contain"),
    (dict(capture_attention_layers=[2]), "capture_attention_layers must be a list of block indices from 0 to 1"),
    (dict(latents=torch.zeros(1, 3, 4, 8, 8)), "latents must have shape (1, 4, 4, 8, 8)"),
    (dict(latents=torch.zeros(2, 4, 4, 8, 8)), "latents must have shape (1, 4, 4, 8, 8)"),
    (dict(latents=torch.full((1, 4, 4, 8, 8), float("nan"))), "latents contain NaN"),
    (dict(latents=torch.zeros(1, 4, 4, 8, 7)), "width must be a positive multiple of 8"),  # size from latents
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS, ids=[m[:40] for _, m in BAD_INPUTS])
def test_bad_inputs_raise_value_errors(pipe, kwargs, message):
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        kwargs = {"prompt": PROMPT, "num_inference_steps": 1, **kwargs}
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            pipe(**kwargs)
    finally:
        hook.remove()
    assert not calls  # rejected before any work was done


# --- guidance ---------------------------------------------------------------------


def test_plain_cfg_guider_is_the_teaching_equation():
    """diffusers' ClassifierFreeGuidance, which the pipeline runs by default, computes flow.guided_velocity."""
    v_cond, v_uncond = torch.randn(2, 4, 2, 8, 8, generator=gen(0)), torch.randn(2, 4, 2, 8, 8, generator=gen(1))
    guider = make_guider("cfg", 4.0)
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(1000.0))
    torch.testing.assert_close(guider.forward(pred_cond=v_cond, pred_uncond=v_uncond).pred,
                               guided_velocity(v_uncond, v_cond, 4.0))


def test_guiders_by_name_and_a_saved_pipeline_keeps_its_guider(pipe, tmp_path):
    """Every GUIDERS entry samples and is named back; the pipeline's guider is saved in its folder (like the
    scheduler), so a saved pipeline samples as it was chosen; a folder without one samples with
    the project's default guider (a folder saved before guiders)."""
    noise = torch.randn(1, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(3))
    kwargs = dict(num_inference_steps=4, latents=noise, output_type="latent")
    results = {}
    for name in GUIDERS:
        guider = make_guider(name, 4.0)
        assert guider_name(guider) == name
        results[name] = pipe(PROMPT, guider=guider, **kwargs).frames
    for name in GUIDERS:  # each departs from plain CFG
        if name != "cfg":
            assert (results[name] - results["cfg"]).abs().mean() > 1e-4, name

    saved = pipe.with_scheduler(pipe.scheduler)  # shares the models; its own guider
    saved.guider = make_guider("interval", 3.0)
    saved.save_pretrained(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["guider"] == \
        ["diffusers", "ClassifierFreeGuidance"]
    loaded = TinyDiTPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert guider_name(loaded.guider) == "interval" and loaded.guider.guidance_scale == 3.0
    torch.testing.assert_close(loaded(PROMPT, **kwargs).frames,
                               pipe(PROMPT, guider=make_guider("interval", 3.0), **kwargs).frames)

    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    del index["guider"]  # a folder from before guiders
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(tmp_path / "pipe" / "guider")
    old = TinyDiTPipeline.from_pretrained(tmp_path / "pipe")
    old.set_progress_bar_config(disable=True)
    assert guider_name(old.guider) == DEFAULT_GUIDER and old.guider.guidance_scale == DEFAULT_GUIDANCE_SCALE
    torch.testing.assert_close(old(PROMPT, **kwargs).frames,
                               pipe(PROMPT, guider=make_guider(DEFAULT_GUIDER), **kwargs).frames)


def test_interval_guider_runs_the_unconditional_pass_only_in_its_interval(pipe):
    """stop=0.5 of 4 steps: [uncond; cond] (2 rows a clip) in steps 0-1, the conditional model alone after;
    guidance_scale= replaces the guider's scale, and the guider given is left as it was."""
    rows = []
    hook = pipe.transformer.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    guider = make_guider("interval", 4.0)
    try:
        pipe(PROMPT, guider=guider, guidance_scale=2.0, num_inference_steps=4, output_type="latent")
    finally:
        hook.remove()
    assert rows == [2, 2, 1, 1]
    assert guider.guidance_scale == 4.0 and guider._step is None  # the run used a copy


def test_a_guider_that_needs_other_passes_is_refused_by_name(pipe):
    from diffusers.guiders import SkipLayerGuidance

    with pytest.raises(ValueError, match="SkipLayerGuidance needs the predictions"):
        pipe(PROMPT, num_inference_steps=1,
             guider=SkipLayerGuidance(guidance_scale=3.0, skip_layer_guidance_layers=[0]))
    with pytest.raises(ValueError, match="guider must be a diffusers guider"):
        pipe(PROMPT, num_inference_steps=1, guider="cfg")
    with pytest.raises(ValueError, match="unknown guider 'cfg0'"):
        make_guider("cfg0")


def test_batched_cfg_equals_the_teaching_sampler(pipe):
    """The pipeline (scheduler, batched [uncond; cond]) follows flow.euler_sample step for step."""
    prompts, steps, scale = [PROMPT, "a yellow triangle shrinking"], 4, 3.0
    noise = torch.randn(2, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(3))
    forward_batches = []
    hook = pipe.transformer.register_forward_hook(lambda m, args, out: forward_batches.append(args[0].shape[0]))
    try:
        latents = pipe(prompts, num_inference_steps=steps, guidance_scale=scale, latents=noise,
                       output_type="latent").frames
        assert forward_batches == [4] * steps  # one forward per step, conditional and unconditional together
        cond, uncond = pipe.encode_conditioning(prompts, None, 1, True)
        expected = euler_sample(pipe.transformer, noise, cond, uncond, num_inference_steps=steps,
                                guidance_scale=scale)
        torch.testing.assert_close(latents, expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(latents, noise)

        # Guidance off (w <= 1): one conditional pass per step, the same as euler_sample without uncond.
        forward_batches.clear()
        off = pipe(prompts, num_inference_steps=steps, guidance_scale=1.0, latents=noise, output_type="latent").frames
        assert forward_batches == [2] * steps
        torch.testing.assert_close(off, euler_sample(pipe.transformer, noise, cond, None, steps), atol=1e-5, rtol=1e-5)
        low = pipe(prompts, num_inference_steps=steps, guidance_scale=0.5, latents=noise, output_type="latent").frames
        torch.testing.assert_close(low, off)
        assert (latents - off).abs().mean() > 1e-3  # guidance changes the result
    finally:
        hook.remove()


def test_negative_prompt_replaces_the_empty_prompt(pipe):
    noise = torch.randn(1, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(4))
    kwargs = dict(num_inference_steps=3, guidance_scale=4.0, latents=noise, output_type="latent")
    with_negative = pipe(PROMPT, negative_prompt="a white background", **kwargs).frames
    cond, _ = pipe.encode_conditioning(PROMPT, None, 1, False)
    negative, _ = pipe.encode_conditioning("a white background", None, 1, False)
    expected = euler_sample(pipe.transformer, noise, cond, negative, 3, 4.0)
    torch.testing.assert_close(with_negative, expected, atol=1e-5, rtol=1e-5)
    assert (with_negative - pipe(PROMPT, **kwargs).frames).abs().mean() > 1e-4

    # encode_conditioning: prompts repeated per video, in order; one negative prompt per prompt.
    cond, uncond = pipe.encode_conditioning(["a", "b"], ["x", "y"], num_videos_per_prompt=3)
    assert cond["pooled_projections"].shape == (6, 32) and cond["encoder_hidden_states"].shape == (6, 16, 32)
    assert uncond["encoder_attention_mask"].shape == (6, 16) and uncond["encoder_attention_mask"].dtype == torch.bool
    torch.testing.assert_close(cond["pooled_projections"][3], pipe.encode_conditioning("b", None, 1, False)[0]
                               ["pooled_projections"][0])
    torch.testing.assert_close(uncond["pooled_projections"][0], pipe.encode_conditioning("x", None, 1, False)[0]
                               ["pooled_projections"][0])


# --- callbacks ---------------------------------------------------------------------


def test_callback_sees_latents_pred_x0_and_attentions(pipe):
    steps, scale = 3, 2.0
    noise = torch.randn(2, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(7))
    seen = []

    def callback(p, i, t, kwargs):
        seen.append((i, float(t), {k: (v.clone() if torch.is_tensor(v) else dict(v)) for k, v in kwargs.items()}))
        return {}

    final = pipe([PROMPT, "a blue star"], num_inference_steps=steps, guidance_scale=scale, latents=noise,
                 output_type="latent", callback_on_step_end=callback,
                 callback_on_step_end_tensor_inputs=["latents", "pred_x0", "attentions"],
                 capture_attention_layers=[1]).frames
    assert [i for i, _, _ in seen] == [0, 1, 2]
    sigmas = [1.0, 2 / 3, 1 / 3, 0.0]
    np.testing.assert_allclose([t for _, t, _ in seen], [1000 * s for s in sigmas[:-1]], rtol=1e-5)
    x_t = noise
    for (i, t, kw), s, s_next in zip(seen, sigmas[:-1], sigmas[1:]):
        # The straight-line relations of rectified flow: x_t = pred_x0 + s v and x_next = x_t + (s_next - s) v.
        v = (x_t - kw["pred_x0"]) / s
        torch.testing.assert_close(kw["latents"], x_t + (s_next - s) * v, atol=1e-5, rtol=1e-5)
        x_t = kw["latents"]
        # Attention maps of block 1, conditional half only: (videos, heads, N, N), rows sum to 1.
        assert list(kw["attentions"]) == [1]
        att = kw["attentions"][1]
        assert att.shape == (2, 2, 32, 32)
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, 32))
    torch.testing.assert_close(seen[-1][2]["pred_x0"], final, atol=1e-5, rtol=1e-5)  # at s = 0 x equals x0
    torch.testing.assert_close(seen[-1][2]["latents"], final)

    # The attentions are those of the conditional pass at that step's input.
    cond, _ = pipe.encode_conditioning([PROMPT, "a blue star"], None, 1, False)
    x_last_input = seen[-2][2]["latents"]
    direct = pipe.transformer(x_last_input, timestep=torch.full((2,), seen[-1][1]), capture_attention_layers=[1],
                              **cond).attentions[1]
    torch.testing.assert_close(seen[-1][2]["attentions"][1], direct, atol=1e-5, rtol=1e-5)


def test_callback_can_replace_latents(pipe):
    def zero_at_last_step(p, i, t, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == p.scheduler.num_inference_steps - 1 else {}

    out = pipe(PROMPT, num_inference_steps=2, output_type="latent", generator=gen(0),
               callback_on_step_end=zero_at_last_step).frames
    assert torch.equal(out, torch.zeros_like(out))


# --- precision -------------------------------------------------------------------


def test_dtype_bfloat16_samples_close_to_float32():
    pipe = tiny_pipeline()
    run = lambda kind: pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type=kind).frames  # noqa: E731
    assert pipe.set_dtype("float32") == torch.float32
    full, full_frames = run("latent"), run("np")
    assert pipe.set_dtype("bfloat16") == torch.bfloat16
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.float32  # runs once per prompt: not worth the precision
    half, half_frames = run("latent"), run("np")
    assert half.dtype == torch.float32 and half_frames.dtype == np.float32  # latents and frames stay float32
    assert not torch.equal(half, full)  # the bfloat16 transformer really ran
    assert (half - full).abs().max() < 0.05 * full.abs().max()
    assert np.abs(half_frames - full_frames).mean() < 0.02  # about 5 grey levels out of 255, on average
    # the autoencoder's encoder takes uint8 frames whatever its dtype (the forward-process view uses it)
    latents = encode_clips(pipe.vae, torch.from_numpy((full_frames[:1] * 255).astype(np.uint8)))
    assert latents.dtype == torch.float32 and latents.shape == full.shape


def test_dtype_auto_keeps_one_it_measured():
    pipe = tiny_pipeline()
    chosen = pipe.set_dtype("auto")
    assert chosen in (torch.float32, torch.bfloat16) and pipe.transformer.dtype == pipe.vae.dtype == chosen
    with pytest.raises(ValueError, match="dtype"):
        pipe.set_dtype("float16")


def test_dtype_round_trip_keeps_the_float32_weights():
    pipe = tiny_pipeline()
    pipe.set_dtype("float32")
    before = {name: copy.deepcopy(getattr(pipe, name).state_dict()) for name in ("transformer", "vae")}
    pipe.set_dtype("bfloat16")
    rounded = pipe.transformer.patch_embed.weight.float()
    assert not torch.equal(rounded, before["transformer"]["patch_embed.weight"])  # bfloat16 really rounds
    pipe.set_dtype("float32")  # as "auto" does on a CPU where float32 is faster
    for name, weights in before.items():
        after = getattr(pipe, name).state_dict()
        assert all(torch.equal(after[k], v) for k, v in weights.items()), name
    # weights changed while in bfloat16 are what comes back, not the float32 ones kept aside
    pipe.set_dtype("bfloat16")
    with torch.no_grad():
        pipe.transformer.patch_embed.weight.add_(1.0)
    pipe.set_dtype("float32")
    changed = pipe.transformer.patch_embed.weight
    assert changed.dtype == torch.float32
    assert torch.allclose(changed, before["transformer"]["patch_embed.weight"] + 1.0, atol=0.05)
    assert not pipe._float32_weights  # nothing kept aside in float32: memory does not grow


# --- driving it like any diffusers pipeline ---------------------------------------------
# What diffusers' PipelineTesterMixin asks of a pipeline, checked here on the tiny one: prompt
# embeddings in and out of encode_prompt, the callback state diffusers' callbacks read and write,
# every callback tensor input on its own, output layouts, layerwise casting and variants.

EMBEDDING_NAMES = ("prompt_embeds", "prompt_attention_mask", "pooled_prompt_embeds",
                   "negative_prompt_embeds", "negative_prompt_attention_mask", "negative_pooled_prompt_embeds")


def text_encoder_only(pipe: TinyDiTPipeline) -> TinyDiTPipeline:
    return TinyDiTPipeline(vae=None, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, transformer=None,
                           scheduler=None)


def without_text_encoder(pipe: TinyDiTPipeline) -> TinyDiTPipeline:
    other = TinyDiTPipeline(vae=pipe.vae, text_encoder=None, tokenizer=None, transformer=pipe.transformer,
                            scheduler=FlowMatchEulerDiscreteScheduler(), guider=pipe.guider)
    other.set_progress_bar_config(disable=True)
    return other


def test_encode_prompt_returns_what_call_takes_under_the_same_names():
    """diffusers reuses encode_prompt's output by the names in its return statement."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(TinyDiTPipeline.encode_prompt)))
    (ret,) = [node for node in ast.walk(tree) if isinstance(node, ast.Return)]
    assert tuple(element.id for element in ret.value.elts) == EMBEDDING_NAMES
    call = inspect.signature(TinyDiTPipeline.__call__).parameters
    encode = inspect.signature(TinyDiTPipeline.encode_prompt).parameters
    for name in EMBEDDING_NAMES:
        assert call[name].default is None and encode[name].default is None
    assert call["prompt"].default is None  # prompt_embeds can stand in for it


def test_prompts_encoded_by_a_text_encoder_only_pipeline_sample_like_prompts(pipe):
    prompts, negative = [PROMPT, "a blue star"], "a white background"
    encoder = text_encoder_only(pipe)  # no transformer, no autoencoder: encode_prompt must not need them
    embeds = dict(zip(EMBEDDING_NAMES, encoder.encode_prompt(prompts, negative)))
    assert embeds["prompt_embeds"].shape == embeds["negative_prompt_embeds"].shape == (2, 16, 32)
    assert embeds["pooled_prompt_embeds"].shape == (2, 32) and embeds["prompt_embeds"].dtype == torch.float32
    assert embeds["prompt_attention_mask"].shape == (2, 16) and embeds["prompt_attention_mask"].dtype == torch.bool

    kwargs = dict(num_inference_steps=3, guidance_scale=3.0, num_videos_per_prompt=2)
    expected = pipe(prompts, negative_prompt=negative, generator=gen(0), **kwargs).frames
    assert expected.std() > 0.01
    sampler = without_text_encoder(pipe)  # and sampling from embeddings needs no text encoder
    for _ in range(2):  # encoded once, used twice
        np.testing.assert_array_equal(sampler(generator=gen(0), **embeds, **kwargs).frames, expected)
    # The full pipeline takes them too; the negative ones default to the empty prompt.
    positive = {k: v for k, v in embeds.items() if not k.startswith("negative_")}
    np.testing.assert_array_equal(pipe(generator=gen(0), **positive, **kwargs).frames,
                                  pipe(prompts, generator=gen(0), **kwargs).frames)
    # Without guidance no negative embeddings are made or needed; integer masks are fine too.
    unguided = dict(zip(EMBEDDING_NAMES, encoder.encode_prompt(prompts, do_classifier_free_guidance=False)))
    assert unguided["negative_prompt_embeds"] is None and unguided["negative_pooled_prompt_embeds"] is None
    unguided["prompt_attention_mask"] = unguided["prompt_attention_mask"].long()
    np.testing.assert_array_equal(sampler(generator=gen(1), guidance_scale=1.0, num_inference_steps=2,
                                          **{k: v for k, v in unguided.items() if v is not None}).frames,
                                  pipe(prompts, generator=gen(1), guidance_scale=1.0, num_inference_steps=2).frames)
    # encode_prompt repeats rows per video, embeddings passed in as well as prompts.
    repeated = encoder.encode_prompt(None, num_videos_per_prompt=3, **embeds)
    assert repeated[0].shape == (6, 16, 32)
    assert torch.equal(repeated[2][3:], embeds["pooled_prompt_embeds"][1:].expand(3, -1))
    with pytest.raises(ValueError, match="pass either prompt or prompt_embeds"):
        pipe(PROMPT, **positive)
    with pytest.raises(ValueError, match="no text_encoder or tokenizer to encode the prompt with"):
        sampler(PROMPT)
    with pytest.raises(ValueError, match="no text_encoder or tokenizer to encode prompts with"):
        sampler.encode_prompt(PROMPT)
    with pytest.raises(ValueError, match="negative_prompt_embeds"):  # guidance needs an unconditional input
        sampler(generator=gen(0), guidance_scale=3.0, **positive)
    with pytest.raises(ValueError, match="no transformer or vae or scheduler"):
        encoder(PROMPT)


E, M, P = torch.zeros(1, 16, 32), torch.ones(1, 16, dtype=torch.bool), torch.zeros(1, 32)
EMBEDS = dict(prompt=None, prompt_embeds=E, prompt_attention_mask=M, pooled_prompt_embeds=P)
BAD_EMBEDDINGS = [
    (dict(prompt_embeds=E, prompt_attention_mask=M, pooled_prompt_embeds=P), "pass either prompt or prompt_embeds"),
    (dict(prompt=None, prompt_embeds=E), "prompt_embeds needs prompt_attention_mask and pooled_prompt_embeds"),
    (dict(prompt=None), "prompt must be a string or a non-empty list of strings (or pass prompt_embeds)"),
    (dict(pooled_prompt_embeds=P), "come with prompt_embeds"),
    (dict(EMBEDS, prompt_embeds=torch.zeros(16, 32)), "prompt_embeds must be a 3-D tensor, got (16, 32)"),
    (dict(EMBEDS, prompt_attention_mask=M[:, :8]), "do not fit together"),
    (dict(EMBEDS, pooled_prompt_embeds=torch.zeros(2, 32)), "do not fit together"),
    (dict(EMBEDS, prompt_embeds=torch.zeros(1, 16, 24)), "must be 32 and 32 wide"),
    (dict(EMBEDS, prompt_embeds=E.expand(10, -1, -1), prompt_attention_mask=M.expand(10, -1),
          pooled_prompt_embeds=P.expand(10, -1), num_videos_per_prompt=4), "10 prompts x 4 videos per prompt"),
    (dict(negative_prompt="x", negative_prompt_embeds=E), "either negative_prompt or negative_prompt_embeds"),
    (dict(negative_prompt_embeds=E, negative_prompt_attention_mask=M), "negative_prompt_embeds needs negative_pooled"),
    (dict(negative_pooled_prompt_embeds=P), "come with negative_prompt_embeds"),
    (dict(EMBEDS, negative_prompt_embeds=torch.zeros(1, 8, 32), negative_prompt_attention_mask=M[:, :8],
          negative_pooled_prompt_embeds=P), "negative_prompt_embeds must have the shape of prompt_embeds"),
    (dict(negative_prompt_embeds=torch.zeros(2, 16, 32), negative_prompt_attention_mask=M.expand(2, -1),
          negative_pooled_prompt_embeds=torch.zeros(2, 32)), "negative_prompt_embeds has 2 rows but there are 1"),
]


@pytest.mark.parametrize("kwargs, message", BAD_EMBEDDINGS, ids=[m[:40] for _, m in BAD_EMBEDDINGS])
def test_bad_embeddings_raise_value_errors(pipe, kwargs, message):
    test_bad_inputs_raise_value_errors(pipe, kwargs, message)


def test_guidance_scale_is_read_at_every_step(pipe):
    """A callback may change pipe._guidance_scale (diffusers' callbacks do); each step uses the value it
    finds, and the run's state is there for callbacks to read."""
    prompts, steps = [PROMPT, "a blue star"], 3
    noise = torch.randn(2, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(8))
    seen = []

    def louder(p, i, t, kwargs):
        seen.append((p.guidance_scale, p.do_classifier_free_guidance, p.num_timesteps, float(p.current_timestep)))
        p._guidance_scale += 1.0
        return kwargs

    out = pipe(prompts, num_inference_steps=steps, guidance_scale=2.0, latents=noise, output_type="latent",
               callback_on_step_end=louder, callback_on_step_end_tensor_inputs=["latents"]).frames
    assert [s[:3] for s in seen] == [(2.0, True, 3), (3.0, True, 3), (4.0, True, 3)]
    np.testing.assert_allclose([s[3] for s in seen], pipe.scheduler.timesteps.numpy())
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps and pipe.current_timestep is None and not pipe.interrupt

    # By hand: Euler steps with guidance 2, 3, 4.
    cond, uncond = pipe.encode_conditioning(prompts, None, 1, True)
    x, sigmas = noise, pipe.scheduler.sigmas.tolist()
    for w, s, s_next in zip([2.0, 3.0, 4.0], sigmas, sigmas[1:]):
        timestep = torch.full((2,), 1000 * s)
        v_uncond = pipe.transformer(x, timestep, **uncond).sample
        v_cond = pipe.transformer(x, timestep, **cond).sample
        x = x + (s_next - s) * (v_uncond + w * (v_cond - v_uncond))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_guidance_switched_off_and_on_by_a_callback(pipe):
    noise = torch.randn(2, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(9))
    batches = []
    hook = pipe.transformer.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))

    def set_scale_after_step_0(scale):
        def callback(p, i, t, kwargs):
            if i == 0:
                p._guidance_scale = scale
            return {}
        return callback

    def run(scale, callback=None, **kwargs):
        batches.clear()
        return pipe([PROMPT, "a blue star"], num_inference_steps=3, guidance_scale=scale, latents=noise,
                    output_type="latent", callback_on_step_end=callback, **kwargs).frames

    try:
        off = run(4.0, set_scale_after_step_0(0.0))
        assert batches == [4, 2, 2]  # guided first step, then the conditional pass alone
        on = run(1.0, set_scale_after_step_0(4.0), negative_prompt="a white background")
        assert batches == [2, 4, 4]  # the negative prompt is embedded when guidance starts
    finally:
        hook.remove()
    sigmas = pipe.scheduler.sigmas.tolist()

    def by_hand(scales, negative_prompt=None):
        cond, uncond = pipe.encode_conditioning([PROMPT, "a blue star"], negative_prompt, 1, True)
        x = noise
        for w, s, s_next in zip(scales, sigmas, sigmas[1:]):
            timestep = torch.full((2,), 1000 * s)
            v = pipe.transformer(x, timestep, **cond).sample
            if w > 1:
                v_uncond = pipe.transformer(x, timestep, **uncond).sample
                v = v_uncond + w * (v - v_uncond)
            x = x + (s_next - s) * v
        return x

    torch.testing.assert_close(on, by_hand([1.0, 4.0, 4.0], "a white background"), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(off, by_hand([4.0, 0.0, 0.0]), atol=1e-5, rtol=1e-5)


def test_diffusers_cfg_cutoff_callback_with_multi_pipeline_callbacks(pipe):
    from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback, SD3CFGCutoffCallback

    log = []

    class Log(PipelineCallback):
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            log.append((step_index, pipeline.guidance_scale, pipeline.num_timesteps))
            return callback_kwargs

    noise = torch.randn(1, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(10))
    batches = []
    hook = pipe.transformer.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        kwargs = dict(num_inference_steps=4, guidance_scale=4.0, latents=noise, output_type="latent")
        cut = pipe(PROMPT, callback_on_step_end=MultiPipelineCallbacks(
            [SD3CFGCutoffCallback(cutoff_step_ratio=0.5), Log()]), **kwargs).frames
    finally:
        hook.remove()
    assert batches == [2, 2, 2, 1]  # int(0.5 * num_timesteps) = 2: guidance off after step 2
    assert log == [(0, 4.0, 4), (1, 4.0, 4), (2, 0.0, 4), (3, 0.0, 4)]

    def by_hand(p, i, t, kwargs):
        if i == 2:
            p._guidance_scale = 0.0
        return {}

    torch.testing.assert_close(cut, pipe(PROMPT, callback_on_step_end=by_hand, **kwargs).frames)


def test_interrupt_stops_the_loop_and_returns_the_latents_so_far(pipe):
    kept, batches = [], []

    def stop_after_step_1(p, i, t, kwargs):
        kept.append(kwargs["latents"].clone())
        if i == 1:
            p._interrupt = True
        return {}

    hook = pipe.transformer.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        out = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="latent",
                   callback_on_step_end=stop_after_step_1).frames
        assert len(batches) == 2 and len(kept) == 2 and pipe.interrupt
        torch.testing.assert_close(out, kept[-1])
        batches.clear()
        pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="latent")  # the next run starts afresh
        assert len(batches) == 4 and not pipe.interrupt
    finally:
        hook.remove()


@pytest.mark.parametrize("name", TinyDiTPipeline._callback_tensor_inputs)
def test_every_callback_tensor_input_works_on_its_own(pipe, name):
    got = []

    def keep(p, i, t, kwargs):
        got.append(dict(kwargs))
        return kwargs

    pipe(PROMPT, num_inference_steps=2, guidance_scale=3.0, num_videos_per_prompt=2, generator=gen(0),
         output_type="latent", callback_on_step_end=keep, callback_on_step_end_tensor_inputs=[name])
    assert len(got) == 2 and all(list(kwargs) == [name] for kwargs in got)
    value = got[0][name]
    if name == "attentions":  # without capture_attention_layers: every block's maps, conditional pass only
        assert sorted(value) == [0, 1] and all(a.shape == (2, 2, 32, 32) for a in value.values())
    else:
        assert torch.is_tensor(value) and value.shape[0] == 2  # one row per clip


def test_all_callback_tensor_inputs_at_once_change_nothing(pipe):
    def check(p, i, t, kwargs):
        assert list(kwargs) == p._callback_tensor_inputs
        return kwargs  # handing everything back unchanged, as diffusers' callbacks do

    kwargs = dict(num_inference_steps=2, guidance_scale=3.0, output_type="latent")
    plain = pipe([PROMPT, "a blue star"], generator=gen(0), **kwargs).frames
    everything = pipe([PROMPT, "a blue star"], generator=gen(0), callback_on_step_end=check,
                      callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs, **kwargs).frames
    torch.testing.assert_close(everything, plain)
    unguided = []
    pipe(PROMPT, num_inference_steps=1, guidance_scale=1.0,
         callback_on_step_end=lambda p, i, t, kwargs: unguided.append(kwargs),
         callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs)
    assert unguided[0]["negative_prompt_embeds"] is None and unguided[0]["prompt_embeds"].shape == (1, 16, 32)


def test_callback_can_replace_the_prompt_embeddings(pipe):
    noise = torch.randn(1, 4, FRAMES, SIZE // 4, SIZE // 4, generator=gen(11))
    star = dict(zip(EMBEDDING_NAMES, pipe.encode_prompt("a blue star")))

    def swap(p, i, t, kwargs):
        return {name: star[name] for name in kwargs} if i == 0 else {}

    kwargs = dict(num_inference_steps=2, guidance_scale=3.0, latents=noise, output_type="latent")
    swapped = pipe(PROMPT, callback_on_step_end=swap, callback_on_step_end_tensor_inputs=EMBEDDING_NAMES[:3],
                   **kwargs).frames
    cond, uncond = pipe.encode_conditioning(PROMPT, None, 1, True)
    star_cond = pipe.transformer_text_inputs(*pipe.encode_prompt("a blue star")[:3])
    sigmas = pipe.scheduler.sigmas.tolist()
    x = noise
    for c, s, s_next in zip([cond, star_cond], sigmas, sigmas[1:]):
        timestep = torch.full((1,), 1000 * s)
        v_uncond = pipe.transformer(x, timestep, **uncond).sample
        v_cond = pipe.transformer(x, timestep, **c).sample
        x = x + (s_next - s) * (v_uncond + 3.0 * (v_cond - v_uncond))
    torch.testing.assert_close(swapped, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_layerwise_casting_stores_float8_and_samples(compute_dtype):
    """diffusers' ModelMixin.enable_layerwise_casting: weights stored in float8, each layer cast to
    compute_dtype for its forward pass only."""
    reference = tiny_pipeline()(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent").frames
    pipe = tiny_pipeline()
    if compute_dtype != torch.float32:
        pipe.to(dtype=compute_dtype)  # as diffusers' test does: the model in its compute dtype, then fp8 storage
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    stored = pipe.transformer.blocks[0].attn.qkv.weight
    assert stored.dtype == torch.float8_e4m3fn
    assert pipe.transformer.dtype == compute_dtype  # what diffusers reports for a layerwise-cast model
    for output_type in ("latent", "np"):
        out = pipe(PROMPT, num_inference_steps=2, generator=gen(0), output_type=output_type).frames
        assert np.isfinite(np.asarray(out.float() if torch.is_tensor(out) else out)).all()
    assert pipe.transformer.blocks[0].attn.qkv.weight.dtype == torch.float8_e4m3fn  # stored back after use
    latents = pipe(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent").frames
    assert latents.dtype == torch.float32
    error = (latents - reference).abs().mean() / reference.abs().mean()
    assert error < 0.2, error  # 3-bit mantissas cost some precision, not the sample


def test_variants_are_saved_side_by_side_and_loaded_by_name(tmp_path):
    full, other = tiny_pipeline(0), tiny_pipeline(1)
    full.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path, variant="fp16")
    files = sorted(p.name for p in (tmp_path / "text_encoder").iterdir())
    assert files == ["open_clip_config.json", "open_clip_model.fp16.safetensors", "open_clip_model.safetensors"]
    for variant, source in ((None, full), ("fp16", other)):
        loaded = TinyDiTPipeline.from_pretrained(tmp_path, variant=variant)
        for name in ("text_encoder", "transformer"):
            for a, b in zip(getattr(source, name).state_dict().values(), getattr(loaded, name).state_dict().values()):
                assert torch.equal(a, b), (variant, name)
    clip = CLIPEncoder.from_pretrained(tmp_path / "text_encoder", variant="fp16")
    assert all(torch.equal(a, b) for a, b in zip(other.text_encoder.state_dict().values(), clip.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="open_clip_model.bf16.safetensors"):
        CLIPEncoder.from_pretrained(tmp_path / "text_encoder", variant="bf16")


def test_a_transformer_with_word_embeddings_gets_states_then_words(tmp_path):
    """For TinyDiT(word_embeddings=True) the pipeline's prompt_embeds are CLIP's states then the words' own
    embeddings (2L tokens); it samples, saves and loads like any other."""
    clip = tiny_clip()
    pipe = TinyDiTPipeline(vae=tiny_vae(), text_encoder=clip, tokenizer=clip.tokenizer,
                           transformer=tiny_transformer(word_embeddings=True), scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    embeds, mask, pooled, *_ = pipe.encode_prompt("a red star", do_classifier_free_guidance=False)
    emb = clip.encode_text(["a red star"])
    L = clip.context_length
    assert embeds.shape == (1, 2 * L, 32) and mask.shape == (1, 2 * L)
    assert torch.equal(embeds[:, :L], emb.hidden_states) and torch.equal(embeds[:, L:], emb.word_embeddings)
    frames = pipe("a red star", num_inference_steps=2, generator=gen(0), output_type="pt").frames
    pipe.save_pretrained(tmp_path / "p")
    again = TinyDiTPipeline.from_pretrained(tmp_path / "p")
    again.set_progress_bar_config(disable=True)
    assert again.transformer.config.word_embeddings
    assert torch.allclose(frames, again("a red star", num_inference_steps=2, generator=gen(0), output_type="pt").frames,
                          atol=1e-5)
