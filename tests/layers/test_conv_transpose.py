"""Streaming transposed convolutions (kws_streaming's Conv1DTranspose, Conv2DTranspose, Conv1DTransposeOn2D).

The reference is always the user's ORIGINAL plain Keras model on the whole sequence: `to_streaming` rewrites its
Conv1DTranspose / Conv2DTranspose, each input frame emits `stride` output frames, and the stream equals the model
frame by frame ('same': `crop` frames late) in both state modes. A numpy overlap-add written out frame by frame
checks the tail a 'valid' layer emits once zeros follow.
"""

import keras
import numpy as np
import pytest

from tfx_ext.errors import NotStreamableError
from tfx_ext.layers import ConvTransposeStream
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.testing import run_layer_test, verify_streaming
from tests.layers.streaming_checks import assert_round_trip, float_litert_error

L = keras.layers


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _model(layer, shape, head=True):
    inputs = keras.Input(shape)
    y = layer(inputs)
    return keras.Model(inputs, L.Dense(2, name="head")(y) if head else y)


def overlap_add(x, kernel, bias, stride):
    """Conv1DTranspose 'valid' written out: input frame t adds x_t W_j to output frame t * stride + j."""
    batch, frames, _ = x.shape
    out = np.zeros((batch, frames * stride + max(kernel.shape[0] - stride, 0), kernel.shape[1]))
    for t in range(frames):
        for j in range(kernel.shape[0]):
            out[:, t * stride + j] += x[:, t] @ kernel[j].T  # Keras kernel: (k, filters, channels)
    return out + bias


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("kernel", ["smaller", "equal", "larger"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv1d_transpose_streams_like_the_original_model(stride, kernel, padding):
    size = {"smaller": max(stride - 1, 1), "equal": stride, "larger": 2 * stride + 1}[kernel]
    keras.utils.set_random_seed(stride)
    model = _model(L.Conv1DTranspose(3, size, strides=stride, padding=padding, bias_initializer="random_normal",
                                     activation="tanh"), (6, 4))
    steps = (1, 2) if kernel == "larger" else (1,)  # chunks of several frames overlap in the state
    errors = verify_streaming(model, _x((2, 6, 4), stride), frames_per_step=steps, compiled=(True,),
                              check_reset=False)
    assert errors and max(errors.values()) <= 1e-5, errors
    runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2)
    crop = max(size - stride, 0) // 2 if padding == "same" else 0
    assert runner.output_delays["head"] * stride == crop
    assert runner.model.output["head"].shape[1] == stride  # one input frame, `stride` output frames
    assert bool(runner.state_names) == (size > stride)


@pytest.mark.parametrize("stride,kernel,padding", [(1, (3, 3), "same"), (2, (3, 2), "valid"), (3, (5, 3), "same"),
                                                   (2, (2, 3), "valid")])
def test_conv2d_transpose_with_time_on_axis_1_streams(stride, kernel, padding):
    keras.utils.set_random_seed(0)
    model = _model(L.Conv2DTranspose(3, kernel, strides=(stride, 2), padding=padding,
                                     bias_initializer="random_normal"), (6, 4, 2))
    errors = verify_streaming(model, _x((2, 6, 4, 2)), frames_per_step=(1, 3), compiled=(True,), check_reset=False)
    assert errors and max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("stride", [1, 2, 5])
def test_conv1d_transpose_on_2d_streams(stride):
    """kws_streaming's Conv1DTransposeOn2D: a Conv2DTranspose with kernel (k, 1), strides (s, 1) on (time, 1, c)."""
    keras.utils.set_random_seed(1)
    model = _model(L.Conv2DTranspose(4, (3, 1), strides=(stride, 1)), (4, 1, 3), head=False)
    errors = verify_streaming(model, _x((1, 4, 1, 3), 1), frames_per_step=(1, 2), compiled=(True,))
    assert errors and max(errors.values()) <= 1e-5, errors


def test_streamed_frames_and_the_valid_tail_equal_the_overlap_add():
    keras.utils.set_random_seed(2)
    cell = L.Conv1DTranspose(3, 5, strides=2, bias_initializer="random_normal")
    model = _model(cell, (6, 4), head=False)
    x = _x((1, 6, 4), 2)
    want = overlap_add(x.astype(np.float64), np.asarray(cell.kernel), np.asarray(cell.bias), 2)
    np.testing.assert_allclose(np.asarray(model(x)), want, atol=1e-5)  # Keras agrees with the numpy formula
    runner = to_streaming(model, Mode.STREAM_INTERNAL_STATE)
    flushed = runner.run(np.concatenate([x, np.zeros((1, 2, 4), "float32")], axis=1))  # zeros after the clip
    np.testing.assert_allclose(flushed[:, : want.shape[1]], want, atol=1e-5)  # the tail comes out


def test_stacked_upsampling_then_strided_conv_streams():
    """Rates become fractions of a model-input frame after upsampling and whole again after a strided conv."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 3))
    y = L.Conv1DTranspose(4, 3, strides=2, padding="same", name="up")(inputs)
    y = L.Conv1D(4, 3, padding="causal", name="conv")(y)
    y = L.Conv1D(3, 2, strides=2, padding="valid", name="down")(y)
    model = keras.Model(inputs, y)
    errors = verify_streaming(model, _x((2, 6, 3), 3), frames_per_step=(1, 2), compiled=(True,), check_reset=False)
    assert errors and max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
@pytest.mark.parametrize("cell", [lambda: L.Conv1DTranspose(3, 5, strides=2), lambda: L.Conv1DTranspose(3, 2, 3)])
def test_float_litert(mode, cell):
    assert float_litert_error(ConvTransposeStream(cell()), (6, 4), mode) <= 1e-5


def test_float_litert_2d():
    layer = ConvTransposeStream(L.Conv2DTranspose(3, (4, 3), strides=(2, 2), padding="same"))
    assert float_litert_error(layer, (6, 4, 2), Mode.STREAM_EXTERNAL_STATE) <= 1e-5


def test_layer_contract_and_safe_mode_round_trip():
    run_layer_test(ConvTransposeStream, {"cell": L.Conv1DTranspose(3, 4, strides=2)}, (2, 5, 4),
                   expected_output_shape=(2, 12, 3), expected_num_trainable_weights=2,
                   expected_num_non_trainable_weights=0)
    keras.utils.set_random_seed(4)
    model = _model(ConvTransposeStream(L.Conv1DTranspose(3, 4, strides=2), name="up"), (6, 4))
    loaded = assert_round_trip(model)
    errors = verify_streaming(loaded, _x((1, 6, 4), 4), frames_per_step=(2,), compiled=(True,))
    assert errors and max(errors.values()) <= 1e-5


def test_what_cannot_stream_is_refused_by_name():
    with pytest.raises(NotStreamableError, match=r"output_padding=\(1,\), which adds frames at the end"):
        ConvTransposeStream(L.Conv1DTranspose(3, 3, strides=2, output_padding=1))
    with pytest.raises(NotStreamableError, match=r"data_format='channels_last'"):
        ConvTransposeStream(L.Conv1DTranspose(3, 3, data_format="channels_first"))
    with pytest.raises(NotStreamableError, match=r"streams Conv1DTranspose and Conv2DTranspose cells"):
        ConvTransposeStream(L.Conv1D(3, 3))
    inputs = keras.Input((6, 4))  # a 'valid' tail, then a summary of the whole window
    y = L.Conv1DTranspose(3, 5, strides=2, name="up")(inputs)
    model = keras.Model(inputs, L.GlobalAveragePooling1D(name="pool")(y))
    with pytest.raises(NotStreamableError, match=r"'pool' .*overlap tail"):
        to_streaming(model)
    explicit = _model(ConvTransposeStream(L.Conv1DTranspose(3, 5, strides=2), name="up"), (6, 4), head=False)
    from tfx_ext.layers import Stream

    y = Stream(L.GlobalAveragePooling1D(), name="pool")(explicit.output)
    with pytest.raises(NotStreamableError, match=r"overlap-add tail of 'up'"):
        to_streaming(keras.Model(explicit.input, y))
