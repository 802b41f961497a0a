"""python -m tiny_dit.sample writes browser-playable mp4 clips and a grid; make_grid tiles clips."""

from pathlib import Path

import numpy as np
import pytest
import torch

from test_pipeline import FRAMES, PROMPT, SIZE, tiny_pipeline
from tiny_dit.sample import main
from tiny_dit.video import make_grid, probe_mp4, read_mp4

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample") / "pipeline"
    tiny_pipeline().save_pretrained(folder)
    return folder


def test_cli_writes_playable_clips_and_a_grid(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    paths = main(["--model", str(model_dir), "--prompt", PROMPT, "--num-videos", "3", "--steps", "2",
                  "--guidance", "3", "--seed", "5", "--out", str(out), "--threads", "1"])
    names = ["sample-00.mp4", "sample-01.mp4", "sample-02.mp4", "grid.mp4"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    printed = capsys.readouterr().out
    assert str(out) in printed and "time:" in printed

    for name in names[:3]:
        info = probe_mp4(out / name)
        assert info == {"codec": "h264", "pix_fmt": "yuv420p", "size": (SIZE, SIZE), "fps": 8.0,
                        "num_frames": FRAMES, "faststart": True}, name
    grid = probe_mp4(out / "grid.mp4")  # 3 clips: 2 x 2 grid with 2 px between clips
    assert grid["codec"] == "h264" and grid["pix_fmt"] == "yuv420p"
    assert grid["size"] == (2 * SIZE + 2, 2 * SIZE + 2) and grid["num_frames"] == FRAMES

    # The files hold the pipeline's clips for that seed (up to H.264 compression).
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(PROMPT, num_inference_steps=2, guidance_scale=3.0, num_videos_per_prompt=3,
                    generator=torch.Generator().manual_seed(5)).frames * 255
    for i in range(3):
        frames, fps = read_mp4(out / f"sample-{i:02d}.mp4")
        assert frames.shape == (FRAMES, SIZE, SIZE, 3) and fps == 8.0
        assert np.abs(frames.astype(np.float32) - expected[i]).mean() < 3, i  # clips differ by ~4
    other = np.abs(read_mp4(out / "sample-01.mp4")[0].astype(np.float32) - expected[0]).mean()
    assert other > np.abs(read_mp4(out / "sample-00.mp4")[0].astype(np.float32) - expected[0]).mean()


def test_several_prompts_a_row_each_and_a_gif(model_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    paths = main(["--model", str(model_dir), "--prompt", PROMPT, "--prompt", "a blue star", "--num-videos", "2",
                  "--steps", "1", "--out", str(out), "--gif", str(tmp_path / "grid.gif"), "--threads", "1"])
    assert [p.name for p in paths][-2:] == ["grid.mp4", "grid.gif"] and len(paths) == 6
    assert probe_mp4(out / "grid.mp4")["size"] == (2 * SIZE + 2, 2 * SIZE + 2)  # 2 prompts x 2 clips
    gif = Image.open(tmp_path / "grid.gif")
    assert gif.size == (2 * SIZE + 2, 2 * SIZE + 2) and gif.n_frames == FRAMES


def test_cli_errors_are_clear(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no assets/tiny-dit-shapes here
    with pytest.raises(SystemExit, match="no model at assets/tiny-dit-shapes.*python -m tiny_dit.training.train"):
        main(["--prompt", PROMPT])
    with pytest.raises(SystemExit, match="num_videos_per_prompt must be an integer from 1 to 36"):
        main(["--model", str(model_dir), "--prompt", PROMPT, "--num-videos", "0"])
    with pytest.raises(SystemExit, match="no pipeline folder"):
        main(["--model", str(tmp_path / "nothing" / "here"), "--prompt", PROMPT])
    assert not (tmp_path / "samples").exists()


def test_make_grid_tiles_clips_in_reading_order():
    clips = np.stack([np.full((2, 4, 6, 3), 10 * (i + 1), dtype=np.uint8) for i in range(5)])  # (5, 2, 4, 6, 3)
    grid = make_grid(clips)  # 5 clips: 3 columns, 2 rows
    assert grid.shape == (2, 2 * 4 + 2, 3 * 6 + 2 * 2, 3) and grid.dtype == np.uint8
    assert (grid[:, 0:4, 0:6] == 10).all() and (grid[:, 0:4, 8:14] == 20).all() and (grid[:, 0:4, 16:22] == 30).all()
    assert (grid[:, 6:10, 0:6] == 40).all() and (grid[:, 6:10, 8:14] == 50).all()
    assert (grid[:, 6:10, 16:22] == 0).all() and (grid[:, 4:6] == 0).all() and (grid[:, :, 6:8] == 0).all()
    assert make_grid(clips[:4]).shape == (2, 10, 14, 3)  # 2 x 2
    assert make_grid(clips[:1]).shape == (2, 4, 6, 3)  # one clip is itself
    np.testing.assert_array_equal(make_grid(clips[:1]), clips[0])
    assert make_grid(clips, ncols=5, padding=0).shape == (2, 4, 30, 3)
    with pytest.raises(ValueError):
        make_grid(clips[0])


# --- any length and size, known frames (--image, --video, --frame-index) -------------------


def test_cli_one_frame_writes_images_and_other_sizes_work(model_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "stills"
    paths = main(["--model", str(model_dir), "--prompt", "a red star on a black background", "--num-frames", "1",
                  "--num-videos", "2", "--steps", "1", "--out", str(out), "--threads", "1"])
    assert [p.name for p in paths] == ["sample-00.png", "sample-01.png", "grid.png"]
    assert Image.open(out / "sample-00.png").size == (SIZE, SIZE)
    assert "wrote 2 images" in capsys.readouterr().out
    main(["--model", str(model_dir), "--prompt", PROMPT, "--num-frames", "3", "--width", "48", "--num-videos", "1",
          "--steps", "1", "--out", str(tmp_path / "wide"), "--threads", "1"])
    info = probe_mp4(tmp_path / "wide" / "sample-00.mp4")
    assert info["size"] == (48, SIZE) and info["num_frames"] == 3
    # Without --width/--height the clip takes the size of the given frames.
    Image.fromarray(np.zeros((48, SIZE, 3), dtype=np.uint8)).save(tmp_path / "tall.png")
    main(["--model", str(model_dir), "--prompt", PROMPT, "--image", str(tmp_path / "tall.png"), "--num-frames", "2",
          "--num-videos", "1", "--steps", "1", "--out", str(tmp_path / "tall"), "--threads", "1"])
    assert probe_mp4(tmp_path / "tall" / "sample-00.mp4")["size"] == (SIZE, 48)


def test_cli_holds_an_image_and_a_clip_at_their_frame_indices(model_dir, tmp_path):
    from PIL import Image

    from tiny_dit.autoencoder import decode_latents, encode_clips
    from tiny_dit.video import write_mp4

    rng = np.random.default_rng(0)
    clip = np.repeat(rng.integers(0, 256, (1, SIZE // 8, SIZE // 8, 3), dtype=np.uint8), 8, axis=1)
    clip = np.repeat(np.repeat(clip, 8, axis=2), 2, axis=0)  # 2 frames of 8-px blocks: survive H.264
    write_mp4(tmp_path / "clip.mp4", clip)
    image = np.full((SIZE, SIZE, 3), (200, 40, 40), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    out = tmp_path / "out"
    main(["--model", str(model_dir), "--prompt", PROMPT, "--num-frames", "6", "--num-videos", "1", "--steps", "2",
          "--video", str(tmp_path / "clip.mp4"), "--frame-index", "0", "--image", str(tmp_path / "image.png"),
          "--frame-index", "-1", "--out", str(out), "--threads", "1"])
    frames = read_mp4(out / "sample-00.mp4")[0].astype(np.float32)
    assert frames.shape == (6, SIZE, SIZE, 3)
    pipe = tiny_pipeline()
    given = torch.from_numpy(np.concatenate([read_mp4(tmp_path / "clip.mp4")[0], image[None]]))
    expected = decode_latents(pipe.vae, encode_clips(pipe.vae, given[None]))[0].numpy() * 255  # the round trip
    assert np.abs(frames[[0, 1, 5]] - expected).mean() < 3  # up to H.264 compression


def test_cli_condition_errors_name_the_option(model_dir, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / "image.png")
    Image.fromarray(np.zeros((48, SIZE, 3), dtype=np.uint8)).save(tmp_path / "tall.png")
    base = ["--model", str(model_dir), "--prompt", PROMPT, "--steps", "1", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="2 --frame-index for 1 --image/--video"):
        main(base + ["--image", str(tmp_path / "image.png"), "--frame-index", "0", "--frame-index", "1"])
    with pytest.raises(SystemExit, match="--video .*missing.mp4: no such file"):
        main(base + ["--video", str(tmp_path / "missing.mp4")])
    with pytest.raises(SystemExit, match=r"conditions\[1\].frame_index=40 is outside the 4-frame clip.*"
                                         r"conditions\[1\] is --image .*image.png"):
        main(base + ["--image", str(tmp_path / "image.png"), "--image", str(tmp_path / "image.png"),
                     "--frame-index", "0", "--frame-index", "40"])
    with pytest.raises(SystemExit, match="frames are 32x48 .* but the clip is 32x32"):
        main(base + ["--image", str(tmp_path / "tall.png"), "--width", "32"])
    with pytest.raises(SystemExit, match="could not be read"):
        (tmp_path / "bad.png").write_text("not an image")
        main(base + ["--image", str(tmp_path / "bad.png")])
    assert not (tmp_path / "out").exists()
