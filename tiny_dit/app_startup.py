"""Starting the app quickly: the compute dtype chosen from what the hardware has, not timed,
and no spurious warnings at load.

`pipe.set_dtype("auto")` times a 4-clip guided batch of the transformer in float32 and in
bfloat16 and keeps the faster: 3.6-4.1 s of a 13 s cold start on this 2-core CPU (measured
with a training run beside it), and on a busy machine the timing itself is noise: twice here
it picked float32, which samples about twice as slowly on this CPU. The rule it measures is
simple (tiny_dit.pipeline.TinyDiTPipeline.set_dtype): bfloat16 is faster on CPUs with native
bfloat16 matmuls (AVX-512 BF16 or AMX) and on GPUs that support it, float32 elsewhere. So the
app reads the CPU's flags (or asks CUDA) instead; TINY_DIT_DTYPE=float32|bfloat16 overrides
it, and TINY_DIT_DTYPE=auto times both as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

DTYPE_ENV = "TINY_DIT_DTYPE"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
log = logging.getLogger("tiny-dit-app")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def preferred_dtype(device: torch.device | str) -> str:
    """"bfloat16" where it has native matmuls (a CPU with AVX-512 BF16 or AMX, a GPU that
    supports it), else "float32"."""
    if str(device).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_flags() & set(BF16_CPU_FLAGS) else "float32"


def set_dtype(pipe, name: str = "") -> str:
    """Put `pipe` in its compute dtype: $TINY_DIT_DTYPE if set ("auto": time both), else
    preferred_dtype(). Returns how it was chosen, for the log."""
    wanted = os.environ.get(DTYPE_ENV, "").strip().lower()
    if wanted == "auto":
        return f"{str(pipe.set_dtype('auto')).replace('torch.', '')} (timed, {DTYPE_ENV}=auto)"
    if wanted:
        pipe.set_dtype(wanted)  # raises ValueError for an unknown name
        return f"{wanted} (from ${DTYPE_ENV})"
    chosen = preferred_dtype(pipe.device)
    pipe.set_dtype(chosen)
    return f"{chosen} (from the hardware: {'CUDA' if str(pipe.device).startswith('cuda') else 'CPU flags'})"


class _DropUnusedConfigWarning(logging.Filter):
    """diffusers warns at every load that the tiny autoencoder's config.json has keys AutoencoderTiny
    does not take (block_out_channels...: they describe the encoder, for people); nothing is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("were passed to AutoencoderTiny, but are not expected" in message)


def quiet_loading() -> None:
    """No 'Please verify your config.json' warning and no 'Loading pipeline components' bar at load."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    logger = logging.getLogger("diffusers.configuration_utils")
    if not any(isinstance(f, _DropUnusedConfigWarning) for f in logger.filters):
        logger.addFilter(_DropUnusedConfigWarning())
