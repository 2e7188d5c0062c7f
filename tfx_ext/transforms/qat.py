"""Quantization-aware training (QAT) for Keras 3 models, exported to full-integer TFLite with the learned ranges.

`quantize_aware(model)` clones a functional model with:
- weights fake-quantized per output channel, symmetric, int8 narrow range ([-127, 127], scale max|w| / 127, the
  scheme TFLite uses for conv/depthwise/dense weights) with a straight-through gradient. Covered: Dense, Conv1D,
  Conv2D, DepthwiseConv1D, DepthwiseConv2D, SeparableConv1D/2D (both kernels), also inside `tfx_ext.layers.Stream`
  (the cell is swapped), and the `kernel`/`recurrent_kernel` of GRU/LSTM (Keras's and `tfx_ext.layers`'). Dense is
  per-channel too: the converter gives FULLY_CONNECTED weights one scale per output unit (checked by the tests);
- activations fake-quantized per tensor, asymmetric int8, with moving-average min/max (`FakeQuant` layers) on the
  model inputs and after every layer whose output TFLite keeps as a tensor: not after a layer whose only consumers
  are BatchNormalization or ReLU (TFLite folds BN into the conv and fuses the ReLU, so the range that matters is
  the one after them), nor after softmax/sigmoid (fixed int8 ranges);
- ranges inside layers for the tensors TFLite keeps that Keras does not show: a separable conv runs as
  DEPTHWISE_CONV_2D then CONV_2D, so the tensor between them has a learned range; a standalone BatchNormalization
  (`QuantizedBatchNormalization`) runs as MUL then ADD; GRU/LSTM states h (and c) have learned ranges, applied where
  the step produces them, so a streaming model's state inputs/outputs (or state variables) use them.

BatchNormalization is not folded during training, and need not be: per-channel symmetric weight quantization
commutes with a per-output-channel scale (fq(w * s) / s == fq(w) for any s != 0: the channel's max and each value
scale together and rounding is odd-symmetric), so the kernel the converter folds, fq(w) * gamma / sqrt(var + eps),
quantizes to exactly the integers QAT simulated; the tests check it on the converted flatbuffer (dequantized
kernels equal the QAT weights times the BN multipliers to float precision). The folded bias is quantized to int32
(scale input * weight scale, an error far below the activation step). What the fold of Jacob et al. (2018) adds
beyond this is training with the moving statistics; here training uses batch statistics, as float training does.

Merges: TFLite's int8 CONCATENATION wants its inputs and output on one scale (else the converter inserts
requantizing QUANTIZE ops), so a Concatenate becomes `QuantizedConcatenate`, one learned range for its inputs and
output, and the layers that feed only Concatenates get no range of their own. ADD rescales each input itself, so
an Add's inputs keep their producers' ranges and its output gets its own (after its fused ReLU, if any).

Left to representative data at export (`to_tflite(..., representative_data=...)`): the gate pre-activations and
products inside GRU/LSTM steps, and a layer's pre-activation when it has a softmax/sigmoid `activation`. Without
representative data such models fail the full-integer check with an error that says so.

`FakeQuant` subclasses `keras.layers.Identity` so `tfx_ext.to_streaming` treats it as frame-local and carries its
ranges over to the streaming model (they are weights, copied by layer name); ranges inside layers are weights of
those layers and travel with them.

TF-only code (`tf.quantization.fake_quant_with_min_max_vars`, which the TFLite converter reads as the tensor's
range), so it lives in `tfx_ext/`, not `layers/`.
"""

from __future__ import annotations

import inspect

import keras
import tensorflow as tf
from keras import ops

from tfx_ext._validate import check_int, check_number
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.layers.stream import Stream
from tfx_ext.streaming.contract import StreamingLayer
from tfx_ext.streaming.graph import _graph_config, _history
from tfx_ext.transforms._graph import functional_config


def fake_quant_weights(kernel, reduce_axes: tuple[int, ...], bits: int = 8):
    """Per-channel symmetric fake quantization of `kernel` to `bits` bits (levels -(2^(bits-1) - 1) .. 2^(bits-1)
    - 1 times a per-channel scale; channels = the axes not in `reduce_axes`), with a straight-through gradient."""
    levels = float(2 ** (bits - 1) - 1)
    scale = ops.max(ops.abs(kernel), axis=reduce_axes, keepdims=True) / levels
    scale = ops.maximum(scale, 1e-12)
    quantized = ops.clip(ops.round(kernel / scale), -levels, levels) * scale
    return kernel + ops.stop_gradient(quantized - kernel)


@keras.saving.register_keras_serializable(package="tfx_ext")
class FakeQuant(keras.layers.Identity):
    """Per-tensor asymmetric int8 fake quantization with moving-average min/max ranges.

    In training the range follows the batch min/max with an exponential moving average (the first batch sets it);
    in inference it is fixed. The output is `tf.quantization.fake_quant_with_min_max_vars(x, min, max)`, which the
    TFLite converter takes as the tensor's quantization range.

    Args:
        momentum: moving-average momentum of the range (0.9 suits short fine-tuning; 0.99 long runs).
        num_bits: quantization bits (8).

    Call arguments:
        inputs: any float tensor.
        training: update the range (True) or not.

    Input shape:
        Any.

    Output shape:
        Same as the input.

    Example:
        >>> layer = FakeQuant()
        >>> tuple(layer(np.zeros((2, 3), "float32")).shape)
        (2, 3)
    """

    def __init__(self, momentum: float = 0.9, num_bits: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        if check_int("num_bits", num_bits) != 8:
            raise ValueError(f"`num_bits` must be 8 (TFLite int8). Received: num_bits={num_bits!r}")
        self.num_bits = 8
        self.built = False

    def build(self, input_shape):
        self.range_min = self.add_weight(name="range_min", shape=(), initializer="zeros", trainable=False)
        self.range_max = self.add_weight(name="range_max", shape=(), initializer="zeros", trainable=False)
        self.initialized = self.add_weight(name="initialized", shape=(), initializer="zeros", trainable=False)
        self.built = True

    def call(self, inputs, training=None):
        if training:
            batch_min = ops.minimum(ops.min(inputs), 0.0)  # the range must contain zero (exact zero padding)
            batch_max = ops.maximum(ops.max(inputs), 0.0)
            first = self.initialized < 0.5
            momentum = ops.where(first, 0.0, self.momentum)
            self.range_min.assign(momentum * self.range_min + (1.0 - momentum) * batch_min)
            self.range_max.assign(momentum * self.range_max + (1.0 - momentum) * batch_max)
            self.initialized.assign(1.0)
        low = ops.minimum(self.range_min, 0.0)
        high = ops.maximum(self.range_max, low + 1e-6)
        return tf.quantization.fake_quant_with_min_max_vars(inputs, low, high, num_bits=self.num_bits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "num_bits": self.num_bits}


def _ranged(fake_quant, x, training=None):
    """`fake_quant(x)` back in `x`'s dtype: a FakeQuant computes in float32 (TF's fake-quant op has no float16
    kernel), and under a mixed policy the rest of the layer computes in float16."""
    return ops.cast(fake_quant(x, training=training), x.dtype)


class _WeightBits:
    """Mixin: the constructor argument `weight_bits` (2 to 8): the kernels are fake-quantized to that many bits.
    TFLite's int8 kernels then hold those levels rescaled to int8 (n-bit training, int8 storage)."""

    def __init__(self, *args, weight_bits: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_bits = check_int("weight_bits", weight_bits, minimum=2, maximum=8)

    def get_config(self):
        return {**super().get_config(), "weight_bits": self.weight_bits}


class _KernelFakeQuant(_WeightBits):
    """Mixin: the layer's own `call`, computed from its public weights with the kernel fake-quantized per output
    channel (the same maths as the Keras layer's `call`, which reads `self.kernel` itself)."""

    _channel_axes = 1  # trailing axes of the kernel that index channels

    def _project(self, inputs, kernel):
        raise NotImplementedError

    def _bias(self):
        return self.bias

    def call(self, inputs, training=None):  # `inputs` named: Keras reads the first argument's name for build
        axes = tuple(range(len(self.kernel.shape) - self._channel_axes))
        outputs = self._project(inputs, fake_quant_weights(self.kernel, axes, self.weight_bits))
        if self.bias is not None:
            outputs = ops.add(outputs, self._bias())
        return outputs if self.activation is None else self.activation(outputs)


class _DenseFakeQuant(_KernelFakeQuant):
    def _project(self, inputs, kernel):
        return ops.matmul(inputs, kernel)


class _ConvBias:
    def _bias(self):
        channels_last = self.data_format == "channels_last"
        return ops.reshape(self.bias, (1,) * (self.rank + 1) + (-1,) if channels_last else (1, -1) + (1,) * self.rank)


class _ConvFakeQuant(_ConvBias, _KernelFakeQuant):
    def _project(self, inputs, kernel):
        padding = self.padding
        if padding == "causal":  # Conv1D: pad the past, as keras.layers.Conv1D does
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            time = [left, 0]
            inputs = ops.pad(inputs, [[0, 0], time, [0, 0]] if self.data_format == "channels_last"
                             else [[0, 0], [0, 0], time])
            padding = "valid"
        return ops.conv(inputs, kernel, strides=list(self.strides), padding=padding,
                        dilation_rate=self.dilation_rate, data_format=self.data_format)


class _DepthwiseFakeQuant(_ConvBias, _KernelFakeQuant):
    _channel_axes = 2  # (..., in_channels, multiplier): TFLite quantizes per in_channels * multiplier

    def _project(self, inputs, kernel):
        return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                  dilation_rate=self.dilation_rate, data_format=self.data_format)


def _register(name, bases, what: str = "per-channel int8 fake-quantized weights", **attributes):
    """A registered class `name` of the mixins and the Keras layer in `bases`."""
    doc = f"`{bases[-1].__name__}` with {what} (made by `quantize_aware`)."
    cls = type(name, bases, {"__doc__": doc, "__module__": __name__, **attributes})
    return keras.saving.register_keras_serializable(package="tfx_ext")(cls)


QuantizedDense = _register("QuantizedDense", (_DenseFakeQuant, keras.layers.Dense))
QuantizedConv1D = _register("QuantizedConv1D", (_ConvFakeQuant, keras.layers.Conv1D))
QuantizedConv2D = _register("QuantizedConv2D", (_ConvFakeQuant, keras.layers.Conv2D))
QuantizedDepthwiseConv1D = _register("QuantizedDepthwiseConv1D", (_DepthwiseFakeQuant, keras.layers.DepthwiseConv1D))
QuantizedDepthwiseConv2D = _register("QuantizedDepthwiseConv2D", (_DepthwiseFakeQuant, keras.layers.DepthwiseConv2D))


class _Ranged:
    """Mixin: the constructor argument `range_momentum` (moving-average momentum of the layer's inner ranges)."""

    def __init__(self, *args, range_momentum: float = 0.9, **kwargs):
        super().__init__(*args, **kwargs)
        self.range_momentum = check_number("range_momentum", range_momentum, low=0.0, high=1.0, high_open=True)

    def get_config(self):
        return {**super().get_config(), "range_momentum": self.range_momentum}


class _RangeSublayer(_Ranged):
    """Mixin: a learned activation range (`FakeQuant` sublayer `mid`) for a tensor inside the layer that TFLite
    keeps as an int8 tensor of its own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mid = FakeQuant(self.range_momentum, name="mid")

    def build(self, input_shape):
        super().build(input_shape)
        self.mid.build(None)


class _SeparableFakeQuant(_WeightBits, _RangeSublayer):
    """Mixin for SeparableConv1D/2D. TFLite runs a separable conv as DEPTHWISE_CONV_2D then a 1x1 CONV_2D, so the
    tensor between the two steps is int8 too: `call` computes depthwise -> `mid` range -> pointwise, each kernel
    fake-quantized per output channel (depthwise: in_channels * multiplier; pointwise: filters)."""

    def call(self, inputs, training=None):
        depthwise = fake_quant_weights(self.depthwise_kernel, tuple(range(self.rank)), self.weight_bits)
        pointwise = fake_quant_weights(self.pointwise_kernel, tuple(range(self.rank + 1)), self.weight_bits)
        x = ops.depthwise_conv(inputs, depthwise, strides=self.strides, padding=self.padding,
                               data_format=self.data_format, dilation_rate=self.dilation_rate)
        x = _ranged(self.mid, x, training)
        x = ops.conv(x, pointwise, strides=1, padding="valid", data_format=self.data_format)
        if self.use_bias:
            shape = (1,) * (self.rank + 1) + (self.filters,) if self.data_format == "channels_last" else \
                (1, self.filters) + (1,) * self.rank
            x = ops.add(x, ops.reshape(self.bias, shape))
        return x if self.activation is None else self.activation(x)


_SEPARABLE_DOC = "per-channel int8 fake-quantized kernels and a learned range between its two steps"
QuantizedSeparableConv1D = _register("QuantizedSeparableConv1D", (_SeparableFakeQuant, keras.layers.SeparableConv1D),
                                     _SEPARABLE_DOC)
QuantizedSeparableConv2D = _register("QuantizedSeparableConv2D", (_SeparableFakeQuant, keras.layers.SeparableConv2D),
                                     _SEPARABLE_DOC)


def _fake_quant_constant(value):
    """Per-tensor fake quantization of a constant over its own range (the converter reads it as the constant's
    int8 quantization)."""
    low = ops.minimum(ops.min(value), 0.0)
    high = ops.maximum(ops.max(value), low + 1e-6)
    return tf.quantization.fake_quant_with_min_max_vars(value, low, high, num_bits=8)


@keras.saving.register_keras_serializable(package="tfx_ext")
class QuantizedBatchNormalization(_RangeSublayer, keras.layers.BatchNormalization):
    """A BatchNormalization with no conv/dense to fold into (e.g. input normalization), made int8-convertible.

    TFLite runs it as MUL by a per-channel multiplier then ADD of an offset; in inference this layer computes
    exactly that, with fake-quantized constants and a learned range (`mid`) for the product, so the converter
    needs no representative data for it. Training uses batch statistics as BatchNormalization does, and updates
    the product's range from the inference form.

    Args:
        range_momentum: moving-average momentum of the product's range.
        **kwargs: as `keras.layers.BatchNormalization`.
    """

    def _affine(self):
        multiplier = ops.multiply(self.gamma, ops.rsqrt(self.moving_variance + self.epsilon)) if self.scale else \
            ops.rsqrt(self.moving_variance + self.epsilon)
        offset = (self.beta if self.center else 0.0) - self.moving_mean * multiplier
        return _fake_quant_constant(multiplier), _fake_quant_constant(offset)

    def call(self, inputs, training=None, mask=None):
        multiplier, offset = self._affine()
        if training:
            outputs = super().call(inputs, training=True, mask=mask)
            self.mid(inputs * multiplier, training=True)  # keep the inference product's range up to date
            return outputs
        return self.mid(inputs * multiplier) + offset


@keras.saving.register_keras_serializable(package="tfx_ext")
class QuantizedConcatenate(_RangeSublayer, keras.layers.Concatenate):
    """A Concatenate whose inputs and output share one learned range (`mid`), as TFLite's int8 CONCATENATION wants.

    With different ranges on its inputs the converter inserts a requantizing QUANTIZE op before the CONCATENATION
    for each input whose scale differs from the output's; one range for all (learned over the concatenated tensor,
    whose min/max are those of all inputs together) makes the concatenation a plain copy of int8 values.
    `quantize_aware` gives the producers that feed only Concatenates no range of their own.

    Args:
        range_momentum: moving-average momentum of the shared range.
        **kwargs: as `keras.layers.Concatenate`.
    """

    def call(self, inputs, training=None):
        if training:
            self.mid(super().call(inputs), training=True)  # the range of all inputs at once
        return self.mid(super().call([self.mid(x) for x in inputs]))


# ----- recurrent layers ---------------------------------------------------------------------------------------------
class _QuantizedCell(_Ranged):
    """Mixin for Keras GRUCell/LSTMCell: the step is computed in the cell's own `call` from its public weights,
    with `kernel` and `recurrent_kernel` fake-quantized per output unit (the unrolled cell runs as FULLY_CONNECTED
    ops with per-channel weights), and every state (h; LSTM: h and c) gets a learned range (`FakeQuant` sublayers
    `h_range`, `c_range`) applied where the step computes it, so the states a streaming model passes on (outputs or
    variables) are int8 on that range, and the state a step receives is on its grid already. (The received state
    gets no range of its own: a second fake-quant op on a state input made the converter requantize it through
    float when the two scales differed by a rounding.)

    The step is Keras's fused form (`implementation=2`; `implementation=1` is the same maths split per gate). The
    ranges are updated at every time step in training (a moving average over steps and batches). The gates'
    pre-activations and products inside the step have no learned range: int8 export calibrates them from
    representative data."""

    _state_names: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self._state_names:
            setattr(self, f"{name}_range", FakeQuant(self.range_momentum, name=f"{name}_range"))

    def build(self, input_shape):
        super().build(input_shape)
        for fq in self.state_ranges:
            fq.build(None)

    @property
    def state_ranges(self) -> list:
        return [getattr(self, f"{name}_range") for name in self._state_names]

    def _projections(self, inputs, h_tm1, training):
        """x @ fq(kernel) (+ bias) and the dropped-out h_tm1 (rows of (inputs or h, gates * units): one channel per
        gate unit)."""
        if training and 0.0 < self.dropout < 1.0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and 0.0 < self.recurrent_dropout < 1.0:
            h_tm1 = h_tm1 * self.get_recurrent_dropout_mask(h_tm1)
        return ops.matmul(inputs, fake_quant_weights(self.kernel, (0,))), h_tm1

    def _recurrent_kernel(self):
        return fake_quant_weights(self.recurrent_kernel, (0,))


class _QuantizedGRUCell(_QuantizedCell, keras.layers.GRUCell):
    _state_names = ("h",)

    def call(self, inputs, states, training=False):
        nested = isinstance(states, (list, tuple))
        h_tm1 = states[0] if nested else states
        x, h_in = self._projections(inputs, h_tm1, training)
        recurrent_kernel = self._recurrent_kernel()
        units = self.units
        input_bias = recurrent_bias = None
        if self.use_bias:
            input_bias, recurrent_bias = (self.bias[0], self.bias[1]) if self.reset_after else (self.bias, None)
            x = ops.add(x, input_bias)
        x_z, x_r, x_h = ops.split(x, 3, axis=-1)
        if self.reset_after:
            inner = ops.matmul(h_in, recurrent_kernel)
            if recurrent_bias is not None:
                inner = ops.add(inner, recurrent_bias)
        else:
            inner = ops.matmul(h_in, recurrent_kernel[:, : 2 * units])
        z = self.recurrent_activation(x_z + inner[:, :units])
        r = self.recurrent_activation(x_r + inner[:, units: 2 * units])
        if self.reset_after:
            recurrent_h = r * inner[:, 2 * units:]
        else:
            recurrent_h = ops.matmul(r * h_in, recurrent_kernel[:, 2 * units:])
        hh = self.activation(x_h + recurrent_h)
        h = _ranged(self.h_range, z * h_tm1 + (1 - z) * hh, training)  # the output is h
        return h, [h] if nested else h


class _QuantizedLSTMCell(_QuantizedCell, keras.layers.LSTMCell):
    """The carry c gets its range where the step computes it, so that h = o * tanh(c) reads the quantized c too (a
    raw c with two consumers, tanh and the range, would leave the converter computing c's ADD in float)."""

    _state_names = ("h", "c")

    def call(self, inputs, states, training=False):
        h_tm1, c_tm1 = states[0], states[1]
        x, h_in = self._projections(inputs, h_tm1, training)
        z = x + ops.matmul(h_in, self._recurrent_kernel())
        if self.use_bias:
            z = z + self.bias
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        i, f, o = self.recurrent_activation(z_i), self.recurrent_activation(z_f), self.recurrent_activation(z_o)
        c = _ranged(self.c_range, f * c_tm1 + i * self.activation(z_c), training)
        h = _ranged(self.h_range, o * self.activation(c), training)
        return h, [h, c]


def _quantized_rnn_init(layer, rnn_class: type, cell_class: type, units: int, range_momentum: float,
                        kwargs: dict) -> None:
    """Constructs `layer` (a subclass of Keras GRU/LSTM) as `keras.layers.RNN` around a `cell_class` cell, with
    the arguments Keras's GRU/LSTM constructor takes: those of the cell go to the cell, the rest to the RNN.

    Keras's GRU/LSTM build their cell inside `__init__` with no way to choose its class; RNN takes any cell. The
    cuDNN path is off: it would run Keras's fused kernel instead of the quantized cell's `call`."""
    cell_arguments = set(inspect.signature(rnn_class.__init__).parameters) - set(
        inspect.signature(keras.layers.RNN.__init__).parameters) - {"use_cudnn", "activity_regularizer", "kwargs"}
    cell_kwargs = {name: kwargs.pop(name) for name in list(kwargs) if name in cell_arguments}
    kwargs.pop("use_cudnn", None)
    cell = cell_class(units, range_momentum=range_momentum, dtype=kwargs.get("dtype"),
                      trainable=kwargs.get("trainable", True), name=f"{rnn_class.__name__.lower()}_cell",
                      implementation=kwargs.pop("implementation", 2), **cell_kwargs)
    keras.layers.RNN.__init__(layer, cell, **kwargs)
    layer.input_spec = keras.InputSpec(ndim=3)
    layer.use_cudnn = False
    layer.range_momentum = cell.range_momentum


class _QuantizedRNN:
    """Mixin for Keras GRU/LSTM: the RNN runs a `_QuantizedCell` given to it at construction."""

    _cell_class: type = None

    def __init__(self, units, *, range_momentum: float = 0.9, **kwargs):
        rnn_class = next(base for base in type(self).__mro__ if base in (keras.layers.GRU, keras.layers.LSTM))
        _quantized_rnn_init(self, rnn_class, self._cell_class, units, range_momentum, kwargs)

    def get_config(self):
        return {**super().get_config(), "range_momentum": self.range_momentum}


_RNN_DOC = "per-channel int8 fake-quantized kernels and learned state ranges (see `_QuantizedCell`)"
QuantizedKerasGRU = _register("QuantizedKerasGRU", (_QuantizedRNN, keras.layers.GRU), _RNN_DOC,
                              _cell_class=_QuantizedGRUCell)
QuantizedKerasLSTM = _register("QuantizedKerasLSTM", (_QuantizedRNN, keras.layers.LSTM), _RNN_DOC,
                               _cell_class=_QuantizedLSTMCell)


class _QuantizedStreamingRNN(_Ranged):
    """Mixin for `tfx_ext.layers.GRU`/`LSTM`: their inner Keras RNN (`self.rnn`) is the quantized one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for fq in self.rnn.cell.state_ranges:
            fq.momentum = self.range_momentum


QuantizedGRU = _register("QuantizedGRU", (_QuantizedStreamingRNN, GRU), _RNN_DOC, _rnn_class=QuantizedKerasGRU)
QuantizedLSTM = _register("QuantizedLSTM", (_QuantizedStreamingRNN, LSTM), _RNN_DOC, _rnn_class=QuantizedKerasLSTM)


QUANTIZED_CLASSES = {
    keras.layers.Dense: QuantizedDense,
    keras.layers.Conv1D: QuantizedConv1D,
    keras.layers.Conv2D: QuantizedConv2D,
    keras.layers.DepthwiseConv1D: QuantizedDepthwiseConv1D,
    keras.layers.DepthwiseConv2D: QuantizedDepthwiseConv2D,
    keras.layers.SeparableConv1D: QuantizedSeparableConv1D,
    keras.layers.SeparableConv2D: QuantizedSeparableConv2D,
    keras.layers.Concatenate: QuantizedConcatenate,
    keras.layers.GRU: QuantizedKerasGRU,
    keras.layers.LSTM: QuantizedKerasLSTM,
    GRU: QuantizedGRU,
    LSTM: QuantizedLSTM,
}
# Layers whose output range is their input's (no new range needed).
_RANGE_PRESERVING = (keras.layers.Reshape, keras.layers.Flatten, keras.layers.Dropout, keras.layers.Identity,
                     keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise)
# Layers a following BatchNormalization folds into (TFLite scales their kernel per output channel).
_FOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv1D,
             keras.layers.DepthwiseConv2D, keras.layers.SeparableConv1D, keras.layers.SeparableConv2D, Stream)


def _quantized_layer(layer, momentum: float = 0.9, standalone_bn: frozenset = frozenset(), weight_bits: int = 8):
    """A fresh copy of `layer` with fake-quantized weights where supported (same config, same weight order; a
    Stream's cell is swapped). BatchNormalizations named in `standalone_bn` (nothing to fold into) become
    `QuantizedBatchNormalization`."""
    target = QUANTIZED_CLASSES.get(type(layer), type(layer))
    if type(layer) is keras.layers.BatchNormalization and layer.name in standalone_bn:
        target = QuantizedBatchNormalization
    config = layer.get_config()
    if issubclass(target, (_Ranged, _QuantizedRNN)):
        config["range_momentum"] = momentum
    if issubclass(target, _WeightBits):
        config["weight_bits"] = weight_bits
    if isinstance(layer, Stream):
        cell = _quantized_layer(keras.saving.deserialize_keras_object(dict(config["cell"])), momentum,
                                weight_bits=weight_bits)
        config["cell"] = keras.saving.serialize_keras_object(cell)
    return target.from_config(config)


def _fused_only(layer, consumers: dict) -> bool:
    """True when every consumer of `layer` is fused into it by TFLite (ReLU; BatchNormalization after a foldable
    layer), so its own output needs no range."""
    users = consumers.get(layer.name, [])
    if not users:
        return False
    for user in users:
        if isinstance(user, keras.layers.ReLU) or (
            isinstance(user, keras.layers.Activation) and user.get_config()["activation"] in ("relu", "relu6")
        ):
            continue
        if isinstance(user, keras.layers.BatchNormalization) and isinstance(layer, _FOLDABLE):
            continue
        return False
    return True


def _feeds_concatenate_only(layer, consumers: dict) -> bool:
    """True when every consumer of `layer` is a Concatenate: its output takes the Concatenate's shared range."""
    users = consumers.get(layer.name, [])
    return bool(users) and all(isinstance(user, keras.layers.Concatenate) for user in users)


def _fixed_range(layer) -> bool:
    """Softmax and sigmoid outputs have fixed int8 ranges in TFLite (scale 1/256, zero point -128); also a layer
    with such an `activation` (its pre-activation range then comes from representative data)."""
    if isinstance(layer, keras.layers.Softmax):
        return True
    return layer.get_config().get("activation") in ("softmax", "sigmoid")


def _recurrent(layer) -> bool:
    """Recurrent layers: a GRU/LSTM's output is its state h, whose range is learned inside the cell
    (`_QuantizedCell`); a second range on the output would make the converter compute the last ADD in float and
    quantize it twice."""
    return isinstance(layer, keras.layers.RNN) or (isinstance(layer, StreamingLayer) and not isinstance(layer, Stream))


def is_quantize_aware(model: keras.Model) -> bool:
    """True when `model` has `FakeQuant` layers (it carries learned ranges)."""
    return any(isinstance(layer, FakeQuant) for layer in getattr(model, "layers", []))


def quantize_aware(model: keras.Model, *, momentum: float = 0.9, weight_bits: int = 8) -> keras.Model:
    """Returns a QAT copy of a functional model: fake-quantized weights and activations (see the module docs).

    The copy starts from `model`'s weights; fine-tune it (compile + fit), then export with
    `to_tflite(qat_model, quantize="int8")` (representative data optional for convolutional models: the learned
    ranges are used; GRU/LSTM gate internals need it, their states use the learned ranges) or convert it with
    `to_streaming` first.

    Args:
        model: a functional Keras 3 model (non-streaming).
        momentum: moving-average momentum of the activation ranges (also those inside layers).
        weight_bits: bits of the Dense / convolution kernels (2 to 8; activations stay 8-bit). Below 8 the
            exported int8 kernels hold `2^weight_bits - 1` levels per channel (the runtime has no narrower kernels);
            recurrent layers keep 8-bit weights, so a model with one is refused below 8.

    Returns:
        A new functional `keras.Model` named `<name>_qat`.

    Raises:
        TypeError: `model` is not a functional model.
        ValueError: `model` is already quantize-aware, or `weight_bits` is out of range or below 8 with a
            recurrent layer.
    """
    functional_config(model)  # raises TypeError for Sequential and subclassed models
    if is_quantize_aware(model):
        raise ValueError(f"`model` is already quantize-aware. Received: model={model.name!r}")
    check_int("weight_bits", weight_bits, minimum=2, maximum=8)
    recurrent = [layer.name for layer in model.layers if issubclass(
        QUANTIZED_CLASSES.get(type(layer), type(layer)), (_QuantizedRNN, _QuantizedStreamingRNN))]
    if weight_bits != 8 and recurrent:
        raise ValueError(f"`weight_bits={weight_bits}` applies to Dense and convolution kernels; the recurrent "
                         f"layers {recurrent} keep 8-bit weights. Use weight_bits=8 for this model.")
    consumers: dict[str, list] = {}
    by_name = {layer.name: layer for layer in model.layers}

    for layer_config in _graph_config(model)["layers"]:
        for node in layer_config.get("inbound_nodes", []):
            for source, _, _ in _history(node["args"]) + _history(node["kwargs"]):
                consumers.setdefault(source, []).append(by_name[layer_config["name"]])
    producers: dict[str, list] = {}
    for source, users in consumers.items():
        for user in users:
            producers.setdefault(user.name, []).append(by_name.get(source))
    standalone_bn = frozenset(  # BN with nothing to fold into: give it int8-ready MUL/ADD
        layer.name for layer in model.layers if type(layer) is keras.layers.BatchNormalization
        and not all(isinstance(p, _FOLDABLE) for p in producers.get(layer.name, [None])))
    # The clone's inputs, made here so that the first layer reading each one reads its fake-quantized form.
    new_inputs = keras.tree.map_structure(
        lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name), model.input)
    input_quant = {id(x): None for x in keras.tree.flatten(new_inputs)}

    def quantize_inputs(value):
        if isinstance(value, (list, tuple)):
            return type(value)(quantize_inputs(v) for v in value)
        if id(value) not in input_quant:
            return value
        if input_quant[id(value)] is None:
            input_quant[id(value)] = FakeQuant(momentum, name=f"{value.name}_fq")(value)
        return input_quant[id(value)]

    def call_function(layer, *args, **kwargs):
        args = quantize_inputs(args)
        outputs = layer(*args, **kwargs)
        source = by_name[layer.name]
        if isinstance(source, _RANGE_PRESERVING + (keras.layers.Concatenate,)) or _fused_only(source, consumers) \
                or _fixed_range(source) or _recurrent(source) or _feeds_concatenate_only(source, consumers):
            return outputs
        return FakeQuant(momentum, name=f"{layer.name}_fq")(outputs)

    qat = keras.models.clone_model(model, input_tensors=new_inputs, call_function=call_function,
                                   clone_function=lambda layer: _quantized_layer(layer, momentum, standalone_bn,
                                                                                 weight_bits))
    qat.name = f"{model.name}_qat"
    for layer in qat.layers:
        if layer.name in by_name and not isinstance(layer, keras.layers.InputLayer):
            # by position: the QAT layer's own weights come first (QuantizedBatchNormalization adds a range after)
            for variable, value in zip(layer.weights, by_name[layer.name].get_weights()):
                variable.assign(value)
    return qat


__all__ = [
    "quantize_aware",
    "is_quantize_aware",
    "FakeQuant",
    "fake_quant_weights",
    "QuantizedDense",
    "QuantizedConv1D",
    "QuantizedConv2D",
    "QuantizedDepthwiseConv1D",
    "QuantizedDepthwiseConv2D",
    "QuantizedSeparableConv1D",
    "QuantizedSeparableConv2D",
    "QuantizedBatchNormalization",
    "QuantizedConcatenate",
    "QuantizedGRU",
    "QuantizedLSTM",
    "QuantizedKerasGRU",
    "QuantizedKerasLSTM",
]
