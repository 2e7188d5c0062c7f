"""Attention keyword spotter: windowed self-attention blocks over feature frames, streamable."""

from __future__ import annotations

import keras

from tfx_ext._validate import check_int
from tfx_ext.layers.attention import StreamingMultiHeadAttention
from tfx_ext.layers.stream import Stream
from tfx_ext.models._common import batch_norm, check_input_shape, classifier

L = keras.layers


def attention(input_shape=(49, 40), num_classes: int = 12, *, width: int = 64, num_blocks: int = 2,
              num_heads: int = 4, window: int = 16, dropout: float = 0.1, name: str = "attention") -> keras.Model:
    """A projection, `num_blocks` pre-norm blocks (windowed self-attention over the last `window` frames, then a
    frame-wise feed-forward layer, each with a residual), average pooling over the window and a softmax. The norms
    are BatchNormalization (frame-local at inference, folded by the int8 converter; LayerNormalization's NEG has no
    int8 kernel in LiteRT).

    Args:
        input_shape: (frames, bins); frames may be None.
        num_classes: output classes.
        width: model width (each head's key size is `width // num_heads`).
        num_blocks: attention blocks.
        num_heads: attention heads.
        window: frames each frame attends to (the streaming state holds `window - 1` frames of keys and values).
        dropout: dropout before the classifier (training only).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with input "features" and output "probs".
    """
    frames, bins = check_input_shape(input_shape, "attention")
    width, num_blocks, num_heads, window = (check_int(arg, value, minimum=1) for arg, value in (
        ("width", width), ("num_blocks", num_blocks), ("num_heads", num_heads), ("window", window)))
    inputs = keras.Input((frames, bins), name="features")
    x = L.Dense(width, name="embed")(batch_norm("input_norm")(inputs))
    for i in range(1, num_blocks + 1):
        attended = StreamingMultiHeadAttention(num_heads=num_heads, key_dim=max(1, width // num_heads),
                                               window=window, name=f"attention{i}")(batch_norm(
                                                   f"attention{i}_norm")(x))
        x = L.Add(name=f"attention{i}_residual")([x, attended])
        fed = L.Dense(width, activation="relu", name=f"ffn{i}")(batch_norm(f"ffn{i}_norm")(x))
        x = L.Add(name=f"ffn{i}_residual")([x, fed])
    x = Stream(L.GlobalAveragePooling1D(), name="pool")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout), name=name)
