"""CRNN: convolutions over (time, frequency) then a GRU over time (kws_streaming's crnn), streamable."""

from __future__ import annotations

import keras

from tfx_ext.layers.recurrent import GRU
from tfx_ext.layers.stream import Stream
from tfx_ext._validate import check_int
from tfx_ext.models._common import batch_norm, check_input_shape, classifier

L = keras.layers


def crnn(input_shape=(49, 40), num_classes: int = 12, *, width: int = 16, units: int = 128, dense: int = 64,
         dropout: float = 0.1, name: str = "crnn") -> keras.Model:
    """Two causal (3, 3) convs with frequency stride 2, a GRU over time, a dense layer and a softmax.

    Streamed, the convs keep 2 frames each and the GRU carries its hidden state, so each 20 ms frame costs one
    column of convolutions and one GRU step; the posterior at every step sums up the whole history.

    Args:
        input_shape: (frames, bins); frames may be None (any length).
        num_classes: output classes.
        width: conv channels.
        units: GRU units.
        dense: units of the hidden dense layer.
        dropout: dropout before the classifier (training only).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with input "features" and output "probs".
    """
    frames, bins = check_input_shape(input_shape, "crnn")
    width, units, dense = (check_int(arg, value, minimum=1)
                           for arg, value in (("width", width), ("units", units), ("dense", dense)))
    inputs = keras.Input((frames, bins), name="features")
    normalized = batch_norm("input_norm")(inputs)  # per-bin scale of the log-mel features
    x = L.Reshape((-1, bins, 1), name="expand")(normalized)
    x = Stream(L.Conv2D(width, (3, 3), strides=(1, 2), padding="same", activation="relu"), name="conv1")(x)
    x = Stream(L.Conv2D(width, (3, 3), strides=(1, 2), padding="same", activation="relu"), name="conv2")(x)
    freq = -(-(-(-bins // 2)) // 2)
    x = L.Reshape((-1, freq * width), name="merge")(x)
    x = GRU(units, return_sequences=False, name="gru")(x)
    x = L.Dense(dense, activation="relu", name="dense")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout), name=name)
