"""What every training command here shares: resumable checkpoints, a loss log, a progress bar.

A checkpoint is written to a temporary file and then renamed over the old one,
so a run killed at any moment leaves either the previous checkpoint or the new
one, never a broken file. Data in these runs is a pure function of (seed, step),
so restoring the model, the optimiser and the learning-rate schedule continues
a run exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Callable

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


def add_run_arguments(parser: argparse.ArgumentParser, *, run_dir: str, steps: int, lr: float,
                      warmup: int = 100) -> None:
    """The command-line options every train_loop command shares."""
    parser.add_argument("--run-dir", type=Path, default=Path(run_dir),
                        help=f"checkpoint.pt and log.jsonl go here (default {run_dir})")
    parser.add_argument("--steps", type=int, default=steps, help=f"optimiser steps (default {steps})")
    parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"warm-up steps (default {warmup})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue run-dir/checkpoint.pt")


def start_run(args: argparse.Namespace) -> None:
    """Apply --threads and --seed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def step_seed(seed: int, step: int) -> int:
    """The data seed of one training step: runs are reproducible and resumable."""
    return seed * 1_000_003 + step


def train_loop(model: torch.nn.Module, loss_fn: Callable[[int], tuple[torch.Tensor, dict]], *,
               run_dir: str | Path, steps: int, lr: float, warmup: int = 100,
               weight_decay: float = 0.0, grad_clip: float = 1.0, resume: bool = False,
               checkpoint_every: int = 200, log_every: int = 10, desc: str = "train") -> None:
    """AdamW with warm-up and cosine decay over `steps`; `loss_fn(step)` returns (loss, logs).

    Writes run_dir/checkpoint.pt (model, optimiser, schedule, step) and run_dir/log.jsonl.
    With resume=True it continues from run_dir/checkpoint.pt."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    start = 0
    if resume and has_checkpoint(ckpt_path):
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        print(f"resumed from {ckpt_path} at step {start}")
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or use a new run folder")
    log = JsonlLog(run_dir / "log.jsonl")

    def save(step: int) -> None:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step}, ckpt_path)

    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, unit="step")
    t0 = time.time()
    for step in bar:
        loss, logs = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.write(step=step + 1, loss=loss.item(), lr=scheduler.get_last_lr()[0],
                      grad_norm=float(grad_norm), seconds=round(time.time() - t0, 1), **logs)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save(step + 1)
    model.eval()
