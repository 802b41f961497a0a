"""Guidance methods: diffusers' guiders by name, and how each departs from plain classifier-free guidance.

    from diffusers import ClassifierFreeGuidance
    from tiny_dit.guiders import make_guider

    pipe(prompt, guider=ClassifierFreeGuidance(guidance_scale=5.0, start=0.0, stop=0.5))  # any guider, per call
    pipe(prompt, guider=make_guider("apg", guidance_scale=3.0))       # by name, as the app and benchmarks do
    pipe.guider = make_guider("interval", 5.0); pipe.save_pretrained(folder)   # saved like the scheduler

The teaching statement is `tiny_dit.flow.guided_velocity`, classifier-free guidance (CFG):

    v = v_uncond + w * (v_cond - v_uncond)

It extrapolates from the prompt-free velocity past the prompt's one, so every step moves further towards
what the prompt adds. That is what makes colour, shape and motion follow the prompt, and also what burns
edges: in the last, low-noise steps the model is only sharpening the outline, and w times the difference
overshoots there into coloured dots, stripes and halos around the object (measured: stray pixels 0.00% of
the frame at w = 1, 0.64% at w = 5, 1.28% at 7.5; docs/sampling.md, "Guidance without fringes"). Each
guider below departs from the plain equation in one way:

    cfg        ClassifierFreeGuidance: the plain equation at every step (Ho & Salimans 2022).
    interval   ClassifierFreeGuidance(stop=...): guided in the first steps only (the high noise levels,
               where the layout, the colour and the motion are chosen), the conditional velocity alone
               after (Kynkäänniemi et al. 2024, arXiv 2404.07724, guide in a limited interval of noise
               levels; diffusers' start/stop are fractions of the sampler's steps, not noise levels).
    rescale    ClassifierFreeGuidance(guidance_rescale=...): the guided v rescaled to the standard deviation
               of v_cond and mixed with the plain one by that factor (Lin et al. 2023, arXiv 2305.08891).
    apg        AdaptiveProjectedGuidance: the difference v_cond - v_uncond split into its parts parallel and
               orthogonal to v_cond; the parallel part, which oversaturates, is scaled by eta (0: dropped),
               the difference's norm capped, and a negative momentum over the steps (Sadat et al. 2024,
               arXiv 2410.02416).
    cfg-zero*  ClassifierFreeZeroStarGuidance: v_uncond first scaled by alpha = <v_cond, v_uncond> / |v_uncond|^2,
               the projection that best matches v_cond, and a zero velocity for the first step (Fan et al.
               2025, CFG-Zero*).

A pipeline runs a guider that asks for the conditional and unconditional predictions (the ones above,
and diffusers' tangential and frequency-decoupled guiders). Guiders that need other passes of the model
(skip-layer, perturbed-attention, smoothed-energy and auto-guidance, which run the transformer with some
of its layers changed) are refused with an error that says so.
"""

from __future__ import annotations

import copy
import logging

from diffusers.guiders import (AdaptiveProjectedGuidance, BaseGuidance, ClassifierFreeGuidance,
                               ClassifierFreeZeroStarGuidance)

from tiny_dit.flow import DEFAULT_GUIDANCE_SCALE

# name -> (diffusers class, its settings besides guidance_scale, a line for menus)
GUIDERS: dict[str, tuple[type, dict, str]] = {
    "cfg": (ClassifierFreeGuidance, {}, "plain CFG: guided at every step"),
    "interval": (ClassifierFreeGuidance, {"start": 0.0, "stop": 0.5},
                 "interval: guided in the first half of the steps only"),
    "rescale": (ClassifierFreeGuidance, {"guidance_rescale": 0.7},
                "rescale: the guided velocity brought back to the conditional one's spread"),
    "apg": (AdaptiveProjectedGuidance, {"eta": 0.0, "adaptive_projected_guidance_momentum": -0.5,
                                        "adaptive_projected_guidance_rescale": 30.0},
            "APG: the part of the push along the prediction dropped"),
    "cfg-zero*": (ClassifierFreeZeroStarGuidance, {"zero_init_steps": 1},
                  "CFG-Zero*: the unconditional velocity rescaled to match, the first step zeroed"),
}
# The default of new pipelines, chosen by benchmarks/guidance.py (docs/sampling.md): the fewest stray pixels
# within 1 point of the best adherence.
DEFAULT_GUIDER = "interval"


class _OnceAnExperimentalWarning(logging.Filter):
    """diffusers 0.42 logs "Guiders are currently an experimental feature" each time a guider is made (the
    app makes one per request): say it once per process, keep every other message of that logger."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "experimental feature" not in record.getMessage():
            return True
        said, type(self).said = type(self).said, True
        return not said


logging.getLogger("diffusers.guiders.guider_utils").addFilter(_OnceAnExperimentalWarning())
PREDICTIONS = {"pred_cond", "pred_uncond"}  # what the pipeline's one batched pass [uncond; cond] gives a guider


def make_guider(name: str = DEFAULT_GUIDER, guidance_scale: float = DEFAULT_GUIDANCE_SCALE, **settings) -> BaseGuidance:
    """A new guider of GUIDERS[name] at this guidance scale; `settings` override its defaults (e.g. stop=0.3)."""
    if name not in GUIDERS:
        raise ValueError(f"unknown guider {name!r}: choose one of {list(GUIDERS)}")
    cls, defaults, _ = GUIDERS[name]
    return cls(guidance_scale=guidance_scale, **{**defaults, **settings})


def guider_name(guider: BaseGuidance | None) -> str | None:
    """The GUIDERS name whose class and settings this guider has (its scale aside), else None."""
    if guider is None:
        return None
    for name, (cls, defaults, _) in GUIDERS.items():
        if type(guider) is cls and all(guider.config.get(k) == v for k, v in
                                       {**_class_defaults(cls), **defaults}.items()):
            return name
    return None


def _class_defaults(cls: type) -> dict:
    """The settings that tell GUIDERS' entries of one class apart, at the class's own defaults."""
    return {"start": 0.0, "stop": 1.0, "guidance_rescale": 0.0} if cls is ClassifierFreeGuidance else {}


def check_guider(guider) -> None:
    """Raise a ValueError naming what is wrong if the pipeline cannot run this guider."""
    if not isinstance(guider, BaseGuidance):
        raise ValueError(f"guider must be a diffusers guider (diffusers.guiders), got {type(guider).__name__}")
    needs = set(guider._input_predictions or ())
    if not needs <= PREDICTIONS or not hasattr(guider, "guidance_scale"):
        raise ValueError(f"guider {type(guider).__name__} needs the predictions {sorted(needs)}; this pipeline gives "
                         "a guider the conditional and unconditional ones (pred_cond, pred_uncond), so it runs "
                         f"{', '.join(sorted({cls.__name__ for cls, _, _ in GUIDERS.values()}))} and the "
                         "other guiders that need only those")


def guider_for_run(guider: BaseGuidance, guidance_scale: float) -> BaseGuidance:
    """A copy of `guider` for one run, at `guidance_scale`. A guider keeps the state of a run (its step,
    APG's momentum), so a pipeline shared by several requests never runs the one it holds; a copy, not
    guider.new(), which would build it again (and log diffusers' 'experimental' warning each call)."""
    run = copy.deepcopy(guider)
    run.guidance_scale = guidance_scale
    return run
