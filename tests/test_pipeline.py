"""TinyDiTPipeline: saving and loading through diffusers, seeds, outputs, input checks, CFG, callbacks.

Everything runs on tiny random components built here: a 1-layer CLIP, a 3-stage
AutoencoderTiny (32 x 32 frames -> 4 x 8 x 8 latents) and a 2-block TinyDiT.
test_train.py and test_sample.py import the builders below.
"""

import importlib
import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny, FlowMatchEulerDiscreteScheduler

import tiny_dit
from tiny_dit.autoencoder import encode_clips
from tiny_dit.flow import euler_sample
from tiny_dit.model import TinyDiT
from tiny_dit.pipeline import DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS, TinyDiTPipeline
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


def tiny_transformer(seed: int = 0, perturb: float = 0.1) -> TinyDiT:
    """A 2-block TinyDiT whose weights are moved off the (zero-output) initialisation."""
    torch.manual_seed(seed)
    model = TinyDiT(in_channels=4, num_frames=FRAMES, sample_size=SIZE // 4, patch_size=2, patch_size_t=2,
                    hidden_size=32, depth=2, num_heads=2, text_embed_dim=32, pooled_embed_dim=32,
                    cross_attention=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * perturb)
    return model


def tiny_pipeline(seed: int = 0) -> TinyDiTPipeline:
    clip = tiny_clip(seed)
    pipe = TinyDiTPipeline(vae=tiny_vae(seed), text_encoder=clip, tokenizer=clip.tokenizer,
                           transformer=tiny_transformer(seed), scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- saving and loading ------------------------------------------------------


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

    frames = run().frames
    assert isinstance(frames, np.ndarray) and frames.dtype == np.float32
    assert frames.shape == (6, FRAMES, SIZE, SIZE, 3)
    assert frames.min() >= 0 and frames.max() <= 1
    pt = run(output_type="pt").frames
    assert isinstance(pt, torch.Tensor) and pt.shape == (6, FRAMES, SIZE, SIZE, 3)
    np.testing.assert_array_equal(pt.numpy(), frames)
    latents = run(output_type="latent").frames
    assert isinstance(latents, torch.Tensor) and latents.shape == (6, 4, FRAMES, SIZE // 4, SIZE // 4)
    np.testing.assert_allclose(pipe.decode_latents(latents).numpy(), frames, atol=1e-6)
    (tup,) = run(return_dict=False)
    np.testing.assert_array_equal(tup, frames)
    # Other sizes: 2 frames of 16 x 48 pixels, i.e. latents 2 x 4 x 12.
    other = pipe(PROMPT, num_inference_steps=1, num_frames=2, height=16, width=48, generator=gen(0)).frames
    assert other.shape == (1, 2, 16, 48, 3)


def test_defaults():
    assert (DEFAULT_NUM_INFERENCE_STEPS, DEFAULT_GUIDANCE_SCALE) == (20, 5.0)
    import inspect

    params = inspect.signature(TinyDiTPipeline.__call__).parameters
    assert params["num_inference_steps"].default == DEFAULT_NUM_INFERENCE_STEPS
    assert params["guidance_scale"].default == DEFAULT_GUIDANCE_SCALE
    assert params["output_type"].default == "np"


BAD_INPUTS = [
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
    (dict(num_frames=3), "num_frames must be a positive multiple of the transformer's patch_size_t=2"),
    (dict(num_frames=0), "num_frames must be a positive multiple"),
    (dict(height=20), "height must be a positive multiple of 8 pixels"),
    (dict(width=36), "width must be a positive multiple of 8 pixels"),
    (dict(width=-8), "width must be a positive multiple"),
    (dict(output_type="pil"), "output_type must be one of"),
    (dict(generator=[torch.Generator()] * 3), "list of 3 generators for 1 videos"),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), "may only contain"),
    (dict(callback_on_step_end_tensor_inputs=["attentions"]), "pass capture_attention_layers"),
    (dict(capture_attention_layers=[2]), "capture_attention_layers must be a list of block indices from 0 to 1"),
    (dict(latents=torch.zeros(1, 3, 4, 8, 8)), "latents must have shape (1, 4, 4, 8, 8)"),
    (dict(latents=torch.zeros(2, 4, 4, 8, 8)), "latents must have shape (1, 4, 4, 8, 8)"),
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
        cond, uncond = pipe.encode_prompt(prompts, None, 1, True)
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
    cond, _ = pipe.encode_prompt(PROMPT, None, 1, False)
    negative, _ = pipe.encode_prompt("a white background", None, 1, False)
    expected = euler_sample(pipe.transformer, noise, cond, negative, 3, 4.0)
    torch.testing.assert_close(with_negative, expected, atol=1e-5, rtol=1e-5)
    assert (with_negative - pipe(PROMPT, **kwargs).frames).abs().mean() > 1e-4

    # encode_prompt: prompts repeated per video, in order; one negative prompt per prompt.
    cond, uncond = pipe.encode_prompt(["a", "b"], ["x", "y"], num_videos_per_prompt=3)
    assert cond["pooled_projections"].shape == (6, 32) and cond["encoder_hidden_states"].shape == (6, 16, 32)
    assert uncond["encoder_attention_mask"].shape == (6, 16) and uncond["encoder_attention_mask"].dtype == torch.bool
    torch.testing.assert_close(cond["pooled_projections"][3], pipe.encode_prompt("b", None, 1, False)[0]
                               ["pooled_projections"][0])
    torch.testing.assert_close(uncond["pooled_projections"][0], pipe.encode_prompt("x", None, 1, False)[0]
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
    cond, _ = pipe.encode_prompt([PROMPT, "a blue star"], None, 1, False)
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
