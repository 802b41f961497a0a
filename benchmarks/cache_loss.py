r"""The flow-matching loss of one or more models on clips of one or more latent caches: did a model learn a
length or size (a cache of those clips), and what did it lose on the others?

    python benchmarks/cache_loss.py --model assets/tiny-dit-shapes runs/sizes/pipeline \
        --cache cache/shapes cache/shapes-32f cache/shapes-wide

The same clips (evenly spread over each cache), noise levels and noise for every model: the mean of
tiny_dit.flow.flow_matching_loss over --draws seeded draws, conditional only (no label dropout), with
the noise shift of each model's scheduler (what it trained with).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout
from tiny_dit.flow import flow_matching_loss  # noqa: E402
from tiny_dit.model import TinyDiT  # noqa: E402
from tiny_dit.schedulers import config_shift  # noqa: E402
from tiny_dit.training.latent_cache import LatentCache  # noqa: E402


@torch.no_grad()
def cache_loss(model: TinyDiT, cache: LatentCache, num_clips: int, draws: int, noise_shift: float) -> float:
    idx = torch.linspace(0, len(cache) - 1, min(num_clips, len(cache))).round().long()
    cond = {"encoder_hidden_states": cache.hidden_states[idx].float(), "pooled_projections": cache.pooled[idx].float(),
            "encoder_attention_mask": cache.mask[idx]}
    uncond = {"encoder_hidden_states": cache.uncond.hidden_states.float(),
              "pooled_projections": cache.uncond.pooled.float(), "encoder_attention_mask": cache.uncond.mask}
    return float(np.mean([flow_matching_loss(model, cache.latents[idx].float(), cond, uncond, label_dropout=0.0,
                                             generator=torch.Generator().manual_seed(seed),
                                             noise_shift=noise_shift).item() for seed in range(draws)]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/cache_loss.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True, help="pipeline folders")
    parser.add_argument("--cache", nargs="+", type=Path, required=True, help="latent cache folders")
    parser.add_argument("--num-clips", type=int, default=48, help="clips per cache (default 48)")
    parser.add_argument("--draws", type=int, default=3, help="seeded noise draws per clip (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict = {}
    for cache_path in args.cache:
        cache = LatentCache.load(cache_path)
        for name in args.model:
            model = TinyDiT.from_pretrained(Path(name) / "transformer").eval()
            scheduler = json.loads((Path(name) / "scheduler" / "scheduler_config.json").read_text())
            loss = cache_loss(model, cache, args.num_clips, args.draws, config_shift(scheduler))
            results.setdefault(str(cache_path), {})[name] = loss
            print(f"{str(cache_path):24s} {name:32s} loss {loss:.4f}")
    return results


if __name__ == "__main__":
    main()
