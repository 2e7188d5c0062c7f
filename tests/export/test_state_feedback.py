"""Raw int8 state feedback: each external state's input and output share one scale and zero point, so feeding the
raw int8 state outputs back (what an app does) equals the dequantize-requantize path bit for bit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.int8 import non_integer_ops, state_quantization, streaming_calibration_data
from tfx_ext.lite.runtime import TFLiteModel, dequantize_output
from tfx_ext.models import TINY_KWARGS, get_model
from tfx_ext.streaming.convert import min_frames_per_step, to_streaming

FRAMES, BINS = 12, 10


def _int8_stream(name: str):
    keras.utils.set_random_seed(0)
    model = get_model(name, (FRAMES, BINS), 4, **TINY_KWARGS[name])  # tiny and untrained
    runner = to_streaming(model, "stream_external_state", batch_size=1, frames_per_step=min_frames_per_step(model))
    clips = np.random.default_rng(0).normal(size=(6, FRAMES, BINS)).astype("float32")
    return to_tflite(runner, quantize="int8", representative_data=streaming_calibration_data(runner, clips))


@pytest.mark.parametrize("name", ["ds_cnn", "crnn", "gru", "tc_resnet"])
def test_raw_int8_state_feedback_equals_the_float_boundary_path(name):
    flatbuffer = _int8_stream(name)
    assert non_integer_ops(flatbuffer) == []
    runner = TFLiteModel(flatbuffer)
    assert runner.state_names
    quantization = state_quantization(flatbuffer)
    assert sorted(quantization) == sorted(runner.state_names)
    for state in runner.state_names:  # what the interpreter reports, too
        assert runner.input_details[state]["quantization"] == runner.output_details[state]["quantization"], state
        assert quantization[state][0] == quantization[state][1], state
    x = np.random.default_rng(1).normal(size=(1, 3 * FRAMES, BINS)).astype("float32")
    boundary = runner.run_stream(x)  # float states, requantized by the state input's scale/zero point each step
    raw = runner.run_stream(x, dequantize=False)  # raw int8 states fed straight back
    for output, values in raw.items():
        assert values.dtype == np.int8
        np.testing.assert_array_equal(dequantize_output(values, runner.output_details[output]), boundary[output])


def test_tfl_model_of_an_array_is_named():
    with pytest.raises(TypeError, match=r"`model` must be the path of a .tflite file or the flatbuffer bytes .*"
                                        r"array.tobytes\(\).*Received: model of type ndarray"):
        TFLiteModel(np.zeros(8, np.uint8))


def test_batch_2_call_on_a_batch_1_streaming_export_is_named():
    inputs = keras.Input((2, 3), name="x")
    outputs = keras.layers.Dense(2, name="y")(inputs)
    runner = TFLiteModel(to_tflite(keras.Model(inputs, outputs), batch_size=1))
    with pytest.raises(ValueError, match=r"input 'x' must have shape \(1, 2, 3\). Received: shape=\(2, 2, 3\). The "
                                         r"export has a static batch size of 1.*to_tflite\(\.\.\., batch_size=2\)"):
        runner({"x": np.zeros((2, 2, 3), np.float32)})
    with pytest.raises(ValueError, match="static batch size of 1"):
        runner.run_stream(np.zeros((2, 4, 3), np.float32))
