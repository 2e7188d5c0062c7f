"""TemporalPadding (kws_streaming's): whole-sequence pads and crops against numpy, identity when streamed, and a
padding followed by a 'valid' layer streams like the padded model (no lag), both state modes, float LiteRT."""

import keras
import numpy as np
import pytest

from tfx_ext.layers import Stream, TemporalPadding
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.testing import run_layer_test, verify_streaming
from tests.layers.streaming_checks import float_litert_error


def numpy_padding(x, padding, size):
    """kws_streaming's rule written out: pad (or crop) the time axis."""
    if padding == "valid" or size == 0:
        return x
    if padding == "causal":
        before, after = size, 0
    elif padding == "future":
        before, after = 0, size
    else:
        before = size // 2 if size >= 0 else (size + 1) // 2
        after = size - before
    if size > 0:
        return np.pad(x, [(0, 0), (before, after), (0, 0)])
    return x[:, -before: x.shape[1] + after]


@pytest.mark.parametrize("padding", ["causal", "future", "same", "valid"])
@pytest.mark.parametrize("size", [3, 2, 0, -1, -2, -3])
def test_whole_sequence_pads_and_crops_like_kws(padding, size):
    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype("float32")
    want = numpy_padding(x, padding, size)
    got = keras.ops.convert_to_numpy(TemporalPadding(padding, size)(x))
    np.testing.assert_array_equal(got, want)
    assert TemporalPadding(padding, size).compute_output_shape((2, 7, 3)) == want.shape


def test_layer_contract():
    run_layer_test(TemporalPadding, {"padding": "same", "padding_size": 2}, (2, 5, 3), expected_output_shape=(2, 7, 3),
                   expected_num_trainable_weights=0, expected_num_non_trainable_weights=0, run_training_check=False)


def test_streamed_frames_pass_through():
    layer = TemporalPadding("causal", 3, mode=Mode.STREAM_INTERNAL_STATE)
    x = np.ones((1, 1, 4), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)


def padded_valid_model(padding, kernel, frames=10):
    inputs = keras.Input((frames, 4))
    x = TemporalPadding(padding, kernel - 1, name="pad")(inputs)
    x = Stream(keras.layers.Conv1D(5, kernel, padding="valid"), pad_time_dim="valid", name="conv")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_causal_padding_then_valid_conv_streams_with_no_lag(kernel):
    keras.utils.set_random_seed(kernel)
    model = padded_valid_model("causal", kernel)
    x = np.random.default_rng(kernel).normal(size=(2, 10, 4)).astype("float32")
    errors = verify_streaming(model, x, frames_per_step=(1, 2))
    assert errors and max(errors.values()) <= 1e-5
    assert to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2).output_delays == {"head": 0}


def test_same_padding_then_valid_conv_streams_with_its_look_ahead():
    keras.utils.set_random_seed(0)
    model = padded_valid_model("same", 5)  # 2 frames before, 2 after: streamed outputs lag by the 2 after
    x = np.random.default_rng(1).normal(size=(2, 10, 4)).astype("float32")
    errors = verify_streaming(model, x, frames_per_step=(1,))
    assert errors and max(errors.values()) <= 1e-5
    assert to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2).output_delays == {"head": 2}


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
def test_float_litert(mode):
    assert float_litert_error(TemporalPadding("causal", 2), (6, 5), mode) <= 1e-6


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`padding` must be one of"):
        TemporalPadding("reflect", 2)
    with pytest.raises(ValueError, match=r"`padding_size` must be an integer"):
        TemporalPadding("causal", 1.5)
    layer = TemporalPadding.from_config(TemporalPadding("future", -2).get_config())
    assert (layer.padding, layer.padding_size, layer.output_delay) == ("future", -2, 0)
