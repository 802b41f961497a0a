"""The training loop every model here is trained with (the DiT, the CLIP and the autoencoder).

    loss, logs = loss_fn(step)            # the caller's whole method: a batch and its loss
    loss.backward(); clip the gradient; optimizer.step(); lr_scheduler.step(); update the EMA
    every log_every steps:         one log.jsonl line (mean loss, lr, grad norm, speed)
    every checkpoint_every steps:  save(step), a resumable checkpoint
    every N steps of each `every`: the caller's extras (samples, evaluations), timed apart

What is saved and restored is one dict of named parts (model, EMA, optimiser, LR
schedule, ...: anything with state_dict / load_state_dict) plus the step. A
checkpoint is written to a temporary file and then renamed over the old one, so a
run killed at any moment leaves either the previous checkpoint or the new one,
never a broken file. When the data of a step is a pure function of (seed, step)
(the CLIP and the autoencoder render theirs) or its random generators are saved
too (the DiT), restoring continues a run exactly where it stopped.

Precision is measured, not assumed (measure_precision, resolve_precision): every training
command and the latent cache take auto, fp32 or bf16, and auto times a short probe in both.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import torch
from diffusers.optimization import get_scheduler
from tqdm import tqdm


def atomic_save(obj, path: str | Path) -> None:
    """torch.save that never leaves a half-written file behind, and keeps the file it replaces as
    `previous_checkpoint(path)`: a checkpoint damaged later (a full disk, a copy cut short) still has
    a good one beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    if path.exists():
        os.replace(path, previous_checkpoint(path))
    os.replace(tmp, path)


def previous_checkpoint(path: str | Path) -> Path:
    """Where atomic_save keeps the checkpoint it replaced: checkpoint.pt -> checkpoint.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def has_checkpoint(path: str | Path) -> bool:
    """A checkpoint to resume from: the file, or the previous one (a kill between atomic_save's renames)."""
    return Path(path).is_file() or previous_checkpoint(path).is_file()


# What torch.load raises for a file that is truncated, empty, random bytes or not a checkpoint.
_UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)


def load_checkpoint(path: str | Path) -> dict:
    """Load a training checkpoint, falling back to the previous one kept beside it (with a warning)
    when it cannot be read; if neither can, a ValueError that names the files and what to do."""
    path = Path(path)
    errors = []
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.is_file():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("it holds no training state (no 'step')")
        except _UNREADABLE as error:
            errors.append(f"{candidate} ({type(error).__name__}: {str(error)[:120]})")
            continue
        if candidate != path:
            print(f"warning: could not read {errors[0]}; resuming from the previous checkpoint {candidate} "
                  f"(step {state['step']})")
        return state
    raise ValueError(f"cannot resume: no readable checkpoint: {'; '.join(errors) or f'{path} does not exist'}. "
                     f"A damaged file (a full disk, a copy cut short) cannot be repaired: delete {path} and "
                     f"{previous_checkpoint(path).name} to start the run over, or point the run folder at a copy "
                     f"with a good checkpoint.")


class JsonlLog:
    """Appends one JSON object per line (step, losses, time) to a log file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def drop_after(self, step: int) -> None:
        """Forget the records of steps after `step` (a resumed run redoes them; a new run, step 0, all)."""
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            self.path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))


def refuse_to_overwrite(path: str | Path, resume: bool) -> None:
    """A new run never overwrites a checkpoint: without resume, an existing one is an error."""
    if Path(path).exists() and not resume:
        raise FileExistsError(f"{path} exists: pass --resume to continue that run, or start the run in a new folder")


def save_training_state(path: str | Path, step: int, parts: dict, **extra) -> None:
    """Write the step, every part's state_dict and `extra` (plain data) to a checkpoint, atomically."""
    atomic_save({"step": step, **{name: part.state_dict() for name, part in parts.items()}, **extra}, path)


def restore_training_state(path: str | Path, parts: dict, check: Callable[[dict], None] | None = None) -> dict:
    """Load a checkpoint written by save_training_state into `parts`; returns it (step, extras).
    check(state), if given, runs first: it raises for a checkpoint that does not fit the run."""
    state = load_checkpoint(path)
    if check is not None:
        check(state)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    return state


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)


def warmup_stable_decay(optimizer: torch.optim.Optimizer, warmup: int, steps: int, decay_steps: int):
    """The learning rate warms up linearly, holds, and falls linearly to 0 over the last decay_steps of
    `steps` (WSD: one run can end with a decay whenever it is stopped, docs/recipe-study.md). It can be begun
    late: a constant-rate run resumed with --steps = its step + D and --decay-steps D (at least 1) decays from
    where it is, with no jump."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return min(1.0, max(0.0, (steps - step) / decay_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def ema_decay_at(step: int, max_decay: float) -> float:
    """EMA warm-up: a short memory at first, so the average does not stay stuck near the initial weights."""
    return min(max_decay, (1 + step) / (10 + step))


def train_loop(model: torch.nn.Module, loss_fn: Callable[[int], tuple[torch.Tensor, dict]],
               optimizer: torch.optim.Optimizer, lr_scheduler, *, start: int, steps: int,
               save: Callable[[int], None], log: "JsonlLog | None", accelerator=None,
               grad_clip: float = 1.0, ema: torch.nn.Module | None = None, ema_decay: float = 0.0,
               log_every: int = 10, checkpoint_every: int = 200,
               every: Iterable[tuple[int, Callable[[int], None]]] = (),
               throughput: tuple[str, int] | None = None, desc: str = "train", progress: bool = True,
               precision: str = "fp32", stop: Callable[[], bool] | None = None) -> float:
    """Steps start .. steps - 1 of a run; returns the last logged mean loss.

    loss_fn(step) -> (loss, logs): logs (plain numbers) go into that step's log line.
    save(step) writes a checkpoint (every process calls it: under accelerate it may gather).
    accelerator: backward, gradient clipping and the loss mean go through it (several processes).
    ema: updated after each step with decay ema_decay_at(step, ema_decay).
    every: (interval, fn) pairs, fn(step) after every interval steps (0 = never); their time is
    not counted in the step time. throughput: (name, items per step), logged as items per second.
    log: None on processes that do not write it.
    precision: "bf16" runs loss_fn under bfloat16 autocast (the weights, gradients and optimiser stay
    float32); under accelerate its --mixed-precision does that instead.
    stop: asked after each logged step; True ends the run there, after a checkpoint (a time limit: every
    process must answer alike)."""
    params = [p for p in model.parameters() if p.requires_grad]
    backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
    clip_norm = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    raw_model = accelerator.unwrap_model(model) if accelerator is not None else model
    device_type = params[0].device.type
    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, unit="step", disable=not progress)
    loss_sum, loss_count, last_loss, t_log, t_aside = 0.0, 0, float("nan"), time.time(), 0.0
    for step in bar:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, logs = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        grad_norm = clip_norm(params, grad_clip)
        optimizer.step()
        lr_scheduler.step()
        if ema is not None:
            update_ema(ema, raw_model, ema_decay_at(step, ema_decay))

        done = step + 1
        loss_sum, loss_count = loss_sum + loss.detach(), loss_count + 1
        if done % log_every == 0 or done == steps:
            mean_loss = loss_sum.reshape(1) / loss_count
            if accelerator is not None:  # the mean over processes
                mean_loss = accelerator.gather(mean_loss).mean()
            last_loss = mean_loss.item()
            seconds_per_step = (time.time() - t_log - t_aside) / loss_count  # without checkpoints and extras
            speed = {} if throughput is None else \
                {throughput[0]: round(throughput[1] / max(seconds_per_step, 1e-9), 2)}
            if log is not None:
                log.write(step=done, loss=last_loss, lr=lr_scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                          seconds_per_step=round(seconds_per_step, 3), **speed, **logs)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            loss_sum, loss_count, t_log, t_aside = 0.0, 0, time.time(), 0.0
        t_start_aside = time.time()
        stopping = stop is not None and done % log_every == 0 and stop()
        if done % checkpoint_every == 0 or done == steps or stopping:
            save(done)
        for interval, extra in every:
            if interval and done % interval == 0:
                extra(done)
        t_aside += time.time() - t_start_aside
        if stopping:
            break
    bar.close()
    model.eval()
    return last_loss


# -- precision ---------------------------------------------------------------------------------------------
#
# bfloat16 autocast is about 2x faster than float32 on a CPU with native bfloat16 matmuls (AVX-512 BF16, AMX)
# and 30-40x SLOWER on one without, where it is emulated (measured: the latent cache encoded 1.1 clips/s per
# core under bf16 against 8 in fp32). The CPU's flags do not settle it either: on a 2-core VM with
# avx512_bf16 in its flags, bf16 ran the linear probe 1.5-1.7x, the small DiT's training step 2.1x and the
# autoencoder's 1.15x slower than fp32, and its encoding of 64-256 frames 1.1x faster. So each command
# times a short probe of its kind of work in both and keeps the faster.
#
# TINY_DIT_PRECISION_PROBE=bf16-faster or bf16-slower fixes the probe's answer instead (every probe, nothing is
# timed): the tests set it, so that what they check does not depend on the CPU they run on, and a child process
# (torchrun, a notebook's kernel) inherits it. The figures it gives are 10 and 20 ms: a clear 2x.

PRECISIONS = ("auto", "fp32", "bf16")
CLEAR_MARGIN = 1.25  # a forced precision this much slower than the other is warned about
_FP32_NAMES = ("fp32", "no")  # "no" is accelerate's name for it (tiny_dit.training.train --mixed-precision)
_MEASURED: dict[str, dict[str, float]] = {}  # device -> the default probe's figures: measured once per process
PROBE_ENV = "TINY_DIT_PRECISION_PROBE"
FIXED_PROBE_FIGURES = {"bf16-faster": {"fp32": 20.0, "bf16": 10.0}, "bf16-slower": {"fp32": 10.0, "bf16": 20.0}}


def fixed_probe_figures() -> dict[str, float] | None:
    """The figures $TINY_DIT_PRECISION_PROBE fixes (a copy), or None where it is not set."""
    answer = os.environ.get(PROBE_ENV, "").strip()
    if not answer:
        return None
    if answer not in FIXED_PROBE_FIGURES:
        raise ValueError(f"${PROBE_ENV} must be {' or '.join(FIXED_PROBE_FIGURES)} (or unset), got {answer!r}")
    return dict(FIXED_PROBE_FIGURES[answer])


def linear_probe(device: torch.device | str = "cpu") -> Callable[[], torch.Tensor]:
    """The default probe: three Linear layers 384 wide on 256 tokens with GELUs between, the work of a
    small transformer (the DiT, the CLIP). Returns a function that runs its forward pass and returns a
    loss, for the backward pass."""
    g = torch.Generator().manual_seed(0)  # its own generator: measuring leaves the run's random state alone
    weights = [(torch.randn(384, 384, generator=g) / 384 ** 0.5).to(device).requires_grad_() for _ in range(3)]
    x = torch.randn(256, 384, generator=g).to(device)

    def forward() -> torch.Tensor:
        h = x
        for w in weights:
            h = torch.nn.functional.gelu(torch.nn.functional.linear(h, w))
        return h.float().square().mean()

    return forward


def measure_precision(device: torch.device | str = "cpu", probe: Callable[[], torch.Tensor | None] | None = None,
                      repeats: int = 3, budget_s: float = 0.25) -> dict[str, float]:
    """Milliseconds of one run of `probe` in float32 and under bfloat16 autocast: {"fp32": ms, "bf16": ms}.

    probe() runs under autocast; a loss it returns (one that needs a gradient) is backpropagated outside
    it. The default is linear_probe (about 0.1 s in all on a 2-core CPU), measured once per device and
    process. Each precision gets one warm-up run and up to `repeats` timed ones, alternated so that another
    job's load falls on both; the fastest counts. A precision whose runs pass budget_s gets no more (an
    emulated bfloat16 run can take 30x as long), and one whose warm-up alone passed it is timed by that.
    With $TINY_DIT_PRECISION_PROBE set, its fixed figures instead (fixed_probe_figures)."""
    if (fixed := fixed_probe_figures()) is not None:
        return fixed
    device = torch.device(device)
    if probe is None:
        if str(device) not in _MEASURED:
            _MEASURED[str(device)] = measure_precision(device, linear_probe(device), repeats, budget_s)
        return _MEASURED[str(device)]
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    spent = dict.fromkeys(times, 0.0)
    for run in range(1 + repeats):
        for name in times:
            if run > 0 and spent[name] > budget_s and times[name]:
                continue
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
                loss = probe()
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            spent[name] += seconds
            if run > 0 or seconds > budget_s:  # the first run warms up kernels and allocations
                times[name].append(seconds)
    return {name: 1000 * min(t) for name, t in times.items()}


def resolve_precision(requested: str, device: torch.device | str = "cpu", *, option: str = "--precision",
                      fp32_name: str = "fp32", keep: str | None = None,
                      probe: Callable[[], torch.Tensor | None] | None = None) -> str:
    """The precision a run computes in, "bf16" or fp32_name, from the `option` it was given.

    requested: "auto" (the faster of the two by measure_precision(device, probe); printed, with both
    figures), or "fp32" ("no") or "bf16", kept as asked, with a warning naming both figures when it is
    more than CLEAR_MARGIN slower than the other. keep: the precision of the run being resumed; auto
    stays with it unless it is clearly slower, so that a resumed run continues exactly as it ran (a
    near tie could otherwise flip between two measurements). On a GPU auto takes bfloat16 where it is
    native (torch.cuda.is_bf16_supported), without measuring: a probe this small times kernel launches,
    not arithmetic. fp32_name: how the option spells float32 ("no" for accelerate's --mixed-precision)."""
    canonical = {"auto": "auto", "bf16": "bf16", **dict.fromkeys(_FP32_NAMES, "fp32")}
    if requested not in canonical:
        raise ValueError(f"{option} must be auto, {fp32_name} or bf16, got {requested!r}")
    wanted, device = canonical[requested], torch.device(device)

    def spelled(precision: str) -> str:
        return fp32_name if precision == "fp32" else precision

    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        if wanted == "auto":
            wanted = "bf16" if native else "fp32"
            print(f"precision: {spelled(wanted)} ({option} auto: {torch.cuda.get_device_name(device)} "
                  f"{'has' if native else 'has no'} native bfloat16)")
        elif wanted == "bf16" and not native:
            print(f"warning: {option} bf16 on {torch.cuda.get_device_name(device)}, which has no native "
                  f"bfloat16 (emulated: slow); pass {option} auto or {fp32_name}")
        return spelled(wanted)
    if device.type != "cpu":  # not measured elsewhere (mps, xpu, ...): float32 unless asked
        return spelled("fp32" if wanted == "auto" else wanted)

    ms = measure_precision(device, probe)
    faster, slower = sorted(ms, key=ms.get)
    ratio = ms[slower] / ms[faster]
    figures = f"bf16 {ms['bf16']:.3g} ms, fp32 {ms['fp32']:.3g} ms per probe"
    if wanted == "auto":
        kept = canonical.get(keep)
        if kept in ("fp32", "bf16") and (kept == faster or ratio <= CLEAR_MARGIN):
            chosen, why = kept, "as the run it resumes"
        else:
            chosen, why = faster, f"{ratio:.1f}x faster than {spelled(slower)}"
        print(f"precision: {spelled(chosen)} ({option} auto, {why} on this CPU: {figures})")
        return spelled(chosen)
    if wanted == slower and ratio > CLEAR_MARGIN:
        print(f"warning: {option} {requested} is {ratio:.1f}x slower than {spelled(faster)} on this CPU "
              f"({figures}); pass {option} auto or {spelled(faster)}")
    return spelled(wanted)


def add_run_arguments(parser: argparse.ArgumentParser, *, run_dir: str, steps: int, lr: float,
                      warmup: int = 100) -> None:
    """The command-line options of the commands that train with train_simple (the CLIP, the autoencoder)."""
    parser.add_argument("--run-dir", type=Path, default=Path(run_dir),
                        help=f"checkpoint.pt and log.jsonl go here (default {run_dir})")
    parser.add_argument("--steps", type=int, default=steps, help=f"optimiser steps (default {steps})")
    parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"warm-up steps (default {warmup})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue run-dir/checkpoint.pt")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="compute the loss in fp32 or under bf16 autocast (weights and optimiser stay fp32); "
                             "default auto: the faster of the two by a short measurement (a warning when a "
                             "forced one is the slower)")


def start_run(args: argparse.Namespace) -> None:
    """Apply --threads and --seed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def step_seed(seed: int, step: int) -> int:
    """The data seed of one training step: runs are reproducible and resumable."""
    return seed * 1_000_003 + step


def train_simple(model: torch.nn.Module, loss_fn: Callable[[int], tuple[torch.Tensor, dict]],
                 args: argparse.Namespace, *, weight_decay: float = 0.0, throughput: tuple[str, int] | None = None,
                 desc: str = "train", probe: Callable[[], torch.Tensor | None] | None = None) -> None:
    """train_loop for a model whose data is a function of (seed, step), with add_run_arguments' options:
    AdamW with warm-up and cosine decay over --steps, run-dir/checkpoint.pt every 200 steps,
    run-dir/log.jsonl; --resume continues run-dir/checkpoint.pt exactly. --precision is resolved by
    resolve_precision, timing `probe` (default linear_probe), and saved in the checkpoint."""
    ckpt_path = Path(args.run_dir) / "checkpoint.pt"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=weight_decay)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=args.warmup, num_training_steps=args.steps)
    parts = {"model": model, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
    refuse_to_overwrite(ckpt_path, args.resume)
    start, resumed = 0, {}
    if args.resume and has_checkpoint(ckpt_path):
        resumed = restore_training_state(ckpt_path, parts)
        start = resumed["step"]
        print(f"resumed from {ckpt_path} at step {start}")
    precision = resolve_precision(args.precision, next(model.parameters()).device, keep=resumed.get("precision"),
                                  probe=probe)
    log = JsonlLog(Path(args.run_dir) / "log.jsonl")
    log.drop_after(start)
    train_loop(model, loss_fn, optimizer, lr_scheduler, start=start, steps=args.steps,
               save=lambda step: save_training_state(ckpt_path, step, parts, precision=precision), log=log,
               throughput=throughput, desc=desc, precision=precision)
