"""`verify`: a float Keras model against its TFLite export (float or int8) over data."""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.lite.signatures import keras_model
from tfx_ext.streaming.graph import output_names
from tfx_ext.streaming.convert import StreamingRunner


@dataclasses.dataclass
class Verification:
    """What `verify` measured.

    Attributes:
        max_abs_error: largest |TFLite - Keras| over every output value (probabilities for KWS models).
        agreement: fraction of examples whose top-1 class is the same in both.
        accuracy_model / accuracy_tflite: top-1 accuracy of each against the labels (None without labels).
        size_bytes: TFLite file size.
        size_ratio: `size_bytes` over the float reference size (`float_size` if given, else 4 bytes per parameter).
        examples: examples compared.
    """

    max_abs_error: float
    agreement: float
    accuracy_model: float | None
    accuracy_tflite: float | None
    size_bytes: int
    size_ratio: float
    examples: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _keras_outputs(model: keras.Model, x: np.ndarray, name: str, batch_size: int = 64) -> np.ndarray:
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(outputs, dict):
        return np.asarray(outputs[name])
    if isinstance(outputs, (list, tuple)):
        return np.asarray(outputs[output_names(model).index(name)])
    return np.asarray(outputs)


def tflite_predict(runner: TFLiteModel, x: np.ndarray, output: str | None = None) -> np.ndarray:
    """Runs `runner` over `x` (examples on axis 0) in batches of the signature's batch size; a streaming export
    (its data input has fewer frames than `x`) is streamed over each example and gives its last step's output.

    Returns the float outputs `(len(x), ...)` of `output` (default: the first non-state output).
    """
    data = [n for n in runner.input_names if n not in runner.state_names]
    if len(data) != 1:
        raise ValueError(f"verify supports models with one data input. Received: inputs={runner.input_names}")
    names = [n for n in runner.output_names if n not in runner.state_names]
    output = output or names[0]
    shape = tuple(runner.input_details[data[0]]["shape"])
    batch = shape[0]
    streamed = len(shape) >= 2 and x.ndim >= 2 and shape[1] < x.shape[1]
    if len(x) % batch:
        raise ValueError(f"the number of examples must be a multiple of the TFLite batch size {batch}. "
                         f"Received: {len(x)} examples")
    results = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if streamed:
            results.append(runner.run_stream(chunk)[output][:, -1])
        else:
            results.append(runner({data[0]: chunk})[output])
    return np.concatenate(results).astype(np.float32)


def verify(model: keras.Model | StreamingRunner, tflite, data, *, float_size: int | None = None, output: str | None = None,
           ) -> Verification:
    """Compares a float Keras model with a TFLite export over data.

    Args:
        model: the float reference: a non-streaming Keras model whose output for a whole example is the one to
            compare (for a streaming export: the output after the last step), or a `StreamingRunner` (its model).
        tflite: a `TFLiteModel`, flatbuffer bytes or a `.tflite` path (non-streaming, or streaming with either
            state kind: it is streamed over each example).
        data: `x` or `(x, y)` with integer labels `y` (then accuracies are reported).
        float_size: bytes of the float TFLite export, for `size_ratio` (default: 4 bytes per model parameter).
        output: output name to compare (default: the first output).

    Returns:
        A `Verification`.
    """
    runner = tflite if isinstance(tflite, TFLiteModel) else TFLiteModel(
        tflite if isinstance(tflite, (bytes, bytearray)) else os.fspath(tflite))
    model = keras_model(model)
    x, y = (data if isinstance(data, tuple) else (data, None))
    x = np.asarray(x, np.float32)
    name = output or output_names(model)[0]
    expected = _keras_outputs(model, x, name)
    actual = tflite_predict(runner, x, name if name in runner.output_names else None)
    if actual.shape != expected.shape:
        raise ValueError(f"TFLite output shape {actual.shape} differs from the model's {expected.shape}")
    top_model, top_tflite = expected.argmax(-1), actual.argmax(-1)
    accuracy = (lambda top: float(np.mean(top == np.asarray(y).reshape(-1)))) if y is not None else None
    reference = float_size if float_size else 4 * model.count_params()
    return Verification(
        max_abs_error=float(np.max(np.abs(actual - expected))),
        agreement=float(np.mean(top_model == top_tflite)),
        accuracy_model=accuracy(top_model) if accuracy else None,
        accuracy_tflite=accuracy(top_tflite) if accuracy else None,
        size_bytes=runner.size_bytes,
        size_ratio=runner.size_bytes / reference,
        examples=len(x),
    )


__all__ = ["verify", "Verification", "tflite_predict"]
