"""BC-ResNet: broadcasted residual learning (Kim et al. 2021, "Broadcasted Residual Learning for Efficient Keyword
Spotting"), streamable.

Each block runs a frequency-wise depthwise conv with sub-spectral normalization on the (time, freq, channels) map
(f2), averages that over frequency, runs a causal temporal depthwise conv on the (time, 1, channels) result (f1)
and broadcasts it back over frequency: `y = relu(x + f2(x) + f1(avg_freq(f2(x))))` (a transition block, which
changes the width, has no identity term). Only the temporal convs mix frames (causal `Stream`s); everything else
acts on each frame, so `to_streaming` converts the model with one output per frame.
"""

from __future__ import annotations

import keras

from tfx_ext._validate import check_int
from tfx_ext.layers.stream import Stream
from tfx_ext.models._common import batch_norm, check_input_shape, classifier

L = keras.layers


def sub_spectral_norm(x, sub_bands: int, name: str):
    """Sub-spectral normalization: BatchNorm with separate statistics for each of `sub_bands` frequency bands
    (per channel), written with Reshape/Permute of the axes after time so every piece acts on each frame."""
    _, _, freq, channels = x.shape
    if sub_bands == 1:
        return batch_norm(name)(x)
    if freq % sub_bands:
        raise ValueError(f"`sub_bands` must divide the {freq} frequency bins of block {name!r}. "
                         f"Received: sub_bands={sub_bands}")
    y = L.Reshape((-1, sub_bands, freq // sub_bands, channels), name=f"{name}_split")(x)
    y = L.Permute((1, 3, 2, 4), name=f"{name}_bands_last")(y)
    y = L.Reshape((-1, freq // sub_bands, sub_bands * channels), name=f"{name}_merge")(y)
    y = batch_norm(name)(y)  # one mean and variance per (band, channel)
    y = L.Reshape((-1, freq // sub_bands, sub_bands, channels), name=f"{name}_unmerge")(y)
    y = L.Permute((1, 3, 2, 4), name=f"{name}_bands_first")(y)
    return L.Reshape((-1, freq, channels), name=f"{name}_join")(y)


def _block(x, width: int, dilation: int, freq_stride: int, sub_bands: int, dropout: float, name: str):
    """One BC-ResBlock: transition (1x1 conv to `width` first, no identity term) when the width changes."""
    transition = x.shape[-1] != width or freq_stride != 1
    if transition:
        x = L.Conv2D(width, 1, use_bias=False, name=f"{name}_expand")(x)
        x = batch_norm(f"{name}_expand_bn")(x)
        x = L.ReLU(name=f"{name}_expand_relu")(x)
    f2 = L.DepthwiseConv2D((1, 3), strides=(1, freq_stride), padding="same", use_bias=False, name=f"{name}_freq")(x)
    f2 = sub_spectral_norm(f2, sub_bands, f"{name}_ssn")
    pooled = L.AveragePooling2D((1, f2.shape[2]), name=f"{name}_freq_avg")(f2)  # (time, 1, channels)
    f1 = Stream(L.DepthwiseConv2D((3, 1), dilation_rate=(dilation, 1), use_bias=False), name=f"{name}_time")(pooled)
    f1 = batch_norm(f"{name}_time_bn")(f1)
    f1 = L.Activation("swish", name=f"{name}_swish")(f1)
    f1 = L.Conv2D(width, 1, use_bias=False, name=f"{name}_pointwise")(f1)
    if dropout:
        f1 = L.Dropout(dropout, name=f"{name}_dropout")(f1)
    merged = [f2, f1] if transition else [x, f2, f1]
    return L.ReLU(name=f"{name}_relu")(L.Add(name=f"{name}_add")(merged))  # f1 broadcast over frequency


def bc_resnet(input_shape=(49, 40), num_classes: int = 12, *, width: int = 8, stages=(2, 2, 4, 4),
              sub_bands: int = 5, dropout: float = 0.1, name: str = "bc_resnet") -> keras.Model:
    """BC-ResNet-`width / 8` over (frames, bins) features (BC-ResNet-1, ~9K parameters, at the defaults).

    Layout as the paper: a (5, 5) conv with frequency stride 2 to `2 * width` channels; four stages of BC-ResBlocks
    with widths `width * (1, 1.5, 2, 2.5)`, frequency strides (1, 2, 2, 1) and temporal dilations (1, 2, 4, 8) at
    the transitions (stage blocks in `stages`); a frequency depthwise (1, 5) conv, a 1x1 conv to `4 * width`
    channels, a global average pool over the window (streamed: a ring buffer of `frames` frames) and a softmax.
    Time is never strided and every temporal conv is causal, so the stream equals the model with no lag.

    Args:
        input_shape: (frames, bins); frames fixes the pooling window.
        num_classes: output classes.
        width: base channels (8 for BC-ResNet-1; tests use 2-4).
        stages: blocks per stage (four stages).
        sub_bands: sub-spectral normalization bands (1: plain BatchNorm); must divide each stage's frequency bins.
        dropout: dropout in the blocks and before the classifier (training only).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with input "features" and output "probs".
    """
    frames, bins = check_input_shape(input_shape, "bc_resnet")
    width = check_int("width", width, minimum=1)
    sub_bands = check_int("sub_bands", sub_bands, minimum=1)
    if len(stages) != 4 or any(int(n) < 1 for n in stages):
        raise ValueError(f"`stages` must list the blocks of four stages (>= 1 each). Received: stages={stages!r}")
    inputs = keras.Input((frames, bins), name="features")
    x = L.Reshape((-1, bins, 1), name="expand")(inputs)
    x = Stream(L.Conv2D(2 * width, (5, 5), strides=(1, 2), padding="same", use_bias=False), name="stem")(x)
    x = batch_norm("stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    widths = [int(round(width * f)) for f in (1.0, 1.5, 2.0, 2.5)]
    for stage, (blocks, w, freq_stride, dilation) in enumerate(zip(stages, widths, (1, 2, 2, 1), (1, 2, 4, 8))):
        for b in range(int(blocks)):
            x = _block(x, w, dilation, freq_stride if b == 0 else 1, sub_bands, dropout, f"s{stage + 1}b{b + 1}")
    x = L.DepthwiseConv2D((1, 5), use_bias=False, name="head_freq")(x) if x.shape[2] >= 5 else x
    x = L.Conv2D(4 * width, 1, use_bias=False, name="head_pointwise")(x)
    x = batch_norm("head_bn")(x)
    x = L.ReLU(name="head_relu")(x)
    x = Stream(L.GlobalAveragePooling2D(), name="pool")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout), name=name)
