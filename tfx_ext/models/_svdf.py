"""SVDF keyword spotter (kws_streaming's svdf): a stack of SVDF layers over feature frames, streamable."""

from __future__ import annotations

import keras

from tfx_ext._validate import check_int
from tfx_ext.layers.stream import Stream
from tfx_ext.layers.svdf import SVDF
from tfx_ext.models._common import batch_norm, check_input_shape, classifier

L = keras.layers


def svdf(input_shape=(49, 40), num_classes: int = 12, *, units1=(64, 64, 64), memory_size=(4, 10, 10),
         units2=(32, 32, 32), dense: int = 64, dropout: float = 0.1, name: str = "svdf") -> keras.Model:
    """SVDF layers (feature filter, causal time filter over `memory_size` frames, projection), the window
    flattened, a dense layer and a softmax, as kws_streaming's svdf model.

    Args:
        input_shape: (frames, bins); frames must be known (the window is flattened).
        num_classes: output classes.
        units1, memory_size, units2: per SVDF layer (equal lengths); a units2 of -1 skips that projection.
        dense: hidden dense units.
        dropout: dropout before the classifier (training only).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with input "features" and output "probs".
    """
    frames, bins = check_input_shape(input_shape, "svdf")
    if frames is None:
        raise ValueError("`input_shape` of svdf needs a known number of frames (its window is flattened). "
                         f"Received: input_shape={input_shape!r}")
    if not len(units1) == len(memory_size) == len(units2) >= 1:
        raise ValueError("`units1`, `memory_size` and `units2` must have one entry per SVDF layer. Received: "
                         f"{len(units1)}, {len(memory_size)} and {len(units2)} entries")
    dense = check_int("dense", dense, minimum=1)
    inputs = keras.Input((frames, bins), name="features")
    x = batch_norm("input_norm")(inputs)
    for i, (u1, m, u2) in enumerate(zip(units1, memory_size, units2), start=1):
        x = SVDF(memory_size=m, units1=u1, units2=u2, name=f"svdf{i}")(x)
    x = Stream(L.Flatten(), name="flatten")(x)
    x = L.Dense(dense, activation="relu", name="dense")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout), name=name)
