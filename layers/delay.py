"""`Delay`: aligns branches of non-causal streaming models by delaying frames in the streaming modes (and, as
kws_streaming's `also_in_non_streaming=True`, in the whole-sequence form too)."""

from __future__ import annotations

import keras
from keras import ops

from tfx_ext._validate import check_int
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer


@keras.saving.register_keras_serializable(package="tfx_ext")
class Delay(StreamingLayer):
    """Identity on whole sequences; delays frames by `delay` when streaming.

    A `Stream(..., pad_time_dim="same")` layer looks ahead in the whole-sequence form, so streamed it emits its
    outputs `output_delay` frames late. A branch that skips such a layer (a residual connection, a concatenation)
    must be delayed by the same number of frames to stay aligned; put `Delay(delay)` on it. `to_streaming` checks
    the alignment and names the merge and the missing delay when it is wrong.

    With `also_in_non_streaming=True` the whole-sequence form delays too (zeros first, the last `delay` frames
    dropped), so the trained model already holds the delay and streamed outputs equal it with no lag
    (`output_delay` 0): kws_streaming's option of that name, for models trained with the delay in place.

    Args:
        delay: frames to delay by (a non-negative integer).
        also_in_non_streaming: delay the whole-sequence form as well.
        mode: a `tfx_ext.Mode`.

    Call arguments:
        inputs: `(batch, time, ...)`; `[inputs, buffer]` in `STREAM_EXTERNAL_STATE` mode.

    Input shape:
        `(batch, time, ...)`.

    Output shape:
        Same as the input.

    Streaming:
        State `buffer`: `(delay, *input_shape[2:])` (no state when delay is 0). Block size 1. Latency: `delay`
        frames (`output_delay`).

    Example:
        >>> tuple(Delay(2)(np.zeros((1, 4, 3), "float32")).shape)
        (1, 4, 3)
    """

    def __init__(self, delay: int, also_in_non_streaming: bool = False, mode=Mode.TRAINING, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.delay = check_int("delay", delay, minimum=0)
        if not isinstance(also_in_non_streaming, bool):
            raise TypeError("`also_in_non_streaming` must be a bool. "
                            f"Received: also_in_non_streaming={also_in_non_streaming!r}")
        self.also_in_non_streaming = also_in_non_streaming

    @property
    def output_delay(self) -> int:
        return 0 if self.also_in_non_streaming else self.delay

    def state_specs(self, input_shape) -> list[StateSpec]:
        shape = self._data_shape(input_shape)
        if self.delay == 0:
            return []
        return [StateSpec("buffer", (self.delay, *shape[2:]), self.compute_dtype)]

    def call_full(self, inputs, training=None):
        if not self.also_in_non_streaming or self.delay == 0:
            return inputs
        frames = ops.shape(inputs)[1]
        zeros = ops.zeros_like(inputs[:, :1])
        padded = ops.concatenate([ops.repeat(zeros, self.delay, axis=1), inputs], axis=1)
        return padded[:, :frames]

    def step(self, inputs, states, training=None):
        if self.delay == 0:
            return inputs, []
        frames = inputs.shape[1]
        x = ops.concatenate([states[0], inputs], axis=1)
        return x[:, :frames], [x[:, frames:]]

    def compute_output_shape(self, input_shape):
        shape = self._data_shape(input_shape)
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            return [tuple(shape), *[(shape[0], *spec.shape) for spec in self.state_specs(shape)]]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "delay": self.delay, "also_in_non_streaming": self.also_in_non_streaming}


__all__ = ["Delay"]
