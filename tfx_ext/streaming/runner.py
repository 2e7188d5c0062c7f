"""`StreamingRunner`: what `to_streaming` returns, in both state modes; it steps a streaming model.

The runner holds the streaming `keras.Model` (`runner.model`: save it, export it to TFLite) and the bookkeeping
every caller needs: which inputs are data and which are states (`input_names`, `state_names`), the output names,
the frames each step consumes, and `output_delays` (frames each streamed output lags the whole-sequence model).
`runner(chunk)` runs one step; `runner.run(sequence)` streams a whole sequence chunk by chunk and stacks the step
outputs; `runner.reset()` starts a new stream, zeroing external states or internal state variables alike.
"""

from __future__ import annotations

from typing import Mapping

import keras
import numpy as np

from tfx_ext.streaming.contract import reset_model_states
from tfx_ext.streaming.graph import _flat, output_names


class StreamingRunner:
    """Steps a streaming model, feeding external states back by name; internal-state models step as they are.

    States are the inputs whose names are also output names (`<layer>_<state>`) and that are not returned as they
    are (the input of an identity model is data); they start at zero. An
    internal-state model has none: its state lives in variables that `reset()` zeroes.

    Args:
        model: a streaming model from `to_streaming` (either mode, `runner.model`), or one loaded from `.keras`.
        compiled: run each step through a `tf.function` (much faster than eager for long streams).
        output_delays: frames by which each output lags the whole-sequence model (`to_streaming` fills it in;
            default: the model's `output_delays` attribute, or none for a model loaded from a file).
        state_names: the state inputs (`to_streaming` fills it in; default: the inputs that are also outputs).

    Attributes:
        model: the streaming `keras.Model`.
        input_names, state_names, output_names: data inputs, states, outputs without the states.
        batch_size, frames_per_step: the static shape of one step.

    Example:
        >>> stream = to_streaming(model, "stream_external_state")   # doctest: +SKIP
        >>> for frame in frames: probs = stream(frame)              # doctest: +SKIP
        >>> stream.reset()                                          # doctest: +SKIP
    """

    def __init__(self, model: keras.Model, *, compiled: bool = True, output_delays: Mapping[str, int] | None = None,
                 state_names: list[str] | None = None):
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a streaming keras.Model. Received: model={type(model).__name__}")
        self.model = model
        names = output_names(model)
        input_names = [t.name for t in model.inputs]
        if state_names is None:
            # An input whose own tensor is returned (keras.Model(x, x)) is data passed through, not a state.
            returned = {id(t) for t in _flat(model.outputs)}
            state_names = [t.name for t in model.inputs if t.name in names and id(t) not in returned]
        unknown = sorted(set(state_names) - set(input_names) or set(state_names) - set(names))
        if unknown:
            raise ValueError(f"`state_names` must name inputs that are also outputs of the model. Received: {unknown}")
        self.state_names = [n for n in input_names if n in set(state_names)]
        self.input_names = [n for n in input_names if n not in self.state_names]
        self.output_names = [n for n in names if n not in self.state_names]
        self._state_shapes = {t.name: (tuple(t.shape), t.dtype) for t in model.inputs if t.name in self.state_names}
        self.batch_size = model.inputs[0].shape[0]
        self.frames_per_step = model.inputs[0].shape[1]
        if output_delays is None:
            output_delays = getattr(model, "output_delays", {})  # our own plain attribute, set by to_streaming
        self._output_delays = dict(output_delays)
        self._call = model
        if compiled:
            import tensorflow as tf

            self._call = tf.function(lambda inputs: model(inputs, training=False))
        self.states: dict = {}
        self.reset()

    @classmethod
    def of(cls, model_or_runner, *, compiled: bool = True) -> "StreamingRunner":
        """`model_or_runner` itself if it is a runner, else a runner around the streaming model."""
        if isinstance(model_or_runner, cls):
            return model_or_runner
        return cls(model_or_runner, compiled=compiled)

    @property
    def output_delays(self) -> dict[str, int]:
        """Frames (of the model input) by which each streamed output lags the whole-sequence output (0: causal)."""
        return dict(self._output_delays)

    def reset(self) -> None:
        """Starts a new stream: zero states (external) or zeroed state variables (internal)."""
        self.states = {n: keras.ops.zeros(shape, dtype=dtype) for n, (shape, dtype) in self._state_shapes.items()}
        reset_model_states(self.model)

    def __call__(self, inputs):
        """One step: `inputs` is an array (single input) or a dict by input name. Returns an array or a dict."""
        if not isinstance(inputs, Mapping):
            if len(self.input_names) != 1:
                raise ValueError(f"`inputs` must be a dict with keys {self.input_names}. Received: an array")
            inputs = {self.input_names[0]: inputs}
        feed = {**{n: keras.ops.convert_to_tensor(v) for n, v in inputs.items()}, **self.states}
        ordered = [feed[t.name] for t in self.model.inputs]
        outputs = self._call(ordered if len(ordered) > 1 else ordered[0])
        if isinstance(outputs, Mapping):
            self.states = {n: outputs[n] for n in self.state_names}
            values = {n: np.asarray(outputs[n]) for n in self.output_names}
        else:
            values = dict(zip(self.output_names, [np.asarray(o) for o in _flat(outputs)]))
        return values[self.output_names[0]] if len(values) == 1 else values

    step = __call__

    def run(self, sequence, *, reset: bool = True):
        """Streams a whole `(batch, time, ...)` sequence chunk by chunk (time must be a multiple of the chunk).

        Returns per output (see `stack_steps`): outputs with a time axis concatenated along time; outputs without
        one stacked along a new axis 1 (one entry per step).
        """
        if reset:
            self.reset()
        sequence = np.asarray(sequence)
        step = self.frames_per_step
        if sequence.ndim < 2 or sequence.shape[1] % step:
            raise ValueError(
                f"`sequence` must be (batch, time, ...) with time a multiple of frames_per_step={step}. "
                f"Received: shape={sequence.shape}"
            )
        return stack_steps([self(sequence[:, i:i + step]) for i in range(0, sequence.shape[1], step)])


def stack_steps(results: list):
    """Joins the outputs of successive steps (arrays, or dicts of arrays by output name).

    Outputs with a time axis (`(batch, frames, ...)`, ndim >= 3) are concatenated along time; outputs without one
    (`(batch, features)`: a window summary, the last RNN state) are stacked along a new axis 1, one entry per step.
    """
    if isinstance(results[0], Mapping):
        return {k: stack_steps([r[k] for r in results]) for k in results[0]}
    values = [np.asarray(r) for r in results]
    if values[0].ndim >= 3:
        return np.concatenate(values, axis=1)
    return np.stack(values, axis=1)


__all__ = ["StreamingRunner", "stack_steps"]
