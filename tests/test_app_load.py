"""A class at once, small: the load benchmark's visits (benchmarks/app_load.py) against the app served on
the tiny random pipeline, and the queue's limits (tiny_dit/app/queue_limits.py) met on purpose.

Nothing here depends on the CPU's speed: the sampler is held at its first block pass until every learner is
in the queue (so the class really waits at once, however fast the runs are), or until the test releases it;
no time is asserted. The full-size runs (N = 10, 30, 100 at the page's defaults) are the benchmark's, not a test.
"""

import contextlib
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # app.py lives at the top of the checkout
sys.path.insert(0, str(ROOT / "benchmarks"))
import app  # noqa: E402
import app_load  # noqa: E402  (benchmarks/app_load.py)
from test_pipeline import PROMPT, tiny_pipeline  # noqa: E402
from tiny_dit.app.queue_limits import (BUSY_QUEUE_ENV, BUSY_SAMPLES_ENV, QUEUE_SIZE_DEFAULT,  # noqa: E402
                                       QUEUE_SIZE_ENV, RUNS_PER_SESSION_ENV, SAMPLER, VIEW_CONCURRENCY_ENV, QueueLimits, session_runs, waiting_runs)

torch.set_num_threads(1)

USERS, STEPS, SAMPLES = 8, 2, 2
WAIT_S = 120  # the most any wait below lasts (a bound against hanging, not a timing)


@contextlib.contextmanager
def serve(limits: QueueLimits):
    """The app on a fresh tiny pipeline with `limits`, served on a free local port: (demo, app functions, url),
    closed afterwards."""
    demo, served = app.build_demo(tiny_pipeline(), "tiny served model", limits=limits)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=False, quiet=True)
    try:
        yield demo, served, demo.local_url
    finally:
        demo.close()


def until(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def sampling_events(demo) -> list:
    """The sampling runs Gradio's queue holds, waiting or under way."""
    return [e for e in list(demo._queue.event_ids_to_events.values()) if e.concurrency_id == SAMPLER]


class Gate:
    """Holds the sampler at its first transformer block pass until `opened()` is true (checked by the sampler
    itself, every 20 ms) or `release()`."""

    def __init__(self, pipe, opened=lambda: False):
        self.opened, self.entered, self.released = opened, threading.Event(), threading.Event()
        self.handle = pipe.transformer.blocks[0].register_forward_pre_hook(self.hold)

    def hold(self, *_):
        self.entered.set()
        deadline = time.monotonic() + WAIT_S
        while not self.released.is_set() and time.monotonic() < deadline:
            if self.opened():
                self.released.set()
            self.released.wait(0.02)

    def release(self):
        self.released.set()

    def remove(self):
        self.release()
        self.handle.remove()


# --- the settings ------------------------------------------------------------------------


def test_the_queue_settings_come_from_the_environment_and_bad_ones_name_the_variable():
    assert QueueLimits.from_env({}) == QueueLimits() == QueueLimits(QUEUE_SIZE_DEFAULT, 1, 2)
    assert QUEUE_SIZE_DEFAULT >= 100  # a class of 100 fits, one run each
    assert QueueLimits().gradio_max_size == 2 * QUEUE_SIZE_DEFAULT
    limits = QueueLimits.from_env({QUEUE_SIZE_ENV: "50", RUNS_PER_SESSION_ENV: "2", VIEW_CONCURRENCY_ENV: "4"})
    assert limits == QueueLimits(50, 2, 4) and limits.gradio_max_size == 100
    unlimited = QueueLimits.from_env({QUEUE_SIZE_ENV: "none", RUNS_PER_SESSION_ENV: "0"})
    assert unlimited.queue_size is None and unlimited.runs_per_session is None and unlimited.gradio_max_size is None
    for name, value in [(QUEUE_SIZE_ENV, "lots"), (QUEUE_SIZE_ENV, "-3"), (RUNS_PER_SESSION_ENV, "1.5"),
                        (VIEW_CONCURRENCY_ENV, "0"), (VIEW_CONCURRENCY_ENV, "none")]:
        with pytest.raises(ValueError, match=rf"\${name} must be a whole number from 1 up.*got '{value}'"):
            QueueLimits.from_env({name: value})


def test_a_long_queue_makes_each_generate_fewer_clips_and_says_why(tmp_path):
    limits = QueueLimits.from_env({BUSY_QUEUE_ENV: "5", BUSY_SAMPLES_ENV: "2"})
    assert (limits.busy_queue, limits.busy_samples) == (5, 2)
    assert limits.samples_now(4, 4) == (4, None)  # a short queue: the clips asked
    assert limits.samples_now(2, 9) == (2, None)  # no more than asked anyway
    samples, note = limits.samples_now(4, 5)
    assert samples == 2 and "5 runs waiting" in note and "2 clips instead of 4" in note and BUSY_QUEUE_ENV in note
    assert QueueLimits.from_env({BUSY_QUEUE_ENV: "none"}).samples_now(4, 1000) == (4, None)
    # In the app: while 9 runs wait behind it, a Generate of 2 clips makes 1 (the default) and its info says so.
    served = app.TinyDiTApp(tiny_pipeline(), "tiny", output_dir=tmp_path)
    served.waiting_runs = lambda: 9
    *_, (_, _, clips, info, _) = served.generate("a red circle moving left", 4.0, STEPS, 2, 0)
    assert len(clips) == 1 and "The queue is long (9 runs waiting)" in info
    served.waiting_runs = lambda: 0
    *_, (_, _, clips, info, _) = served.generate("a red circle moving left", 4.0, STEPS, 2, 0)
    assert len(clips) == 2 and "queue is long" not in info


def test_the_page_has_the_class_queue(monkeypatch):
    monkeypatch.setenv(QUEUE_SIZE_ENV, "120")
    monkeypatch.setenv(VIEW_CONCURRENCY_ENV, "3")
    demo, _ = app.build_demo(tiny_pipeline(), "tiny")  # the settings from the environment
    assert demo._queue.max_size == 240 and demo._queue.default_concurrency_limit == 3
    sampling = {fn.api_name: fn for fn in demo.fns.values() if fn.concurrency_id == SAMPLER}
    assert set(sampling) == {"generate", "compare_guidance", "sora_task"}
    assert all(fn.concurrency_limit == 1 and fn.validator is not None for fn in sampling.values())
    assert not any(fn.validator for fn in demo.fns.values() if fn.concurrency_id != SAMPLER)  # views are never refused


# --- a class of eight ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def class_server():
    with serve(QueueLimits()) as server:  # the app's defaults
        yield server


def test_a_class_at_once_is_served_each_their_own_run(class_server, tmp_path):
    demo, served, url = class_server
    # Every learner in the queue at once, however fast the runs are: the first run waits for the other seven.
    gate = Gate(served.pipe, opened=lambda: waiting_runs(demo._queue) >= USERS - 1)
    try:
        settings = app_load.Settings(url=url, steps=STEPS, samples=SAMPLES, sora_share=0.25, view="word_attention",
                                     timeout=WAIT_S, colour_check=False, download_dir=str(tmp_path))
        results = app_load.run_class(settings, USERS)
    finally:
        gate.remove()
    print(app_load.report(results))
    assert gate.released.is_set() and results["errors"] == {}
    assert results["error_count"] == results["timeouts"] == results["queue_full"] == 0
    assert results["completed"] == results["generated"] == results["own_runs"] == USERS and results["crossed"] == []
    visits = results["visits"]
    assert sorted(v["user"] for v in visits) == list(range(USERS))
    colours = [v["colour"] for v in sorted(visits, key=lambda v: v["user"])]
    assert len({v["prompt"] for v in visits}) == USERS and all(a != b for a, b in zip(colours, colours[1:]))
    for v in visits:  # each got their own run: its seed, its clips, its prompt's colour word in the view
        assert v["own_seed"] and v["clips"] == SAMPLES and v["own_view"], v
        assert v["own_sora"] is (True if v["sora"] else None), v
    assert sum(v["sora"] for v in visits) == 2 and results["clips"] == USERS * SAMPLES
    assert results["wait_s"]["n"] == USERS and results["server_rss_peak_mb"] is None  # no pid given: no memory
    until(lambda: not sampling_events(demo), "no sampling run left in the queue")


def test_the_checks_of_a_visit_can_fail():
    """The benchmark's verdicts are not always yes: another seed, a missing clip, the wrong colour word."""
    visit = app_load.Visit(0, PROMPT, "red", 1000, sora=False)
    visit.own_seed = app_load.seed_echoed("**1 clip in 0.3 s** (2 iterations ..., seed 10001).", 1000)
    assert visit.own_seed is False and not visit.own()
    assert app_load.seed_echoed("class guidance 5 = on, seed 1000).", 1000)
    assert app_load.clips_in_info("**4 clips in 2.5 s** (20 iterations") == 2.5
    assert app_load.learner_prompt(0) == (PROMPT, "red")  # the first pair: a red circle moving left
    prompts = [app_load.learner_prompt(i)[0] for i in range(120)]
    assert len(set(prompts)) == 120 and not any(f"{c} {s} " in p for p in prompts for c, s in
                                                 [("green", "triangle"), ("purple", "circle"),
                                                  ("orange", "square"), ("blue", "star")])  # held-out pairs left out
    assert [i for i in range(10) if app_load.takes_sora_task(i, 0.2)] == [4, 9]


# --- the limits, met ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server():
    with serve(QueueLimits(queue_size=2, runs_per_session=1)) as server:
        yield server


def test_a_full_queue_and_a_second_run_are_refused_with_a_message_that_names_the_limit(small_server, tmp_path):
    from gradio_client.exceptions import ValidationError

    demo, served, url = small_server
    clients = [app_load.connect(url, 60, 3, str(tmp_path))[0] for _ in range(4)]
    gate = Gate(served.pipe)
    try:
        first = clients[0].submit(PROMPT, 4.0, STEPS, 1, 0, api_name="/generate")
        assert gate.entered.wait(WAIT_S)  # run 1 holds the sampler
        waiting = [clients[i].submit(PROMPT, 4.0, STEPS, 1, i, api_name="/generate") for i in (1, 2)]
        until(lambda: waiting_runs(demo._queue) == 2, "two runs waiting")
        with pytest.raises(ValidationError) as full:  # a fourth learner: the queue holds 2
            clients[3].predict(PROMPT, 4.0, STEPS, 1, 3, api_name="/generate")
        assert "The queue is full" in str(full.value) and "TINY_DIT_QUEUE_SIZE = 2" in str(full.value)
        with pytest.raises(ValidationError) as again:  # learner 1 again, while their run is under way
            clients[0].predict(PROMPT, 4.0, STEPS, 1, 9, api_name="/generate")
        assert "one run at a time" in str(again.value) and "TINY_DIT_RUNS_PER_SESSION = 1" in str(again.value)
        with pytest.raises(ValidationError, match="one run at a time"):  # any sampling run: a Sora task too
            clients[1].predict("image", PROMPT, None, None, None, 1, 1, 32, 32, 4.0, STEPS, 0, api_name="/sora_task")
        assert waiting_runs(demo._queue) == 2  # nothing of the refused runs was queued
        gate.release()
        infos = [job.result(timeout=WAIT_S)[3] for job in [first, *waiting]]
        assert [app_load.seed_echoed(info, seed) for info, seed in zip(infos, (0, 1, 2))] == [True] * 3
        # Done: each may run again, the refused learner too.
        assert app_load.seed_echoed(clients[3].predict(PROMPT, 4.0, STEPS, 1, 3, api_name="/generate")[3], 3)
        assert app_load.seed_echoed(clients[0].predict(PROMPT, 4.0, STEPS, 1, 9, api_name="/generate")[3], 9)
    finally:
        gate.remove()
        for client in clients:
            client.close()


def test_a_cancelled_run_no_longer_counts_against_its_session(small_server, tmp_path):
    demo, served, url = small_server
    client = app_load.connect(url, 60, 3, str(tmp_path))[0]
    slow = [b.register_forward_pre_hook(lambda *a: time.sleep(0.05)) for b in served.pipe.transformer.blocks]
    try:
        job = client.submit(PROMPT, 4.0, 60, 1, 0, api_name="/generate")  # ~6 s if not cancelled
        until(lambda: any("Iteration 2 of 60" in str(out[3]) for out in job.outputs()), "iteration 2")
        assert session_runs(demo._queue, client.session_hash) == 1
        job.cancel()  # as the Stop button does
        until(lambda: session_runs(demo._queue, client.session_hash) == 0, "the cancelled run to leave the queue")
        assert app_load.seed_echoed(client.predict(PROMPT, 4.0, STEPS, 1, 5, api_name="/generate")[3], 5)
    finally:
        for handle in slow:
            handle.remove()
        client.close()
