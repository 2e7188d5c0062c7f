"""`to_streaming` of a plain Keras `MultiHeadAttention` called with `use_causal_mask=True`: rewritten as
`StreamingMultiHeadAttention` with the model's time length as its window (a named warning says where that window
truncates), streamed against the ORIGINAL model on the whole sequence in both modes; what cannot stream is refused."""

import warnings

import keras
import numpy as np
import pytest

from tfx_ext.errors import AttentionWindowWarning, NotStreamableError
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.testing import verify_streaming, verify_tflite_streaming

L = keras.layers


def causal_model(frames=8, features=6, layer_kwargs=None, **call):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((frames, features))
    mha = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4, bias_initializer="random_normal", name="mha",
                               **(layer_kwargs or {}))
    y = mha(inputs, inputs, **({"use_causal_mask": True} | call))
    y = L.Add(name="residual")([inputs, y])
    return keras.Model(inputs, L.Dense(3, name="head")(L.LayerNormalization(name="norm")(y)))


def test_causal_keras_attention_streams_like_the_original_model():
    model = causal_model()
    x = np.random.default_rng(0).normal(size=(2, 8, 6)).astype("float32")
    with pytest.warns(AttentionWindowWarning, match=r"StreamingMultiHeadAttention\(window=8\): exact over the first 8"):
        errors = verify_streaming(model, x, frames_per_step=(1, 2), compiled=(True,))
    assert errors and max(errors.values()) <= 1e-5, errors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttentionWindowWarning)
        runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2)
    assert sorted(runner.state_names) == ["mha_frames", "mha_keys", "mha_values"]


def test_sliding_window_attention_keeps_its_window():
    model = causal_model(frames=8, layer_kwargs={"sliding_window": 3}) if "sliding_window" in L.MultiHeadAttention(
        1, 1).get_config() else pytest.skip("this Keras has no sliding_window")
    x = np.random.default_rng(1).normal(size=(1, 8, 6)).astype("float32")
    with pytest.warns(AttentionWindowWarning, match=r"window=3"):
        errors = verify_streaming(model, x, frames_per_step=(1,), compiled=(True,), check_reset=False)
    assert max(errors.values()) <= 1e-5, errors


def test_float_litert():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AttentionWindowWarning)
        x = np.random.default_rng(2).normal(size=(1, 8, 6)).astype("float32")
        assert verify_tflite_streaming(causal_model(), x, Mode.STREAM_EXTERNAL_STATE) <= 1e-4


def test_what_cannot_stream_is_refused_by_name():
    x_model = causal_model(use_causal_mask=False)
    with pytest.raises(NotStreamableError, match=r"'mha' .*attends to future frames .*use_causal_mask=True"):
        to_streaming(x_model)
    inputs = keras.Input((8, 6))
    other = L.Dense(6, name="memory")(inputs)
    y = L.MultiHeadAttention(2, 3, name="cross")(inputs, other, use_causal_mask=True)
    with pytest.raises(NotStreamableError, match=r"'cross' .*attends to another sequence"):
        to_streaming(keras.Model(inputs, y))
    inputs = keras.Input((None, 6))
    y = L.MultiHeadAttention(2, 3, name="open")(inputs, inputs, use_causal_mask=True)
    with pytest.raises(NotStreamableError, match=r"'open' .*time axis of unknown length"):
        to_streaming(keras.Model(inputs, y))
