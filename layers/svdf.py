"""`SVDF`: the singular-value-decomposition filter of kws_streaming (Nakkiran et al. 2015, "Compressing deep
neural networks using a rank-constrained topology"): a 2-D filter over (time, features) factored into a filter
over features and a filter over time."""

from __future__ import annotations

import keras
from keras import ops

from tfx_ext._validate import check_int
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer


@keras.saving.register_keras_serializable(package="tfx_ext")
class SVDF(StreamingLayer):
    """Feature filter, then a causal per-channel filter over the last `memory_size` frames, then an optional
    projection, as kws_streaming's `Svdf`:

        p_t = x_t W1 (+ b1);  h_t = activation(sum_{j < M} p_{t - M + 1 + j} * w_j (+ b));  y_t = h_t W2 + b2

    with `p` zero before the first frame (causal). Streamed, the last `M - 1` projected frames are the state, so a
    step costs one feature filter and `M` multiply-adds per channel, and the stream equals the whole sequence.

    Args:
        memory_size: `M`, frames the time filter spans (>= 1).
        units1: channels of the feature filter (the rank-1 filters kws_streaming calls units1).
        use_bias1: bias in the feature filter.
        units2: width of the projection after the activation; None (or -1, kws_streaming's spelling) for none.
        activation: applied after the time filter.
        use_bias: bias of the time filter.
        kernel_initializer, bias_initializer: Keras initializers of every kernel and bias.
        mode: a `tfx_ext.Mode`.

    Input shape:
        `(batch, time, features)`.

    Output shape:
        `(batch, time, units2 or units1)`.

    Streaming:
        State `memory`: `(memory_size - 1, units1)` projected frames (none when `memory_size` is 1). Block size 1,
        no latency.

    Example:
        >>> tuple(SVDF(memory_size=4, units1=8, units2=3)(np.zeros((2, 10, 5), "float32")).shape)
        (2, 10, 3)
    """

    def __init__(self, memory_size: int, units1: int, use_bias1: bool = False, units2: int | None = None,
                 activation="relu", use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", mode=Mode.TRAINING, **kwargs):
        super().__init__(mode=mode, **kwargs)
        self.memory_size = check_int("memory_size", memory_size, minimum=1)
        self.units1 = check_int("units1", units1, minimum=1)
        self.units2 = None if units2 in (None, -1) else check_int("units2", units2, minimum=1)
        self.use_bias1, self.use_bias = bool(use_bias1), bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        shape = self._data_shape(input_shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(f"layer {self.name!r} (SVDF) expects inputs (batch, time, features) with known "
                             f"features. Received: input_shape={shape}")
        self.kernel1 = self.add_weight(name="feature_kernel", shape=(shape[-1], self.units1),
                                       initializer=self.kernel_initializer)
        self.bias1 = self.add_weight(name="feature_bias", shape=(self.units1,), initializer=self.bias_initializer) \
            if self.use_bias1 else None
        self.time_kernel = self.add_weight(name="time_kernel", shape=(self.memory_size, self.units1),
                                           initializer=self.kernel_initializer)
        self.time_bias = self.add_weight(name="time_bias", shape=(self.units1,), initializer=self.bias_initializer) \
            if self.use_bias else None
        if self.units2 is not None:
            self.kernel2 = self.add_weight(name="projection_kernel", shape=(self.units1, self.units2),
                                           initializer=self.kernel_initializer)
            self.bias2 = self.add_weight(name="projection_bias", shape=(self.units2,),
                                         initializer=self.bias_initializer)
        super().build(input_shape)

    def state_specs(self, input_shape) -> list[StateSpec]:
        return [StateSpec("memory", (self.memory_size - 1, self.units1), self.compute_dtype)] \
            if self.memory_size > 1 else []

    def _features(self, inputs):
        p = ops.matmul(inputs, ops.cast(self.kernel1, inputs.dtype))
        return p + ops.cast(self.bias1, p.dtype) if self.bias1 is not None else p

    def _filter(self, window, frames):
        """Time filter over `window` (`memory_size - 1 + frames` projected frames), `frames` outputs, then the
        activation and the projection."""
        kernel = ops.cast(self.time_kernel, window.dtype)
        h = window[:, : frames] * kernel[0]
        for j in range(1, self.memory_size):
            h = h + window[:, j: j + frames] * kernel[j]
        if self.time_bias is not None:
            h = h + ops.cast(self.time_bias, h.dtype)
        h = self.activation(h)
        if self.units2 is None:
            return h
        return ops.matmul(h, ops.cast(self.kernel2, h.dtype)) + ops.cast(self.bias2, h.dtype)

    def call_full(self, inputs, training=None):
        p = self._features(inputs)
        if self.memory_size > 1:
            zeros = ops.zeros_like(p[:, :1])
            p = ops.concatenate([ops.repeat(zeros, self.memory_size - 1, axis=1), p], axis=1)
        return self._filter(p, ops.shape(inputs)[1])

    def step(self, inputs, states, training=None):
        frames = inputs.shape[1]
        p = self._features(inputs)
        if self.memory_size == 1:
            return self._filter(p, frames), []
        window = ops.concatenate([states[0], p], axis=1)
        return self._filter(window, frames), [window[:, frames:]]

    def compute_output_shape(self, input_shape):
        shape = self._data_shape(input_shape)
        out = (*shape[:2], self.units2 or self.units1)
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            return [out, *[(shape[0], *spec.shape) for spec in self.state_specs(shape)]]
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "memory_size": self.memory_size,
            "units1": self.units1,
            "use_bias1": self.use_bias1,
            "units2": self.units2,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


__all__ = ["SVDF"]
