"""tiny-dit's teaching app: sliders, live sampling, and the inside of the model.

    python app.py                                  # the bundled model, assets/tiny-dit-shapes
    TINY_DIT_MODEL=runs/dit-small/pipeline python app.py    # another pipeline folder or Hub repo id
    GRADIO_SERVER_PORT=7861 python app.py          # another port (GRADIO_SERVER_NAME=0.0.0.0: the network)

"Generate" samples clips with a live preview of the model's current guess of the clean
clip; "Inside the model" shows that very run from the inside (patches, attention,
trajectory, text path, adaLN-Zero) plus two comparisons (guidance scales, the forward
process). "Sora tasks" runs the pipeline's known frames (an image, animate an image, extend
or connect clips). The sampler dropdown picks the solver per request (`pipe.with_scheduler`).

This file is layout and wiring: each event function checks its inputs (tiny_dit.app_checks: raw
values, as API callers send them, become a gr.Error that names the field), calls the library and
returns. The views are tiny_dit.app_views (pictures: tiny_dit.views, words: tiny_dit.teaching), the
mp4 files tiny_dit.app_outputs, the runs kept per session and Stop tiny_dit.app_sessions.
`build_demo(pipe)` builds the app without launching it (the tests do that).
"""

import logging
import os
import random
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a classroom machine

import gradio as gr
import torch

from tiny_dit import app_outputs, app_startup, app_views, sora_tasks, teaching, training_history, views
from tiny_dit.app_checks import (GUIDANCE_MAX, GUIDANCE_MIN, GUIDANCE_STEP, MAX_GUIDANCE_COMPARE,  # noqa: F401
                                 MAX_PROMPT_CHARS, SEED_MAX, STEPS_MAX, STEPS_MIN, check_attention_view,
                                 check_choice, check_click, check_frame_size, check_guidance, check_iteration,
                                 check_number, check_prompt, check_query, check_scales, check_seed, check_steps,
                                 check_word_view, user_errors)
from tiny_dit.app_outputs import OUTPUT_MAX_AGE_S
from tiny_dit.app_sessions import ActiveRuns, RunStore, release_free_memory, session_of
from tiny_dit.inspector import ModelGeometry, RunRecord, sample_clips
from tiny_dit.pipeline import DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS, MAX_NUM_FRAMES, MAX_VIDEOS
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.schedulers import SCHEDULERS, scheduler_name, transformer_passes
from tiny_dit.teaching import HELD_OUT_EXAMPLES, INTRO, MATRIX_TEXT, SEEN_EXAMPLES, SORA_TEXT, VIEW_TEXT
from tiny_dit.word_attention import group_words, num_passes

log = logging.getLogger("tiny-dit-app")

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = "assets/tiny-dit-shapes"
MODEL_ENV = "TINY_DIT_MODEL"

# Limits of the controls (more in tiny_dit.app_checks), checked again on the server.
SAMPLES_MIN, SAMPLES_MAX, SAMPLES_DEFAULT = 1, MAX_VIDEOS, 4  # the pipeline's limit per call
GUIDANCE_COMPARE_CHOICES = [1, 2, 3, 5, 7.5, 10, 15]
GUIDANCE_COMPARE_DEFAULT = [1, 3, 5, 10]
RUN_TTL_S = 1800  # a finished run unused this long is dropped (the page's views then ask for a new one)
MAX_RUNS_MB = 300  # all sessions' finished runs together (~6 MB each at the defaults, 17 MB at most)
MAX_RUNS_MB_ENV = "TINY_DIT_MAX_RUNS_MB"
STOP_WAIT_S = 10  # Stop waits at most this long for the sampler to let go (one DiT block, normally)
SORA_FRAMES_MAX = MAX_NUM_FRAMES  # the pipeline's longest clip
SORA_KEEP_DEFAULT = 4  # frames taken from each clip (one tubelet of the bundled model)


def load_pipeline(name: str | None = None) -> tuple[TinyDiTPipeline, str, list[str]]:
    """The model named by `name` (default: $TINY_DIT_MODEL), else the bundled one, else an untrained
    stand-in (tiny_dit.app_startup). Returns (pipeline, what was loaded, notices for the page)."""
    return app_startup.load_pipeline(name, MODEL_ENV, BUNDLED_MODEL, HERE / BUNDLED_MODEL)


def iteration_slider(passes: int, value: int, minimum: int = 1) -> gr.Slider:
    """An iteration slider for a run of `passes` transformer passes (one pass: shown, not movable)."""
    return gr.Slider(minimum=minimum, maximum=max(passes, minimum + 1), value=value, step=1,
                     interactive=passes > minimum)


# ----------------------------------------------------------------------------
# The event functions
# ----------------------------------------------------------------------------


class TinyDiTApp:
    """The functions behind the page, bound to one pipeline. Each one checks its inputs."""

    def __init__(self, pipe: TinyDiTPipeline, model_name: str = "", notices: list[str] | None = None,
                 output_dir: str | Path | None = None):
        self.pipe, self.model_name, self.notices = pipe, model_name, list(notices or [])
        self.geometry = g = ModelGeometry.of(pipe)
        self.output_root = Path(output_dir or Path(tempfile.gettempdir()) / "tiny-dit-app")
        self.output_root.mkdir(parents=True, exist_ok=True)
        # One sampling run at a time on these models (each request has its own scheduler, see
        # sampler_pipe; the CPU is shared by turns), even while a stopped run finishes its last step.
        self.sampling_lock = threading.Lock()
        self.runs = RunStore(max_bytes=int(float(os.environ.get(MAX_RUNS_MB_ENV, MAX_RUNS_MB)) * 10**6),
                             ttl_s=RUN_TTL_S)  # the finished runs the views show, bounded
        self.active = ActiveRuns()  # the run under way per session, for Stop
        self.head_choices = [("mean of all heads", "mean")] + [(f"head {h + 1}", str(h)) for h in range(g.num_heads)]
        self.layer_choices = [(f"block {b + 1} ({layout})", b) for b, layout in enumerate(g.layouts)]
        self.training_dir = training_history.pipeline_folder(pipe)  # its training_log.jsonl, training_samples/
        self.sampler_choices = [(choice.label, name) for name, choice in SCHEDULERS.items()]
        self.default_sampler = scheduler_name(pipe.scheduler) or "euler"

    def record_of(self, state) -> RunRecord:
        """The run a view is asked about: the page's state (a RunHandle) or a RunRecord itself."""
        return self.runs.record_of(state)

    def close_session(self, request: gr.Request = None) -> None:
        """The page was closed (demo.unload): stop its run and forget its state now."""
        self.active.stop(session_of(request), wait_s=0)
        self.runs.drop_session(session_of(request))
        release_free_memory()

    def sampler_pipe(self, sampler) -> TinyDiTPipeline:
        """A pipeline for one request: the shared models with a fresh scheduler of the chosen sampler (a
        name of SCHEDULERS; None: the loaded pipeline's). The shared pipeline's scheduler never changes."""
        name = self.default_sampler if sampler is None else check_choice(
            sampler, "Sampler", {name: name for name in SCHEDULERS})
        return self.pipe.with_scheduler(name)

    def warn_about(self, prompt: str) -> list[str]:
        """The prompt's notices (truncated by CLIP), shown as gr.Warning, and returned."""
        notices = app_views.prompt_notices(self.pipe, prompt)
        for notice in notices:
            gr.Warning(notice)
        return notices

    # -- Generate ---------------------------------------------------------------

    def random_seed(self) -> int:
        return random.randint(0, SEED_MAX)

    def generate(self, prompt, guidance, steps, samples, seed, sampler=None, request: gr.Request = None,
                 progress=gr.Progress()):
        """Sample clips with a live preview. Yields (preview image, grid video, clips, info, run handle):
        a status line after every iteration (so that Stop and job.cancel() act within one), a preview
        every ~steps/5, and finally the videos and the handle of the run (kept in self.runs)."""
        prompt, guidance, steps = check_prompt(prompt), check_guidance(guidance), check_steps(steps)
        samples = check_number(samples, "Number of samples", SAMPLES_MIN, SAMPLES_MAX, integer=True)
        seed, run_pipe = check_seed(seed), self.sampler_pipe(sampler)
        notices, session, start = self.warn_about(prompt), session_of(request), time.perf_counter()
        record = preview = None
        yield None, None, None, "Encoding the prompt and drawing the starting noise...", gr.skip()
        with closing(self.active.sample(session, run_pipe, prompt, seed=seed, guidance_scale=guidance,
                                        num_inference_steps=steps, num_videos=samples, lock=self.sampling_lock,
                                        make_preview=lambda pred: views.preview_image(self.pipe, pred))) as run:
            for event in run:
                if isinstance(event, RunRecord):
                    record = event
                    continue
                progress((event.step + 1, event.num_steps), desc=f"iteration {event.step + 1}/{event.num_steps}")
                shown = gr.skip() if event.preview is None else event.preview
                preview = preview if event.preview is None else event.preview
                yield shown, gr.skip(), gr.skip(), teaching.iteration_status(event), gr.skip()
        progress(None)
        grid, clips = app_outputs.write_run_videos(app_outputs.run_dir(self.output_root), record)
        record.notices = notices
        handle = self.runs.put(session, record.slim())  # the views need clip 1 only
        info = teaching.run_summary(record, time.perf_counter() - start)
        record = event = None  # only the slim copy stays (in self.runs)
        release_free_memory()
        yield preview, grid, clips, info, handle

    def stop(self, request: gr.Request = None):
        """The Stop button: stop this session's run within one DiT block, wait (a few seconds at most)
        until the sampler has let go, and say so, with the last preview. Returns (preview, info)."""
        run = self.active.stop(session_of(request), wait_s=STOP_WAIT_S)
        if run is None:
            return gr.skip(), "Nothing to stop: no run is under way."
        return (gr.skip() if run.preview is None else run.preview), run.status()

    # -- Inside the model -----------------------------------------------------

    def patch_grid(self, record):
        return app_views.patch_grid(self.record_of(record))

    def attention(self, record, layer, head, step, query=None):
        """(picker image, heatmap, matrix, description, query) for a block, head and step."""
        record = self.record_of(record)
        layer, head, step = check_attention_view(record, layer, head, step)
        return app_views.attention(record, layer, head, step, check_query(query, record.geometry.grid))

    def pick_patch(self, record, layer, head, step, evt: gr.SelectData):
        """A click on the picker or the heatmap: make the clicked patch the query."""
        record = self.record_of(record)
        return self.attention(record, layer, head, step, check_click(evt, views.slot_layout(record.geometry)))

    def trajectory(self, record, step):
        record = self.record_of(record)
        step = check_iteration(step, record.num_passes, "Iterations done (denoising steps)", lo=0)
        return views.trajectory_images(record, self.pipe, step)

    def text_path(self, record):
        return app_views.text_path(self.record_of(record), self.pipe)

    def adaln(self, record):
        return app_views.adaln(self.record_of(record))

    def inside(self, record):
        """Every view of a fresh run at its default settings (after Generate)."""
        record = self.record_of(record)
        passes = record.num_passes  # the views go pass by pass (Heun: two a step)
        return (*self.patch_grid(record), *self.attention(record, record.geometry.depth - 1, "mean", passes),
                iteration_slider(passes, passes), *self.trajectory(record, passes // 2),
                iteration_slider(passes, passes // 2, minimum=0), *self.text_path(record), *self.adaln(record))

    def compare_guidance(self, prompt, seed, steps, scales, sampler=None, progress=gr.Progress()):
        """The same prompt and seed at several guidance scales, one clip each (with the chosen sampler).
        Yields (video, table)."""
        prompt, seed, steps, scales = check_prompt(prompt), check_seed(seed), check_steps(steps), check_scales(scales)
        run_pipe, clips, start = self.sampler_pipe(sampler), [], time.perf_counter()
        self.warn_about(prompt)
        for i, w in enumerate(scales):
            progress((i, len(scales)), desc=f"class guidance w = {w:g}")
            with self.sampling_lock:
                clips.append(sample_clips(run_pipe, prompt, seed=seed, guidance_scale=w, num_inference_steps=steps)[0])
            yield gr.skip(), f"Sampled w = {w:g} ({i + 1} of {len(scales)}), {time.perf_counter() - start:.1f} s..."
        grid, scores = app_views.guidance_grid(self.pipe, clips, prompt, scales)
        video = app_outputs.write_video(app_outputs.run_dir(self.output_root), "guidance.mp4", grid)
        yield video, teaching.guidance_table(prompt, seed, steps, scheduler_name(run_pipe.scheduler),
                                             time.perf_counter() - start, scales, scores)

    def forward_process(self, prompt, level, seed):
        """A training-style clip of the prompt noised to level s, decoded: (clip image, ladder, text)."""
        prompt, level = check_prompt(prompt), check_number(level, "Noise level s", 0.0, 1.0)
        return app_views.forward_process(self.pipe, self.geometry, prompt, level, check_seed(seed))

    # -- Sora tasks ---------------------------------------------------------------

    def sora_task_changed(self, task, num_frames):
        """A task was picked: (number of frames: 1 for an image, more for the others; where the known frames go)."""
        task = check_choice(task, "Task", {name: name for name in sora_tasks.TASKS})
        frames = 1 if task == "image" else self.geometry.num_frames if num_frames == 1 else gr.skip()
        return frames, sora_tasks.TASKS[task].how

    def sora_task(self, task, prompt, image, clip, clip_b, num_frames, keep, height, width, guidance, steps, seed,
                  sampler=None, progress=gr.Progress()):
        """One of Sora's other tasks (tiny_dit.sora_tasks): the pipeline's `conditions=` built from the
        uploads, checked, sampled. Returns (result video, filmstrip with the given frames marked, text)."""
        task, prompt = check_choice(task, "Task", {name: name for name in sora_tasks.TASKS}), check_prompt(prompt)
        num_frames, keep, height, width = check_frame_size(height, width, self.geometry, SORA_FRAMES_MAX, num_frames,
                                                           keep)
        guidance, steps, seed = check_guidance(guidance), check_steps(steps), check_seed(seed)
        run_pipe = self.sampler_pipe(sampler)
        conditions, known = sora_tasks.build_conditions(task, num_frames, height, width, image=image, clip=clip,
                                                        clip_b=clip_b, keep=keep)
        run_pipe.check_inputs(prompt, None, steps, guidance, 1, num_frames, height, width, None, "np", ["latents"],
                              None, conditions=conditions or None)
        notices, passes = self.warn_about(prompt), transformer_passes(run_pipe.scheduler, steps)
        frames, seconds = app_views.run_sora_task(
            run_pipe, prompt, conditions, num_frames=num_frames, height=height, width=width, steps=steps,
            guidance=guidance, seed=seed, lock=self.sampling_lock,
            on_pass=lambda i: progress((i + 1, passes), desc=f"pass {i + 1}/{passes}"))
        marked, strip = app_views.sora_result_views(frames, known)
        video = app_outputs.write_video(app_outputs.run_dir(self.output_root), f"sora-{task}.mp4", marked)
        return video, strip, teaching.sora_summary(sora_tasks.describe_result(task, known), num_frames, width, height,
                                                   steps, scheduler_name(run_pipe.scheduler), guidance, seed,
                                                   seconds, notices)

    # -- Word attention (cross-attention per word) and how the model learned ----------------

    def word_attention(self, record, word, block, step, head="mean"):
        """(heatmap over every frame, description): how much each patch reads one word of the prompt
        (`word`: its index in the prompt's words, from 0), in a block (or the mean of all, 'mean')
        and head (or 'mean') at an iteration (from 1). The API: /word_attention (word, block, iteration)."""
        record = self.record_of(record)
        words = group_words(record.tokens)
        index, block, head, step = check_word_view(record, word, block, head, step, len(words), num_passes(record))
        return app_views.word_attention(record, words, index, block, head, step)

    def word_summary(self, record, block, step, head="mean"):
        """One row per word of the prompt (the middle frame of each time slot, heat over it)."""
        record = self.record_of(record)
        words = group_words(record.tokens)
        _, block, head, step = check_word_view(record, 0, block, head, step, len(words), num_passes(record))
        return app_views.word_summary(record, words, block, head, step)

    def word_inside(self, record):
        """The word-attention view of a fresh run (after Generate): the prompt's words to choose from
        (the shape's name first chosen), the last iteration, every block and head averaged."""
        record = self.record_of(record)
        words, choices, index, passes = app_views.word_choices(record)
        return (gr.Dropdown(choices=choices, value=index), iteration_slider(passes, passes),
                *self.word_attention(record, index, "mean", passes), self.word_summary(record, "mean", passes))

    def training(self, snapshot=None):
        """How the model learned: (loss curve, the samples of training snapshot `snapshot` (1 = the
        earliest; default the last), description), from the model folder's training files."""
        history = training_history.load_history(self.training_dir)
        count = len(history.snapshots)
        snapshot = (count if snapshot is None else check_number(snapshot, "Training snapshot", 1, count,
                                                                integer=True)) if count else None
        return training_history.snapshot_view(history, snapshot)


# ----------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------


def _image(label: str, scale: int = 1, clickable: bool = False, **kwargs) -> gr.Image:
    """An output picture with its caption above it (Gradio's label badge would cover the picture)."""
    with gr.Column(scale=scale, min_width=240):
        gr.Markdown(f"**{label}**", elem_classes=["caption"])
        return gr.Image(label=label, show_label=False, type="pil", format="png", interactive=False,
                        buttons=[] if clickable else ["download", "fullscreen"], **kwargs)


def build_demo(pipe: TinyDiTPipeline | None = None, model_name: str = "", notices: list[str] | None = None
               ) -> tuple[gr.Blocks, TinyDiTApp]:
    """The Gradio app on `pipe` (default: load_pipeline()), not launched, and its functions."""
    if pipe is None:
        pipe, model_name, notices = load_pipeline()
    app = TinyDiTApp(pipe, model_name, notices)
    g = app.geometry
    wrap = user_errors

    with gr.Blocks(title="tiny-dit: Sora in miniature", delete_cache=(1800, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(teaching.model_summary(model_name, g, app.notices), elem_id="model-info")
        # The state holds a RunHandle; the run itself lives in app.runs (bounded: see tiny_dit.app_sessions).
        run_state = gr.State(None, time_to_live=RUN_TTL_S, delete_callback=app.runs.drop)
        query_state = gr.State(None)

        with gr.Tabs(elem_id="modes"):
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                with gr.Row(elem_id="generate-panel"):
                    with gr.Column(scale=2, min_width=320):
                        prompt = gr.Textbox(label="Prompt", value=SEEN_EXAMPLES[0], lines=1, max_lines=3,
                                            elem_id="prompt",
                                            info="A shape (circle, square, triangle, star), a colour, a motion and "
                                                 "a background.")
                        gr.Examples([[p] for p in SEEN_EXAMPLES], inputs=[prompt], label="Seen in training")
                        gr.Examples([[p] for p in HELD_OUT_EXAMPLES], inputs=[prompt],
                                    label="Held out: colour-shape pairs never seen in training (does it compose?)")
                        guidance = gr.Slider(GUIDANCE_MIN, GUIDANCE_MAX, value=DEFAULT_GUIDANCE_SCALE,
                                             step=GUIDANCE_STEP,
                                             label="Class guidance (classifier-free guidance scale, w)",
                                             info="How hard to follow the prompt. 0 and 1: no guidance.")
                        steps = gr.Slider(STEPS_MIN, STEPS_MAX, value=DEFAULT_NUM_INFERENCE_STEPS, step=1,
                                          label="Iterations (sampling steps)",
                                          info="Solver steps from noise to clip; a step is one pass through the "
                                               "transformer (Heun: two).")
                        sampler_choice = gr.Dropdown(app.sampler_choices, value=app.default_sampler,
                                                     label="Sampler (solver)", elem_id="sampler",
                                                     info="Higher-order solvers correct for the bends in the path: "
                                                          "fewer steps for the same clip. Compare them at equal "
                                                          "passes.")
                        samples = gr.Slider(SAMPLES_MIN, SAMPLES_MAX, value=SAMPLES_DEFAULT, step=1,
                                            label="Number of samples (clips, the batch size)",
                                            info="Many samples are slow on a CPU: time grows with the number of clips.")
                        with gr.Row():
                            seed = gr.Number(value=0, precision=0, minimum=0, maximum=SEED_MAX, label="Seed",
                                             info="Same seed, same starting noise, same clips.", scale=3)
                            randomise = gr.Button("Randomise seed", scale=1, size="sm")
                        with gr.Row():
                            generate = gr.Button("Generate", variant="primary", elem_id="generate")
                            stop = gr.Button("Stop", variant="stop")
                    with gr.Column(scale=3, min_width=360):
                        preview = _image("Live preview: the model's current guess of the clean clips (pred_x0), "
                                         "updated every few iterations", elem_id="preview", height=240)
                        grid_video = gr.Video(label="Samples (looping grid)", autoplay=True, loop=True,
                                              interactive=False,
                                              elem_id="grid-video", height=420)
                        info = gr.Markdown(label="Time taken", elem_id="run-info")
                        clips = gr.Gallery(label="The individual clips", columns=6, height=230, object_fit="contain",
                                           elem_id="clips")
            with gr.Tab("Sora tasks", id="sora", elem_id="tab-sora"):
                gr.Markdown(SORA_TEXT)
                with gr.Row(elem_id="sora-panel"):
                    with gr.Column(scale=2, min_width=320):
                        sora_task = gr.Radio([(t.label, name) for name, t in sora_tasks.TASKS.items()],
                                             value="animate", label="Task", elem_id="sora-task")
                        sora_how = gr.Markdown(sora_tasks.TASKS["animate"].how)
                        sora_prompt = gr.Textbox(label="Prompt", value=sora_tasks.TASKS["animate"].example_prompt,
                                                 lines=1, max_lines=3, elem_id="sora-prompt",
                                                 info="For a still image, leave out the motion words.")
                        sora_image = gr.Image(label="Image (to animate)", type="filepath", height=150,
                                              sources=["upload", "clipboard"], elem_id="sora-image")
                        with gr.Row():
                            sora_clip = gr.Video(label="Clip A (to extend, or the start)", sources=["upload"],
                                                 height=150, elem_id="sora-clip")
                            sora_clip_b = gr.Video(label="Clip B (the end, to connect)", sources=["upload"],
                                                   height=150, elem_id="sora-clip-b")
                        with gr.Row():
                            sora_frames = gr.Slider(1, SORA_FRAMES_MAX, value=g.num_frames, step=1,
                                                    label="Number of frames")
                            sora_keep = gr.Slider(1, 32, value=SORA_KEEP_DEFAULT, step=1,
                                                  label="Frames taken from each clip")
                        with gr.Row():
                            side = g.patch_pixels
                            sora_height = gr.Slider(side, 2 * g.height, value=g.height, step=side, label="Height (px)")
                            sora_width = gr.Slider(side, 2 * g.width, value=g.width, step=side, label="Width (px)")
                        with gr.Row():
                            sora_guidance = gr.Slider(GUIDANCE_MIN, GUIDANCE_MAX, value=DEFAULT_GUIDANCE_SCALE,
                                                      step=GUIDANCE_STEP, label="Class guidance (w)")
                            sora_steps = gr.Slider(STEPS_MIN, STEPS_MAX, value=DEFAULT_NUM_INFERENCE_STEPS, step=1,
                                                   label="Iterations")
                            sora_seed = gr.Number(value=0, precision=0, minimum=0, maximum=SEED_MAX, label="Seed")
                        sora_button = gr.Button("Generate", variant="primary", elem_id="sora-generate")
                        gr.Examples(sora_tasks.example_rows(), label="Examples: rendered shapes-world frames and clips",
                                    inputs=[sora_task, sora_prompt, sora_image, sora_clip, sora_clip_b, sora_frames])
                    with gr.Column(scale=3, min_width=360):
                        sora_video = gr.Video(label="Result (the given frames have a blue border)", autoplay=True,
                                              loop=True, interactive=False, elem_id="sora-video", height=360)
                        sora_strip = _image("The frames: given (bordered) and new", elem_id="sora-strip")
                        sora_md = gr.Markdown(elem_id="sora-info")

        gr.Markdown("## Inside the model\nEverything below is computed from the run you just made (clip 1), "
                    "except the guidance comparison, the forward process and how the model learned.")
        with gr.Tabs(elem_id="views"):
            with gr.Tab("Patch grid", id="patch", elem_id="tab-patch"):
                gr.Markdown(VIEW_TEXT["patch"])
                with gr.Row():
                    patch_frames = _image("Clip 1 cut into tubelets (rows: time slots)", scale=3)
                    patch_channels = _image("The latent the DiT works on", scale=2)
                patch_md = gr.Markdown(views.token_arithmetic(g))
            with gr.Tab("Attention maps", id="attention", elem_id="tab-attention"):
                gr.Markdown(VIEW_TEXT["attention"])
                with gr.Row():
                    layer = gr.Dropdown(app.layer_choices, value=g.depth - 1, label="Layer (DiT block)")
                    head = gr.Dropdown(app.head_choices, value="mean", label="Head")
                    att_step = gr.Slider(1, DEFAULT_NUM_INFERENCE_STEPS, value=DEFAULT_NUM_INFERENCE_STEPS, step=1,
                                         label="Iteration (denoising step)")
                with gr.Row():
                    picker = _image("Click a patch (the query token)", clickable=True, elem_id="attention-picker")
                    heatmap = _image("Where the query looks, over every time slot (click here too)", clickable=True,
                                     elem_id="attention-heatmap")
                att_md = gr.Markdown(label="Where the query looks", elem_id="attention-info")
                with gr.Row():
                    matrix = _image("The full token-by-token attention matrix", scale=3, height=600,
                                    elem_id="attention-matrix")
                    with gr.Column(scale=2):
                        gr.Markdown(MATRIX_TEXT)
            with gr.Tab("Denoising trajectory", id="trajectory", elem_id="tab-trajectory"):
                gr.Markdown(VIEW_TEXT["trajectory"])
                traj_step = gr.Slider(0, DEFAULT_NUM_INFERENCE_STEPS, value=DEFAULT_NUM_INFERENCE_STEPS // 2, step=1,
                                      label="Iterations done (0 = pure noise)")
                traj_md = gr.Markdown(label="The step")
                with gr.Row():
                    traj_latent = _image("The noise levels the sampler visits, and x_t in latent space", scale=2)
                    traj_frames = _image("x_t and pred_x0, decoded", scale=3)
            with gr.Tab("Guidance side by side", id="guidance", elem_id="tab-guidance"):
                gr.Markdown(VIEW_TEXT["guidance"])
                with gr.Row():
                    scales = gr.CheckboxGroup(GUIDANCE_COMPARE_CHOICES, value=GUIDANCE_COMPARE_DEFAULT,
                                              label="Class guidance scales w to compare (prompt, seed and iterations "
                                                    "from the controls above)")
                    compare = gr.Button("Compare", variant="primary")
                guidance_video = gr.Video(label="Same prompt and seed, growing w", autoplay=True, loop=True,
                                          interactive=False)
                guidance_md = gr.Markdown(label="CLIP scores per guidance scale")
            with gr.Tab("Text path", id="text", elem_id="tab-text"):
                gr.Markdown(VIEW_TEXT["text"])
                text_md = gr.Markdown(label="What CLIP read")
                with gr.Row():
                    tokens_md = _image("The tokens CLIP reads (word pieces and their ids)", scale=3)
                    scores_image = _image("CLIP scores", scale=2)
            with gr.Tab("Word attention", id="words", elem_id="tab-words"):
                gr.Markdown(VIEW_TEXT["words"])
                with gr.Row():
                    word = gr.Dropdown([], value=None, label="Word of the prompt", elem_id="word-choice")
                    word_block = gr.Dropdown([("mean of all blocks", "mean")] + app.layer_choices, value="mean",
                                             label="Layer (DiT block)")
                    word_head = gr.Dropdown(app.head_choices, value="mean", label="Head")
                    word_step = gr.Slider(1, DEFAULT_NUM_INFERENCE_STEPS, value=DEFAULT_NUM_INFERENCE_STEPS, step=1,
                                          label="Iteration (denoising step)")
                with gr.Row():
                    word_heat = _image("How much each patch reads the word, in every frame", scale=3,
                                       elem_id="word-heatmap")
                    word_rows = _image("Every word of the prompt (the middle frame of each time slot)", scale=2,
                                       elem_id="word-summary")
                word_md = gr.Markdown(label="The word", elem_id="word-info")
            with gr.Tab("adaLN-Zero", id="adaln", elem_id="tab-adaln"):
                gr.Markdown(VIEW_TEXT["adaln"])
                adaln_image = _image("adaLN modulation over the iterations")
                adaln_md = gr.Markdown(label="Gates per block")
            with gr.Tab("Forward process", id="forward", elem_id="tab-forward"):
                gr.Markdown(VIEW_TEXT["forward"])
                with gr.Row():
                    level = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Noise level s", scale=3)
                    forward_button = gr.Button("Show", scale=1)
                forward_md = gr.Markdown(label="The noise level")
                forward_clip = _image("The clip at noise level s, decoded")
                forward_ladder = _image("The middle frame from s = 0 to s = 1")
            with gr.Tab("How it learned", id="training", elem_id="tab-training"):
                gr.Markdown(VIEW_TEXT["training"])
                snapshots = len(training_history.load_history(app.training_dir).snapshots)
                snapshot = gr.Slider(1, max(snapshots, 2), value=max(snapshots, 1), step=1, visible=snapshots > 1,
                                     label="Training snapshot (1 = the earliest; its step is written below)")
                training_md = gr.Markdown(label="The snapshot", elem_id="training-info")
                with gr.Row():
                    training_samples = _image("What it drew then (the same prompts and noise every time)", scale=3,
                                              elem_id="training-samples")
                    training_curve = _image("Training loss (and evaluation) over the run", scale=3,
                                            elem_id="training-curve")

        # -- wiring ------------------------------------------------------------------
        sampler = dict(concurrency_limit=1, concurrency_id="sampler")  # one sampling run at a time (2 vCPU)
        raw = dict(preprocess=False)  # raw JSON values: tiny_dit.app_checks checks them, nothing is coerced
        randomise.click(app.random_seed, None, seed, api_name="random_seed", api_visibility="private", queue=False)
        gen_event = gr.on(
            [generate.click, prompt.submit], wrap(app.generate),
            [prompt, guidance, steps, samples, seed, sampler_choice],
            [preview, grid_video, clips, info, run_state], api_name="generate", show_progress_on=[grid_video],
            **sampler, **raw)
        # Stop: Gradio cancels the event (the generator yields every iteration, so within one), and
        # app.stop stops the sampler within one DiT block and says so on the page, with the last preview.
        stop.click(wrap(app.stop), None, [preview, info], cancels=[gen_event], queue=False, api_name="stop",
                   api_visibility="private", show_progress="hidden")
        demo.unload(app.close_session)  # the tab was closed: drop the session's run now

        attention_outputs = [picker, heatmap, matrix, att_md, query_state]
        inside_outputs = [patch_frames, patch_channels, patch_md,
                          *attention_outputs, att_step,
                          traj_latent, traj_frames, traj_md, traj_step,
                          tokens_md, scores_image, text_md,
                          adaln_image, adaln_md]
        gen_event.success(wrap(app.inside), [run_state], inside_outputs, api_name="inside",
                          api_visibility="private", **raw)

        attention_inputs = [run_state, layer, head, att_step]
        gr.on([att_step.release, layer.change, head.change], wrap(app.attention), attention_inputs + [query_state],
              attention_outputs, api_name="attention", show_progress="minimal", **raw)
        gr.on([picker.select, heatmap.select], wrap(app.pick_patch), attention_inputs, attention_outputs,
              api_name="pick_patch", api_visibility="private", show_progress="minimal", **raw)
        traj_step.release(wrap(app.trajectory), [run_state, traj_step], [traj_latent, traj_frames, traj_md],
                          api_name="trajectory", show_progress="minimal", **raw)
        compare.click(wrap(app.compare_guidance), [prompt, seed, steps, scales, sampler_choice],
                      [guidance_video, guidance_md],
                      api_name="compare_guidance", **sampler, **raw)
        sora_task.change(wrap(app.sora_task_changed), [sora_task, sora_frames], [sora_frames, sora_how],
                         queue=False, api_visibility="private", show_progress="hidden", **raw)
        sora_button.click(wrap(app.sora_task), [sora_task, sora_prompt, sora_image, sora_clip, sora_clip_b,
                                                sora_frames, sora_keep, sora_height, sora_width, sora_guidance,
                                                sora_steps, sora_seed, sampler_choice],
                          [sora_video, sora_strip, sora_md], api_name="sora_task", **sampler, **raw)
        gr.on([forward_button.click, level.release, demo.load], wrap(app.forward_process), [prompt, level, seed],
              [forward_clip, forward_ladder, forward_md], api_name="forward_process", show_progress="minimal", **raw)

        # Word attention: recomputed for the chosen iteration from the run's latents (tiny_dit.word_attention).
        gen_event.success(wrap(app.word_inside), [run_state], [word, word_step, word_heat, word_md, word_rows],
                          api_name="word_inside", api_visibility="private", **raw)
        gr.on([word.input, word_block.input, word_head.input, word_step.release], wrap(app.word_attention),
              [run_state, word, word_block, word_step, word_head], [word_heat, word_md], api_name="word_attention",
              show_progress="minimal", **raw)
        gr.on([word_block.input, word_head.input, word_step.release], wrap(app.word_summary),
              [run_state, word_block, word_step, word_head], [word_rows], api_name="word_summary",
              api_visibility="private", show_progress="minimal", **raw)
        gr.on([snapshot.release, demo.load], wrap(app.training), [snapshot],
              [training_curve, training_samples, training_md], api_name="training", show_progress="minimal", **raw)

    demo.queue(max_size=16, default_concurrency_limit=2)
    return demo, app


CSS = """
#run-info p { margin: 0.2em 0; }
.caption p { margin: 0 0 -0.4em 0; font-size: 0.9em; }
"""


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="tiny-dit's teaching app (Gradio).")
    parser.add_argument("--model", default=None, help=f"pipeline folder or Hub repo id (default: ${MODEL_ENV}, "
                                                      f"else {BUNDLED_MODEL})")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--host", default=None, help="address (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    threads = int(os.environ.get("TINY_DIT_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    pipe, name, notices = load_pipeline(args.model)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    demo, _ = build_demo(pipe, name, notices)
    demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, show_error=False,
                css=CSS)
    print(f"tiny-dit app on {name} ({str(pipe.transformer.dtype).replace('torch.', '')}): {demo.local_url}",
          flush=True)
    demo.block_thread()



if __name__ == "__main__":
    main()
