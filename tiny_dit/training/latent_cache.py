"""The latent cache: clips encoded once, so DiT training only runs the DiT.

Training the DiT on pixels would run the autoencoder and CLIP on every clip at
every step. Both are frozen, so we run them once: clips become normalised
latents (C, T, h, w) and captions become CLIP embeddings, stored in
safetensors shards next to a `cache.json` that records where they came from.

    cache/shapes/
      cache.json            what is inside (sizes, encoders, counts)
      uncond.safetensors    the empty prompt's embedding (for classifier-free guidance)
      shard-00000.safetensors  latents, pooled, hidden_states, mask for up to --shard-size clips
      captions.jsonl        one {"text": ..., attributes...} per clip, in order

    python -m tiny_dit.training.latent_cache --out cache/shapes --num-clips 20000
    python -m tiny_dit.training.latent_cache --out cache/shapes-32f --num-clips 2000 --num-frames 32 --seed 1
    python -m tiny_dit.training.latent_cache --out cache/shapes-wide --num-clips 2000 --width 192 --seed 2
    python -m tiny_dit.training.latent_cache --out cache/mine --videofolder my_clips/
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from tiny_dit.autoencoder import encode_clips, load_autoencoder, spatial_downsample
from tiny_dit.data.videofolder import VideoFolder
from tiny_dit.text_encoder import CLIPEncoder, TextEmbeddings, text_context
from tiny_dit.training.loop import PRECISIONS, resolve_precision

DEFAULT_CLIP = "assets/tiny-clip"
DEFAULT_AUTOENCODER = "assets/tiny-autoencoder"


def shapes_source(num_clips: int, seed: int, batch_size: int = 128, num_frames: int = 16,
                  height: int = 128, width: int = 128, mask_factor: int = 4) -> Iterator[tuple]:
    """Freshly rendered shapes-world training clips: (frames, captions, attributes, extras), where extras
    holds "object_mask": how much of each latent pixel the object covers (N, T, H / mask_factor,
    W / mask_factor) uint8 0-255, mask_factor the autoencoder's downsampling (for a loss weighted by it)."""
    from tiny_dit.data.shapes import object_cover, render_dataset

    for frames, specs in render_dataset(num_clips, seed=seed, split="train", batch_size=batch_size,
                                        num_frames=num_frames, height=height, width=width):
        yield frames, [s.text for s in specs], [
            {"color": s.color, "shape": s.shape, "motion": s.motion, "background": s.background}
            for s in specs], {"object_mask": object_cover(frames, specs, mask_factor)}


def videofolder_source(folder: VideoFolder, batch_size: int = 64) -> Iterator[tuple]:
    """Clips of a videofolder, resized and frame-sampled: (frames, captions, metadata)."""
    batch = []
    for item in folder:
        batch.append(item)
        if len(batch) == batch_size:
            yield _stack(batch)
            batch = []
    if batch:
        yield _stack(batch)


def _stack(items: list) -> tuple:
    frames = torch.from_numpy(np.stack([f for f, _, _ in items]))
    return frames, [t for _, t, _ in items], [m for _, _, m in items]


@torch.no_grad()
def embed_prompts(clip: CLIPEncoder, prompts: list[str], memo: dict) -> TextEmbeddings:
    """CLIP embeddings of prompts, each distinct prompt encoded once (captions repeat a lot)."""
    new = sorted({p for p in prompts if p not in memo})
    if new:
        emb = clip.encode_text(new)
        for i, prompt in enumerate(new):
            memo[prompt] = (emb.pooled[i], emb.hidden_states[i], emb.mask[i], emb.word_embeddings[i])
    pooled, hidden, mask, words = (torch.stack(parts) for parts in zip(*(memo[p] for p in prompts)))
    return TextEmbeddings(pooled=pooled, hidden_states=hidden, mask=mask, word_embeddings=words)


def _embedding_tensors(emb: TextEmbeddings) -> dict[str, torch.Tensor]:
    tensors = {"pooled": emb.pooled.half(), "hidden_states": emb.hidden_states.half(),
               "mask": emb.mask.to(torch.uint8), "word_embeddings": emb.word_embeddings.half()}
    return {name: t.cpu().contiguous() for name, t in tensors.items()}  # safetensors writes from the CPU


def build_latent_cache(out: str | Path, source: Iterable[tuple], clip: CLIPEncoder, vae,
                       total: int | None = None, shard_size: int = 2048,
                       info: dict | None = None, bf16: bool = False) -> dict:
    """Encode every (frames, captions, metadata) batch of `source` and write the cache to `out`.

    bf16=True runs the autoencoder under bfloat16 autocast: about 1.5-2x faster on a CPU with
    AVX-512 BF16 (30-40x slower on one without: the command's --precision auto measures), latents
    within ~3% of their spread of the float32 ones (stored as float16 anyway). cache.json records
    which ("precision")."""
    device_type = next(vae.parameters()).device.type
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.safetensors"):
        old.unlink()
    memo: dict = {}
    save_file(_embedding_tensors(embed_prompts(clip, [""], memo)), out / "uncond.safetensors")
    (out / "uncond.safetensors").chmod(0o644)
    pending: dict[str, list] = {"latents": [], "pooled": [], "hidden_states": [], "mask": [], "word_embeddings": []}
    shards, num_clips, start = [], 0, time.time()

    def flush() -> None:
        if not pending["latents"]:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        save_file({k: torch.cat(v) for k, v in pending.items()}, out / name)
        (out / name).chmod(0o644)  # safetensors writes 0600; a cache is data others on the machine may read
        shards.append(name)
        for v in pending.values():
            v.clear()

    with open(out / "captions.jsonl", "w") as captions_file, \
            tqdm(total=total, unit="clip", desc="latent cache") as bar:
        for frames, captions, metadata, *extras in source:  # extras: a dict of per-clip tensors, or nothing
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                latents = encode_clips(vae, frames).half().cpu()  # (B, C, T, h, w)
            text = _embedding_tensors(embed_prompts(clip, captions, memo))
            pending["latents"].append(latents)
            for key, value in {**text, **(extras[0] if extras else {})}.items():
                pending.setdefault(key, []).append(value)
            for caption, meta in zip(captions, metadata):
                captions_file.write(json.dumps({**meta, "text": caption}) + "\n")
            num_clips += len(frames)
            bar.update(len(frames))
            if sum(len(x) for x in pending["latents"]) >= shard_size:
                flush()
        flush()
    if num_clips == 0:
        raise ValueError("no clips to encode (an empty or unreadable source)")
    seconds = time.time() - start
    summary = {"num_clips": num_clips, "shards": shards, "latent_shape": list(latents.shape[1:]),
               "seconds": round(seconds, 1), "clips_per_second": round(num_clips / seconds, 1),
               "precision": "bf16" if bf16 else "fp32", **(info or {})}
    (out / "cache.json").write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class LatentCache:
    """A whole latent cache in memory (float16 latents: 20,000 shapes clips take about 2.6 GB)."""
    latents: torch.Tensor  # (N, C, T, h, w) float16
    pooled: torch.Tensor  # (N, E) float16
    hidden_states: torch.Tensor  # (N, L, W) float16
    mask: torch.Tensor  # (N, L) bool
    uncond: TextEmbeddings  # the empty prompt, batch of 1
    captions: list[str]
    info: dict
    metadata: list[dict]  # captions.jsonl: the caption and, for shapes-world clips, the attributes
    word_embeddings: torch.Tensor | None = None  # (N, L, W) float16: each token's own embedding (None: an older cache)
    object_mask: torch.Tensor | None = None  # (N, T, h, w) uint8: the object's cover of each latent pixel (shapes world)

    @property
    def text_embeddings(self) -> TextEmbeddings:
        """The clips' caption embeddings, as CLIPEncoder.encode_text gives them."""
        return TextEmbeddings(pooled=self.pooled, hidden_states=self.hidden_states, mask=self.mask,
                              word_embeddings=self.word_embeddings)

    def still_captions(self, word_dropout: float = 0.0, seed: int = 0) -> list[str]:
        """A caption for a still frame of each clip: its shapes-world caption without the motion
        (a frame shows none), or the clip's own caption where the cache has no attributes.

        word_dropout: each of colour, shape and background is left out of a clip's still caption with
        this probability ("a star on a black background", "a red shape", ...), drawn once per clip."""
        from tiny_dit.data.shapes import NUM_PHRASINGS, caption

        rng = np.random.default_rng(seed)
        captions = []
        for i, m in enumerate(self.metadata):
            if "shape" not in m:
                captions.append(m["text"])
                continue
            keep = rng.random(3) >= word_dropout  # colour, shape, background
            captions.append(caption(m["color"] if keep[0] else None, m["shape"] if keep[1] else None, None,
                                    m["background"] if keep[2] else None, i % NUM_PHRASINGS))
        return captions

    @classmethod
    def load(cls, path: str | Path) -> "LatentCache":
        path = Path(path)
        if not (path / "cache.json").is_file():
            raise FileNotFoundError(f"{path} is not a latent cache (no cache.json); build one with "
                                    "python -m tiny_dit.training.latent_cache --out " + str(path))
        info = json.loads((path / "cache.json").read_text())
        shards = [load_file(path / name) for name in info["shards"]]
        data = {key: torch.cat([s[key] for s in shards]) for key in shards[0]}
        u = load_file(path / "uncond.safetensors")
        uncond = TextEmbeddings(pooled=u["pooled"], hidden_states=u["hidden_states"], mask=u["mask"].bool(),
                                word_embeddings=u.get("word_embeddings"))
        metadata = [json.loads(line) for line in (path / "captions.jsonl").read_text().splitlines()]
        return cls(data["latents"], data["pooled"], data["hidden_states"], data["mask"].bool(),
                   uncond, [m["text"] for m in metadata], info, metadata, data.get("word_embeddings"),
                   data.get("object_mask"))

    def __len__(self) -> int:
        return len(self.latents)


def text_inputs(emb, config, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the model's cross-attention reads of each caption, kept on the device in half precision: CLIP's token
    states (and with word_embeddings the words' own embeddings after them: text_context, as the pipeline does),
    the pooled embeddings and the mask: (N, L, W), (N, E), (N, L)."""
    context, mask = text_context(emb.hidden_states, emb.mask, emb.word_embeddings, config.word_embeddings)
    return context.half().to(device), emb.pooled.half().to(device), mask.to(device)


def conditioning(text: tuple[torch.Tensor, torch.Tensor, torch.Tensor], idx: torch.Tensor | None = None) -> dict:
    """The transformer's text keyword arguments for rows `idx` (all: None) of text_inputs' tensors, float32."""
    context, pooled, mask = text if idx is None else (part[idx] for part in text)
    return {"encoder_hidden_states": context.float(),  # (B, L, W)
            "pooled_projections": pooled.float(),  # (B, E)
            "encoder_attention_mask": mask}  # (B, L)


def encoding_probe(vae, args: argparse.Namespace, num_frames: int = 64):
    """What --precision auto times: the autoencoder encoding 64 frames of the command's size (~0.15 s a
    run on one core; emulated bfloat16 gets one run of a few seconds). Its own work, not
    training.linear_probe, and not fewer frames: on a VM with avx512_bf16, bfloat16 encoded batches of
    64-256 frames 1.1x faster, while 4-16 frames ran 1.2-1.5x and the linear probe 1.7x slower than float32."""
    height, width = (args.size, args.size) if args.videofolder else (args.height, args.width)
    frames = torch.randint(0, 256, (1, num_frames, height, width, 3), dtype=torch.uint8, generator=torch.Generator())
    return lambda: encode_clips(vae, frames)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tiny_dit.training.latent_cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="cache folder to write")
    parser.add_argument("--num-clips", type=int, default=20000, help="shapes-world clips to render")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rendered clips")
    parser.add_argument("--videofolder", type=Path, default=None,
                        help="encode this videofolder (mp4 + metadata.jsonl) instead of rendering")
    parser.add_argument("--num-frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--height", type=int, default=128,
                        help="frame height of rendered clips in pixels, a multiple of 8 (default 128)")
    parser.add_argument("--width", type=int, default=128,
                        help="frame width of rendered clips in pixels, a multiple of 8 (default 128)")
    parser.add_argument("--size", type=int, default=128, help="frame size of videofolder clips in pixels (square)")
    parser.add_argument("--clip", default=DEFAULT_CLIP,
                        help="CLIP: a folder, an open_clip name such as ViT-B-32, or hf-hub:org/repo")
    parser.add_argument("--clip-pretrained", default=None,
                        help="open_clip pretrained tag for --clip, e.g. laion2b_s34b_b79k")
    parser.add_argument("--autoencoder", default=DEFAULT_AUTOENCODER,
                        help="diffusers autoencoder: a folder or a Hub repo id")
    parser.add_argument("--shard-size", type=int, default=2048, help="clips per shard")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="encode in fp32 or under bf16 autocast; default auto: the faster of the two by a short "
                             "measurement (a warning when a forced one is the slower)")
    parser.add_argument("--bf16", action="store_const", dest="precision", const="bf16",
                        help="deprecated: the same as --precision bf16")
    parser.add_argument("--device", default="auto",
                        help="where the autoencoder and CLIP run: cpu, cuda, ... (default auto: cuda if there is one)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (rendering, and encoding on a CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device torch knows (cpu, cuda, cuda:1, mps, ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU here (--device cpu, or auto)")
    clip = CLIPEncoder.from_pretrained(args.clip, pretrained=args.clip_pretrained).to(device)
    vae = load_autoencoder(args.autoencoder).to(device)
    info = {"clip": args.clip, "clip_pretrained": args.clip_pretrained, "autoencoder": args.autoencoder}
    if args.videofolder:
        folder = VideoFolder(args.videofolder, num_frames=args.num_frames, size=args.size)
        source, total = videofolder_source(folder), len(folder)
        info["source"] = str(args.videofolder)
    else:
        if args.num_frames < 2:
            parser.error(f"--num-frames must be at least 2 (a clip shows a motion), got {args.num_frames}")
        for name in ("height", "width"):  # the objects are drawn in pixels, up to 84 across
            if getattr(args, name) < 128 or getattr(args, name) % 8:
                parser.error(f"--{name} must be a multiple of 8 from 128 pixels (the shapes world's objects "
                             f"are drawn at fixed sizes), got {getattr(args, name)}")
        source = shapes_source(args.num_clips, args.seed, num_frames=args.num_frames,
                               height=args.height, width=args.width, mask_factor=spatial_downsample(vae))
        total = args.num_clips
        info["source"] = f"shapes-world seed {args.seed}, {args.num_frames} x {args.height} x {args.width}"
    precision = resolve_precision(args.precision, next(vae.parameters()).device, probe=encoding_probe(vae, args))
    summary = build_latent_cache(args.out, source, clip, vae, total=total, shard_size=args.shard_size, info=info,
                                 bf16=precision == "bf16")
    if args.videofolder and folder.num_skipped:
        print(f"skipped {folder.num_skipped} unreadable clip(s) of {len(folder)}")
    print(f"wrote {summary['num_clips']} clips to {args.out}/ in {summary['seconds']} s "
          f"({summary['clips_per_second']} clips/s), latents {summary['latent_shape']}")


if __name__ == "__main__":
    main()
