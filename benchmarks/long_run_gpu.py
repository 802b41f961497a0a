r"""The long run of the default model on one lent GPU, as one script that fits a fixed device time.

A lent GPU (the workplace's `device` tool: one H200, 16 cores, about ten minutes a call) trains in
minutes what these 2 CPU cores train in days, but it starts bare, reaches nothing and hands back at
most 8 files. So this script does everything in one go, with every stage bounded by the clock:

  1. a fresh latent cache of --clips shapes-world clips, rendered by --cache-jobs processes at once
     (rendering is the slow part: ~90 clips/s a core) and encoded on the GPU;
  2. the recipe and three variants of it (VARIANTS), trained side by side on the one GPU
     (each process keeps it only partly busy), all with the same seed, data and --max-minutes,
     evaluated every --eval-every steps by the project's evaluation (a learning curve in log.jsonl);
     a variant that fails is resumed once without the in-training evaluation;
  3. each variant's EMA weights (float16: 10 MB, under the 16 MB a returned file may have) and a
     tarball of the logs, arguments and configs, written to --out as soon as training ends, then the
     final evaluation of each variant (72 prompts a split) added to the tarball if time allows.

    python benchmarks/long_run_gpu.py --out $OUT --seconds 500       # on the lent GPU (see docs/recipe-study.md)
    python benchmarks/long_run_gpu.py --out /tmp/o --seconds 150 --clips 64 --cache-jobs 2 \
        --batch-size 2 --image-batch-size 4 --eval-every 5 --eval-prompts 4 --variants baseline object-weight-4   # a CPU rehearsal

Before the call, `--pack-site` writes what the GPU machine lacks (its image has torch, accelerate,
huggingface_hub, timm, safetensors, ...) as one tarball, the versions installed here:

    python benchmarks/long_run_gpu.py --pack-site .gpu/site.tar.xz       # .gpu/ in .git/info/exclude, carried
    # on the GPU: mkdir /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site

Back home, `--unpack` turns what came back into pipeline folders (the EMA weights in float32 with the
shipped CLIP and autoencoder) for `python -m tiny_dit.training.evaluate --model ...`:

    python benchmarks/long_run_gpu.py --unpack /work/.device/... --out runs/gpu-long
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tiny_dit, when run as python benchmarks/long_run_gpu.py
CLIP, AUTOENCODER = "assets/tiny-clip", "assets/tiny-autoencoder"

# The recipe (docs/recipe-study.md: the object weight led the larger-world study at every step; word dropout
# fell behind and was dropped), its control, more of its lever, and the words' own embeddings on top.
VARIANTS = {
    "object-weight-4": ["--object-weight", "4"],
    "baseline": [],
    "object-weight-8": ["--object-weight", "8"],
    "object-weight-4-word-embeddings": ["--object-weight", "4", "--model", "word_embeddings=true"],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def launch(command: list[str], logfile: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=open(logfile, "w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


def wait_all(procs: dict, deadline: float, poll: float = 2.0) -> dict:
    """Wait for every process until the deadline, then stop the rest. Returns name -> exit code (None: stopped)."""
    codes = {}
    while procs and time.time() < deadline:
        for name, proc in list(procs.items()):
            if proc.poll() is not None:
                codes[name] = procs.pop(name).returncode
        time.sleep(poll)
    for name, proc in procs.items():
        proc.terminate()
        codes[name] = None
    return codes


def build_caches(args, work: Path, env: dict, deadline: float) -> list[Path]:
    per_job = -(-args.clips // args.cache_jobs)
    procs = {}
    for k in range(args.cache_jobs):
        out = work / f"cache-{k:02d}"
        procs[out] = launch([sys.executable, "-m", "tiny_dit.training.latent_cache", "--out", str(out),
                             "--num-clips", str(per_job), "--seed", str(args.seed + 100 + k), "--clip", CLIP,
                             "--autoencoder", AUTOENCODER, "--threads", "1", "--shard-size", "4096"],
                            work / f"cache-{k:02d}.log", env)
    codes = wait_all(procs, deadline)
    done = sorted(out for out, code in codes.items() if code == 0)
    for out, code in codes.items():
        if code != 0:
            log(f"cache {out.name} failed ({code}):\n{tail(out.with_suffix('.log'))}")
    log(f"{len(done)} caches of {per_job} clips ready")
    return done


def train_command(args, name: str, caches: list[Path], run: Path, minutes: float, evaluate: bool) -> list[str]:
    return [sys.executable, "-m", "tiny_dit.training.train", "--cache", *map(str, caches), "--out", str(run),
            "--preset", "small", "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--image-batch-size", str(args.image_batch_size), "--warmup", str(args.warmup),
            "--checkpoint-every", str(args.checkpoint_every), "--sample-every", "0", "--log-every", "10",
            "--eval-every", str(args.eval_every if evaluate else 0), "--eval-prompts", str(args.eval_prompts),
            "--max-minutes", f"{minutes:.3f}", "--seed", str(args.seed), "--threads", "2",
            *(["--resume"] if (run / "checkpoint.pt").exists() else []), *VARIANTS[name]]


def train_variants(args, caches: list[Path], work: Path, env: dict, train_end: float) -> dict:
    """Every variant side by side until train_end; one that fails is resumed once without evaluations."""
    runs = {name: work / "runs" / name for name in args.variants}
    procs, retried = {}, set()
    for name, run in runs.items():
        procs[name] = launch(train_command(args, name, caches, run, (train_end - time.time()) / 60, True),
                             work / f"train-{name}.log", env)
    while procs:
        time.sleep(3)
        for name, proc in list(procs.items()):
            if proc.poll() is None:
                continue
            del procs[name]
            if proc.returncode != 0:
                log(f"{name} failed ({proc.returncode}):\n{tail(work / f'train-{name}.log')}")
                left = (train_end - time.time()) / 60
                if name not in retried and left > 1.0:
                    retried.add(name)
                    log(f"resuming {name} without in-training evaluation, {left:.1f} min")
                    procs[name] = launch(train_command(args, name, caches, runs[name], left, False),
                                         work / f"train-{name}-retry.log", env)
            else:
                log(f"{name} done")
        if time.time() > train_end + 20:  # a run that does not stop by itself
            for proc in procs.values():
                proc.kill()
            break
    return runs


def export_weights(runs: dict, out: Path) -> None:
    """Each finished run's EMA weights as float16 safetensors (a returned file holds at most 16 MB)."""
    import torch
    from safetensors.torch import load_file, save_file

    for name, run in runs.items():
        weights = run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():  # stopped before its pipeline: the checkpoint's EMA
            ckpt = run / "checkpoint.pt"
            if not ckpt.is_file():
                log(f"{name}: nothing to export")
                continue
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            tensors = state["ema"]
        else:
            tensors = load_file(weights)
        save_file({k: v.half().contiguous() for k, v in tensors.items()}, out / f"{name}.safetensors")
        log(f"{name}: exported")


def pack(runs: dict, work: Path, out: Path) -> None:
    with tarfile.open(out / "results.tar.gz", "w:gz") as tar:
        for name, run in runs.items():
            for rel in ("log.jsonl", "args.json", "pipeline/transformer/config.json", "eval.json"):
                if (run / rel).is_file():
                    tar.add(run / rel, arcname=f"{name}/{rel}")
        for path in sorted(work.glob("*.log")):
            tar.add(path, arcname=f"logs/{path.name}")


def evaluate(runs: dict, work: Path, env: dict, deadline: float) -> None:
    procs = {name: launch([sys.executable, "-m", "tiny_dit.training.evaluate", "--model", str(run / "pipeline"),
                           "--num-prompts", "72", "--json", str(run / "eval.json")], work / f"eval-{name}.log", env)
             for name, run in runs.items() if (run / "pipeline").is_dir()}
    log(f"final evaluations: {wait_all(procs, deadline)}")


# The packages the GPU machine's image lacks. diffusers goes without its 90 pipelines (16 of its 30 MB;
# tiny_dit imports none of them), so that the tarball (2.9 MB) fits beside the 56 MB repository.
MISSING_PACKAGES = ("diffusers", "open_clip_torch", "ftfy", "wcwidth", "importlib_metadata")


def pack_site(target: Path) -> None:
    import tempfile
    import zipfile
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(wheels),
                        *(f"{name}=={version(name)}" for name in MISSING_PACKAGES)], check=True)
        for wheel in wheels.glob("*.whl"):
            zipfile.ZipFile(wheel).extractall(site)
        for folder in ("pipelines", "modular_pipelines"):
            for sub in (site / "diffusers" / folder).iterdir():
                if sub.is_dir():
                    shutil.rmtree(sub)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:xz") as tar:
            tar.add(site, arcname=".")
    log(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB): {', '.join(MISSING_PACKAGES)}")


def unpack(args) -> None:
    """What came back -> pipeline folders with float32 EMA weights, the shipped CLIP and autoencoder."""
    from safetensors.torch import load_file

    from tiny_dit.autoencoder import load_autoencoder
    from tiny_dit.model import TinyDiT
    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.text_encoder import CLIPEncoder

    source, out = Path(args.unpack), Path(args.out)
    with tarfile.open(source / "results.tar.gz") as tar:
        tar.extractall(out, filter="data")
    clip, vae = CLIPEncoder.from_pretrained(CLIP), load_autoencoder(AUTOENCODER)
    for weights in sorted(source.glob("*.safetensors")):
        run = out / weights.stem
        config = json.loads((run / "pipeline/transformer/config.json").read_text())
        model = TinyDiT.from_config(config)
        model.load_state_dict({k: v.float() for k, v in load_file(weights).items()})
        run_args = json.loads((run / "args.json").read_text())
        pipe = TinyDiTPipeline.from_components(model.eval(), clip, vae, shift=run_args["noise_shift"])  # as train.py
        pipe.save_pretrained(run / "pipeline")
        print(f"{run / 'pipeline'}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where the returned files go ($OUT)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/long-run"), help="caches and run folders")
    parser.add_argument("--seconds", type=float, default=500, help="the whole script's time, start to end")
    parser.add_argument("--clips", type=int, default=32000, help="clips in the fresh latent cache")
    parser.add_argument("--cache-jobs", type=int, default=15, help="processes rendering and encoding the cache")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=1_000_000, help="an upper bound: --max-minutes stops the runs")
    parser.add_argument("--batch-size", type=int, default=64, help="clips a step (the small preset's 16, x4)")
    parser.add_argument("--image-batch-size", type=int, default=128, help="stills a step (the small preset's 32, x4)")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--eval-prompts", type=int, default=72)
    parser.add_argument("--final-eval-seconds", type=float, default=60,
                        help="time kept at the end for the final evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unpack", type=Path, default=None, help="turn a returned folder into pipelines (here)")
    parser.add_argument("--pack-site", type=Path, default=None, metavar="TARBALL",
                        help="write the packages the GPU machine lacks to TARBALL (here, before the call), then exit")
    args = parser.parse_args(argv)
    if args.pack_site:
        return pack_site(args.pack_site)
    if args.unpack:
        return unpack(args)

    if args.out is None:
        parser.error("--out is required (the folder whose files come back: $OUT on the GPU)")
    start = time.time()
    end = start + args.seconds
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "30"}
    log(f"start: {args.seconds:.0f} s, variants {args.variants}")
    caches = build_caches(args, work, env, deadline=start + 0.4 * args.seconds)
    if not caches:
        raise SystemExit("no cache was built")
    train_end = end - args.final_eval_seconds - 25  # 25 s: saving pipelines, exporting, packing
    runs = train_variants(args, caches, work, env, train_end)
    export_weights(runs, args.out)
    pack(runs, work, args.out)
    log("packed; final evaluations")
    evaluate(runs, work, env, deadline=end - 5)
    pack(runs, work, args.out)
    log(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
