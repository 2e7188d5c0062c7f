"""The one mode enum and the streaming-state contract every streamable layer follows.

A layer that can stream subclasses `StreamingLayer` and writes two methods: `state_specs(input_shape)` (which
states it needs, per example) and `step(inputs, states, training)` (one chunk of frames, the states in, the
new states out), plus `call_full(inputs, training)` for whole sequences. The base class does the rest the same way
for every layer: keeps `mode` in the config, owns the internal-state variables, takes and returns external states,
checks chunk lengths and zeroes state on `reset_states()`. `tfx_ext.streaming.to_streaming` reads only this
contract, so it never needs per-layer special cases.
"""

from __future__ import annotations

import dataclasses
import enum

import keras
from keras import ops

from tfx_ext.errors import NotStreamableError


class Mode(str, enum.Enum):
    """How a streamable layer runs.

    - `TRAINING`: whole sequences, training-only behaviour (dropout, noise) on.
    - `NON_STREAM_INFERENCE`: whole sequences, inference behaviour.
    - `STREAM_INTERNAL_STATE`: chunks of frames; state lives in non-trainable variables of the layer.
    - `STREAM_EXTERNAL_STATE`: chunks of frames; states are extra inputs and outputs of the layer (and model).
    """

    TRAINING = "training"
    NON_STREAM_INFERENCE = "non_stream_inference"
    STREAM_INTERNAL_STATE = "stream_internal_state"
    STREAM_EXTERNAL_STATE = "stream_external_state"

    @classmethod
    def of(cls, value: "Mode | str") -> "Mode":
        """Normalises a `Mode` or its string value (case-insensitive) to a `Mode`."""
        if isinstance(value, Mode):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            for mode in cls:
                if key in (mode.value, mode.name.lower()):
                    return mode
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"`mode` must be one of {allowed}. Received: mode={value!r}")

    @property
    def is_streaming(self) -> bool:
        return self in (Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE)


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """One state of a streamable layer: its short name, per-example shape (no batch axis) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"`name` must be non-empty and free of '/'. Received: name={self.name!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))


def state_name(layer_name: str, spec: StateSpec) -> str:
    """Stable public name of an external state: `<layer>_<state>` (Keras 3 forbids '/' in names)."""
    return f"{layer_name}_{spec.name}"


class StreamingLayer(keras.layers.Layer):
    """Base class of layers with a whole-sequence form and a stateful step form (time on axis 1).

    Subclasses implement:
      - `state_specs(input_shape) -> list[StateSpec]`: the states one chunk leaves for the next.
      - `call_full(inputs, training=None)`: the whole-sequence computation (training and non-stream inference).
      - `step(inputs, states, training=None) -> (outputs, new_states)`: one chunk of `k * block_size` frames.
    and may override `block_size` (frames per step must be a multiple of it), `time_stride`, `output_ratio`,
    `output_delay`, `tail` and `drops_time_axis`.

    In `STREAM_EXTERNAL_STATE` mode the layer is called as `layer([inputs, *states])` and returns
    `[outputs, *new_states]`; in `STREAM_INTERNAL_STATE` it keeps the states in non-trainable variables whose
    batch size is the static batch size of its input.

    Args:
        mode: a `Mode` or its string value.
    """

    block_size: int = 1
    # Frames (of this layer's input) by which streamed outputs lag the whole-sequence outputs (look-ahead layers).
    output_delay: int = 0
    # Input frames per output frame (a strided layer emits one frame per `time_stride` input frames).
    time_stride: int = 1
    # Output frames per input frame (an upsampling layer, a transposed convolution, emits `output_ratio` frames per
    # input frame); delays and rates downstream may then be fractions of a model-input frame.
    output_ratio: int = 1
    # Whole-sequence output frames after the last streamed one (a 'valid' transposed conv's overlap-add tail):
    # per-frame layers are fine, a summary of the whole window is not.
    tail: int = 0
    # True when the output has no time axis (a window summary such as Flatten, or an RNN's last state).
    drops_time_axis: bool = False

    def __init__(self, mode: Mode | str = Mode.TRAINING, **kwargs):
        super().__init__(**kwargs)
        self.mode = Mode.of(mode)
        self._state_variables: list = []
        self._state_dtypes: list = []

    # ----- contract for subclasses -------------------------------------------------------------------------------
    def state_specs(self, input_shape) -> list[StateSpec]:
        raise NotImplementedError(f"{type(self).__name__} must implement state_specs(input_shape).")

    def call_full(self, inputs, training=None):
        raise NotImplementedError(f"{type(self).__name__} must implement call_full(inputs, training).")

    def step(self, inputs, states, training=None):
        raise NotImplementedError(f"{type(self).__name__} must implement step(inputs, states, training).")

    # ----- shared machinery --------------------------------------------------------------------------------------
    def _data_shape(self, input_shape):
        """The shape of the data input, whatever the mode's call convention."""
        if self.mode == Mode.STREAM_EXTERNAL_STATE and isinstance(input_shape, (list, tuple)) and input_shape and (
            isinstance(input_shape[0], (list, tuple))
        ):
            return tuple(input_shape[0])
        return tuple(input_shape)

    def build_states(self, input_shape) -> None:
        """Creates the internal-state variables (call from `build` after the layer's own weights)."""
        if self.mode != Mode.STREAM_INTERNAL_STATE:
            return
        shape = self._data_shape(input_shape)
        batch = shape[0]
        if batch is None:
            raise NotStreamableError(
                f"layer {self.name!r} ({type(self).__name__}) in mode {self.mode.value!r} needs a static batch size "
                "to hold its internal state; build the streaming model with a fixed batch size "
                "(to_streaming(..., batch_size=N))."
            )
        specs = self.state_specs(shape)
        # Float states are stored in the variable dtype (float32 under mixed_float16, like every Keras weight) and
        # read in the state's own dtype; `_state_dtypes` remembers which.
        self._state_dtypes = [spec.dtype for spec in specs]
        self._state_variables = [
            self.add_weight(
                name=spec.name,
                shape=(batch, *spec.shape),
                dtype=self.variable_dtype if keras.backend.is_float_dtype(spec.dtype) else spec.dtype,
                initializer="zeros",
                trainable=False,
            )
            for spec in specs
        ]

    def get_initial_state(self, batch_size: int, input_shape=None) -> list:
        """Zero states for `batch_size` sequences (the start of a stream)."""
        shape = self._data_shape(input_shape) if input_shape is not None else self._built_data_shape
        return [ops.zeros((batch_size, *spec.shape), dtype=spec.dtype) for spec in self.state_specs(shape)]

    @property
    def state_variables(self) -> list:
        """The internal-state variables (empty outside `STREAM_INTERNAL_STATE`)."""
        return list(self._state_variables)

    def parameter_weights(self) -> list:
        """The layer's weights without its internal-state variables: what carries over between modes."""
        state_ids = {id(v) for v in self._state_variables}
        return [w for w in self.weights if id(w) not in state_ids]

    def reset_states(self) -> None:
        """Zeroes the internal state (start a new stream)."""
        for variable in self._state_variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def build(self, input_shape):
        self._built_data_shape = self._data_shape(input_shape)
        self.build_states(input_shape)
        self.built = True

    def _check_chunk(self, inputs) -> None:
        frames = inputs.shape[1]
        if frames is not None and frames % self.block_size:
            raise NotStreamableError(
                f"layer {self.name!r} ({type(self).__name__}) steps over multiples of {self.block_size} frames; "
                f"received a chunk of {frames} frames. Use frames_per_step that is a multiple of {self.block_size}."
            )

    def call(self, inputs, training=None):
        if self.mode == Mode.TRAINING or self.mode == Mode.NON_STREAM_INFERENCE:
            return self.call_full(inputs, training=training if self.mode == Mode.TRAINING else False)
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            data, *states = inputs
            self._check_chunk(data)
            outputs, new_states = self.step(data, list(states), training=False)
            return [outputs, *new_states]
        self._check_chunk(inputs)
        states = [ops.cast(v, dtype) for v, dtype in zip(self._state_variables, self._state_dtypes)]
        outputs, new_states = self.step(inputs, states, training=False)
        for variable, value in zip(self._state_variables, new_states):
            variable.assign(ops.cast(value, variable.dtype))
        return outputs

    def get_config(self):
        return {**super().get_config(), "mode": self.mode.value}


def streaming_layers(model: keras.Model) -> list[StreamingLayer]:
    """All `StreamingLayer`s of a model, in the order Keras lists its layers (recursing into nested models)."""
    found: list[StreamingLayer] = []
    for layer in model.layers:
        if isinstance(layer, StreamingLayer):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(streaming_layers(layer))
    return found


def reset_model_states(model: keras.Model) -> None:
    """Zeroes the internal state of every streamable layer in `model`."""
    for layer in streaming_layers(model):
        layer.reset_states()


__all__ = ["Mode", "StateSpec", "StreamingLayer", "state_name", "streaming_layers", "reset_model_states"]
