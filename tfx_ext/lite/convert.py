"""`to_tflite`: a Keras model to a TFLite flatbuffer with named signatures (float32, dynamic, float16 or int8).

The model's serving function (`tfx_ext.lite.signatures`) is written as a SavedModel through
`keras.export.ExportArchive` (which tracks Keras 3 variables properly) and converted with
`TFLiteConverter.from_saved_model`; int8 exports are configured and checked by `tfx_ext.lite.int8`.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import pickle
import signal
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfx_ext._validate import check_choice
from tfx_ext.backend import quiet_native_logs
from tfx_ext.errors import ExportError
from tfx_ext.lite import int8
from tfx_ext.lite.signatures import (
    RESET_INPUT,
    RESET_SIGNATURE,
    SIGNATURE,
    keras_model,
    reset_input_signature,
    serving_function,
    state_variables,
)
from tfx_ext.streaming.convert import StreamingRunner

FLOAT_QUANTIZE_MODES = (None, "dynamic", "float16")

__all__ = ["to_tflite", "saved_model_converter", "FLOAT_QUANTIZE_MODES"]

# Test hook: a picklable callable the `isolate=True` child runs before it loads the model (tests make it crash).
_CHILD_HOOK = None


def saved_model_converter(model: keras.Model, batch_size: int | None, workdir: str, *,
                          reset_input: bool = False) -> tuple[tf.lite.TFLiteConverter, dict]:
    """Writes `model`'s serving signature (and, for internal-state models, the `reset_states` signature) as a
    SavedModel in `workdir` and returns a converter for it, with the input specs by signature:
    `{signature: {input name: tf.TensorSpec}}`.

    The state variables are exported as zeros (a fresh stream) and restored afterwards. `reset_input=True` gives
    `reset_states` the dummy `RESET_INPUT` (needed for int8 calibration).
    """
    serve, signature = serving_function(model, batch_size)
    specs = {SIGNATURE: dict(signature[0])}
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=signature)
    keys = [SIGNATURE]
    states = state_variables(model)
    saved = [np.asarray(variable) for variable in states]
    if states:
        reset_signature = reset_input_signature(reset_input)

        def reset(*flag):
            for variable in states:
                variable.assign(tf.zeros(variable.shape, variable.dtype))
            return {RESET_INPUT: flag[0] + 0 if flag else tf.constant(0, tf.int32)}

        archive.add_endpoint(name=RESET_SIGNATURE, fn=reset, input_signature=reset_signature)
        specs[RESET_SIGNATURE] = {spec.name: spec for spec in reset_signature}
        keys.append(RESET_SIGNATURE)
        for variable in states:  # Export a fresh stream (zeros), then restore the user's state.
            variable.assign(np.zeros(variable.shape, variable.dtype))
    try:
        archive.write_out(workdir, verbose=False)
    finally:
        for variable, value in zip(states, saved):
            variable.assign(value)
    converter = tf.lite.TFLiteConverter.from_saved_model(workdir, signature_keys=keys)
    # Internal-state streaming models keep their state in resource variables (VAR_HANDLE/ASSIGN_VARIABLE ops).
    converter.experimental_enable_resource_variables = True
    return converter, specs


def to_tflite(
    model: keras.Model | StreamingRunner,
    path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    batch_size: int | None = 1,
    representative_data=None,
    int8_io: bool = True,
    allow_float_ops: bool = False,
    isolate: bool = False,
) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer with a named signature.

    Args:
        model: a functional or Sequential Keras 3 model (non-streaming, or streaming with internal or external
            state), or the `StreamingRunner` that `to_streaming` returns (its model is exported).
        path: where to write the `.tflite` file (parents created); None to only return the bytes.
        quantize: None (float32), "dynamic" (int8 weights, float activations), "float16" (float16 weights) or
            "int8" (full-integer: int8 weights, activations and streaming states; `tfx_ext.lite.int8`).
            For int8, recurrent layers are unrolled over the time axis (a TFLite WHILE loop has no int8 kernels),
            so a whole-window GRU/LSTM file grows with the number of frames (1.6-2.3x the float file for the
            reference models over 49 frames); the streaming form unrolls one step and stays ~0.33x float.
        batch_size: static batch size of the signature (TFLite runs fastest with static shapes); None keeps the
            model's batch size, falling back to 1 when it is unknown.
        representative_data: int8 only: calibration samples, an iterable (or a function returning one) of dicts
            input name -> array shaped like the signature (states included for external-state models); build them
            for streaming models with `tfx_ext.lite.int8.streaming_calibration_data`. Optional for
            `quantize_aware` models (their learned ranges are used).
        int8_io: int8 only: int8 signature inputs/outputs (True) or float ones with QUANTIZE/DEQUANTIZE at the
            boundary (False). `TFLiteModel` (de)quantizes int8 I/O for you.
        allow_float_ops: int8 only: accept a hybrid model (ops without int8 kernels stay float) instead of raising.
        isolate: convert in a child process (multiprocessing "spawn"; the model travels as a `.keras` file in a
            temporary folder, the representative data as arrays), so a crash of TF's converter or calibrator
            (a segfault) raises `ExportError` naming the signal instead of killing this process (a dead Colab
            kernel). Costs the child's start (TensorFlow import, a few seconds). The model must save to `.keras`.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: `quantize` is not one of the allowed values.
        ExportError: the converter fails (its message is included); for int8, an op without an int8 kernel (named)
            or float ops / inner QUANTIZE-DEQUANTIZE left in the model (listed) unless `allow_float_ops`; a layer
            known to crash the int8 calibrator (named, with the workaround); with `isolate=True`, the child killed by
            a signal (named).
        DataError: int8 representative data with the wrong input names, shapes or dtypes.
    """
    check_choice("quantize", quantize, FLOAT_QUANTIZE_MODES + ("int8",))
    model = keras_model(model)
    if isolate:
        flatbuffer = _convert_in_child(model, dict(quantize=quantize, batch_size=batch_size,
                                                   representative_data=representative_data, int8_io=int8_io,
                                                   allow_float_ops=allow_float_ops))
        return _write(flatbuffer, path)
    with tempfile.TemporaryDirectory(prefix="tfx_ext_export_") as workdir:
        if quantize == "int8":
            with quiet_native_logs():
                flatbuffer = _convert_int8(model, workdir, representative_data=representative_data,
                                           batch_size=batch_size, int8_io=int8_io, allow_float_ops=allow_float_ops)
        else:
            flatbuffer = _convert_float(model, quantize, batch_size, workdir)
    return _write(flatbuffer, path)


def _write(flatbuffer: bytes, path) -> bytes:
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(flatbuffer)
    return flatbuffer


def _plain_data(representative_data):
    """Representative data as picklable arrays (a function or generator is run here, tensors become numpy)."""
    if representative_data is None:
        return None
    if callable(representative_data):
        representative_data = representative_data()
    if isinstance(representative_data, (np.ndarray, tf.Tensor)):
        return np.asarray(representative_data)
    try:
        samples = list(representative_data)
    except TypeError:
        return representative_data  # not iterable: the child's checks name it
    return [keras.tree.map_structure(lambda v: np.asarray(v) if isinstance(v, tf.Tensor) else v, sample)
            for sample in samples]


def _child(model_path: str, kwargs_path: str, out_path: str, hook) -> None:
    """The `isolate=True` child: load the model, convert, write the flatbuffer or the pickled error."""
    if hook is not None:
        hook()
    try:
        with open(kwargs_path, "rb") as file:
            kwargs = pickle.load(file)
        model = keras.models.load_model(model_path, compile=False)
        pathlib.Path(out_path).write_bytes(to_tflite(model, **kwargs))
    except Exception as error:  # sent back to the parent and raised there
        try:
            payload = pickle.dumps(error)
        except Exception:  # an unpicklable exception: its type and message
            payload = pickle.dumps(ExportError(f"{type(error).__name__}: {error}"))
        pathlib.Path(out_path + ".error").write_bytes(payload)


def _convert_in_child(model: keras.Model, kwargs: dict) -> bytes:
    """`to_tflite(model, **kwargs)` in a spawned child process; a signal that kills it becomes `ExportError`."""
    with tempfile.TemporaryDirectory(prefix="tfx_ext_isolate_") as workdir:
        model_path = os.path.join(workdir, "model.keras")
        try:
            model.save(model_path)
        except Exception as error:
            raise ExportError(f"to_tflite(..., isolate=True) passes the model to the child as a .keras file, and "
                              f"model {model.name!r} does not save: {error}") from error
        kwargs_path, out_path = os.path.join(workdir, "kwargs.pkl"), os.path.join(workdir, "model.tflite")
        with open(kwargs_path, "wb") as file:
            pickle.dump({**kwargs, "representative_data": _plain_data(kwargs["representative_data"])}, file)
        process = multiprocessing.get_context("spawn").Process(
            target=_child, args=(model_path, kwargs_path, out_path, _CHILD_HOOK), daemon=True)
        process.start()
        process.join()
        code = process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            raise ExportError(
                f"TFLite conversion of model {model.name!r} crashed the child process (isolate=True): killed by "
                f"{name}. TF's converter or calibrator crashed on this model; see tfx_ext.lite.int8."
                "check_crash_patterns for the known causes, or export without int8.")
        if os.path.exists(out_path + ".error"):
            raise pickle.loads(pathlib.Path(out_path + ".error").read_bytes())
        if code != 0 or not os.path.exists(out_path):
            raise ExportError(f"TFLite conversion of model {model.name!r} in a child process (isolate=True) exited "
                              f"with status {code} and no result.")
        return pathlib.Path(out_path).read_bytes()


def _convert_float(model: keras.Model, quantize: str | None, batch_size: int | None, workdir: str) -> bytes:
    """float32, dynamic-range or float16 conversion (see `to_tflite`)."""
    converter, _ = saved_model_converter(model, batch_size, workdir)
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    try:
        with quiet_native_logs():
            return converter.convert()
    except Exception as error:  # The converter raises several unrelated types; name the model in one error.
        raise ExportError(f"TFLite conversion of model {model.name!r} failed: {error}") from error


def _convert_int8(model: keras.Model, workdir: str, *, representative_data, batch_size: int | None, int8_io: bool,
                  allow_float_ops: bool) -> bytes:
    """Full-integer conversion (see `to_tflite` and `tfx_ext.lite.int8`)."""
    learned_ranges = int8.require_calibration(model, representative_data)
    with int8.unrolled_recurrences(model):  # (the signature's static shapes give every recurrence a fixed length)
        int8.check_crash_patterns(model, batch_size)
        converter, specs = saved_model_converter(model, batch_size, workdir, reset_input=True)
    int8.configure_int8(converter, specs, representative_data=representative_data, int8_io=int8_io,
                        allow_float_ops=allow_float_ops)
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        raise int8.conversion_error(model, error) from error
    flatbuffer = int8.share_state_quantization(flatbuffer, model.name)  # one scale/zero point per state, exactly
    int8.warn_whole_window_recurrence(model, flatbuffer)
    if not allow_float_ops:
        int8.check_full_integer(flatbuffer, model.name,
                                learned_ranges_only=learned_ranges and representative_data is None)
    return flatbuffer

