"""tiny_dit.training.train as two cooperating processes on the CPU (torchrun, gloo), as docs/training.md's
"Training on several processes or GPUs" runs it: both processes take part, one of them writes
the run folder, a stopped run resumes exactly, and launches that would quietly run one process
(or several that do not cooperate) say so."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed

from test_train import auto_precision, cache_dir  # noqa: F401  (cache_dir: the tiny latent cache fixture)
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.training.loop import FIXED_PROBE_FIGURES, PROBE_ENV
from tiny_dit.training.train import check_process_count, main

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="needs torch.distributed with the gloo backend")

# Short runs: 2 clips per process and step, no sample clips, a checkpoint every 2 steps; --mixed-precision auto
# (the default), which the probe's fixed answer ($TINY_DIT_PRECISION_PROBE, tests/conftest.py) settles alike in
# every launch.
ARGS = ("--preset", "tiny", "--threads", "1", "--lr", "3e-3", "--warmup", "2",
        "--batch-size", "2", "--log-every", "2", "--checkpoint-every", "2", "--sample-every", "0", "--sample-steps", "1",
        "--num-samples", "1")


def launch(launcher: list[str], cache: Path, out: Path, *extra: str, use_cpu: bool = True,
           probe: str | None = None) -> str:
    """Run `launcher -m tiny_dit.training.train` in a subprocess; its stdout and stderr together. probe: the
    precision probe's answer in its processes (default: this process's)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if probe is not None:
        env[PROBE_ENV] = probe
    for name in ("ACCELERATE_USE_CPU", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    result = subprocess.run([sys.executable, *launcher, "-m", "tiny_dit.training.train", "--cache", str(cache),
                             "--out", str(out), *ARGS, *extra],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # a free port of its own


@pytest.fixture(scope="module", params=sorted(FIXED_PROBE_FIGURES))
def runs(request, cache_dir, tmp_path_factory):  # noqa: F811
    """A two-process run of 6 steps, and the same run stopped after 4 steps and resumed to 6: once where the
    precision probe finds bfloat16 faster (they train in bf16), once where it finds it slower (float32)."""
    probe = request.param
    root = tmp_path_factory.mktemp(f"distributed-{probe}")
    straight = launch(TORCHRUN, cache_dir, root / "straight", "--steps", "6", probe=probe)
    first = launch(TORCHRUN, cache_dir, root / "run", "--steps", "4", probe=probe)
    shutil.copytree(root / "run", root / "at-step-4")
    resumed = launch(TORCHRUN, cache_dir, root / "run", "--steps", "6", "--resume", probe=probe)
    return {"root": root, "straight": straight, "first": first, "resumed": resumed, "probe": probe,
            "precision": auto_precision(probe)}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_both_processes_take_part_and_one_writes_the_run(runs):
    root = runs["root"]
    assert "training on 2 processes (MULTI_CPU, cpu)" in runs["straight"]
    # The main process resolved the precision (once: the others were told) and the run records it.
    assert runs["straight"].count(f"precision: {runs['precision']} (--mixed-precision auto") == 1
    assert json.loads((root / "straight" / "args.json").read_text())["mixed_precision"] == runs["precision"]
    state = load(root / "straight" / "checkpoint.pt")
    assert state["step"] == 6
    # One RNG entry per process, gathered from both: their batch and noise streams differ.
    assert len(state["rng"]) == 2
    for name in ("batch_generator", "noise_generator"):
        assert not torch.equal(state["rng"][0][name], state["rng"][1][name]), name
    # One log, written once (by the main process), with the loss averaged over the processes.
    log = (root / "straight" / "log.jsonl").read_text().splitlines()
    assert [line.split(",")[0] for line in log] == ['{"step": 2', '{"step": 4', '{"step": 6']
    # One pipeline, saved once, holding the EMA weights.
    assert runs["straight"].count("saved the pipeline") == 1
    names = {p.name for p in (root / "straight").iterdir()}
    assert {"args.json", "checkpoint.pt", "log.jsonl", "pipeline"} <= names and "pipeline.tmp" not in names
    pipe = TinyDiTPipeline.from_pretrained(root / "straight" / "pipeline")
    for name, value in pipe.transformer.state_dict().items():
        assert torch.equal(value, state["ema"][name]), name


def test_a_stopped_two_process_run_resumes_exactly(runs):
    root = runs["root"]
    assert load(root / "at-step-4" / "checkpoint.pt")["step"] == 4
    assert "resumed" in runs["resumed"] and "at step 4" in runs["resumed"]
    assert "warning" not in runs["resumed"]
    assert json.loads((root / "run" / "args.json").read_text())["mixed_precision"] == runs["precision"]
    straight, resumed = load(root / "straight" / "checkpoint.pt"), load(root / "run" / "checkpoint.pt")
    assert resumed["step"] == 6 and len(resumed["rng"]) == 2
    for key in ("model", "ema"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
    for a, b in zip(straight["rng"], resumed["rng"]):
        assert torch.equal(a["batch_generator"], b["batch_generator"])
        assert torch.equal(a["noise_generator"], b["noise_generator"])


def test_one_process_continues_a_two_process_checkpoint_and_says_how(runs, cache_dir, capsys,  # noqa: F811
                                                                    monkeypatch):
    monkeypatch.setenv(PROBE_ENV, runs["probe"])  # in this process, as the run had it
    out = runs["root"] / "at-step-4"
    before = load(out / "checkpoint.pt")
    main(["--cache", str(cache_dir), "--out", str(out), *ARGS, "--steps", "6", "--resume"])
    printed = capsys.readouterr().out
    assert (f"warning: {out / 'checkpoint.pt'} was written by 2 processes, this run has 1: the weights, EMA, "
            "optimiser, LR schedule and step carry over") in printed
    assert "restart from --seed" in printed and "--batch-size x 1" in printed
    assert "at step 4" in printed
    after = load(out / "checkpoint.pt")
    assert after["step"] == 6 and len(after["rng"]) == 1  # from now on a one-process run
    assert any(not torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert (out / "pipeline").is_dir()


def test_accelerate_launch_cpu_with_several_processes_warns_that_it_runs_one(cache_dir, tmp_path):  # noqa: F811
    output = launch(["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no"],
                    cache_dir, tmp_path / "run", "--steps", "2", use_cpu=False)
    assert "warning: `accelerate launch` was asked for several processes but started this one only" in output
    assert "ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N" in output
    assert len(load(tmp_path / "run" / "checkpoint.pt")["rng"]) == 1  # what it warned about


def test_check_process_count():
    # A real several-process launch, a plain one-process run, and a one-process accelerate launch.
    assert check_process_count(2, {"WORLD_SIZE": "2", "ACCELERATE_USE_CPU": "1", "MASTER_ADDR": "localhost"}) is None
    assert check_process_count(1, {}) is None
    assert check_process_count(1, {"ACCELERATE_USE_CPU": "False"}) is None  # accelerate launch, 1 process asked
    assert check_process_count(1, {"WORLD_SIZE": "1", "MASTER_ADDR": "localhost", "ACCELERATE_USE_CPU": "1"}) is None
    # accelerate launch --cpu --num_processes 2 (or no GPUs): one process, MASTER_ADDR set, no WORLD_SIZE.
    warning = check_process_count(1, {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1",
                                      "MASTER_PORT": "29500"})
    assert warning.startswith("warning:") and "ACCELERATE_USE_CPU=1 torchrun" in warning
    # torchrun (or accelerate launch --multi_gpu) without GPUs or ACCELERATE_USE_CPU: two lone processes.
    with pytest.raises(RuntimeError, match="started 2 processes .* ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2"):
        check_process_count(1, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost"})
