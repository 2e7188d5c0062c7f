"""Shared test helpers: `run_layer_test` (one call checks what every Keras layer must do) and parity helpers.

Modelled on Keras's own `run_layer_test`, with three switches of ours: `tflite=True` (export, run in LiteRT,
compare), `distribute=True` (one training step under MirroredStrategy over two logical CPUs equals the same step
on one device) and `streaming=True` (delegated to `tests/streaming_checks.py`, which owns the streaming contract).
"""

from __future__ import annotations

import functools
import pathlib
import tempfile
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

FLOAT_ATOL = 1e-5
TFLITE_ATOL = 1e-4


@functools.lru_cache(maxsize=None)
def two_cpu_strategy() -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the two logical CPU devices that tests/conftest.py creates.

    One strategy per process: a second MirroredStrategy reuses the first one's collective instance keys, and its
    all-reduce then aborts with "Shape mismatch in the collective instance" once the models differ.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "tests/conftest.py should have split the CPU into two logical devices"
    return tf.distribute.MirroredStrategy(devices)


def as_list(outputs) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in outputs]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def assert_all_close(actual, expected, atol: float = FLOAT_ATOL, what: str = "outputs") -> float:
    """Asserts element-wise closeness of (lists of) arrays and returns the max abs error."""
    actual, expected = as_list(actual), as_list(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} arrays vs {len(expected)}"
    worst = 0.0
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
        err = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
        worst = max(worst, err)
    assert worst <= atol, f"{what}: max abs error {worst:.3g} > atol {atol:g}"
    return worst


def save_and_load(model: keras.Model, custom_objects: dict | None = None) -> keras.Model:
    """`.keras` round trip with the default safe_mode=True."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "model.keras"
        model.save(path)
        return keras.saving.load_model(path, custom_objects=custom_objects)


def tflite_outputs(model: keras.Model, inputs, **export_kwargs) -> dict[str, np.ndarray]:
    """Exports `model` to float TFLite and runs it on `inputs` (array, list or dict by input name)."""
    from tfx_ext.lite import TFLiteModel, to_tflite

    batch = as_list(inputs)[0].shape[0] if not isinstance(inputs, dict) else next(iter(inputs.values())).shape[0]
    runner = TFLiteModel(to_tflite(model, batch_size=batch, **export_kwargs))
    if not isinstance(inputs, dict):
        inputs = dict(zip([t.name for t in model.inputs], as_list(inputs)))
    return runner(inputs)


def assert_tflite_parity(model: keras.Model, inputs, atol: float = TFLITE_ATOL) -> float:
    """Float TFLite outputs (bound by name) equal Keras outputs within `atol`; returns the max abs error."""
    from tfx_ext.lite.signatures import output_names

    expected = model(inputs if not isinstance(inputs, dict) else [inputs[t.name] for t in model.inputs])
    expected = dict(zip(output_names(model), as_list(expected)))
    actual = tflite_outputs(model, inputs)
    return assert_all_close([actual[k] for k in expected], list(expected.values()), atol, what="TFLite vs Keras")


def one_step_weights(model_fn: Callable[[], keras.Model], x, y, strategy=None, loss="mse", lr=0.1):
    """Builds a model (under `strategy` if given), takes one SGD step on the whole batch, returns weights + loss."""
    scope = strategy.scope() if strategy is not None else _null_scope()
    with scope:
        model = model_fn()
        model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss)
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return [np.asarray(w) for w in model.get_weights()], float(history.history["loss"][0])


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def assert_distribute_parity(model_fn, x, y, atol: float = 1e-5, loss="mse") -> None:
    """One training step under MirroredStrategy (2 logical CPUs) gives the same loss and weights as one device."""
    batch = len(x if not isinstance(x, (list, tuple)) else x[0])
    assert batch % 2 == 0, f"use an even batch for the two-replica check (Keras splits it evenly). Received: {batch}"
    keras.utils.set_random_seed(7)
    single, single_loss = one_step_weights(model_fn, x, y, loss=loss)
    keras.utils.set_random_seed(7)
    mirrored, mirrored_loss = one_step_weights(model_fn, x, y, strategy=two_cpu_strategy(), loss=loss)
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5, atol=atol)
    assert_all_close(mirrored, single, atol, what="weights after one mirrored step")


def run_layer_test(
    layer_cls: type,
    init_kwargs: dict[str, Any],
    input_shape: tuple[int, ...] | None = None,
    *,
    input_data: np.ndarray | None = None,
    expected_output_shape: tuple[int | None, ...] | None = None,
    expected_output_dtype: str | None = None,
    expected_num_trainable_weights: int | None = None,
    expected_num_non_trainable_weights: int | None = None,
    expected_num_seed_generators: int | None = None,
    expected_num_losses: int | None = None,
    run_training_check: bool = True,
    tflite: bool = False,
    distribute: bool = False,
    streaming: bool = False,
    atol: float = FLOAT_ATOL,
    custom_objects: dict | None = None,
) -> keras.Model:
    """Checks config/serialization round trips, shapes, weight counts, `.keras` save/load, a fit step and options.

    Returns the functional model `Input -> layer` that was tested (built with the layer's weights).
    """
    if input_data is None:
        assert input_shape is not None, "give input_shape or input_data"
        input_data = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    input_shape = tuple(input_data.shape)

    # Config and serialization round trips reproduce the same config.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config, "from_config(get_config()) changed the config"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert revived.get_config() == config, "serialize/deserialize changed the config"

    # Symbolic call in a functional model: shapes, dtypes.
    def model_fn():
        inputs = keras.Input(shape=input_shape[1:], batch_size=input_shape[0], name="x")
        return keras.Model(inputs, layer_cls(**init_kwargs)(inputs))

    inputs = keras.Input(shape=input_shape[1:], batch_size=input_shape[0], name="x")
    layer = layer_cls(**init_kwargs)
    symbolic = layer(inputs)
    model = keras.Model(inputs, symbolic)
    if expected_output_shape is not None:
        assert tuple(symbolic.shape) == tuple(expected_output_shape), (
            f"symbolic output shape {tuple(symbolic.shape)} != {tuple(expected_output_shape)}"
        )
    if expected_output_dtype is not None:
        assert symbolic.dtype == expected_output_dtype
    counts = {
        "trainable weights": (expected_num_trainable_weights, len(layer.trainable_weights)),
        "non-trainable weights": (expected_num_non_trainable_weights, len(layer.non_trainable_weights)),
        "seed generators": (expected_num_seed_generators, len(getattr(layer, "_seed_generators", []))),
    }
    for what, (expected, actual) in counts.items():
        assert expected is None or expected == actual, f"{what}: expected {expected}, got {actual}"

    # Eager call equals the functional model; compute_output_shape agrees.
    eager = layer(input_data)
    functional = model(input_data)
    assert_all_close(eager, functional, atol, what="eager vs functional")
    if expected_output_shape is not None:
        assert tuple(as_list(eager)[0].shape) == tuple(d if d is not None else s for d, s in zip(
            expected_output_shape, as_list(eager)[0].shape))
    if expected_num_losses is not None:
        assert len(layer.losses) == expected_num_losses, f"losses: expected {expected_num_losses}, got {len(layer.losses)}"

    # `.keras` round trip (safe_mode=True) gives identical outputs.
    loaded = save_and_load(model, custom_objects)
    assert_all_close(loaded(input_data), functional, atol, what=".keras round trip")

    if run_training_check:
        targets = [np.zeros_like(o) for o in as_list(functional)]
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit(input_data, targets[0] if len(targets) == 1 else targets, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0]), "training step produced a non-finite loss"
    if tflite:
        assert_tflite_parity(model, input_data)
    if distribute:
        targets = [np.random.default_rng(1).normal(size=o.shape).astype("float32") for o in as_list(functional)]
        assert_distribute_parity(model_fn, input_data, targets[0] if len(targets) == 1 else targets)
    if streaming:
        from tests.streaming_checks import verify_layer_streaming  # owned by the streaming tests

        verify_layer_streaming(layer_cls, init_kwargs, input_data)
    return model
