"""tiny_dit.training: the one training loop. A run stopped and resumed ends where an unbroken one does."""

import argparse
import json

import pytest
import torch

from tiny_dit.training import JsonlLog, step_seed, train_simple


def toy_run(run_dir, steps: int, resume: bool = False, stop_after: int | None = None) -> torch.nn.Module:
    """A linear model fitted to data drawn from (seed, step), as the CLIP and the autoencoder draw theirs."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    target = torch.tensor([[1.0, -2.0, 0.5, 3.0]])

    def loss_fn(step: int):
        if stop_after is not None and step == stop_after:
            raise KeyboardInterrupt  # killed here
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step_seed(0, step)))
        loss = (model(x) - x @ target.T).square().mean()
        return loss, {"mean_x": round(float(x.mean()), 4)}

    args = argparse.Namespace(run_dir=run_dir, steps=steps, lr=0.05, warmup=2, resume=resume)
    train_simple(model, loss_fn, args, throughput=("examples_per_s", 8), desc="toy")
    return model


def test_a_stopped_and_resumed_run_ends_like_an_unbroken_one(tmp_path):
    straight = toy_run(tmp_path / "straight", steps=400)
    with pytest.raises(KeyboardInterrupt):
        toy_run(tmp_path / "resumed", steps=400, stop_after=250)  # last checkpoint: step 200
    with pytest.raises(FileExistsError, match="--resume"):
        toy_run(tmp_path / "resumed", steps=400)  # a new run never overwrites a checkpoint
    resumed = toy_run(tmp_path / "resumed", steps=400, resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert straight.weight.sub(torch.tensor([[1.0, -2.0, 0.5, 3.0]])).abs().max() < 0.05  # it learned
    # The log has every step once (the steps redone after the checkpoint are not doubled), with the
    # loop's fields and the loss function's own.
    records = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(10, 401, 10))
    assert {"loss", "lr", "grad_norm", "seconds_per_step", "examples_per_s", "mean_x"} <= set(records[-1])


def test_jsonl_log_drops_the_steps_a_resumed_run_redoes(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    for step in (10, 20, 30):
        log.write(step=step, loss=1.0)
    log.drop_after(20)
    assert [json.loads(line)["step"] for line in log.path.read_text().splitlines()] == [10, 20]
    log.drop_after(0)
    assert log.path.read_text() == ""
