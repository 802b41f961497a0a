"""The CLIP that conditions the DiT: open_clip models, the tiny one trained here or a pretrained one.

The DiT reads text through CLIP's text tower in two (or three) forms:
  * the pooled embedding (one vector per prompt, CLIP's projected end-of-text
    feature), added to the timestep embedding that drives adaLN-Zero;
  * the per-token hidden states (after the final layer norm) with a mask of the
    real tokens, for optional cross-attention;
  * for a DiT with word_embeddings, also each token's own embedding from before
    the text transformer (`text_context` puts the two side by side).
The empty prompt "" is the unconditional input for classifier-free guidance.
CLIP reads at most `context_length` tokens (32 for the tiny CLIP, 77 for
pretrained ones): a longer prompt is truncated, with a warning.
`tokenize(tokenizer, prompt)` says what CLIP read of a prompt (TokenInfo: the
ids, each decoded back to its word piece, whether it was truncated), which the
app's text-path and word-attention views show.

A single frame cannot show motion, so CLIP's image tower sees a clip through
one of two "video views", each a single RGB image made of four frames spread
over the clip:
  * "interleave" (the tiny CLIP): the four frames at half resolution woven
    into one image pixel by pixel, frame k at the pixels (2i + k // 2, 2j + k % 2).
    Every ViT patch then holds the same small region at four moments, so motion
    (an edge that shifts from one moment to the next) is a local pattern the
    patch embedding sees directly, like a tubelet embedding.
  * "storyboard" (pretrained CLIPs): the four frames tiled 2x2 in reading
    order, a picture a pretrained model knows (a comic strip). Motion is then
    a comparison between tiles, which a small ViT trained from scratch learns
    only slowly (measured: direction at chance after 400 steps).

The same class loads the tiny CLIP from `assets/tiny-clip` (open_clip's own
folder layout: open_clip_config.json + open_clip_model.safetensors) or any
open_clip model, e.g. `CLIPEncoder.from_pretrained("ViT-B-32", pretrained="laion2b_s34b_b79k")`
or `"hf-hub:org/repo"` when a network is there. A new tiny CLIP for training is
`CLIPEncoder()` (the config in tiny_dit/configs/tiny-clip-shapes.json).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from open_clip.factory import PreprocessCfg
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from safetensors.torch import load_file, save_file

TINY_CLIP_NAME = "tiny-clip-shapes"
TINY_CLIP_CONFIG = Path(__file__).parent / "configs" / f"{TINY_CLIP_NAME}.json"
open_clip.add_model_config(TINY_CLIP_CONFIG)  # makes "tiny-clip-shapes" a model name open_clip knows

VIEW_FRAMES = 4  # frames of a clip that CLIP's image tower sees
OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


def weights_name(variant: str | None = None) -> str:
    """open_clip_model.safetensors, or open_clip_model.<variant>.safetensors as diffusers names variants."""
    return OPEN_CLIP_WEIGHTS if not variant else OPEN_CLIP_WEIGHTS.replace(".safetensors", f".{variant}.safetensors")


@dataclass
class TextEmbeddings:
    """What the DiT is conditioned on, for a batch of B prompts."""
    pooled: torch.Tensor  # (B, embed_dim): projected end-of-text feature (not normalised)
    hidden_states: torch.Tensor  # (B, L, width): per-token states after the final layer norm
    mask: torch.Tensor  # (B, L) bool: True for real tokens (start, words, end)
    # (B, L, width): each token's own embedding (+ position, through the final layer norm), before the
    # text transformer mixes the words: the same for "star" after any colour. None where not computed.
    word_embeddings: torch.Tensor | None = None


def text_context(hidden_states: torch.Tensor, mask: torch.Tensor, word_embeddings: torch.Tensor | None,
                 with_words: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What a DiT's cross-attention reads, (B, L', width) and its mask (B, L'): CLIP's token states (L' = L),
    or with_words (TinyDiT's word_embeddings) the states followed by the words' embeddings (L' = 2L)."""
    if not with_words:
        return hidden_states, mask
    if word_embeddings is None:
        raise ValueError("this DiT reads the words' embeddings (word_embeddings) and none were given: "
                         "encode the prompts again (CLIPEncoder.encode_text), or rebuild the latent cache")
    return torch.cat([hidden_states, word_embeddings.to(hidden_states)], dim=1), torch.cat([mask, mask], dim=1)


def _four_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 4, 3, H, W) in [0, 1]: four frames spread over the clip."""
    idx = torch.linspace(0, frames.shape[1] - 1, VIEW_FRAMES).round().long()
    return frames[:, idx].permute(0, 1, 4, 2, 3).float() / 255


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def storyboard(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 clips (N, T, H, W, 3) -> float images (N, 3, image_size, image_size) in [0, 1]:
    four frames tiled 2 x 2 in reading order."""
    x = _four_frames(frames)  # (N, 4, 3, H, W)
    top = torch.cat([x[:, 0], x[:, 1]], dim=-1)  # (N, 3, H, 2W)
    bottom = torch.cat([x[:, 2], x[:, 3]], dim=-1)
    return _resize(torch.cat([top, bottom], dim=-2), image_size)  # (N, 3, 2H, 2W) -> resized


def interleave(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 clips (N, T, H, W, 3) -> float images (N, 3, image_size, image_size) in [0, 1]:
    four frames at half size woven together, frame k at pixels (2i + k // 2, 2j + k % 2)."""
    x = _four_frames(frames)  # (N, 4, 3, H, W)
    n = x.shape[0]
    half = _resize(x.flatten(0, 1), image_size // 2).reshape(n, 2, 2, 3, image_size // 2, image_size // 2)
    # (N, a, b, 3, i, j) -> (N, 3, i, a, j, b) -> (N, 3, 2i + a, 2j + b)
    return half.permute(0, 3, 4, 1, 5, 2).reshape(n, 3, image_size, image_size)


VIDEO_VIEWS = {"interleave": interleave, "storyboard": storyboard}


# Both classes below are diffusers ModelMixins so that a DiffusionPipeline can
# register, save and load them as components (diffusers only loads components
# that derive from one of its known base classes). They keep open_clip's own
# formats: the tokenizer is open_clip's, the weights folder is open_clip's.


class OpenCLIPTokenizer(ModelMixin, ConfigMixin):
    """open_clip's tokenizer as a pipeline component (it has no weights, only a config)."""

    @register_to_config
    def __init__(self, context_length: int = 77, hf_tokenizer_name: str | None = None):
        super().__init__()
        # diffusers asks every component for .device/.dtype (pipe.device, pipe.to), which a
        # ModelMixin reads off its first tensor: give the weightless tokenizer an empty one.
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)
        self.tokenizer = (HFTokenizer(hf_tokenizer_name, context_length=context_length)
                          if hf_tokenizer_name else SimpleTokenizer(context_length=context_length))

    @classmethod
    def from_text_cfg(cls, text_cfg: dict) -> "OpenCLIPTokenizer":
        return cls(context_length=text_cfg.get("context_length", 77),
                   hf_tokenizer_name=text_cfg.get("hf_tokenizer_name"))

    def forward(self, prompts: str | list[str]) -> torch.Tensor:
        """Token ids (B, context_length). Prompts longer than the context are truncated
        (CLIP cannot read further), with a warning."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        context = self.config.context_length
        for prompt in prompts:
            n = self.count_tokens(prompt)
            if n is not None and n > context:
                warnings.warn(f"prompt has {n} tokens, CLIP reads {context}: truncated: "
                              f"{prompt[:60]!r}...", stacklevel=3)
        return self.tokenizer(prompts)

    def count_tokens(self, prompt: str) -> int | None:
        """Tokens the whole prompt needs, start + word pieces + end, however long the context is;
        None for a Hugging Face tokenizer (open_clip's HFTokenizer only returns the truncated ids)."""
        encode = getattr(self.tokenizer, "encode", None)  # SimpleTokenizer: BPE ids without start/end
        return None if encode is None else len(encode(prompt)) + 2

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "OpenCLIPTokenizer":
        return cls.from_config(cls.load_config(path, subfolder=kwargs.get("subfolder")))


def _build_open_clip(model_cfg: dict) -> nn.Module:
    """An open_clip CLIP model (random weights) from its config dict."""
    cfg = dict(model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    return (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)


class CLIPEncoder(ModelMixin, ConfigMixin):
    """An open_clip CLIP model (both towers) with the entry points tiny-dit needs.

    Saved and loaded in open_clip's folder layout, so `open_clip.create_model("local-dir:PATH")`
    reads the same folder."""

    @register_to_config
    def __init__(self, model_cfg: dict | None = None, preprocess_cfg: dict | None = None,
                 video_view: str = "interleave", weights_dtype: str = "float32"):
        super().__init__()
        if weights_dtype not in ("float32", "float16"):
            raise ValueError(f"weights_dtype must be 'float32' or 'float16', got {weights_dtype!r}")
        if video_view not in VIDEO_VIEWS:
            raise ValueError(f"video_view must be one of {sorted(VIDEO_VIEWS)}, got {video_view!r}")
        model_cfg = model_cfg or json.loads(TINY_CLIP_CONFIG.read_text())
        self.model = _build_open_clip(model_cfg)
        preprocess = {**asdict(PreprocessCfg()), **(preprocess_cfg or {})}
        open_clip.set_model_preprocess_cfg(self.model, preprocess)
        size = model_cfg["vision_cfg"].get("image_size", 224)
        self.image_size = size[0] if isinstance(size, (list, tuple)) else size
        self.register_buffer("image_mean", torch.tensor(preprocess["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(preprocess["std"]).view(1, 3, 1, 1), persistent=False)
        # Derived from the config (no state of its own): lets encode_text take strings.
        self.tokenizer = OpenCLIPTokenizer.from_text_cfg(model_cfg["text_cfg"])

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, pretrained: str | None = None,
                        subfolder: str | None = None, torch_dtype: torch.dtype | None = None,
                        variant: str | None = None, **kwargs) -> "CLIPEncoder":
        """A folder in open_clip's layout (e.g. assets/tiny-clip, or a pipeline's text_encoder/),
        an open_clip model name with a `pretrained` tag (e.g. "ViT-B-32", "laion2b_s34b_b79k"),
        or "hf-hub:org/repo". Pretrained weights need the Hugging Face Hub. `variant` (e.g. "fp16")
        loads the weights that save_pretrained(variant=...) wrote next to the others."""
        path = Path(name_or_path) / (subfolder or "")
        if path.is_dir():
            if not (path / OPEN_CLIP_CONFIG).is_file():
                raise FileNotFoundError(f"{path} has no {OPEN_CLIP_CONFIG}: not an open_clip model folder")
            weights = path / weights_name(variant)
            if not weights.is_file():
                raise FileNotFoundError(f"{path} has no {weights.name}: saved without variant={variant!r}? "
                                        f"(it has {sorted(p.name for p in path.glob('*.safetensors'))})")
            config = json.loads((path / OPEN_CLIP_CONFIG).read_text())
            # open_clip reads model_cfg and preprocess_cfg; "video_view" is ours (open_clip ignores it).
            encoder = cls(config["model_cfg"], config.get("preprocess_cfg"),
                          config.get("video_view", "storyboard"), config.get("weights_dtype", "float32"))
            encoder.model.load_state_dict(load_file(weights))
        else:
            try:
                model = open_clip.create_model(str(name_or_path), pretrained=pretrained)
            except (OSError, RuntimeError, ValueError) as error:
                raise OSError(
                    f"could not load the CLIP model {name_or_path!r}"
                    f"{f' with weights {pretrained!r}' if pretrained else ''}: {error}. Pretrained "
                    "weights need a network connection to the Hugging Face Hub; offline, pass a "
                    "local folder saved with CLIPEncoder.save_pretrained.") from error
            encoder = cls(open_clip.get_model_config(str(name_or_path)),
                          open_clip.get_model_preprocess_cfg(model), video_view="storyboard")
            encoder.model = model
        if torch_dtype is not None:
            encoder = encoder.to(torch_dtype)
        return encoder.eval()

    def save_pretrained(self, save_directory: str | Path, variant: str | None = None, **kwargs) -> None:
        """Write open_clip's folder layout: open_clip_config.json + open_clip_model.safetensors.

        Weights are stored in `weights_dtype` (the bundled tiny CLIP: float16, half the download;
        loading casts them back to the model's dtype). With `variant` (diffusers' convention, e.g.
        "fp16") they go to open_clip_model.<variant>.safetensors, so that variants saved to one
        folder sit side by side instead of overwriting each other; open_clip itself reads only
        the file without a variant. DiffusionPipeline.save_pretrained passes `variant` on only
        to save methods that name it, hence the explicit argument."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {"model_cfg": self.config.model_cfg or json.loads(TINY_CLIP_CONFIG.read_text()),
                  "preprocess_cfg": open_clip.get_model_preprocess_cfg(self.model),
                  "video_view": self.config.video_view, "weights_dtype": self.config.weights_dtype}
        (out / OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2))
        dtype = getattr(torch, self.config.weights_dtype)
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                 for k, v in self.model.state_dict().items()}
        save_file(state, out / weights_name(variant))

    # -- text -----------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def encode_text(self, prompts: str | list[str] | torch.Tensor) -> TextEmbeddings:
        """Pooled embedding and per-token states for prompts or token ids ("" = unconditional)."""
        model = self.model
        tokens = prompts if torch.is_tensor(prompts) else self.tokenizer(prompts)
        tokens = tokens.to(self.image_mean.device)  # (B, L)
        x = model.token_embedding(tokens) + model.positional_embedding  # (B, L, width)
        words = model.ln_final(x)  # (B, L, width): each word on its own, the same in every caption
        x = model.transformer(x, attn_mask=model.attn_mask)
        hidden = model.ln_final(x)  # (B, L, width)
        eot = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        pooled = hidden[torch.arange(len(tokens), device=tokens.device), eot]  # (B, width)
        proj = model.text_projection
        pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj  # (B, embed_dim)
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None] <= eot[:, None]  # (B, L)
        return TextEmbeddings(pooled=pooled, hidden_states=hidden, mask=mask, word_embeddings=words)

    def text_features(self, prompts: str | list[str]) -> torch.Tensor:
        """Unit-norm CLIP text features (B, embed_dim), for retrieval and CLIP scores."""
        return F.normalize(self.encode_text(prompts).pooled, dim=-1)

    # -- video ----------------------------------------------------------------

    def video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLIP features (N, embed_dim) of uint8 clips (N, T, H, W, 3), seen through
        the model's video view (see the module docstring)."""
        images = VIDEO_VIEWS[self.config.video_view](frames, self.image_size).to(self.image_mean.device)
        images = (images - self.image_mean) / self.image_std
        return F.normalize(self.model.encode_image(images), dim=-1)

    @torch.no_grad()
    def clip_score(self, frames: torch.Tensor, prompts: str | list[str]) -> torch.Tensor:
        """Cosine similarity (N,) of each clip with its prompt (a single prompt is broadcast)."""
        video = self.video_features(frames)
        text = self.text_features(prompts)
        return (video * text).sum(-1)


# ----------------------------------------------------------------------------
# What CLIP read of a prompt
# ----------------------------------------------------------------------------


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


def tokenize(tokenizer: OpenCLIPTokenizer, prompt: str) -> tuple[TokenInfo, list[str]]:
    """Token ids of the prompt as CLIP reads them, each decoded, and the tokenizer's warnings
    (it warns when the prompt is longer than CLIP's context and gets truncated)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = tokenizer(prompt)[0].tolist()  # (context_length,)
    # catch_warnings records the whole process's warnings, and the app tokenizes while other threads sample and
    # load (diffusers warns there): keep the tokenizer's own, about a prompt longer than the context.
    messages = [str(w.message) for w in caught if "token" in str(w.message) or "truncat" in str(w.message)]
    inner = tokenizer.tokenizer
    context = int(tokenizer.config.context_length)
    eot = ids.index(max(ids))  # the end-of-text token has the largest id (as CLIPEncoder.encode_text assumes)
    wanted = tokenizer.count_tokens(prompt)
    wanted = eot + 1 if wanted is None else wanted  # a Hugging Face tokenizer cannot count past the context
    pieces = []
    for i, token_id in enumerate(ids):
        if i > eot:
            pieces.append("")
        elif hasattr(inner, "decoder"):  # open_clip's SimpleTokenizer
            pieces.append(inner.decode([token_id]))
        else:  # HFTokenizer
            pieces.append(inner.tokenizer.convert_ids_to_tokens(token_id))
    return TokenInfo(ids=ids, pieces=pieces, num_real=eot + 1, num_wanted=wanted, context_length=context), messages
