r"""Distil the bundle into a fast student: clips in 1 to 4 transformer passes, guidance built in.

    python -m tiny_dit.training.distill --method reflow --cache cache/world --out runs/fast-reflow
    python -m tiny_dit.training.distill --method consistency --cache cache/world --out runs/fast-lcm
    python -m tiny_dit.training.distill ... --resume                # continue a stopped run

The teacher (--teacher, default the bundle) makes a clip at its defaults in 20 Euler steps, guided in the
first ten (two passes each: the prompt's and the empty prompt's): 30 transformer passes. The student starts as
a copy of the teacher and learns to land where the teacher lands in a few big steps, with the teacher's
guidance built in (guidance distillation, Meng et al. 2023): it runs on the prompt alone, one pass a step.

Two ways to teach it, one student:

  reflow        The teacher's own clips (Liu et al. 2022, rectified flow's "reflow"; InstaFlow). For noise z
                the teacher draws its clip x0_T; the student learns the straight line between them with the
                flow-matching loss of tiny_dit.flow, x_s = (1 - s) x0_T + s z -> x0_T. The teacher's paths
                bend (at high noise its velocity is an average over many clips); the pairs' lines do not, and
                one Euler step along a straight line lands exactly where twenty would. The pairs cost the
                teacher's sampling up front (pairs/, made once, kept by a stopped run).

  consistency   Latent consistency distillation (Song et al. 2023; Luo et al. 2023, LCM). A cached clip x0 is
                noised to a level s_n of the teacher's 20-step grid; the teacher takes one guided Euler step
                to s_{n+1}; the student's clean-clip prediction at s_n must match the EMA student's at s_{n+1}
                (at s = 0: the point itself). Chained along the grid, every point of a teacher path maps to
                the path's end. It samples with LCM's scheduler: jump to the predicted clip, noise it afresh
                to the next level.

Reflow trains the student at the noise levels its sampler visits (--steps-trained at the teacher's shift: for
1, 2 and 4 steps at shift 3, 1, 0.9, 0.75 and 0.5); consistency along the teacher's whole grid, of which those
are points. Both save the EMA weights. The run folder (--out):

    pairs/                 reflow: the teacher's clips (noise, clip, cache index), in shards
    checkpoint.pt          student, EMA, optimiser, LR schedule, step, random generators
    log.jsonl              loss; every --eval-every steps the evaluation of --eval-prompts prompts per split at
                           each of --steps-trained ("eval": {"1/seen/shape": ...})
    pipeline/              the fast pipeline: the EMA student in float16, guidance off, its scheduler, and
                           --default-steps as the folder's default number of steps
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, FlowMatchLCMScheduler
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from tiny_dit.flow import TIMESTEP_SCALE, add_noise, flow_matching_loss, guided_velocity, predicted_x0
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.schedulers import config_shift, noise_levels
from tiny_dit.training.latent_cache import LatentCache, conditioning, text_inputs
from tiny_dit.training.loop import (JsonlLog, has_checkpoint, refuse_to_overwrite, resolve_precision,
                                    restore_training_state, save_training_state, train_loop, warmup_stable_decay)

METHODS = ("reflow", "consistency")
FAST_STEPS = (1, 2, 4)  # the step counts a student is trained for and judged at (--steps-trained)
PAIRS_PER_SHARD = 256


# -- what the student learns from ------------------------------------------------------------------------

def student_noise_levels(shift: float, steps: tuple[int, ...] = FAST_STEPS) -> torch.Tensor:
    """Every noise level at which the fast sampler calls the transformer, at any of `steps` steps, on the
    grid of a FlowMatch scheduler with `shift`: (K,) float32. For shift 3 and 1, 2, 4 steps: 1, 0.9, 0.75, 0.5."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    levels = np.concatenate([noise_levels(scheduler, n)[:-1] for n in steps])  # without each run's final 0
    return torch.from_numpy(np.unique(levels.round(6))).float().flip(0)


def teacher_guidance(teacher: TinyDiTPipeline, num_steps: int) -> torch.Tensor:
    """The guidance weight of each of the teacher's `num_steps` steps at its defaults: (N,) float32, its scale
    where its guider guides (an interval guider: the first steps) and 1 (the prompt alone) elsewhere. The
    student of `consistency` bakes these in. Only classifier-free guidance, plain or on an interval, can be
    written as one weight per step."""
    guider = copy.deepcopy(teacher.default_guider)
    if type(guider) is not ClassifierFreeGuidance or guider.config.get("guidance_rescale", 0.0):
        raise ValueError(f"the teacher's guider is {type(guider).__name__} with {dict(guider.config)}: consistency "
                         "distillation bakes in classifier-free guidance (plain or on an interval of steps) only")
    weights = []
    for i in range(num_steps):
        guider.set_state(step=i, num_inference_steps=num_steps, timestep=None)
        weights.append(guider.guidance_scale if guider.num_conditions > 1 and guider.guidance_scale > 1 else 1.0)
    return torch.tensor(weights)


@torch.no_grad()
def make_teacher_pairs(teacher: TinyDiTPipeline, cache: LatentCache, folder: Path, count: int, seed: int = 0,
                       batch_size: int = 8) -> None:
    """`count` pairs (noise z, the teacher's clip x0_T from z at its defaults, the caption's cache index) in
    shards of PAIRS_PER_SHARD under `folder`. The captions are drawn from the cache with `seed`; a shard that
    exists is kept, so a stopped run makes only the rest. Latents in float16: 256 KB a pair."""
    folder.mkdir(parents=True, exist_ok=True)
    indices = torch.randint(len(cache), (count,), generator=torch.Generator().manual_seed(seed))
    latent_shape = cache.latents.shape[1:]  # (C, T, h, w)
    num_shards = -(-count // PAIRS_PER_SHARD)
    todo = [k for k in range(num_shards) if not (folder / f"pairs-{k:05d}.safetensors").exists()]
    bar = tqdm(total=len(todo) * PAIRS_PER_SHARD, desc="teacher pairs", unit="clip")
    for k in todo:
        index = indices[k * PAIRS_PER_SHARD:(k + 1) * PAIRS_PER_SHARD]
        noise = torch.randn((len(index), *latent_shape), generator=torch.Generator().manual_seed(seed * 100_003 + k))
        clips = []
        for start in range(0, len(index), batch_size):
            prompts = [cache.captions[i] for i in index[start:start + batch_size]]
            clips.append(teacher(prompts, latents=noise[start:start + len(prompts)], output_type="latent").frames)
            bar.update(len(prompts))
        tmp = folder / f"pairs-{k:05d}.tmp"
        save_file({"index": index, "noise": noise.half(), "clip": torch.cat(clips).half()}, tmp)
        tmp.rename(folder / f"pairs-{k:05d}.safetensors")
    bar.close()


def load_teacher_pairs(folder: Path, count: int) -> dict[str, torch.Tensor]:
    """The first `count` pairs of make_teacher_pairs' shards: index (N,), noise and clip (N, C, T, h, w) float16."""
    shards = [load_file(path) for path in sorted(folder.glob("pairs-*.safetensors"))]
    return {key: torch.cat([s[key] for s in shards])[:count] for key in ("index", "noise", "clip")}


# -- the two losses ------------------------------------------------------------------------------------------

def reflow_loss(student, pairs: dict, rows: torch.Tensor, cond: dict, levels: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """Rectified flow on the teacher's pairs: the line from the noise z to the clip x0_T the teacher made from
    it, at noise levels drawn from `levels` (the fast sampler's). The flow-matching loss of tiny_dit.flow, with
    the pair's own noise and the prompt always given (guidance is in the clips)."""
    x0 = pairs["clip"][rows].float()  # (B, C, T, h, w) the teacher's clips
    noise = pairs["noise"][rows].float()  # (B, C, T, h, w) where the teacher started
    s = levels[torch.randint(len(levels), (len(rows),), generator=generator)].to(x0.device)  # (B,)
    return flow_matching_loss(student, x0, cond, cond, label_dropout=0.0, noise=noise, s=s)


def consistency_loss(student, target, teacher_model, x0: torch.Tensor, cond: dict, uncond: dict,
                     grid: torch.Tensor, guidance: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Latent consistency distillation with the teacher's guidance baked in.

    grid: the teacher's noise levels (N + 1,) from 1 to 0; guidance: its weight at each step (N,).
    1. x_n: the clean clips x0 noised to a level s_n of the grid, one per clip;
    2. the teacher's guided Euler step to s_{n+1}: x_{n+1} = x_n + (s_{n+1} - s_n) v_guided;
    3. the target: the EMA student's clean-clip prediction at (x_{n+1}, s_{n+1}), or x_{n+1} itself at s = 0;
    4. the loss: the student's clean-clip prediction at (x_n, s_n) against it."""
    B = len(x0)
    n = torch.randint(len(grid) - 1, (B,), generator=generator)  # (B,) which step of the teacher's grid
    shape = (B, 1, 1, 1, 1)
    s, s_next, w = grid[n].view(shape), grid[n + 1].view(shape), guidance[n].view(shape)
    noise = torch.randn(x0.shape, generator=generator)
    x = add_noise(x0, noise, s)  # 1.
    with torch.no_grad():
        both = {k: torch.cat([uncond[k].expand_as(v), v]) for k, v in cond.items()}  # [uncond; cond]
        v_uncond, v_cond = teacher_model(torch.cat([x, x]), timestep=(s.flatten() * TIMESTEP_SCALE).repeat(2),
                                         **both).sample.float().chunk(2)
        x_next = x + (s_next - s) * guided_velocity(v_uncond, v_cond, w)  # 2.
        v_target = target(x_next, timestep=s_next.flatten() * TIMESTEP_SCALE, **cond).sample.float()
        x0_target = torch.where(s_next > 0, predicted_x0(x_next, s_next, v_target), x_next)  # 3.
    v = student(x, timestep=s.flatten() * TIMESTEP_SCALE, **cond).sample.float()
    return F.mse_loss(predicted_x0(x, s, v), x0_target)  # 4.


# -- the fast pipeline ------------------------------------------------------------------------------------------

def fast_pipeline(student, teacher: TinyDiTPipeline, method: str, default_steps: int) -> TinyDiTPipeline:
    """The student as a pipeline whose defaults are the fast ones: guidance off (it is in the weights), the
    method's scheduler at the teacher's shift (reflow: Euler; consistency: LCM), `default_steps` steps. It shares
    the teacher's text encoder, tokenizer and autoencoder."""
    shift = config_shift(teacher.scheduler.config)
    scheduler = FlowMatchLCMScheduler(shift=shift) if method == "consistency" else \
        FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe = TinyDiTPipeline(vae=teacher.vae, text_encoder=teacher.text_encoder, tokenizer=teacher.tokenizer,
                           transformer=student, scheduler=scheduler, guider=ClassifierFreeGuidance(guidance_scale=1.0),
                           default_num_inference_steps=default_steps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_fast_pipeline(pipe: TinyDiTPipeline, folder: Path) -> None:
    """save_pretrained with the transformer's weights in float16 (half the bytes; TinyDiTPipeline.from_pretrained
    loads them as float32, and set_dtype picks the compute precision) and the autoencoder in float32, as the
    teacher's folder holds it."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    half, vae = copy.deepcopy(pipe.transformer), copy.deepcopy(pipe.vae)
    torch.nn.Module.to(half, torch.float16)
    torch.nn.Module.to(vae, torch.float32)
    TinyDiTPipeline(**{**pipe.components, "transformer": half, "vae": vae},
                    default_num_inference_steps=pipe.default_num_inference_steps).save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def evaluate_student(pipe: TinyDiTPipeline, num_prompts: int, steps: tuple[int, ...]) -> dict:
    """The project's evaluation (the small set of num_prompts per split, one seed) at each step count, as flat
    log fields: "4/seen/shape", ..."""
    from tiny_dit.training.evaluate import eval_scores, evaluate_pipeline

    scores = {}
    for n in steps:
        results = evaluate_pipeline(pipe, pipe.text_encoder, num_prompts=num_prompts, steps=n, progress=False)
        scores.update({f"{n}/{key}": value for key, value in eval_scores(results).items()})
    return scores


# -- the run ------------------------------------------------------------------------------------------------------

def distill(args: argparse.Namespace) -> dict:
    """Run (or resume) a distillation as the command-line arguments say; returns a summary."""
    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    refuse_to_overwrite(ckpt_path, args.resume)
    torch.manual_seed(args.seed)
    batch_generator = torch.Generator().manual_seed(args.seed)  # which clips or pairs
    noise_generator = torch.Generator().manual_seed(args.seed + 1)  # noise levels and noise

    teacher = TinyDiTPipeline.from_pretrained(args.teacher)
    teacher.set_progress_bar_config(disable=True)
    student = copy.deepcopy(teacher.transformer).float().requires_grad_(True)  # float32, before the cast below
    precision = resolve_precision(args.precision)
    teacher.set_dtype("bfloat16" if precision == "bf16" else "float32")  # its sampling, and its passes below
    cache = LatentCache.load(args.cache)
    config = teacher.transformer.config
    if tuple(cache.latents.shape[2:]) != (config.num_frames, config.sample_size, config.sample_size):
        raise ValueError(f"--cache {args.cache} holds latents of {tuple(cache.latents.shape[2:])}; the teacher "
                         f"was trained at {(config.num_frames, config.sample_size, config.sample_size)}")
    text = text_inputs(cache.text_embeddings, config, "cpu")
    uncond = conditioning(text_inputs(cache.uncond, config, "cpu"))

    teacher_model = teacher.transformer.requires_grad_(False).eval()
    ema = copy.deepcopy(student).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    lr_scheduler = warmup_stable_decay(optimizer, args.warmup, args.train_steps, args.decay_steps)
    parts = {"model": student, "ema": ema, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
    start = 0
    if args.resume and has_checkpoint(ckpt_path):
        state = restore_training_state(ckpt_path, parts)
        batch_generator.set_state(state["batch_generator"])
        noise_generator.set_state(state["noise_generator"])
        start = state["step"]
        print(f"resumed {ckpt_path} at step {start}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(vars(args), indent=2, default=str))
    log = JsonlLog(out / "log.jsonl")
    log.drop_after(start)

    levels = student_noise_levels(config_shift(teacher.scheduler.config), tuple(args.steps_trained))
    if args.method == "reflow":
        t0 = time.time()
        make_teacher_pairs(teacher, cache, out / "pairs", args.pairs, args.seed, args.batch_size)
        pairs = load_teacher_pairs(out / "pairs", args.pairs)
        log.write(step=start, pairs=len(pairs["index"]), pairs_seconds=round(time.time() - t0, 1))
    else:
        grid = torch.from_numpy(noise_levels(teacher.scheduler, teacher.default_num_inference_steps)).float()
        guidance = teacher_guidance(teacher, teacher.default_num_inference_steps)

    def step_loss(step: int) -> tuple[torch.Tensor, dict]:
        if args.method == "reflow":
            rows = torch.randint(len(pairs["index"]), (args.batch_size,), generator=batch_generator)
            cond = conditioning(text, pairs["index"][rows])
            return reflow_loss(student, pairs, rows, cond, levels, noise_generator), {}
        idx = torch.randint(len(cache), (args.batch_size,), generator=batch_generator)
        return consistency_loss(student, ema, teacher_model, cache.latents[idx].float(), conditioning(text, idx),
                                uncond, grid, guidance, noise_generator), {}

    def save(step: int) -> None:
        save_training_state(ckpt_path, step, parts, batch_generator=batch_generator.get_state(),
                            noise_generator=noise_generator.get_state())

    def evaluate(step: int) -> None:
        t0 = time.time()
        pipe = fast_pipeline(ema, teacher, args.method, args.default_steps)
        log.write(step=step, eval=evaluate_student(pipe, args.eval_prompts, tuple(args.steps_trained)),
                  eval_seconds=round(time.time() - t0, 1))

    if start == 0 and args.eval_every:
        evaluate(0)  # the teacher's weights at few steps: where the student starts
    train_loop(student, step_loss, optimizer, lr_scheduler, start=start, steps=args.train_steps, save=save, log=log,
               ema=ema, ema_decay=args.ema_decay, checkpoint_every=args.checkpoint_every,
               every=[(args.eval_every, evaluate)], desc=f"distil ({args.method})", precision=precision,
               stop=(lambda: time.time() - started > 60 * args.max_minutes) if args.max_minutes else None)
    # Back in float32, the teacher's autoencoder is its file's weights bit for bit (set_dtype kept them aside), so
    # the fast folder shares that file and git stores it once.
    teacher.set_dtype("float32")
    save_fast_pipeline(fast_pipeline(ema, teacher, args.method, args.default_steps), out / "pipeline")
    print(f"saved the fast pipeline (EMA weights, {args.default_steps} steps by default) to {out / 'pipeline'}/")
    return {"pipeline": out / "pipeline", "checkpoint": ckpt_path}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tiny_dit.training.distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=METHODS, required=True, help="reflow or consistency (see above)")
    parser.add_argument("--teacher", default="assets/tiny-dit-shapes", help="pipeline folder of the teacher "
                        "(default: the bundle); its defaults (steps, guider, shift) are what the student learns")
    parser.add_argument("--cache", type=Path, required=True,
                        help="latent cache at the teacher's size: captions (reflow), clips too (consistency)")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--pairs", type=int, default=2048, help="reflow: teacher clips to learn from (default 2048)")
    parser.add_argument("--train-steps", type=int, default=2000, help="optimiser steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per step (default 16)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak AdamW learning rate (default 1e-4)")
    parser.add_argument("--warmup", type=int, default=50, help="linear warm-up steps (default 50)")
    parser.add_argument("--decay-steps", type=int, default=500,
                        help="the learning rate falls linearly to 0 over the last this many steps (default 500)")
    parser.add_argument("--ema-decay", type=float, default=0.99,
                        help="EMA of the saved student, and consistency's target (default 0.99)")
    parser.add_argument("--steps-trained", type=int, nargs="+", default=list(FAST_STEPS),
                        help="the step counts whose noise levels the student trains at, and is judged at "
                             "(default 1 2 4)")
    parser.add_argument("--default-steps", type=int, default=4, help="the fast pipeline's default steps (default 4)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="compute precision (default auto: the faster by a short measurement)")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations, 0 = never")
    parser.add_argument("--eval-prompts", type=int, default=72, help="prompts per split of each evaluation")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes (resumable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.default_steps not in args.steps_trained:
        raise SystemExit(f"error: --default-steps {args.default_steps} is not among --steps-trained "
                         f"{args.steps_trained}: the student would default to a step count it never learned")
    if not 1 <= args.decay_steps <= args.train_steps:
        raise SystemExit(f"error: --decay-steps must be 1 to --train-steps ({args.train_steps}), got {args.decay_steps}")
    return distill(args)


if __name__ == "__main__":
    main()
