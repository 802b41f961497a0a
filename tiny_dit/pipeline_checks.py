"""The checks of everything `TinyDiTPipeline.__call__` is given, before any work is done (a part of
the pipeline, mixed into TinyDiTPipeline): each wrong argument is a ValueError that names it and
says what it accepts. The app calls `pipe.check_inputs` alone to check a request up front.
"""

import math

import numpy as np
import torch

from tiny_dit.conditions import place_conditions
from tiny_dit.edit_and_loop import video_frames
from tiny_dit.flow import is_guided
from tiny_dit.pipeline_prompts import PROMPT_EMBEDDING_NAMES
from tiny_dit.schedulers import check_flow_scheduler

MAX_NUM_INFERENCE_STEPS = 200
MAX_GUIDANCE_SCALE = 30.0
MAX_VIDEOS = 36  # per call: prompts x num_videos_per_prompt
# 4x the bundled model's training length; attention's cost grows with the square of the tokens.
MAX_NUM_FRAMES = 64
OUTPUT_TYPES = ("np", "pt", "pil", "latent")  # diffusers' video layouts, see TinyDiTPipelineOutput


class InputChecksMixin:
    """TinyDiTPipeline's checks of a call's arguments; reads the pipeline's components, its
    vae_scale_factor and its _callback_tensor_inputs."""

    def check_inputs(self, prompt, negative_prompt, num_inference_steps, guidance_scale, num_videos_per_prompt,
                     num_frames, height, width, generator, output_type, callback_on_step_end_tensor_inputs,
                     capture_attention_layers, prompt_embeds=None, prompt_attention_mask=None,
                     pooled_prompt_embeds=None, negative_prompt_embeds=None, negative_prompt_attention_mask=None,
                     negative_pooled_prompt_embeds=None, conditions=None, video=None, strength=None,
                     loop=False) -> None:
        """Raise a ValueError that says what is wrong with the arguments of __call__."""
        missing = [name for name in ("transformer", "vae", "scheduler") if getattr(self, name, None) is None]
        if missing:
            raise ValueError(f"this pipeline has no {' or '.join(missing)} to generate with (built to encode "
                             "prompts only? use encode_prompt, and pass its output to a full pipeline)")
        check_flow_scheduler(self.scheduler)
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either prompt or prompt_embeds, not both (prompt_embeds replace the prompts)")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass either negative_prompt or negative_prompt_embeds, not both")
        if prompt_embeds is not None:
            num_prompts = self._check_embeddings("", prompt_embeds, prompt_attention_mask, pooled_prompt_embeds)
        elif isinstance(prompt, str):
            num_prompts = 1
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
            num_prompts = len(prompt)
        else:
            raise ValueError(f"prompt must be a string or a non-empty list of strings (or pass prompt_embeds), "
                             f"got {prompt!r:.100}")
        if prompt_embeds is None and (prompt_attention_mask is not None or pooled_prompt_embeds is not None):
            raise ValueError("prompt_attention_mask and pooled_prompt_embeds come with prompt_embeds: pass all three")
        if negative_prompt_embeds is not None:
            rows = self._check_embeddings("negative_", negative_prompt_embeds, negative_prompt_attention_mask,
                                          negative_pooled_prompt_embeds)
            if prompt_embeds is not None:
                for name, neg, pos in zip(PROMPT_EMBEDDING_NAMES,
                                          (negative_prompt_embeds, negative_prompt_attention_mask,
                                           negative_pooled_prompt_embeds),
                                          (prompt_embeds, prompt_attention_mask, pooled_prompt_embeds)):
                    if neg.shape != pos.shape:
                        raise ValueError(f"negative_{name} must have the shape of {name}, {tuple(pos.shape)}, "
                                         f"got {tuple(neg.shape)}")
            elif rows != num_prompts:
                raise ValueError(f"negative_prompt_embeds has {rows} rows but there are {num_prompts} prompts: "
                                 "pass one row per prompt")
        elif negative_prompt_attention_mask is not None or negative_pooled_prompt_embeds is not None:
            raise ValueError("negative_prompt_attention_mask and negative_pooled_prompt_embeds come with "
                             "negative_prompt_embeds: pass all three")
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
        p = self.transformer.config.patch_size
        ds = self.vae_scale_factor
        self._check_edit_and_loop(video, strength, loop, conditions, num_frames, height, width, ds * p)
        if not _is_int(num_frames) or not 1 <= num_frames <= MAX_NUM_FRAMES:
            raise ValueError(f"num_frames must be an integer from 1 (an image) to {MAX_NUM_FRAMES}, "
                             f"got {num_frames!r}")
        for name, value in (("height", height), ("width", width)):
            if not _is_int(value) or value < ds * p or value % (ds * p):
                raise ValueError(
                    f"{name} must be a positive multiple of {ds * p} pixels (autoencoder downsampling {ds} x "
                    f"transformer patch_size {p}), got {value!r}")
        generators = generator if isinstance(generator, list) else [generator]
        if not all(g is None or isinstance(g, torch.Generator) for g in generators):
            raise ValueError(f"generator must be a torch.Generator, a list of them or None, got {generator!r:.100} "
                             "(for a seed, pass torch.Generator().manual_seed(seed))")
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
        if (prompt_embeds is not None or negative_prompt_embeds is not None) and self.transformer is not None:
            widths = (self.transformer.config.text_embed_dim, self.transformer.config.pooled_embed_dim)
            for prefix, embeds, pooled in (("", prompt_embeds, pooled_prompt_embeds),
                                           ("negative_", negative_prompt_embeds, negative_pooled_prompt_embeds)):
                if embeds is not None and (embeds.shape[-1], pooled.shape[-1]) != widths:
                    raise ValueError(
                        f"{prefix}prompt_embeds and {prefix}pooled_prompt_embeds must be {widths[0]} and "
                        f"{widths[1]} wide (the transformer's text_embed_dim and pooled_embed_dim), got "
                        f"{embeds.shape[-1]} and {pooled.shape[-1]}: were they encoded with this model's CLIP?")
        if prompt_embeds is None and (self.text_encoder is None or self.tokenizer is None):
            raise ValueError("this pipeline has no text_encoder or tokenizer to encode the prompt with: pass "
                             "prompt_embeds, prompt_attention_mask and pooled_prompt_embeds (from encode_prompt)")
        if conditions is not None:
            place_conditions(conditions, num_frames, height, width)  # raises for a condition that does not fit
        if is_guided(guidance_scale) and negative_prompt_embeds is None and (
                self.text_encoder is None or self.tokenizer is None):
            raise ValueError("guidance_scale > 1 needs an unconditional input and this pipeline has no text_encoder "
                             "to embed the empty prompt: pass negative_prompt_embeds, negative_prompt_attention_mask "
                             "and negative_pooled_prompt_embeds (from encode_prompt), or guidance_scale=1")

    @staticmethod
    def _check_edit_and_loop(video, strength, loop, conditions, num_frames, height, width, side) -> None:
        """The clip to edit (video, strength) and loop (tiny_dit.edit_and_loop)."""
        if not isinstance(loop, (bool, np.bool_)):
            raise ValueError(f"loop must be True or False, got {loop!r:.100}")
        if loop:
            if video is not None or conditions:
                raise ValueError("loop=True makes a clip of its own (an outward clip and the way back): it takes no "
                                 f"{'video' if video is not None else 'conditions'}. To loop a given clip, play it "
                                 "forwards then backwards (tiny_dit.edit_and_loop.there_and_back)")
            if _is_int(num_frames) and num_frames < 2:
                raise ValueError(f"a loop needs num_frames of at least 2 (an image does not move), got {num_frames}")
        if video is None:
            if strength is not None:
                raise ValueError("strength goes with video (how far into the noise the clip to edit goes): pass "
                                 "video=clip too, or leave strength out")
            return
        number = isinstance(strength, (int, float, np.integer, np.floating)) and not isinstance(strength, bool)
        if strength is not None and not (number and math.isfinite(strength) and 0 < strength <= 1):
            raise ValueError(f"strength must be a number in (0, 1]: how far into the noise the clip goes (1 = all "
                             f"the way: text-to-video), got {strength!r:.100}")
        frames = video_frames(video)  # uint8 (T, H, W, 3), or a ValueError naming `video`
        length, clip_height, clip_width = frames.shape[:3]
        if clip_height % side or clip_width % side:
            raise ValueError(f"video frames are {clip_width}x{clip_height} (width x height): this model takes sides "
                             f"that are multiples of {side} px; resize the clip")
        if (clip_height, clip_width) != (height, width):
            raise ValueError(f"video frames are {clip_width}x{clip_height} (width x height) but height and width ask "
                             f"for {width}x{height}: leave height and width out (the clip's size is the default), "
                             "or resize the clip")
        if length > MAX_NUM_FRAMES:
            raise ValueError(f"video has {length} frames; at most {MAX_NUM_FRAMES} can be edited")
        if length != num_frames:
            raise ValueError(f"video has {length} frames but num_frames is {num_frames}: leave num_frames out (the "
                             "clip's length is the default), or cut the clip")

    @staticmethod
    def _check_embeddings(prefix: str, embeds, mask, pooled) -> int:
        """Check one set of prompt embeddings (as encode_prompt returns them); return its number of rows."""
        names = [prefix + name for name in PROMPT_EMBEDDING_NAMES]
        missing = [name for name, t in zip(names, (embeds, mask, pooled)) if t is None]
        if missing:
            raise ValueError(f"{names[0]} needs {' and '.join(missing)} too (encode_prompt returns all three)")
        for name, t, dims in zip(names, (embeds, mask, pooled), (3, 2, 2)):
            if not torch.is_tensor(t) or t.dim() != dims:
                raise ValueError(f"{name} must be a {dims}-D tensor, got "
                                 f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        rows = embeds.shape[0]
        if rows < 1 or tuple(mask.shape) != tuple(embeds.shape[:2]) or pooled.shape[0] != rows:
            raise ValueError(f"{names[0]} (B, L, W) {tuple(embeds.shape)}, {names[1]} (B, L) {tuple(mask.shape)} "
                             f"and {names[2]} (B, E) {tuple(pooled.shape)} do not fit together")
        return rows


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
