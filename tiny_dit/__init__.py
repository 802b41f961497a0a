"""tiny-dit: a compact CLIP-conditioned latent video diffusion transformer, for teaching.

    from tiny_dit import TinyDiTPipeline
    pipe = TinyDiTPipeline.from_pretrained("assets/tiny-dit-shapes")

The DiT itself is this folder's modules, the ones to open first:

    model.py              TinyDiT: spacetime patches, adaLN-Zero, attention, the presets
    flow.py               rectified flow: forward process, velocity, guidance, the loss, an Euler sampler
    pipeline.py           TinyDiTPipeline (diffusers): loading, and the generation loop, step by step
    pipeline_prompts.py   its prompts -> embeddings (encode_prompt)
    pipeline_checks.py    its checks of a call's arguments (check_inputs)
    conditions.py         known frames: animate an image, extend or connect clips
    schedulers.py         diffusers' flow-matching solvers by name
    guiders.py            diffusers' guidance methods by name, and how each departs from plain CFG
    text_encoder.py       the CLIP (open_clip) that conditions the DiT
    autoencoder.py        frames <-> latents
    video.py              mp4 files, frames as uint8, grids
    sample.py             the sampling command: python -m tiny_dit.sample

Around it, one subpackage per role, each allowed to import only the layers below it
(tests/test_layers.py checks this on every module's imports):

    app/        the Gradio app's parts                  may import anything below
    inside/     a run recorded, and its views           the DiT, data
    training/   the latent cache, the loop, the three   the DiT, data
                training commands, evaluation
    data/       the shapes world, real clips            the DiT
    (the DiT)                                           only itself; sample.py also reads data

The classes below are imported lazily, on first use, so that `import tiny_dit`
stays cheap (no torch/diffusers/open_clip import until a class is needed).
diffusers resolves pipeline components with `getattr(module, class_name)`,
which goes through the same `__getattr__`.
"""

import importlib

_EXPORTS = {
    "TinyDiT": "tiny_dit.model",
    "CLIPEncoder": "tiny_dit.text_encoder",
    "OpenCLIPTokenizer": "tiny_dit.text_encoder",
    "TinyDiTPipeline": "tiny_dit.pipeline",
    "TinyDiTPipelineOutput": "tiny_dit.pipeline",
    "TinyDiTCondition": "tiny_dit.conditions",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'tiny_dit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
