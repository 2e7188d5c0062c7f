"""What the model-to-model rewrites share: which models they accept."""

from __future__ import annotations

import keras


def functional_config(model) -> dict:
    """The config of a functional Keras model (its `layers`, `input_layers`, `output_layers`).

    Keras 3 has no public functional-model class to test with `isinstance`; a functional model is the
    `keras.Model` that is not `Sequential` and whose `get_config()` lists its graph (a subclassed model's does not,
    or raises `NotImplementedError`).

    Raises:
        TypeError: `model` is not a functional model.
    """
    config = None
    if isinstance(model, keras.Model) and not isinstance(model, keras.Sequential):
        try:
            config = model.get_config()
        except NotImplementedError:
            config = None
    if not isinstance(config, dict) or not {"layers", "input_layers", "output_layers"} <= set(config):
        raise TypeError(f"`model` must be a functional keras.Model. Received: model={type(model).__name__}")
    return config
