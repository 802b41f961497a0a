"""The samplers: diffusers' flow-matching solvers, by name, and how many transformer passes they cost.

    from tiny_dit.schedulers import make_scheduler

    pipe.scheduler = make_scheduler("dpm++", pipe.scheduler.config, shift=1.0)   # or "euler", "heun", "unipc"
    video = pipe(prompt, num_inference_steps=8)
    pipe.save_pretrained(folder)            # the scheduler's class and config go with it

This is diffusers' standard swap (`X.from_config(pipe.scheduler.config, ...)`), with the settings
a flow-matching model needs filled in: DPM-Solver++ and UniPC are written for noise-prediction
models and need `use_flow_sigmas=True, prediction_type="flow_prediction"` to read the velocity
this transformer predicts, and they call the shift `flow_shift` where the FlowMatch schedulers
call it `shift`. `pipe.with_scheduler("unipc")` gives a pipeline that shares the models but
samples with its own scheduler, leaving `pipe` untouched (one per request in a server).

Why fewer steps can be enough. A sampler follows the ODE dx/ds = v(x, s) from noise (s = 1) to
a clip (s = 0), and the transformer gives the velocity v. Rectified flow is trained on straight
lines x_s = (1 - s) x0 + s noise, so the paths the ODE follows are nearly straight: where a path
is straight, one Euler step x += (s_next - s) v lands exactly where a hundred would. Paths bend
where the model is still choosing between clips (the average of several straight lines is a
curve), mostly at high noise, and Euler's error is that curvature times the step size. Higher-order
solvers use more than one velocity per step to estimate the curvature and correct for it: Heun
evaluates v again at the end of the step and averages the two (two passes a step); DPM-Solver++
and UniPC reuse the velocities of the previous steps (one pass a step, no extra cost). The cost
of a sampler is its transformer passes, not its steps: compare them at equal passes
(`transformer_passes`). `shift` > 1 spends more of the steps at high noise, where the paths bend.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler,
                       UniPCMultistepScheduler)

from tiny_dit.flow import sampling_noise_levels


@dataclass(frozen=True)
class SchedulerChoice:
    """One entry of SCHEDULERS: the diffusers class, the settings it needs for a flow-matching
    model, the name of its shift setting, and a line for menus."""

    cls: type
    settings: dict = field(default_factory=dict)
    shift_key: str = "shift"
    label: str = ""


SCHEDULERS: dict[str, SchedulerChoice] = {
    "euler": SchedulerChoice(FlowMatchEulerDiscreteScheduler, {}, "shift",
                             "Euler (1st order, 1 pass a step): the teaching sampler"),
    "heun": SchedulerChoice(FlowMatchHeunDiscreteScheduler, {}, "shift",
                            "Heun (2nd order, 2 passes a step, except the last)"),
    "dpm++": SchedulerChoice(DPMSolverMultistepScheduler,
                             {"use_flow_sigmas": True, "prediction_type": "flow_prediction",
                              "algorithm_type": "dpmsolver++", "solver_order": 2},
                             "flow_shift", "DPM-Solver++ 2M (2nd order multistep, 1 pass a step)"),
    "unipc": SchedulerChoice(UniPCMultistepScheduler,
                             {"use_flow_sigmas": True, "prediction_type": "flow_prediction"},
                             "flow_shift", "UniPC (predictor-corrector multistep, 1 pass a step)"),
}
DEFAULT_SCHEDULER = "euler"
FlowScheduler = (FlowMatchEulerDiscreteScheduler | FlowMatchHeunDiscreteScheduler | DPMSolverMultistepScheduler
                 | UniPCMultistepScheduler)


def make_scheduler(name: str, base_config=None, shift: float | None = None):
    """A new scheduler of SCHEDULERS[name], from `base_config` (e.g. `pipe.scheduler.config`, of any
    of the four classes): its settings that the new class takes are kept, the ones a flow-matching
    model needs are set, and the shift is `shift`, else the base config's (`shift` or `flow_shift`),
    else 1 (the noise levels the model was trained on)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}: choose one of {list(SCHEDULERS)}")
    choice = SCHEDULERS[name]
    base = dict(base_config or {})
    if shift is None:
        shift = config_shift(base)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not np.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a positive number, got {shift!r}")
    accepted = set(inspect.signature(choice.cls.__init__).parameters) - {"self"}
    kept = {k: v for k, v in base.items() if k in accepted and not k.startswith("_")}
    return choice.cls.from_config({**kept, **choice.settings, choice.shift_key: float(shift)})


def config_shift(config) -> float:
    """The shift of a scheduler config (FlowMatch*: `shift`, DPM-Solver++/UniPC: `flow_shift`); 1 if none."""
    config = dict(config or {})
    for key in ("shift", "flow_shift"):
        if config.get(key) is not None:
            return float(config[key])
    return 1.0


def scheduler_name(scheduler) -> str | None:
    """The SCHEDULERS name of a scheduler (by class), or None for another class."""
    for name, choice in SCHEDULERS.items():
        if type(scheduler) is choice.cls:
            return name
    return None


def fresh_scheduler(scheduler):
    """A new scheduler of the same class and config, without the state of any run: one per request of a server
    (`pipe.with_scheduler(fresh_scheduler(pipe.scheduler))`), whatever the class, LCM's included."""
    return type(scheduler).from_config(scheduler.config)


def describe_scheduler(scheduler) -> str:
    """A short name for tables and logs, e.g. "dpm++ (shift 3)"."""
    name = scheduler_name(scheduler) or type(scheduler).__name__
    return f"{name} (shift {config_shift(scheduler.config):g})"


def check_flow_scheduler(scheduler) -> None:
    """Raise a ValueError that says how to fix a scheduler that cannot sample this flow model: one
    that does not read the transformer's output as a velocity, or does not use flow noise levels."""
    config = scheduler.config
    wrong = []
    if config.get("prediction_type", "flow_prediction") != "flow_prediction":
        wrong.append(f"prediction_type={config['prediction_type']!r}")
    if "use_flow_sigmas" in config and not config["use_flow_sigmas"]:
        wrong.append("use_flow_sigmas=False")
    if wrong:
        raise ValueError(
            f"{type(scheduler).__name__} with {', '.join(wrong)} cannot sample this flow-matching model (it predicts "
            "the velocity noise - x0): build it with use_flow_sigmas=True, prediction_type='flow_prediction', "
            "e.g. tiny_dit.schedulers.make_scheduler(name, pipe.scheduler.config)")


def set_flow_timesteps(scheduler, num_inference_steps: int, device=None) -> torch.Tensor:
    """Set the scheduler's noise levels for a run of num_inference_steps steps, as the pipeline does;
    return its timesteps, one per transformer pass.

    Schedulers that take custom sigmas (FlowMatch Euler, UniPC with flow sigmas) get the noise levels
    1, 1 - 1/N, ..., 1/N (then 0), the grid of flow.euler_sample; the shift bends them. The others
    use diffusers' own flow grids: DPM-Solver++ 0.999 ... 0.999/N; Heun 1 ... 0.001 (N - 1 Heun steps
    of two passes, then one Euler step from 0.001 to 0: 2N - 1 passes)."""
    if "sigmas" in inspect.signature(scheduler.set_timesteps).parameters:
        sigmas = sampling_noise_levels(num_inference_steps)[:-1].numpy()  # 1 ... 1/N (the scheduler adds 0)
        scheduler.set_timesteps(num_inference_steps, device=device, sigmas=sigmas)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    scheduler.set_begin_index(0)
    return scheduler.timesteps


def noise_levels(scheduler, num_inference_steps: int) -> np.ndarray:
    """The noise levels a run of num_inference_steps visits with this scheduler's class and config:
    float (passes + 1,), the input level of every transformer pass, then the final one (0). Heun
    visits each inner level twice (its second pass is at the end of its step). Does not change
    `scheduler`: a copy is set."""
    copy = fresh_scheduler(scheduler)
    set_flow_timesteps(copy, num_inference_steps)
    return copy.sigmas.detach().float().cpu().numpy()[:len(copy.timesteps) + 1].copy()


def transformer_passes(scheduler, num_inference_steps: int) -> int:
    """Transformer passes of one run: one per timestep (with guidance, a pass is one batch holding
    the conditional and unconditional inputs). Euler, DPM-Solver++, UniPC: N; Heun: 2N - 1."""
    return len(noise_levels(scheduler, num_inference_steps)) - 1


def choose_scheduler(current, name: str | None = None, shift: float | None = None):
    """What the --scheduler and --shift options ask for: `current` (e.g. a loaded pipeline's scheduler)
    when both are None, else make_scheduler(name, current.config, shift), where name defaults to that
    of `current` (so --shift alone changes only the shift)."""
    if name is None and shift is None:
        return current
    if name is None:
        name = scheduler_name(current)
        if name is None:
            raise ValueError(f"cannot change the shift of a {type(current).__name__}: pass a scheduler name too, "
                             f"one of {list(SCHEDULERS)}")
    return make_scheduler(name, current.config if current is not None else None, shift)


def steps_for_passes(scheduler, passes: int) -> int:
    """The most steps whose run makes at most `passes` transformer passes with this scheduler (at
    least 1): how to compare solvers at equal cost (Heun: (passes + 1) // 2; the others: passes).
    `scheduler`: a scheduler or a name of SCHEDULERS."""
    if isinstance(scheduler, str):
        scheduler = make_scheduler(scheduler)
    steps = 1
    while steps < passes and transformer_passes(scheduler, steps + 1) <= passes:
        steps += 1
    return steps
