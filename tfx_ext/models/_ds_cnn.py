"""DS-CNN: depthwise-separable CNN keyword spotter (Zhang et al. 2017, "Hello Edge"), streamable."""

from __future__ import annotations

import keras

from tfx_ext.layers.stream import Stream
from tfx_ext._validate import check_int
from tfx_ext.models._common import batch_norm, check_input_shape, classifier

L = keras.layers


def ds_cnn(input_shape=(49, 40), num_classes: int = 12, *, width: int = 64, num_blocks: int = 4,
           dropout: float = 0.2, name: str = "ds_cnn") -> keras.Model:
    """A causal DS-CNN over (frames, bins) features; ~23K parameters at the defaults (kws_streaming's ds_cnn size).

    Layout: a (5, 3) conv with frequency stride 2, then `num_blocks` blocks of depthwise (3, 3) conv + BN + ReLU and
    pointwise conv + BN + ReLU, a global average pool over the whole window (streamed: a ring buffer of `frames`
    frames) and a softmax classifier. Every time-mixing layer is a `Stream`, so `to_streaming` converts it with
    one output per 20 ms frame.

    Args:
        input_shape: (frames, bins); frames fixes the pooling window.
        num_classes: output classes.
        width: channels of every conv (64 in kws_streaming; tests use 4-8).
        num_blocks: depthwise-separable blocks.
        dropout: dropout before the classifier (training only).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with input "features" and output "probs".
    """
    frames, bins = check_input_shape(input_shape, "ds_cnn")
    width = check_int("width", width, minimum=1)
    num_blocks = check_int("num_blocks", num_blocks, minimum=1)
    inputs = keras.Input((frames, bins), name="features")
    normalized = batch_norm("input_norm")(inputs)  # per-bin scale of the log-mel features
    x = L.Reshape((-1, bins, 1), name="expand")(normalized)
    x = Stream(L.Conv2D(width, (5, 3), strides=(1, 2), padding="same", use_bias=False), name="conv0")(x)
    x = batch_norm("bn0")(x)
    x = L.ReLU(name="relu0")(x)
    for i in range(1, num_blocks + 1):
        x = Stream(L.DepthwiseConv2D((3, 3), padding="same", use_bias=False), name=f"dw{i}")(x)
        x = batch_norm(f"dw{i}_bn")(x)
        x = L.ReLU(name=f"dw{i}_relu")(x)
        x = Stream(L.Conv2D(width, (1, 1), use_bias=False), name=f"pw{i}")(x)
        x = batch_norm(f"pw{i}_bn")(x)
        x = L.ReLU(name=f"pw{i}_relu")(x)
    x = Stream(L.GlobalAveragePooling2D(), name="pool")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout), name=name)
