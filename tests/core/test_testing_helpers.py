"""The shared layer-test helper itself works on plain Keras layers (and would catch a broken one)."""

import keras
import numpy as np
import pytest

from tfx_ext.testing import assert_all_close, run_layer_test


def test_run_layer_test_on_dense_with_tflite_and_distribute():
    run_layer_test(
        keras.layers.Dense,
        {"units": 3},
        (4, 5),
        expected_output_shape=(4, 3),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        tflite=True,
        distribute=True,
    )


def test_assert_all_close_fails_on_mismatch():
    with pytest.raises(AssertionError, match="max abs error"):
        assert_all_close(np.zeros(3), np.ones(3))


def test_testing_module_is_public_and_needs_no_pytest():
    import subprocess
    import sys

    code = "import sys, tfx_ext.testing as t; assert 'pytest' not in sys.modules; print(sorted(t.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "run_layer_test" in out and "verify_streaming" in out and "verify_layer_streaming" in out
