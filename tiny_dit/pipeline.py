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
    scheduler     diffusers' FlowMatchEulerDiscreteScheduler: the Euler steps

Generation, step by step (`__call__`):
  1. encode the prompts, and for classifier-free guidance (CFG) the negative
     prompts (default: the empty prompt, which the model learned through
     label dropout);
  2. draw Gaussian noise x at noise level s = 1, in latent space;
  3. for each noise level s_i of the schedule (1, 1 - 1/N, ..., 1/N):
        v  = transformer(x, 1000 * s_i, text)                 one batched pass on [uncond; cond]
        v  = v_uncond + guidance_scale * (v_cond - v_uncond)  (CFG)
        x0 = x - s_i * v                                      the current guess of the clean clip
        x  = x + (s_{i+1} - s_i) * v                          the scheduler's Euler step
  4. decode the final latents to frames with the autoencoder.

To watch a clip form, ask the step callback for the current guess of the clean clip:

    def show(pipe, i, t, kw):
        frames = pipe.decode_latents(kw["pred_x0"])        # (B, T, H, W, 3) in [0, 1]
        ...                                               # kw["attentions"][block]: attention maps
        return {}

    pipe(prompt, callback_on_step_end=show, callback_on_step_end_tensor_inputs=["pred_x0", "attentions"],
         capture_attention_layers=[0])

With the default scheduler (shift=1) this is exactly `tiny_dit.flow.euler_sample`,
the teaching sampler; the pipeline adds input checks, batching over prompts,
seeds, callbacks and decoding.

model_index.json names each component's class by the module that defines it,
e.g. ["tiny_dit.model", "TinyDiT"]. diffusers only looks such modules up among
those already imported (it will not import code a folder names), and this
module imports all of them, so `TinyDiTPipeline.from_pretrained` always works.
"""

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from tiny_dit.autoencoder import decode_latents as decode_to_frames
from tiny_dit.autoencoder import spatial_downsample
from tiny_dit.model import TinyDiT
from tiny_dit.text_encoder import CLIPEncoder, OpenCLIPTokenizer

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

DEFAULT_NUM_INFERENCE_STEPS = 20  # Euler steps; rectified flow paths are nearly straight, so few suffice
DEFAULT_GUIDANCE_SCALE = 5.0  # same default as tiny_dit.flow.euler_sample
MAX_NUM_INFERENCE_STEPS = 200
MAX_GUIDANCE_SCALE = 30.0
MAX_VIDEOS = 36  # per call: prompts x num_videos_per_prompt
OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class TinyDiTPipelineOutput(BaseOutput):
    """Output of `TinyDiTPipeline`.

    frames: the generated clips. output_type="np": float32 numpy array (batch, frames, height, width, 3)
        in [0, 1]; "pt": the same as a torch tensor; "latent": the latents (batch, C, T, h, w).
    """

    frames: np.ndarray | torch.Tensor


class TinyDiTPipeline(DiffusionPipeline):
    """Text-to-video with TinyDiT. See the module docstring for the algorithm.

    Args:
        vae: autoencoder between frames and (normalised) latents.
        text_encoder: CLIP that conditions the transformer.
        tokenizer: CLIP's tokenizer.
        transformer: the TinyDiT velocity model.
        scheduler: a FlowMatchEulerDiscreteScheduler (shift=1.0 reproduces the training noise levels).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    # What `callback_on_step_end` may ask for (see __call__).
    _callback_tensor_inputs = ["latents", "pred_x0", "attentions"]

    def __init__(
        self,
        vae: AutoencoderTiny | AutoencoderKL,
        text_encoder: CLIPEncoder,
        tokenizer: OpenCLIPTokenizer,
        transformer: TinyDiT,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ):
        super().__init__()
        # vae first: with no component on an accelerator, pipe.device is that of the first registered one.
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, scheduler=scheduler
        )

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
                    "`python -m tiny_dit.train` (it writes <out>/pipeline/) or save one with "
                    "TinyDiTPipeline.save_pretrained.")
            return super().from_pretrained(name, **kwargs)
        if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1:
            raise OSError(
                f"no pipeline folder at {name!r}. Pass a folder written by TinyDiTPipeline.save_pretrained "
                "(python -m tiny_dit.train writes <out>/pipeline/) or a Hub repo id such as 'org/name'.")
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
                "folder of python -m tiny_dit.train)."
            ) from error

    # -- sizes --------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel along each side."""
        return spatial_downsample(self.vae)

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
        cond, _ = self.encode_prompt([""] * batch_size, do_classifier_free_guidance=False, device=self.device)
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
        # nn.Module.to, not ModelMixin.to: diffusers' version warns about modules "that should be
        # kept in float32: []" on every cast, even when there are none (diffusers 0.42).
        for model in (self.transformer, self.vae):
            torch.nn.Module.to(model, dtype)
        return dtype

    # -- prompts ------------------------------------------------------------------

    @torch.no_grad()
    def _embed(self, prompts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """CLIP embeddings as the transformer's keyword arguments."""
        emb = self.text_encoder.encode_text(self.tokenizer(prompts))
        dtype = self.transformer.dtype
        return {
            "encoder_hidden_states": emb.hidden_states.to(device, dtype),  # (B, L, W)
            "pooled_projections": emb.pooled.to(device, dtype),  # (B, E)
            "encoder_attention_mask": emb.mask.to(device),  # (B, L) bool
        }

    def encode_prompt(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_videos_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        device: torch.device | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Text conditioning for B = len(prompts) * num_videos_per_prompt clips.

        Returns (cond, uncond): dicts of transformer keyword arguments (encoder_hidden_states
        (B, L, W), pooled_projections (B, E), encoder_attention_mask (B, L)), each prompt repeated
        num_videos_per_prompt times in a row. `uncond` embeds the negative prompts, or the empty
        prompt "" when negative_prompt is None; it is None without classifier-free guidance.
        """
        device = device or self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n = num_videos_per_prompt
        cond = {k: v.repeat_interleave(n, dim=0) for k, v in self._embed(prompts, device).items()}
        if not do_classifier_free_guidance:
            return cond, None
        if negative_prompt is None:
            empty = self._embed([""], device)  # one empty-prompt embedding for every clip
            uncond = {k: v.expand(len(prompts) * n, *v.shape[1:]) for k, v in empty.items()}
        else:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            uncond = {k: v.repeat_interleave(n, dim=0) for k, v in self._embed(negatives, device).items()}
        return cond, uncond

    # -- latents --------------------------------------------------------------------

    def prepare_latents(self, batch_size: int, num_frames: int, height: int, width: int,
                        generator, device: torch.device, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Starting noise (B, C, T, h, w) at noise level 1, float32, from `generator`."""
        ds = self.vae_scale_factor
        shape = (batch_size, self.transformer.config.in_channels, num_frames, height // ds, width // ds)
        if latents is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        if not torch.is_tensor(latents) or tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (videos, C, frames, height/{ds}, width/{ds}), "
                             f"got {tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__}")
        return latents.to(device, torch.float32)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, T, h, w) -> float frames (B, T, H, W, 3) in [0, 1], on the CPU."""
        return decode_to_frames(self.vae, latents)

    # -- checks ---------------------------------------------------------------------

    def check_inputs(self, prompt, negative_prompt, num_inference_steps, guidance_scale, num_videos_per_prompt,
                     num_frames, height, width, generator, output_type, callback_on_step_end_tensor_inputs,
                     capture_attention_layers) -> None:
        """Raise a ValueError that says what is wrong with the arguments of __call__."""
        if isinstance(prompt, str):
            num_prompts = 1
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
            num_prompts = len(prompt)
        else:
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r:.100}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            if not (isinstance(negative_prompt, (list, tuple)) and all(isinstance(p, str) for p in negative_prompt)):
                raise ValueError(f"negative_prompt must be None, a string or a list of strings, "
                                 f"got {negative_prompt!r:.100}")
            if len(negative_prompt) != num_prompts:
                raise ValueError(f"negative_prompt has {len(negative_prompt)} entries but there are "
                                 f"{num_prompts} prompts: pass one negative prompt per prompt, or a single string")
        if not _is_int(num_inference_steps) or not 1 <= num_inference_steps <= MAX_NUM_INFERENCE_STEPS:
            raise ValueError(f"num_inference_steps must be an integer from 1 to {MAX_NUM_INFERENCE_STEPS}, "
                             f"got {num_inference_steps!r}")
        if (isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
                or not math.isfinite(guidance_scale) or not 0 <= guidance_scale <= MAX_GUIDANCE_SCALE):
            raise ValueError(f"guidance_scale must be a finite number from 0 to {MAX_GUIDANCE_SCALE:g} "
                             f"(1 = no guidance), got {guidance_scale!r}")
        if not _is_int(num_videos_per_prompt) or not 1 <= num_videos_per_prompt <= MAX_VIDEOS:
            raise ValueError(f"num_videos_per_prompt must be an integer from 1 to {MAX_VIDEOS}, "
                             f"got {num_videos_per_prompt!r}")
        total = num_prompts * num_videos_per_prompt
        if total > MAX_VIDEOS:
            raise ValueError(f"{num_prompts} prompts x {num_videos_per_prompt} videos per prompt = {total} videos; "
                             f"at most {MAX_VIDEOS} per call")
        pt, p = self.transformer.config.patch_size_t, self.transformer.config.patch_size
        ds = self.vae_scale_factor
        if not _is_int(num_frames) or num_frames < pt or num_frames % pt:
            raise ValueError(f"num_frames must be a positive multiple of the transformer's patch_size_t={pt}, "
                             f"got {num_frames!r}")
        for name, value in (("height", height), ("width", width)):
            if not _is_int(value) or value < ds * p or value % (ds * p):
                raise ValueError(
                    f"{name} must be a positive multiple of {ds * p} pixels (autoencoder downsampling {ds} x "
                    f"transformer patch_size {p}), got {value!r}")
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(f"got a list of {len(generator)} generators for {total} videos: pass one per video "
                             "or a single generator")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        unknown = [k for k in callback_on_step_end_tensor_inputs or () if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only contain {self._callback_tensor_inputs}, "
                             f"got {unknown}")
        depth = self.transformer.config.depth
        if capture_attention_layers is not None:
            if not isinstance(capture_attention_layers, (list, tuple)) or not all(
                    _is_int(i) and 0 <= i < depth for i in capture_attention_layers):
                raise ValueError(f"capture_attention_layers must be a list of block indices from 0 to {depth - 1}, "
                                 f"got {capture_attention_layers!r}")
        if "attentions" in (callback_on_step_end_tensor_inputs or ()) and not capture_attention_layers:
            raise ValueError("the callback asks for 'attentions': pass capture_attention_layers=[...] to say which "
                             "blocks' attention maps to capture")

    # -- generation -----------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        num_videos_per_prompt: int = 1,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        capture_attention_layers: list[int] | None = None,
    ) -> TinyDiTPipelineOutput | tuple:
        """Generate clips for one or more prompts.

        Args:
            prompt: a prompt or a list of prompts.
            negative_prompt: replaces the empty prompt as the unconditional input of classifier-free
                guidance: a string for all prompts, or a list with one per prompt.
            num_inference_steps: Euler steps, 1 to 200.
            guidance_scale: classifier-free guidance weight w, 0 to 30: v = v_uncond + w (v_cond - v_uncond).
                w <= 1 turns guidance off (diffusers' convention): the conditional model alone, one pass
                per step instead of two, and negative_prompt is not used.
            num_videos_per_prompt: clips per prompt (at most 36 clips per call in all).
            num_frames, height, width: clip size in pixels; default: what the transformer was trained on.
                Frames must be a multiple of the transformer's patch_size_t, height and width of the
                autoencoder's downsampling times the transformer's patch_size.
            generator: a torch.Generator (or one per clip) for the starting noise: the same seed gives
                the same clips. Without one, the global torch RNG is used.
            latents: starting noise (videos, C, T, h, w) instead of drawing it.
            output_type: "np" (numpy float frames), "pt" (torch float frames) or "latent" (no decoding).
            return_dict: return a TinyDiTPipelineOutput, or a tuple (frames,).
            callback_on_step_end: `fn(pipe, step_index, timestep, callback_kwargs) -> dict`, called after
                every step. callback_kwargs holds the entries named in callback_on_step_end_tensor_inputs:
                  "latents":    x after this step, (B, C, T, h, w) float32, at noise level
                                pipe.scheduler.sigmas[step_index + 1] (0 after the last step);
                  "pred_x0":    the clean latents predicted at this step, x_t - sigma_t * v (guided v),
                                where x_t is the input of the step and sigma_t = timestep / 1000;
                  "attentions": {block: attention probabilities} of the blocks in capture_attention_layers,
                                for the conditional pass only (shapes: see tiny_dit.model.Attention).
                A "latents" entry in the returned dict replaces the latents (diffusers' convention).
                Decode latents with `pipe.decode_latents` to watch a clip form.
            callback_on_step_end_tensor_inputs: see callback_on_step_end; default ["latents"].
            capture_attention_layers: transformer blocks whose attention maps to capture for the callback.

        Returns:
            TinyDiTPipelineOutput with `.frames` (see output_type), or (frames,) if not return_dict.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 0. Sizes: from the given latents, else the transformer's training size.
        default_frames, default_height, default_width = self.default_size()
        if torch.is_tensor(latents) and latents.dim() == 5:
            ds = self.vae_scale_factor
            default_frames, default_height, default_width = (
                latents.shape[2], latents.shape[3] * ds, latents.shape[4] * ds)
        num_frames = default_frames if num_frames is None else num_frames
        height = default_height if height is None else height
        width = default_width if width is None else width

        # 1. Check everything before any work is done.
        self.check_inputs(prompt, negative_prompt, num_inference_steps, guidance_scale, num_videos_per_prompt,
                          num_frames, height, width, generator, output_type, callback_on_step_end_tensor_inputs,
                          capture_attention_layers)
        device = self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch_size = len(prompts) * num_videos_per_prompt
        do_cfg = guidance_scale > 1.0

        # 2. Starting noise, at noise level 1.
        latents = self.prepare_latents(batch_size, num_frames, height, width, generator, device, latents)

        # 3. Text conditioning; with CFG one batch [uncond; cond] of 2B rows.
        cond, uncond = self.encode_prompt(prompts, negative_prompt, num_videos_per_prompt, do_cfg, device)
        model_kwargs = {k: torch.cat([uncond[k], v]) for k, v in cond.items()} if do_cfg else cond

        # 4. Noise levels 1, 1 - 1/N, ..., 1/N (the scheduler appends the final 0), as in euler_sample
        #    and the SD3/Flux pipelines. The scheduler's timesteps are the model's: 1000 * sigma.
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        self.scheduler.set_timesteps(num_inference_steps, device=device, sigmas=sigmas)
        self.scheduler.set_begin_index(0)
        timesteps = self.scheduler.timesteps

        # 5. The denoising loop.
        capture = list(capture_attention_layers) if capture_attention_layers else None
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents, latents]) if do_cfg else latents  # (2B or B, C, T, h, w)
                output = self.transformer(
                    model_input,  # float32; the transformer casts it to its own dtype
                    timestep=t.expand(model_input.shape[0]),
                    capture_attention_layers=capture,
                    **model_kwargs,
                )
                v = output.sample.float()
                if do_cfg:
                    v_uncond, v_cond = v.chunk(2)
                    v = v_uncond + guidance_scale * (v_cond - v_uncond)
                sigma = self.scheduler.sigmas[i]
                pred_x0 = latents - sigma * v  # where the straight line through x_t ends at s = 0
                latents = self.scheduler.step(v, t, latents, return_dict=False)[0]  # x + (s_next - s) v

                if callback_on_step_end is not None:
                    available = {"latents": latents, "pred_x0": pred_x0}
                    if capture:
                        available["attentions"] = {
                            k: (a.chunk(2)[1] if do_cfg else a) for k, a in output.attentions.items()}
                    callback_kwargs = {k: available[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                progress_bar.update()

        # 6. Latents -> frames.
        if output_type == "latent":
            frames = latents
        else:
            frames = self.decode_latents(latents)  # (B, T, H, W, 3) float in [0, 1]
            if output_type == "np":
                frames = frames.numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return TinyDiTPipelineOutput(frames=frames)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set now."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or now
