"""`TemporalPadding`: pads or crops the time axis in the whole-sequence form and passes frames through when
streaming (kws_streaming's TemporalPadding), so that a padding plus a 'valid' layer streams like the padded layer."""

from __future__ import annotations

import keras
from keras import ops

from tfx_ext._validate import check_choice, check_int
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer

PADDINGS = ("causal", "future", "same", "valid")


def split_padding(padding: str, size: int) -> tuple[int, int]:
    """(frames added before, frames added after) for `padding` and `size` (negative entries crop)."""
    if padding == "valid" or size == 0:
        return 0, 0
    if padding == "causal":
        return size, 0
    if padding == "future":
        return 0, size
    before = size // 2 if size >= 0 else (size + 1) // 2
    return before, size - before


@keras.saving.register_keras_serializable(package="tfx_ext")
class TemporalPadding(StreamingLayer):
    """Adds `padding_size` zero frames on the time axis (or crops `-padding_size` frames when negative): all before
    the sequence ("causal"), all after ("future"), half and half ("same", the extra one after), or none ("valid").

    Streamed, frames pass through unchanged: the padding stands for the zeros a following 'valid' layer's ring
    buffer starts with (causal) or for frames not yet received (future). The stream's outputs therefore lead
    the whole-sequence ones by the frames added before (`output_delay` is minus that, plus the frames cropped
    before), and `to_streaming` adds it to the following layers' delays: `TemporalPadding("causal", k - 1)` then
    `Stream(Conv1D(k, padding="valid"), pad_time_dim="valid")` streams with no lag and equals the whole sequence.

    Args:
        padding: "causal", "future", "same" or "valid".
        padding_size: frames to add (negative: to crop).
        mode: a `tfx_ext.Mode`.

    Input shape:
        `(batch, time, ...)`.

    Output shape:
        `(batch, time + padding_size, ...)` in the whole-sequence modes; the input shape when streaming.

    Streaming:
        No state. Block size 1.

    Example:
        >>> tuple(TemporalPadding("causal", 2)(np.zeros((1, 5, 3), "float32")).shape)
        (1, 7, 3)
    """

    def __init__(self, padding: str = "causal", padding_size: int = 0, mode=Mode.TRAINING, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.padding = check_choice("padding", padding, PADDINGS)
        self.padding_size = check_int("padding_size", padding_size)
        self.before, self.after = split_padding(self.padding, self.padding_size)

    @property
    def output_delay(self) -> int:
        return -self.before  # frames added before are frames the stream never emits; cropped ones make it lag

    def state_specs(self, input_shape) -> list[StateSpec]:
        return []

    def call_full(self, inputs, training=None):
        if inputs.shape.rank < 2:
            raise ValueError(f"layer {self.name!r} (TemporalPadding) expects inputs (batch, time, ...). "
                             f"Received: input_shape={tuple(inputs.shape)}")
        x = inputs
        if self.before < 0:
            x = x[:, -self.before:]
        if self.after < 0:
            x = x[:, : ops.shape(x)[1] + self.after]
        pads = [[0, 0]] * len(inputs.shape)
        pads[1] = [max(self.before, 0), max(self.after, 0)]
        return ops.pad(x, pads) if any(pads[1]) else x

    def step(self, inputs, states, training=None):
        return inputs, []

    def compute_output_shape(self, input_shape):
        shape = list(self._data_shape(input_shape))
        if not self.mode.is_streaming and shape[1] is not None:
            shape[1] = shape[1] + self.before + self.after
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            return [tuple(shape)]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "padding_size": self.padding_size}


__all__ = ["PADDINGS", "TemporalPadding", "split_padding"]
