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
