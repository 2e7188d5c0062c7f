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


# ----- the Keras conventions catch a layer that breaks them -----------------------------------------------------
@keras.saving.register_keras_serializable(package="tfx_ext_tests")
class WrongShapeDense(keras.layers.Dense):
    """Declares one unit more than it returns."""

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units + 1)


@keras.saving.register_keras_serializable(package="tfx_ext_tests")
class DtypeDroppingWrapper(keras.layers.Layer):
    """Keeps its inner Dense in the global policy: the bug Stream and GRU had (dtype= not passed on)."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = keras.layers.Dense(units)

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, inputs):
        return self.inner(inputs)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tfx_ext_tests")
class CancellingDense(keras.layers.Dense):
    """(y + 2048) - 2048 in the compute dtype: exact in float32, float16 keeps only multiples of 2 there."""

    def call(self, inputs):
        offset = keras.ops.cast(2048.0, self.compute_dtype)
        return (super().call(inputs) + offset) - offset


@keras.saving.register_keras_serializable(package="tfx_ext_tests")
class AlwaysTrainableDense(keras.layers.Dense):
    """Ignores trainable=False."""

    @property
    def trainable_weights(self):
        return list(self.weights)


@pytest.mark.parametrize(
    "layer_cls, kwargs, match",
    [
        (WrongShapeDense, {"units": 3}, r"compute_output_(spec|shape)"),
        (DtypeDroppingWrapper, {"units": 3}, r"mixed_float16 output dtype float32, expected float16"),
        (CancellingDense, {"units": 3, "kernel_initializer": "ones"}, r"mixed_float16: .* of the outputs are off"),
        (AlwaysTrainableDense, {"units": 3}, r"trainable=False left 2 trainable weights"),
        (keras.layers.Dense, {"units": 3, "sequential_expected": "refused"}, r"accepted a layer declared"),
    ],
    ids=["output_shape", "dtype_dropped", "float16_inaccurate", "trainable_ignored", "sequential_mismatch"],
)
def test_run_layer_test_catches_a_broken_convention(layer_cls, kwargs, match):
    kwargs = dict(kwargs)
    sequential = kwargs.pop("sequential_expected", "works")
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32") * 3
    with pytest.raises(AssertionError, match=match):
        run_layer_test(layer_cls, kwargs, input_data=x, sequential=sequential, saved_model=False)


def test_run_layer_test_dynamic_axes_keep_none():
    """Dims declared dynamic stay None symbolically; a layer that pins the batch is caught."""
    run_layer_test(keras.layers.Conv1D, {"filters": 2, "kernel_size": 3}, (2, 7, 3), dynamic_axes=(0, 1),
                   expected_output_shape=(2, 5, 2))
    with pytest.raises(AssertionError, match=r"lost the None batch dim"):
        run_layer_test(FixedBatchConv1D, {"filters": 2, "kernel_size": 3}, (2, 7, 3), dynamic_axes=(0, 1),
                       run_training_check=False, saved_model=False, run_mixed_precision_check=False)


@keras.saving.register_keras_serializable(package="tfx_ext_tests")
class FixedBatchConv1D(keras.layers.Conv1D):
    """Claims a batch of 2 whatever the input: right on the test batch, wrong once the batch is None."""

    def compute_output_shape(self, input_shape):
        return (2, *super().compute_output_shape(input_shape)[1:])
