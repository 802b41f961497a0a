"""How the app's queue serves a whole class at once: its size, one run at a time per session, and a
message that names the limit when one is reached.

A class opens the app in the same minute. On a 2-vCPU Space the sampler runs one request at a time
(the events that sample, Generate, the guidance and fast-model comparisons and a Sora task, share
Gradio's concurrency_id "sampler" with concurrency_limit 1: batching requests gains little on 2 cores), so the
others wait in Gradio's queue, first come first served. While a run waits, the page shows its place in
the queue and, once a run of that event has finished since the server started, the expected wait
(Gradio's estimate: the mean time of that event's runs so far, times the runs ahead).

The settings, read from the environment when the page is built (app.build_demo; QueueLimits.from_env):

    TINY_DIT_QUEUE_SIZE        how many sampling runs may wait at once (default 200: a class of 100 with room to
                               spare; one run per session means one per learner). One more is refused with a
                               message that names this limit. 0 or "none": no limit. Gradio's own queue (every
                               event, the views' too) is bounded at twice this, as a backstop.
    TINY_DIT_RUNS_PER_SESSION  how many sampling runs one session (a browser tab, a gradio_client Client) may have
                               waiting or under way at once (default 1): another is refused, with a message, until
                               that one is done or stopped, so that no learner (or script) holds several places
                               in the queue. 0 or "none": no limit.
    TINY_DIT_VIEW_CONCURRENCY  how many other events (the views inside the model, the forward process) run at once
                               (default 2, Gradio's default_concurrency_limit).
    TINY_DIT_BUSY_QUEUE        while at least this many sampling runs wait (default 8), a Generate makes
                               TINY_DIT_BUSY_SAMPLES clips (default 1) instead of the number asked, and says so:
                               each learner's turn is shorter, so the whole class waits less (docs/app.md measures
                               it). 0 or "none": always the number asked.

The limits are checked when a run asks to join the queue, before anything is queued (a Gradio validator
on each sampling event, `Admission.validator`), against Gradio's own record of the events waiting or
under way: a run that finished, was stopped or cancelled, or whose tab was closed no longer counts. A
refused run comes back as a validation error with the message: on the page, under the event's first
input (the prompt, or the Sora task); through gradio_client, a `gradio_client.exceptions.ValidationError`;
the server logs one line (`queue limit: ...`). Two runs of one session sent within the same instant can
both pass the per-session check (it reads the queue before either is in it); the page cannot do that
(a button's second click waits for its first run).
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Callable, Mapping

import gradio as gr

log = logging.getLogger("tiny-dit-app")

SAMPLER = "sampler"  # the concurrency_id of the events that sample: one of them runs at a time

QUEUE_SIZE_ENV = "TINY_DIT_QUEUE_SIZE"
RUNS_PER_SESSION_ENV = "TINY_DIT_RUNS_PER_SESSION"
VIEW_CONCURRENCY_ENV = "TINY_DIT_VIEW_CONCURRENCY"
QUEUE_SIZE_DEFAULT = 200
RUNS_PER_SESSION_DEFAULT = 1
VIEW_CONCURRENCY_DEFAULT = 2
BUSY_QUEUE_ENV = "TINY_DIT_BUSY_QUEUE"
BUSY_SAMPLES_ENV = "TINY_DIT_BUSY_SAMPLES"
BUSY_QUEUE_DEFAULT = 8
BUSY_SAMPLES_DEFAULT = 1
ENVIRONMENT_HELP = "\n".join([  # for --help (app.py)
    "queue settings (environment variables, tiny_dit/app/queue_limits.py):",
    f"  {QUEUE_SIZE_ENV}        sampling runs that may wait at once (default {QUEUE_SIZE_DEFAULT}; 0 or none: "
    "no limit)",
    f"  {RUNS_PER_SESSION_ENV}  sampling runs a session may have waiting or under way (default "
    f"{RUNS_PER_SESSION_DEFAULT}; 0 or none: no limit)",
    f"  {VIEW_CONCURRENCY_ENV}  views that run at once (default {VIEW_CONCURRENCY_DEFAULT})",
    f"  {BUSY_QUEUE_ENV}        while this many runs wait, a Generate makes ${BUSY_SAMPLES_ENV} clips (defaults "
    f"{BUSY_QUEUE_DEFAULT} and {BUSY_SAMPLES_DEFAULT}; 0 or none: always the number asked)"])


def _setting(environ: Mapping[str, str], name: str, default: int | None, *, unlimited: bool) -> int | None:
    """The whole number in $name (default when unset or empty); 0 or "none" mean no limit where
    `unlimited`. A ValueError that names the variable otherwise."""
    text = (environ.get(name) or "").strip()
    if not text:
        return default
    if unlimited and text.lower() in ("none", "0"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        accepted = "a whole number from 1 up, or 0 or 'none' for no limit" if unlimited else "a whole number from 1 up"
        raise ValueError(f"${name} must be {accepted}; got {text!r}.")
    return value


@dataclass(frozen=True)
class QueueLimits:
    """The queue's settings (see the module's docstring). None: no limit."""

    queue_size: int | None = QUEUE_SIZE_DEFAULT
    runs_per_session: int | None = RUNS_PER_SESSION_DEFAULT
    view_concurrency: int = VIEW_CONCURRENCY_DEFAULT
    busy_queue: int | None = BUSY_QUEUE_DEFAULT
    busy_samples: int = BUSY_SAMPLES_DEFAULT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "QueueLimits":
        environ = os.environ if environ is None else environ
        return cls(queue_size=_setting(environ, QUEUE_SIZE_ENV, QUEUE_SIZE_DEFAULT, unlimited=True),
                   runs_per_session=_setting(environ, RUNS_PER_SESSION_ENV, RUNS_PER_SESSION_DEFAULT,
                                             unlimited=True),
                   view_concurrency=_setting(environ, VIEW_CONCURRENCY_ENV, VIEW_CONCURRENCY_DEFAULT,
                                             unlimited=False),
                   busy_queue=_setting(environ, BUSY_QUEUE_ENV, BUSY_QUEUE_DEFAULT, unlimited=True),
                   busy_samples=_setting(environ, BUSY_SAMPLES_ENV, BUSY_SAMPLES_DEFAULT, unlimited=False))

    def samples_now(self, asked: int, waiting: int) -> tuple[int, str | None]:
        """How many clips a Generate makes while `waiting` sampling runs wait behind it, and the note that says
        why when that is fewer than `asked`: a long queue shortens every turn (TINY_DIT_BUSY_QUEUE)."""
        if self.busy_queue is None or waiting < self.busy_queue or asked <= self.busy_samples:
            return asked, None
        clips = "1 clip" if self.busy_samples == 1 else f"{self.busy_samples} clips"
        return self.busy_samples, (f"The queue is long ({waiting} runs waiting), so this run made {clips} instead "
                                   f"of {asked}: every turn is shorter and the whole class waits less "
                                   f"(${BUSY_QUEUE_ENV} = {self.busy_queue}). Generate again for more once the "
                                   "queue is short.")

    @property
    def gradio_max_size(self) -> int | None:
        """demo.queue(max_size=...): every event, the views' too; a backstop behind queue_size."""
        return None if self.queue_size is None else 2 * self.queue_size

    def describe(self) -> str:
        """One line for the server's start message."""
        size = "no limit" if self.queue_size is None else f"up to {self.queue_size} runs waiting"
        per = "no limit" if self.runs_per_session is None else f"{self.runs_per_session} at a time"
        busy = "never" if self.busy_queue is None else f"from {self.busy_queue} runs waiting"
        return (f"queue: {size} (${QUEUE_SIZE_ENV}), per session {per} (${RUNS_PER_SESSION_ENV}), "
                f"one sampling run at a time, {self.view_concurrency} views at a time (${VIEW_CONCURRENCY_ENV}), "
                f"{self.busy_samples} clip(s) a Generate {busy} (${BUSY_QUEUE_ENV})")


def queue_full_message(limits: QueueLimits, waiting: int) -> str:
    return (f"The queue is full: {waiting} runs are already waiting for the sampler, the most this app "
            f"accepts at once (${QUEUE_SIZE_ENV} = {limits.queue_size}). Nothing was queued: please try "
            "again in a minute.")


def per_session_message(limits: QueueLimits, pending: int) -> str:
    runs = "one run" if limits.runs_per_session == 1 else f"{limits.runs_per_session} runs"
    return (f"You already have {'a run' if pending == 1 else f'{pending} runs'} waiting or under way: this app "
            f"takes {runs} at a time from each learner (${RUNS_PER_SESSION_ENV} = {limits.runs_per_session}), so "
            "that everyone in the class gets a turn. Wait until it has finished (or press Stop), then try again.")


# ----------------------------------------------------------------------------
# Gradio's queue, read (it keeps every event waiting or under way until it has finished or is cancelled)
# ----------------------------------------------------------------------------


def waiting_runs(queue, concurrency_id: str = SAMPLER) -> int:
    """How many events of `concurrency_id` wait in Gradio's queue (`demo._queue`), not yet started."""
    event_queue = getattr(queue, "event_queue_per_concurrency_id", {}).get(concurrency_id)
    return len(event_queue.queue) if event_queue is not None else 0


def session_runs(queue, session: str | None, concurrency_id: str = SAMPLER) -> int:
    """How many events of `concurrency_id` that `session` has waiting or under way in Gradio's queue."""
    if not session:
        return 0
    events = list(getattr(queue, "event_ids_to_events", {}).values())
    return sum(1 for event in events if getattr(event, "session_hash", None) == session
               and getattr(event, "concurrency_id", None) == concurrency_id and getattr(event, "alive", True))


class Admission:
    """The check a sampling run passes before it joins the queue (a Gradio validator per event).
    `queue_of()`: Gradio's queue now (demo._queue; None before demo.queue())."""

    def __init__(self, limits: QueueLimits, queue_of: Callable[[], object]):
        self.limits, self.queue_of = limits, queue_of

    def refusal(self, session: str | None) -> str | None:
        """Why a new sampling run of `session` cannot join the queue now, or None when it can."""
        queue = self.queue_of()
        if queue is None:
            return None
        if self.limits.runs_per_session is not None:
            pending = session_runs(queue, session)
            if pending >= self.limits.runs_per_session:
                return per_session_message(self.limits, pending)
        if self.limits.queue_size is not None:
            waiting = waiting_runs(queue)
            if waiting >= self.limits.queue_size:
                return queue_full_message(self.limits, waiting)
        return None

    def validator(self, num_inputs: int, name: str = "run") -> Callable:
        """The validator of an event with `num_inputs` inputs: a coroutine (it runs on the server's event
        loop, where Gradio changes its queue, so it reads a consistent queue) that takes the inputs and the
        request, and returns one gr.validate per input: the first carries the refusal, if any."""

        async def validate(*args):
            request = args[num_inputs] if len(args) > num_inputs else None
            refusal = self.refusal(getattr(request, "session_hash", None))
            if refusal is not None:
                log.warning("queue limit: %s refused: %s", name, refusal)
            return [gr.validate(refusal is None, refusal or "")] + [gr.validate(True, "")] * (num_inputs - 1)

        # Gradio passes the request to a parameter annotated gr.Request, after the inputs.
        parameters = [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD)
                      for i in range(num_inputs)]
        parameters.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                            annotation=gr.Request))
        validate.__signature__ = inspect.Signature(parameters)
        validate.__annotations__ = {"request": gr.Request}
        validate.__name__ = validate.__qualname__ = f"admit_{name}"
        return validate
