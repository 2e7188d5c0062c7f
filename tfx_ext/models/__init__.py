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
`tfx_ext.streaming.to_streaming`. With `raw_audio=True` the model takes `(samples,)` raw audio instead: the same
layers behind a `tfx_ext.layers.LogMelFrontend` (`with_frontend`), which streams one hop of samples per step.
"""

from __future__ import annotations

import keras

from tfx_ext.models._attention import attention
from tfx_ext.models._bc_resnet import bc_resnet
from tfx_ext.models._crnn import crnn
from tfx_ext.models._ds_cnn import ds_cnn
from tfx_ext.models._frontend import with_frontend
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


def get_model(name: str, input_shape=None, num_classes: int = 12, *, raw_audio: bool = False, feature_config=None,
              clip_samples: int | None = None, **kwargs) -> keras.Model:
    """Builds the reference model `name` (one of `MODELS`) for (frames, bins) features or raw audio.

    Args:
        name: "ds_cnn", "crnn", "gru", "tc_resnet", "svdf", "attention" or "bc_resnet".
        input_shape: (frames, bins) (default: 49 x 40, one second of `FeatureConfig()` features). With
            `raw_audio`, derived from `feature_config` and `clip_samples` (if given, it must agree).
        num_classes: output classes.
        raw_audio: take `(clip_samples,)` raw audio: the model behind a `LogMelFrontend(feature_config)`
            (`with_frontend`; the layers with state after it skip its warm-up frames when streamed). DS-CNN, CRNN
            and GRU stream one hop per step; TC-ResNet (time stride 8 behind the front end's one-frame lag), SVDF
            and attention (no warm-up frames) train and run on whole clips and are refused by name when streamed.
        feature_config: the `tfx_ext.data.FeatureConfig` of the front end (default: `FeatureConfig()`).
        clip_samples: samples per clip with `raw_audio` (default: one second at the config's sample rate).
        **kwargs: the model's size knobs (see each builder).

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        ValueError: unknown `name`, invalid size arguments, or `input_shape` that disagrees with the front end.
    """
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {sorted(MODELS)}. Received: name={name!r}")
    if not raw_audio:
        if feature_config is not None or clip_samples is not None:
            raise ValueError("`feature_config` and `clip_samples` configure the raw-audio front end; pass "
                             f"raw_audio=True. Received: raw_audio={raw_audio!r}")
        return MODELS[name]((49, 40) if input_shape is None else input_shape, num_classes, **kwargs)
    from tfx_ext.data.feature_config import FeatureConfig, num_frames

    config = feature_config or FeatureConfig()
    samples = config.sample_rate if clip_samples is None else clip_samples
    derived = (num_frames(samples, config), config.num_features)
    if input_shape is not None and tuple(input_shape) != derived:
        raise ValueError(f"`input_shape` must be {derived} (the front end's frames and features for clip_samples="
                         f"{samples}), or None. Received: input_shape={input_shape!r}")
    return with_frontend(MODELS[name](derived, num_classes, **kwargs), config, samples)


__all__ = ["MODELS", "TINY_KWARGS", "get_model", "with_frontend", "attention", "bc_resnet", "ds_cnn", "crnn", "gru",
           "svdf", "tc_resnet"]
