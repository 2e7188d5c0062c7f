"""Layer adapters: where each supported layer keeps its units, in one table.

Matching speaks in terms of *unit groups* (the hidden units of one matched layer) and *unit axes*: an axis of a
weight array indexed by a group's units. An axis of length `B * U * M` is read as `(B, U, M)` with the unit index
in the middle: `B` blocks of units (the 4 gates of an LSTM, the spatial positions of a flattened feature map) and
`M` entries per unit (the channel multiplier of a depthwise convolution). The role of a unit axis is

- `"def"`: the axis of the group's own units (a Dense kernel's columns, a bias, BatchNormalization's four
  vectors, an LSTM's gate columns): a global unit's entries are averaged over the clients matched to it;
- `"in"`: an incoming axis (the next layer's kernel rows, an LSTM's recurrent-kernel rows): clients that do not
  have a global unit contribute zeros there.

The last layer with weights is the output layer: it is not matched; its output axis is the *class axis*, averaged
with class-frequency weights.

`ADAPTERS` maps each supported Keras layer class to one function that, given the layer and the unit layout of its
input channel axis, records the tags of the layer's weights and returns the layout of its output channel axis.
`Stream` (tfx_ext.layers) is handled through its wrapped cell, tfx_ext's streaming `GRU`/`LSTM` through the Keras
RNN they run inside, and a `Reshape` when it keeps the channels last (as in the crnn). Layers are walked as a single chain (Sequential, or
a functional model whose layers each take the previous layer's output); anything else is refused with the name of
the layer.

The spec is positional: `weight_paths` (default: `model.trainable_variables + model.non_trainable_variables`
without RNG state, `tfx_ext.federated.variables.federated_variables`, the order `LocalTrainer` and `simulate` use) fixes the index of each array; variables are found by `variable.path`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

from tfx_ext.errors import FederatedError
from tfx_ext.layers.recurrent import GRU as StreamingGRU, LSTM as StreamingLSTM
from tfx_ext.layers.stream import Stream
from tfx_ext.federated.variables import federated_variables


@dataclasses.dataclass(frozen=True)
class UnitAxis:
    """An axis of a weight array indexed by the units of group `group`, laid out as `(blocks, units, inner)`."""

    group: int
    role: str  # "def" or "in"
    blocks: int = 1
    inner: int = 1


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """One weight array: its position, path, shape, unit axes, and whether it feeds matching or is the output."""

    index: int
    path: str
    shape: tuple
    layer: str
    axes: tuple = ()  # ((axis, UnitAxis), ...)
    feature: bool = False  # its "def" slices are part of its group's matching features
    class_axis: int | None = None  # output layer: the class axis

    def def_axis(self):
        """`(axis, UnitAxis)` of the array's own units, or None."""
        for axis, tag in self.axes:
            if tag.role == "def":
                return axis, tag
        return None


@dataclasses.dataclass(frozen=True)
class UnitGroup:
    """The hidden units of one matched layer."""

    index: int
    layer: str
    kind: str
    units: int
    width_key: str  # config key that sets the width ("units" or "filters")


@dataclasses.dataclass(frozen=True)
class MatchSpec:
    """Everything matching needs to know about a model, positionally."""

    groups: tuple
    weights: tuple
    output_layer: str | None

    @property
    def widths(self) -> dict:
        return {g.layer: g.units for g in self.groups}

    def weights_of_group(self, group: int, *, features_only: bool = False):
        out = []
        for w in self.weights:
            d = w.def_axis()
            if d is not None and d[1].group == group and (w.feature or not features_only):
                out.append(w)
        return out

    def widths_from_weights(self, weights) -> dict:
        """Layer name -> width implied by the shapes of `weights` (after matching changed them)."""
        out = {}
        for g in self.groups:
            for w in self.weights_of_group(g.index):
                axis, tag = w.def_axis()
                out[g.layer] = int(np.shape(weights[w.index])[axis]) // (tag.blocks * tag.inner)
                break
        return out


@dataclasses.dataclass
class _Layout:
    """Layout of the current channel axis: which group's units, in (blocks, units, inner) form."""

    group: int
    blocks: int = 1
    inner: int = 1


class _Builder:
    def __init__(self, path_index):
        self.path_index = path_index
        self.tags: dict[int, list] = {}
        self.feature: set = set()
        self.class_axes: dict[int, int] = {}
        self.layer_of: dict[int, str] = {}
        self.groups: list[UnitGroup] = []

    def pos(self, variable, layer):
        if variable.path not in self.path_index:
            raise FederatedError(f"Variable {variable.path!r} of layer {layer.name!r} is not among the model weights.")
        i = self.path_index[variable.path]
        self.layer_of[i] = layer.name
        return i

    def tag(self, variable, layer, axis, tag, feature=False):
        i = self.pos(variable, layer)
        axis = axis % len(variable.shape)
        self.tags.setdefault(i, []).append((axis, tag))
        if feature:
            self.feature.add(i)

    def new_group(self, layer, kind, units, width_key):
        g = UnitGroup(len(self.groups), layer.name, kind, int(units), width_key)
        self.groups.append(g)
        return g.index


def _in(layout: _Layout | None, extra_inner: int = 1):
    if layout is None:
        return None
    return UnitAxis(layout.group, "in", layout.blocks, layout.inner * extra_inner)


def _check_no_blocks(layer, layout):
    if layout is not None and layout.blocks != 1:
        raise FederatedError(
            f"FedMA cannot match layer {layer.name!r} ({type(layer).__name__}): its input channels come from a "
            "flattened feature map; only Dense and recurrent layers may follow a Flatten or a merging Reshape."
        )


def _check_channels_last(layer):
    if getattr(layer, "data_format", "channels_last") not in (None, "channels_last"):
        raise FederatedError(
            f"FedMA supports channels_last layers only; layer {layer.name!r} ({type(layer).__name__}) has "
            f"data_format={layer.data_format!r}."
        )


# ----- adapters: (layer, builder, input layout, is_output) -> output layout ------------------------------------
def _dense_like(kernel_attr, width_key, kind):
    def adapt(layer, b: _Builder, layout, is_output, *, owner=None):
        owner = owner or layer
        _check_channels_last(layer)
        if getattr(layer, "groups", 1) != 1 or getattr(layer, "lora_enabled", False):
            raise FederatedError(
                f"FedMA cannot match layer {owner.name!r} ({type(layer).__name__}) with groups > 1 or LoRA: its "
                "units are not independent columns of one kernel."
            )
        kernel = getattr(layer, kernel_attr)
        bias = getattr(layer, "bias", None)
        if kind != "dense":
            _check_no_blocks(owner, layout)
        incoming = _in(layout)
        if incoming is not None:
            b.tag(kernel, owner, -2, incoming)
        if is_output:
            b.class_axes[b.pos(kernel, owner)] = len(kernel.shape) - 1
            if bias is not None:
                b.class_axes[b.pos(bias, owner)] = 0
            return None
        g = b.new_group(owner, kind, kernel.shape[-1], width_key)
        b.tag(kernel, owner, -1, UnitAxis(g, "def"), feature=True)
        if bias is not None:
            b.tag(bias, owner, 0, UnitAxis(g, "def"), feature=True)
        return _Layout(g)

    return adapt


_dense = _dense_like("kernel", "units", "dense")
_conv = _dense_like("kernel", "filters", "conv")


def _depthwise(layer, b: _Builder, layout, is_output, *, owner=None):
    """Depthwise conv: kernel (..., C, M); output channel c*M + m. Its channel groups move with the input units."""
    owner = owner or layer
    _check_channels_last(layer)
    _check_no_blocks(owner, layout)
    if is_output:
        raise FederatedError(
            f"FedMA cannot use layer {owner.name!r} ({type(layer).__name__}) as the output layer; end the model "
            "with a Dense or Conv layer."
        )
    if layout is None:
        return None
    mult = int(layer.depth_multiplier)
    b.tag(layer.kernel, owner, -2, UnitAxis(layout.group, "def", 1, layout.inner))
    if layer.bias is not None:
        b.tag(layer.bias, owner, 0, UnitAxis(layout.group, "def", 1, layout.inner * mult))
    return _Layout(layout.group, 1, layout.inner * mult)


def _separable(layer, b: _Builder, layout, is_output, *, owner=None):
    """Separable conv: a depthwise part tied to the input units, then a pointwise conv whose filters are matched."""
    owner = owner or layer
    _check_channels_last(layer)
    _check_no_blocks(owner, layout)
    mult = int(layer.depth_multiplier)
    if layout is not None:
        b.tag(layer.depthwise_kernel, owner, -2, UnitAxis(layout.group, "def", 1, layout.inner))
        b.tag(layer.pointwise_kernel, owner, -2, _in(layout, mult))
    if is_output:
        b.class_axes[b.pos(layer.pointwise_kernel, owner)] = len(layer.pointwise_kernel.shape) - 1
        if layer.bias is not None:
            b.class_axes[b.pos(layer.bias, owner)] = 0
        return None
    g = b.new_group(owner, "separable_conv", layer.filters, "filters")
    b.tag(layer.pointwise_kernel, owner, -1, UnitAxis(g, "def"), feature=True)
    if layer.bias is not None:
        b.tag(layer.bias, owner, 0, UnitAxis(g, "def"), feature=True)
    return _Layout(g)


def _channelwise(layer, b: _Builder, layout, is_output, *, owner=None):
    """BatchNormalization / LayerNormalization over the last axis: their vectors move with the units."""
    owner = owner or layer
    axis = getattr(layer, "axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(layer.input.shape)
    if len(axes) != 1 or int(axes[0]) % rank != rank - 1:
        raise FederatedError(
            f"FedMA supports {type(layer).__name__} over the last axis only; layer {owner.name!r} has axis={axis!r}."
        )
    if layout is None:
        return None
    for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
        v = getattr(layer, attr, None)
        if v is not None:
            b.tag(v, owner, 0, UnitAxis(layout.group, "def", layout.blocks, layout.inner))
    return layout


def _rnn(num_gates, kind):
    def adapt(layer, b: _Builder, layout, is_output, *, owner=None):
        owner = owner or layer  # its kernel rows are input features, like a Dense kernel's: blocks are fine
        if is_output:
            raise FederatedError(
                f"FedMA cannot use layer {owner.name!r} ({type(layer).__name__}) as the output layer; add a Dense "
                "output layer."
            )
        cell = layer.cell
        units = int(cell.units)
        incoming = _in(layout)
        if incoming is not None:
            b.tag(cell.kernel, owner, 0, incoming)
        g = b.new_group(owner, kind, units, "units")
        gates = UnitAxis(g, "def", num_gates)
        b.tag(cell.kernel, owner, 1, gates, feature=True)
        b.tag(cell.recurrent_kernel, owner, 0, UnitAxis(g, "in"))
        b.tag(cell.recurrent_kernel, owner, 1, gates)
        if getattr(cell, "bias", None) is not None:
            b.tag(cell.bias, owner, len(cell.bias.shape) - 1, gates, feature=True)
        return _Layout(g)

    return adapt


def _streaming_rnn(num_gates, kind):
    """tfx_ext's streaming `GRU`/`LSTM`: the Keras RNN they run inside (`layer.rnn`), with the layer as owner."""
    inner = _rnn(num_gates, kind)

    def adapt(layer, b, layout, is_output, *, owner=None):
        return inner(layer.rnn, b, layout, is_output, owner=owner or layer)

    return adapt


def _reshape(layer, b, layout, is_output, *, owner=None):
    """A channels_last `Reshape` that keeps the channels last: as is (`(t, f, C) -> (t * f, C)`, or adding an axis
    before any matched layer), or merging trailing positions into them (`(t, f, C) -> (t, f * C)`: `f` blocks)."""
    owner = owner or layer
    if layout is None:
        return None
    in_shape, out_shape = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
    channels, merged = in_shape[-1], out_shape[-1]
    if merged == channels:
        return layout
    blocks = 1
    for d in reversed(in_shape[:-1]):
        if d is None or blocks * channels >= (merged or 0):
            break
        blocks *= int(d)
    if merged is None or blocks * channels != merged:
        raise FederatedError(
            f"FedMA can match a Reshape that keeps the channel axis last or merges trailing positions into it; "
            f"layer {owner.name!r} maps {in_shape} to {out_shape}."
        )
    return _Layout(layout.group, layout.blocks * blocks, layout.inner)


def _passthrough(layer, b, layout, is_output, *, owner=None):
    """Layers without weights that act on each channel alike (activations, dropout, pooling)."""
    return layout


def _flatten(layer, b, layout, is_output, *, owner=None):
    """channels_last Flatten: flat index = position * C + channel, i.e. `blocks` = number of positions."""
    owner = owner or layer
    _check_channels_last(layer)
    if layout is None:
        return None
    shape = layer.input.shape[1:-1]
    if any(d is None for d in shape):
        raise FederatedError(f"FedMA needs a static input shape at Flatten layer {owner.name!r}. Received: {shape}")
    return _Layout(layout.group, layout.blocks * int(np.prod(shape, dtype=np.int64)), layout.inner)


def _stream(layer, b, layout, is_output, *, owner=None):
    """tfx_ext `Stream(cell)`: the wrapped cell's adapter, with the Stream as the named owner."""
    cell = layer.cell
    adapter = _find_adapter(cell)
    if adapter is None:
        raise FederatedError(
            f"FedMA cannot match layer {layer.name!r} (Stream of {type(cell).__name__}); supported: "
            f"{supported_layer_names()}."
        )
    if adapter is _flatten:
        # The cell flattens (window, [freq,] channels).
        if layout is None:
            return None
        shape = layer.input.shape[1:-1]
        window = layer.window if layer.window is not None else shape[0]
        shape = (window, *shape[1:])
        if any(d is None for d in shape):
            raise FederatedError(f"FedMA needs a static input shape at layer {layer.name!r}. Received: {shape}")
        return _Layout(layout.group, layout.blocks * int(np.prod(shape, dtype=np.int64)), layout.inner)
    if adapter in (_dense, _conv) and "filters" in cell.get_config():
        return _conv(cell, b, layout, is_output, owner=layer)
    return adapter(cell, b, layout, is_output, owner=layer)


_PASSTHROUGH = tuple(
    getattr(keras.layers, n)
    for n in (
        "InputLayer", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D",
        "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "MaxPooling1D", "MaxPooling2D",
        "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
        "UpSampling1D", "UpSampling2D", "ActivityRegularization", "Identity",
    )
    if hasattr(keras.layers, n)
)

# One table: layer class -> adapter. Order matters for subclasses (first isinstance match wins).
ADAPTERS: list = [
    (keras.layers.Dense, _dense),
    ((keras.layers.SeparableConv1D, keras.layers.SeparableConv2D), _separable),
    ((keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D), _depthwise),
    ((keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D), _conv),
    ((keras.layers.BatchNormalization, keras.layers.LayerNormalization), _channelwise),
    (keras.layers.LSTM, _rnn(4, "lstm")),
    (keras.layers.GRU, _rnn(3, "gru")),
    (keras.layers.SimpleRNN, _rnn(1, "simple_rnn")),
    (StreamingGRU, _streaming_rnn(3, "gru")),
    (StreamingLSTM, _streaming_rnn(4, "lstm")),
    (keras.layers.Flatten, _flatten),
    (keras.layers.Reshape, _reshape),
    (_PASSTHROUGH, _passthrough),
]


def _find_adapter(layer):
    if isinstance(layer, Stream):
        return _stream
    for classes, adapter in ADAPTERS:
        if isinstance(layer, classes):
            return adapter
    return None


def supported_layer_names() -> str:
    names = []
    for classes, _ in ADAPTERS:
        for c in classes if isinstance(classes, tuple) else (classes,):
            names.append(f"tfx_ext.layers.{c.__name__}" if c in (StreamingGRU, StreamingLSTM) else c.__name__)
    names.append("Stream(Conv/DepthwiseConv/SeparableConv/pooling/Flatten)")
    return ", ".join(names)


def _has_weights(layer):
    return bool(layer.weights)


def _chain(model):
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    prev = None
    for layer in layers:
        if isinstance(layer, keras.Model):
            raise FederatedError(f"FedMA does not match nested models; flatten layer {layer.name!r} into one model.")
        inbound = layer.input
        if isinstance(inbound, (list, tuple, dict)) or (prev is not None and inbound is not prev.output):
            raise FederatedError(
                f"FedMA supports models whose layers form one chain; layer {layer.name!r} "
                f"({type(layer).__name__}) does not take the previous layer's output alone."
            )
        prev = layer
    return layers


def default_weight_paths(model) -> list:
    """The positional order `simulate` uses: trainable then non-trainable variables."""
    return [v.path for v in federated_variables(model)]


def build_spec(model, weight_paths: Sequence[str] | None = None) -> MatchSpec:
    """The `MatchSpec` of a built Keras model.

    Args:
        model: a built `keras.Sequential` or single-chain functional model.
        weight_paths: the positional order of the weight arrays (default `default_weight_paths(model)`).

    Returns:
        A `MatchSpec`.

    Raises:
        FederatedError: naming the first unsupported layer (or a non-chain model).
    """
    if not getattr(model, "built", False):
        raise ValueError("`model` must be built. Received: an unbuilt model")
    paths = list(default_weight_paths(model) if weight_paths is None else weight_paths)
    builder = _Builder({p: i for i, p in enumerate(paths)})
    layers = _chain(model)
    adapters = []
    for layer in layers:
        adapter = _find_adapter(layer)
        if adapter is None:
            raise FederatedError(
                f"FedMA cannot match layer {layer.name!r} ({type(layer).__name__}). Supported layers: "
                f"{supported_layer_names()}."
            )
        adapters.append(adapter)
    producers = [i for i, a in enumerate(adapters) if a in (_dense, _conv, _separable) or
                 (a is _stream and _find_adapter(layers[i].cell) in (_dense, _conv, _separable))]
    weighted = [i for i, layer in enumerate(layers) if _has_weights(layer)]
    if not weighted or weighted[-1] not in producers:
        last = layers[weighted[-1]] if weighted else None
        got = f"layer {last.name!r} ({type(last).__name__}) is" if last is not None else "the model has no weights"
        raise FederatedError(
            "FedMA needs the output layer (the last layer with weights, averaged with class-frequency weights) to "
            f"be Dense or Conv; {got}. Add a Dense output layer."
        )
    out_idx = weighted[-1]
    layout = None
    for i, (layer, adapter) in enumerate(zip(layers, adapters)):
        layout = adapter(layer, builder, layout, i == out_idx)
    weights = []
    for i, p in enumerate(paths):
        tags = tuple(sorted(builder.tags.get(i, []), key=lambda t: t[0]))
        weights.append(WeightSpec(i, p, tuple(_shape_of(model, p)), builder.layer_of.get(i, ""), tags,
                                  i in builder.feature, builder.class_axes.get(i)))
    return MatchSpec(tuple(builder.groups), tuple(weights), layers[out_idx].name)


def _shape_of(model, path):
    for v in model.variables:
        if v.path == path:
            return tuple(int(d) for d in v.shape)
    raise FederatedError(f"No variable with path {path!r} in the model.")


__all__ = ["ADAPTERS", "MatchSpec", "UnitAxis", "UnitGroup", "WeightSpec", "build_spec", "default_weight_paths",
           "supported_layer_names"]
