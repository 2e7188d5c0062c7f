"""Reference keyword-spotting models built from streamable layers, and a factory by name.

    ds_cnn      depthwise-separable CNN (~23K parameters at the defaults)
    crnn        convs + GRU
    gru         stacked GRUs
    tc_resnet   causal temporal-convolution ResNet (time stride 8)
    svdf        stacked SVDF layers (kws_streaming's svdf)
    attention   windowed self-attention blocks (StreamingMultiHeadAttention)
    bc_resnet   broadcasted residual learning (frequency-wise convs, temporal convs broadcast back)

Every model takes (frames, bins) features (`tfx_ext.data.compute_features`: 49 x 40 for 1 s at a 20 ms hop),
returns softmax posteriors named "probs", trains as an ordinary Keras model and converts with
`tfx_ext.streaming.to_streaming`.
"""

from __future__ import annotations

import keras

from tfx_ext.models._attention import attention
from tfx_ext.models._bc_resnet import bc_resnet
from tfx_ext.models._crnn import crnn
from tfx_ext.models._ds_cnn import ds_cnn
from tfx_ext.models._gru import gru
from tfx_ext.models._svdf import svdf
from tfx_ext.models._tc_resnet import tc_resnet

MODELS = {"ds_cnn": ds_cnn, "crnn": crnn, "gru": gru, "tc_resnet": tc_resnet, "svdf": svdf,
          "attention": attention, "bc_resnet": bc_resnet}
# Settings small enough for tests (a few hundred parameters, milliseconds per step).
TINY_KWARGS = {
    "ds_cnn": {"width": 4, "num_blocks": 1},
    "crnn": {"width": 3, "units": 6, "dense": 5},
    "gru": {"units": 6, "num_layers": 2, "dense": 5},
    "tc_resnet": {"channels": (4, 6, 8), "kernel_size": 3},
    "svdf": {"units1": (6, 6), "memory_size": (3, 4), "units2": (4, -1), "dense": 5},
    "attention": {"width": 8, "num_blocks": 1, "num_heads": 2, "window": 4},
    "bc_resnet": {"width": 2, "stages": (1, 1, 1, 1), "sub_bands": 2},
}


def get_model(name: str, input_shape=(49, 40), num_classes: int = 12, **kwargs) -> keras.Model:
    """Builds the reference model `name` (one of `MODELS`) for (frames, bins) inputs.

    Args:
        name: "ds_cnn", "crnn", "gru", "tc_resnet", "svdf", "attention" or "bc_resnet".
        input_shape: (frames, bins).
        num_classes: output classes.
        **kwargs: the model's size knobs (see each builder).

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: unknown `name` or invalid size arguments.
    """
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {sorted(MODELS)}. Received: name={name!r}")
    return MODELS[name](input_shape, num_classes, **kwargs)


__all__ = ["MODELS", "TINY_KWARGS", "get_model", "attention", "bc_resnet", "ds_cnn", "crnn", "gru", "svdf", "tc_resnet"]
