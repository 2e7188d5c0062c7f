"""`to_tflite`: a Keras model to a TFLite flatbuffer with named signatures (float32, dynamic, float16 or int8).

The model's serving function (`tfx_ext.lite.signatures`) is written as a SavedModel through
`keras.export.ExportArchive` (which tracks Keras 3 variables properly) and converted with
`TFLiteConverter.from_saved_model`; int8 exports are configured and checked by `tfx_ext.lite.int8`.
"""

from __future__ import annotations

import os
import pathlib
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

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: `quantize` is not one of the allowed values.
        ExportError: the converter fails (its message is included); for int8, an op without an int8 kernel (named)
            or float ops / inner QUANTIZE-DEQUANTIZE left in the model (listed) unless `allow_float_ops`.
        DataError: int8 representative data with the wrong input names, shapes or dtypes.
    """
    check_choice("quantize", quantize, FLOAT_QUANTIZE_MODES + ("int8",))
    model = keras_model(model)
    with tempfile.TemporaryDirectory(prefix="tfx_ext_export_") as workdir:
        if quantize == "int8":
            with quiet_native_logs():
                flatbuffer = _convert_int8(model, workdir, representative_data=representative_data,
                                           batch_size=batch_size, int8_io=int8_io, allow_float_ops=allow_float_ops)
        else:
            flatbuffer = _convert_float(model, quantize, batch_size, workdir)
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(flatbuffer)
    return flatbuffer


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
        converter, specs = saved_model_converter(model, batch_size, workdir, reset_input=True)
    int8.configure_int8(converter, specs, representative_data=representative_data, int8_io=int8_io,
                        allow_float_ops=allow_float_ops)
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        raise int8.conversion_error(model, error) from error
    if not allow_float_ops:
        int8.check_full_integer(flatbuffer, model.name,
                                learned_ranges_only=learned_ranges and representative_data is None)
    return flatbuffer

