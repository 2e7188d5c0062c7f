"""Causal TC-ResNet: temporal convolutions with frequency bins as channels (Choi et al. 2019), streamable."""

from __future__ import annotations

import keras

from tfx_ext.layers.stream import Stream
from tfx_ext._validate import check_int, is_int
from tfx_ext.models._common import batch_norm, check_input_shape, classifier

L = keras.layers


def tc_resnet(input_shape=(48, 40), num_classes: int = 12, *, channels=(16, 24, 32, 48), kernel_size: int = 9,
              stride: int = 2, dropout: float = 0.1, name: str = "tc_resnet") -> keras.Model:
    """TC-ResNet8 made causal: a (3) conv, then one residual block per further entry of `channels`.

    Each block: conv(k, stride) + BN + ReLU, conv(k) + BN, plus a (1, stride) conv + BN + ReLU shortcut (its layers
    are named `bypass`), then Add and ReLU. With `stride` 2 and three blocks the time stride is 8: streamed,
    `frames_per_step` must be a multiple of 8 (160 ms at a 20 ms hop), which `to_streaming` checks. A global average
    pool over the window ends it.

    Args:
        input_shape: (frames, bins); frames fixes the pooling window (use a multiple of the total stride).
        num_classes: output classes.
        channels: channels of the first conv and of each residual block.
        kernel_size: temporal kernel of the block convs.
        stride: time stride of each block (1 keeps every frame).
        dropout: dropout before the classifier (training only).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with input "features" and output "probs".
    """
    frames, bins = check_input_shape(input_shape, "tc_resnet")
    kernel_size = check_int("kernel_size", kernel_size, minimum=1)
    stride = check_int("stride", stride, minimum=1)
    if not channels or isinstance(channels, str) or not all(is_int(c) and c >= 1 for c in channels):
        raise ValueError(f"`channels` must be a non-empty list of positive integers. Received: channels={channels!r}")
    channels = [int(c) for c in channels]
    inputs = keras.Input((frames, bins), name="features")
    normalized = batch_norm("input_norm")(inputs)  # per-bin scale of the log-mel features
    x = Stream(L.Conv1D(channels[0], 3, use_bias=False), name="conv0")(normalized)
    for i, width in enumerate(channels[1:], start=1):
        y = Stream(L.Conv1D(width, kernel_size, strides=stride, use_bias=False), name=f"block{i}_conv1")(x)
        y = batch_norm(f"block{i}_bn1")(y)
        y = L.ReLU(name=f"block{i}_relu1")(y)
        y = Stream(L.Conv1D(width, kernel_size, use_bias=False), name=f"block{i}_conv2")(y)
        y = batch_norm(f"block{i}_bn2")(y)
        # "bypass", not "shortcut": the TFLite converter's int8 pass leaves this strided 1x1 conv in float in the
        # streaming forms when its name sorts after "conv1" (an op-order dependence in TF 2.21's MLIR importer;
        # tests/export check the reference models stay full-integer).
        shortcut = Stream(L.Conv1D(width, 1, strides=stride, use_bias=False), name=f"block{i}_bypass")(x)
        shortcut = batch_norm(f"block{i}_bypass_bn")(shortcut)
        shortcut = L.ReLU(name=f"block{i}_bypass_relu")(shortcut)
        x = L.ReLU(name=f"block{i}_out")(L.Add(name=f"block{i}_add")([y, shortcut]))
    x = Stream(L.GlobalAveragePooling1D(), name="pool")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout), name=name)
