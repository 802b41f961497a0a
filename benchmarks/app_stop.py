"""How fast a run stops: job.cancel() on the largest run the page allows, and the next Generate.

    .venv/bin/python benchmarks/app_stop.py                   # 36 clips, 60 iterations (the page's maximum)
    .venv/bin/python benchmarks/app_stop.py --samples 8 --steps 30

Starts `app.py` as a real server (benchmarks/app_memory.py's start_server), submits a
Generate through gradio_client, waits until it reports iteration --after, then times:
  * cancel:  job.cancel() returning (Gradio cancels the event once the generator yields,
             and the app yields after every iteration);
  * stopped: until the server's CPU use drops (the sampler thread has let go: the process
             uses < 0.3 CPU-seconds per second);
  * next:    a new Generate (1 clip, 2 iterations) from the same client, click to result.
One iteration of the run, for scale, is printed too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_memory import free_port, start_server  # noqa: E402
from tiny_dit.app.checks import SAMPLES_MAX as MAX_VIDEOS, STEPS_MAX  # noqa: E402  (the page's most)
from tiny_dit.flow import DEFAULT_GUIDANCE_SCALE  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks (100 Hz)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/app_stop.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=MAX_VIDEOS, help=f"the page's most ({MAX_VIDEOS})")
    parser.add_argument("--steps", type=int, default=STEPS_MAX, help=f"the page's most ({STEPS_MAX})")
    parser.add_argument("--after", type=int, default=3, help="cancel once this iteration is reported (3)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    from gradio_client import Client

    server, cold = start_server(free_port(), args.model)
    try:
        url = f"http://127.0.0.1:{server.args[3]}/"
        client = Client(url, verbose=False)
        job = client.submit("a red circle moving left on a black background", DEFAULT_GUIDANCE_SCALE, args.steps,
                            args.samples, 0,
                            api_name="/generate")
        marks = {}
        while args.after not in marks:
            for out in job.outputs():
                text = str(out[3])
                for k in (1, args.after):
                    if text.startswith(f"Iteration {k} of") and k not in marks:
                        marks[k] = time.perf_counter()
            time.sleep(0.01)
        iteration = (marks[args.after] - marks[1]) / max(args.after - 1, 1)
        start = time.perf_counter()
        job.cancel()
        cancel = time.perf_counter() - start
        previous = (cpu_seconds(server.pid), time.perf_counter())
        while True:
            time.sleep(0.1)
            now = (cpu_seconds(server.pid), time.perf_counter())
            if (now[0] - previous[0]) / (now[1] - previous[1]) < 0.3:
                break
            previous = now
        stopped = previous[1] - start
        start = time.perf_counter()
        result = client.predict("a red circle moving left on a black background", DEFAULT_GUIDANCE_SCALE, 2, 1, 0,
                                api_name="/generate")
        following = time.perf_counter() - start
        client.close()
    finally:
        server.terminate()
        server.wait(30)
    print(f"{args.samples} clips x {args.steps} iterations: one iteration {iteration:.2f} s; job.cancel() returned "
          f"in {cancel:.2f} s, the sampler stopped within {stopped:.2f} s; the next Generate (1 clip, 2 "
          f"iterations) took {following:.2f} s: {result[3].splitlines()[0]}")
    return {"iteration_s": iteration, "cancel_s": cancel, "stopped_s": stopped, "next_s": following}


if __name__ == "__main__":
    main()
