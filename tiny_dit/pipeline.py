"""TinyDiTPipeline: text -> video with a trained TinyDiT, as a diffusers pipeline.

    from tiny_dit import TinyDiTPipeline

    pipe = TinyDiTPipeline.from_pretrained("assets/tiny-dit-shapes")   # or a Hub repo id
    video = pipe("a red circle moving left on a black background", generator=torch.Generator().manual_seed(0))
    video.frames.shape   # (1, 16, 128, 128, 3), float in [0, 1]

The pipeline is five components, saved in one folder by `save_pretrained` and
loaded back by `from_pretrained` (diffusers' layout: model_index.json plus one
subfolder per component; `push_to_hub` uploads the same folder):

    vae           the autoencoder (diffusers AutoencoderTiny / AutoencoderKL): latents <-> frames
    text_encoder  CLIPEncoder (open_clip CLIP): prompt -> pooled embedding + token states
    tokenizer     OpenCLIPTokenizer: prompt -> token ids
    transformer   TinyDiT: predicts the rectified-flow velocity v = noise - x0
    scheduler     the ODE solver: diffusers' FlowMatchEulerDiscreteScheduler (Euler steps), or
                  FlowMatchHeun, DPM-Solver++ or UniPC (tiny_dit.schedulers.make_scheduler)
    guider        how the two velocities are mixed: a diffusers guider (ClassifierFreeGuidance, or one of
                  tiny_dit.guiders.GUIDERS), saved like the scheduler; optional (tiny_dit.guiders.DEFAULT_GUIDER)

Generation, step by step (`__call__`):
  1. encode the prompts, and for classifier-free guidance (CFG) the negative
     prompts (default: the empty prompt, which the model learned through
     label dropout);
  2. draw Gaussian noise x at noise level s = 1, in latent space (to edit a clip: noise its latents x0
     to the schedule's level s_k nearest `strength`, x = (1 - s_k) x0 + s_k noise, and start there);
  3. for each noise level s_i of the schedule (1, 1 - 1/N, ..., 1/N; flow.sampling_noise_levels):
        v  = transformer(x, 1000 * s_i, text)                 one batched pass on [uncond; cond]
                                                              (+ the known frames, if it was trained on them)
        v  = guider(v_cond, v_uncond)                         CFG if w > 1: v_uncond + w (v_cond - v_uncond)
                                                              (flow.guided_velocity; other guiders depart
                                                              from it, tiny_dit.guiders)
        x0 = x - s_i * v                                      the current guess (flow.predicted_x0)
        x  = x + (s_{i+1} - s_i) * v                          the scheduler's Euler step
        x[known] = (1 - s_{i+1}) * x0_known + s_{i+1} * noise   only with conditions (flow.add_noise)
  4. decode the final latents to frames with the autoencoder (and cut them to num_frames; a loop
     appends the way back, the same frames in reverse).

To watch a clip form, ask the step callback for the current guess of the clean clip:

    def show(pipe, i, t, kw):
        frames = pipe.decode_latents(kw["pred_x0"])        # (B, T, H, W, 3) in [0, 1]
        ...                                               # kw["attentions"][block]: attention maps
        return {}

    pipe(prompt, callback_on_step_end=show, callback_on_step_end_tensor_inputs=["pred_x0", "attentions"],
         capture_attention_layers=[0])                    # default: every block's maps

Like diffusers' SD3, LTX and Wan pipelines, it can take prompt embeddings instead of
prompts (encode once with `encode_prompt`, reuse them, or encode in a pipeline that holds
only the text encoder), and it keeps the callback state diffusers' built-in callbacks use
(`guidance_scale`, read at every step from `_guidance_scale`, `num_timesteps`, `interrupt`),
so `diffusers.callbacks.SD3CFGCutoffCallback` turns guidance off part-way through a run.

Any length and size. num_frames may be anything from 1 (an image) to 64, and height and
width any multiple of the token size (16 px for the bundled model, e.g. 128 x 192): the
transformer's positional embeddings are computed from the input, not learned for one size.
The transformer cuts the latent clip into tubelets of patch_size_t frames, so a clip
whose length is not a multiple of that is sampled at the next multiple and cut (the
autoencoder works frame by frame: pixel frame k is latent frame k). An image is the
shortest case: one tubelet is sampled and its first frame returned. The model learns
images that way: stills in training are one frame held for a whole tubelet, captioned
without a motion ("a red star on a black background").

Known frames (`conditions`, as in diffusers' LTXConditionPipeline): an image or a clip
held at its place in the output while the rest is generated: animate an image, extend a
clip forwards or backwards, connect two clips. See tiny_dit.conditions:

    pipe(prompt, conditions=[TinyDiTCondition(image=img, frame_index=0)])
    pipe(prompt, num_frames=32, conditions=[TinyDiTCondition(video=clip)])   # extend forwards

Editing a clip by prompt (`video`, `strength`, as diffusers' video-to-video pipelines take them;
SDEdit) and loops (`loop=True`: an outward clip and the way back). See tiny_dit.edit_and_loop:

    pipe("a blue circle moving right on a black background", video=clip, strength=0.7)
    pipe(prompt, loop=True)

With the default scheduler (shift=1) this is exactly `tiny_dit.flow.euler_sample`,
the teaching sampler; the pipeline adds input checks, batching over prompts,
seeds, callbacks and decoding. Two of its parts are ideas of their own, each in its
own file and mixed into the class: prompts -> embeddings (`encode_prompt`, in
tiny_dit/pipeline_prompts.py) and the checks of a call's arguments (`check_inputs`,
in tiny_dit/pipeline_checks.py). This file is the rest: loading, sizes, precision,
and the generation loop.

Other solvers, diffusers' standard way (see tiny_dit.schedulers for why fewer steps can be enough):

    pipe.scheduler = make_scheduler("dpm++", pipe.scheduler.config, shift=1.0)  # "euler", "heun", "unipc"
    pipe(prompt, num_inference_steps=8)          # saved with the pipeline by save_pretrained
    pipe.with_scheduler("unipc")(prompt)         # a pipeline sharing the models; `pipe` is left as it is

The loop is diffusers' generic one: one transformer pass per scheduler timestep, so Heun (whose
timesteps repeat: two passes a step) makes 2N - 1 passes for N steps, the others N.

model_index.json names each component's class by the module that defines it,
e.g. ["tiny_dit.model", "TinyDiT"]. diffusers only looks such modules up among
those already imported (it will not import code a folder names), and this
module imports all of them, so `TinyDiTPipeline.from_pretrained` always works.
"""

import inspect
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.guiders import BaseGuidance
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from tiny_dit.autoencoder import decode_latents as decode_to_frames
from tiny_dit.autoencoder import spatial_downsample
from tiny_dit.conditions import (KnownFrames, TinyDiTCondition, encode_known_frames, hold_known_frames,
                                 place_conditions)
from tiny_dit.edit_and_loop import (DEFAULT_STRENGTH, edit_start_index, encode_video_to_edit, loop_num_frames,
                                    outward_num_frames, there_and_back, video_frames)
from tiny_dit.flow import DEFAULT_NUM_INFERENCE_STEPS, add_noise, is_guided, predicted_x0
from tiny_dit.guiders import DEFAULT_GUIDER, check_guider, guider_for_run, make_guider
from tiny_dit.model import TinyDiT
from tiny_dit.pipeline_checks import InputChecksMixin
from tiny_dit.pipeline_prompts import NEGATIVE_EMBEDDING_NAMES, PROMPT_EMBEDDING_NAMES, PromptEncodingMixin
from tiny_dit.schedulers import FlowScheduler, make_scheduler, set_flow_timesteps
from tiny_dit.text_encoder import CLIPEncoder, OpenCLIPTokenizer

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class TinyDiTPipelineOutput(BaseOutput):
    """Output of `TinyDiTPipeline`.

    frames: the generated clips, in the layouts of diffusers' video pipelines (LTX, Wan, Latte):
        output_type="np": float32 numpy array (batch, frames, height, width, 3) in [0, 1];
        "pt": float32 torch tensor (batch, frames, 3, height, width) in [0, 1], channels first;
        "pil": a list (one per clip) of lists of PIL RGB images (one per frame);
        "latent": the latents (batch, C, T, h, w), not decoded.
    """

    frames: np.ndarray | torch.Tensor | list


class TinyDiTPipeline(PromptEncodingMixin, InputChecksMixin, DiffusionPipeline):
    """Text-to-video with TinyDiT. See the module docstring for the algorithm.

    Args:
        vae: autoencoder between frames and (normalised) latents.
        text_encoder: CLIP that conditions the transformer.
        tokenizer: CLIP's tokenizer.
        transformer: the TinyDiT velocity model.
        scheduler: a FlowMatchEulerDiscreteScheduler (shift=1.0 reproduces the training noise levels), or
            another flow solver of tiny_dit.schedulers.SCHEDULERS (made by make_scheduler).
        guider: the default guidance method and scale of a call (a diffusers guider); None: the project's
            default, tiny_dit.guiders.DEFAULT_GUIDER at tiny_dit.flow.DEFAULT_GUIDANCE_SCALE (what a folder
            saved before guiders gets).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["guider"]
    # What `callback_on_step_end` may ask for (see __call__); each one works on its own.
    _callback_tensor_inputs = ["latents", "pred_x0", "attentions", "start_latents", "sigma", "sigma_next",
                               "model_timestep", *PROMPT_EMBEDDING_NAMES, *NEGATIVE_EMBEDDING_NAMES]

    def __init__(
        self,
        vae: AutoencoderTiny | AutoencoderKL,
        text_encoder: CLIPEncoder,
        tokenizer: OpenCLIPTokenizer,
        transformer: TinyDiT,
        scheduler: FlowScheduler,
        guider: BaseGuidance | None = None,
        default_num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
    ):
        super().__init__()
        # Always a guider, so that `pipe.guider = ...` is saved by save_pretrained (diffusers does not record
        # a component set later in place of one registered as None); folders saved before guiders get the default.
        guider = make_guider(DEFAULT_GUIDER) if guider is None else guider
        check_guider(guider)
        # vae first: with no component on an accelerator, pipe.device is that of the first registered one.
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, scheduler=scheduler,
            guider=guider,
        )
        # Saved in model_index.json (as SDXL saves force_zeros_for_empty_prompt): a distilled folder samples in
        # its few steps by default, as sd-turbo's users expect of theirs.
        self.register_to_config(default_num_inference_steps=default_num_inference_steps)
        self._float32_weights: dict[str, dict[str, torch.Tensor]] = {}  # see _cast

    # -- building and loading ---------------------------------------------------

    @classmethod
    def from_components(cls, transformer: TinyDiT, text_encoder: CLIPEncoder, vae: AutoencoderTiny | AutoencoderKL,
                        shift: float = 1.0, progress_bar: bool = False) -> "TinyDiTPipeline":
        """A pipeline from its models: the tokenizer is the text encoder's, the scheduler Euler with
        `shift` (sample at the noise levels training emphasised: its noise shift), the guider the
        project's default (tiny_dit.guiders.DEFAULT_GUIDER at DEFAULT_GUIDANCE_SCALE). How a training run
        and the app's untrained stand-in build one; a saved pipeline is loaded with from_pretrained."""
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=text_encoder.tokenizer, transformer=transformer,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=shift))
        pipe.set_progress_bar_config(disable=not progress_bar)
        return pipe

    # -- loading ----------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "TinyDiTPipeline":
        """Load a pipeline folder written by `save_pretrained`, or a Hugging Face Hub repo id.

        Offline (HF_HUB_OFFLINE=1) only the local Hub cache is looked at. Anything that cannot be
        found or downloaded raises an OSError that says what to do."""
        name = str(pretrained_model_name_or_path)
        if os.path.isdir(name):
            if not os.path.isfile(os.path.join(name, "model_index.json")):
                raise OSError(
                    f"{name} is not a pipeline folder (no model_index.json). Train one with "
                    "`python -m tiny_dit.training.train` (it writes <out>/pipeline/) or save one with "
                    "TinyDiTPipeline.save_pretrained.")
            return super().from_pretrained(name, **kwargs)
        if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1:
            raise OSError(
                f"no pipeline folder at {name!r}. Pass a folder written by TinyDiTPipeline.save_pretrained "
                "(python -m tiny_dit.training.train writes <out>/pipeline/) or a Hub repo id such as 'org/name'.")
        offline = _is_offline()
        if offline:
            kwargs.setdefault("local_files_only", True)
        try:
            return super().from_pretrained(name, **kwargs)
        except (OSError, ValueError) as error:
            if offline:
                reason = "HF_HUB_OFFLINE is set and it is not in the local Hub cache"
                fix = "To download it, unset HF_HUB_OFFLINE and connect to the network"
            else:
                reason = "it could not be downloaded from the Hugging Face Hub"
                fix = "Check the repo id and your network connection"
            raise OSError(
                f"could not load the pipeline {name!r}: {reason} ({type(error).__name__}: {error}). {fix}, "
                "or pass a local folder written by TinyDiTPipeline.save_pretrained (e.g. the <out>/pipeline/ "
                "folder of python -m tiny_dit.training.train)."
            ) from error

    def with_scheduler(self, scheduler: str | FlowScheduler, shift: float | None = None) -> "TinyDiTPipeline":
        """A pipeline that shares this one's models (no copy of the weights) and samples with another
        scheduler: a name of tiny_dit.schedulers.SCHEDULERS ("euler", "heun", "dpm++", "unipc"; built
        from this pipeline's scheduler config, with `shift` if given) or a scheduler object. This
        pipeline, its scheduler and its run state are left untouched, so that a server can give each
        request its own solver. Schedulers hold the state of a run: never share one between runs
        that may overlap (and the models' hooks, if any, are shared)."""
        if isinstance(scheduler, str):
            scheduler = make_scheduler(scheduler, self.scheduler.config if self.scheduler is not None else None,
                                       shift)
        elif shift is not None:
            raise ValueError("shift goes with a scheduler name; a scheduler object has its own")
        # Its default steps too: a fast student's copy still samples in its few by default.
        pipe = type(self)(**{**self.components, "scheduler": scheduler},
                          default_num_inference_steps=self.default_num_inference_steps)
        pipe._progress_bar_config = dict(getattr(self, "_progress_bar_config", {}))
        return pipe

    # -- sizes --------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel along each side."""
        return spatial_downsample(self.vae)

    def latent_num_frames(self, num_frames: int) -> int:
        """Latent frames sampled for a clip of num_frames pixel frames: the next multiple of the
        transformer's tubelet length patch_size_t (the surplus frames are cut after decoding).
        num_frames=1 (an image) gives one tubelet, which the model learned as a still image."""
        pt = self.transformer.config.patch_size_t
        return -(-num_frames // pt) * pt

    def default_size(self) -> tuple[int, int, int]:
        """(num_frames, height, width) in pixels that the transformer was trained for."""
        config = self.transformer.config
        size = config.sample_size * self.vae_scale_factor
        return config.num_frames, size, size

    @torch.no_grad()
    def set_dtype(self, dtype: str = "auto") -> torch.dtype:
        """Put the transformer and the autoencoder in "float32", "bfloat16", or with "auto" the
        faster of the two, measured on the transformer (it does nearly all of the work).

        bfloat16 halves the bytes moved and, on CPUs with AVX-512 BF16 or AMX (and on GPUs),
        runs matmuls and convolutions about twice as fast: measured here (benchmarks/speed.py),
        the transformer's work for 4 guided clips x 20 steps took 1.0-1.3 s instead of 2.7-2.9 s,
        and decoding their 64 frames 0.06 s instead of 0.09-0.12 s. On older CPUs it is slower,
        so "auto" times one pass of a 4-clip guided batch (the app's default request) in each dtype.
        The sampler's latents stay float32, and so does the text encoder (it runs once per prompt).
        Back to float32 after bfloat16, the weights are the float32 ones again, not bfloat16's rounding.
        Returns the dtype set.
        """
        if dtype != "auto":
            if dtype not in COMPUTE_DTYPES:
                raise ValueError(f"dtype must be 'auto' or one of {list(COMPUTE_DTYPES)}, got {dtype!r}")
            return self._cast(COMPUTE_DTYPES[dtype])
        batch_size = 8
        frames, height, width = self.default_size()
        ds, config = self.vae_scale_factor, self.transformer.config
        x = torch.randn(batch_size, config.in_channels, frames, height // ds, width // ds, device=self.device)
        cond, _ = self.encode_conditioning([""] * batch_size, do_classifier_free_guidance=False, device=self.device)
        timestep = torch.full((batch_size,), 500.0, device=self.device)
        seconds = {}
        for candidate in COMPUTE_DTYPES.values():
            self._cast(candidate)  # the transformer casts its float32 inputs to its own dtype
            for _ in range(2):  # the first pass warms up kernels and allocations: keep the second
                start = time.perf_counter()
                self.transformer(x, timestep, **cond)
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[candidate] = time.perf_counter() - start
        return self._cast(min(seconds, key=seconds.get))

    def _cast(self, dtype: torch.dtype) -> torch.dtype:
        # Casting to bfloat16 rounds the weights, and casting back cannot undo the rounding: so a model's
        # float32 weights are kept aside while it runs in bfloat16 and put back when it returns to float32
        # ("auto" tries both). Weights changed in the meantime (trained, edited) are cast instead: they win.
        # nn.Module.to, not ModelMixin.to: diffusers' version warns about modules "that should be kept in
        # float32: []" on every cast, even when there are none (diffusers 0.42).
        for name in ("transformer", "vae"):
            model = getattr(self, name)
            if model.dtype == dtype:
                continue
            if model.dtype == torch.float32:
                self._float32_weights[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                torch.nn.Module.to(model, dtype)
                continue
            kept = self._float32_weights.pop(name, None) if dtype == torch.float32 else None
            unchanged = kept is not None and all(
                torch.equal(kept[k].to(v.dtype), v) for k, v in model.state_dict().items())
            torch.nn.Module.to(model, dtype)
            if unchanged:
                model.load_state_dict(kept)
        return dtype

    # -- latents --------------------------------------------------------------------

    def prepare_latents(self, batch_size: int, num_frames: int, height: int, width: int,
                        generator, device: torch.device, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Starting noise (B, C, T, h, w) at noise level 1, float32, from `generator`. T is
        latent_num_frames(num_frames): num_frames rounded up to whole tubelets, so a shorter clip
        starts from the first frames of the noise of the longer one."""
        ds = self.vae_scale_factor
        shape = (batch_size, self.transformer.config.in_channels, self.latent_num_frames(num_frames),
                 height // ds, width // ds)
        if latents is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        if not torch.is_tensor(latents) or tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (videos, C, frames rounded up to whole tubelets, "
                             f"height/{ds}, width/{ds}), "
                             f"got {tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__}")
        if not torch.isfinite(latents).all():  # NaN or inf in would only come out as NaN frames
            raise ValueError("latents contain NaN or infinite values: pass finite starting noise")
        return latents.to(device, torch.float32)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, T, h, w) -> float frames (B, T, H, W, 3) in [0, 1], on the CPU."""
        return decode_to_frames(self.vae, latents)

    # -- the state of a run, as diffusers' callbacks read and change it -------------------

    @property
    def guidance_scale(self) -> float:
        """The CFG weight of the run under way, read at every step: a callback may change
        `pipe._guidance_scale` between steps (diffusers' CFG cut-off callbacks set it to 0)."""
        return self._guidance_scale

    @property
    def default_guider(self) -> BaseGuidance:
        """The guider a call uses when it is given none: the pipeline's `guider` component (the project's
        default in a folder saved before guiders), checked: `pipe.guider = ...` bypasses __init__'s check."""
        check_guider(self.guider)
        return self.guider

    @property
    def default_num_inference_steps(self) -> int:
        """The steps of a call that names none: 20 (flow.DEFAULT_NUM_INFERENCE_STEPS), or the few a distilled
        student was trained for (its folder's model_index.json says so; a folder saved before has none)."""
        return self.config.get("default_num_inference_steps", DEFAULT_NUM_INFERENCE_STEPS)

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether this step runs the unconditional pass too: guidance_scale > 1 and the run's guider guides
        at this step (an interval guider does not in its last steps)."""
        guider = getattr(self, "_guider", None)
        return is_guided(self._guidance_scale) and (guider is None or guider.num_conditions > 1)

    @property
    def num_timesteps(self) -> int:
        """Steps of the run under way (or of the last one)."""
        return self._num_timesteps

    @property
    def current_timestep(self) -> torch.Tensor | None:
        """The timestep being denoised (1000 * noise level), None outside the loop."""
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` in a callback to skip the remaining steps; the latents as
        they are then are decoded and returned (diffusers' convention)."""
        return self._interrupt

    # -- generation -----------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_videos_per_prompt: int = 1,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        conditions: TinyDiTCondition | list[TinyDiTCondition] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        capture_attention_layers: list[int] | None = None,
        guider: BaseGuidance | None = None,
        video=None,
        strength: float | None = None,
        loop: bool = False,
    ) -> TinyDiTPipelineOutput | tuple:
        """Generate clips for one or more prompts, or for prompt embeddings.

        Args:
            prompt: a prompt or a list of prompts (or pass prompt_embeds instead).
            negative_prompt: replaces the empty prompt as the unconditional input of classifier-free
                guidance: a string for all prompts, or a list with one per prompt.
            num_inference_steps: steps of the scheduler, 1 to 200: one transformer pass each (Heun: two,
                except the last; see tiny_dit.schedulers.transformer_passes). Default: the pipeline's
                `default_num_inference_steps` (20; a distilled fast folder's: its few).
            guidance_scale: classifier-free guidance weight w, 0 to 30: v = v_uncond + w (v_cond - v_uncond).
                w <= 1 turns guidance off (diffusers' convention): the conditional model alone, one pass
                per step instead of two, and negative_prompt is not used. Read from `pipe._guidance_scale`
                at every step, so a callback may change it during the run. Default: the guider's scale.
            num_videos_per_prompt: clips per prompt (at most 36 clips per call in all).
            num_frames, height, width: clip size in pixels; default: what the transformer was trained on (an
                edit: the clip's; a loop: see loop).
                num_frames: 1 (an image) to 64; a length that is not a multiple of the transformer's
                patch_size_t is sampled at the next multiple and cut, and one frame is the first of a
                one-tubelet clip (what the model learned as a still image). Height and width: multiples
                of the autoencoder's downsampling times the transformer's patch_size.
            generator: a torch.Generator (or one per clip) for the starting noise: the same seed gives
                the same clips. Without one, the global torch RNG is used.
            latents: starting noise (videos, C, T, h, w) instead of drawing it; T is num_frames rounded up
                to a multiple of patch_size_t.
            conditions: known frames, a TinyDiTCondition or a list of them: each an image or a clip
                (PIL images, or uint8 / [0, 1] float arrays (T, H, W, 3)) of the output's height and width,
                placed from its frame_index on (negative: from the end) and held there while the other
                frames are generated; the same for every clip of the call. Animate an image:
                [TinyDiTCondition(image=img)]; extend a clip: the clip at 0 and num_frames larger (or at
                -len(clip) to extend it backwards); connect two: one at 0, the other at -len(other). The
                held frames come back as the autoencoder's round trip of the given ones. Training-free
                (RePaint-style): see tiny_dit.conditions. Frames may not overlap.
            prompt_embeds, prompt_attention_mask, pooled_prompt_embeds: what `encode_prompt` returns under
                these names, instead of `prompt`: CLIP token states (P, L, W), their mask (P, L) and pooled
                embedding (P, E), one row per prompt; each row gives num_videos_per_prompt clips. They
                need no text encoder: encode once and reuse, or encode in another pipeline.
            negative_prompt_embeds, negative_prompt_attention_mask, negative_pooled_prompt_embeds: the
                same for the unconditional input, instead of negative_prompt (default: the empty prompt).
            output_type: "np" (numpy float frames (B, F, H, W, 3)), "pt" (torch float frames (B, F, 3, H, W)),
                "pil" (lists of PIL images) or "latent" (no decoding); see TinyDiTPipelineOutput.
            return_dict: return a TinyDiTPipelineOutput, or a tuple (frames,).
            callback_on_step_end: `fn(pipe, step_index, timestep, callback_kwargs) -> dict`, called after
                every transformer pass (a step; Heun makes two a step), or a diffusers PipelineCallback /
                MultiPipelineCallbacks (whose tensor_inputs
                then replace callback_on_step_end_tensor_inputs). step_index counts the passes of this run
                from 0; an edit (`video`) skips the schedule's first pipe.scheduler.begin_index of them, so
                below, k = pipe.scheduler.begin_index + step_index (k = step_index without `video`).
                callback_kwargs holds the entries named in
                callback_on_step_end_tensor_inputs, any of `pipe._callback_tensor_inputs`:
                  "latents":    x after this step, (B, C, T, h, w) float32, at noise level
                                pipe.scheduler.sigmas[k + 1] (0 after the last step), with the
                                known frames of `conditions` already held at that level; T is num_frames
                                rounded up to whole tubelets (for a loop: those of the outward clip);
                  "pred_x0":    the clean latents predicted at this step, x_t - sigma_t * v (guided v),
                                where x_t is the input of the step and sigma_t =
                                pipe.scheduler.sigmas[k] (at known frames too: the model's own
                                guess of them, not the condition);
                  "attentions": {block: attention probabilities} of the blocks in capture_attention_layers
                                (default: all blocks), for the conditional pass only (shapes: see
                                tiny_dit.model.Attention);
                  "start_latents": the latents the run started from (B, C, T, h, w): the starting noise
                                (noise level 1), or for an edit the clip noised to its first level;
                  "sigma", "sigma_next", "model_timestep": (B,) float32, the same for every clip: the noise
                                level of this step's input, that of "latents" after it (0 after the last
                                step), and the timestep the transformer was given (1000 * sigma). What a
                                recorder needs, without reading the scheduler's state;
                  "prompt_embeds", "prompt_attention_mask", "pooled_prompt_embeds" and their "negative_"
                                twins: the conditioning of the next step, one row per clip (the
                                negative ones are None while guidance is off).
                Entries of the returned dict named "latents" or after the embeddings replace them for the
                next step (diffusers' convention). Decode latents with `pipe.decode_latents` to watch a
                clip form; set `pipe._guidance_scale` to change the guidance and `pipe._interrupt = True`
                to stop early.
            callback_on_step_end_tensor_inputs: see callback_on_step_end; default ["latents"].
            capture_attention_layers: transformer blocks whose attention maps to capture for the callback;
                default: all of them when the callback asks for "attentions", else none.
            guider: how the conditional and unconditional velocities are mixed, a diffusers guider
                (ClassifierFreeGuidance(guidance_scale=5, stop=0.5), AdaptiveProjectedGuidance(...), ...; see
                tiny_dit.guiders); default: the pipeline's `guider` component. guidance_scale, if given,
                replaces its scale. The run uses a copy: the guider given is left as it was. Its start/stop
                fractions count the steps this run makes (an edit's, from where it starts).
            video: a clip to edit by the prompt (SDEdit; tiny_dit.edit_and_loop), as diffusers' video-to-video
                pipelines take it: a uint8 or [0, 1] float array/tensor (T, H, W, 3) or a list of PIL images.
                num_frames, height and width default to its length and size (and must match it if given;
                sides: multiples of the token size). `latents`, if given, is the noise it is noised with.
            strength: with `video`, how far into the noise the clip goes, in (0, 1] (default
                edit_and_loop.DEFAULT_STRENGTH, 0.7): the run starts at the scheduler's step whose noise
                level is nearest it, from x = (1 - s) x0 + s noise at that level s (with shift 1, about
                strength x num_inference_steps steps run; edit_and_loop.edit_schedule says how many). Low keeps
                more of the clip, 1 keeps nothing (text-to-video).
            loop: make clips whose last frame leads into the first as smoothly as any two neighbouring
                frames: the outward clip (num_frames // 2 + 1 frames) is sampled and the way back is its
                frames in reverse (tiny_dit.edit_and_loop: why there and back). num_frames defaults to twice
                the trained length less 2 (30 for the bundle): a way out as long as the clips it learned.
                Not with video or conditions.

        Returns:
            TinyDiTPipelineOutput with `.frames` (see output_type), num_frames of them per clip (latents
            too), or (frames,) if not return_dict.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        given_embeddings = dict(zip(PROMPT_EMBEDDING_NAMES + NEGATIVE_EMBEDDING_NAMES, (
            prompt_embeds, prompt_attention_mask, pooled_prompt_embeds,
            negative_prompt_embeds, negative_prompt_attention_mask, negative_pooled_prompt_embeds)))

        # 0. Sizes: from the clip to edit, else the given latents, else the transformer's training size.
        complete = self.vae is not None and self.transformer is not None  # else check_inputs says what is missing
        default_frames, default_height, default_width = self.default_size() if complete else (None, None, None)
        if torch.is_tensor(latents) and latents.dim() == 5 and complete and not loop:
            ds = self.vae_scale_factor
            default_frames, default_height, default_width = (
                latents.shape[2], latents.shape[3] * ds, latents.shape[4] * ds)
        if video is not None:
            video = video_frames(video)  # uint8 (T, H, W, 3); a ValueError naming `video` if it is none
            default_frames, default_height, default_width = video.shape[:3]
        if loop and default_frames is not None:  # by default a loop's way out is as long as a trained clip
            default_frames = loop_num_frames(default_frames)
        num_frames = default_frames if num_frames is None else num_frames
        height = default_height if height is None else height
        width = default_width if width is None else width

        # 1. Check everything before any work is done. The run's guider is a copy of the given (or the
        #    pipeline's) one at the run's guidance scale: guiders keep the state of a run.
        if guider is not None:
            check_guider(guider)
        guider = guider if guider is not None else self.default_guider
        guidance_scale = guider.guidance_scale if guidance_scale is None else guidance_scale
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        self._guider = None  # the previous run's: do_classifier_free_guidance reads it
        self.check_inputs(prompt, negative_prompt, num_inference_steps, guidance_scale, num_videos_per_prompt,
                          num_frames, height, width, generator, output_type, callback_on_step_end_tensor_inputs,
                          capture_attention_layers, **given_embeddings, conditions=conditions, video=video,
                          strength=strength, loop=loop)
        self._guidance_scale = guidance_scale
        self._guider = guider_for_run(guider, guidance_scale)
        self._interrupt = False
        self._current_timestep = None
        device = self._execution_device
        num_prompts = len(prompt) if isinstance(prompt, (list, tuple)) else (
            1 if prompt_embeds is None else prompt_embeds.shape[0])
        batch_size = num_prompts * num_videos_per_prompt

        # 2. Starting noise, at noise level 1: (B, C, T, h, w), T = num_frames rounded up to whole tubelets.
        #    A loop samples its outward clip (edit_and_loop: there and back), and makes the way back at step 6.
        sampled_frames = outward_num_frames(num_frames) if loop else num_frames
        latents = self.prepare_latents(batch_size, sampled_frames, height, width, generator, device, latents)
        noise = latents  # the known frames are held on the line from this noise to their clean latents

        # 2b. Known frames, encoded once: (1, C, T, h, w) latents and a (1, 1, T, 1, 1) mask (see conditions.py).
        # A model trained with known frames (TinyDiT known_frames_input) is also given them, clean.
        known: KnownFrames | None = None
        known_inputs = {}
        if conditions:
            placed = place_conditions(conditions, num_frames, height, width)
            known = encode_known_frames(self.vae, placed, latents.shape[2], device)
            if self.transformer.config.known_frames_input:
                known_inputs = {"known_latents": known.latents, "known_mask": known.mask}

        # 3. Text conditioning, one row per clip (the unconditional one only for CFG).
        embeddings = dict(zip(PROMPT_EMBEDDING_NAMES + NEGATIVE_EMBEDDING_NAMES, self.encode_prompt(
            prompt, negative_prompt, self.do_classifier_free_guidance, num_videos_per_prompt, device=device,
            **given_embeddings)))

        # 4. Noise levels 1, 1 - 1/N, ..., 1/N (the scheduler appends the final 0), as in euler_sample
        #    and the SD3/Flux pipelines (DPM-Solver++ and Heun: their own flow grids, see
        #    set_flow_timesteps). One timestep per transformer pass: Heun repeats them (2 passes a step).
        timesteps = set_flow_timesteps(self.scheduler, num_inference_steps, device)
        num_train_timesteps = self.scheduler.config.num_train_timesteps

        # 4b. Editing a clip (SDEdit, edit_and_loop): start at the step whose noise level is nearest
        #     strength, from the clip noised to that level on the forward process, x = (1 - s) x0 + s noise.
        #     When that is the first step (strength 1) the run starts from the noise itself: text-to-video.
        begin = 0
        if video is not None:
            begin = edit_start_index(self.scheduler, DEFAULT_STRENGTH if strength is None else strength)
            self.scheduler.set_begin_index(begin)
            timesteps = timesteps[begin:]
            if begin > 0:
                clip_latents = encode_video_to_edit(self.vae, video, latents.shape[2], device)  # (1, C, T, h, w)
                latents = add_noise(clip_latents, noise, self.scheduler.sigmas[begin].to(device))
                if known is not None:  # known frames start on their own line, as they are held below
                    latents = hold_known_frames(latents, known, noise, self.scheduler.sigmas[begin])
        start_latents = latents
        self._num_timesteps = len(timesteps)

        # 5. The denoising loop. Whether to guide, and how much, is read at every step (callbacks may
        #    change it); with CFG the transformer sees one batch [uncond; cond] of 2B rows.
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ())
        capture = capture_attention_layers
        if capture is None and callback_on_step_end is not None and "attentions" in tensor_inputs:
            capture = range(self.transformer.config.depth)
        capture = list(capture) if capture else None
        text, text_guided = None, None  # the transformer's text inputs, built when the conditioning changes
        # A scheduler that draws noise in its step (LCM's fresh noise) draws it from the run's generator.
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters \
            else {}
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                self._guider.guidance_scale = self._guidance_scale  # a callback may have changed it
                self._guider.set_state(step=i, num_inference_steps=len(timesteps), timestep=t)
                do_cfg = self.do_classifier_free_guidance
                if do_cfg and embeddings["negative_prompt_embeds"] is None:  # a callback turned guidance on
                    embeddings.update(zip(NEGATIVE_EMBEDDING_NAMES, self._negative_embeddings(
                        negative_prompt, num_prompts, num_videos_per_prompt, device, None)))
                if text is None or text_guided != do_cfg:
                    rows = [embeddings[name] for name in PROMPT_EMBEDDING_NAMES]
                    if do_cfg:
                        rows = [torch.cat([embeddings["negative_" + name], row])
                                for name, row in zip(PROMPT_EMBEDDING_NAMES, rows)]
                    text, text_guided = self.transformer_text_inputs(*rows), do_cfg
                model_input = torch.cat([latents, latents]) if do_cfg else latents  # (2B or B, C, T, h, w)
                # The noise level of latents (Heun too: sigmas repeat with t), and that of the step's output.
                sigma, sigma_next = self.scheduler.sigmas[begin + i], self.scheduler.sigmas[begin + i + 1]
                # The model's timestep is 1000 * sigma. FlowMatch schedulers give it as a float; the multistep
                # ones round it down to an integer (999 for sigma 0.9999), so it is recomputed from sigma.
                model_t = t if t.is_floating_point() else (sigma * num_train_timesteps).to(device)
                output = self.transformer(
                    model_input,  # float32; the transformer casts it to its own dtype
                    timestep=model_t.expand(model_input.shape[0]),
                    capture_attention_layers=capture,
                    **text,
                    **known_inputs,
                )
                v = output.sample.float()
                if do_cfg:
                    v_uncond, v_cond = v.chunk(2)
                    v = self._guider.forward(pred_cond=v_cond, pred_uncond=v_uncond).pred
                pred_x0 = predicted_x0(latents, sigma, v)  # where the straight line through x_t ends at s = 0
                # Euler: x + (s_next - s) v. Every scheduler's output is at noise level sigmas[i + 1].
                latents = self.scheduler.step(v, t, latents, return_dict=False, **step_kwargs)[0]
                if known is not None:  # the known frames, put back at the next noise level (0 after the last step)
                    latents = hold_known_frames(latents, known, noise, sigma_next)

                if callback_on_step_end is not None:
                    rows = latents.shape[0]
                    available = {"latents": latents, "pred_x0": pred_x0, "start_latents": start_latents,
                                 **embeddings, "sigma": sigma.float().to(device).expand(rows),
                                 "sigma_next": sigma_next.float().to(device).expand(rows),
                                 "model_timestep": model_t.float().to(device).expand(rows)}
                    if "attentions" in tensor_inputs:
                        available["attentions"] = {
                            k: (a.chunk(2)[1] if do_cfg else a) for k, a in (output.attentions or {}).items()}
                    callback_kwargs = {k: available[k] for k in tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                    for name in embeddings:
                        if name in callback_outputs and callback_outputs[name] is not embeddings[name]:
                            embeddings[name], text = callback_outputs[name], None
                progress_bar.update()
        self._current_timestep = None

        # 6. Latents -> frames, in diffusers' layouts; the frames sampled beyond num_frames are cut. A loop is
        #    its outward clip and the way back, the same frames in reverse (frame by frame, so in latent space).
        latents = latents[:, :, :sampled_frames]  # (B, C, sampled_frames, h, w)
        if loop:
            latents = there_and_back(latents, num_frames)  # (B, C, num_frames, h, w)
        if output_type == "latent":
            frames = latents
        else:
            frames = self.decode_latents(latents)  # (B, T, H, W, 3) float in [0, 1]
            if output_type == "np":
                frames = frames.numpy()
            elif output_type == "pt":
                frames = frames.permute(0, 1, 4, 2, 3).contiguous()  # (B, T, 3, H, W)
            else:  # "pil"
                frames = [VaeImageProcessor.numpy_to_pil(clip) for clip in frames.numpy()]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return TinyDiTPipelineOutput(frames=frames)


def _is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set now."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or now
