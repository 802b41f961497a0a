"""tiny-dit's teaching app: sliders, live sampling, and the inside of the model.

    python app.py                                  # the bundled model, assets/tiny-dit-shapes
    TINY_DIT_MODEL=runs/dit-small/pipeline python app.py    # another pipeline folder or Hub repo id
    GRADIO_SERVER_PORT=7861 python app.py          # another port (GRADIO_SERVER_NAME=0.0.0.0: the network)

"Generate" samples clips with a live preview of the model's current guess of the clean
clip; "Inside the model" shows that very run from the inside (patches, attention,
trajectory, text path, adaLN-Zero) plus two comparisons (guidance scales, the forward
process). "Sora tasks" runs the pipeline's known frames (an image, animate an image, extend
or connect clips; tiny_dit.sora_tasks builds the conditions and marks the given frames). The
sampler dropdown picks the solver per request (`pipe.with_scheduler`). The maths and pictures
live in tiny_dit.inspector and tiny_dit.views; this file is layout and wiring. `build_demo(pipe)` builds the app without launching it
(the tests do that); `TinyDiTApp` holds the functions the events call.

Every input is checked on the server (API callers bypass the sliders), raw, by
tiny_dit.app_checks: anything of the wrong type, out of range, non-finite or empty becomes a
gr.Error that names the field and what it accepts. The finished run of each session is kept,
bounded, in tiny_dit.app_sessions.RunStore; Stop stops the sampler within one DiT block.
"""

import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a classroom machine

import gradio as gr
import numpy as np
import torch

from tiny_dit.data.shapes import FPS, attributes_clip, shapes_attributes
from tiny_dit.app_checks import check_choice, check_list, check_number, check_text, user_error
from tiny_dit.app_checks import user_errors
from tiny_dit.app_sessions import ActiveRuns, RunHandle, RunStore, release_free_memory, session_of
from tiny_dit.inspector import ModelGeometry, RunCancelled, RunRecord, iter_run, sample_clips
from tiny_dit.inspector import tokenize
from tiny_dit.pipeline import (DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS, MAX_NUM_FRAMES, MAX_VIDEOS,
                               TinyDiTPipeline)
from tiny_dit.schedulers import SCHEDULERS, scheduler_name, transformer_passes
from tiny_dit.video import make_grid, to_uint8, write_mp4
from tiny_dit import app_startup, sora_tasks, views
from tiny_dit import teaching
from tiny_dit.teaching import HELD_OUT_EXAMPLES, INTRO, MATRIX_TEXT, SEEN_EXAMPLES, SORA_TEXT, VIEW_TEXT
from tiny_dit import training_history, word_attention as word_maps

log = logging.getLogger("tiny-dit-app")

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = "assets/tiny-dit-shapes"
MODEL_ENV = "TINY_DIT_MODEL"

# Limits of the controls, checked again on the server.
GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_STEP = 0.0, 15.0, 0.5
STEPS_MIN, STEPS_MAX = 1, 60
SAMPLES_MIN, SAMPLES_MAX, SAMPLES_DEFAULT = 1, MAX_VIDEOS, 4  # the pipeline's limit per call
SEED_MAX = 2**32 - 1
MAX_PROMPT_CHARS = 1000
GUIDANCE_COMPARE_CHOICES = [1, 2, 3, 5, 7.5, 10, 15]
GUIDANCE_COMPARE_DEFAULT = [1, 3, 5, 10]
MAX_GUIDANCE_COMPARE = 8
OUTPUT_MAX_AGE_S = 2 * 3600  # mp4 files of older runs are deleted
RUN_TTL_S = 1800  # a finished run unused this long is dropped (the page's views then ask for a new one)
MAX_RUNS_MB = 300  # all sessions' finished runs together (~6 MB each at the defaults, 17 MB at most)
MAX_RUNS_MB_ENV = "TINY_DIT_MAX_RUNS_MB"
STOP_WAIT_S = 10  # Stop waits at most this long for the sampler to let go (one DiT block, normally)
SORA_FRAMES_MAX = MAX_NUM_FRAMES  # the pipeline's longest clip
SORA_KEEP_DEFAULT = 4  # frames taken from each clip (one tubelet of the bundled model)

# ----------------------------------------------------------------------------
# Loading the model
# ----------------------------------------------------------------------------


def load_pipeline(name: str | None = None) -> tuple[TinyDiTPipeline, str, list[str]]:
    """The model named by `name` (default: $TINY_DIT_MODEL), else the bundled one, else an untrained
    stand-in (tiny_dit.app_startup). Returns (pipeline, what was loaded, notices for the page)."""
    return app_startup.load_pipeline(name, MODEL_ENV, BUNDLED_MODEL, HERE / BUNDLED_MODEL)


# ----------------------------------------------------------------------------
# Checking inputs (API callers bypass the sliders): tiny_dit.app_checks
# ----------------------------------------------------------------------------


def check_prompt(prompt) -> str:
    return check_text(prompt, "The prompt", MAX_PROMPT_CHARS)


def check_record(record) -> RunRecord:
    if not isinstance(record, RunRecord):
        raise user_error("Generate a clip first: these views show the run you just made.")
    return record


# ----------------------------------------------------------------------------
# The event functions
# ----------------------------------------------------------------------------


class TinyDiTApp:
    """The functions behind the page, bound to one pipeline. Each one checks its inputs."""

    def __init__(self, pipe: TinyDiTPipeline, model_name: str = "", notices: list[str] | None = None,
                 output_dir: str | Path | None = None):
        self.pipe = pipe
        self.model_name = model_name
        self.notices = list(notices or [])
        self.geometry = ModelGeometry.of(pipe)
        self.output_root = Path(output_dir or Path(tempfile.gettempdir()) / "tiny-dit-app")
        self.output_root.mkdir(parents=True, exist_ok=True)
        # One sampling run at a time on these models (each request has its own scheduler, see
        # sampler_pipe; the CPU is shared by turns), even while a stopped run finishes its last step.
        self.sampling_lock = threading.Lock()
        self.runs = RunStore(max_bytes=int(float(os.environ.get(MAX_RUNS_MB_ENV, MAX_RUNS_MB)) * 10**6),
                             ttl_s=RUN_TTL_S)  # the finished runs the views show, bounded
        self.active = ActiveRuns()  # the run under way per session, for Stop
        self.head_choices = [("mean of all heads", "mean")] + [
            (f"head {h + 1}", str(h)) for h in range(self.geometry.num_heads)]
        self.layer_choices = [(f"block {b + 1} ({layout})", b) for b, layout in enumerate(self.geometry.layouts)]
        self.training_dir = training_history.pipeline_folder(pipe)  # its training_log.jsonl, training_samples/
        self.sampler_choices = [(choice.label, name) for name, choice in SCHEDULERS.items()]
        self.default_sampler = scheduler_name(pipe.scheduler) or "euler"

    # -- helpers ------------------------------------------------------------------

    def record_of(self, state) -> RunRecord:
        """The run a view is asked about: the page's state (a RunHandle) or a RunRecord itself."""
        if isinstance(state, RunHandle):
            record = self.runs.get(state)
            if record is None:
                raise user_error("This run is no longer kept on the server (runs are dropped after "
                                 f"{RUN_TTL_S // 60} minutes unused, or when many sessions are open): press "
                                 "Generate again.")
            return record
        return check_record(state)

    def close_session(self, request: gr.Request = None) -> None:
        """The page was closed (demo.unload): stop its run and forget its state now."""
        session = session_of(request)
        run = self.active.get(session)
        if run is not None:
            run.cancel.set()
        self.runs.drop_session(session)
        release_free_memory()

    def _run_dir(self) -> Path:
        """A fresh folder for one run's mp4 files; folders older than OUTPUT_MAX_AGE_S are removed."""
        now = time.time()
        for old in self.output_root.glob("run-*"):
            try:
                if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        folder = self.output_root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def _notice_truncation(self, prompt: str) -> list[str]:
        """Warnings of the tokenizer (a prompt longer than CLIP's context), shown as gr.Warning."""
        tokens, messages = tokenize(self.pipe, prompt)
        notices = []
        if tokens.truncated or messages:
            notices.append(f"The prompt has {tokens.num_wanted} tokens but CLIP reads {tokens.context_length}: it "
                           f"was truncated to \"{tokens.read_text}\".")
        for notice in notices:
            gr.Warning(notice)
        return notices

    def _inputs(self, prompt, guidance, steps, samples, seed):
        prompt = check_prompt(prompt)
        guidance = check_number(guidance, "Class guidance (guidance scale)", GUIDANCE_MIN, GUIDANCE_MAX)
        steps = check_number(steps, "Iterations (sampling steps)", STEPS_MIN, STEPS_MAX, integer=True)
        samples = check_number(samples, "Number of samples", SAMPLES_MIN, SAMPLES_MAX, integer=True)
        seed = check_number(seed, "Seed", 0, SEED_MAX, integer=True)
        return prompt, guidance, steps, samples, seed

    # -- Generate ---------------------------------------------------------------

    def random_seed(self) -> int:
        return random.randint(0, SEED_MAX)

    def sampler_pipe(self, sampler) -> TinyDiTPipeline:
        """A pipeline for one request: the shared models with a fresh scheduler of the chosen sampler (a
        name of SCHEDULERS; None: the loaded pipeline's), at the loaded pipeline's shift. The shared
        pipeline's scheduler is never changed: sessions share it."""
        name = self.default_sampler if sampler is None else check_choice(
            sampler, "Sampler", {name: name for name in SCHEDULERS})
        return self.pipe.with_scheduler(name)

    def generate(self, prompt, guidance, steps, samples, seed, sampler=None, request: gr.Request = None,
                 progress=gr.Progress()):
        """Sample clips with a live preview. Yields (preview image, grid video, clips, info, run handle):
        a status line after every iteration (so that Stop and job.cancel() act within one), a preview
        every ~steps/5, and finally the videos and the handle of the run (kept in self.runs)."""
        prompt, guidance, steps, samples, seed = self._inputs(prompt, guidance, steps, samples, seed)
        run_pipe = self.sampler_pipe(sampler)
        notices = self._notice_truncation(prompt)
        session = session_of(request)
        run = self.active.start(session, transformer_passes(run_pipe.scheduler, steps))
        start = time.perf_counter()
        preview_every = max(1, round(steps / 5))  # ~6 previews: each is decoded, sent and drawn
        record = None
        try:
            yield None, None, None, "Encoding the prompt and drawing the starting noise...", gr.skip()
            for event in iter_run(run_pipe, prompt, seed=seed, guidance_scale=guidance, num_inference_steps=steps,
                                  num_videos=samples, preview_every=preview_every, lock=self.sampling_lock,
                                  cancel=run.cancel, done=run.done,
                                  make_preview=lambda pred: views.preview_image(self.pipe, pred)):
                if isinstance(event, RunRecord):
                    record = event
                    break
                run.steps_done = event.step + 1
                progress((event.step + 1, event.num_steps), desc=f"iteration {event.step + 1}/{event.num_steps}")
                status = (f"Iteration {event.step + 1} of {event.num_steps} (noise level sigma = {event.sigma:.2f}), "
                          f"{event.elapsed:.1f} s. The preview shows the model's current guess of the clean clip.")
                if event.preview is not None:
                    run.preview = event.preview
                yield (gr.skip() if event.preview is None else event.preview), gr.skip(), gr.skip(), status, gr.skip()
        except RunCancelled:
            raise user_error(run.status().replace("**", ""), title="Stopped") from None
        finally:
            run.cancel.set()  # a no-op after a finished run; stops the sampler if this generator was closed
            self.active.finish(session, run)
        if record is None:
            raise user_error("The run stopped before it finished.", title="Stopped")
        progress(None)
        t_write = time.perf_counter()
        folder = self._run_dir()
        with ThreadPoolExecutor(max_workers=4) as pool:  # one ffmpeg process per file, a few at a time
            grid = pool.submit(write_mp4, folder / "grid.mp4", make_grid(record.frames), fps=FPS)
            paths = list(pool.map(lambda i: write_mp4(folder / f"clip-{i + 1:02d}.mp4", record.frames[i], fps=FPS),
                                  range(len(record.frames))))
            grid = grid.result()
        clips = [(str(path), f"{i + 1}: CLIP {score:.2f}")
                 for i, (path, score) in enumerate(zip(paths, record.clip_scores))]
        written = time.perf_counter() - t_write
        record.notices = notices
        record.timings["write_mp4"] = written
        total = time.perf_counter() - start
        handle = self.runs.put(session, record.slim())  # the views need clip 1 only
        info = teaching.run_summary(record, total)
        record = event = None  # only the slim copy stays (in self.runs)
        release_free_memory()
        yield run.preview, str(grid), clips, info, handle

    def stop(self, request: gr.Request = None):
        """The Stop button: stop this session's run within one DiT block, wait (a few seconds at most)
        until the sampler has let go, and say so, with the last preview. Returns (preview, info)."""
        run = self.active.get(session_of(request))
        if run is None:
            return gr.skip(), "Nothing to stop: no run is under way."
        run.cancel.set()
        run.done.wait(STOP_WAIT_S)
        return (gr.skip() if run.preview is None else run.preview), run.status()

    # -- Inside the model -----------------------------------------------------

    def patch_grid(self, record):
        record = self.record_of(record)
        frames = views.patch_grid_image(record.frames[0], record.geometry)
        channels = views.latent_channels_image(record.x_t[-1].astype(np.float32), record.geometry,
                                               title="clip 1 in latent space: one row per channel")
        return frames, channels, views.token_arithmetic(record.geometry)

    def _attention_args(self, record, layer, head, step):
        g = record.geometry
        layer = check_number(layer, "Layer (block)", 0, g.depth - 1, integer=True)
        heads = {"mean": None, **{str(h): h for h in range(g.num_heads)}, **{h: h for h in range(g.num_heads)}}
        head = check_choice(head, "Head", heads)
        step = check_number(step, "Iteration (denoising step)", 1, record.num_passes, integer=True)
        return layer, head, step

    def _check_query(self, record, query):
        tg, hg, wg = record.geometry.grid
        if query is None:  # a patch on the object: the first picture should show structure
            return word_maps.default_query(record.frames[0], record.geometry)
        try:
            t, h, w = (int(v) for v in query)
        except (TypeError, ValueError):
            raise user_error(f"The query patch must be (time slot, row, column); got {query!r:.60}.") from None
        if not (0 <= t < tg and 0 <= h < hg and 0 <= w < wg):
            raise user_error(f"The query patch {query!r} is outside the token grid {tg} x {hg} x {wg}.")
        return (t, h, w)

    def attention(self, record, layer, head, step, query=None):
        """(picker image, heatmap, matrix, description, query) for a block, head and step."""
        record = self.record_of(record)
        layer, head, step = self._attention_args(record, layer, head, step)
        query = self._check_query(record, query)
        shown = step - 1
        heat, md = views.attention_heatmap(record, layer, head, shown, query)
        matrix = views.attention_matrix(record, layer, head, shown, query)
        picker = views.picker_image(record.frames[0], record.geometry, query)
        return picker, heat, matrix, teaching.attention_caption(record, layer, head, shown) + "\n\n" + md, query

    def pick_patch(self, record, layer, head, step, evt: gr.SelectData):
        """A click on the picker or the heatmap: make the clicked patch the query."""
        record = self.record_of(record)
        index = getattr(evt, "index", None)
        if not isinstance(index, (list, tuple)) or len(index) != 2:
            raise user_error("Click on a patch inside one of the frames.")
        hit = views.slot_layout(record.geometry).hit(*index)
        if hit is None:
            raise user_error("That click was between the frames: click on a patch inside a frame.")
        return self.attention(record, layer, head, step, hit)

    def trajectory(self, record, step):
        record = self.record_of(record)
        step = check_number(step, "Iterations done (denoising steps)", 0, record.num_passes, integer=True)
        return views.trajectory_images(record, self.pipe, step)

    def compare_guidance(self, prompt, seed, steps, scales, sampler=None, progress=gr.Progress()):
        """The same prompt and seed at several guidance scales, one clip each (with the chosen sampler).
        Yields (video, table)."""
        prompt = check_prompt(prompt)
        seed = check_number(seed, "Seed", 0, SEED_MAX, integer=True)
        steps = check_number(steps, "Iterations (sampling steps)", STEPS_MIN, STEPS_MAX, integer=True)
        scales = check_list(scales, "Class guidance scales to compare", MAX_GUIDANCE_COMPARE)
        scales = sorted({check_number(s, "Each class guidance scale", GUIDANCE_MIN, GUIDANCE_MAX) for s in scales})
        run_pipe = self.sampler_pipe(sampler)
        self._notice_truncation(prompt)
        clips = []
        start = time.perf_counter()
        for i, w in enumerate(scales):
            progress((i, len(scales)), desc=f"class guidance w = {w:g}")
            with self.sampling_lock:
                clips.append(sample_clips(run_pipe, prompt, seed=seed, guidance_scale=w,
                                          num_inference_steps=steps)[0])
            yield gr.skip(), f"Sampled w = {w:g} ({i + 1} of {len(scales)}), {time.perf_counter() - start:.1f} s..."
        with torch.no_grad():
            scores = self.pipe.text_encoder.clip_score(torch.from_numpy(np.stack(clips)), prompt).tolist()
        labels = [f"w = {w:g}" for w in scales]
        video = write_mp4(self._run_dir() / "guidance.mp4", views.labelled_grid(clips, labels), fps=FPS)
        yield str(video), teaching.guidance_table(prompt, seed, steps, scheduler_name(run_pipe.scheduler),
                                                  time.perf_counter() - start, scales, scores)

    def text_path(self, record):
        record = self.record_of(record)
        tokens = record.tokens
        reference = None
        attributes = shapes_attributes(record.prompt)
        if attributes is not None:
            g = record.geometry
            clip = attributes_clip(attributes, g.num_frames, g.height, g.width, seed=record.seed)
            with torch.no_grad():
                reference = float(self.pipe.text_encoder.clip_score(torch.from_numpy(clip[None]), record.prompt)[0])
        chart = views.clip_score_chart(record.clip_scores, reference)
        return views.tokens_image(tokens), chart, teaching.text_path_summary(tokens, record.clip_scores, reference)

    def adaln(self, record):
        record = self.record_of(record)
        return views.adaln_plot(record), teaching.adaln_summary(record.adaln)

    def forward_process(self, prompt, level, seed):
        """A training-style clip of the prompt noised to level s, decoded: (clip image, ladder, text)."""
        prompt = check_prompt(prompt)
        level = check_number(level, "Noise level s", 0.0, 1.0)
        seed = check_number(seed, "Seed", 0, SEED_MAX, integer=True)
        attributes = shapes_attributes(prompt)
        named = attributes is not None
        attributes = attributes or {"color": "red", "shape": "circle", "motion": "left", "background": "black"}
        g = self.geometry
        clip = attributes_clip(attributes, g.num_frames, g.height, g.width, seed=seed)
        strip, ladder = views.forward_process_images(self.pipe, clip, level, seed=seed)
        return strip, ladder, teaching.forward_process_summary(attributes, named, level, self.geometry.num_frames)

    # -- Sora tasks ---------------------------------------------------------------

    def sora_task_changed(self, task, num_frames):
        """A task was picked: (number of frames, the line that says where the known frames go).
        An image is one frame; the other tasks need more."""
        task = check_choice(task, "Task", {name: name for name in sora_tasks.TASKS})
        frames = gr.skip()
        if task == "image":
            frames = 1
        elif num_frames == 1:
            frames = self.geometry.num_frames
        return frames, sora_tasks.TASKS[task].how

    def sora_task(self, task, prompt, image, clip, clip_b, num_frames, keep, height, width, guidance, steps, seed,
                  sampler=None, progress=gr.Progress()):
        """One of Sora's other tasks (tiny_dit.sora_tasks): the pipeline's `conditions=` built from the
        uploads, checked, sampled. Returns (result video, filmstrip with the given frames marked, text)."""
        g = self.geometry
        side = g.patch_pixels  # sides must be multiples of one token's pixels
        task = check_choice(task, "Task", {name: name for name in sora_tasks.TASKS})
        prompt = check_prompt(prompt)
        num_frames = check_number(num_frames, "Number of frames", 1, SORA_FRAMES_MAX, integer=True)
        keep = check_number(keep, "Frames taken from each clip", 1, SORA_FRAMES_MAX - 1, integer=True)
        height = check_number(height, "Height (px)", side, 2 * g.height, integer=True)
        width = check_number(width, "Width (px)", side, 2 * g.width, integer=True)
        for value, what in ((height, "Height (px)"), (width, "Width (px)")):
            if value % side:
                raise user_error(f"{what} must be a multiple of {side} (autoencoder x patch size); got {value}.")
        guidance = check_number(guidance, "Class guidance (guidance scale)", GUIDANCE_MIN, GUIDANCE_MAX)
        steps = check_number(steps, "Iterations (sampling steps)", STEPS_MIN, STEPS_MAX, integer=True)
        seed = check_number(seed, "Seed", 0, SEED_MAX, integer=True)
        run_pipe = self.sampler_pipe(sampler)
        conditions, known = sora_tasks.build_conditions(task, num_frames, height, width, image=image, clip=clip,
                                                        clip_b=clip_b, keep=keep)
        run_pipe.check_inputs(prompt, None, steps, guidance, 1, num_frames, height, width, None, "np", ["latents"],
                              None, conditions=conditions or None)
        notices = self._notice_truncation(prompt)
        passes = transformer_passes(run_pipe.scheduler, steps)

        def on_step(_pipe, i, t, kwargs):
            progress((i + 1, passes), desc=f"pass {i + 1}/{passes}")
            return {}

        start = time.perf_counter()
        with self.sampling_lock:
            frames = run_pipe(prompt, num_frames=num_frames, height=height, width=width,
                              conditions=conditions or None, num_inference_steps=steps, guidance_scale=guidance,
                              generator=torch.Generator().manual_seed(seed), output_type="np",
                              callback_on_step_end=on_step).frames[0]
        frames = to_uint8(frames)  # (T, H, W, 3)
        seconds = time.perf_counter() - start
        video = write_mp4(self._run_dir() / f"sora-{task}.mp4", sora_tasks.mark_known_frames(frames, known), fps=FPS)
        strip = sora_tasks.known_frames_strip(frames, known)
        md = teaching.sora_summary(sora_tasks.describe_result(task, known), num_frames, width, height, steps,
                                   scheduler_name(run_pipe.scheduler), guidance, seed, seconds, notices)
        return str(video), strip, md

    # -- Word attention (cross-attention per word) and how the model learned ----------------

    def _word_args(self, record, word, block, head, step):
        g = record.geometry
        words = word_maps.group_words(record.tokens)
        word = check_number(word, "Word (its index in the prompt, from 0)", 0, max(len(words) - 1, 0), integer=True)
        blocks = {"mean": None, **{str(b): b for b in range(g.depth)}, **{b: b for b in range(g.depth)}}
        block = check_choice(block, "Layer (block, or 'mean')", blocks)
        heads = {"mean": None, **{str(h): h for h in range(g.num_heads)}, **{h: h for h in range(g.num_heads)}}
        head = check_choice(head, "Head", heads)
        step = check_number(step, "Iteration (denoising step)", 1, word_maps.num_passes(record), integer=True)
        return words, word, block, head, step

    def word_attention(self, record, word, block, step, head="mean"):
        """(heatmap over every frame, description): how much each patch reads one word of the prompt
        (`word`: its index in the prompt's words, from 0), in a block (or the mean of all, 'mean')
        and head (or 'mean') at an iteration (from 1). The API: /word_attention (word, block, iteration)."""
        record = self.record_of(record)
        words, index, block, head, step = self._word_args(record, word, block, head, step)
        if not word_maps.has_cross_attention(record.transformer):
            return None, word_maps.NO_CROSS_ATTENTION
        if not words:
            return None, "The prompt has no words for CLIP to read."
        chosen = words[index]
        heat = word_maps.word_heat(record, chosen, step - 1, block, head)
        title = f"\"{chosen.text}\": how much each patch reads it"
        image = views.word_heatmap_image(record.frames[0], record.geometry, heat, title=title)
        return image, word_maps.describe(record, words, index, block, head, step - 1)

    def word_summary(self, record, block, step, head="mean"):
        """One row per word of the prompt (the middle frame of each time slot, heat over it)."""
        record = self.record_of(record)
        words, _, block, head, step = self._word_args(record, 0, block, head, step)
        if not word_maps.has_cross_attention(record.transformer) or not words:
            return None
        return word_maps.summary_image(record, words, step - 1, block, head)

    def word_inside(self, record):
        """The word-attention view of a fresh run (after Generate): the prompt's words to choose from
        (the shape's name first chosen), the last iteration, every block and head averaged."""
        record = self.record_of(record)
        words = word_maps.group_words(record.tokens)
        steps = word_maps.num_passes(record)
        index = word_maps.default_word(words, record.prompt)
        choices = [(label, i) for i, label in enumerate(word_maps.word_labels(words))]
        heat, md = self.word_attention(record, index, "mean", steps)
        slider = gr.Slider(minimum=1, maximum=max(steps, 2), value=steps, step=1, interactive=steps > 1)
        return (gr.Dropdown(choices=choices, value=index), slider,
                heat, md, self.word_summary(record, "mean", steps))

    def training(self, snapshot=None):
        """How the model learned: (loss curve, the samples of training snapshot `snapshot` (1 = the
        earliest; default the last), description), from the model folder's training files."""
        history = training_history.load_history(self.training_dir)
        count = len(history.snapshots)
        snapshot = count if snapshot is None else snapshot
        if count:
            snapshot = check_number(snapshot, "Training snapshot", 1, count, integer=True)
        chosen = history.snapshots[snapshot - 1] if count else None
        curve = training_history.loss_curve_image(history, chosen.step if chosen else None)
        samples = training_history.snapshot_image(chosen) if chosen else None
        return curve, samples, training_history.describe(history, chosen)

    def inside(self, record):
        """Every view of a fresh run at its default settings (after Generate)."""
        record = self.record_of(record)
        g = record.geometry
        steps = record.num_passes  # the views go pass by pass (Heun: two a step)
        attention = self.attention(record, g.depth - 1, "mean", steps, None)
        return (*self.patch_grid(record), *attention,
                gr.Slider(minimum=1, maximum=steps, value=steps, step=1),
                *self.trajectory(record, steps // 2), gr.Slider(minimum=0, maximum=steps, value=steps // 2, step=1),
                *self.text_path(record), *self.adaln(record))


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
