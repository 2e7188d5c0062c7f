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

from tfx_ext.backend import quiet_native_logs
from tfx_ext.errors import ExportError

SIGNATURE = "serving_default"
# Extra signature of internal-state streaming models: zeroes every state variable (starts a new stream). LiteRT's
# `reset_all_variables()` does not touch resource variables, so this is how apps and `TFLiteModel` restart.
RESET_SIGNATURE = "reset_states"
# The int8 calibrator cannot load a signature without inputs, so int8 exports give `reset_states` a dummy int32
# input of this name (`TFLiteModel.reset_variables` fills it in).
RESET_INPUT = "reset"
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


def state_variables(model: keras.Model) -> list:
    """Internal-state variables of the streaming layers of `model` (empty for other models)."""
    from tfx_ext.streaming.contract import streaming_layers

    return [variable for layer in streaming_layers(model) for variable in layer.state_variables]


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
        reset_signature = [tf.TensorSpec((1,), tf.int32, name=RESET_INPUT)] if reset_input else []

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
    model: keras.Model,
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
            state from `to_streaming`).
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
    if quantize not in FLOAT_QUANTIZE_MODES + ("int8",):
        raise ValueError(
            f"`quantize` must be one of {FLOAT_QUANTIZE_MODES + ('int8',)}. Received: quantize={quantize!r}"
        )
    with tempfile.TemporaryDirectory(prefix="tfx_ext_export_") as workdir:
        if quantize == "int8":
            from tfx_ext.lite.int8 import convert_int8

            with quiet_native_logs():
                flatbuffer = convert_int8(model, workdir, representative_data=representative_data,
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


def _scale_zero_point(detail: Mapping) -> tuple[float, int] | None:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale or not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
        return None
    return float(scale), int(zero_point)


def quantize_input(value: np.ndarray, detail: Mapping) -> np.ndarray:
    """Quantizes a float array for an integer tensor with `detail["quantization"]` (scale, zero point); other
    arrays are cast to the tensor's dtype."""
    dtype = np.dtype(detail["dtype"])
    params = _scale_zero_point(detail)
    if params is None or not np.issubdtype(value.dtype, np.floating):
        return value.astype(dtype, copy=False)
    scale, zero_point = params
    info = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_output(value: np.ndarray, detail: Mapping) -> np.ndarray:
    """Float values of an integer tensor with a scale and zero point (other arrays unchanged)."""
    params = _scale_zero_point(detail)
    if params is None:
        return value
    scale, zero_point = params
    return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)


class TFLiteModel:
    """Runs a `.tflite` model in the LiteRT interpreter, binding inputs and outputs by signature name.

    Args:
        model: path to a `.tflite` file or the flatbuffer bytes.
        signature: signature key (default "serving_default").
        num_threads: interpreter threads (None: LiteRT's default).
        dequantize: for int8 models, return float outputs (states included) from each tensor's scale and zero
            point (True), or the raw integers (False). Float inputs to int8 tensors are always quantized.

    Example:
        >>> runner = TFLiteModel(to_tflite(model))           # doctest: +SKIP
        >>> outputs = runner(audio=np.zeros((1, 49, 40)))    # doctest: +SKIP
    """

    def __init__(self, model: bytes | str | os.PathLike, *, signature: str = SIGNATURE, num_threads: int | None = None,
                 dequantize: bool = True):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, (bytes, bytearray)):
            self.content = bytes(model)
        else:
            self.content = pathlib.Path(model).read_bytes()
        with quiet_native_logs():  # The XNNPACK delegate announces itself when tensors are first allocated.
            self.interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
            signatures = self.interpreter.get_signature_list()
            if signature not in signatures:
                raise ExportError(f"signature {signature!r} not in the model; available: {sorted(signatures)}")
            self.signature = signature
            self.runner = self.interpreter.get_signature_runner(signature)
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()
        self.dequantize = dequantize

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
            cast[name] = quantize_input(value, detail)  # float -> int8 by the tensor's scale/zero point
        outputs = {name: np.array(value) for name, value in self.runner(**cast).items()}
        if self.dequantize:
            outputs = {name: dequantize_output(value, self.output_details[name]) for name, value in outputs.items()}
        return outputs

    @property
    def state_names(self) -> list[str]:
        """External states: names that are both signature inputs and outputs (`<layer>_<state>`)."""
        return [name for name in self.input_names if name in self.output_details]

    def run_stream(self, sequence, *, reset: bool = True) -> dict[str, np.ndarray]:
        """Streams a `(batch, time, ...)` sequence through a streaming model, feeding external states back.

        The chunk length is the frames of the signature's data input; `time` must be a multiple of it. Returns the
        non-state outputs stacked along a new axis 1 (one entry per step).
        """
        data = [name for name in self.input_names if name not in self.state_names]
        if len(data) != 1:
            raise ValueError(f"run_stream needs exactly one data input. Received: inputs={self.input_names}")
        step = int(self.input_details[data[0]]["shape"][1])
        sequence = np.asarray(sequence)
        if sequence.ndim < 2 or sequence.shape[1] % step:
            raise ValueError(f"sequence length must be a multiple of {step} frames. Received: shape={sequence.shape}")
        if reset:
            self.reset_variables()
        states = {name: np.zeros(self.input_details[name]["shape"], np.float32) for name in self.state_names}
        if not self.dequantize:  # raw integers: zero state is the zero point
            states = {name: quantize_input(value, self.input_details[name]) for name, value in states.items()}
        steps = []
        for start in range(0, sequence.shape[1], step):
            outputs = self({data[0]: sequence[:, start:start + step], **states})
            states = {name: outputs[name] for name in self.state_names}
            steps.append({name: value for name, value in outputs.items() if name not in states})
        return {name: np.stack([s[name] for s in steps], axis=1) for name in steps[0]}

    def reset_variables(self) -> None:
        """Restarts the stream: zeroes internal streaming state (via the `reset_states` signature when present)."""
        if RESET_SIGNATURE in self.interpreter.get_signature_list():
            reset = self.interpreter.get_signature_runner(RESET_SIGNATURE)
            # int8 exports give the reset signature a dummy int32 input (the calibrator needs one).
            reset(**{name: np.zeros(d["shape"], d["dtype"]) for name, d in reset.get_input_details().items()})
        self.interpreter.reset_all_variables()

    def invoker(self, inputs: Mapping[str, Any]):
        """Binds `inputs` (by name, quantized for int8 tensors) and returns a zero-argument function that runs one
        bare invocation of the signature: what an app pays per step, without the Python-side binding,
        (de)quantization and output copies that `__call__` adds (those dominate a tiny streaming step)."""
        self(inputs)  # checks names and shapes, sizes the tensors and sets the inputs
        wrapper = getattr(self.runner, "_interpreter_wrapper", None)
        index = getattr(self.runner, "_subgraph_index", None)
        if wrapper is None or index is None:  # a LiteRT without these internals: time the whole call instead
            return lambda: self(inputs)
        return lambda: wrapper.Invoke(index)

    def latency(self, inputs: Mapping[str, Any], *, warmup: int = 3, repeats: int = 20) -> float:
        """Median seconds per bare invocation (see `invoker`) over `repeats` runs after `warmup` runs. Streaming
        models with internal state advance their state with every run."""
        invoke = self.invoker(inputs)
        for _ in range(warmup):
            invoke()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            invoke()
            times.append(time.perf_counter() - start)
        return float(np.median(times))


__all__ = [
    "to_tflite",
    "TFLiteModel",
    "serving_function",
    "saved_model_converter",
    "output_names",
    "state_variables",
    "quantize_input",
    "dequantize_output",
    "RESET_SIGNATURE",
]
