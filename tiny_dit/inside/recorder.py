"""Recording a sampling run, so that we can look inside the model afterwards.

    from tiny_dit.inside.recorder import record_run

    record = record_run(pipe, "a red circle moving left on a black background", seed=0)
    record.frames            # uint8 (N, T, H, W, 3): the clips
    record.x_t[k]            # float16 latents of sample 0 at noise level record.sigmas[k]
    record.pred_x0[k]        # float16 clean latents of sample 0 predicted at step k
    record.attention_at(k)[b]  # float16 self-attention maps of block b at step k (recomputed)
    record.adaln             # (passes, depth, 6) mean |shift|, |scale|, |gate| of every block

Everything per step is recorded per transformer pass (`record.num_passes`): one a step for Euler,
DPM-Solver++ and UniPC, 2N - 1 for Heun's N steps (tiny_dit.schedulers.transformer_passes), so
every solver can be looked inside; record a run with `pipe.with_scheduler(name)` as `pipe`. The
guidance method is a name of tiny_dit.guiders.GUIDERS (`guider="interval"`), None for the pipeline's own.

One run of `TinyDiTPipeline` is recorded, nothing is run twice:
  * x_t and pred_x0 of the first clip, the noise levels and the model's timesteps come from the
    pipeline's step callback (`callback_on_step_end_tensor_inputs=RECORDED_INPUTS`): the recorder
    asks the pipeline for them and neither repeats its opening steps nor reads its scheduler.
  * Attention maps are not kept (they would be hundreds of MB): `record.attention_at(k)`
    recomputes them for one step from what is kept, clip 1's latents x_t[k] at the step's
    timestep with the prompt's embeddings (recorded from the transformer's first call, as the
    pipeline passed them), and caches the last few steps asked for (tiny_dit.inside.attention_maps).
    A finished run keeps, for clip 1: x_t and pred_x0 (float16), its frames, the adaLN
    magnitudes and the prompt's embeddings: `record.nbytes` is ~6 MB at the app's defaults
    (20 iterations) and ~17 MB at its maximum (60), whatever the number of clips (after
    `record.slim()`, which drops the frames of clips 2..N once they are written).
  * adaLN-Zero modulation magnitudes come from a forward hook on every
    `block.adaLN_modulation` (its output is the six vectors shift/scale/gate for the
    attention and the MLP branch), for the same clip.
  * What CLIP read of the prompt (tiny_dit.text_encoder.tokenize), the model's geometry
    (tiny_dit.inside.geometry.ModelGeometry) and each clip's CLIP score.
  * Wall-clock timings of each phase.

`iter_run` runs the same recording in a worker thread and yields progress events
(step, noise level, the current guess of the clean clips) while it runs: the app's live
preview. Both only hook the model for the duration of the call, and only react to the
thread that is sampling, so other threads may use the same pipeline meanwhile. A scheduler
holds the state of a run, so concurrent runs each need their own (`pipe.with_scheduler`, as
the app does); the app still runs one sampling at a time, to share the CPU by turns.
`sample_clips` samples without recording (the same clips for the same seed).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np
import torch

from tiny_dit.guiders import guider_name, make_guider
from tiny_dit.inside.attention_maps import attention_at
from tiny_dit.inside.geometry import ModelGeometry
from tiny_dit.schedulers import scheduler_name, transformer_passes
from tiny_dit.text_encoder import TokenInfo, tokenize
from tiny_dit.video import to_uint8

MODULATION_NAMES = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
TEXT_KWARGS = ("encoder_hidden_states", "pooled_projections", "encoder_attention_mask")  # the model's text inputs
# What the recorder asks the pipeline's step callback for (see TinyDiTPipeline.__call__).
RECORDED_INPUTS = ["latents", "pred_x0", "start_latents", "sigma", "sigma_next", "model_timestep"]


# ----------------------------------------------------------------------------
# What a run keeps
# ----------------------------------------------------------------------------


class RunCancelled(Exception):
    """Raised inside the sampling loop when the caller gave up on the run."""


@dataclass
class RunRecord:
    """Everything the app's views show about one sampling run (see the module docstring)."""

    prompt: str
    seed: int
    guidance_scale: float
    num_inference_steps: int
    num_videos: int
    geometry: ModelGeometry
    frames: np.ndarray  # uint8 (N, T, H, W, 3); after slim(), clip 1 only (1, T, H, W, 3)
    # Arrays per step are per transformer *pass* (num_passes of them): one a step for Euler, DPM-Solver++
    # and UniPC, 2 * steps - 1 for Heun (its second pass of a step sees the Euler guess at the step's end).
    sigmas: np.ndarray  # (passes + 1,): noise level of x_t[k]; the last is 0
    x_t: np.ndarray  # float16 (passes + 1, C, T, h, w), sample 0: x_t[0] the noise, x_t[-1] the result
    pred_x0: np.ndarray  # float16 (passes, C, T, h, w), sample 0: the clean clip predicted at pass k
    timesteps: np.ndarray  # (passes,) the model's timestep at each pass (1000 sigma)
    conditioning: dict[str, torch.Tensor]  # the prompt's transformer kwargs for one clip (batch 1)
    transformer: torch.nn.Module = field(repr=False)  # the model that ran (to recompute attention)
    adaln: np.ndarray  # float32 (passes, depth, 6): mean |v| of MODULATION_NAMES per block and pass
    step_seconds: np.ndarray  # (passes,) wall time of each transformer pass (with its solver step)
    timings: dict[str, float]  # seconds: "prepare" (text + noise), "denoise", "decode", "clip_score", "total"
    tokens: TokenInfo
    clip_scores: list[float]  # CLIP score of each clip against the prompt
    notices: list[str] = field(default_factory=list)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this run in the attention cache
    scheduler: str = "euler"  # the solver (a name of tiny_dit.schedulers.SCHEDULERS, else its class name)
    guider: str = "cfg"  # the guidance method (a name of tiny_dit.guiders.GUIDERS, else its class name)

    @property
    def num_passes(self) -> int:
        """Transformer passes of the run (the length of pred_x0): num_inference_steps, or 2N - 1 for Heun."""
        return len(self.timesteps)

    def attention_at(self, step: int) -> dict[int, np.ndarray]:
        """Self-attention maps of clip 1 at transformer pass `step` (0-based), block -> float16
        (heads, ...) (the shapes of `Attention.forward(..., return_probs=True)` for one clip),
        recomputed from x_t[step] and cached for a few passes (tiny_dit.inside.attention_maps)."""
        return attention_at(self, step)

    def slim(self) -> "RunRecord":
        """The same run without the frames of clips 2..N (what the views need; ~0.8 MB a clip)."""
        return replace(self, frames=np.ascontiguousarray(self.frames[:1]))

    @property
    def nbytes(self) -> int:
        """Bytes this record holds (arrays and embeddings; not the shared transformer)."""
        arrays = [self.frames, self.x_t, self.pred_x0, self.adaln, self.sigmas, self.timesteps, self.step_seconds]
        tensors = [t.element_size() * t.nelement() for t in self.conditioning.values()]
        return int(sum(a.nbytes for a in arrays) + sum(tensors))


# ----------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------


class _Recorder:
    """Hooks on the transformer that record what happens to one clip of the batch, and stop
    the run before the next block once `cancel` is set."""

    def __init__(self, pipe, num_videos: int, steps: int, cancel: threading.Event | None = None):
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.num_videos = num_videos
        self.cancel = cancel
        self.thread = threading.get_ident()
        self.step = 0
        depth = len(self.transformer.blocks)
        self.adaln = np.zeros((steps, depth, 6), dtype=np.float32)
        self.first_forward: float | None = None
        self.conditioning: dict[str, torch.Tensor] = {}  # the text kwargs of clip 1 (batch 1)
        self.handles = []

    def _index(self, batch: int) -> int:
        # The batch is [uncond; cond] (2B rows) with guidance, else [cond] (B rows): the first
        # clip of the conditional half is row batch - B either way.
        return batch - self.num_videos

    def __enter__(self) -> "_Recorder":
        self.handles.append(self.transformer.register_forward_pre_hook(self._on_forward, with_kwargs=True))
        for i, block in enumerate(self.transformer.blocks):
            self.handles.append(block.register_forward_pre_hook(self._check_cancel))
            self.handles.append(block.adaLN_modulation.register_forward_hook(self._adaln_hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _mine(self) -> bool:
        return threading.get_ident() == self.thread

    def _on_forward(self, module, args, kwargs):
        if self._mine() and self.first_forward is None:
            self.first_forward = time.perf_counter()
            batch = (args[0] if args else kwargs["hidden_states"]).shape[0]
            i = self._index(batch)
            self.conditioning = {k: v[i:i + 1].detach().cpu().clone() for k, v in kwargs.items()
                                 if k in TEXT_KWARGS and isinstance(v, torch.Tensor)}

    def _check_cancel(self, module, args):
        if self.cancel is not None and self.cancel.is_set() and self._mine():
            raise RunCancelled("the run was stopped")

    def _adaln_hook(self, block_index: int):
        def hook(module, args, output):
            if not self._mine() or self.step >= len(self.adaln):
                return
            row = output[self._index(output.shape[0])].detach().float()  # (6 D,)
            self.adaln[self.step, block_index] = row.reshape(6, -1).abs().mean(dim=1).cpu().numpy()
        return hook


def record_run(pipe, prompt: str, *, seed: int = 0, guidance_scale: float | None = None,
               num_inference_steps: int | None = None, num_videos: int = 1, guider: str | None = None,
               on_step: Callable[[int, int, float, torch.Tensor], None] | None = None,
               cancel: threading.Event | None = None) -> RunRecord:
    """Sample `num_videos` clips for `prompt` and record the run (see the module docstring).

    guider: the guidance method, a name of tiny_dit.guiders.GUIDERS made at `guidance_scale`; None: the
    pipeline's own guider. guidance_scale None: the pipeline's guider's scale (the model's default).

    on_step(step, num_steps, sigma, pred_x0) is called after every denoising step, in this
    thread, with the predicted clean latents of all clips (B, C, T, h, w): the live preview.
    Setting `cancel` stops the run with RunCancelled within one DiT block (the check runs
    before every block and after every step).
    Invalid arguments raise the pipeline's ValueError before any work is done."""
    guidance_scale = pipe.default_guider.guidance_scale if guidance_scale is None else guidance_scale
    run_guider = None if guider is None else make_guider(guider, guidance_scale)  # ValueError for a bad name
    steps = pipe.default_num_inference_steps if num_inference_steps is None else num_inference_steps
    t_start = time.perf_counter()
    geometry = ModelGeometry.of(pipe)
    frames_, height, width = pipe.default_size()
    pipe.check_inputs(prompt, None, steps, guidance_scale, num_videos, frames_, height, width, None, "np",
                      RECORDED_INPUTS, None)  # before the tokenizer and the hooks: bad input, no work
    tokens, notices = tokenize(pipe.tokenizer, prompt)

    x_t, pred_x0, sigmas, timesteps = [], [], [], []  # clip 1's latents per pass, its noise levels, timesteps
    step_ends = []
    passes = transformer_passes(pipe.scheduler, steps)  # the callback runs once a pass (Heun: 2N - 1)
    recorder = _Recorder(pipe, num_videos, passes, cancel)

    def callback(_pipe, i, t, kwargs):
        if i == 0:
            x_t.append(kwargs["start_latents"][0].to(torch.float16).cpu().numpy())  # x at noise level 1
        pred_x0.append(kwargs["pred_x0"][0].to(torch.float16).cpu().numpy())
        x_t.append(kwargs["latents"][0].to(torch.float16).cpu().numpy())
        sigmas[i:] = [float(kwargs["sigma"][0]), float(kwargs["sigma_next"][0])]  # ... sigma_i, sigma_{i+1}
        timesteps.append(float(kwargs["model_timestep"][0]))
        step_ends.append(time.perf_counter())
        if on_step is not None:
            on_step(i, passes, sigmas[i], kwargs["pred_x0"])
        recorder.step = i + 1
        if cancel is not None and cancel.is_set():
            raise RunCancelled("the run was stopped")
        return {}

    with recorder:
        frames = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, guider=run_guider,
                      num_videos_per_prompt=num_videos, generator=torch.Generator().manual_seed(int(seed)),
                      output_type="np", callback_on_step_end=callback,
                      callback_on_step_end_tensor_inputs=RECORDED_INPUTS).frames
    t_decoded = time.perf_counter()
    clips = to_uint8(frames)  # (N, T, H, W, 3)
    with torch.no_grad():
        scores = pipe.text_encoder.clip_score(torch.from_numpy(clips), prompt).float().cpu().tolist()
    t_end = time.perf_counter()

    first = recorder.first_forward or t_start
    step_starts = [first] + step_ends[:-1]
    return RunRecord(
        prompt=prompt, seed=int(seed), guidance_scale=float(guidance_scale), num_inference_steps=steps,
        num_videos=num_videos, geometry=geometry, frames=clips, sigmas=np.array(sigmas, dtype=np.float32),
        x_t=np.stack(x_t), pred_x0=np.stack(pred_x0), timesteps=np.array(timesteps, dtype=np.float32),
        conditioning=recorder.conditioning,
        transformer=pipe.transformer,
        adaln=recorder.adaln,
        step_seconds=np.array([e - s for s, e in zip(step_starts, step_ends)]),
        timings={"prepare": first - t_start, "denoise": step_ends[-1] - first,
                 "decode": t_decoded - step_ends[-1], "clip_score": t_end - t_decoded, "total": t_end - t_start},
        tokens=tokens, clip_scores=scores, notices=notices,
        scheduler=scheduler_name(pipe.scheduler) or type(pipe.scheduler).__name__,
        guider=guider or method_name(pipe.default_guider))


def method_name(guider) -> str:
    """A guider's name for the page: its GUIDERS name, else its class name."""
    return guider_name(guider) or type(guider).__name__


# ----------------------------------------------------------------------------
# Recording in a worker thread (the live preview), and plain sampling
# ----------------------------------------------------------------------------


@dataclass
class StepEvent:
    """One denoising step finished (iter_run)."""

    step: int  # 0-based
    num_steps: int
    sigma: float  # noise level of this step's input
    elapsed: float  # seconds since the run started
    preview: object | None = None  # whatever make_preview returned, on preview steps


def iter_run(pipe, prompt: str, *, preview_every: int = 0,
             make_preview: Callable[[torch.Tensor], object] | None = None,
             lock: threading.Lock | None = None, cancel: threading.Event | None = None,
             done: threading.Event | None = None, **kwargs) -> Iterator[StepEvent | RunRecord]:
    """`record_run` in a worker thread: yields a StepEvent after every step (with
    make_preview(pred_x0) every `preview_every` steps and at the first step), then the
    RunRecord. Errors of the run are raised here (RunCancelled once `cancel` is set).
    Closing the generator early, or setting `cancel`, stops the run within one DiT block.
    The worker holds `lock`, if given, while it samples: pass the same lock to everything
    that samples with these models (one run at a time). It sets `done`, if given, when
    it has exited (and released the lock)."""
    events: queue.Queue = queue.Queue()
    cancel = threading.Event() if cancel is None else cancel
    start = time.perf_counter()
    finished = object()

    def on_step(i, n, sigma, pred):
        preview = None
        if make_preview is not None and preview_every and (i % preview_every == 0 or i == n - 1):
            preview = make_preview(pred)
        events.put(StepEvent(i, n, sigma, time.perf_counter() - start, preview))

    def work():
        try:
            with lock if lock is not None else contextlib.nullcontext():
                if cancel.is_set():
                    raise RunCancelled("the run was stopped before it started")
                events.put(record_run(pipe, prompt, on_step=on_step, cancel=cancel, **kwargs))
        except BaseException as error:  # handed to the consumer, raised there
            events.put(error)
        finally:
            if done is not None:
                done.set()
            events.put(finished)

    worker = threading.Thread(target=work, name="tiny-dit-sampler", daemon=True)
    worker.start()
    try:
        while True:
            item = events.get()
            if item is finished:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()  # a no-op if the run finished; stops it at the next step otherwise


def sample_clips(pipe, prompt: str, *, seed: int, guidance_scale: float, num_inference_steps: int,
                 num_videos: int = 1, guider: str | None = None) -> np.ndarray:
    """Plain sampling (no recording), uint8 clips (N, T, H, W, 3). The same seed gives the same
    starting noise as record_run, so clip 0 here is clip 0 there at the same guidance scale and method
    (`guider`: a name of GUIDERS, None: the pipeline's own)."""
    frames = pipe(prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                  guider=None if guider is None else make_guider(guider, guidance_scale),
                  num_videos_per_prompt=num_videos, generator=torch.Generator().manual_seed(int(seed)),
                  output_type="np").frames
    return to_uint8(frames)
