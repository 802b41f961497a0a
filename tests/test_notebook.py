"""train_small.ipynb runs from top to bottom in smoke mode (TINY_DIT_SMOKE=1) and leaves a loadable pipeline.

The notebook is executed with nbclient in a kernel of the interpreter running the tests (a kernelspec
installed into a temporary folder, so no other Jupyter installation is picked up), with the repository
root as working directory and everything it writes under a temporary TINY_DIT_OUT. The bundled
assets/tiny-clip and assets/tiny-autoencoder are used when they exist; otherwise randomly initialised
stand-ins of the same configuration are passed through TINY_DIT_CLIP / TINY_DIT_AUTOENCODER.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "train_small.ipynb"
KERNEL_NAME = "tiny-dit-test"


def encoder_paths(tmp_path: Path) -> dict[str, str]:
    """Environment variables pointing the notebook at stand-in encoders where the bundled ones are missing."""
    from tiny_dit.autoencoder import tiny_autoencoder
    from tiny_dit.text_encoder import CLIPEncoder

    env = {}
    if not (REPO / "assets" / "tiny-clip" / "open_clip_config.json").is_file():
        torch.manual_seed(0)
        CLIPEncoder().eval().save_pretrained(tmp_path / "clip")  # the bundled CLIP's config, random weights
        env["TINY_DIT_CLIP"] = str(tmp_path / "clip")
    if not (REPO / "assets" / "tiny-autoencoder" / "config.json").is_file():
        torch.manual_seed(0)
        tiny_autoencoder().save_pretrained(tmp_path / "autoencoder")
        env["TINY_DIT_AUTOENCODER"] = str(tmp_path / "autoencoder")
    return env


def test_notebook_is_valid_and_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    source = "\n".join(cell.source for cell in code)
    for needed in ("REPO_URL", "requirements-core.txt", "TINY_DIT_SMOKE", "tiny_dit.training.train.main",
                   "build_latent_cache", "push_to_hub", "TinyDiTPipeline.from_pretrained", "TINY_DIT_MODEL"):
        assert needed in source, needed


def write_videofolder(root: Path) -> None:
    """Three small clips of different sizes and lengths with free-form captions, and a corrupt file."""
    from test_real_clips import moving_pattern
    from tiny_dit.video import write_mp4

    root.mkdir()
    records = []
    for i, (t, h, w, text) in enumerate([(10, 48, 80, "a white square drifts right over a blue gradient"),
                                         (20, 100, 60, "A ball bouncing, filmed from far away!"),
                                         (3, 64, 64, "red stripes scrolling down")]):
        write_mp4(root / f"clip-{i}.mp4", moving_pattern(t, h, w, seed=i))
        records.append({"file_name": f"clip-{i}.mp4", "text": text})
    (root / "broken.mp4").write_bytes(b"not a video" * 50)
    records.append({"file_name": "broken.mp4", "text": "broken"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("data", ["shapes", "videofolder"])
def test_notebook_runs_in_smoke_mode(data, tmp_path, monkeypatch):
    from ipykernel.kernelspec import install

    # A kernel of exactly this interpreter, found before any other through JUPYTER_PATH.
    install(kernel_name=KERNEL_NAME, prefix=str(tmp_path / "kernel"))
    spec = json.loads((tmp_path / "kernel" / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "kernel" / "share" / "jupyter"))

    out = tmp_path / "out"
    for name, value in {"TINY_DIT_SMOKE": "1", "TINY_DIT_OUT": str(out), "HF_HUB_OFFLINE": "1",
                        "OMP_NUM_THREADS": "1", **encoder_paths(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    for name in ("TINY_DIT_HUB_REPO", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TINY_DIT_DATA", data)
    if data == "videofolder":
        write_videofolder(tmp_path / "clips")
        monkeypatch.setenv("TINY_DIT_VIDEOFOLDER", str(tmp_path / "clips"))

    default_out_existed = (REPO / "runs" / "notebook").exists()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=600,
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "smoke mode" in text
    assert "not pushing to the Hub" in text  # smoke mode never pushes
    assert html.count("<video") >= 6  # data, reconstruction, 2 training samples, 2 guidance scales
    assert "step-000010" in html and "step-000020" in html  # samples shown while training
    if data == "shapes":
        assert "held-out" in text and "frame" in text and "clip" in text  # the evaluation table
    else:
        assert "skipped 1 unreadable clip(s) of 4" in text and "CLIP score" in text

    # Everything was written under TINY_DIT_OUT: the run (20 steps of the tiny preset) and its pipeline.
    run = out / f"dit-tiny-{data}"
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()][-1] == 20
    from tiny_dit.pipeline import TinyDiTPipeline

    for folder in (run / "pipeline", out / "tiny-dit-pipeline"):
        pipe = TinyDiTPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        assert pipe.transformer.config.hidden_size == 32 and pipe.default_size() == (16, 128, 128)
        frames = pipe("a red circle moving left on a black background", num_inference_steps=1,
                      generator=torch.Generator().manual_seed(0)).frames
        assert frames.shape == (1, 16, 128, 128, 3) and np.isfinite(frames).all()
    assert (REPO / "runs" / "notebook").exists() == default_out_existed  # nothing written into the repo
