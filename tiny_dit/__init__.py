"""tiny-dit: a compact CLIP-conditioned latent video diffusion transformer, for teaching.

    from tiny_dit import TinyDiTPipeline
    pipe = TinyDiTPipeline.from_pretrained("assets/tiny-dit-shapes")

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
