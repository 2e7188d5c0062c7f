"""DeltaActivation: activations trained for temporal sparsity, so a delta engine transmits only changes.

Two rules, one layer:

- `method="quantize"` (Yousefzadeh & Sifalakis 2021, "Training for temporal sparsity in deep neural networks"):
  activations are rounded to multiples of a (learnable) step, `q_t = step * round(a_t / step)`, so consecutive
  frames often give identical values and their delta `q_t - q_{t-1}` is exactly zero. Rounding trains with a
  straight-through estimator; the step gets the LSQ gradient `round(a/step) - a/step` (Esser et al. 2019).
- `method="gated"` (Neil et al. 2017, delta networks): a unit transmits only when its change since the last
  *transmitted* value reaches the threshold, `|a_t - x_{t-1}| >= theta`; otherwise the receiver keeps `x_{t-1}`.
  Comparing against the last transmitted value (not the previous input) lets small drifts accumulate until they
  are sent instead of being lost. The hard gate trains with a sigmoid surrogate gradient.

The layer emits either the transmitted activations (`emit="activations"`, what the next layer computes
with) or the deltas (`emit="deltas"`, what a delta engine would send). A penalty `penalty * fan_out * |delta|_1`
per example (added with `add_loss`, so Keras scales it per replica under tf.distribute) pushes deltas to zero;
`fan_out` is the number of multiply-accumulates one nonzero delta costs in the following layer.
"""

from __future__ import annotations

import keras
from keras import ops

from tfx_ext._validate import check_int, check_number
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer

METHODS = ("quantize", "gated")
EMITS = ("activations", "deltas")
THRESHOLD_SHAPES = ("scalar", "channel", "unit")
_MIN_THRESHOLD = 1e-6  # Keeps a trained step or threshold strictly positive (no division by zero).


@keras.saving.register_keras_serializable(package="tfx_ext")
class DeltaActivation(StreamingLayer):
    """Temporal-sparsity activation over inputs with time on axis 1.

    Args:
        threshold: initial quantization step (`method="quantize"`) or transmit threshold (`method="gated"`);
            must be > 0.
        method: "quantize" (round to multiples of the step) or "gated" (transmit when the change since the last
            transmitted value reaches the threshold).
        threshold_shape: "scalar" (one value), "channel" (one per last-axis channel) or "unit" (one per
            non-batch, non-time element).
        trainable_threshold: whether the step/threshold is trained.
        activation: None or "relu", applied before quantization/gating.
        emit: "activations" (the transmitted values) or "deltas" (their change from the previous frame).
        penalty: weight of the L1 penalty on deltas (>= 0); 0 adds no loss.
        fan_out: multiply-accumulates one nonzero delta costs in the following layer (>= 1); scales the penalty.
            `tfx_ext.transforms.temporal_sparsity.assign_fan_out(model)` sets it from the model graph.
        surrogate_temperature: width of the sigmoid surrogate gradient of the gate, relative to the threshold
            (gated method only). The gated rule is a loop over time: unrolled when the time axis is static (so it
            trains under `jit_compile=True`), an `ops.scan` otherwise, and then the layer declares
            `supports_jit = False`, which makes Keras compile the model without XLA.
        track_metrics: keep `<name>_temporal_sparsity` and `<name>_spatial_sparsity` trackers that appear in
            `fit` logs (updated only by training calls in `Mode.TRAINING`, so inference graphs, including
            `tf.saved_model.save`'s, stay pure; `evaluate` reports the values of the last training epoch).
        mode: a `tfx_ext.Mode`.

    Call arguments:
        inputs: a tensor `(batch, time, ...)`.
        training: Python boolean (unused by the forward maths, which is the same in training and inference).

    Input shape:
        `(batch, time, *features)`.

    Output shape:
        Same as the input.

    Full-integer export (`to_tflite(..., quantize="int8")`): the gated rule converts to int8 ops only (its hard gate
    is a SELECT, not a CAST of a boolean). The quantize rule is a hybrid: TFLite has no int8 ROUND, so each such
    layer keeps three float ops, DEQUANTIZE (int8 -> float32), ROUND and QUANTIZE (float32 -> int8), and needs
    `allow_float_ops=True`. Cost: two conversions of the activation tensor and a float ROUND per layer, and a
    runtime with float kernels (an int8-only accelerator or MCU build cannot run it); measured on
    Dense(16) -> DeltaActivation -> Dense(4) over 8 x 16 frames, the flatbuffer grows from 1960 to 2960 bytes.

    Streaming:
        State `last` of shape `features` (float32): the last transmitted value. Block size 1, latency 0. The
        first frame of a stream is compared with zeros, exactly as the whole-sequence form does.

    Example:
        >>> import numpy as np
        >>> layer = DeltaActivation(threshold=0.5, method="quantize")
        >>> x = np.array([[[0.1], [0.2], [1.1], [1.2]]], dtype="float32")
        >>> np.asarray(layer(x))[0, :, 0].tolist()
        [0.0, 0.0, 1.0, 1.0]
        >>> np.asarray(DeltaActivation(threshold=0.5, emit="deltas")(x))[0, :, 0].tolist()
        [0.0, 0.0, 1.0, 0.0]
    """

    def __init__(
        self,
        threshold: float = 0.1,
        *,
        method: str = "quantize",
        threshold_shape: str = "scalar",
        trainable_threshold: bool = False,
        activation: str | None = None,
        emit: str = "activations",
        penalty: float = 0.0,
        fan_out: int = 1,
        surrogate_temperature: float = 0.25,
        track_metrics: bool = True,
        mode: Mode | str = Mode.TRAINING,
        **kwargs,
    ):
        super().__init__(mode=mode, **kwargs)
        threshold = check_number("threshold", threshold, low=0, low_open=True)
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
        if threshold_shape not in THRESHOLD_SHAPES:
            raise ValueError(
                f"`threshold_shape` must be one of {THRESHOLD_SHAPES}. Received: threshold_shape={threshold_shape!r}"
            )
        if activation not in (None, "relu"):
            raise ValueError(f"`activation` must be None or 'relu'. Received: activation={activation!r}")
        if emit not in EMITS:
            raise ValueError(f"`emit` must be one of {EMITS}. Received: emit={emit!r}")
        penalty = check_number("penalty", penalty, low=0)
        fan_out = check_int("fan_out", fan_out, minimum=1)
        surrogate_temperature = check_number("surrogate_temperature", surrogate_temperature, low=0, low_open=True)
        self.threshold = float(threshold)
        self.method = method
        self.threshold_shape = threshold_shape
        self.trainable_threshold = bool(trainable_threshold)
        self.activation = activation
        self.emit = emit
        self.penalty = float(penalty)
        self.fan_out = fan_out
        self.surrogate_temperature = float(surrogate_temperature)
        self.track_metrics = bool(track_metrics)
        if self.track_metrics:
            self.temporal_sparsity = keras.metrics.Mean(name=f"{self.name}_temporal_sparsity")
            self.spatial_sparsity = keras.metrics.Mean(name=f"{self.name}_spatial_sparsity")

    # ----- weights and state ---------------------------------------------------------------------------------------
    def build(self, input_shape):
        shape = self._data_shape(input_shape)
        if len(shape) < 3:
            raise ValueError(
                f"DeltaActivation {self.name!r} needs inputs (batch, time, features...). Received: shape={shape}"
            )
        features = tuple(shape[2:])
        if any(dim is None for dim in features):
            raise ValueError(f"DeltaActivation {self.name!r} needs static feature dimensions. Received: {shape}")
        threshold_shape = {"scalar": (), "channel": (features[-1],), "unit": features}[self.threshold_shape]
        self.threshold_weight = self.add_weight(
            name="threshold",
            shape=threshold_shape,
            initializer=keras.initializers.Constant(self.threshold),
            constraint=keras.constraints.NonNeg(),  # A step or threshold below zero has no meaning.
            trainable=self.trainable_threshold,
        )
        if self.method == "gated" and shape[1] is None:
            self.supports_jit = False  # the time loop is an `ops.scan`, whose gradient XLA cannot compile
        super().build(input_shape)

    def state_specs(self, input_shape):
        return [StateSpec("last", tuple(input_shape[2:]), "float32")]

    # ----- maths ---------------------------------------------------------------------------------------------------
    def _theta(self):
        return ops.maximum(ops.abs(self.threshold_weight), _MIN_THRESHOLD)

    def _activate(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        return ops.relu(inputs) if self.activation == "relu" else inputs

    def _quantize(self, values):
        step = self._theta()
        scaled = values / step
        rounded = scaled + ops.stop_gradient(ops.round(scaled) - scaled)  # Straight-through rounding.
        return rounded * step

    def _gate_scan(self, values, last):
        """Runs the gated rule over time (time-major scan); returns the transmitted values."""
        theta = self._theta()
        temperature = self.surrogate_temperature * theta

        def step_fn(previous, frame):
            change = frame - previous
            hard = ops.where(ops.abs(change) >= theta, ops.ones_like(change), ops.zeros_like(change))  # SELECT: int8 in TFLite
            soft = ops.sigmoid((ops.abs(change) - theta) / temperature)
            gate = hard + soft - ops.stop_gradient(soft)  # Hard gate forward, sigmoid gradient backward.
            sent = previous + gate * change
            return sent, sent

        frames = values.shape[1]
        if frames is None:
            _, sent = ops.scan(step_fn, last, ops.moveaxis(values, 1, 0))
            return ops.moveaxis(sent, 0, 1)
        # A static time axis is unrolled: the gradient of `ops.scan` needs a list of unknown size, which XLA
        # (`jit_compile=True`, Keras's default on GPUs) refuses.
        sent = []
        for t in range(frames):
            last, _ = step_fn(last, values[:, t])
            sent.append(last)
        return ops.stack(sent, axis=1)

    def _transmit(self, inputs, last):
        """Transmitted values, deltas and the last transmitted value of a chunk, given the value before it."""
        values = self._activate(inputs)
        sent = self._gate_scan(values, last) if self.method == "gated" else self._quantize(values)
        previous = ops.concatenate([ops.expand_dims(last, 1), sent[:, :-1]], axis=1)
        return sent, sent - previous, sent[:, -1]

    def _finish(self, sent, deltas, training):
        if self.mode == Mode.TRAINING:
            if self.penalty > 0:
                # In float32 whatever the compute dtype: Keras sums the losses of a model in float32.
                l1 = ops.sum(ops.abs(ops.cast(deltas, "float32")))
                batch = ops.cast(ops.shape(deltas)[0], "float32")
                self.add_loss(self.penalty * self.fan_out * l1 / batch)
            if self.track_metrics and training:
                # Training calls only: an inference graph (evaluate, predict, tf.saved_model.save) stays pure.
                self.temporal_sparsity.update_state(ops.mean(ops.cast(ops.equal(deltas, 0), "float32")))
                self.spatial_sparsity.update_state(ops.mean(ops.cast(ops.equal(sent, 0), "float32")))
        return deltas if self.emit == "deltas" else sent

    def call_full(self, inputs, training=None):
        last = ops.zeros_like(self._activate(inputs)[:, 0])
        sent, deltas, _ = self._transmit(inputs, last)
        return self._finish(sent, deltas, training)

    def step(self, inputs, states, training=None):
        (last,) = states
        sent, deltas, final = self._transmit(inputs, ops.cast(last, self.compute_dtype))
        outputs = deltas if self.emit == "deltas" else sent
        return outputs, [final]

    def compute_output_shape(self, input_shape):
        shape = self._data_shape(input_shape)
        if self.mode == Mode.STREAM_EXTERNAL_STATE and isinstance(input_shape[0], (list, tuple)):
            return [shape, *[tuple(s) for s in input_shape[1:]]]
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "threshold": self.threshold,
            "method": self.method,
            "threshold_shape": self.threshold_shape,
            "trainable_threshold": self.trainable_threshold,
            "activation": self.activation,
            "emit": self.emit,
            "penalty": self.penalty,
            "fan_out": self.fan_out,
            "surrogate_temperature": self.surrogate_temperature,
            "track_metrics": self.track_metrics,
        }
