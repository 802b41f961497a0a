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
import time
from pathlib import Path
from typing import Callable

import torch
from diffusers.optimization import get_scheduler
from tqdm import tqdm


def atomic_save(obj, path: str | Path) -> None:
    """torch.save that never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
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
