"""TFLite/LiteRT export and a runner that binds tensors by signature name.

Why a signature function: `TFLiteConverter.from_keras_model` keeps Keras input names but calls outputs
`output_0`, `output_1`, ..., so a streaming model's states could only be bound by position. We export a serving
function whose inputs and outputs are dicts keyed by the Keras input names and by the model's output names (state
names for external-state streaming models), through `keras.export.ExportArchive` (which tracks Keras 3 variables
properly) and `TFLiteConverter.from_saved_model`.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf

from tfx_ext.errors import ExportError

SIGNATURE = "serving_default"
FLOAT_QUANTIZE_MODES = (None, "dynamic", "float16")


def output_names(model: keras.Model) -> list[str]:
    """Names of the model's outputs: the dict keys for dict outputs, else Keras's `output_names`."""
    if isinstance(model.output, dict):
        return list(model.output.keys())
    return list(model.output_names)


def _input_specs(model: keras.Model, batch_size: int | None) -> dict[str, tf.TensorSpec]:
    specs = {}
    for tensor in model.inputs:
        name = tensor.name
        shape = tuple(tensor.shape)
        if batch_size is not None:
            shape = (batch_size, *shape[1:])
        elif shape[0] is None:
            shape = (1, *shape[1:])
        if any(dim is None for dim in shape[1:]):
            raise ExportError(
                f"input {name!r} has an unknown non-batch dimension {shape}; TFLite needs static shapes. "
                "Rebuild the model with a fixed input shape (e.g. frames per step for streaming models)."
            )
        specs[name] = tf.TensorSpec(shape, tensor.dtype, name=name)
    return specs


def serving_function(model: keras.Model, batch_size: int | None = None):
    """A function of a dict of named inputs that returns a dict of named outputs, plus its input signature."""
    specs = _input_specs(model, batch_size)
    names = output_names(model)
    input_order = [tensor.name for tensor in model.inputs]

    def serve(inputs):
        args = [inputs[name] for name in input_order]
        outputs = model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(outputs, dict):
            return {name: outputs[name] for name in names}
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(names, outputs))

    return serve, [specs]


def _converter(model: keras.Model, batch_size: int | None, workdir: str) -> tf.lite.TFLiteConverter:
    serve, signature = serving_function(model, batch_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=signature)
    archive.write_out(workdir, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(workdir, signature_keys=[SIGNATURE])
    # Internal-state streaming models keep their state in resource variables (VAR_HANDLE/ASSIGN_VARIABLE ops).
    converter.experimental_enable_resource_variables = True
    return converter


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    batch_size: int | None = 1,
) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer with a named signature.

    Args:
        model: a functional or Sequential Keras 3 model (non-streaming, or streaming with internal or external
            state from `to_streaming`).
        path: where to write the `.tflite` file (parents created); None to only return the bytes.
        quantize: None (float32), "dynamic" (int8 weights, float activations) or "float16" (float16 weights).
        batch_size: static batch size of the signature (TFLite runs fastest with static shapes); None keeps the
            model's batch size, falling back to 1 when it is unknown.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: `quantize` is not one of the allowed values.
        ExportError: the converter fails (its message is included).
    """
    if quantize not in FLOAT_QUANTIZE_MODES:
        raise ValueError(f"`quantize` must be one of {FLOAT_QUANTIZE_MODES}. Received: quantize={quantize!r}")
    with tempfile.TemporaryDirectory(prefix="tfx_ext_export_") as workdir:
        converter = _converter(model, batch_size, workdir)
        if quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # The converter raises several unrelated types; name the model in one error.
            raise ExportError(f"TFLite conversion of model {model.name!r} failed: {error}") from error
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(flatbuffer)
    return flatbuffer


class TFLiteModel:
    """Runs a `.tflite` model in the LiteRT interpreter, binding inputs and outputs by signature name.

    Args:
        model: path to a `.tflite` file or the flatbuffer bytes.
        signature: signature key (default "serving_default").
        num_threads: interpreter threads (None: LiteRT's default).

    Example:
        >>> runner = TFLiteModel(to_tflite(model))           # doctest: +SKIP
        >>> outputs = runner(audio=np.zeros((1, 49, 40)))    # doctest: +SKIP
    """

    def __init__(self, model: bytes | str | os.PathLike, *, signature: str = SIGNATURE, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, (bytes, bytearray)):
            self.content = bytes(model)
        else:
            self.content = pathlib.Path(model).read_bytes()
        self.interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if signature not in signatures:
            raise ExportError(f"signature {signature!r} not in the model; available: {sorted(signatures)}")
        self.signature = signature
        self.runner = self.interpreter.get_signature_runner(signature)
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()

    @property
    def input_names(self) -> list[str]:
        return list(self.input_details)

    @property
    def output_names(self) -> list[str]:
        return list(self.output_details)

    @property
    def size_bytes(self) -> int:
        return len(self.content)

    def __call__(self, inputs: Mapping[str, Any] | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Runs one invocation; inputs by name (a dict or keyword arguments). Returns outputs by name."""
        feed = dict(inputs or {}, **kwargs)
        missing = set(self.input_names) - set(feed)
        unknown = set(feed) - set(self.input_names)
        if missing or unknown:
            raise ValueError(
                f"inputs must be exactly {self.input_names}. Missing: {sorted(missing)}; unknown: {sorted(unknown)}"
            )
        cast = {}
        for name, value in feed.items():
            detail = self.input_details[name]
            value = np.asarray(value)
            if tuple(value.shape) != tuple(detail["shape"]):
                raise ValueError(
                    f"input {name!r} must have shape {tuple(detail['shape'])}. Received: shape={value.shape}"
                )
            cast[name] = value.astype(detail["dtype"], copy=False)
        return {name: np.array(value) for name, value in self.runner(**cast).items()}

    def reset_variables(self) -> None:
        """Resets resource variables (internal streaming state) to their initial values."""
        self.interpreter.reset_all_variables()

    def latency(self, inputs: Mapping[str, Any], *, warmup: int = 3, repeats: int = 20) -> float:
        """Median seconds per invocation over `repeats` runs after `warmup` runs."""
        for _ in range(warmup):
            self(inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self(inputs)
            times.append(time.perf_counter() - start)
        return float(np.median(times))


__all__ = ["to_tflite", "TFLiteModel", "serving_function", "output_names"]
