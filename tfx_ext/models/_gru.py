"""GRU keyword spotter (kws_streaming's gru): recurrent layers over feature frames, streamable."""

from __future__ import annotations

import keras

from tfx_ext.layers.recurrent import GRU
from tfx_ext._validate import check_int
from tfx_ext.models._common import batch_norm, check_input_shape, classifier

L = keras.layers


def gru(input_shape=(49, 40), num_classes: int = 12, *, units: int = 128, num_layers: int = 2, dense: int = 64,
        dropout: float = 0.1, name: str = "gru") -> keras.Model:
    """`num_layers` stacked GRUs (the last returns its final state), a dense layer and a softmax.

    Args:
        input_shape: (frames, bins); frames may be None.
        num_classes: output classes.
        units: GRU units per layer.
        num_layers: stacked GRU layers.
        dense: hidden dense units.
        dropout: dropout before the classifier (training only).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with input "features" and output "probs".
    """
    frames, bins = check_input_shape(input_shape, "gru")
    units, num_layers, dense = (check_int(arg, value, minimum=1)
                                for arg, value in (("units", units), ("num_layers", num_layers), ("dense", dense)))
    inputs = keras.Input((frames, bins), name="features")
    normalized = batch_norm("input_norm")(inputs)  # per-bin scale of the log-mel features
    x = normalized
    for i in range(1, num_layers + 1):
        x = GRU(units, return_sequences=i < num_layers, name=f"gru{i}")(x)
    x = L.Dense(dense, activation="relu", name="dense")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout), name=name)
