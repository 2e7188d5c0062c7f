"""Reading a Keras 3 model's graph from its public config: the layers, their call nodes and the output names.

`to_streaming`, `min_frames_per_step` and the QAT rewrite walk the same serialized graph: `_graph_config` gives
a functional config for functional and Sequential models alike (a Sequential one is written out as a chain),
`_history` and `_refs` read the `[layer, node, index]` references inside it. Nothing here imports private Keras
modules; subclassed models are refused with the reason.
"""

from __future__ import annotations

import copy

import keras

from tfx_ext.errors import NotStreamableError

# `class_name` of a serialized Keras tensor inside a node's call arguments.
_TENSOR = "__keras_tensor__"


def output_names(model: keras.Model) -> list[str]:
    """Names of the model's outputs: the keys of dict outputs, the last layer of a Sequential model, else Keras's
    `output_names`. States of external-state streaming models are included (they are dict outputs)."""
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    if isinstance(model.output, dict):
        return list(model.output.keys())
    return list(model.output_names)


def _sequential_config(model: keras.Sequential) -> dict:
    """A Sequential model's config written out as a functional chain (an InputLayer first)."""
    config = model.get_config()
    layers = [copy.deepcopy(layer) for layer in config["layers"]]
    if not layers or layers[0]["class_name"] != "InputLayer":
        shape = config.get("build_input_shape")
        if shape is None:
            raise NotStreamableError(
                f"model {model.name!r} (Sequential) has no input shape; build it with keras.Input(...) first."
            )
        layers.insert(0, {"class_name": "InputLayer", "config": {"batch_shape": list(shape), "dtype": "float32",
                                                                   "name": f"{model.name}_input"}})
    previous = None
    for layer in layers:
        layer["name"] = layer["config"]["name"]
        layer["inbound_nodes"] = [] if previous is None else [
            {"args": [{"class_name": _TENSOR, "config": {"keras_history": [previous, 0, 0]}}], "kwargs": {}}
        ]
        previous = layer["name"]
    return {"layers": layers, "input_layers": [[layers[0]["name"], 0, 0]], "output_layers": [[previous, 0, 0]]}


def _graph_config(model: keras.Model) -> dict:
    """The functional config of `model` (a deep copy; Sequential models are expressed as a chain)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    if isinstance(model, keras.Sequential):
        return _sequential_config(model)
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or "input_layers" not in config or "output_layers" not in config:
        raise NotStreamableError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed model: its call() is Python code that "
            "to_streaming cannot rewire. Build it as a functional or Sequential model (keras.Model(inputs, "
            "outputs)) from the same layers."
        )
    return copy.deepcopy(config)


def _refs(structure) -> list:
    """[layer, node, index] references of a config's `input_layers` / `output_layers` (list, single or dict)."""
    if isinstance(structure, dict):
        return [list(v) for v in structure.values()]
    if structure and isinstance(structure[0], str):
        return [list(structure)]
    return [list(v) for v in structure]


def _history(value) -> list[tuple]:
    """(layer, node, index) of every serialized tensor inside call arguments."""
    if isinstance(value, dict) and value.get("class_name") == _TENSOR:
        return [tuple(value["config"]["keras_history"])]
    if isinstance(value, dict):
        return [h for v in value.values() for h in _history(v)]
    if isinstance(value, (list, tuple)):
        return [h for v in value for h in _history(v)]
    return []


def _resolve(value, tensors: dict):
    """Replaces serialized Keras tensors in call arguments by the rebuilt tensors (keyed by their history)."""
    if isinstance(value, dict) and value.get("class_name") == _TENSOR:
        name, node, index = value["config"]["keras_history"]
        return tensors[(name, node, index)]
    if isinstance(value, dict):
        return {k: _resolve(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, tensors) for v in value)
    return value


def _flat(outputs) -> list:
    """A layer's or model's outputs as a list, in Keras's own order: the index in a `keras_history` reference.

    Dict outputs (a HyperNetwork's parameters) are flattened by sorted key, as Keras numbers them, not in
    insertion order (which wired `w_in` to `b_in` once).
    """
    return list(keras.tree.flatten(outputs))


__all__ = ["output_names"]
