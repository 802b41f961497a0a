r"""Train TinyDiT on a latent cache with rectified flow.

    python -m tiny_dit.training.train --cache cache/shapes --out runs/dit-small --preset small
    python -m tiny_dit.training.train --cache cache/shapes --out runs/dit-small --resume      # continue after a stop
    python -m tiny_dit.training.train --cache cache/shapes --out runs/dit-small --resume --max-minutes 170   # a session
    python -m tiny_dit.training.train --cache cache/shapes --out runs/dit-small --resume --steps 24000 \
        --lr-schedule warmup_stable_decay --decay-steps 4000     # end a constant-rate run (at step 20000) with a decay
    python -m tiny_dit.training.train --cache cache/shapes cache/shapes-32f --out runs/dit-sizes   # two lengths
    accelerate launch -m tiny_dit.training.train --cache cache/shapes --out runs/dit-base --preset base --mixed-precision bf16

The same command runs on a CPU, one GPU, or several GPUs under `accelerate launch`
(each process draws its own batches; the effective batch is batch-size x processes).

Each step draws a random batch of clips from the cache (held in memory; with
several caches, from one of them: a bucket of one length and size), and
minimises the rectified-flow loss of `tiny_dit.flow.flow_matching_loss` with
AdamW, a linear learning-rate warm-up and gradient clipping, in the training
loop of `tiny_dit.training.loop`. An exponential moving average (EMA) of the weights
is what gets sampled and saved.

The run folder (--out):
    checkpoint.pt              model, EMA, optimiser, LR schedule, step and every RNG state,
                               rewritten atomically every --checkpoint-every steps
    log.jsonl                  one line per --log-every steps: step, loss, lr, clips/s, grad norm
    samples/step-XXXXXX/       sample-NN.mp4 and grid.mp4 from a few cache captions, EMA weights
    pipeline/                  at the end: a complete TinyDiTPipeline (EMA weights, the CLIP and
                               autoencoder the cache was built with, the scheduler), ready for
                               TinyDiTPipeline.from_pretrained / python -m tiny_dit.sample --model

--resume continues from checkpoint.pt exactly: a run stopped at any point and
resumed ends with the same weights as a run that was never stopped (on the same
hardware and number of processes).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, is_initialized
from accelerate.utils import broadcast_object_list, gather_object, parse_flag_from_env
from diffusers.optimization import get_scheduler

from tiny_dit.autoencoder import load_autoencoder
from tiny_dit.conditions import random_known_mask
from tiny_dit.flow import flow_matching_loss
from tiny_dit.model import TINY_DIT_PRESETS, TinyDiT, token_grid
from tiny_dit.training.latent_cache import LatentCache, conditioning, embed_prompts, text_inputs
from tiny_dit.training.loop import (JsonlLog, has_checkpoint, load_checkpoint, refuse_to_overwrite, resolve_precision,
                                    restore_training_state, save_training_state, train_loop, warmup_stable_decay)

# A preset is the model's shape (tiny_dit.model.TINY_DIT_PRESETS: TinyDiT keyword arguments; the input
# sizes come from the cache) plus the training defaults that suit it, kept here.
PRESETS = {
    # For tests and quick checks: runs in seconds on one CPU core.
    "tiny": dict(
        model=TINY_DIT_PRESETS["tiny"],
        steps=200, batch_size=8, lr=1e-3, warmup=10, ema_decay=0.99, checkpoint_every=50, sample_every=100,
        noise_shift=1.0, image_batch_size=0,
    ),
    # For 2 CPU cores or a Colab T4: patch 4 x 4 x 4 -> 4 x 8 x 8 = 256 tokens, 5.1M parameters. The recipe of
    # docs/recipe-study.md: 16 clips and 32 stills a step (a still is 64 tokens: shape is learned on stills at a
    # quarter of a clip's cost), noise shift 3 in training and in the sampler.
    "small": dict(
        model=TINY_DIT_PRESETS["small"],
        steps=20000, batch_size=16, lr=1e-3, warmup=200, ema_decay=0.999, checkpoint_every=250,
        sample_every=1000, noise_shift=3.0, image_batch_size=32,
    ),
    # For one GPU (e.g. a Colab T4, with --mixed-precision fp16): patch 2 x 2 x 4 -> 4 x 16 x 16 = 1024 tokens,
    # 37M parameters. The noise shift as for small (more tokens need at least as much; not measured here).
    "base": dict(
        model=TINY_DIT_PRESETS["base"],
        steps=50000, batch_size=64, lr=2e-4, warmup=1000, ema_decay=0.9999, checkpoint_every=1000,
        sample_every=5000, noise_shift=3.0, image_batch_size=64,
    ),
}
TRAINING_DEFAULTS = ("steps", "batch_size", "lr", "warmup", "ema_decay", "checkpoint_every", "sample_every",
                     "noise_shift", "image_batch_size")


# Model options whose parts start at zero (the block computes what it did without them), so that
# --init-from can add them to a trained model: config key -> the names of the parts in the state dict.
# word_embeddings: its type embedding and projection are zeroed when added (the CLIP states are read as before;
# the words start as tokens of zeros, which take a little attention: close to the trained model, not exact).
ZERO_INIT_ADDITIONS = {"conv_mlp": ("mlp_conv",), "known_frames_input": ("patch_embed",),
                       "word_embeddings": ("text_type_embed", "word_proj")}


def build_model(cache: LatentCache, preset: str, **overrides) -> TinyDiT:
    """A fresh TinyDiT of the preset's shape (with `overrides` of it), sized for the cache's latents
    and CLIP embeddings."""
    _, channels, frames, height, width = cache.latents.shape
    return TinyDiT(
        in_channels=channels,
        num_frames=frames,
        sample_size=height,
        text_embed_dim=cache.hidden_states.shape[-1],
        pooled_embed_dim=cache.pooled.shape[-1],
        **{**PRESETS[preset]["model"], **overrides},
    )


def still_images(latents: torch.Tensor, patch_size_t: int, generator: torch.Generator,
                 frame_masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One random latent frame of each clip, held for one tubelet: (B, C, T, h, w) -> (B, C, pt, h, w),
    and the same frame of frame_masks (B, T, h, w), held likewise: (B, pt, h, w) (None without them).

    This is how the model learns images (Sora, Latte and VDM train on images beside clips): a
    still is a clip one tubelet long that does not move. A frame is 4x fewer tokens than a clip
    and attention on it 16x cheaper, so shape (what one frame shows) is learned at a fraction of
    the cost, and the same weights then sample images (num_frames = patch_size_t)."""
    B, _, T = latents.shape[:3]
    t = torch.randint(T, (B,), generator=generator).to(latents.device)  # (B,) which frame of each clip
    rows = torch.arange(B, device=latents.device)
    frame = latents[rows, :, t]  # (B, C, h, w)
    still = frame[:, :, None].expand(-1, -1, patch_size_t, -1, -1)  # (B, C, pt, h, w)
    if frame_masks is None:
        return still, None
    return still, frame_masks[rows, t][:, None].expand(-1, patch_size_t, -1, -1)  # (B, pt, h, w)


@dataclass
class Bucket:
    """The clips of one latent cache, all of one length and size, on the training device. As in
    Open-Sora's buckets, a step draws all its clips from one bucket (a batch is one tensor), and
    a bucket of longer or larger clips gets fewer of them, so every step costs about the same."""
    name: str
    latents: torch.Tensor  # (N, C, T, h, w)
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # the model's text context (N, L', W) (text_context),
    # pooled (N, E), its mask (N, L')
    still_text: tuple | None  # the same for the stills' captions (no motion), or None without stills
    object_mask: torch.Tensor | None = None  # (N, T, h, w) uint8: the object's cover (with --object-weight)

    def tokens(self, config, num_frames: int | None = None) -> int:
        """Tokens of one clip of this bucket for a model of `config` (of num_frames latent frames, default all)."""
        _, _, T, h, w = self.latents.shape
        return math.prod(token_grid(num_frames or T, h, w, config.patch_size_t, config.patch_size))


def scaled_count(count: int, tokens: int, reference_tokens: int) -> int:
    """How many clips of `tokens` tokens cost about what `count` clips of `reference_tokens` do."""
    return 0 if count == 0 else max(1, round(count * reference_tokens / tokens))


def random_window(num_frames: int, patch_size_t: int, generator: torch.Generator) -> slice:
    """A random run of whole tubelets of a clip of num_frames latent frames: k tubelets, k uniform in
    1 .. num_frames / patch_size_t - 1, at a random tubelet. Shorter clips cut from the same cache,
    so that the model learns lengths other than the cache's."""
    tubelets = num_frames // patch_size_t
    k = int(torch.randint(1, tubelets, (1,), generator=generator))
    start = int(torch.randint(0, tubelets - k + 1, (1,), generator=generator)) * patch_size_t
    return slice(start, start + k * patch_size_t)


def check_caches(caches: list[LatentCache], args: argparse.Namespace) -> None:
    """Several caches train one model only if they were built with the same encoders, and
    --cache-weights gives one weight per cache."""
    first = caches[0]
    for path, c in zip(args.cache[1:], caches[1:]):
        for key in ("clip", "clip_pretrained", "autoencoder"):
            if c.info.get(key) != first.info.get(key):
                raise ValueError(f"--cache {path} was built with {key} {c.info.get(key)!r}, --cache {args.cache[0]} "
                                 f"with {first.info.get(key)!r}: caches trained together need the same encoders")
        if c.latents.shape[1] != first.latents.shape[1]:
            raise ValueError(f"--cache {path} has {c.latents.shape[1]} latent channels, {args.cache[0]} "
                             f"{first.latents.shape[1]}")
    if args.cache_weights is not None and (len(args.cache_weights) != len(caches)
                                           or min(args.cache_weights) < 0 or sum(args.cache_weights) <= 0):
        raise ValueError(f"--cache-weights needs one weight >= 0 per --cache ({len(caches)}), not all 0; "
                         f"got {args.cache_weights}")
    for name in ("random_length", "known_frames"):
        if not 0 <= getattr(args, name) <= 1:
            raise ValueError(f"--{name.replace('_', '-')} is a probability, got {getattr(args, name)}")


def widen_patch_embed(trained_weight: torch.Tensor, model: TinyDiT) -> torch.Tensor:
    """A patch embedding trained without known frames, widened for `model` (known_frames_input): the trained
    columns first (the noisy latents'), then the model's own zero-initialised known-frame columns."""
    weight = model.patch_embed.weight.detach().clone()
    weight[:, :trained_weight.shape[1]] = trained_weight
    return weight


def fold_pooled_conditioning(weights: dict, trained: TinyDiT, uncond_pooled: torch.Tensor) -> dict:
    """The weights of a model trained with pooled_conditioning, for one without (adaLN from the noise level
    alone, PixArt-alpha): the pooled path's output for the empty prompt, a constant vector, moves into the
    bias of the timestep embedder's last layer. The new model then computes exactly what the trained one
    did with the empty prompt's pooled embedding, while cross-attention still reads the real prompt."""
    with torch.no_grad():
        constant = trained.pooled_embed(uncond_pooled.float().reshape(1, -1))[0]  # (D,)
    weights = {k: v for k, v in weights.items() if not k.startswith("pooled_embed.")}
    weights["time_embed.mlp.2.bias"] = weights["time_embed.mlp.2.bias"] + constant
    return weights


def model_shape(config) -> dict:
    """A model config without diffusers' bookkeeping keys ("_class_name", "_use_default_values", ...,
    whose contents vary from process to process): what must match to load weights into a model."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def rng_state(batch_generator: torch.Generator, noise_generator: torch.Generator) -> dict:
    """Every random number generator this process uses, to continue a run exactly."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "batch_generator": batch_generator.get_state(),
        "noise_generator": noise_generator.get_state(),
    }


def set_rng_state(state: dict, batch_generator: torch.Generator, noise_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    batch_generator.set_state(state["batch_generator"])
    noise_generator.set_state(state["noise_generator"])


def check_process_count(num_processes: int, env=os.environ) -> str | None:
    """Catch a launch that asked for several processes but runs this one alone (docs/training.md, "Training on
    several processes or GPUs"). Raises when a launcher started several processes that accelerate
    does not join (each would train alone and overwrite the same run folder); returns a warning when
    `accelerate launch` was asked for several processes and started one (--cpu, or no GPUs); else None."""
    if num_processes > 1:
        return None
    started = max(int(env.get(name) or 1) for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                                        "MV2_COMM_WORLD_SIZE"))
    if started > 1:
        raise RuntimeError(
            f"the launcher started {started} processes (WORLD_SIZE={env.get('WORLD_SIZE')}), but accelerate runs "
            "this one alone (no GPU per process, and ACCELERATE_USE_CPU is not set): each would train on its own "
            f"and overwrite the same run folder. On CPUs: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node {started} "
            "-m tiny_dit.training.train ...; on GPUs: check that every process has one (nvidia-smi, "
            "CUDA_VISIBLE_DEVICES)")
    # accelerate launch's one-process launcher always sets ACCELERATE_USE_CPU, and MASTER_ADDR only when it
    # was asked for --num_processes > 1 or --num_machines > 1; a real several-process launch sets WORLD_SIZE.
    if "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env:
        return ("warning: `accelerate launch` was asked for several processes but started this one only (with "
                "--cpu, or on a machine without a GPU per process, it starts one process unless given "
                "--mpirun_hostfile): this run trains on 1 process. For several CPU processes use "
                "ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m tiny_dit.training.train ... or "
                "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N -m tiny_dit.training.train ...")
    return None


def sample_prompts(cache: LatentCache, num: int) -> list[str]:
    """The first `num` distinct captions of the cache: fixed prompts to watch over training."""
    return list(dict.fromkeys(cache.captions))[:num]


def load_frozen_components(cache_info: dict, args: argparse.Namespace):
    """The CLIP and autoencoder the cache was built with (its cache.json), for samples and the final pipeline."""
    from tiny_dit.text_encoder import CLIPEncoder

    clip_name = args.clip or cache_info.get("clip")
    vae_name = args.autoencoder or cache_info.get("autoencoder")
    if not clip_name or not vae_name:
        raise ValueError(f"{args.cache[0]}/cache.json does not say which CLIP and autoencoder built it: "
                         "pass --clip and --autoencoder")
    clip = CLIPEncoder.from_pretrained(clip_name, pretrained=cache_info.get("clip_pretrained"))
    return clip, load_autoencoder(vae_name)


def make_pipeline(ema: TinyDiT, clip, vae, noise_shift: float = 1.0):
    """The pipeline of a run. Its sampler visits the noise levels training emphasised (the same shift):
    bundle v0.3 trained with shift 3 and sampled with 1, and lost shape to it."""
    from tiny_dit.pipeline import TinyDiTPipeline

    return TinyDiTPipeline.from_components(ema, clip, vae, shift=noise_shift)


def write_samples(pipe, prompts: list[str], folder: Path, steps: int, seed: int) -> None:
    """One clip per prompt (fixed seed, so runs and steps are comparable) plus a grid of them all."""
    from tiny_dit.data.shapes import FPS
    from tiny_dit.video import make_grid, to_uint8, write_mp4

    frames = pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)).frames
    clips = to_uint8(frames)  # (N, T, H, W, 3)
    folder.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        write_mp4(folder / f"sample-{i:02d}.mp4", clip, fps=FPS)
    write_mp4(folder / "grid.mp4", make_grid(clips), fps=FPS)
    (folder / "prompts.txt").write_text("".join(f"sample-{i:02d}: {p}\n" for i, p in enumerate(prompts)))


def model_overrides(args: argparse.Namespace) -> dict:
    """TinyDiT keyword arguments that replace the preset's: --conv-mlp and every --model KEY=VALUE."""
    overrides = {} if args.conv_mlp is None else {"conv_mlp": args.conv_mlp}
    for item in args.model or ():
        key, sep, value = item.partition("=")
        if not sep or key not in inspect.signature(TinyDiT).parameters:
            raise ValueError(f"--model {item!r}: expected KEY=VALUE with KEY a TinyDiT argument")
        overrides[key] = json.loads(value)
    return overrides


def evaluate_run(pipe, clip, args: argparse.Namespace) -> dict:
    """The project's evaluation (tiny_dit.training.evaluate) of the EMA weights, as log.jsonl fields: a learning
    curve."""
    from tiny_dit.training.evaluate import eval_scores, evaluate_pipeline

    still = args.batch_size == 0 if args.eval_still is None else args.eval_still
    start = time.time()
    with torch.no_grad():
        results = evaluate_pipeline(pipe, clip, num_prompts=args.eval_prompts, still=still, progress=False)
    return {"eval": eval_scores(results), "eval_still": still, "eval_seconds": round(time.time() - start, 1)}


def resolve_mixed_precision(args: argparse.Namespace) -> str:
    """--mixed-precision as accelerate takes it. fp16 (GPUs) passes as given; auto, no and bf16 go through
    tiny_dit.training.loop.resolve_precision on the main process, which tells the others (every process
    computes alike). A resumed run's auto stays with the precision of its args.json unless that is
    clearly the slower. Under `accelerate launch` with fp16 or bf16 in its config or its own
    --mixed_precision, auto takes that, as the run did before auto (the launcher's "no" is its default,
    so it is measured)."""
    if args.mixed_precision == "fp16":
        return "fp16"
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as the Accelerator will make it
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if args.mixed_precision == "auto" and launcher != "no":
        if state.is_main_process:
            print(f"precision: {launcher} (--mixed-precision auto, from accelerate launch's --mixed_precision "
                  "or config)")
        return launcher
    recorded = Path(args.out) / "args.json"
    previous = json.loads(recorded.read_text()).get("mixed_precision") \
        if args.resume and has_checkpoint(Path(args.out) / "checkpoint.pt") and recorded.is_file() else None
    chosen = [resolve_precision(args.mixed_precision, state.device, option="--mixed-precision", fp32_name="no",
                                keep=previous) if state.is_main_process else None]
    return broadcast_object_list(chosen)[0]


def make_accelerator(mixed_precision: str) -> Accelerator:
    """The run's Accelerator, in `mixed_precision` whatever ran before it in this process.

    accelerate keeps one mixed precision per process (AcceleratorState is shared by every Accelerator) and
    refuses another ("restart your runtime"), so a notebook that trains twice, or a test suite, would fail
    on its second run when auto or the option resolves otherwise than the first. A state left in another
    precision is reset first, as accelerate's own test script does between precisions: the
    AcceleratorState only, so the processes and the device (PartialState, the process group) stay."""
    if is_initialized() and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision)


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) a training run as described by the command-line arguments. Returns a summary."""
    started = time.time()  # --max-minutes counts from here
    preset = PRESETS[args.preset]
    for key in TRAINING_DEFAULTS:
        if getattr(args, key, None) is None:
            setattr(args, key, preset[key])
    for key in ("steps", "checkpoint_every", "log_every", "sample_steps", "num_samples"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.lr_schedule == "warmup_stable_decay":
        args.decay_steps = args.decay_steps if args.decay_steps is not None else max(1, args.steps // 5)
        if not 1 <= args.decay_steps <= args.steps:
            raise ValueError(f"--decay-steps must be 1 to --steps ({args.steps}), got {args.decay_steps}")
    elif args.decay_steps is not None:
        raise ValueError("--decay-steps goes with --lr-schedule warmup_stable_decay")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise ValueError(f"--max-minutes must be more than 0, got {args.max_minutes}")
    if args.batch_size < 0 or args.image_batch_size < 0 or args.batch_size + args.image_batch_size == 0:
        raise ValueError(f"--batch-size ({args.batch_size}) and --image-batch-size ({args.image_batch_size}) "
                         "must be at least 0, and not both 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    args.mixed_precision = resolve_mixed_precision(args)  # recorded in args.json as resolved
    accelerator = make_accelerator(args.mixed_precision)
    if (launch_warning := check_process_count(accelerator.num_processes)) is not None:
        accelerator.print(launch_warning)
    elif accelerator.num_processes > 1:
        accelerator.print(f"training on {accelerator.num_processes} processes ({accelerator.distributed_type.value}, "
                          f"{accelerator.device.type}): each draws its own batches, the effective batch is "
                          f"--batch-size x {accelerator.num_processes}")
    device, main = accelerator.device, accelerator.is_main_process
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    refuse_to_overwrite(ckpt_path, args.resume)

    # Everything random starts from the seed; each process gets its own data and noise streams.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # the model's initial weights
    process_seed = args.seed + 1000 * accelerator.process_index
    batch_generator = torch.Generator().manual_seed(process_seed)  # which clips
    noise_generator = torch.Generator(device).manual_seed(process_seed + 1)  # noise levels, noise, label dropout

    # Data: every cache in memory on the device (float16 latents and embeddings), one bucket each. The first
    # cache sets the model's default clip size and gives the empty prompt, the CLIP and the autoencoder.
    caches = [LatentCache.load(path) for path in args.cache]
    cache = caches[0]
    check_caches(caches, args)
    clip = vae = None
    if main or args.image_batch_size:  # fail now, not after hours of training, if they cannot be loaded
        clip, vae = load_frozen_components(cache.info, args)
        clip, vae = clip.to(device), vae.to(device)
    # Model, EMA copy, optimiser, LR schedule.
    model = build_model(cache, args.preset, **model_overrides(args))

    uncond = conditioning(text_inputs(cache.uncond, model.config, device))
    buckets = []
    for path, c in zip(args.cache, caches):
        still_text = None
        if args.image_batch_size:  # stills are captioned without a motion: embed those captions once
            still_text = text_inputs(embed_prompts(clip, c.still_captions(args.word_dropout, args.seed), memo={}),
                                     model.config, device)
        if args.object_weight and c.object_mask is None:
            raise ValueError(f"--object-weight needs the object masks of a shapes-world cache; {path} has none: "
                             "rebuild it with python -m tiny_dit.training.latent_cache")
        buckets.append(Bucket(str(path), c.latents.to(device), text_inputs(c.text_embeddings, model.config, device),
                              still_text,
                              c.object_mask.to(device) if args.object_weight else None))
    bucket_weights = torch.tensor(args.cache_weights or [1.0] * len(buckets), dtype=torch.float64)
    if args.init_from and not (args.resume and has_checkpoint(ckpt_path)):
        # Start from trained weights (e.g. the bundled model) instead of DiT's initialisation.
        folder = Path(args.init_from)
        folder = folder / "transformer" if (folder / "transformer").is_dir() else folder
        trained = TinyDiT.from_pretrained(folder)
        shape, new_parts = model_shape(trained.config), ZERO_INIT_ADDITIONS
        changeable = {*new_parts, "pooled_conditioning"}
        if {k: v for k, v in shape.items() if k not in changeable} != \
                {k: v for k, v in model_shape(model.config).items() if k not in changeable}:
            raise ValueError(f"--init-from {args.init_from} is a model of another shape ({shape}); "
                             f"pick the --preset it was trained with and a cache of the same sizes")
        # Parts the trained model lacks (e.g. --conv-mlp) keep their zero initialisation: the
        # network starts out computing exactly what the trained one did.
        weights = trained.state_dict()
        if model.config.known_frames_input and not trained.config.known_frames_input:
            weights["patch_embed.weight"] = widen_patch_embed(weights["patch_embed.weight"], model)
        if trained.config.pooled_conditioning != model.config.pooled_conditioning:
            if model.config.pooled_conditioning:
                raise ValueError(f"--init-from {args.init_from} reads no pooled embedding; this model would "
                                 "(pooled_conditioning): train it with --model pooled_conditioning=false")
            weights = fold_pooled_conditioning(weights, trained, cache.uncond.pooled)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or any(not any(part in key for parts in new_parts.values() for part in parts)
                             for key in missing):
            raise ValueError(f"--init-from {args.init_from}: weights do not fit (missing {missing}, "
                             f"unexpected {unexpected})")
        if model.config.word_embeddings and not trained.config.word_embeddings:
            with torch.no_grad():
                for name in ZERO_INIT_ADDITIONS["word_embeddings"]:
                    for parameter in getattr(model, name).parameters():
                        parameter.zero_()
    if args.gradient_checkpointing:  # recompute activations in the backward pass: less memory, ~1/3 more time
        model.enable_gradient_checkpointing()
    ema = copy.deepcopy(model).requires_grad_(False).eval().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.lr_schedule == "warmup_stable_decay":
        lr_scheduler = warmup_stable_decay(optimizer, args.warmup, args.steps, args.decay_steps)
    else:  # stepped once per step, by us
        lr_scheduler = get_scheduler(args.lr_schedule, optimizer, num_warmup_steps=args.warmup,
                                     num_training_steps=args.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    # What a checkpoint holds besides the step: these parts' state_dicts, and (save_checkpoint) every
    # process's random generators and the model's config.
    parts = {"model": raw_model, "ema": ema, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
    if accelerator.scaler is not None:
        parts["scaler"] = accelerator.scaler
    start = 0
    def check_shape(state: dict) -> None:
        if model_shape(state["model_config"]) != model_shape(raw_model.config):
            raise ValueError(f"{ckpt_path} holds a model of another shape ({state['model_config']}); "
                             f"resume it with the same --preset and --cache")

    if args.resume and has_checkpoint(ckpt_path):
        state = restore_training_state(ckpt_path, parts, check=check_shape)
        if len(state["rng"]) == accelerator.num_processes:
            set_rng_state(state["rng"][accelerator.process_index], batch_generator, noise_generator)
        else:
            accelerator.print(f"warning: {ckpt_path} was written by {len(state['rng'])} processes, this run has "
                              f"{accelerator.num_processes}: the weights, EMA, optimiser, LR schedule and step carry "
                              f"over, but every process's batch and noise streams restart from --seed as in a new "
                              f"run, the effective batch becomes --batch-size x {accelerator.num_processes}, and "
                              f"the run will not repeat a {len(state['rng'])}-process run exactly")
        start = state["step"]
        accelerator.print(f"resumed {ckpt_path} at step {start}")
    elif args.resume:
        accelerator.print(f"no {ckpt_path} yet: starting a new run")

    log = JsonlLog(out / "log.jsonl")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        log.drop_after(start)  # records of steps after the checkpoint (all, for a new run) are redone
        (out / "args.json").write_text(json.dumps(vars(args), indent=2, default=str))  # paths as text
    prompts = sample_prompts(cache, args.num_samples)

    saved = {"step": start}  # the step of the last checkpoint

    def save_checkpoint(step: int) -> None:
        rng = gather_object([rng_state(batch_generator, noise_generator)])  # one entry per process
        if main:
            save_training_state(ckpt_path, step, parts, rng=rng, model_config=dict(raw_model.config))
        saved["step"] = step
        accelerator.wait_for_everyone()

    def out_of_time() -> bool:
        """--max-minutes is up (the main process's clock decides, so that every process stops at one step)."""
        late = [time.time() - started > 60 * args.max_minutes]
        return bool(broadcast_object_list(late)[0] if accelerator.num_processes > 1 else late[0])

    def step_loss(step: int) -> tuple[torch.Tensor, dict]:
        """A batch of clips and a batch of stills (either may be empty) from one bucket, perhaps cut to fewer
        tubelets; the counts keep the step's tokens about those of --batch-size clips of the first cache.
        The loss is the mean over both, weighted by the nominal batch sizes."""
        bucket = buckets[int(torch.multinomial(bucket_weights, 1, generator=batch_generator))] \
            if len(buckets) > 1 else buckets[0]
        config = raw_model.config
        window = slice(None)  # which latent frames of the clips
        if args.random_length > 0 and float(torch.rand((), generator=batch_generator)) < args.random_length:
            window = random_window(bucket.latents.shape[2], config.patch_size_t, batch_generator)
        loss = 0.0
        for nominal, is_still in ((args.batch_size, False), (args.image_batch_size, True)):
            if nominal == 0:
                continue
            frames = config.patch_size_t if is_still else len(range(bucket.latents.shape[2])[window])
            reference = buckets[0].tokens(config, config.patch_size_t if is_still else None)
            count = scaled_count(nominal, bucket.tokens(config, frames), reference)
            idx = torch.randint(len(bucket.latents), (count,), generator=batch_generator).to(device)  # (B,)
            masks = None if bucket.object_mask is None else bucket.object_mask[idx]  # (B, T, h, w) uint8
            if is_still:
                x0, masks = still_images(bucket.latents[idx], config.patch_size_t, batch_generator, masks)
                x0 = x0.float()
                text = bucket.still_text
            else:
                x0 = bucket.latents[idx, :, window].float()  # (B, C, T, h, w)
                masks = None if masks is None else masks[:, window]
                text = bucket.text
            # --object-weight: the object's latent pixels count 1 + w times as much as the background's
            loss_weight = None if masks is None else 1 + args.object_weight * masks[:, None].float() / 255
            cond = conditioning(text, idx)
            known_mask = None
            if config.known_frames_input:  # some clips' first or last frames given (stills: none)
                known_mask = random_known_mask(len(x0), x0.shape[2], 0.0 if is_still else args.known_frames,
                                               batch_generator, device)
            loss = loss + nominal / (args.batch_size + args.image_batch_size) * flow_matching_loss(
                model, x0, cond, uncond, label_dropout=args.label_dropout, generator=noise_generator,
                noise_shift=args.noise_shift, known_mask=known_mask, loss_weight=loss_weight)
        return loss, {}

    def write_step_samples(step: int) -> None:
        write_samples(make_pipeline(ema, clip, vae, args.noise_shift), prompts,
                      out / "samples" / f"step-{step:06d}", args.sample_steps, args.seed)

    def evaluate_step(step: int) -> None:
        log.write(step=step, **evaluate_run(make_pipeline(ema, clip, vae, args.noise_shift), clip, args))

    last_loss = train_loop(
        model, step_loss, optimizer, lr_scheduler, start=start, steps=args.steps, save=save_checkpoint,
        log=log if main else None, accelerator=accelerator, grad_clip=args.grad_clip, ema=ema,
        ema_decay=args.ema_decay, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        every=[(args.sample_every, write_step_samples), (args.eval_every, evaluate_step)] if main else [],
        throughput=("clips_per_s", args.batch_size * accelerator.num_processes), desc="train dit",
        progress=accelerator.is_local_main_process, stop=out_of_time if args.max_minutes else None)
    if saved["step"] < args.steps:
        accelerator.print(f"stopped at step {saved['step']} of {args.steps}: --max-minutes {args.max_minutes} is up "
                          f"(checkpoint saved; --resume continues)")

    # The finished pipeline, with the EMA weights (written next to its final place, then moved there).
    pipeline_dir = out / "pipeline"
    if main:
        tmp = out / "pipeline.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        make_pipeline(ema, clip, vae, args.noise_shift).save_pretrained(tmp)
        add_training_record(out, tmp)
        shutil.rmtree(pipeline_dir, ignore_errors=True)
        tmp.rename(pipeline_dir)
        accelerator.print(f"saved the pipeline (EMA weights) to {pipeline_dir}/")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": saved["step"], "loss": last_loss, "checkpoint": ckpt_path, "pipeline": pipeline_dir}


def add_training_record(run: Path, pipeline_dir: Path, up_to_step: int | None = None) -> None:
    """Put how the model was trained beside it: training_args.json, training_log.jsonl (loss and
    evaluations) and training_samples/step-*/ (the sample grids written during the run), so that
    the app's "how it learned" view and a reader of the folder see the run, not only its result."""
    if (run / "args.json").is_file():
        shutil.copy(run / "args.json", pipeline_dir / "training_args.json")
    if (run / "log.jsonl").is_file():
        lines = (run / "log.jsonl").read_text().splitlines()
        if up_to_step is not None:
            lines = [line for line in lines if json.loads(line)["step"] <= up_to_step]
        (pipeline_dir / "training_log.jsonl").write_text("".join(line + "\n" for line in lines))
    for folder in sorted((run / "samples").glob("step-*")):
        if up_to_step is None or int(folder.name.removeprefix("step-")) <= up_to_step:
            shutil.copytree(folder, pipeline_dir / "training_samples" / folder.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("sample-*.mp4"))  # the grid shows them all


def export_checkpoint(args: argparse.Namespace) -> Path:
    """Write the EMA weights of the run's checkpoint.pt as a pipeline folder (--export), e.g. to
    evaluate a run while it trains. Touches nothing in the run folder."""
    ckpt_path = Path(args.out) / "checkpoint.pt"
    if not has_checkpoint(ckpt_path):
        raise FileNotFoundError(f"no checkpoint at {ckpt_path} yet: --export needs a run that has saved one")
    state = load_checkpoint(ckpt_path)
    ema = TinyDiT.from_config(state["model_config"])
    ema.load_state_dict(state["ema"])
    clip, vae = load_frozen_components(json.loads((Path(args.cache[0]) / "cache.json").read_text()), args)
    run_args = json.loads((Path(args.out) / "args.json").read_text())  # the run's own noise shift
    make_pipeline(ema.eval(), clip, vae, run_args.get("noise_shift") or 1.0).save_pretrained(args.export)
    add_training_record(Path(args.out), Path(args.export), up_to_step=state["step"])
    print(f"wrote the EMA weights of step {state['step']} to {args.export}/")
    return Path(args.export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tiny_dit.training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("data and run folder")
    io.add_argument("--cache", type=Path, nargs="+", required=True,
                    help="latent cache folder(s) (python -m tiny_dit.training.latent_cache). Several caches of other "
                         "lengths and sizes train one model on all of them (a bucket each; the first sets the "
                         "model's default size)")
    io.add_argument("--cache-weights", type=float, nargs="+", default=None,
                    help="how often each --cache is drawn, one weight per cache (default: equally)")
    io.add_argument("--out", type=Path, required=True, help="run folder: checkpoint, log, samples, pipeline")
    io.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    io.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="do not train: write the EMA weights of --out's checkpoint.pt as a pipeline folder "
                         "to DIR (to evaluate a run while it trains), then exit")
    io.add_argument("--init-from", default=None,
                    help="start a new run from these transformer weights (a pipeline or transformer folder, "
                         "e.g. assets/tiny-dit-shapes) instead of a fresh initialisation")
    io.add_argument("--clip", default=None, help="CLIP for samples and the pipeline (default: the cache's)")
    io.add_argument("--autoencoder", default=None,
                    help="autoencoder for samples and the pipeline (default: the cache's)")

    presets = ", ".join(f"{name}: {p['model']['hidden_size']} wide x {p['model']['depth']} deep"
                        for name, p in PRESETS.items())
    opt = parser.add_argument_group("model and optimisation (defaults come from the preset)")
    opt.add_argument("--preset", choices=sorted(PRESETS), default="small",
                     help=f"model size and training defaults ({presets}); default small")
    opt.add_argument("--steps", type=int, default=None, help="total optimiser steps (small: 20000)")
    opt.add_argument("--max-minutes", type=float, default=None,
                     help="stop after this many minutes of the command (a checkpoint and the pipeline are saved "
                          "at the step it stops; --resume continues): for a session of fixed length, such as "
                          "Colab's or a lent GPU's. Default: no limit")
    opt.add_argument("--batch-size", type=int, default=None, help="clips per step and process (small: 16)")
    opt.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (small: 1e-3)")
    opt.add_argument("--lr-schedule", default="constant_with_warmup",
                     choices=["constant_with_warmup", "cosine", "linear", "warmup_stable_decay"],
                     help="learning-rate schedule after the linear warm-up (default constant_with_warmup); "
                          "warmup_stable_decay holds the rate, then falls linearly to 0 over the last --decay-steps")
    opt.add_argument("--decay-steps", type=int, default=None,
                     help="with --lr-schedule warmup_stable_decay: the steps of the final decay (default: a fifth "
                          "of --steps). Resuming a constant-rate run with --steps N+D --decay-steps D decays from N")
    opt.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (small: 200)")
    opt.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0, as DiT)")
    opt.add_argument("--ema-decay", type=float, default=None, help="EMA decay of the saved weights (small: 0.999)")
    opt.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this (default 1)")
    opt.add_argument("--noise-shift", type=float, default=None,
                     help="move training noise levels towards noise: s -> shift*s / (1 + (shift-1)*s); "
                          "1 = logit-normal as in SD3 (small: 3)")
    opt.add_argument("--image-batch-size", type=int, default=None,
                     help="still images per step besides the --batch-size clips: one random frame of a cached clip, "
                          "one tubelet long, captioned without its motion (small: 32). --batch-size 0 trains on "
                          "stills alone (the image proxy)")
    opt.add_argument("--random-length", type=float, default=0.0,
                     help="probability that a step's clips are cut to a random run of fewer whole tubelets "
                          "(shorter clips; more of them per step), default 0")
    opt.add_argument("--known-frames", type=float, default=0.5,
                     help="with --model known_frames_input=true: probability that a clip is given some of its "
                          "first or last latent frames clean (tiny_dit.conditions.random_known_mask), as the "
                          "Sora tasks give them (default 0.5)")
    opt.add_argument("--word-dropout", type=float, default=0.0,
                     help="probability that a still's caption leaves out its colour, its shape or its background, "
                          "each drawn on its own ('a star on a black background', 'a red shape'): each word then "
                          "has to carry its own attribute, which is what held-out colour-shape pairs need "
                          "(default 0)")
    opt.add_argument("--object-weight", type=float, default=0.0,
                     help="weight the loss on the object's latent pixels by 1 + this (the shapes world's caches keep "
                          "the object's cover of each latent pixel): the outline that tells shapes apart is a small "
                          "share of the frame (default 0: every pixel alike)")
    opt.add_argument("--conv-mlp", action=argparse.BooleanOptionalAction, default=None,
                     help="a depthwise 3x3 convolution in every MLP (TinyDiT conv_mlp; default: the preset's)")
    opt.add_argument("--model", nargs="+", metavar="KEY=VALUE", default=None,
                     help="TinyDiT arguments that replace the preset's, JSON values, e.g. --model depth=8 "
                          "hidden_size=160 (for studies)")
    opt.add_argument("--label-dropout", type=float, default=0.1,
                     help="probability of training on the empty prompt, for guidance (default 0.1)")
    opt.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                     help="passed to accelerate. Default auto: bf16 or no, the faster by a short measurement (on "
                          "a GPU: bf16 where it is native; under accelerate launch, its config's fp16 or bf16); "
                          "no or bf16 forced warns when it is the slower. fp16 is for GPUs")
    opt.add_argument("--gradient-checkpointing", action="store_true",
                     help="trade compute for memory (the base preset at batch 64 on a 16 GB GPU needs it)")

    run = parser.add_argument_group("logging, checkpoints, samples")
    run.add_argument("--log-every", type=int, default=10, help="steps between log.jsonl lines (default 10)")
    run.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (small: 250)")
    run.add_argument("--sample-every", type=int, default=None,
                     help="steps between sample clips, 0 = never (small: 1000)")
    run.add_argument("--sample-steps", type=int, default=10, help="Euler steps for the sample clips (default 10)")
    run.add_argument("--num-samples", type=int, default=4, help="sample clips, one per cache caption (default 4)")
    run.add_argument("--eval-every", type=int, default=0,
                     help="steps between evaluations of the EMA weights (the frame and CLIP judges of "
                          "tiny_dit.training.evaluate, logged to log.jsonl), 0 = never")
    run.add_argument("--eval-prompts", type=int, default=24,
                     help="prompts per split for --eval-every: the evaluation's small set (default 24; the full "
                          "evaluation is python -m tiny_dit.training.evaluate's default)")
    run.add_argument("--eval-still", action=argparse.BooleanOptionalAction, default=None,
                     help="--eval-every judges still images (default: when --batch-size is 0)")
    run.add_argument("--seed", type=int, default=0, help="seed of the weights, batches, noise and samples")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def main(argv: list[str] | None = None) -> dict | Path:
    args = build_parser().parse_args(argv)
    return export_checkpoint(args) if args.export else train(args)


if __name__ == "__main__":
    main()
