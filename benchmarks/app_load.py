"""A class at once: N learners open the app in the same moment and each makes a visit.

    .venv/bin/python benchmarks/app_load.py --users 10             # starts app.py on a free port; the page's defaults
    .venv/bin/python benchmarks/app_load.py --users 30 --json app-load-30.json
    .venv/bin/python benchmarks/app_load.py --users 100 --json app-load-100.json
    .venv/bin/python benchmarks/app_load.py --users 8 --steps 2 --samples 1      # a quick try
    .venv/bin/python benchmarks/app_load.py --url http://127.0.0.1:7860/ --server-pid 1234 --users 30
    .venv/bin/python benchmarks/app_load.py --users 100 --server-env TINY_DIT_QUEUE_SIZE=50   # a limit, met

Starts `app.py` as a real server (a subprocess on a free port, its log in a temporary file; the queue
settings of tiny_dit/app/queue_limits.py from --queue-size, --runs-per-session and --server-env, else the
app's defaults), or uses the one at --url. One warm-up Generate first (the teacher's own try: after it
Gradio knows how long a run takes, and shows each learner the expected wait; --no-warmup skips it).
Then N gradio_client users, one thread each, released together. Each one's visit:
  1. connects (gradio_client.Client: GET config and API info), retried with backoff (--connect-tries),
     with one httpx timeout for every request (--http-timeout; httpx's own default is 5 s) and one SSL
     context shared by all clients (else each request loads the CA bundle: ~40 ms of client CPU);
  2. Generate (api "generate") at the page's defaults (4 clips, 20 iterations, the model's guidance) or
     --steps/--samples, with a prompt of its own (user i: the i-th seen colour-shape pair and a motion,
     "a green square moving up on a black background") and its own seed (--seed + i);
  3. one view of that run: "word_attention" (default: the prompt's colour word, every block, the last
     iteration), "attention" or "trajectory" (--view; "none": no view);
  4. for a share of the users (--sora-share, default 0.2), a Sora task: "animate" the bundled example image
     (assets/examples/red-circle.png, uploaded) with a prompt of its own motion;
  5. closes (its heartbeat ends: the server drops its session's run).
Reports completions (visits with every step done), errors by message, timeouts (connecting, or a result
later than --timeout), each user's wait for Generate from submit to result (median, 95th percentile,
maximum; also the part spent waiting in the queue, and the first expected wait Gradio announced), clips
per second, the server's peak memory (RSS, psutil or /proc, every 0.2 s: the process, and with its ffmpeg
children), and whether each user got their own run: the seed echoed in Generate's info and the Sora
task's text, the number of clips, the colour word in the word-attention view, and (a trained model only;
--colour-check) the colour of the object in the returned clips, read from the mp4 frames.
Client or server: the server's CPU time and the client's (this process) over the run, and the latency of
GET /gradio_api/queue/status, polled once a second (the server's event loop, which answers connections).
On one machine both share its cores: --url with the app on another machine measures the server alone.
The targets: 0 errors, 0 timeouts, every user their own clips, peak RSS at most 4 GB, and the
95th-percentile wait at most 1.2 x N x one user's sampler time (sampler concurrency 1): one Generate's run
time as the server reports it in its info line, plus the Sora tasks' share (they wait in the same queue).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the checkout
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry thread per client

from tiny_dit.data.shapes import COLORS, HELD_OUT_PAIRS, MOTIONS, SHAPES, caption  # noqa: E402
from tiny_dit.flow import DEFAULT_NUM_INFERENCE_STEPS  # noqa: E402  (the page's iterations)

EXAMPLE_IMAGE = ROOT / "assets" / "examples" / "red-circle.png"
VIEWS = ("word_attention", "attention", "trajectory", "none")
PEAK_RSS_TARGET_MB = 4096
TIMEOUT = "timeout"


# ----------------------------------------------------------------------------
# The class: who asks for what
# ----------------------------------------------------------------------------


def seen_pairs() -> list[tuple[str, str]]:
    """The colour-shape pairs seen in training, the colours changing fastest (consecutive users differ)."""
    return [(color, shape) for shape in SHAPES for color in COLORS if (color, shape) not in HELD_OUT_PAIRS]


def learner_prompt(i: int) -> tuple[str, str]:
    """User i's (prompt, colour): the i-th seen pair, a motion of its own (120 different prompts, then again)."""
    pairs = seen_pairs()
    color, shape = pairs[i % len(pairs)]
    motion = MOTIONS[(i // len(pairs)) % len(MOTIONS)]
    return caption(color, shape, motion, "black"), color


def takes_sora_task(i: int, share: float) -> bool:
    """Whether user i also runs a Sora task: `share` of the users, spread evenly (share 0.2: users 4, 9, ...)."""
    return int((i + 1) * share) > int(i * share)


# ----------------------------------------------------------------------------
# Checking that a user got their own clips
# ----------------------------------------------------------------------------


def file_path(value) -> str | None:
    """The local path in a gradio_client output: a path, or {"video": path, ...} / {"image": ...}."""
    if isinstance(value, dict):
        value = value.get("video") or value.get("image") or value.get("path")
        return file_path(value)
    return value if isinstance(value, str) else None


def clip_colour(path: str) -> str:
    """The colour (a name of shapes.COLORS) of the object in a clip: the median of the pixels far from the
    background (the median of the frames' borders), nearest colour; "none" without such pixels."""
    from tiny_dit.video import read_mp4

    frames = read_mp4(path)[0].astype(float)  # (T, H, W, 3)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]]).reshape(-1, 3)
    background = np.median(border, axis=0)
    far = np.linalg.norm(frames - background, axis=-1) > 80
    if far.sum() < 8:
        return "none"
    rgb = np.median(frames[far], axis=0)
    return min(COLORS, key=lambda name: float(np.linalg.norm(rgb - np.array(COLORS[name], float))))


def seed_echoed(text: str, seed: int) -> bool:
    return re.search(rf"\bseed {seed}\b", text or "") is not None


def clips_in_info(text: str) -> float | None:
    """The server's own time for a Generate run, from its info line ("**4 clips in 2.5 s**")."""
    found = re.search(r"\*\*\d+ clips? in ([\d.]+) s\*\*", text or "")
    return float(found.group(1)) if found else None


def sora_seconds(text: str) -> float | None:
    """The server's own time for a Sora task, from its text ("..., seed 7, 1.2 s.")."""
    found = re.search(r"seed \d+, ([\d.]+) s\.", text or "")
    return float(found.group(1)) if found else None


# ----------------------------------------------------------------------------
# One learner
# ----------------------------------------------------------------------------


@dataclass
class Visit:
    user: int
    prompt: str
    colour: str
    seed: int
    sora: bool
    connect_s: float | None = None
    connect_tries: int = 0
    submitted_at: float | None = None  # Generate submitted, seconds after the class was released
    result_at: float | None = None  # its result in (files downloaded)
    wait_s: float | None = None  # Generate: submit -> result
    queued_s: float | None = None  # submit -> the server started it (from the status updates)
    first_rank: int | None = None  # its first place in the queue, from 0
    first_eta_s: float | None = None  # the first expected wait Gradio announced
    run_s: float | None = None  # the server's own time for the run (its info line)
    clips: int = 0
    fewer: bool = False  # made fewer clips than asked because the queue was long (said in its info line)
    own_seed: bool | None = None
    clip_colours: list[str] = field(default_factory=list)
    own_colour: bool | None = None  # the clips' colour, most of them, is the prompt's (a trained model)
    view_s: float | None = None
    own_view: bool | None = None
    sora_s: float | None = None
    sora_run_s: float | None = None  # the server's own time for the Sora task (its text)
    own_sora: bool | None = None
    errors: list[str] = field(default_factory=list)  # "step: message"
    done: bool = False  # every step of the visit done, and each result its own

    def own(self) -> bool:
        """Every check of 'their own run' that was made passed: the seed in Generate's info and the Sora
        task's text, the number of clips, the colour word in the view. (The clips' colour is reported on
        its own: an imperfect model draws a wrong colour now and then, alone as well as in a class.)"""
        return all(check is not False for check in (self.own_seed, self.own_view, self.own_sora))


def error_message(error: BaseException) -> str:
    """One line for an error: its kind and message (timeouts named as such)."""
    import concurrent.futures

    import httpx

    if isinstance(error, (httpx.TimeoutException, TimeoutError, concurrent.futures.TimeoutError)):
        return f"{TIMEOUT} ({type(error).__name__})"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


_SSL_CONTEXT = []  # one for every client, made once


def ssl_context():
    """One SSL context for every client: gradio_client's httpx calls otherwise make one per request, loading
    the CA bundle each time (~40 ms of this process's CPU a request, http:// too), which on a shared machine
    takes CPU from the server and makes the clients a bottleneck of their own."""
    import ssl

    if not _SSL_CONTEXT:
        _SSL_CONTEXT.append(ssl.create_default_context())
    return _SSL_CONTEXT[0]


def connect(url: str, http_timeout: float, tries: int, download_dir: str) -> tuple[object, float, int]:
    """A gradio_client Client of `url`; retried after 1, 2, 4... s on errors. (client, seconds, tries)."""
    import httpx
    from gradio_client import Client

    start = time.perf_counter()
    for attempt in range(1, tries + 1):
        try:
            client = Client(url, verbose=False, download_files=download_dir, analytics_enabled=False,
                            ssl_verify=ssl_context(),
                            httpx_kwargs={"timeout": httpx.Timeout(http_timeout, connect=min(http_timeout, 30.0))})
            return client, time.perf_counter() - start, attempt
        except Exception:
            if attempt == tries:
                raise
            time.sleep(min(2.0 ** (attempt - 1), 16.0))
    raise AssertionError("unreachable")


def await_job(job, deadline: float, poll_s: float, visit: Visit | None = None, submitted: float = 0.0):
    """The job's result, noting in `visit` its first place and expected wait and when it started."""
    from gradio_client.utils import Status

    while not job.done():
        if time.perf_counter() > deadline:
            job.cancel()
            raise TimeoutError("no result before --timeout")
        if visit is not None:
            status = job.status()
            if status.code == Status.IN_QUEUE and visit.first_rank is None and status.rank is not None:
                visit.first_rank = status.rank
            if status.code == Status.IN_QUEUE and visit.first_eta_s is None and status.eta is not None:
                visit.first_eta_s = float(status.eta)
            if status.code in (Status.PROCESSING, Status.ITERATING, Status.PROGRESS) and visit.queued_s is None:
                visit.queued_s = time.perf_counter() - submitted
        time.sleep(poll_s)
    return job.result(timeout=max(deadline - time.perf_counter(), 1.0))


@dataclass
class Settings:
    url: str
    steps: int | None = None  # None: the page's
    samples: int | None = None
    sora_share: float = 0.2
    view: str = "word_attention"
    timeout: float = 1800.0  # seconds a user waits for a result at most
    http_timeout: float = 120.0
    connect_tries: int = 5
    colour_check: bool = False
    seed: int = 1000
    poll_s: float = 0.25
    download_dir: str = ""


def visit(settings: Settings, user: int, start: threading.Barrier | None) -> Visit:
    """User `user`'s visit (see the module's docstring); errors are recorded, never raised."""
    prompt, colour = learner_prompt(user)
    me = Visit(user, prompt, colour, settings.seed + user, takes_sora_task(user, settings.sora_share))
    if start is not None:
        start.wait()
    released = time.perf_counter()
    deadline = released + settings.timeout
    step, client = "connect", None
    try:
        client, me.connect_s, me.connect_tries = connect(settings.url, settings.http_timeout,
                                                        settings.connect_tries, settings.download_dir)
        step = "generate"
        asked = {key: value for key, value in (("steps", settings.steps), ("samples", settings.samples))
                 if value is not None}
        submitted = time.perf_counter()
        job = client.submit(prompt=prompt, seed=me.seed, api_name="/generate", **asked)
        _, _, clips, info = await_job(job, deadline, settings.poll_s, me, submitted)
        me.wait_s = time.perf_counter() - submitted
        me.submitted_at, me.result_at = submitted - released, submitted - released + me.wait_s
        me.run_s = clips_in_info(info)
        me.clips = len(clips or [])
        me.fewer = "The queue is long" in (info or "")  # fewer clips while the queue is long, said in the info
        asked_clips = settings.samples or me.clips
        me.own_seed = seed_echoed(info, me.seed) and me.clips > 0 and (
            me.clips == asked_clips or (me.fewer and me.clips < asked_clips))
        if settings.colour_check:
            me.clip_colours = [clip_colour(file_path(c)) for c in clips]
            me.own_colour = Counter(me.clip_colours).most_common(1)[0][0] == colour
        iteration = settings.steps or DEFAULT_NUM_INFERENCE_STEPS
        if settings.view != "none":
            step, t = settings.view, time.perf_counter()
            if settings.view == "word_attention":  # word 1 of "a <colour> <shape> ...": the colour
                _, text = await_job(client.submit(1, "mean", iteration, api_name="/word_attention"), deadline,
                                    settings.poll_s)
                me.own_view = f'"{colour}"' in text
            elif settings.view == "attention":
                await_job(client.submit(0, "mean", iteration, api_name="/attention"), deadline, settings.poll_s)
            else:
                await_job(client.submit(max(iteration // 2, 1), api_name="/trajectory"), deadline, settings.poll_s)
            me.view_s = time.perf_counter() - t
        if me.sora:
            from gradio_client import handle_file

            step, t = "sora_task", time.perf_counter()
            motion = MOTIONS[user % 4]  # the image is a red circle; the motion is the learner's
            job = client.submit(task="animate", prompt=caption("red", "circle", motion, "black"),
                                image=handle_file(str(EXAMPLE_IMAGE)), clip=None, clip_b=None, seed=me.seed,
                                api_name="/sora_task",
                                **({"steps": settings.steps} if settings.steps else {}))
            _, _, text = await_job(job, deadline, settings.poll_s)
            me.sora_s = time.perf_counter() - t
            me.sora_run_s = sora_seconds(text)
            me.own_sora = seed_echoed(text, me.seed)
        me.done = me.own()
    except Exception as error:  # noqa: BLE001  (every failure is a result here)
        me.errors.append(f"{step}: {error_message(error)}")
    finally:
        if client is not None:
            client.close()
    return me


# ----------------------------------------------------------------------------
# Watching the server
# ----------------------------------------------------------------------------


def rss_mb(pid: int, children: bool = False) -> float | None:
    """Resident memory of process `pid` (and its children), MB; None if it cannot be read."""
    try:
        import psutil

        process = psutil.Process(pid)
        processes = [process] + (process.children(recursive=True) if children else [])
        total = 0
        for p in processes:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20
    except ImportError:
        pids = [pid]
        if children:
            try:
                pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                pass
        total = 0.0
        for p in pids:
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                pass
        return total or None
    except Exception:  # noqa: BLE001  (the process is gone)
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (its threads, not its children)."""
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except Exception:  # noqa: BLE001
        return None


def listening_pid(url: str) -> int | None:
    """The process listening on `url`'s port on this machine, if psutil can tell."""
    try:
        import psutil
        from urllib.parse import urlparse

        port = urlparse(url).port
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except Exception:  # noqa: BLE001  (no psutil, or no permission)
        pass
    return None


class Watcher:
    """Samples the server's RSS every 0.2 s and its queue-status latency every second, in threads."""

    def __init__(self, url: str, pid: int | None):
        self.url, self.pid = url.rstrip("/"), pid
        self.rss, self.tree_rss, self.latencies, self.probe_errors = [], [], [], 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._memory, daemon=True),
                        threading.Thread(target=self._probe, daemon=True)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(5)

    def _memory(self):
        while self.pid and not self.stop.is_set():
            for values, children in ((self.rss, False), (self.tree_rss, True)):
                value = rss_mb(self.pid, children)
                if value is not None:
                    values.append(value)
            self.stop.wait(0.2)

    def _probe(self):
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.url}/gradio_api/queue/status", timeout=30) as response:
                    response.read()
                self.latencies.append(time.perf_counter() - start)
            except OSError:
                self.probe_errors += 1
            self.stop.wait(1.0)


# ----------------------------------------------------------------------------
# The class, and its report
# ----------------------------------------------------------------------------


def spread(values: list[float]) -> dict | None:
    """Median, 95th percentile (linear) and maximum of `values`; None if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "max": float(max(values)),
            "n": len(values)}


def run_class(settings: Settings, users: int, server_pid: int | None = None) -> dict:
    """`users` learners at once against the app at settings.url: the results (see summarise)."""
    owned_dir = None
    if not settings.download_dir:
        owned_dir = tempfile.TemporaryDirectory(prefix="app-load-")
        settings.download_dir = owned_dir.name
    visits: list[Visit | None] = [None] * users
    start = threading.Barrier(users + 1)
    ssl_context()  # made before the threads race for it

    def one(i: int):
        visits[i] = visit(settings, i, start)

    threads = [threading.Thread(target=one, args=(i,), name=f"learner-{i}", daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    cpu_before = (cpu_seconds(server_pid) if server_pid else None, cpu_seconds(os.getpid()))
    rss_before = rss_mb(server_pid) if server_pid else None
    with Watcher(settings.url, server_pid) as watcher:
        t0 = time.perf_counter()
        start.wait()
        deadline = t0 + settings.timeout + settings.connect_tries * (settings.http_timeout + 16) + 60
        for thread in threads:
            thread.join(max(deadline - time.perf_counter(), 0.1))
        wall = time.perf_counter() - t0
    cpu_after = (cpu_seconds(server_pid) if server_pid else None, cpu_seconds(os.getpid()))
    try:
        return summarise([v for v in visits if v is not None], settings, users, wall, watcher, rss_before,
                         [None if a is None or b is None else b - a for a, b in zip(cpu_before, cpu_after)])
    finally:
        if owned_dir is not None:
            owned_dir.cleanup()
            settings.download_dir = ""


def summarise(visits: list[Visit], settings: Settings, users: int, wall: float, watcher: Watcher,
              rss_before: float | None, cpu: list[float | None]) -> dict:
    errors = Counter(e for v in visits for e in v.errors)
    if len(visits) < users:  # a visit that never came back (its thread still waits)
        errors[f"visit: {TIMEOUT} (never finished)"] += users - len(visits)
    generated = [v for v in visits if v.wait_s is not None]
    clips = sum(v.clips for v in generated)
    first_submit_to_last = (max((v.result_at for v in generated), default=0.0)
                            - min((v.submitted_at for v in generated), default=0.0))
    colours = [v for v in visits if v.own_colour is not None]
    run_times = [v.run_s for v in generated if v.run_s is not None]
    one_run = float(np.median(run_times)) if run_times else None
    sora_times = [v.sora_run_s for v in visits if v.sora_run_s is not None]
    # The sampler's work per user: one Generate, and the Sora tasks' share (they wait in the same queue).
    per_user = None if one_run is None else one_run + (
        float(np.median(sora_times)) * sum(v.sora for v in visits) / len(visits) if sora_times else 0.0)
    waits = spread([v.wait_s for v in generated])
    bound = 1.2 * users * per_user if per_user is not None else None
    peak = max(watcher.rss, default=None)
    eta_ratio = [v.wait_s / v.first_eta_s for v in generated if v.first_eta_s]
    results = {
        "users": users,
        "settings": {k: v for k, v in asdict(settings).items() if k != "download_dir"},
        "wall_s": wall,
        "completed": sum(v.done for v in visits),
        "generated": len(generated),
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "timeouts": sum(n for e, n in errors.items() if TIMEOUT in e),
        "queue_full": sum(n for e, n in errors.items() if "queue is full" in e.lower()),
        "own_runs": sum(v.own() and v.wait_s is not None for v in visits),
        "crossed": [v.user for v in visits if not v.own()],
        "colour_checked": len(colours),
        "colour_matches": sum(v.own_colour for v in colours),
        "colour_mismatches": [(v.user, v.colour, v.clip_colours) for v in colours if not v.own_colour],
        "wait_s": waits,
        "queued_s": spread([v.queued_s for v in generated]),
        "first_eta_s": spread([v.first_eta_s for v in generated]),
        "wait_over_first_eta": spread(eta_ratio),
        "connect_s": spread([v.connect_s for v in visits]),
        "connect_retries": sum(max(v.connect_tries - 1, 0) for v in visits),
        "view_s": spread([v.view_s for v in visits]),
        "sora_s": spread([v.sora_s for v in visits]),
        "one_generate_s": one_run,
        "one_sora_task_s": float(np.median(sora_times)) if sora_times else None,
        "sampler_s_per_user": per_user,
        "clips": clips,
        "fewer_clips": sum(v.fewer for v in generated),  # runs cut to $TINY_DIT_BUSY_SAMPLES while the queue was long
        "clips_per_s": clips / first_submit_to_last if first_submit_to_last > 0 else None,
        "p95_target_s": bound,
        "server_rss_before_mb": rss_before,
        "server_rss_peak_mb": peak,
        "server_tree_rss_peak_mb": max(watcher.tree_rss, default=None),
        "server_cpu_s": cpu[0],
        "client_cpu_s": cpu[1],
        "cpu_count": os.cpu_count(),
        "status_latency_s": spread(watcher.latencies),
        "status_probe_errors": watcher.probe_errors,
        "visits": [asdict(v) for v in visits],
    }
    results["targets"] = {
        "no_errors": results["error_count"] == 0,
        "no_timeouts": results["timeouts"] == 0,
        "every_user_own_clips": results["own_runs"] == users,
        "peak_rss_at_most_4_gb": None if peak is None else peak <= PEAK_RSS_TARGET_MB,
        "p95_wait_within_1.2_n_runs": None if bound is None or waits is None else waits["p95"] <= bound,
    }
    return results


def report(results: dict) -> str:
    """The results as a few lines of text."""
    def s(d, unit="s"):
        if d is None:
            return "-"
        return f"median {d['median']:.1f} {unit}, p95 {d['p95']:.1f} {unit}, max {d['max']:.1f} {unit} (n={d['n']})"

    def mb(x):
        return "-" if x is None else f"{x:,.0f} MB"

    def secs(x, spec=".0f"):
        return "-" if x is None else f"{format(x, spec)} s"

    r = results
    lines = [f"{r['users']} users at once: {r['completed']} visits completed, {r['generated']} Generate results, "
             f"{r['error_count']} errors ({r['timeouts']} timeouts, {r['queue_full']} 'queue is full'), "
             f"{r['own_runs']} users with their own run" + (f" (not: users {r['crossed']})" if r['crossed'] else ""),
             f"Generate, submit -> result: {s(r['wait_s'])}",
             f"  of which waiting in the queue: {s(r['queued_s'])}",
             f"  first expected wait shown: {s(r['first_eta_s'])}; "
             f"actual / expected: {s(r['wait_over_first_eta'], 'x')}",
             f"  on the server (medians of the info lines): one Generate {secs(r['one_generate_s'], '.2f')}, "
             f"one Sora task {secs(r['one_sora_task_s'], '.2f')}; per user {secs(r['sampler_s_per_user'], '.2f')}; "
             f"target p95 <= 1.2 x N x that = {secs(r['p95_target_s'], '.0f')}",
             f"clips: {r['clips']}, {'-' if r['clips_per_s'] is None else format(r['clips_per_s'], '.2f')} clips/s "
             f"(first submit to last result); wall {r['wall_s']:.0f} s; {r['fewer_clips']} runs made fewer clips "
             f"while the queue was long",
             f"colour of the clips (most of a user's): {r['colour_matches']} of {r['colour_checked']} users checked "
             f"as asked" + (f"; not: {r['colour_mismatches']}" if r['colour_mismatches'] else ""),
             f"view: {s(r['view_s'])}; Sora task: {s(r['sora_s'])}",
             f"connect: {s(r['connect_s'])}, {r['connect_retries']} retries",
             f"server RSS: before {mb(r['server_rss_before_mb'])}, peak {mb(r['server_rss_peak_mb'])} "
             f"(with ffmpeg children {mb(r['server_tree_rss_peak_mb'])})",
             f"CPU over the run ({r['cpu_count']} cores): server {secs(r['server_cpu_s'])}, client (this process) "
             f"{secs(r['client_cpu_s'])}; "
             f"GET queue/status: {s(r['status_latency_s'])}, {r['status_probe_errors']} failed"]
    if r["errors"]:
        lines.append("errors:")
        lines += [f"  {n} x {message}" for message, n in sorted(r["errors"].items(), key=lambda e: -e[1])]
    lines.append("targets: " + ", ".join(f"{k} {'-' if v is None else 'yes' if v else 'NO'}"
                                         for k, v in r["targets"].items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model: str | None, env: dict[str, str], log_path: Path,
                 timeout: float = 300.0) -> subprocess.Popen:
    """app.py on `port` with `env` added to the environment, its output in `log_path`; returns when it serves."""
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port)] + (["--model", model] if model else [])
    log = open(log_path, "w")
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **env},
                              stdout=log, stderr=subprocess.STDOUT, text=True)
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"app.py exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise TimeoutError(f"app.py served no page within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def warm_up(settings: Settings) -> float:
    """One Generate at the benchmark's settings (the teacher's try): seconds, submit to result."""
    client, _, _ = connect(settings.url, settings.http_timeout, settings.connect_tries, settings.download_dir)
    try:
        asked = {k: v for k, v in (("steps", settings.steps), ("samples", settings.samples)) if v is not None}
        start = time.perf_counter()
        client.predict(prompt=learner_prompt(0)[0], seed=0, api_name="/generate", **asked)
        return time.perf_counter() - start
    finally:
        client.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/app_load.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10, help="learners at once (default 10; measured: 10, 30, 100)")
    parser.add_argument("--url", default=None, help="a running app (default: start app.py on a free port)")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="with --url: the server's process id, for its memory and CPU (default: found by port)")
    parser.add_argument("--model", default=None, help="pipeline folder for app.py --model (default: the bundle)")
    parser.add_argument("--steps", type=int, default=None, help="iterations per Generate and Sora task "
                                                                "(default: the page's, 20)")
    parser.add_argument("--samples", type=int, default=None, help="clips per Generate (default: the page's, 4)")
    parser.add_argument("--sora-share", type=float, default=0.2,
                        help="share of the users who also run a Sora task (default 0.2)")
    parser.add_argument("--view", choices=VIEWS, default="word_attention", help="the view each user opens")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds a user waits for each result at most, all steps together (default 1800)")
    parser.add_argument("--http-timeout", type=float, default=120.0,
                        help="gradio_client's httpx timeout for each request (default 120 s; httpx's own: 5 s)")
    parser.add_argument("--connect-tries", type=int, default=5, help="tries to connect, with backoff (default 5)")
    parser.add_argument("--colour-check", choices=("auto", "yes", "no"), default="auto",
                        help="judge the object's colour in each returned clip (auto: unless the server's log says "
                             "it runs an untrained stand-in; with --url: yes)")
    parser.add_argument("--seed", type=int, default=1000, help="user i's seed is this + i (default 1000)")
    parser.add_argument("--no-warmup", action="store_true", help="no warm-up Generate before the class")
    parser.add_argument("--threads", type=int, default=None, help="the started server's TINY_DIT_THREADS")
    parser.add_argument("--queue-size", default=None, help="the started server's TINY_DIT_QUEUE_SIZE")
    parser.add_argument("--runs-per-session", default=None, help="the started server's TINY_DIT_RUNS_PER_SESSION")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the started server (repeatable), e.g. MALLOC_ARENA_MAX=2")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results (and every visit) here")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")
    if not 0 <= args.sora_share <= 1:
        parser.error("--sora-share must be from 0 to 1")
    env = {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--server-env wants NAME=VALUE; got {item!r}")
        env[name] = value
    for name, value in (("TINY_DIT_THREADS", args.threads), ("TINY_DIT_QUEUE_SIZE", args.queue_size),
                        ("TINY_DIT_RUNS_PER_SESSION", args.runs_per_session)):
        if value is not None:
            env[name] = str(value)
    if args.url and env:
        parser.error("--threads, --queue-size, --runs-per-session and --server-env set up a started server; "
                     "with --url, set them where that app runs")

    server, pid, workdir = None, args.server_pid, tempfile.TemporaryDirectory(prefix="app-load-")
    log_path, files = Path(workdir.name) / "server.log", Path(workdir.name) / "files"  # the clients' downloads
    files.mkdir()
    try:
        if args.url:
            url = args.url
            pid = pid or listening_pid(url)
        else:
            port = free_port()
            start = time.perf_counter()
            server = start_server(port, args.model, env, log_path)
            url, pid = f"http://127.0.0.1:{port}/", server.pid
            print(f"app.py on {url} (pid {pid}) in {time.perf_counter() - start:.1f} s; "
                  + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
        untrained = server is not None and "untrained" in log_path.read_text()
        colour_check = args.colour_check == "yes" or (args.colour_check == "auto" and not untrained)
        settings = Settings(url=url, steps=args.steps, samples=args.samples, sora_share=args.sora_share,
                            view=args.view, timeout=args.timeout, http_timeout=args.http_timeout,
                            connect_tries=args.connect_tries, colour_check=colour_check, seed=args.seed,
                            download_dir=str(files))
        warmup = None
        if not args.no_warmup:
            warmup = warm_up(settings)
            print(f"warm-up Generate: {warmup:.1f} s", flush=True)
        print(f"{args.users} users, released together: Generate at "
              f"{args.samples or 'the page default'} clips, {args.steps or 'the page default'} iterations; "
              f"view {args.view}; Sora task for {args.sora_share:.0%}; colour check {'on' if colour_check else 'off'}",
              flush=True)
        results = run_class(settings, args.users, pid)
        results["warmup_s"] = warmup
        results["server_env"] = env
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            limit_lines = [line for line in log_path.read_text().splitlines() if "queue limit" in line]
            if limit_lines:
                print(f"server log: {len(limit_lines)} runs refused at a limit, e.g. {limit_lines[0]}")
        workdir.cleanup()
    print(report(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
