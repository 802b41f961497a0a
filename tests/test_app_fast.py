"""The app with a fast (distilled) student beside the full model: the Model choice, Generate with the student,
the trajectory view's comparison of the two, and API callers that predate the choice.

The student folder is made as tiny_dit.training.distill saves one, from the tiny pipeline of tests/test_app.py,
with the teacher's weights copied (untrained: the app needs a folder of the right kind, not a good student).
Transformer passes are counted with forward hooks, so nothing depends on the CPU's speed.
"""

import copy
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # app.py lives at the top of the checkout
import app  # noqa: E402
from test_app import element, event, images
from test_pipeline import PROMPT, tiny_pipeline, tiny_transformer
from tiny_dit.app.checks import OWN_SAMPLER
from tiny_dit.inside.fast_comparison import record_full_and_fast
from tiny_dit.inside.teaching import FAST_WHY
from tiny_dit.pipeline import TinyDiTPipeline
from tiny_dit.schedulers import SCHEDULERS
from tiny_dit.training.distill import fast_pipeline, save_fast_pipeline

torch.set_num_threads(1)

FAST_STEPS, SEED = 2, 7


def student_folder(teacher: TinyDiTPipeline, folder: Path, method: str) -> Path:
    """A fast folder of `method` ("reflow": Euler; "consistency": LCM) defaulting to FAST_STEPS, whose student
    is a copy of the teacher."""
    save_fast_pipeline(fast_pipeline(copy.deepcopy(teacher.transformer), teacher, method, FAST_STEPS), folder)
    return folder


@pytest.fixture(scope="module")
def full():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def fast_folder(full, tmp_path_factory) -> Path:
    """A consistency student: its LCM scheduler is none of the sampler dropdown's, so the page offers "own"."""
    return student_folder(full, tmp_path_factory.mktemp("fast") / "pipeline", "consistency")


@pytest.fixture(scope="module")
def built(full, fast_folder, tmp_path_factory):
    fast, name, notices = app.load_fast_pipeline(full, "tiny test model", str(fast_folder))
    assert fast is not None and name == str(fast_folder) and notices == []
    demo, fast_app = app.build_demo(full, "tiny test model", notices, fast=fast, fast_name=name)
    fast_app.output_root = tmp_path_factory.mktemp("app-out")
    return demo, fast_app


@pytest.fixture(scope="module")
def fast_app(built):
    return built[1]


class Passes:
    """The batch size of every forward pass of some transformers, by name, while in the `with` block."""

    def __init__(self, **transformers):
        self.transformers, self.batches = transformers, {name: [] for name in transformers}

    def __enter__(self) -> dict[str, list[int]]:
        self.handles = [model.register_forward_hook(
            lambda module, args, kwargs, out, name=name: self.batches[name].append(len(args[0])), with_kwargs=True)
            for name, model in self.transformers.items()]
        return self.batches

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def passes_of(fast_app) -> Passes:
    return Passes(full=fast_app.pipe.transformer, fast=fast_app.fast.transformer)


# --- without a fast model --------------------------------------------------------------------------


def test_without_a_fast_folder_there_is_no_fast_choice(full, tmp_path, monkeypatch):
    monkeypatch.delenv(app.FAST_MODEL_ENV, raising=False)
    monkeypatch.setattr(app, "BUNDLED_FAST_MODEL", str(tmp_path / "no-fast-model"))
    assert app.load_fast_pipeline(full, app.BUNDLED_MODEL) == (None, "", [])  # absent: nothing to say

    demo, plain = app.build_demo(full, "tiny test model")
    radio = element(demo, "model")
    assert not radio.visible and [value for _, value in radio.choices] == ["full"]
    assert not any(getattr(b, "elem_id", None) == "fast-comparison" for b in demo.blocks.values())
    assert "compare_fast" not in {fn.api_name for fn in demo.fns.values()}
    assert [value for _, value in element(demo, "sampler").choices] == list(SCHEDULERS)  # no "own" either
    assert event(demo, "generate").inputs[-1] is radio  # the same inputs for API callers, with or without one
    with pytest.raises(gr.Error, match="Model 'fast' is not available: no fast .distilled. model is loaded"):
        list(app.user_errors(plain.generate)(PROMPT, 1.0, 2, 1, 0, None, None, "fast"))
    *_, (_, _, _, info, handle) = plain.generate(PROMPT, 4.0, 2, 1, 0)
    assert "by the full model" not in info  # with one model, the summary names none
    with pytest.raises(gr.Error, match="Model 'fast' is not available"):
        plain.compare_fast(2, handle)


def test_a_fast_folder_that_cannot_be_used_is_left_out_with_a_notice(full, fast_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(app.FAST_MODEL_ENV, str(tmp_path / "missing"))
    monkeypatch.setattr(app, "BUNDLED_FAST_MODEL", str(tmp_path / "no-fast-model"))
    fast, name, notices = app.load_fast_pipeline(full, app.BUNDLED_MODEL)
    assert fast is None and name == "" and len(notices) == 1
    assert "missing" in notices[0] and "TINY_DIT_FAST_MODEL" in notices[0]
    assert notices[0].endswith("Only the full model is offered.")
    # The bundled student is tried next, with the bundled model only (a student goes with its teacher).
    monkeypatch.setattr(app, "BUNDLED_FAST_MODEL", str(fast_folder))
    fast, name, notices = app.load_fast_pipeline(full, app.BUNDLED_MODEL)
    assert fast is not None and name == str(fast_folder) and "Trying the bundled" in notices[0]
    assert app.load_fast_pipeline(full, "runs/another/pipeline")[0] is None
    # A folder whose clips or tokens are not the full model's is no student of it.
    other = tiny_pipeline()
    other.register_modules(transformer=tiny_transformer(depth=1))
    other.save_pretrained(tmp_path / "other")
    fast, _, notices = app.load_fast_pipeline(full, "tiny test model", str(tmp_path / "other"))
    assert fast is None and "a student keeps its teacher's sizes" in notices[0]


# --- the Model choice -----------------------------------------------------------------------------


def test_the_model_choice_offers_the_student_and_sets_its_own_controls(built):
    demo, fast_app = built
    radio = element(demo, "model")
    assert radio.visible and radio.value == "full"
    assert radio.choices == [("full (20 steps, guided)", "full"), (f"fast ({FAST_STEPS} steps, distilled)", "fast")]
    generate = event(demo, "generate")  # the inputs API callers know, in their order, then the model
    assert [generate.inputs[i] for i in (1, 5, 6, 7)] == [element(demo, "guidance"), element(demo, "sampler"),
                                                          element(demo, "guider"), radio]
    sampler = element(demo, "sampler")
    assert ("the model's own: FlowMatchLCMScheduler", OWN_SAMPLER) in sampler.choices and sampler.value == "euler"
    chosen = next(fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "model_chosen")
    assert chosen.inputs == [radio] and chosen.outputs == [generate.inputs[2], generate.inputs[1], sampler]

    assert [c.value for c in fast_app.model_chosen("fast")] == [FAST_STEPS, 1.0, OWN_SAMPLER]
    assert [c.value for c in fast_app.model_chosen("full")] == [20, fast_app.default_guidance, "euler"]
    assert element(demo, "fast-steps").value == FAST_STEPS and element(demo, "fast-steps").maximum == 4
    compare = event(demo, "compare_fast")  # two sampling runs: the sampler's queue, its limits
    assert compare.concurrency_id == "sampler" and compare.concurrency_limit == 1 and compare.validator is not None
    assert f"a student distilled from it: {FAST_STEPS} steps" in str(demo.config)


def test_generate_with_the_fast_model_makes_its_few_passes_on_the_prompt_alone(fast_app):
    steps, guidance, sampler = (c.value for c in fast_app.model_chosen("fast"))  # what the page sends
    shared = fast_app.fast.scheduler
    with passes_of(fast_app) as batches:
        out = list(fast_app.generate(PROMPT, guidance, steps, 3, SEED, sampler, None, "fast"))
    # FAST_STEPS passes of the 3 clips, no unconditional rows; the full model did nothing.
    assert batches == {"fast": [3] * FAST_STEPS, "full": []}
    record = fast_app.runs.get(out[-1][4])
    assert record.transformer is fast_app.fast.transformer and record.num_passes == FAST_STEPS
    assert record.scheduler == "FlowMatchLCMScheduler" and fast_app.fast.scheduler is shared  # a copy sampled
    assert "by the fast model" in out[-1][3] and "class guidance 1 = off" in out[-1][3]
    assert len(images(fast_app.inside(out[-1][4]))) == 10  # every view of the fast run
    # Another sampler, or guidance, is honoured; guiding a student that has guidance in its weights says so.
    with passes_of(fast_app) as batches:
        out = list(fast_app.generate(PROMPT, 4.0, 3, 1, SEED, "heun", None, "fast"))
    assert batches == {"fast": [2] * 5, "full": []}  # Heun's 2N - 1 passes, each guided: [uncond; cond]
    assert "heun sampler" in out[-1][3] and "guides it a second time" in out[-1][3]


def test_a_reflow_student_starts_at_euler(full, tmp_path):
    folder = student_folder(full, tmp_path / "reflow", "reflow")
    fast, name, _ = app.load_fast_pipeline(full, "tiny test model", str(folder))
    reflow_app = app.TinyDiTApp(full, "tiny test model", fast=fast, fast_name=name, output_dir=tmp_path / "out")
    assert OWN_SAMPLER not in [value for _, value in reflow_app.sampler_choices]  # Euler is one of the dropdown's
    steps, guidance, sampler = (c.value for c in reflow_app.model_chosen("fast"))
    assert (steps, guidance, sampler) == (FAST_STEPS, 1.0, "euler")
    with Passes(fast=fast.transformer) as batches:
        out = list(reflow_app.generate(PROMPT, guidance, steps, 2, SEED, sampler, None, "fast"))
    assert batches["fast"] == [2] * FAST_STEPS and "euler sampler" in out[-1][3]


@pytest.fixture(scope="module")
def one_step_run(fast_app):
    """The handle of a run of the full model, for the views asked about it."""
    return list(fast_app.generate(PROMPT, 4.0, 1, 1, 0))[-1][4]


@pytest.mark.parametrize("call, message", [
    (lambda a, h: list(a.generate(PROMPT, 1.0, 2, 1, 0, None, None, "turbo")),
     "Model must be one of 'full', 'fast'; got the text 'turbo'"),
    (lambda a, h: list(a.generate(PROMPT, 1.0, 2, 1, 0, None, None, ["fast"])), "Model must be one of .* got a list"),
    (lambda a, h: list(a.generate(PROMPT, 1.0, 2, 1, 0, None, None, True)), "Model .* got the boolean True"),
    (lambda a, h: a.model_chosen("slow"), "Model must be one of 'full', 'fast'; got the text 'slow'"),
    (lambda a, h: list(a.generate(PROMPT, 1.0, 2, 1, 0, "lcm", None, "fast")),
     "Sampler must be one of 'euler', 'heun', 'dpm..', 'unipc', 'own'; got the text 'lcm'"),
    (lambda a, h: a.compare_fast(5, h), "Fast model steps must be a whole number from 1 to 4; got 5"),
    (lambda a, h: a.compare_fast(0, h), "Fast model steps"),
    (lambda a, h: a.compare_fast("2", h), "Fast model steps .* got the text '2'"),
    (lambda a, h: a.compare_fast(2, None), "Generate a clip first"),
])
def test_bad_fast_inputs_are_refused_naming_the_field(fast_app, one_step_run, call, message):
    handle = one_step_run
    with pytest.raises(gr.Error, match=message):
        app.user_errors(lambda: call(fast_app, handle))()


# --- the trajectory view: the full and the fast model from the same noise -------------------------


def test_the_comparison_samples_the_runs_prompt_and_seed_with_both_models(fast_app):
    handle = list(fast_app.generate(PROMPT, 4.0, 3, 2, SEED))[-1][4]
    with passes_of(fast_app) as batches:
        paths, clips, text = fast_app.compare_fast(FAST_STEPS, handle)
    # The full model at its defaults (20 steps of CFG: [uncond; cond] each), the student in its 2, unguided.
    assert batches == {"full": [2] * 20, "fast": [1] * FAST_STEPS}
    assert isinstance(paths, Image.Image) and isinstance(clips, Image.Image)
    assert paths.width > 3 * 80 and paths.height > 4 * 80 and clips.height > 2 * 80  # 3 levels x 4 rows; 2 clips
    assert f"Prompt \"{PROMPT}\", seed {SEED}" in text and "**Fast model:** 2 steps" in text
    assert "**Full model:** 20 steps" in text and FAST_WHY in text

    # Both start from the noise of the run's clip 1: the seed's.
    full_run, fast_run = record_full_and_fast(fast_app.pipe, fast_app.fast, PROMPT, SEED, FAST_STEPS)
    run = fast_app.runs.get(handle)
    np.testing.assert_array_equal(full_run.x_t[0], fast_run.x_t[0])
    np.testing.assert_array_equal(full_run.x_t[0], run.x_t[0])
    assert full_run.num_passes == 20 and fast_run.num_passes == FAST_STEPS
    assert fast_run.transformer is fast_app.fast.transformer and full_run.transformer is fast_app.pipe.transformer
    np.testing.assert_allclose(fast_run.sigmas, [1.0, 0.5, 0.0])  # the student's levels, the teacher visits them
    assert {1.0, 0.5, 0.0} <= {round(float(s), 6) for s in full_run.sigmas}


# --- through a real server: callers that predate the choice --------------------------------------


@pytest.fixture(scope="module")
def server(built):
    demo, served = built
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=False, quiet=True)
    try:
        yield demo, served, demo.local_url
    finally:
        demo.close()


def test_api_callers_that_do_not_name_the_model_get_the_full_one(server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    _, served, url = server
    client = Client(url, verbose=False)
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    assert len(parameters) == 8 and parameters[-1]["parameter_default"] == "full"
    with passes_of(served) as batches:
        result = client.predict(PROMPT, 4.0, 2, 1, 0, api_name="/generate")  # as before the Model choice
    assert batches == {"full": [2, 2], "fast": []} and "by the full model" in result[3]
    with passes_of(served) as batches:
        result = client.predict(PROMPT, 1.0, FAST_STEPS, 1, 0, OWN_SAMPLER, "cfg", "fast", api_name="/generate")
    assert batches == {"full": [], "fast": [1] * FAST_STEPS} and "by the fast model" in result[3]
    paths, clips, text = client.predict(FAST_STEPS, api_name="/compare_fast")  # the session's run, both models
    assert "**Fast model:** 2 steps" in text
    with pytest.raises(AppError, match="Model must be one of 'full', 'fast'; got the text 'Fast'"):
        client.predict(PROMPT, 1.0, 2, 1, 0, "euler", "cfg", "Fast", api_name="/generate")
