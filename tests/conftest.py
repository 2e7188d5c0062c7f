"""Shared pytest setup: quiet TensorFlow, deterministic seeds, a `slow` marker and session-scoped fixtures."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the whole session, so `MirroredStrategy(["/cpu:0", "/cpu:1"])` works in any test
# (`tfx_ext.testing.two_cpu_strategy()`). This must run before TensorFlow initializes its devices.
NUM_LOGICAL_CPUS = 2
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s on 2 cores; still runs in CI")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Each test starts from the same global seeds, so failures reproduce."""
    import keras

    keras.utils.set_random_seed(1234)
    yield


# Tests that skip when an optional tool is missing, and how to run them (shown in the terminal summary, so a skipped
# oracle is never mistaken for a passed one).
OPTIONAL_TOOLS = {
    "tests/export/test_tfmot_oracle.py": "tfmot reference oracle: .ci/run installs tf-keras and (with --no-deps, it "
                                         "pins absl-py 1.x) tensorflow-model-optimization, then runs this file",
    "tests/data/test_synthesis.py": "espeak-ng engine: `apt-get install espeak-ng` (.ci/run installs it as root); "
                                    "the numpy engine is tested either way",
    "tests/colab/": "notebook runner: `pip install -e .[test]` (nbclient, nbformat, ipykernel)",
}


def skip_summary_lines(skipped) -> list[str]:
    """One line per skipped test `(nodeid, reason)`, with how to run it when its tool is known."""
    lines = []
    for nodeid, reason in skipped:
        how = next((text for prefix, text in OPTIONAL_TOOLS.items() if nodeid.startswith(prefix)), None)
        lines.append(f"{nodeid}: {reason}" + (f"  [to run it: {how}]" if how else ""))
    return lines


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter):
    skipped = [(r.nodeid, _skip_reason(r)) for r in terminalreporter.stats.get("skipped", []) if r.when != "teardown"]
    if skipped:
        terminalreporter.section(f"{len(skipped)} skipped: not run, not passed")
        for line in skip_summary_lines(skipped):
            terminalreporter.write_line(line)
