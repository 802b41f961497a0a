"""The page's building blocks for app.py: the shared controls, and the tabs that only show
(the Sora tasks tab and every view of "Inside the model"), each built by one function that
returns its components for app.py to wire. Call them inside the page's `gr.Blocks`/`gr.Tabs`.

    with gr.Tabs(elem_id="views"):
        patch = patch_tab(geometry)      # patch.frames, patch.channels, patch.md
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from tiny_dit.app import sora_tasks
from tiny_dit.app.checks import (COMPARE_MODES, GUIDANCE_MAX, GUIDANCE_MIN, GUIDANCE_STEP, OWN_GUIDER, OWN_SAMPLER,
                                 SEED_MAX, STEPS_MAX, STEPS_MIN, fast_steps_max, side_max)
from tiny_dit.edit_and_loop import DEFAULT_STRENGTH
from tiny_dit.flow import DEFAULT_GUIDANCE_SCALE, is_guided
from tiny_dit.guiders import GUIDERS, guider_name
from tiny_dit.inside import training_history
from tiny_dit.inside.teaching import FAST_TEXT, MATRIX_TEXT, SORA_TEXT, VIEW_TEXT
from tiny_dit.inside.views.patch_grid import token_arithmetic
from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS
from tiny_dit.pipeline_checks import MAX_NUM_FRAMES
from tiny_dit.schedulers import SCHEDULERS, scheduler_name

GUIDANCE_COMPARE_CHOICES = [1, 2, 3, 5, 7.5, 10, 15]
GUIDANCE_COMPARE_DEFAULT = [1, 3, 5, 10]
COMPARE_LABELS = {"methods": "each guidance method, at the scale above",
                  "scales": "several scales w, of the method above"}
SORA_FRAMES_MAX = MAX_NUM_FRAMES  # the pipeline's longest clip
SORA_KEEP_DEFAULT = 4  # frames taken from each clip (one tubelet of the bundled model)


# ----------------------------------------------------------------------------
# Controls and pictures
# ----------------------------------------------------------------------------


def image_output(label: str, scale: int = 1, clickable: bool = False, **kwargs) -> gr.Image:
    """An output picture with its caption above it (Gradio's label badge would cover the picture)."""
    with gr.Column(scale=scale, min_width=240):
        gr.Markdown(f"**{label}**", elem_classes=["caption"])
        return gr.Image(label=label, show_label=False, type="pil", format="png", interactive=False,
                        buttons=[] if clickable else ["download", "fullscreen"], **kwargs)


def iteration_slider(passes: int, value: int, minimum: int = 1) -> gr.Slider:
    """An iteration slider for a run of `passes` transformer passes (one pass: shown, not movable)."""
    return gr.Slider(minimum=minimum, maximum=max(passes, minimum + 1), value=value, step=1,
                     interactive=passes > minimum)


def guidance_slider(value: float, **kwargs) -> gr.Slider:
    """The class guidance scale, starting at `value`: the served pipeline's (its guider's scale)."""
    return gr.Slider(GUIDANCE_MIN, GUIDANCE_MAX, value=value, step=GUIDANCE_STEP, **kwargs)


def guider_choices(guider) -> tuple[list[tuple[str, str]], str]:
    """The guidance methods to choose from, (label, name) for each of GUIDERS, and the one chosen first:
    the served pipeline's `guider` (its default changes with the model), or, when it is none of GUIDERS
    (other settings), OWN_GUIDER, a choice of its own named by its class."""
    choices = [(label, name) for name, (_, _, label) in GUIDERS.items()]
    name = guider_name(guider)
    if name is None:
        choices.insert(0, (f"the model's own: {type(guider).__name__}", OWN_GUIDER))
    return choices, name or OWN_GUIDER


def sampler_choices(*pipes) -> list[tuple[str, str]]:
    """The samplers to choose from, (label, name) for each of SCHEDULERS, and OWN_SAMPLER (each model's own
    scheduler) when one of the served `pipes` (the full model, the fast one if loaded) has a scheduler that is
    none of them (the LCM scheduler of a consistency-distilled student)."""
    choices = [(choice.label, name) for name, choice in SCHEDULERS.items()]
    others = [type(pipe.scheduler).__name__ for pipe in pipes if scheduler_name(pipe.scheduler) is None]
    if others:
        choices.append((f"the model's own: {', '.join(others)}", OWN_SAMPLER))
    return choices


def model_radio(full, fast=None, **kwargs) -> gr.Radio:
    """The Model choice: the full pipeline `full`, or its fast student `fast` (a pipeline; None: only the full
    model, and the choice is hidden), each labelled with its default steps and whether it guides."""
    def label(name, pipe, how):
        return f"{name} ({pipe.default_num_inference_steps} steps, {how})"

    choices = [(label("full", full, "guided" if is_guided(full.default_guider.guidance_scale) else "unguided"),
                "full")]
    if fast is not None:
        choices.append((label("fast", fast, "distilled"), "fast"))
    return gr.Radio(choices, value="full", visible=fast is not None, **kwargs)


def steps_slider(**kwargs) -> gr.Slider:
    return gr.Slider(STEPS_MIN, STEPS_MAX, value=DEFAULT_NUM_INFERENCE_STEPS, step=1, **kwargs)


def seed_number(**kwargs) -> gr.Number:
    return gr.Number(value=0, precision=0, minimum=0, maximum=SEED_MAX, **kwargs)


def view_step_slider(value: int = DEFAULT_NUM_INFERENCE_STEPS, minimum: int = 1, **kwargs) -> gr.Slider:
    """The iteration a view shows (the page's default run until Generate sets its range)."""
    return gr.Slider(minimum, DEFAULT_NUM_INFERENCE_STEPS, value=value, step=1, **kwargs)


# ----------------------------------------------------------------------------
# Sora tasks
# ----------------------------------------------------------------------------


def sora_tab(g, guidance_scale: float = DEFAULT_GUIDANCE_SCALE) -> SimpleNamespace:
    """The Sora tasks tab, for a model of geometry `g` (a ModelGeometry) whose guider guides at
    `guidance_scale` by default: its inputs and results."""
    with gr.Tab("Sora tasks", id="sora", elem_id="tab-sora"):
        gr.Markdown(SORA_TEXT)
        gr.Markdown(sora_tasks.EDIT_AND_LOOP_TEXT)
        with gr.Row(elem_id="sora-panel"):
            with gr.Column(scale=2, min_width=320):
                task = gr.Radio([(t.label, name) for name, t in sora_tasks.TASKS.items()], value="animate",
                                label="Task", elem_id="sora-task")
                how = gr.Markdown(sora_tasks.TASKS["animate"].how)
                prompt = gr.Textbox(label="Prompt", value=sora_tasks.TASKS["animate"].example_prompt, lines=1,
                                    max_lines=3, elem_id="sora-prompt",
                                    info="For a still image, leave out the motion words.")
                image = gr.Image(label="Image (to animate)", type="filepath", height=150,
                                 sources=["upload", "clipboard"], elem_id="sora-image")
                with gr.Row():
                    clip = gr.Video(label="Clip A (to extend or edit, or the start)", sources=["upload"], height=150,
                                    elem_id="sora-clip")
                    clip_b = gr.Video(label="Clip B (the end, to connect)", sources=["upload"], height=150,
                                      elem_id="sora-clip-b")
                with gr.Row():
                    frames = gr.Slider(1, SORA_FRAMES_MAX, value=g.num_frames, step=1, label="Number of frames")
                    keep = gr.Slider(1, 32, value=SORA_KEEP_DEFAULT, step=1, label="Frames taken from each clip")
                    strength = gr.Slider(sora_tasks.STRENGTH_MIN, 1.0, value=DEFAULT_STRENGTH,
                                         step=sora_tasks.STRENGTH_STEP, label="Edit strength (noise level s)",
                                         info="How far into the noise the clip goes: 0 keeps it, 1 keeps nothing.",
                                         elem_id="sora-strength")
                with gr.Row():
                    side = g.patch_pixels
                    height = gr.Slider(side, side_max(g.height, side), value=g.height, step=side, label="Height (px)")
                    width = gr.Slider(side, side_max(g.width, side), value=g.width, step=side, label="Width (px)")
                with gr.Row():
                    guidance = guidance_slider(guidance_scale, label="Class guidance (w)")
                    steps = steps_slider(label="Iterations")
                    seed = seed_number(label="Seed")
                button = gr.Button("Generate", variant="primary", elem_id="sora-generate")
                gr.Examples(sora_tasks.example_rows(), label="Examples: rendered shapes-world frames and clips",
                            inputs=[task, prompt, image, clip, clip_b, frames, strength])
            with gr.Column(scale=3, min_width=360, elem_id="sora-result"):
                video = gr.Video(label="Result (the given frames have a blue border; an edit shows the clip beside "
                                       "it)", autoplay=True, loop=True, interactive=False, elem_id="sora-video",
                                 height=360)
                strip = image_output("The frames: given (bordered) and new", elem_id="sora-strip")
                md = gr.Markdown(elem_id="sora-info")
    return SimpleNamespace(task=task, how=how, prompt=prompt, image=image, clip=clip, clip_b=clip_b, frames=frames,
                           keep=keep, strength=strength, height=height, width=width, guidance=guidance, steps=steps,
                           seed=seed, button=button, video=video, strip=strip, md=md)


# ----------------------------------------------------------------------------
# Inside the model: one tab per view, its teaching text first
# ----------------------------------------------------------------------------


def patch_tab(g) -> SimpleNamespace:
    with gr.Tab("Patch grid", id="patch", elem_id="tab-patch"):
        gr.Markdown(VIEW_TEXT["patch"])
        with gr.Row():
            frames = image_output("Clip 1 cut into tubelets (rows: time slots)", scale=3)
            channels = image_output("The latent the DiT works on", scale=2)
        md = gr.Markdown(token_arithmetic(g))
    return SimpleNamespace(frames=frames, channels=channels, md=md)


def attention_tab(g, layer_choices: list, head_choices: list) -> SimpleNamespace:
    with gr.Tab("Attention maps", id="attention", elem_id="tab-attention"):
        gr.Markdown(VIEW_TEXT["attention"])
        with gr.Row():
            layer = gr.Dropdown(layer_choices, value=g.depth - 1, label="Layer (DiT block)")
            head = gr.Dropdown(head_choices, value="mean", label="Head")
            step = view_step_slider(label="Iteration (denoising step)")
        with gr.Row():
            picker = image_output("Click a patch (the query token)", clickable=True, elem_id="attention-picker")
            heatmap = image_output("Where the query looks, over every time slot (click here too)", clickable=True,
                                   elem_id="attention-heatmap")
        md = gr.Markdown(label="Where the query looks", elem_id="attention-info")
        with gr.Row():
            matrix = image_output("The full token-by-token attention matrix", scale=3, height=600,
                                  elem_id="attention-matrix")
            with gr.Column(scale=2):
                gr.Markdown(MATRIX_TEXT)
    return SimpleNamespace(layer=layer, head=head, step=step, picker=picker, heatmap=heatmap, md=md, matrix=matrix)


def trajectory_tab(fast_steps: int | None = None) -> SimpleNamespace:
    """The denoising trajectory of the run, and, when a fast model is loaded (`fast_steps`: its default steps),
    the run's prompt and seed by the full and the fast model (without one, those parts are None)."""
    with gr.Tab("Denoising trajectory", id="trajectory", elem_id="tab-trajectory"):
        gr.Markdown(VIEW_TEXT["trajectory"])
        step = view_step_slider(DEFAULT_NUM_INFERENCE_STEPS // 2, minimum=0, label="Iterations done (0 = pure noise)")
        md = gr.Markdown(label="The step")
        with gr.Row():
            latent = image_output("The noise levels the sampler visits, and x_t in latent space", scale=2)
            frames = image_output("x_t and pred_x0, decoded", scale=3)
        fast = fast_comparison(fast_steps) if fast_steps is not None else SimpleNamespace(
            fast_steps=None, compare=None, fast_md=None, fast_paths=None, fast_clips=None)
    return SimpleNamespace(step=step, md=md, latent=latent, frames=frames, **vars(fast))


def fast_comparison(default_steps: int) -> SimpleNamespace:
    """The full model beside its fast student (whose default is `default_steps` steps), in the trajectory tab."""
    with gr.Column(elem_id="fast-comparison"):
        gr.Markdown(FAST_TEXT)
        with gr.Row():
            fast_steps = gr.Slider(1, fast_steps_max(default_steps), value=default_steps, step=1, scale=3,
                                   label="Fast model steps", elem_id="fast-steps")
            compare = gr.Button("Compare with the fast model", variant="primary", scale=1, elem_id="fast-compare")
        fast_md = gr.Markdown(label="The full and the fast model", elem_id="fast-info")
        with gr.Row():
            fast_paths = image_output("Same noise, same prompt: where each model is at the fast model's noise "
                                      "levels (middle frame)", scale=3, elem_id="fast-paths")
            fast_clips = image_output("The finished clips", scale=3, elem_id="fast-clips")
    return SimpleNamespace(fast_steps=fast_steps, compare=compare, fast_md=fast_md, fast_paths=fast_paths,
                           fast_clips=fast_clips)


def guidance_tab() -> SimpleNamespace:
    """The same prompt and seed under each guidance method, or at several scales of one (`mode`)."""
    with gr.Tab("Guidance side by side", id="guidance", elem_id="tab-guidance"):
        gr.Markdown(VIEW_TEXT["guidance"])
        with gr.Row():
            mode = gr.Radio([(COMPARE_LABELS[m], m) for m in COMPARE_MODES], value="methods",
                            elem_id="guidance-compare",
                            label="Compare (prompt, seed, iterations, scale and method from the controls above)")
            scales = gr.CheckboxGroup(GUIDANCE_COMPARE_CHOICES, value=GUIDANCE_COMPARE_DEFAULT,
                                      label="Class guidance scales w (when comparing scales)")
            compare = gr.Button("Compare", variant="primary")
        video = gr.Video(label="Same prompt and seed, one clip per method or scale", autoplay=True, loop=True,
                         interactive=False)
        md = gr.Markdown(label="CLIP scores and stray pixels per clip", elem_id="guidance-info")
    return SimpleNamespace(mode=mode, scales=scales, compare=compare, video=video, md=md)


def text_tab() -> SimpleNamespace:
    with gr.Tab("Text path", id="text", elem_id="tab-text"):
        gr.Markdown(VIEW_TEXT["text"])
        md = gr.Markdown(label="What CLIP read")
        with gr.Row():
            tokens = image_output("The tokens CLIP reads (word pieces and their ids)", scale=3)
            scores = image_output("CLIP scores", scale=2)
    return SimpleNamespace(md=md, tokens=tokens, scores=scores)


def words_tab(layer_choices: list, head_choices: list) -> SimpleNamespace:
    with gr.Tab("Word attention", id="words", elem_id="tab-words"):
        gr.Markdown(VIEW_TEXT["words"])
        with gr.Row():
            word = gr.Dropdown([], value=None, label="Word of the prompt", elem_id="word-choice")
            block = gr.Dropdown([("mean of all blocks", "mean")] + layer_choices, value="mean",
                                label="Layer (DiT block)")
            head = gr.Dropdown(head_choices, value="mean", label="Head")
            step = view_step_slider(label="Iteration (denoising step)")
        with gr.Row():
            heat = image_output("How much each patch reads the word, in every frame", scale=3, elem_id="word-heatmap")
            rows = image_output("Every word of the prompt (the middle frame of each time slot)", scale=2,
                                elem_id="word-summary")
        md = gr.Markdown(label="The word", elem_id="word-info")
    return SimpleNamespace(word=word, block=block, head=head, step=step, heat=heat, rows=rows, md=md)


def adaln_tab() -> SimpleNamespace:
    with gr.Tab("adaLN-Zero", id="adaln", elem_id="tab-adaln"):
        gr.Markdown(VIEW_TEXT["adaln"])
        image = image_output("adaLN modulation over the iterations")
        md = gr.Markdown(label="Gates per block")
    return SimpleNamespace(image=image, md=md)


def forward_tab() -> SimpleNamespace:
    with gr.Tab("Forward process", id="forward", elem_id="tab-forward"):
        gr.Markdown(VIEW_TEXT["forward"])
        with gr.Row():
            level = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Noise level s", scale=3)
            button = gr.Button("Show", scale=1)
        md = gr.Markdown(label="The noise level")
        clip = image_output("The clip at noise level s, decoded")
        ladder = image_output("The middle frame from s = 0 to s = 1")
    return SimpleNamespace(level=level, button=button, md=md, clip=clip, ladder=ladder)


def training_tab(training_dir) -> SimpleNamespace:
    """How the model learned, from the training files in `training_dir` (none: the slider is hidden)."""
    with gr.Tab("How it learned", id="training", elem_id="tab-training"):
        gr.Markdown(VIEW_TEXT["training"])
        snapshots = len(training_history.load_history(training_dir).snapshots)
        snapshot = gr.Slider(1, max(snapshots, 2), value=max(snapshots, 1), step=1, visible=snapshots > 1,
                             label="Training snapshot (1 = the earliest; its step is written below)")
        md = gr.Markdown(label="The snapshot", elem_id="training-info")
        with gr.Row():
            samples = image_output("What it drew then (the same prompts and noise every time)", scale=3,
                                   elem_id="training-samples")
            curve = image_output("Training loss (and evaluation) over the run", scale=3, elem_id="training-curve")
    return SimpleNamespace(snapshot=snapshot, md=md, samples=samples, curve=curve)
