"""Quantization-aware training (QAT) for Keras 3 models, exported to full-integer TFLite with the learned ranges.

`quantize_aware(model)` clones a functional model with:
- weights fake-quantized per output channel, symmetric, int8 narrow range ([-127, 127], scale max|w| / 127, the
  scheme TFLite uses for conv/depthwise/dense weights) with a straight-through gradient. Covered: Dense, Conv1D,
  Conv2D, DepthwiseConv1D, DepthwiseConv2D, also inside `tfx_ext.layers.Stream` (the cell is swapped);
- activations fake-quantized per tensor, asymmetric int8, with moving-average min/max (`FakeQuant` layers) on the
  model inputs and after every layer whose output TFLite keeps as a tensor: not after a layer whose only consumers
  are BatchNormalization or ReLU (TFLite folds BN into the conv and fuses the ReLU, so the range that matters is
  the one after them). Add/Concatenate outputs get one range (their inputs keep their producers' ranges).

BatchNormalization is *not* folded during training: the converter folds it into the preceding conv/dense at export,
so the folded kernel's rounding is not simulated exactly (weights are fake-quantized before the fold). Recurrent
layers (GRU/LSTM) have no fake quantization inside: their internal ranges (and streaming states) come from
representative data at export.

`FakeQuant` subclasses `keras.layers.Identity` so `tfx_ext.to_streaming` treats it as frame-local and carries its
ranges over to the streaming model (they are weights, copied by layer name).

TF-only code (`tf.quantization.fake_quant_with_min_max_vars`, which the TFLite converter reads as the tensor's
range), so it lives in `tfx_ext/`, not `layers/`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfx_ext.layers.stream import Stream


def fake_quant_weights(kernel, reduce_axes: tuple[int, ...]):
    """Per-channel symmetric int8 fake quantization of `kernel` (channels = the axes not in `reduce_axes`), with
    a straight-through gradient."""
    scale = ops.max(ops.abs(kernel), axis=reduce_axes, keepdims=True) / 127.0
    scale = ops.maximum(scale, 1e-12)
    quantized = ops.clip(ops.round(kernel / scale), -127.0, 127.0) * scale
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
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum!r}")
        if num_bits not in (8,):
            raise ValueError(f"`num_bits` must be 8 (TFLite int8). Received: num_bits={num_bits!r}")
        self.momentum = float(momentum)
        self.num_bits = int(num_bits)
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


class _KernelFakeQuant:
    """Mixin: the `kernel` the layer's `call` reads is fake-quantized per output channel."""

    _channel_axes = 1  # trailing axes that index channels

    def _qat_kernel(self, kernel):
        if not getattr(self, "_qat_active", False):
            return kernel
        axes = tuple(range(len(kernel.shape) - self._channel_axes))
        return fake_quant_weights(kernel, axes)

    def call(self, inputs, *args, **kwargs):  # `inputs` named: Keras reads the first argument's name for build
        self._qat_active = True
        try:
            return super().call(inputs, *args, **kwargs)
        finally:
            self._qat_active = False


class _PropertyKernel(_KernelFakeQuant):
    @property
    def kernel(self):
        return self._qat_kernel(super().kernel)


class _AttributeKernel(_KernelFakeQuant):
    """For layers that store `self.kernel` as a plain attribute (depthwise convs)."""

    _channel_axes = 2  # (..., in_channels, multiplier): TFLite quantizes per in_channels * multiplier

    @property
    def kernel(self):
        return self._qat_kernel(self._depthwise_kernel)

    @kernel.setter
    def kernel(self, value):
        self._depthwise_kernel = value


def _register(name, bases):
    cls = type(name, bases, {"__doc__": f"`{bases[-1].__name__}` with per-channel int8 fake-quantized weights "
                                        "(made by `quantize_aware`)."})
    cls.__module__ = __name__
    return keras.saving.register_keras_serializable(package="tfx_ext")(cls)


QuantizedDense = _register("QuantizedDense", (_PropertyKernel, keras.layers.Dense))
QuantizedConv1D = _register("QuantizedConv1D", (_PropertyKernel, keras.layers.Conv1D))
QuantizedConv2D = _register("QuantizedConv2D", (_PropertyKernel, keras.layers.Conv2D))
QuantizedDepthwiseConv1D = _register("QuantizedDepthwiseConv1D", (_AttributeKernel, keras.layers.DepthwiseConv1D))
QuantizedDepthwiseConv2D = _register("QuantizedDepthwiseConv2D", (_AttributeKernel, keras.layers.DepthwiseConv2D))
def _fake_quant_constant(value):
    """Per-tensor fake quantization of a constant over its own range (the converter reads it as the constant's
    int8 quantization)."""
    low = ops.minimum(ops.min(value), 0.0)
    high = ops.maximum(ops.max(value), low + 1e-6)
    return tf.quantization.fake_quant_with_min_max_vars(value, low, high, num_bits=8)


@keras.saving.register_keras_serializable(package="tfx_ext")
class QuantizedBatchNormalization(keras.layers.BatchNormalization):
    """A BatchNormalization with no conv/dense to fold into (e.g. input normalization), made int8-convertible.

    TFLite runs it as MUL by a per-channel multiplier then ADD of an offset; in inference this layer computes
    exactly that, with fake-quantized constants and a learned range (`mid`) for the product, so the converter
    needs no representative data for it. Training uses batch statistics as BatchNormalization does, and updates
    the product's range from the inference form.

    Args:
        range_momentum: moving-average momentum of the product's range.
        **kwargs: as `keras.layers.BatchNormalization`.
    """

    def __init__(self, range_momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.range_momentum = float(range_momentum)
        self.mid = FakeQuant(self.range_momentum, name="mid")

    def build(self, input_shape):
        super().build(input_shape)
        self.mid.build(input_shape)

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

    def get_config(self):
        return {**super().get_config(), "range_momentum": self.range_momentum}


QUANTIZED_CLASSES = {
    keras.layers.Dense: QuantizedDense,
    keras.layers.Conv1D: QuantizedConv1D,
    keras.layers.Conv2D: QuantizedConv2D,
    keras.layers.DepthwiseConv1D: QuantizedDepthwiseConv1D,
    keras.layers.DepthwiseConv2D: QuantizedDepthwiseConv2D,
}
# Consumers TFLite fuses into the producing op: no range between producer and them.
_FUSED_CONSUMERS = (keras.layers.BatchNormalization, keras.layers.ReLU)
# Layers whose output range is their input's (no new range needed).
_RANGE_PRESERVING = (keras.layers.Reshape, keras.layers.Flatten, keras.layers.Dropout, keras.layers.Identity,
                     keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise)


def _quantized_layer(layer):
    """A fresh copy of `layer` with fake-quantized weights where supported (same config, same weight order)."""
    config = layer.get_config()
    if isinstance(layer, Stream):
        cell = keras.saving.deserialize_keras_object(dict(config["cell"]))
        target = QUANTIZED_CLASSES.get(type(cell))
        if target is not None:
            config = dict(config, cell=keras.saving.serialize_keras_object(target.from_config(cell.get_config())))
        return Stream.from_config(config)
    target = QUANTIZED_CLASSES.get(type(layer))
    if target is not None:
        return target.from_config(config)
    if type(layer) is keras.layers.BatchNormalization and getattr(layer, "_qat_standalone", False):
        return QuantizedBatchNormalization.from_config(config)
    return type(layer).from_config(config)


_FOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv1D,
             keras.layers.DepthwiseConv2D, Stream)


def _fused_only(layer, consumers: dict) -> bool:
    users = consumers.get(layer.name, [])
    if not users:
        return False
    for user in users:
        if isinstance(user, keras.layers.ReLU) or (
            isinstance(user, keras.layers.Activation) and user.get_config()["activation"] in ("relu", "relu6")
        ):
            continue
        if isinstance(user, keras.layers.BatchNormalization) and isinstance(
            layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv1D,
                    keras.layers.DepthwiseConv2D, Stream)
        ):
            continue
        return False
    return True


def _fixed_range(layer) -> bool:
    """Softmax and sigmoid outputs have fixed int8 ranges in TFLite (scale 1/256, zero point -128)."""
    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.get_config()["activation"] in ("softmax", "sigmoid")


def _recurrent(layer) -> bool:
    """GRU/LSTM: their output is also their state, whose range comes from representative data; a second range on
    the output would make the converter compute the last ADD in float and quantize it twice."""
    from tfx_ext.modes import StreamingLayer

    return isinstance(layer, keras.layers.RNN) or (isinstance(layer, StreamingLayer) and not isinstance(layer, Stream))


def is_quantize_aware(model: keras.Model) -> bool:
    """True when `model` has `FakeQuant` layers (it carries learned ranges)."""
    return any(isinstance(layer, FakeQuant) for layer in getattr(model, "layers", []))


def quantize_aware(model: keras.Model, *, momentum: float = 0.9) -> keras.Model:
    """Returns a QAT copy of a functional model: fake-quantized weights and activations (see the module docs).

    The copy starts from `model`'s weights; fine-tune it (compile + fit), then export with
    `to_tflite(qat_model, quantize="int8")` (representative data optional: the learned ranges are used; streaming
    states and recurrent internals are calibrated from it when given) or convert it with `to_streaming` first.

    Args:
        model: a functional Keras 3 model (non-streaming).
        momentum: moving-average momentum of the activation ranges.

    Returns:
        A new functional `keras.Model` named `<name>_qat`.

    Raises:
        TypeError: `model` is not a functional model.
        ValueError: `model` is already quantize-aware.
    """
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential) or not hasattr(model, "inputs") \
            or not getattr(model, "_is_graph_network", True):
        raise TypeError(f"`model` must be a functional keras.Model. Received: model={type(model).__name__}")
    if is_quantize_aware(model):
        raise ValueError(f"`model` is already quantize-aware. Received: model={model.name!r}")
    consumers: dict[str, list] = {}
    by_name = {layer.name: layer for layer in model.layers}
    from tfx_ext.streaming import _graph_config, _history

    for layer_config in _graph_config(model)["layers"]:
        for node in layer_config.get("inbound_nodes", []):
            for source, _, _ in _history(node["args"]) + _history(node["kwargs"]):
                consumers.setdefault(source, []).append(by_name[layer_config["name"]])
    producers: dict[str, list] = {}
    for source, users in consumers.items():
        for user in users:
            producers.setdefault(user.name, []).append(by_name.get(source))
    for layer in model.layers:  # BN with nothing to fold into: give it int8-ready MUL/ADD
        if type(layer) is keras.layers.BatchNormalization:
            layer._qat_standalone = not all(isinstance(p, _FOLDABLE) for p in producers.get(layer.name, [None]))
    input_quant: dict[int, keras.KerasTensor] = {}

    def quantize_inputs(value):
        if isinstance(value, (list, tuple)):
            return type(value)(quantize_inputs(v) for v in value)
        history = getattr(value, "_keras_history", None)
        if history is not None and isinstance(history.operation, keras.layers.InputLayer):
            if id(value) not in input_quant:
                input_quant[id(value)] = FakeQuant(momentum, name=f"{history.operation.name}_fq")(value)
            return input_quant[id(value)]
        return value

    def call_function(layer, *args, **kwargs):
        args = quantize_inputs(args)
        outputs = layer(*args, **kwargs)
        source = by_name[layer.name]
        if isinstance(source, _RANGE_PRESERVING) or _fused_only(source, consumers) or _fixed_range(source) \
                or _recurrent(source):
            return outputs
        return FakeQuant(momentum, name=f"{layer.name}_fq")(outputs)

    qat = keras.models.clone_model(model, clone_function=_quantized_layer, call_function=call_function)
    qat.name = f"{model.name}_qat"
    for layer in model.layers:
        if hasattr(layer, "_qat_standalone"):
            del layer._qat_standalone
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
    "QuantizedBatchNormalization",
]
