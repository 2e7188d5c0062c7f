"""`ConvTransposeStream`: a Keras Conv1DTranspose / Conv2DTranspose (time on axis 1) that streams exactly.

A transposed convolution with time stride `s` and effective time kernel `e` spreads each input frame over `e`
output frames starting at `t * s` (overlap-add). After input frame `t` the output frames `[t * s, (t + 1) * s)`
are final, since later frames only reach from `(t + 1) * s` on; the partial sums of the next `e - s` frames are the
state. So each input frame emits `s` output frames, the upsampled stream equals the layer's full overlap-add output
frame by frame, and a 'valid' layer's last `e - s` frames (its tail) come out once more input (zeros) follows.
"""

from __future__ import annotations

from fractions import Fraction

import keras
import numpy as np
from keras import ops

from tfx_ext._validate import check_int
from tfx_ext.errors import NotStreamableError
from tfx_ext.layers._warmup import warmup_mask, warmup_spec
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer

TRANSPOSED_CELLS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)


def _axis(config: dict, axis: int) -> tuple[int, int, int]:
    """(effective kernel, stride, overlap) of one spatial axis of a transposed conv's config."""
    kernel = (int(config["kernel_size"][axis]) - 1) * int(config["dilation_rate"][axis]) + 1
    stride = int(config["strides"][axis])
    return kernel, stride, max(kernel - stride, 0)


@keras.saving.register_keras_serializable(package="tfx_ext")
class ConvTransposeStream(StreamingLayer):
    """Streams a transposed convolution over time: `s` output frames per input frame, the overlap tail as state.

    The whole-sequence form is the cell itself, with its own padding: 'valid' gives `time * s + e - s` frames
    (`e` the effective time kernel), 'same' gives `time * s` frames starting `(e - s) // 2` frames into the
    overlap-add. Streamed, output frame `j` is overlap-add frame `j`: with 'valid' it equals whole-sequence frame
    `j` (no lag; the last `e - s` whole-sequence frames need input after the window, so a window summary after
    this layer is refused), with 'same' it equals frame `j - (e - s) // 2` (look-ahead: `output_delay` is
    `((e - s) // 2) / s` input frames). On Conv2DTranspose the second (frequency) axis keeps the cell's padding;
    kws_streaming's Conv1DTransposeOn2D is a Conv2DTranspose with kernel `(k, 1)` and strides `(s, 1)`.

    Args:
        cell: a `keras.layers.Conv1DTranspose` or `Conv2DTranspose` (an instance, built with trained weights or
            not, or its serialized config), `data_format='channels_last'`, `output_padding=None`.
        warmup_frames: streamed, the first `warmup_frames` input frames count as zeros (the frames before the
            sequence): the warm-up frames of a delayed layer upstream (`make_streamable` sets it).
        mode: a `tfx_ext.Mode`.

    Input shape:
        `(batch, time, channels)` (1-D) or `(batch, time, freq, channels)` (2-D).

    Output shape:
        The cell's output; streamed, `frames * s` frames per step.

    Streaming:
        State `overlap`: `(e - s, *output_frame_shape)`, the partial sums without bias (none when `e <= s`).
        Block size 1, `output_ratio` `s`. With `warmup_frames`, a state `frames` counts the frames seen.

    Example:
        >>> layer = ConvTransposeStream(keras.layers.Conv1DTranspose(4, 5, strides=2))
        >>> tuple(layer(np.zeros((1, 6, 3), "float32")).shape)
        (1, 15, 4)
    """

    def __init__(self, cell, warmup_frames: int = 0, mode=Mode.TRAINING, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.warmup_frames = check_int("warmup_frames", warmup_frames, minimum=0)
        from_config = isinstance(cell, dict)
        if from_config:
            cell = keras.saving.deserialize_keras_object({k: v for k, v in cell.items() if k != "build_config"})
        if not isinstance(cell, keras.layers.Layer):
            raise TypeError(f"`cell` must be a Keras layer or its serialized config. Received: cell={cell!r}")
        if not isinstance(cell, TRANSPOSED_CELLS):
            raise NotStreamableError(
                f"layer {self.name!r} (ConvTransposeStream) streams Conv1DTranspose and Conv2DTranspose cells "
                f"(time on axis 1). Received: cell {cell.name!r} ({type(cell).__name__}); wrap other time-mixing "
                "layers in tfx_ext.layers.Stream.")
        config = cell.get_config()
        if config.get("data_format", "channels_last") != "channels_last":
            raise NotStreamableError(
                f"layer {self.name!r} (ConvTransposeStream) needs its cell {cell.name!r} in "
                f"data_format='channels_last' (time on axis 1). Received: data_format={config['data_format']!r}")
        if config.get("output_padding") is not None:
            raise NotStreamableError(
                f"layer {self.name!r} (ConvTransposeStream): cell {cell.name!r} has output_padding="
                f"{config['output_padding']!r}, which adds frames at the end of the whole sequence only (a stream "
                "has no end to add them at); use output_padding=None.")
        self._trained_weights = [np.array(w) for w in cell.get_weights()] if cell.built and not from_config else None
        self.rank = 2 if isinstance(cell, keras.layers.Conv2DTranspose) else 1
        self.padding = config["padding"]
        self.kernel, self.stride, self.overlap = _axis(config, 0)
        if kwargs.get("dtype") is not None and not from_config:
            config = dict(config, dtype=keras.dtype_policies.serialize(self.dtype_policy))
        self.cell = type(cell).from_config(config)
        self._cell_serialized = keras.saving.serialize_keras_object(self.cell)
        self._cell_serialized.pop("build_config", None)

    # ----- geometry ----------------------------------------------------------------------------------------------
    @property
    def output_ratio(self) -> int:
        return self.stride

    @property
    def crop(self) -> int:
        """Overlap-add frames 'same' drops in front (the look-ahead, in output frames)."""
        return self.overlap // 2 if self.padding == "same" else 0

    @property
    def output_delay(self):
        """Input frames by which streamed outputs lag the whole sequence (a fraction when `crop % s`)."""
        delay = Fraction(self.crop, self.stride)
        return int(delay) if delay.denominator == 1 else delay

    @property
    def lookahead(self) -> int:
        """Output frames of the whole sequence that come only after its last input frame (crop or tail)."""
        return self.overlap - self.crop if self.padding == "valid" else self.crop

    @property
    def tail(self) -> int:
        """Whole-sequence frames after the streamed ones ('valid': `e - s`), which a window summary would need."""
        return self.overlap if self.padding == "valid" else 0

    def _freq_out(self, freq):
        """Output frequency size (2-D cells) as the cell computes it."""
        kernel, stride, overlap = _axis(self.cell.get_config(), 1)
        return None if freq is None else int(freq) * stride + (overlap if self.padding == "valid" else 0)

    def _frame_shape(self, shape) -> tuple:
        filters = int(self.cell.filters)
        return (self._freq_out(shape[2]), filters) if self.rank == 2 else (filters,)

    # ----- Keras layer API ---------------------------------------------------------------------------------------
    def build(self, input_shape):
        shape = self._data_shape(input_shape)
        if len(shape) != self.rank + 2:
            raise ValueError(f"layer {self.name!r} (ConvTransposeStream of {type(self.cell).__name__}) expects "
                             f"inputs of rank {self.rank + 2}. Received: input_shape={shape}")
        if self.mode.is_streaming and self.rank == 2 and shape[2] is None:
            raise NotStreamableError(f"layer {self.name!r} (ConvTransposeStream) needs a static frequency axis "
                                     "to stream (its state holds whole output frames).")
        self.cell.build(shape)
        if self._trained_weights is not None:
            self.cell.set_weights(self._trained_weights)
            self._trained_weights = None
        super().build(input_shape)

    def state_specs(self, input_shape) -> list[StateSpec]:
        shape = self._data_shape(input_shape)
        specs = [StateSpec("overlap", (self.overlap, *self._frame_shape(shape)), self.compute_dtype)] \
            if self.overlap else []
        return specs + ([warmup_spec()] if self.warmup_frames else [])

    def call_full(self, inputs, training=None):
        return self.cell(inputs, training=training)

    def step(self, inputs, states, training=None):
        states = list(states)
        new_states = []
        if self.warmup_frames:
            active, count = warmup_mask(states.pop(), inputs.shape[1], self.warmup_frames)
            active = ops.reshape(active, tuple(active.shape) + (1,) * (len(inputs.shape) - 2))
            inputs = ops.where(active, inputs, ops.zeros_like(inputs))
            new_states = [count]
        cell = self.cell
        config = cell.get_config()
        z = ops.conv_transpose(inputs, ops.cast(cell.kernel, inputs.dtype), strides=config["strides"],
                               padding="valid", dilation_rate=config["dilation_rate"])
        if self.rank == 2 and self.padding == "same":
            _, _, overlap = _axis(config, 1)
            start, size = overlap // 2, self._freq_out(inputs.shape[2])
            z = z[:, :, start:start + size]
        frames = inputs.shape[1] * self.stride
        if self.overlap:
            rest = ops.zeros_like(z[:, : z.shape[1] - self.overlap])
            z = z + ops.concatenate([states[0], rest], axis=1)
            new_states = [z[:, frames:], *new_states]
        y = z[:, :frames]
        if cell.use_bias:
            y = y + ops.cast(cell.bias, y.dtype)
        return cell.activation(y), new_states

    def compute_output_shape(self, input_shape):
        shape = self._data_shape(input_shape)
        if self.mode.is_streaming:
            out = (shape[0], None if shape[1] is None else shape[1] * self.stride, *self._frame_shape(shape))
        else:
            out = tuple(self.cell.compute_output_shape(shape))
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            return [out, *[(shape[0], *spec.shape) for spec in self.state_specs(shape)]]
        return out

    def get_config(self):
        return {**super().get_config(), "cell": self._cell_serialized, "warmup_frames": self.warmup_frames}


__all__ = ["ConvTransposeStream", "TRANSPOSED_CELLS"]
