"""The shapes world: the project's own training clips, rendered from nothing.

tiny-dit must train and run with no network, so its default model learns from
clips this file draws: one coloured shape on a plain background, moving or
changing size over 16 frames. The contract (palette, sizes, speeds, captions,
held-out pairs) is fixed in `docs/shapes-world.md`; this file implements it.

How a frame is drawn, fast and anti-aliased:
  every shape is stored once as a signed-distance field (SDF) on a unit grid
  (negative inside, positive outside). To draw a frame we look the SDF up at
  (pixel - centre) / half_extent with `grid_sample`, multiply by the half-extent
  to get a distance in pixels, and turn it into coverage with
  clamp(0.5 - distance, 0, 1): a one-pixel soft edge, exact flat colours
  everywhere else. All frames of all clips are drawn in one batched call.

Command line (writes an mp4 videofolder, see --help):
  python -m tiny_dit.data.shapes --out data/shapes --num-clips 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tiny_dit.video import resize_frames

# ----------------------------------------------------------------------------
# The vocabulary (docs/shapes-world.md). RGB values are exact.
# ----------------------------------------------------------------------------

NUM_FRAMES = 16
FRAME_SIZE = 128
FPS = 8

SHAPES = ("circle", "square", "triangle", "star")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
BACKGROUNDS = {"black": (15, 15, 15), "white": (245, 245, 245), "gray": (128, 128, 128)}
MOTIONS = ("left", "right", "up", "down", "growing", "shrinking")

# Colour-shape pairs that never appear in training: they test composition.
HELD_OUT_PAIRS = frozenset(
    {("green", "triangle"), ("purple", "circle"), ("orange", "square"), ("blue", "star")}
)

# Direction of travel in image coordinates (x right, y down).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# ----------------------------------------------------------------------------
# Captions: a canonical form plus other phrasings, so the text encoder learns
# the words and not one template. A word always means the same attribute.
# ----------------------------------------------------------------------------

# Ways of saying each motion.
_MOTION_WORDS = (
    {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
     "growing": "growing", "shrinking": "shrinking"},
    {"left": "moves to the left", "right": "moves to the right", "up": "moves up",
     "down": "moves down", "growing": "gets bigger", "shrinking": "gets smaller"},
    {"left": "slides left", "right": "slides right", "up": "slides up", "down": "slides down",
     "growing": "grows", "shrinking": "shrinks"},
    {"left": "going to the left", "right": "going to the right", "up": "going up",
     "down": "going down", "growing": "getting bigger", "shrinking": "getting smaller"},
)
# (template, which motion words). Phrasing 0 is the canonical form of the spec.
_PHRASINGS = (
    ("a {color} {shape} {motion} on a {background} background", 0),
    ("a {color} {shape} {motion} on a {background} background", 1),
    ("on a {background} background, a {color} {shape} {motion}", 2),
    ("a {background} background with a {color} {shape} {motion}", 3),
    ("{color} {shape}, {motion}, {background} background", 0),
)
NUM_PHRASINGS = len(_PHRASINGS)
# The same phrasings for a still image (one frame, or a clip with no motion): the motion words left out.
# With no background named, every phrasing is just "a {object}".
_STILL_PHRASINGS = (
    "a {object} on a {background} background",
    "a {object} on a {background} background",
    "on a {background} background, a {object}",
    "a {background} background with a {object}",
    "{object}, {background} background",
)


def caption(color: str | None, shape: str | None, motion: str | None, background: str | None,
            phrasing: int = 0) -> str:
    """The caption of a clip; phrasing 0 is the canonical form of the spec. motion=None
    captions a still image: "a red star on a black background". A still's caption may also
    leave out the colour ("a star ..."), the shape ("a red shape ...") or the background
    ("a red star"): training on such captions ties each word to its own attribute (word dropout)."""
    if motion is None:
        obj = f"{color} {shape or 'shape'}" if color else (shape or "shape")
        if background is None:
            return f"{obj}" if phrasing == 4 else f"a {obj}"
        return _STILL_PHRASINGS[phrasing].format(object=obj, background=background)
    template, words = _PHRASINGS[phrasing]
    return template.format(color=color, shape=shape, motion=_MOTION_WORDS[words][motion],
                           background=background)


def motion_phrase(motion: str, words: int = 0) -> str:
    """How the captions' word set `words` (0 to 3) says a motion: "moving left", "moves to the left",
    "slides left", "going to the left". For prompts in phrasings the captions never use (the evaluation's)."""
    return _MOTION_WORDS[words][motion]


@lru_cache(maxsize=1)
def _motion_phrases() -> list[tuple[str, str]]:
    """(phrase, motion) of every phrasing, longest first: "moves to the left" before "left"."""
    phrases = {words[m]: m for words in _MOTION_WORDS for m in words}
    return sorted(phrases.items(), key=lambda kv: -len(kv[0]))


def shapes_attributes(prompt: str) -> dict | None:
    """(color, shape, motion, background) named in a shapes-world prompt, in any of the caption
    phrasings above, or None if it names no colour or no shape. Missing motion/background default
    to "left"/"black". The reverse of `caption`, for pictures of what a prompt asks for."""
    text = " " + re.sub(r"[^a-z]+", " ", prompt.lower()) + " "
    background = next((b for b in BACKGROUNDS if f" {b} background " in text), None)
    if background:
        text = text.replace(f" {background} background ", " ")
    color = next((c for c in COLORS if f" {c} " in text), None)
    shape = next((s for s in SHAPES if f" {s} " in text), None)
    motion = next((m for phrase, m in _motion_phrases() if f" {phrase} " in text), None)
    if motion is None:
        motion = next((m for m in ("left", "right", "up", "down") if f" {m} " in text), None)
    if color is None or shape is None:
        return None
    return {"color": color, "shape": shape, "motion": motion or "left", "background": background or "black"}


def all_attribute_combinations(split: str = "all") -> list[tuple[str, str, str, str]]:
    """Every (color, shape, motion, background); split is "all", "train" or "heldout"."""
    combos = []
    for color in COLORS:
        for shape in SHAPES:
            held_out = (color, shape) in HELD_OUT_PAIRS
            if (split == "train" and held_out) or (split == "heldout" and not held_out):
                continue
            for motion in MOTIONS:
                for background in BACKGROUNDS:
                    combos.append((color, shape, motion, background))
    return combos


# ----------------------------------------------------------------------------
# What one clip is: attributes plus the drawn-at-random geometry.
# ----------------------------------------------------------------------------


@dataclass
class ClipSpec:
    color: str
    shape: str
    motion: str
    background: str
    center_x: float  # object centre in frame 0, pixels
    center_y: float
    velocity: float  # px per frame along the motion direction (0 for size changes)
    size_start: float  # half-extent in frame 0, pixels
    size_end: float  # half-extent in the last frame
    phrasing: int
    num_frames: int = NUM_FRAMES  # the clip's length and its scene's size in pixels (Sora's tasks: any
    height: int = FRAME_SIZE  # length and size; the vocabulary and object sizes stay the same)
    width: int = FRAME_SIZE

    @property
    def text(self) -> str:
        return caption(self.color, self.shape, self.motion, self.background, self.phrasing)

    def trajectory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-frame centre x, centre y and half-extent, each of shape (num_frames,)."""
        num_frames = self.num_frames
        k = np.arange(num_frames, dtype=np.float64)
        dx, dy = DIRECTIONS.get(self.motion, (0, 0))
        cx = self.center_x + dx * self.velocity * k
        cy = self.center_y + dy * self.velocity * k
        size = self.size_start + (self.size_end - self.size_start) * k / max(num_frames - 1, 1)
        return cx, cy, size


MARGIN = 2.0  # px kept free between the object and the frame edge (room for the soft edge)

# Object sizes (half-extents in px) and speeds (px per frame) of docs/shapes-world.md. Why this large: a
# diffusion model learns a concept at a speed set by how many pixels it changes, and at the first world's
# sizes (14-22 px) a circle and a square differed in under 2% of the frame: shape was learned last and barely.
MOVING_SIZE = (24.0, 32.0)  # spans three to four 16-px patches
SPEED = (2.0, 4.0)
GROWING_SIZES = ((10.0, 12.0), (38.0, 42.0))  # from a small size to a large one over the clip


def object_scale(height: int, width: int) -> float:
    """How much smaller objects are drawn in a scene smaller than 128 px on a side (Sora's small sizes):
    in proportion to its short side, so that they fit and still have room to move; 1 at 128 px and above."""
    return min(1.0, min(height, width) / FRAME_SIZE)


def random_clip_spec(rng: np.random.Generator, color: str, shape: str, motion: str,
                     background: str, phrasing: int | None = None, num_frames: int = NUM_FRAMES,
                     height: int = FRAME_SIZE, width: int = FRAME_SIZE) -> ClipSpec:
    """Draw position, size and speed inside the ranges of the spec.

    Speed is in pixels per frame, so a longer clip shows a longer path (a longer duration, as
    Sora's variable lengths), capped where the whole path would not fit in the frame. Scenes
    smaller than 128 px draw smaller objects (`object_scale`)."""
    steps = max(num_frames - 1, 1)
    extent = {"x": width, "y": height}
    scale = object_scale(height, width)
    if motion in DIRECTIONS:
        size = rng.uniform(*MOVING_SIZE) * scale
        speed = rng.uniform(*SPEED)
        dx, dy = DIRECTIONS[motion]
        along_extent, across_extent = (extent["x"], extent["y"]) if dx != 0 else (extent["y"], extent["x"])
        speed = min(speed, (along_extent - 2 * (size + MARGIN)) / steps)  # the whole path must fit
        travel = speed * steps
        lo = size + MARGIN  # allowed centre range: [lo, extent - lo]
        # Along the motion the whole path must fit; across it anywhere in range.
        along = rng.uniform(lo, max(lo, along_extent - lo - travel))
        across = rng.uniform(lo, across_extent - lo)
        if dx != 0:
            cx, cy = (along if dx > 0 else along_extent - along), across
        else:
            cx, cy = across, (along if dy > 0 else along_extent - along)
        size_start = size_end = size
    else:
        small, large = (rng.uniform(*r) * scale for r in GROWING_SIZES)
        size_start, size_end = (small, large) if motion == "growing" else (large, small)
        speed = 0.0
        lo = large + MARGIN
        cx, cy = rng.uniform(lo, width - lo), rng.uniform(lo, height - lo)
    if phrasing is None:
        phrasing = int(rng.integers(NUM_PHRASINGS))
    return ClipSpec(color, shape, motion, background, float(cx), float(cy), float(speed),
                    float(size_start), float(size_end), phrasing, num_frames, height, width)


def sample_clip_specs(num_clips: int, seed: int = 0, split: str = "train", num_frames: int = NUM_FRAMES,
                      height: int = FRAME_SIZE, width: int = FRAME_SIZE) -> list[ClipSpec]:
    """num_clips random clips. split="train" never uses a held-out colour-shape pair,
    split="heldout" uses only those (for evaluation), split="all" uses everything."""
    rng = np.random.default_rng(seed)
    combos = all_attribute_combinations(split)
    picks = rng.integers(len(combos), size=num_clips)
    return [random_clip_spec(rng, *combos[i], num_frames=num_frames, height=height, width=width) for i in picks]


# ----------------------------------------------------------------------------
# Drawing: unit-shape SDFs, looked up per pixel.
# ----------------------------------------------------------------------------

_SDF_RESOLUTION = 512
_SDF_EXTENT = 1.5  # the SDF grid covers [-1.5, 1.5]^2 in half-extent units


def _polygon_vertices(shape: str) -> np.ndarray:
    """Vertices (x, y) of a unit shape, y pointing down, half-extent 1."""
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if shape == "triangle":  # apex up, flat base
        return np.array([[0, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if shape == "star":  # five points, one up, inner radius 0.45 of outer
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    raise ValueError(f"not a polygon: {shape}")


def _polygon_sdf(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Exact signed distance from points (N, 2) to a closed polygon (after I. Quilez)."""
    dist2 = np.full(len(points), np.inf)
    sign = np.ones(len(points))
    for i in range(len(vertices)):
        a, b = vertices[i], vertices[i - 1]
        edge, w = b - a, points - a
        t = np.clip((w @ edge) / (edge @ edge), 0.0, 1.0)
        closest = w - t[:, None] * edge
        dist2 = np.minimum(dist2, (closest**2).sum(1))
        # Crossing test for inside/outside.
        c1, c2 = points[:, 1] >= a[1], points[:, 1] < b[1]
        c3 = edge[0] * w[:, 1] > edge[1] * w[:, 0]
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign[flip] *= -1
    return sign * np.sqrt(dist2)


@lru_cache(maxsize=None)
def unit_sdf(shape: str) -> torch.Tensor:
    """The signed distance field of a unit shape, (1, 1, R, R), in half-extent units."""
    axis = np.linspace(-_SDF_EXTENT, _SDF_EXTENT, _SDF_RESOLUTION)
    xx, yy = np.meshgrid(axis, axis)  # rows are y (down), columns are x
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    if shape == "circle":
        sdf = np.linalg.norm(points, axis=1) - 1.0
    else:
        sdf = _polygon_sdf(points, _polygon_vertices(shape))
    return torch.from_numpy(sdf.reshape(1, 1, _SDF_RESOLUTION, _SDF_RESOLUTION)).float()


def object_rgb(color: str) -> tuple[int, int, int]:
    """The RGB of a colour name of the vocabulary, or of "#rrggbb" (colours outside it: the tiny CLIP's
    colour-free clips, which teach its image tower shapes apart from the six colours)."""
    if color in COLORS:
        return COLORS[color]
    if re.fullmatch(r"#[0-9a-fA-F]{6}", color):
        return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    raise ValueError(f"unknown colour {color!r}: one of {list(COLORS)} or '#rrggbb'")


def render_clips(specs: list[ClipSpec], frame_indices: list[int] | None = None,
                 size: int = FRAME_SIZE) -> torch.Tensor:
    """Draw clips (all of one length and scene size). Returns uint8 frames (N, T, H, W, 3):
    T = the specs' num_frames, or len(frame_indices) when only some frames are wanted (training
    the CLIP or the autoencoder); H x W = the specs' height x width, scaled by size / 128 (a
    smaller `size` draws the same scene at a lower resolution, for quick tests)."""
    if len({(s.num_frames, s.height, s.width) for s in specs}) > 1:
        raise ValueError("render_clips draws clips of one length and size at a time")
    frames = np.arange(specs[0].num_frames) if frame_indices is None else np.asarray(frame_indices)
    scale = FRAME_SIZE / size  # the spec's geometry is in pixels of a 128-px frame; smaller sizes are downscaled
    H, W = round(specs[0].height / scale), round(specs[0].width / scale)
    n, num_frames = len(specs), len(frames)
    out = torch.empty(n, num_frames, H, W, 3, dtype=torch.uint8)
    pixel_x = (torch.arange(W, dtype=torch.float32) + 0.5) * scale  # pixel centres, in the spec's units
    pixel_y = (torch.arange(H, dtype=torch.float32) + 0.5) * scale
    for shape in SHAPES:  # one batched lookup per shape
        idx = [i for i, s in enumerate(specs) if s.shape == shape]
        if not idx:
            continue
        traj = np.stack([np.stack(specs[i].trajectory(), 0) for i in idx])[:, :, frames]  # (n, 3, T)
        cx, cy, half = (torch.from_numpy(traj[:, j]).float().reshape(-1, 1) for j in range(3))  # (n*T, 1)
        # Pixel coordinates in the unit frame of the shape, then in grid_sample's [-1, 1].
        gx = (pixel_x[None, :] - cx) / half / _SDF_EXTENT  # (n*T, W)
        gy = (pixel_y[None, :] - cy) / half / _SDF_EXTENT  # (n*T, H)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (n*T, H, W, 2)
        # One lookup for all frames: stack them along the grid's height (batch of 1).
        dist = F.grid_sample(unit_sdf(shape), grid.reshape(1, -1, W, 2), mode="bilinear",
                             padding_mode="border", align_corners=True)  # (1, 1, n*T*H, W)
        dist = dist.reshape(-1, H, W) * half[:, :, None] / scale  # (n*T, H, W), in output pixels
        coverage = (0.5 - dist).clamp(0, 1).reshape(len(idx), num_frames, H, W, 1)
        fg = torch.tensor([object_rgb(specs[i].color) for i in idx], dtype=torch.float32)
        bg = torch.tensor([BACKGROUNDS[specs[i].background] for i in idx], dtype=torch.float32)
        fg, bg = fg[:, None, None, None, :], bg[:, None, None, None, :]  # (n, 1, 1, 1, 3)
        pixels = torch.addcmul(bg, coverage, fg - bg).round_()  # (n, T, H, W, 3)
        out.index_copy_(0, torch.tensor(idx), pixels.to(torch.uint8))
    return out


def object_cover(frames: torch.Tensor, specs: list[ClipSpec], factor: int) -> torch.Tensor:
    """How much of each factor x factor cell the object covers in rendered clips (N, T, H, W, 3): uint8
    (N, T, H / factor, W / factor), 0-255. Exact for the renderer's own clips: every pixel that is not
    the background's colour is the object's (with factor the autoencoder's downsampling, a latent pixel's cover)."""
    background = torch.tensor([BACKGROUNDS[s.background] for s in specs], dtype=torch.int16)  # (N, 3)
    on_object = (frames.to(torch.int16) != background[:, None, None, None]).any(-1).float()  # (N, T, H, W)
    return (F.avg_pool2d(on_object, factor) * 255).round().to(torch.uint8)  # (N, T, h, w)


def attributes_clip(attributes: dict, num_frames: int = NUM_FRAMES, height: int = FRAME_SIZE,
                    width: int = FRAME_SIZE, seed: int = 0) -> np.ndarray:
    """A rendered clip with these attributes (color, shape, motion, background; e.g. from
    shapes_attributes) at a model's clip size: uint8 (T, H, W, 3), num_frames spread over the 16
    rendered ones. Position, size and speed are drawn from `seed`."""
    spec = random_clip_spec(np.random.default_rng(int(seed)), attributes["color"], attributes["shape"],
                            attributes["motion"], attributes["background"], phrasing=0)
    idx = np.linspace(0, NUM_FRAMES - 1, num_frames).round().astype(int).tolist()
    clip = render_clips([spec], frame_indices=idx)[0].numpy()  # (T, 128, 128, 3)
    return clip if clip.shape[1:3] == (height, width) else resize_frames(clip, height, width)


def render_dataset(num_clips: int, seed: int = 0, split: str = "train",
                   batch_size: int = 256, num_frames: int = NUM_FRAMES, height: int = FRAME_SIZE,
                   width: int = FRAME_SIZE):
    """Yield (frames uint8 (B, T, H, W, 3), specs) batches of freshly rendered clips."""
    specs = sample_clip_specs(num_clips, seed, split, num_frames, height, width)
    for start in range(0, num_clips, batch_size):
        chunk = specs[start:start + batch_size]
        yield render_clips(chunk), chunk


# ----------------------------------------------------------------------------
# Command line: write a videofolder (one H.264 mp4 per clip + metadata.jsonl).
# ----------------------------------------------------------------------------


def write_videofolder(out: Path, num_clips: int, seed: int, split: str) -> None:
    from tqdm import tqdm

    from tiny_dit.video import write_mp4

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.jsonl", "w") as meta, tqdm(total=num_clips, unit="clip") as bar:
        for frames, specs in render_dataset(num_clips, seed, split, batch_size=64):
            for clip, spec in zip(frames.numpy(), specs):
                name = f"{bar.n:06d}.mp4"
                write_mp4(out / name, clip, fps=FPS)
                record = {"file_name": name, "text": spec.text}
                record.update({k: v for k, v in asdict(spec).items()
                               if k in ("color", "shape", "motion", "background")})
                meta.write(json.dumps(record) + "\n")
                bar.update(1)
    print(f"wrote {num_clips} clips to {out}/ (metadata.jsonl + mp4)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tiny_dit.data.shapes",
        description="Render shapes-world clips (16 frames, 128x128, 8 fps) to a videofolder: "
                    "one H.264 mp4 per clip and a metadata.jsonl with file_name, text, color, "
                    "shape, motion and background.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num-clips", type=int, default=100, help="how many clips (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same clips")
    parser.add_argument("--held-out", action="store_true",
                        help="render only the held-out colour-shape pairs (green triangle, purple "
                             "circle, orange square, blue star), for evaluation only")
    args = parser.parse_args(argv)
    if args.num_clips < 1:
        parser.error("--num-clips must be at least 1")
    write_videofolder(args.out, args.num_clips, args.seed, "heldout" if args.held_out else "train")


if __name__ == "__main__":
    main()
