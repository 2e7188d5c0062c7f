"""What an export looks like from outside: signature names, named inputs and outputs, the serving function.

Why a signature function: `TFLiteConverter.from_keras_model` keeps Keras input names but calls outputs
`output_0`, `output_1`, ..., so a streaming model's states could only be bound by position. The export is a
serving function whose inputs and outputs are dicts keyed by the Keras input names and by the model's output names
(state names for external-state streaming models).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfx_ext.errors import ExportError
from tfx_ext.streaming.contract import streaming_layers
from tfx_ext.streaming.graph import output_names
from tfx_ext.streaming.runner import StreamingRunner

SIGNATURE = "serving_default"
# Extra signature of internal-state streaming models: zeroes every state variable (starts a new stream). LiteRT's
# `reset_all_variables()` does not touch resource variables, so this is how apps and `TFLiteModel` restart.
RESET_SIGNATURE = "reset_states"
# The int8 calibrator cannot load a signature without inputs, so int8 exports give `reset_states` a dummy int32
# input of this name (`TFLiteModel.reset_variables` fills it in).
RESET_INPUT = "reset"

__all__ = [
    "SIGNATURE",
    "RESET_SIGNATURE",
    "RESET_INPUT",
    "keras_model",
    "output_names",
    "input_specs",
    "serving_function",
    "state_variables",
    "reset_input_signature",
    "reset_sample",
]


def keras_model(model_or_runner) -> keras.Model:
    """The Keras model of a `StreamingRunner` (what `to_streaming` returns), or `model_or_runner` itself."""
    return model_or_runner.model if isinstance(model_or_runner, StreamingRunner) else model_or_runner


def input_specs(model: keras.Model, batch_size: int | None) -> dict[str, tf.TensorSpec]:
    """Static `tf.TensorSpec` of every model input by name; the batch is `batch_size` (None: the model's, else 1).

    Raises:
        ExportError: an input has an unknown non-batch dimension (TFLite needs static shapes).
    """
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
    specs = input_specs(model, batch_size)
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
    return [variable for layer in streaming_layers(model) for variable in layer.state_variables]


def reset_input_signature(reset_input: bool) -> list[tf.TensorSpec]:
    """Input signature of `reset_states`: the dummy int32 `RESET_INPUT` for int8 exports (the calibrator cannot
    load a signature without inputs), else none."""
    return [tf.TensorSpec((1,), tf.int32, name=RESET_INPUT)] if reset_input else []


def reset_sample() -> tuple[str, dict[str, np.ndarray]]:
    """One int8 calibration invocation of `reset_states` (a stream starts from zero state)."""
    return RESET_SIGNATURE, {RESET_INPUT: np.zeros((1,), np.int32)}
