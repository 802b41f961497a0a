"""tiny_dit.training.loop: the one training loop. A run stopped and resumed ends where an unbroken one does."""

import argparse
import json

import pytest
import torch

import tiny_dit.training.loop
from tiny_dit.training.loop import (PROBE_ENV, JsonlLog, add_run_arguments, load_checkpoint, measure_precision,
                                    resolve_precision, step_seed, train_simple)


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

    args = argparse.Namespace(run_dir=run_dir, steps=steps, lr=0.05, warmup=2, resume=resume, precision="fp32")
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


def measured(monkeypatch, fp32_ms: float, bf16_ms: float) -> None:
    """resolve_precision sees these figures instead of timing the probe."""
    monkeypatch.setattr(tiny_dit.training.loop, "measure_precision",
                        lambda device="cpu", probe=None: {"fp32": fp32_ms, "bf16": bf16_ms})


def test_auto_precision_is_the_faster_by_the_measurement(monkeypatch, capsys):
    measured(monkeypatch, fp32_ms=412.0, bf16_ms=13.0)
    assert resolve_precision("auto") == "bf16"
    assert "precision: bf16 (--precision auto" in (line := capsys.readouterr().out)
    assert "bf16 13 ms, fp32 412 ms" in line and "warning" not in line
    measured(monkeypatch, fp32_ms=13.0, bf16_ms=412.0)  # bfloat16 emulated
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("auto", option="--mixed-precision", fp32_name="no") == "no"  # accelerate's spelling


def test_a_forced_precision_is_kept_and_warned_about_only_when_clearly_slower(monkeypatch, capsys):
    measured(monkeypatch, fp32_ms=13.0, bf16_ms=412.0)
    assert resolve_precision("bf16") == "bf16"
    assert capsys.readouterr().out.strip() == (
        "warning: --precision bf16 is 31.7x slower than fp32 on this CPU (bf16 412 ms, fp32 13 ms per probe); "
        "pass --precision auto or fp32")
    assert resolve_precision("no", option="--mixed-precision", fp32_name="no") == "no"  # the faster: no warning
    assert resolve_precision("fp32") == "fp32"
    assert capsys.readouterr().out == ""
    measured(monkeypatch, fp32_ms=20.0, bf16_ms=10.0)
    assert resolve_precision("no", option="--mixed-precision", fp32_name="no") == "no"
    assert "warning: --mixed-precision no is 2.0x slower than bf16" in capsys.readouterr().out
    measured(monkeypatch, fp32_ms=11.0, bf16_ms=10.0)  # within the margin: a near tie is no reason to warn
    assert resolve_precision("fp32") == "fp32" and capsys.readouterr().out == ""


def test_a_resumed_run_keeps_its_precision_unless_clearly_slower(monkeypatch, capsys):
    measured(monkeypatch, fp32_ms=10.0, bf16_ms=11.0)
    assert resolve_precision("auto", keep="bf16") == "bf16"
    assert "as the run it resumes" in capsys.readouterr().out
    measured(monkeypatch, fp32_ms=10.0, bf16_ms=30.0)  # resumed on a CPU that emulates bfloat16
    assert resolve_precision("auto", keep="bf16") == "fp32"
    assert resolve_precision("auto", keep="fp16") == "fp32"  # not one of these: measured afresh


def test_an_unknown_precision_names_the_option(monkeypatch):
    measured(monkeypatch, fp32_ms=10.0, bf16_ms=5.0)
    with pytest.raises(ValueError, match="--mixed-precision must be auto, no or bf16, got 'fp16'"):
        resolve_precision("fp16", option="--mixed-precision", fp32_name="no")
    with pytest.raises(ValueError, match="--precision must be auto, fp32 or bf16, got 'float32'"):
        resolve_precision("float32")


def test_the_measurement_times_both_once_per_device_and_leaves_the_random_state(monkeypatch):
    monkeypatch.delenv(PROBE_ENV)  # timed for real (the figures are not checked: they are the machine's)
    monkeypatch.setattr(tiny_dit.training.loop, "_MEASURED", {})
    rng = torch.get_rng_state()
    figures = measure_precision("cpu")
    assert set(figures) == {"fp32", "bf16"} and all(0 < ms < 5000 for ms in figures.values())
    assert torch.equal(torch.get_rng_state(), rng)  # a run seeded before measuring draws what it would have
    assert measure_precision("cpu") is figures  # measured once
    # A probe of the caller's own: it runs under autocast in one of the two, its loss is backpropagated.
    weight = torch.ones(8, 8, requires_grad=True)
    dtypes = []

    def probe():
        y = torch.nn.functional.linear(torch.ones(4, 8), weight)
        dtypes.append(y.dtype)
        return y.float().sum()

    measure_precision("cpu", probe, repeats=2)
    assert dtypes.count(torch.bfloat16) == dtypes.count(torch.float32) == 3 and weight.grad is not None


def test_the_probe_answer_can_be_fixed_by_the_environment(monkeypatch, capsys, precision_probe):
    """$TINY_DIT_PRECISION_PROBE (the tests set it, tests/conftest.py): every probe answers alike, none is run,
    and auto and the warning follow that answer."""
    def probe():
        raise AssertionError("timed")

    faster, slower = ("bf16", "fp32") if precision_probe == "bf16-faster" else ("fp32", "bf16")
    assert measure_precision("cpu", probe) == {faster: 10.0, slower: 20.0}
    assert resolve_precision("auto", probe=probe) == faster
    assert resolve_precision(slower, probe=probe) == slower
    assert f"warning: --precision {slower} is 2.0x slower than {faster}" in capsys.readouterr().out
    monkeypatch.setenv(PROBE_ENV, "bf16-fast")
    with pytest.raises(ValueError, match="TINY_DIT_PRECISION_PROBE must be bf16-faster or bf16-slower"):
        measure_precision("cpu")


def test_train_simple_computes_the_loss_in_the_resolved_precision_and_records_it(tmp_path, monkeypatch):
    dtypes = []

    def loss_fn(step: int):
        y = model(torch.ones(8, 4))
        dtypes.append(y.dtype)
        return y.float().square().mean(), {}

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    measured(monkeypatch, fp32_ms=10.0, bf16_ms=5.0)
    args = argparse.Namespace(run_dir=tmp_path, steps=4, lr=0.01, warmup=1, resume=False, precision="auto")
    train_simple(model, loss_fn, args)
    assert dtypes == [torch.bfloat16] * 4 and model.weight.dtype == torch.float32  # autocast only
    assert load_checkpoint(tmp_path / "checkpoint.pt")["precision"] == "bf16"
    # Resumed where fp32 is a little faster: it continues in bf16, as it ran.
    measured(monkeypatch, fp32_ms=9.0, bf16_ms=10.0)
    args.steps, args.resume = 6, True
    train_simple(model, loss_fn, args)
    assert dtypes[4:] == [torch.bfloat16] * 2
    args.run_dir, args.resume, args.precision = tmp_path / "fp32", False, "fp32"
    train_simple(model, loss_fn, args)
    assert dtypes[6:] == [torch.float32] * 6
    assert load_checkpoint(tmp_path / "fp32" / "checkpoint.pt")["precision"] == "fp32"


def test_the_run_arguments_take_a_precision():
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, run_dir="runs/x", steps=10, lr=1e-3)
    assert parser.parse_args([]).precision == "auto"
    assert parser.parse_args(["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])
