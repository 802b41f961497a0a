"""Attention maps of a recorded run, recomputed when a view asks for them, and the small cache that keeps a few.

    from tiny_dit.inside.attention_maps import attention_at

    maps = attention_at(record, k)   # block -> float16 (heads, ...): self-attention of clip 1 at pass k
    record.attention_at(k)           # the same (tiny_dit.inside.recorder.RunRecord)

Why recompute instead of keeping them: a run of 36 clips and 60 iterations would hold
6 blocks x 6 heads x 256 x 256 x 60 steps x 2 bytes = 283 MB of self-attention maps per session.
A run record (tiny_dit.inside.recorder) keeps instead what the maps are computed from: clip 1's latents
x_t[k] at every transformer pass, the model's timestep there and the prompt's embeddings. Running
the transformer once more on those (batch 1, conditional, as the pipeline ran clip 1) gives the
maps the pipeline computed at that pass, up to the float16 storage of x_t (the tests check it),
in about one block-pass of one clip (a few tens of ms).

Views ask for the same pass again and again (a slider moved back and forth, another head or
block of the same pass), so the maps of the last few passes asked for are kept in a
BoundedCache: ATTENTION_CACHE_STEPS entries shared by all runs and sessions, so memory stays
bounded whatever the number of runs. tiny_dit.inside.word_attention recomputes the cross-attention
maps the same way (`maps_at` with its own cache of the same size).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

import numpy as np
import torch

ATTENTION_CACHE_STEPS = 4  # passes whose maps are kept (all runs together): ~4.7 MB each for the bundle


class BoundedCache:
    """A least-recently-used cache of at most `max_entries` values, safe to share between threads.

    `get_or_compute(key, compute)` returns the cached value, or calls compute() and keeps its
    result, dropping the least recently used entries beyond `max_entries`. compute() runs
    without the lock held, so a slow computation never blocks readers of other keys (two
    threads asking for the same missing key may both compute it; the last one is kept)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, object] = OrderedDict()  # oldest use first
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)  # now the most recently used
                return self._entries[key]
        value = compute()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


SELF_ATTENTION_CACHE = BoundedCache(ATTENTION_CACHE_STEPS)  # (run key, pass) -> block -> maps


def clip_inputs(transformer, latents: np.ndarray, timestep: float, conditioning: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The transformer's inputs for one clip, as the pipeline passes them: latents (C, T, h, w)
    -> (1, C, T, h, w) float32, the timestep (1,) and the prompt's embeddings (batch 1), all on
    the transformer's device."""
    device = next(transformer.parameters()).device
    x = torch.as_tensor(np.asarray(latents, dtype=np.float32))[None].to(device)
    t = torch.full((1,), timestep, dtype=torch.float32, device=device)
    return x, t, {name: value.to(device) for name, value in conditioning.items()}


@torch.no_grad()
def recompute_attention(transformer, latents: np.ndarray, timestep: float,
                        conditioning: dict[str, torch.Tensor]) -> dict[int, np.ndarray]:
    """The self-attention maps of every block for one clip's latents (C, T, h, w) at `timestep`:
    block -> float16 (heads, ...) (the shapes of `Attention.forward(..., return_probs=True)` for
    one clip). One forward pass of batch 1, as the pipeline runs the model."""
    x, t, text = clip_inputs(transformer, latents, timestep, conditioning)
    output = transformer(x, timestep=t, capture_attention_layers=list(range(len(transformer.blocks))), **text)
    return {block: maps[0].to(torch.float16).cpu().numpy() for block, maps in output.attentions.items()}


def maps_at(record, step: int, cache: BoundedCache, recompute: Callable) -> dict[int, np.ndarray]:
    """The maps `recompute(transformer, latents, timestep, conditioning)` gives for clip 1 of a run
    at transformer pass `step` (0-based), from what the record kept of that pass, through `cache`."""
    step = int(step)
    passes = len(record.timesteps)  # RunRecord.num_passes
    if not 0 <= step < passes:
        raise ValueError(f"step must be from 0 to {passes - 1}, got {step}")
    return cache.get_or_compute((record.key, step), lambda: recompute(
        record.transformer, record.x_t[step], float(record.timesteps[step]), record.conditioning))


def attention_at(record, step: int) -> dict[int, np.ndarray]:
    """Self-attention maps of clip 1 at transformer pass `step` (0-based) of a run, block -> float16
    (heads, ...), recomputed from x_t[step] and cached for a few passes."""
    return maps_at(record, step, SELF_ATTENTION_CACHE, recompute_attention)
