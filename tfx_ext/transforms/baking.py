"""Whole-model tools for hypernetwork models: `bake` (plain Keras layers with the generated kernels) and
`hyper_parameter_report` (who owns how many parameters).

`bake(model)` rewrites the functional model's config with public Keras API only (`get_config`, `from_config`,
`get_layer`, `set_weights`): every static hyper layer becomes its plain Keras counterpart (`Dense`, `Conv1D`,
`Conv2D`, `DepthwiseConv2D`) with the same name, the generated kernel and its bias; the `HyperNetwork` nodes are
dropped; every other layer keeps its weights. The result is an ordinary model for inference, TFLite export or
streaming conversion.
"""

from __future__ import annotations

import copy

import keras
import numpy as np

from tfx_ext.errors import NotStreamableError
from tfx_ext.layers.hyper_layers import HyperConv1D, HyperConv2D, HyperDense, HyperDepthwiseConv2D, _HyperLayer
from tfx_ext.layers.hyper_network import HyperNetwork
from tfx_ext.layers.stream import Stream
from tfx_ext.transforms._graph import functional_config

__all__ = ["bake", "hyper_parameter_report"]


def _plain_layer(layer: _HyperLayer) -> keras.layers.Layer:
    common = dict(
        activation=keras.activations.serialize(layer.activation),
        use_bias=layer.use_bias,
        name=layer.name,
        dtype=layer.dtype_policy,
        trainable=layer.trainable,
    )
    if isinstance(layer, HyperDense):
        return keras.layers.Dense(layer.units, **common)
    conv = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate, **common)
    if isinstance(layer, HyperDepthwiseConv2D):
        return keras.layers.DepthwiseConv2D(layer.kernel_size, depth_multiplier=layer.depth_multiplier, **conv)
    if isinstance(layer, HyperConv2D):
        return keras.layers.Conv2D(layer.filters, layer.kernel_size, **conv)
    if isinstance(layer, HyperConv1D):
        return keras.layers.Conv1D(layer.filters, layer.kernel_size, **conv)
    raise TypeError(f"No plain counterpart for layer {layer.name!r} ({type(layer).__name__}).")


def _streamable(layer: _HyperLayer, plain: keras.layers.Layer) -> keras.layers.Layer:
    """Wraps a baked convolution in `tfx_ext.layers.Stream` with the time padding that reproduces `layer`."""
    if isinstance(layer, HyperDense):
        return plain  # frame-local: streams as it is
    effective = (layer.kernel_size[0] - 1) * layer.dilation_rate[0] + 1
    if layer.padding == "causal":
        pad_time_dim = "causal"
    elif layer.padding == "same" and layer.strides[0] == 1 and effective % 2 == 1:
        pad_time_dim = "same"
    else:
        raise NotStreamableError(
            f"layer {layer.name!r} ({type(layer).__name__}) has padding={layer.padding!r}, strides={layer.strides} "
            f"and an effective time kernel of {effective}: only 'causal', or 'same' with time stride 1 and an odd "
            "kernel, keep the time length and stream. Use padding='causal' (Conv1D) or 'same'."
        )
    return Stream(plain, pad_time_dim=pad_time_dim, name=layer.name)


def _contains_hyper_layers(model: keras.Model) -> bool:
    for layer in model.layers:
        if isinstance(layer, (_HyperLayer, HyperNetwork)):
            return True
        if isinstance(layer, keras.Model) and _contains_hyper_layers(layer):
            return True
    return False


def _history_layers(structure) -> set[str]:
    """Names of the layers whose outputs appear in a serialized node argument structure (or output list)."""
    found = set()
    if isinstance(structure, (list, tuple)) and len(structure) == 3 and isinstance(structure[0], str) \
            and all(isinstance(i, int) for i in structure[1:]):
        return {structure[0]}  # an `output_layers` entry: [layer_name, node_index, tensor_index]
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            found.add(structure["config"]["keras_history"][0])
        else:
            for value in structure.values():
                found |= _history_layers(value)
    elif isinstance(structure, (list, tuple)):
        for value in structure:
            found |= _history_layers(value)
    return found


def bake(model: keras.Model, *, stream: bool = False) -> keras.Model:
    """An equivalent plain Keras model: static hyper layers replaced by Dense/Conv layers with generated weights.

    Args:
        model: a functional model with `HyperDense`/`HyperConv1D`/`HyperConv2D`/`HyperDepthwiseConv2D` layers and
            their `HyperNetwork`s (as built with `hypernetwork=` or `generator=`, or loaded from `.keras`).
        stream: also wrap each baked convolution in `tfx_ext.layers.Stream` (padding 'causal' -> causal in time,
            'same' with time stride 1 and an odd kernel -> pad_time_dim='same'), so that
            `tfx_ext.streaming.to_streaming(bake(model, stream=True))` streams the model. Outputs are unchanged.

    Returns:
        A new functional model with the same inputs, outputs and layer names, and no hyper layers; its outputs equal
        the original's (up to float rounding of the kernel generation).

    Raises:
        TypeError: `model` is not a functional model.
        ValueError: a hyper layer is conditional (its kernel depends on a context input) or called more than once,
            a `HyperNetwork`'s output feeds something other than hyper layers, or a nested model holds hyper layers.
    """
    config = copy.deepcopy(functional_config(model))
    by_name = {operation.name: operation for operation in model.operations}  # layers and keras.ops nodes
    generator_names = {entry["name"] for entry in config["layers"] if isinstance(by_name[entry["name"]], HyperNetwork)}
    used = _history_layers(config["output_layers"]) & generator_names
    if used:
        raise ValueError(
            f"The model outputs the parameters of HyperNetwork {sorted(used)}; bake only supports generators that "
            "feed hyper layers."
        )
    kernels: dict[str, list[np.ndarray]] = {}
    new_layers = []
    for entry in config["layers"]:
        name = entry["name"]
        layer = by_name[name]
        if name in generator_names:
            continue
        if isinstance(layer, keras.Model) and _contains_hyper_layers(layer):
            raise ValueError(
                f"Layer {name!r} is a nested model with hyper layers; bake it first (bake(submodel)) or build one "
                "flat functional model."
            )
        if not isinstance(layer, _HyperLayer):
            used = _history_layers(entry["inbound_nodes"]) & generator_names
            if used:
                raise ValueError(
                    f"Layer {name!r} uses the output of HyperNetwork {sorted(used)}; bake only supports generators "
                    "that feed hyper layers."
                )
            new_layers.append(entry)
            continue
        if layer.conditional is not None:
            raise ValueError(
                f"Layer {name!r} has conditional={layer.conditional!r}: its kernel depends on the context input, "
                "so it has no plain equivalent. bake supports static hyper layers only."
            )
        if len(entry["inbound_nodes"]) != 1:
            raise ValueError(f"Layer {name!r} is called {len(entry['inbound_nodes'])} times; bake supports one call.")
        node = entry["inbound_nodes"][0]
        (generator_name,) = _history_layers(node["kwargs"]["generator"])
        params = model.get_layer(generator_name).params()
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.generated_kernel(params)), dtype=np.float32)
        weights = [kernel] + ([np.asarray(layer.bias)] if layer.use_bias else [])
        kernels[name] = weights
        plain = _plain_layer(layer)
        plain = keras.saving.serialize_keras_object(_streamable(layer, plain) if stream else plain)
        plain["name"] = name
        plain["inbound_nodes"] = [{"args": node["args"], "kwargs": {}}]
        new_layers.append(plain)
    config["layers"] = new_layers
    config["name"] = f"{model.name}_baked"
    baked = keras.Model.from_config(config)
    for layer in baked.layers:
        if layer.name in kernels:
            layer.set_weights(kernels[layer.name])
        elif layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
    return baked


def hyper_parameter_report(model: keras.Model) -> dict[str, int]:
    """Trainable parameters of a model split into generators, hyper layers (embeddings, biases, conditional
    weights) and everything else.

    Args:
        model: any Keras model.

    Returns:
        `{"generator": ..., "hyper_layers": ..., "other": ..., "total": ...}` counts of trainable scalars.
    """
    counts = {"generator": 0, "hyper_layers": 0, "other": 0}
    for layer in model.layers:
        n = int(sum(np.prod(w.shape) for w in layer.trainable_weights))
        key = "generator" if isinstance(layer, HyperNetwork) else "hyper_layers" if isinstance(layer, _HyperLayer) else "other"
        counts[key] += n
    counts["total"] = sum(counts.values())
    return counts
