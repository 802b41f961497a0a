"""The bundled tiny CLIP and tiny autoencoder load offline and do their jobs;
the pretrained-model code paths work on small local stand-ins."""

import open_clip
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from tiny_dit.autoencoder import decode_latents, encode_clips, load_autoencoder, spatial_downsample
from tiny_dit.data.shapes import render_dataset
from tiny_dit.training.evaluate import attribute_choice_accuracy, autoencoder_psnr, caption_cosines
from tiny_dit.text_encoder import CLIPEncoder, OpenCLIPTokenizer

CLIP_PATH, AUTOENCODER_PATH = "assets/tiny-clip", "assets/tiny-autoencoder"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def clip():
    return CLIPEncoder.from_pretrained(CLIP_PATH)


@pytest.fixture(scope="module")
def vae():
    return load_autoencoder(AUTOENCODER_PATH)


# -- tiny CLIP -------------------------------------------------------------------

def test_tiny_clip_tells_the_attributes_apart_on_fresh_clips(clip):
    """On clips it never saw, each attribute picked among its alternatives, seen and held-out colour-shape
    pairs (thresholds a little below the figures in docs/world-and-encoders.md, measured on 512 clips)."""
    seen = attribute_choice_accuracy(clip, num_clips=96, seed=4321, split="train")
    assert min(seen.values()) >= 0.95, seen  # measured: colour 98.6-100%, shape 99-100%, motion, background 100%
    held_out = attribute_choice_accuracy(clip, num_clips=96, seed=4321, split="heldout")
    assert held_out["shape"] >= 0.8, held_out  # measured 90.6% on 512 clips: held-out shape is the hard one
    assert min(held_out[a] for a in ("color", "motion", "background")) >= 0.95, held_out


def test_tiny_clip_keeps_shape_words_apart():
    """Captions that differ only in the shape word are no longer the closest pairs (the first tiny CLIP: 0.73,
    above colour's 0.54 and motion's 0.52)."""
    cosines = caption_cosines(CLIPEncoder.from_pretrained(CLIP_PATH))
    assert cosines["shape"] < 0.7, cosines


def test_tiny_clip_is_an_open_clip_folder():
    model = open_clip.create_model("local-dir:" + CLIP_PATH)
    tokenizer = open_clip.get_tokenizer("local-dir:" + CLIP_PATH)
    with torch.no_grad():
        feats = model.encode_text(tokenizer(["a red circle moving left on a black background"]))
    assert feats.shape == (1, 128)


def test_text_embeddings_for_the_dit(clip):
    with torch.no_grad():
        emb = clip.encode_text(["a red circle moving left on a black background", ""])
    L = clip.context_length
    assert emb.pooled.shape == (2, 128) and emb.hidden_states.shape == (2, L, 128)
    assert emb.mask[1].sum() == 2, "the empty prompt is just start and end tokens"
    assert emb.mask[0].sum() > 5
    assert not torch.allclose(emb.pooled[0], emb.pooled[1])


def test_long_prompt_truncated_with_warning(clip):
    with pytest.warns(UserWarning, match="truncated"):
        emb = clip.encode_text(["a red circle " * 30])
    assert emb.hidden_states.shape[1] == clip.context_length


def test_pretrained_clip_offline_is_a_clear_error():
    with pytest.raises(OSError, match="network"):
        CLIPEncoder.from_pretrained("ViT-B-32", pretrained="laion2b_s34b_b79k")


def test_clip_save_load_round_trip(tmp_path):
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 16,
                                           "head_width": 8},
           "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    a = CLIPEncoder(cfg).eval()
    a.save_pretrained(tmp_path)
    b = CLIPEncoder.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(a.encode_text("a blue star").pooled, b.encode_text("a blue star").pooled)
    # Stored in float16 (as the bundled CLIP is): half the bytes, and saving is then idempotent.
    CLIPEncoder(cfg, weights_dtype="float16").save_pretrained(tmp_path / "half")
    half = CLIPEncoder.from_pretrained(tmp_path / "half")
    assert half.config.weights_dtype == "float16"
    assert (tmp_path / "half" / "open_clip_model.safetensors").stat().st_size < \
        0.6 * (tmp_path / "open_clip_model.safetensors").stat().st_size
    half.save_pretrained(tmp_path / "half2")
    assert all(torch.equal(x, y) for x, y in zip(half.parameters(),
                                                  CLIPEncoder.from_pretrained(tmp_path / "half2").parameters()))
    tok = OpenCLIPTokenizer(context_length=8)
    tok.save_pretrained(tmp_path / "tok")
    assert torch.equal(OpenCLIPTokenizer.from_pretrained(tmp_path / "tok")("hi"), tok("hi"))


# -- tiny autoencoder ------------------------------------------------------------

def test_tiny_autoencoder_reconstructs_held_out_pairs(vae):
    psnr = autoencoder_psnr(vae, num_clips=8, seed=77, split="heldout")
    assert psnr >= 33, psnr  # measured 35.4 dB on 64 held-out clips


def test_latents_are_normalised(vae):
    frames, _ = next(render_dataset(16, seed=5, split="train", batch_size=16))
    latents = encode_clips(vae, frames)
    assert latents.shape == (16, 4, 16, 32, 32)
    assert abs(latents.mean().item()) < 0.2 and 0.75 < latents.std().item() < 1.25
    recon = decode_latents(vae, latents[:2])
    assert recon.shape == (2, 16, 128, 128, 3) and 0 <= recon.min() and recon.max() <= 1


@pytest.mark.parametrize("kind", ["kl", "tiny"])
def test_pretrained_autoencoder_route_on_local_stand_in(tmp_path, kind):
    """The code path for SD's VAE (AutoencoderKL) or TAESD (AutoencoderTiny) by repo id,
    exercised on a small local save_pretrained folder."""
    if kind == "kl":
        ae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                           norm_num_groups=8, scaling_factor=0.18215,
                           down_block_types=("DownEncoderBlock2D",) * 4,
                           up_block_types=("UpDecoderBlock2D",) * 4)
    else:
        ae = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                             num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    ae.save_pretrained(tmp_path / "vae")
    loaded = load_autoencoder(tmp_path / "vae")
    assert type(loaded) is type(ae) and spatial_downsample(loaded) == 8
    frames, _ = next(render_dataset(1, seed=0, batch_size=1))
    latents = encode_clips(loaded, frames[:, :2])
    assert latents.shape == (1, 4, 2, 16, 16)
    assert decode_latents(loaded, latents).shape == (1, 2, 128, 128, 3)


def test_unreachable_autoencoder_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="network"):
        load_autoencoder("someone/no-such-vae")
