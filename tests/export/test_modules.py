"""The lite room's modules: importing any of them leaves the public functions alone, and the lite entry points take
the `StreamingRunner` that `to_streaming` returns."""

import importlib
import pkgutil

import keras
import numpy as np

import tfx_ext
import tfx_ext.lite


def _tiny_model():
    inputs = keras.Input((4,), batch_size=1, name="x")
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs), name="tiny")


def test_verify_stays_the_function_after_importing_every_lite_submodule():
    """Regression: `from tfx_ext.verify import Verification` replaced the function `tfx_ext.verify` by its module,
    so the README int8 quick start raised `TypeError: 'module' object is not callable`."""
    from tfx_ext.lite.verification import Verification  # noqa: F401  (the import that used to shadow)

    for info in pkgutil.iter_modules(tfx_ext.lite.__path__, prefix="tfx_ext.lite."):
        importlib.import_module(info.name)
    assert callable(tfx_ext.verify) and callable(tfx_ext.lite.verify)
    model = _tiny_model()
    x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    result = tfx_ext.verify(model, tfx_ext.to_tflite(model), (x, np.zeros(4, int)))
    assert isinstance(result, tfx_ext.Verification)
    assert result.examples == 4 and result.agreement == 1.0 and result.max_abs_error < 1e-5


def test_to_tflite_and_verify_accept_a_streaming_runner():
    model = _tiny_model()
    runner = tfx_ext.StreamingRunner(model)
    flatbuffer = tfx_ext.to_tflite(runner)
    assert tfx_ext.TFLiteModel(flatbuffer).input_names == ["x"]
    x = np.ones((2, 4), "float32")
    assert tfx_ext.verify(runner, flatbuffer, x).max_abs_error < 1e-5
