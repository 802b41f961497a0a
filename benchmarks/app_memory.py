"""What a classroom costs the app's server: memory per session, and the cold start.

    .venv/bin/python benchmarks/app_memory.py                       # 50 fresh sessions, the page's defaults
    .venv/bin/python benchmarks/app_memory.py --sessions 10 --samples 36 --steps 60   # the largest runs
    .venv/bin/python benchmarks/app_memory.py --cold-start-only     # only: start -> first served page

Starts `app.py` as a real server (a subprocess, on a free port), and times its cold start:
from the process start to the first served page (GET / answered 200). Then opens N fresh
gradio_client sessions one after the other, each runs one Generate (the page's defaults: 4
clips, 20 iterations, class guidance 5) and closes (with --keep-open: stays open), while a
thread samples the server's resident memory (VmRSS of the process, every 0.1 s). Reports the
RSS before the first session, the peak, and after the last one (after --settle seconds), and
the growth per session after the first (which also pays for one-time allocations).
A closed client ends its heartbeat, so the server's demo.unload drops its run at once; an
open one keeps its run until the store's limits (app.RUN_TTL_S, app.MAX_RUNS_MB) drop it.
The aim (issue 13): growth under 1 GB for 50 sessions, at most ~20 MB kept per session.
APP_MEMORY_TRACE=1 also prints every RSS sample and when each session ended.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the checkout
from tiny_dit.app.checks import SAMPLES_DEFAULT  # noqa: E402  (the page's defaults)
from tiny_dit.flow import DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model: str | None, timeout: float = 180.0) -> tuple[subprocess.Popen, float]:
    """app.py on `port`; returns (process, seconds from start to the first page served)."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port)] + (["--model", model] if model else [])
    start = time.perf_counter()
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - start < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"app.py exited with {server.returncode}:\n{server.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return server, time.perf_counter() - start
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise TimeoutError(f"app.py served no page within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/app_memory.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50, help="fresh client sessions, one Generate each (50)")
    parser.add_argument("--samples", type=int, default=SAMPLES_DEFAULT,
                        help=f"clips per Generate (the page's default, {SAMPLES_DEFAULT})")
    parser.add_argument("--steps", type=int, default=DEFAULT_NUM_INFERENCE_STEPS,
                        help=f"iterations per Generate (the page's default, {DEFAULT_NUM_INFERENCE_STEPS})")
    parser.add_argument("--model", default=None, help="pipeline folder for app.py --model (default: the bundle)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before the 'after' reading")
    parser.add_argument("--keep-open", action="store_true",
                        help="do not close the clients: every session stays open (its run kept until the store's "
                             "limits drop it), the worst case; by default each client closes after its Generate")
    parser.add_argument("--cold-start-only", action="store_true", help="only time the start to the first page")
    args = parser.parse_args(argv)

    port = free_port()
    server, cold = start_server(port, args.model)
    print(f"cold start: python app.py -> first page served in {cold:.1f} s (cpu count {os.cpu_count()})")
    if args.cold_start_only:
        server.terminate()
        server.wait(30)
        return {"cold_start_s": cold}

    from gradio_client import Client

    samples, stop = [], threading.Event()

    marks = []  # (time, sessions done)

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), rss_mb(server.pid)))
            time.sleep(0.1)

    try:
        time.sleep(1.0)
        before = rss_mb(server.pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        url, t0 = f"http://127.0.0.1:{port}/", time.perf_counter()
        after_each, open_clients = [], []
        for i in range(args.sessions):
            client = Client(url, verbose=False)
            client.predict("a red circle moving left on a black background", DEFAULT_GUIDANCE_SCALE, args.steps,
                           args.samples, i,
                           api_name="/generate")
            if args.keep_open:
                open_clients.append(client)
            else:
                client.close()  # its heartbeat ends: the server's demo.unload drops the session's run
            after_each.append(rss_mb(server.pid))
            marks.append((time.perf_counter(), i + 1))
            if (i + 1) % 10 == 0 or i + 1 == args.sessions or i < 3:
                print(f"  {i + 1} sessions, {time.perf_counter() - t0:.0f} s, RSS {after_each[-1]:.0f} MB",
                      flush=True)
        time.sleep(args.settle)
        after = rss_mb(server.pid)
        stop.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(30)
    peak_time, peak = max(samples + [(0.0, before), (0.0, after)], key=lambda s: s[1])
    during = next((n for t, n in marks if t >= peak_time), args.sessions + 1)  # the session running at the peak
    if os.environ.get("APP_MEMORY_TRACE"):
        for t, r in samples:
            print(f"trace {t - t0:7.2f} s {r:6.0f} MB")
        for t, n in marks:
            print(f"mark {t - t0:7.2f} s session {n} done")
    # The first Generate also pays for one-time allocations (torch's kernels and buffers, the
    # sampler's thread, Gradio's caches): the growth per session is measured after it.
    slope = (after - after_each[0]) / max(args.sessions - 1, 1)
    result = {"cold_start_s": cold, "before_mb": before, "peak_mb": peak, "after_mb": after,
              "after_first_mb": after_each[0], "growth_mb": after - before, "per_session_mb": slope}
    print(f"{args.sessions} {'open' if args.keep_open else 'closed'} sessions x 1 Generate ({args.samples} clips, "
          f"{args.steps} iterations): server RSS "
          f"before {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB; growth {after - before:+.0f} MB, "
          f"of which the first session {after_each[0] - before:+.0f} MB and then {slope:+.1f} MB a session; "
          f"the peak was during session {during}")
    return result


if __name__ == "__main__":
    main()
