"""Delay: identity on whole sequences, a pure delay when streamed; aligns look-ahead branches."""

import keras
import numpy as np
import pytest

from tfx_ext.testing import run_layer_test
from tfx_ext.layers.delay import Delay
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming


def test_layer_contract():
    run_layer_test(Delay, {"delay": 2}, (2, 5, 3), expected_output_shape=(2, 5, 3), dynamic_axes=(0, 1),
                   expected_num_trainable_weights=0, expected_num_non_trainable_weights=0, run_training_check=False)


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
@pytest.mark.parametrize("frames_per_step", [1, 3])
def test_streamed_output_is_delayed_input(mode, frames_per_step):
    x = np.arange(2 * 6 * 2, dtype="float32").reshape(2, 6, 2)
    inputs = keras.Input((6, 2))
    model = keras.Model(inputs, Delay(2)(inputs))
    converted = to_streaming(model, mode, batch_size=2, frames_per_step=frames_per_step)
    streamed = converted.run(x)
    expected = np.concatenate([np.zeros((2, 2, 2), "float32"), x[:, :4]], axis=1)
    np.testing.assert_array_equal(streamed, expected)
    assert converted.output_delays == {model.output_names[0]: 2}


def test_zero_delay_has_no_state():
    assert Delay(0, mode=Mode.STREAM_EXTERNAL_STATE).state_specs((1, 1, 3)) == []


def test_bad_delay_raises():
    with pytest.raises(ValueError, match=r"`delay` must be an integer >= 0. Received: delay=-1"):
        Delay(-1)


def test_also_in_non_streaming_contract():
    run_layer_test(Delay, {"delay": 2, "also_in_non_streaming": True}, (2, 5, 3), expected_output_shape=(2, 5, 3),
                   dynamic_axes=(0, 1), expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
                   run_training_check=False)


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
@pytest.mark.parametrize("delay,frames_per_step", [(2, 1), (3, 2), (1, 4)])
def test_also_in_non_streaming_delays_the_trained_model_and_streams_with_no_lag(mode, delay, frames_per_step):
    # kws_streaming's `Delay(also_in_non_streaming=True)`: the whole-sequence model already holds the delay, so the
    # stream equals it frame for frame. Oracle: numpy's shift of the input; the reference is the user's model.
    x = np.random.default_rng(delay).normal(size=(2, 8, 3)).astype("float32")
    inputs = keras.Input((8, 3))
    hidden = keras.layers.Dense(4, name="proj")(inputs)
    model = keras.Model(inputs, Delay(delay, also_in_non_streaming=True)(hidden))
    whole = model.predict(x, verbose=0)
    projected = x @ model.get_layer("proj").kernel.numpy() + model.get_layer("proj").bias.numpy()
    shifted = np.concatenate([np.zeros((2, delay, 4), "float32"), projected[:, :8 - delay]], axis=1)
    np.testing.assert_allclose(whole, shifted, atol=1e-6)
    converted = to_streaming(model, mode, batch_size=2, frames_per_step=frames_per_step)
    np.testing.assert_allclose(converted.run(x), whole, atol=1e-6)
    assert converted.output_delays == {model.output_names[0]: 0}


def test_also_in_non_streaming_is_a_bool_and_round_trips():
    with pytest.raises(TypeError, match=r"`also_in_non_streaming` must be a bool. Received: also_in_non_streaming=1"):
        Delay(2, also_in_non_streaming=1)
    layer = Delay.from_config(Delay(3, also_in_non_streaming=True).get_config())
    assert layer.also_in_non_streaming and layer.delay == 3 and layer.output_delay == 0


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
def test_also_in_non_streaming_in_float_litert(mode):
    from tfx_ext.testing import verify_tflite_streaming

    x = np.random.default_rng(0).normal(size=(1, 6, 3)).astype("float32")
    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, Delay(2, also_in_non_streaming=True)(keras.layers.Dense(4)(inputs)))
    assert verify_tflite_streaming(model, x, mode) <= 1e-5
