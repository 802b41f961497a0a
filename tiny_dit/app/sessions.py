"""What the app keeps per session, bounded: the finished run its views show (RunStore) and
the run under way, so that Stop can stop it (ActiveRuns).

A finished run (tiny_dit.inside.recorder.RunRecord after `slim()`) is ~6 MB at the app's
defaults and at most ~17 MB (60 iterations); attention maps are recomputed on demand, not
kept. The page's gr.State holds only a RunHandle (a key); the store owns the records:
  * one run per session: a new Generate replaces the session's previous run;
  * dropped when the session closes (the page's demo.unload event, when the browser tab
    goes away), when Gradio deletes the state (its time_to_live), and after `ttl_s` unused;
  * the least recently used runs are dropped once all runs together exceed `max_bytes`
    (views of a dropped run ask for a new Generate).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator

from tiny_dit.app.checks import check_record, user_error
from tiny_dit.inside.recorder import RunCancelled, RunRecord, StepEvent, iter_run
from tiny_dit.schedulers import transformer_passes

LOCAL_SESSION = "local"  # calls without a Gradio request (tests, scripts)


def release_free_memory() -> None:
    """Hand memory that was freed back to the system (glibc's malloc_trim; a no-op elsewhere).
    A run frees ~100 MB of temporaries in several threads' malloc arenas; without this the
    process keeps much of it, and RSS creeps up by a few MB a session on top of what is kept."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def session_of(request) -> str:
    """The Gradio session of a request (gr.Request), or LOCAL_SESSION without one."""
    return getattr(request, "session_hash", None) or LOCAL_SESSION


@dataclass(frozen=True)
class RunHandle:
    """What the page's state holds: the name of a run in the RunStore."""

    key: str
    session: str

    def __deepcopy__(self, memo):  # immutable and tiny
        return self


@dataclass
class _Entry:
    record: object
    session: str
    nbytes: int
    last_used: float = field(default_factory=time.monotonic)


class RunStore:
    """Finished runs, bounded in number per session, in age and in total bytes (see above)."""

    def __init__(self, max_bytes: int = 300 * 10**6, ttl_s: float = 1800.0):
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._by_session: dict[str, str] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        """The store itself: there is one, the server's, and a copy of it is never wanted. Gradio deep-copies
        its page config for every GET /config and page load (gradio.utils.safe_deepcopy), and that config
        holds gr.State's delete_callback, this store's bound `drop`: a deepcopy of a bound method copies its
        object, so each connection copied every kept run and the transformer their records point to (~80 MB
        for the bundled model) before failing at the lock and starting over shallow. A class connecting at
        once did that tens of times in parallel (benchmarks/app_load.py, 30 users: peak RSS 3.4 GB, 1.3 GB without)."""
        return self

    def __copy__(self):
        return self

    def put(self, session: str, record) -> RunHandle:
        """Keep `record` as `session`'s run (replacing its previous one); returns its handle."""
        key = uuid.uuid4().hex
        with self._lock:
            old = self._by_session.pop(session, None)
            if old is not None:
                self._entries.pop(old, None)
            self._entries[key] = _Entry(record, session, int(getattr(record, "nbytes", 0)))
            self._by_session[session] = key
            self._evict()
        return RunHandle(key, session)

    def get(self, handle: RunHandle):
        """The run of `handle`, or None if it was dropped."""
        with self._lock:
            self._evict()
            entry = self._entries.get(handle.key)
            if entry is None:
                return None
            entry.last_used = time.monotonic()
            self._entries.move_to_end(handle.key)
            return entry.record

    def record_of(self, state):
        """The run a view is asked about: the page's state (a RunHandle) or a RunRecord itself; a
        gr.Error that says what to do when there is none."""
        if isinstance(state, RunHandle):
            record = self.get(state)
            if record is None:
                raise user_error("This run is no longer kept on the server (runs are dropped after "
                                 f"{int(self.ttl_s) // 60} minutes unused, or when many sessions are open): press "
                                 "Generate again.")
            return record
        return check_record(state)

    def drop(self, handle) -> None:
        """Forget the run of `handle` (gr.State's delete_callback); None and unknown handles are ignored."""
        if not isinstance(handle, RunHandle):
            return
        with self._lock:
            entry = self._entries.pop(handle.key, None)
            if entry is not None and self._by_session.get(entry.session) == handle.key:
                del self._by_session[entry.session]

    def drop_session(self, session: str) -> None:
        """Forget `session`'s run (the session closed)."""
        with self._lock:
            key = self._by_session.pop(session, None)
            if key is not None:
                self._entries.pop(key, None)

    def _evict(self) -> None:  # with the lock held
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if now - e.last_used > self.ttl_s]:
            self._remove(key)
        while self._entries and self.total_bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        if self._by_session.get(entry.session) == key:
            del self._by_session[entry.session]

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class ActiveRun:
    """A Generate run under way: Stop sets `cancel`; the sampler sets `done` when it has exited."""

    num_steps: int
    started: float = field(default_factory=time.perf_counter)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    steps_done: int = 0
    preview: object = None  # the last live preview shown

    def status(self) -> str:
        elapsed = time.perf_counter() - self.started
        return (f"**Stopped** after iteration {self.steps_done} of {self.num_steps} ({elapsed:.1f} s). "
                + ("The preview shows the model's last guess of the clean clips. " if self.preview is not None
                   else "") + "Press Generate to start a new run.")


class ActiveRuns:
    """The run under way in each session (at most one: the queue runs one Generate at a time)."""

    def __init__(self):
        self._runs: dict[str, ActiveRun] = {}
        self._lock = threading.Lock()

    def start(self, session: str, num_steps: int) -> ActiveRun:
        run = ActiveRun(num_steps)
        with self._lock:
            previous = self._runs.get(session)
            self._runs[session] = run
        if previous is not None:
            previous.cancel.set()
        return run

    def finish(self, session: str, run: ActiveRun) -> None:
        with self._lock:
            if self._runs.get(session) is run:
                del self._runs[session]

    def get(self, session: str) -> ActiveRun | None:
        with self._lock:
            return self._runs.get(session)

    def sample(self, session: str, pipe, prompt: str, *, seed: int, guidance_scale: float,
               num_inference_steps: int, num_videos: int, lock: threading.Lock,
               make_preview: Callable, guider: str | None = None) -> Iterator[StepEvent | RunRecord]:
        """`session`'s run under way (tiny_dit.inside.recorder.iter_run, ~5 previews; `guider`: a name of
        tiny_dit.guiders.GUIDERS, None: the pipeline's own): yields a StepEvent
        after every transformer pass, then the RunRecord. Stop (`stop`) or closing this generator
        stops the sampler within one DiT block; a stopped run raises a gr.Error titled "Stopped"."""
        run = self.start(session, transformer_passes(pipe.scheduler, num_inference_steps))
        preview_every = max(1, round(num_inference_steps / 5))  # each preview is decoded, sent and drawn
        try:
            for event in iter_run(pipe, prompt, seed=seed, guidance_scale=guidance_scale, guider=guider,
                                  num_inference_steps=num_inference_steps, num_videos=num_videos,
                                  preview_every=preview_every, lock=lock, cancel=run.cancel, done=run.done,
                                  make_preview=make_preview):
                if isinstance(event, RunRecord):
                    yield event
                    return
                run.steps_done = event.step + 1
                if event.preview is not None:
                    run.preview = event.preview
                yield event
        except RunCancelled:
            raise user_error(run.status().replace("**", ""), title="Stopped") from None
        finally:
            run.cancel.set()  # a no-op after a finished run; stops the sampler if this generator was closed
            self.finish(session, run)
        raise user_error("The run stopped before it finished.", title="Stopped")

    def stop(self, session: str, wait_s: float):
        """Stop `session`'s run and wait (at most `wait_s`) until its sampler has let go. Returns the
        run (its last preview and status line), or None when none is under way."""
        run = self.get(session)
        if run is not None:
            run.cancel.set()
            run.done.wait(wait_s)
        return run
