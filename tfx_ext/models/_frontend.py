"""`with_frontend`: a features model (trained or not) put behind `LogMelFrontend`, so it takes raw audio."""

from __future__ import annotations

import copy

import keras

from tfx_ext._validate import check_int
from tfx_ext.data.feature_config import FeatureConfig, num_frames
from tfx_ext.layers.frontend import LogMelFrontend
from tfx_ext.streaming.streamable import streamable_rewrite
from tfx_ext.transforms._graph import functional_config

FRONTEND_NAME = "frontend"
AUDIO_INPUT = "audio"


def _renamed(node, old: str, new: str):
    """`node` (an inbound-node structure of a functional config) with tensors of layer `old` read from `new`."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__" and node["config"]["keras_history"][0] == old:
            node = copy.deepcopy(node)
            node["config"]["keras_history"] = [new, *node["config"]["keras_history"][1:]]
            return node
        return {k: _renamed(v, old, new) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_renamed(v, old, new) for v in node)
    return node


def with_frontend(model: keras.Model, config: FeatureConfig | None = None, clip_samples: int | None = None,
                  *, dft: str = "matmul", int16: bool = False) -> keras.Model:
    """`model` (one `(frames, features)` input) behind a `LogMelFrontend`: a model on `(clip_samples,)` raw audio.

    The front end equals `compute_features(audio, config)` on whole clips, so a model trained on the pipeline's
    features keeps its accuracy on raw audio; its weights are copied. Streamed one hop per step, the front end emits
    `K - 1` warm-up frames (`K = ceil(window / hop)`): the layers with state after it get `warmup_frames=K - 1`
    (the rule `make_streamable` applies behind any delayed layer), so the stream equals the whole clip, `K - 1` hops
    late.

    Args:
        model: a functional model with one input of shape `(frames, config.num_features)`.
        config: the `FeatureConfig` the model was trained on (default: `FeatureConfig()`).
        clip_samples: samples per clip (default: one second); must give the model's `frames` (None frames: any).
        dft: the front end's DFT (`"matmul"` or `"rfft"`).
        int16: take int16 PCM (read as `x / 32768`) instead of float audio.

    Returns:
        A functional `keras.Model` with input `"audio"`, the layer `"frontend"`, and `model`'s layers and outputs.

    Raises:
        ValueError: the model's input shape does not match `config` and `clip_samples`.
        TypeError: `model` is not a functional model.
    """
    config = config or FeatureConfig()
    clip_samples = check_int("clip_samples", config.sample_rate if clip_samples is None else clip_samples,
                             minimum=config.window_samples)
    graph = copy.deepcopy(functional_config(model))
    inputs = graph["input_layers"]
    if not (len(inputs) == 3 and isinstance(inputs[0], str)) and len(inputs) != 1:
        raise ValueError(f"`model` must have one input. Received: {len(model.inputs)} inputs")
    name = inputs[0] if isinstance(inputs[0], str) else inputs[0][0]
    frames, features = tuple(model.inputs[0].shape[1:]) if len(model.inputs[0].shape) == 3 else (None, None)
    expected = num_frames(clip_samples, config)
    if features != config.num_features or frames not in (None, expected):
        raise ValueError(
            f"`model` must take (frames, features) = ({expected}, {config.num_features}) for clip_samples="
            f"{clip_samples} and this FeatureConfig. Received: input shape {tuple(model.inputs[0].shape[1:])}"
        )
    front = LogMelFrontend(config, dft=dft, name=FRONTEND_NAME)
    audio = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None, "name": AUDIO_INPUT,
             "inbound_nodes": [], "config": {"batch_shape": [None, clip_samples], "name": AUDIO_INPUT,
                                             "dtype": "int16" if int16 else "float32", "sparse": False,
                                             "ragged": False}}
    front_config = keras.saving.serialize_keras_object(front)
    front_config.update(name=FRONTEND_NAME, inbound_nodes=[{"args": [{"class_name": "__keras_tensor__", "config": {
        "shape": [None, clip_samples], "dtype": audio["config"]["dtype"], "keras_history": [AUDIO_INPUT, 0, 0]}}],
        "kwargs": {}}])
    layers = [_renamed(layer, name, FRONTEND_NAME) for layer in graph["layers"] if layer["name"] != name]
    graph.update(layers=[audio, front_config, *layers], input_layers=[AUDIO_INPUT, 0, 0])
    composed = keras.Model.from_config(graph)
    for layer in model.layers:
        if layer.weights:
            composed.get_layer(layer.name).set_weights(layer.get_weights())
    rewritten, refused = streamable_rewrite(composed)  # warmup_frames behind the front end's delay
    return composed if refused else rewritten


__all__ = ["AUDIO_INPUT", "FRONTEND_NAME", "with_frontend"]
