"""kws_streaming's `Stream(cell=..., ring_buffer_size_in_time_dim=N)`: any registered Keras layer that maps N + n
frames to n streams with a ring buffer of N frames; identity cells; and frame-local 1x1 convolutions and pools
whose stride equals their size streamed from a plain model with no wrapper (and no state)."""

import keras
import numpy as np
import pytest

from tfx_ext.errors import NotStreamableError
from tfx_ext.layers import Stream
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.testing import verify_streaming
from tests.layers.streaming_checks import assert_round_trip, float_litert_error

L = keras.layers


@keras.saving.register_keras_serializable(package="tests")
class WindowDifference(L.Layer):
    """y_t = x_t - x_{t - lag} * w over its input window: `lag` + n frames in, n out (a user's time-mixing cell)."""

    def __init__(self, lag, **kwargs):
        super().__init__(**kwargs)
        self.lag = lag

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="w")

    def call(self, x):
        return x[:, self.lag:] - x[:, : x.shape[1] - self.lag] * self.w

    def compute_output_shape(self, input_shape):
        time = None if input_shape[1] is None else input_shape[1] - self.lag
        return (input_shape[0], time, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "lag": self.lag}


def difference_numpy(x, w, lag, padding):
    """The whole-sequence form written out: zeros before the clip ('causal') or none ('valid')."""
    if padding == "causal":
        x = np.concatenate([np.zeros_like(x[:, :lag]), x], axis=1)
    return x[:, lag:] - x[:, : x.shape[1] - lag] * w


@pytest.mark.parametrize("lag", [1, 3])
@pytest.mark.parametrize("padding", ["causal", "valid"])
def test_custom_cell_with_a_ring_buffer_streams_like_the_whole_sequence(lag, padding):
    keras.utils.set_random_seed(lag)
    inputs = keras.Input((8, 3))
    layer = Stream(WindowDifference(lag), ring_buffer_size=lag, pad_time_dim=padding, name="diff")
    model = keras.Model(inputs, L.Dense(2, name="head")(layer(inputs)))
    x = np.random.default_rng(lag).normal(size=(2, 8, 3)).astype("float32")
    whole = difference_numpy(x, np.asarray(layer.cell.w), lag, padding)
    np.testing.assert_allclose(np.asarray(layer(x)), whole, atol=1e-6)
    errors = verify_streaming(model, x, frames_per_step=(1, 2), compiled=(True,))
    assert errors and max(errors.values()) <= 1e-5
    runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2)
    assert runner.state_names == ["diff_buffer"] and runner.model.input[1].shape == (2, lag, 3)
    assert runner.output_delays == {"head": lag if padding == "valid" else 0}


def test_custom_cell_litert_and_safe_mode():
    keras.utils.set_random_seed(0)
    assert float_litert_error(Stream(WindowDifference(2), ring_buffer_size=2), (6, 3),
                              Mode.STREAM_EXTERNAL_STATE) <= 1e-5
    inputs = keras.Input((6, 3))
    assert_round_trip(keras.Model(inputs, Stream(WindowDifference(2), ring_buffer_size=2)(inputs)))


def test_identity_cell():
    x = np.random.default_rng(0).normal(size=(1, 6, 3)).astype("float32")
    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, Stream(L.Identity(), ring_buffer_size=0, name="same_frames")(inputs))
    np.testing.assert_array_equal(np.asarray(model(x)), x)
    assert to_streaming(model, Mode.STREAM_EXTERNAL_STATE).state_names == []
    assert max(verify_streaming(model, x, compiled=(True,), check_reset=False).values()) == 0.0
    with pytest.raises(NotStreamableError, match=r"ring_buffer_size=2: its cell must map 2 \+ n frames to n, but it "
                                                 r"keeps every frame .*overlapping windows"):
        Stream(L.Identity(), ring_buffer_size=2)(x)


def test_ring_buffer_errors_are_named():
    with pytest.raises(NotStreamableError, match=r"or pass ring_buffer_size=N for a cell that maps N \+ n"):
        Stream(WindowDifference(1))
    with pytest.raises(NotStreamableError, match=r"wraps a Lambda cell"):
        Stream(L.Lambda(lambda t: t), ring_buffer_size=0)
    with pytest.raises(ValueError, match=r"read from its geometry \(e - s = 2 frames\).*ring_buffer_size=4"):
        Stream(L.Conv1D(2, 3), ring_buffer_size=4)
    assert Stream(L.Conv1D(2, 3), ring_buffer_size=2).get_config()["ring_buffer_size"] == 2
    assert Stream(L.Flatten(), ring_buffer_size=4).window == 5  # kws: the window is the buffer and one frame


@pytest.mark.parametrize("layer,shape", [
    (L.Conv2D(4, 1), (8, 5, 3)),
    (L.Conv1D(4, 1), (8, 3)),
    (L.MaxPooling2D((2, 2)), (8, 4, 3)),
    (L.AveragePooling1D(2), (8, 3)),
    (L.MaxPooling2D((1, 2)), (8, 4, 3)),
], ids=["conv2d_1x1", "conv1d_1", "maxpool2d_2x2", "avgpool1d_2", "maxpool2d_freq"])
def test_frame_local_convs_and_stride_equals_size_pools_stream_with_no_wrapper_and_no_state(layer, shape):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, L.Dense(2)(layer(inputs)))
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    errors = verify_streaming(model, x, frames_per_step=(2,), compiled=(True,), check_reset=False)
    assert errors and max(errors.values()) <= 1e-5
    runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2, frames_per_step=2)
    assert runner.state_names == [] and all(v == 0 for v in runner.output_delays.values())
