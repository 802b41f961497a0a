"""How long the app makes a user wait: from the click to the first live preview, and to the full result.

    python benchmarks/app_latency.py                          # the bundled model, the app's default settings
    python benchmarks/app_latency.py --model runs/dit-small/pipeline --threads 2 --repeats 5
    python benchmarks/app_latency.py --samples 16 --steps 30

Calls the Generate function of app.py exactly as the page does (the same generator the
click runs: prompt and input checks, sampling with the attention/adaLN recording and the
live preview, decoding, CLIP scores, writing the mp4 files), with the page's defaults
(4 clips, 20 iterations, class guidance 5), and times
  * first preview: until it yields the first decoded pred_x0 preview (after iteration 1);
  * result:        until it yields the grid video and the clips (what the click waits for);
  * views:         rendering every "Inside the model" view of that run afterwards.
Without a server or browser, so the network and Gradio's own queue are not included.
One warm-up run first (it pays for lazy initialisation); then the median and the range of --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/app_latency.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="pipeline folder or Hub repo id (default: $TINY_DIT_MODEL, else the bundled model)")
    parser.add_argument("--prompt", default="a red circle moving left on a black background")
    parser.add_argument("--samples", type=int, default=None, help="clips (default: the page's, 4)")
    parser.add_argument("--steps", type=int, default=None, help="iterations (default: the page's, 20)")
    parser.add_argument("--guidance", type=float, default=None, help="class guidance (default: the page's, the model's guider's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    import torch

    import app
    from tiny_dit.pipeline import DEFAULT_NUM_INFERENCE_STEPS

    if args.threads:
        torch.set_num_threads(args.threads)
    samples = args.samples or app.SAMPLES_DEFAULT
    steps = args.steps or DEFAULT_NUM_INFERENCE_STEPS

    t0 = time.perf_counter()
    pipe, name, notices = app.load_pipeline(args.model)
    loaded = time.perf_counter() - t0
    for notice in notices:
        print(f"note: {notice}")
    teaching_app = app.TinyDiTApp(pipe, name, notices)
    guidance = pipe.default_guider.guidance_scale if args.guidance is None else args.guidance
    g = teaching_app.geometry
    print(f"model: {name} ({g.num_frames} frames of {g.width}x{g.height}, {g.num_tokens} tokens, "
          f"{g.depth} blocks), loaded in {loaded:.1f} s; torch threads: {torch.get_num_threads()}, "
          f"cpu count: {os.cpu_count()}")
    print(f"settings: {samples} clips, {steps} iterations, class guidance {guidance:g}, prompt {args.prompt!r}")

    def one_run(seed: int) -> dict:
        start = time.perf_counter()
        first = None
        for out in teaching_app.generate(args.prompt, guidance, steps, samples, seed):
            if first is None and out[0] is not None:
                first = time.perf_counter() - start
        result = time.perf_counter() - start
        record = out[4]
        t = time.perf_counter()
        teaching_app.inside(record)
        views = time.perf_counter() - t
        return {"first_preview": first, "result": result, "views": views,
                "per_iteration": record.timings["denoise"] / steps, "record_mb": record.nbytes / 1e6}

    one_run(seed=0)  # warm-up
    runs = [one_run(seed=i + 1) for i in range(args.repeats)]
    summary = {}
    print(f"\n{'':24s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for key, label in [("first_preview", "click -> first preview"), ("result", "click -> full result"),
                       ("views", "views of the run"), ("per_iteration", "one iteration")]:
        values = [r[key] for r in runs]
        summary[key] = statistics.median(values)
        print(f"{label:24s} {summary[key]:7.2f}s {min(values):7.2f}s {max(values):7.2f}s")
    print(f"recorded run (kept in the page's state): {runs[0]['record_mb']:.0f} MB")
    return summary


if __name__ == "__main__":
    main()
