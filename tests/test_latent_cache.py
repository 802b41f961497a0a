"""The latent cache stores what the autoencoder and CLIP make of each clip."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny

import tiny_dit.training.loop
from tiny_dit.training import latent_cache
from tiny_dit.autoencoder import encode_clips
from tiny_dit.data.shapes import render_clips, sample_clip_specs
from tiny_dit.training.latent_cache import LatentCache, build_latent_cache, shapes_source, videofolder_source
from tiny_dit.text_encoder import CLIPEncoder
from tiny_dit.data.videofolder import VideoFolder
from tiny_dit.video import write_mp4

TINY_CLIP_CFG = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                          num_encoder_blocks=(0, 1, 1), num_decoder_blocks=(1, 1, 0)).eval()
    return CLIPEncoder(TINY_CLIP_CFG).eval(), vae


def test_build_and_load_shapes_cache(tmp_path, encoders):
    clip, vae = encoders
    summary = build_latent_cache(tmp_path, shapes_source(5, seed=1, batch_size=2), clip, vae,
                                 total=5, shard_size=2, info={"clip": "x"})
    assert summary["num_clips"] == 5 and len(summary["shards"]) == 3
    for name in [*summary["shards"], "uncond.safetensors"]:  # readable by others, like any data file
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    cache = LatentCache.load(tmp_path)
    assert len(cache) == 5 and cache.latents.shape == (5, 4, 16, 32, 32)
    assert cache.latents.dtype == torch.float16
    assert cache.pooled.shape == (5, 32) and cache.hidden_states.shape == (5, 16, 32)
    assert cache.mask.dtype == torch.bool and cache.uncond.mask.sum() == 2  # start + end token
    specs = sample_clip_specs(5, seed=1)
    assert cache.captions == [s.text for s in specs]
    expected = encode_clips(vae, render_clips(specs[:1])).half()
    assert torch.allclose(cache.latents[:1].float(), expected.float(), atol=1e-3)
    with torch.no_grad():
        emb = clip.encode_text(cache.captions[3])
    assert torch.allclose(cache.pooled[3].float(), emb.pooled[0], atol=1e-2)
    lines = (tmp_path / "captions.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["shape"] == specs[0].shape


def test_videofolder_cache_skips_corrupt_files(tmp_path, encoders):
    clip, vae = encoders
    root = tmp_path / "clips"
    root.mkdir()
    write_mp4(root / "a.mp4", np.full((20, 72, 96, 3), 200, dtype=np.uint8))
    (root / "b.mp4").write_bytes(b"\x00garbage" * 64)
    (root / "metadata.jsonl").write_text('{"file_name": "a.mp4", "text": "a grey wall"}\n'
                                         '{"file_name": "b.mp4", "text": "broken"}\n')
    folder = VideoFolder(root, num_frames=8, size=64)
    with pytest.warns(UserWarning, match="b.mp4"):
        summary = build_latent_cache(tmp_path / "cache", videofolder_source(folder), clip, vae)
    assert summary["num_clips"] == 1 and folder.num_skipped == 1
    cache = LatentCache.load(tmp_path / "cache")
    assert cache.latents.shape == (1, 4, 8, 16, 16) and cache.captions == ["a grey wall"]


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="latent_cache"):
        LatentCache.load(tmp_path)


def test_cli_help(capsys):
    with pytest.raises(SystemExit):
        latent_cache.main(["--help"])
    assert "--videofolder" in capsys.readouterr().out


def test_bf16_encoding_is_close_to_float32(tmp_path, encoders):
    clip, vae = encoders
    a = build_latent_cache(tmp_path / "a", shapes_source(2, seed=3), clip, vae)
    b = build_latent_cache(tmp_path / "b", shapes_source(2, seed=3), clip, vae, bf16=True)
    la, lb = LatentCache.load(tmp_path / "a").latents.float(), LatentCache.load(tmp_path / "b").latents.float()
    assert a["num_clips"] == b["num_clips"] == 2
    assert (a["precision"], b["precision"]) == ("fp32", "bf16")  # cache.json says which
    assert not torch.equal(la, lb)  # bf16 really ran
    assert (la - lb).abs().max() < 0.1 * la.std() + 0.05


def test_still_captions_from_the_attributes():
    metadata = [{"text": "a red star moving left on a black background", "color": "red", "shape": "star",
                 "motion": "left", "background": "black"}, {"text": "a real clip of a dog"}]
    cache = LatentCache(torch.zeros(2, 1), None, None, None, None, [m["text"] for m in metadata], {}, metadata)
    stills = cache.still_captions()
    assert stills[0] == "a red star on a black background"  # phrasing 0 of the first clip
    assert stills[1] == "a real clip of a dog"  # no attributes: the clip's own caption


def test_still_captions_with_word_dropout():
    metadata = [{"text": "t", "color": "red", "shape": "star", "motion": "left", "background": "black"}] * 400
    cache = LatentCache(torch.zeros(400, 1), None, None, None, None, ["t"] * 400, {}, metadata)
    assert set(cache.still_captions()) <= {"a red star on a black background", "on a black background, a red star",
                                           "a black background with a red star", "red star, black background"}
    dropped = cache.still_captions(word_dropout=0.3, seed=0)
    assert dropped == cache.still_captions(word_dropout=0.3, seed=0)  # seeded
    without_colour = sum("red" not in c for c in dropped) / len(dropped)
    without_shape = sum("star" not in c for c in dropped) / len(dropped)
    assert 0.2 < without_colour < 0.4 and 0.2 < without_shape < 0.4
    assert any(c.startswith("a red shape") for c in dropped) and "a red star" in dropped


def test_cli_renders_other_lengths_and_sizes(tmp_path, encoders, monkeypatch):
    """--num-frames, --height and --width reach the renderer, and a size the autoencoder cannot take is refused."""
    clip, vae = encoders
    monkeypatch.setattr(latent_cache.CLIPEncoder, "from_pretrained", lambda *a, **k: clip)
    monkeypatch.setattr(latent_cache, "load_autoencoder", lambda *a, **k: vae)
    latent_cache.main(["--out", str(tmp_path / "wide"), "--num-clips", "3", "--num-frames", "8",
                       "--height", "128", "--width", "192"])
    cache = LatentCache.load(tmp_path / "wide")
    assert cache.latents.shape[2] == 8 and cache.latents.shape[4] / cache.latents.shape[3] == 1.5
    assert "8 x 128 x 192" in cache.info["source"]
    for bad in (["--width", "196"], ["--height", "64"], ["--num-frames", "1"]):
        with pytest.raises(SystemExit):
            latent_cache.main(["--out", str(tmp_path / "bad"), "--num-clips", "3", *bad])


def test_cli_precision_option_and_its_deprecated_bf16_alias(tmp_path, encoders, monkeypatch, capsys,
                                                            precision_probe):
    """--precision auto (the default) encodes in the faster by the measurement, a forced one as asked (with a
    warning when it is the slower), and the old --bf16 still means --precision bf16; cache.json records which
    ran. Where the probe finds bfloat16 faster and where it finds it slower."""
    clip, vae = encoders
    monkeypatch.setattr(latent_cache.CLIPEncoder, "from_pretrained", lambda *a, **k: clip)
    monkeypatch.setattr(latent_cache, "load_autoencoder", lambda *a, **k: vae)
    probes = []
    measure_precision = tiny_dit.training.loop.measure_precision

    def measure(device="cpu", probe=None):
        probes.append(probe)
        return measure_precision(device, probe)  # the probe's fixed answer

    monkeypatch.setattr(tiny_dit.training.loop, "measure_precision", measure)
    faster, slower = ("bf16", "fp32") if precision_probe == "bf16-faster" else ("fp32", "bf16")
    for name, extra, expected in (("auto", [], faster), ("forced", ["--precision", "bf16"], "bf16"),
                                  ("alias", ["--bf16"], "bf16"), ("fp32", ["--precision", "fp32"], "fp32")):
        latent_cache.main(["--out", str(tmp_path / name), "--num-clips", "1", "--num-frames", "2", *extra])
        assert LatentCache.load(tmp_path / name).info["precision"] == expected, name
        printed = capsys.readouterr().out
        assert (f"warning: --precision {slower} is 2.0x slower than {faster}" in printed) == (expected == slower), name
    assert probes[0] is not None and probes[0]().shape == (1, 4, 64, 32, 32)  # it times the autoencoder's encoding
    with pytest.raises(SystemExit):
        latent_cache.main(["--out", str(tmp_path / "bad"), "--precision", "fp16"])


def test_device_option(tmp_path, capsys, monkeypatch):
    """--device runs the encoders there (auto: a CUDA GPU if there is one); a GPU that is not there is a clear error."""
    latent_cache.main(["--out", str(tmp_path / "cpu"), "--num-clips", "1", "--num-frames", "2", "--device", "cpu"])
    assert LatentCache.load(tmp_path / "cpu").latents.device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1", "tpu"):
        with pytest.raises(SystemExit):
            latent_cache.main(["--out", str(tmp_path / "bad"), "--num-clips", "1", "--device", device])
        assert "--device" in capsys.readouterr().err


def test_shapes_caches_hold_word_embeddings_and_the_object_mask(tmp_path):
    """A shapes-world cache keeps each caption's word embeddings (for a DiT with word_embeddings) and how much
    of each latent pixel the object covers (for a loss weighted by it), both lined up with the clips."""
    from test_pipeline import tiny_clip, tiny_vae
    from tiny_dit.training.latent_cache import LatentCache, build_latent_cache, shapes_source

    clip, vae = tiny_clip(), tiny_vae()
    source = shapes_source(3, seed=2, batch_size=2, num_frames=4, mask_factor=4)
    build_latent_cache(tmp_path / "c", source, clip, vae, total=3)
    cache = LatentCache.load(tmp_path / "c")
    assert cache.word_embeddings.shape == cache.hidden_states.shape
    assert torch.allclose(cache.word_embeddings[0].float(),
                          clip.encode_text([cache.captions[0]]).word_embeddings[0], atol=1e-2)
    assert cache.object_mask.shape == (3, 4, 32, 32) and cache.object_mask.dtype == torch.uint8
    for mask, meta in zip(cache.object_mask, cache.metadata):  # an object, not the whole frame, in every frame
        share = mask.float().mean(dim=(1, 2)) / 255  # (T,)
        assert ((share > 0.01) & (share < 0.5)).all(), (meta, share)
        assert mask.max() == 255 and mask.min() == 0
