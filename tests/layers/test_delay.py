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
