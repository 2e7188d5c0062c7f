"""StreamingMultiHeadAttention: the whole sequence equals Keras's MultiHeadAttention with a causal band mask (same
weights), the stream equals the user's model in both state modes, float LiteRT, serialization, named errors."""

import keras
import numpy as np
import pytest

from tfx_ext.layers import Stream, StreamingMultiHeadAttention
from tfx_ext.streaming.contract import Mode
from tfx_ext.testing import run_layer_test, verify_layer_streaming, verify_streaming
from tests.layers.streaming_checks import assert_round_trip, float_litert_error


def band(frames, window):
    i, j = np.arange(frames)[:, None], np.arange(frames)[None, :]
    return (j <= i) & (j > i - window)


@pytest.mark.parametrize("window,heads,value_dim", [(3, 2, None), (1, 1, 3), (8, 3, 5), (20, 2, None)])
def test_whole_sequence_equals_keras_attention_with_a_band_mask(window, heads, value_dim):
    x = np.random.default_rng(window).normal(size=(2, 9, 6)).astype("float32")
    layer = StreamingMultiHeadAttention(num_heads=heads, key_dim=4, window=window, value_dim=value_dim,
                                        bias_initializer="random_normal")
    ours = keras.ops.convert_to_numpy(layer(x))
    reference = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=4, value_dim=value_dim)
    reference(x, x, attention_mask=np.ones((2, 9, 9), bool))  # build
    reference.set_weights(layer.get_weights())
    mask = np.broadcast_to(band(9, window), (2, 9, 9))
    want = keras.ops.convert_to_numpy(reference(x, x, key=x, attention_mask=mask))
    np.testing.assert_allclose(ours, want, atol=1e-5)


def test_layer_contract():
    run_layer_test(StreamingMultiHeadAttention, {"num_heads": 2, "key_dim": 3, "window": 4}, (2, 6, 5),
                   expected_output_shape=(2, 6, 5), dynamic_axes=(0, 1), expected_num_trainable_weights=8,
                   expected_num_non_trainable_weights=0)


@pytest.mark.parametrize("window", [1, 2, 4, 12])
def test_streams_like_the_whole_sequence(window):
    x = np.random.default_rng(window).normal(size=(2, 12, 5)).astype("float32")
    errors = verify_layer_streaming(StreamingMultiHeadAttention, {"num_heads": 2, "key_dim": 3, "window": window},
                                    x, frames_per_step=(1, 3, 4))
    assert errors and max(errors.values()) <= 1e-5


def attention_kws_model(frames=10, bins=6):
    """A small attention keyword spotter: a projection, windowed self-attention with a residual, a window summary."""
    inputs = keras.Input((frames, bins))
    x = keras.layers.Dense(8, activation="relu", name="proj")(inputs)
    attended = StreamingMultiHeadAttention(num_heads=2, key_dim=4, window=4, name="attention")(x)
    x = keras.layers.LayerNormalization(name="norm")(keras.layers.Add(name="residual")([x, attended]))
    x = Stream(keras.layers.GlobalAveragePooling1D(), name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(x))


def test_an_attention_model_streams_against_the_original_model():
    keras.utils.set_random_seed(0)
    model = attention_kws_model()
    x = np.random.default_rng(1).normal(size=(2, 10, 6)).astype("float32")
    errors = verify_streaming(model, x, frames_per_step=(1, 2))
    assert errors and max(errors.values()) <= 1e-5


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
def test_float_litert(mode):
    assert float_litert_error(StreamingMultiHeadAttention(num_heads=2, key_dim=3, window=3), (6, 5), mode) <= 1e-4


def test_saves_and_loads_in_safe_mode():
    keras.utils.set_random_seed(0)
    assert_round_trip(attention_kws_model())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`window` must be an integer >= 1. Received: window=0"):
        StreamingMultiHeadAttention(num_heads=2, key_dim=3, window=0)
    with pytest.raises(ValueError, match=r"expects inputs \(batch, time, features\)"):
        StreamingMultiHeadAttention(num_heads=2, key_dim=3, window=2)(np.zeros((2, 3), "float32"))


@pytest.mark.parametrize("mode", ["stream_internal_state", "stream_external_state"])
def test_int8_streaming_agrees_with_the_float_model(mode):
    from tests.export.conftest import BINS, CLASSES, FRAMES, synthetic
    from tfx_ext.lite.convert import to_tflite
    from tfx_ext.lite.int8 import non_integer_ops, streaming_calibration_data
    from tfx_ext.lite.verification import verify
    from tfx_ext.streaming.convert import to_streaming

    keras.utils.set_random_seed(0)
    inputs = keras.Input((FRAMES, BINS), name="features")
    x = keras.layers.Dense(8, activation="relu", name="proj")(inputs)
    x = keras.layers.Add(name="residual")([x, StreamingMultiHeadAttention(num_heads=2, key_dim=4, window=4,
                                                                         name="attention")(x)])
    x = Stream(keras.layers.GlobalAveragePooling1D(), name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax", name="probs")(x))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    (x_train, y_train), test = synthetic(256, 0), synthetic(128, 1)
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    stream = to_streaming(model, mode, batch_size=1)
    flatbuffer = to_tflite(stream.model, quantize="int8",
                           representative_data=streaming_calibration_data(stream, x_train[:48]))
    assert non_integer_ops(flatbuffer) == []
    result = verify(model, flatbuffer, test)
    print(f"\nint8 attention/{mode}: agreement {result.agreement:.3f}, accuracy float {result.accuracy_model:.3f} "
          f"int8 {result.accuracy_tflite:.3f}")
    assert result.accuracy_model >= 0.9 and result.agreement >= 0.97
