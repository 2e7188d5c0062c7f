"""`StreamingMultiHeadAttention`: causal sliding-window self-attention whose keys and values stream in a ring
buffer of `window` frames."""

from __future__ import annotations

import math

import keras
from keras import ops

from tfx_ext._validate import check_int
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer

_MASK_GAP = 30.0  # masked scores: this far below the row's lowest (float32 softmax; cast first under mixed precision)


@keras.saving.register_keras_serializable(package="tfx_ext")
class StreamingMultiHeadAttention(StreamingLayer):
    """Multi-head self-attention where frame `t` attends to frames `t - window + 1 .. t` (a causal band), as
    `keras.layers.MultiHeadAttention(query=x, value=x)` with that band as `attention_mask`.

    Streamed, the projected keys and values of the last `window - 1` frames are the state and a frame counter
    masks the slots that hold no frame yet, so a step attends to exactly the frames the whole-sequence form does
    and the stream equals it. A step costs one query/key/value projection per new frame and `window` scores.

    Args:
        num_heads: attention heads.
        key_dim: size of each head's queries and keys.
        window: frames each frame attends to, itself included (>= 1).
        value_dim: size of each head's values (default `key_dim`).
        use_bias: biases in the projections.
        kernel_initializer, bias_initializer: Keras initializers of the projections.
        mode: a `tfx_ext.Mode`.

    Input shape:
        `(batch, time, features)`.

    Output shape:
        `(batch, time, features)`.

    Streaming:
        States `keys` `(window - 1, num_heads, key_dim)`, `values` `(window - 1, num_heads, value_dim)` and
        `frames` `(1,)` (frames seen, saturating at `window - 1`); none when `window` is 1. Block size 1, no
        latency.

    Example:
        >>> layer = StreamingMultiHeadAttention(num_heads=2, key_dim=4, window=3)
        >>> tuple(layer(np.zeros((1, 6, 5), "float32")).shape)
        (1, 6, 5)
    """

    def __init__(self, num_heads: int, key_dim: int, window: int, value_dim: int | None = None,
                 use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 mode=Mode.TRAINING, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.key_dim = check_int("key_dim", key_dim, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.value_dim = self.key_dim if value_dim is None else check_int("value_dim", value_dim, minimum=1)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _projection(self, name, equation, output_shape, bias_axes):
        return keras.layers.EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes if self.use_bias
                                        else None, kernel_initializer=self.kernel_initializer,
                                        bias_initializer=self.bias_initializer, dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        shape = self._data_shape(input_shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(f"layer {self.name!r} (StreamingMultiHeadAttention) expects inputs (batch, time, "
                             f"features) with known features. Received: input_shape={shape}")
        features = shape[-1]
        h, d, dv = self.num_heads, self.key_dim, self.value_dim
        self.query_dense = self._projection("query", "btc,chd->bthd", (None, h, d), "hd")
        self.key_dense = self._projection("key", "btc,chd->bthd", (None, h, d), "hd")
        self.value_dense = self._projection("value", "btc,chd->bthd", (None, h, dv), "hd")
        self.output_dense = self._projection("attention_output", "bthd,hdc->btc", (None, features), "c")
        for dense in (self.query_dense, self.key_dense, self.value_dense):
            dense.build((None, None, features))
        self.output_dense.build((None, None, h, dv))
        super().build(input_shape)

    def state_specs(self, input_shape) -> list[StateSpec]:
        if self.window == 1:
            return []
        w = self.window - 1
        return [StateSpec("keys", (w, self.num_heads, self.key_dim), self.compute_dtype),
                StateSpec("values", (w, self.num_heads, self.value_dim), self.compute_dtype),
                StateSpec("frames", (1,), "float32")]

    def _attend(self, q, k, v, allowed):
        """`q` (b, f, h, d) over `k`, `v` (b, s, h, .) where `allowed` (b or 1, f, s) is True."""
        scores = ops.einsum("bfhd,bshd->bhfs", q, k) / math.sqrt(self.key_dim)
        scores = ops.cast(scores, "float32")
        # Masked scores sit _MASK_GAP below the row's lowest score, not at -1e9: their softmax weight is below
        # e^-_MASK_GAP (1e-13) of the largest, and the scores tensor keeps its own range, which int8 needs (a -1e9
        # entry would make one int8 step ~1e7 wide and the attention uniform).
        floor = ops.min(scores, axis=-1, keepdims=True) - _MASK_GAP
        scores = ops.where(allowed[:, None], scores, floor)
        weights = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
        return self.output_dense(ops.einsum("bhfs,bshd->bfhd", weights, v))

    def call_full(self, inputs, training=None):
        if self.window == 1:  # each frame attends to itself alone: the softmax weight is 1
            return self.output_dense(self.value_dense(inputs))
        frames = ops.shape(inputs)[1]
        i = ops.arange(frames)[:, None]
        j = ops.arange(frames)[None, :]
        band = ops.logical_and(j <= i, j > i - self.window)[None]
        return self._attend(self.query_dense(inputs), self.key_dense(inputs), self.value_dense(inputs), band)

    def step(self, inputs, states, training=None):
        if self.window == 1:
            return self.output_dense(self.value_dense(inputs)), []
        frames = inputs.shape[1]
        q, k, v = self.query_dense(inputs), self.key_dense(inputs), self.value_dense(inputs)
        keys, values, count = states
        w = self.window - 1
        k_all, v_all = ops.concatenate([keys, k], axis=1), ops.concatenate([values, v], axis=1)
        i = ops.arange(frames)[:, None]  # new frame i sits at position w + i of the concatenation
        j = ops.arange(w + frames)[None, :]
        band = ops.logical_and(j <= w + i, j >= i)[None]  # (1, f, w + f): the window ending at frame i
        seen = ops.cast(j, "float32") >= float(w) - ops.cast(count, "float32")  # (b, w + f): slots with a frame
        allowed = ops.logical_and(band, seen[:, None, :])
        outputs = self._attend(q, k_all, v_all, allowed)
        new_count = ops.minimum(ops.cast(count, "float32") + float(frames), float(w))
        return outputs, [k_all[:, frames:], v_all[:, frames:], ops.cast(new_count, count.dtype)]

    def compute_output_shape(self, input_shape):
        shape = tuple(self._data_shape(input_shape))
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            return [shape, *[(shape[0], *spec.shape) for spec in self.state_specs(shape)]]
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "window": self.window,
            "value_dim": self.value_dim,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


__all__ = ["StreamingMultiHeadAttention"]
