"""Whole-model helpers for `DeltaActivation`: fan-out from the graph, sparsity reports, MAC savings.

Counting rule (documented once, used everywhere here): a delta engine multiplies only nonzero deltas. A
`DeltaActivation` feeds one *consumer*, the first Dense/Conv layer reached through frame-local pass-through layers
(Dropout, BatchNormalization, Activation, ReLU, Reshape along features, and our `Stream` wrapper around a Conv).
One input element of the consumer costs `fan_out` multiply-accumulates per frame:

    Dense(units)                      units
    Conv1D/Conv2D(filters, kernel)    prod(kernel) * filters / (groups * prod(strides))
    DepthwiseConv / SeparableConv     prod(kernel) * depth_multiplier / prod(strides)   (the depthwise part)

`delta_mac_savings` = 1 - sum(nonzero deltas * fan_out) / sum(all deltas * fan_out), summed over the consumers
of every DeltaActivation; layers not fed by a DeltaActivation are not counted (they run densely either way).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import keras
import numpy as np

from tfx_ext.layers.delta import DeltaActivation

_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Reshape,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
)


def _consumers(model: keras.Model, layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Layers whose input is `layer`'s output (public API: `Layer.input`/`Layer.output` identity)."""
    output = layer.output
    found = []
    for other in model.layers:
        if other is layer or isinstance(other, keras.layers.InputLayer):
            continue
        inputs = other.input if isinstance(other.input, (list, tuple)) else [other.input]
        if any(tensor is output for tensor in inputs):
            found.append(other)
    return found


def _unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    return getattr(layer, "cell", layer)  # Stream(cell) computes with its cell.


def fan_out_of(layer: keras.layers.Layer) -> int | None:
    """Multiply-accumulates per input element per frame of a Dense/Conv layer (None for other layers)."""
    layer = _unwrap(layer)
    if isinstance(layer, keras.layers.Dense):
        return int(layer.units)
    kernel = getattr(layer, "kernel_size", None)
    if kernel is None:
        return None
    strides = math.prod(getattr(layer, "strides", (1,)))
    taps = math.prod(kernel)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                          keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return max(1, round(taps * layer.depth_multiplier / strides))
    filters = getattr(layer, "filters", None)
    if filters is None:
        return None
    return max(1, round(taps * filters / (getattr(layer, "groups", 1) * strides)))


def consumer_of(model: keras.Model, layer: DeltaActivation) -> keras.layers.Layer | None:
    """The Dense/Conv layer that multiplies `layer`'s output, following pass-through layers; None if none."""
    frontier = _consumers(model, layer)
    while len(frontier) == 1:
        candidate = frontier[0]
        if fan_out_of(candidate) is not None:
            return candidate
        if not isinstance(candidate, _PASS_THROUGH):
            return None
        frontier = _consumers(model, candidate)
    return None


def _is_hidden_activation(layer: keras.layers.Layer, output) -> bool:
    """A ReLU (layer or fused into Dense/Conv/Activation) whose output still has a time axis and features."""
    if isinstance(output, (list, tuple)) or len(output.shape) < 3:
        return False
    if isinstance(layer, keras.layers.ReLU):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) == "relu" and not isinstance(layer, DeltaActivation)


def insert_delta_activations(model: keras.Model, *, where=None, **delta_kwargs) -> keras.Model:
    """A copy of `model` with a `DeltaActivation` after each hidden ReLU, weights copied (fine-tune from here).

    Uses `keras.models.clone_model(call_function=...)` (public API). The inserted layers are named
    `<layer>_delta` and get `fan_out` from their consumers (`assign_fan_out`).

    Args:
        model: a functional or Sequential model with ReLU activations over `(batch, time, ...)` tensors.
        where: optional predicate `where(layer) -> bool` restricting which activations get a DeltaActivation
            (default: every hidden ReLU whose output keeps the time axis).
        **delta_kwargs: `DeltaActivation` arguments (threshold, method, penalty, trainable_threshold, ...).

    Returns:
        The new model (not compiled).

    Raises:
        ValueError: the model has no activation to follow.
    """
    inserted = []

    def call_function(layer, *args, **kwargs):
        output = layer(*args, **kwargs)
        if _is_hidden_activation(layer, output) and (where is None or where(layer)):
            inserted.append(layer.name)
            return DeltaActivation(name=f"{layer.name}_delta", **delta_kwargs)(output)
        return output

    clone = keras.models.clone_model(model, call_function=call_function)
    if not inserted:
        raise ValueError(f"model {model.name!r} has no hidden ReLU over (batch, time, ...) to follow with a "
                         "DeltaActivation")
    for layer in model.layers:
        if layer.weights:
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    assign_fan_out(clone)
    return clone


def delta_layers(model: keras.Model) -> list[DeltaActivation]:
    return [layer for layer in model.layers if isinstance(layer, DeltaActivation)]


def assign_fan_out(model: keras.Model) -> dict[str, int]:
    """Sets each DeltaActivation's `fan_out` from its consumer (1 when it has none); returns name -> fan_out.

    Call it after building the model and before compiling, so the sparsity penalty weighs deltas by their cost.
    """
    assigned = {}
    for layer in delta_layers(model):
        consumer = consumer_of(model, layer)
        layer.fan_out = fan_out_of(consumer) if consumer is not None else 1
        assigned[layer.name] = layer.fan_out
    return assigned


def temporal_deltas(values: np.ndarray) -> np.ndarray:
    """Frame-to-frame changes along axis 1, the first frame compared with zeros (as DeltaActivation does)."""
    values = np.asarray(values)
    previous = np.concatenate([np.zeros_like(values[:, :1]), values[:, :-1]], axis=1)
    return values - previous


def _delta_outputs(model: keras.Model, data: Iterable[Any]) -> dict[str, np.ndarray]:
    """Deltas of every DeltaActivation over `data` (batches of inputs, or (inputs, labels) pairs)."""
    layers = delta_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no DeltaActivation layer")
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    probe = keras.Model(inputs, [layer.output for layer in layers])
    collected: dict[str, list[np.ndarray]] = {layer.name: [] for layer in layers}
    for batch in data:
        inputs = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch
        outputs = probe(inputs, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for layer, values in zip(layers, outputs):
            values = np.asarray(values)
            collected[layer.name].append(values if layer.emit == "deltas" else temporal_deltas(values))
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def sparsity_report(model: keras.Model, data: Iterable[Any]) -> dict[str, dict[str, float]]:
    """Per DeltaActivation: temporal sparsity (fraction of zero deltas), spatial sparsity of its activations,
    its consumer and fan-out."""
    deltas = _delta_outputs(model, data)
    report = {}
    for layer in delta_layers(model):
        d = deltas[layer.name]
        activations = np.cumsum(d, axis=1)  # Deltas integrate back to the transmitted activations.
        consumer = consumer_of(model, layer)
        report[layer.name] = {
            "temporal_sparsity": float(np.mean(d == 0)),
            "spatial_sparsity": float(np.mean(np.isclose(activations, 0, atol=1e-7))),
            "consumer": consumer.name if consumer is not None else None,
            "fan_out": fan_out_of(consumer) if consumer is not None else None,
        }
    return report


def delta_mac_savings(model: keras.Model, data: Iterable[Any]) -> dict[str, Any]:
    """Fraction of the consumers' multiply-accumulates a delta engine skips (see the module's counting rule).

    Returns:
        {"savings": float, "dense_macs": int, "delta_macs": int, "per_layer": {name: savings}}; layers without a
        Dense/Conv consumer are left out.
    """
    deltas = _delta_outputs(model, data)
    dense_total = delta_total = 0
    per_layer = {}
    for layer in delta_layers(model):
        consumer = consumer_of(model, layer)
        if consumer is None:
            continue
        fan_out = fan_out_of(consumer)
        d = deltas[layer.name]
        dense, sparse = d.size * fan_out, int(np.count_nonzero(d)) * fan_out
        dense_total += dense
        delta_total += sparse
        per_layer[layer.name] = 1.0 - sparse / dense if dense else 0.0
    return {
        "savings": 1.0 - delta_total / dense_total if dense_total else 0.0,
        "dense_macs": int(dense_total),
        "delta_macs": int(delta_total),
        "per_layer": per_layer,
    }


__all__ = [
    "assign_fan_out",
    "consumer_of",
    "delta_mac_savings",
    "fan_out_of",
    "insert_delta_activations",
    "sparsity_report",
    "temporal_deltas",
]
