r"""The fast student against its teacher: quality per step count, stray pixels, and time for 4 clips.

    python benchmarks/fast_student.py --student assets/tiny-dit-shapes-fast          # the table in docs/sampling.md
    python benchmarks/fast_student.py --student runs/fast-lcm/pipeline --num-prompts 72   # a quick look
    python benchmarks/fast_student.py --baselines --steps 1 2 4 --skip-timing           # no student: the floor

Rows, each at 1, 2 and 4 steps (--steps) unless named:
  * the teacher (--teacher) at its own defaults (20 Euler steps, its guider): its evaluation.json when that is a
    full evaluation at those defaults, else evaluated here;
  * the student (--student, a fast pipeline folder) at its own scheduler, guidance off;
  * --baselines: the teacher's weights as they are, guidance off, with Euler and with LCM's scheduler: what a
    student must beat (the "teacher's Euler-4" of the issue "Clips in one to four passes"), at --baseline-steps;
    timed only when there is no student (at the same steps they cost what it costs).

Quality: the project's evaluation (tiny_dit.training.evaluate; the full one by default, --num-prompts N for the
small set), per split: colour, shape, motion, all four, stray pixels, an object in every frame.
Time: 4 clips of one prompt end to end through the pipeline, in bfloat16 and float32, every row in this one
process in interleaved rounds (a warm-up, then --repeats rounds of every row once: the machine's drift touches
every row alike), the best round of each, and each row's share of the teacher's time at the same precision.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_dit import TinyDiTPipeline  # noqa: E402
from tiny_dit.text_encoder import CLIPEncoder  # noqa: E402
from tiny_dit.training.distill import fast_pipeline, teacher_guidance  # noqa: E402
from tiny_dit.training.evaluate import evaluate_pipeline  # noqa: E402

PROMPT = "a red circle moving left on a black background"
SPLITS = ("seen", "held-out")
COLUMNS = ("color", "shape", "motion", "all")


def time_four_clips(pipes: list[tuple[TinyDiTPipeline, int]], dtype: str, repeats: int) -> list[float]:
    """Seconds for 4 clips of PROMPT per (pipeline, steps) in `dtype`: the best of `repeats` rounds after a
    warm-up, each round timing every pipeline once, so that the machine's drift touches them all alike."""
    for pipe, _ in pipes:
        pipe.set_dtype(dtype)
    generator = torch.Generator()
    times = [[] for _ in pipes]
    for _ in range(repeats + 1):
        for (pipe, steps), seconds in zip(pipes, times):
            start = time.perf_counter()
            pipe(PROMPT, num_videos_per_prompt=4, num_inference_steps=steps, generator=generator.manual_seed(0))
            seconds.append(time.perf_counter() - start)
    return [min(seconds[1:]) for seconds in times]


def per_split(results: dict) -> dict:
    """An evaluation's figures per split: the frame judge's shares, stray pixels, an object in every frame."""
    return {split: {**results[split]["frame_judge"], "stray_pixels": results[split]["stray_pixels"],
                    "object_in_every_frame": results[split]["object_in_every_frame"]} for split in SPLITS}


def quality(pipe: TinyDiTPipeline, clip: CLIPEncoder, steps: int, num_prompts: int | None) -> dict:
    """per_split of the evaluation of `pipe` at `steps` steps, in the faster dtype."""
    pipe.set_dtype("auto")
    with torch.no_grad():
        return per_split(evaluate_pipeline(pipe, clip, num_prompts, steps, progress=False))


def teacher_quality(teacher: TinyDiTPipeline, folder: str, clip: CLIPEncoder, num_prompts: int | None) -> dict:
    """The teacher at its defaults: its evaluation.json if it is this very evaluation, else measured here."""
    path = Path(folder) / "evaluation.json"
    if num_prompts is None and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("prompt_set") == "full" and saved.get("steps") == teacher.default_num_inference_steps:
            return per_split(saved)
    return quality(teacher, clip, teacher.default_num_inference_steps, num_prompts)


def markdown(rows: list[dict]) -> str:
    """The rows as the table of docs/sampling.md."""
    lines = ["| model | sampler | steps | passes a clip | colour | shape | motion | all four | stray pixels | "
             "4 clips bf16 | 4 clips fp32 |", "| --- " * 11 + "|"]
    for row in rows:
        q = row["quality"]
        cells = [" / ".join(f"{100 * q[s][c]:.1f}" for s in SPLITS) + "%" for c in COLUMNS]
        stray = " / ".join(f"{100 * q[s]['stray_pixels']:.3f}" for s in SPLITS) + "%"
        times = [f"{row[k]:.3f} s ({row[k + '_share']:.2f}x)" if k in row else "-" for k in ("bf16_s", "fp32_s")]
        lines.append(f"| {row['model']} | {row['sampler']} | {row['steps']} | {row['passes']} | "
                     + " | ".join(cells) + f" | {stray} | " + " | ".join(times) + " |")
    return "\n".join(lines) + "\n\n(seen / held-out pairs; times: best of interleaved rounds, share of the teacher's)\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="assets/tiny-dit-shapes", help="the full model (default: the bundle)")
    parser.add_argument("--student", help="a fast pipeline folder (tiny_dit.training.distill's <out>/pipeline)")
    parser.add_argument("--baselines", action="store_true",
                        help="also the teacher's weights without guidance, with Euler and with LCM's scheduler")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4], help="step counts (default 1 2 4)")
    parser.add_argument("--baseline-steps", type=int, nargs="+",
                        help="the baselines' step counts (default: --steps); not timed (they cost what the student "
                             "costs at the same steps)")
    parser.add_argument("--num-prompts", type=int, default=None,
                        help="the small set of N prompts per split, one seed (default: the full evaluation)")
    parser.add_argument("--clip", default="assets/tiny-clip", help="the CLIP the evaluation judges with")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed rounds per precision, every row once a round (default 10)")
    parser.add_argument("--skip-timing", action="store_true", help="quality only")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    if not (args.student or args.baselines):
        parser.error("name a --student, or ask for --baselines")
    torch.set_num_threads(args.threads)
    clip = CLIPEncoder.from_pretrained(args.clip)

    teacher = TinyDiTPipeline.from_pretrained(args.teacher)
    arms = []  # (name, sampler, pipeline, step counts)
    if args.student:
        student = TinyDiTPipeline.from_pretrained(args.student)
        arms.append(("student", type(student.scheduler).__name__.removesuffix("Scheduler"), student, args.steps))
    if args.baselines:
        steps = args.baseline_steps or args.steps
        # The teacher's own weights as a student before any training: distill's fast pipeline around them,
        # with reflow's sampler (Euler) and consistency's (LCM).
        arms += [("teacher, guidance off", sampler, fast_pipeline(teacher.transformer, teacher, method, steps[0]), steps)
                 for sampler, method in (("FlowMatchEuler", "reflow"), ("FlowMatchLCM", "consistency"))]
    for _, _, pipe, _ in arms:
        pipe.set_progress_bar_config(disable=True)
    teacher.set_progress_bar_config(disable=True)

    steps = teacher.default_num_inference_steps
    rows = [{"model": f"teacher ({args.teacher}), its defaults",
             "sampler": type(teacher.scheduler).__name__.removesuffix("Scheduler"), "steps": steps,
             "passes": steps + int((teacher_guidance(teacher, steps) > 1).sum()),  # a guided step: two
             "quality": teacher_quality(teacher, args.teacher, clip, args.num_prompts)}]
    timed = [teacher]  # the pipeline of each row
    for name, sampler, pipe, step_counts in arms:
        for n in step_counts:
            started = time.time()
            timed.append(pipe if name == "student" or not args.student else None)
            rows.append({"model": name, "sampler": sampler, "steps": n, "passes": n,
                         "quality": quality(pipe, clip, n, args.num_prompts)})
            print(f"{name}, {sampler}, {n} steps: {rows[-1]['quality']} ({time.time() - started:.0f} s)", flush=True)

    if not args.skip_timing:  # every row in this one process, in interleaved rounds
        for dtype, key in (("bfloat16", "bf16_s"), ("float32", "fp32_s")):
            measured = [(row, pipe) for row, pipe in zip(rows, timed) if pipe is not None]
            seconds = time_four_clips([(pipe, row["steps"]) for row, pipe in measured], dtype, args.repeats)
            for (row, _), value in zip(measured, seconds):
                row[key] = value
            for row in rows:
                if key in row:
                    row[key + "_share"] = row[key] / rows[0][key]

    table = markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    return rows


if __name__ == "__main__":
    main()
