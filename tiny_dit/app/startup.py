"""Starting the app: which model it loads (with its fallbacks), the compute dtype chosen from
what the hardware has, not timed, and no spurious warnings at load.

    pipe, name, notices = load_pipeline(requested, env="TINY_DIT_MODEL", bundled="assets/tiny-dit-shapes")
    fast, fast_name, more = load_fast_pipeline(None, "TINY_DIT_FAST_MODEL", "assets/tiny-dit-shapes-fast",
                                               bundled_path, pipe)

Loading falls back from the requested model to the bundled one to an untrained stand-in of the
same shapes (standin_pipeline), and says why in `notices`, so the page always comes up. The fast
(distilled) student beside it is optional: the requested one, else the bundled one if its folder is
there, else none (the page then offers the full model alone); one that cannot be loaded is left
out, and the notices say why.

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

from tiny_dit.app.checks import md_escape, short

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


def prepare(pipe, name: str = ""):
    """The pipeline ready to serve: eval mode, on the GPU if there is one, in its compute dtype,
    without progress bars."""
    pipe.set_progress_bar_config(disable=True)
    for component in (pipe.transformer, pipe.vae, pipe.text_encoder):
        component.eval()
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    how = set_dtype(pipe, name)  # bfloat16 where the hardware has native bfloat16 matmuls
    log.info("compute dtype: %s", how)  # also printed with the URL at start
    return pipe


def standin_pipeline(seed: int = 0, preset: str = "small"):
    """An UNTRAINED pipeline of the bundled model's shapes (tiny CLIP, tiny autoencoder, the "small"
    TinyDiT preset of tiny_dit.model.TINY_DIT_PRESETS), random weights: for developing the app when
    no trained model is there. Its clips are noise; its sizes, tokens and timings are the real ones."""
    from tiny_dit.autoencoder import tiny_autoencoder
    from tiny_dit.model import tiny_dit_preset
    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.text_encoder import CLIPEncoder

    torch.manual_seed(seed)
    clip, vae = CLIPEncoder().eval(), tiny_autoencoder().eval()
    model = tiny_dit_preset(preset, in_channels=vae.config.latent_channels, num_frames=16, sample_size=32,
                            text_embed_dim=clip.model.transformer.width,
                            pooled_embed_dim=clip.model.text_projection.shape[1]).eval()
    with torch.no_grad():  # move off the zero-output initialisation, so that something happens
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return TinyDiTPipeline.from_components(model, clip, vae, progress_bar=True)


def load_pipeline(requested: str | None, env: str, bundled: str, bundled_path: str | Path | None = None):
    """The model `requested` (None: $`env`), else the bundled one (`bundled`, found at `bundled_path`),
    else an untrained stand-in. Returns (pipeline, what was loaded, notices for the page)."""
    from tiny_dit.pipeline import TinyDiTPipeline

    requested = os.environ.get(env, "").strip() if requested is None else requested
    notices = []
    quiet_loading()
    if requested:
        try:
            return prepare(TinyDiTPipeline.from_pretrained(requested), requested), requested, notices
        except Exception as error:  # any failure to load: say so and fall back
            notices.append(f"Could not load the model `{requested}` ({env}): {md_escape(short(error))} "
                           f"Falling back to the bundled model `{bundled}`.")
    try:
        pipe = TinyDiTPipeline.from_pretrained(str(bundled_path or bundled))
        return prepare(pipe, bundled), bundled, notices
    except Exception as error:
        notices.append(f"The bundled model `{bundled}` could not be loaded either ({md_escape(short(error))}). "
                       "**Running an untrained stand-in with random weights: its clips are noise.** Train a model "
                       f"(`python -m tiny_dit.training.train`) and point {env} at its `pipeline/` folder.")
    return prepare(standin_pipeline(), "standin"), "untrained stand-in (random weights)", notices


def load_fast_pipeline(requested: str | None, env: str, bundled: str, bundled_path: str | Path | None, full):
    """The fast student to offer beside the full pipeline `full`: the one `requested` (None: $`env`), else the
    bundled one (`bundled`, found at `bundled_path`; None: no bundled student goes with `full`) if its folder
    exists, else none. A student that cannot be loaded, or whose clips and tokens are not those of `full` (a
    student keeps its teacher's sizes), is left out. Returns (pipeline or None, what was loaded, notices)."""
    from tiny_dit.inside.geometry import ModelGeometry
    from tiny_dit.pipeline import TinyDiTPipeline

    requested = os.environ.get(env, "").strip() if requested is None else requested
    tries = [(requested, f"`{requested}` ({env})")] if requested else []
    if bundled_path is not None and Path(bundled_path).is_dir():
        tries.append((str(bundled_path), f"the bundled `{bundled}`"))
    notices = []
    quiet_loading()
    for i, (source, what) in enumerate(tries):
        try:
            pipe = TinyDiTPipeline.from_pretrained(source)
            if ModelGeometry.of(pipe) != ModelGeometry.of(full):
                raise ValueError("its clips or tokens are not the full model's: a student keeps its teacher's sizes.")
        except Exception as error:  # any failure to load: say so, then the next one or none
            then = (f"Trying the bundled `{bundled}`." if i + 1 < len(tries) else
                    "Only the full model is offered.")
            notices.append(f"Could not load the fast model {what}: {md_escape(short(error))} {then}")
            continue
        return prepare(pipe, source), (requested if source == requested else bundled), notices
    return None, "", notices
