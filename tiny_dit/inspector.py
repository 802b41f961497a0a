"""Recording a sampling run, so that we can look inside the model afterwards.

    from tiny_dit.inspector import record_run

    record = record_run(pipe, "a red circle moving left on a black background", seed=0)
    record.frames            # uint8 (N, T, H, W, 3): the clips
    record.x_t[k]            # float16 latents of sample 0 at noise level record.sigmas[k]
    record.pred_x0[k]        # float16 clean latents of sample 0 predicted at step k
    record.attention_at(k)[b]  # float16 self-attention maps of block b at step k (recomputed)
    record.adaln             # (passes, depth, 6) mean |shift|, |scale|, |gate| of every block

Everything per step is recorded per transformer pass (`record.num_passes`): one a step for Euler,
DPM-Solver++ and UniPC, 2N - 1 for Heun's N steps (tiny_dit.schedulers.transformer_passes), so
every solver can be looked inside; record a run with `pipe.with_scheduler(name)` as `pipe`.

One run of `TinyDiTPipeline` is recorded, nothing is run twice:
  * x_t and pred_x0 of the first clip, the noise levels and the model's timesteps come from the
    pipeline's step callback (`callback_on_step_end_tensor_inputs=RECORDED_INPUTS`): the recorder
    asks the pipeline for them and neither repeats its opening steps nor reads its scheduler.
  * Attention maps are not kept: a run of 36 clips and 60 iterations would hold 6 blocks x
    6 heads x 256 x 256 x 60 steps x 2 bytes = 283 MB of them per session. `record.attention_at(k)`
    recomputes them for one step from what is kept: the transformer is run once more, on clip 1
    only (batch 1, conditional), on its recorded latents x_t[k] at the step's timestep with the
    prompt's embeddings (recorded from the transformer's first call, as the pipeline passed them), with `capture_attention_layers` for every block. These are the maps the
    pipeline captures for that clip up to the float16 storage of x_t (the tests check it), in
    ~one block-pass of one clip (a few tens of ms); the last few steps asked for are cached
    (ATTENTION_CACHE_STEPS, shared by all runs, so memory stays bounded).
    A finished run keeps, for clip 1: x_t and pred_x0 (float16), its frames, the adaLN
    magnitudes and the prompt's embeddings: `record.nbytes` is ~6 MB at the app's defaults
    (20 iterations) and ~17 MB at its maximum (60), whatever the number of clips (after
    `record.slim()`, which drops the frames of clips 2..N once they are written).
  * adaLN-Zero modulation magnitudes come from a forward hook on every
    `block.adaLN_modulation` (its output is the six vectors shift/scale/gate for the
    attention and the MLP branch), for the same clip.
  * Wall-clock timings of each phase.

`iter_run` runs the same recording in a worker thread and yields progress events
(step, noise level, the current guess of the clean clips) while it runs: the app's live
preview. Both only hook the model for the duration of the call, and only react to the
thread that is sampling, so other threads may use the same pipeline meanwhile. A scheduler
holds the state of a run, so concurrent runs each need their own (`pipe.with_scheduler`, as
the app does); the app still runs one sampling at a time, to share the CPU by turns.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np
import torch

from tiny_dit.model import token_grid
from tiny_dit.schedulers import scheduler_name, transformer_passes
from tiny_dit.video import to_uint8

MODULATION_NAMES = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
TEXT_KWARGS = ("encoder_hidden_states", "pooled_projections", "encoder_attention_mask")  # the transformer's
# What the recorder asks the pipeline's step callback for (see TinyDiTPipeline.__call__).
RECORDED_INPUTS = ["latents", "pred_x0", "start_latents", "sigma", "sigma_next", "model_timestep"]
ATTENTION_CACHE_STEPS = 4  # recomputed attention maps kept (all runs together): ~4.7 MB each for the bundle


class RunCancelled(Exception):
    """Raised inside the sampling loop when the caller gave up on the run."""


@dataclass
class ModelGeometry:
    """How pixels become tokens for one pipeline (all sizes from its configs)."""

    num_frames: int  # pixel frames (= latent frames: the autoencoder works frame by frame)
    height: int  # pixels
    width: int
    latent_channels: int
    vae_scale_factor: int  # pixels per latent pixel along each side
    patch_size: int  # tubelet height/width in latent pixels
    patch_size_t: int  # tubelet length in frames
    hidden_size: int
    depth: int
    num_heads: int
    attention_type: str
    layouts: list[str]  # per block: "full", "spatial" or "temporal"
    cross_attention: bool
    context_length: int  # CLIP tokens

    @property
    def latent_size(self) -> tuple[int, int, int]:
        return self.num_frames, self.height // self.vae_scale_factor, self.width // self.vae_scale_factor

    @property
    def grid(self) -> tuple[int, int, int]:
        """The token grid (T', H', W') (tiny_dit.model.token_grid)."""
        return token_grid(*self.latent_size, self.patch_size_t, self.patch_size)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_pixels(self) -> int:
        """One token covers patch_pixels x patch_pixels pixels of patch_size_t frames."""
        return self.patch_size * self.vae_scale_factor

    @property
    def token_features(self) -> int:
        return self.latent_channels * self.patch_size_t * self.patch_size ** 2

    @classmethod
    def of(cls, pipe) -> "ModelGeometry":
        config = pipe.transformer.config
        frames, height, width = pipe.default_size()
        layouts = [block.attn.layout for block in pipe.transformer.blocks]
        return cls(num_frames=frames, height=height, width=width, latent_channels=config.in_channels,
                   vae_scale_factor=pipe.vae_scale_factor, patch_size=config.patch_size,
                   patch_size_t=config.patch_size_t, hidden_size=config.hidden_size, depth=config.depth,
                   num_heads=config.num_heads, attention_type=config.attention_type, layouts=layouts,
                   cross_attention=bool(config.cross_attention),
                   context_length=int(pipe.tokenizer.config.context_length))


@dataclass
class TokenInfo:
    """What CLIP read of the prompt."""

    ids: list[int]  # the context_length token ids fed to CLIP
    pieces: list[str]  # each id decoded back to text
    num_real: int  # start + words + end (the rest is padding, masked out)
    num_wanted: int  # tokens the full prompt needs (start + words + end)
    context_length: int

    @property
    def truncated(self) -> bool:
        return self.num_wanted > self.context_length

    @property
    def read_text(self) -> str:
        """The part of the prompt CLIP actually read."""
        return "".join(self.pieces[1:self.num_real - 1]).strip()


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

    @property
    def num_passes(self) -> int:
        """Transformer passes of the run (the length of pred_x0): num_inference_steps, or 2N - 1 for Heun."""
        return len(self.timesteps)

    def attention_at(self, step: int) -> dict[int, np.ndarray]:
        """Self-attention maps of clip 1 at denoising step `step` (0-based), block -> float16
        (heads, ...) (the shapes of `Attention.forward(..., return_probs=True)` for one clip),
        recomputed from x_t[step] (see the module docstring) and cached for a few steps."""
        step = int(step)
        if not 0 <= step < self.num_passes:
            raise ValueError(f"step must be from 0 to {self.num_passes - 1}, got {step}")
        cache_key = (self.key, step)
        with _ATTENTION_LOCK:
            if cache_key in _ATTENTION_CACHE:
                _ATTENTION_CACHE.move_to_end(cache_key)
                return _ATTENTION_CACHE[cache_key]
        maps = recompute_attention(self.transformer, self.x_t[step], float(self.timesteps[step]), self.conditioning)
        with _ATTENTION_LOCK:
            _ATTENTION_CACHE[cache_key] = maps
            while len(_ATTENTION_CACHE) > ATTENTION_CACHE_STEPS:
                _ATTENTION_CACHE.popitem(last=False)
        return maps

    def slim(self) -> "RunRecord":
        """The same run without the frames of clips 2..N (what the views need; ~0.8 MB a clip)."""
        return replace(self, frames=np.ascontiguousarray(self.frames[:1]))

    @property
    def nbytes(self) -> int:
        """Bytes this record holds (arrays and embeddings; not the shared transformer)."""
        arrays = [self.frames, self.x_t, self.pred_x0, self.adaln, self.sigmas, self.timesteps, self.step_seconds]
        tensors = [t.element_size() * t.nelement() for t in self.conditioning.values()]
        return int(sum(a.nbytes for a in arrays) + sum(tensors))


_ATTENTION_CACHE: "OrderedDict[tuple[str, int], dict[int, np.ndarray]]" = OrderedDict()
_ATTENTION_LOCK = threading.Lock()


@torch.no_grad()
def recompute_attention(transformer, latents: np.ndarray, timestep: float,
                        conditioning: dict[str, torch.Tensor]) -> dict[int, np.ndarray]:
    """The self-attention maps of every block for one clip's latents (C, T, h, w) at `timestep`:
    block -> float16 (heads, ...). One forward pass of batch 1, as the pipeline runs the model."""
    param = next(transformer.parameters())
    x = torch.as_tensor(np.asarray(latents, dtype=np.float32))[None].to(param.device)
    t = torch.full((1,), timestep, dtype=torch.float32, device=param.device)
    kwargs = {k: v.to(param.device) for k, v in conditioning.items()}
    output = transformer(x, timestep=t, capture_attention_layers=list(range(len(transformer.blocks))), **kwargs)
    return {b: a[0].to(torch.float16).cpu().numpy() for b, a in output.attentions.items()}


# ----------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------


def tokenize(pipe, prompt: str) -> tuple[TokenInfo, list[str]]:
    """Token ids of the prompt as CLIP reads them, decoded, and the tokenizer's warnings
    (it warns when the prompt is longer than CLIP's context and gets truncated)."""
    component = pipe.tokenizer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = component(prompt)[0].tolist()  # (context_length,)
    messages = [str(w.message) for w in caught]
    inner = component.tokenizer
    context = int(component.config.context_length)
    eot = int(np.argmax(ids))  # the end-of-text token has the largest id (as CLIPEncoder.encode_text assumes)
    encode = getattr(inner, "encode", None)
    wanted = len(encode(prompt)) + 2 if encode is not None else eot + 1
    pieces = []
    for i, token_id in enumerate(ids):
        if i > eot:
            pieces.append("")
        elif hasattr(inner, "decoder"):  # open_clip's SimpleTokenizer
            pieces.append(inner.decode([token_id]))
        else:  # HFTokenizer
            pieces.append(inner.tokenizer.convert_ids_to_tokens(token_id))
    return TokenInfo(ids=ids, pieces=pieces, num_real=eot + 1, num_wanted=wanted, context_length=context), messages


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
               num_inference_steps: int | None = None, num_videos: int = 1,
               on_step: Callable[[int, int, float, torch.Tensor], None] | None = None,
               cancel: threading.Event | None = None) -> RunRecord:
    """Sample `num_videos` clips for `prompt` and record the run (see the module docstring).

    on_step(step, num_steps, sigma, pred_x0) is called after every denoising step, in this
    thread, with the predicted clean latents of all clips (B, C, T, h, w): the live preview.
    Setting `cancel` stops the run with RunCancelled within one DiT block (the check runs
    before every block and after every step).
    Invalid arguments raise the pipeline's ValueError before any work is done."""
    from tiny_dit.pipeline import DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS

    guidance_scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale
    steps = DEFAULT_NUM_INFERENCE_STEPS if num_inference_steps is None else num_inference_steps
    t_start = time.perf_counter()
    geometry = ModelGeometry.of(pipe)
    frames_, height, width = pipe.default_size()
    pipe.check_inputs(prompt, None, steps, guidance_scale, num_videos, frames_, height, width, None, "np",
                      RECORDED_INPUTS, None)  # before the tokenizer and the hooks: bad input, no work
    tokens, notices = tokenize(pipe, prompt)

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
        frames = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale,
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
        scheduler=scheduler_name(pipe.scheduler) or type(pipe.scheduler).__name__)


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
                 num_videos: int = 1) -> np.ndarray:
    """Plain sampling (no recording), uint8 clips (N, T, H, W, 3). The same seed gives the same
    starting noise as record_run, so clip 0 here is clip 0 there at the same guidance scale."""
    frames = pipe(prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                  num_videos_per_prompt=num_videos, generator=torch.Generator().manual_seed(int(seed)),
                  output_type="np").frames
    return to_uint8(frames)
