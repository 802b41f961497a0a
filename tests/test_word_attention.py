"""Word attention (tiny_dit.inside.word_attention): word pieces grouped into words, cross-attention
probabilities recomputed from a recorded run exactly as the pipeline computed them, bounded
memory, the app's view and its /word_attention endpoint through gradio_client; the attention
view's default query patch on the object; the view on the bundled model."""

import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # app.py lives at the top of the checkout
import app  # noqa: E402
from test_pipeline import PROMPT, tiny_clip, tiny_pipeline, tiny_vae
from tiny_dit.inside import word_attention as wa
from tiny_dit.inside.attention_maps import ATTENTION_CACHE_STEPS
from tiny_dit.inside.geometry import ModelGeometry
from tiny_dit.model import CrossAttention, TinyDiT
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.inside.recorder import record_run
from tiny_dit.text_encoder import TokenInfo, tokenize

torch.set_num_threads(1)

STEPS, SAMPLES, SEED = 3, 2, 5
BUNDLE = Path(__file__).resolve().parent.parent / "assets" / "tiny-dit-shapes"


def token_info(pieces: list[str], context: int = 16) -> TokenInfo:
    n = len(pieces)
    return TokenInfo(ids=list(range(n)) + [0] * (context - n), pieces=pieces + [""] * (context - n), num_real=n,
                     num_wanted=n, context_length=context)


# --- words --------------------------------------------------------------------------------


def test_word_pieces_are_grouped_into_words_by_the_end_of_word_marker():
    # open_clip's SimpleTokenizer decodes the end-of-word marker </w> as a trailing space.
    tokens = token_info(["<start_of_text>", "a ", "yel", "low ", "star ", ", ", "moving ", "left ",
                         "<end_of_text>"])
    words = wa.group_words(tokens)
    assert [(w.text, w.positions) for w in words] == [
        ("a", [1]), ("yellow", [2, 3]), ("star", [4]), (",", [5]), ("moving", [6]), ("left", [7])]
    # Hugging Face's CLIP tokenizer keeps the marker; a last piece without one still ends its word.
    hf = token_info(["<|startoftext|>", "a</w>", "yel", "low</w>", "sq", "uare", "<|endoftext|>"])
    assert [(w.text, w.positions) for w in wa.group_words(hf)] == [("a", [1]), ("yellow", [2, 3]),
                                                                  ("square", [4, 5])]
    assert wa.word_labels(words + [words[0]])[-1] == "a (2)"


def test_a_word_clip_splits_is_one_word_with_the_real_tokenizer():
    pipe = tiny_pipeline()
    tokens, _ = tokenize(pipe.tokenizer, "a chartreusey star moving left")
    words = wa.group_words(tokens)
    assert [w.text for w in words] == ["a", "chartreusey", "star", "moving", "left"]
    assert words[1].pieces > 1 and words[1].positions == list(range(2, 2 + words[1].pieces))
    assert wa.default_word(words, "a chartreusey star moving left") == 2  # the shape's name first
    red = wa.group_words(tokenize(pipe.tokenizer, PROMPT)[0])
    assert wa.default_word(red, PROMPT) == [w.text for w in red].index("circle")


# --- the probabilities ------------------------------------------------------------------------


def test_cross_attention_probabilities_reproduce_the_module():
    torch.manual_seed(0)
    module = CrossAttention(32, 24, num_heads=4).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 24)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    probs = wa.cross_attention_probs(module, x, context, mask)  # (2, 4, 10, 7)
    assert probs.shape == (2, 4, 10, 7)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 10))
    assert probs[0, :, :, 4:].abs().max() == 0 and probs[1, :, :, 6].abs().max() == 0  # padding: masked out
    with torch.no_grad():
        v = module.kv(context).reshape(2, 7, 2, 4, 8)[:, :, 1].transpose(1, 2)  # (2, heads, L, hd)
        rebuilt = module.proj((probs @ v).transpose(1, 2).reshape(2, 10, 32))
        torch.testing.assert_close(rebuilt, module(x, context, mask), atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def record():
    return record_run(tiny_pipeline(), PROMPT, seed=SEED, guidance_scale=4.0, num_inference_steps=STEPS,
                      num_videos=SAMPLES).slim()


def test_recorded_cross_attention_is_what_the_pipeline_computes(record):
    """Hooks on every block's CrossAttention during a real run of the pipeline see the probabilities
    of clip 1 (the first row of the conditional half of the guided batch) that the record recomputes."""
    pipe = tiny_pipeline()
    captured: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def hook(index):
        def fn(module, args, output):
            probs = wa.cross_attention_probs(module, *args)
            captured[index].append(probs[probs.shape[0] - SAMPLES].numpy())  # [uncond; cond]: clip 1 of cond
        return fn

    handles = [block.cross_attn.register_forward_hook(hook(i)) for i, block in enumerate(pipe.transformer.blocks)]
    try:
        pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=4.0, num_videos_per_prompt=SAMPLES,
             generator=torch.Generator().manual_seed(SEED))
    finally:
        for handle in handles:
            handle.remove()
    for step in range(STEPS):
        maps = wa.cross_attention_at(record, step)
        assert set(maps) == {0, 1} and maps[0].shape == (2, 32, 16) and maps[0].dtype == np.float16
        for block in (0, 1):  # equal up to the float16 storage of the latents they are recomputed from
            np.testing.assert_allclose(maps[block], captured[block][step], atol=2e-3)
    real = record.tokens.num_real
    assert np.abs(maps[0][..., real:]).max() == 0  # padding gets nothing


def test_word_heat_adds_the_pieces_and_memory_stays_bounded(record):
    before = record.nbytes
    words = wa.group_words(record.tokens)
    total = sum(wa.word_heat(record, w, STEPS - 1) for w in words)
    special = wa.token_attention(record, STEPS - 1)[:, wa.special_positions(record.tokens)].sum(axis=1)
    np.testing.assert_allclose(total.reshape(-1) + special, 1, atol=1e-2)  # words + start/end = everything
    for step in range(STEPS):
        for block in (None, 0, 1):
            for head in (None, 0, 1):
                heat = wa.word_heat(record, words[1], step, block, head)
                assert heat.shape == record.geometry.grid and 0 <= heat.min() and heat.max() <= 1
    assert len(wa.CROSS_ATTENTION_CACHE) <= ATTENTION_CACHE_STEPS  # maps are recomputed and cached for a few steps only
    assert record.nbytes == before  # nothing is added to the run a session keeps
    with pytest.raises(ValueError, match="step must be from 0 to 2"):
        wa.cross_attention_at(record, STEPS)


# --- where the object is ----------------------------------------------------------------------


def test_default_query_patch_is_on_the_object():
    geometry = ModelGeometry(num_frames=4, height=32, width=32, latent_channels=4, vae_scale_factor=4,
                             patch_size=2, patch_size_t=2, hidden_size=32, depth=2, num_heads=2,
                             attention_type="full", layouts=["full", "full"], cross_attention=True,
                             context_length=16)  # tokens: 2 x 4 x 4 of 8 x 8 pixels
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    frames[:2, 17:23, 25:31] = (230, 40, 40)  # a red square in row 3, column 4 of slot 1
    frames[2:, 2:7, 2:7] = (230, 40, 40)
    assert wa.default_query(frames, geometry) == (0, 2, 3)
    patches = wa.object_patches(frames, geometry)
    assert patches[0, 2, 3] and patches[1, 0, 0] and patches.sum() == 2
    assert wa.default_query(np.full_like(frames, 128), geometry) == (0, 2, 2)  # nothing there: the centre


# --- the app ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    _, built = app.build_demo(tiny_pipeline(), "tiny test model")
    built.output_root = tmp_path_factory.mktemp("app-out")
    return built


def test_the_word_view_renders_every_choice(tiny_app, record):
    choice, slider, heat, md, rows = tiny_app.word_inside(record)
    words = wa.group_words(record.tokens)
    assert [label for label, _ in choice.choices] == wa.word_labels(words)
    assert choice.value == [w.text for w in words].index("circle") and slider.maximum == STEPS
    assert isinstance(heat, Image.Image) and isinstance(rows, Image.Image)
    assert '"circle"' in md and "iteration 3 of 3" in md and "start and end tokens" in md
    for block in ("mean", 0, "1"):
        for head in ("mean", 1):
            heat, md = tiny_app.word_attention(record, 2, block, 1, head)
            assert isinstance(heat, Image.Image) and "iteration 1 of 3" in md
    assert "Block 2, head 2" in tiny_app.word_attention(record, 0, 1, 2, 1)[1]
    summary = tiny_app.word_summary(record, "mean", STEPS)
    assert summary.height > len(words) * 30  # a row per word (and one for the start and end tokens)
    # The attention view's first query patch is on the object, as the word view finds it.
    assert tiny_app.attention(record, 1, "mean", STEPS, None)[4] == wa.default_query(record.frames[0],
                                                                                     record.geometry)


@pytest.mark.parametrize("call, message", [
    (lambda a, r: a.word_attention(None, 0, "mean", 1), "Generate a clip first"),
    (lambda a, r: a.word_attention(r, 99, "mean", 1), "Word"),
    (lambda a, r: a.word_attention(r, "star", "mean", 1), "Word"),
    (lambda a, r: a.word_attention(r, 0, 7, 1), "Layer"),
    (lambda a, r: a.word_attention(r, 0, "mean", 0), "Iteration"),
    (lambda a, r: a.word_attention(r, 0, "mean", 1, "head nine"), "Head"),
    (lambda a, r: a.word_summary(r, "all", 1), "Layer"),
])
def test_bad_word_view_inputs_raise_a_clear_gr_error(tiny_app, record, call, message):
    with pytest.raises(gr.Error, match=message):
        call(tiny_app, record)


def test_a_model_without_cross_attention_says_so(tmp_path):
    torch.manual_seed(0)
    model = TinyDiT(in_channels=4, num_frames=4, sample_size=8, patch_size=2, patch_size_t=2, hidden_size=32,
                    depth=2, num_heads=2, text_embed_dim=32, pooled_embed_dim=32, cross_attention=False)
    clip = tiny_clip()
    pipe = TinyDiTPipeline(vae=tiny_vae(), text_encoder=clip, tokenizer=clip.tokenizer, transformer=model.eval(),
                           scheduler=tiny_pipeline().scheduler)
    pipe.set_progress_bar_config(disable=True)
    record = record_run(pipe, PROMPT, num_inference_steps=2)
    plain = app.TinyDiTApp(pipe, "no cross-attention", output_dir=tmp_path)
    heat, md = plain.word_attention(record, 0, "mean", 2)
    assert heat is None and "no cross-attention" in md
    assert plain.word_inside(record)[2] is None and plain.word_summary(record, "mean", 2) is None


def test_word_attention_answers_through_gradio_client():
    from gradio_client import Client

    demo, served = app.build_demo(tiny_pipeline(), "tiny served model")
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=False, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict(PROMPT, 4.0, 2, 1, 0, api_name="/generate")
        kept = served.runs.total_bytes
        image, text = client.predict(2, "mean", 2, api_name="/word_attention")  # (word, block, iteration)
        assert Path(image).is_file() and "iteration 2 of 2" in text and "of the prompt" in text
        image, text = client.predict(0, 1, 1, "0", api_name="/word_attention")  # and a head
        assert "Block 2, head 1, iteration 1 of 2" in text
        assert served.runs.total_bytes == kept  # looking inside keeps nothing more per session
    finally:
        demo.close()


@pytest.mark.skipif(not (BUNDLE / "model_index.json").is_file(), reason="no bundled model")
def test_the_word_view_works_on_the_bundled_model(tmp_path):
    pipe = TinyDiTPipeline.from_pretrained(str(BUNDLE))
    pipe.set_progress_bar_config(disable=True)
    record = record_run(pipe, "a yellow star moving left on a black background", num_inference_steps=4)
    bundled = app.TinyDiTApp(pipe, "bundled", output_dir=tmp_path)
    choice, _, heat, md, rows = bundled.word_inside(record)
    assert choice.value == 2 and '"star"' in md and heat.width > 400 and rows.height > 9 * 60
    assert bundled.attention(record, 5, "mean", 4, None)[4] == wa.default_query(record.frames[0], record.geometry)


def test_a_word_has_two_keys_for_a_dit_with_word_embeddings():
    """With word_embeddings the text keys are L states then L words: a word's attention is read at p and p + L
    ("both" adds them), and with L keys only at p, whatever the source asked for."""
    from tiny_dit.inside.word_attention import source_positions

    assert source_positions([2, 3], num_keys=64, context_length=32, source="both") == [2, 3, 34, 35]
    assert source_positions([2, 3], num_keys=64, context_length=32, source="words") == [34, 35]
    assert source_positions([2, 3], num_keys=64, context_length=32, source="states") == [2, 3]
    assert source_positions([2, 3], num_keys=32, context_length=32, source="words") == [2, 3]
    with pytest.raises(ValueError, match="source"):
        source_positions([2], num_keys=64, context_length=32, source="pooled")
