"""Checks for layers and streaming models, public so users can test their own `StreamingLayer` the way we do.

    run_layer_test(layer_cls, init_kwargs, input_shape, ...)  what every Keras layer must do, in one call
    verify_streaming(model, x)                                 streamed chunk by chunk == whole sequence
    verify_layer_streaming(layer_cls, init_kwargs, x)          the same on `Input -> layer`
    verify_tflite_streaming(model, x, mode)                    float LiteRT steps == Keras steps
    assert_all_close, assert_tflite_parity, assert_distribute_parity, save_and_load, tflite_outputs

`run_layer_test` is modelled on Keras's own: config and serialization round trips, symbolic shapes and dtypes,
weight and seed-generator counts, eager == functional, a `.keras` round trip, one `fit` step and the mixed_float16
check. It adds the conventions Keras applies to its built-in layers: None dims, `compute_output_spec` ==
call, float16 accuracy, unique names, `clone_model`, `keras.Sequential`, `tf.saved_model.save`, `trainable=False`
and a `jit_compile=True` fit. Three switches are ours: `tflite=True` (export, run in LiteRT, compare), `distribute=True` (one training step under MirroredStrategy
over two logical CPUs equals the same step on one device) and `streaming=True` (`verify_layer_streaming`).

`verify_streaming` converts with `tfx_ext.to_streaming` and checks, for each mode and `frames_per_step`, against an
independent oracle: the user's own model called on the whole window, `model(x, training=False)` (never a model
rebuilt by the converter, whose rebuild errors would cancel out):
  - outputs with a time axis: the concatenated streamed outputs equal the whole-window outputs (shifted by the
    model's declared output delay); outputs without one (window summaries, last RNN state): the output after the
    last chunk equals the whole-window output;
  - eager steps and steps inside `tf.function` agree;
  - after `reset`, a second pass gives the same outputs (and, for models with state, running on without a reset
    gives different ones, so the state is really carried);
  - external state with the batch of `x` (> 1 in our tests).

A failed check raises `AssertionError` naming what differs (plain raises, so they also hold under `python -O`).
Nothing here imports pytest. `distribute=True` needs two logical CPU devices, configured before TensorFlow starts:
`tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)`.

Example:
    >>> from tfx_ext.testing import run_layer_test                        # doctest: +SKIP
    >>> run_layer_test(MyStreamingLayer, {"units": 4}, (2, 8, 3), streaming=True)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from fractions import Fraction
import pathlib
import tempfile
import warnings
from typing import Any, Callable

import keras
import numpy as np

from tfx_ext import _compat
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.streaming.contract import Mode, StreamingLayer
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.streaming.graph import output_names
from tfx_ext.streaming.runner import StreamingRunner

FLOAT_ATOL = 1e-5
TFLITE_ATOL = 1e-4
FLOAT16_ATOL = 1e-3  # float16 resolution near 1
BOTH_MODES = (Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ----- comparisons and round trips -----------------------------------------------------------------------------------
def as_list(outputs) -> list[np.ndarray]:
    """Model outputs (array, list or dict) as a list of numpy arrays."""
    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in outputs]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def assert_all_close(actual, expected, atol: float = FLOAT_ATOL, what: str = "outputs") -> float:
    """Asserts element-wise closeness of (lists of) arrays and returns the max abs error."""
    actual, expected = as_list(actual), as_list(expected)
    _check(len(actual) == len(expected), f"{what}: {len(actual)} arrays vs {len(expected)}")
    worst = 0.0
    for a, e in zip(actual, expected):
        _check(a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}")
        err = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
        worst = max(worst, err)
    _check(worst <= atol, f"{what}: max abs error {worst:.3g} > atol {atol:g}")
    return worst


def save_and_load(model: keras.Model, custom_objects: dict | None = None) -> keras.Model:
    """`.keras` round trip with the default safe_mode=True."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "model.keras"
        model.save(path)
        return keras.saving.load_model(path, custom_objects=custom_objects)


def tflite_outputs(model: keras.Model, inputs, **export_kwargs) -> dict[str, np.ndarray]:
    """Exports `model` to float TFLite and runs it on `inputs` (array, list or dict by input name)."""

    batch = as_list(inputs)[0].shape[0] if not isinstance(inputs, dict) else next(iter(inputs.values())).shape[0]
    runner = TFLiteModel(to_tflite(model, batch_size=batch, **export_kwargs))
    if not isinstance(inputs, dict):
        inputs = dict(zip([t.name for t in model.inputs], as_list(inputs)))
    return runner(inputs)


def assert_tflite_parity(model: keras.Model, inputs, atol: float = TFLITE_ATOL) -> float:
    """Float TFLite outputs (bound by name) equal Keras outputs within `atol`; returns the max abs error."""
    expected = model(inputs if not isinstance(inputs, dict) else [inputs[t.name] for t in model.inputs])
    expected = dict(zip(output_names(model), as_list(expected)))
    actual = tflite_outputs(model, inputs)
    return assert_all_close([actual[k] for k in expected], list(expected.values()), atol, what="TFLite vs Keras")


# ----- distribution --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def two_cpu_strategy():
    """MirroredStrategy over the first two logical CPU devices (see the module docstring to configure them).

    One strategy per process: a second MirroredStrategy reuses the first one's collective instance keys, and its
    all-reduce then aborts with "Shape mismatch in the collective instance" once the models differ.
    """
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    _check(len(devices) == 2, "two logical CPU devices are needed: configure them before TensorFlow initializes "
                              f"(tf.config.set_logical_device_configuration). Found: {devices}")
    return tf.distribute.MirroredStrategy(devices)


class _NullScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def one_step_weights(model_fn: Callable[[], keras.Model], x, y, strategy=None, loss="mse", lr=0.1):
    """Builds a model (under `strategy` if given), takes one SGD step on the whole batch, returns weights + loss."""
    with strategy.scope() if strategy is not None else _NullScope():
        model = model_fn()
        model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss)
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return [np.asarray(w) for w in model.get_weights()], float(history.history["loss"][0])


def assert_distribute_parity(model_fn, x, y, atol: float = 1e-5, loss="mse") -> None:
    """One training step under MirroredStrategy (2 logical CPUs) gives the same loss and weights as one device."""
    batch = len(x if not isinstance(x, (list, tuple)) else x[0])
    _check(batch % 2 == 0, f"use an even batch for the two-replica check (Keras splits it evenly). Received: {batch}")
    keras.utils.set_random_seed(7)
    single, single_loss = one_step_weights(model_fn, x, y, loss=loss)
    keras.utils.set_random_seed(7)
    mirrored, mirrored_loss = one_step_weights(model_fn, x, y, strategy=two_cpu_strategy(), loss=loss)
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5, atol=atol)
    assert_all_close(mirrored, single, atol, what="weights after one mirrored step")


# ----- Keras's layer conventions ------------------------------------------------------------------------------------
def _flat(outputs) -> list:
    return keras.tree.flatten(outputs)


def _is_float(dtype) -> bool:
    return keras.backend.standardize_dtype(dtype).startswith(("float", "bfloat"))


def _overrides_output_shape(layer) -> bool:
    return type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape


def _check_output_spec(layer, input_data, eager) -> None:
    """`compute_output_spec` (and `compute_output_shape` where the layer defines it) agree with the eager call."""
    spec_dtype = layer.compute_dtype if layer.autocast and _is_float(input_data.dtype) else str(input_data.dtype)
    specs = _flat(layer.compute_output_spec(keras.KerasTensor(input_data.shape, dtype=spec_dtype)))
    outputs = _flat(eager)
    _check(len(specs) == len(outputs), f"compute_output_spec gives {len(specs)} outputs, the call {len(outputs)}")
    for spec, out in zip(specs, outputs):
        _check(tuple(spec.shape) == tuple(out.shape), f"compute_output_spec shape {tuple(spec.shape)} != call "
                                                      f"output shape {tuple(out.shape)}")
        dtype = keras.backend.standardize_dtype(out.dtype)
        _check(spec.dtype == dtype, f"compute_output_spec dtype {spec.dtype} != call output dtype {dtype}")
    if _overrides_output_shape(layer) and len(outputs) == 1:
        shape = tuple(layer.compute_output_shape(tuple(input_data.shape)))
        _check(shape == tuple(outputs[0].shape), f"compute_output_shape {shape} != call output shape "
                                                 f"{tuple(outputs[0].shape)}")


def _check_dynamic_shapes(layer_cls, init_kwargs, input_data, eager, dynamic_axes) -> None:
    """A symbolic call with None at `dynamic_axes` keeps those dims None and the others as in the eager call."""
    shape = tuple(None if i in dynamic_axes else d for i, d in enumerate(input_data.shape))
    layer = layer_cls(**init_kwargs)
    symbolic = _flat(layer(keras.Input(batch_shape=shape)))
    for sym, out in zip(symbolic, _flat(eager)):
        _check(len(sym.shape) == len(out.shape), f"symbolic rank {len(sym.shape)} != eager rank {len(out.shape)} "
                                                 f"for input shape {shape}")
        _check(0 not in dynamic_axes or sym.shape[0] is None, f"symbolic output {tuple(sym.shape)} lost the None "
                                                              "batch dim")
        _check(all(s is None or s == e for s, e in zip(sym.shape, out.shape)),
               f"symbolic output shape {tuple(sym.shape)} (input {shape}) disagrees with eager {tuple(out.shape)}")
    if _overrides_output_shape(layer) and len(symbolic) == 1:
        computed = tuple(layer.compute_output_shape(shape))
        _check(computed == tuple(symbolic[0].shape), f"compute_output_shape({shape}) = {computed} != symbolic "
                                                     f"{tuple(symbolic[0].shape)}")


def _check_mixed_precision(layer_cls, init_kwargs, input_data, model, outlier_fraction: float) -> None:
    """As Keras's check: under `dtype="mixed_float16"` float outputs are float16 as `compute_output_spec` says,
    float weights stay float32. Ours too: with the float32 model's weights, at most `outlier_fraction` of the
    values are off by more than 2% of the largest float32 output plus FLOAT16_ATOL (float16 rounding, not a wrong
    contraction; the absolute term covers outputs near zero, such as an untrained QAT layer's)."""
    layer = layer_cls(**{**init_kwargs, "dtype": "mixed_float16"})
    outputs = _flat(layer(input_data))
    _check_output_spec(layer, input_data, outputs)
    for out in outputs:
        dtype = keras.backend.standardize_dtype(out.dtype)
        _check(not _is_float(dtype) or dtype == "float16", f"mixed_float16 output dtype {dtype}, expected float16")
    for weight in layer.weights:
        _check(not _is_float(weight.dtype) or weight.dtype == "float32",
               f"mixed_float16 weight {weight.path} is {weight.dtype}, expected float32 (the variable dtype)")
    inputs = keras.Input(shape=input_data.shape[1:], batch_size=input_data.shape[0], name="x")
    mixed = keras.Model(inputs, layer_cls(**{**init_kwargs, "dtype": "mixed_float16"})(inputs))
    mixed.set_weights(model.get_weights())
    for got, want in zip(as_list(mixed(input_data)), as_list(model(input_data))):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        off = float(np.mean(err > 0.02 * scale + FLOAT16_ATOL)) if want.size else 0.0
        _check(off <= outlier_fraction, f"mixed_float16: {off:.1%} of the outputs are off by more than 2% of "
                                        f"max|y| = {scale:.3g} (+{FLOAT16_ATOL:g}) from float32 with the same weights")


def _check_names(layer_cls, init_kwargs, input_data) -> None:
    """Two instances in one model get distinct layer names and distinct variable paths."""
    inputs = keras.Input(shape=input_data.shape[1:], batch_size=input_data.shape[0])
    first, second = layer_cls(**init_kwargs), layer_cls(**init_kwargs)
    model = keras.Model(inputs, [first(inputs), second(inputs)])
    _check(first.name != second.name, f"two {layer_cls.__name__} instances share the name {first.name!r}")
    paths = [v.path for v in model.variables]
    _check(len(set(paths)) == len(paths), f"variable paths repeat: {sorted(p for p in paths if paths.count(p) > 1)}")


def _fit_once(model, input_data, targets, **compile_kwargs) -> float:
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", **compile_kwargs)
    history = model.fit(input_data, targets[0] if len(targets) == 1 else targets, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    _check(np.isfinite(loss), f"training step produced a non-finite loss ({compile_kwargs or 'default compile'})")
    return loss


def _check_frozen(model, layer, input_data, targets) -> None:
    """`trainable=False` moves every weight to `non_trainable_weights` and a `fit` step changes none of them."""
    trainable = list(model.trainable_weights)
    total = len(layer.weights)
    layer.trainable = False
    try:
        _check(not layer.trainable_weights and len(layer.non_trainable_weights) == total,
               f"trainable=False left {len(layer.trainable_weights)} trainable weights")
        before = [np.asarray(w) for w in trainable]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The model does not have any trainable weights")
            _fit_once(model, input_data, targets)
        changed = [w.path for w, b in zip(trainable, before) if not np.array_equal(np.asarray(w), b)]
        _check(not changed, f"a fit step with trainable=False changed {changed}")
    finally:
        layer.trainable = True


def _check_jit_fit(model_fn, input_data, targets) -> None:
    """`jit_compile=True` trains, or a layer declares `supports_jit=False` and Keras compiles without XLA."""
    model = model_fn()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*doesn't support `jit_compile=True`")
        _fit_once(model, input_data, targets, jit_compile=True)
    declared = all(getattr(layer, "supports_jit", True) for layer in model.layers)
    _check(model.jit_compile == declared, f"jit_compile={model.jit_compile} but the layers declare "
                                          f"supports_jit={declared}")


def _check_same_model(other: keras.Model, model: keras.Model, input_data, atol: float, what: str) -> None:
    """`other`, given `model`'s weights, has as many trainable weights and the same outputs."""
    _check(len(other.trainable_weights) == len(model.trainable_weights),
           f"{what}: {len(other.trainable_weights)} trainable weights, the functional model has "
           f"{len(model.trainable_weights)}")
    other.set_weights(model.get_weights())
    assert_all_close(other(input_data), model(input_data), atol, what=what)


def _check_sequential(layer_cls, init_kwargs, input_data, model, expected: str, atol: float) -> None:
    """In `keras.Sequential` the layer works as in the functional model ("works") or raises at build ("refused")."""
    _check(expected in ("works", "refused"), f"sequential must be 'works' or 'refused'. Received: {expected!r}")
    try:
        sequential = keras.Sequential([keras.Input(shape=input_data.shape[1:], batch_size=input_data.shape[0]),
                                       layer_cls(**init_kwargs)])
    except ValueError as error:
        _check(expected == "refused", f"keras.Sequential refused the layer: {error}")
        return
    _check(expected == "works", "keras.Sequential accepted a layer declared sequential='refused'")
    _check_same_model(sequential, model, input_data, atol, "Sequential vs functional")


def _check_saved_model(model, input_data, atol: float) -> None:
    """`tf.saved_model.save` and its `serving_default` signature give the model's outputs."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(model, tmp)
        restored = tf.saved_model.load(tmp).signatures["serving_default"]
        outputs = restored(tf.constant(input_data))
    expected = model(input_data)
    # The signature names dict outputs by their keys, others output_0, output_1, ...
    names = list(expected) if isinstance(expected, dict) else [f"output_{i}" for i in range(len(as_list(expected)))]
    _check(sorted(outputs) == sorted(names), f"saved_model outputs {sorted(outputs)}, expected {sorted(names)}")
    assert_all_close([np.asarray(outputs[k]) for k in names], as_list(expected), atol, what="tf.saved_model round trip")


# ----- the layer test ------------------------------------------------------------------------------------------------
def _check_round_trips(layer_cls: type, init_kwargs: dict) -> None:
    """Config and serialization round trips reproduce the same config."""
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    _check(layer_cls.from_config(config).get_config() == config, "from_config(get_config()) changed the config")
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    _check(revived.get_config() == config, "serialize/deserialize changed the config")


def _check_counts(layer, trainable, non_trainable, seed_generators) -> None:
    counts = {
        "trainable weights": (trainable, len(layer.trainable_weights)),
        "non-trainable weights": (non_trainable, len(layer.non_trainable_weights)),
        "seed generators": (seed_generators, len(_compat.seed_generators(layer))),
    }
    for what, (expected, actual) in counts.items():
        _check(expected is None or expected == actual, f"{what}: expected {expected}, got {actual}")


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
    run_mixed_precision_check: bool = True,
    mixed_precision_outliers: float = 0.01,
    dynamic_axes: tuple[int, ...] = (0,),
    supports_masking: bool | None = None,
    sequential: str = "works",
    saved_model: bool = True,
    tflite: bool = False,
    distribute: bool = False,
    streaming: bool = False,
    atol: float = FLOAT_ATOL,
    custom_objects: dict | None = None,
) -> keras.Model:
    """Checks a layer the way Keras checks its own, plus the conventions Keras applies to its built-in layers.

    Always: config and serialization round trips; symbolic shapes and dtypes (also with None dims), agreeing with
    `compute_output_spec` / `compute_output_shape` and the eager call; weight counts; eager == functional; two
    instances in one model with unique names and variable paths; `.keras` save/load (safe_mode=True),
    `clone_model` and `keras.Sequential` giving the same outputs. Switches below add or drop the rest.

    Args:
        layer_cls, init_kwargs: the layer under test, built as `layer_cls(**init_kwargs)`.
        input_shape: shape of random normal input data (or give `input_data`).
        expected_*: checked when given (symbolic output shape and dtype, weight / seed-generator / loss counts).
        run_training_check: one `fit` step towards zeros gives a finite loss, by default and with
            `jit_compile=True` (unless a layer declares `supports_jit=False`, which Keras must respect); with
            `trainable=False` the step changes no weight.
        run_mixed_precision_check: Keras's check under `dtype="mixed_float16"` (outputs float16 as
            `compute_output_spec` says, float weights float32), plus ours: with the float32 weights, at most
            `mixed_precision_outliers` of the outputs are off by more than 2% of max|y| + FLOAT16_ATOL.
        dynamic_axes: input axes set to None in a symbolic call (0, the batch, by default; add 1 for layers that
            take any number of frames): those output dims stay None, `compute_output_shape` agrees.
        supports_masking: checked against the layer's `supports_masking` when given.
        sequential: "works" (a `keras.Sequential` of the layer has the functional model's weights and outputs) or
            "refused" (building it raises ValueError).
        saved_model: `tf.saved_model.save` and its serving signature give the model's outputs.
        tflite: float TFLite outputs equal Keras outputs (`assert_tflite_parity`).
        distribute: one MirroredStrategy step equals one single-device step (`assert_distribute_parity`).
        streaming: streamed equals whole-sequence in both state modes (`verify_layer_streaming`).
        atol: tolerance of the float comparisons.
        custom_objects: for `.keras` loading of layers not registered with Keras.

    Returns:
        The functional model `Input -> layer` that was tested (built with the layer's weights).
    """
    if input_data is None:
        _check(input_shape is not None, "give input_shape or input_data")
        input_data = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    input_shape = tuple(input_data.shape)
    _check_round_trips(layer_cls, init_kwargs)

    def model_fn():
        inputs = keras.Input(shape=input_shape[1:], batch_size=input_shape[0], name="x")
        return keras.Model(inputs, layer_cls(**init_kwargs)(inputs))

    # Symbolic call in a functional model: shapes, dtypes, counts.
    inputs = keras.Input(shape=input_shape[1:], batch_size=input_shape[0], name="x")
    layer = layer_cls(**init_kwargs)
    symbolic = layer(inputs)
    model = keras.Model(inputs, symbolic)
    if expected_output_shape is not None:
        _check(tuple(symbolic.shape) == tuple(expected_output_shape),
               f"symbolic output shape {tuple(symbolic.shape)} != {tuple(expected_output_shape)}")
    if expected_output_dtype is not None:
        _check(symbolic.dtype == expected_output_dtype, f"output dtype {symbolic.dtype} != {expected_output_dtype}")
    _check_counts(layer, expected_num_trainable_weights, expected_num_non_trainable_weights,
                  expected_num_seed_generators)

    # Eager call equals the functional model; compute_output_shape agrees.
    eager = layer(input_data)
    functional = model(input_data)
    assert_all_close(eager, functional, atol, what="eager vs functional")
    if expected_output_shape is not None:
        shape = as_list(eager)[0].shape
        _check(tuple(shape) == tuple(d if d is not None else s for d, s in zip(expected_output_shape, shape)),
               f"eager output shape {tuple(shape)} != {tuple(expected_output_shape)}")
    if expected_num_losses is not None:
        _check(len(layer.losses) == expected_num_losses,
               f"losses: expected {expected_num_losses}, got {len(layer.losses)}")

    if supports_masking is not None:
        _check(layer.supports_masking == supports_masking,
               f"supports_masking is {layer.supports_masking}, expected {supports_masking}")
    _check_output_spec(layer, input_data, eager)
    _check_dynamic_shapes(layer_cls, init_kwargs, input_data, eager, dynamic_axes)
    _check_names(layer_cls, init_kwargs, input_data)

    # `.keras` round trip (safe_mode=True), clone_model and Sequential give identical outputs.
    assert_all_close(save_and_load(model, custom_objects)(input_data), functional, atol, what=".keras round trip")
    _check_same_model(keras.models.clone_model(model), model, input_data, atol, "clone_model")
    _check_sequential(layer_cls, init_kwargs, input_data, model, sequential, atol)
    if saved_model:
        _check_saved_model(model, input_data, atol)
    if run_mixed_precision_check:
        _check_mixed_precision(layer_cls, init_kwargs, input_data, model, mixed_precision_outliers)

    if run_training_check:
        targets = [np.zeros_like(o) for o in as_list(functional)]
        _fit_once(model, input_data, targets)
        _check_frozen(model, layer, input_data, targets)
        _check_jit_fit(model_fn, input_data, targets)
    if tflite:
        assert_tflite_parity(model, input_data)
    if distribute:
        targets = [np.random.default_rng(1).normal(size=o.shape).astype("float32") for o in as_list(functional)]
        assert_distribute_parity(model_fn, input_data, targets[0] if len(targets) == 1 else targets)
    if streaming:
        verify_layer_streaming(layer_cls, init_kwargs, input_data)
    return model


# ----- the streaming contract ----------------------------------------------------------------------------------------
def _as_input(x) -> np.ndarray:
    """float32 for float data; integer data (int16 PCM, token ids) keeps its dtype."""
    x = np.asarray(x)
    return x if x.dtype.kind in "iu" else x.astype("float32")


def _as_dict(outputs, names) -> dict[str, np.ndarray]:
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return {n: np.asarray(o) for n, o in zip(names, outputs)}
    return {names[0]: np.asarray(outputs)}


def _compare(streamed: np.ndarray, expected: np.ndarray, delay_frames, x_frames: int, atol: float,
             what: str) -> float:
    """Compares stacked/concatenated streamed outputs with whole-sequence outputs; returns max abs error.

    Outputs with a time axis: streamed frame `j + shift` against whole-sequence frame `j`, where the shift is the
    delay (model-input frames) over the model-input frames per streamed frame (a fraction after upsampling), over
    the frames both have (a 'valid' layer's whole-sequence output may be shorter, a transposed conv's longer).
    """
    if expected.ndim >= 3 and streamed.ndim == expected.ndim and streamed.shape[2:] == expected.shape[2:]:
        rate = Fraction(x_frames, streamed.shape[1])
        shift = Fraction(delay_frames) / rate
        _check(shift.denominator == 1, f"{what}: the output delay ({delay_frames} model-input frames) is not whole "
                                       f"frames of this output ({rate} model-input frames each)")
        shift = int(shift)
        frames = min(streamed.shape[1] - shift, expected.shape[1])
        _check(frames > 0, f"{what}: the output delay ({delay_frames} frames) leaves no frame of the "
                           f"{expected.shape[1]} to compare; use a longer x")
        a, e = streamed[:, shift:shift + frames], expected[:, :frames]
    elif streamed.shape[2:] == expected.shape[1:]:  # no time axis: one entry per step, compare the last
        a, e = streamed[:, -1], expected
    else:
        raise AssertionError(f"{what}: streamed shape {streamed.shape} does not match {expected.shape}")
    err = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
    _check(err <= atol, f"{what}: max abs error {err:.3g} > atol {atol:g}")
    return err


def verify_streaming(
    model: keras.Model,
    x: np.ndarray,
    *,
    modes=BOTH_MODES,
    frames_per_step=(1,),
    compiled=(False, True),
    atol: float = FLOAT_ATOL,
    check_reset: bool = True,
) -> dict[str, float]:
    """Streams `x` through `to_streaming(model)` in each mode and step size; returns max abs errors by case.

    The oracle is `model(x, training=False)`: the model as given, on the whole window.

    Args:
        model: a functional or Sequential model with streamable layers (the model you trained).
        x: `(batch, time, ...)`; `time` must be a multiple of every frames_per_step.
        modes: streaming modes to check.
        frames_per_step: step sizes to check.
        compiled: run steps eagerly (False) and/or inside `tf.function` (True).
        atol: tolerance (float32: 1e-5).
        check_reset: also check that `reset` restarts the stream.
    """
    x = _as_input(x)
    expected = _as_dict(model(x, training=False), output_names(model))  # the independent oracle
    errors: dict[str, float] = {}
    for mode in modes:
        mode = Mode.of(mode)
        for step in frames_per_step:
            _check(x.shape[1] % step == 0, f"time {x.shape[1]} is not a multiple of frames_per_step={step}")
            runner = to_streaming(model, mode, batch_size=x.shape[0], frames_per_step=step)
            delays = runner.output_delays
            for is_compiled in compiled:
                run = StreamingRunner(runner.model, compiled=is_compiled, output_delays=delays)
                streamed = _as_dict(run.run(x), run.output_names)
                for name in expected:
                    case = f"{mode.value}/fps={step}/{'compiled' if is_compiled else 'eager'}/{name}"
                    errors[case] = _compare(streamed[name], expected[name], delays.get(name, 0), x.shape[1],
                                            atol, case)
            if check_reset:
                _check_reset(runner, x)
    return errors


def _check_reset(runner: StreamingRunner, x: np.ndarray) -> None:
    """A reset restarts the stream: a second pass equals the first; without a reset, state carries over."""
    first, second, carried = (_as_dict(v, runner.output_names) for v in (
        runner.run(x), runner.run(x), runner.run(x, reset=False)))  # run() resets first unless reset=False
    for key in first:
        np.testing.assert_allclose(second[key], first[key], atol=FLOAT_ATOL, err_msg=f"reset did not restart {key}")
    has_state = bool(runner.state_names) or any(
        layer.state_variables for layer in runner.model.layers if isinstance(layer, StreamingLayer))
    if has_state:
        differs = any(not np.allclose(carried[k], first[k], atol=FLOAT_ATOL) for k in first)
        _check(differs, "streaming without reset gave the same outputs as from a fresh state: no state carried")


def verify_layer_streaming(layer_cls, init_kwargs: dict, input_data: np.ndarray, *, atol: float = FLOAT_ATOL,
                           frames_per_step=None, compiled=(True,)) -> dict[str, float]:
    """Streams `Input -> layer_cls(**init_kwargs)` over `input_data` in both modes (see `verify_streaming`).

    Steps of one and two blocks, inside `tf.function` by default (pass `compiled=(False, True)` for eager steps
    too). Use it on your own `StreamingLayer` subclass to check it keeps the streaming contract.
    """
    input_data = np.asarray(input_data, dtype="float32")
    probe = layer_cls(**init_kwargs)
    _check(isinstance(probe, StreamingLayer), f"{layer_cls.__name__} is not a StreamingLayer")
    block = max(int(probe.block_size), 1)
    if frames_per_step is None:
        frames_per_step = (block, 2 * block)
    longest = max(frames_per_step)
    frames = input_data.shape[1] - input_data.shape[1] % longest
    _check(frames > 0, f"input of {input_data.shape[1]} frames is shorter than a step of {longest}")
    x = input_data[:, :frames]
    inputs = keras.Input(shape=x.shape[1:], name="x")
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    window_like = getattr(probe, "is_window_cell", False)  # set by tfx_ext.layers.Stream on window cells
    steps = tuple(s for s in frames_per_step if not window_like or s <= frames)
    return verify_streaming(model, x, frames_per_step=steps, atol=atol, compiled=compiled)


def verify_tflite_streaming(model: keras.Model, x: np.ndarray, mode, *, frames_per_step: int = 1,
                            atol: float = TFLITE_ATOL) -> float:
    """Float LiteRT of the streaming model equals the Keras streaming model step by step; returns max abs error.

    Internal state: two passes with `reset_variables()` between them must both match a freshly reset Keras model.
    External state: states are named signature inputs/outputs fed back by name.
    """

    x = _as_input(x)
    mode = Mode.of(mode)
    runner = to_streaming(model, mode, batch_size=x.shape[0], frames_per_step=frames_per_step)
    lite = TFLiteModel(to_tflite(runner.model, batch_size=x.shape[0]))
    input_name = runner.input_names[0]
    _check(set(lite.input_names) == {input_name, *runner.state_names}, f"TFLite inputs: {lite.input_names}")
    worst = 0.0
    for _ in range(2 if mode == Mode.STREAM_INTERNAL_STATE else 1):
        runner.reset()
        lite.reset_variables()
        states = {n: np.zeros(lite.input_details[n]["shape"], lite.input_details[n]["dtype"])
                  for n in runner.state_names}
        for i in range(0, x.shape[1], frames_per_step):
            chunk = x[:, i:i + frames_per_step]
            expected = _as_dict(runner(chunk), runner.output_names)
            got = lite({input_name: chunk, **states})
            states = {n: got[n] for n in runner.state_names}
            for name, value in expected.items():
                err = float(np.max(np.abs(got[name] - value)))
                _check(err <= atol, f"TFLite step {i}: {name} max abs error {err:.3g} > {atol:g}")
                worst = max(worst, err)
    return worst


__all__ = [
    "BOTH_MODES",
    "FLOAT16_ATOL",
    "FLOAT_ATOL",
    "TFLITE_ATOL",
    "as_list",
    "assert_all_close",
    "assert_distribute_parity",
    "assert_tflite_parity",
    "one_step_weights",
    "run_layer_test",
    "save_and_load",
    "tflite_outputs",
    "two_cpu_strategy",
    "verify_layer_streaming",
    "verify_streaming",
    "verify_tflite_streaming",
]
