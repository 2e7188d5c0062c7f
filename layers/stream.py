"""`Stream`: wraps a Keras layer that mixes frames in time so it can run frame by frame with a ring buffer."""

from __future__ import annotations

import keras
from keras import ops

import numpy as np

from tfx_ext.errors import NotStreamableError
from tfx_ext.layers._warmup import warmup_mask, warmup_spec
from tfx_ext._validate import check_int
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer

# Cells that slide a kernel over time: (kernel or pool) size, stride and dilation read from their config.
_CONV_CELLS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
_POOL_CELLS = (
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
)
# Cells that see a whole window of frames at once and drop the time axis.
_WINDOW_CELLS = (
    keras.layers.Flatten,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
)
SUPPORTED_CELLS = _CONV_CELLS + _POOL_CELLS + _WINDOW_CELLS
# Cells with a second (frequency) axis; decided by class, so subclasses (a user's `MyConv(Conv2D)`) keep their rank.
_RANK2_CELLS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)
PAD_TIME_DIMS = ("causal", "same", "valid")


def _supported_names() -> str:
    return ", ".join(cls.__name__ for cls in SUPPORTED_CELLS)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding (before, after) of an axis of `size` for an effective kernel and a stride."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="tfx_ext")
class Stream(StreamingLayer):
    """Makes a time-mixing Keras layer streamable: causal in time, with a ring buffer of past frames.

    The wrapper owns the time axis (axis 1): the wrapped `cell` always runs with 'valid' padding in time, and the
    wrapper pads (in `TRAINING` / `NON_STREAM_INFERENCE`) or keeps a buffer of past frames (in the streaming
    modes) so that both give the same outputs. For a kernel of size `k`, dilation `d` and stride `s` in time the
    effective kernel is `e = (k - 1) * d + 1`; the whole-sequence form pads `e - s` zero frames in front (or drops
    `s - e` frames when the stride is larger than the kernel), so output `j` sees input frames
    `[(j + 1) * s - e, (j + 1) * s)` and a chunk of `n * s` frames yields `n` outputs. The streaming form keeps the
    last `max(e - s, 0)` input frames as its state.

    On 2-D cells the second axis (frequency) keeps the cell's own padding: 'same' is applied by the wrapper with
    TensorFlow's rule, 'valid' leaves it alone.

    Window cells (Flatten, global pooling) see a fixed window of `window` frames (the time length of the
    whole-sequence input, taken from the input shape when left None) and drop the time axis; streamed, they keep
    the last `window - frames_per_step` frames and emit, at every step, the value over the last `window` frames.

    Args:
        cell: the wrapped layer (an instance or its serialized config). Supported: Conv1D, Conv2D, DepthwiseConv1D,
            DepthwiseConv2D, SeparableConv1D, SeparableConv2D, AveragePooling1D/2D, MaxPooling1D/2D, Flatten,
            GlobalAveragePooling1D/2D, GlobalMaxPooling1D/2D with `data_format='channels_last'`. The cell is
            re-created from its config with 'valid' time padding (and the wrapper's dtype policy when `dtype=` is
            given); a built cell's weights (a layer you trained) are copied into it when the wrapper builds.
        pad_time_dim: "causal" (default: each output depends on the current and past frames only) or "same" (the
            whole-sequence form also looks `(e - 1) // 2` frames ahead, like 'same' padding; streamed, the outputs
            come that many frames late, see `output_delay`; stride 1 only) or "valid" (the whole-sequence form
            does not pad, as the cell's own 'valid' padding: `(time - e) // s + 1` outputs; streamed, output `j`
            of the whole sequence comes `e - s` frames late, see `output_delay`; needs `(e - s) % s == 0`).
            Window cells ignore it.
        warmup_frames: streamed, the first `warmup_frames` input frames are taken as zeros (the padding of the
            whole-sequence form): the warm-up frames a delayed layer upstream emits (`make_streamable` sets it to
            the delay of the input; 0 adds no state).
        window: for window cells, the number of frames they cover (None: the time length of the input seen in
            the whole-sequence modes). Ignored by other cells.
        ring_buffer_size: kws_streaming's `ring_buffer_size_in_time_dim`. For any other Keras layer as `cell` (a
            registered custom layer): the `N` past frames it sees, stride 1; it must map `N + n` frames to `n`
            (checked at build; an identity cell with `N > 0` is refused, `N = 0` passes frames through). For
            supported cells it is read from their geometry (give it only to check it; window cells: `window - 1`).
        mode: a `tfx_ext.Mode` (or its string value).

    Call arguments:
        inputs: `(batch, time, ...)` in the whole-sequence and internal-state modes; `[inputs, *states]` in
            `STREAM_EXTERNAL_STATE` mode.
        training: passed to the cell in `TRAINING` mode.

    Input shape:
        `(batch, time, channels)` for 1-D cells, `(batch, time, freq, channels)` for 2-D cells.

    Output shape:
        The cell's output with `time // s` frames (one frame per `s` input frames), or no time axis for window cells.

    Streaming:
        State `buffer`: `(max(e - s, 0), *input_shape[2:])` in the compute dtype, held in the variable dtype in
        `STREAM_INTERNAL_STATE` (`window - frames_per_step` frames for window cells, of `(channels,)` per-frame
        pooled vectors for 2-D global pooling; no state when that is 0). Block size: the time stride `s`.
        Latency: 0 frames when causal, `output_delay` frames with `pad_time_dim="same"` or `"valid"`. With
        `warmup_frames`, a state `frames` `(1,)` counts the frames seen (up to `warmup_frames`).

    Example:
        >>> layer = Stream(keras.layers.Conv1D(4, 3, dilation_rate=2))
        >>> tuple(layer(np.zeros((2, 10, 3), "float32")).shape)
        (2, 10, 4)
    """

    def __init__(self, cell, pad_time_dim: str = "causal", window: int | None = None, mode=Mode.TRAINING,
                 warmup_frames: int = 0, ring_buffer_size: int | None = None, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.warmup_frames = check_int("warmup_frames", warmup_frames, minimum=0)
        self.ring_buffer_size = check_int("ring_buffer_size", ring_buffer_size, minimum=0, allow_none=True)
        from_config = isinstance(cell, dict)  # a saved cell already carries the dtype it was built with
        if from_config:
            cell_config = dict(cell)
            cell_config.pop("build_config", None)
            cell = keras.saving.deserialize_keras_object(cell_config)
        if not isinstance(cell, keras.layers.Layer):
            raise TypeError(f"`cell` must be a Keras layer or its serialized config. Received: cell={cell!r}")
        self.generic = not isinstance(cell, SUPPORTED_CELLS)
        if self.generic and self.ring_buffer_size is None:
            raise NotStreamableError(
                f"layer {self.name!r} (Stream) cannot stream its cell {cell.name!r} ({type(cell).__name__}); "
                f"supported cells: {_supported_names()}. Use a supported layer, a frame-local layer outside "
                "Stream, or pass ring_buffer_size=N for a cell that maps N + n frames to n (it sees N past frames)."
            )
        if isinstance(cell, keras.layers.Lambda):
            raise NotStreamableError(
                f"layer {self.name!r} (Stream) wraps a Lambda cell {cell.name!r}, which to_streaming and .keras files "
                "cannot re-create in safe mode; write it as a Keras layer (registered for serialization).")
        if pad_time_dim not in PAD_TIME_DIMS:
            raise ValueError(f"`pad_time_dim` must be one of {PAD_TIME_DIMS}. Received: pad_time_dim={pad_time_dim!r}")
        window = check_int("window", window, minimum=1, allow_none=True)
        # A trained cell keeps its weights: copied (not shared) into the re-created cell once it is built.
        self._trained_weights = [np.array(w) for w in cell.get_weights()] if cell.built and not from_config else None
        config = cell.get_config()
        if config.get("data_format", "channels_last") != "channels_last":
            raise NotStreamableError(
                f"layer {self.name!r} (Stream) needs its cell {cell.name!r} in data_format='channels_last' (time on "
                f"axis 1). Received: data_format={config['data_format']!r}"
            )
        if isinstance(cell, keras.layers.GlobalAveragePooling1D) or isinstance(cell, keras.layers.GlobalMaxPooling1D) \
                or isinstance(cell, keras.layers.GlobalAveragePooling2D) or isinstance(cell, keras.layers.GlobalMaxPooling2D):
            if config.get("keepdims"):
                raise NotStreamableError(
                    f"layer {self.name!r} (Stream) wraps {cell.name!r} with keepdims=True; use keepdims=False "
                    "(streamed, the window's time axis is gone)."
                )
        self._cell_serialized = keras.saving.serialize_keras_object(cell)
        self._cell_serialized.pop("build_config", None)
        self.pad_time_dim = pad_time_dim
        self.window = window
        self.is_window_cell = isinstance(cell, _WINDOW_CELLS)
        self.rank = 2 if isinstance(cell, _RANK2_CELLS) else 1
        if self.generic:  # any cell: sees `ring_buffer_size` past frames, stride 1, no frequency handling
            self.kernel, self.stride = self.ring_buffer_size + 1, 1
            self.freq_kernel, self.freq_stride, self.freq_padding = 1, 1, "valid"
        elif self.is_window_cell:
            self.kernel, self.stride, self.freq_kernel, self.freq_stride, self.freq_padding = 1, 1, 1, 1, "valid"
        else:
            size = config["kernel_size"] if isinstance(cell, _CONV_CELLS) else config["pool_size"]
            strides = config.get("strides") or size
            dilation = config.get("dilation_rate", (1,) * len(size))
            self.kernel = (int(size[0]) - 1) * int(dilation[0]) + 1
            self.stride = int(strides[0])
            if self.rank == 2:
                self.freq_kernel = (int(size[1]) - 1) * int(dilation[1]) + 1
                self.freq_stride = int(strides[1])
                self.freq_padding = config["padding"]
            else:
                self.freq_kernel, self.freq_stride, self.freq_padding = 1, 1, "valid"
            if pad_time_dim == "same" and self.stride != 1:
                raise NotStreamableError(
                    f"layer {self.name!r} (Stream) with pad_time_dim='same' needs time stride 1 (its look-ahead must "
                    f"be whole frames). Received: time stride {self.stride} of cell {cell.name!r}; use "
                    "pad_time_dim='causal'."
                )
            if pad_time_dim == "valid" and (self.kernel < self.stride or (self.kernel - self.stride) % self.stride):
                raise NotStreamableError(
                    f"layer {self.name!r} (Stream) with pad_time_dim='valid' needs an effective time kernel e "
                    f"that is the stride s plus a multiple of it (streamed outputs then fall on the whole-sequence "
                    f"grid). Received: e={self.kernel}, s={self.stride} for cell {cell.name!r}; use a kernel of "
                    "s + n * s frames, or pad_time_dim='causal'."
                )
            config = dict(config, padding="valid")
        if self.is_window_cell and self.ring_buffer_size is not None:  # kws: the window is the buffer + 1 frame
            if self.window is not None and self.window != self.ring_buffer_size + 1:
                raise ValueError(f"layer {self.name!r} (Stream): `window` and `ring_buffer_size` disagree (window = "
                                 f"ring_buffer_size + 1). Received: window={self.window}, "
                                 f"ring_buffer_size={self.ring_buffer_size}")
            self.window = self.ring_buffer_size + 1
        elif not self.generic and self.ring_buffer_size is not None and (
                self.ring_buffer_size != self._buffer_frames(None)):
            raise ValueError(
                f"layer {self.name!r} (Stream): the ring buffer of cell {cell.name!r} ({type(cell).__name__}) is "
                f"read from its geometry (e - s = {self._buffer_frames(None)} frames); leave `ring_buffer_size` None "
                f"or pass that. Received: ring_buffer_size={self.ring_buffer_size}")
        if kwargs.get("dtype") is not None and not from_config:
            # An explicit `dtype=` is the wrapper's and its cell's (as Keras's GRU passes it to its cell).
            config = dict(config, dtype=keras.dtype_policies.serialize(self.dtype_policy))
            self._cell_serialized["config"]["dtype"] = config["dtype"]
        self.cell = type(cell).from_config(config)

    # ----- geometry ----------------------------------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return self.stride

    @property
    def time_stride(self) -> int:
        return self.stride

    @property
    def drops_time_axis(self) -> bool:
        return self.is_window_cell

    @property
    def lookahead(self) -> int:
        """Frames the whole-sequence form looks ahead (0 when causal or valid)."""
        if self.is_window_cell or self.pad_time_dim != "same":
            return 0
        return (self.kernel - 1) // 2

    @property
    def output_delay(self) -> int:
        """Frames by which streamed outputs lag the whole-sequence outputs (the look-ahead; `e - s` when valid)."""
        if not self.is_window_cell and self.pad_time_dim == "valid":
            return self.kernel - self.stride
        return self.lookahead

    @property
    def _time_pad(self) -> int:
        """Frames the whole-sequence form pads in front of (negative: drops from) the time axis."""
        if self.is_window_cell or self.pad_time_dim == "valid":
            return 0
        return self.kernel - self.stride

    def _buffer_frames(self, chunk: int | None) -> int:
        if self.is_window_cell:
            if self.window is None:
                raise NotStreamableError(
                    f"layer {self.name!r} (Stream of {type(self.cell).__name__}) needs `window` (frames the cell "
                    "covers) to stream; build it once in a whole-sequence mode or pass window=..."
                )
            if chunk is None or chunk > self.window:
                raise NotStreamableError(
                    f"layer {self.name!r} (Stream of {type(self.cell).__name__}) covers a window of {self.window} "
                    f"frames; received chunks of {chunk} frames. Use at most {self.window} frames per step."
                )
            return self.window - chunk
        return max(self.kernel - self.stride, 0)

    def _freq_pads(self, freq: int | None) -> tuple[int, int]:
        if self.rank == 1 or self.freq_padding != "same":
            return (0, 0)
        if freq is None:
            raise NotStreamableError(f"layer {self.name!r} (Stream) needs a static frequency axis for padding='same'.")
        return _same_padding(int(freq), self.freq_kernel, self.freq_stride)

    def _check_pooling_padding(self, freq_pads) -> None:
        if isinstance(self.cell, keras.layers.AveragePooling2D) and any(freq_pads):
            raise NotStreamableError(
                f"layer {self.name!r} (Stream of AveragePooling2D) would pad the frequency axis with 'same', which "
                "Keras averages over valid positions only; use padding='valid' or a pool size and stride that "
                "divide the frequency axis."
            )

    def _cell_input_shape(self, shape):
        shape = list(shape)
        time = shape[1]
        if self.mode.is_streaming:
            buffer = self._buffer_frames(time)
            if self.is_window_cell:
                shape[1] = self.window
            elif time is not None:
                shape[1] = time + buffer if buffer else time - (self.stride - self.kernel)
        elif not self.is_window_cell and time is not None:
            shape[1] = time + self._time_pad
        if self.rank == 2:
            before, after = self._freq_pads(shape[2])
            if shape[2] is not None:
                shape[2] = shape[2] + before + after
        return tuple(shape)

    # ----- Keras layer API ---------------------------------------------------------------------------------------
    def build(self, input_shape):
        shape = self._data_shape(input_shape)
        flatten = isinstance(self.cell, keras.layers.Flatten)
        if not self.generic and ((flatten and len(shape) < 3) or (not flatten and len(shape) != self.rank + 2)):
            raise ValueError(
                f"layer {self.name!r} (Stream of {type(self.cell).__name__}) expects inputs of rank {self.rank + 2} "
                f"(batch, time, {'freq, ' if self.rank == 2 else ''}channels). Received: input_shape={shape}"
            )
        if self.is_window_cell and self.window is None and not self.mode.is_streaming:
            self.window = shape[1]
        if self.rank == 2:
            self._check_pooling_padding(self._freq_pads(shape[2]))
        if self.mode.is_streaming:
            self._check_chunk_frames(shape[1])
        self.cell.build(self._cell_input_shape(shape))
        if self.generic:
            self._check_generic_cell(shape)
        if self._trained_weights is not None:
            self.cell.set_weights(self._trained_weights)
            self._trained_weights = None
        super().build(input_shape)

    def _check_generic_cell(self, shape) -> None:
        """A cell with an explicit ring buffer must map `ring_buffer_size + n` frames to `n` (the window is its
        own): then the stream, fed the buffer and the chunk, equals the padded whole sequence frame by frame."""
        probe = (shape[0] or 1, self.ring_buffer_size + 3, *shape[2:])
        out = self.cell.compute_output_shape(probe)
        if len(out) >= 2 and out[1] == 3:
            return
        what = ("keeps every frame (an identity or frame-local cell), so streamed it would emit the buffer and the "
                "chunk, overlapping windows that equal no whole-sequence frames" if len(out) >= 2 and out[1] == probe[1]
                else f"returns shape {tuple(out)} for {tuple(probe)}")
        raise NotStreamableError(
            f"layer {self.name!r} (Stream of {type(self.cell).__name__}) has ring_buffer_size="
            f"{self.ring_buffer_size}: its cell must map {self.ring_buffer_size} + n frames to n, but it {what}. "
            "kws_streaming's identity Stream + TemporalPadding + 'valid' layer is, here, the 'valid' layer itself "
            "in a Stream (Stream(conv) causal, or TemporalPadding then Stream(conv, pad_time_dim='valid')); "
            "use ring_buffer_size=0 for a frame-local cell.")

    def _check_chunk_frames(self, frames) -> None:
        if frames is not None and frames % self.block_size:
            raise NotStreamableError(
                f"layer {self.name!r} (Stream of {type(self.cell).__name__}) has time stride {self.block_size} and "
                f"receives chunks of {frames} frames. Use frames_per_step so that every strided layer gets a "
                "multiple of its stride."
            )

    def state_specs(self, input_shape) -> list[StateSpec]:
        shape = self._data_shape(input_shape)
        buffer = self._buffer_frames(shape[1])
        frame = (shape[-1],) if self._pools_frames else tuple(shape[2:])
        specs = [StateSpec("buffer", (buffer, *frame), self.compute_dtype)] if buffer else []
        return specs + ([warmup_spec()] if self.warmup_frames else [])

    @property
    def _pools_frames(self) -> bool:
        """2-D global pooling streams on per-frame pooled vectors: the buffer keeps (frames, channels) only."""
        return isinstance(self.cell, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D))

    def _pad_freq(self, x):
        if self.rank == 1:
            return x
        before, after = self._freq_pads(x.shape[2])
        if not (before or after):
            return x
        # Max pooling ignores padded positions ('same' in TF pads with -inf for max): pad with the lowest float.
        value = -3.0e38 if isinstance(self.cell, keras.layers.MaxPooling2D) else 0.0
        return ops.pad(x, [[0, 0], [0, 0], [before, after], [0, 0]], constant_values=value)

    def call_full(self, inputs, training=None):
        x = self._pad_freq(inputs)
        if not self.is_window_cell:
            pad = self._time_pad
            ahead = self.lookahead
            if pad > 0:
                x = ops.pad(x, [[0, 0], [pad - ahead, ahead]] + [[0, 0]] * (len(x.shape) - 2))
            elif pad < 0:
                x = x[:, -pad:]
        return self.cell(x, training=training)

    def step(self, inputs, states, training=None):
        if self.warmup_frames:
            states = list(states)
            active, count = warmup_mask(states.pop(), inputs.shape[1], self.warmup_frames)
            active = ops.reshape(active, tuple(active.shape) + (1,) * (len(inputs.shape) - 2))
            outputs, new_states = self._step(ops.where(active, inputs, ops.zeros_like(inputs)), states)
            return outputs, [*new_states, count]
        return self._step(inputs, states)

    def _step(self, inputs, states):
        if self._pools_frames:
            # mean over (time, freq) == mean over time of the per-frame means (max likewise): pool each frame once.
            average = isinstance(self.cell, keras.layers.GlobalAveragePooling2D)
            reduce = ops.mean if average else ops.max
            x = reduce(inputs, axis=2)
            buffer = self._buffer_frames(inputs.shape[1])
            new_states = []
            if buffer:
                x = ops.concatenate([states[0], x], axis=1)
                new_states = [x[:, -buffer:]]
            return reduce(x, axis=1), new_states
        x = inputs
        buffer = self._buffer_frames(inputs.shape[1])
        new_states = []
        if buffer:
            x = ops.concatenate([states[0], x], axis=1)
            new_states = [x[:, -buffer:]]
        elif not self.is_window_cell and self.kernel < self.stride:
            x = x[:, self.stride - self.kernel:]
        return self.cell(self._pad_freq(x), training=False), new_states

    def compute_output_shape(self, input_shape):
        shape = self._data_shape(input_shape)
        out = self.cell.compute_output_shape(self._cell_input_shape(shape))
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            states = [(shape[0], *spec.shape) for spec in self.state_specs(shape)]
            return [tuple(out), *states]
        return tuple(out)

    def get_config(self):
        return {
            **super().get_config(),
            "cell": self._cell_serialized,
            "pad_time_dim": self.pad_time_dim,
            "window": self.window,
            "warmup_frames": self.warmup_frames,
            "ring_buffer_size": self.ring_buffer_size,
        }


__all__ = ["Stream", "SUPPORTED_CELLS"]
