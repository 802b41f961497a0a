"""What every test sees whatever the machine it runs on: the precision probe's answer, the app's compute
dtype and one torch thread.

Training's precision `auto` times a probe (tiny_dit.training.loop.measure_precision), and the app picks its
dtype from the CPU's flags, so what a test saw followed the CPU: on one with AVX-512 BF16 a forced float32
run warned, and a test that trained after another in float32 met accelerate's "cannot be changed" error,
while the same suite passed on other CPUs. So the session fixes the probe's answer through
$TINY_DIT_PRECISION_PROBE (child processes, torchrun's and the notebook's kernel, inherit it): bfloat16
slower, as on most CPUs. The tests whose behaviour depends on the answer take `precision_probe`, and run
once with each answer, on every machine.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from tiny_dit.training.loop import FIXED_PROBE_FIGURES, PROBE_ENV

PINNED_PROBE = "bf16-slower"
APP_DTYPE_ENV = "TINY_DIT_DTYPE"  # tiny_dit.app.startup.DTYPE_ENV: the app's dtype, instead of the CPU's flags

# Several test modules set one thread when imported, so a whole-suite run has one thread everywhere; a run of
# one file had as many as the machine has cores, and numbers that depend on the order of a sum could differ.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def pinned_machine():
    """The probe's answer and the app's dtype, fixed for the whole session (before module fixtures run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROBE_ENV, PINNED_PROBE)
        patch.setenv(APP_DTYPE_ENV, "float32")
        yield


@pytest.fixture(params=sorted(FIXED_PROBE_FIGURES))
def precision_probe(request, monkeypatch) -> str:
    """Run the test once where the probe finds bfloat16 faster and once where it finds it slower; the answer,
    "bf16-faster" or "bf16-slower"."""
    monkeypatch.setenv(PROBE_ENV, request.param)
    return request.param


@pytest.fixture
def load_benchmark():
    """A script of benchmarks/ imported as a module by its name (benchmarks/ is not a package): its
    measuring functions run in a test on a tiny pipeline."""
    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
