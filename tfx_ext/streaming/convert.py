"""Conversion of trained Keras 3 models to streaming models (and back to plain inference models).

`to_streaming` reads the model's public config (`get_config`), re-creates every layer with `from_config` (streamable
layers with their `mode` switched), wires the graph again on inputs of `frames_per_step` frames and copies the
weights layer by layer by name. It never imports private Keras modules. It knows nothing about particular
streamable layers: everything it needs comes from the `tfx_ext.streaming.contract.StreamingLayer` contract (`state_specs`,
`output_delay`, `time_stride`, `drops_time_axis`).

External-state models take `[inputs..., *states]` and return a dict keyed by the original output names plus one
entry per state; each state's input and output share the name `<layer>_<state>`, so runners (Keras or LiteRT)
bind them by name. `to_streaming` returns a `tfx_ext.streaming.runner.StreamingRunner` in both modes: `.model` is
the streaming model to save or export, `runner(chunk)` / `runner.run(sequence)` step it, `runner.reset()` restarts.
The graph reading is in `tfx_ext.streaming.graph`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import keras
import numpy as np

from tfx_ext._validate import check_int
from tfx_ext.errors import NotStreamableError
from tfx_ext.streaming.contract import Mode, StreamingLayer, state_name
from tfx_ext.streaming.graph import _flat, _graph_config, _history, _refs, _resolve, output_names
from tfx_ext.streaming.runner import StreamingRunner
from tfx_ext.streaming.streamable import make_streamable, needs_streamable

# Ordinary Keras layers that act on each frame on its own (time on axis 1 untouched), so they stream as they are.
FRAME_LOCAL_LAYERS: tuple[type, ...] = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.Reshape,
    keras.layers.Identity,
    keras.layers.TimeDistributed,
)
# Layers that only act in training: removed from inference and streaming models (their input passes through).
TRAINING_ONLY_LAYERS: tuple[type, ...] = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
)
# ----- per-tensor bookkeeping: time axis, frames per step, streaming delay -----------------------------------------
class _Info:
    __slots__ = ("has_time", "frames", "delay", "rate")

    def __init__(self, has_time: bool, frames: int | None, delay: int, rate: int):
        self.has_time = has_time  # the tensor has a time axis (axis 1)
        self.frames = frames  # frames per step on that axis when streaming
        self.delay = delay  # streamed outputs lag the whole-sequence ones by this many model-input frames
        self.rate = rate  # model-input frames per frame of this tensor


def _describe(layer) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _check_frame_local(layer, infos: list[_Info], layer_config: dict, extra_frame_local: tuple) -> None:
    timed = [info for info in infos if info.has_time]
    if not timed:
        return  # after the time axis is gone every layer is fine
    if not isinstance(layer, FRAME_LOCAL_LAYERS + tuple(extra_frame_local)):
        raise NotStreamableError(
            f"{_describe(layer)} is not known to act on each frame on its own, so it cannot stream as it is. "
            "Wrap time-mixing layers in tfx_ext.layers.Stream(...) (convolutions, pooling, Flatten, global pooling), "
            "use tfx_ext.layers.GRU/LSTM for recurrences, or pass extra_frame_local=(YourLayer,) if it is "
            "frame-local."
        )
    config = layer_config["config"]
    if isinstance(layer, keras.layers.Concatenate) and config.get("axis") == 1:
        raise NotStreamableError(f"{_describe(layer)} concatenates along time (axis=1); it cannot stream.")
    if isinstance(layer, keras.layers.Softmax) and config.get("axis") == 1:
        raise NotStreamableError(f"{_describe(layer)} normalizes over time (axis=1); it cannot stream.")
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
        axes = config.get("axis")
        axes = axes if isinstance(axes, (list, tuple)) else [axes]
        if 1 in axes:
            raise NotStreamableError(f"{_describe(layer)} normalizes over time (axis=1); use axis=-1.")


def _fix_reshape(layer_config: dict, input_shape) -> None:
    """A Reshape that keeps the time axis may spell its length: make it -1 so it works on any chunk."""
    target = list(layer_config["config"]["target_shape"])
    if input_shape is None or len(input_shape) < 2 or not target:
        return
    if target[0] == input_shape[1] and target[0] != -1:
        layer_config["config"]["target_shape"] = [-1, *target[1:]]
    elif target[0] != -1:
        raise NotStreamableError(
            f"layer {layer_config['config']['name']!r} (Reshape) changes the time axis ({input_shape[1]} -> "
            f"{target[0]} frames); reshape only the axes after time (use -1 for time)."
        )


# ----- rebuilding ----------------------------------------------------------------------------------------------------
class _Rebuild:
    """One rebuild of a model's graph in `mode`: walks the config's layers in order and re-creates each call.

    Keeps, per rebuilt tensor (keyed by its `(layer, node, index)` history): the tensor, its `_Info` and the
    whole-sequence shape read from the original model (for Reshape fixes); and the state inputs and outputs met
    so far (external state).
    """

    def __init__(self, model: keras.Model, mode: Mode, batch_size: int | None, frames_per_step: int | None,
                 extra_frame_local: tuple = ()):
        self.graph = _graph_config(model)  # first: it refuses what is not a functional or Sequential model
        self.model = model
        self.mode = mode
        self.streaming = mode.is_streaming
        self.external = mode == Mode.STREAM_EXTERNAL_STATE
        self.batch_size = batch_size
        self.frames_per_step = frames_per_step
        self.extra_frame_local = tuple(extra_frame_local)
        self.tensors: dict[tuple, Any] = {}
        self.infos: dict[tuple, _Info] = {}
        self.shapes: dict[tuple, Any] = {}
        self.data_inputs: list = []
        self.state_inputs: list = []
        self.state_outputs: dict[str, Any] = {}
        self.source_layers = {layer.name: layer for layer in model.layers}

    def run(self) -> tuple[keras.Model, list[str]]:
        """The rebuilt model (weights copied, `output_delays` set) and its state names."""
        for layer_config in self.graph["layers"]:
            if layer_config["class_name"] == "InputLayer":
                self._add_input(layer_config)
            else:
                self._add_layer(layer_config)
        return self._assemble(), list(self.state_outputs)

    # --- one step per kind of graph entry ---
    def _add_input(self, layer_config: dict) -> None:
        name, config = layer_config["name"], layer_config["config"]
        batch_shape = list(config.get("batch_shape") or [None, *config["shape"]])
        if len(batch_shape) < 3 and self.streaming:
            raise NotStreamableError(
                f"input {name!r} has shape {tuple(batch_shape)}; streaming inputs need (batch, time, features...)."
            )
        self.shapes[(name, 0, 0)] = tuple(batch_shape)
        if self.batch_size is not None:
            batch_shape[0] = self.batch_size
        if self.streaming:
            batch_shape[1] = self.frames_per_step
        tensor = keras.Input(batch_shape=tuple(batch_shape), dtype=config.get("dtype", "float32"), name=name)
        self.tensors[(name, 0, 0)] = tensor
        self.infos[(name, 0, 0)] = _Info(True, self.frames_per_step, 0, 1)
        self.data_inputs.append(tensor)

    def _add_layer(self, layer_config: dict) -> None:
        name = layer_config["name"]
        nodes = layer_config.get("inbound_nodes", [])
        layer = self._recreate(layer_config, nodes)
        if isinstance(layer, TRAINING_ONLY_LAYERS):
            self._pass_through(name, nodes)
            return
        for node_index, node in enumerate(nodes):
            in_infos = [self.infos[s] for s in _history(node["args"]) + _history(node["kwargs"])]
            args = _resolve(node["args"], self.tensors)
            kwargs = _resolve(node["kwargs"], self.tensors)
            if isinstance(layer, StreamingLayer):
                outputs, out_info = self._call_streaming(layer, in_infos[0], args, kwargs)
            else:
                outputs, out_info = self._call_frame_local(layer, layer_config, in_infos, args, kwargs)
            for index, tensor in enumerate(_flat(outputs)):
                self.tensors[(name, node_index, index)] = tensor
                self.infos[(name, node_index, index)] = out_info
        self._record_shapes(name)

    def _recreate(self, layer_config: dict, nodes: list):
        """The layer re-created from its config: streamable layers in `mode`, time-keeping Reshapes made generic."""
        name = layer_config["name"]
        if layer_config["class_name"] in ("Functional", "Sequential", "Model") or isinstance(
                self.source_layers.get(name), keras.Model):
            raise NotStreamableError(
                f"layer {name!r} is a nested model; to_streaming needs one flat functional or Sequential model. "
                "Call the inner model's layers directly in the outer model."
            )
        serialized = {k: v for k, v in layer_config.items() if k not in ("inbound_nodes", "build_config", "name")}
        layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        if isinstance(layer, StreamingLayer):
            serialized["config"] = dict(serialized["config"], mode=self.mode.value)
            layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
            if self.streaming and len(nodes) > 1:
                raise NotStreamableError(
                    f"{_describe(layer)} is called {len(nodes)} times; a streamable layer keeps one state, so use "
                    "one layer per call."
                )
        elif isinstance(layer, keras.layers.Reshape) and self.streaming and nodes:
            (source,) = _history(nodes[0]["args"])[:1]
            if self.infos[source].has_time:
                _fix_reshape(serialized, self.shapes.get(source))
                layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        return layer

    def _pass_through(self, name: str, nodes: list) -> None:
        """A training-only layer is dropped: each of its outputs is its input."""
        for node_index, node in enumerate(nodes):
            (source,) = _history(node["args"])[:1]
            self.tensors[(name, node_index, 0)] = self.tensors[source]
            self.infos[(name, node_index, 0)] = self.infos[source]
            self.shapes[(name, node_index, 0)] = self.shapes.get(source)

    def _call_streaming(self, layer: StreamingLayer, info: _Info, args, kwargs):
        """Calls a streamable layer; with external state, its states become model inputs and outputs."""
        if self.streaming and info.frames is not None and info.frames % max(layer.block_size, 1):
            raise NotStreamableError(
                f"{_describe(layer)} steps over multiples of {layer.block_size} frames (its time stride) "
                f"but receives {info.frames} frames per step (frames_per_step={self.frames_per_step} of the "
                f"model input). Use frames_per_step that is a multiple of {layer.block_size * info.rate}."
            )
        out_info = _Info(
            not layer.drops_time_axis,
            None if info.frames is None else info.frames // max(layer.time_stride, 1),
            info.delay + layer.output_delay * info.rate,
            info.rate * max(layer.time_stride, 1),
        )
        if not self.external:
            return layer(*args, **kwargs), out_info
        data, rest = args[0], list(args[1:])
        specs = layer.state_specs(tuple(data.shape))
        states = [keras.Input(batch_shape=(data.shape[0], *spec.shape), dtype=spec.dtype,
                              name=state_name(layer.name, spec)) for spec in specs]
        outputs = _flat(layer([data, *states], *rest, **kwargs))
        self.state_inputs.extend(states)
        for spec, value in zip(specs, outputs[1:]):
            self.state_outputs[state_name(layer.name, spec)] = value
        return outputs[0], out_info

    def _call_frame_local(self, layer, layer_config: dict, in_infos: list[_Info], args, kwargs):
        """Calls an ordinary layer; streaming needs it to act frame by frame on aligned branches."""
        timed = [i for i in in_infos if i.has_time]
        if self.streaming:
            _check_frame_local(layer, in_infos, layer_config, self.extra_frame_local)
            _check_aligned(layer, timed)
        base = timed[0] if timed else (in_infos[0] if in_infos else _Info(False, None, 0, 1))
        return layer(*args, **kwargs), _Info(bool(timed), base.frames, base.delay, base.rate)

    def _record_shapes(self, name: str) -> None:
        """Whole-sequence shapes of this layer's outputs in the original model, for Reshape fixes downstream."""
        source = self.source_layers.get(name)
        if source is None:
            return
        try:
            for index, tensor in enumerate(_flat(source.output)):
                self.shapes[(name, 0, index)] = tuple(tensor.shape)
        except (AttributeError, ValueError):
            pass

    def _assemble(self) -> keras.Model:
        """The new `keras.Model` on the rebuilt tensors, with the weights copied and `output_delays` set."""
        names = output_names(self.model)
        refs = [tuple(ref) for ref in _refs(self.graph["output_layers"])]
        outputs = [self.tensors[ref] for ref in refs]
        suffix = {Mode.STREAM_INTERNAL_STATE: "stream_internal", Mode.STREAM_EXTERNAL_STATE: "stream_external"}.get(
            self.mode, "inference")
        model_name = f"{self.model.name}_{suffix}"
        if self.external:
            clash = set(names) & set(self.state_outputs)
            if clash:
                raise NotStreamableError(f"output names {sorted(clash)} clash with state names; rename those outputs.")
            rebuilt = keras.Model([*self.data_inputs, *self.state_inputs],
                                  {**dict(zip(names, outputs)), **self.state_outputs}, name=model_name)
        else:
            rebuilt = keras.Model(self.data_inputs if len(self.data_inputs) > 1 else self.data_inputs[0],
                                  outputs if len(outputs) > 1 else outputs[0], name=model_name)
        _copy_weights(self.model, rebuilt)
        rebuilt.output_delays = {n: self.infos[ref].delay for n, ref in zip(names, refs)}  # informative, not saved
        return rebuilt


def _check_aligned(layer, timed: list[_Info]) -> None:
    """A layer that merges timed branches needs them to lag equally and step at the same rate."""
    lags = [i.delay for i in timed]
    if len(set(lags)) > 1:
        raise NotStreamableError(
            f"{_describe(layer)} merges branches whose streamed values lag by {lags} frames: the "
            f"model is not causal there (a look-ahead layer on one branch only). Put "
            f"tfx_ext.layers.Delay(d) on the branches that lag less so they all lag {max(lags)} "
            "frames (d in frames of that branch)."
        )
    if len({i.frames for i in timed}) > 1:
        raise NotStreamableError(
            f"{_describe(layer)} merges branches with different time strides "
            f"({[i.frames for i in timed]} frames per step); it cannot stream."
        )


def _rebuild(model: keras.Model, mode: Mode, batch_size: int | None, frames_per_step: int | None,
             extra_frame_local: tuple = ()) -> tuple[keras.Model, list[str]]:
    """Rebuilds `model` with its streamable layers in `mode`; returns the model and its state names."""
    return _Rebuild(model, mode, batch_size, frames_per_step, extra_frame_local).run()


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copies parameters layer by layer by name (internal-state variables are not parameters and start at zero)."""
    for layer in target.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        original = source.get_layer(layer.name)
        if isinstance(layer, StreamingLayer):
            values = [np.asarray(w) for w in original.parameter_weights()]
            variables = layer.parameter_weights()
        else:
            values = [np.asarray(w) for w in original.weights]
            variables = layer.weights
        if len(values) != len(variables):
            raise NotStreamableError(
                f"{_describe(layer)} has {len(variables)} weights after conversion but {len(values)} before; "
                "its config does not rebuild the same layer."
            )
        for variable, value in zip(variables, values):
            if tuple(variable.shape) != value.shape:
                raise NotStreamableError(
                    f"{_describe(layer)}: weight {variable.path!r} has shape {tuple(variable.shape)} after conversion "
                    f"but {value.shape} before."
                )
            variable.assign(value)


# ----- public API ----------------------------------------------------------------------------------------------------
def to_streaming(
    model: keras.Model,
    mode: Mode | str = Mode.STREAM_INTERNAL_STATE,
    batch_size: int = 1,
    frames_per_step: int = 1,
    *,
    extra_frame_local: tuple[type, ...] = (),
) -> StreamingRunner:
    """Converts a trained functional or Sequential model into one that consumes `frames_per_step` frames per call.

    Args:
        model: a functional or Sequential Keras 3 model whose time-mixing layers are streamable
            (`tfx_ext.layers.Stream`, `GRU`, `LSTM`, `Delay`, any `StreamingLayer`) and whose other layers act on
            each frame (Dense, BatchNormalization, activations, Reshape of the non-time axes, Add/Concatenate of
            aligned branches). Dropout and other training-only layers are removed.
        mode: `Mode.STREAM_INTERNAL_STATE` (states in variables, zeroed by `runner.reset()`) or
            `Mode.STREAM_EXTERNAL_STATE` (states are extra inputs/outputs named `<layer>_<state>`).
        batch_size: the static batch size of the streaming model (internal state needs one).
        frames_per_step: frames per call; must be a multiple of every time stride met on the way (for a layer
            after strided layers: a multiple of the product of the strides).
        extra_frame_local: further layer classes to accept as frame-local.

    Returns:
        A `StreamingRunner` in both modes. `runner.model` is the streaming `keras.Model` (data input
        `(batch_size, frames_per_step, ...)`; external state adds the state inputs and outputs) to save or pass to
        `tfx_ext.lite`; `runner(chunk)` runs one step (feeding external states back), `runner.run(sequence)` a
        whole sequence, `runner.reset()` starts a new stream; `input_names`, `state_names`, `output_names` name
        the tensors, and `output_delays` gives the frames by which each streamed output lags the non-streaming
        one (0 for causal models).

    Raises:
        ValueError: bad `mode`, `batch_size` or `frames_per_step`.
        NotStreamableError: a subclassed or nested model, a layer that mixes frames without a streaming form, a
            merge of branches with different look-ahead (non-causal model without `Delay`), or a frames_per_step
            that is not a multiple of a time stride.
    """
    if needs_streamable(model):  # a plain Keras model you trained: rewrite it with its weights first
        model = make_streamable(model)
    mode = Mode.of(mode)
    if not mode.is_streaming:
        raise ValueError(
            "`mode` must be Mode.STREAM_INTERNAL_STATE or Mode.STREAM_EXTERNAL_STATE (use to_non_streaming for "
            f"inference models). Received: mode={mode.value!r}"
        )
    batch_size = check_int("batch_size", batch_size, minimum=1)
    frames_per_step = check_int("frames_per_step", frames_per_step, minimum=1)
    try:
        streaming_model, _ = _rebuild(model, mode, batch_size, frames_per_step, tuple(extra_frame_local))
    except NotStreamableError:
        raise
    except Exception as error:  # a layer refused the new shapes while being rebuilt: surface our own error
        cause = error
        while cause is not None:
            if isinstance(cause, NotStreamableError):
                raise NotStreamableError(str(cause)) from error
            cause = cause.__cause__ or cause.__context__
        raise
    return StreamingRunner(streaming_model, output_delays=streaming_model.output_delays)


def to_non_streaming(model: keras.Model, batch_size: int | None = None) -> keras.Model:
    """Rebuilds `model` for whole-sequence inference: streamable layers in `NON_STREAM_INFERENCE`, dropout removed.

    Args:
        model: a functional or Sequential Keras 3 model.
        batch_size: a static batch size for the inputs, or None to keep the model's.

    Returns:
        A new `keras.Model` with the same weights.

    Raises:
        NotStreamableError: a subclassed or nested model.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    rebuilt, _ = _rebuild(model, Mode.NON_STREAM_INFERENCE, batch_size, None)
    return rebuilt


def min_frames_per_step(model: keras.Model) -> int:
    """The smallest `frames_per_step` the model streams with: every streamable layer must get a multiple of its block
    size, counted in model-input frames through the strides before it (the least common multiple over layers)."""
    import math

    graph = _graph_config(model)
    rates: dict[str, int] = {}
    needed = 1
    for layer_config in graph["layers"]:
        name = layer_config["name"]
        sources = [h[0] for node in layer_config.get("inbound_nodes", []) for h in _history(node["args"])]
        rate = max([rates.get(s, 1) for s in sources] or [1])
        layer = model.get_layer(name) if layer_config["class_name"] != "InputLayer" else None
        if isinstance(layer, StreamingLayer):
            needed = math.lcm(needed, rate * max(int(layer.block_size), 1))
            rate *= max(int(layer.time_stride), 1)
        rates[name] = rate
    return needed


def output_delay(model) -> dict:
    """Frames by which each output of a streaming model (or runner) lags the whole-sequence model (0: causal)."""
    if isinstance(model, StreamingRunner):
        return model.output_delays
    return dict(getattr(model, "output_delays", {}))  # our own plain attribute; absent on a model loaded from file


__all__ = [
    "to_streaming",
    "to_non_streaming",
    "min_frames_per_step",
    "output_delay",
    "FRAME_LOCAL_LAYERS",
    "TRAINING_ONLY_LAYERS",
]
