"""Checks shared by the tests of single streaming layers: float LiteRT of a one-layer model, `.keras` round trip."""

import keras
import numpy as np

from tfx_ext.testing import save_and_load, verify_tflite_streaming


def float_litert_error(layer, input_shape, mode, seed: int = 0) -> float:
    """Max abs error of float LiteRT against Keras, streaming `Input(input_shape) -> layer`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(seed).normal(size=(1, *input_shape)).astype("float32")
    return verify_tflite_streaming(model, x, mode)


def assert_round_trip(model, seed: int = 0):
    """The `.keras` file (safe_mode=True) predicts what `model` predicts."""
    x = np.random.default_rng(seed).normal(size=(1, *model.input_shape[1:])).astype("float32")
    loaded = save_and_load(model)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    return loaded
