"""How a model learned: the samples and the loss curve a training run leaves in its pipeline folder.

    from tiny_dit.inside.training_history import load_history, loss_curve_image, snapshot_image

    history = load_history("assets/tiny-dit-shapes")
    history.snapshots          # [Snapshot(step=500, grid=.../grid.mp4, prompts=[...]), ...], by step
    loss_curve_image(history, mark_step=2000)
    snapshot_image(history.snapshots[0])

The layout (written by `python -m tiny_dit.training.train` for every run, so a notebook user sees the
same for their own model):

    <pipeline folder>/training_log.jsonl          one JSON object per line: {"step", "loss", "lr", ...},
                                                  and from --eval-every, {"step", "eval": {"seen/shape": 0.5, ...}}
    <pipeline folder>/training_samples/step-XXXXXX/grid.mp4     the fixed prompts' clips in one grid
    <pipeline folder>/training_samples/step-XXXXXX/prompts.txt  lines "sample-00: <prompt>"
    <pipeline folder>/evaluation.json             optional: `python -m tiny_dit.training.evaluate --json` of the
                                                  finished model (by the judge of when it was written)

Anything missing is reported, not raised: an older folder without training_samples still
has its loss curve, a Hub model may have neither.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tiny_dit.inside.views import drawing
from tiny_dit.video import split_grid

LOG_NAME = "training_log.jsonl"
EVALUATION_NAME = "evaluation.json"
SAMPLES_DIR = "training_samples"
EVAL_ATTRIBUTES = ("color", "shape", "motion")
_STEP_DIR = re.compile(r"step-(\d+)$")
_PROMPT_LINE = re.compile(r"^sample-(\d+):\s?(.*)$")


@dataclass
class Snapshot:
    """The samples written at one training step."""

    step: int
    grid: Path  # grid.mp4: the clips of all prompts tiled by tiny_dit.video.make_grid
    prompts: list[str]  # in the grid's reading order


@dataclass
class TrainingHistory:
    folder: Path | None
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # logged steps, increasing
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, {"seen/shape": 0.5, ...})
    snapshots: list[Snapshot] = field(default_factory=list)  # by step
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)  # {"seen": {"shape": 0.93, ...}}: frame judge
    problems: list[str] = field(default_factory=list)  # what could not be read

    @property
    def has_log(self) -> bool:
        return len(self.steps) > 0

    def snapshot_near(self, step: int) -> Snapshot | None:
        if not self.snapshots:
            return None
        return min(self.snapshots, key=lambda s: (abs(s.step - step), s.step))

    def loss_at(self, step: int) -> float | None:
        """The logged loss at the last logged step <= step (None before the first)."""
        i = int(np.searchsorted(self.steps, step, side="right")) - 1
        return float(self.losses[i]) if i >= 0 else None

    def eval_at(self, step: int) -> tuple[int, dict[str, float]] | None:
        """The last evaluation at or before `step`."""
        done = [e for e in self.evals if e[0] <= step]
        return done[-1] if done else None


def pipeline_folder(pipe) -> Path | None:
    """The local folder a pipeline was loaded from (diffusers records it as _name_or_path), or None."""
    for source in (getattr(pipe, "config", None), pipe):
        name = getattr(source, "_name_or_path", None) if source is not None else None
        if name is None and isinstance(source, dict):
            name = source.get("_name_or_path")
        if name and Path(str(name)).is_dir():
            return Path(str(name)).resolve()
    return None


def load_history(folder: str | Path | None) -> TrainingHistory:
    """Read a pipeline folder's training log and sample snapshots (see the module docstring)."""
    if folder is None:
        return TrainingHistory(None, problems=["the model was not loaded from a local folder"])
    folder = Path(folder)
    history = TrainingHistory(folder)
    log = folder / LOG_NAME
    losses: dict[int, float] = {}
    evals: dict[int, dict[str, float]] = {}
    if log.is_file():
        bad = 0
        for line in log.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                step = int(row["step"])
                if "loss" in row and np.isfinite(float(row["loss"])):
                    losses[step] = float(row["loss"])  # a resumed run logs a step again: the last one counts
                if isinstance(row.get("eval"), dict):
                    evals[step] = {str(k): float(v) for k, v in row["eval"].items()
                                   if isinstance(v, (int, float))}
            except (ValueError, KeyError, TypeError):
                bad += 1
        if bad:
            history.problems.append(f"{bad} unreadable line{'s' if bad > 1 else ''} in {LOG_NAME}")
    else:
        history.problems.append(f"no {LOG_NAME}")
    order = sorted(losses)
    history.steps = np.array(order, dtype=np.int64)
    history.losses = np.array([losses[s] for s in order], dtype=np.float64)
    history.evals = sorted(evals.items())

    if (folder / EVALUATION_NAME).is_file():
        try:
            results = json.loads((folder / EVALUATION_NAME).read_text())
            history.evaluation = {split: {a: float(results[split]["frame_judge"][a]) for a in EVAL_ATTRIBUTES}
                                  for split in ("seen", "held-out")}
        except (ValueError, KeyError, TypeError):
            history.problems.append(f"unreadable {EVALUATION_NAME}")

    samples = folder / SAMPLES_DIR
    if samples.is_dir():
        for sub in samples.iterdir():
            match = _STEP_DIR.match(sub.name)
            if match and (sub / "grid.mp4").is_file():
                history.snapshots.append(Snapshot(int(match.group(1)), sub / "grid.mp4", read_prompts(sub)))
        history.snapshots.sort(key=lambda s: s.step)
    if not history.snapshots:
        history.problems.append(f"no {SAMPLES_DIR}/step-*/grid.mp4")
    return history


def read_prompts(folder: Path) -> list[str]:
    """The prompts of a snapshot's prompts.txt ("sample-00: <prompt>" lines), in sample order."""
    path = folder / "prompts.txt"
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        match = _PROMPT_LINE.match(line.strip())
        if match:
            found.append((int(match.group(1)), match.group(2).strip()))
    return [p for _, p in sorted(found)]


# ----------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------


def snapshot_image(snapshot: Snapshot, frames_shown: int = 8, cell: int = 80) -> Image.Image:
    """A snapshot's samples as a film strip: one row per prompt (its text above it), a few frames."""
    from tiny_dit.video import read_mp4

    grid, _ = read_mp4(snapshot.grid)
    clips = split_grid(grid, len(snapshot.prompts))
    idx = drawing.spread(frames_shown, grid.shape[0])
    if clips is None:  # an unknown layout: the whole grid, frame by frame
        return drawing.caption_above(drawing.filmstrip(grid[None], idx, cell=4 * cell),
                                   f"step {snapshot.step:,}: the sample grid")
    rows = []
    for prompt, clip in zip(snapshot.prompts, clips):
        strip = drawing.filmstrip(clip[None], idx, cell=cell, show_frame_numbers=False)
        rows.append(drawing.caption_above(strip, f"\"{prompt}\"", size=12))
    return drawing.stack(rows, gap=6)


def smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Exponential moving average (debiased, as TensorBoard smooths curves)."""
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * float(v)
        out[i] = avg / (1 - weight ** (i + 1))
    return out


def _plot(size: tuple[int, int], title: str, xmax: float, ylim: tuple[float, float], log_y: bool,
          series: list[tuple[np.ndarray, np.ndarray, tuple, int]], mark_step: int | None,
          legend: list[tuple[str, tuple]] = ()) -> Image.Image:
    """A line plot: series of (x, y, colour, width) on shared axes; a vertical line at mark_step."""
    w, h = size
    left, right, top, bottom = 52, 24, 24, 34
    out = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((left, 4), title, fill=drawing.INK, font=drawing.font(13))
    pw, ph = w - left - right, h - top - bottom
    lo, hi = ylim
    f = np.log10 if log_y else (lambda v: v)
    flo, fhi = f(lo), f(hi)

    def xy(x, y):
        y = min(max(float(y), lo), hi)
        return left + float(x) / max(xmax, 1) * pw, top + ph - (f(y) - flo) / max(fhi - flo, 1e-12) * ph

    if log_y:
        ticks = [10.0 ** e for e in range(int(np.floor(flo)), int(np.ceil(fhi)) + 1) if lo <= 10.0 ** e <= hi]
    else:
        ticks = [t for t in np.linspace(lo, hi, 5)]
    for tick in ticks:
        _, y = xy(0, tick)
        draw.line([(left, y), (left + pw, y)], fill=(232, 232, 232))
        draw.text((2, y - 7), f"{tick:g}", fill=drawing.MUTED, font=drawing.font(10))
    for tick in drawing._nice_ticks(xmax, 5):
        x, _ = xy(tick, lo)
        draw.line([(x, top + ph), (x, top + ph + 3)], fill=drawing.MUTED)
        draw.text((x - 8, top + ph + 4), f"{tick:,.0f}", fill=drawing.MUTED, font=drawing.font(10))
    draw.text((left + pw // 2 - 30, top + ph + 18), "training step", fill=drawing.MUTED, font=drawing.font(10))
    draw.rectangle([left, top, left + pw, top + ph], outline=(180, 180, 180))
    for xs, ys, color, width in series:
        points = [xy(x, y) for x, y in zip(xs, ys)]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        elif points:
            draw.line(points, fill=color, width=width)
    if mark_step is not None:
        x, _ = xy(mark_step, lo)
        draw.line([(x, top), (x, top + ph)], fill=drawing.HIGHLIGHT, width=2)
    lx = left + pw
    for label, color in reversed(list(legend)):
        lx -= drawing.text_width(label, 11) + 24
        draw.rectangle([lx, 9, lx + 12, 15], fill=color)
        draw.text((lx + 15, 5), label, fill=drawing.INK, font=drawing.font(11))
    return out


def loss_curve_image(history: TrainingHistory, mark_step: int | None = None, width: int = 640) -> Image.Image | None:
    """The loss over training (log scale; raw in light, smoothed in dark), and below it, when the run
    was evaluated (--eval-every), the share of seen and held-out prompts whose colour, shape and
    motion the judge recognised. A vertical line marks `mark_step`. None without a log."""
    if not history.has_log and not history.evals:
        return None
    xmax = max([int(history.steps[-1]) if history.has_log else 0] + [s for s, _ in history.evals] +
               [s.step for s in history.snapshots] + [1])
    panels = []
    if history.has_log:
        losses = np.maximum(history.losses, 1e-6)
        lo = 10 ** np.floor(np.log10(losses.min()))
        hi = 10 ** np.ceil(np.log10(np.percentile(losses, 99.5)))
        panels.append(_plot((width, 240), "training loss (log scale)", xmax, (lo, max(hi, lo * 10)), True,
                            [(history.steps, losses, (170, 200, 230), 1),
                             (history.steps, smooth(losses), drawing.SERIES_COLORS[0], 2)], mark_step,
                            legend=[("raw", (170, 200, 230)), ("smoothed", drawing.SERIES_COLORS[0])]))
    for split in ("seen", "held-out"):
        series, legend = [], []
        for j, attribute in enumerate(EVAL_ATTRIBUTES):
            points = [(s, e[f"{split}/{attribute}"]) for s, e in history.evals if f"{split}/{attribute}" in e]
            if points:
                color = drawing.SERIES_COLORS[(j + 1) % len(drawing.SERIES_COLORS)]
                xs, ys = zip(*points)
                series.append((np.array(xs), np.array(ys), color, 2))
                legend.append((attribute, color))
        if series:
            panels.append(_plot((width, 200), f"{split} prompts: share judged right", xmax, (0.0, 1.0), False,
                                series, mark_step, legend=legend))
    return drawing.stack(panels, gap=6)


def describe(history: TrainingHistory, chosen: Snapshot | None) -> str:
    """Markdown about the chosen snapshot (its step, the loss then, the last evaluation), or what is missing."""
    where = "this model"
    if history.folder is not None:
        try:
            where = f"`{history.folder.resolve().relative_to(Path.cwd())}`"
        except ValueError:
            where = f"`{history.folder}`"
    if not history.has_log and not history.snapshots:
        return (f"**No training history for {where}**: neither `{LOG_NAME}` nor `{SAMPLES_DIR}/` is there. "
                "A model trained with `python -m tiny_dit.training.train` (or the notebook) has both in its "
                "pipeline folder.")
    lines = []
    last = int(history.steps[-1]) if history.has_log else None
    if chosen is not None:
        prompts = len(chosen.prompts)
        lines.append(f"**Step {chosen.step:,}**" + (f" of {last:,}" if last else "")
                     + f" (snapshot {history.snapshots.index(chosen) + 1} of {len(history.snapshots)}): the same "
                     f"{prompts or 'fixed'} prompt{'s' if prompts != 1 else ''} and starting noise at every snapshot, "
                     "so only the weights change.")
        loss = history.loss_at(chosen.step)
        if loss is not None:
            lines.append(f"Training loss then: {loss:.4f} (first logged: {float(history.losses[0]):.3f}, "
                         f"last: {float(history.losses[-1]):.4f}).")
        evaluated = history.eval_at(chosen.step)
        if evaluated is not None:
            step, scores = evaluated
            shown = ", ".join(f"{k} {100 * v:.0f}%" for k, v in scores.items()
                              if k.split("/")[-1] in EVAL_ATTRIBUTES)
            lines.append(f"Evaluation at step {step:,} (share of prompts whose attribute a judge recognised): {shown}.")
    else:
        lines.append(f"**No sample snapshots in {where}** (`{SAMPLES_DIR}/step-*/grid.mp4`): this model was trained "
                     "before the training command wrote them. The loss curve is all there is; a model trained now "
                     "with `python -m tiny_dit.training.train` (or the notebook) gets both.")
        if history.has_log:
            lines.append(f"{len(history.steps):,} logged steps up to step {last:,}; loss from "
                         f"{float(history.losses[0]):.3f} to {float(history.losses[-1]):.4f}.")
    if history.evaluation:
        shown = "; ".join(f"{split}: " + ", ".join(f"{a} {100 * v:.0f}%" for a, v in scores.items())
                          for split, scores in history.evaluation.items())
        lines.append(f"The finished model, evaluated after training (`{EVALUATION_NAME}`, the frame judge "
                     f"of when it was written; the curve's evaluations used the judge of their own time): {shown}.")
    return "\n\n".join(lines)


def snapshot_view(history: TrainingHistory, snapshot: int | None):
    """The app's "How it learned" view: (loss curve marked at the snapshot, the samples of training
    snapshot `snapshot` (1 = the earliest; None: none), description). `snapshot` is checked by the caller."""
    chosen = history.snapshots[snapshot - 1] if snapshot else None
    curve = loss_curve_image(history, chosen.step if chosen else None)
    return curve, (snapshot_image(chosen) if chosen else None), describe(history, chosen)
