"""`TFLiteModel`: a `.tflite` model run in the LiteRT interpreter, inputs and outputs bound by signature name,
int8 tensors (de)quantized from their scale and zero point."""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any, Mapping

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfx_ext._compat import signature_invoker
from tfx_ext.backend import quiet_native_logs
from tfx_ext.errors import ExportError
from tfx_ext.lite.signatures import RESET_SIGNATURE, SIGNATURE

__all__ = ["TFLiteModel", "quantize_input", "dequantize_output"]


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


def _shape_message(name: str, expected: tuple, received: tuple) -> str:
    """What is wrong with an input of the wrong shape, and how to fix it (TFLite signatures have static shapes)."""
    expected, received = tuple(int(d) for d in expected), tuple(int(d) for d in received)
    message = f"input {name!r} must have shape {expected}. Received: shape={received}"
    if len(expected) == len(received) and expected[1:] == received[1:]:
        message += (f". The export has a static batch size of {expected[0]}: feed {expected[0]} example(s) per call, "
                    f"or export again with to_tflite(..., batch_size={received[0]})")
    return message


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
        if isinstance(model, (bytes, bytearray)):
            self.content = bytes(model)
        elif not isinstance(model, (str, os.PathLike)):
            hint = " (a uint8 array of flatbuffer bytes: pass array.tobytes())" if isinstance(model, np.ndarray) else ""
            raise TypeError(
                "`model` must be the path of a .tflite file or the flatbuffer bytes (what to_tflite returns)"
                f"{hint}. Received: model of type {type(model).__name__}"
            )
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
        return self._invoke(dict(inputs or {}, **kwargs), self.dequantize)

    def _invoke(self, feed: dict, dequantize: bool) -> dict[str, np.ndarray]:
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
                raise ValueError(_shape_message(name, tuple(detail["shape"]), tuple(value.shape)))
            cast[name] = quantize_input(value, detail)  # float -> int8 by the tensor's scale/zero point
        outputs = {name: np.array(value) for name, value in self.runner(**cast).items()}
        if dequantize:
            outputs = {name: dequantize_output(value, self.output_details[name]) for name, value in outputs.items()}
        return outputs

    @property
    def state_names(self) -> list[str]:
        """External states: names that are both signature inputs and outputs (`<layer>_<state>`)."""
        return [name for name in self.input_names if name in self.output_details]

    def run_stream(self, sequence, *, reset: bool = True, dequantize: bool | None = None) -> dict[str, np.ndarray]:
        """Streams a `(batch, time, ...)` sequence through a streaming model, feeding external states back.

        The chunk length is the frames of the signature's data input; `time` must be a multiple of it.

        Args:
            sequence: `(batch, time, ...)` features, batch the signature's.
            reset: restart the stream first (zero states; `reset_states` for internal-state models).
            dequantize: None: the runner's `dequantize`. True: float outputs; int8 states are dequantized and
                quantized again by the state input's scale and zero point (the float-boundary path). False: raw
                outputs, and the raw int8 state outputs are fed back as they are, as an app does. int8 exports
                give each state input and its output one scale and zero point, so both paths are bit for bit
                the same.

        Returns:
            The non-state outputs stacked along a new axis 1 (one entry per step).
        """
        dequantize = self.dequantize if dequantize is None else bool(dequantize)
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
        if not dequantize:  # raw integers: zero state is the zero point
            states = {name: quantize_input(value, self.input_details[name]) for name, value in states.items()}
        steps = []
        for start in range(0, sequence.shape[1], step):
            outputs = self._invoke({data[0]: sequence[:, start:start + step], **states}, dequantize)
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
        return signature_invoker(self.runner)

    def stepper(self, inputs: Mapping[str, Any]):
        """Like `invoker`, for external-state streaming: binds `inputs` (the data input and the starting states) and
        returns a zero-argument function that runs one bare invocation, then copies each state output into its
        input in place, as an app feeding states back does (no binding by name, no allocation of state arrays).

        The copies go through `Interpreter.tensor` views of the primary subgraph, so the signature must run that
        subgraph (true for every export of `to_tflite`; anything else is refused by name).
        """
        invoke = self.invoker(inputs)
        primary = {d["index"] for d in self.interpreter.get_input_details()}
        bound = {d["index"] for d in self.input_details.values()}
        if primary != bound:
            raise ExportError(f"stepper needs a signature that runs the primary subgraph; {self.signature!r} runs "
                              f"another one. Use `run_stream` (it binds by name) for this model")
        views = [(self.interpreter.tensor(self.output_details[name]["index"]),
                  self.interpreter.tensor(self.input_details[name]["index"])) for name in self.state_names]

        def step():
            invoke()
            for output, state_input in views:
                np.copyto(state_input(), output())

        return step

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
