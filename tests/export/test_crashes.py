"""No crashes: patterns that crash TF's int8 calibrator are refused by name before it runs, and `isolate=True`
converts in a child process whose death by a signal becomes an `ExportError` naming the signal."""

from __future__ import annotations

import functools
import signal

import keras
import numpy as np
import pytest

from tfx_ext.errors import DataError, ExportError
from tfx_ext.layers import DeltaActivation, Stream
from tfx_ext.lite import convert
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.int8 import streaming_calibration_data
from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.lite.verification import verify
from tfx_ext.streaming.convert import to_streaming


def _delta_model(method: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 5), name="features")
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = DeltaActivation(threshold=0.1, method=method, name="delta")(x)
    x = Stream(keras.layers.GlobalAveragePooling1D(), name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="probs")(x), name="delta_kws")


@pytest.mark.parametrize("mode", ["stream_external_state", "stream_internal_state"])
def test_int8_of_a_gated_delta_streams_like_the_original_model(mode):
    # Before: the process died with SIGSEGV inside the calibrator (the gate was a scan: a WHILE op). A static time
    # axis is now unrolled, so the int8 export converts; checked against the user's model on the whole window.
    model = _delta_model("gated")
    runner = to_streaming(model, mode, batch_size=1, frames_per_step=1)
    clips = np.random.default_rng(0).normal(size=(16, 8, 5)).astype("float32")
    flatbuffer = to_tflite(runner, quantize="int8", representative_data=streaming_calibration_data(runner, clips))
    expected = np.asarray(model(clips))
    report = verify(model, flatbuffer, clips)
    assert report.max_abs_error <= 0.05 * np.abs(expected).max() + 0.02, report


def test_a_leftover_while_loop_is_refused_by_layer_name():
    @keras.saving.register_keras_serializable(package="tests")
    class CumulativeMax(keras.layers.Layer):  # a scan over time: a while loop TFLite's calibrator crashes on
        def call(self, x):
            _, out = keras.ops.scan(lambda c, f: (keras.ops.maximum(c, f), keras.ops.maximum(c, f)),
                                    keras.ops.zeros_like(x[:, 0]), keras.ops.moveaxis(x, 1, 0))
            return keras.ops.moveaxis(out, 0, 1)

    inputs = keras.Input((4, 3), name="x")
    model = keras.Model(inputs, CumulativeMax(name="cummax")(keras.layers.Dense(3, name="d")(inputs)))
    data = [{"x": np.ones((1, 4, 3), np.float32)}]
    with pytest.raises(ExportError, match=r"layer\(s\) \['cummax'\] compute a while loop.*isolate=True"):
        to_tflite(model, quantize="int8", representative_data=data)


def test_isolate_turns_a_crashing_child_into_an_export_error_naming_the_signal(monkeypatch):
    monkeypatch.setattr(convert, "_CHILD_HOOK", functools.partial(signal.raise_signal, signal.SIGSEGV))
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs), name="tiny")
    with pytest.raises(ExportError, match=r"model 'tiny' crashed the child process \(isolate=True\): killed by "
                                          r"SIGSEGV"):
        to_tflite(model, isolate=True)


@pytest.mark.slow
def test_isolate_converts_in_a_child_like_in_process_and_reraises_its_errors():
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs), name="tiny")
    x = np.random.default_rng(0).normal(size=(1, 3)).astype("float32")
    isolated = TFLiteModel(to_tflite(model, isolate=True))
    np.testing.assert_allclose(isolated({"x": x})["y"], model(x).numpy(), atol=1e-6)  # Keras is the oracle
    with pytest.raises(DataError, match=r"representative input 'x' \(sample 0\) must have shape \(1, 3\)"):
        to_tflite(model, quantize="int8", representative_data=[{"x": np.zeros((2, 3), np.float32)}], isolate=True)
