"""SVDF (kws_streaming's Svdf): a numpy oracle of its formula on the whole window, the user's model streamed in
both state modes, float LiteRT, serialization and named errors."""

import keras
import numpy as np
import pytest

from tfx_ext.layers import SVDF
from tfx_ext.streaming.contract import Mode
from tfx_ext.testing import run_layer_test, verify_layer_streaming, verify_streaming
from tests.layers.streaming_checks import assert_round_trip, float_litert_error


def svdf_numpy(x, layer):
    """kws_streaming's Svdf written out: dense1, causal depthwise filter over memory_size frames, activation,
    dense2; loops over frames so it shares nothing with the layer's vectorised code."""
    w = {v.path.split("/")[-1]: v.numpy() for v in layer.weights}
    p = x @ w["feature_kernel"] + w.get("feature_bias", 0.0)
    batch, frames, channels = p.shape
    out = np.zeros((batch, frames, channels), np.float64)
    for t in range(frames):
        for j in range(layer.memory_size):
            src = t - layer.memory_size + 1 + j
            if src >= 0:
                out[:, t] += p[:, src] * w["time_kernel"][j]
    out += w.get("time_bias", 0.0)
    out = np.maximum(out, 0.0)  # relu
    if layer.units2 is not None:
        out = out @ w["projection_kernel"] + w["projection_bias"]
    return out


@pytest.mark.parametrize("kwargs", [dict(memory_size=4, units1=6, units2=3), dict(memory_size=1, units1=5),
                                    dict(memory_size=5, units1=4, use_bias1=True, use_bias=False)])
def test_whole_window_equals_the_kws_formula(kwargs):
    x = np.random.default_rng(0).normal(size=(2, 9, 7)).astype("float32")
    layer = SVDF(**kwargs, bias_initializer="random_normal")
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y, svdf_numpy(x, layer), atol=1e-5)


def test_layer_contract():
    run_layer_test(SVDF, {"memory_size": 3, "units1": 4, "units2": 2}, (2, 6, 5), expected_output_shape=(2, 6, 2),
                   dynamic_axes=(0, 1), expected_num_trainable_weights=5, expected_num_non_trainable_weights=0)


@pytest.mark.parametrize("kwargs", [dict(memory_size=4, units1=6, units2=3), dict(memory_size=1, units1=5)])
def test_streams_like_the_whole_window(kwargs):
    x = np.random.default_rng(1).normal(size=(2, 8, 5)).astype("float32")
    errors = verify_layer_streaming(SVDF, kwargs, x, frames_per_step=(1, 2, 4))
    assert errors and max(errors.values()) <= 1e-5


def kws_svdf_model():
    """kws_streaming's svdf model shape on features: SVDF stack, then a window summary."""
    from tfx_ext.layers import Stream

    inputs = keras.Input((12, 10))
    x = SVDF(memory_size=4, units1=16, units2=8, name="svdf1")(inputs)
    x = SVDF(memory_size=6, units1=12, units2=-1, name="svdf2")(x)
    x = Stream(keras.layers.Flatten(), name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_an_svdf_model_streams_against_the_original_model():
    keras.utils.set_random_seed(0)
    model = kws_svdf_model()
    x = np.random.default_rng(2).normal(size=(2, 12, 10)).astype("float32")
    errors = verify_streaming(model, x, frames_per_step=(1, 3))
    assert errors and max(errors.values()) <= 1e-5


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
def test_float_litert(mode):
    assert float_litert_error(SVDF(memory_size=3, units1=4, units2=2), (6, 5), mode) <= 1e-5


def test_saves_and_loads_in_safe_mode():
    keras.utils.set_random_seed(0)
    loaded = assert_round_trip(kws_svdf_model())
    x = np.random.default_rng(4).normal(size=(2, 12, 10)).astype("float32")
    errors = verify_streaming(loaded, x, frames_per_step=(2,))  # the loaded model streams like itself
    assert errors and max(errors.values()) <= 1e-5


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`memory_size` must be an integer >= 1. Received: memory_size=0"):
        SVDF(memory_size=0, units1=4)
    with pytest.raises(ValueError, match=r"`units2` must be an integer >= 1"):
        SVDF(memory_size=2, units1=4, units2=0)
    with pytest.raises(ValueError, match=r"expects inputs \(batch, time, features\)"):
        SVDF(memory_size=2, units1=4)(np.zeros((2, 3), "float32"))
