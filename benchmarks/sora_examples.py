"""One example of each Sora task on the bundled model: docs/sora-tasks.md's image (assets/sora-tasks.png).

    python benchmarks/sora_examples.py

Four rendered clips (seeded), each given to the pipeline with the known pieces of
benchmarks/sora_tasks.py, sampled at seed 0 with the pipeline's defaults; given frames are
bordered, as the app marks them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sora_tasks.py beside this file
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the checkout

from sora_tasks import TASKS, conditions_for, input_clips, known_mask  # noqa: E402

from tiny_dit.app.sora_tasks import known_frames_strip  # noqa: E402
from tiny_dit.inside.views.drawing import stack  # noqa: E402
from tiny_dit.pipeline import TinyDiTPipeline  # noqa: E402
from tiny_dit.video import to_uint8  # noqa: E402


def main(model: str = "assets/tiny-dit-shapes", out: str = "assets/sora-tasks.png") -> None:
    pipe = TinyDiTPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    clips, truth = input_clips(len(TASKS), seed=3, size=128)
    rows = []
    for (task, pieces), clip, attributes in zip(TASKS.items(), clips, truth):
        frames = pipe(attributes["text"], conditions=conditions_for(clip, pieces),
                      generator=torch.Generator().manual_seed(0)).frames[0]
        strip = known_frames_strip(to_uint8(frames), known_mask(pieces, len(frames)), max_frames=8, cell=72)
        label = Image.new("RGB", (strip.width, 18), "white")
        ImageDraw.Draw(label).text((4, 2), f'{task}: "{attributes["text"]}"', fill="black")
        rows.append(stack([label, strip], gap=0))
    stack(rows, gap=6).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
