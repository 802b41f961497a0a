"""tiny-dit's teaching app: sliders, live sampling, and the inside of the model.

    python app.py                                  # the bundled model, assets/tiny-dit-shapes
    TINY_DIT_MODEL=runs/dit-small/pipeline python app.py    # another pipeline folder or Hub repo id
    TINY_DIT_FAST_MODEL=runs/fast-reflow/pipeline python app.py   # its fast (distilled) student beside it
    GRADIO_SERVER_PORT=7861 python app.py          # another port (GRADIO_SERVER_NAME=0.0.0.0: the network)
    TINY_DIT_QUEUE_SIZE=200 TINY_DIT_RUNS_PER_SESSION=1 python app.py   # the queue of a class (the defaults)

"Generate" samples clips with a live preview of the model's current guess of the clean
clip; "Inside the model" shows that very run from the inside (patches, attention,
trajectory, text path, adaLN-Zero) plus two comparisons (guidance methods or scales, the forward
process). "Sora tasks" runs the pipeline's known frames (an image, animate an image, extend
or connect clips), edits a clip by prompt (`video=`, `strength=`) and makes loops (`loop=True`).
When a fast student is loaded ($TINY_DIT_FAST_MODEL, else assets/tiny-dit-shapes-fast beside the
bundled model, if there; tiny_dit.training.distill makes one), the "Model" choice samples with it
(a few steps, guidance in its weights) and the trajectory view compares it with the full model.
The sampler dropdown picks the solver per request (`pipe.with_scheduler`), the
guidance-method dropdown the guider (tiny_dit.guiders); both start at the loaded pipeline's own.

This file is layout and wiring: each event function checks its inputs (tiny_dit.app.checks: raw
values, as API callers send them, become a gr.Error that names the field), calls the library and
returns. The views are tiny_dit.app.view_contents (pictures: tiny_dit.inside.views, words:
tiny_dit.inside.teaching), the mp4 files tiny_dit.app.outputs, the runs kept per session and Stop
tiny_dit.app.sessions, the queue's limits for a whole class (its size, one run at a time per session)
tiny_dit.app.queue_limits. The page's shared controls and the tabs that only show (Sora tasks, each view)
are built by tiny_dit.app.layout; their labels and teaching text are in tiny_dit.inside.teaching.
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

from tiny_dit.app import layout, outputs, sora_tasks, startup, view_contents
from tiny_dit.app.checks import (COMPARE_MODES, OWN_SAMPLER, SAMPLES_DEFAULT, SAMPLES_MAX, SAMPLES_MIN, SEED_MAX,
                                 check_attention_view, check_choice, check_click, check_fast_steps,
                                 check_frame_size, check_guidance, check_guidance_method, check_iteration,
                                 check_model, check_number, check_prompt, check_query, check_scales, check_seed,
                                 check_steps, check_word_view, user_errors)
from tiny_dit.app.layout import SORA_FRAMES_MAX, iteration_slider
from tiny_dit.app.outputs import OUTPUT_MAX_AGE_S
from tiny_dit.app.queue_limits import ENVIRONMENT_HELP, SAMPLER, Admission, QueueLimits, waiting_runs
from tiny_dit.app.sessions import ActiveRuns, RunStore, release_free_memory, session_of
from tiny_dit.edit_and_loop import DEFAULT_STRENGTH, edit_schedule, loop_num_frames
from tiny_dit.flow import is_guided
from tiny_dit.inside import teaching, training_history
from tiny_dit.inside.fast_comparison import compare_with_fast
from tiny_dit.inside.geometry import ModelGeometry
from tiny_dit.inside.recorder import RunRecord, method_name, sample_clips
from tiny_dit.inside.views.attention import slot_layout
from tiny_dit.inside.views.trajectory import preview_image, trajectory_images
from tiny_dit.inside.word_attention import group_words
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.schedulers import fresh_scheduler, scheduler_name, transformer_passes

log = logging.getLogger("tiny-dit-app")

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = "assets/tiny-dit-shapes"
MODEL_ENV = "TINY_DIT_MODEL"
BUNDLED_FAST_MODEL = "assets/tiny-dit-shapes-fast"  # the bundled model's fast student, when it is shipped
FAST_MODEL_ENV = "TINY_DIT_FAST_MODEL"

# Limits of the controls (more in tiny_dit.app.checks), checked again on the server.
RUN_TTL_S = 1800  # a finished run unused this long is dropped (the page's views then ask for a new one)
MAX_RUNS_MB = 300  # all sessions' finished runs together (~6 MB each at the defaults, 17 MB at most)
MAX_RUNS_MB_ENV = "TINY_DIT_MAX_RUNS_MB"
STOP_WAIT_S = 10  # Stop waits at most this long for the sampler to let go (one DiT block, normally)


def load_pipeline(name: str | None = None) -> tuple[TinyDiTPipeline, str, list[str]]:
    """The model named by `name` (default: $TINY_DIT_MODEL), else the bundled one, else an untrained
    stand-in (tiny_dit.app.startup). Returns (pipeline, what was loaded, notices for the page)."""
    return startup.load_pipeline(name, MODEL_ENV, BUNDLED_MODEL, HERE / BUNDLED_MODEL)


def load_fast_pipeline(full: TinyDiTPipeline, full_name: str, name: str | None = None):
    """The fast student to offer beside the full pipeline `full` (loaded as `full_name`): the one named by `name`
    (default: $TINY_DIT_FAST_MODEL), else the bundled model's (BUNDLED_FAST_MODEL) if `full` is the bundled model
    and the folder is there, else none (tiny_dit.app.startup). Returns (pipeline or None, what was loaded,
    notices for the page)."""
    bundled = HERE / BUNDLED_FAST_MODEL if full_name == BUNDLED_MODEL else None  # a student goes with its teacher
    return startup.load_fast_pipeline(name, FAST_MODEL_ENV, BUNDLED_FAST_MODEL, bundled, full)


# ----------------------------------------------------------------------------
# The event functions
# ----------------------------------------------------------------------------


class TinyDiTApp:
    """The functions behind the page, bound to one pipeline (and its fast student `fast`, if one is loaded,
    as `fast_name`). Each one checks its inputs."""

    def __init__(self, pipe: TinyDiTPipeline, model_name: str = "", notices: list[str] | None = None,
                 output_dir: str | Path | None = None, limits: QueueLimits | None = None,
                 fast: TinyDiTPipeline | None = None, fast_name: str = ""):
        self.pipe, self.model_name, self.notices = pipe, model_name, list(notices or [])
        self.fast, self.fast_name = fast, fast_name
        self.models = {"full": pipe, **({"fast": fast} if fast is not None else {})}  # the Model choice
        self.limits = QueueLimits() if limits is None else limits
        self.waiting_runs = lambda: 0  # sampling runs waiting in the queue (build_demo reads Gradio's)
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
        self.sampler_choices = layout.sampler_choices(*self.models.values())
        # Each model starts at its own scheduler (a fast student at the one it was distilled for).
        self.default_samplers = {name: scheduler_name(p.scheduler) or OWN_SAMPLER for name, p in self.models.items()}
        self.default_sampler = self.default_samplers["full"]
        # The guidance controls start at the loaded pipeline's guider: a model's best method and scale are its own.
        self.default_guidance = float(pipe.default_guider.guidance_scale)
        self.guider_choices, self.default_guider = layout.guider_choices(pipe.default_guider)

    def record_of(self, state) -> RunRecord:
        """The run a view is asked about: the page's state (a RunHandle) or a RunRecord itself."""
        return self.runs.record_of(state)

    def close_session(self, request: gr.Request = None) -> None:
        """The page was closed (demo.unload): stop its run and forget its state now."""
        self.active.stop(session_of(request), wait_s=0)
        self.runs.drop_session(session_of(request))
        release_free_memory()

    def sampler_pipe(self, sampler, model: str = "full") -> TinyDiTPipeline:
        """A pipeline for one request: the shared models of `model` (a checked name of self.models) with a fresh
        scheduler of the chosen sampler (a name of SCHEDULERS, or OWN_SAMPLER: the model's own scheduler; None:
        the model's default). The shared pipelines' schedulers never change."""
        name = self.default_samplers[model] if sampler is None else check_choice(
            sampler, "Sampler", {name: name for _, name in self.sampler_choices})
        pipe = self.models[model]
        return pipe.with_scheduler(fresh_scheduler(pipe.scheduler) if name == OWN_SAMPLER else name)

    def warn_about(self, prompt: str) -> list[str]:
        """The prompt's notices (truncated by CLIP), shown as gr.Warning, and returned."""
        notices = view_contents.prompt_notices(self.pipe, prompt)
        for notice in notices:
            gr.Warning(notice)
        return notices

    # -- Generate ---------------------------------------------------------------

    def random_seed(self) -> int:
        return random.randint(0, SEED_MAX)

    def generate(self, prompt, guidance, steps, samples, seed, sampler=None, guider=None, model=None,
                 request: gr.Request = None, progress=gr.Progress()):
        """Sample clips with a live preview (`guider`: the guidance method, a name of tiny_dit.guiders.GUIDERS;
        None or "own": the pipeline's; `model`: "full", or "fast" when a fast student is loaded; None: "full").
        Yields (preview image, grid video, clips, info, run handle):
        a status line after every iteration (so that Stop and job.cancel() act within one), a preview
        every ~steps/5, and finally the videos and the handle of the run (kept in self.runs)."""
        prompt, guidance, steps = check_prompt(prompt), check_guidance(guidance), check_steps(steps)
        samples = check_number(samples, "Number of samples", SAMPLES_MIN, SAMPLES_MAX, integer=True)
        model = check_model(model, self.models)
        seed, run_pipe, guider = check_seed(seed), self.sampler_pipe(sampler, model), check_guidance_method(guider)
        notices, session, start = self.warn_about(prompt), session_of(request), time.perf_counter()
        samples, busy = self.limits.samples_now(samples, self.waiting_runs())  # fewer clips while the queue is long
        # A guided fast run is honoured, and the page says why it is unusual.
        guided_twice = teaching.fast_guided_notice(guidance) if model == "fast" and is_guided(guidance) else None
        for notice in filter(None, [busy, guided_twice]):
            gr.Info(notice)
            notices.append(notice)
        record = preview = None
        yield None, None, None, "Encoding the prompt and drawing the starting noise...", gr.skip()
        with closing(self.active.sample(session, run_pipe, prompt, seed=seed, guidance_scale=guidance, guider=guider,
                                        num_inference_steps=steps, num_videos=samples, lock=self.sampling_lock,
                                        make_preview=lambda pred: preview_image(self.pipe, pred))) as run:
            for event in run:
                if isinstance(event, RunRecord):
                    record = event
                    continue
                progress((event.step + 1, event.num_steps), desc=f"iteration {event.step + 1}/{event.num_steps}")
                shown = gr.skip() if event.preview is None else event.preview
                preview = preview if event.preview is None else event.preview
                yield shown, gr.skip(), gr.skip(), teaching.iteration_status(event), gr.skip()
        progress(None)
        grid, clips = outputs.write_run_videos(outputs.run_dir(self.output_root), record)
        record.notices = notices
        handle = self.runs.put(session, record.slim())  # the views need clip 1 only
        info = teaching.run_summary(record, time.perf_counter() - start, model if self.fast is not None else None)
        record = event = None  # only the slim copy stays (in self.runs)
        release_free_memory()
        yield preview, grid, clips, info, handle

    def model_chosen(self, model):
        """The Model choice changed: the iterations, class guidance and sampler become the model's own (the fast
        student: its few steps, guidance 1, the scheduler it was distilled for). Returns the three controls."""
        model = check_model(model, self.models)
        pipe = self.models[model]
        return (gr.Slider(value=pipe.default_num_inference_steps), gr.Slider(value=pipe.default_guider.guidance_scale),
                gr.Dropdown(self.sampler_choices, value=self.default_samplers[model]))

    def stop(self, request: gr.Request = None):
        """The Stop button: stop this session's run within one DiT block, wait (a few seconds at most)
        until the sampler has let go, and say so, with the last preview. Returns (preview, info)."""
        run = self.active.stop(session_of(request), wait_s=STOP_WAIT_S)
        if run is None:
            return gr.skip(), "Nothing to stop: no run is under way."
        return (gr.skip() if run.preview is None else run.preview), run.status()

    # -- Inside the model -----------------------------------------------------

    def patch_grid(self, record):
        return view_contents.patch_grid(self.record_of(record))

    def attention(self, record, layer, head, step, query=None):
        """(picker image, heatmap, matrix, description, query) for a block, head and step."""
        record = self.record_of(record)
        layer, head, step = check_attention_view(record, layer, head, step)
        return view_contents.attention(record, layer, head, step, check_query(query, record.geometry.grid))

    def pick_patch(self, record, layer, head, step, evt: gr.SelectData):
        """A click on the picker or the heatmap: make the clicked patch the query."""
        record = self.record_of(record)
        return self.attention(record, layer, head, step, check_click(evt, slot_layout(record.geometry)))

    def trajectory(self, record, step):
        record = self.record_of(record)
        step = check_iteration(step, record.num_passes, "Iterations done (denoising steps)", lo=0)
        return trajectory_images(record, self.pipe, step)

    def compare_fast(self, fast_steps, record, progress=gr.Progress()):
        """The run's prompt and seed (clip 1's starting noise) by the full model at its defaults and by the fast
        one in `fast_steps` steps (tiny_dit.inside.fast_comparison): (their paths, their clips, text)."""
        record = self.record_of(record)
        check_model("fast", self.models)  # refused, saying so, on a server without one
        fast_steps = check_fast_steps(fast_steps, self.fast.default_num_inference_steps)
        full, fast = (p.with_scheduler(fresh_scheduler(p.scheduler)) for p in (self.pipe, self.fast))
        return compare_with_fast(full, fast, record.prompt, record.seed, fast_steps, lock=self.sampling_lock,
                                 on_start=lambda i, what: progress((i, 2), desc=f"sampling {what}"))

    def text_path(self, record):
        return view_contents.text_path(self.record_of(record), self.pipe)

    def adaln(self, record):
        return view_contents.adaln(self.record_of(record))

    def inside(self, record):
        """Every view of a fresh run at its default settings (after Generate)."""
        record = self.record_of(record)
        passes = record.num_passes  # the views go pass by pass (Heun: two a step)
        return (*self.patch_grid(record), *self.attention(record, record.geometry.depth - 1, "mean", passes),
                iteration_slider(passes, passes), *self.trajectory(record, passes // 2),
                iteration_slider(passes, passes // 2, minimum=0), *self.text_path(record), *self.adaln(record))

    def compare_guidance(self, prompt, seed, steps, scales, sampler=None, compare="scales", guidance=None,
                         guider=None, progress=gr.Progress()):
        """The same prompt and seed, one clip each (with the chosen sampler): at each of `scales` by the
        method `guider` (`compare` "scales"; None: the pipeline's own), or by each guidance method at the
        scale `guidance` ("methods"; None: the pipeline's scale). Yields (video, table)."""
        prompt, seed, steps = check_prompt(prompt), check_seed(seed), check_steps(steps)
        compare = check_choice(compare, "Compare", {mode: mode for mode in COMPARE_MODES})
        scale = self.default_guidance if guidance is None else check_guidance(guidance)
        scales, guider = check_scales(scales) if compare == "scales" else [], check_guidance_method(guider)
        runs = view_contents.guidance_runs(compare, scales, scale, guider)
        methods = [name or method_name(self.pipe.default_guider) for name, _ in runs]
        run_pipe, clips, start = self.sampler_pipe(sampler), [], time.perf_counter()
        self.warn_about(prompt)
        for i, ((name, w), method) in enumerate(zip(runs, methods)):
            what = f"{method} at w = {w:g}"
            progress((i, len(runs)), desc=what)
            with self.sampling_lock:
                clips.append(sample_clips(run_pipe, prompt, seed=seed, guidance_scale=w, guider=name,
                                          num_inference_steps=steps)[0])
            yield gr.skip(), f"Sampled {what} ({i + 1} of {len(runs)}), {time.perf_counter() - start:.1f} s..."
        scales = [w for _, w in runs]
        grid, scores, strays = view_contents.guidance_grid(self.pipe, clips, prompt, compare, methods, scales)
        video = outputs.write_video(outputs.run_dir(self.output_root), "guidance.mp4", grid)
        yield video, teaching.guidance_table(prompt, seed, steps, scheduler_name(run_pipe.scheduler),
                                             time.perf_counter() - start, compare, methods, scales, scores, strays)

    def forward_process(self, prompt, level, seed):
        """A training-style clip of the prompt noised to level s, decoded: (clip image, ladder, text)."""
        prompt, level = check_prompt(prompt), check_number(level, "Noise level s", 0.0, 1.0)
        return view_contents.forward_process(self.pipe, self.geometry, prompt, level, check_seed(seed))

    # -- Sora tasks ---------------------------------------------------------------

    def sora_task_changed(self, task, num_frames):
        """A task was picked: (number of frames: 1 for an image, more for the others; where the known frames go)."""
        task = check_choice(task, "Task", {name: name for name in sora_tasks.TASKS})
        frames = 1 if task == "image" else self.geometry.num_frames if num_frames == 1 else gr.skip()
        if task == "loop":  # a loop's way out as long as a trained clip
            frames = loop_num_frames(self.geometry.num_frames)
        return frames, sora_tasks.TASKS[task].how

    def sora_task(self, task, prompt, image, clip, clip_b, num_frames, keep, height, width, guidance, steps, seed,
                  sampler=None, strength=DEFAULT_STRENGTH, progress=gr.Progress()):
        """One of Sora's other tasks (tiny_dit.app.sora_tasks): the pipeline's `conditions=` built from the
        uploads, or Clip A to edit at `strength` (`video=`), or a loop (`loop=True`), checked, sampled. Returns
        (result video, filmstrip with the given frames marked, text)."""
        task, prompt = check_choice(task, "Task", {name: name for name in sora_tasks.TASKS}), check_prompt(prompt)
        num_frames, keep, height, width = check_frame_size(height, width, self.geometry, SORA_FRAMES_MAX, num_frames,
                                                           keep)
        guidance, steps, seed = check_guidance(guidance), check_steps(steps), check_seed(seed)
        strength = check_number(strength, "Edit strength", sora_tasks.STRENGTH_MIN, 1.0)
        run_pipe = self.sampler_pipe(sampler)
        conditions, known = sora_tasks.build_conditions(task, num_frames, height, width, image=image, clip=clip,
                                                        clip_b=clip_b, keep=keep)
        edit = dict(video=sora_tasks.edit_video(clip, num_frames, height, width), strength=strength) \
            if task == "edit" else {}
        num_frames = len(edit["video"]) if edit else num_frames  # an edit has its clip's length
        run_pipe.check_inputs(prompt, None, steps, guidance, 1, num_frames, height, width, None, "np", ["latents"],
                              None, conditions=conditions or None, loop=task == "loop", **edit)
        notices, total = self.warn_about(prompt), transformer_passes(run_pipe.scheduler, steps)
        level, passes = edit_schedule(run_pipe.scheduler, steps, strength) if edit else (1.0, total)
        frames, seconds = view_contents.run_sora_task(
            run_pipe, prompt, conditions, num_frames=num_frames, height=height, width=width, steps=steps,
            guidance=guidance, seed=seed, lock=self.sampling_lock, loop=task == "loop", **edit,
            on_pass=lambda i: progress((i + 1, passes), desc=f"pass {i + 1}/{passes}"))
        if edit:
            shown, strip = sora_tasks.edit_result_views(edit["video"], frames)
            result = sora_tasks.describe_edit(num_frames, strength, level, passes, total)
        elif task == "loop":
            shown, strip = sora_tasks.loop_result_views(frames)
            result = sora_tasks.describe_loop(num_frames)
        else:
            shown, strip = view_contents.sora_result_views(frames, known)
            result = sora_tasks.describe_result(task, known)
        video = outputs.write_video(outputs.run_dir(self.output_root), f"sora-{task}.mp4", shown)
        return video, strip, teaching.sora_summary(result, num_frames, width, height, steps,
                                                   scheduler_name(run_pipe.scheduler), guidance, seed, seconds,
                                                   notices)

    # -- Word attention (cross-attention per word) and how the model learned ----------------

    def word_attention(self, record, word, block, step, head="mean"):
        """(heatmap over every frame, description): how much each patch reads one word of the prompt
        (`word`: its index in the prompt's words, from 0), in a block (or the mean of all, 'mean')
        and head (or 'mean') at an iteration (from 1). The API: /word_attention (word, block, iteration)."""
        record = self.record_of(record)
        words = group_words(record.tokens)
        index, block, head, step = check_word_view(record, word, block, head, step, len(words), record.num_passes)
        return view_contents.word_attention(record, words, index, block, head, step)

    def word_summary(self, record, block, step, head="mean"):
        """One row per word of the prompt (the middle frame of each time slot, heat over it)."""
        record = self.record_of(record)
        words = group_words(record.tokens)
        _, block, head, step = check_word_view(record, 0, block, head, step, len(words), record.num_passes)
        return view_contents.word_summary(record, words, block, head, step)

    def word_inside(self, record):
        """The word-attention view of a fresh run (after Generate): the prompt's words to choose from
        (the shape's name first chosen), the last iteration, every block and head averaged."""
        record = self.record_of(record)
        words, choices, index, passes = view_contents.word_choices(record)
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


def build_demo(pipe: TinyDiTPipeline | None = None, model_name: str = "", notices: list[str] | None = None,
               limits: QueueLimits | None = None, fast: TinyDiTPipeline | None = None,
               fast_name: str = "") -> tuple[gr.Blocks, TinyDiTApp]:
    """The Gradio app on `pipe` (default: load_pipeline(), and its fast student, load_fast_pipeline()) and the
    fast student `fast` (loaded as `fast_name`; None: none, no Model choice), not launched, and its functions.
    `limits`: the queue's (default: from the environment, tiny_dit.app.queue_limits)."""
    if pipe is None:
        pipe, model_name, notices = load_pipeline()
        fast, fast_name, fast_notices = load_fast_pipeline(pipe, model_name)
        notices = notices + fast_notices
    limits = QueueLimits.from_env() if limits is None else limits
    app = TinyDiTApp(pipe, model_name, notices, limits=limits, fast=fast, fast_name=fast_name)
    g, controls = app.geometry, teaching.CONTROLS
    fast_steps = None if fast is None else fast.default_num_inference_steps

    with gr.Blocks(title="tiny-dit: Sora in miniature", delete_cache=(1800, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(teaching.INTRO)
        gr.Markdown(teaching.model_summary(model_name, g, app.notices, fast_name, fast_steps), elem_id="model-info")
        # The state holds a RunHandle; the run itself lives in app.runs (bounded: see tiny_dit.app.sessions).
        run_state = gr.State(None, time_to_live=RUN_TTL_S, delete_callback=app.runs.drop)
        query_state = gr.State(None)

        with gr.Tabs(elem_id="modes"):
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                with gr.Row(elem_id="generate-panel"):
                    with gr.Column(scale=2, min_width=320):
                        prompt = gr.Textbox(value=teaching.SEEN_EXAMPLES[0], lines=1, max_lines=3, elem_id="prompt",
                                            **controls["prompt"])
                        gr.Examples([[p] for p in teaching.SEEN_EXAMPLES], inputs=[prompt], label="Seen in training")
                        gr.Examples([[p] for p in teaching.HELD_OUT_EXAMPLES], inputs=[prompt],
                                    label=teaching.HELD_OUT_LABEL)
                        model = layout.model_radio(pipe, fast, elem_id="model", **controls["model"])  # hidden: none
                        with gr.Row():
                            guidance = layout.guidance_slider(app.default_guidance, scale=3, elem_id="guidance",
                                                              **controls["guidance"])
                            guider = gr.Dropdown(app.guider_choices, value=app.default_guider, scale=2,
                                                 elem_id="guider", **controls["guider"])
                        steps = layout.steps_slider(**controls["steps"])
                        sampler_choice = gr.Dropdown(app.sampler_choices, value=app.default_sampler, elem_id="sampler",
                                                     **controls["sampler"])
                        samples = gr.Slider(SAMPLES_MIN, SAMPLES_MAX, value=SAMPLES_DEFAULT, step=1,
                                            **controls["samples"])
                        with gr.Row():
                            seed = layout.seed_number(scale=3, **controls["seed"])
                            randomise = gr.Button("Randomise seed", scale=1, size="sm")
                        with gr.Row():
                            generate = gr.Button("Generate", variant="primary", elem_id="generate")
                            stop = gr.Button("Stop", variant="stop")
                    with gr.Column(scale=3, min_width=360):
                        preview = layout.image_output(teaching.PREVIEW_LABEL, elem_id="preview", height=240)
                        grid_video = gr.Video(label="Samples (looping grid)", autoplay=True, loop=True,
                                              interactive=False, elem_id="grid-video", height=420)
                        info = gr.Markdown(label="Time taken", elem_id="run-info")
                        clips = gr.Gallery(label="The individual clips", columns=6, height=230, object_fit="contain",
                                           elem_id="clips")
            sora = layout.sora_tab(g, app.default_guidance)

        gr.Markdown(teaching.INSIDE_TEXT)
        with gr.Tabs(elem_id="views"):  # one function per view (tiny_dit.app.layout), its teaching text first
            patch = layout.patch_tab(g)
            att = layout.attention_tab(g, app.layer_choices, app.head_choices)
            traj = layout.trajectory_tab(fast_steps)
            compared = layout.guidance_tab()
            text_view = layout.text_tab()
            words = layout.words_tab(app.layer_choices, app.head_choices)
            adaln = layout.adaln_tab()
            forward = layout.forward_tab()
            training = layout.training_tab(app.training_dir)

        # -- wiring ------------------------------------------------------------------
        wrap = user_errors  # input errors become a gr.Error that names the field
        sampler = dict(concurrency_limit=1, concurrency_id=SAMPLER)  # one sampling run at a time (2 vCPU)
        # A sampling run joins the queue only within its limits (its size, one at a time per session), else a
        # message that names the limit (tiny_dit.app.queue_limits).
        admit = Admission(limits, lambda: getattr(demo, "_queue", None))
        app.waiting_runs = lambda: waiting_runs(getattr(demo, "_queue", None))
        raw = dict(preprocess=False)  # raw JSON values: tiny_dit.app.checks checks them, nothing is coerced
        minimal, private = dict(show_progress="minimal"), dict(api_visibility="private")
        randomise.click(app.random_seed, None, seed, api_name="random_seed", queue=False, **private)
        # New inputs go last, each optional, so that API callers that predate them keep working (model: "full").
        generate_inputs = [prompt, guidance, steps, samples, seed, sampler_choice, guider, model]
        gen_event = gr.on([generate.click, prompt.submit], wrap(app.generate), generate_inputs,
                          [preview, grid_video, clips, info, run_state], api_name="generate",
                          show_progress_on=[grid_video], validator=admit.validator(len(generate_inputs), "generate"),
                          **sampler, **raw)
        # Stop: Gradio cancels the event (the generator yields every iteration, so within one), and
        # app.stop stops the sampler within one DiT block and says so on the page, with the last preview.
        stop.click(wrap(app.stop), None, [preview, info], cancels=[gen_event], queue=False, api_name="stop",
                   show_progress="hidden", **private)
        demo.unload(app.close_session)  # the tab was closed: drop the session's run now
        model.input(wrap(app.model_chosen), [model], [steps, guidance, sampler_choice], queue=False,
                    show_progress="hidden", **private, **raw)

        attention_outputs = [att.picker, att.heatmap, att.matrix, att.md, query_state]
        inside_outputs = [patch.frames, patch.channels, patch.md, *attention_outputs, att.step,
                          traj.latent, traj.frames, traj.md, traj.step, text_view.tokens, text_view.scores,
                          text_view.md, adaln.image, adaln.md]
        gen_event.success(wrap(app.inside), [run_state], inside_outputs, api_name="inside", **private, **raw)

        attention_inputs = [run_state, att.layer, att.head, att.step]
        gr.on([att.step.release, att.layer.change, att.head.change], wrap(app.attention),
              attention_inputs + [query_state], attention_outputs, api_name="attention", **minimal, **raw)
        gr.on([att.picker.select, att.heatmap.select], wrap(app.pick_patch), attention_inputs, attention_outputs,
              api_name="pick_patch", **private, **minimal, **raw)
        traj.step.release(wrap(app.trajectory), [run_state, traj.step], [traj.latent, traj.frames, traj.md],
                          api_name="trajectory", **minimal, **raw)
        if fast is not None:  # the full and the fast model on the run's prompt and seed: two sampling runs
            fast_inputs = [traj.fast_steps, run_state]  # the first input shows a queue refusal: not the state
            traj.compare.click(wrap(app.compare_fast), fast_inputs, [traj.fast_paths, traj.fast_clips, traj.fast_md],
                               api_name="compare_fast", validator=admit.validator(len(fast_inputs), "compare_fast"),
                               **sampler, **raw)
        compare_inputs = [prompt, seed, steps, compared.scales, sampler_choice, compared.mode, guidance, guider]
        compared.compare.click(wrap(app.compare_guidance), compare_inputs, [compared.video, compared.md],
                               api_name="compare_guidance",
                               validator=admit.validator(len(compare_inputs), "compare_guidance"), **sampler, **raw)
        sora.task.change(wrap(app.sora_task_changed), [sora.task, sora.frames], [sora.frames, sora.how],
                         queue=False, show_progress="hidden", **private, **raw)
        sora_inputs = [sora.task, sora.prompt, sora.image, sora.clip, sora.clip_b, sora.frames, sora.keep,
                       sora.height, sora.width, sora.guidance, sora.steps, sora.seed, sampler_choice, sora.strength]
        sora.button.click(wrap(app.sora_task), sora_inputs, [sora.video, sora.strip, sora.md], api_name="sora_task",
                          validator=admit.validator(len(sora_inputs), "sora_task"), **sampler, **raw)
        gr.on([forward.button.click, forward.level.release, demo.load], wrap(app.forward_process),
              [prompt, forward.level, seed], [forward.clip, forward.ladder, forward.md], api_name="forward_process",
              **minimal, **raw)

        # Word attention: recomputed for the chosen iteration from the run's latents (tiny_dit.inside.word_attention).
        gen_event.success(wrap(app.word_inside), [run_state],
                          [words.word, words.step, words.heat, words.md, words.rows], api_name="word_inside",
                          **private, **raw)
        gr.on([words.word.input, words.block.input, words.head.input, words.step.release], wrap(app.word_attention),
              [run_state, words.word, words.block, words.step, words.head], [words.heat, words.md],
              api_name="word_attention", **minimal, **raw)
        gr.on([words.block.input, words.head.input, words.step.release], wrap(app.word_summary),
              [run_state, words.block, words.step, words.head], [words.rows], api_name="word_summary",
              **private, **minimal, **raw)
        gr.on([training.snapshot.release, demo.load], wrap(app.training), [training.snapshot],
              [training.curve, training.samples, training.md], api_name="training", **minimal, **raw)

    # Every event, views included, is bounded too (a backstop: sampling runs meet their own limit first).
    demo.queue(max_size=limits.gradio_max_size, default_concurrency_limit=limits.view_concurrency)
    return demo, app


CSS = """
#run-info p { margin: 0.2em 0; }
.caption p { margin: 0 0 -0.4em 0; font-size: 0.9em; }
"""


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="tiny-dit's teaching app (Gradio).", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{ENVIRONMENT_HELP}\nother settings: {MODEL_ENV} (the model), {FAST_MODEL_ENV} (its fast distilled "
               f"student, offered beside it; default {BUNDLED_FAST_MODEL} with the bundled model, if there), "
               f"TINY_DIT_THREADS (torch threads), "
               f"TINY_DIT_DTYPE (bfloat16, float32 or auto), {MAX_RUNS_MB_ENV} (finished runs kept, all sessions; "
               f"default {MAX_RUNS_MB}), GRADIO_SERVER_PORT, GRADIO_SERVER_NAME")
    parser.add_argument("--model", default=None, help=f"pipeline folder or Hub repo id (default: ${MODEL_ENV}, "
                                                      f"else {BUNDLED_MODEL})")
    parser.add_argument("--fast-model", default=None, help=f"the fast student's pipeline folder or Hub repo id "
                        f"(default: ${FAST_MODEL_ENV}, else {BUNDLED_FAST_MODEL} with the bundled model, if there)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--host", default=None, help="address (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        limits = QueueLimits.from_env()  # a mistyped setting stops the start, before the model loads
    except ValueError as error:
        parser.error(str(error))
    threads = int(os.environ.get("TINY_DIT_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    pipe, name, notices = load_pipeline(args.model)
    fast, fast_name, fast_notices = load_fast_pipeline(pipe, name, args.fast_model)
    notices += fast_notices
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    demo, _ = build_demo(pipe, name, notices, limits, fast, fast_name)
    demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, show_error=False,
                css=CSS)
    beside = f", fast model {fast_name}" if fast is not None else ""
    print(f"tiny-dit app on {name}{beside} ({str(pipe.transformer.dtype).replace('torch.', '')}): {demo.local_url}\n"
          f"{limits.describe()}", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
