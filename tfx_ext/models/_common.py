"""Pieces shared by the reference keyword-spotting models."""

from __future__ import annotations

import keras

from tfx_ext._validate import check_int

OUTPUT_NAME = "probs"


def check_input_shape(input_shape, name: str) -> tuple[int, int]:
    """(frames, bins) as ints; frames may be None (any length) for models without a fixed window."""
    shape = tuple(input_shape)
    if len(shape) != 2 or shape[1] is None or int(shape[1]) < 1:
        raise ValueError(
            f"`input_shape` of {name} must be (frames, bins) features from tfx_ext.data.compute_features. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape[0] if shape[0] is None else int(shape[0]), int(shape[1])


def batch_norm(name: str):
    """BatchNormalization with momentum 0.9: keyword sets are small (a few hundred steps per run), and with Keras's
    default 0.99 the moving variance is still far from the batch variance when training stops, which collapses
    inference outputs."""
    return keras.layers.BatchNormalization(momentum=0.9, name=name)


def classifier(x, num_classes: int, dropout: float = 0.0):
    """Dropout (training only) then Dense + softmax named `probs`."""
    num_classes = check_int("num_classes", num_classes, minimum=1)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Activation("softmax", name=OUTPUT_NAME)(x)
