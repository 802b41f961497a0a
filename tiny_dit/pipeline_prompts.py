"""How TinyDiTPipeline turns prompts into what the transformer reads (a part of the pipeline,
mixed into TinyDiTPipeline): CLIP's token states, their mask and the pooled embedding, one row per
clip, and for classifier-free guidance the unconditional input (the negative prompts, or the empty
prompt the model learned through label dropout).

Like diffusers' SD3, LTX and Wan pipelines, `encode_prompt` returns the six embeddings under the
names `__call__` takes them, so prompts can be encoded once and reused, or encoded in a pipeline
that holds only the text encoder:

    embeds = pipe.encode_prompt(["a red circle moving left on a black background"])
    pipe(**dict(zip(PROMPT_EMBEDDING_NAMES + NEGATIVE_EMBEDDING_NAMES, embeds)))
"""

import torch

from tiny_dit.text_encoder import text_context

# The prompt embeddings __call__ takes and encode_prompt returns, in encode_prompt's order.
PROMPT_EMBEDDING_NAMES = ("prompt_embeds", "prompt_attention_mask", "pooled_prompt_embeds")
NEGATIVE_EMBEDDING_NAMES = tuple(f"negative_{name}" for name in PROMPT_EMBEDDING_NAMES)


class PromptEncodingMixin:
    """TinyDiTPipeline's prompt encoding; reads the pipeline's text_encoder, tokenizer and
    _execution_device."""

    @torch.no_grad()
    def _encode_text(self, prompts: list[str], device: torch.device,
                     dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CLIP's token states (B, L, W), their mask (B, L) and pooled embedding (B, E), one row per prompt;
        for a transformer with word_embeddings the states and then the words' embeddings (B, 2L, W).

        Reads only the text encoder and tokenizer (not the transformer's dtype), so that a pipeline
        holding just those two can encode prompts for another one to sample from (one without a
        transformer gives the states alone: encode for a word_embeddings model in a pipeline that has it)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this pipeline has no text_encoder or tokenizer to encode prompts with: pass "
                             "prompt_embeds, prompt_attention_mask and pooled_prompt_embeds (from encode_prompt "
                             "in a pipeline that has them) instead, and negative_prompt_embeds, "
                             "negative_prompt_attention_mask and negative_pooled_prompt_embeds for guidance")
        emb = self.text_encoder.encode_text(self.tokenizer(prompts))
        dtype = dtype or emb.hidden_states.dtype  # the text encoder's; the transformer casts to its own
        # A transformer that reads the words' own embeddings gets them after the states (TinyDiT word_embeddings).
        transformer = getattr(self, "transformer", None)
        with_words = transformer is not None and transformer.config.get("word_embeddings", False)
        context, mask = text_context(emb.hidden_states, emb.mask, emb.word_embeddings, with_words)
        return context.to(device, dtype), mask.to(device), emb.pooled.to(device, dtype)

    def _negative_embeddings(self, negative_prompt: str | list[str] | None, num_prompts: int,
                             num_videos_per_prompt: int, device: torch.device, dtype: torch.dtype | None
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unconditional input of CFG for num_prompts * num_videos_per_prompt clips: the negative
        prompts, or the empty prompt "" (what the model learned through label dropout)."""
        if negative_prompt is None:
            empty = self._encode_text([""], device, dtype)  # one empty-prompt embedding for every clip
            return tuple(e.expand(num_prompts * num_videos_per_prompt, *e.shape[1:]) for e in empty)
        negatives = [negative_prompt] * num_prompts if isinstance(negative_prompt, str) else list(negative_prompt)
        return _repeat(self._encode_text(negatives, device, dtype), num_videos_per_prompt)

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        num_videos_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor | None, ...]:
        """Prompt embeddings for B = len(prompts) * num_videos_per_prompt clips, as diffusers' SD3/LTX
        pipelines return them, to pass back to __call__ under the same names (with prompt=None).

        Returns (prompt_embeds (B, L, W) CLIP token states, prompt_attention_mask (B, L) bool,
        pooled_prompt_embeds (B, E), negative_prompt_embeds, negative_prompt_attention_mask,
        negative_pooled_prompt_embeds), each prompt's rows repeated num_videos_per_prompt times in a
        row. The negative ones embed negative_prompt, or the empty prompt "" when it is None; they are
        None without classifier-free guidance (unless given). Embeddings passed in are used instead of
        encoding (and repeated the same way), so this needs the text encoder only for what is missing;
        it never needs the transformer. dtype: default the text encoder's (the transformer casts them).
        """
        device = device or self._execution_device
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("encode_prompt needs a prompt (or prompt_embeds to repeat), got None")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask, pooled_prompt_embeds = self._encode_text(prompts, device, dtype)
        else:
            prompt_embeds, prompt_attention_mask, pooled_prompt_embeds = _to(
                (prompt_embeds, prompt_attention_mask, pooled_prompt_embeds), device, dtype)
        num_prompts = prompt_embeds.shape[0]
        prompt_embeds, prompt_attention_mask, pooled_prompt_embeds = _repeat(
            (prompt_embeds, prompt_attention_mask, pooled_prompt_embeds), num_videos_per_prompt)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds, negative_prompt_attention_mask, negative_pooled_prompt_embeds = _repeat(_to(
                (negative_prompt_embeds, negative_prompt_attention_mask, negative_pooled_prompt_embeds), device, dtype),
                num_videos_per_prompt)
        elif do_classifier_free_guidance:
            negative_prompt_embeds, negative_prompt_attention_mask, negative_pooled_prompt_embeds = (
                self._negative_embeddings(negative_prompt, num_prompts, num_videos_per_prompt, device, dtype))
        return (prompt_embeds, prompt_attention_mask, pooled_prompt_embeds,
                negative_prompt_embeds, negative_prompt_attention_mask, negative_pooled_prompt_embeds)

    @staticmethod
    def transformer_text_inputs(prompt_embeds: torch.Tensor, prompt_attention_mask: torch.Tensor,
                                pooled_prompt_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prompt embeddings as TinyDiT's keyword arguments (what flow.euler_sample takes as cond/uncond)."""
        return {"encoder_hidden_states": prompt_embeds, "pooled_projections": pooled_prompt_embeds,
                "encoder_attention_mask": prompt_attention_mask}

    def encode_conditioning(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_videos_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        device: torch.device | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """encode_prompt as two dicts of transformer keyword arguments, (cond, uncond), for code that
        calls the transformer itself (flow.euler_sample, benchmarks). `uncond` is None
        without classifier-free guidance."""
        embeds = self.encode_prompt(prompt, negative_prompt, do_classifier_free_guidance, num_videos_per_prompt,
                                    device=device)
        cond = self.transformer_text_inputs(*embeds[:3])
        return cond, (self.transformer_text_inputs(*embeds[3:]) if embeds[3] is not None else None)


def _repeat(tensors: tuple[torch.Tensor, ...], n: int) -> tuple[torch.Tensor, ...]:
    """Each row n times in a row: the clips of one prompt are neighbours, as for prompts."""
    return tuple(t.repeat_interleave(n, dim=0) if n != 1 else t for t in tensors)


def _to(embeddings: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device,
        dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeds, mask, pooled) to the device, the embeddings to dtype if given; the mask becomes bool
    (diffusers' pipelines pass 0/1 integer masks)."""
    embeds, mask, pooled = embeddings
    return embeds.to(device, dtype), mask.to(device).bool(), pooled.to(device, dtype)
