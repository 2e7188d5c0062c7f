"""Streaming `GRU` and `LSTM`: train over whole sequences, carry (h) or (h, c) across chunks when streaming."""

from __future__ import annotations

import keras
from keras import ops

from tfx_ext._validate import check_int, check_number
from tfx_ext.layers._warmup import warmup_mask, warmup_spec
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer


class _StreamingRNN(StreamingLayer):
    """Shared machinery: an inner Keras RNN layer (return_sequences and return_state on) driven per mode."""

    _rnn_class: type = None
    _state_names: tuple[str, ...] = ()

    def __init__(
        self,
        units: int,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        dropout: float = 0.0,
        return_sequences: bool = True,
        mode=Mode.TRAINING,
        seed: int | None = None,
        warmup_frames: int = 0,
        _rnn_kwargs: dict | None = None,
        **kwargs,
    ):
        super().__init__(mode=mode, **kwargs)
        self.units = check_int("units", units, minimum=1)
        self.warmup_frames = check_int("warmup_frames", warmup_frames, minimum=0)
        dropout = check_number("dropout", dropout, low=0, high=1, high_open=True)
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.dropout = float(dropout)
        self.return_sequences = bool(return_sequences)
        self.seed = seed
        self.rnn = self._make_rnn(_rnn_kwargs or {})
        self.supports_masking = True  # the whole-sequence modes hand a mask to the inner RNN, as Keras's own do

    @property
    def output_units(self) -> int:
        """Width of each output frame (and of `h`)."""
        return self.units

    def _make_rnn(self, rnn_kwargs: dict):
        return self._rnn_class(
            self.units,
            activation=self.activation,
            recurrent_activation=self.recurrent_activation,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            recurrent_initializer=self.recurrent_initializer,
            bias_initializer=self.bias_initializer,
            dropout=self.dropout,
            seed=self.seed,
            return_sequences=True,
            return_state=True,
            # Streaming chunks are a few static frames: unrolled, they convert to plain TFLite ops (no WHILE).
            unroll=self.mode.is_streaming,
            name="rnn",
            dtype=self.dtype_policy,  # as Keras's GRU/LSTM pass theirs to their cell: float16 in, float16 out
            **rnn_kwargs,
        )

    def call(self, inputs, training=None, mask=None):
        if all(m is None for m in keras.tree.flatten(mask)):
            return super().call(inputs, training=training)
        if self.mode.is_streaming:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) received a mask in {self.mode.value} mode; streaming "
                "steps take every frame. Stream the model without its Masking layer (or mask_zero embedding), "
                "or call it in a whole-sequence mode."
            )
        sequence, *_ = self.rnn(inputs, mask=mask, training=training if self.mode == Mode.TRAINING else False)
        return self._output(sequence)

    def compute_mask(self, inputs, mask=None):
        """The input mask for per-frame outputs (as Keras's GRU/LSTM); none for the last output or states."""
        if self.mode == Mode.STREAM_EXTERNAL_STATE or not self.return_sequences:
            return None
        return mask

    def build(self, input_shape):
        shape = self._data_shape(input_shape)
        if len(shape) != 3:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) expects inputs (batch, time, features). "
                f"Received: input_shape={shape}"
            )
        self.rnn.build(shape)
        super().build(input_shape)

    def state_specs(self, input_shape) -> list[StateSpec]:
        sizes = {"h": self.output_units}
        specs = [StateSpec(name, (sizes.get(name, self.units),), self.compute_dtype) for name in self._state_names]
        return specs + ([warmup_spec()] if self.warmup_frames else [])

    @property
    def drops_time_axis(self) -> bool:
        return not self.return_sequences

    def _output(self, sequence):
        return sequence if self.return_sequences else sequence[:, -1]

    def call_full(self, inputs, training=None):
        sequence, *_ = self.rnn(inputs, training=training)
        return self._output(sequence)

    def step(self, inputs, states, training=None):
        states = list(states)
        if not self.warmup_frames:
            sequence, *new_states = self.rnn(inputs, initial_state=states, training=False)
            return self._output(sequence), list(new_states)
        # Warm-up frames (emitted by a delayed layer upstream) are masked: the state passes through them unchanged.
        active, count = warmup_mask(states.pop(), inputs.shape[1], self.warmup_frames)
        sequence, *new_states = self.rnn(inputs, initial_state=states, mask=active, training=False)
        # A copy drops the warm-up mask Keras attached to the inner RNN's output: streamed layers after this one
        # take every frame (a GRU after it would refuse the mask).
        return self._output(ops.copy(sequence)), [*new_states, count]

    def compute_output_shape(self, input_shape):
        shape = self._data_shape(input_shape)
        units = self.output_units
        out = (shape[0], shape[1], units) if self.return_sequences else (shape[0], units)
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            return [out, *[(shape[0], *spec.shape) for spec in self.state_specs(shape)]]
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "recurrent_activation": keras.activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "dropout": self.dropout,
            "return_sequences": self.return_sequences,
            "seed": self.seed,
            "warmup_frames": self.warmup_frames,
        }


@keras.saving.register_keras_serializable(package="tfx_ext")
class GRU(_StreamingRNN):
    """Gated recurrent unit that trains on whole sequences and streams chunk by chunk with its hidden state.

    Same maths as `keras.layers.GRU` (reset_after=True, the cuDNN-compatible variant), which it runs inside.

    Args:
        units: size of the hidden state.
        activation, recurrent_activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
            dropout, seed: as in `keras.layers.GRU` (dropout on the inputs, training only).
        return_sequences: True: one output per frame `(batch, time, units)`; False: the last one `(batch, units)`
            (streamed: the hidden state after each chunk, which after the whole sequence equals the non-streaming
            output).
        mode: a `tfx_ext.Mode`.
        warmup_frames: streamed, the state passes unchanged through the first `warmup_frames` frames (the warm-up
            frames a delayed layer upstream emits; `make_streamable` sets it). 0 (default) adds no state.

    Call arguments:
        inputs: `(batch, time, features)`; `[inputs, h]` in `STREAM_EXTERNAL_STATE` mode.
        training: enables dropout in `TRAINING` mode.
        mask: `(batch, time)` booleans (from `Masking` or `mask_zero`): masked frames keep the state, as in
            Keras's layer; whole-sequence modes only (a streaming mode raises ValueError).

    Input shape:
        `(batch, time, features)`.

    Output shape:
        `(batch, time, units)` or `(batch, units)`.

    Streaming:
        State `h`: `(units,)` in the compute dtype (held in the variable dtype in `STREAM_INTERNAL_STATE`).
        Block size 1. Latency 0.

    Example:
        >>> layer = GRU(8)
        >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
        (2, 5, 8)
    """

    _rnn_class = keras.layers.GRU
    _state_names = ("h",)


@keras.saving.register_keras_serializable(package="tfx_ext")
class PeepholeLSTMCell(keras.layers.Layer):
    """LSTM cell with peephole connections and/or a recurrent projection (Sak et al. 2014, "LSTMP"; TF1's
    `LSTMCell(use_peepholes, num_proj)` that kws_streaming's LSTM wraps). Gates in Keras's order (i, f, c, o):

        z = x W + m_prev U + b;  i = sig(z_i + p_i * c_prev);  f = sig(z_f + p_f * c_prev)
        c = f * c_prev + i * tanh(z_c);  o = sig(z_o + p_o * c);  m = (o * tanh(c)) P

    (`p` only with peepholes, `P` only with a projection). States `[m, c]`: `m` is the (projected) output.
    """

    def __init__(self, units: int, use_peepholes: bool = False, num_proj: int | None = None,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias: bool = True, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units = check_int("units", units, minimum=1)
        self.num_proj = None if num_proj is None else check_int("num_proj", num_proj, minimum=1)
        self.use_peepholes, self.unit_forget_bias, self.use_bias = bool(use_peepholes), bool(unit_forget_bias), \
            bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        out = self.num_proj or self.units
        self.state_size = [out, self.units]
        self.output_size = out

    def build(self, input_shape):
        u, out = self.units, self.num_proj or self.units
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 4 * u), initializer=self.kernel_initializer)
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(out, 4 * u),
                                                initializer=self.recurrent_initializer)
        if self.use_bias:
            init = self.bias_initializer
            if self.unit_forget_bias:
                def init(shape, dtype=None, base=self.bias_initializer):
                    return keras.ops.concatenate([base((u,), dtype), keras.ops.ones((u,), dtype), base((2 * u,), dtype)])
            self.bias = self.add_weight(name="bias", shape=(4 * u,), initializer=init)
        if self.use_peepholes:
            self.peepholes = self.add_weight(name="peepholes", shape=(3, u), initializer="glorot_uniform")
        if self.num_proj:
            self.projection = self.add_weight(name="projection", shape=(u, self.num_proj),
                                              initializer=self.kernel_initializer)

    def call(self, inputs, states, training=None):
        ops = keras.ops
        m_prev, c_prev = states
        z = ops.matmul(inputs, self.kernel) + ops.matmul(m_prev, self.recurrent_kernel)
        if self.use_bias:
            z = z + self.bias
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        if self.use_peepholes:
            z_i, z_f = z_i + self.peepholes[0] * c_prev, z_f + self.peepholes[1] * c_prev
        c = ops.sigmoid(z_f) * c_prev + ops.sigmoid(z_i) * ops.tanh(z_c)
        o = ops.sigmoid(z_o + self.peepholes[2] * c if self.use_peepholes else z_o)
        m = o * ops.tanh(c)
        if self.num_proj:
            m = ops.matmul(m, self.projection)
        return m, [m, c]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_peepholes": self.use_peepholes,
                "num_proj": self.num_proj, "unit_forget_bias": self.unit_forget_bias, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


@keras.saving.register_keras_serializable(package="tfx_ext")
class LSTM(_StreamingRNN):
    """Long short-term memory layer that trains on whole sequences and streams chunk by chunk with (h, c).

    Same maths as `keras.layers.LSTM`, which it runs inside; with `use_peepholes` or `num_proj` (kws_streaming's
    LSTM options) it runs a `PeepholeLSTMCell` in `keras.layers.RNN` instead, and `h` is the projected output.

    Args:
        units: size of the cell state (and of the hidden state without a projection).
        activation, recurrent_activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
            dropout, seed: as in `keras.layers.LSTM` (with peepholes or a projection: tanh/sigmoid, no dropout).
        unit_forget_bias: add 1 to the forget-gate bias at initialization (as Keras does).
        use_peepholes: the gates also read the cell state (diagonal peephole weights).
        num_proj: project each output (and the recurrent state `h`) to this width.
        return_sequences: True: `(batch, time, units)`; False: the last output `(batch, units)`.
        mode: a `tfx_ext.Mode`.
        warmup_frames: as in `GRU`.

    Call arguments:
        inputs: `(batch, time, features)`; `[inputs, h, c]` in `STREAM_EXTERNAL_STATE` mode.
        training: enables dropout in `TRAINING` mode.
        mask: `(batch, time)` booleans (from `Masking` or `mask_zero`): masked frames keep the state, as in
            Keras's layer; whole-sequence modes only (a streaming mode raises ValueError).

    Input shape:
        `(batch, time, features)`.

    Output shape:
        `(batch, time, num_proj or units)` or `(batch, num_proj or units)`.

    Streaming:
        States `h` `(num_proj or units,)` and `c` `(units,)`, in the compute dtype (held in the variable dtype in
        `STREAM_INTERNAL_STATE`). Block size 1. Latency 0.

    Example:
        >>> layer = LSTM(8, return_sequences=False)
        >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
        (2, 8)
    """

    _rnn_class = keras.layers.LSTM
    _state_names = ("h", "c")

    def __init__(self, units: int, unit_forget_bias: bool = True, use_peepholes: bool = False,
                 num_proj: int | None = None, **kwargs):
        extra = {"use_peepholes": bool(use_peepholes), "num_proj": num_proj}
        super().__init__(units, _rnn_kwargs={"unit_forget_bias": bool(unit_forget_bias), **extra}, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.use_peepholes = extra["use_peepholes"]
        self.num_proj = None if num_proj is None else int(num_proj)  # checked by the cell

    @property
    def output_units(self) -> int:
        return self.num_proj or self.units

    def _make_rnn(self, rnn_kwargs: dict):
        rnn_kwargs = dict(rnn_kwargs)
        use_peepholes, num_proj = rnn_kwargs.pop("use_peepholes"), rnn_kwargs.pop("num_proj")
        if not use_peepholes and num_proj is None:
            return super()._make_rnn(rnn_kwargs)
        changed = {k: v for k, v in (("activation", keras.activations.serialize(self.activation)),
                                     ("recurrent_activation", keras.activations.serialize(self.recurrent_activation)),
                                     ("dropout", self.dropout)) if v not in ("tanh", "sigmoid", 0.0)}
        if changed:
            raise ValueError(f"layer {self.name!r} (LSTM) with use_peepholes or num_proj uses tanh/sigmoid and no "
                             f"dropout (put a Dropout layer before it). Received: {changed}")
        cell = PeepholeLSTMCell(self.units, use_peepholes=use_peepholes, num_proj=num_proj,
                                kernel_initializer=self.kernel_initializer,
                                recurrent_initializer=self.recurrent_initializer,
                                bias_initializer=self.bias_initializer, use_bias=self.use_bias,
                                dtype=self.dtype_policy, name="cell", **rnn_kwargs)
        return keras.layers.RNN(cell, return_sequences=True, return_state=True, unroll=self.mode.is_streaming,
                                name="rnn", dtype=self.dtype_policy)

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias,
                "use_peepholes": self.use_peepholes, "num_proj": self.num_proj}


__all__ = ["GRU", "LSTM", "PeepholeLSTMCell"]
