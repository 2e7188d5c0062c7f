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
